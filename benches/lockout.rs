//! `cargo bench --bench lockout`: how long silent clients lock a process
//! that is out of descriptors out of service, with `--idle-timeout`.
//!
//! A server limited to 256 descriptors (`RLIMIT_NOFILE`, set before it
//! starts) runs with `--idle-timeout 3`. 300 clients connect and then
//! neither speak, read nor close: the process fills up and pauses
//! accepting, the rest wait in its backlog. Then a new client connects,
//! sends a line and waits for its answer. The time from its connect to
//! the answer is the lockout; the target is the idle timeout plus one
//! second (issue 14). Each run starts a fresh server; the report gives
//! every run, the median and the worst.
//!
//! The server runs on CPU 0 and the clients on CPU 1. The report goes to
//! stdout and, unless `--no-write`, between the `lockout` markers of
//! docs/benchmarks.md. Flags (after `--`): `--runs N` (default 5),
//! `--bin PATH` (another drainport binary, such as an older build to
//! compare; implies `--no-write`), `--no-write`. Every wait is bounded,
//! and every server is killed by pid if it does not exit.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};
use testbed::system::{self, Proc};
use testbed::{report, tcp};

const BIN: &str = env!("CARGO_BIN_EXE_drainport");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DEADLINE: Duration = Duration::from_secs(60);
/// The server's descriptor limit.
const NOFILE: libc::rlim_t = 256;
/// Clients that connect and say nothing: more than the limit lets in.
const SILENT: usize = 300;
/// `--idle-timeout`, in seconds.
const IDLE_SECS: u64 = 3;
/// The target: the idle timeout plus a second.
const TARGET: Duration = Duration::from_secs(IDLE_SECS + 1);

/// Starts a server under the descriptor limit, on CPU 0; returns it and
/// its address.
fn start(bin: &str) -> Result<(Proc, SocketAddr), String> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "-q",
        "--idle-timeout",
        &IDLE_SECS.to_string(),
        "127.0.0.1:0",
    ]);
    // SAFETY: pre_exec runs in the child before exec, and calls only
    // setrlimit, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: NOFILE,
                rlim_max: NOFILE,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Proc::spawn("drainport", cmd, Some(0))?;
    let addr = server.listening(Instant::now() + DEADLINE)?;
    Ok((server, addr))
}

/// One run: the lockout, and how many silent clients the process held
/// when it ran out.
fn run_once(bin: &str) -> Result<(Duration, usize), String> {
    let (mut server, addr) = start(bin)?;
    let silent = thread::spawn(move || -> Result<Vec<TcpStream>, String> {
        let _ = tcp::pin_to(1);
        (0..SILENT)
            .map(|_| {
                TcpStream::connect_timeout(&addr, DEADLINE).map_err(|e| format!("connect: {e}"))
            })
            .collect()
    })
    .join()
    .map_err(|_| "the silent clients' thread panicked")??;
    let paused = server.expect(
        "cannot accept (Too many open files",
        Instant::now() + DEADLINE,
    )?;
    let held = paused
        .split_once("pausing accept, ")
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or(0);
    let lockout = thread::spawn(move || -> Result<Duration, String> {
        let _ = tcp::pin_to(1);
        let start = Instant::now();
        let mut late = TcpStream::connect_timeout(&addr, DEADLINE)
            .map_err(|e| format!("the new client's connect: {e}"))?;
        late.set_read_timeout(Some(DEADLINE)).ok();
        tcp::echo(&mut late, b"let me in\n").map_err(|e| format!("the new client: {e}"))?;
        Ok(start.elapsed())
    })
    .join()
    .map_err(|_| "the new client's thread panicked")??;
    drop(silent);
    let _ = server.stop(libc::SIGHUP, Instant::now() + DEADLINE);
    Ok((lockout, held))
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut runs = 5usize;
    let mut bin = BIN.to_owned();
    let mut write = true;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--runs" => match it.next().and_then(|v| v.parse().ok()) {
                Some(n) if (1..=50).contains(&n) => runs = n,
                _ => fail("--runs takes a number from 1 to 50"),
            },
            "--bin" => {
                bin = it
                    .next()
                    .cloned()
                    .unwrap_or_else(|| fail("--bin needs a path"));
                write = false;
            }
            "--no-write" => write = false,
            other => eprintln!("lockout: ignoring argument {other:?}"),
        }
    }
    system::raise_fd_limit();
    let mut lockouts = Vec::new();
    let mut held = Vec::new();
    for i in 0..runs {
        match run_once(&bin) {
            Ok((lockout, h)) => {
                eprintln!("lockout: run {}: {:.2} s", i + 1, lockout.as_secs_f64());
                lockouts.push(lockout);
                held.push(h);
            }
            Err(e) => fail(&format!("run {}: {e}", i + 1)),
        }
    }
    let report = render(&args, &lockouts, &held);
    print!("{report}");
    if write {
        let path = std::path::Path::new(ROOT).join("docs/benchmarks.md");
        let result = report::write_section(&path, "lockout", "A descriptor lockout", &report);
        match result {
            Ok(()) => println!("\nreport written to {}", path.display()),
            Err(e) => fail(&e),
        }
    }
}

fn render(args: &[String], lockouts: &[Duration], held: &[usize]) -> String {
    use std::fmt::Write as _;
    let mut sorted = lockouts.to_vec();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let worst = sorted[sorted.len() - 1];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nWritten by `benches/lockout.rs` between the `lockout` markers; rerun it rather than editing this section.\n"
    );
    let _ = writeln!(
        s,
        "- Date: {}",
        report::command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    );
    let _ = writeln!(
        s,
        "- Command: `cargo bench --bench lockout{}`",
        if args.is_empty() {
            String::new()
        } else {
            format!(" -- {}", args.join(" "))
        }
    );
    let _ = writeln!(
        s,
        "- Source: git {}",
        report::command_line("git", &["-C", ROOT, "rev-parse", "--short", "HEAD"])
    );
    let _ = writeln!(
        s,
        "- Machine: Linux {}; server on CPU 0, clients on CPU 1",
        report::command_line("uname", &["-r"])
    );
    let _ = writeln!(
        s,
        "- Server: `drainport -q --idle-timeout {IDLE_SECS}` under a {NOFILE}-descriptor limit; {SILENT} clients connect and say nothing; it held {} of them when it ran out (per run: {:?}).",
        held.iter().min().copied().unwrap_or(0),
        held
    );
    let _ = writeln!(
        s,
        "- Lockout: from a new client's connect, right after the process reported it was out of descriptors, to its answer.\n"
    );
    let runs: Vec<String> = lockouts
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect();
    let _ = writeln!(s, "| figure | value | target | result |");
    let _ = writeln!(s, "|---|---:|---|---|");
    let _ = writeln!(s, "| lockout, each run (s) | {} | | |", runs.join(", "));
    let _ = writeln!(
        s,
        "| lockout, median (s) | {:.2} | ≤ {:.0} (idle timeout + 1 s) | {} |",
        median.as_secs_f64(),
        TARGET.as_secs_f64(),
        if median <= TARGET { "met" } else { "MISSED" }
    );
    let _ = writeln!(
        s,
        "| lockout, worst (s) | {:.2} | ≤ {:.0} | {} |",
        worst.as_secs_f64(),
        TARGET.as_secs_f64(),
        if worst <= TARGET { "met" } else { "MISSED" }
    );
    s
}

fn fail(why: &str) -> ! {
    eprintln!("lockout: {why}");
    std::process::exit(1);
}
