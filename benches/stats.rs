//! `cargo bench --bench stats`: what asking a loaded process for its stats
//! costs it, and how soon it answers.
//!
//! Two measures, on one drainport (`-q`, on CPU 0); the bench's own
//! threads run on CPU 1.
//!
//! 1. **What one answer costs the process.** Idle, it is asked [`ASKS`]
//!    times in a row, as `drainport stats` asks (connect to its claim,
//!    `stats`, read the line). Its CPU time over them (from
//!    `/proc/<pid>/schedstat`, in nanoseconds, kernel time included)
//!    divided by the answers is the cost of one, and that times 100 the
//!    share of a core that asking every [`ASK_EVERY`] takes. Goal: at most
//!    [`GOAL_SHARE`] of a core.
//! 2. **A loaded process, asked or not.** [`CONNS`] ping-pong clients (one
//!    thread each, a 64-byte line at a time) keep it busy. The load runs
//!    in [`ROUNDS`] pairs of windows of [`WINDOW`]: in one of each pair
//!    nothing else happens, in the other the process is asked every
//!    [`ASK_EVERY`]. A third window of each round is the control: the
//!    same asks, from the same thread, go to a second, idle drainport on
//!    CPU 1. On a 2-CPU machine the asker shares CPU 1 with the clients,
//!    and fewer requests mean less batching and more server CPU per
//!    request, so the asker's own cost shows in the loaded process's
//!    figures whoever it asks; the control window carries that cost and
//!    leaves out only what answering costs the loaded process. The
//!    rounds rotate the windows' order, and each round gives its ratios
//!    of throughput and of the server's CPU per request (asked over
//!    control, and asked over quiet); the medians of those are the
//!    figures, since neighbouring windows share the machine's mood and
//!    distant ones on a shared machine do not; each median is printed
//!    with its 95 % interval, which is how finely this machine's noise
//!    lets the bench tell. Goals, asked over control:
//!    throughput at least [`GOAL_THROUGHPUT`] times, CPU per request at
//!    most [`GOAL_CPU`] times; every ask answered. The answers' times
//!    are reported, from the connect to the whole line: a busy process
//!    answers in the turn of its loop that accepts the request (the unit
//!    test `control::tests::a_stats_request_is_answered_with_the_loops_snapshot`
//!    shows it), so what they measure beyond that is the machine's
//!    scheduling of the two processes.
//!
//! Each run first waits (up to [`QUIET_WAIT`]) for the machine to be
//! quiet, and reports how busy it was.
//!
//! The report goes to stdout and, unless `--no-write`, between the `stats`
//! markers of docs/benchmarks.md. Flags (after `--`): `--rounds N`,
//! `--window SECS`, `--bin PATH` (another drainport, implies
//! `--no-write`), `--no-write`. Every wait is bounded, and the server is
//! stopped by pid.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use testbed::system::{self, Proc};
use testbed::{claim, report, tcp};

const BIN: &str = env!("CARGO_BIN_EXE_drainport");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DEADLINE: Duration = Duration::from_secs(60);
/// Ping-pong connections, one client thread each.
const CONNS: usize = 16;
/// How long each window of load lasts, by default: short, so that the
/// three windows of a round see the same machine.
const WINDOW: Duration = Duration::from_millis(250);
/// Rounds of three windows (quiet, asked, control), by default.
const ROUNDS: usize = 80;
/// Answers asked for in a row, to measure the cost of one.
const ASKS: usize = 2000;
/// Asking every [`ASK_EVERY`], at most this share of a core.
const GOAL_SHARE: f64 = 0.01;
/// How often the asker asks, in an asked window.
const ASK_EVERY: Duration = Duration::from_millis(10);
/// Throughput while asked, at least this times the control windows'.
const GOAL_THROUGHPUT: f64 = 0.98;
/// Server CPU per request while asked, at most this times the control
/// windows'.
const GOAL_CPU: f64 = 1.02;
/// How long the bench waits for the machine to fall quiet before it
/// starts, and what counts as quiet: the share of all CPUs busy.
const QUIET_WAIT: Duration = Duration::from_secs(60);
const QUIET_BELOW: f64 = 0.15;

struct Server {
    proc: Proc,
    addr: SocketAddr,
}

impl Server {
    /// A drainport `-q` on a port of its own, pinned to `cpu`.
    fn start(bin: &str, cpu: usize) -> Result<Server, String> {
        let mut cmd = Command::new(bin);
        cmd.args(["-q", "127.0.0.1:0"]);
        let proc = Proc::spawn("drainport", cmd, Some(cpu))?;
        let addr = proc.listening(Instant::now() + DEADLINE)?;
        Ok(Server { proc, addr })
    }

    /// The server's CPU time so far: `schedstat`'s first field, the time
    /// its one thread spent on a CPU.
    fn cpu(&self) -> Result<Duration, String> {
        system::sched_ns(self.proc.pid).map(Duration::from_nanos)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A second signal is a hard stop.
        let _ = self.proc.signal(libc::SIGHUP);
        thread::sleep(Duration::from_millis(50));
        let _ = self.proc.stop(libc::SIGHUP, Instant::now() + DEADLINE);
    }
}

/// One ping-pong client: a line, its answer, again, until `stop`.
fn client(addr: SocketAddr, done: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> Result<(), String> {
    let _ = tcp::pin_to(1);
    let mut conn = TcpStream::connect_timeout(&addr, DEADLINE).map_err(|e| e.to_string())?;
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(DEADLINE))
        .map_err(|e| e.to_string())?;
    let line = [&[b'x'; 63][..], b"\n"].concat();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        conn.write_all(&line).map_err(|e| format!("write: {e}"))?;
        // The echo and the `: from <pid>` line come in one write.
        let mut lines = 0;
        while lines < 2 {
            let n = conn.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("closed".into());
            }
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Asks once: connect, `stats`, the answer line. Returns how long it took.
fn ask(name: &[u8], pid: u32) -> Result<Duration, String> {
    let start = Instant::now();
    let mut conn = claim::connect(name).map_err(|e| format!("connect: {e}"))?;
    conn.write_all(b"stats\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.contains(&b'\n') {
        if start.elapsed() > DEADLINE {
            return Err("no answer".into());
        }
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let took = start.elapsed();
    let want = format!("stats pid={pid} ");
    if !got.starts_with(want.as_bytes()) {
        return Err(format!("answered {:?}", String::from_utf8_lossy(&got)));
    }
    Ok(took)
}

/// One window's figures.
#[derive(Debug, Clone, Copy)]
struct Window {
    requests: u64,
    cpu: Duration,
    secs: f64,
}

impl Window {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.secs
    }

    fn cpu_per_request(&self) -> Duration {
        self.cpu / self.requests.max(1) as u32
    }
}

/// Who a window asks.
#[derive(Clone, Copy, PartialEq)]
enum Asking {
    /// No one.
    Quiet,
    /// The loaded process.
    Loaded,
    /// The idle process on the bench's CPU: the control.
    Control,
}

/// Runs one window of `length` on the loaded `server`, asking the process
/// `asked` names (its claim and pid) every [`ASK_EVERY`]; the answers'
/// times go to `answers`.
fn window(
    server: &Server,
    done: &AtomicU64,
    length: Duration,
    asked: Option<(&[u8], u32)>,
    answers: &mut Vec<Duration>,
    failures: &mut Vec<String>,
) -> Result<Window, String> {
    let (r0, c0, t0) = (done.load(Ordering::Relaxed), server.cpu()?, Instant::now());
    let mut next = t0;
    while t0.elapsed() < length {
        match asked {
            Some((name, pid)) => {
                next += ASK_EVERY;
                match ask(name, pid) {
                    Ok(took) => answers.push(took),
                    Err(e) => failures.push(e),
                }
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    }
    let (r1, c1, secs) = (
        done.load(Ordering::Relaxed),
        server.cpu()?,
        t0.elapsed().as_secs_f64(),
    );
    Ok(Window {
        requests: r1 - r0,
        cpu: c1.saturating_sub(c0),
        secs,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Where the median of `values` lies, with 95 % confidence: the values at
/// the ranks n/2 ∓ 0.98·√n of the sorted list (the sign test's interval,
/// which assumes nothing of the values' distribution).
fn median_interval(values: &[f64]) -> (f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let half = 0.98 * (n as f64).sqrt();
    let lo = ((n as f64 / 2.0 - half).floor().max(0.0)) as usize;
    let hi = ((n as f64 / 2.0 + half).ceil() as usize).min(n - 1);
    (sorted[lo], sorted[hi])
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Run {
    /// How busy the machine was before the run, and during it (all CPUs).
    busy_before: f64,
    busy_during: f64,
    /// The server's CPU per answer, idle, and the answers' times then.
    per_answer: Duration,
    idle_answers: Vec<Duration>,
    quiet: Vec<Window>,
    asked: Vec<Window>,
    control: Vec<Window>,
    /// The loaded process's answers' times.
    answers: Vec<Duration>,
    failures: Vec<String>,
    bench: Duration,
}

fn run(bin: &str, rounds: usize, length: Duration) -> Result<Run, String> {
    let quiet_before = system::wait_quiet(QUIET_BELOW, QUIET_WAIT, Duration::from_secs(1));
    let begun = Instant::now();
    let begun_stat = system::cpu_jiffies();
    let server = Server::start(bin, 0)?;
    let name = claim::name(server.proc.pid, server.addr)?;
    let decoy = Server::start(bin, 1)?;
    let decoy_name = claim::name(decoy.proc.pid, decoy.addr)?;
    ask(&decoy_name, decoy.proc.pid).map_err(|e| format!("the control's first request: {e}"))?;
    let _ = tcp::pin_to(1);
    // The channel answers before anything is measured, or the bench says
    // why.
    ask(&name, server.proc.pid).map_err(|e| format!("the first stats request: {e}"))?;
    let before = server.cpu()?;
    let mut idle_answers = Vec::with_capacity(ASKS);
    for _ in 0..ASKS {
        idle_answers.push(ask(&name, server.proc.pid).map_err(|e| format!("an idle ask: {e}"))?);
    }
    let per_answer = server.cpu()?.saturating_sub(before) / ASKS as u32;
    idle_answers.sort();

    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CONNS)
        .map(|_| {
            let (done, stop) = (Arc::clone(&done), Arc::clone(&stop));
            let addr = server.addr;
            thread::spawn(move || client(addr, done, stop))
        })
        .collect();
    // Warm up: every client connected and answered.
    let warm = Instant::now();
    while done.load(Ordering::Relaxed) < (CONNS * 100) as u64 {
        if warm.elapsed() > DEADLINE {
            return Err("the clients did not get going".into());
        }
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(500));
    let (mut quiet, mut asked, mut control) = (Vec::new(), Vec::new(), Vec::new());
    let (mut answers, mut failures) = (Vec::new(), Vec::new());
    let (mut control_answers, mut control_failures) = (Vec::new(), Vec::new());
    let order = [Asking::Quiet, Asking::Loaded, Asking::Control];
    for round in 0..rounds {
        for k in 0..order.len() {
            let asking = order[(round + k) % order.len()];
            let (whom, times, fails) = match asking {
                Asking::Quiet => (None, &mut answers, &mut failures),
                Asking::Loaded => (
                    Some((&name[..], server.proc.pid)),
                    &mut answers,
                    &mut failures,
                ),
                Asking::Control => (
                    Some((&decoy_name[..], decoy.proc.pid)),
                    &mut control_answers,
                    &mut control_failures,
                ),
            };
            let w = window(&server, &done, length, whom, times, fails)?;
            match asking {
                Asking::Quiet => quiet.push(w),
                Asking::Loaded => asked.push(w),
                Asking::Control => control.push(w),
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().map_err(|_| "a client panicked")??;
    }
    drop(server);
    drop(decoy);
    if let Some(first) = control_failures.first() {
        return Err(format!(
            "{} asks of the control process failed; the first: {first}",
            control_failures.len()
        ));
    }
    answers.sort();
    let busy_during = system::busy_between(begun_stat, system::cpu_jiffies());
    Ok(Run {
        busy_before: quiet_before,
        busy_during,
        per_answer,
        idle_answers,
        quiet,
        asked,
        control,
        answers,
        failures,
        bench: begun.elapsed(),
    })
}

/// `lo to hi` of `values`.
fn range(values: &[f64]) -> String {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.3} to {hi:.3}")
}

/// Median, p99 and slowest of `sorted`, in µs.
fn times(sorted: &[Duration]) -> String {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    format!(
        "{:.0} / {:.0} / {:.0} µs",
        us(percentile(sorted, 0.5)),
        us(percentile(sorted, 0.99)),
        us(sorted.last().copied().unwrap_or_default())
    )
}

fn report(run: &Run, rounds: usize, length: Duration, bin: &str) -> (String, bool) {
    let rate = |ws: &[Window]| median(ws.iter().map(Window::rate).collect());
    let us_per_request = |w: &Window| w.cpu_per_request().as_secs_f64() * 1e6;
    let cpu = |ws: &[Window]| median(ws.iter().map(us_per_request).collect());
    let busy = |ws: &[Window]| median(ws.iter().map(|w| w.cpu.as_secs_f64() / w.secs).collect());
    // Each round's ratio of `over` to `under`, of throughput and of CPU
    // per request.
    let ratios = |over: &[Window], under: &[Window]| -> (Vec<f64>, Vec<f64>) {
        over.iter()
            .zip(under)
            .map(|(o, u)| (o.rate() / u.rate(), us_per_request(o) / us_per_request(u)))
            .unzip()
    };
    let (rate_ratios, cpu_ratios) = ratios(&run.asked, &run.control);
    let (rate_vs_quiet, cpu_vs_quiet) = ratios(&run.asked, &run.quiet);
    let (control_rate, control_cpu) = ratios(&run.control, &run.quiet);
    let throughput = median(rate_ratios.clone());
    let cpu_ratio = median(cpu_ratios.clone());
    let interval = |values: &[f64]| {
        let (lo, hi) = median_interval(values);
        format!("{lo:.3} to {hi:.3}")
    };
    let row = |what: &str, rates: &[f64], cpus: &[f64]| {
        format!(
            "| {what} | {:.3} ({}) | {:.3} ({}) |",
            median(rates.to_vec()),
            range(rates),
            median(cpus.to_vec()),
            range(cpus)
        )
    };
    let share = run.per_answer.as_secs_f64() / ASK_EVERY.as_secs_f64();
    let asks = run.answers.len() + run.failures.len();
    let met = |ok: bool| if ok { "met" } else { "**missed**" };
    let ok_share = share <= GOAL_SHARE;
    let ok_rate = throughput >= GOAL_THROUGHPUT;
    let ok_cpu = cpu_ratio <= GOAL_CPU;
    let ok_answers = run.failures.is_empty();
    let lines = [
        "Written by `benches/stats.rs` between the `stats` markers; rerun it rather than editing this section.\n".to_owned(),
        format!("- Date: {}", report::command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])),
        "- Command: `cargo bench --bench stats`".to_owned(),
        format!(
            "- Source: git {}",
            report::command_line("git", &["-C", ROOT, "rev-parse", "--short", "HEAD"])
        ),
        format!(
            "- Machine: {} CPUs, {}",
            report::command_line("nproc", &["--all"]),
            report::command_line("uname", &["-sr"])
        ),
        format!(
            "- Load: drainport `-q` on CPU 0 ({}); idle, asked {ASKS} times in a row; then {CONNS} ping-pong clients (64-byte lines, one thread each) on CPU 1, in {rounds} rounds of three {:.1} s windows, in turn first: quiet; asked, a `stats` request every {} ms over the control channel, as `drainport stats` asks, from CPU 1; and the control, the same asks of a second, idle drainport on CPU 1; the bench took {:.0} s",
            if bin == BIN { "this build" } else { bin },
            length.as_secs_f64(),
            ASK_EVERY.as_millis(),
            run.bench.as_secs_f64(),
        ),
        format!(
            "- The machine (both CPUs, other users included): {:.0} % busy just before, {:.0} % during the run, of which this bench's load is most\n",
            run.busy_before * 100.0,
            run.busy_during * 100.0
        ),
        "| one answer, on the idle process | | goal |".to_owned(),
        "|---|---:|---|".to_owned(),
        format!(
            "| server CPU per answer (user and kernel) | {:.1} µs | |",
            run.per_answer.as_secs_f64() * 1e6
        ),
        format!(
            "| share of a core, asked every {} ms | {:.3} % | ≤ {} %, {} |",
            ASK_EVERY.as_millis(),
            share * 100.0,
            GOAL_SHARE * 100.0,
            met(ok_share)
        ),
        format!(
            "| answer time (connect to whole line): median / p99 / slowest | {} | |\n",
            times(&run.idle_answers)
        ),
        "| the loaded process | quiet | asked every 10 ms | control: the other asked | asked ÷ control: median of rounds (its 95 % interval; all rounds) | goal |".to_owned(),
        "|---|---:|---:|---:|---:|---|".to_owned(),
        format!(
            "| requests per second (median of windows) | {:.0} | {:.0} | {:.0} | {throughput:.3} ({}; {}) | ≥ {GOAL_THROUGHPUT}, {} |",
            rate(&run.quiet),
            rate(&run.asked),
            rate(&run.control),
            interval(&rate_ratios),
            range(&rate_ratios),
            met(ok_rate)
        ),
        format!(
            "| server CPU per request, µs (median of windows) | {:.3} | {:.3} | {:.3} | {cpu_ratio:.3} ({}; {}) | ≤ {GOAL_CPU}, {} |",
            cpu(&run.quiet),
            cpu(&run.asked),
            cpu(&run.control),
            interval(&cpu_ratios),
            range(&cpu_ratios),
            met(ok_cpu)
        ),
        format!(
            "| server CPU busy, share of a core (median) | {:.2} | {:.2} | {:.2} | | |",
            busy(&run.quiet),
            busy(&run.asked),
            busy(&run.control)
        ),
        format!(
            "| stats answers: asked / answered | | {asks} / {} | | | all, {} |",
            run.answers.len(),
            met(ok_answers)
        ),
        format!(
            "| answer time (connect to whole line): median / p99 / slowest | | {} | | | |\n",
            times(&run.answers),
        ),
        "What the asker's own work costs the clients beside it shows against the quiet windows, median of rounds (range):\n".to_owned(),
        "| ratio | requests per second | server CPU per request |".to_owned(),
        "|---|---:|---:|".to_owned(),
        row("asked ÷ quiet", &rate_vs_quiet, &cpu_vs_quiet),
        row("control ÷ quiet", &control_rate, &control_cpu) + "\n",
    ];
    let mut out = lines.join("\n") + "\n";
    let list = |ws: &[Window]| {
        ws.iter()
            .map(|w| format!("{:.0}/s {:.3} µs", w.rate(), us_per_request(w)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out += &format!(
        "Every window, requests per second and server CPU per request: quiet [{}]; asked [{}]; control [{}].\n",
        list(&run.quiet),
        list(&run.asked),
        list(&run.control)
    );
    if let Some(first) = run.failures.first() {
        out += &format!("\n{} asks failed; the first: {first}\n", run.failures.len());
    }
    (out, ok_share && ok_rate && ok_cpu && ok_answers)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut rounds = ROUNDS;
    let mut length = WINDOW;
    let mut bin = BIN.to_owned();
    let mut write = true;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--rounds" => match it.next().and_then(|v| v.parse().ok()) {
                Some(n) if n > 0 => rounds = n,
                _ => fail("--rounds takes a whole number from 1"),
            },
            "--window" => match it.next().and_then(|v| v.parse::<f64>().ok()) {
                Some(s) if s > 0.0 && s < 3600.0 => length = Duration::from_secs_f64(s),
                _ => fail("--window takes seconds, more than 0"),
            },
            "--bin" => match it.next() {
                Some(path) => {
                    bin = path.clone();
                    write = false;
                }
                None => fail("--bin takes a path"),
            },
            "--no-write" => write = false,
            other => fail(&format!("unknown flag {other}")),
        }
    }
    let run = match run(&bin, rounds, length) {
        Ok(run) => run,
        Err(e) => fail(&e),
    };
    let (text, met) = report(&run, rounds, length, &bin);
    print!("{text}");
    if write {
        let path = std::path::Path::new(ROOT).join("docs/benchmarks.md");
        let result = report::write_section(
            &path,
            "stats",
            "Asking a loaded process for its stats",
            &text,
        );
        match result {
            Ok(()) => println!("\nreport written to {}", path.display()),
            Err(e) => fail(&e),
        }
    }
    if !met {
        eprintln!("stats: a goal was missed");
    }
}

fn fail(why: &str) -> ! {
    eprintln!("stats: {why}");
    std::process::exit(1);
}
