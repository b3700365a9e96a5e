//! What the benchmarks ask of the system: processes they start (and
//! always kill), `/proc` readers, clocks, the descriptor limit, the few
//! raw system calls they need, and the machine's description for a
//! report. The integration tests raise their descriptor limit here too.

use std::io::{self, BufRead as _, BufReader, Write as _};
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Errors are sentences.
pub type Res<T> = Result<T, String>;

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process here.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Clock ticks per second, the unit of `/proc/<pid>/stat` times.
pub fn clk_tck() -> u64 {
    // SAFETY: plain library call.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// A process's CPU time so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuTimes {
    /// User time in clock ticks (`/proc/<pid>/stat` field 14).
    pub utime: u64,
    /// System time in clock ticks (field 15).
    pub stime: u64,
    /// Time on CPU in ns (`/proc/<pid>/schedstat`, first field).
    pub sched_ns: u64,
}

impl CpuTimes {
    pub fn read(pid: u32) -> Res<CpuTimes> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| format!("read /proc/{pid}/stat: {e}"))?;
        // Fields after the command name, which may hold spaces: field 3 on.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or("malformed /proc/pid/stat")?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> Res<u64> {
            f.get(n - 3)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("no field {n} in /proc/{pid}/stat"))
        };
        let sched_ns = sched_ns(pid).unwrap_or(0);
        Ok(CpuTimes {
            utime: field(14)?,
            stime: field(15)?,
            sched_ns,
        })
    }
}

/// A process's time on a CPU so far, in ns: `/proc/<pid>/schedstat`'s
/// first field, kernel time included.
pub fn sched_ns(pid: u32) -> Res<u64> {
    let path = format!("/proc/{pid}/schedstat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("{path}: {text:?}"))
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kb(pid: u32, key: &str) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("read /proc/{pid}/status: {e}"))?;
    status_field(&status, key).ok_or_else(|| format!("no {key} in /proc/{pid}/status"))
}

fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Reads `/proc/<pid>/status` into `buf` without allocating, and returns
/// (VmRSS, VmHWM) in KiB; `None` once the process is gone.
pub fn rss_hwm(path: &std::ffi::CStr, buf: &mut [u8]) -> Option<(u64, u64)> {
    // SAFETY: a valid NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: we opened it.
    unsafe { libc::close(fd) };
    if n <= 0 {
        return None;
    }
    let text = std::str::from_utf8(&buf[..n as usize]).ok()?;
    Some((status_field(text, "VmRSS")?, status_field(text, "VmHWM")?))
}

pub fn set_int_opt(fd: &OwnedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn sockaddr_v4(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

pub fn bind_v4(fd: &OwnedFd, addr: SocketAddrV4) -> io::Result<()> {
    with_sockaddr_v4(libc::bind, fd, addr)
}

pub fn connect_v4(fd: &OwnedFd, addr: SocketAddrV4) -> io::Result<()> {
    with_sockaddr_v4(libc::connect, fd, addr)
}

/// Starts a non-blocking connect from `src` to `dst`. The port is chosen
/// at connect time (`IP_BIND_ADDRESS_NO_PORT`), so that one source port
/// serves several destinations.
pub fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> io::Result<mio::net::TcpStream> {
    let SocketAddr::V4(dst) = dst else {
        return Err(io::Error::other("IPv4 only"));
    };
    let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: plain system call.
    let fd = unsafe { libc::socket(libc::AF_INET, ty, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `socket` just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_opt(&fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
    bind_v4(&fd, SocketAddrV4::new(src, 0))?;
    match connect_v4(&fd, dst) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(std::net::TcpStream::from(fd)))
}

/// Calls `bind` or `connect`, which take the same arguments.
fn with_sockaddr_v4(
    call: unsafe extern "C" fn(libc::c_int, *const libc::sockaddr, libc::socklen_t) -> libc::c_int,
    fd: &OwnedFd,
    addr: SocketAddrV4,
) -> io::Result<()> {
    let sin = sockaddr_v4(addr);
    // SAFETY: `sin` is a valid sockaddr_in of the size passed, and `fd` is open.
    let rc = unsafe {
        call(
            fd.as_raw_fd(),
            (&raw const sin).cast(),
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// What [`read_stdin_line`] found.
pub enum StdinLine {
    Line,
    Eof,
    Timeout,
}

/// Waits up to `wait` for one line on stdin (without its newline) in `line`.
pub fn read_stdin_line(line: &mut Vec<u8>, wait: Duration) -> Res<StdinLine> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(StdinLine::Timeout);
        }
        let mut pfd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        if rc == 0 {
            continue;
        }
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll stdin: {e}"));
        }
        let mut byte = 0u8;
        // SAFETY: one byte into a valid location.
        let n = unsafe { libc::read(0, (&raw mut byte).cast(), 1) };
        match n {
            0 => return Ok(StdinLine::Eof),
            1 if byte == b'\n' => return Ok(StdinLine::Line),
            1 => line.push(byte),
            _ => return Err(format!("read stdin: {}", io::Error::last_os_error())),
        }
    }
}

/// (busy, total) jiffies of all CPUs together, from `/proc/stat`: user
/// to steal (guest time is counted in user already), idle and iowait
/// being the idle part.
pub fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The share of all CPUs busy between two readings of [`cpu_jiffies`],
/// from 0 to 1; 0 when either is missing.
pub fn busy_between(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> f64 {
    match (before, after) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
        _ => 0.0,
    }
}

/// The share of all CPUs busy over `window`, from 0 to 1.
pub fn machine_busy(window: Duration) -> f64 {
    let before = cpu_jiffies();
    std::thread::sleep(window);
    busy_between(before, cpu_jiffies())
}

/// Waits up to `within` for the machine to fall quiet: the share of all
/// CPUs busy, measured over `window` at a time, under `below`. Returns the
/// last share measured.
pub fn wait_quiet(below: f64, within: Duration, window: Duration) -> f64 {
    let start = Instant::now();
    loop {
        let busy = machine_busy(window);
        if busy < below || start.elapsed() >= within {
            return busy;
        }
    }
}

/// Raises this process's soft descriptor limit to the hard one, for what
/// holds many sockets, and returns the soft limit now. It allocates
/// nothing, so a child may call it between fork and exec too.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit; no allocation.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// The number of CPUs online; on the machines the benches run on they
/// are numbered from 0, as pinning to one by number assumes.
pub fn cpus() -> usize {
    // SAFETY: plain library call.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.max(1) as usize
}

fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data, all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE on any machine this runs on.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set
}

/// Pins the calling thread (and so every thread and child it makes later).
pub fn pin_self(cpu: usize) -> Res<()> {
    let set = cpu_set(cpu);
    // SAFETY: a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc < 0 {
        return Err(format!(
            "cannot pin to CPU {cpu}: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Makes the child run on `cpu` and die with the thread that spawns it, so
/// that nothing we start outlives the bench even if it is killed outright.
/// `keep_fds` are descriptors the child inherits (their close-on-exec flag
/// is cleared in the child only).
pub fn prepare(cmd: &mut Command, cpu: Option<usize>, keep_fds: Vec<i32>) {
    let set = cpu.map(cpu_set);
    // SAFETY: the closure makes only async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(set) = &set {
                if libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), set) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(io::Error::last_os_error());
            }
            for &fd in &keep_fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A child process we started: killed by pid when dropped, if still alive.
pub struct Proc {
    pub name: String,
    pub pid: u32,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Proc {
    /// Starts `cmd` with stdin and stdout piped; stdout arrives as lines.
    /// Must be called from the main thread (see [`prepare`]).
    pub fn spawn(name: &str, mut cmd: Command, cpu: Option<usize>) -> Res<Proc> {
        Self::spawn_keeping(name, &mut cmd, cpu, Vec::new())
    }

    pub fn spawn_keeping(
        name: &str,
        cmd: &mut Command,
        cpu: Option<usize>,
        keep_fds: Vec<i32>,
    ) -> Res<Proc> {
        prepare(cmd, cpu, keep_fds);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        let thread_name = name.to_owned();
        std::thread::Builder::new()
            .name(format!("out-{thread_name}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("cannot start a reader thread: {e}"))?;
        Ok(Proc {
            name: name.to_owned(),
            pid: child.id(),
            child,
            stdin,
            lines: rx,
        })
    }

    /// Waits until a stdout line contains `needle` and returns it. A line
    /// starting with `error` (a worker's failure) is an error.
    pub fn expect(&self, needle: &str, deadline: Instant) -> Res<String> {
        self.expect_seeing(needle, deadline, |_| {})
    }

    /// [`Proc::expect`], showing `seen` every line read on the way, the
    /// one returned included.
    pub fn expect_seeing(
        &self,
        needle: &str,
        deadline: Instant,
        mut seen: impl FnMut(&str),
    ) -> Res<String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    seen(&line);
                    if line.starts_with("error") {
                        return Err(format!("{}: {line}", self.name));
                    }
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("{}: no {needle:?} line in time", self.name));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("{}: exited before printing {needle:?}", self.name));
                }
            }
        }
    }

    /// The stdout lines that came since the last look, without waiting.
    pub fn lines_so_far(&self) -> impl Iterator<Item = String> + '_ {
        self.lines.try_iter()
    }

    /// Waits for a server's `listening on: ADDR` line (drainport's, or a
    /// program's on its library) and returns ADDR.
    pub fn listening(&self, deadline: Instant) -> Res<SocketAddr> {
        let line = self.expect("listening on: ", deadline)?;
        line.rsplit_once("listening on: ")
            .and_then(|(_, a)| a.trim().parse().ok())
            .ok_or_else(|| format!("{}: no address in {line:?}", self.name))
    }

    pub fn send(&mut self, line: &str) -> Res<()> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("{}: cannot write to stdin: {e}", self.name))
    }

    pub fn signal(&self, sig: i32) -> Res<()> {
        // SAFETY: a signal to a child we started and have not reaped.
        if unsafe { libc::kill(self.pid as libc::pid_t, sig) } < 0 {
            return Err(format!(
                "{}: kill: {}",
                self.name,
                io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the process to exit, polling every millisecond.
    pub fn wait_until(&mut self, deadline: Instant) -> Res<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(format!("{} did not exit in time", self.name));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Sends `sig` and waits until `deadline` for the process to exit;
    /// one still running then is killed when dropped.
    pub fn stop(&mut self, sig: i32, deadline: Instant) -> Res<ExitStatus> {
        self.signal(sig)?;
        self.wait_until(deadline)
    }

    /// Waits for a worker to finish cleanly.
    pub fn finish(mut self, deadline: Instant) -> Res<()> {
        let status = self.wait_until(deadline)?;
        if !status.success() {
            return Err(format!("{} exited with {status}", self.name));
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            // Child::kill sends SIGKILL to this child's pid only.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A pipe whose two ends are close-on-exec (pass one to a child with
/// [`prepare`]'s `keep_fds`).
pub fn pipe() -> Res<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(format!("pipe: {}", io::Error::last_os_error()));
    }
    use std::os::fd::FromRawFd as _;
    // SAFETY: `pipe2` just returned these and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads from `fd` until `want` has been seen, or the deadline passes.
pub fn read_until(fd: &OwnedFd, want: &[u8], deadline: Instant) -> Res<()> {
    let mut got = Vec::new();
    while !got.windows(want.len()).any(|w| w == want) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no {:?} in time (got {:?})",
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(&got)
            ));
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        if rc <= 0 {
            continue;
        }
        let mut buf = [0u8; 256];
        // SAFETY: `buf` is valid for its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return Err("pipe closed".into());
        }
        got.extend_from_slice(&buf[..n as usize]);
    }
    Ok(())
}

pub fn write_fd(fd: &OwnedFd, data: &[u8]) -> Res<()> {
    // SAFETY: `data` is valid for its length.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    if n != data.len() as isize {
        return Err(format!("write: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// A descriptor that becomes readable when process `pid` exits.
pub fn pidfd(pid: u32) -> Res<OwnedFd> {
    // SAFETY: plain system call.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(format!("pidfd_open: {}", io::Error::last_os_error()));
    }
    use std::os::fd::FromRawFd as _;
    // SAFETY: the kernel just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits up to `ms` for `fd` to become readable.
pub fn readable(fd: &OwnedFd, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

/// `uname -sr`.
pub fn kernel() -> String {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { mem::zeroed() };
    // SAFETY: a valid utsname to fill.
    if unsafe { libc::uname(&mut u) } < 0 {
        return "unknown".into();
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!("{} {}", field(&u.sysname), field(&u.release))
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    // SAFETY: plain library calls on valid locations.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = mem::zeroed();
        libc::gmtime_r(&t, &mut tm);
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min
        )
    }
}

/// The first line a command prints (stdout, else stderr), if it runs and
/// ends within five seconds.
pub fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(str::to_owned)
}

/// Finds `program` on the PATH.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The commit measured, read without touching the repository's index, and
/// whether `paths` (those that make up what is measured) have uncommitted
/// changes.
pub fn source(paths: &[&str]) -> String {
    let git = |args: &[&str]| {
        let mut all = vec!["-C", env!("CARGO_MANIFEST_DIR"), "--no-optional-locks"];
        all.extend_from_slice(args);
        first_line("git", &all)
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(head) if !head.contains(' ') => {
            let mut status = vec!["status", "--porcelain", "--"];
            status.extend_from_slice(paths);
            match git(&status) {
                Some(_) => format!(
                    "git {head}, with uncommitted changes in {}",
                    paths.join(", ")
                ),
                None => format!("git {head}"),
            }
        }
        _ => "unknown (not a git checkout)".to_owned(),
    }
}

/// The 1-minute load average, as `/proc/loadavg` gives it.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The machine a report was measured on: cores, CPU model, memory, kernel.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.0}", kb / 1024.0 / 1024.0));
    format!("{} cores ({model}), {mem_gib} GiB, {}", cpus(), kernel())
}

/// When, how, from which code and where a report was measured: the lines
/// every report opens with.
pub struct Provenance {
    pub date: String,
    pub command: String,
    pub source: String,
    pub machine: String,
    pub pinning: String,
}

impl Provenance {
    /// Today's date, this machine and the source of `paths`.
    pub fn now(command: String, paths: &[&str], pinning: String) -> Provenance {
        Provenance {
            date: utc_now(),
            command,
            source: source(paths),
            machine: machine(),
            pinning,
        }
    }

    pub fn write(&self, w: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(w, "- Date: {}", self.date);
        let _ = writeln!(w, "- Command: `{}`", self.command);
        let _ = writeln!(w, "- Source: {}", self.source);
        let _ = writeln!(w, "- Machine: {}", self.machine);
        let _ = writeln!(w, "- Pinning: {}", self.pinning);
    }
}
