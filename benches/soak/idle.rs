//! The idle crowd: thousands of well-behaved connections on one mio loop.
//!
//! Each client binds a source address in 127.0.0.2..=127.0.0.5, connects,
//! sends one probe line, checks the echo and the `: from <pid>` suffix, and
//! then stays idle. On the drain notice it behaves like a lame-duck-aware
//! client: after a random delay of up to 2 s it closes and connects again
//! (to whichever process the kernel picks), and probes again.
//!
//! A well-behaved client fails when a connect fails or times out, the
//! connection is reset, a reply is wrong or late, or the server closes it
//! (EOF or the closing line) without having sent the notice first. A failed
//! client is counted, and it reconnects a second later so the crowd stays
//! the same size.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::FromRawFd as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::Rng;

/// Connects of the initial ramp in flight at once.
const RAMP_IN_FLIGHT: usize = 128;
/// The longest a connect may take. A SYN dropped by a retiring listener is
/// retried after 1 s, then 3 s; this leaves room for a loaded machine.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// The lame-duck delay is uniform in [0, this).
const LEAVE_DELAY_MS: u64 = 2000;
/// A failed client tries again after this.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// The longest line a well-behaved client expects.
const MAX_LINE: usize = 512;
/// Failure messages kept for the report.
const FAILURES_KEPT: usize = 20;
/// Source addresses 127.0.0.2 ..= 127.0.0.(1 + SOURCES).
const SOURCES: u8 = 4;

/// Figures the main thread reads while the loop runs.
#[derive(Default)]
pub struct IdleStats {
    /// Connections open with their probe answered.
    pub held: AtomicUsize,
    /// First connections whose probe was answered.
    pub initial_ok: AtomicU64,
    /// Clients whose first attempt ended (answered or failed): the ramp.
    pub initial_done: AtomicUsize,
    /// Connections made after a notice (or a failure) whose probe was answered.
    pub reconnect_ok: AtomicU64,
    /// Such connections that failed.
    pub reconnect_failed: AtomicU64,
    pub notices: AtomicU64,
    /// The server closed the connection after its notice, before the client
    /// left (the drain deadline): not a failure, but worth seeing.
    pub closed_after_notice: AtomicU64,
    /// Well-behaved failures of any kind.
    pub failures: AtomicU64,
    /// The first few failures, described.
    pub failure_log: Mutex<Vec<String>>,
}

pub struct IdleConfig {
    pub addr: SocketAddrV4,
    pub clients: usize,
    pub stop: Arc<AtomicBool>,
    /// The loop ends by itself at this time whatever happens.
    pub hard_deadline: Instant,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No socket; a `Connect` timer is set.
    Waiting,
    Connecting,
    /// Probe sent; expecting its echo, then the suffix.
    Echo,
    Suffix,
    Idle,
}

struct Client {
    sock: Option<TcpStream>,
    phase: Phase,
    /// Bumped with every new connection, so timers of an old one are ignored.
    epoch: u32,
    noticed: bool,
    /// A `Leave` timer is set.
    leaving: bool,
    /// This connection replaces an earlier one.
    again: bool,
    /// Counted in `held`.
    held: bool,
    probes: u64,
    partial: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Connect,
    ConnectDeadline,
    ProbeDeadline,
    Leave,
}

struct Crowd<'a> {
    cfg: &'a IdleConfig,
    stats: &'a IdleStats,
    poll: Poll,
    clients: Vec<Client>,
    timers: BinaryHeap<Reverse<(Instant, usize, u32, Timer)>>,
    rng: Rng,
    ramp_next: usize,
    ramp_in_flight: usize,
}

/// Runs the crowd until `cfg.stop` is set or the hard deadline passes, then
/// closes every connection.
pub fn run(cfg: &IdleConfig, stats: &IdleStats) -> io::Result<()> {
    let mut crowd = Crowd {
        cfg,
        stats,
        poll: Poll::new()?,
        clients: (0..cfg.clients)
            .map(|_| Client {
                sock: None,
                phase: Phase::Waiting,
                epoch: 0,
                noticed: false,
                leaving: false,
                again: false,
                held: false,
                probes: 0,
                partial: Vec::new(),
            })
            .collect(),
        timers: BinaryHeap::new(),
        rng: Rng::new(cfg.seed),
        ramp_next: 0,
        ramp_in_flight: 0,
    };
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 4096];
    while !cfg.stop.load(Ordering::Relaxed) && Instant::now() < cfg.hard_deadline {
        crowd.ramp();
        let now = Instant::now();
        let next = crowd.timers.peek().map(|Reverse((at, ..))| *at);
        let timeout = next.map_or(Duration::from_millis(100), |at| {
            at.saturating_duration_since(now)
                .min(Duration::from_millis(100))
        });
        if let Err(e) = crowd.poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        for event in &events {
            let id = event.token().0;
            crowd.on_event(id, &mut buf);
        }
        crowd.fire_timers();
    }
    // Closing the sockets is all a well-behaved client does to leave.
    for c in &mut crowd.clients {
        c.sock = None;
    }
    stats.held.store(0, Ordering::SeqCst);
    Ok(())
}

impl Crowd<'_> {
    /// Starts the initial connections, a bounded number at a time.
    fn ramp(&mut self) {
        while self.ramp_next < self.clients.len() && self.ramp_in_flight < RAMP_IN_FLIGHT {
            let id = self.ramp_next;
            self.ramp_next += 1;
            self.ramp_in_flight += 1;
            self.connect(id);
        }
    }

    fn timer(&mut self, at: Instant, id: usize, kind: Timer) {
        let epoch = self.clients[id].epoch;
        self.timers.push(Reverse((at, id, epoch, kind)));
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, id, epoch, kind))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let c = &self.clients[id];
            if c.epoch != epoch {
                continue;
            }
            match kind {
                Timer::Connect if c.phase == Phase::Waiting => self.connect(id),
                Timer::ConnectDeadline if c.phase == Phase::Connecting => {
                    self.fail(id, format!("connect took over {CONNECT_TIMEOUT:?}"));
                }
                Timer::ProbeDeadline if matches!(c.phase, Phase::Echo | Phase::Suffix) => {
                    self.fail(id, format!("no probe reply within {PROBE_TIMEOUT:?}"));
                }
                Timer::Leave => {
                    if c.phase == Phase::Idle {
                        self.leave(id);
                    } else {
                        // Wait for the probe's reply (its own deadline
                        // still runs) before leaving.
                        self.timer(now + Duration::from_millis(50), id, Timer::Leave);
                    }
                }
                _ => {}
            }
        }
    }

    /// Opens a new connection for client `id` from its next source address.
    fn connect(&mut self, id: usize) {
        let c = &mut self.clients[id];
        c.epoch = c.epoch.wrapping_add(1);
        c.noticed = false;
        c.leaving = false;
        c.partial.clear();
        let source = Ipv4Addr::new(
            127,
            0,
            0,
            2 + ((id as u64 + c.probes) % SOURCES as u64) as u8,
        );
        match open(source, self.cfg.addr) {
            Ok(mut sock) => {
                if let Err(e) = self.poll.registry().register(
                    &mut sock,
                    Token(id),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    self.fail(id, format!("register: {e}"));
                    return;
                }
                let c = &mut self.clients[id];
                c.sock = Some(sock);
                c.phase = Phase::Connecting;
                self.timer(Instant::now() + CONNECT_TIMEOUT, id, Timer::ConnectDeadline);
            }
            Err(e) => self.fail(id, format!("connect from {source}: {e}")),
        }
    }

    fn on_event(&mut self, id: usize, buf: &mut [u8]) {
        let Some(c) = self.clients.get(id) else {
            return;
        };
        if c.sock.is_none() {
            return;
        }
        if c.phase == Phase::Connecting {
            let sock = c.sock.as_ref().expect("socket checked above");
            match sock.take_error() {
                Ok(Some(e)) | Err(e) => return self.fail(id, format!("connect: {e}")),
                Ok(None) => {}
            }
            match sock.peer_addr() {
                Ok(_) => self.send_probe(id),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.fail(id, format!("connect: {e}")),
            }
        }
        self.read(id, buf);
    }

    fn send_probe(&mut self, id: usize) {
        let c = &mut self.clients[id];
        c.probes += 1;
        let line = format!("probe {id} {}\n", c.probes);
        let sock = c.sock.as_mut().expect("connected client has a socket");
        // A fresh socket takes a few dozen bytes whole.
        match sock.write(line.as_bytes()) {
            Ok(n) if n == line.len() => {
                c.phase = Phase::Echo;
                self.timer(Instant::now() + PROBE_TIMEOUT, id, Timer::ProbeDeadline);
            }
            Ok(n) => self.fail(id, format!("probe: wrote {n} of {} bytes", line.len())),
            Err(e) => self.fail(id, format!("probe: {e}")),
        }
    }

    /// Reads until the socket is empty (epoll is edge-triggered).
    fn read(&mut self, id: usize, buf: &mut [u8]) {
        loop {
            let Some(sock) = self.clients[id].sock.as_mut() else {
                return;
            };
            match sock.read(buf) {
                Ok(0) => return self.on_eof(id),
                Ok(n) => {
                    if !self.on_bytes(id, &buf[..n]) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(id, format!("read: {e}")),
            }
        }
    }

    /// Handles bytes read; false if the connection was dropped.
    fn on_bytes(&mut self, id: usize, bytes: &[u8]) -> bool {
        let mut partial = std::mem::take(&mut self.clients[id].partial);
        partial.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(nl) = partial[start..].iter().position(|&b| b == b'\n') {
            let line = &partial[start..start + nl + 1];
            start += nl + 1;
            if let Err(why) = self.on_line(id, line) {
                self.fail(id, why);
                return false;
            }
        }
        partial.drain(..start);
        if partial.len() > MAX_LINE {
            self.fail(
                id,
                format!("a line of over {MAX_LINE} bytes: {:?}", preview(&partial)),
            );
            return false;
        }
        self.clients[id].partial = partial;
        true
    }

    fn on_line(&mut self, id: usize, line: &[u8]) -> Result<(), String> {
        let now = Instant::now();
        if line == format!("{}\n", crate::procs::DRAIN_NOTICE).as_bytes() {
            self.stats.notices.fetch_add(1, Ordering::Relaxed);
            let c = &mut self.clients[id];
            c.noticed = true;
            if !c.leaving {
                c.leaving = true;
                let delay = Duration::from_millis(self.rng.below(LEAVE_DELAY_MS));
                self.timer(now + delay, id, Timer::Leave);
            }
            return Ok(());
        }
        let c = &mut self.clients[id];
        if line.starts_with(b": process ") && line.ends_with(b" is closing this connection\n") {
            if c.noticed {
                // The server's deadline came before our lame-duck delay
                // ended; the EOF that follows is expected.
                return Ok(());
            }
            return Err(format!("closed without a notice: {:?}", preview(line)));
        }
        match c.phase {
            Phase::Echo => {
                let expected = format!("probe {id} {}\n", c.probes);
                if line != expected.as_bytes() {
                    return Err(format!("echo {:?}, expected {expected:?}", preview(line)));
                }
                c.phase = Phase::Suffix;
                Ok(())
            }
            Phase::Suffix => {
                let ok = line
                    .strip_prefix(b": from ")
                    .and_then(|r| r.strip_suffix(b"\n"))
                    .is_some_and(|pid| !pid.is_empty() && pid.iter().all(u8::is_ascii_digit));
                if !ok {
                    return Err(format!("suffix {:?}", preview(line)));
                }
                c.phase = Phase::Idle;
                c.held = true;
                self.stats.held.fetch_add(1, Ordering::Relaxed);
                if c.again {
                    self.stats.reconnect_ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.stats.initial_ok.fetch_add(1, Ordering::Relaxed);
                    self.first_attempt_done();
                }
                Ok(())
            }
            _ => Err(format!("unexpected line {:?}", preview(line))),
        }
    }

    fn on_eof(&mut self, id: usize) {
        if self.clients[id].noticed {
            self.stats
                .closed_after_notice
                .fetch_add(1, Ordering::Relaxed);
            self.leave(id);
        } else {
            self.fail(id, "EOF without a notice".into());
        }
    }

    /// Closes the connection and connects again at once (the delay was
    /// taken before).
    fn leave(&mut self, id: usize) {
        self.drop_conn(id);
        self.clients[id].again = true;
        self.connect(id);
    }

    fn drop_conn(&mut self, id: usize) {
        let c = &mut self.clients[id];
        c.sock = None;
        c.phase = Phase::Waiting;
        c.epoch = c.epoch.wrapping_add(1);
        c.partial.clear();
        if c.held {
            c.held = false;
            self.stats.held.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn fail(&mut self, id: usize, why: String) {
        let c = &self.clients[id];
        let again = c.again;
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        if again {
            self.stats.reconnect_failed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.first_attempt_done();
        }
        let msg = format!(
            "idle client {id} ({}): {why}",
            if again {
                "reconnection"
            } else {
                "first connection"
            }
        );
        eprintln!("soak: {msg}");
        let mut log = self
            .stats
            .failure_log
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if log.len() < FAILURES_KEPT {
            log.push(msg);
        }
        drop(log);
        self.drop_conn(id);
        self.clients[id].again = true;
        self.timer(Instant::now() + RETRY_DELAY, id, Timer::Connect);
    }

    fn first_attempt_done(&mut self) {
        self.ramp_in_flight = self.ramp_in_flight.saturating_sub(1);
        self.stats.initial_done.fetch_add(1, Ordering::SeqCst);
    }
}

/// A non-blocking socket bound to `source` (port chosen at connect time)
/// and connecting to `dest`.
fn open(source: Ipv4Addr, dest: SocketAddrV4) -> io::Result<TcpStream> {
    let cvt = |r: libc::c_int| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    // SAFETY: plain socket(2); the descriptor is owned right below.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `fd` is a new socket nobody else owns; from here on dropping
    // `std` closes it on every error path.
    let std = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a c_int option value of the right size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    let src = sockaddr(SocketAddrV4::new(source, 0));
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `src` is a valid sockaddr_in of `len` bytes.
    cvt(unsafe { libc::bind(fd, (&src as *const libc::sockaddr_in).cast(), len) })?;
    let dst = sockaddr(dest);
    // SAFETY: as above.
    let r = unsafe { libc::connect(fd, (&dst as *const libc::sockaddr_in).cast(), len) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(TcpStream::from_std(std))
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Up to 80 bytes of `bytes`, for a failure message.
pub fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned()
}
