//! drainport's HTTP example against one nginx worker: the same wrk load on
//! each, run by run, the two taking turns (and swapping who goes first), on
//! a fresh server each run. Server on one CPU, wrk on the other.

use std::time::Duration;

use crate::Setup;
use crate::servers::{Kind, Server};
use crate::wrk::{self, WrkResult};
use testbed::system::{self, Res};

/// Connections wrk keeps open, as in the release scenario.
pub const CONNS: usize = 50;
/// Warm-up before each measured run, discarded.
const WARMUP_SECS: u64 = 1;
/// How long a run waits for the machine to fall quiet first.
const QUIET_WAIT: Duration = Duration::from_secs(10);
/// Busy share of all CPUs under which the machine counts as quiet.
const QUIET_BELOW: f64 = 0.15;

/// One measured run of one server.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub wrk: WrkResult,
    /// Server user + system CPU per request, µs.
    pub cpu_us: f64,
    /// Share of all CPUs busy just before the run, with no bench load.
    pub busy_before: f64,
    /// Share of all CPUs that other processes used during the measured
    /// run: the machine's busy time less the server's and wrk's.
    pub others: f64,
    /// The size of one `GET /` response (with `Connection: close`).
    pub response_bytes: usize,
}

/// Other processes' share of the CPUs above which a pair of runs is run
/// again: the two servers should be compared on a machine doing little
/// else.
pub const OTHERS_LIMIT: f64 = 0.10;
/// Tries per pair of runs before a noisy pair is kept anyway (and shown as
/// such in the per-run table).
pub const PAIR_TRIES: usize = 3;

/// Runs per server, in the order they ran.
#[derive(Default)]
pub struct Comparison {
    pub drainport: Vec<Run>,
    pub nginx: Vec<Run>,
    /// Pairs run again because another job took over [`OTHERS_LIMIT`].
    pub rerun: usize,
}

pub fn run(s: &Setup, runs: usize, secs: u64) -> Res<Comparison> {
    let mut out = Comparison::default();
    for i in 0..runs {
        let order = if i % 2 == 0 {
            [Kind::Drainport, Kind::Nginx]
        } else {
            [Kind::Nginx, Kind::Drainport]
        };
        for attempt in 1..=PAIR_TRIES {
            let mut pair = Vec::new();
            for kind in order {
                let r = one(s, kind, secs)?;
                eprintln!(
                    "http: compare run {}/{runs} {:9}: {:>9.0} req/s, p50 {:.0} µs, p99 {:.0} µs, {:.2} µs CPU/req, others used {:.0}% of the CPUs, errors: {}",
                    i + 1,
                    kind.name(),
                    r.wrk.rps,
                    r.wrk.p50_us,
                    r.wrk.p99_us,
                    r.cpu_us,
                    r.others * 100.0,
                    r.wrk.error_text()
                );
                pair.push((kind, r));
            }
            let noisy = pair.iter().any(|(_, r)| r.others > OTHERS_LIMIT);
            if noisy && attempt < PAIR_TRIES {
                eprintln!(
                    "http: another job competed with run {}; running the pair again",
                    i + 1
                );
                out.rerun += 1;
                continue;
            }
            for (kind, r) in pair {
                match kind {
                    Kind::Drainport => out.drainport.push(r),
                    Kind::Nginx => out.nginx.push(r),
                }
            }
            break;
        }
    }
    Ok(out)
}

fn one(s: &Setup, kind: Kind, secs: u64) -> Res<Run> {
    let busy_before = wait_quiet();
    let port = crate::servers::free_port()?;
    let server = match kind {
        Kind::Drainport => Server::drainport(&s.example, port, s.server_cpu, &s.pin)?,
        Kind::Nginx => Server::nginx(
            s.nginx.as_deref().ok_or("no nginx")?,
            port,
            1,
            s.server_cpu,
            &s.pin,
        )?,
    };
    let response_bytes = server.check()?;
    let url = server.url();
    let warm = wrk::start(
        &s.pin,
        s.client_cpu,
        &s.wrk,
        &wrk::args(CONNS, WARMUP_SECS, &url),
    )?;
    wrk::finish(warm, Duration::from_secs(WARMUP_SECS + 10))?;
    let before = server.cpu_ticks()?;
    let machine_before = machine_ticks()?;
    let children_before = children_ticks();
    let child = wrk::start(&s.pin, s.client_cpu, &s.wrk, &wrk::args(CONNS, secs, &url))?;
    let result = wrk::finish(child, Duration::from_secs(secs + 10))?;
    let after = server.cpu_ticks()?;
    let machine_after = machine_ticks()?;
    // wrk is the only child reaped in the window, so this is its CPU time.
    let wrk_ticks = children_ticks() - children_before;
    let (busy, total) = (
        machine_after.0 - machine_before.0,
        machine_after.1 - machine_before.1,
    );
    let ours = (after - before) as f64 + wrk_ticks;
    let others = if total > 0 {
        ((busy as f64 - ours) / total as f64).max(0.0)
    } else {
        0.0
    };
    server.stop()?;
    if result.requests == 0 {
        return Err(format!("{}: wrk completed no request", kind.name()));
    }
    let cpu_us = (after - before) as f64 / system::clk_tck() as f64 * 1e6 / result.requests as f64;
    Ok(Run {
        wrk: result,
        cpu_us,
        busy_before,
        others,
        response_bytes,
    })
}

/// Waits (up to [`QUIET_WAIT`]) for the other work on the machine to fall
/// under [`QUIET_BELOW`], and returns the last share measured.
pub fn wait_quiet() -> f64 {
    system::wait_quiet(QUIET_BELOW, QUIET_WAIT, Duration::from_millis(500))
}

/// (busy, total) clock ticks of all CPUs together, from `/proc/stat`.
fn machine_ticks() -> Res<(u64, u64)> {
    system::cpu_jiffies().ok_or_else(|| "no cpu line in /proc/stat".into())
}

/// User + system CPU of this process's reaped children, in clock ticks.
fn children_ticks() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid rusage to fill.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime) + secs(ru.ru_stime)) * system::clk_tck() as f64
}
