//! HTTP benchmark: `cargo bench --bench http [-- FLAGS]`.
//!
//! Builds the HTTP example (`examples/http/`) in release mode, then:
//!
//! 1. **Beside nginx.** The example and nginx (one worker, the same short
//!    answer, keep-alive, no access log, run from a temporary prefix) each
//!    take `wrk -t1 -c50 --latency`, pinned with `taskset`: the server on
//!    CPU 0, wrk on CPU 1. The two take turns, a fresh server per run;
//!    req/s, latency p50/p99 and server CPU per request are medians.
//! 2. **A release under load.** Two example processes share a port under
//!    `wrk -c50`; a third starts, the first is HUPed, later the second.
//!    wrk must count no error of any kind and each HUPed process must exit
//!    within a second. The same release against nginx (`nginx -s reload`).
//! 3. **A head a byte at a time.** One client sends a 60,000-byte request
//!    head one byte per `write`, 25 µs apart; the server's CPU from the
//!    first byte to the response is printed. Needs neither wrk nor nginx.
//!
//! Each part that needs `wrk` or `nginx` is skipped with a printed reason
//! when it is missing (`apt-get install wrk nginx-light`). The report goes
//! to stdout and, unless `--quick`, `--only` or `--no-write`, into the
//! section of `docs/benchmarks.md` between `<!-- http:start -->` and
//! `<!-- http:end -->`; the slow head's, unless `--quick`, `--no-write` or
//! `--example`, between `<!-- http-slowhead:start -->` and
//! `<!-- http-slowhead:end -->`.
//!
//! Flags (after `--`):
//!
//! ```text
//! --runs N            comparison runs per server, at least 3 [default: 7]
//! --secs S            measured seconds per comparison run [default: 5]
//! --release-runs N    releases per server [default: 3]
//! --release-secs S    the wrk run a release happens in [default: 10]
//! --only PART         compare | release | slowhead
//! --example PATH      measure this build of the example instead of
//!                     building one
//! --before PATH       also send the slow head to this build of the
//!                     example (an older commit's), for a before and after
//! --quick             3 runs of 2 s, one release of 6 s; no report file
//! --no-write          print the report only
//! ```
//!
//! Every process the bench starts is stopped by pid (and dies with it).

mod compare;
mod release;
mod report;
mod servers;
mod slow_head;
mod wrk;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use testbed::system;

use servers::Pinning;
use system::Res;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const START: &str = "<!-- http:start -->";
const END: &str = "<!-- http:end -->";
const SLOW_START: &str = "<!-- http-slowhead:start -->";
const SLOW_END: &str = "<!-- http-slowhead:end -->";

/// What every part needs: the binaries and where things run.
pub struct Setup {
    pub example: PathBuf,
    pub wrk: PathBuf,
    pub nginx: Option<PathBuf>,
    pub pin: Pinning,
    pub server_cpu: Option<usize>,
    pub client_cpu: Option<usize>,
}

struct Opts {
    runs: usize,
    secs: u64,
    release_runs: usize,
    release_secs: u64,
    compare: bool,
    release: bool,
    slow_head: bool,
    example: Option<PathBuf>,
    before: Option<PathBuf>,
    write: bool,
    /// The slow head's own section: written unless `--quick`,
    /// `--no-write` or `--example` (another build's figures).
    write_slow: bool,
    given: Vec<String>,
}

fn parse_args() -> Res<Opts> {
    let mut o = Opts {
        runs: 7,
        secs: 5,
        release_runs: 3,
        release_secs: 10,
        compare: true,
        release: true,
        slow_head: true,
        example: None,
        before: None,
        write: true,
        write_slow: true,
        given: Vec::new(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    // --quick first, so that sizes given beside it win.
    if args.iter().any(|a| a == "--quick") {
        o.runs = 3;
        o.secs = 2;
        o.release_runs = 1;
        o.release_secs = 6;
        o.write = false;
        o.write_slow = false;
    }
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = |flag: &str| it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bench" => continue,
            "--quick" => {}
            "--no-write" => {
                o.write = false;
                o.write_slow = false;
            }
            "--example" | "--before" => {
                let v = value(&flag)?;
                if flag == "--example" {
                    o.example = Some(PathBuf::from(&v));
                    o.write = false;
                    o.write_slow = false;
                } else {
                    o.before = Some(PathBuf::from(&v));
                }
                o.given.push(flag.clone());
                o.given.push(v);
                continue;
            }
            "--runs" | "--secs" | "--release-runs" | "--release-secs" | "--only" => {
                let v = value(&flag)?;
                let bad = || format!("{flag} does not take {v:?}");
                match flag.as_str() {
                    "--runs" => o.runs = v.parse().map_err(|_| bad())?,
                    "--secs" => o.secs = v.parse().map_err(|_| bad())?,
                    "--release-runs" => o.release_runs = v.parse().map_err(|_| bad())?,
                    "--release-secs" => o.release_secs = v.parse().map_err(|_| bad())?,
                    _ => {
                        o.compare = v == "compare";
                        o.release = v == "release";
                        o.slow_head = v == "slowhead";
                        o.write = false;
                        if !o.compare && !o.release && !o.slow_head {
                            return Err(bad());
                        }
                    }
                }
                o.given.push(flag.clone());
                o.given.push(v);
                continue;
            }
            other => {
                eprintln!("http: ignoring argument {other:?}");
                continue;
            }
        }
        o.given.push(flag);
    }
    if o.runs < 3 {
        return Err("--runs must be at least 3: every figure is a median".into());
    }
    if !(1..=120).contains(&o.secs) || !(3..=120).contains(&o.release_secs) {
        return Err("--secs must be 1 to 120 and --release-secs 3 to 120".into());
    }
    Ok(o)
}

/// Builds the example in release mode and returns its path beside this
/// bench's own binary (`target/release/deps/http-*` → `target/release/http`).
fn build_example() -> Res<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("http: cargo build --release --bin http");
    let status = Command::new(cargo)
        .args(["build", "--release", "--bin", "http", "--manifest-path"])
        .arg(Path::new(ROOT).join("Cargo.toml"))
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the http example failed: {status}"));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let example = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("http"))
        .ok_or("no target directory above the bench binary")?;
    if !example.is_file() {
        return Err(format!("the http example is not at {}", example.display()));
    }
    Ok(example)
}

/// Sends the slow head to this build (and to `--before`'s), prints the
/// figures, and writes them to their own section of the report.
fn slow_head_part(
    o: &Opts,
    example: &Path,
    pin: &Pinning,
    server_cpu: Option<usize>,
    client_cpu: Option<usize>,
) -> Res<()> {
    let slow = slow_head::run(example, pin, server_cpu, client_cpu)?;
    let before = match &o.before {
        Some(path) => Some((
            path.display().to_string(),
            slow_head::run(path, pin, server_cpu, client_cpu)?,
        )),
        None => None,
    };
    let mut command = "cargo bench --bench http".to_owned();
    if !o.given.is_empty() {
        command.push_str(" -- ");
        command.push_str(&o.given.join(" "));
    }
    let pinning = match (server_cpu, client_cpu) {
        (Some(s), Some(c)) => format!("server with `{}…`, client on CPU {c}", pin.text(s).trim()),
        _ => "none: this machine has one CPU".to_owned(),
    };
    let run = system::Provenance::now(command, &["examples", "Cargo.toml"], pinning);
    let before = before.as_ref().map(|(build, b)| (build.as_str(), b));
    let text = report::render_slow_head(&run, &slow, before);
    println!("{text}");
    if o.write_slow {
        let path = Path::new(ROOT).join("docs/benchmarks.md");
        testbed::report::write_marked(&path, SLOW_START, SLOW_END, &text, |doc, section| {
            Some(format!(
                "{}\n\n## HTTP: a request head a byte at a time\n\n{section}\n",
                doc.trim_end()
            ))
        })?;
        eprintln!("http: wrote {}", path.display());
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("http: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let started = Instant::now();
    let load_start = system::loadavg();
    let o = parse_args()?;
    wrk::self_check()?;
    let mut skipped = Vec::new();
    let pin = Pinning::find();
    let (server_cpu, client_cpu) = if system::cpus() >= 2 {
        (Some(0), Some(1))
    } else {
        (None, None)
    };
    let example = match &o.example {
        Some(path) => path.clone(),
        None => build_example()?,
    };
    if o.slow_head {
        slow_head_part(&o, &example, &pin, server_cpu, client_cpu)?;
    }
    let Some(wrk) = system::which("wrk")
        .or_else(|| Some(PathBuf::from("/usr/bin/wrk")).filter(|p| p.is_file()))
    else {
        eprintln!(
            "http: skipped: wrk is not installed (apt-get install wrk); nothing else to measure"
        );
        return Ok(());
    };
    if !o.compare && !o.release {
        return Ok(());
    }
    let nginx = system::which("nginx")
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()));
    if nginx.is_none() {
        let why = "nginx is not installed (apt-get install nginx-light): the comparison and nginx's release are skipped";
        eprintln!("http: skipped: {why}");
        skipped.push(why.to_owned());
    }
    if pin.taskset.is_none() {
        eprintln!("http: taskset is not installed; pinning with sched_setaffinity instead");
    }
    let pinning = if server_cpu.is_some() {
        format!(
            "servers with `{}…`, wrk and the slow client with `{}…`",
            pin.text(0).trim(),
            pin.text(1).trim()
        )
    } else {
        "none: this machine has one CPU".to_owned()
    };
    let setup = Setup {
        example,
        wrk,
        nginx,
        pin,
        server_cpu,
        client_cpu,
    };

    let comparison = if o.compare && setup.nginx.is_some() {
        Some(compare::run(&setup, o.runs, o.secs)?)
    } else {
        None
    };
    let releases = if o.release {
        Some(release::run(&setup, o.release_runs, o.release_secs)?)
    } else {
        None
    };

    let mut command = "cargo bench --bench http".to_owned();
    if !o.given.is_empty() {
        command.push_str(" -- ");
        command.push_str(&o.given.join(" "));
    }
    let nginx_conf = servers::nginx_conf(Path::new("DIR"), 0, 1).replace(":0;", ":PORT;");
    let meta = report::Meta {
        run: system::Provenance::now(command, &["src", "examples", "Cargo.toml"], pinning),
        load_start,
        load_end: system::loadavg(),
        wrk_version: system::first_line(&setup.wrk.to_string_lossy(), &["-v"])
            .map(|v| v.split(" Copyright").next().unwrap_or(&v).trim().to_owned())
            .unwrap_or_else(|| "wrk".into()),
        nginx_version: setup
            .nginx
            .as_ref()
            .and_then(|n| system::first_line(&n.to_string_lossy(), &["-v"]))
            .unwrap_or_else(|| "no nginx".into()),
        runs: o.runs,
        secs: o.secs,
        release_secs: o.release_secs,
        skipped,
        elapsed_s: started.elapsed().as_secs_f64(),
        by_hand: vec![
            "cargo build --release --bin http".into(),
            "taskset -c 0 target/release/http -q 127.0.0.1:PORT &".into(),
            format!(
                "taskset -c 1 wrk -t1 -c{} -d{}s --latency http://127.0.0.1:PORT/",
                compare::CONNS,
                o.secs
            ),
            "kill -HUP %1".into(),
            "cat > DIR/nginx.conf <<'EOF'".into(),
            nginx_conf.trim_end().to_owned(),
            "EOF".into(),
            "taskset -c 0 nginx -p DIR -c DIR/nginx.conf -e DIR/error.log -g 'daemon off;' &"
                .into(),
            format!(
                "taskset -c 1 wrk -t1 -c{} -d{}s --latency http://127.0.0.1:PORT/",
                compare::CONNS,
                o.secs
            ),
            "kill -QUIT %2".into(),
        ],
    };
    let text = report::render(&meta, comparison.as_ref(), releases.as_deref());
    println!("{text}");
    if o.write {
        let path = Path::new(ROOT).join("docs/benchmarks.md");
        testbed::report::write_marked(&path, START, END, &text, |doc, section| {
            Some(format!("{}\n\n## HTTP\n\n{section}\n", doc.trim_end()))
        })?;
        eprintln!("http: wrote {}", path.display());
    } else {
        eprintln!("http: report not written (--quick, --only or --no-write)");
    }
    Ok(())
}
