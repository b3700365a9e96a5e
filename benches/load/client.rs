//! The client worker: one process, one `mio` loop, many connections.
//!
//! The driver starts this role by re-executing the bench binary with
//! [`WORKER_ENV`] set to the mode and `key=value` arguments. A worker speaks
//! to the driver in lines on stdout (`ready`, `closed`, `result`, or `error`)
//! and, for the idle mode, takes commands on stdin. Every reply the server
//! sends is read and compared byte for byte with the one expected; a single
//! wrong byte ends the worker with `error`.
//!
//! Modes:
//! - `idle`: open `n` connections from `src`, send one probe line on each,
//!   check each reply, print `ready <n>`, then hold them until `close` arrives
//!   on stdin (printing `closed <first_ns> <last_ns>` in `CLOCK_MONOTONIC`).
//!   `close_keep <k>` closes all but the last `k` and keeps waiting.
//! - `pingpong`: `conns` connections with `depth` lines in flight each, for
//!   `warm_ms` of warm-up and `run_ms` measured; prints one `result` line with
//!   the count, the rate, latency percentiles and the server's CPU time over
//!   the measured window. Given `perf_ctl` and `perf_ack` descriptors, it
//!   turns `perf stat` counting on and off at the edges of that window.
//! - `churn`: `conc` slots, each repeating connect, one line, reply, close.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use testbed::system::{self, CpuTimes, Res};
use testbed::tcp::poll_for;

/// The environment variable that selects the worker role and its mode.
pub const WORKER_ENV: &str = "DRAINPORT_LOAD_WORKER";

/// How long the replies still in flight after a run may take to arrive.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How long opening an idle crowd may take.
const CONNECT_DEADLINE: Duration = Duration::from_secs(120);
/// Bytes per `read(2)`.
const READ_CHUNK: usize = 64 * 1024;

/// Runs the worker role and exits the process.
pub fn main(mode: &str) -> ! {
    let args: HashMap<String, String> = std::env::args()
        .skip(1)
        .filter_map(|a| a.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let params = Params(args);
    let result = match mode {
        "idle" => idle(&params),
        "pingpong" => pingpong(&params),
        "churn" => churn(&params),
        other => Err(format!("unknown worker mode {other:?}")),
    };
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            println!("error {}", e.replace('\n', " "));
            std::process::exit(1);
        }
    }
}

struct Params(HashMap<String, String>);

impl Params {
    fn get<T: std::str::FromStr>(&self, key: &str) -> Res<T> {
        let text = self
            .0
            .get(key)
            .ok_or_else(|| format!("worker argument {key}= is missing"))?;
        text.parse()
            .map_err(|_| format!("worker argument {key}={text} is not valid"))
    }

    fn millis(&self, key: &str) -> Res<Duration> {
        Ok(Duration::from_millis(self.get(key)?))
    }

    fn proto(&self) -> Res<Proto> {
        Proto::parse(&self.get::<String>("proto")?)
    }
}

/// What is sent and what must come back.
pub enum Proto {
    /// drainport's echo: the line, then `: from <pid>\n`.
    Echo { suffix: Vec<u8> },
    /// Redis inline `PING\r\n`, answered by `+PONG\r\n`.
    Redis,
}

/// Length of an echo request line: `req TTTTT SSSSSSSSSSSS\n`.
const ECHO_LINE: usize = 4 + 5 + 1 + 12 + 1;

impl Proto {
    fn parse(text: &str) -> Res<Proto> {
        if text == "redis" {
            return Ok(Proto::Redis);
        }
        let pid: u32 = text
            .strip_prefix("echo:")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("bad protocol {text:?}"))?;
        Ok(Proto::Echo {
            suffix: format!(": from {pid}\n").into_bytes(),
        })
    }

    /// Appends request `seq` of connection `tag`.
    fn request(&self, tag: usize, seq: u64, out: &mut Vec<u8>) {
        match self {
            Proto::Echo { .. } => out.extend_from_slice(&echo_line(tag, seq)),
            Proto::Redis => out.extend_from_slice(b"PING\r\n"),
        }
    }

    fn reply_len(&self) -> usize {
        match self {
            Proto::Echo { suffix } => ECHO_LINE + suffix.len(),
            Proto::Redis => 7,
        }
    }

    /// Whether `reply` (exactly `reply_len` bytes) answers request `seq`.
    fn check(&self, tag: usize, seq: u64, reply: &[u8]) -> bool {
        match self {
            Proto::Echo { suffix } => {
                reply[..ECHO_LINE] == echo_line(tag, seq) && reply[ECHO_LINE..] == suffix[..]
            }
            Proto::Redis => reply == b"+PONG\r\n",
        }
    }
}

/// Echo request `seq` of connection `tag`: `req TTTTT SSSSSSSSSSSS\n`.
fn echo_line(tag: usize, seq: u64) -> [u8; ECHO_LINE] {
    let mut line = *b"req 00000 000000000000\n";
    digits(&mut line[4..9], tag as u64);
    digits(&mut line[10..22], seq);
    line
}

/// Writes the low decimal digits of `value` into `out`, zero-padded.
fn digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Starts a non-blocking connect from `src` to `dst`, with `TCP_NODELAY`.
fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> io::Result<TcpStream> {
    let stream = system::connect_from(src, dst)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Whether a connect started by [`connect_from`] has finished; an error if
/// it failed.
fn connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads what the socket holds into `into`. Returns false on EOF.
fn read_into(stream: &mut TcpStream, buf: &mut [u8], into: &mut Vec<u8>) -> io::Result<bool> {
    loop {
        match stream.read(buf) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                into.extend_from_slice(&buf[..n]);
                if n < buf.len() {
                    // A short read emptied the socket; the next byte raises
                    // a new edge.
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes as much of `pending` as the socket takes, keeping the rest.
fn write_some(stream: &mut TcpStream, pending: &mut Vec<u8>) -> io::Result<()> {
    while !pending.is_empty() {
        match stream.write(pending) {
            Ok(n) => {
                pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- idle

struct IdleConn {
    stream: TcpStream,
    /// 0: connecting, 1: probe sent, 2: reply checked.
    state: u8,
    rbuf: Vec<u8>,
}

fn idle(p: &Params) -> Res<()> {
    let dst: SocketAddr = p.get("addr")?;
    let src: Ipv4Addr = p.get("src")?;
    let n: usize = p.get("n")?;
    let conc: usize = p.get("conc")?;
    let life = Duration::from_secs(p.get("life_s")?);
    let proto = p.proto()?;
    let reply_len = proto.reply_len();

    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<IdleConn> = Vec::with_capacity(n);
    let mut buf = vec![0u8; READ_CHUNK];
    let (mut started, mut done, mut in_flight) = (0usize, 0usize, 0usize);
    let deadline = Instant::now() + CONNECT_DEADLINE;
    while done < n {
        while started < n && in_flight < conc {
            let mut stream = connect_from(src, dst)
                .map_err(|e| format!("connect #{started} from {src}: {e}"))?;
            poll.registry()
                .register(
                    &mut stream,
                    Token(started),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| format!("register: {e}"))?;
            conns.push(IdleConn {
                stream,
                state: 0,
                rbuf: Vec::new(),
            });
            started += 1;
            in_flight += 1;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "only {done} of {n} connections from {src} were served within {}s",
                CONNECT_DEADLINE.as_secs()
            ));
        }
        poll_for(
            &mut poll,
            &mut events,
            (deadline - now).min(Duration::from_millis(100)),
        )?;
        for ev in &events {
            let i = ev.token().0;
            let c = &mut conns[i];
            if c.state == 0 {
                match connected(&c.stream) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => return Err(format!("connect #{i} from {src}: {e}")),
                }
                let mut probe = Vec::with_capacity(32);
                proto.request(i, 0, &mut probe);
                write_some(&mut c.stream, &mut probe)
                    .map_err(|e| format!("write probe #{i}: {e}"))?;
                if !probe.is_empty() {
                    return Err(format!("probe #{i} did not fit a fresh socket"));
                }
                c.state = 1;
            }
            if c.state == 1 && (ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                let open = read_into(&mut c.stream, &mut buf, &mut c.rbuf)
                    .map_err(|e| format!("read probe reply #{i}: {e}"))?;
                if c.rbuf.len() >= reply_len {
                    if c.rbuf.len() > reply_len || !proto.check(i, 0, &c.rbuf) {
                        return Err(format!(
                            "connection #{i} got a wrong probe reply: {:?}",
                            String::from_utf8_lossy(&c.rbuf)
                        ));
                    }
                    c.state = 2;
                    c.rbuf = Vec::new();
                    done += 1;
                    in_flight -= 1;
                } else if !open {
                    return Err(format!("server closed connection #{i} before replying"));
                }
            }
        }
    }
    // The crowd is up; the poll is no longer needed.
    drop(poll);
    println!("ready {n}");

    let life_end = Instant::now() + life;
    let mut line = Vec::new();
    loop {
        let now = Instant::now();
        if now >= life_end {
            return Err(format!("no close command within {}s", life.as_secs()));
        }
        let wait = (life_end - now).min(Duration::from_secs(1));
        match system::read_stdin_line(&mut line, wait)? {
            system::StdinLine::Line => {}
            system::StdinLine::Eof => return Ok(()),
            system::StdinLine::Timeout => continue,
        }
        if line == b"close" {
            let first = system::mono_ns();
            conns.clear();
            let last = system::mono_ns();
            println!("closed {first} {last}");
            return Ok(());
        }
        if let Some(keep) = line.strip_prefix(b"close_keep ") {
            let keep: usize = std::str::from_utf8(keep)
                .ok()
                .and_then(|k| k.parse().ok())
                .ok_or("bad close_keep command")?;
            let first = system::mono_ns();
            conns.drain(..conns.len().saturating_sub(keep));
            let last = system::mono_ns();
            println!("closed {first} {last}");
        }
        line.clear();
    }
}

// ---------------------------------------------------------------- pingpong

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Warm,
    Measure,
    Drain,
}

/// Moves through warm-up, the measured window and the drain, reading the
/// server's CPU times at both edges of the window.
struct Clock {
    phase: Phase,
    warm_end: Instant,
    run: Duration,
    end: Instant,
    drain_end: Instant,
    stat_pid: Option<u32>,
    /// `perf stat --control` pipes: counting is on during the window only.
    perf: Option<(OwnedFd, OwnedFd)>,
    window: (Instant, Instant),
    cpu: (CpuTimes, CpuTimes),
    /// This worker's own CPU times at the window's edges.
    own: (CpuTimes, CpuTimes),
}

impl Clock {
    fn new(p: &Params) -> Res<Clock> {
        let t0 = Instant::now();
        let warm_end = t0 + p.millis("warm_ms")?;
        let run = p.millis("run_ms")?;
        let stat_pid = p.get::<u32>("stat_pid").ok();
        let perf = match (p.get::<i32>("perf_ctl"), p.get::<i32>("perf_ack")) {
            (Ok(ctl), Ok(ack)) if ctl > 2 && ack > 2 => {
                // SAFETY: the driver passed these two descriptors to this
                // process for it alone.
                Some(unsafe { (OwnedFd::from_raw_fd(ctl), OwnedFd::from_raw_fd(ack)) })
            }
            _ => None,
        };
        Ok(Clock {
            phase: Phase::Warm,
            warm_end,
            run,
            end: warm_end + run,
            drain_end: warm_end + run + DRAIN_GRACE,
            stat_pid,
            perf,
            window: (t0, t0),
            cpu: (CpuTimes::default(), CpuTimes::default()),
            own: (CpuTimes::default(), CpuTimes::default()),
        })
    }

    fn cpu_now(&self) -> Res<CpuTimes> {
        match self.stat_pid {
            Some(pid) => CpuTimes::read(pid),
            None => Ok(CpuTimes::default()),
        }
    }

    /// Turns perf's counting on or off and waits for it to say done.
    fn perf(&self, command: &[u8]) -> Res<()> {
        if let Some((ctl, ack)) = &self.perf {
            system::write_fd(ctl, command)?;
            system::read_until(ack, b"ack\n", Instant::now() + Duration::from_secs(60))
                .map_err(|e| format!("perf control: {e}"))?;
        }
        Ok(())
    }

    /// Advances the phase; returns how long the next poll may sleep.
    fn tick(&mut self) -> Res<Duration> {
        let now = Instant::now();
        if self.phase == Phase::Warm && now >= self.warm_end {
            self.perf(b"enable\n")?;
            self.cpu.0 = self.cpu_now()?;
            self.own.0 = CpuTimes::read(std::process::id())?;
            self.window.0 = Instant::now();
            self.end = self.window.0 + self.run;
            self.drain_end = self.end + DRAIN_GRACE;
            self.phase = Phase::Measure;
        }
        if self.phase == Phase::Measure && now >= self.end {
            self.window.1 = Instant::now();
            self.cpu.1 = self.cpu_now()?;
            self.own.1 = CpuTimes::read(std::process::id())?;
            self.phase = Phase::Drain;
            self.perf(b"disable\n")?;
        }
        let next = match self.phase {
            Phase::Warm => self.warm_end,
            Phase::Measure => self.end,
            Phase::Drain => self.drain_end,
        };
        Ok(next
            .saturating_duration_since(now)
            .min(Duration::from_millis(20)))
    }

    fn drain_over(&self) -> bool {
        self.phase == Phase::Drain && Instant::now() >= self.drain_end
    }

    /// The `result` fields shared by every mode.
    fn report(&self, total: u64, measured: u64) -> String {
        let secs = (self.window.1 - self.window.0).as_secs_f64();
        let (a, b) = self.cpu;
        format!(
            "total={total} measured={measured} secs={secs:.6} rate={:.1} utime_ticks={} stime_ticks={} sched_ns={} clk_tck={} client_sched_ns={}",
            measured as f64 / secs,
            b.utime - a.utime,
            b.stime - a.stime,
            b.sched_ns.saturating_sub(a.sched_ns),
            system::clk_tck(),
            self.own.1.sched_ns.saturating_sub(self.own.0.sched_ns)
        )
    }
}

struct PpConn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    in_flight: VecDeque<(u64, Instant)>,
    next_seq: u64,
}

fn pingpong(p: &Params) -> Res<()> {
    let dst: SocketAddr = p.get("addr")?;
    let nconns: usize = p.get("conns")?;
    let depth: usize = p.get("depth")?;
    let proto = p.proto()?;
    let reply_len = proto.reply_len();

    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut conns = Vec::with_capacity(nconns);
    for i in 0..nconns {
        let std = std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(5))
            .map_err(|e| format!("connect #{i}: {e}"))?;
        std.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        std.set_nonblocking(true)
            .map_err(|e| format!("nonblocking: {e}"))?;
        let mut stream = TcpStream::from_std(std);
        poll.registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("register: {e}"))?;
        conns.push(PpConn {
            stream,
            rbuf: Vec::with_capacity(4096),
            wbuf: Vec::with_capacity(4096),
            in_flight: VecDeque::with_capacity(depth),
            next_seq: 0,
        });
    }
    let mut clock = Clock::new(p)?;
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 20);
    let (mut total, mut measured) = (0u64, 0u64);
    let now = Instant::now();
    for (i, c) in conns.iter_mut().enumerate() {
        for _ in 0..depth {
            proto.request(i, c.next_seq, &mut c.wbuf);
            c.in_flight.push_back((c.next_seq, now));
            c.next_seq += 1;
        }
        write_some(&mut c.stream, &mut c.wbuf).map_err(|e| format!("write #{i}: {e}"))?;
    }
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let timeout = clock.tick()?;
        if clock.phase == Phase::Drain && conns.iter().all(|c| c.in_flight.is_empty()) {
            break;
        }
        if clock.drain_over() {
            let missing: usize = conns.iter().map(|c| c.in_flight.len()).sum();
            return Err(format!(
                "{missing} replies still missing {}s after the run",
                DRAIN_GRACE.as_secs()
            ));
        }
        poll_for(&mut poll, &mut events, timeout)?;
        for ev in &events {
            let i = ev.token().0;
            let c = &mut conns[i];
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                let open = read_into(&mut c.stream, &mut buf, &mut c.rbuf)
                    .map_err(|e| format!("read #{i}: {e}"))?;
                let now = Instant::now();
                let mut pos = 0;
                while c.rbuf.len() - pos >= reply_len {
                    let Some((seq, sent)) = c.in_flight.pop_front() else {
                        return Err(format!("connection #{i} got an unrequested reply"));
                    };
                    if !proto.check(i, seq, &c.rbuf[pos..pos + reply_len]) {
                        return Err(format!(
                            "connection #{i} request {seq} got a wrong reply: {:?}",
                            String::from_utf8_lossy(&c.rbuf[pos..pos + reply_len])
                        ));
                    }
                    pos += reply_len;
                    total += 1;
                    if clock.phase == Phase::Measure {
                        measured += 1;
                        let ns = (now - sent).as_nanos().min(u128::from(u32::MAX));
                        lat.push(ns as u32);
                    }
                    if clock.phase != Phase::Drain {
                        proto.request(i, c.next_seq, &mut c.wbuf);
                        c.in_flight.push_back((c.next_seq, now));
                        c.next_seq += 1;
                    }
                }
                c.rbuf.drain(..pos);
                if !open && !c.in_flight.is_empty() {
                    return Err(format!("server closed connection #{i} with replies due"));
                }
            }
            if !c.wbuf.is_empty() {
                write_some(&mut c.stream, &mut c.wbuf).map_err(|e| format!("write #{i}: {e}"))?;
            }
        }
    }
    lat.sort_unstable();
    let pct = |q: f64| -> u32 {
        if lat.is_empty() {
            return 0;
        }
        let idx = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[idx]
    };
    println!(
        "result {} p50_ns={} p99_ns={} p999_ns={} max_ns={}",
        clock.report(total, measured),
        pct(0.50),
        pct(0.99),
        pct(0.999),
        lat.last().copied().unwrap_or(0)
    );
    Ok(())
}

// ---------------------------------------------------------------- churn

struct ChurnConn {
    stream: TcpStream,
    sent: bool,
    seq: u64,
    rbuf: Vec<u8>,
}

fn churn(p: &Params) -> Res<()> {
    let dst: SocketAddr = p.get("addr")?;
    let conc: usize = p.get("conc")?;
    let srcs: Vec<Ipv4Addr> = p
        .get::<String>("srcs")?
        .split(',')
        .map(|s| s.parse().map_err(|_| format!("bad source address {s:?}")))
        .collect::<Res<_>>()?;
    let proto = p.proto()?;
    let reply_len = proto.reply_len();

    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut slots: Vec<Option<ChurnConn>> = (0..conc).map(|_| None).collect();
    let mut opened = 0u64;
    let open = |poll: &Poll, slot: usize, seq: u64| -> Res<ChurnConn> {
        let src = srcs[(seq % srcs.len() as u64) as usize];
        let mut stream = connect_from(src, dst).map_err(|e| format!("connect from {src}: {e}"))?;
        poll.registry()
            .register(
                &mut stream,
                Token(slot),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("register: {e}"))?;
        Ok(ChurnConn {
            stream,
            sent: false,
            seq,
            rbuf: Vec::new(),
        })
    };
    let mut clock = Clock::new(p)?;
    for (i, slot) in slots.iter_mut().enumerate() {
        *slot = Some(open(&poll, i, opened)?);
        opened += 1;
    }
    let (mut total, mut measured) = (0u64, 0u64);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut line = Vec::with_capacity(64);
    loop {
        let timeout = clock.tick()?;
        if clock.phase == Phase::Drain && slots.iter().all(Option::is_none) {
            break;
        }
        if clock.drain_over() {
            let left = slots.iter().filter(|s| s.is_some()).count();
            return Err(format!(
                "{left} connections unfinished {}s after the run",
                DRAIN_GRACE.as_secs()
            ));
        }
        poll_for(&mut poll, &mut events, timeout)?;
        for ev in &events {
            let i = ev.token().0;
            let Some(c) = slots[i].as_mut() else {
                continue;
            };
            if !c.sent {
                match connected(&c.stream) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => return Err(format!("connect #{}: {e}", c.seq)),
                }
                line.clear();
                proto.request(i, c.seq, &mut line);
                write_some(&mut c.stream, &mut line)
                    .map_err(|e| format!("write #{}: {e}", c.seq))?;
                if !line.is_empty() {
                    return Err(format!("request #{} did not fit a fresh socket", c.seq));
                }
                c.sent = true;
                continue;
            }
            if !(ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                continue;
            }
            let open_now = read_into(&mut c.stream, &mut buf, &mut c.rbuf)
                .map_err(|e| format!("read #{}: {e}", c.seq))?;
            if c.rbuf.len() < reply_len {
                if !open_now {
                    return Err(format!("server closed #{} before replying", c.seq));
                }
                continue;
            }
            if c.rbuf.len() > reply_len || !proto.check(i, c.seq, &c.rbuf) {
                return Err(format!(
                    "connection #{} got a wrong reply: {:?}",
                    c.seq,
                    String::from_utf8_lossy(&c.rbuf)
                ));
            }
            total += 1;
            if clock.phase == Phase::Measure {
                measured += 1;
            }
            // Close, and start the next one in this slot.
            slots[i] = None;
            if clock.phase != Phase::Drain {
                slots[i] = Some(open(&poll, i, opened)?);
                opened += 1;
            }
        }
    }
    println!("result {}", clock.report(total, measured));
    Ok(())
}
