//! Load benchmark for drainport: `cargo bench --bench load [-- FLAGS]`.
//!
//! It starts the release binary itself, drives it over loopback with client
//! worker processes (this binary re-executed with `DRAINPORT_LOAD_WORKER`
//! set), pins the server to CPU 0 and the clients to CPU 1, prints a table
//! of every figure against its target and writes it to its own section of
//! `docs/benchmarks.md` (between `<!-- load:start -->` and
//! `<!-- load:end -->`; the rest of the file is left alone). Each figure is
//! the median of several runs.
//!
//! Scenarios: 1 idle memory, 2 ping-pong, 3 ping-pong beside the idle crowd,
//! 4 pipelined, 5 syscalls per request (needs `perf`), 6 churn, 7 drain,
//! 8 side by side with Redis (needs `redis-server` on the PATH; install it
//! with `apt-get install redis-server`).
//!
//! Flags (after `--`):
//!
//! ```text
//! --quick              3 runs of 1 s, 2000 idle and 2000 drain clients; no report file
//! --runs N             runs per figure, at least 3 [default: 7]
//! --secs S             measured seconds per load run [default: 4]
//! --warmup S           warm-up seconds before each measured window [default: 0.5]
//! --idle N             idle connections in scenarios 1 and 3 [default: 15000]
//! --drain-clients N    clients held at SIGHUP in scenario 7 [default: 10000]
//! --only LIST          comma-separated scenarios to run, by number or name:
//!                      idle, pingpong, crowd, pipeline, syscalls, churn, drain,
//!                      redis (8 also runs 1, 2 and 4 on drainport)
//! --no-redis           skip the Redis comparison
//! --write | --no-write write the report file or not [default: write unless
//!                      --quick or --only is given]
//! --out PATH           report file [default: docs/benchmarks.md]
//! ```
//!
//! Unknown arguments (cargo passes `--bench`) are ignored with a note.
//! Every wait has a deadline and every process the bench starts (servers,
//! workers, perf) is killed by pid when it is done or if the bench fails.

mod client;
mod driver;
mod report;

use std::path::PathBuf;
use std::time::Instant;
use testbed::system;

use driver::{Cfg, Plan};
use report::{Meta, Stats};
use system::Res;

const SCENARIOS: [&str; 9] = [
    "", "idle", "pingpong", "crowd", "pipeline", "syscalls", "churn", "drain", "redis",
];

struct Opts {
    runs: usize,
    secs: f64,
    warm: f64,
    idle: usize,
    drain_clients: usize,
    sel: [bool; 9],
    only: bool,
    quick: bool,
    no_redis: bool,
    write: Option<bool>,
    out: PathBuf,
    /// The arguments as given, for the report's command line.
    given: Vec<String>,
}

fn parse_args() -> Res<Opts> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut o = Opts {
        runs: 7,
        secs: 4.0,
        warm: 0.5,
        idle: 15_000,
        drain_clients: 10_000,
        sel: [true; 9],
        only: false,
        quick: false,
        no_redis: false,
        write: None,
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md"),
        given: Vec::new(),
    };
    o.sel[0] = false;
    // Sizes set explicitly win over --quick, wherever they stand.
    let mut explicit: Vec<(String, String)> = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let takes_value = [
            "--runs",
            "--secs",
            "--warmup",
            "--idle",
            "--drain-clients",
            "--only",
            "--out",
        ]
        .contains(&flag.as_str());
        if !takes_value {
            match flag.as_str() {
                "--quick" => o.quick = true,
                "--no-redis" => o.no_redis = true,
                "--write" => o.write = Some(true),
                "--no-write" => o.write = Some(false),
                "--bench" => continue,
                other => {
                    eprintln!("load: ignoring argument {other:?}");
                    continue;
                }
            }
            o.given.push(arg);
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("{flag} needs a value"))?,
        };
        o.given.push(flag.clone());
        o.given.push(value.clone());
        explicit.push((flag, value));
    }
    if o.quick {
        o.runs = 3;
        o.secs = 1.0;
        o.warm = 0.3;
        o.idle = 2_000;
        o.drain_clients = 2_000;
    }
    for (flag, value) in explicit {
        let bad = || format!("{flag} does not take {value:?}");
        match flag.as_str() {
            "--runs" => o.runs = value.parse().map_err(|_| bad())?,
            "--secs" => o.secs = value.parse().map_err(|_| bad())?,
            "--warmup" => o.warm = value.parse().map_err(|_| bad())?,
            "--idle" => o.idle = value.parse().map_err(|_| bad())?,
            "--drain-clients" => o.drain_clients = value.parse().map_err(|_| bad())?,
            "--out" => o.out = PathBuf::from(value),
            "--only" => {
                o.only = true;
                o.sel = [false; 9];
                for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let n = name
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=8).contains(n))
                        .or_else(|| SCENARIOS.iter().position(|s| *s == name && !s.is_empty()))
                        .ok_or_else(|| format!("unknown scenario {name:?}"))?;
                    o.sel[n] = true;
                }
            }
            _ => unreachable!(),
        }
    }
    if o.runs < 3 {
        return Err("--runs must be at least 3: every figure is a median of 3 or more".into());
    }
    if !(o.secs > 0.0 && o.secs <= 60.0 && o.warm >= 0.0 && o.warm <= 10.0) {
        return Err("--secs must be in (0, 60] and --warmup in [0, 10]".into());
    }
    if o.idle == 0 || o.idle > 19_000 || o.drain_clients == 0 || o.drain_clients > 19_000 {
        return Err(
            "--idle and --drain-clients must be between 1 and 19000: the server has 20000 descriptors"
                .into(),
        );
    }
    if o.sel[8] {
        // The comparison needs drainport's side of 1, 2 and 4.
        o.sel[1] = true;
        o.sel[2] = true;
        o.sel[4] = true;
    }
    Ok(o)
}

fn main() {
    if let Ok(mode) = std::env::var(client::WORKER_ENV) {
        client::main(&mode);
    }
    if let Err(e) = run() {
        eprintln!("load: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let started = Instant::now();
    let load_before = system::loadavg();
    let o = parse_args()?;
    let (server_cpu, client_cpu, pinning) = if system::cpus() >= 2 {
        system::pin_self(1)?;
        (
            Some(0),
            Some(1),
            "server on CPU 0; client workers, driver and perf on CPU 1 (sched_setaffinity)"
                .to_owned(),
        )
    } else {
        (None, None, "none: this machine has one CPU".to_owned())
    };

    let perf = ["/usr/bin/perf"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| system::which("perf"));
    let perf_meta = match &perf {
        Some(p) => Ok(system::first_line(&p.to_string_lossy(), &["--version"])
            .unwrap_or_else(|| "perf".into())),
        None => Err("perf is not installed (looked for /usr/bin/perf and on the PATH)".to_owned()),
    };
    let redis = if o.no_redis {
        None
    } else {
        system::which("redis-server")
    };
    let redis_meta = if o.no_redis {
        Err("--no-redis was given".to_owned())
    } else {
        match &redis {
            Some(p) => Ok(system::first_line(&p.to_string_lossy(), &["--version"])
                .map(|v| v.split(" sha=").next().unwrap_or(&v).to_owned())
                .unwrap_or_else(|| "redis-server".into())),
            None => Err(
                "redis-server is not on the PATH; install it with `apt-get install redis-server`"
                    .to_owned(),
            ),
        }
    };
    if o.sel[5] {
        if let Err(why) = &perf_meta {
            eprintln!("load: scenario 5 (syscalls) skipped: {why}");
        }
    }
    if o.sel[8] {
        if let Err(why) = &redis_meta {
            eprintln!("load: scenario 8 (Redis comparison) skipped: {why}");
        }
    }

    let plan = Plan {
        runs: o.runs,
        secs: o.secs,
        warm: o.warm,
        idle: o.idle,
        drain_clients: o.drain_clients,
        sel: o.sel,
    };
    let cfg = Cfg {
        plan,
        redis: redis.filter(|_| redis_meta.is_ok()),
        perf: perf.filter(|_| perf_meta.is_ok()),
        server_cpu,
        client_cpu,
    };
    let mut stats = Stats::default();
    let mut errors = Vec::new();
    driver::run_all(&cfg, &mut stats, &mut errors);

    let mut command = "cargo bench --bench load".to_owned();
    if !o.given.is_empty() {
        command.push_str(" -- ");
        command.push_str(&o.given.join(" "));
    }
    let meta = Meta {
        run: system::Provenance::now(command, &["src", "Cargo.toml"], pinning),
        plan,
        redis: redis_meta,
        perf: perf_meta,
        elapsed_s: started.elapsed().as_secs_f64(),
        loadavg: format!("The 1-minute load average was {load_before} when the bench started."),
    };
    let text = report::render(&meta, &stats, &errors);
    println!("{text}");
    let write = o.write.unwrap_or(!o.quick && !o.only);
    if write {
        if let Some(dir) = o.out.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        }
        report::write_section(&o.out, &text)?;
        eprintln!("load: wrote {}", o.out.display());
    } else {
        eprintln!("load: report not written (--quick, --only or --no-write)");
    }
    if !errors.is_empty() {
        return Err(format!("{} scenario runs failed", errors.len()));
    }
    Ok(())
}
