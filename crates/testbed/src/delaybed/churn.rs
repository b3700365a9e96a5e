//! The client load, run on one thread inside the client namespace: short
//! connections at a fixed rate plus long-lived clients, in one mio loop.
//!
//! * short: at most `rate` new connections a second and at most
//!   `max_in_flight` at once. Each: non-blocking connect (deadline
//!   `connect_timeout`), send `ping\n`, read until `: from <pid>\n`
//!   (deadline `reply_timeout`), close. Every attempt ends in one outcome:
//!     - `ok`: the reply came (`ping\n: from <pid>\n`)
//!     - `refused`: connect failed with ECONNREFUSED
//!     - `connect_reset`: connect failed with ECONNRESET
//!     - `connect_timeout`: no connect within the deadline (or ETIMEDOUT)
//!     - `connect_err_<errno>`: any other connect error
//!     - `reset_after_connect`: connect succeeded, then ECONNRESET or
//!       EPIPE before the reply: the mark of a handshake whose final ACK
//!       found no listener
//!     - `eof_before_reply`: the server closed before replying
//!     - `reply_timeout`: no reply within the deadline
//!     - `bad_reply`: a reply other than the echo and the pid line
//!
//!   An attempt whose connect took longer than `stall` (the round trip plus
//!   800 ms: a SYN or SYN-ACK was sent again) is also counted as stalled,
//!   whatever its outcome.
//! * long-lived: connected before the load starts; each sends `ping\n`
//!   every `long_period` and checks each reply. One reset or closed by the
//!   server is cut. At the end the client closes them itself (shutdown,
//!   then read to EOF), so that draining servers can exit.
//!
//! These are the definitions of the Python bed's `churn.py`, kept so that
//! the figures compare. Every wait has a deadline; the loop ends when told
//! to stop and the connections in flight are done, or at once on abort.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::netns::Namespace;
use crate::tcp::poll_for;

const LINE: &[u8] = b"ping\n";
const SCAN_EVERY: Duration = Duration::from_millis(100);
/// Long-lived clients have tokens below this, short ones from it on.
const SHORT_BASE: usize = 1 << 20;

#[derive(Clone, Copy, Debug)]
pub struct LoadConfig {
    pub addr: SocketAddr,
    /// New short connections per second.
    pub rate: f64,
    pub max_in_flight: usize,
    pub long_lived: usize,
    pub long_period: Duration,
    pub connect_timeout: Duration,
    pub reply_timeout: Duration,
    /// A connect slower than this is a stall.
    pub stall: Duration,
    /// The round trip, for how long the end waits for late replies.
    pub rtt: Duration,
}

#[derive(Clone, Debug, Default)]
pub struct LongReport {
    pub requested: usize,
    pub connected: usize,
    /// Why each that never connected did not.
    pub connect_errors: Vec<String>,
    pub cut: usize,
    /// Why each cut one was cut.
    pub cuts: Vec<String>,
    pub sent: u64,
    pub replies: u64,
    pub bad_replies: u64,
    /// Lines never answered by the end, on clients not cut.
    pub missing: u64,
}

#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub attempted: u64,
    pub ok: u64,
    /// Failed attempts by outcome.
    pub failed: BTreeMap<String, u64>,
    pub stalled: u64,
    /// From the first short connection to the stop.
    pub churn: Duration,
    /// Connect times of the attempts that connected, sorted, in ms.
    pub connect_ms: Vec<f64>,
    pub most_in_flight: usize,
    /// How many server processes answered.
    pub pids: usize,
    pub long: LongReport,
}

impl LoadReport {
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// `kind n, kind n`, or `-`.
    pub fn failed_by_kind(&self) -> String {
        if self.failed.is_empty() {
            return "-".into();
        }
        let parts: Vec<String> = self
            .failed
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        parts.join(", ")
    }

    /// The connect time at quantile `q` (0..=1), ms.
    pub fn connect_quantile(&self, q: f64) -> Option<f64> {
        let n = self.connect_ms.len();
        (n > 0).then(|| self.connect_ms[((q * n as f64) as usize).min(n - 1)])
    }

    pub fn rate(&self) -> f64 {
        self.attempted as f64 / self.churn.as_secs_f64().max(1e-9)
    }
}

/// The running load; aborted and joined when dropped without `stop`.
pub struct Load {
    stop: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Result<LoadReport, String>, String>>>,
    /// Long-lived clients connected and answered once.
    pub long_ready: usize,
}

impl Load {
    /// Connects the long-lived clients, then starts the short ones;
    /// returns once the long-lived ones are answered (or have failed).
    pub fn start(ns: &Namespace, cfg: LoadConfig) -> Result<Load, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let abort = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let thread = {
            let (stop, abort) = (stop.clone(), abort.clone());
            ns.spawn(move || run(cfg, &stop, &abort, &tx))
        };
        let mut load = Load {
            stop,
            abort,
            thread: Some(thread),
            long_ready: 0,
        };
        let wait = cfg.connect_timeout + cfg.reply_timeout + Duration::from_secs(5);
        match rx.recv_timeout(wait) {
            Ok(ready) => load.long_ready = ready,
            Err(RecvTimeoutError::Timeout) => return Err(format!("load not ready in {wait:?}")),
            Err(RecvTimeoutError::Disconnected) => {
                let thread = load.thread.take().expect("thread");
                return Err(match thread.join() {
                    Ok(Ok(Err(e)) | Err(e)) => e,
                    Ok(Ok(Ok(_))) => "the load ended before it was ready".into(),
                    Err(_) => "the load thread panicked".into(),
                });
            }
        }
        Ok(load)
    }

    /// Stops starting short connections, lets those in flight finish,
    /// closes the long-lived clients and returns the counts.
    pub fn stop(mut self) -> Result<LoadReport, String> {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().expect("thread");
        match thread.join() {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the load thread panicked".into()),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.abort.store(true, Ordering::SeqCst);
            self.stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
    }
}

fn errno_name(e: &io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => "ECONNREFUSED",
        Some(libc::ECONNRESET) => "ECONNRESET",
        Some(libc::ETIMEDOUT) => "ETIMEDOUT",
        Some(libc::EPIPE) => "EPIPE",
        Some(libc::EHOSTUNREACH) => "EHOSTUNREACH",
        Some(libc::ENETUNREACH) => "ENETUNREACH",
        Some(libc::EADDRNOTAVAIL) => "EADDRNOTAVAIL",
        Some(libc::EMFILE) => "EMFILE",
        Some(n) => return n.to_string(),
        None => return e.kind().to_string(),
    };
    name.into()
}

/// What a connect's error means.
fn connect_outcome(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => "refused".into(),
        Some(libc::ECONNRESET) => "connect_reset".into(),
        Some(libc::ETIMEDOUT) => "connect_timeout".into(),
        _ => format!("connect_err_{}", errno_name(e)),
    }
}

/// Whether a socket that raised an event has finished connecting:
/// `Ok(true)` connected, `Ok(false)` still trying, `Err` failed.
fn connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads what is there; `Ok(true)` at EOF.
fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Takes one whole reply (`ping\n: from <pid>\n`) off the front of `buf`:
/// `Some(Some(pid))` if it is right, `Some(None)` if malformed, `None` if
/// incomplete.
fn take_reply(buf: &mut Vec<u8>) -> Option<Option<u32>> {
    let first = buf.iter().position(|&b| b == b'\n')?;
    let second = first + 1 + buf[first + 1..].iter().position(|&b| b == b'\n')?;
    let reply: Vec<u8> = buf.drain(..=second).collect();
    let pid = (reply[..=first] == *LINE)
        .then(|| std::str::from_utf8(&reply[first + 1..second]).ok())
        .flatten()
        .and_then(|l| l.strip_prefix(": from "))
        .and_then(|p| p.parse().ok());
    Some(pid)
}

struct Long {
    stream: Option<TcpStream>,
    connected: bool,
    started: Instant,
    buf: Vec<u8>,
    outstanding: VecDeque<Instant>,
    sent: u64,
    replies: u64,
    bad: u64,
    connect_error: Option<String>,
    cut: Option<String>,
}

impl Long {
    fn live(&self) -> bool {
        self.connected && self.cut.is_none() && self.stream.is_some()
    }

    fn settled(&self) -> bool {
        self.connect_error.is_some() || self.cut.is_some() || self.replies > 0
    }

    fn drop_stream(&mut self, poll: &Poll) {
        if let Some(mut s) = self.stream.take() {
            let _ = poll.registry().deregister(&mut s);
        }
    }

    fn cut(&mut self, poll: &Poll, why: String) {
        if self.cut.is_none() {
            self.cut = Some(why);
        }
        self.drop_stream(poll);
    }

    fn send(&mut self, poll: &Poll, now: Instant) {
        let Some(stream) = &mut self.stream else {
            return;
        };
        match stream.write(LINE) {
            Ok(n) if n == LINE.len() => {
                self.sent += 1;
                self.outstanding.push_back(now);
            }
            Ok(_) => self.cut(poll, "send: short write".into()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => self.cut(poll, format!("send: {}", errno_name(&e))),
        }
    }

    fn on_event(&mut self, poll: &Poll, pids: &mut HashSet<u32>, now: Instant) {
        let Some(stream) = &mut self.stream else {
            return;
        };
        if !self.connected {
            match connected(stream) {
                Ok(true) => {
                    self.connected = true;
                    self.send(poll, now);
                }
                Ok(false) => return,
                Err(e) => {
                    self.connect_error = Some(connect_outcome(&e));
                    self.drop_stream(poll);
                    return;
                }
            }
        }
        let Some(stream) = &mut self.stream else {
            return;
        };
        match read_some(stream, &mut self.buf) {
            Ok(eof) => {
                while let Some(reply) = take_reply(&mut self.buf) {
                    self.outstanding.pop_front();
                    match reply {
                        Some(pid) => {
                            self.replies += 1;
                            pids.insert(pid);
                        }
                        None => self.bad += 1,
                    }
                }
                if eof {
                    self.cut(poll, "closed by the server (EOF)".into());
                }
            }
            Err(e) => self.cut(poll, format!("recv: {}", errno_name(&e))),
        }
    }
}

struct Short {
    stream: TcpStream,
    started: Instant,
    connected_at: Option<Instant>,
    buf: Vec<u8>,
}

/// Advances one short connection after an event; its outcome when done.
fn on_short(short: &mut Short, now: Instant) -> Option<(String, Option<u32>)> {
    if short.connected_at.is_none() {
        match connected(&short.stream) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return Some((connect_outcome(&e), None)),
        }
        short.connected_at = Some(now);
        match short.stream.write(LINE) {
            Ok(n) if n == LINE.len() => {}
            Ok(_) => return Some(("send_err_short_write".into(), None)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNRESET | libc::EPIPE)) => {
                return Some(("reset_after_connect".into(), None));
            }
            Err(e) => return Some((format!("send_err_{}", errno_name(&e)), None)),
        }
    }
    match read_some(&mut short.stream, &mut short.buf) {
        Ok(eof) => {
            if let Some(reply) = take_reply(&mut short.buf) {
                return Some(match reply {
                    Some(pid) => ("ok".into(), Some(pid)),
                    None => ("bad_reply".into(), None),
                });
            }
            eof.then(|| ("eof_before_reply".into(), None))
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNRESET | libc::EPIPE)) => {
            Some(("reset_after_connect".into(), None))
        }
        Err(e) => Some((format!("recv_err_{}", errno_name(&e)), None)),
    }
}

/// Counts one short connection's outcome.
fn finish(
    short: Short,
    outcome: String,
    pid: Option<u32>,
    stall: Duration,
    report: &mut LoadReport,
    pids: &mut HashSet<u32>,
) {
    let now = Instant::now();
    let stalled = match short.connected_at {
        Some(at) => at - short.started > stall,
        None => outcome != "connect_timeout" && now - short.started > stall,
    };
    report.stalled += u64::from(stalled);
    if let Some(at) = short.connected_at {
        report
            .connect_ms
            .push((at - short.started).as_secs_f64() * 1000.0);
    }
    if outcome == "ok" {
        report.ok += 1;
    } else {
        *report.failed.entry(outcome).or_default() += 1;
    }
    if let Some(pid) = pid {
        pids.insert(pid);
    }
}

/// One poll of at most `SCAN_EVERY` while only the long-lived clients
/// have sockets, each event handed to its client.
fn poll_longs(
    poll: &mut Poll,
    events: &mut Events,
    longs: &mut [Long],
    pids: &mut HashSet<u32>,
) -> Result<(), String> {
    poll_for(poll, events, SCAN_EVERY)?;
    let now = Instant::now();
    for ev in events.iter() {
        if let Some(long) = longs.get_mut(ev.token().0) {
            long.on_event(poll, pids, now);
        }
    }
    Ok(())
}

/// The load thread: long-lived clients, `ready`, short connections until
/// `stop`, the end. Returns early with an error on `abort`.
fn run(
    cfg: LoadConfig,
    stop: &AtomicBool,
    abort: &AtomicBool,
    ready: &Sender<usize>,
) -> Result<LoadReport, String> {
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut pids = HashSet::new();
    let both = Interest::READABLE | Interest::WRITABLE;
    let aborted = || Err("aborted".to_owned());

    // Long-lived clients, all connecting at once.
    let t_long = Instant::now();
    let mut longs: Vec<Long> = (0..cfg.long_lived)
        .map(|i| {
            let mut long = Long {
                stream: None,
                connected: false,
                started: t_long,
                buf: Vec::new(),
                outstanding: VecDeque::new(),
                sent: 0,
                replies: 0,
                bad: 0,
                connect_error: None,
                cut: None,
            };
            match TcpStream::connect(cfg.addr) {
                Ok(mut s) => match poll.registry().register(&mut s, Token(i), both) {
                    Ok(()) => long.stream = Some(s),
                    Err(e) => long.connect_error = Some(format!("register: {e}")),
                },
                Err(e) => long.connect_error = Some(connect_outcome(&e)),
            }
            long
        })
        .collect();
    let ready_by = t_long + cfg.connect_timeout + cfg.reply_timeout;
    while !longs.iter().all(Long::settled) && Instant::now() < ready_by {
        if abort.load(Ordering::SeqCst) {
            return aborted();
        }
        poll_longs(&mut poll, &mut events, &mut longs, &mut pids)?;
        let now = Instant::now();
        for long in &mut longs {
            if !long.connected
                && long.connect_error.is_none()
                && now - long.started > cfg.connect_timeout
            {
                long.connect_error = Some("connect_timeout".into());
                long.drop_stream(&poll);
            }
        }
    }
    for long in &mut longs {
        if !long.settled() {
            long.connect_error = Some("no first reply".into());
            long.drop_stream(&poll);
        }
    }
    let _ = ready.send(longs.iter().filter(|l| l.live()).count());

    // Short connections.
    let mut report = LoadReport::default();
    let mut shorts: HashMap<usize, Short> = HashMap::new();
    let mut next_token = SHORT_BASE;
    let t0 = Instant::now();
    let mut next_long = t0 + cfg.long_period;
    let mut next_scan = t0 + SCAN_EVERY;
    let mut stopped_at = None;
    loop {
        if abort.load(Ordering::SeqCst) {
            return aborted();
        }
        let now = Instant::now();
        let stopping = stop.load(Ordering::SeqCst);
        if stopping {
            stopped_at.get_or_insert(now);
            if shorts.is_empty() {
                break;
            }
        } else {
            let due = ((now - t0).as_secs_f64() * cfg.rate) as u64 + 1;
            while report.attempted < due && shorts.len() < cfg.max_in_flight {
                report.attempted += 1;
                let started = Instant::now();
                match TcpStream::connect(cfg.addr) {
                    Ok(mut stream) => {
                        let token = next_token;
                        next_token += 1;
                        if let Err(e) = poll.registry().register(&mut stream, Token(token), both) {
                            return Err(format!("register: {e}"));
                        }
                        shorts.insert(
                            token,
                            Short {
                                stream,
                                started,
                                connected_at: None,
                                buf: Vec::new(),
                            },
                        );
                    }
                    Err(e) => *report.failed.entry(connect_outcome(&e)).or_default() += 1,
                }
            }
            report.most_in_flight = report.most_in_flight.max(shorts.len());
        }
        if now >= next_long {
            for long in longs.iter_mut().filter(|l| l.live()) {
                long.send(&poll, now);
            }
            next_long += cfg.long_period;
            if next_long < now {
                next_long = now + cfg.long_period;
            }
        }
        if now >= next_scan {
            let expired: Vec<(usize, &'static str)> = shorts
                .iter()
                .filter_map(|(&token, s)| match s.connected_at {
                    None if now - s.started > cfg.connect_timeout => {
                        Some((token, "connect_timeout"))
                    }
                    Some(at) if now - at > cfg.reply_timeout => Some((token, "reply_timeout")),
                    _ => None,
                })
                .collect();
            for (token, outcome) in expired {
                let mut short = shorts.remove(&token).expect("listed");
                let _ = poll.registry().deregister(&mut short.stream);
                finish(
                    short,
                    outcome.into(),
                    None,
                    cfg.stall,
                    &mut report,
                    &mut pids,
                );
            }
            next_scan = now + SCAN_EVERY;
        }
        let mut wake = next_long.min(next_scan);
        if !stopping && shorts.len() < cfg.max_in_flight {
            let next_start = t0 + Duration::from_secs_f64(report.attempted as f64 / cfg.rate);
            wake = wake.min(next_start);
        }
        poll_for(&mut poll, &mut events, wake.saturating_duration_since(now))?;
        let now = Instant::now();
        for ev in events.iter() {
            let token = ev.token().0;
            if token < SHORT_BASE {
                if let Some(long) = longs.get_mut(token) {
                    long.on_event(&poll, &mut pids, now);
                }
                continue;
            }
            let Some(short) = shorts.get_mut(&token) else {
                continue;
            };
            if let Some((outcome, pid)) = on_short(short, now) {
                let mut short = shorts.remove(&token).expect("present");
                let _ = poll.registry().deregister(&mut short.stream);
                finish(short, outcome, pid, cfg.stall, &mut report, &mut pids);
            }
        }
    }
    report.churn = stopped_at.unwrap_or(t0) - t0;

    // Late replies to the long-lived clients, then a clean close.
    let end = Instant::now() + cfg.rtt + Duration::from_secs(1);
    while Instant::now() < end && longs.iter().any(|l| l.live() && !l.outstanding.is_empty()) {
        if abort.load(Ordering::SeqCst) {
            return aborted();
        }
        poll_longs(&mut poll, &mut events, &mut longs, &mut pids)?;
    }
    let mut long_report = LongReport {
        requested: cfg.long_lived,
        ..LongReport::default()
    };
    for long in &mut longs {
        long_report.sent += long.sent;
        long_report.replies += long.replies;
        long_report.bad_replies += long.bad;
        if long.connected {
            long_report.connected += 1;
        }
        if let Some(e) = &long.connect_error {
            long_report.connect_errors.push(e.clone());
        }
        if let Some(why) = &long.cut {
            long_report.cut += 1;
            long_report.cuts.push(why.clone());
        } else if long.live() {
            long_report.missing += long.outstanding.len() as u64;
            if let Some(s) = &long.stream {
                let _ = s.shutdown(Shutdown::Write);
            }
        }
    }
    let end = Instant::now() + cfg.rtt + Duration::from_secs(2);
    let mut open: Vec<usize> = (0..longs.len())
        .filter(|&i| longs[i].stream.is_some())
        .collect();
    while !open.is_empty() && Instant::now() < end {
        poll_for(&mut poll, &mut events, SCAN_EVERY)?;
        open.retain(|&i| {
            let long = &mut longs[i];
            let Some(stream) = &mut long.stream else {
                return false;
            };
            let mut sink = Vec::new();
            match read_some(stream, &mut sink) {
                Ok(false) => true,
                Ok(true) | Err(_) => {
                    long.drop_stream(&poll);
                    false
                }
            }
        });
    }
    report.long = long_report;
    report.connect_ms.sort_by(f64::total_cmp);
    report.pids = pids.len();
    Ok(report)
}
