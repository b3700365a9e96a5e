//! The schedule that closes the clients left at a drain deadline evenly over
//! a window, so that they do not all reconnect at the same moment.
//!
//! Of `total` clients, the k-th is due at `start + window * k / total`: the
//! first after one slot, the last at the window's end. A zero window closes
//! everyone at once. Pure arithmetic on instants, in whole nanoseconds so
//! that a close is never due a rounding error early or late.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spread {
    start: Instant,
    window: Duration,
    total: usize,
}

impl Spread {
    pub(crate) fn new(start: Instant, window: Duration, total: usize) -> Spread {
        Spread {
            start,
            window,
            total,
        }
    }

    /// How many clients the schedule closes in all.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Restarts as a zero window: everyone is due now.
    pub(crate) fn hurry(self, now: Instant) -> Spread {
        Spread {
            start: now,
            window: Duration::ZERO,
            ..self
        }
    }

    /// How many clients should be closed by `now`, counting all since start.
    pub(crate) fn due(&self, now: Instant) -> usize {
        let window = self.window.as_nanos();
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        if elapsed >= window {
            self.total
        } else {
            (self.total as u128 * elapsed / window) as usize
        }
    }

    /// When the close after `closed` closes is due; `None` when all are, or
    /// when it falls beyond what the clock can hold, which is never.
    pub(crate) fn next(&self, closed: usize) -> Option<Instant> {
        if closed >= self.total {
            return None;
        }
        let offset = (self.window.as_nanos() * (closed as u128 + 1)).div_ceil(self.total as u128);
        self.start
            .checked_add(Duration::from_nanos(u64::try_from(offset).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_are_spread_evenly() {
        let t0 = Instant::now();
        let s = Spread::new(t0, Duration::from_secs(6), 3);
        assert_eq!(s.due(t0), 0);
        assert_eq!(s.due(t0 + Duration::from_millis(1999)), 0);
        assert_eq!(s.due(t0 + Duration::from_secs(2)), 1);
        assert_eq!(s.due(t0 + Duration::from_millis(5999)), 2);
        assert_eq!(s.due(t0 + Duration::from_secs(60)), 3);
        assert_eq!(s.next(0), Some(t0 + Duration::from_secs(2)));
        assert_eq!(s.next(2), Some(t0 + Duration::from_secs(6)));
        assert_eq!(s.next(3), None);
    }

    #[test]
    fn the_next_close_is_due_when_it_says() {
        let t0 = Instant::now();
        for total in [1, 3, 7, 1000] {
            let s = Spread::new(t0, Duration::from_millis(1234), total);
            for closed in 0..total {
                let at = s.next(closed).unwrap();
                assert!(s.due(at) > closed, "total {total}, closed {closed}");
                assert!(s.due(at - Duration::from_nanos(1)) <= closed);
            }
        }
    }

    #[test]
    fn a_window_beyond_the_clock_is_never_due() {
        let t0 = Instant::now();
        let s = Spread::new(t0, Duration::MAX, 2);
        assert_eq!(s.next(0), None);
        assert_eq!(s.due(t0 + Duration::from_secs(3600)), 0);
    }

    #[test]
    fn zero_window_or_hurry_closes_everyone_now() {
        let t0 = Instant::now();
        assert_eq!(Spread::new(t0, Duration::ZERO, 5).due(t0), 5);
        let s = Spread::new(t0, Duration::from_secs(60), 5);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(s.hurry(later).due(later), 5);
    }
}
