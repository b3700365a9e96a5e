//! The timeout policy: when each connection's idle, send and protocol
//! deadlines fall, kept in the [`crate::deadline_queue`], and what is to
//! happen when one passes. It decides; [`crate::clients`] runs the hooks
//! and applies the verdicts. It has no clock of its own: every call that
//! dates something is given the loop's `now`.
//!
//! Guarantees:
//! - Idle: a client that sent no byte for `idle_timeout` gets the
//!   protocol's last word ([`Protocol::on_idle_timeout`]) and its
//!   connection ends; if it is still there `idle_timeout` later (it never
//!   sent its EOF), it is closed. An ending connection's idle clock is not
//!   moved by the input it throws away, so however it came to end, it
//!   waits for the client's EOF one idle period at most.
//! - Send: a connection whose output waited `send_timeout` without the
//!   client taking a byte of it is closed at once, without a word (it
//!   would not be read), and its buffers are freed.
//! - Protocol: [`Protocol::deadline`] is read after every turn of the
//!   connection, and [`Protocol::on_deadline`] called once it passes.
//! - A connection removed from the table has no timers left
//!   ([`Timeouts::forget`]), and one with none costs no memory here.
//!
//! [`Protocol::on_idle_timeout`]: crate::Protocol::on_idle_timeout
//! [`Protocol::deadline`]: crate::Protocol::deadline
//! [`Protocol::on_deadline`]: crate::Protocol::on_deadline

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::deadline_queue::{DeadlineQueue, Kind};

/// What a connection's turn did, as far as its timeouts care.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Turned {
    /// It read bytes from the client.
    pub(crate) read: bool,
    /// It wrote bytes to the client.
    pub(crate) wrote: bool,
    /// It has decided to end (see [`crate::conn`]).
    pub(crate) ending: bool,
    /// Output waits for the client to take it.
    pub(crate) pending: bool,
    /// The protocol's deadline, read after the turn.
    pub(crate) deadline: Option<Instant>,
}

/// What to do about a deadline that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// Nothing: the timeout is not configured.
    Ignore,
    /// Close the connection at once, without a word.
    Close,
    /// Give the protocol its last word for a client idle this long, and
    /// end the connection.
    Idle(Duration),
    /// Tell the protocol its deadline passed.
    Deadline,
}

pub(crate) struct Timeouts {
    idle: Option<Duration>,
    send: Option<Duration>,
    deadlines: DeadlineQueue,
    /// Kept between expiries so that firing allocates nothing once warm.
    fired: Vec<(usize, Kind)>,
}

impl Timeouts {
    /// The policy of `config`; deadlines are counted from `origin`.
    pub(crate) fn new(config: &Config, origin: Instant) -> Timeouts {
        Timeouts {
            idle: config.idle_timeout,
            send: config.send_timeout,
            deadlines: DeadlineQueue::new(origin),
            fired: Vec::new(),
        }
    }

    /// A client was admitted into `key` at `now`: its idle clock starts.
    pub(crate) fn admitted(&mut self, key: usize, now: Instant) {
        if let Some(idle) = self.idle {
            self.deadlines.set(key, Kind::Idle, now.checked_add(idle));
        }
    }

    /// The connection in `key` had a turn at `now` (any hook, any event)
    /// and is still open.
    pub(crate) fn after_turn(&mut self, key: usize, turn: Turned, now: Instant) {
        // An ending connection's reads are input thrown away while it waits
        // for the client's EOF: they do not keep it alive, so a client
        // that dribbles bytes after being told (a slowloris after its 408)
        // is closed one idle period after its last read before the end.
        if let Some(idle) = self.idle {
            if turn.read && !turn.ending {
                // Later than before: a store, not a queue operation.
                self.deadlines.set(key, Kind::Idle, now.checked_add(idle));
            }
        }
        if let Some(send) = self.send {
            if !turn.pending {
                self.deadlines.set(key, Kind::Send, None);
            } else if turn.wrote || self.deadlines.get(key, Kind::Send).is_none() {
                // Output waits, and the client took some (or it is new):
                // the clock starts again.
                self.deadlines.set(key, Kind::Send, now.checked_add(send));
            }
        }
        self.deadlines.set(key, Kind::Protocol, turn.deadline);
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
        let mut fired = std::mem::take(&mut self.fired);
        self.deadlines.expire(now, &mut fired);
        fired
    }

    pub(crate) fn done(&mut self, mut fired: Vec<(usize, Kind)>) {
        fired.clear();
        self.fired = fired;
    }

    /// Decides what becomes of the connection in `key`, `ending` or not,
    /// now that its deadline of `kind` passed at `now`.
    pub(crate) fn on_expired(
        &mut self,
        key: usize,
        kind: Kind,
        ending: bool,
        now: Instant,
    ) -> Expired {
        match kind {
            Kind::Idle => {
                let Some(idle) = self.idle else {
                    return Expired::Ignore;
                };
                if ending {
                    // Told already, or ending for another reason, and
                    // silent as long again: its EOF is not coming.
                    return Expired::Close;
                }
                // The wait for the client's EOF is bounded the same way.
                self.deadlines.set(key, Kind::Idle, now.checked_add(idle));
                Expired::Idle(idle)
            }
            // Not reading: a last word would not be read either.
            Kind::Send => Expired::Close,
            Kind::Protocol => Expired::Deadline,
        }
    }
}
