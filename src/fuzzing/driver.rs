//! The driver: plays the peer and the server against one connection over
//! the scripted socket, and checks every step against the model.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

use crate::conn::{Conn, Context, DISCARD_LIMIT, READ_CHUNK, Ready, Verdict};
use crate::protocol::Lines;

use super::case::{Case, ERROR, Op, READ_CLOSED, READABLE, WRITABLE, ready_from};
use super::model::{Model, ModelStop, too_long_reply};
use super::wire::{Mutation, Reset, Socket, Wire, take_front};
use super::{CLOSING_LINE, DRAINING, NOTICE, SUFFIX, Seen, Suffix, TAGS, Tagged};

/// The reads `close_hard` spends emptying the socket (its
/// `HARD_CLOSE_READS`): up to this many full chunks are taken, so a hard
/// close with no more than this much unread input is a FIN, not a reset.
const HARD_CLOSE_CHUNKS: usize = 4;
/// Rounds of a settle that move no byte before it is called a livelock. A
/// round that moves nothing can only come from an interrupted call, and at
/// most a few are injected.
const IDLE_ROUNDS: usize = 64;
/// The upper bound on the rounds of one settle, so a bug cannot hang a run.
const SETTLE_ROUNDS: usize = 4_000_000;

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
    /// The connection answered `Close` and was dropped.
    Closed,
    /// `close_hard` consumed it.
    HardStopped {
        /// Everything pending and the closing line fit in the send buffer.
        fully_flushed: bool,
    },
}

pub(super) struct Driver {
    pub(super) wire: Rc<RefCell<Wire>>,
    conn: Option<Conn<Socket, Seen>>,
    cx: Context<Tagged>,
    pub(super) model: Model,
    /// Bytes the peer has read, checked against the model as they arrive.
    pub(super) received: Vec<u8>,
    /// The connection answered `Again` and has not been pumped since.
    again: bool,
    pub(super) life: Life,
    /// After a hard stop: what the connection had answered, then the
    /// closing line.
    expected_after_stop: Vec<u8>,
    pub(super) bound: usize,
    max_output: usize,
    max_reply: usize,
    /// Drain notices the connection took. Each is queued whatever the
    /// backpressure, with the protocol's word after it, so it adds their
    /// length to the bounds. (The greeting needs no such allowance: it is
    /// appended to empty output, which the limit then counts.)
    notices: usize,
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
        let mut driver = Driver {
            conn: Some(Conn::new(Socket(Rc::clone(&wire)))),
            wire,
            cx: Context::new(Tagged(Lines(Suffix)), case.max_line, case.max_output)
                .with_telnet(case.telnet),
            model: Model::new(case.max_line, case.telnet),
            received: Vec::new(),
            again: false,
            life: Life::Open,
            expected_after_stop: Vec::new(),
            bound: case.max_output + max_reply + READ_CHUNK + case.max_line,
            max_output: case.max_output,
            max_reply,
            notices: 0,
        };
        // Admitted as the server admits a client: the protocol greets it.
        // A fresh socket with room takes the greeting, so nothing can fail.
        let conn = driver.conn.as_mut().expect("just made");
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        assert_eq!(conn.on_connect(peer, &mut driver.cx), Verdict::Keep);
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
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let verdict = conn.on_ready(ready, &mut self.cx);
        self.after(verdict)
    }

    /// Only a connection that answered `Again` is pumped, as the server does.
    fn pump(&mut self) -> Result<(), String> {
        if !self.again {
            return Ok(());
        }
        self.again = false;
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let verdict = conn.pump(&mut self.cx);
        self.after(verdict)
    }

    fn after(&mut self, verdict: Verdict) -> Result<(), String> {
        self.check_memory()?;
        match verdict {
            Verdict::Keep => Ok(()),
            Verdict::Again => {
                self.again = true;
                Ok(())
            }
            Verdict::Close => {
                self.conn = None;
                self.again = false;
                self.life = Life::Closed;
                self.check_clean_close()
            }
        }
    }

    fn check_memory(&self) -> Result<(), String> {
        let Some(bufs) = self.conn.as_ref().and_then(|c| c.bufs.as_deref()) else {
            return Ok(());
        };
        let notices = self.notices * (NOTICE.len() + DRAINING.len());
        let pending = bufs.output.len() - bufs.sent;
        if pending >= self.max_output + self.max_reply + notices {
            return Err(format!(
                "{pending} bytes of output pending, over max_output {} + one reply {} + notices {notices}",
                self.max_output, self.max_reply
            ));
        }
        let unfiltered = bufs.unfiltered.len();
        let held = bufs.input.len() + bufs.output.len() + unfiltered;
        if held > self.bound + notices {
            return Err(format!(
                "the connection holds {held} bytes ({} input, {unfiltered} unfiltered, {} output of which {} already sent), over the bound {} + notices {notices}",
                bufs.input.len(),
                bufs.output.len(),
                bufs.sent,
                self.bound
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
        let at = self.produced().len();
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let verdict = conn.on_drain(Some(NOTICE), &mut self.cx);
        let said = [NOTICE, DRAINING].concat();
        let took = self.produced().get(at..at + said.len()) == Some(&said[..]);
        // Counted even after a reset: the connection may still hold what it
        // took, and the memory bounds must allow for it.
        self.notices += usize::from(took);
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
        self.after(verdict)
    }

    fn hard_stop(&mut self) -> Result<(), String> {
        if self.conn.is_none() {
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
        let conn = self.conn.take().expect("checked above");
        conn.close_hard(&mut self.cx);
        self.again = false;
        let w = self.wire.borrow();
        let clean = interrupts == 0 && !reset;
        if clean && unread <= HARD_CLOSE_CHUNKS * READ_CHUNK && !w.inbound.is_empty() {
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
    fn produced(&self) -> Vec<u8> {
        let w = self.wire.borrow();
        let mut all = self.received.clone();
        all.extend(&w.outbound);
        if let Some(b) = self.conn.as_ref().and_then(|c| c.bufs.as_deref()) {
            all.extend_from_slice(&b.output[b.sent..]);
        }
        all
    }

    fn progress(&self) -> (usize, usize, usize, bool) {
        let w = self.wire.borrow();
        (
            w.delivered,
            w.written,
            self.received.len(),
            self.conn.is_some(),
        )
    }

    /// Delivers what the kernel owes, pumps every `Again` and lets the peer
    /// read everything, until nothing moves; then checks liveness.
    fn settle(&mut self) -> Result<(), String> {
        let mut idle = 0;
        for _ in 0..SETTLE_ROUNDS {
            let before = self.progress();
            self.peer_read(usize::MAX)?;
            let owed = self.take_edges(0xff);
            if self.conn.is_none() {
                return self.check_settled();
            }
            if any(owed) {
                self.event(owed)?;
            } else if self.again {
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

    fn check_settled(&self) -> Result<(), String> {
        let w = self.wire.borrow();
        if w.reset.is_some() {
            return match self.life {
                Life::Open => Err("reset, every event delivered, yet not closed".into()),
                _ => Ok(()),
            };
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
        match (self.model.stop, self.life) {
            (None, Life::Open) => {
                let conn = self.conn.as_ref().expect("open");
                match conn.bufs.as_deref() {
                    None => Ok(()),
                    Some(b) if b.input.is_empty() => {
                        Err("an idle connection kept empty buffers".into())
                    }
                    Some(b) if b.output.len() > b.sent || b.input.len() >= self.model.max_line => {
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
            (Some(ModelStop::TooLong | ModelStop::Quit | ModelStop::Drained), Life::Open)
                if !w.shut =>
            {
                Err("ending, all output read, yet no FIN sent".into())
            }
            _ => Ok(()),
        }
    }
}
