//! The handshake window: how long a retiring process keeps its listeners
//! open after it steered new SYNs away, so that handshakes already in
//! flight on them complete instead of meeting a RST.
//!
//! A client whose SYN reached a listener before the steering holds a
//! request socket there until its final ACK arrives, one round trip after
//! the SYN-ACK left, or later if a segment was lost: the kernel resends
//! the SYN-ACK 1, 3, 7, 15 and 31 s after the first (`tcp_synack_retries`
//! of 5, from a 1 s initial RTO) and drops the request at 63 s. Closing
//! the listener drops its request sockets at once, and at the default
//! `tcp_migrate_req=0` the late ACK is answered with a RST.
//!
//! So the window watches the handshakes that were in flight on the port
//! at its first look, and ends when none of them is left (each completed,
//! and so waits in an accept queue, or was dropped by the kernel), or at
//! [`WINDOW_MAX`], whichever comes first. It cannot tell its own request
//! sockets from its siblings', so it waits for both; a sibling's finish as
//! quickly. A process with nothing in flight closes at its first look.
//!
//! This is pure: the caller brings the clock and the list, so it is tested
//! without sockets.

use std::io;
use std::time::{Duration, Instant};

use crate::handshakes::Handshake;

/// The first look, and the time between looks: soon enough that an idle
/// process exits at once, late enough that a SYN the kernel was steering
/// at the moment of the steering has its request socket by then.
pub(crate) const LOOK_EVERY: Duration = Duration::from_millis(50);
/// The longest window. Any handshake whose SYN-ACK got through completes
/// within a round trip; one that lost its SYN-ACK or its ACK once completes
/// after the resend at 1 s, and twice, after the one at 3 s. Four seconds
/// cover two losses in a row for round trips up to a second. Past that
/// the client is most likely gone (or never was: a SYN flood), and waiting
/// for the resends at 7, 15 and 31 s would hold a process with no clients
/// for half a minute.
pub(crate) const WINDOW_MAX: Duration = Duration::from_secs(4);

/// What a look found.
#[derive(Debug)]
pub(crate) enum Look {
    /// Handshakes the window watches are still in flight.
    Wait,
    /// None is left: the listeners may close once their queues are empty.
    Done,
    /// The window reached its end with this many still in flight (when
    /// known): they will be reset.
    Expired(Option<usize>),
    /// The handshakes cannot be listed; the window stays open to its end.
    Blind(io::Error),
}

#[derive(Debug)]
enum Watched {
    /// Before the first look.
    NotYet,
    /// Those in flight at the first look and still in flight since, sorted.
    These(Vec<Handshake>),
    /// The list could not be had.
    Blind,
}

/// The window of one retirement.
#[derive(Debug)]
pub(crate) struct Window {
    ends: Instant,
    next_look: Instant,
    watched: Watched,
}

impl Window {
    /// Opens the window when new SYNs have just been steered away.
    pub(crate) fn open(now: Instant) -> Window {
        Window {
            ends: now + WINDOW_MAX,
            next_look: now + LOOK_EVERY,
            watched: Watched::NotYet,
        }
    }

    /// When the next look is due.
    pub(crate) fn due(&self) -> Instant {
        match self.watched {
            Watched::Blind => self.ends,
            _ => self.next_look.min(self.ends),
        }
    }

    /// Looks at the handshakes in flight now, as `list` reports them.
    /// `list` is called only when its answer matters.
    pub(crate) fn look(
        &mut self,
        now: Instant,
        list: impl FnOnce() -> io::Result<Vec<Handshake>>,
    ) -> Look {
        if now >= self.ends {
            return Look::Expired(match &self.watched {
                Watched::These(w) => Some(w.len()),
                _ => None,
            });
        }
        if matches!(self.watched, Watched::Blind) {
            return Look::Wait;
        }
        let mut seen = match list() {
            Ok(seen) => seen,
            Err(e) => {
                self.watched = Watched::Blind;
                return Look::Blind(e);
            }
        };
        seen.sort_unstable();
        match &mut self.watched {
            Watched::These(watched) => watched.retain(|h| seen.binary_search(h).is_ok()),
            _ => self.watched = Watched::These(seen),
        }
        if matches!(&self.watched, Watched::These(w) if w.is_empty()) {
            return Look::Done;
        }
        self.next_look = now + LOOK_EVERY;
        Look::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(port: u16) -> Handshake {
        (
            "10.0.0.1:9000".parse().unwrap(),
            format!("10.0.0.2:{port}").parse().unwrap(),
        )
    }

    #[test]
    fn nothing_in_flight_closes_at_the_first_look() {
        let t0 = Instant::now();
        let mut w = Window::open(t0);
        assert_eq!(w.due(), t0 + LOOK_EVERY);
        assert!(matches!(w.look(w.due(), || Ok(vec![])), Look::Done));
    }

    #[test]
    fn waits_for_the_handshakes_of_the_first_look_only() {
        let t0 = Instant::now();
        let mut w = Window::open(t0);
        let mut t = w.due();
        assert!(matches!(w.look(t, || Ok(vec![hs(1), hs(2)])), Look::Wait));
        // 1 completed; 3 is new, a sibling's, and is not waited for.
        t = w.due();
        assert!(matches!(w.look(t, || Ok(vec![hs(3), hs(2)])), Look::Wait));
        t = w.due();
        assert!(matches!(w.look(t, || Ok(vec![hs(3), hs(4)])), Look::Done));
    }

    #[test]
    fn a_handshake_that_never_completes_ends_at_the_limit() {
        let t0 = Instant::now();
        let mut w = Window::open(t0);
        let mut looks = 0;
        let end = loop {
            let t = w.due();
            looks += 1;
            assert!(looks < 1000, "the window never ended");
            match w.look(t, || Ok(vec![hs(1)])) {
                Look::Wait => assert!(t < t0 + WINDOW_MAX),
                Look::Expired(left) => break (t, left),
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(end, (t0 + WINDOW_MAX, Some(1)));
    }

    #[test]
    fn a_blind_window_stays_open_to_its_end_without_asking_again() {
        let t0 = Instant::now();
        let mut w = Window::open(t0);
        let look = w.look(w.due(), || Err(io::Error::other("no sock_diag")));
        assert!(matches!(look, Look::Blind(_)));
        assert_eq!(w.due(), t0 + WINDOW_MAX);
        let asked = std::cell::Cell::new(false);
        let look = w.look(t0 + WINDOW_MAX - LOOK_EVERY, || {
            asked.set(true);
            Ok(vec![])
        });
        assert!(matches!(look, Look::Wait) && !asked.get());
        assert!(matches!(
            w.look(t0 + WINDOW_MAX, || Ok(vec![])),
            Look::Expired(None)
        ));
    }
}
