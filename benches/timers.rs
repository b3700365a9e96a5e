//! `cargo bench --bench timers`: what per-connection deadlines cost.
//!
//! The same crowd of idle clients is held by a server without timers and
//! by one with `--idle-timeout 3600 --send-timeout 3600`, and the report
//! puts them side by side:
//!
//! 1. **Memory.** VmRSS of a fresh server, then with the crowd connected
//!    (each client sends one line and reads its reply, so every one was
//!    admitted and its timer armed): bytes per idle connection.
//! 2. **Wakeups while idle.** `perf stat -e syscalls:sys_enter_epoll_wait`
//!    on the server for 10 s with the crowd connected and nothing sent:
//!    poll wakeups per second.
//! 3. **Ping-pong CPU beside the crowd.** 50 clients with one line in
//!    flight each for 3 s; server CPU (utime + stime) per request. The two
//!    servers take turns, three runs each, and the medians are compared.
//! 4. **A mass expiry.** A server with `--idle-timeout 2` gets the whole
//!    crowd at once, so its deadlines fall within the time the connects
//!    took; a probe client keeps one line in flight throughout, and the
//!    longest round trip it sees while the crowd is closed bounds the
//!    longest turn of the loop. Every idle client must get its timeout
//!    line and then EOF.
//!
//! The server runs on CPU 0 and the clients on CPU 1. The report goes to
//! stdout and, unless `--no-write`, between the `timers` markers of
//! docs/benchmarks.md. Flags (after `--`): `--idle N` (default 15000),
//! `--no-write`. Every loop is bounded in count and time.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use testbed::system::{self, Proc};
use testbed::{report, tcp};

const BIN: &str = env!("CARGO_BIN_EXE_drainport");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DEADLINE: Duration = Duration::from_secs(60);
const PING_CLIENTS: usize = 50;
const PING_SECS: u64 = 3;
const RUNS: usize = 3;
const IDLE_WATCH: Duration = Duration::from_secs(10);
const TIMED: [&str; 4] = ["--idle-timeout", "3600", "--send-timeout", "3600"];

struct Server {
    proc: Proc,
    addr: SocketAddr,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args(["-q", "127.0.0.1:0"]).args(extra);
        let proc = Proc::spawn("drainport", cmd, Some(0)).expect("start drainport");
        let addr = proc
            .listening(Instant::now() + DEADLINE)
            .expect("drainport said it listens");
        Server { proc, addr }
    }

    fn rss_kib(&self) -> u64 {
        system::status_kb(self.proc.pid, "VmRSS").unwrap()
    }

    /// utime + stime in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let t = system::CpuTimes::read(self.proc.pid).unwrap();
        t.utime + t.stime
    }

    fn stop(mut self) {
        let _ = self.proc.stop(libc::SIGHUP, Instant::now() + DEADLINE);
    }
}

/// Opens `n` clients from CPU 1; with `probe`, each sends a line and reads
/// its reply.
fn crowd(addr: SocketAddr, n: usize, probe: bool) -> Vec<TcpStream> {
    let handle = thread::spawn(move || {
        tcp::pin_to(1).expect("pin the clients");
        (0..n)
            .map(|_| {
                let mut s = TcpStream::connect_timeout(&addr, DEADLINE).expect("connect");
                s.set_read_timeout(Some(DEADLINE)).unwrap();
                if probe {
                    tcp::echo(&mut s, b"probe\n").expect("probe reply");
                }
                s
            })
            .collect()
    });
    handle.join().expect("crowd thread")
}

/// Poll wakeups per second of `pid` over `IDLE_WATCH`, from perf.
fn wakeups_per_sec(pid: u32) -> Option<f64> {
    let out = Command::new("perf")
        .args([
            "stat",
            "-x,",
            "-e",
            "syscalls:sys_enter_epoll_wait",
            "-p",
            &pid.to_string(),
            "--",
            "sleep",
            &IDLE_WATCH.as_secs().to_string(),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let count: f64 = text
        .lines()
        .find(|l| l.contains("sys_enter_epoll_wait"))?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()?;
    Some(count / IDLE_WATCH.as_secs_f64())
}

/// Server CPU per request, in µs, for `PING_CLIENTS` clients ping-ponging
/// for `PING_SECS`.
fn ping_pong(server: &Server) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let addr = server.addr;
    let threads: Vec<_> = (0..PING_CLIENTS)
        .map(|_| {
            let (stop, done) = (stop.clone(), done.clone());
            thread::spawn(move || {
                tcp::pin_to(1).expect("pin a client");
                let mut s = TcpStream::connect_timeout(&addr, DEADLINE).expect("connect");
                s.set_read_timeout(Some(DEADLINE)).unwrap();
                s.set_nodelay(true).unwrap();
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) && start.elapsed() < DEADLINE {
                    tcp::echo(&mut s, b"ping\n").expect("ping reply");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Warm up, then measure a window.
    thread::sleep(Duration::from_millis(300));
    let (ticks0, done0) = (server.cpu_ticks(), done.load(Ordering::Relaxed));
    thread::sleep(Duration::from_secs(PING_SECS));
    let (ticks1, done1) = (server.cpu_ticks(), done.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("ping thread");
    }
    let cpu_us = (ticks1 - ticks0) as f64 / system::clk_tck() as f64 * 1e6;
    cpu_us / (done1 - done0).max(1) as f64
}

struct Held {
    label: &'static str,
    bytes_per_conn: f64,
    wakeups: Option<f64>,
    cpu_us: Vec<f64>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The mass expiry: returns (connects took, longest probe round trip during
/// the expiry, closed with the line, other endings).
fn mass_expiry(n: usize) -> (Duration, Duration, usize, usize) {
    let server = Server::start(&["--idle-timeout", "2"]);
    let addr = server.addr;
    // The probe keeps a line in flight, so it never idles out.
    let stop = Arc::new(AtomicBool::new(false));
    let worst_us = Arc::new(AtomicU64::new(0));
    let probe = {
        let (stop, worst_us) = (stop.clone(), worst_us.clone());
        thread::spawn(move || {
            tcp::pin_to(1).expect("pin the probe");
            let mut s = TcpStream::connect_timeout(&addr, DEADLINE).expect("connect");
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            s.set_nodelay(true).unwrap();
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < DEADLINE {
                let t = Instant::now();
                tcp::echo(&mut s, b"probe\n").expect("probe reply");
                worst_us.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let t = Instant::now();
    let mut clients = crowd(addr, n, false);
    let connects = t.elapsed();
    // Only the expiry counts: the connects above were a storm of their own.
    worst_us.store(0, Ordering::Relaxed);
    let (mut with_line, mut other) = (0, 0);
    for s in &mut clients {
        let mut got = Vec::new();
        let ended = s.read_to_end(&mut got);
        if ended.is_ok() && got.starts_with(b"error: idle for") {
            with_line += 1;
        } else {
            other += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    probe.join().expect("probe thread");
    server.stop();
    (
        connects,
        Duration::from_micros(worst_us.load(Ordering::Relaxed)),
        with_line,
        other,
    )
}

fn main() {
    // cargo passes `--bench` to a bench without the test harness.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let idle = args
        .iter()
        .position(|a| a == "--idle")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(15_000);
    let write = !args.iter().any(|a| a == "--no-write");
    system::raise_fd_limit();

    if let Some(i) = args.iter().position(|a| a == "--hold") {
        // A worker: holds a crowd until its stdin closes. Each crowd lives in
        // a process of its own, as two crowds would pass one process's
        // descriptor limit.
        let addr: SocketAddr = args[i + 1].parse().expect("--hold ADDR");
        let clients = crowd(addr, idle, true);
        println!("ready {}", clients.len());
        let mut rest = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut rest);
        return;
    }

    let mut held = Vec::new();
    let mut servers = Vec::new();
    for (label, extra) in [
        ("no timers", &[][..]),
        ("idle and send timeouts", &TIMED[..]),
    ] {
        let server = Server::start(extra);
        let before = server.rss_kib();
        let clients = hold(server.addr, idle);
        let after = server.rss_kib();
        let wakeups = wakeups_per_sec(server.proc.pid);
        held.push(Held {
            label,
            bytes_per_conn: (after.saturating_sub(before) * 1024) as f64 / idle as f64,
            wakeups,
            cpu_us: Vec::new(),
        });
        servers.push((server, clients));
    }
    for _ in 0..RUNS {
        for (i, (server, _)) in servers.iter().enumerate() {
            held[i].cpu_us.push(ping_pong(server));
        }
    }
    for (server, mut clients) in servers {
        drop(clients.stdin.take());
        let _ = clients.wait();
        server.stop();
    }
    let (connects, worst, with_line, other) = mass_expiry(idle);

    let mut r = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        r,
        "\nWritten by `benches/timers.rs` between the `timers` markers; rerun it rather than editing this section.\n"
    );
    let _ = writeln!(
        r,
        "- Date: {}",
        report::command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    );
    let _ = writeln!(
        r,
        "- Command: `cargo bench --bench timers{}`",
        if args.is_empty() {
            String::new()
        } else {
            format!(" -- {}", args.join(" "))
        }
    );
    let _ = writeln!(
        r,
        "- Machine: {} CPUs, Linux {}; server on CPU 0, clients on CPU 1",
        system::cpus(),
        report::command_line("uname", &["-r"])
    );
    let _ = writeln!(
        r,
        "- {idle} idle clients; ping-pong: {PING_CLIENTS} clients, one line in flight each, {PING_SECS} s windows, {RUNS} runs per server taken in turns\n"
    );
    let _ = writeln!(
        r,
        "| server | RSS per idle connection (bytes) | poll wakeups/s while idle | ping-pong server CPU per request (µs, median) | runs |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---|");
    for h in &mut held {
        let runs: Vec<String> = h.cpu_us.iter().map(|v| format!("{v:.2}")).collect();
        let wake = h
            .wakeups
            .map_or("perf unavailable".into(), |w| format!("{w:.1}"));
        let m = median(&mut h.cpu_us.clone());
        let _ = writeln!(
            r,
            "| {} | {:.1} | {wake} | {m:.2} | {} |",
            h.label,
            h.bytes_per_conn,
            runs.join(", ")
        );
    }
    let base = median(&mut held[0].cpu_us.clone());
    let timed = median(&mut held[1].cpu_us.clone());
    let _ = writeln!(
        r,
        "\nWith timers, ping-pong CPU per request is {:+.1} % of the figure without (target: within 5 %).\n",
        (timed / base - 1.0) * 100.0
    );
    let _ = writeln!(
        r,
        "**A mass expiry.** {idle} clients connected in {:.2} s to a server with `--idle-timeout 2`, so their deadlines fell within that span. {with_line} got the timeout line and then EOF, {other} ended otherwise. The longest round trip of a probe client that kept a line in flight while they were closed: {:.1} ms, an upper bound on the loop's longest turn.",
        connects.as_secs_f64(),
        worst.as_secs_f64() * 1e3
    );
    print!("{r}");
    if write {
        let path = std::path::Path::new(ROOT).join("docs/benchmarks.md");
        let result = report::write_section(&path, "timers", "Timers", &r);
        match result {
            Ok(()) => println!("\nreport written to {}", path.display()),
            Err(e) => eprintln!("timers: {e}"),
        }
    }
}

/// Starts a worker that holds `n` idle clients of `addr`, and waits until
/// it has them all.
fn hold(addr: SocketAddr, n: usize) -> Child {
    let mut worker = Command::new(std::env::current_exe().expect("this bench"))
        .args(["--hold", &addr.to_string(), "--idle", &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start a crowd worker");
    let mut line = String::new();
    BufReader::new(worker.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("the worker's ready line");
    assert!(line.starts_with("ready"), "worker said {line:?}");
    worker
}
