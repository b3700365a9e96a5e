//! What a process serving with [`serve`](crate::serve) says about
//! itself, and asking the processes on an address for it ([`ask()`], what
//! `drainport stats` runs).
//!
//! A process's snapshot (its pid, service, version, state, uptime, the time
//! since its drain began, clients, accepted, closed and each close reason,
//! waits, messages, bytes in and out, buffer memory) is written the same
//! way wherever it goes: the status line (`SIGUSR1`) prints its counts
//! after `Process <pid> status: `, and the control channel answers a
//! `stats` request with the whole of it. [`ask()`] reads it back and
//! [`Fleet`] prints it, one line per process or in the Prometheus text
//! format.
//!
//! A line is `key=value` words separated by one space, and a value holds
//! no space (a service name never does, `claim::clean`). A reader ignores
//! keys it does not know, so that a newer process can add one without
//! breaking an older reader, and refuses an answer that lacks one it needs.
//! Writing and reading are pure functions, tested without a process.

use std::fmt::{self, Write as _};
use std::time::Duration;

use crate::closes::{Closes, Reason};

mod ask;

pub use ask::{ANSWER_WAIT, Fleet, ask};

/// Where the process is in its life, as the status line words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Running,
    Draining,
    Closing,
}

impl State {
    pub(crate) const ALL: [State; 3] = [State::Running, State::Draining, State::Closing];

    pub(crate) fn word(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Draining => "draining",
            State::Closing => "closing",
        }
    }

    fn from_word(word: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.word() == word)
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

    /// The whole snapshot, as the control channel answers it and
    /// `drainport stats` prints it: `pid=4242 service=... version=...`
    /// and then the counts.
    pub(crate) fn line(&self) -> String {
        format!(
            "pid={} service={} version={} {}",
            self.pid,
            self.service,
            self.version,
            self.counts()
        )
    }

    /// Reads what [`Stats::line`] wrote, or says what is missing.
    pub(crate) fn parse(line: &str) -> Result<Stats, String> {
        let value = |key: &str| -> Result<&str, String> {
            line.split(' ')
                .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
                .ok_or_else(|| format!("no {key}= in the answer"))
        };
        let number = |key: &str| -> Result<u64, String> {
            value(key)?
                .parse()
                .map_err(|_| format!("{key}= is not a number"))
        };
        let secs = |key: &str| -> Result<Option<Duration>, String> {
            let text = value(key)?;
            if text == "-" {
                return Ok(None);
            }
            text.strip_suffix('s')
                .and_then(|t| t.parse::<f64>().ok())
                .and_then(|t| Duration::try_from_secs_f64(t).ok())
                .map(Some)
                .ok_or_else(|| format!("{key}= is not a time"))
        };
        let mut closed = Closes::default();
        for why in Reason::ALL {
            closed.add(why, number(why.name())?);
        }
        if closed.total() != number("closed")? {
            return Err("the closes by reason do not add up to closed=".into());
        }
        Ok(Stats {
            pid: number("pid")?
                .try_into()
                .map_err(|_| "pid= is out of range".to_string())?,
            service: value("service")?.to_owned(),
            version: value("version")?.to_owned(),
            state: State::from_word(value("state")?).ok_or("state= is not a state")?,
            uptime: secs("uptime")?.ok_or("uptime= is not a time")?,
            draining: secs("since_hangup")?,
            clients: number("clients")?,
            accepted: number("accepted")?,
            closed,
            full: number("full")?,
            out_of_fds: number("out_of_fds")?,
            lines: number("lines")?,
            bytes_in: number("bytes_in")?,
            bytes_out: number("bytes_out")?,
            buffers: number("buffers")?,
        })
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

/// One process as `drainport stats` lists it: where it serves, who it
/// is, and its snapshot or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Listed {
    /// Every address it announces, as its claims write them.
    pub(crate) addrs: Vec<String>,
    pub(crate) pid: u32,
    pub(crate) service: String,
    pub(crate) answer: Result<Stats, String>,
}

impl Listed {
    /// One line: its addresses, then its snapshot, or `not answering`
    /// and why.
    pub(crate) fn line(&self) -> String {
        let addrs = self.addrs.join(",");
        match &self.answer {
            Ok(stats) => format!("{addrs} {}", stats.line()),
            Err(why) => format!(
                "{addrs} pid={} service={} state=not_answering ({why})",
                self.pid, self.service
            ),
        }
    }
}

/// A metric family: its name, type and help.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const UP: Family = Family {
    name: "drainport_up",
    kind: "gauge",
    help: "1 if the process answered the stats request, 0 if it did not.",
};

/// Every family that an answer fills, with how to read it from a snapshot.
/// A family with labels of its own (`reason`, `state`, `cause`) has one
/// sample per value.
type Samples = fn(&Stats) -> Vec<(Option<(&'static str, &'static str)>, Value)>;

const FAMILIES: [(Family, Samples); 12] = [
    (
        Family {
            name: "drainport_info",
            kind: "gauge",
            help: "Always 1: the process, its service and its version, as labels.",
        },
        |_| vec![(None, Value::Count(1))],
    ),
    (
        Family {
            name: "drainport_state",
            kind: "gauge",
            help: "1 for the state the process is in (running, draining, closing), 0 for the others.",
        },
        |s| {
            State::ALL
                .into_iter()
                .map(|st| {
                    (
                        Some(("state", st.word())),
                        Value::Count(u64::from(st == s.state)),
                    )
                })
                .collect()
        },
    ),
    (
        Family {
            name: "drainport_uptime_seconds",
            kind: "gauge",
            help: "Seconds since the process started serving.",
        },
        |s| vec![(None, Value::Secs(s.uptime))],
    ),
    (
        Family {
            name: "drainport_draining_seconds",
            kind: "gauge",
            help: "Seconds since the drain began; no sample while running.",
        },
        |s| {
            s.draining
                .map(|d| (None, Value::Secs(d)))
                .into_iter()
                .collect()
        },
    ),
    (
        Family {
            name: "drainport_clients",
            kind: "gauge",
            help: "Clients connected now.",
        },
        |s| vec![(None, Value::Count(s.clients))],
    ),
    (
        Family {
            name: "drainport_accepted_total",
            kind: "counter",
            help: "Clients accepted.",
        },
        |s| vec![(None, Value::Count(s.accepted))],
    ),
    (
        Family {
            name: "drainport_closed_total",
            kind: "counter",
            help: "Connections that ended, by the reason their end began for (see the README's What it prints).",
        },
        |s| {
            Reason::ALL
                .into_iter()
                .map(|why| (Some(("reason", why.name())), Value::Count(s.closed.of(why))))
                .collect()
        },
    ),
    (
        Family {
            name: "drainport_waited_total",
            kind: "counter",
            help: "Stretches in which clients waited for the process: at --max-clients with a client queued (full), or out of file descriptors (out_of_fds).",
        },
        |s| {
            vec![
                (Some(("cause", "full")), Value::Count(s.full)),
                (Some(("cause", "out_of_fds")), Value::Count(s.out_of_fds)),
            ]
        },
    ),
    (
        Family {
            name: "drainport_messages_total",
            kind: "counter",
            help: "Messages the protocol took (lines, for a line protocol).",
        },
        |s| vec![(None, Value::Count(s.lines))],
    ),
    (
        Family {
            name: "drainport_received_bytes_total",
            kind: "counter",
            help: "Bytes read from clients.",
        },
        |s| vec![(None, Value::Count(s.bytes_in))],
    ),
    (
        Family {
            name: "drainport_sent_bytes_total",
            kind: "counter",
            help: "Bytes written to clients.",
        },
        |s| vec![(None, Value::Count(s.bytes_out))],
    ),
    (
        Family {
            name: "drainport_buffer_bytes",
            kind: "gauge",
            help: "Bytes the clients' own buffers hold now, counted as --max-buffers counts them.",
        },
        |s| vec![(None, Value::Count(s.buffers))],
    ),
];

/// The processes in the Prometheus text exposition format (version
/// 0.0.4), as node_exporter's textfile collector reads it: each family
/// once, with its `# HELP` and `# TYPE` and then a sample per process
/// (per label value), labelled with the process's addresses, pid and
/// service, and no timestamps. A process that did not answer has its
/// `drainport_up` at 0 and no other sample.
pub(crate) fn prometheus(listed: &[Listed]) -> String {
    let mut out = String::new();
    header(&mut out, &UP);
    for p in listed {
        let _ = writeln!(
            out,
            "{}{} {}",
            UP.name,
            labels(p, None),
            u8::from(p.answer.is_ok())
        );
    }
    for (family, samples) in FAMILIES {
        header(&mut out, &family);
        for p in listed {
            let Ok(stats) = &p.answer else {
                continue;
            };
            for (extra, value) in samples(stats) {
                let extra = match family.name {
                    "drainport_info" => Some(("version", stats.version.as_str())),
                    _ => extra,
                };
                let _ = writeln!(out, "{}{} {value}", family.name, labels(p, extra));
            }
        }
    }
    out
}

fn header(out: &mut String, family: &Family) {
    let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
    let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
}

/// `{addr="...",pid="...",service="..."}` and the extra label, escaped.
fn labels(p: &Listed, extra: Option<(&str, &str)>) -> String {
    let pid = p.pid.to_string();
    let addrs = p.addrs.join(",");
    let mut all = vec![("addr", addrs.as_str()), ("pid", pid.as_str())];
    all.push(("service", p.service.as_str()));
    all.extend(extra);
    let inner: Vec<String> = all
        .into_iter()
        .map(|(k, v)| format!("{k}=\"{}\"", LabelValue(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A label value with `\`, `"` and newlines escaped, as the format asks.
struct LabelValue<'a>(&'a str);

impl fmt::Display for LabelValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A sample's value: a count, exact, or a time in seconds to the
/// millisecond.
#[derive(Debug, Clone, Copy)]
enum Value {
    Count(u64),
    Secs(Duration),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Count(n) => write!(f, "{n}"),
            Value::Secs(d) => write!(f, "{:.3}", d.as_secs_f64()),
        }
    }
}

#[cfg(test)]
mod tests;
