//! The Markdown report: medians with the range over runs, the per-run
//! ratio against nginx, the release runs, and every miss spelled out.

use std::fmt::Write as _;

use crate::compare::{CONNS, Comparison, Run};
use crate::release::Release;
use crate::servers::Kind;
use crate::slow_head::{self, SlowHead};
use testbed::num::num;

/// What the report's header states.
pub struct Meta {
    pub run: testbed::system::Provenance,
    pub load_start: String,
    pub load_end: String,
    pub wrk_version: String,
    pub nginx_version: String,
    pub runs: usize,
    pub secs: u64,
    pub release_secs: u64,
    pub skipped: Vec<String>,
    pub elapsed_s: f64,
    /// The commands that reproduce one run by hand.
    pub by_hand: Vec<String>,
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn range(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

/// `median (lo – hi)`.
fn cell(v: &[f64], dec: usize) -> String {
    let (lo, hi) = range(v);
    format!(
        "{} ({} – {})",
        num(median(v.to_vec()), dec),
        num(lo, dec),
        num(hi, dec)
    )
}

/// A comparison figure: how to read it from a run, and its target.
struct Figure {
    name: &'static str,
    dec: usize,
    get: fn(&Run) -> f64,
    /// Higher is better (else lower is).
    higher_better: bool,
    /// The issue's bar, as a ratio drainport ÷ nginx.
    target: Option<f64>,
}

const FIGURES: [Figure; 5] = [
    Figure {
        name: "requests/s",
        dec: 0,
        get: |r| r.wrk.rps,
        higher_better: true,
        target: Some(1.0),
    },
    Figure {
        name: "latency p50 (µs)",
        dec: 0,
        get: |r| r.wrk.p50_us,
        higher_better: false,
        target: None,
    },
    Figure {
        name: "latency p99 (µs)",
        dec: 0,
        get: |r| r.wrk.p99_us,
        higher_better: false,
        target: None,
    },
    Figure {
        name: "server user+system CPU per request (µs)",
        dec: 2,
        get: |r| r.cpu_us,
        higher_better: false,
        target: Some(1.0),
    },
    Figure {
        name: "server busy (% of its CPU; under 100 means wrk set the pace)",
        dec: 0,
        get: |r| r.cpu_us * r.wrk.rps / 1e4,
        higher_better: false,
        target: None,
    },
];

pub fn render(meta: &Meta, cmp: Option<&Comparison>, rel: Option<&[Release]>) -> String {
    let mut s = String::new();
    let mut misses: Vec<String> = Vec::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "Written by `benches/http/` between the `http` markers; rerun it rather than editing this section.\n"
    );
    meta.run.write(w);
    let _ = writeln!(
        w,
        "- Other load: the 1-minute load average was {} when the bench started and {} when it ended (other builds and tests shared the machine); each comparison run first waited up to 10 s for the machine to fall under 15% busy.",
        meta.load_start, meta.load_end
    );
    let _ = writeln!(w, "- Tools: {}; {}", meta.wrk_version, meta.nginx_version);
    let _ = writeln!(w, "- Whole bench took {:.0} s", meta.elapsed_s);
    for skip in &meta.skipped {
        let _ = writeln!(w, "- Skipped: {skip}");
    }

    if let Some(c) = cmp.filter(|c| !c.drainport.is_empty() && !c.nginx.is_empty()) {
        let _ = writeln!(
            w,
            "\n### drainport's HTTP example beside one nginx worker\n\n\
             `wrk -t1 -c{CONNS} -d{}s --latency` against each server, {} runs each, the two taking turns on a fresh server per run after a discarded 1 s warm-up. Each figure is the median over runs (range beside it); the ratio is the median of the per-run ratios (drainport's run against the nginx run beside it).\n",
            meta.secs, meta.runs
        );
        let _ = writeln!(
            w,
            "| Metric | drainport | nginx | drainport ÷ nginx | Target | Result |\n|---|---:|---:|---:|---|---|"
        );
        for f in &FIGURES {
            let d: Vec<f64> = c.drainport.iter().map(f.get).collect();
            let n: Vec<f64> = c.nginx.iter().map(f.get).collect();
            let ratios: Vec<f64> = d.iter().zip(&n).map(|(a, b)| a / b).collect();
            let ratio = median(ratios.clone());
            let (target, result) = match f.target {
                Some(t) => {
                    let ok = if f.higher_better {
                        ratio >= t
                    } else {
                        ratio <= t
                    };
                    let sign = if f.higher_better { "≥" } else { "≤" };
                    if !ok {
                        misses.push(format!(
                            "{}: drainport ÷ nginx is {} against {sign} {t:.1}x.",
                            f.name,
                            num(ratio, 2)
                        ));
                    }
                    (
                        format!("{sign} {t:.1}x"),
                        if ok { "PASS" } else { "**MISS**" }.to_owned(),
                    )
                }
                None => ("—".into(), String::new()),
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {target} | {result} |",
                f.name,
                cell(&d, f.dec),
                cell(&n, f.dec),
                cell(&ratios, 2)
            );
        }
        let errs = |v: &[Run]| v.iter().map(|r| r.wrk.errors()).sum::<u64>();
        let reqs = |v: &[Run]| v.iter().map(|r| r.wrk.requests).sum::<u64>();
        let _ = writeln!(
            w,
            "| requests checked by wrk, all runs | {} | {} | — | — |  |",
            num(reqs(&c.drainport) as f64, 0),
            num(reqs(&c.nginx) as f64, 0)
        );
        let _ = writeln!(
            w,
            "| wrk errors of any kind (incl. non-2xx), all runs | {} | {} | — | 0 | {} |",
            errs(&c.drainport),
            errs(&c.nginx),
            if errs(&c.drainport) == 0 {
                "PASS"
            } else {
                "**MISS**"
            }
        );
        if errs(&c.drainport) > 0 {
            misses.push("wrk counted errors against drainport in the comparison.".into());
        }
        let busy: Vec<f64> = c
            .drainport
            .iter()
            .chain(&c.nginx)
            .map(|r| r.busy_before * 100.0)
            .collect();
        let _ = writeln!(
            w,
            "\nResponses on a keep-alive connection: drainport's is {} bytes (status line, `Date`, `Content-Type`, `Content-Length`, body), nginx's {} (with `Server` and `Connection: keep-alive` besides). The machine was {} % busy (median; max {:.0} %) in the 0.5 s before each run.",
            c.drainport[0].response_bytes,
            c.nginx[0].response_bytes,
            num(median(busy.clone()), 0),
            range(&busy).1
        );
        let _ = writeln!(
            w,
            "\nRun by run, in the order they ran. *Others* is the share of both CPUs used during the measured window by processes other than the server and wrk (the machine's busy time from `/proc/stat`, less the server's and wrk's CPU time): where it is high, another job competed with the run. A pair of runs where others took over {limit:.0} % was run again, up to {tries} tries; {rerun} pairs were run again this time, and a pair still over it on its last try was kept.\n\n\
             | Run | Server | requests/s | p50 (µs) | p99 (µs) | CPU per request (µs) | Others |\n|---:|---|---:|---:|---:|---:|---:|",
            limit = crate::compare::OTHERS_LIMIT * 100.0,
            tries = crate::compare::PAIR_TRIES,
            rerun = c.rerun,
        );
        for (i, (d, n)) in c.drainport.iter().zip(&c.nginx).enumerate() {
            let pair = if i % 2 == 0 {
                [("drainport", d), ("nginx", n)]
            } else {
                [("nginx", n), ("drainport", d)]
            };
            for (name, r) in pair {
                let _ = writeln!(
                    w,
                    "| {} | {name} | {} | {} | {} | {} | {} % |",
                    i + 1,
                    num(r.wrk.rps, 0),
                    num(r.wrk.p50_us, 0),
                    num(r.wrk.p99_us, 0),
                    num(r.cpu_us, 2),
                    num(r.others * 100.0, 0)
                );
            }
        }
    }

    if let Some(rel) = rel.filter(|r| !r.is_empty()) {
        let _ = writeln!(
            w,
            "\n### A release under load\n\n\
             drainport: two HTTP processes on one port, `wrk -t1 -c{CONNS} -d{s}s` running; at {a:.0}% of the run a third starts, at {b:.0}% the first gets SIGHUP, at {c:.0}% the second. The exit is timed from the `kill` to the process's exit (pidfd), and each must exit with status 0. nginx: two workers, the same load, `nginx -s reload` at the same two moments, timed until every worker from before the reload has exited.\n",
            s = meta.release_secs,
            a = 100.0 * 0.2,
            b = 100.0 * 0.3,
            c = 100.0 * 0.6,
        );
        let _ = writeln!(
            w,
            "| Server | Run | Requests | wrk errors | First step → exit (ms) | Second step → exit (ms) | Result |\n|---|---:|---:|---|---:|---:|---|"
        );
        for (i, r) in rel.iter().enumerate() {
            let run = i / if rel.iter().any(|r| r.kind == Kind::Nginx) {
                2
            } else {
                1
            } + 1;
            let ms = |v: Option<f64>| v.map_or("did not exit in 10 s".into(), |v| num(v, 0));
            let within = r.exits_ms.iter().all(|e| e.is_some_and(|ms| ms <= 1000.0));
            let result = match r.kind {
                Kind::Drainport if r.wrk.errors() == 0 && within => "PASS".to_owned(),
                Kind::Drainport => {
                    misses.push(format!(
                        "release run {run}: drainport had wrk errors ({}) or a HUPed process took over 1 s to exit ({} / {} ms).",
                        r.wrk.error_text(),
                        ms(r.exits_ms[0]),
                        ms(r.exits_ms[1])
                    ));
                    "**MISS**".to_owned()
                }
                Kind::Nginx => "(reported)".to_owned(),
            };
            let _ = writeln!(
                w,
                "| {} | {run} | {} | {} | {} | {} | {result} |",
                r.kind.name(),
                num(r.wrk.requests as f64, 0),
                r.wrk.error_text(),
                ms(r.exits_ms[0]),
                ms(r.exits_ms[1]),
            );
        }
    }

    if let Some(rel) = rel {
        let nginx: Vec<&Release> = rel.iter().filter(|r| r.kind == Kind::Nginx).collect();
        let errors: u64 = nginx.iter().map(|r| r.wrk.errors()).sum();
        if errors > 0 {
            let reloads = nginx.len() * 2;
            let _ = writeln!(
                w,
                "\nnginx's errors: {errors} over {reloads} reloads, {:.0} per reload, against the {CONNS} connections wrk keeps. An old nginx worker closes its idle keep-alive connections when it shuts down gracefully, and wrk counts a connection that closes after it has sent a request, unanswered, as a read error. drainport answers that request, with `Connection: close`, and then closes.",
                errors as f64 / reloads as f64
            );
        }
    }

    let _ = writeln!(
        w,
        "\n### By hand\n\nOne comparison run, as the bench does it (PORT a free port, DIR an empty directory):\n\n```sh"
    );
    for line in &meta.by_hand {
        let _ = writeln!(w, "{line}");
    }
    let _ = writeln!(w, "```");

    let _ = writeln!(w, "\n### Misses\n");
    if misses.is_empty() {
        let _ = writeln!(w, "None.");
    }
    for m in &misses {
        let _ = writeln!(w, "- {m}");
    }
    s
}

/// The slow head's section: this build's figures, and the older build's
/// given with `--before`.
pub fn render_slow_head(
    run: &testbed::system::Provenance,
    slow: &SlowHead,
    before: Option<(&str, &SlowHead)>,
) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "Written by `benches/http/` between the `http-slowhead` markers; rerun it rather than editing this section.\n"
    );
    run.write(w);
    let _ = writeln!(w, "\n- This build: {}", slow_head_line(slow));
    if let Some((build, before)) = before {
        let _ = writeln!(w, "- `{build}`: {}", slow_head_line(before));
    }
    s
}

/// One line for the slow head's figures.
pub fn slow_head_line(slow: &SlowHead) -> String {
    format!(
        "A {}-byte head sent one byte per write, {} µs apart, cost the server {:.1} ms of CPU ({:.1} µs a byte), {:.0} ms of it in user space, and was answered {:.2} s after its first byte.",
        num(slow.bytes as f64, 0),
        slow_head::PACE.as_micros(),
        slow.cpu_ms,
        slow.cpu_ms * 1e3 / slow.bytes as f64,
        slow.user_ms,
        slow.wall_s,
    )
}
