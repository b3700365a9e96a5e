//! `cargo bench --bench spread`: each process's share of new connections.
//!
//! P drainport processes (P = 2, 4, 8) share one loopback port. Each opens
//! one listener per online CPU tagged with `SO_INCOMING_CPU`, so the kernel
//! picks the listener for a SYN by CPU and hash. Short clients (connect,
//! one line, read the reply's `: from <pid>`, close) run on threads pinned
//! round-robin to every CPU, so SYNs arrive on each of them, and the
//! replies say which process served each one. Three scenarios per P:
//!
//! - **steady**: all P processes running.
//! - **one draining**: one process holds a long-lived client and has had
//!   SIGHUP, so it drains and keeps its listeners untagged; the spread over
//!   the other P-1 is measured, then measured again once the drainer has
//!   exited.
//! - **one full**: one process runs with `--max-clients 8` and holds 8
//!   long-lived clients, so it accepts nothing more; what its listeners
//!   still receive waits in their accept queues.
//! - **shared**: the P processes share one listening socket that the
//!   bench holds and passes to each (`LISTEN_FDS`), as a socket unit with
//!   `Sockets=` does; measured with many client threads and with one per
//!   CPU, then with the first process draining.
//!
//! The special process is started first and alone (so its long-lived
//! clients reach it), the others one by one after it, each once the one
//! before listens: the group's array then holds the listeners in start
//! order, which is the order the tables list the processes in.
//!
//! Each short connect has 5 s for the connect and the reply together; one
//! that gets no reply by then counts as "no answer within 5 s". Nothing is
//! asserted: the report says what happened. The servers run as uid 65534
//! (through `setpriv`, from a copy of the binary that user can reach) when
//! the benchmark runs as root, as the current user otherwise.
//!
//! Flags (after `--`): `--connects N` (default 4000), `--procs 2,4,8`,
//! `--no-write` (print only). The report goes to stdout and replaces the
//! marked section of docs/benchmarks.md. Every loop is bounded in count,
//! every wait has a deadline, and only the processes started here are
//! signalled, by pid, and waited for.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};
use testbed::{activate, num, report, system, tcp};

use num::num;

const BIN: &str = env!("CARGO_BIN_EXE_drainport");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const NOBODY: u32 = 65534;
/// Time a short connect has for its connect and its reply together.
const BUDGET: Duration = Duration::from_secs(5);
/// A connect this slow (connect + reply) is counted as slow.
const SLOW: Duration = Duration::from_secs(1);
/// Client threads per CPU. Only the "one full" scenario needs many: every
/// connect that lands on the full process waits out its whole budget.
const THREADS_PER_CPU: usize = 128;
const FULL_MAX_CLIENTS: usize = 8;
/// How long a server has to print its listening line, or its hangup line.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long servers have to exit once asked to.
const EXIT_DEADLINE: Duration = Duration::from_secs(15);
/// nginx's re-arm period, which drainport uses for a shared socket.
const REARM_EVERY: usize = 16;
/// The shared scenario's connects, as a multiple of `--connects`: the
/// processes take turns by who is awake, and 4,000 connects last a fifth
/// of a second, a few scheduler slices for 8 processes on 2 CPUs, where a
/// process given two more slices than the others takes twice its share.
const SHARED_RUNS: usize = 5;
const START: &str = "<!-- spread:begin -->";
const END: &str = "<!-- spread:end -->";

struct Opts {
    connects: usize,
    procs: Vec<usize>,
    write: bool,
    /// The flags as given, for the report's command line.
    flags: Vec<String>,
}

fn parse_opts() -> Result<Opts, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut o = Opts {
        connects: 4000,
        procs: vec![2, 4, 8],
        write: true,
        flags: Vec::new(),
    };
    let mut i = 0;
    while i < args.len() {
        let value = |i: usize| {
            args.get(i + 1)
                .cloned()
                .ok_or(format!("{} needs a value", args[i]))
        };
        match args[i].as_str() {
            "--connects" => {
                let v = value(i)?;
                o.connects = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(format!("--connects {v}: not a positive count"))?;
                o.flags.extend(["--connects".into(), v]);
                i += 1;
            }
            "--procs" => {
                let v = value(i)?;
                o.procs = v
                    .split(',')
                    .map(|p| {
                        p.trim()
                            .parse()
                            .ok()
                            .filter(|&n: &usize| (2..=64).contains(&n))
                    })
                    .collect::<Option<_>>()
                    .ok_or(format!("--procs {v}: a list of counts from 2 to 64"))?;
                o.flags.extend(["--procs".into(), v]);
                i += 1;
            }
            "--no-write" => {
                o.write = false;
                o.flags.push("--no-write".into());
            }
            // cargo passes `--bench` to every bench target; other flags are
            // the harness's, not ours.
            _ => {}
        }
        i += 1;
    }
    Ok(o)
}

fn main() {
    let o = match parse_opts() {
        Ok(o) => o,
        Err(why) => {
            eprintln!("spread: {why}");
            std::process::exit(2);
        }
    };
    // SAFETY: geteuid has no memory effects.
    let uid = unsafe { libc::geteuid() };
    let root = uid == 0;
    let dir = std::env::temp_dir().join(format!("drainport-bench-spread-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let runner = Runner::new(&dir, root);
    let cpus = system::cpus();
    let threads = THREADS_PER_CPU * cpus;
    let started = Instant::now();

    let mut steady = Vec::new();
    let mut draining = Vec::new();
    let mut full = Vec::new();
    let mut shared = Vec::new();
    for &p in &o.procs {
        eprintln!("spread: P = {p}: steady");
        steady.push(run_steady(&runner, p, o.connects, threads));
        eprintln!("spread: P = {p}: one draining");
        draining.push(run_draining(&runner, p, o.connects, threads));
        eprintln!("spread: P = {p}: one full");
        full.push(run_full(&runner, p, o.connects, threads));
        for clients in [threads, cpus] {
            eprintln!("spread: P = {p}: shared socket, {clients} client threads");
            shared.push(run_shared(&runner, p, o.connects * SHARED_RUNS, clients));
        }
    }
    let elapsed = started.elapsed();

    let command = std::iter::once("cargo bench --bench spread".to_owned())
        .chain((!o.flags.is_empty()).then(|| format!("-- {}", o.flags.join(" "))))
        .collect::<Vec<_>>()
        .join(" ");
    let report = render(&Meta {
        command,
        cpus,
        threads,
        connects: o.connects,
        user: if runner.copy.is_some() {
            "uid 65534 (setpriv)".into()
        } else {
            format!("the current user (uid {uid})")
        },
        elapsed,
        steady: &steady,
        draining: &draining,
        full: &full,
        shared: &shared,
    });
    println!("{report}");
    if o.write {
        let path = Path::new(ROOT).join("docs/benchmarks.md");
        match report::write_marked(&path, START, END, &report, |_, _| None) {
            Ok(()) => println!("report written to {}", path.display()),
            Err(why) => eprintln!("{why}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// Servers

/// Who runs the servers: uid 65534 from a copy of the binary it can reach
/// (under root), or the current user from the build's binary.
struct Runner {
    copy: Option<PathBuf>,
}

impl Runner {
    fn new(dir: &Path, root: bool) -> Runner {
        if !root {
            return Runner { copy: None };
        }
        std::fs::create_dir_all(dir).expect("create the run directory");
        let bin = dir.join("drainport");
        std::fs::copy(BIN, &bin).expect("copy the binary");
        let public = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(&bin, public.clone()).expect("chmod the binary");
        std::fs::set_permissions(dir, public).expect("chmod the run directory");
        Runner { copy: Some(bin) }
    }

    /// Starts one server on `addr` and waits for its listening line; returns
    /// it with the address it listens on.
    fn start(&self, addr: SocketAddr, extra: &[&str]) -> (Server, SocketAddr) {
        let mut cmd = self.command(&[]);
        cmd.arg("-q").args(extra).arg(addr.to_string());
        self.launch(cmd)
    }

    /// Starts one server on `socket`, passed to it as a service manager
    /// passes one (the bench holds it), and waits for its listening line.
    fn start_passed(&self, socket: &OwnedFd, extra: &[&str]) -> (Server, SocketAddr) {
        let mut cmd = self.command(&activate::LISTEN_PID_SHELL);
        cmd.arg("-q").args(extra);
        activate::pass(&mut cmd, &[socket.as_raw_fd()], Some("spread"));
        self.launch(cmd)
    }

    /// The command that runs the server through `wrapper`, as the bench's
    /// server user; its arguments follow.
    fn command(&self, wrapper: &[&str]) -> Command {
        let bin: &Path = self.copy.as_deref().unwrap_or(Path::new(BIN));
        let mut cmd = match &self.copy {
            Some(_) => {
                let mut cmd = Command::new("setpriv");
                cmd.args([
                    &format!("--reuid={NOBODY}"),
                    &format!("--regid={NOBODY}"),
                    "--clear-groups",
                ]);
                cmd.args(wrapper);
                cmd
            }
            None => match wrapper.split_first() {
                Some((program, rest)) => {
                    let mut cmd = Command::new(program);
                    cmd.args(rest);
                    cmd
                }
                None => return Command::new(bin),
            },
        };
        cmd.arg(bin);
        cmd
    }

    fn launch(&self, mut cmd: Command) -> (Server, SocketAddr) {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start drainport");
        // setpriv and the shell exec the server, so the child's pid is the
        // server's.
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        // Ends at EOF, when the server exits.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            pid,
            lines,
        };
        let Some(line) = server.wait_line("listening on: ", START_DEADLINE) else {
            server.stop();
            panic!("server {pid} did not listen within {START_DEADLINE:?}");
        };
        let bound = line
            .rsplit("listening on: ")
            .next()
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        (server, bound)
    }

    /// Starts the processes of one scenario one by one: `first` (with its
    /// flags) on a free port, `others` more beside it. `before_others` runs
    /// once the first listens, before any sibling starts.
    fn start_group(
        &self,
        first: &[&str],
        others: usize,
        before_others: impl FnOnce(&Server, SocketAddr),
    ) -> (Vec<Server>, SocketAddr) {
        let (server, addr) = self.start("127.0.0.1:0".parse().unwrap(), first);
        before_others(&server, addr);
        let mut servers = vec![server];
        for _ in 0..others {
            let (server, at) = self.start(addr, &[]);
            assert_eq!(at, addr, "a sibling listens elsewhere");
            servers.push(server);
        }
        (servers, addr)
    }
}

struct Server {
    /// `None` once reaped.
    child: Option<Child>,
    pid: u32,
    lines: Receiver<String>,
}

impl Server {
    /// The first stdout line from now on that contains `needle`, or `None`
    /// at the deadline or when the server's stdout closed.
    fn wait_line(&self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Sends `signal` to this server, unless it has been reaped (until then
    /// its pid cannot belong to anyone else).
    fn signal(&mut self, signal: libc::c_int) {
        if let Some(child) = &mut self.child {
            if matches!(child.try_wait(), Ok(None)) {
                // SAFETY: kill(2) on a child of ours that has not been reaped.
                unsafe { libc::kill(self.pid as libc::pid_t, signal) };
            }
        }
    }

    /// Waits until `deadline` for the server to exit; its status if it did.
    fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills and reaps the server if it still runs.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Asks every server still running to stop (SIGTERM: a drain with no new
/// clients), waits for them, and kills the ones still there at the
/// deadline. Returns how many did not exit 0 by themselves.
fn stop_all(servers: &mut [Server]) -> usize {
    for s in servers.iter_mut() {
        s.signal(libc::SIGTERM);
    }
    let deadline = Instant::now() + EXIT_DEADLINE;
    let mut unclean = 0;
    for s in servers.iter_mut() {
        if s.child.is_none() {
            continue;
        }
        match s.wait_until(deadline) {
            Some(status) if status.success() => {}
            Some(status) => {
                eprintln!("spread: server {} exited with {status}", s.pid);
                unclean += 1;
            }
            None => {
                eprintln!(
                    "spread: server {} still running after {EXIT_DEADLINE:?}; killed",
                    s.pid
                );
                s.stop();
                unclean += 1;
            }
        }
    }
    unclean
}

// ---------------------------------------------------------------------------
// Clients

/// A client that stays connected: it has sent one line and read the reply.
struct Held {
    _stream: TcpStream,
    pid: u32,
}

fn hold(addr: SocketAddr) -> io::Result<Held> {
    let mut stream = TcpStream::connect_timeout(&addr, BUDGET)?;
    stream.set_read_timeout(Some(BUDGET))?;
    stream.set_write_timeout(Some(BUDGET))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let pid = exchange(&mut stream, &mut reader, "held", Instant::now() + BUDGET)?;
    Ok(Held {
        _stream: stream,
        pid,
    })
}

/// Sends `line`, reads the echo and the `: from <pid>` line by `deadline`;
/// returns the pid.
fn exchange(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    line: &str,
    deadline: Instant,
) -> io::Result<u32> {
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))
    };
    stream.set_write_timeout(Some(left()?))?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut echoed = String::new();
    stream.set_read_timeout(Some(left()?))?;
    reader.read_line(&mut echoed)?;
    if echoed != format!("{line}\n") {
        return Err(io::Error::other(format!("echoed {echoed:?}")));
    }
    let mut from = String::new();
    stream.set_read_timeout(Some(left()?))?;
    reader.read_line(&mut from)?;
    from.strip_prefix(": from ")
        .and_then(|p| p.trim_end().parse().ok())
        .ok_or_else(|| io::Error::other(format!("suffix {from:?}")))
}

enum Outcome {
    /// `resent`: the connection's SYN was sent more than once.
    Answered {
        pid: u32,
        took: Duration,
        resent: bool,
    },
    /// No reply (or no connection) within the budget.
    NoAnswer,
    Failed(String),
}

/// One short client: connect, one line, the reply, close.
fn short_connect(addr: SocketAddr, n: usize) -> Outcome {
    let started = Instant::now();
    let deadline = started + BUDGET;
    let result = TcpStream::connect_timeout(&addr, BUDGET).and_then(|mut stream| {
        // Read right after the connect, this counts resent SYNs only.
        let resent = tcp::syn_retransmits(&stream).is_ok_and(|n| n > 0);
        let mut reader = BufReader::new(stream.try_clone()?);
        let pid = exchange(&mut stream, &mut reader, &format!("spread {n}"), deadline)?;
        Ok((pid, resent))
    });
    match result {
        Ok((pid, resent)) => Outcome::Answered {
            pid,
            took: started.elapsed(),
            resent,
        },
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            Outcome::NoAnswer
        }
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// What a batch of short connects found.
struct Tally {
    /// `by_cpu[i][c]`: connects from CPU `c` answered by `pids[i]`.
    pids: Vec<u32>,
    by_cpu: Vec<Vec<usize>>,
    /// Answered by a pid not in `pids` (none expected).
    stray: usize,
    /// Answered, but connect + reply took at least `SLOW`.
    slow: usize,
    /// Answered after a SYN was sent again.
    resent: usize,
    no_answer: usize,
    failed: usize,
    secs: f64,
}

impl Tally {
    fn count(&self, i: usize) -> usize {
        self.by_cpu[i].iter().sum()
    }

    /// `count (cpu0+cpu1+…)` for process `i`.
    fn cell(&self, i: usize) -> String {
        let split: Vec<String> = self.by_cpu[i].iter().map(usize::to_string).collect();
        format!("{} ({})", self.count(i), split.join("+"))
    }

    /// The busiest and the least busy count among `which`, each over the
    /// fair share of their total.
    fn ratios(&self, which: &[usize]) -> (f64, f64) {
        let counts: Vec<usize> = which.iter().map(|&i| self.count(i)).collect();
        let total: usize = counts.iter().sum();
        if total == 0 {
            return (f64::NAN, f64::NAN);
        }
        let fair = total as f64 / counts.len() as f64;
        let max = *counts.iter().max().unwrap_or(&0) as f64;
        let min = *counts.iter().min().unwrap_or(&0) as f64;
        (max / fair, min / fair)
    }
}

/// Runs `n` short connects on `threads` threads, thread `t` pinned to CPU
/// `t % cpus`, and counts who answered from which CPU.
fn connects(addr: SocketAddr, pids: &[u32], n: usize, threads: usize) -> Tally {
    let cpus = system::cpus();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let next = next.clone();
            thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let cpu = t % cpus;
                    // Unpinned, the thread still connects; only the spread
                    // over CPUs suffers, and the report shows it.
                    let pinned = tcp::pin_to(cpu).is_ok();
                    let mut out = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::SeqCst);
                        if k >= n {
                            break;
                        }
                        out.push((cpu, pinned, short_connect(addr, k)));
                    }
                    out
                })
                .expect("spawn a client thread")
        })
        .collect();
    let mut tally = Tally {
        pids: pids.to_vec(),
        by_cpu: vec![vec![0; cpus]; pids.len()],
        stray: 0,
        slow: 0,
        resent: 0,
        no_answer: 0,
        failed: 0,
        secs: 0.0,
    };
    let mut unpinned = 0;
    let mut errors = Vec::new();
    for w in workers {
        for (cpu, pinned, outcome) in w.join().expect("client thread panicked") {
            unpinned += usize::from(!pinned);
            match outcome {
                Outcome::Answered { pid, took, resent } => {
                    tally.slow += usize::from(took >= SLOW);
                    tally.resent += usize::from(resent);
                    match pids.iter().position(|&p| p == pid) {
                        Some(i) => tally.by_cpu[i][cpu] += 1,
                        None => tally.stray += 1,
                    }
                }
                Outcome::NoAnswer => tally.no_answer += 1,
                Outcome::Failed(why) => {
                    tally.failed += 1;
                    if errors.len() < 5 {
                        errors.push(why);
                    }
                }
            }
        }
    }
    tally.secs = started.elapsed().as_secs_f64();
    if unpinned > 0 {
        eprintln!("spread: {unpinned} connects ran on unpinned threads");
    }
    for why in errors {
        eprintln!("spread: a short connect failed: {why}");
    }
    tally
}

// ---------------------------------------------------------------------------
// Scenarios

struct Steady {
    p: usize,
    tally: Tally,
    unclean: usize,
}

fn run_steady(runner: &Runner, p: usize, n: usize, threads: usize) -> Steady {
    let (mut servers, addr) = runner.start_group(&[], p - 1, |_, _| {});
    let pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
    let tally = connects(addr, &pids, n, threads);
    let unclean = stop_all(&mut servers);
    Steady { p, tally, unclean }
}

struct Draining {
    p: usize,
    /// In its window: SIGHUP cleared its tags, its listeners are still open
    /// (it is held there with SIGSTOP). `None` if they were already closed.
    window: Option<Tally>,
    /// Connections queued on the drainer's listeners after that run.
    window_queued: Option<usize>,
    /// Retired: its listeners are closed; it still drains its client.
    /// `None` if they did not close in time.
    retired: Option<Tally>,
    unclean: usize,
}

fn run_draining(runner: &Runner, p: usize, n: usize, threads: usize) -> Draining {
    let mut held = None;
    let (mut servers, addr) = runner.start_group(&[], p - 1, |drainer, addr| {
        let h = hold(addr).expect("connect the drainer's long-lived client");
        assert_eq!(
            h.pid, drainer.pid,
            "the long-lived client reached another process"
        );
        held = Some(h);
    });
    let pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
    let drainer = pids[0];
    servers[0].signal(libc::SIGHUP);
    // The hangup line follows the clearing of the tags. At the end of its
    // handshake window (one look, 50 ms, on an idle port) the drainer
    // closes its listeners; stopped, it keeps them open and untagged for
    // as long as the run takes.
    if servers[0]
        .wait_line("received hangup signal", START_DEADLINE)
        .is_none()
    {
        panic!("the drainer {drainer} did not report its hangup");
    }
    servers[0].signal(libc::SIGSTOP);
    let open = listeners_of(addr, drainer).map(|(count, _)| count);
    let window = if open == Some(0) {
        eprintln!("spread: the drainer {drainer} closed its listeners before it was stopped");
        None
    } else {
        Some(connects(addr, &pids, n, threads))
    };
    let window_queued = listeners_of(addr, drainer).map(|(_, queued)| queued);
    servers[0].signal(libc::SIGCONT);
    let retired = if wait_retired(addr, drainer) {
        Some(connects(addr, &pids, n, threads))
    } else {
        eprintln!("spread: the drainer {drainer} kept its listeners");
        None
    };
    // Its last client leaves, so it finishes its drain and exits.
    drop(held);
    let exited = servers[0].wait_until(Instant::now() + EXIT_DEADLINE);
    if !exited.is_some_and(|s| s.success()) {
        eprintln!("spread: the drainer {drainer} did not exit 0 after its client left: {exited:?}");
    }
    let unclean = stop_all(&mut servers) + usize::from(!exited.is_some_and(|s| s.success()));
    Draining {
        p,
        window,
        window_queued,
        retired,
        unclean,
    }
}

/// Waits until `pid` has no listener on `addr`; without `ss`, waits well
/// past the handshake window instead.
fn wait_retired(addr: SocketAddr, pid: u32) -> bool {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        match listeners_of(addr, pid) {
            Some((0, _)) => return true,
            Some(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Some(_) => return false,
            None => {
                thread::sleep(Duration::from_secs(1));
                return true;
            }
        }
    }
}

struct Full {
    p: usize,
    tally: Tally,
    /// Connections waiting in the full process's accept queues after the
    /// run, when `ss` could tell.
    queued: Option<usize>,
    unclean: usize,
}

fn run_full(runner: &Runner, p: usize, n: usize, threads: usize) -> Full {
    let max = FULL_MAX_CLIENTS.to_string();
    let mut held = Vec::new();
    let (mut servers, addr) = runner.start_group(&["--max-clients", &max], p - 1, |full, addr| {
        for _ in 0..FULL_MAX_CLIENTS {
            let h = hold(addr).expect("connect a long-lived client to the full process");
            assert_eq!(
                h.pid, full.pid,
                "a long-lived client reached another process"
            );
            held.push(h);
        }
    });
    let pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
    let tally = connects(addr, &pids, n, threads);
    let queued = listeners_of(addr, pids[0]).map(|(_, queued)| queued);
    // With its clients gone it serves (and closes) what queued, and the
    // stop below finds it running normally.
    drop(held);
    let unclean = stop_all(&mut servers);
    Full {
        p,
        tally,
        queued,
        unclean,
    }
}

struct Shared {
    p: usize,
    threads: usize,
    /// All P processes running.
    tally: Tally,
    /// The first one draining (with a client of its own), the rest running.
    draining: Tally,
    unclean: usize,
}

/// P processes on one listening socket that the bench holds and passes to
/// each, as a socket unit with `Sockets=` does: first all running, then
/// with the first draining.
fn run_shared(runner: &Runner, p: usize, n: usize, threads: usize) -> Shared {
    let socket =
        activate::listening_socket("127.0.0.1:0".parse().unwrap()).expect("open the shared socket");
    let addr = activate::local_addr(&socket).expect("the shared socket's address");
    let mut servers: Vec<Server> = (0..p)
        .map(|_| {
            let (server, at) = runner.start_passed(&socket, &[]);
            assert_eq!(at, addr, "a process serves another socket");
            server
        })
        .collect();
    let pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
    let tally = connects(addr, &pids, n, threads);
    // A client of the first process's own, found by trying, keeps its
    // drain going while the others take every new connection.
    let held = (0..400)
        .map(|_| hold(addr).expect("connect a long-lived client"))
        .find(|h| h.pid == pids[0])
        .expect("no connection reached the first process in 400 tries");
    servers[0].signal(libc::SIGHUP);
    servers[0]
        .wait_line("closing tasks", START_DEADLINE)
        .expect("the first process's hangup line");
    let draining = connects(addr, &pids, n, threads);
    drop(held);
    let exited = servers[0].wait_until(Instant::now() + EXIT_DEADLINE);
    let unclean = stop_all(&mut servers) + usize::from(!exited.is_some_and(|s| s.success()));
    Shared {
        p,
        threads,
        tally,
        draining,
        unclean,
    }
}

/// How many listeners `pid` has on `addr`, and how many connections wait
/// in their accept queues, from `ss` (its process column shows another
/// user's sockets only to root). `None` when that cannot be read.
fn listeners_of(addr: SocketAddr, pid: u32) -> Option<(usize, usize)> {
    let out = Command::new("ss")
        .args(["-Hltnp", &format!("sport = :{}", addr.port())])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains("pid=") {
        // No process column at all: this user may not see it.
        return None;
    }
    let needle = format!("pid={pid},");
    let (mut count, mut queued) = (0, 0);
    for line in text.lines().filter(|l| l.contains(&needle)) {
        // State Recv-Q Send-Q Local Peer Process
        queued += line.split_whitespace().nth(1)?.parse::<usize>().ok()?;
        count += 1;
    }
    Some((count, queued))
}

// ---------------------------------------------------------------------------
// The kernel's pick, modelled

/// The listening section of a reuseport group as Linux 6.2+ keeps it
/// (`struct sock_reuseport`): listeners in the order they called
/// `listen()`, a closed one replaced by the array's last (`swap_remove`,
/// as `__reuseport_detach_sock()` does), each with its process and tag.
struct Group {
    socks: Vec<(usize, Option<usize>)>,
    cpus: usize,
}

impl Group {
    /// `procs` processes started one after another, each with one listener
    /// per CPU in CPU order, all tagged.
    fn new(procs: usize, cpus: usize) -> Group {
        let socks = (0..procs)
            .flat_map(|p| (0..cpus).map(move |c| (p, Some(c))))
            .collect();
        Group { socks, cpus }
    }

    /// Process `p` sets its tags to -1 (a drain starts).
    fn untag(&mut self, p: usize) {
        for s in self.socks.iter_mut().filter(|s| s.0 == p) {
            s.1 = None;
        }
    }

    /// Process `p` closes its listeners, in CPU order (its `Vec` drops
    /// them in that order).
    fn close(&mut self, p: usize) {
        while let Some(i) = self.socks.iter().position(|s| s.0 == p) {
            self.socks.swap_remove(i);
        }
    }

    /// `slots[p][c]`: of the array's start positions (the hash's pick,
    /// uniform), how many lead a SYN on CPU `c` to process `p`:
    /// `reuseport_select_sock_by_hash()` walks on from the start to the
    /// first listener tagged `c`, or keeps the start if none is.
    fn slots(&self, procs: usize) -> Vec<Vec<usize>> {
        let n = self.socks.len();
        let mut slots = vec![vec![0; self.cpus]; procs];
        let cases = (0..self.cpus).flat_map(|c| (0..n).map(move |start| (c, start)));
        for (c, start) in cases {
            let pick = (0..n)
                .map(|k| self.socks[(start + k) % n])
                .find(|s| s.1 == Some(c))
                .unwrap_or(self.socks[start]);
            slots[pick.0][c] += 1;
        }
        slots
    }

    /// The busiest and least busy of `which` over their fair share, as the
    /// model expects them for the connects `t` counted from each CPU.
    fn ratios(&self, t: &Tally, which: &[usize]) -> (f64, f64) {
        let n = self.socks.len() as f64;
        let slots = self.slots(t.pids.len());
        let from_cpu: Vec<usize> = (0..self.cpus)
            .map(|c| t.by_cpu.iter().map(|counts| counts[c]).sum())
            .collect();
        let expected: Vec<f64> = which
            .iter()
            .map(|&p| {
                (0..self.cpus)
                    .map(|c| from_cpu[c] as f64 * slots[p][c] as f64 / n)
                    .sum()
            })
            .collect();
        let fair = expected.iter().sum::<f64>() / which.len() as f64;
        let max = expected.iter().copied().fold(f64::MIN, f64::max);
        let min = expected.iter().copied().fold(f64::MAX, f64::min);
        (max / fair, min / fair)
    }

    /// `a+b+… of n` per process in `which`: its start positions per CPU.
    fn slot_cells(&self, procs: usize, which: &[usize]) -> String {
        let slots = self.slots(procs);
        let cells: Vec<String> = which
            .iter()
            .map(|&p| {
                let per_cpu: Vec<String> = slots[p].iter().map(usize::to_string).collect();
                per_cpu.join("+")
            })
            .collect();
        format!("{} of {}", cells.join(", "), self.socks.len())
    }
}

// ---------------------------------------------------------------------------
// Report

struct Meta<'a> {
    command: String,
    cpus: usize,
    threads: usize,
    connects: usize,
    user: String,
    elapsed: Duration,
    steady: &'a [Steady],
    draining: &'a [Draining],
    full: &'a [Full],
    shared: &'a [Shared],
}

fn ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.3}")
    } else {
        "—".into()
    }
}

fn render(m: &Meta) -> String {
    let mut s = String::new();
    let kernel = report::command_line("uname", &["-r"]);
    let _ = writeln!(
        s,
        "Written by `benches/spread.rs` between the `spread` markers; rerun it rather than editing this section.\n\n\
         - Date: {}\n\
         - Command: `{}`\n\
         - Machine: {} CPUs, Linux {kernel}\n\
         - Servers run as {}; every process opens one listener per CPU, tagged with `SO_INCOMING_CPU`\n\
         - Each row: {} short connects (connect, one line, the reply's `: from <pid>`, close) from {} client threads pinned round-robin to CPUs 0–{}; each connect has {} s for connect and reply together\n\
         - Processes are started one at a time and listed in start order, which is their listeners' order in the kernel's reuseport array. A count reads `total (from CPU 0+CPU 1+…)`. Ratios are the busiest and the least busy process's count over the fair share (their total ÷ their number).\n\
         - *Kernel walk*: the same ratios as `reuseport_select_sock_by_hash()` gives them for the connects counted from each CPU, modelled from the array (the hash picks a start position, uniform; the pick walks on to the first listener tagged with the SYN's CPU). Its start positions per process read `CPU 0+CPU 1+… of all positions`.\n\
         - Whole bench: {:.1} s\n",
        report::command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        m.command,
        m.cpus,
        m.user,
        num(m.connects as f64, 0),
        m.threads,
        m.cpus - 1,
        BUDGET.as_secs(),
        m.elapsed.as_secs_f64(),
    );
    let kernel_walk = |g: &Group, t: &Tally, which: &[usize]| {
        let (max, min) = g.ratios(t, which);
        format!("{} / {}", ratio(max), ratio(min))
    };

    let _ = writeln!(
        s,
        "### Steady: P processes running\n\n\
         | P | answered | busiest ÷ fair | least busy ÷ fair | kernel walk | per process | answered in ≥ 1 s | SYN resent | no answer in 5 s | failed | run |\n\
         |---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"
    );
    for r in m.steady {
        let t = &r.tally;
        let all: Vec<usize> = (0..r.p).collect();
        let (max, min) = t.ratios(&all);
        let g = Group::new(r.p, m.cpus);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s |",
            r.p,
            answered(t),
            ratio(max),
            ratio(min),
            kernel_walk(&g, t, &all),
            cells(t, &all),
            t.slow,
            t.resent,
            t.no_answer,
            t.failed,
            t.secs
        );
    }

    let _ = writeln!(
        s,
        "\n### One draining: the first process has had SIGHUP and holds one client\n\n\
         drainport clears a draining process's tags at SIGHUP and closes its listeners once the handshakes that were in flight at that moment have completed (its handshake window: one look, 50 ms, on an idle port; at most 4 s) and its queues are empty; it then serves its clients without being in the group. So the drain is measured twice. **In its window**: the drainer is stopped (SIGSTOP) right after its hangup line, its listeners open and untagged, for the whole run, then continued. **Retired**: its listeners closed (checked with `ss`), its client still held. Ratios are over the P-1 running processes.\n\n\
         | P | phase | answered | drainer got | queued on the drainer | busiest ÷ fair | least busy ÷ fair | kernel walk | running processes | kernel walk: start positions | answered in ≥ 1 s | SYN resent | no answer in 5 s | failed | run |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|"
    );
    for r in m.draining {
        let running: Vec<usize> = (1..r.p).collect();
        let mut g = Group::new(r.p, m.cpus);
        g.untag(0);
        let window = (
            "in its window",
            r.window.as_ref(),
            r.window_queued
                .map_or_else(|| "unknown".into(), |q| q.to_string()),
            "its listeners were closed before it could be stopped",
        );
        let mut retired_group = Group::new(r.p, m.cpus);
        retired_group.close(0);
        let retired = (
            "retired",
            r.retired.as_ref(),
            "closed".to_owned(),
            "its listeners did not close",
        );
        for ((phase, tally, queued, missing), g) in [(window, &g), (retired, &retired_group)] {
            let Some(t) = tally else {
                let _ = writeln!(
                    s,
                    "| {} | {phase} | {missing} | | | | | | | | | | | | |",
                    r.p
                );
                continue;
            };
            let (max, min) = t.ratios(&running);
            let _ = writeln!(
                s,
                "| {} | {phase} | {} | **{}** | {queued} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s |",
                r.p,
                answered(t),
                t.cell(0),
                ratio(max),
                ratio(min),
                kernel_walk(g, t, &running),
                cells(t, &running),
                g.slot_cells(r.p, &running),
                t.slow,
                t.resent,
                t.no_answer,
                t.failed,
                t.secs
            );
        }
    }

    let _ = writeln!(
        s,
        "\n### One full: the first process runs with `--max-clients {FULL_MAX_CLIENTS}` and holds {FULL_MAX_CLIENTS} clients\n\n\
         A full process takes its CPU tags off, as a draining one does, and puts them back when it can accept again, so the kernel gives its share to the process after it in the array. Before it did (cbbbf98), its listeners stayed tagged and kept their share, which no one served: 1,976, 970 and 525 connects at P = 2, 4 and 8 waited out the 5 s here. Ratios are over the P-1 others.\n\n\
         | P | full process served | queued on its listeners after the run | connects ÷ P | answered by the others | busiest ÷ fair | least busy ÷ fair | others | answered in ≥ 1 s | SYN resent | no answer in 5 s | failed | run |\n\
         |---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"
    );
    for r in m.full {
        let t = &r.tally;
        let others: Vec<usize> = (1..r.p).collect();
        let (max, min) = t.ratios(&others);
        let by_others: usize = others.iter().map(|&i| t.count(i)).sum();
        let _ = writeln!(
            s,
            "| {} | **{}** | {} | {} | {} | {} | {} | {} | {} | {} | **{}** | {} | {:.1} s |",
            r.p,
            t.cell(0),
            r.queued.map_or_else(|| "unknown".into(), |q| q.to_string()),
            m.connects / r.p,
            by_others,
            ratio(max),
            ratio(min),
            cells(t, &others),
            t.slow,
            t.resent,
            t.no_answer,
            t.failed,
            t.secs
        );
    }

    let _ = writeln!(
        s,
        "\n### Shared: P processes on one socket that the bench holds and passes to each (`LISTEN_FDS`)\n\n\
         As a socket unit shared through `Sockets=` does: one socket, one queue, every process accepting from it. Each watches it with `EPOLLEXCLUSIVE`, so a new connection wakes one process asleep in `epoll_wait` rather than all, and takes it out of its epoll set and adds it back every {} accepts, so that the first waiter in the socket's queue, whom epoll favours, changes (nginx's `ngx_reorder_accept_events`). Target: the busiest process within 1.5× its fair share. Two loads: {} client threads, where the processes are seldom asleep, and one thread per CPU, where they mostly are and epoll's favourite would show. Then the first process has had SIGHUP and holds a client of its own: it let go of the socket, so it gets nothing, and the ratios are over the P-1 others. A count per process is its total; CPU tags play no part. Each row has {} connects ({}× the others'), a second or so: at 4,000 the run is a few scheduler slices, and with 8 processes on 2 CPUs a process given two slices more took twice its share. Where the processes outnumber the CPUs and the clients keep them all busy (8 processes, 256 client threads, 2 CPUs), a process that has a CPU when connections arrive takes them from the one queue, whoever epoll woke, so the count follows the scheduler rather than epoll: that row varies from run to run (from 1.21 to 3.16 over five runs before this one).\n\n\
         | P | client threads | phase | answered | busiest ÷ fair | least busy ÷ fair | first process got | per process | answered in ≥ 1 s | SYN resent | no answer in 5 s | failed | run |\n\
         |---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
        REARM_EVERY,
        m.threads,
        num((m.connects * SHARED_RUNS) as f64, 0),
        SHARED_RUNS
    );
    for r in m.shared {
        let all: Vec<usize> = (0..r.p).collect();
        let rest: Vec<usize> = (1..r.p).collect();
        for (phase, t, which) in [
            ("all running", &r.tally, &all),
            ("first draining", &r.draining, &rest),
        ] {
            let (max, min) = t.ratios(which);
            let counts: Vec<String> = which.iter().map(|&i| t.count(i).to_string()).collect();
            let _ = writeln!(
                s,
                "| {} | {} | {phase} | {} | **{}** | {} | {} | {} | {} | {} | {} | {} | {:.1} s |",
                r.p,
                r.threads,
                answered(t),
                ratio(max),
                ratio(min),
                t.count(0),
                counts.join(", "),
                t.slow,
                t.resent,
                t.no_answer,
                t.failed,
                t.secs
            );
        }
    }

    let strays: usize = m
        .steady
        .iter()
        .map(|r| r.tally.stray)
        .chain(
            m.draining
                .iter()
                .flat_map(|r| [&r.window, &r.retired])
                .filter_map(|t| t.as_ref().map(|t| t.stray)),
        )
        .chain(m.full.iter().map(|r| r.tally.stray))
        .chain(
            m.shared
                .iter()
                .flat_map(|r| [r.tally.stray, r.draining.stray]),
        )
        .sum();
    let unclean: usize = m.steady.iter().map(|r| r.unclean).sum::<usize>()
        + m.draining.iter().map(|r| r.unclean).sum::<usize>()
        + m.full.iter().map(|r| r.unclean).sum::<usize>()
        + m.shared.iter().map(|r| r.unclean).sum::<usize>();
    let _ = writeln!(
        s,
        "\nReplies from a process not started by the bench: {strays}. Servers that did not exit 0 by themselves when stopped: {unclean}."
    );
    s
}

/// The counts of processes `which`, comma-separated.
fn cells(t: &Tally, which: &[usize]) -> String {
    let cells: Vec<String> = which.iter().map(|&i| t.cell(i)).collect();
    cells.join(", ")
}

/// The answered connects of a batch.
fn answered(t: &Tally) -> usize {
    (0..t.pids.len()).map(|i| t.count(i)).sum::<usize>() + t.stray
}
