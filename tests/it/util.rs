//! Spawns the real `drainport` binary and talks to it over loopback.
//!
//! Every wait has a generous deadline and polls for its condition; a helper
//! that runs out of time panics with what it was waiting for. A [`Server`]
//! that is dropped while still running is killed, by pid, so no test leaves
//! a process behind.
//!
//! In order: the [`Server`] process, with what its status lines and
//! `/proc` say about it; the test [`Client`] and the replies it reads;
//! the test's own processes, files and descriptors; then waiting,
//! skipping and finding tools. A helper lives here when more than one
//! suite uses it; one that serves a single suite lives in that suite.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub const BIN: &str = env!("CARGO_BIN_EXE_drainport");

// The server process.

/// A running server process and the lines it has printed.
pub struct Server {
    child: Child,
    pub pid: u32,
    /// The first address it listens on, if that is an IP address.
    pub addr: SocketAddr,
    /// The same as printed: an IP address, or `unix:` and a socket's name.
    pub listening: String,
    lines: Receiver<String>,
    /// Every stdout line read so far, in order.
    pub seen: Vec<String>,
    exit: Option<ExitStatus>,
}

impl Server {
    /// Starts `drainport ARGS` and waits until it listens.
    #[track_caller]
    pub fn start(args: &[&str]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        Server::spawn(cmd)
    }

    /// Starts the example `name` (see [`example_bin`]) with `args` and
    /// waits until it listens.
    #[track_caller]
    pub fn start_example(name: &str, args: &[&str]) -> Server {
        let mut cmd = Command::new(example_bin(name));
        cmd.args(args);
        Server::spawn(cmd)
    }

    /// Starts a prepared command (for instance under `prlimit`) whose
    /// program ends up exec'ing `drainport`.
    #[track_caller]
    pub fn spawn(cmd: Command) -> Server {
        let mut server = Server::launch(cmd);
        server.wait_listening();
        server
    }

    /// Starts a prepared command without waiting for anything: for a
    /// server that starts only later (under `systemd-socket-activate`).
    #[track_caller]
    pub fn launch(mut cmd: Command) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // Name the program that could not start: under `prlimit`, a missing
        // `prlimit` is not a missing `drainport`.
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = spawn_retrying(&mut cmd).unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let rx = line_reader(child.stdout.take().expect("piped stdout"));
        let pid = child.id();
        Server {
            child,
            pid,
            addr: "0.0.0.0:0".parse().unwrap(),
            listening: String::new(),
            lines: rx,
            seen: Vec::new(),
            exit: None,
        }
    }

    /// Waits for the `running` line and the first `listening on` line,
    /// and takes the address from it: an IP address into `addr`, and
    /// whatever it is (a Unix socket's `unix:` name too) into `listening`.
    #[track_caller]
    pub fn wait_listening(&mut self) {
        let pid = self.pid;
        self.expect_line(&format!("Process {pid} running"));
        let line = self.expect_line(&format!("Process {pid} listening on: "));
        let (_, listening) = line
            .split_once("listening on: ")
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        self.listening = listening.to_owned();
        if !listening.starts_with("unix:") {
            self.addr = listening
                .parse()
                .unwrap_or_else(|_| panic!("no address in {line:?}"));
        }
    }

    /// A second process on the same address.
    #[track_caller]
    pub fn sibling(&self, extra: &[&str]) -> Server {
        let addr = self.addr.to_string();
        let mut args = extra.to_vec();
        args.push(&addr);
        Server::start(&args)
    }

    /// Waits for a stdout line containing `needle` and returns it. Lines
    /// before it are kept in `seen` but skipped.
    #[track_caller]
    pub fn expect_line(&mut self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no line containing {needle:?} within {DEADLINE:?}; saw {:#?}",
                        self.seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "stdout closed before a line containing {needle:?}; saw {:#?}",
                        self.seen
                    )
                }
            }
        }
    }

    /// Reads whatever stdout lines are waiting, without blocking.
    pub fn drain_lines(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// How many lines seen so far contain `needle`.
    pub fn count_lines(&mut self, needle: &str) -> usize {
        self.drain_lines()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Asks for status lines with SIGUSR1 until one contains `needle`, and
    /// returns it. Used to wait for the server to notice what clients did
    /// (`"clients=1 "`, say).
    #[track_caller]
    pub fn wait_status(&mut self, needle: &str) -> String {
        let prefix = format!("Process {} status:", self.pid);
        let start = Instant::now();
        loop {
            self.signal(libc::SIGUSR1);
            let line = self.expect_line(&prefix);
            if line.contains(needle) {
                return line;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no status line containing {needle:?} within {DEADLINE:?}; last {line:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: plain kill(2) on the pid of our own child.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        assert_eq!(
            rc,
            0,
            "kill({}, {signal}): {}",
            self.pid,
            io::Error::last_os_error()
        );
    }

    /// Waits until one client waits in the accept queue, then checks that
    /// the process holds `clients` clients, all it has accepted: at its
    /// `--max-clients`, it leaves the next one there. Once the kernel holds
    /// that client, the loop sees its listener ready no later than the
    /// SIGUSR1 that asks for the status line, and it accepts before it
    /// handles signals: had it taken the client, the line would count it.
    #[track_caller]
    pub fn expect_one_left_in_backlog(&mut self, clients: usize) {
        wait_until("a client in the accept queue", || {
            (accept_queue_len(self.addr) == 1).then_some(())
        });
        let status = self.wait_status("status:");
        assert!(
            status.contains(&format!(" clients={clients} accepted={clients} ")),
            "a client taken past --max-clients {clients}: {status}"
        );
    }

    /// Waits for the process to exit, then collects the rest of its stdout.
    #[track_caller]
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = wait_until(&format!("process {} to exit", self.pid), || {
            self.child.try_wait().expect("try_wait")
        });
        self.exit = Some(status);
        // Stdout closes at exit; take every line it printed.
        while let Ok(line) = self.lines.recv_timeout(DEADLINE) {
            self.seen.push(line);
        }
        status
    }

    /// Waits for a clean exit (status 0) and returns all stdout lines.
    #[track_caller]
    pub fn expect_clean_exit(&mut self) -> &[String] {
        let status = self.wait_exit();
        assert!(status.success(), "exit {status:?}; stdout {:#?}", self.seen);
        &self.seen
    }

    /// Waits until the process is stopped (state `T` in
    /// `/proc/<pid>/stat`): kill(2) returns before a SIGSTOP takes effect.
    #[track_caller]
    pub fn wait_stopped(&self) {
        wait_until(&format!("process {} to stop", self.pid), || {
            let stat =
                std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).expect("read stat");
            // The state follows the command name, which is in parentheses.
            stat[stat.rfind(')').expect("comm") + 2..]
                .starts_with('T')
                .then_some(())
        });
    }

    pub fn is_running(&mut self) -> bool {
        self.exit.is_none() && self.child.try_wait().expect("try_wait").is_none()
    }

    /// Resident memory in KiB, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid, "VmRSS:")
    }

    /// Peak resident memory in KiB (`VmHWM`), so a spike that was freed
    /// again still counts.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid, "VmHWM:")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exit.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A number from a status line, such as `bytes_in`.
#[track_caller]
pub fn status_field(line: &str, key: &str) -> u64 {
    let value = status_value(line, key);
    match value.parse() {
        Ok(count) => count,
        Err(_) => panic!("{key}={value} is not a count in {line:?}"),
    }
}

/// The text after `key=` in a status line, such as `state`'s `running`.
#[track_caller]
pub fn status_value<'a>(line: &'a str, key: &str) -> &'a str {
    match line
        .split(' ')
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
    {
        Some(value) => value,
        None => panic!("no {key}= in {line:?}"),
    }
}

/// A value in KiB from `/proc/<pid>/status`, such as `VmRSS:`.
fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Starts drainport under `prlimit --nofile=NOFILE` and connects `count`
/// clients, each sending `<label> <i>\n`, more than the limit lets it
/// accept. Waits until it reports running out of descriptors, with how
/// many clients it holds. Returns the server, the clients in connect
/// order (the accept queue's order), and how many were accepted.
#[track_caller]
pub fn starved_server(nofile: u32, count: usize, label: &str) -> (Server, Vec<Client>, usize) {
    let mut cmd = Command::new("prlimit");
    cmd.args([&format!("--nofile={nofile}"), "--", BIN, "127.0.0.1:0"]);
    let mut server = Server::spawn(cmd);
    let mut clients: Vec<Client> = (0..count).map(|_| Client::connect(server.addr)).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.send(format!("{label} {i}\n").as_bytes());
    }
    // The line says how many clients the process held when it ran out, and
    // none can leave or be added while the clients here stay connected and
    // every descriptor is taken: that is the accepted count, final. Each of
    // those was logged as accepted before this line.
    let paused = server.expect_line("cannot accept (Too many open files");
    let accepted: usize = paused
        .split_once("pausing accept, ")
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no client count in {paused:?}"));
    let logged = server
        .seen
        .iter()
        .filter(|l| l.contains("accepted connection from"))
        .count();
    assert_eq!(
        logged, accepted,
        "accepted lines before {paused:?}: {:#?}",
        server.seen
    );
    assert!(
        accepted < count,
        "all {count} accepted under a {nofile}-descriptor limit"
    );
    (server, clients, accepted)
}

/// Connects `threads * per_thread` clients to `addr` back to back, from
/// `threads` threads at once, each sending `<label> <thread> <i>\n` at once
/// without reading. Returns each client with the line it sent; a connect
/// that fails fails the test.
#[track_caller]
pub fn connect_burst(
    addr: SocketAddr,
    threads: usize,
    per_thread: usize,
    label: &str,
) -> Vec<(String, Client)> {
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let label = label.to_owned();
            thread::spawn(move || {
                (0..per_thread)
                    .map(|i| {
                        let line = format!("{label} {t} {i}\n");
                        let mut client = Client::try_connect(addr)
                            .unwrap_or_else(|e| panic!("connect {line:?}: {e}"));
                        client.send(line.as_bytes());
                        (line, client)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|w| w.join().expect("connect worker panicked"))
        .collect()
}

/// How many finished handshakes wait in the accept queues of the listeners
/// on `addr`, from `/proc/net/tcp` (or `tcp6`), where a listening socket's
/// `rx_queue` is its accept queue's length. It counts connections the
/// kernel holds for a server that has not taken them.
fn accept_queue_len(addr: SocketAddr) -> u32 {
    let (table, local) = match addr {
        SocketAddr::V4(a) => (
            "/proc/net/tcp",
            format!("{:08X}", u32::from_ne_bytes(a.ip().octets())),
        ),
        SocketAddr::V6(a) => (
            "/proc/net/tcp6",
            a.ip()
                .octets()
                .chunks(4)
                .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
                .collect(),
        ),
    };
    let local = format!("{local}:{:04X}", addr.port());
    let text = std::fs::read_to_string(table).unwrap_or_else(|e| panic!("read {table}: {e}"));
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl, local_address, rem_address, st (0A: LISTEN), tx_queue:rx_queue
            (fields.len() > 4 && fields[1] == local && fields[3] == "0A")
                .then(|| fields[4].split_once(':'))
                .flatten()
                .and_then(|(_, rx)| u32::from_str_radix(rx, 16).ok())
        })
        .sum()
}

// A test client.

/// A test client on a blocking socket.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, DEADLINE)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Client::from(stream)
    }

    /// Connects, returning the error instead of failing the test.
    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        TcpStream::connect_timeout(&addr, DEADLINE).map(Client::from)
    }

    pub fn from(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.set_write_timeout(Some(DEADLINE)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads up to and including the next `\n`.
    #[track_caller]
    pub fn read_line(&mut self) -> Vec<u8> {
        // A match, not a closure: the panic names the caller's line.
        match self.try_read_line() {
            Ok(line) => line,
            Err(e) => panic!("read_line: {e}"),
        }
    }

    pub fn try_read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(at) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(self.buf.drain(..=at).collect());
            }
            let mut chunk = [0; 4096];
            // A read with a timeout fails with EINTR when the process is
            // stopped and continued, even without a signal handler.
            let n = match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            };
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF with {:?} unread", String::from_utf8_lossy(&self.buf)),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads everything up to EOF, after what `read_line` has buffered;
    /// fails if that takes longer than [`DEADLINE`].
    pub fn read_to_eof(&mut self) -> io::Result<Vec<u8>> {
        let mut all = std::mem::take(&mut self.buf);
        let mut chunk = [0; 64 * 1024];
        let start = Instant::now();
        loop {
            if start.elapsed() > DEADLINE {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no EOF within {DEADLINE:?}, {} bytes read", all.len()),
                ));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(all),
                Ok(n) => all.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `line` and returns the pid that echoed it, checking the reply.
    #[track_caller]
    pub fn echo(&mut self, line: &str) -> u32 {
        match self.try_echo(line) {
            Ok(pid) => pid,
            Err(e) => panic!("echo {line:?}: {e}"),
        }
    }

    pub fn try_echo(&mut self, line: &str) -> io::Result<u32> {
        let line = format!("{line}\n");
        self.stream.write_all(line.as_bytes())?;
        self.try_read_reply(line.as_bytes())
    }

    /// Reads the reply to `line`, which was sent with its terminator: the
    /// line exactly, then `: from <pid>\n`. Returns the pid.
    #[track_caller]
    pub fn read_reply(&mut self, line: &[u8]) -> u32 {
        match self.try_read_reply(line) {
            Ok(pid) => pid,
            Err(e) => panic!("the reply to {:?}: {e}", String::from_utf8_lossy(line)),
        }
    }

    /// Reads the reply to `line`, as [`Client::read_reply`] does, and checks
    /// that process `pid` sent it.
    #[track_caller]
    pub fn expect_reply(&mut self, line: &[u8], pid: u32) {
        let from = self.read_reply(line);
        assert_eq!(
            from,
            pid,
            "the reply to {:?} came from another process",
            String::from_utf8_lossy(line)
        );
    }

    pub fn try_read_reply(&mut self, line: &[u8]) -> io::Result<u32> {
        let echoed = self.try_read_line()?;
        if echoed != line {
            return Err(io::Error::other(format!(
                "echoed {:?}",
                String::from_utf8_lossy(&echoed)
            )));
        }
        let from = self.try_read_line()?;
        parse_from(&from).ok_or_else(|| {
            io::Error::other(format!("bad suffix {:?}", String::from_utf8_lossy(&from)))
        })
    }

    /// Sends `line` over and over without reading a reply, until the socket
    /// has taken nothing for half a second (the server stopped reading and
    /// TCP flow control holds us) or `limit` bytes have gone. Returns the
    /// bytes written.
    pub fn write_without_reading(&mut self, line: &[u8], limit: usize) -> usize {
        let batch = line.repeat(1024);
        self.stream.set_nonblocking(true).unwrap();
        let mut written = 0;
        let mut stalled_since: Option<Instant> = None;
        let start = Instant::now();
        while written < limit && start.elapsed() < DEADLINE {
            // Resume where the last write stopped, so that the stream is
            // `line` repeated even when a write takes part of one: a cut
            // telnet command must not turn into data.
            match self.stream.write(&batch[written % line.len()..]) {
                Ok(n) => {
                    written += n;
                    stalled_since = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let since = *stalled_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_millis(500) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("write: {e}"),
            }
        }
        self.stream.set_nonblocking(false).unwrap();
        written
    }

    /// Writes `line` over and over without reading, until the server
    /// closes the connection (a write fails) or [`DEADLINE`]. Returns
    /// whether it was closed.
    pub fn write_until_closed(&mut self, line: &[u8]) -> bool {
        let batch = line.repeat(1024);
        self.stream.set_nonblocking(true).unwrap();
        let start = Instant::now();
        let mut at = 0;
        while start.elapsed() < DEADLINE {
            match self.stream.write(&batch[at % line.len()..]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        false
    }

    /// Expects the server to close: EOF with nothing left unread.
    #[track_caller]
    pub fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => {
                self.buf.extend_from_slice(&rest);
                assert!(
                    self.buf.is_empty(),
                    "unexpected bytes before EOF: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
            Err(e) => panic!("expected EOF, got {e}"),
        }
    }

    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown");
    }

    /// Closes with a reset instead of a FIN (SO_LINGER with a zero timeout).
    pub fn reset(self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a socket we own, with a correctly sized value.
        let rc = unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
    }

    /// Bytes received and not yet read by the application (`FIONREAD`).
    pub fn unread_in_kernel(&self) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD on a socket we own writes one int.
        let rc = unsafe { libc::ioctl(self.stream.as_raw_fd(), libc::FIONREAD, &mut n) };
        assert_eq!(rc, 0, "FIONREAD: {}", io::Error::last_os_error());
        usize::try_from(n).unwrap_or(0)
    }

    /// Sets an integer socket option on the client's socket.
    pub fn set_socket_option(&self, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
        // SAFETY: setsockopt on a socket we own, with a correctly sized value.
        let rc = unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                level,
                name,
                (&raw const value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt: {}", io::Error::last_os_error());
    }
}

/// Asserts that two long byte strings are equal, and where they are not,
/// says at which byte they part instead of printing both.
#[track_caller]
pub fn assert_long_bytes(got: &[u8], want: &[u8]) {
    assert!(
        got == want,
        "{} bytes back, {} expected; first difference at {}",
        got.len(),
        want.len(),
        got.iter().zip(want).take_while(|(a, b)| a == b).count()
    );
}

/// What process `pid` sends back for `line` (sent with its terminator):
/// the line, then [`from_line`].
pub fn reply(line: &[u8], pid: u32) -> Vec<u8> {
    [line, &from_line(pid)].concat()
}

/// The line that follows every echo of process `pid`: `: from <pid>\n`.
pub fn from_line(pid: u32) -> Vec<u8> {
    format!(": from {pid}\n").into_bytes()
}

/// The line process `pid` sends each client it closes in a hard stop.
pub fn closing_line(pid: u32) -> String {
    format!(": process {pid} is closing this connection\n")
}

/// The pid in a `: from <pid>\n` line, which must be written exactly as
/// process `pid` writes it.
fn parse_from(line: &[u8]) -> Option<u32> {
    let pid = std::str::from_utf8(line)
        .ok()?
        .strip_prefix(": from ")?
        .strip_suffix('\n')?
        .parse()
        .ok()?;
    (line == from_line(pid)).then_some(pid)
}

// Processes, files and descriptors of the test's own.

/// Spawns `cmd`, trying again while exec says the file is busy. A binary a
/// test has just copied can be held open for writing by a child that
/// another test thread forked meanwhile, until that child execs: the
/// kernel then refuses to run it (ETXTBSY) for a moment.
pub fn spawn_retrying(cmd: &mut Command) -> io::Result<Child> {
    let start = Instant::now();
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && start.elapsed() < DEADLINE => {
                thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Runs `cmd` to its end and collects its output, as `Command::output`
/// does, trying again while exec says the file is busy. A program that
/// does not end within [`DEADLINE`] is killed and the test fails: one
/// that was expected to refuse to start must not hang the suite.
#[track_caller]
pub fn output_retrying(cmd: &mut Command) -> io::Result<Output> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn_retrying(cmd)?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{:?} still ran after {DEADLINE:?}", cmd.get_program());
        }
        thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    })
}

/// Shared with the example programs' own tests.
pub use testbed::mistake::one_line_error;

/// What `systemd-analyze verify` says about `units`: its stderr, then its
/// exit status when that is not 0; empty when they are clean. It exits 0
/// after some complaints (an unknown key, say), so both count.
pub fn systemd_verify(units: &[&Path]) -> String {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units)
        .output()
        .expect("run systemd-analyze");
    let mut complaints = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        complaints.push_str(&format!("\n{:?}", out.status));
    }
    complaints
}

/// A directory of the test's own under the temporary directory, removed
/// with its contents when dropped. Its name is always new: a directory left
/// by another run, perhaps by another user under a pid now reused, is never
/// taken over.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    #[track_caller]
    pub fn new(name: &str) -> ScratchDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::temp_dir();
        for _ in 0..1000 {
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            let dir = base.join(format!("drainport-{name}-{}-{n}", std::process::id()));
            match std::fs::create_dir(&dir) {
                Ok(()) => return ScratchDir(dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("create {}: {e}", dir.display()),
            }
        }
        panic!("no free name for a scratch directory in {}", base.display());
    }
}

impl Deref for ScratchDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The lines of a child's output, read on a thread of their own as they
/// come, so that a wait can have a deadline.
pub fn line_reader(output: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line from `lines` (see [`line_reader`]) that holds `needle`,
/// within [`DEADLINE`]; the lines before it are passed over.
#[track_caller]
pub fn next_line(lines: &Receiver<String>, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no line with {needle:?}: {e}"));
        if line.contains(needle) {
            return line;
        }
    }
}

pub use testbed::system::raise_fd_limit;

// Waiting, skipping and the tools a test needs.

/// Polls `check` until it returns `Some`, failing after [`DEADLINE`].
#[track_caller]
pub fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Says on the real stderr that the calling test is skipped, and why, as
/// `skipped: <test>: <reason>`. The harness captures `print!` and
/// `eprint!`, which would hide the line in a plain `cargo test` run; a
/// direct write to stderr is not captured. The caller returns right after.
pub fn skip(reason: &str) {
    // The harness names each test's thread after the test.
    let current = thread::current();
    let test = current.name().unwrap_or("<unnamed test>");
    let _ = writeln!(io::stderr().lock(), "skipped: {test}: {reason}");
}

/// Whether the external `tool` is on `PATH`. If it is not, the calling test
/// is skipped with a line naming the tool and the Debian `package` that
/// brings it, and should return.
#[must_use]
pub fn have_tool(tool: &str, package: &str) -> bool {
    if find_tool(tool).is_some() {
        return true;
    }
    skip(&format!(
        "needs `{tool}` (Debian package {package}), not found on PATH"
    ));
    false
}

/// An example program's binary, beside this test's own
/// `target/<profile>/deps/it-*`: `target/<profile>/NAME` for a program
/// that is a package of the workspace (`examples/kv/`, `examples/http/`),
/// whose own tests make `cargo test` build it, and
/// `target/<profile>/examples/NAME` for a cargo example of this package
/// (`examples/upper.rs`), which `cargo test` builds too. `cargo test
/// --test it` alone builds neither.
#[track_caller]
pub fn example_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    let places = [profile.join(name), profile.join("examples").join(name)];
    places
        .iter()
        .find(|bin| bin.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "the {name} example is built at neither {} nor {}: run `cargo test` \
                 (which builds it), or build it before `cargo test --test it`",
                places[0].display(),
                places[1].display()
            )
        })
}

/// The path of the executable `tool` on `PATH`, if there is one.
pub fn find_tool(tool: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
