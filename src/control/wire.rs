//! The control channel's lines, both ways, as pure functions over bytes,
//! so that both ends and the tests share one definition.
//!
//! Every message is one line of text ending in `\n`. A request names its
//! kind first; another kind is one more arm of [`Request`]:
//!
//! ```text
//! asker -> process       stats
//! process -> asker       stats <key>=<value> ...              (then closes)
//!
//! successor -> process   take <addr> <service>
//! process -> successor   refused <reason>                     (then closes)
//!                        fds <k> <left> <cpu_1> ... <cpu_k>   (k descriptors attached)
//! successor -> process   got <k>                              (after each batch)
//!                        refused <reason>                     (gives up)
//!                        taking                               (after the last batch)
//! process -> successor   done                                 (it let go of them)
//! ```
//!
//! A batch carries at most [`unix::MAX_FDS`](crate::sys::unix::MAX_FDS)
//! descriptors; `left` says how many follow in later batches. An address
//! is written as `SocketAddr` prints it and a service as
//! [`crate::claim::clean`] leaves it, so neither holds a space. A reason
//! is free text on one line. A stats answer is the process's snapshot as
//! [`crate::stats`] writes it, `key=value` words.

use std::fmt::Write as _;

/// What a process is asked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Request<'a> {
    /// Say what state the process is in, and its counts.
    Stats,
    /// Hand the listeners on `addr` to the asker, who serves `service`.
    Take { addr: &'a [u8], service: &'a [u8] },
}

/// What a successor says during a takeover.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer<'a> {
    /// It took the last batch, of this many descriptors.
    Got(usize),
    /// It accepts from the listeners now: the process may let go of them.
    Taking,
    /// It gives up, and why.
    Refused(&'a [u8]),
}

/// What a process answers to a takeover.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply<'a> {
    /// The answer to `stats`: the snapshot's words.
    Stats(&'a [u8]),
    /// A batch: the CPU tag of each descriptor attached, in order, and how
    /// many descriptors follow in later batches.
    Fds { cpus: Vec<libc::c_int>, left: usize },
    /// It no longer holds them.
    Done,
    /// It will not hand them over, and why.
    Refused(&'a [u8]),
}

/// Reads a request line (without its `\n`), or says why it is not one.
pub(crate) fn request(line: &[u8]) -> Result<Request<'_>, &'static str> {
    if line == b"stats" {
        return Ok(Request::Stats);
    }
    let mut words = line.split(|&b| b == b' ');
    match words.next() {
        Some(b"take") => match (words.next(), words.next(), words.next()) {
            (Some(addr), Some(service), None) if !addr.is_empty() && !service.is_empty() => {
                Ok(Request::Take { addr, service })
            }
            _ => Err("a take request is 'take <addr> <service>'"),
        },
        _ => Err("unknown request"),
    }
}

/// Reads a successor's answer, or `None` for anything else.
pub(crate) fn answer(line: &[u8]) -> Option<Answer<'_>> {
    if line == b"taking" {
        return Some(Answer::Taking);
    }
    if let Some(reason) = line.strip_prefix(b"refused ") {
        return Some(Answer::Refused(reason));
    }
    let count = line.strip_prefix(b"got ")?;
    Some(Answer::Got(number(count)?))
}

/// Reads a process's reply, or `None` for anything else.
pub(crate) fn reply(line: &[u8]) -> Option<Reply<'_>> {
    if line == b"done" {
        return Some(Reply::Done);
    }
    if let Some(reason) = line.strip_prefix(b"refused ") {
        return Some(Reply::Refused(reason));
    }
    if let Some(stats) = line.strip_prefix(b"stats ") {
        return Some(Reply::Stats(stats));
    }
    let mut words = line.strip_prefix(b"fds ")?.split(|&b| b == b' ');
    let k = number(words.next()?)?;
    let left = number(words.next()?)?;
    let cpus = words
        .map(|w| std::str::from_utf8(w).ok()?.parse::<libc::c_int>().ok())
        .collect::<Option<Vec<_>>>()?;
    (cpus.len() == k && k > 0).then_some(Reply::Fds { cpus, left })
}

/// A whole number in decimal digits only.
fn number(text: &[u8]) -> Option<usize> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// The stats request.
pub(crate) const STATS: &[u8] = b"stats\n";

/// `stats <snapshot>\n`, the snapshot kept on its line.
pub(crate) fn stats(snapshot: &str) -> String {
    format!("stats {}\n", snapshot.replace(['\n', '\r'], " "))
}

/// `take <addr> <service>\n`.
pub(crate) fn take(addr: &str, service: &str) -> String {
    format!("take {addr} {service}\n")
}

/// `fds <k> <left> <cpu>...\n` for a batch tagged `cpus`.
pub(crate) fn fds(cpus: &[libc::c_int], left: usize) -> String {
    let mut line = format!("fds {} {left}", cpus.len());
    for cpu in cpus {
        let _ = write!(line, " {cpu}");
    }
    line.push('\n');
    line
}

/// `got <k>\n`.
pub(crate) fn got(k: usize) -> String {
    format!("got {k}\n")
}

pub(crate) const TAKING: &[u8] = b"taking\n";
pub(crate) const DONE: &[u8] = b"done\n";

/// `refused <reason>\n`, the reason kept on its line.
pub(crate) fn refused(reason: &str) -> String {
    format!("refused {}\n", reason.replace(['\n', '\r'], " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(line: &str) -> &[u8] {
        line.strip_suffix('\n').unwrap().as_bytes()
    }

    #[test]
    fn every_line_reads_back() {
        let t = take("[::1]:8080", "Lines<Echo>");
        assert_eq!(
            request(strip(&t)),
            Ok(Request::Take {
                addr: b"[::1]:8080",
                service: b"Lines<Echo>"
            })
        );
        let f = fds(&[0, 1, -1], 4);
        assert_eq!(f, "fds 3 4 0 1 -1\n");
        assert_eq!(
            reply(strip(&f)),
            Some(Reply::Fds {
                cpus: vec![0, 1, -1],
                left: 4
            })
        );
        assert_eq!(answer(strip(&got(253))), Some(Answer::Got(253)));
        assert_eq!(answer(b"taking"), Some(Answer::Taking));
        assert_eq!(reply(b"done"), Some(Reply::Done));
        let r = refused("no\nway");
        assert_eq!(r, "refused no way\n");
        assert_eq!(reply(strip(&r)), Some(Reply::Refused(b"no way")));
        assert_eq!(answer(strip(&r)), Some(Answer::Refused(b"no way")));
        assert_eq!(
            request(strip(std::str::from_utf8(STATS).unwrap())),
            Ok(Request::Stats)
        );
        let s = stats("pid=1 state=running");
        assert_eq!(s, "stats pid=1 state=running\n");
        assert_eq!(reply(strip(&s)), Some(Reply::Stats(b"pid=1 state=running")));
    }

    #[test]
    fn anything_else_is_refused() {
        for line in [
            &b""[..],
            b"take",
            b"take 127.0.0.1:1",
            b"take 127.0.0.1:1 a b",
            b"take  a",
            b"TAKE a b",
            b"stats\xff",
            b"stats ",
            b"stats please",
        ] {
            assert!(request(line).is_err(), "{line:?}");
        }
        for line in [
            &b"fds"[..],
            b"fds 2 0 1",
            b"fds 1 0 1 2",
            b"fds 0 0",
            b"fds 1 -1 0",
            b"fds 1 0 x",
            b"fds 1 0 99999999999",
            b"done ",
            b"refused",
        ] {
            assert_eq!(reply(line), None, "{line:?}");
        }
        for line in [&b"got"[..], b"got -1", b"got +1", b"got 1 2", b"taking "] {
            assert_eq!(answer(line), None, "{line:?}");
        }
    }
}
