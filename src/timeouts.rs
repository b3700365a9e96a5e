//! The timeouts of every connection: the machinery's (idle, send) and the
//! protocol's deadline, kept in [`crate::deadline`] and acted on here, so
//! that the server only reports what happened and applies a verdict.
//!
//! Guarantees:
//! - Idle: a client that sent no byte for `idle_timeout` gets the
//!   protocol's last word ([`Protocol::on_idle_timeout`]) and its
//!   connection ends; if it is still there [`TOLD_WAIT`] later (or
//!   `idle_timeout`, if shorter) without having sent its EOF, it is
//!   closed, and while the process is out of descriptors it is closed
//!   right after its last word, without waiting: clients queued for a
//!   descriptor need it more. An ending connection's idle clock is not
//!   moved by the input it throws away, so however it came to end, it
//!   waits for the client's EOF one idle period at most.
//! - Send: a connection whose output waited `send_timeout` without the
//!   client taking a byte of it is closed at once, without a word (it
//!   would not be read), and its buffers are freed.
//! - Protocol: [`Protocol::deadline`] is read after every hook call for the
//!   connection, and [`Protocol::on_deadline`] called once it passes.
//! - A connection removed from the table has no timers left
//!   ([`Timeouts::forget`]), and one with none costs no memory here.
//!
//! Whether a client sent or took bytes is seen from the process counters
//! before and after its turn: the loop serves one connection at a time, so
//! a change is that connection's, and a connection needs no timestamp.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::conn::{Conn, Context, Stream, Verdict};
use crate::deadline::{Deadlines, Kind};
use crate::protocol::Protocol;

/// How long a client told of its idle timeout has to send its EOF before
/// it is closed anyway: enough for a live client to read its line and
/// close, short beside the idle timeouts that are used, so that silent
/// clients do not hold their descriptors for a second idle period.
pub(crate) const TOLD_WAIT: Duration = Duration::from_secs(1);

/// The counters before a connection's turn.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Before {
    bytes_in: u64,
    bytes_out: u64,
}

impl Before {
    pub(crate) fn take<P>(cx: &Context<P>) -> Before {
        Before {
            bytes_in: cx.counters.bytes_in,
            bytes_out: cx.counters.bytes_out,
        }
    }
}

pub(crate) struct Timeouts {
    idle: Option<Duration>,
    send: Option<Duration>,
    deadlines: Deadlines,
    /// When the loop last woke: what a turn is dated with.
    now: Instant,
    /// Kept between expiries so that firing allocates nothing once warm.
    fired: Vec<(usize, Kind)>,
    /// The process is out of descriptors: a told client does not wait.
    short: bool,
}

impl Timeouts {
    pub(crate) fn new(config: &Config, now: Instant) -> Timeouts {
        Timeouts {
            idle: config.idle_timeout,
            send: config.send_timeout,
            deadlines: Deadlines::new(now),
            now,
            fired: Vec::new(),
            short: false,
        }
    }

    /// Whether the process is out of descriptors, with clients queued for
    /// one: then a client told of its idle timeout is closed at once.
    pub(crate) fn short_of_descriptors(&mut self, short: bool) {
        self.short = short;
    }

    /// The loop woke at `now`: turns from here on happen then.
    pub(crate) fn woke(&mut self, now: Instant) {
        self.now = now;
    }

    /// `delay` from now, or never if the clock cannot hold it.
    fn after_delay(&self, delay: Option<Duration>) -> Option<Instant> {
        delay.and_then(|d| self.now.checked_add(d))
    }

    /// A client was admitted into `key`: its idle clock starts.
    pub(crate) fn admitted(&mut self, key: usize) {
        if self.idle.is_some() {
            let at = self.after_delay(self.idle);
            self.deadlines.set(key, Kind::Idle, at);
        }
    }

    /// The connection in `key` had a turn (any hook, any event) and is
    /// still open; `before` is what the counters said before it.
    pub(crate) fn after_turn<S: Stream, P: Protocol>(
        &mut self,
        key: usize,
        conn: &Conn<S, P::Conn>,
        cx: &Context<P>,
        before: Before,
    ) {
        // An ending connection's reads are input thrown away while it waits
        // for the client's EOF: they do not keep it alive, so a client
        // that dribbles bytes after being told (a slowloris after its 408)
        // is closed one idle period after its last read before the end.
        if self.idle.is_some() && cx.counters.bytes_in != before.bytes_in && !conn.is_ending() {
            // Later than before: a store, not a queue operation.
            let at = self.after_delay(self.idle);
            self.deadlines.set(key, Kind::Idle, at);
        }
        if self.send.is_some() {
            if !conn.has_pending() {
                self.deadlines.set(key, Kind::Send, None);
            } else if cx.counters.bytes_out != before.bytes_out
                || self.deadlines.get(key, Kind::Send).is_none()
            {
                // Output waits, and the client took some (or it is new):
                // the clock starts again.
                let at = self.after_delay(self.send);
                self.deadlines.set(key, Kind::Send, at);
            }
        }
        let at = cx.protocol.deadline(conn.state());
        self.deadlines.set(key, Kind::Protocol, at);
    }

    /// The connection in `key` is gone.
    pub(crate) fn forget(&mut self, key: usize) {
        self.deadlines.clear(key);
    }

    /// When the nearest deadline is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.deadlines.next_due()
    }

    /// The deadlines due at `now`, as `(key, kind)`. Hand the vector back
    /// with [`Timeouts::done`].
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(usize, Kind)> {
        self.now = now;
        let mut fired = std::mem::take(&mut self.fired);
        self.deadlines.expire(now, &mut fired);
        fired
    }

    pub(crate) fn done(&mut self, mut fired: Vec<(usize, Kind)>) {
        fired.clear();
        self.fired = fired;
    }

    /// Acts on the deadline of `kind` that passed for the connection in
    /// `key`, and says what becomes of it.
    pub(crate) fn fire<S: Stream, P: Protocol>(
        &mut self,
        key: usize,
        kind: Kind,
        conn: &mut Conn<S, P::Conn>,
        cx: &mut Context<P>,
    ) -> Verdict {
        match kind {
            Kind::Idle => {
                let Some(idle) = self.idle else {
                    return Verdict::Keep;
                };
                if conn.is_ending() {
                    // Told already, or closing for another reason, and
                    // silent since: its EOF is not coming.
                    return Verdict::Close;
                }
                // The wait for the client's EOF is short: a silent client
                // must not hold its descriptor for a second idle period.
                let at = self.after_delay(Some(idle.min(TOLD_WAIT)));
                self.deadlines.set(key, Kind::Idle, at);
                let verdict = conn.on_idle_timeout(idle, cx);
                if self.short {
                    // Its line and FIN are written, as far as the socket
                    // takes them; the descriptor goes to a client queued
                    // for one.
                    return Verdict::Close;
                }
                verdict
            }
            // Not reading: a last word would not be read either.
            Kind::Send => Verdict::Close,
            Kind::Protocol => conn.on_deadline(cx),
        }
    }
}
