//! A release under load. drainport: two HTTP processes share a port while
//! `wrk -c 50` runs; a third starts, the first gets SIGHUP, later the
//! second does. Each HUPed process's exit is timed from the `kill` to the
//! moment its pidfd turns readable. nginx: the same load on two workers,
//! and `nginx -s reload` at the same two moments; the time from the reload
//! until every old worker has exited is reported beside it.

use std::time::{Duration, Instant};

use crate::Setup;
use crate::servers::{self, Kind, Server};
use crate::wrk::{self, WrkResult};
use testbed::system::{self, Res};

/// The moments of the release, as shares of the wrk run.
const START_THIRD_AT: f64 = 0.2;
const FIRST_HUP_AT: f64 = 0.3;
const SECOND_HUP_AT: f64 = 0.6;
/// How long a drain or an old nginx worker gets before it counts as stuck.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// One release under load.
#[derive(Debug)]
pub struct Release {
    pub kind: Kind,
    pub wrk: WrkResult,
    /// Signal (or reload) to exit, ms, for the two steps; `None` when the
    /// process was still running after [`EXIT_WAIT`].
    pub exits_ms: [Option<f64>; 2],
}

pub fn run(s: &Setup, runs: usize, secs: u64) -> Res<Vec<Release>> {
    let mut out = Vec::new();
    for i in 0..runs {
        let d = drainport(s, secs)?;
        report_line(i, runs, &d);
        out.push(d);
        if s.nginx.is_some() {
            let n = nginx(s, secs)?;
            report_line(i, runs, &n);
            out.push(n);
        }
    }
    Ok(out)
}

fn report_line(i: usize, runs: usize, r: &Release) {
    let ms = |v: Option<f64>| v.map_or("did not exit".into(), |v| format!("{v:.0} ms"));
    eprintln!(
        "http: release run {}/{runs} {:9}: {} requests, errors: {}; exits {} and {}",
        i + 1,
        r.kind.name(),
        r.wrk.requests,
        r.wrk.error_text(),
        ms(r.exits_ms[0]),
        ms(r.exits_ms[1]),
    );
}

/// Sleeps until `share` of the run starting at `t0` has passed.
fn at(t0: Instant, secs: u64, share: f64) {
    let when = t0 + Duration::from_secs_f64(secs as f64 * share);
    std::thread::sleep(when.saturating_duration_since(Instant::now()));
}

fn drainport(s: &Setup, secs: u64) -> Res<Release> {
    let port = servers::free_port()?;
    let start = || Server::drainport(&s.example, port, s.server_cpu, &s.pin);
    let first = start()?;
    let second = start()?;
    first.check()?;
    let url = first.url();
    let child = wrk::start(
        &s.pin,
        s.client_cpu,
        &s.wrk,
        &wrk::args(crate::compare::CONNS, secs, &url),
    )?;
    let t0 = Instant::now();
    at(t0, secs, START_THIRD_AT);
    let third = start()?;
    at(t0, secs, FIRST_HUP_AT);
    let e1 = hup_and_time(first)?;
    at(t0, secs, SECOND_HUP_AT);
    let e2 = hup_and_time(second)?;
    let result = wrk::finish(child, Duration::from_secs(secs + 10))?;
    third.stop()?;
    Ok(Release {
        kind: Kind::Drainport,
        wrk: result,
        exits_ms: [e1, e2],
    })
}

/// SIGHUP, then the time until the process exits (checked to be status 0).
fn hup_and_time(mut server: Server) -> Res<Option<f64>> {
    let pidfd = system::pidfd(server.proc.pid)?;
    let t = Instant::now();
    server.proc.signal(libc::SIGHUP)?;
    if !system::readable(&pidfd, EXIT_WAIT.as_millis() as i32) {
        return Ok(None);
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let status = server
        .proc
        .wait_until(Instant::now() + servers::EXIT_DEADLINE)?;
    if !status.success() {
        return Err(format!("a drained http example exited with {status}"));
    }
    Ok(Some(ms))
}

fn nginx(s: &Setup, secs: u64) -> Res<Release> {
    let port = servers::free_port()?;
    let nginx = s.nginx.as_deref().ok_or("no nginx")?;
    let server = Server::nginx(nginx, port, 2, s.server_cpu, &s.pin)?;
    server.check()?;
    let child = wrk::start(
        &s.pin,
        s.client_cpu,
        &s.wrk,
        &wrk::args(crate::compare::CONNS, secs, &server.url()),
    )?;
    let t0 = Instant::now();
    at(t0, secs, FIRST_HUP_AT);
    let e1 = reload_and_time(&server)?;
    at(t0, secs, SECOND_HUP_AT);
    let e2 = reload_and_time(&server)?;
    let result = wrk::finish(child, Duration::from_secs(secs + 10))?;
    server.stop()?;
    Ok(Release {
        kind: Kind::Nginx,
        wrk: result,
        exits_ms: [e1, e2],
    })
}

/// `nginx -s reload`, then the time until every worker that was running
/// before it has exited.
fn reload_and_time(server: &Server) -> Res<Option<f64>> {
    let old = server.workers();
    let t = Instant::now();
    server.reload()?;
    while old.iter().any(|&pid| servers::alive(pid)) {
        if t.elapsed() >= EXIT_WAIT {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(Some(t.elapsed().as_secs_f64() * 1e3))
}
