//! `drainport stats`: asks every process of this user that serves an
//! address (every address, if none is named) for its stats, over its
//! control channel ([`crate::control`]), all at once.
//!
//! Contracts:
//! - Only claims of this effective uid are asked, and those whose owner
//!   the kernel cannot tell: a process answers its own user only, and
//!   anyone can make a claim of another uid. The kernel's word on the
//!   connection (`SO_PEERCRED`) must name the claim's pid and this uid,
//!   or the answer is not taken. Claims of other users are counted, for a
//!   hint, and not listed.
//! - Each process is asked once, whatever the number of addresses it
//!   serves, and listed with all of them.
//! - Every process found is listed: with its answer, or as not answering
//!   and why (stopped, too busy, gone, an older drainport that does not
//!   know the request). None is dropped.
//! - All are asked at once, and the whole takes at most [`ANSWER_WAIT`]
//!   after the connects: a process that answers within one turn of its
//!   loop is never reported as silent by a healthy machine.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::claim;
use crate::control::wire::{self, Reply};
use crate::log::Escaped;
use crate::sys::{self, process, unix};

use super::{Listed, Stats, prometheus};

/// How long the answers are waited for, all together.
pub const ANSWER_WAIT: Duration = Duration::from_secs(1);
/// The longest answer taken.
const ANSWER_MAX: usize = 4096;

/// What `drainport stats` found: every process of this user on the
/// address, with its answer or why there is none.
#[derive(Debug)]
pub struct Fleet {
    listed: Vec<Listed>,
    /// Processes of other users on the address, not asked.
    others: usize,
    /// The effective uid they were asked as.
    uid: u32,
}

impl Fleet {
    /// One line per process, in the order of their addresses and pids:
    /// its addresses, then `pid=... service=... version=... state=...`
    /// and the counts, or `state=not_answering (<why>)`.
    pub fn lines(&self) -> String {
        self.listed.iter().map(|p| p.line() + "\n").collect()
    }

    /// The same in the Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        prometheus(&self.listed)
    }

    /// How many processes were found.
    pub fn len(&self) -> usize {
        self.listed.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }

    /// How many of them answered.
    pub fn answered(&self) -> usize {
        self.listed.iter().filter(|p| p.answer.is_ok()).count()
    }

    /// How many processes of other users serve the address: they were not
    /// asked, since a process answers its own user only.
    pub fn other_users(&self) -> usize {
        self.others
    }

    /// The user the processes were asked as (this process's effective
    /// uid): the only one whose processes answer.
    pub fn uid(&self) -> u32 {
        self.uid
    }
}

/// Asks every drainport process of this user that serves one of `addrs`
/// (any address, if empty) for its state and counts, and waits at most
/// [`ANSWER_WAIT`] for the answers. Fails only when the processes cannot
/// be listed.
pub fn ask(addrs: &[SocketAddr]) -> io::Result<Fleet> {
    let listing = claim::list()?;
    let uid = process::euid();
    let wanted: Vec<Vec<u8>> = addrs.iter().map(|a| a.to_string().into_bytes()).collect();
    let serves = |c: &claim::Listed| wanted.is_empty() || wanted.contains(&c.addr);
    // The pids serving the address, then every claim of theirs.
    let mut pids: BTreeMap<u32, Vec<&claim::Listed>> = BTreeMap::new();
    let mut others = std::collections::BTreeSet::new();
    for c in listing.claims.iter().filter(|c| serves(c)) {
        if c.owner.is_some_and(|o| o != uid) {
            others.insert(c.pid);
        } else {
            pids.entry(c.pid).or_default();
        }
    }
    for c in &listing.claims {
        if c.owner.is_none_or(|o| o == uid) {
            if let Some(claims) = pids.get_mut(&c.pid) {
                claims.push(c);
            }
        }
    }
    let mut asking: Vec<Asking> = pids
        .into_iter()
        .filter_map(|(pid, claims)| {
            let first = *claims.first()?;
            let mut addrs: Vec<String> = claims.iter().map(|c| c.addr_text()).collect();
            addrs.dedup();
            Some(Asking::start(
                pid,
                addrs,
                Escaped(&first.service).to_string(),
                &first.name,
                uid,
            ))
        })
        .collect();
    wait_for_answers(&mut asking, Instant::now() + ANSWER_WAIT);
    let mut listed: Vec<Listed> = asking.into_iter().map(Asking::finish).collect();
    listed.sort_by(|a, b| (&a.addrs, a.pid).cmp(&(&b.addrs, b.pid)));
    Ok(Fleet {
        listed,
        others: others.len(),
        uid,
    })
}

/// One process being asked.
struct Asking {
    pid: u32,
    addrs: Vec<String>,
    service: String,
    /// The connection, until the answer is whole or something failed.
    conn: Option<OwnedFd>,
    buf: Vec<u8>,
    /// Why there is no answer, once that is known.
    failed: Option<String>,
}

impl Asking {
    /// Connects to the claim `name` of process `pid` and sends the
    /// request.
    fn start(pid: u32, addrs: Vec<String>, service: String, name: &[u8], uid: u32) -> Asking {
        let mut asking = Asking {
            pid,
            addrs,
            service,
            conn: None,
            buf: Vec::new(),
            failed: None,
        };
        match connect(pid, name, uid) {
            Ok(conn) => asking.conn = Some(conn),
            Err(why) => asking.failed = Some(why),
        }
        asking
    }

    /// Reads what is there; true when nothing more is to come.
    fn read(&mut self) -> bool {
        let Some(conn) = &self.conn else {
            return true;
        };
        let mut chunk = [0u8; 1024];
        loop {
            match recv(conn, &mut chunk) {
                Ok(0) => {
                    self.conn = None;
                    return true;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if self.buf.contains(&b'\n') || self.buf.len() > ANSWER_MAX {
                        self.conn = None;
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.failed = Some(format!("the connection failed: {e}"));
                    self.conn = None;
                    return true;
                }
            }
        }
    }

    fn finish(self) -> Listed {
        let answer = match self.failed {
            Some(why) => Err(why),
            None if self.conn.is_some() => {
                Err(format!("no answer within {}s", ANSWER_WAIT.as_secs_f64()))
            }
            None => read_answer(&self.buf),
        };
        let answer = answer.and_then(|stats| {
            if stats.pid == self.pid {
                Ok(stats)
            } else {
                Err(format!("answered as process {}", stats.pid))
            }
        });
        Listed {
            addrs: self.addrs,
            pid: self.pid,
            service: self.service,
            answer,
        }
    }
}

/// The stats in an answer, or what was wrong with it.
fn read_answer(buf: &[u8]) -> Result<Stats, String> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return Err(if buf.is_empty() {
            "closed the connection without a word".into()
        } else {
            "answered with no whole line".into()
        });
    };
    let line =
        std::str::from_utf8(&buf[..end]).map_err(|_| "answered with a line that is not text")?;
    match wire::reply(line.as_bytes()) {
        // A line that is text throughout: its words are too.
        Some(Reply::Stats(words)) => Stats::parse(std::str::from_utf8(words).unwrap_or_default()),
        Some(Reply::Refused(reason)) => Err(format!("refused: {}", Escaped(reason))),
        _ => Err(format!("answered {}", Escaped(line.as_bytes()))),
    }
}

/// A connection to process `pid` through its claim `name`, which the
/// kernel says is that process, of this uid, with the request sent.
fn connect(pid: u32, name: &[u8], uid: u32) -> Result<OwnedFd, String> {
    let conn = unix::connect_abstract_nonblocking(name).map_err(|e| match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => {
            "its claim does not listen: a drainport without stats, or one still starting".to_owned()
        }
        Some(libc::EAGAIN) => "too busy to take the connection".to_owned(),
        _ => format!("cannot connect to it ({e})"),
    })?;
    let peer = unix::peer(conn.as_fd()).map_err(|e| format!("cannot tell who answers ({e})"))?;
    if peer.pid != pid || peer.uid != uid {
        return Err(format!(
            "its claim is held by process {} of uid {}, not by it",
            peer.pid, peer.uid
        ));
    }
    if !unix::send(conn.as_fd(), wire::STATS, &[]).is_ok_and(|n| n == wire::STATS.len()) {
        return Err("could not be sent the request".into());
    }
    Ok(conn)
}

/// One read into `buf`. Descriptors sent along (none should be) are
/// closed at once.
fn recv(conn: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    unix::recv(conn.as_fd(), buf, &mut Vec::new())
}

/// Reads the answers as they come, until every one is whole or `deadline`.
fn wait_for_answers(asking: &mut [Asking], deadline: Instant) {
    loop {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut who = Vec::new();
        for (i, a) in asking.iter().enumerate() {
            if let Some(conn) = &a.conn {
                fds.push(libc::pollfd {
                    fd: conn.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                who.push(i);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if fds.is_empty() || left.is_zero() {
            return;
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        if let Err(e) = sys::poll(&mut fds, ms) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            for &i in &who {
                asking[i].failed = Some(format!("cannot wait for its answer ({e})"));
                asking[i].conn = None;
            }
            return;
        }
        for (pfd, &i) in fds.iter().zip(&who) {
            if pfd.revents != 0 {
                asking[i].read();
            }
        }
    }
}
