//! `cargo bench --bench instructions`: the user-space instructions drainport
//! executes per ping-pong request, beside a lean mio echo loop (the floor).
//!
//! CPU time per request moves by tens of percent from run to run on a
//! shared machine; the instructions a server executes in user space for the
//! same requests do not, so a change of a few percent in the hot path shows.
//! Each server runs under `valgrind --tool=cachegrind --cache-sim=no`, once
//! with no request and once with [`ROUNDS`] lock-step rounds over [`CONNS`]
//! connections (`benches/instructions/pingpong.py`, 64-byte lines); the
//! difference divided by the requests is the cost of one request, startup
//! and exit cancelled out. The kernel's share of the work (about 95 % of
//! the total) is not counted: this measures the server's own code.
//!
//! Three servers, each measured [`RUNS`] times (the median is reported):
//! the floor (`benches/instructions/mio-floor/`, a calibration prototype
//! with no drain logic, no deadlines and no protocol seam), drainport with
//! no timer configured, and drainport with `--idle-timeout 3600
//! --send-timeout 3600`. Goals: drainport at most [`GOAL_PLAIN`] times the
//! floor without timers, at most [`GOAL_TIMED`] times with them.
//!
//! Both are built twice, with the same profile each time so that the
//! comparison is of code, not of compiler settings: with drainport's
//! release profile (`lto = true`, `codegen-units = 1`, which the floor's
//! `Cargo.toml` repeats), and with cargo's default release profile (no LTO,
//! 16 codegen units), set through `CARGO_PROFILE_RELEASE_*`. The builds go
//! to `target/instructions/`.
//!
//! Needs valgrind (Debian package `valgrind`) and python3; without either it
//! prints `skipped: ...` and exits 0. The report goes to stdout and, unless
//! `--no-write`, between the `instructions` markers of docs/benchmarks.md.
//! Flags (after `--`): `--no-write`, `--rounds N`. Every wait has a deadline.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use testbed::report;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Lock-step rounds per measured run; each sends one line per connection.
const ROUNDS: usize = 20_000;
/// Connections, each with one line in flight.
const CONNS: usize = 2;
/// Measured runs per server; the base run (no request) is taken once.
const RUNS: usize = 3;
/// Drainport with no timer configured, at most this times the floor.
const GOAL_PLAIN: f64 = 1.05;
/// Drainport with idle and send timeouts armed, at most this times the floor.
const GOAL_TIMED: f64 = 1.15;
/// How long a server under valgrind may take to listen, or to exit.
const DEADLINE: Duration = Duration::from_secs(60);
const TIMED: [&str; 4] = ["--idle-timeout", "3600", "--send-timeout", "3600"];

/// The two ways both servers are built.
const PROFILES: [Profile; 2] = [
    Profile {
        name: "drainport's release profile (lto = true, codegen-units = 1)",
        dir: "release",
        env: &[],
    },
    Profile {
        name: "cargo's default release profile (no LTO, 16 codegen units)",
        dir: "default",
        env: &[
            ("CARGO_PROFILE_RELEASE_LTO", "false"),
            ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16"),
        ],
    },
];

struct Profile {
    name: &'static str,
    /// Its build directory under `target/instructions/`.
    dir: &'static str,
    /// What it changes in the release profile.
    env: &'static [(&'static str, &'static str)],
}

/// One profile's figures: instructions per request, median of the runs,
/// with every run.
struct Row {
    profile: &'static str,
    floor: Figure,
    plain: Figure,
    timed: Figure,
}

struct Figure {
    median: u64,
    runs: Vec<u64>,
}

type Res<T> = Result<T, String>;

fn main() {
    let mut write = true;
    let mut rounds = ROUNDS;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-write" => write = false,
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .expect("--rounds takes a positive count");
            }
            "--bench" => {}
            other => eprintln!("instructions: ignoring {other}"),
        }
    }
    for (tool, package) in [("valgrind", "valgrind"), ("python3", "python3")] {
        if !on_path(tool) {
            println!("skipped: instructions: {tool} is not installed (apt-get install {package})");
            return;
        }
    }
    let started = Instant::now();
    let mut rows = Vec::new();
    for profile in &PROFILES {
        match measure(profile, rounds) {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!("instructions: {e}");
                std::process::exit(1);
            }
        }
    }
    let report = report(&rows, rounds, started.elapsed());
    print!("{report}");
    if write {
        let path = Path::new(ROOT).join("docs/benchmarks.md");
        let result =
            report::write_section(&path, "instructions", "Instructions per request", &report);
        match result {
            Ok(()) => println!("\nreport written to {}", path.display()),
            Err(e) => eprintln!("instructions: {e}"),
        }
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Builds both servers with `profile` and measures the three.
fn measure(profile: &Profile, rounds: usize) -> Res<Row> {
    println!("building with {}", profile.name);
    let target = Path::new(ROOT)
        .join("target/instructions")
        .join(profile.dir);
    let drainport = build(
        &Path::new(ROOT).join("Cargo.toml"),
        &target,
        profile,
        "drainport",
    )?;
    let floor = build(
        &Path::new(ROOT).join("benches/instructions/mio-floor/Cargo.toml"),
        &target,
        profile,
        "mio-floor",
    )?;
    let figure = |bin: &Path, flags: &[&str], what: &str| -> Res<Figure> {
        let base = count(bin, flags, 0)?;
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            let full = count(bin, flags, rounds)?;
            let per = full.saturating_sub(base) / (rounds * CONNS) as u64;
            runs.push(per);
        }
        let mut sorted = runs.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        println!(
            "  {what}: {median} instructions per request (runs {runs:?}; {base} at startup and exit)"
        );
        Ok(Figure { median, runs })
    };
    Ok(Row {
        profile: profile.name,
        floor: figure(&floor, &["-q"], "the floor")?,
        plain: figure(&drainport, &["-q"], "drainport, no timer")?,
        timed: figure(
            &drainport,
            &[&["-q"][..], &TIMED[..]].concat(),
            "drainport, idle and send timeouts",
        )?,
    })
}

/// `cargo build --release` of the binary `bin` of `manifest` into `target`,
/// with `profile`'s changes; returns the binary's path.
fn build(manifest: &Path, target: &Path, profile: &Profile, bin: &str) -> Res<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--quiet",
        "--bin",
        bin,
        "--manifest-path",
    ])
    .arg(manifest)
    .arg("--target-dir")
    .arg(target);
    for (key, value) in profile.env {
        cmd.env(key, value);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo to build {bin}: {e}"))?;
    if !status.success() {
        return Err(format!("building {bin} failed ({status})"));
    }
    Ok(target.join("release").join(bin))
}

/// The instructions `bin FLAGS 127.0.0.1:0` executes in user space for
/// `rounds` ping-pong rounds, startup and exit included.
fn count(bin: &Path, flags: &[&str], rounds: usize) -> Res<u64> {
    let mut child = Command::new("valgrind")
        .args([
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
        ])
        .arg(bin)
        .args(flags)
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start valgrind: {e}"))?;
    let result = drive(&mut child, rounds);
    if result.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

/// Waits for the server under valgrind to listen, runs the rounds, stops
/// it with SIGHUP and reads valgrind's count.
fn drive(child: &mut Child, rounds: usize) -> Res<u64> {
    let (tx, rx) = mpsc::channel();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let started = Instant::now();
    let port = loop {
        let left = DEADLINE.saturating_sub(started.elapsed());
        let line = rx
            .recv_timeout(left)
            .map_err(|_| "the server did not say it was listening".to_owned())?;
        if let Some(addr) = line.split("listening on: ").nth(1) {
            break addr
                .rsplit(':')
                .next()
                .and_then(|p| p.trim().parse::<u16>().ok())
                .ok_or_else(|| format!("no port in {line:?}"))?;
        }
    };
    let script = Path::new(ROOT).join("benches/instructions/pingpong.py");
    let status = Command::new("python3")
        .arg(&script)
        .args([port.to_string(), rounds.to_string(), CONNS.to_string()])
        .status()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !status.success() {
        return Err(format!("the ping-pong client failed ({status})"));
    }
    // SAFETY: a signal to a child this process started and has not reaped.
    if unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) } != 0 {
        return Err(format!(
            "cannot signal the server: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut refs = None;
    loop {
        let left = DEADLINE.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                // `==pid== I   refs:      12,345,678`
                let words: Vec<&str> = line.split_whitespace().collect();
                if let [_, "I", "refs:", n] = words[..] {
                    refs = n.replace(',', "").parse::<u64>().ok();
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err("the server did not exit after SIGHUP".into());
            }
        }
    }
    let _ = child.wait();
    refs.ok_or_else(|| "valgrind printed no instruction count".into())
}

fn report(rows: &[Row], rounds: usize, took: Duration) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "Written by `benches/instructions.rs` between the `instructions` markers; rerun it rather than editing this section.\n"
    );
    let _ = writeln!(
        r,
        "- Date: {}",
        report::command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    );
    let _ = writeln!(r, "- Command: `cargo bench --bench instructions`");
    let _ = writeln!(
        r,
        "- Source: git {}",
        report::command_line("git", &["-C", ROOT, "rev-parse", "--short", "HEAD"])
    );
    let _ = writeln!(
        r,
        "- Tool: {}",
        report::command_line("valgrind", &["--version"])
    );
    let _ = writeln!(
        r,
        "- Load: {rounds} lock-step rounds of one 64-byte line on each of {CONNS} connections (`benches/instructions/pingpong.py`), less a run with none; median of {RUNS} runs; the bench took {:.0} s\n",
        took.as_secs_f64()
    );
    let _ = writeln!(
        r,
        "| build (both servers) | the floor | drainport, no timer | ÷ floor (goal ≤ {GOAL_PLAIN:.2}) | drainport, idle and send timeouts | ÷ floor (goal ≤ {GOAL_TIMED:.2}) |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|");
    for row in rows {
        let floor = row.floor.median as f64;
        let ratio = |f: &Figure, goal: f64| {
            let x = f.median as f64 / floor;
            let verdict = if x <= goal { "met" } else { "**missed**" };
            format!("{x:.3}, {verdict}")
        };
        let _ = writeln!(
            r,
            "| {} | {} | {} | {} | {} | {} |",
            row.profile,
            row.floor.median,
            row.plain.median,
            ratio(&row.plain, GOAL_PLAIN),
            row.timed.median,
            ratio(&row.timed, GOAL_TIMED),
        );
    }
    let _ = writeln!(r, "\nEvery run, in instructions per request:\n");
    for row in rows {
        let _ = writeln!(
            r,
            "- {}: floor {:?}, no timer {:?}, timeouts {:?}",
            row.profile, row.floor.runs, row.plain.runs, row.timed.runs
        );
    }
    let _ = writeln!(
        r,
        "\nThe goals compare like with like: the floor and drainport built with the same profile. drainport ships with the first (`Cargo.toml`); the second shows what the code costs without whole-program optimisation."
    );
    r
}
