//! The drain state machine: running, then draining, then closing (the hard
//! stop), and when the process is done.
//!
//! ```text
//!            stop signal                 2nd stop signal, or drain timeout
//! Running ──────────────► Draining ─────────────────────────────► Closing
//!                            │                                       │ more stop signals:
//!                            │                                       │ close the rest now
//!                            └──► done: listeners closed, no client ◄┘
//! ```
//!
//! It is pure: the caller brings the clock, the number of clients and
//! whether the listeners are closed, and acts on the [`Step`] it gets
//! back, so every transition is tested without a socket or a sleep. What
//! it keeps is what the process's life needs and nothing derived: when the
//! drain began (the status line's `since_hangup`, and the start of the
//! drain timeout, whose deadline is computed from it), and during the hard
//! stop the [`Spread`] schedule of its closes.
//!
//! Guarantees:
//! - The first stop signal starts the drain, the second starts the hard
//!   stop with every client due at once, and any later one makes every
//!   client left due at once.
//! - The drain timeout starts the hard stop at `since + timeout`, never
//!   before, with the clients' closes spread evenly over `close_spread`
//!   (the last one at its end).
//! - A client that leaves by itself during the hard stop counts as closed,
//!   so the schedule never closes more than it owes.
//! - [`Drain::finished`] is the one exit check: past running, listeners
//!   closed, no client left.

use std::time::{Duration, Instant};

use crate::spread::Spread;
use crate::stats::State;

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Admitting and serving clients.
    Running,
    /// Serving the clients left, admitting none; `since` is when the drain
    /// began.
    Draining { since: Instant },
    /// Closing every client on a schedule: the hard stop, begun for
    /// `cause`.
    Closing {
        since: Instant,
        spread: Spread,
        cause: Cause,
    },
}

/// Why the hard stop began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// A stop signal during the drain.
    Signal,
    /// The drain timeout, which was this long.
    Timeout(Duration),
}

/// What the server does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing.
    Wait,
    /// Start the drain: stop admitting, tell the clients.
    StartDrain,
    /// Start the hard stop: take what is queued, close the listeners, then
    /// call [`Drain::close_all`] with the clients there are.
    HardStop(Cause),
    /// Close this many clients now.
    Close(usize),
}

/// The process's life, with the operator's two settings for its end.
#[derive(Debug)]
pub(crate) struct Drain {
    /// The longest a drain may last before the hard stop.
    timeout: Option<Duration>,
    /// The window the hard stop that follows a drain timeout closes over.
    spread: Option<Duration>,
    phase: Phase,
}

impl Drain {
    pub(crate) fn new(timeout: Option<Duration>, spread: Option<Duration>) -> Drain {
        Drain {
            timeout,
            spread,
            phase: Phase::Running,
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.phase == Phase::Running
    }

    pub(crate) fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. })
    }

    /// When the drain began, if it has.
    pub(crate) fn since(&self) -> Option<Instant> {
        match self.phase {
            Phase::Running => None,
            Phase::Draining { since } | Phase::Closing { since, .. } => Some(since),
        }
    }

    /// Why the hard stop began, once it has.
    pub(crate) fn cause(&self) -> Option<Cause> {
        match self.phase {
            Phase::Closing { cause, .. } => Some(cause),
            _ => None,
        }
    }

    /// The phase, as the status line and the stats name it.
    pub(crate) fn state(&self) -> State {
        match self.phase {
            Phase::Running => State::Running,
            Phase::Draining { .. } => State::Draining,
            Phase::Closing { .. } => State::Closing,
        }
    }

    /// The word for the phase in the status line and the progress reports.
    pub(crate) fn word(&self) -> &'static str {
        self.state().word()
    }

    /// A stop signal (SIGHUP, SIGTERM or SIGINT) arrived at `now`, with
    /// `clients` left.
    pub(crate) fn on_stop_signal(&mut self, now: Instant, clients: usize) -> Step {
        match self.phase {
            Phase::Running => {
                self.begin(now);
                Step::StartDrain
            }
            Phase::Draining { .. } => Step::HardStop(Cause::Signal),
            Phase::Closing {
                since,
                spread,
                cause,
            } => {
                // Impatience wins over the spread: the rest are due now.
                // The hard stop keeps the cause it began for.
                self.phase = Phase::Closing {
                    since,
                    spread: spread.hurry(now),
                    cause,
                };
                self.to_close(now, clients)
            }
        }
    }

    /// The drain begins at `now` without a signal: starting failed after
    /// listening, and the clients that reached the process are served.
    pub(crate) fn begin(&mut self, now: Instant) {
        if self.phase == Phase::Running {
            self.phase = Phase::Draining { since: now };
        }
    }

    /// The hard stop begins at `now` with `clients` to close, for `cause`:
    /// after a signal all at once, after the drain timeout spread over the
    /// window. Returns that window (zero for all at once) and the first
    /// closes due.
    pub(crate) fn close_all(
        &mut self,
        now: Instant,
        clients: usize,
        cause: Cause,
    ) -> (Duration, Step) {
        let window = match cause {
            Cause::Signal => Duration::ZERO,
            Cause::Timeout(_) => self.spread.unwrap_or_default(),
        };
        self.phase = Phase::Closing {
            since: self.since().unwrap_or(now),
            spread: Spread::new(now, window, clients),
            cause,
        };
        (window, self.to_close(now, clients))
    }

    /// When [`Drain::on_timer`] next has something to do, with `clients`
    /// left: the drain timeout, or the next close of the hard stop.
    #[inline]
    pub(crate) fn due(&self, clients: usize) -> Option<Instant> {
        match self.phase {
            Phase::Running => None,
            // A timeout too long for the clock to hold means no deadline.
            Phase::Draining { since } => self.timeout.and_then(|t| since.checked_add(t)),
            Phase::Closing { spread, .. } => spread.next(spread.total().saturating_sub(clients)),
        }
    }

    /// Acts on the clock at `now`, with `clients` left.
    pub(crate) fn on_timer(&mut self, now: Instant, clients: usize) -> Step {
        match self.phase {
            Phase::Running => Step::Wait,
            Phase::Draining { .. } => match (self.due(clients), self.timeout) {
                (Some(deadline), Some(timeout)) if now >= deadline => {
                    Step::HardStop(Cause::Timeout(timeout))
                }
                _ => Step::Wait,
            },
            Phase::Closing { .. } => self.to_close(now, clients),
        }
    }

    /// The closes the schedule owes at `now`: those due, less those made,
    /// counting the clients that left by themselves as closed.
    fn to_close(&self, now: Instant, clients: usize) -> Step {
        let Phase::Closing { spread, .. } = self.phase else {
            return Step::Wait;
        };
        let closed = spread.total().saturating_sub(clients);
        match spread.due(now).saturating_sub(closed).min(clients) {
            0 => Step::Wait,
            n => Step::Close(n),
        }
    }

    /// The one place that decides the process is done: past running, its
    /// listeners closed, and no client left.
    pub(crate) fn finished(&self, listeners_closed: bool, clients: usize) -> bool {
        !self.is_running() && listeners_closed && clients == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_first_stop_signal_drains_and_the_second_closes_everyone_now() {
        let t0 = Instant::now();
        let mut d = Drain::new(None, Some(secs(10)));
        assert!(d.is_running());
        assert_eq!(d.since(), None);
        assert_eq!(d.on_stop_signal(t0, 3), Step::StartDrain);
        assert_eq!((d.word(), d.since()), ("draining", Some(t0)));
        // No drain timeout: nothing is ever due.
        assert_eq!(d.due(3), None);
        assert_eq!(d.on_timer(t0 + secs(3600), 3), Step::Wait);
        let later = t0 + secs(5);
        assert_eq!(d.on_stop_signal(later, 3), Step::HardStop(Cause::Signal));
        // A signal's hard stop does not spread, whatever the setting.
        let (window, step) = d.close_all(later, 3, Cause::Signal);
        assert_eq!((window, step), (Duration::ZERO, Step::Close(3)));
        assert_eq!((d.word(), d.since()), ("closing", Some(t0)));
        assert_eq!(d.cause(), Some(Cause::Signal));
    }

    #[test]
    fn the_drain_timeout_starts_a_spread_hard_stop_never_early() {
        let t0 = Instant::now();
        let mut d = Drain::new(Some(secs(30)), Some(secs(6)));
        d.on_stop_signal(t0, 3);
        let deadline = t0 + secs(30);
        assert_eq!(d.due(3), Some(deadline));
        assert_eq!(
            d.on_timer(deadline - Duration::from_nanos(1), 3),
            Step::Wait
        );
        let cause = Cause::Timeout(secs(30));
        assert_eq!(d.on_timer(deadline, 3), Step::HardStop(cause));
        // Still draining until the server closes the listeners and says so.
        assert_eq!((d.word(), d.cause()), ("draining", None));
        let (window, step) = d.close_all(deadline, 3, cause);
        assert_eq!((window, step), (secs(6), Step::Wait));
        // One client every two seconds, the last at the window's end.
        assert_eq!(d.due(3), Some(deadline + secs(2)));
        assert_eq!(d.on_timer(deadline + secs(2), 3), Step::Close(1));
        assert_eq!(d.due(2), Some(deadline + secs(4)));
        assert_eq!(d.on_timer(deadline + secs(5), 2), Step::Close(1));
        assert_eq!(d.on_timer(deadline + secs(6), 1), Step::Close(1));
        assert_eq!(d.due(0), None);
    }

    #[test]
    fn clients_that_leave_during_the_hard_stop_count_as_closed() {
        let t0 = Instant::now();
        let mut d = Drain::new(Some(secs(1)), Some(secs(10)));
        d.on_stop_signal(t0, 10);
        d.close_all(t0 + secs(1), 10, Cause::Timeout(secs(1)));
        // Half the window: five are due, and four left by themselves.
        assert_eq!(d.on_timer(t0 + secs(6), 6), Step::Close(1));
        // All left by themselves: nothing more to close, nothing due.
        assert_eq!(d.on_timer(t0 + secs(8), 0), Step::Wait);
        assert_eq!(d.due(0), None);
    }

    #[test]
    fn a_stop_signal_during_the_hard_stop_makes_the_rest_due_now() {
        let t0 = Instant::now();
        let mut d = Drain::new(Some(secs(1)), Some(secs(60)));
        d.on_stop_signal(t0, 5);
        d.close_all(t0 + secs(1), 5, Cause::Timeout(secs(1)));
        assert_eq!(d.cause(), Some(Cause::Timeout(secs(1))));
        assert_eq!(d.on_stop_signal(t0 + secs(2), 5), Step::Close(5));
        assert_eq!(d.since(), Some(t0), "the drain began at the first signal");
        assert_eq!(
            d.cause(),
            Some(Cause::Timeout(secs(1))),
            "a hurried hard stop keeps its cause"
        );
    }

    #[test]
    fn a_failed_start_drains_like_a_signal_without_one() {
        let t0 = Instant::now();
        let mut d = Drain::new(Some(secs(4)), None);
        d.begin(t0);
        assert_eq!(d.word(), "draining");
        assert_eq!(d.due(1), Some(t0 + secs(4)));
        // A begin during a drain changes nothing.
        d.begin(t0 + secs(1));
        assert_eq!(d.since(), Some(t0));
    }

    #[test]
    fn a_timeout_beyond_the_clock_never_comes() {
        let t0 = Instant::now();
        let mut d = Drain::new(Some(Duration::MAX), None);
        d.on_stop_signal(t0, 1);
        assert_eq!(d.due(1), None);
        assert_eq!(d.on_timer(t0 + secs(3600), 1), Step::Wait);
    }

    #[test]
    fn done_only_past_running_with_the_listeners_closed_and_no_client() {
        let t0 = Instant::now();
        let mut d = Drain::new(None, None);
        assert!(!d.finished(true, 0), "a running process is never done");
        d.on_stop_signal(t0, 0);
        assert!(!d.finished(false, 0), "listeners still open");
        assert!(!d.finished(true, 1), "a client left");
        assert!(d.finished(true, 0));
    }
}
