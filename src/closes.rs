//! Why connections end, and how many ended for each reason.
//!
//! Every connection is counted once, under the reason its end began for:
//! when it starts to end (its FIN and the wait for the client's EOF, see
//! [`crate::conn`]) or, for one closed outright, when it is closed. A
//! connection that is ending and is then closed by something else (a
//! hard stop, the wait for its EOF running out) keeps the reason it had.
//! So at any time `accepted = clients + closed - ending`, and once no
//! connection is ending, `accepted = clients + closed`.
//!
//! The server logs the ends it decides ([`Reason::decided_by_server`]),
//! one line each, under the rule of the accepted lines; the ends the
//! client brings about (it left, or its connection failed) are only
//! counted. Both happen in [`ended`], called where the end begins: by the
//! connection when it starts ending ([`crate::conn`]), and by the turn
//! function for a connection it closes outright ([`crate::clients`]).
//! Neither is on the hot path: a turn that ends nothing does nothing here.

use crate::log::say;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The client closed its side (its EOF) first; what it was owed was
    /// sent, then the connection closed.
    Left,
    /// The connection failed before either side ended it: the client reset
    /// it, or a read or write failed.
    Failed,
    /// The protocol ended it: `Action::Close` or `Step::Close` from any of
    /// its hooks but the deadline's (a `QUIT`, an HTTP `Connection: close`,
    /// a refusal at connect, a close at the drain).
    Protocol,
    /// The protocol's own deadline passed and it ended the connection
    /// (`on_deadline`: an HTTP 408, say).
    Deadline,
    /// A message reached the input cap (`--max-line`).
    TooLong,
    /// The client sent nothing for the idle timeout.
    IdleTimeout,
    /// The client took none of its replies for the send timeout.
    SendTimeout,
    /// The clients' buffers passed their budget and it held among the most.
    Evicted,
    /// The hard stop that the drain timeout started closed it.
    DrainTimeout,
    /// The hard stop that a second stop signal started closed it.
    HardStop,
}

impl Reason {
    /// Every reason, in the order the stats list them.
    pub(crate) const ALL: [Reason; 10] = [
        Reason::Left,
        Reason::Failed,
        Reason::Protocol,
        Reason::Deadline,
        Reason::TooLong,
        Reason::IdleTimeout,
        Reason::SendTimeout,
        Reason::Evicted,
        Reason::DrainTimeout,
        Reason::HardStop,
    ];

    /// Its name in log lines, the status line and the stats: lower case,
    /// words joined by `_`, so that it is also a Prometheus label value.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Reason::Left => "left",
            Reason::Failed => "failed",
            Reason::Protocol => "protocol",
            Reason::Deadline => "deadline",
            Reason::TooLong => "too_long",
            Reason::IdleTimeout => "idle_timeout",
            Reason::SendTimeout => "send_timeout",
            Reason::Evicted => "evicted",
            Reason::DrainTimeout => "drain_timeout",
            Reason::HardStop => "hard_stop",
        }
    }

    /// The server decided this end, and logs it: every reason but the
    /// client's leaving and a failed connection.
    pub(crate) fn decided_by_server(self) -> bool {
        !matches!(self, Reason::Left | Reason::Failed)
    }
}

/// The connections that ended, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closes([u64; Reason::ALL.len()]);

impl Closes {
    /// One more ended for `why`.
    pub(crate) fn count(&mut self, why: Reason) {
        self.0[why as usize] += 1;
    }

    /// `n` more ended for `why`: a count read back from a process's
    /// stats.
    pub(crate) fn add(&mut self, why: Reason, n: u64) {
        self.0[why as usize] += n;
    }

    /// How many ended for `why`.
    pub(crate) fn of(&self, why: Reason) -> u64 {
        self.0[why as usize]
    }

    /// How many ended, for any reason.
    pub(crate) fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// A connection's end began, for `why`: counted in `closed`, and logged
/// when the server decided it and `log` holds the pid, with the client's
/// address from `peer` (asked only then: it is a system call). Out of
/// line: it runs once per connection, never on the hot path.
#[cold]
#[inline(never)]
pub(crate) fn ended(
    closed: &mut Closes,
    log: Option<u32>,
    why: Reason,
    peer: impl FnOnce() -> Option<crate::peer::Address>,
) {
    closed.count(why);
    let Some(pid) = log.filter(|_| why.decided_by_server()) else {
        return;
    };
    let why = why.name();
    match peer() {
        Some(peer) => say!("Process {pid} closed connection from: {peer} ({why})"),
        None => say!("Process {pid} closed connection from: unknown ({why})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_slot_and_name() {
        let mut closes = Closes::default();
        for (i, why) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(why as usize, i, "{why:?} is listed in its place");
            for _ in 0..=i {
                closes.count(why);
            }
        }
        for (i, why) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(closes.of(why), i as u64 + 1, "{why:?}");
            let name = why.name();
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name} is a label value"
            );
        }
        assert_eq!(closes.total(), 55);
        let names: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        let logged: Vec<_> = Reason::ALL
            .into_iter()
            .filter(|r| !r.decided_by_server())
            .collect();
        assert_eq!(logged, [Reason::Left, Reason::Failed]);
    }
}
