//! The driver: plays the peer and the kernel against one connection held by
//! the server's own [`Clients`], over the scripted socket, and checks every
//! step against the model. It runs each turn as the server's loop does,
//! through [`Clients::turn`], [`Clients::run_again`] and
//! [`Clients::expire`], on a virtual clock; it keeps its own account of
//! when each deadline is due, from what the turns did on the wire, and
//! reads what fired from what the protocol was asked to say.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::clients::{Clients, Hook};
use crate::closes::Reason;
use crate::config::Config;
use crate::conn::{Conn, DISCARD_LIMIT, HARD_CLOSE_READS, READ_CHUNK, Ready};
use crate::deadline_queue::{Kind, TICK};
use crate::protocol::Lines;
use crate::timeouts::TOLD_WAIT;

use super::case::{Case, ERROR, Ms, Op, READ_CLOSED, READABLE, Then, WRITABLE, ready_from};
use super::model::{Model, ModelStop, idle_line, too_long_reply};
use super::wire::{Mutation, Reset, Socket, Wire, take_front};
use super::{
    CLOSING_LINE, DRAINING, LATE, NOTICE, Plan, SUFFIX, Seen, Suffix, TAGS, Tagged, shift,
};

/// Rounds of a settle that move no byte before it is called a livelock. A
/// round that moves nothing can only come from an interrupted call, and at
/// most a few are injected.
const IDLE_ROUNDS: usize = 64;
/// The upper bound on the rounds of one settle, so a bug cannot hang a run.
const SETTLE_ROUNDS: usize = 4_000_000;
/// The connection's key in the table: the first client's.
const KEY: usize = 0;
/// When the client arrives after the server started: deadlines the cases
/// set in the past then fall after the origin, where every instant is
/// told apart (before it, all are one).
const CLIENT_AFTER: Duration = Duration::from_secs(1);

fn any(ready: Ready) -> bool {
    ready.readable || ready.writable || ready.read_closed || ready.error
}

// Running a case belongs with the driver; `case` only says what a case is.
impl Case {
    /// Runs the case, turning a panic inside the connection into an error.
    pub(super) fn run(&self) -> Result<(), String> {
        self.run_with(Mutation::None)
    }

    pub(super) fn run_with(&self, mutation: Mutation) -> Result<(), String> {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            let mut driver = Driver::new(self, mutation);
            for (step, op) in self.ops.iter().enumerate() {
                driver
                    .apply(op)
                    .map_err(|e| format!("after op {step} ({op:?}): {e}"))?;
            }
            driver.finish().map_err(|e| format!("at the end: {e}"))
        }));
        outcome.unwrap_or_else(|panic| {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Err(format!("panicked: {text}"))
        })
    }
}

/// The outcome of the connection so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Life {
    Open,
    /// The connection answered `Close` and left the table.
    Closed,
    /// A timer closed it at once, without waiting for the peer: the send
    /// timeout, or the idle timeout of a connection already ending.
    TimedOut,
    /// The hard stop closed it.
    HardStopped {
        /// Everything pending and the closing line fit in the send buffer.
        fully_flushed: bool,
    },
}

pub(super) struct Driver {
    pub(super) wire: Rc<RefCell<Wire>>,
    /// The server's clients: the connection under test is [`KEY`].
    clients: Clients<Socket, Tagged>,
    /// The protocol's deadline, set by the driver, and its hooks' calls.
    plan: Rc<RefCell<Plan>>,
    pub(super) model: Model,
    /// Bytes the peer has read, checked against the model as they arrive.
    pub(super) received: Vec<u8>,
    pub(super) life: Life,
    /// After a hard stop: what the connection had answered, then the
    /// closing line.
    expected_after_stop: Vec<u8>,
    pub(super) bound: usize,
    max_output: usize,
    max_reply: usize,
    /// Bytes the connection said outside of replies: drain notices with
    /// the protocol's word after each, idle lines and deadline words. Each
    /// is queued whatever the backpressure, so they add to the bounds. (The
    /// greeting needs no such allowance: it is appended to empty output,
    /// which the limit then counts.)
    said: usize,
    /// The virtual clock: when the loop last woke.
    now: Instant,
    /// When the loop last went to sleep: turns are never dated with it
    /// (but for [`Mutation::StaleClock`]).
    slept_at: Instant,
    /// The server's start, where deadlines are counted from.
    origin: Instant,
    /// Where the clock started, a while after the server's: the admission.
    t0: Instant,
    idle: Option<Duration>,
    send: Option<Duration>,
    /// When the idle period began: the admission, the last turn that read a
    /// byte while the connection was not ending, or the idle timeout's
    /// firing.
    idle_from: Instant,
    /// The idle timeout told the client: it has [`TOLD_WAIT`] (or the idle
    /// timeout, if shorter) from then to send its EOF.
    told: bool,
    /// Since when output has waited in the connection with none of it
    /// written, if it waits.
    send_from: Option<Instant>,
    /// The protocol's deadline has not been reported since it last changed.
    late_owed: bool,
    /// The protocol set a deadline at some point.
    ever_deadline: bool,
    /// The protocol moved its deadline in the batch being fired: if into
    /// the past, the loop fires it when it comes round, not in this batch.
    moved_in_batch: bool,
    mutation: Mutation,
}

/// What a turn starts from: the wire's counts, which the driver's own
/// account uses.
#[derive(Clone, Copy)]
struct Turn {
    delivered: usize,
    written: usize,
}

impl Driver {
    pub(super) fn new(case: &Case, mutation: Mutation) -> Driver {
        let wire = Rc::new(RefCell::new(Wire {
            capacity: case.capacity,
            mutation,
            ..Wire::default()
        }));
        let max_reply = (case.max_line + 1 + SUFFIX.len() + TAGS[0].len())
            .max(too_long_reply(case.max_line).len());
        let config = Config {
            max_input: case.max_line,
            max_output: case.max_output,
            telnet: case.telnet,
            idle_timeout: case.idle,
            send_timeout: case.send,
            ..Config::default()
        };
        let origin = Instant::now();
        let t0 = origin + CLIENT_AFTER;
        let plan = Rc::new(RefCell::new(Plan::default()));
        let protocol = Tagged {
            lines: Lines(Suffix),
            plan: Rc::clone(&plan),
        };
        let mut driver = Driver {
            clients: Clients::new(&config, protocol, origin),
            plan,
            wire,
            model: Model::new(case.max_line, case.telnet),
            received: Vec::new(),
            life: Life::Open,
            expected_after_stop: Vec::new(),
            bound: case.max_output + max_reply + READ_CHUNK + case.max_line,
            max_output: case.max_output,
            max_reply,
            said: 0,
            now: t0,
            slept_at: t0,
            origin,
            t0,
            idle: case.idle,
            send: case.send,
            idle_from: t0,
            told: false,
            send_from: None,
            late_owed: false,
            ever_deadline: false,
            moved_in_batch: false,
            mutation,
        };
        // Admitted as the server admits a client: its idle clock starts,
        // and the protocol greets it. A fresh socket with room takes the
        // greeting, so nothing can fail.
        let socket = Socket(Rc::clone(&driver.wire));
        assert_eq!(driver.clients.admit(socket, t0), KEY);
        let turn = driver.begin();
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        driver
            .clients
            .turn(KEY, Hook::Connect(crate::Peer::Ip(peer)), t0);
        driver
            .conclude(turn, false)
            .expect("a greeting breaks nothing");
        assert_eq!(driver.life, Life::Open, "a greeting closes nothing");
        driver
    }

    pub(super) fn apply(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Send(data) => self.peer_send(data),
            Op::SendLines { len, count } => {
                let mut line = vec![b'l'; *len];
                line[len - 1] = b'\n';
                for _ in 0..*count {
                    self.peer_send(&line);
                }
            }
            Op::SendRun(len) => self.peer_send(&vec![b'r'; *len]),
            Op::Deliver(mask) => {
                let owed = self.take_edges(*mask);
                if any(owed) {
                    self.event(owed)?;
                }
            }
            Op::Spurious(mask) => self.event(ready_from(*mask))?,
            Op::Pump => self.pump()?,
            Op::PeerRead(n) => self.peer_read(*n)?,
            Op::PeerHalfClose => self.peer_half_close(),
            Op::PeerReset { sticky } => self.peer_reset(*sticky),
            Op::Capacity(c) => {
                let mut w = self.wire.borrow_mut();
                w.capacity = *c;
                w.maybe_writable_edge();
            }
            Op::Interrupt(n) => self.wire.borrow_mut().interrupts = *n,
            Op::Settle => self.settle()?,
            Op::HardStop => self.hard_stop()?,
            Op::Notice => self.notice()?,
            Op::Advance(by) => {
                self.quiesce()?;
                self.slept_at = self.now;
                self.now += *by;
            }
            Op::Sleep => self.sleep()?,
            Op::Expire => self.expire()?,
            Op::Deadline { at, then } => self.set_deadline(*at, *then)?,
        }
        Ok(())
    }

    /// The last word: everything settles, then the peer half-closes and the
    /// connection must end.
    pub(super) fn finish(&mut self) -> Result<(), String> {
        self.settle()?;
        if self.life == Life::Open && self.wire.borrow().reset.is_none() {
            self.peer_half_close();
            self.settle()?;
            if self.life == Life::Open {
                return Err(
                    "the peer half-closed and read everything, yet the connection stayed open"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// The connection under test, while it is in the table.
    fn conn(&mut self) -> Option<&mut Conn<Socket, Seen>> {
        self.clients.table.get_mut(KEY)
    }

    /// What a turn is dated with: the clock read when the loop woke.
    fn turn_time(&self) -> Instant {
        match self.mutation {
            Mutation::StaleClock => self.slept_at,
            _ => self.now,
        }
    }

    fn peer_gone(&self) -> bool {
        let w = self.wire.borrow();
        w.fin || w.reset.is_some() || self.life != Life::Open
    }

    fn peer_send(&mut self, data: &[u8]) {
        if data.is_empty() || self.peer_gone() {
            return;
        }
        let mut w = self.wire.borrow_mut();
        w.inbound.extend(data);
        w.edges.readable = true;
        self.model.send(data);
    }

    fn peer_half_close(&mut self) {
        if self.peer_gone() {
            return;
        }
        let mut w = self.wire.borrow_mut();
        w.fin = true;
        w.edges.readable = true;
        w.edges.read_closed = true;
        self.model.half_close();
    }

    fn peer_reset(&mut self, sticky: bool) {
        if self.wire.borrow().reset.is_some() || self.life != Life::Open {
            return;
        }
        let mut w = self.wire.borrow_mut();
        w.reset = Some(if sticky {
            Reset::Sticky
        } else {
            Reset::Once { reported: false }
        });
        // The peer's socket is gone, and with it what was on the way to it.
        w.outbound.clear();
        w.edges = ready_from(READABLE | WRITABLE | READ_CLOSED | ERROR);
    }

    /// The peer reads up to `n` bytes; each must be the next the model expects.
    fn peer_read(&mut self, n: usize) -> Result<(), String> {
        let mut w = self.wire.borrow_mut();
        if w.reset.is_some() {
            return Ok(());
        }
        let n = n.min(w.outbound.len());
        let start = self.received.len();
        self.received.resize(start + n, 0);
        take_front(&mut w.outbound, &mut self.received[start..]);
        w.maybe_writable_edge();
        drop(w);
        self.check_received(start)
    }

    fn check_received(&self, start: usize) -> Result<(), String> {
        let got = &self.received[start..];
        let expected: &[u8] = match self.life {
            Life::HardStopped { .. } => &self.expected_after_stop,
            _ => &self.model.out,
        };
        let want = expected.get(start..self.received.len()).unwrap_or_default();
        if got == want {
            return Ok(());
        }
        let at = start + got.iter().zip(want).take_while(|(a, b)| a == b).count();
        Err(format!(
            "peer received byte {at} = {:?}, expected {:?}; received so far {:?}, model {:?}",
            char::from(self.received[at]),
            expected.get(at).copied().map(char::from),
            String::from_utf8_lossy(&self.received),
            String::from_utf8_lossy(expected),
        ))
    }

    fn take_edges(&mut self, mask: u8) -> Ready {
        let mut w = self.wire.borrow_mut();
        let owed = w.edges;
        let take = ready_from(mask);
        let taken = Ready {
            readable: owed.readable && take.readable,
            writable: owed.writable && take.writable,
            read_closed: owed.read_closed && take.read_closed,
            error: owed.error && take.error,
        };
        w.edges = Ready {
            readable: owed.readable && !take.readable,
            writable: owed.writable && !take.writable,
            read_closed: owed.read_closed && !take.read_closed,
            error: owed.error && !take.error,
        };
        taken
    }

    fn event(&mut self, ready: Ready) -> Result<(), String> {
        if self.life != Life::Open {
            return Ok(());
        }
        let turn = self.begin();
        self.clients.turn(KEY, Hook::Ready(ready), self.turn_time());
        self.conclude(turn, false)
    }

    /// Only a connection that answered `Again` is pumped, as the server does.
    fn pump(&mut self) -> Result<(), String> {
        if !self.clients.has_again() {
            return Ok(());
        }
        let turn = self.begin();
        self.clients.run_again(self.turn_time());
        self.conclude(turn, false)
    }

    fn begin(&self) -> Turn {
        let w = self.wire.borrow();
        Turn {
            delivered: w.delivered,
            written: w.written,
        }
    }

    /// Takes stock after the server acted on the connection: one it closed
    /// must have closed cleanly (unless `timed_out`: a timer closed it
    /// without waiting for its peer, which may then see a reset), one it
    /// kept must stay within its memory bounds, and its deadlines move as
    /// the turn's bytes say.
    fn conclude(&mut self, turn: Turn, timed_out: bool) -> Result<(), String> {
        self.check_counted()?;
        if self.life != Life::Open {
            return Ok(());
        }
        self.check_budget()?;
        if self.conn().is_none() {
            if timed_out {
                self.life = Life::TimedOut;
                return Ok(());
            }
            self.life = Life::Closed;
            return self.check_clean_close();
        }
        self.check_memory()?;
        self.account(turn);
        Ok(())
    }

    /// The driver's own account of when the idle and send deadlines are
    /// due, from what a turn did on the wire. Time stands still in a turn.
    fn account(&mut self, turn: Turn) {
        let (ending, pending) = match self.conn() {
            Some(conn) => (
                conn.is_ending(),
                conn.bufs
                    .as_deref()
                    .is_some_and(|b| b.output.len() > b.sent),
            ),
            None => return,
        };
        let w = self.wire.borrow();
        // An ending connection's reads are input thrown away: they do not
        // move its idle clock (the state after the turn decides).
        if w.delivered != turn.delivered && !ending {
            self.idle_from = self.now;
        }
        self.send_from = match self.send_from {
            Some(from) if pending && w.written == turn.written => Some(from),
            _ if pending => Some(self.now),
            _ => None,
        };
    }

    /// The connection is counted among the closed once it is ending or
    /// gone, and only then: once, under one reason.
    fn check_counted(&mut self) -> Result<(), String> {
        let closed = self.clients.counters().closed;
        let ended = self.conn().is_none_or(|c| c.is_ending());
        if closed.total() != u64::from(ended) {
            return Err(format!(
                "{} connection counted as closed {closed:?}",
                if ended { "an ended" } else { "an open" }
            ));
        }
        Ok(())
    }

    /// What the budget holds is what the connection's buffers hold, as the
    /// server counted them after the turn; a connection closed, or left
    /// without buffers, gave all of it back.
    fn check_budget(&mut self) -> Result<(), String> {
        let want = self
            .conn()
            .and_then(|c| c.bufs.as_deref())
            .map_or(0, |b| b.capacity());
        let held = self.clients.buffers();
        if held != want {
            return Err(format!(
                "the budget holds {held} bytes for a connection whose buffers hold {want}"
            ));
        }
        Ok(())
    }

    fn check_memory(&mut self) -> Result<(), String> {
        let (notices, bound, max_output, max_reply) =
            (self.said, self.bound, self.max_output, self.max_reply);
        let Some(bufs) = self.conn().and_then(|c| c.bufs.as_deref()) else {
            return Ok(());
        };
        let pending = bufs.output.len() - bufs.sent;
        if pending >= max_output + max_reply + notices {
            return Err(format!(
                "{pending} bytes of output pending, over max_output {max_output} + one reply {max_reply} + notices {notices}"
            ));
        }
        let unfiltered = bufs.unfiltered.len();
        let held = bufs.input.len() + bufs.output.len() + unfiltered;
        if held > bound + notices {
            return Err(format!(
                "the connection holds {held} bytes ({} input, {unfiltered} unfiltered, {} output of which {} already sent), over the bound {bound} + notices {notices}",
                bufs.input.len(),
                bufs.output.len(),
                bufs.sent,
            ));
        }
        Ok(())
    }

    /// A close the server decides on must not become a reset: the input is
    /// read to its EOF, unless more than the discard limit came after the
    /// close began.
    fn check_clean_close(&self) -> Result<(), String> {
        let w = self.wire.borrow();
        if w.reset.is_some() {
            return Ok(());
        }
        let reason = self.model.stop;
        if reason.is_none() {
            return Err("closed a connection that neither half-closed nor had to close".into());
        }
        let read_to_eof = w.inbound.is_empty() && w.eof_read;
        if !read_to_eof && w.delivered <= DISCARD_LIMIT {
            return Err(format!(
                "closed ({reason:?}) with {} bytes unread and no EOF read: the close would be a reset",
                w.inbound.len()
            ));
        }
        Ok(())
    }

    /// The notice, and the protocol's word after it, go after the output
    /// produced so far and before any later reply; only a connection already
    /// ending may drop them. When the protocol closes at the drain, what it
    /// had not answered never will be.
    fn notice(&mut self) -> Result<(), String> {
        if self.life != Life::Open {
            return Ok(());
        }
        let turn = self.begin();
        let at = self.produced().len();
        self.clients
            .turn(KEY, Hook::Drain(Some(NOTICE)), self.turn_time());
        let said = [NOTICE, DRAINING].concat();
        let took = self.produced().get(at..at + said.len()) == Some(&said[..]);
        // Counted even after a reset: the connection may still hold what it
        // took, and the memory bounds must allow for it.
        if took {
            self.said += said.len();
        }
        if self.wire.borrow().reset.is_none() {
            if at > self.model.out.len() {
                return Err(format!(
                    "produced {at} bytes, more than the model's {}",
                    self.model.out.len()
                ));
            }
            if took {
                self.model.drain(at);
            } else if self.model.stop.is_none() {
                return Err("an open connection dropped the drain notice".into());
            }
        }
        self.conclude(turn, false)
    }

    fn hard_stop(&mut self) -> Result<(), String> {
        if self.life != Life::Open {
            return Ok(());
        }
        let answered = self.produced().len().min(self.model.out.len());
        self.expected_after_stop = [&self.model.out[..answered], CLOSING_LINE].concat();
        let (unread, interrupts, reset, shut, short_before) = {
            let w = self.wire.borrow();
            (
                w.inbound.len(),
                w.interrupts,
                w.reset.is_some(),
                w.shut,
                w.short_writes,
            )
        };
        let was_ending = self.conn().is_some_and(|c| c.is_ending());
        // The server takes it out of the table, timers and all, and closes
        // it with its last word.
        self.clients
            .turn(KEY, Hook::Stop(Reason::HardStop), self.turn_time());
        if self.conn().is_some() {
            return Err("the hard stop left the connection in the table".into());
        }
        self.check_counted()?;
        let closed = self.clients.counters().closed;
        if !was_ending && closed.of(Reason::HardStop) != 1 {
            return Err(format!(
                "the hard stop closed a connection that was not ending, counted as {closed:?}"
            ));
        }
        let w = self.wire.borrow();
        let clean = interrupts == 0 && !reset;
        if clean && unread <= HARD_CLOSE_READS * READ_CHUNK && !w.inbound.is_empty() {
            return Err(format!(
                "a hard stop left {} of {unread} unread bytes: its close is a reset",
                w.inbound.len()
            ));
        }
        let fully_flushed = clean && !shut && w.short_writes == short_before;
        if fully_flushed && !w.shut {
            return Err("a hard stop did not shut the write side".into());
        }
        drop(w);
        self.life = Life::HardStopped { fully_flushed };
        Ok(())
    }

    /// The output the connection has produced: what the peer got, what is
    /// on the wire, and what the connection still holds unsent.
    fn produced(&mut self) -> Vec<u8> {
        let mut all = self.received.clone();
        all.extend(&self.wire.borrow().outbound);
        if let Some(b) = self.conn().and_then(|c| c.bufs.as_deref()) {
            all.extend_from_slice(&b.output[b.sent..]);
        }
        all
    }

    fn progress(&self) -> (usize, usize, usize, Life) {
        let w = self.wire.borrow();
        (w.delivered, w.written, self.received.len(), self.life)
    }

    /// Delivers what the kernel owes, pumps every `Again` and lets the peer
    /// read everything, until nothing moves; then checks liveness.
    fn settle(&mut self) -> Result<(), String> {
        let mut idle = 0;
        for _ in 0..SETTLE_ROUNDS {
            let before = self.progress();
            self.peer_read(usize::MAX)?;
            let owed = self.take_edges(0xff);
            if self.life != Life::Open {
                return self.check_settled();
            }
            if any(owed) {
                self.event(owed)?;
            } else if self.clients.has_again() {
                self.pump()?;
            } else {
                return self.check_settled();
            }
            if self.progress() == before {
                idle += 1;
                if idle > IDLE_ROUNDS {
                    return Err(format!(
                        "livelock: {IDLE_ROUNDS} rounds of events and pumps moved nothing"
                    ));
                }
            } else {
                idle = 0;
            }
        }
        Err(format!("did not settle within {SETTLE_ROUNDS} rounds"))
    }

    fn check_settled(&mut self) -> Result<(), String> {
        if self.wire.borrow().reset.is_some() {
            return match self.life {
                Life::Open => Err("reset, every event delivered, yet not closed".into()),
                _ => Ok(()),
            };
        }
        if self.life == Life::TimedOut {
            // What it had sent before was checked as it arrived.
            return Ok(());
        }
        if let Life::HardStopped { fully_flushed } = self.life {
            let want = &self.expected_after_stop;
            if fully_flushed && self.received != *want {
                return Err(format!(
                    "after a hard stop with room to flush, the peer got {:?}, expected {:?}",
                    String::from_utf8_lossy(&self.received),
                    String::from_utf8_lossy(want)
                ));
            }
            return Ok(());
        }
        if self.received != self.model.out {
            return Err(format!(
                "settled with lines unanswered: the peer got {:?}, expected {:?}",
                String::from_utf8_lossy(&self.received),
                String::from_utf8_lossy(&self.model.out)
            ));
        }
        // It ended the way the model says, and is counted so.
        let closed = self.clients.counters().closed;
        if let Some(stop) = self.model.stop {
            let why = match stop {
                ModelStop::TooLong => Reason::TooLong,
                ModelStop::Quit | ModelStop::Drained => Reason::Protocol,
                ModelStop::HalfClosed => Reason::Left,
                ModelStop::Idle => Reason::IdleTimeout,
                ModelStop::Late => Reason::Deadline,
            };
            if closed.of(why) != 1 {
                return Err(format!(
                    "ended for {stop:?}, yet counted as closed {closed:?}"
                ));
            }
        }
        let max_line = self.model.max_line;
        let shut = self.wire.borrow().shut;
        match (self.model.stop, self.life) {
            (None, Life::Open) => {
                let conn = self.conn().expect("open");
                match conn.bufs.as_deref() {
                    None => Ok(()),
                    Some(b) if b.input.is_empty() => {
                        Err("an idle connection kept empty buffers".into())
                    }
                    Some(b) if b.output.len() > b.sent || b.input.len() >= max_line => {
                        Err(format!(
                            "an idle connection holds {} pending output and {} input bytes",
                            b.output.len() - b.sent,
                            b.input.len()
                        ))
                    }
                    Some(_) => Ok(()),
                }
            }
            (Some(ModelStop::HalfClosed), Life::Open) => {
                Err("the peer half-closed and was answered, yet the connection stayed open".into())
            }
            (
                Some(
                    ModelStop::TooLong
                    | ModelStop::Quit
                    | ModelStop::Drained
                    | ModelStop::Idle
                    | ModelStop::Late,
                ),
                Life::Open,
            ) if !shut => Err("ending, all output read, yet no FIN sent".into()),
            _ => Ok(()),
        }
    }

    /// Serves what the loop owes before it may sleep: the kernel's events
    /// and the `Again`s (a poll with those ready returns at once).
    fn quiesce(&mut self) -> Result<(), String> {
        for _ in 0..SETTLE_ROUNDS {
            if self.life != Life::Open {
                return Ok(());
            }
            let owed = self.take_edges(0xff);
            if any(owed) {
                self.event(owed)?;
            } else if self.clients.has_again() {
                self.pump()?;
            } else {
                return Ok(());
            }
        }
        Err(format!("the loop found work for {SETTLE_ROUNDS} rounds"))
    }

    /// The loop sleeps until the nearest deadline and fires what is due.
    fn sleep(&mut self) -> Result<(), String> {
        self.quiesce()?;
        let next = self.clients.next_due();
        for (what, at) in self.live_deadlines() {
            if next.is_none_or(|next| next >= self.latest(at)) {
                return Err(format!(
                    "the loop would sleep until {}, past the {what} deadline at {}",
                    self.show(next),
                    self.show(Some(at))
                ));
            }
        }
        if self.idle.is_none() && self.send.is_none() && !self.ever_deadline && next.is_some() {
            return Err("no timeout configured and no deadline set, yet a timer is armed".into());
        }
        let Some(next) = next else {
            return Ok(());
        };
        self.slept_at = self.now;
        self.now = self.now.max(next);
        self.expire()
    }

    /// Fires the deadlines due now, as the server's timers do, and checks
    /// what fired against the driver's account (read from the protocol's
    /// hooks and from a close), then that none due by a tick was missed.
    fn expire(&mut self) -> Result<(), String> {
        self.moved_in_batch = false;
        let turn = self.begin();
        let at = self.produced().len();
        let ending = self.conn().map(|c| c.is_ending());
        let (late, told, deadline) = {
            let plan = self.plan.borrow();
            (plan.late, plan.idle, plan.deadline)
        };
        // Due before the batch, by the driver's account.
        let send_due =
            matches!((self.send, self.send_from), (Some(s), Some(from)) if from + s <= self.now);
        let idle_due = self
            .idle
            .is_some_and(|i| self.idle_from + self.idle_span(i) <= self.now);
        self.clients.expire(self.now, false);
        let (called, told_idle, moved) = {
            let plan = self.plan.borrow();
            (plan.late != late, plan.idle != told, plan.deadline)
        };
        let Some(ending) = ending else {
            if called || told_idle {
                return Err("a deadline fired for a connection that had left".into());
            }
            return Ok(());
        };
        // A timer may close the connection in the batch after a hook spoke,
        // and its unsent words go with it.
        let gone = self.conn().is_none();
        let mut at = at;
        if told_idle {
            self.check_due(Kind::Idle, deadline)?;
            if ending {
                return Err("an ending connection was told of its idle timeout".into());
            }
            self.idle_from = self.now;
            self.told = true;
            let line = idle_line(self.idle.expect("checked as due"));
            self.said_words(at, &line, Some(ModelStop::Idle), gone)?;
            at += line.len();
        }
        if called {
            if ending || told_idle {
                return Err("on_deadline was called for an ending connection".into());
            }
            self.check_due(Kind::Protocol, deadline)?;
            self.late_owed = false;
            if !same_instant(moved, deadline, self.origin) {
                self.late_owed = moved.is_some();
                self.moved_in_batch = true;
            }
            let close = self.plan.borrow().then == Then::Close;
            self.said_words(at, LATE, close.then_some(ModelStop::Late), gone)?;
        }
        // Only a deadline the protocol moved into the past in this batch
        // may be due still: it fires when the loop comes round.
        if let Some(next) = self.clients.next_due() {
            if next <= self.now && !self.moved_in_batch {
                return Err(format!(
                    "after expiring at {}, a deadline is still due at {}: the loop would spin",
                    self.show(Some(self.now)),
                    self.show(Some(next))
                ));
            }
        }
        if gone {
            // Closed at once by a timer (the send timeout, or the idle
            // timeout of an ending connection), or by a hook's close.
            let by_timer = send_due || (ending && idle_due);
            if !by_timer && !told_idle && !called {
                return Err("a timer closed the connection with none due".into());
            }
            self.conclude(turn, by_timer)?;
        } else {
            self.conclude(turn, false)?;
        }
        self.check_overdue()
    }

    /// The connection said `words` when it had produced `at` bytes: they
    /// must follow those bytes, whatever the backpressure, unless it was
    /// reset. The model places them there, and closes for `stop`. If the
    /// connection is `gone` since, only what it wrote of them is left.
    fn said_words(
        &mut self,
        at: usize,
        words: &[u8],
        stop: Option<ModelStop>,
        gone: bool,
    ) -> Result<(), String> {
        let produced = self.produced();
        let took = if gone {
            // What it had not written before is lost too.
            produced
                .get(at..)
                .is_none_or(|written| words.starts_with(written))
        } else {
            produced.get(at..at + words.len()) == Some(words)
        };
        if took {
            self.said += words.len();
        }
        if self.wire.borrow().reset.is_some() {
            return Ok(());
        }
        if at > self.model.out.len() {
            return Err(format!(
                "produced {at} bytes, more than the model's {}",
                self.model.out.len()
            ));
        }
        if !took {
            return Err(format!(
                "{:?} did not follow the {at} bytes produced before it",
                String::from_utf8_lossy(words)
            ));
        }
        self.model.say(at, words, stop);
        Ok(())
    }

    /// The protocol sets, moves or clears its deadline, as its own hooks
    /// would; the machinery reads it after the connection's next turn,
    /// here a spurious event with no readiness in it.
    fn set_deadline(&mut self, at: Option<Ms>, then: Then) -> Result<(), String> {
        if self.life != Life::Open {
            return Ok(());
        }
        let at = at.map(|ms| shift(self.now, ms));
        {
            let mut plan = self.plan.borrow_mut();
            if !same_instant(plan.deadline, at, self.origin) {
                self.late_owed = at.is_some();
            }
            plan.deadline = at;
            plan.then = then;
        }
        self.ever_deadline |= at.is_some();
        self.event(Ready::default())
    }

    /// Every deadline the connection has by the driver's account, with
    /// what it is for. An ending connection's protocol deadline is not
    /// among them: it is never reported.
    fn live_deadlines(&mut self) -> Vec<(&'static str, Instant)> {
        let Some(ending) = self.conn().map(|c| c.is_ending()) else {
            return Vec::new();
        };
        let mut live = Vec::new();
        if let Some(idle) = self.idle {
            live.push(("idle", self.idle_from + self.idle_span(idle)));
        }
        if let (Some(send), Some(from)) = (self.send, self.send_from) {
            live.push(("send", from + send));
        }
        let protocol = self.plan.borrow().deadline;
        if let Some(at) = protocol.filter(|_| self.late_owed && !ending) {
            live.push(("protocol", at));
        }
        live
    }

    /// How long after `idle_from` the idle deadline is due.
    fn idle_span(&self, idle: Duration) -> Duration {
        if self.told { idle.min(TOLD_WAIT) } else { idle }
    }

    /// A deadline fires never before it is due; `protocol` is the
    /// protocol's deadline as it stood before it fired.
    fn check_due(&self, kind: Kind, protocol: Option<Instant>) -> Result<(), String> {
        let due = match kind {
            Kind::Idle => match self.idle {
                Some(idle) => self.idle_from + self.idle_span(idle),
                None => return Err("an idle deadline fired with no idle timeout".into()),
            },
            Kind::Send => match (self.send, self.send_from) {
                (Some(send), Some(from)) => from + send,
                (None, _) => return Err("a send deadline fired with no send timeout".into()),
                (_, None) => return Err("a send deadline fired with no output waiting".into()),
            },
            Kind::Protocol => match protocol {
                Some(at) if self.late_owed => at,
                _ => {
                    return Err(
                        "the protocol deadline fired with none owed (none set, or reported since it last changed)"
                            .into(),
                    );
                }
            },
        };
        if self.now < due {
            return Err(format!(
                "the {kind:?} deadline fired at {}, before it was due at {}",
                self.show(Some(self.now)),
                self.show(Some(due))
            ));
        }
        Ok(())
    }

    /// A deadline fires at most one tick after it is due.
    fn check_overdue(&mut self) -> Result<(), String> {
        for (what, at) in self.live_deadlines() {
            if what == "protocol" && self.moved_in_batch {
                continue;
            }
            if self.now >= self.latest(at) {
                return Err(format!(
                    "the {what} deadline at {} did not fire by {}",
                    self.show(Some(at)),
                    self.show(Some(self.now))
                ));
            }
        }
        Ok(())
    }

    /// A tick after `at`, or after the origin for a deadline before it: by
    /// then a deadline must have fired.
    fn latest(&self, at: Instant) -> Instant {
        at.max(self.origin) + TICK
    }

    /// An instant on the virtual clock, in ms from its start.
    fn show(&self, at: Option<Instant>) -> String {
        let Some(at) = at else {
            return "never".into();
        };
        match at.checked_duration_since(self.t0) {
            Some(d) => format!("+{}ms", d.as_millis()),
            None => format!("-{}ms", (self.t0 - at).as_millis()),
        }
    }
}

/// Whether a protocol deadline stayed where it was, as `Protocol::deadline`
/// counts it: instants before the server's start are all one.
fn same_instant(a: Option<Instant>, b: Option<Instant>, origin: Instant) -> bool {
    a.map(|a| a.max(origin)) == b.map(|b| b.max(origin))
}
