//! `cargo bench --bench rolling`: scripts/rolling-restart under live load.
//!
//! Two drainport instances share a port. Short clients connect without
//! pause (connect, one line, check the reply, close), and long-lived clients
//! send a line every 100 ms and check every reply. Meanwhile the script
//! upgrades both instances 20 times. Any failed connection, wrong reply or
//! cut long-lived client is counted. The report goes to stdout and replaces
//! the marked section of docs/operations.md.
//!
//! The servers run as an unprivileged user (uid 65534, through `setpriv`,
//! from a copy of the binary that user can reach) when the benchmark runs
//! as root, as a systemd `User=` service would; `--as-root` keeps them root,
//! where the SYN filter is attached as well. The short clients are pinned
//! round-robin to every CPU, so SYNs arrive on each of them, and each one
//! reads its own `tcpi_total_retrans` after connecting: a SYN that was
//! dropped and sent again shows there, clock or no clock.
//!
//! Flags (after `--`): `--upgrades N` (default 20), `--as-root`,
//! `--no-write` (print only). Every loop is bounded: the load stops when
//! the upgrades are done, and every wait has a deadline.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use testbed::{report, tcp};

const BIN: &str = env!("CARGO_BIN_EXE_drainport");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const INSTANCES: usize = 2;
const SHORT_CLIENT_THREADS: usize = 4;
const LONG_CLIENTS_AT_START: usize = 4;
/// One more long-lived client joins after every this many upgrades, so that
/// several generations hold long sessions while they drain.
const LONG_CLIENT_EVERY: usize = 5;
const LONG_CLIENT_PERIOD: Duration = Duration::from_millis(100);
const PAUSE_BETWEEN_UPGRADES: Duration = Duration::from_millis(300);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Counters {
    short_ok: AtomicU64,
    short_failed: AtomicU64,
    /// Connects that took over 900 ms: their first SYN was dropped by a
    /// retiring listener and retransmitted to a sibling.
    slow_connects: AtomicU64,
    /// Connections whose SYN was sent more than once (`tcpi_total_retrans`).
    syn_retransmits: AtomicU64,
    long_lines: AtomicU64,
    long_cut: AtomicU64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let upgrades = args
        .iter()
        .position(|a| a == "--upgrades")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(20);
    let write = !args.iter().any(|a| a == "--no-write");
    // SAFETY: geteuid has no memory effects.
    let root = unsafe { libc::geteuid() } == 0;
    let unprivileged = !root || !args.iter().any(|a| a == "--as-root");

    let dir = std::env::temp_dir().join(format!("drainport-bench-rolling-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = Run::new(&dir, root && unprivileged);
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut pids = Vec::new();
    let started = Instant::now();
    upgrade(&run, addr, &mut pids);

    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads: Vec<_> = (0..SHORT_CLIENT_THREADS)
        .map(|i| {
            let (counters, stop) = (counters.clone(), stop.clone());
            thread::spawn(move || {
                // Unpinned, the thread still connects; only the spread suffers.
                let _ = tcp::pin_to(i % cpus);
                short_clients(addr, &counters, &stop)
            })
        })
        .collect();
    let mut long_clients = 0;
    let mut spawn_long = |threads: &mut Vec<_>| {
        let (counters, stop) = (counters.clone(), stop.clone());
        long_clients += 1;
        threads.push(thread::spawn(move || long_client(addr, &counters, &stop)));
    };
    for _ in 0..LONG_CLIENTS_AT_START {
        spawn_long(&mut threads);
    }
    for n in 1..=upgrades {
        thread::sleep(PAUSE_BETWEEN_UPGRADES);
        upgrade(&run, addr, &mut pids);
        if n % LONG_CLIENT_EVERY == 0 {
            spawn_long(&mut threads);
        }
    }
    thread::sleep(PAUSE_BETWEEN_UPGRADES);
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("client thread panicked");
    }
    let elapsed = started.elapsed();

    // Every old generation exits once its clients are gone; the current
    // ones drain at a HUP.
    let current: Vec<u32> = (1..=INSTANCES).filter_map(|i| read_pid(&dir, i)).collect();
    for &pid in &current {
        // SAFETY: kill(2) on a drainport process this benchmark started.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
    }
    let deadline = Instant::now() + EXIT_DEADLINE;
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let lingering: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    for &pid in &lingering {
        // SAFETY: as above; a process still alive after the deadline.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }

    let c = &counters;
    let load = |a: &AtomicU64| a.load(Ordering::SeqCst);
    let report = format!(
        "Measured {date} on {cores} cores, Linux {kernel}, with `cargo bench --bench rolling`:\n\n\
         | figure | value |\n|---|---|\n\
         | upgrades (each of {INSTANCES} instances) | {upgrades} |\n\
         | processes started | {started} |\n\
         | run time | {secs:.1} s |\n\
         | short connections answered | {ok} |\n\
         | short connections failed | **{failed}** |\n\
         | servers run as | {user} |\n\
         | `net.ipv4.tcp_migrate_req` | {migrate_req} |\n\
         | connections whose SYN was sent again | **{retransmitted}** |\n\
         | connects delayed by a dropped SYN (> 900 ms) | {slow} |\n\
         | long-lived clients (a line every 100 ms) | {long_clients} |\n\
         | long-lived lines answered | {lines} |\n\
         | long-lived clients cut | **{cut}** |\n\
         | processes still running {EXIT_DEADLINE:?} after the last HUP | {lingering} |\n",
        date = report::command_line("date", &["-u", "+%Y-%m-%d"]),
        cores = thread::available_parallelism().map_or(0, |n| n.get()),
        kernel = report::command_line("uname", &["-r"]),
        started = pids.len(),
        secs = elapsed.as_secs_f64(),
        ok = load(&c.short_ok),
        failed = load(&c.short_failed),
        slow = load(&c.slow_connects),
        user = if unprivileged {
            "an unprivileged user"
        } else {
            "root"
        },
        migrate_req = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
            .map_or_else(|_| "unknown".to_owned(), |v| v.trim().to_owned()),
        retransmitted = load(&c.syn_retransmits),
        lines = load(&c.long_lines),
        cut = load(&c.long_cut),
        lingering = lingering.len(),
    );
    println!("{report}");
    let passed = load(&c.short_failed) == 0
        && load(&c.long_cut) == 0
        && load(&c.syn_retransmits) == 0
        && lingering.is_empty();
    println!(
        "{}",
        if passed {
            "PASS: no client failed, waited or was cut"
        } else {
            "FAIL"
        }
    );
    if write {
        write_section(&Path::new(ROOT).join("docs/operations.md"), &report);
    }
    let _ = std::fs::remove_dir_all(&dir);
    if !passed {
        std::process::exit(1);
    }
}

/// Where the script keeps its pid files, and who runs it.
struct Run {
    dir: PathBuf,
    /// The binary, copied where the unprivileged user can reach it, when
    /// the servers run as that user.
    unprivileged_bin: Option<PathBuf>,
}

impl Run {
    fn new(dir: &Path, unprivileged: bool) -> Run {
        std::fs::create_dir_all(dir).expect("create the run directory");
        let unprivileged_bin = unprivileged.then(|| {
            let bin = dir.join("drainport");
            std::fs::copy(BIN, &bin).expect("copy the binary");
            let chown = Command::new("chown")
                .args(["-R", "65534:65534"])
                .arg(dir)
                .status()
                .expect("run chown");
            assert!(chown.success(), "chown {} failed", dir.display());
            let public = std::fs::Permissions::from_mode(0o755);
            std::fs::set_permissions(dir, public).expect("chmod the run directory");
            bin
        });
        Run {
            dir: dir.to_owned(),
            unprivileged_bin,
        }
    }

    fn command(&self, addr: SocketAddr) -> Command {
        let script = Path::new(ROOT).join("scripts/rolling-restart");
        let mut cmd = match &self.unprivileged_bin {
            Some(_) => {
                let mut cmd = Command::new("setpriv");
                cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                    .arg(script);
                cmd
            }
            None => Command::new(script),
        };
        let bin = self.unprivileged_bin.as_deref().unwrap_or(Path::new(BIN));
        cmd.args(["-n", &INSTANCES.to_string(), "-t", "10", "-d"])
            .arg(&self.dir)
            .arg("--")
            .arg(bin)
            .args(["-q", &addr.to_string()]);
        cmd
    }
}

/// Runs the script for all instances and records the new pids.
fn upgrade(run: &Run, addr: SocketAddr, pids: &mut Vec<u32>) {
    let dir = &run.dir;
    let out = run.command(addr).output().expect("run rolling-restart");
    assert!(out.status.success(), "rolling-restart failed: {out:?}");
    for i in 1..=INSTANCES {
        if let Some(pid) = read_pid(dir, i) {
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
    }
}

fn read_pid(dir: &Path, instance: usize) -> Option<u32> {
    let path: PathBuf = dir.join(format!("{instance}.pid"));
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat[stat.rfind(')').unwrap_or(0)..].starts_with(") Z"))
}

fn connect(addr: SocketAddr) -> std::io::Result<(TcpStream, BufReader<TcpStream>)> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let reader = BufReader::new(stream.try_clone()?);
    Ok((stream, reader))
}

/// Sends `line` and checks the echo and the `: from <pid>` suffix.
fn echo(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    line: &str,
) -> Result<(), String> {
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut echoed = String::new();
    reader.read_line(&mut echoed).map_err(|e| e.to_string())?;
    if echoed != format!("{line}\n") {
        return Err(format!("echoed {echoed:?}"));
    }
    let mut from = String::new();
    reader.read_line(&mut from).map_err(|e| e.to_string())?;
    if !from.starts_with(": from ") || from.trim_end()[7..].parse::<u32>().is_err() {
        return Err(format!("suffix {from:?}"));
    }
    Ok(())
}

fn short_clients(addr: SocketAddr, c: &Counters, stop: &AtomicBool) {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let t = Instant::now();
        let result = connect(addr)
            .map_err(|e| e.to_string())
            .and_then(|(mut s, mut r)| {
                if t.elapsed() > Duration::from_millis(900) {
                    c.slow_connects.fetch_add(1, Ordering::SeqCst);
                }
                if tcp::syn_retransmits(&s).is_ok_and(|n| n > 0) {
                    c.syn_retransmits.fetch_add(1, Ordering::SeqCst);
                }
                echo(&mut s, &mut r, &format!("short {n}"))
            });
        match result {
            Ok(()) => c.short_ok.fetch_add(1, Ordering::SeqCst),
            Err(e) => {
                eprintln!("short client failed: {e}");
                c.short_failed.fetch_add(1, Ordering::SeqCst)
            }
        };
    }
}

fn long_client(addr: SocketAddr, c: &Counters, stop: &AtomicBool) {
    let (mut stream, mut reader) = match connect(addr) {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("long-lived client could not connect: {e}");
            c.long_cut.fetch_add(1, Ordering::SeqCst);
            return;
        }
    };
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        if let Err(e) = echo(&mut stream, &mut reader, &format!("long {n}")) {
            eprintln!("long-lived client cut after {n} lines: {e}");
            c.long_cut.fetch_add(1, Ordering::SeqCst);
            return;
        }
        c.long_lines.fetch_add(1, Ordering::SeqCst);
        thread::sleep(LONG_CLIENT_PERIOD);
    }
}

/// Replaces the text between the rolling-benchmark markers; the guide
/// must already hold them.
fn write_section(path: &Path, report: &str) {
    const START: &str = "<!-- rolling-bench:start -->";
    const END: &str = "<!-- rolling-bench:end -->";
    match report::write_marked(path, START, END, report, |_, _| None) {
        Ok(()) => println!("report written to {}", path.display()),
        Err(why) => eprintln!("{why}"),
    }
}
