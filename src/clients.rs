//! The clients of one loop: the table of connections, what they share, their
//! timeouts and the list of those with work left, and [`Clients::turn`], the
//! one function that runs a connection's turn.
//!
//! A turn is always the same steps: the counters are noted, the hook runs
//! ([`Hook`]: a readiness event, more work, the admission, the drain, a
//! deadline, an eviction, the hard stop), its [`Verdict`] is applied (kept,
//! queued for another turn, or removed), the timeouts are told what the
//! turn did, and the connection's own buffers, if it has any, are counted
//! against the process's budget ([`crate::budget`]), which closes the
//! connections holding the most when it is spent. A connection that the
//! turn closes outright, never having been ending, is counted here under
//! the reason its hook stands for ([`crate::closes`]); one that starts
//! ending is counted by the connection itself, at that moment. The server, which owns
//! the poll, and the fuzzer, which plays the kernel and the peer, both run
//! every turn through it, so what the fuzzer checks is the glue the server
//! runs.
//!
//! Guarantees:
//! - A connection that answers [`Verdict::Close`] leaves the table with its
//!   timers, at once; one that answers [`Verdict::Again`] gets another turn
//!   from [`Clients::run_again`], and while any waits
//!   [`Clients::has_again`] says so, for the poll not to sleep.
//! - A turn for a key with no connection (closed earlier in the batch: a
//!   slot is reused only after [`Clients::recycle`]) does nothing.
//! - Whether a client sent or took bytes is seen from the process's
//!   counters before and after its turn: one connection is served at a
//!   time, so a change is that connection's, and a connection keeps no
//!   timestamp.
//! - The budget is passed only by a count after a turn, and closing the
//!   largest connections until it fits again happens right there, each
//!   close a turn of its own ([`Hook::Evict`]).
//! - Every connection is counted once among the closed, under the reason
//!   its end began for: when it starts ending, or when it is closed if it
//!   never was ending. A turn that ends nothing does nothing for it.
//! - The hard stop closes clients in key order from where it last stopped
//!   ([`Clients::stop`]): no client is admitted after it began, so the
//!   keys behind that point stay empty, and closing them all visits each
//!   slot once.

use std::time::Instant;

use crate::budget::{Classes, Closed, Report, Share};
use crate::closes;
use crate::closes::Reason;
use crate::config::Config;
use crate::conn::{Conn, Context, Counters, Ready, Stream, Verdict};
use crate::deadline_queue::Kind;
use crate::peer::Peer;
use crate::protocol::Protocol;
use crate::slab::Slab;
use crate::timeouts::{Expired, Timeouts, Turned};

#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzzing;

/// What starts a connection's turn.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Hook<'a> {
    /// A readiness event.
    Ready(Ready),
    /// More work, left from a turn that answered [`Verdict::Again`].
    Pump,
    /// It was just admitted, from this peer.
    Connect(Peer<'a>),
    /// The drain started: the operator's notice (newline included), then
    /// the protocol's word.
    Drain(Option<&'a [u8]>),
    /// One of its deadlines passed.
    Expired(Kind),
    /// The process's buffers are over their budget, and it holds among
    /// the most: what it holds goes, and it ends.
    Evict,
    /// The hard stop, begun for this reason (the drain timeout, or a
    /// signal): the protocol's last word, and it is closed.
    Stop(Reason),
}

impl Hook<'_> {
    /// Why a connection that this hook closed outright, without ending
    /// first, ended: the timer's or the hard stop's reason, and otherwise
    /// a failed socket (an event, more work, the admission and the drain
    /// close only on an error; anything else ends the connection first).
    fn closes_for(self) -> Reason {
        match self {
            Hook::Expired(Kind::Idle) => Reason::IdleTimeout,
            Hook::Expired(Kind::Send) => Reason::SendTimeout,
            Hook::Expired(Kind::Protocol) => Reason::Deadline,
            Hook::Evict => Reason::Evicted,
            Hook::Stop(why) => why,
            Hook::Ready(_) | Hook::Pump | Hook::Connect(_) | Hook::Drain(_) => Reason::Failed,
        }
    }
}

/// Every connection of the loop, and what they share.
pub(crate) struct Clients<S, P: Protocol> {
    table: Slab<Conn<S, P::Conn>>,
    cx: Context<P>,
    timeouts: Timeouts,
    /// Clients with work left after their turn.
    again: Vec<usize>,
    /// The connections with buffers of their own, by size, to close the
    /// largest when the buffers are over their budget.
    classes: Classes,
    /// Clients closed for the budget, for the log and the status line.
    evicted: Report,
    /// Where the hard stop goes on closing: every key below is empty.
    stop_from: usize,
}

impl<S: Stream, P: Protocol> Clients<S, P> {
    /// No client yet, serving `protocol` within `config`'s limits and
    /// timeouts, counted from `origin` (the server's start).
    pub(crate) fn new(config: &Config, protocol: P, origin: Instant) -> Self {
        Clients {
            table: Slab::new(),
            cx: Context::new(protocol, config.max_input, config.max_output)
                .with_telnet(config.telnet)
                .with_budget(config.max_buffers)
                .with_log((!config.quiet).then(std::process::id)),
            timeouts: Timeouts::new(config, origin),
            again: Vec::new(),
            classes: Classes::default(),
            evicted: Report::default(),
            stop_from: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// The key the next admitted client gets, for its token.
    pub(crate) fn vacant_key(&self) -> usize {
        self.table.vacant_key()
    }

    /// The process's traffic so far.
    pub(crate) fn counters(&self) -> &Counters {
        &self.cx.counters
    }

    /// The shared read buffer, for other work of the loop between turns.
    pub(crate) fn spare_buffer(&mut self) -> &mut [u8] {
        self.cx.spare_buffer()
    }

    /// Admits a client at `now`, into [`Clients::vacant_key`]; its first
    /// turn is [`Hook::Connect`].
    pub(crate) fn admit(&mut self, stream: S, now: Instant) -> usize {
        let key = self.table.insert(Conn::new(stream));
        self.timeouts.admitted(key, now);
        self.cx.counters.accepted += 1;
        key
    }

    /// Runs one turn of the connection in `key` at `now`: the hook, then
    /// its verdict, its timeouts and its buffers. Returns the verdict, or
    /// `None` when the key holds no connection. Inlined at each caller, so
    /// that the match on the hook folds away.
    #[inline(always)]
    pub(crate) fn turn(&mut self, key: usize, hook: Hook<'_>, now: Instant) -> Option<Verdict> {
        if let Hook::Stop(why) = hook {
            let conn = self.remove(key)?;
            if !conn.is_ending() {
                ended(&mut self.cx, &conn, why);
            }
            conn.close_hard(&mut self.cx);
            return Some(Verdict::Close);
        }
        let conn = self.table.get_mut(key)?;
        let cx = &mut self.cx;
        let (bytes_in, bytes_out) = (cx.counters.bytes_in, cx.counters.bytes_out);
        let verdict = match hook {
            Hook::Ready(ready) => conn.on_ready(ready, cx),
            Hook::Pump => conn.pump(cx),
            Hook::Connect(peer) => conn.on_connect(peer, cx),
            Hook::Drain(notice) => conn.on_drain(notice, cx),
            Hook::Expired(kind) => {
                match self.timeouts.on_expired(key, kind, conn.is_ending(), now) {
                    Expired::Ignore => Verdict::Keep,
                    Expired::Close => Verdict::Close,
                    Expired::Idle { idle, close } => {
                        let verdict = conn.on_idle_timeout(idle, cx);
                        if close { Verdict::Close } else { verdict }
                    }
                    Expired::Deadline => conn.on_deadline(cx),
                }
            }
            Hook::Evict => conn.evict(cx),
            Hook::Stop(_) => unreachable!("handled above"),
        };
        match verdict {
            Verdict::Keep => {}
            Verdict::Again => self.again.push(key),
            Verdict::Close => {
                if let Some(conn) = self.remove(key) {
                    if !conn.is_ending() {
                        ended(&mut self.cx, &conn, hook.closes_for());
                    }
                }
                return Some(verdict);
            }
        }
        let deadline = cx.protocol.deadline(conn.state());
        if self.timeouts.watches(key, deadline) {
            let turned = Turned {
                read: cx.counters.bytes_in != bytes_in,
                wrote: cx.counters.bytes_out != bytes_out,
                ending: conn.is_ending(),
                pending: conn.has_pending(),
                deadline,
            };
            self.timeouts.after_turn(key, turned, now);
        }
        if conn.has_buffers() {
            self.file_buffers(key);
            // An eviction's own turn does not start another round: the
            // round that evicts goes on until the budget fits.
            if !matches!(hook, Hook::Evict) && self.cx.budget.over() {
                self.evict(now);
            }
        }
        Some(verdict)
    }

    /// Counts the buffers of the connection in `key` against the budget,
    /// as they stand after its turn, and files it under its size class.
    /// The only place the budget can be passed: what is held grows only
    /// when it is counted.
    fn file_buffers(&mut self, key: usize) {
        let Some(conn) = self.table.get_mut(key) else {
            return;
        };
        let Some(class) = conn.count_buffers() else {
            return;
        };
        let stamp = self.classes.file(key, class);
        if let Some(share) = conn.share_mut() {
            share.filed(class, stamp);
        }
        if self.classes.crowded(self.cx.budget.shares()) {
            let table = &self.table;
            self.classes.compact(|k| filed_stamp(table, k));
        }
    }

    /// Closes the connections that hold the most, largest class first,
    /// until the buffers fit their budget again. Each is taken from
    /// [`Classes`] in O(1) amortized, and filed again (at its new, small
    /// size) after its eviction's turn; one taken again while ending is
    /// closed, so the loop ends.
    #[inline(never)]
    fn evict(&mut self, now: Instant) {
        while self.cx.budget.over() {
            let table = &self.table;
            let Some(key) = self.classes.pop(|k| filed_stamp(table, k)) else {
                break;
            };
            let Some(conn) = self.table.get_mut(key) else {
                continue;
            };
            let first = !conn.is_ending();
            let held = conn.share().map_or(0, Share::counted);
            if let Some(share) = conn.share_mut() {
                share.unfile();
            }
            if first {
                self.evicted.closed(held);
            }
            self.turn(key, Hook::Evict, now);
        }
    }

    /// What the connections' own buffers hold in all, as last counted.
    pub(crate) fn buffers(&self) -> usize {
        self.cx.budget.held()
    }

    /// The budget for the connections' own buffers.
    pub(crate) fn buffer_limit(&self) -> usize {
        self.cx.budget.limit()
    }

    /// When the next line about clients closed for the budget is due.
    #[inline]
    pub(crate) fn evictions_due(&self, now: Instant) -> Option<Instant> {
        self.evicted.due(now)
    }

    /// What that line reports, if it is due at `now`.
    pub(crate) fn take_evictions(&mut self, now: Instant) -> Option<Closed> {
        self.evicted.take(now)
    }

    /// Takes a connection out of the table, with its timers. Dropping it
    /// closes the socket, which also takes it out of the poll: its
    /// descriptor is never duplicated, so that is the last close.
    fn remove(&mut self, key: usize) -> Option<Conn<S, P::Conn>> {
        let conn = self.table.remove(key)?;
        self.timeouts.forget(key);
        Some(conn)
    }

    /// Some client has work left: the poll must not sleep.
    pub(crate) fn has_again(&self) -> bool {
        !self.again.is_empty()
    }

    /// Gives the clients that used up their turn another one.
    #[inline]
    pub(crate) fn run_again(&mut self, now: Instant) {
        if !self.again.is_empty() {
            self.pump_again(now);
        }
    }

    fn pump_again(&mut self, now: Instant) {
        let mut again = std::mem::take(&mut self.again);
        for key in again.drain(..) {
            self.turn(key, Hook::Pump, now);
        }
        // Keep the vector's allocation unless new work arrived meanwhile.
        if self.again.is_empty() {
            self.again = again;
        }
    }

    /// Tells every client the drain started, `notice` first.
    pub(crate) fn drain(&mut self, notice: Option<&[u8]>, now: Instant) {
        for key in 0..self.table.key_bound() {
            self.turn(key, Hook::Drain(notice), now);
        }
    }

    /// When the nearest deadline of any client is due.
    #[inline]
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.timeouts.next_due()
    }

    /// Acts on every deadline that passed by `now`; `short` says the
    /// process is out of descriptors, with clients queued for one.
    pub(crate) fn expire(&mut self, now: Instant, short: bool) {
        self.timeouts.short_of_descriptors(short);
        let fired = self.timeouts.expire(now);
        for &(key, kind) in &fired {
            self.turn(key, Hook::Expired(kind), now);
        }
        self.timeouts.done(fired);
    }

    /// The hard stop, begun for `why`, closes `count` more clients at
    /// `now`.
    pub(crate) fn stop(&mut self, mut count: usize, why: Reason, now: Instant) {
        while count > 0 && self.stop_from < self.table.key_bound() {
            if self.turn(self.stop_from, Hook::Stop(why), now).is_some() {
                count -= 1;
            }
            self.stop_from += 1;
        }
    }

    /// Makes the keys of the clients removed since the last call available
    /// again: between batches of events, so that an event still queued for
    /// a closed client never reaches a new one.
    #[inline]
    pub(crate) fn recycle(&mut self) {
        self.table.recycle();
    }
}

/// A connection closed outright, never having been ending, for `why`.
fn ended<S: Stream, P: Protocol>(cx: &mut Context<P>, conn: &Conn<S, P::Conn>, why: Reason) {
    closes::ended(&mut cx.counters.closed, cx.log, why, || conn.peer());
}

/// The stamp the connection in `key` carries in [`Classes`], or 0.
fn filed_stamp<S: Stream, C>(table: &Slab<Conn<S, C>>, key: usize) -> u32 {
    table.get(key).and_then(Conn::share).map_or(0, Share::stamp)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io;
    use std::net::SocketAddr;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::deadline_queue::TICK;
    use crate::protocol::{Action, Step};

    /// A socket whose peer sends nothing and takes every byte.
    struct Quiet;

    impl Stream for Quiet {
        fn read(&self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }

        fn write(&self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }

        fn shutdown_write(&self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A protocol whose every client has the deadline in `at`, and which
    /// counts the times it is told one passed.
    #[derive(Default)]
    struct Timed {
        at: Rc<Cell<Option<Instant>>>,
        late: Rc<Cell<u32>>,
    }

    impl Protocol for Timed {
        type Conn = ();

        fn on_data(&mut self, _: &mut (), input: &[u8], _: &mut Vec<u8>) -> Step {
            Step::Took(input.len())
        }

        fn deadline(&self, _: &()) -> Option<Instant> {
            self.at.get()
        }

        fn on_deadline(&mut self, _: &mut (), _: &mut Vec<u8>) -> Action {
            self.late.set(self.late.get() + 1);
            Action::Continue
        }
    }

    const PEER: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

    /// The clients, the deadline their protocol gives every client, and
    /// how often it was told one passed.
    struct Setup {
        clients: Clients<Quiet, Timed>,
        at: Rc<Cell<Option<Instant>>>,
        late: Rc<Cell<u32>>,
    }

    fn setup(t0: Instant) -> Setup {
        let protocol = Timed::default();
        let (at, late) = (Rc::clone(&protocol.at), Rc::clone(&protocol.late));
        let clients = Clients::new(&Config::default(), protocol, t0);
        Setup { clients, at, late }
    }

    /// A client's deadline reported, it leaves, and the next client in its
    /// slot has a deadline at the same instant: that one is reported too.
    /// Were the first client's timers kept, the second's deadline would
    /// read as the one already reported, and never come.
    #[test]
    fn a_client_that_left_leaves_no_timer_behind() {
        let t0 = Instant::now();
        let Setup {
            mut clients,
            at,
            late,
        } = setup(t0);
        let deadline = t0 + Duration::from_millis(250);
        at.set(Some(deadline));
        let key = clients.admit(Quiet, t0);
        clients.turn(key, Hook::Connect(Peer::Ip(PEER)), t0);
        clients.expire(deadline + TICK, false);
        assert_eq!(late.get(), 1);
        assert_eq!(
            clients.turn(key, Hook::Stop(Reason::HardStop), deadline + TICK),
            Some(Verdict::Close)
        );
        assert_eq!(clients.turn(key, Hook::Pump, deadline + TICK), None);
        clients.recycle();
        let again = deadline + 2 * TICK;
        assert_eq!(clients.admit(Quiet, again), key, "the slot is reused");
        clients.turn(key, Hook::Connect(Peer::Ip(PEER)), again);
        clients.expire(again, false);
        assert_eq!(late.get(), 2, "the new client's deadline was not reported");
    }

    /// The hard stop goes on from where it stopped: the keys behind it
    /// are never visited again, so closing N clients visits N slots in
    /// all. (A client in a slot behind it, which a hard stop never admits,
    /// shows it: a close that scanned from the first slot again would take
    /// it.)
    #[test]
    fn the_hard_stop_closes_in_key_order_and_never_looks_back() {
        let t0 = Instant::now();
        let mut clients = setup(t0).clients;
        for key in 0..6 {
            assert_eq!(clients.admit(Quiet, t0), key);
        }
        // Two leave by themselves.
        clients.turn(1, Hook::Stop(Reason::HardStop), t0);
        clients.turn(4, Hook::Stop(Reason::HardStop), t0);
        clients.stop(2, Reason::HardStop, t0);
        assert_eq!(clients.len(), 2, "0 and 2 closed, 1 skipped");
        assert_eq!(clients.stop_from, 3);
        assert!(clients.table.get(3).is_some() && clients.table.get(5).is_some());
        clients.recycle();
        let behind = clients.admit(Quiet, t0);
        assert!(behind < 3, "a slot behind the stop is reused");
        clients.stop(10, Reason::HardStop, t0);
        assert_eq!(clients.len(), 1);
        assert!(clients.table.get(behind).is_some(), "looked back");
        assert_eq!(clients.stop_from, 6, "each slot visited once");
    }
}
