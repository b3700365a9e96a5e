//! What a process says about itself: one snapshot of its state and its
//! counts ([`Stats`]), written the same way wherever it goes. The status
//! line (`SIGUSR1`) prints its counts after `Process <pid> status: `.
//!
//! The snapshot is plain data taken between turns of the loop; writing it
//! is a pure function, tested here without a process. A line is
//! `key=value` words separated by one space, and a value holds no space.

use std::fmt;
use std::time::Duration;

use crate::closes::{Closes, Reason};

/// Where the process is in its life, as the status line words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Running,
    Draining,
    Closing,
}

impl State {
    pub(crate) fn word(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Draining => "draining",
            State::Closing => "closing",
        }
    }
}

/// One process's state and counts at one moment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stats {
    pub(crate) pid: u32,
    /// The service it runs, as its claims name it.
    pub(crate) service: String,
    /// The version of the drainport it was built with.
    pub(crate) version: String,
    pub(crate) state: State,
    /// Since `serve` started.
    pub(crate) uptime: Duration,
    /// Since the drain began, once it has.
    pub(crate) draining: Option<Duration>,
    pub(crate) clients: u64,
    pub(crate) accepted: u64,
    pub(crate) closed: Closes,
    /// Stretches in which clients waited for it: at `--max-clients`, and
    /// out of descriptors ([`crate::admission::Waits`]).
    pub(crate) full: u64,
    pub(crate) out_of_fds: u64,
    /// Messages the protocol took: lines, for a line protocol.
    pub(crate) lines: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// What the clients' own buffers hold now, in bytes.
    pub(crate) buffers: u64,
}

/// A time as the lines show it: seconds with one decimal, and `s`.
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1}s", self.0.as_secs_f64())
    }
}

impl Stats {
    /// The counts, as the status line prints them: `state=running
    /// clients=3 ...`, without who the process is.
    pub(crate) fn counts(&self) -> impl fmt::Display + '_ {
        Counts(self)
    }
}

struct Counts<'a>(&'a Stats);

impl fmt::Display for Counts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        write!(
            f,
            "state={} clients={} accepted={} closed={}",
            s.state.word(),
            s.clients,
            s.accepted,
            s.closed.total()
        )?;
        for why in Reason::ALL {
            write!(f, " {}={}", why.name(), s.closed.of(why))?;
        }
        write!(
            f,
            " full={} out_of_fds={} lines={} bytes_in={} bytes_out={} buffers={} since_hangup=",
            s.full, s.out_of_fds, s.lines, s.bytes_in, s.bytes_out, s.buffers
        )?;
        match s.draining {
            Some(d) => write!(f, "{}", Secs(d))?,
            None => f.write_str("-")?,
        }
        write!(f, " uptime={}", Secs(s.uptime))
    }
}

#[cfg(test)]
mod tests;
