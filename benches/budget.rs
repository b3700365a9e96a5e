//! `cargo bench --bench budget`: memory under a flood of partial lines.
//!
//! A server with its default `--max-buffers` (or the one given) faces
//! 10,000 clients that each send 65,000 bytes of a line they never finish,
//! and never read. That is over 600 MiB of input for a budget of 128 MiB.
//! The attack is sustained: a client the server closes connects again and
//! starts over. The clients are spread over worker processes (this bench
//! re-executed with `--flood`), 2,500 each, each from its own source
//! address (127.0.0.2, 127.0.0.3, ...), as one process may hold 20,000
//! descriptors. Meanwhile a well-behaved client sends a line every 10 ms
//! and waits for its answer.
//!
//! The report prints, against their targets: the server's peak RSS
//! (`VmHWM`) beside the budget and the margin between them; what its
//! buffers held by its own count at the end; the well-behaved client's
//! round trips; and the log lines about the closes (at most one a second).
//!
//! The server runs on CPU 0 and every client on CPU 1. The report goes to
//! stdout and, unless `--no-write`, between the `budget` markers of
//! docs/benchmarks.md. Flags (after `--`): `--clients N` (default 10000),
//! `--secs S` of flood (default 20), `--max-buffers BYTES` (default: the
//! server's own), `--bin PATH` (another drainport binary, such as an older
//! build to compare; implies `--no-write`), `--no-write`. Every loop is
//! bounded in count and time, and every process the bench starts is
//! killed by pid when it is done.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use testbed::system::{self, Proc};
use testbed::{report, tcp};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

const BIN: &str = env!("CARGO_BIN_EXE_drainport");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The bound on every wait.
const DEADLINE: Duration = Duration::from_secs(60);
/// Bytes of the line each flooder sends and never finishes: under the
/// 64 KiB `--max-line`, so it is held, not refused.
const PARTIAL: usize = 65_000;
/// Flooders per worker process.
const PER_WORKER: usize = 2_500;
/// How often the server's RSS is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// The well-behaved client's pause between two lines.
const PROBE_PAUSE: Duration = Duration::from_millis(10);
/// What the peak RSS may exceed the budget by: the process itself (2.3
/// MiB before the flood), 10,000 slots (160 KiB), the index of who holds
/// what (16 bytes per client with buffers), one turn's growth past the
/// budget before it is checked (one client's limits, under 400 KiB), and
/// the allocator's slack.
const MARGIN_TARGET_MIB: f64 = 8.0;
/// The line a flooder gets when the server closes it for the budget.
const TOLD: &[u8] = b"error: the server's memory for client buffers is full";

struct Opts {
    clients: usize,
    secs: f64,
    max_buffers: Option<usize>,
    bin: String,
    write: bool,
    given: Vec<String>,
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    system::raise_fd_limit();
    if args.first().map(String::as_str) == Some("--flood") {
        flood_worker(&args[1..]);
        return;
    }
    let opts = match parse(&args) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("budget: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&opts) {
        eprintln!("budget: {e}");
        std::process::exit(1);
    }
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        clients: 10_000,
        secs: 20.0,
        max_buffers: None,
        bin: BIN.to_owned(),
        write: true,
        given: args.to_vec(),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |v: &str| format!("{flag} does not take {v:?}");
        match flag.as_str() {
            "--clients" => {
                let v = value()?;
                o.clients = v.parse().map_err(|_| bad(v))?;
            }
            "--secs" => {
                let v = value()?;
                o.secs = v.parse().map_err(|_| bad(v))?;
            }
            "--max-buffers" => {
                let v = value()?;
                o.max_buffers = Some(v.parse().map_err(|_| bad(v))?);
            }
            "--bin" => {
                o.bin = value()?.clone();
                o.write = false;
            }
            "--no-write" => o.write = false,
            other => eprintln!("budget: ignoring argument {other:?}"),
        }
    }
    if !(1..=19_000).contains(&o.clients) || !(1.0..=600.0).contains(&o.secs) {
        return Err("--clients must be from 1 to 19000 and --secs from 1 to 600".into());
    }
    Ok(o)
}

/// A server under test, and every stdout line it printed so far.
struct Server {
    proc: Proc,
    addr: SocketAddr,
    /// Every line seen so far.
    seen: Vec<String>,
}

impl Server {
    fn start(bin: &str, extra: &[String]) -> Result<Server, String> {
        let mut cmd = Command::new(bin);
        cmd.args(["-q", "127.0.0.1:0"]).args(extra);
        let proc = Proc::spawn("drainport", cmd, Some(0))?;
        let addr = proc.listening(Instant::now() + DEADLINE)?;
        Ok(Server {
            proc,
            addr,
            seen: Vec::new(),
        })
    }

    /// Waits for a line containing `needle`.
    fn expect(&mut self, needle: &str) -> Result<String, String> {
        let seen = &mut self.seen;
        self.proc
            .expect_seeing(needle, Instant::now() + DEADLINE, |line| {
                seen.push(line.to_owned())
            })
    }

    /// Takes every line that arrived so far.
    fn collect(&mut self) {
        self.seen.extend(self.proc.lines_so_far());
    }

    fn status(&mut self) -> Result<String, String> {
        self.proc.signal(libc::SIGUSR1)?;
        self.expect(&format!("Process {} status:", self.proc.pid))
    }

    fn stop(mut self) {
        let _ = self.proc.stop(libc::SIGHUP, Instant::now() + DEADLINE);
    }
}

/// A number from a status line.
fn status_field(line: &str, key: &str) -> Option<u64> {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))?
        .parse()
        .ok()
}

/// What the well-behaved client saw.
#[derive(Default)]
struct Probe {
    round_trips_us: Vec<u64>,
    errors: Vec<String>,
}

/// Sends a line every [`PROBE_PAUSE`] and times its answer, until `stop`.
fn probe(addr: SocketAddr, stop: Arc<AtomicBool>) -> Probe {
    let _ = tcp::pin_to(1);
    let mut seen = Probe::default();
    let mut stream = match std::net::TcpStream::connect_timeout(&addr, DEADLINE) {
        Ok(s) => s,
        Err(e) => {
            seen.errors.push(format!("connect: {e}"));
            return seen;
        }
    };
    let _ = stream.set_read_timeout(Some(DEADLINE));
    let _ = stream.set_nodelay(true);
    let start = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(3600) {
        n += 1;
        let line = format!("probe {n}\n");
        let t = Instant::now();
        match tcp::echo(&mut stream, line.as_bytes()) {
            Ok(()) => seen.round_trips_us.push(t.elapsed().as_micros() as u64),
            Err(e) => {
                seen.errors.push(format!("line {n}: {e}"));
                return seen;
            }
        }
        thread::sleep(PROBE_PAUSE);
    }
    seen
}

/// What the flood workers did, summed.
#[derive(Default)]
struct Flood {
    opened: u64,
    told: u64,
    bytes: u64,
    failed_connects: u64,
    open_at_end: u64,
}

fn run(o: &Opts) -> Result<(), String> {
    let budget = o.max_buffers.unwrap_or(drainport::DEFAULT_MAX_BUFFERS);
    let extra: Vec<String> = match o.max_buffers {
        Some(b) => vec!["--max-buffers".into(), b.to_string()],
        None => Vec::new(),
    };
    let mut server = Server::start(&o.bin, &extra)?;
    let addr = server.addr;
    {
        let mut s = std::net::TcpStream::connect_timeout(&addr, DEADLINE)
            .map_err(|e| format!("connect: {e}"))?;
        let _ = s.set_read_timeout(Some(DEADLINE));
        tcp::echo(&mut s, b"hello\n").map_err(|e| format!("first line: {e}"))?;
    }
    let base_kib = system::status_kb(server.proc.pid, "VmRSS")?;

    let stop = Arc::new(AtomicBool::new(false));
    let probe_thread = {
        let stop = stop.clone();
        thread::spawn(move || probe(addr, stop))
    };
    let workers = o.clients.div_ceil(PER_WORKER);
    let mut children = Vec::new();
    for w in 0..workers {
        let n = PER_WORKER.min(o.clients - w * PER_WORKER);
        let src = Ipv4Addr::new(127, 0, 0, 2 + w as u8);
        let mut cmd = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
        cmd.args([
            "--flood",
            &addr.to_string(),
            &src.to_string(),
            &n.to_string(),
            &o.secs.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
        // SAFETY: as for the server; nice(2) is async-signal-safe too. The
        // flood is niced so that, on the CPU it shares with the
        // well-behaved client, that client's round trips measure the
        // server, not the attackers' claim on the CPU (in earnest they
        // would be on other machines).
        unsafe {
            cmd.pre_exec(|| {
                libc::nice(10);
                tcp::pin_to(1)
            });
        }
        children.push(
            cmd.spawn()
                .map_err(|e| format!("start a flood worker: {e}"))?,
        );
    }
    let flood_start = Instant::now();
    let mut samples = 0u64;
    let mut rss_max = 0u64;
    while flood_start.elapsed().as_secs_f64() < o.secs {
        if let Ok(rss) = system::status_kb(server.proc.pid, "VmRSS") {
            rss_max = rss_max.max(rss);
            samples += 1;
        }
        server.collect();
        thread::sleep(SAMPLE_EVERY);
    }
    // The flood's last moment: what the server holds by its own count.
    let status = server.status()?;
    let hwm = system::status_kb(server.proc.pid, "VmHWM")?;
    let mut flood = Flood::default();
    for child in &mut children {
        // Each worker says what it did at the end of the flood, and holds
        // its clients until its stdin closes.
        let mut out = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut out);
        }
        for line in out.lines() {
            let f: Vec<u64> = line
                .split_whitespace()
                .filter_map(|w| w.split_once('=')?.1.parse().ok())
                .collect();
            if let [opened, told, bytes, failed, open] = f[..] {
                flood.opened += opened;
                flood.told += told;
                flood.bytes += bytes;
                flood.failed_connects += failed;
                flood.open_at_end += open;
            }
        }
    }
    for mut child in children {
        drop(child.stdin.take());
        let _ = child.wait();
    }
    stop.store(true, Ordering::Relaxed);
    let seen = probe_thread.join().map_err(|_| "the probe panicked")?;
    server.collect();
    let closes: Vec<&String> = server
        .seen
        .iter()
        .filter(|l| l.contains("is over its budget for client buffers"))
        .collect();
    let close_lines = closes.len();
    let first_close = closes.first().map(|l| l.to_string());
    let pid = server.proc.pid;
    server.stop();

    let report = render(&Rendered {
        o,
        budget,
        pid,
        base_kib,
        hwm,
        rss_max,
        samples,
        status: &status,
        flood: &flood,
        probe: &seen,
        close_lines,
        first_close,
    });
    print!("{report}");
    if o.write {
        let path = std::path::Path::new(ROOT).join("docs/benchmarks.md");
        report::write_section(
            &path,
            "budget",
            "Memory under a flood of partial lines",
            &report,
        )?;
        println!("\nreport written to {}", path.display());
    }
    Ok(())
}

struct Rendered<'a> {
    o: &'a Opts,
    budget: usize,
    pid: u32,
    base_kib: u64,
    hwm: u64,
    rss_max: u64,
    samples: u64,
    status: &'a str,
    flood: &'a Flood,
    probe: &'a Probe,
    close_lines: usize,
    first_close: Option<String>,
}

fn render(r: &Rendered<'_>) -> String {
    use std::fmt::Write as _;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let budget_mib = r.budget as f64 / (1 << 20) as f64;
    let margin = mib(r.hwm) - budget_mib;
    let held = status_field(r.status, "buffers");
    let evicted = status_field(r.status, "evicted");
    let mut rt = r.probe.round_trips_us.clone();
    rt.sort_unstable();
    let pct = |p: f64| -> f64 {
        if rt.is_empty() {
            return f64::NAN;
        }
        rt[((rt.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
    };
    let mark = |ok: bool| if ok { "met" } else { "MISSED" };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nWritten by `benches/budget.rs` between the `budget` markers; rerun it rather than editing this section.\n"
    );
    let _ = writeln!(
        s,
        "- Date: {}",
        report::command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    );
    let _ = writeln!(
        s,
        "- Command: `cargo bench --bench budget{}`",
        if r.o.given.is_empty() {
            String::new()
        } else {
            format!(" -- {}", r.o.given.join(" "))
        }
    );
    let _ = writeln!(
        s,
        "- Source: git {}",
        report::command_line("git", &["-C", ROOT, "rev-parse", "--short", "HEAD"])
    );
    let _ = writeln!(
        s,
        "- Machine: {} CPUs, Linux {}; server on CPU 0, every client on CPU 1",
        system::cpus(),
        report::command_line("uname", &["-r"])
    );
    let _ = writeln!(
        s,
        "- Flood: {} clients in {} worker processes (source addresses 127.0.0.2 on), each sending {PARTIAL} bytes of a line it never finishes and reading nothing but the server's last word; a client the server closes connects again and starts over. {:.0} s.",
        r.o.clients,
        r.o.clients.div_ceil(PER_WORKER),
        r.o.secs
    );
    let _ = writeln!(
        s,
        "- Well-behaved client: one line, then its answer, every {} ms, throughout the flood.\n",
        PROBE_PAUSE.as_millis()
    );
    let _ = writeln!(s, "| figure | value | target | result |");
    let _ = writeln!(s, "|---|---:|---|---|");
    let _ = writeln!(s, "| budget (`--max-buffers`) | {budget_mib:.1} MiB | | |");
    let _ = writeln!(
        s,
        "| server RSS before the flood | {:.1} MiB | | |",
        mib(r.base_kib)
    );
    let _ = writeln!(
        s,
        "| server peak RSS (VmHWM) | {:.1} MiB | budget + margin | |",
        mib(r.hwm)
    );
    let _ = writeln!(
        s,
        "| margin: peak RSS − budget | {margin:.1} MiB | ≤ {MARGIN_TARGET_MIB:.0} MiB | {} |",
        mark(margin <= MARGIN_TARGET_MIB)
    );
    let _ = writeln!(
        s,
        "| highest RSS sampled ({} samples, every {} ms) | {:.1} MiB | | |",
        r.samples,
        SAMPLE_EVERY.as_millis(),
        mib(r.rss_max)
    );
    let _ = writeln!(
        s,
        "| buffers held at the end, by the server's count (`buffers=`) | {} | ≤ budget | {} |",
        held.map_or("unknown".into(), |h| format!(
            "{:.1} MiB",
            h as f64 / (1 << 20) as f64
        )),
        mark(held.is_some_and(|h| h as usize <= r.budget))
    );
    let _ = writeln!(
        s,
        "| clients closed for the budget (`evicted=`) | {} | | |",
        evicted.map_or("unknown".into(), |e| e.to_string())
    );
    let _ = writeln!(
        s,
        "| flood connections opened / told why and closed / bytes sent | {} / {} / {:.0} MiB | | |",
        r.flood.opened,
        r.flood.told,
        r.flood.bytes as f64 / (1 << 20) as f64
    );
    let _ = writeln!(
        s,
        "| flood connections open at the end / connects that failed | {} / {} | | |",
        r.flood.open_at_end, r.flood.failed_connects
    );
    let _ = writeln!(
        s,
        "| well-behaved client: round trips / errors | {} / {} | answered throughout, no error | {} |",
        rt.len(),
        r.probe.errors.len(),
        mark(r.probe.errors.is_empty() && rt.len() as f64 > r.o.secs * 10.0)
    );
    let _ = writeln!(
        s,
        "| its round trip: median / p99 / max | {:.2} / {:.2} / {:.2} ms | | |",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    let per_sec = r.close_lines as f64 / r.o.secs;
    let _ = writeln!(
        s,
        "| log lines about the closes | {} ({per_sec:.2} a second) | ≤ 1 a second | {} |",
        r.close_lines,
        mark(per_sec <= 1.0 + 1.0 / r.o.secs)
    );
    if let Some(line) = &r.first_close {
        let _ = writeln!(s, "\nThe first of those lines:\n\n```text\n{line}\n```");
    }
    if let Some(e) = r.probe.errors.first() {
        let _ = writeln!(s, "\nThe well-behaved client's first error: {e}");
    }
    let _ = writeln!(
        s,
        "\nThe server's status line at the end of the flood (pid {}):\n\n```text\n{}\n```",
        r.pid, r.status
    );
    s
}

// ---------------------------------------------------------------- workers

/// One flooder's connection.
struct Flooder {
    stream: TcpStream,
    sent: usize,
    /// The first bytes the server sent: its last word, if it closed us.
    heard: Vec<u8>,
}

/// `--flood ADDR SRC N SECS`: keeps N clients from SRC flooding ADDR with
/// partial lines for SECS, connecting again when closed, then prints one
/// line of counts and holds its clients until its stdin closes.
fn flood_worker(args: &[String]) {
    let [addr, src, n, secs] = args else {
        eprintln!("budget: --flood ADDR SRC N SECS");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().expect("ADDR");
    let src: Ipv4Addr = src.parse().expect("SRC");
    let n: usize = n.parse().expect("N");
    let secs: f64 = secs.parse().expect("SECS");
    let chunk = vec![b'x'; PARTIAL];
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Option<Flooder>> = (0..n).map(|_| None).collect();
    let mut reopen: Vec<usize> = (0..n).collect();
    let (mut opened, mut told, mut bytes, mut failed) = (0u64, 0u64, 0u64, 0u64);
    let mut buf = vec![0u8; 4096];
    let start = Instant::now();
    let end = Duration::from_secs_f64(secs);
    while start.elapsed() < end {
        // Connect whoever needs it, a bounded number per round so that
        // reading keeps up.
        let mut retry = Vec::new();
        let batch: Vec<usize> = reopen.drain(..reopen.len().min(512)).collect();
        for i in batch {
            match system::connect_from(src, addr) {
                Ok(mut stream) => {
                    poll.registry()
                        .register(
                            &mut stream,
                            Token(i),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .expect("register");
                    conns[i] = Some(Flooder {
                        stream,
                        sent: 0,
                        heard: Vec::new(),
                    });
                    opened += 1;
                }
                Err(_) => {
                    failed += 1;
                    retry.push(i);
                }
            }
        }
        reopen.extend(retry);
        if poll
            .poll(&mut events, Some(Duration::from_millis(20)))
            .is_err()
        {
            continue;
        }
        for event in &events {
            let i = event.token().0;
            let Some(f) = conns[i].as_mut() else { continue };
            let mut closed = false;
            if event.is_writable() {
                while f.sent < PARTIAL {
                    match f.stream.write(&chunk[f.sent..]) {
                        Ok(k) => {
                            f.sent += k;
                            bytes += k as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            closed = true;
                            break;
                        }
                    }
                }
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                loop {
                    match f.stream.read(&mut buf) {
                        Ok(0) => {
                            closed = true;
                            break;
                        }
                        Ok(k) => {
                            if f.heard.len() < TOLD.len() {
                                f.heard.extend_from_slice(&buf[..k]);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            closed = true;
                            break;
                        }
                    }
                }
            }
            if closed {
                if f.heard.starts_with(TOLD) {
                    told += 1;
                }
                let mut f = conns[i].take().expect("checked");
                let _ = poll.registry().deregister(&mut f.stream);
                reopen.push(i);
            }
        }
    }
    let open = conns.iter().flatten().count();
    println!("opened={opened} told={told} bytes={bytes} failed={failed} open={open}");
    let _ = io::stdout().flush();
    let mut rest = Vec::new();
    let _ = io::stdin().read_to_end(&mut rest);
}
