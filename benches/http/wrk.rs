//! Running `wrk` and reading its report: requests, rate, latency
//! percentiles and every kind of error it counts. The parser is a pure
//! function over wrk's text; a report it cannot read is an error, never a
//! zero.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::servers::Pinning;
use testbed::system::Res;

/// What one wrk run reported.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct WrkResult {
    pub requests: u64,
    pub secs: f64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    pub non_2xx: u64,
}

impl WrkResult {
    /// Errors of every kind wrk counts.
    pub fn errors(&self) -> u64 {
        self.connect_errors + self.read_errors + self.write_errors + self.timeouts + self.non_2xx
    }

    /// `connect 0, read 0, write 0, timeout 0, non-2xx 0`.
    pub fn error_text(&self) -> String {
        format!(
            "connect {}, read {}, write {}, timeout {}, non-2xx {}",
            self.connect_errors, self.read_errors, self.write_errors, self.timeouts, self.non_2xx
        )
    }
}

/// The arguments of one run: one thread (it has one CPU), `conns`
/// connections for `secs` seconds, with the latency distribution.
pub fn args(conns: usize, secs: u64, url: &str) -> Vec<String> {
    vec![
        "-t1".into(),
        format!("-c{conns}"),
        format!("-d{secs}s"),
        "--latency".into(),
        url.into(),
    ]
}

/// Starts wrk in the background on `cpu`, its output piped.
pub fn start(pin: &Pinning, cpu: Option<usize>, wrk: &Path, args: &[String]) -> Res<Child> {
    let mut cmd = pin.command(cpu, wrk, args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().map_err(|e| format!("cannot start wrk: {e}"))
}

/// Waits for a wrk started with [`start`] (killing it after `limit`) and
/// parses its report.
pub fn finish(mut child: Child, limit: Duration) -> Res<WrkResult> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("wrk did not finish within {limit:?}"));
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wrk output: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk exited with {}: {}{}",
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse(&text).map_err(|e| format!("{e} in wrk's report:\n{text}"))
}

/// Reads wrk 4's text report.
pub fn parse(text: &str) -> Res<WrkResult> {
    let mut r = WrkResult::default();
    let mut seen = (false, false, false, false);
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            r.rps = rest.trim().parse().map_err(|_| "bad Requests/sec")?;
            seen.0 = true;
        } else if line.contains(" requests in ") {
            // "174268 requests in 3.00s, 27.42MB read"
            let mut words = line.split_whitespace();
            r.requests = words
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or("bad request count")?;
            let secs = words.nth(2).ok_or("no duration")?.trim_end_matches(',');
            r.secs = duration_us(secs).ok_or("bad duration")? / 1e6;
            seen.1 = true;
        } else if let Some(rest) = line.strip_prefix("50%") {
            r.p50_us = duration_us(rest.trim()).ok_or("bad 50% latency")?;
            seen.2 = true;
        } else if let Some(rest) = line.strip_prefix("99%") {
            r.p99_us = duration_us(rest.trim()).ok_or("bad 99% latency")?;
            seen.3 = true;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 12, write 0, timeout 3"
            for part in rest.split(',') {
                let mut kv = part.split_whitespace();
                let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
                    return Err("bad Socket errors line".into());
                };
                let v: u64 = v.parse().map_err(|_| "bad socket error count")?;
                match k {
                    "connect" => r.connect_errors = v,
                    "read" => r.read_errors = v,
                    "write" => r.write_errors = v,
                    "timeout" => r.timeouts = v,
                    _ => return Err(format!("unknown socket error kind {k:?}")),
                }
            }
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = rest.trim().parse().map_err(|_| "bad Non-2xx count")?;
        }
    }
    match seen {
        (true, true, true, true) => Ok(r),
        _ => Err("missing Requests/sec, the request count or the 50%/99% latency".into()),
    }
}

/// `764.00us`, `1.07ms`, `2.00s`, `3.00m` in microseconds.
fn duration_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = text.split_at(split);
    let v: f64 = num.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(v * scale)
}

/// Checks the parser against wrk's real output; run at the bench's start,
/// since a bench target has no test harness.
pub fn self_check() -> Res<()> {
    let sample = "Running 3s test @ http://127.0.0.1:18099/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   702.97us  222.61us   4.69ms   70.70%
    Req/Sec    58.44k     1.51k   61.44k    73.33%
  Latency Distribution
     50%  764.00us
     75%  828.00us
     90%    0.88ms
     99%    1.07ms
  174268 requests in 3.00s, 27.42MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 5
Requests/sec:  58018.01
Transfer/sec:      9.13MB
";
    let want = WrkResult {
        requests: 174_268,
        secs: 3.0,
        rps: 58018.01,
        p50_us: 764.0,
        p99_us: 1070.0,
        connect_errors: 1,
        read_errors: 2,
        write_errors: 3,
        timeouts: 4,
        non_2xx: 5,
    };
    let got = parse(sample)?;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6 * b.abs().max(1.0);
    let same = got.requests == want.requests
        && close(got.secs, want.secs)
        && close(got.rps, want.rps)
        && close(got.p50_us, want.p50_us)
        && close(got.p99_us, want.p99_us)
        && got.errors() == 15
        && got.error_text() == want.error_text();
    if !same {
        return Err(format!("wrk parser self-check: got {got:?}, want {want:?}"));
    }
    if parse("Requests/sec: 1\n").is_ok() {
        return Err("wrk parser self-check: accepted a report without latencies".into());
    }
    Ok(())
}
