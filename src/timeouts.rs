//! The timeout policy: when each connection's idle, send and protocol
//! deadlines fall, kept in the [`crate::deadline_queue`], and what is to
//! happen when one passes. It decides; [`crate::clients`] runs the hooks
//! and applies the verdicts. It has no clock of its own: every call that
//! dates something is given the loop's `now`.
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
use crate::deadline_queue::{DeadlineQueue, Kind, NONE};

/// How long a client told of its idle timeout has to send its EOF before
/// it is closed anyway: enough for a live client to read its line and
/// close, short beside the idle timeouts that are used, so that silent
/// clients do not hold their descriptors for a second idle period.
pub(crate) const TOLD_WAIT: Duration = Duration::from_secs(1);

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
    /// end the connection: close it at once if `close`.
    Idle { idle: Duration, close: bool },
    /// Tell the protocol its deadline passed.
    Deadline,
}

pub(crate) struct Timeouts {
    idle: Option<Duration>,
    send: Option<Duration>,
    /// The two in nanoseconds, or 0 when not configured.
    idle_nanos: u64,
    send_nanos: u64,
    deadlines: DeadlineQueue,
    /// The ticks of the idle and send deadlines set at one `now`.
    stamp: Stamp,
    /// Kept between expiries so that firing allocates nothing once warm.
    fired: Vec<(usize, Kind)>,
    /// The process is out of descriptors: a told client does not wait.
    short: bool,
}

/// The ticks an idle and a send deadline set at a given `now` fall in,
/// and the stretch of time around it in which they stay the same: every
/// `now` after `after` and up to `until`. The turns of a wakeup share their
/// `now`, and a tick is 100 ms long, so the arithmetic is done once per
/// tick or so, and re-arming a deadline is a comparison and a store.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    /// `None`: from the origin on.
    after: Option<Instant>,
    /// `None`: for ever.
    until: Option<Instant>,
    idle: u32,
    send: u32,
}

impl Stamp {
    #[inline]
    fn holds(&self, now: Instant) -> bool {
        self.after.is_none_or(|after| now > after) && self.until.is_none_or(|until| now <= until)
    }
}

impl Timeouts {
    /// The policy of `config`; deadlines are counted from `origin`.
    pub(crate) fn new(config: &Config, origin: Instant) -> Timeouts {
        let (idle, send) = (config.idle_timeout, config.send_timeout);
        let idle_nanos = idle.map_or(0, DeadlineQueue::delay_nanos);
        let send_nanos = send.map_or(0, DeadlineQueue::delay_nanos);
        let mut timeouts = Timeouts {
            idle,
            send,
            idle_nanos,
            send_nanos,
            deadlines: DeadlineQueue::new(origin),
            stamp: Stamp {
                after: None,
                until: None,
                idle: NONE,
                send: NONE,
            },
            fired: Vec::new(),
            short: false,
        };
        timeouts.restamp(origin);
        timeouts
    }

    /// The ticks of an idle and a send deadline set at `now`.
    #[inline]
    fn stamp(&mut self, now: Instant) -> Stamp {
        if !self.stamp.holds(now) {
            self.restamp(now);
        }
        self.stamp
    }

    #[inline(never)]
    fn restamp(&mut self, now: Instant) {
        let nanos = self.deadlines.nanos(now);
        let idle = DeadlineQueue::tick_after(nanos, self.idle_nanos);
        let send = DeadlineQueue::tick_after(nanos, self.send_nanos);
        // A delay `d` after `n` falls in tick `t` for every `n` in
        // ((t - 1) * TICK - d, t * TICK - d], and past the last tick for
        // every `n` beyond that range's end: the stretch is where the
        // configured ones overlap.
        const T: u64 = DeadlineQueue::TICK_NANOS;
        let (mut after, mut until) = (None::<u64>, u64::MAX);
        for (tick, delay, on) in [
            (idle, self.idle_nanos, self.idle.is_some()),
            (send, self.send_nanos, self.send.is_some()),
        ] {
            if !on {
                continue;
            }
            let first = match tick {
                NONE => u64::from(u32::MAX) * T,
                tick => {
                    until = until.min(u64::from(tick) * T - delay);
                    u64::from(tick).saturating_sub(1) * T
                }
            };
            if let Some(bound) = first.checked_sub(delay) {
                after = Some(after.map_or(bound, |a| a.max(bound)));
            }
        }
        let origin = self.deadlines.origin();
        self.stamp = Stamp {
            after: after.and_then(|n| origin.checked_add(Duration::from_nanos(n))),
            until: origin.checked_add(Duration::from_nanos(until)),
            idle,
            send,
        };
        debug_assert!(self.stamp.holds(now) || nanos == 0);
    }

    /// Whether the process is out of descriptors, with clients queued for
    /// one: then a client told of its idle timeout is closed at once.
    pub(crate) fn short_of_descriptors(&mut self, short: bool) {
        self.short = short;
    }

    /// A client was admitted into `key` at `now`: its idle clock starts.
    pub(crate) fn admitted(&mut self, key: usize, now: Instant) {
        if self.idle.is_some() {
            let idle = self.stamp(now).idle;
            self.deadlines.set_tick(key, Kind::Idle, idle);
        }
    }

    /// Whether [`Timeouts::after_turn`] has anything to do for `key` after
    /// a turn that left the protocol's deadline at `deadline`: not when no
    /// timeout is configured and the connection never had a deadline, so
    /// that timeouts nobody uses cost a few instructions per turn.
    #[inline]
    pub(crate) fn watches(&self, key: usize, deadline: Option<Instant>) -> bool {
        self.idle.is_some()
            || self.send.is_some()
            || deadline.is_some()
            || self.deadlines.holds(key)
    }

    /// The connection in `key` had a turn at `now` (any hook, any event)
    /// and is still open.
    #[inline(always)]
    pub(crate) fn after_turn(&mut self, key: usize, turn: Turned, now: Instant) {
        // An ending connection's reads are input thrown away while it waits
        // for the client's EOF: they do not keep it alive, so a client
        // that dribbles bytes after being told (a slowloris after its 408)
        // is closed one idle period after its last read before the end.
        if self.idle.is_some() && turn.read && !turn.ending {
            // Later than before: a store, not a queue operation.
            let idle = self.stamp(now).idle;
            self.deadlines.set_tick(key, Kind::Idle, idle);
        }
        if self.send.is_some() {
            if turn.pending {
                self.output_waits(key, turn.wrote, now);
            } else {
                self.deadlines.set_tick(key, Kind::Send, NONE);
            }
        }
        self.deadlines.set_protocol(key, turn.deadline);
    }

    /// Output waits in the connection in `key` after its turn at `now`.
    #[inline(never)]
    fn output_waits(&mut self, key: usize, wrote: bool, now: Instant) {
        if wrote || !self.deadlines.is_set(key, Kind::Send) {
            // The client took some (or the output is new): the clock
            // starts again.
            let send = self.stamp(now).send;
            self.deadlines.set_tick(key, Kind::Send, send);
        }
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
                    // silent since: its EOF is not coming.
                    return Expired::Close;
                }
                // The wait for the client's EOF is short: a silent client
                // must not hold its descriptor for a second idle period.
                let told = now.checked_add(idle.min(TOLD_WAIT));
                self.deadlines.set(key, Kind::Idle, told);
                Expired::Idle {
                    idle,
                    // Its line and FIN are written, as far as the socket
                    // takes them; the descriptor goes to a client queued
                    // for one.
                    close: self.short,
                }
            }
            // Not reading: a last word would not be read either.
            Kind::Send => Expired::Close,
            Kind::Protocol => Expired::Deadline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    /// The ticks a turn re-arms with are those of its own `now`, however
    /// the turns' times move: forwards by a little or a lot, back, or to
    /// the edges of a tick.
    #[test]
    fn the_stamp_gives_the_ticks_of_the_turns_own_time() {
        let ms = Duration::from_millis;
        let origin = Instant::now();
        for (idle, send) in [
            (Some(ms(300)), Some(ms(150))),
            (Some(ms(1000)), None),
            (None, Some(ms(1))),
            (Some(ms(250)), Some(Duration::from_secs(3600))),
            (
                Some(Duration::ZERO),
                Some(Duration::from_secs(20 * 365 * 86_400)),
            ),
        ] {
            let config = Config {
                idle_timeout: idle,
                send_timeout: send,
                ..Config::default()
            };
            let mut t = Timeouts::new(&config, origin);
            let mut rng = Rng(0x5eed_u64.wrapping_add(idle.map_or(7, |d| d.as_millis() as u64)));
            let mut now = origin;
            for _ in 0..5000 {
                now = match rng.below(6) {
                    0 => now + Duration::from_micros(rng.below(50) as u64),
                    1 => now + ms(rng.below(400) as u64),
                    2 => origin + ms(100 * rng.below(50) as u64),
                    3 => origin + ms(100 * rng.below(50) as u64) + Duration::from_nanos(1),
                    4 => now
                        .checked_sub(ms(rng.below(300) as u64))
                        .unwrap_or(origin)
                        .max(origin),
                    _ => now,
                };
                let nanos = t.deadlines.nanos(now);
                let stamp = t.stamp(now);
                let want = |d: Option<Duration>, n: u64| {
                    DeadlineQueue::tick_after(n, d.map_or(0, DeadlineQueue::delay_nanos))
                };
                if idle.is_some() {
                    assert_eq!(stamp.idle, want(idle, nanos), "idle at +{nanos} ns");
                }
                if send.is_some() {
                    assert_eq!(stamp.send, want(send, nanos), "send at +{nanos} ns");
                }
            }
        }
    }
}
