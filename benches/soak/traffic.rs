//! Churn (well-behaved short clients) and hostile clients, on plain
//! blocking sockets with timeouts, one thread each.

use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::idle::preview;
use crate::procs::DRAIN_NOTICE;

/// Generous: a SYN dropped by a retiring listener costs 1 s, a second
/// one 3 s more, and the machine may be busy.
const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest a hostile session lives.
pub const SESSION_LIMIT: Duration = Duration::from_secs(10);
/// Messages kept for the report.
const LOG_KEPT: usize = 20;
/// The server's default --max-line.
const MAX_LINE: usize = 65536;

fn keep(log: &Mutex<Vec<String>>, msg: String) {
    eprintln!("soak: {msg}");
    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
    if log.len() < LOG_KEPT {
        log.push(msg);
    }
}

#[derive(Default)]
pub struct ChurnStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Drain notices seen by short clients accepted during a drain.
    pub notices: AtomicU64,
    pub failure_log: Mutex<Vec<String>>,
}

/// Connect, one line, check the reply, close; until `stop` or `deadline`.
pub fn churn(
    addr: SocketAddr,
    thread: usize,
    stop: &AtomicBool,
    deadline: Instant,
    s: &ChurnStats,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        n += 1;
        match short_session(addr, &format!("churn {thread} {n}"), s) {
            Ok(()) => s.ok.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                keep(&s.failure_log, format!("churn client {thread}/{n}: {e}"));
                s.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

fn short_session(addr: SocketAddr, line: &str, s: &ChurnStats) -> Result<(), String> {
    let stream =
        TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    (&stream)
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut reader = BufReader::new(&stream);
    let mut next = || -> Result<String, String> {
        loop {
            let mut got = String::new();
            match reader.read_line(&mut got) {
                Ok(0) => return Err("EOF before the reply".into()),
                Ok(_) if got.trim_end() == DRAIN_NOTICE => {
                    s.notices.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => return Ok(got),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    };
    let echoed = next()?;
    if echoed != format!("{line}\n") {
        return Err(format!("echoed {echoed:?}"));
    }
    let from = next()?;
    if !is_suffix(from.as_bytes()) {
        return Err(format!("suffix {from:?}"));
    }
    Ok(())
}

/// `: from <pid>\n`
fn is_suffix(line: &[u8]) -> bool {
    line.strip_prefix(b": from ")
        .and_then(|r| r.strip_suffix(b"\n"))
        .is_some_and(|pid| !pid.is_empty() && pid.iter().all(u8::is_ascii_digit))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A line one byte at a time, 250 ms apart; every other session never
    /// sends the newline and hangs up 8 s after connecting.
    Slowloris,
    /// Writes megabytes and never reads.
    Flood,
    /// 70000 bytes without a newline, past --max-line.
    Oversized,
    /// Connects, sends part of a line (or a line), and resets (SO_LINGER 0).
    Reset,
    /// A line and an unterminated tail, then shutdown(SHUT_WR).
    HalfClose,
    /// NUL, high bytes and telnet IAC sequences in a CRLF line.
    Binary,
}

pub const KINDS: [Kind; 6] = [
    Kind::Slowloris,
    Kind::Flood,
    Kind::Oversized,
    Kind::Reset,
    Kind::HalfClose,
    Kind::Binary,
];

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Slowloris => "slowloris: a byte every 250 ms (half never finish the line)",
            Kind::Flood => "writes up to 64 MiB, never reads",
            Kind::Oversized => "a 70000-byte line (past --max-line)",
            Kind::Reset => "connect, part of a line, reset (SO_LINGER 0)",
            Kind::HalfClose => "a line and a tail, then half-close",
            Kind::Binary => "NUL, binary and telnet IAC bytes",
        }
    }

    /// What the server is documented to do with it.
    pub fn expected(self) -> &'static str {
        match self {
            Kind::Slowloris => "echo once the line ends; nothing otherwise",
            Kind::Flood => "server stops reading: writes stall",
            Kind::Oversized => "`error: line longer than 65536 bytes`, then EOF",
            Kind::Reset => "nothing to read; the server carries on",
            Kind::HalfClose => "both answered, then EOF",
            Kind::Binary => "echoed byte for byte",
        }
    }
}

#[derive(Default)]
pub struct KindStats {
    pub sessions: AtomicU64,
    /// The server did what it documents.
    pub documented: AtomicU64,
    /// Anything else (a connect failure, an unexpected reply, a timeout).
    pub other: AtomicU64,
}

#[derive(Default)]
pub struct HostileStats {
    pub kinds: [KindStats; KINDS.len()],
    /// The most a flood client could write before the server stopped
    /// reading it, in KiB.
    pub flood_max_kib: AtomicU64,
    pub log: Mutex<Vec<String>>,
}

/// Cycles through the hostile kinds, one session at a time, until `stop`
/// or `deadline`. Each session lasts at most [`SESSION_LIMIT`].
pub fn hostile(
    addr: SocketAddr,
    thread: usize,
    stop: &AtomicBool,
    deadline: Instant,
    s: &HostileStats,
) {
    let mut n = thread;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let i = n % KINDS.len();
        let kind = KINDS[i];
        let ks = &s.kinds[i];
        let until = Instant::now() + SESSION_LIMIT;
        let outcome = session(kind, addr, n as u64, until, stop, s);
        if stop.load(Ordering::Relaxed) {
            // Cut short by the end of the load: not counted.
            break;
        }
        ks.sessions.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(()) => ks.documented.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                keep(&s.log, format!("hostile {kind:?} #{n}: {e}"));
                ks.other.fetch_add(1, Ordering::Relaxed)
            }
        };
        n += 1;
        thread::sleep(Duration::from_millis(100));
    }
}

fn session(
    kind: Kind,
    addr: SocketAddr,
    n: u64,
    until: Instant,
    stop: &AtomicBool,
    s: &HostileStats,
) -> Result<(), String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    let set = |t: Duration| -> Result<(), String> {
        let t = t.max(Duration::from_millis(1));
        stream
            .set_read_timeout(Some(t))
            .and_then(|()| stream.set_write_timeout(Some(t)))
            .map_err(|e| e.to_string())
    };
    set(until.saturating_duration_since(Instant::now()))?;
    let mut w = &stream;
    match kind {
        Kind::Slowloris => {
            let finish = n % 2 == 0;
            let line = format!("slowloris {n} {}\n", "z".repeat(8));
            let body = if finish {
                line.as_bytes()
            } else {
                &line.as_bytes()[..line.len() - 1]
            };
            let hang_up = Instant::now() + Duration::from_secs(8);
            for &b in body {
                if stop.load(Ordering::Relaxed) || Instant::now() >= hang_up {
                    break;
                }
                w.write_all(&[b]).map_err(|e| format!("write: {e}"))?;
                thread::sleep(Duration::from_millis(250));
            }
            while !finish && !stop.load(Ordering::Relaxed) && Instant::now() < hang_up {
                // Holds the unfinished line open until the hang-up.
                thread::sleep(Duration::from_millis(100));
            }
            if finish {
                let got = read_until(&stream, until, |b| count_lines(b) >= 2)?;
                expect_lines(&got, &[Some(line.as_bytes()), None])
            } else {
                // Nothing is due: the line never ended.
                set(Duration::from_millis(200))?;
                let mut buf = [0u8; 4096];
                match (&stream).read(&mut buf) {
                    Ok(0) => Err("EOF for an unfinished line".into()),
                    Ok(k) if strip_notices(&buf[..k]).is_empty() => Ok(()),
                    Ok(k) => Err(format!(
                        "got {:?} for an unfinished line",
                        preview(&buf[..k])
                    )),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(format!("read: {e}")),
                }
            }
        }
        Kind::Flood => {
            set(Duration::from_secs(1))?;
            let chunk: Vec<u8> = format!("flood {n} {}\n", "f".repeat(48))
                .repeat(1024)
                .into_bytes();
            let mut written = 0usize;
            let stalled = loop {
                if written >= 64 << 20 || stop.load(Ordering::Relaxed) || Instant::now() >= until {
                    break false;
                }
                match w.write(&chunk) {
                    Ok(k) => written += k,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break true;
                    }
                    Err(e) => return Err(format!("write after {} KiB: {e}", written >> 10)),
                }
            };
            let kib = (written >> 10) as u64;
            s.flood_max_kib.fetch_max(kib, Ordering::Relaxed);
            // Dropping the socket with replies unread resets it.
            if stalled {
                Ok(())
            } else {
                Err(format!("the server took {kib} KiB without pushing back"))
            }
        }
        Kind::Oversized => {
            w.write_all(&vec![b'A'; MAX_LINE + 4464])
                .map_err(|e| format!("write: {e}"))?;
            let got = read_until(&stream, until, |_| false)?;
            let expected = format!("error: line longer than {MAX_LINE} bytes\n");
            if strip_notices(&got) == expected.as_bytes() {
                Ok(())
            } else {
                Err(format!("got {:?} before EOF", preview(&got)))
            }
        }
        Kind::Reset => {
            let msg = if n % 2 == 0 {
                format!("reset {n} partial")
            } else {
                format!("reset {n}\n")
            };
            w.write_all(msg.as_bytes())
                .map_err(|e| format!("write: {e}"))?;
            thread::sleep(Duration::from_millis(20));
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setsockopt with a linger struct of the right size on
            // a socket we own.
            let r = unsafe {
                libc::setsockopt(
                    stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return Err(format!("SO_LINGER: {}", io::Error::last_os_error()));
            }
            drop(stream);
            Ok(())
        }
        Kind::HalfClose => {
            let one = format!("half {n} one\n");
            let tail = format!("half {n} tail");
            w.write_all(format!("{one}{tail}").as_bytes())
                .map_err(|e| format!("write: {e}"))?;
            stream
                .shutdown(Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"))?;
            let got = read_until(&stream, until, |_| false)?;
            let tail_line = format!("{tail}\n");
            expect_lines(
                &got,
                &[Some(one.as_bytes()), None, Some(tail_line.as_bytes()), None],
            )
        }
        Kind::Binary => {
            let mut line =
                b"bin\x00\x01\x7f\x80\xfe\xff\xff\xfb\x01\xff\xfd\x03\xff\xf4\xff\xfd\x06\xc3\x28 "
                    .to_vec();
            line.extend_from_slice(format!("{n}\r\n").as_bytes());
            w.write_all(&line).map_err(|e| format!("write: {e}"))?;
            let got = read_until(&stream, until, |b| count_lines(b) >= 2)?;
            expect_lines(&got, &[Some(&line), None])
        }
    }
}

/// Reads until `done(bytes so far, notices removed)`, EOF, or `until`.
/// A socket timeout with nothing read returns nothing (the caller's check
/// then fails); after some bytes it is an error.
fn read_until(
    stream: &TcpStream,
    until: Instant,
    done: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut r = stream;
    loop {
        if done(&strip_notices(&got)) {
            return Ok(got);
        }
        if Instant::now() >= until {
            return Err(format!("session limit reached after {:?}", preview(&got)));
        }
        match r.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if got.is_empty() {
                    return Ok(got);
                }
                return Err(format!("timed out after {:?}", preview(&got)));
            }
            Err(e) => return Err(format!("read: {e} after {:?}", preview(&got))),
        }
        if got.len() > 1 << 20 {
            return Err("more than 1 MiB of reply".into());
        }
    }
}

fn count_lines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

/// Removes whole `reconnect` notice lines.
fn strip_notices(b: &[u8]) -> Vec<u8> {
    let notice = format!("{DRAIN_NOTICE}\n");
    let mut out = Vec::with_capacity(b.len());
    for line in b.split_inclusive(|&c| c == b'\n') {
        if line != notice.as_bytes() {
            out.extend_from_slice(line);
        }
    }
    out
}

/// Checks `got` (notices removed) line by line: `Some(l)` must be `l`
/// exactly, `None` a `: from <pid>` suffix; nothing may follow.
fn expect_lines(got: &[u8], want: &[Option<&[u8]>]) -> Result<(), String> {
    let got = strip_notices(got);
    let lines: Vec<&[u8]> = got.split_inclusive(|&c| c == b'\n').collect();
    let ok = lines.len() == want.len()
        && lines.iter().zip(want).all(|(l, w)| match w {
            Some(w) => l == w,
            None => is_suffix(l),
        });
    if ok {
        Ok(())
    } else {
        Err(format!("reply {:?}", preview(&got)))
    }
}
