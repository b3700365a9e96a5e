//! Figures per run, their medians, and the Markdown report.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::driver::Plan;
use testbed::num::num;

/// Every figure, one value per run, by key (`s2.p99`, `r1.bpc`, ...).
#[derive(Default)]
pub struct Stats {
    map: BTreeMap<String, Vec<f64>>,
}

impl Stats {
    pub fn add(&mut self, key: &str, value: f64) {
        self.map.entry(key.to_owned()).or_default().push(value);
    }

    pub fn last(&self, key: &str) -> Option<f64> {
        self.map.get(key)?.last().copied()
    }

    pub fn len(&self, key: &str) -> usize {
        self.map.get(key).map_or(0, Vec::len)
    }

    pub fn lens(&self) -> HashMap<String, usize> {
        self.map.iter().map(|(k, v)| (k.clone(), v.len())).collect()
    }

    pub fn median(&self, key: &str) -> Option<f64> {
        let mut v = self.map.get(key)?.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        Some(if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        })
    }

    fn range(&self, key: &str) -> Option<(f64, f64)> {
        let v = self.map.get(key)?;
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (!v.is_empty()).then_some((lo, hi))
    }

    /// Sum over runs.
    fn sum(&self, key: &str) -> Option<f64> {
        let v = self.map.get(key)?;
        (!v.is_empty()).then(|| v.iter().sum())
    }

    /// Server CPU µs per request pooled over every run of `prefix`:
    /// (user, user+system).
    fn pooled_cpu(&self, prefix: &str) -> Option<(f64, f64)> {
        let u = self.sum(&format!("{prefix}.uticks"))?;
        let s = self.sum(&format!("{prefix}.sticks"))?;
        let reqs = self.sum(&format!("{prefix}.reqs"))?;
        let tck = self.median(&format!("{prefix}.tck"))?;
        (reqs > 0.0).then(|| (u / tck * 1e6 / reqs, (u + s) / tck * 1e6 / reqs))
    }

    fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.map
            .keys()
            .filter(move |k| k.starts_with(prefix))
            .map(String::as_str)
    }
}

/// A target on a figure.
#[derive(Clone, Copy)]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    fn text(self, dec: usize, unit: &str) -> String {
        match self {
            Goal::AtMost(l) => format!("≤ {}{unit}", num(l, dec)),
            Goal::AtLeast(l) => format!("≥ {}{unit}", num(l, dec)),
        }
    }

    /// `PASS`, or `MISS` with by how much.
    fn judge(self, v: f64, dec: usize, unit: &str) -> (bool, String) {
        let (ok, by, limit, word) = match self {
            Goal::AtMost(l) => (v <= l, v - l, l, "over"),
            Goal::AtLeast(l) => (v >= l, l - v, l, "under"),
        };
        if ok {
            return (true, "PASS".into());
        }
        let pct = if limit != 0.0 {
            format!(", {:.0}% {word}", by / limit.abs() * 100.0)
        } else {
            String::new()
        };
        (
            false,
            format!(
                "MISS by {}{unit}{pct}",
                num(by, if unit == "x" { 3 } else { dec.max(2) })
            ),
        )
    }
}

/// A ratio with two decimals, or three significant digits when small.
fn ratio_num(v: f64) -> String {
    if v.abs() >= 0.1 || v == 0.0 {
        num(v, 2)
    } else {
        let dec = (-v.abs().log10()).ceil() as usize + 2;
        num(v, dec.min(8))
    }
}

/// One row of the main table.
struct Row {
    scen: String,
    metric: String,
    key: &'static str,
    dec: usize,
    goal: Option<Goal>,
    unit: &'static str,
}

fn row(scen: &str, metric: &str, key: &'static str, dec: usize) -> Row {
    Row {
        scen: scen.to_owned(),
        metric: metric.to_owned(),
        key,
        dec,
        goal: None,
        unit: "",
    }
}

impl Row {
    fn goal(mut self, goal: Goal, unit: &'static str) -> Row {
        self.goal = Some(goal);
        self.unit = unit;
        self
    }
}

/// Adds what dominates each kind of miss, from the figures themselves.
fn add_context(misses: &mut Vec<String>, stats: &Stats) {
    let m = |k: &str| stats.median(k);
    if misses.iter().any(|x| x.contains("all close at once")) {
        if let (Some(server), Some(client)) = (m("s7.cpu_per_close_us"), m("s7.client_close_us")) {
            misses.push(format!(
                "7. What dominates the mass close: the server spends {} µs of CPU per \
                 closed client (read() returning 0, close(), and the loopback FIN/ACK \
                 exchange that runs in its context), while the clients close one every {} µs; \
                 the server's backlog of connection teardowns, not a timer, sets the exit time. \
                 When the last client leaves alone, the exit follows in {} ms.",
                num(server, 2),
                num(client, 2),
                m("s7.lone_exit_ms").map_or("?".into(), |v| num(v, 2)),
            ));
        }
    }
    if misses
        .iter()
        .any(|x| x.contains("RSS growth") || x.contains("VmHWM growth"))
    {
        if let (Some(g), Some((_, hi))) = (m("s7.growth"), stats.range("s7.growth")) {
            misses.push(format!(
                "7. VmRSS rose by {} KiB (median; {} KiB at most) between SIGHUP and exit, \
                 sampled about every millisecond: memory the server first touched while \
                 tearing its connections down.",
                num(g, 0),
                num(hi, 0)
            ));
        }
    }
    for (scen, label) in [("2", "ping-pong"), ("4", "pipelined")] {
        let rate_miss = misses
            .iter()
            .any(|x| x.starts_with("8.") && x.contains(&format!("{label} requests/s")));
        if rate_miss {
            let f = |k: String| m(&k).map_or("?".into(), |v| num(v, 0));
            misses.push(format!(
                "8. In the {label} runs the client worker was on CPU {}% of the window against \
                 drainport and {}% against Redis; the servers {}% and {}%. A client near 100% \
                 bounds the rate for both servers alike.",
                f(format!("s{scen}.cbusy")),
                f(format!("r{scen}.cbusy")),
                f(format!("s{scen}.sbusy")),
                f(format!("r{scen}.sbusy")),
            ));
        }
    }
}

/// A Redis comparison row: metric, drainport key, Redis key, ratio key,
/// decimals, target on the ratio.
type RedisRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    usize,
    Option<Goal>,
);

/// What the report says about the run besides the figures.
pub struct Meta {
    pub run: testbed::system::Provenance,
    pub plan: Plan,
    pub redis: Result<String, String>,
    pub perf: Result<String, String>,
    pub elapsed_s: f64,
    pub loadavg: String,
}

const START: &str = "<!-- load:start -->";
const END: &str = "<!-- load:end -->";

/// Replaces the text between the load markers in `path` and nothing else,
/// so that other sections of the file (the soak benchmark's) survive.
/// Without markers, a `## Load` section holding them goes first, under the
/// page's title; without the file, it is created with a title and that
/// section.
pub fn write_section(path: &std::path::Path, body: &str) -> Result<(), String> {
    testbed::report::write_marked(path, START, END, body, |doc, section| {
        let (title, rest) = match doc.strip_prefix("# ") {
            Some(_) => {
                let end = doc.find('\n').map_or(doc.len(), |i| i + 1);
                (doc[..end].to_owned(), &doc[end..])
            }
            None => ("# Benchmarks\n".to_owned(), doc),
        };
        let rest = rest.trim_start_matches('\n');
        let sep = if rest.is_empty() { "" } else { "\n\n" };
        Some(format!("{title}\n## Load\n\n{section}{sep}{rest}"))
    })
}

/// Renders the load section: every figure against its target, the Redis
/// comparison, the syscall breakdown, the misses and how it all is measured.
pub fn render(meta: &Meta, stats: &Stats, errors: &[String]) -> String {
    let mut out = String::new();
    let mut misses: Vec<String> = Vec::new();
    // (targets judged, targets missed)
    let mut tally = (0usize, 0usize);
    let on = |n: usize| meta.plan.sel[n];
    let w = &mut out;
    let _ = writeln!(
        w,
        "Written by the load benchmark, `benches/load/`, between the `load` markers; \
         rerun it rather than editing this section. Each figure is the median of {} runs (all runs' range beside it); \
         ratios are the median of the per-run ratios.\n",
        meta.plan.runs
    );
    meta.run.write(w);
    let _ = writeln!(
        w,
        "- Other load on the machine: all CPUs {}% busy (median; max {}%) in the 0.5 s before \
         each run, with nothing of the bench running; each run waited up to 20 s for that to \
         fall under 10%. {}",
        stats.median("bg.busy").map_or("?".into(), |v| num(v, 0)),
        stats.range("bg.busy").map_or("?".into(), |r| num(r.1, 0)),
        meta.loadavg
    );
    let _ = writeln!(
        w,
        "- Load runs: {} s measured after {} s of warm-up; idle crowd {} connections; \
         drain crowd {} clients; whole bench took {:.0} s",
        meta.plan.secs, meta.plan.warm, meta.plan.idle, meta.plan.drain_clients, meta.elapsed_s
    );
    let _ = writeln!(
        w,
        "- Redis: {}",
        match &meta.redis {
            Ok(v) => v.clone(),
            Err(why) => format!("comparison skipped: {why}"),
        }
    );
    let _ = writeln!(
        w,
        "- perf: {}\n",
        match &meta.perf {
            Ok(v) => v.clone(),
            Err(why) => format!("scenario 5 skipped: {why}"),
        }
    );

    let crowd = format!("{} idle", num(meta.plan.idle as f64, 0));
    let mut rows = Vec::new();
    if on(1) {
        let s = "1. Idle memory";
        rows.push(
            row(s, "RSS per idle connection (bytes)", "s1.bpc", 1).goal(Goal::AtMost(64.0), " B"),
        );
        rows.push(row(s, "VmRSS before the crowd (KiB)", "s1.rss0", 0));
        rows.push(row(
            s,
            &format!("VmRSS with {crowd} connected (KiB)"),
            "s1.rss1",
            0,
        ));
        rows.push(row(s, "VmHWM with the crowd (KiB)", "s1.hwm", 0));
    }
    if on(2) || on(3) {
        let s = "2. Ping-pong, 50 conns × 1 line";
        rows.push(row(s, "requests/s", "s2.rate", 0));
        rows.push(row(s, "latency p50 (µs)", "s2.p50", 1));
        rows.push(row(s, "latency p99 (µs)", "s2.p99", 1));
        rows.push(row(s, "latency p99.9 (µs)", "s2.p999", 1));
        rows.push(row(s, "server user CPU per request (µs)", "s2.user", 3));
        rows.push(row(
            s,
            "server user+system CPU per request (µs)",
            "s2.total",
            3,
        ));
        rows.push(row(s, "server on CPU (% of the window)", "s2.sbusy", 0));
        rows.push(row(
            s,
            "client worker on CPU (% of the window)",
            "s2.cbusy",
            0,
        ));
    }
    if on(3) {
        let s = format!("3. Ping-pong beside {crowd}");
        rows.push(row(&s, "requests/s", "s3.rate", 0));
        rows.push(row(&s, "latency p50 (µs)", "s3.p50", 1));
        rows.push(row(&s, "latency p99 (µs)", "s3.p99", 1));
        rows.push(row(&s, "latency p99.9 (µs)", "s3.p999", 1));
        rows.push(
            row(&s, "p99 ÷ p99 without the crowd", "s3.p99ratio", 2).goal(Goal::AtMost(1.2), "x"),
        );
        rows.push(row(&s, "requests/s ÷ without the crowd", "s3.rateratio", 2));
    }
    if on(4) {
        let s = "4. Pipelined, 50 conns × 16 lines";
        rows.push(row(s, "requests/s", "s4.rate", 0));
        rows.push(row(s, "server user CPU per request (µs)", "s4.user", 3));
        rows.push(row(
            s,
            "server user+system CPU per request (µs)",
            "s4.total",
            3,
        ));
        rows.push(row(s, "server on CPU (% of the window)", "s4.sbusy", 0));
        rows.push(row(
            s,
            "client worker on CPU (% of the window)",
            "s4.cbusy",
            0,
        ));
    }
    if on(5) && meta.perf.is_ok() {
        let s = "5. Syscalls per ping-pong request";
        rows.push(row(s, "all syscalls", "s5.total", 3));
        rows.push(row(s, "excluding epoll_wait", "s5.excl", 3).goal(Goal::AtMost(2.01), ""));
        rows.push(row(s, "epoll_wait", "s5.epoll", 3));
    }
    if on(6) {
        let s = "6. Churn, 50 loops of connect/line/close";
        rows.push(row(s, "connections/s", "s6.rate", 0));
    }
    if on(7) {
        let s = format!(
            "7. Drain of {} idle clients",
            num(meta.plan.drain_clients as f64, 0)
        );
        rows.push(
            row(
                &s,
                "all close at once: last close → exit (ms)",
                "s7.exit_ms",
                2,
            )
            .goal(Goal::AtMost(10.0), " ms"),
        );
        rows.push(row(&s, "SIGHUP → exit (ms)", "s7.hup_exit_ms", 1));
        rows.push(
            row(
                &s,
                "last client's close → exit, when it leaves alone (ms)",
                "s7.lone_exit_ms",
                2,
            )
            .goal(Goal::AtMost(10.0), " ms"),
        );
        rows.push(row(
            &s,
            "all but one close at once → server holds one client (ms)",
            "s7.backlog_ms",
            1,
        ));
        rows.push(row(
            &s,
            "first close → last close, client side (ms)",
            "s7.close_span_ms",
            1,
        ));
        rows.push(row(
            &s,
            "clients' closing pace (µs per connection)",
            "s7.client_close_us",
            2,
        ));
        rows.push(row(
            &s,
            "server CPU per closed client (µs)",
            "s7.cpu_per_close_us",
            2,
        ));
        rows.push(row(
            &s,
            "server CPU from SIGHUP to the first close (ms)",
            "s7.cpu_before_close_ms",
            2,
        ));
        rows.push(row(&s, "VmRSS at SIGHUP (KiB)", "s7.rss_hup", 0));
        rows.push(row(
            &s,
            "peak VmRSS sampled while draining (KiB)",
            "s7.rss_peak",
            0,
        ));
        rows.push(
            row(&s, "RSS growth while draining (KiB)", "s7.growth", 0)
                .goal(Goal::AtMost(0.0), " KiB"),
        );
        rows.push(row(&s, "VmHWM at exit (KiB)", "s7.hwm_end", 0));
        rows.push(
            row(&s, "VmHWM growth while draining (KiB)", "s7.hwm_growth", 0)
                .goal(Goal::AtMost(0.0), " KiB"),
        );
        rows.push(row(&s, "RSS samples taken while draining", "s7.samples", 0));
    }

    let _ = writeln!(w, "SUMMARY_PLACEHOLDER\n");
    let _ = writeln!(w, "### Figures against targets\n");
    let _ = writeln!(
        w,
        "| Scenario | Metric | Median | Range over runs | Target | Result |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---|---|");
    let mut last_scen = String::new();
    for r in &rows {
        let scen = if r.scen == last_scen {
            ""
        } else {
            r.scen.as_str()
        };
        last_scen = r.scen.clone();
        let (median, range) = match (stats.median(r.key), stats.range(r.key)) {
            (Some(m), Some((lo, hi))) => (
                num(m, r.dec),
                format!(
                    "{} – {} ({} runs)",
                    num(lo, r.dec),
                    num(hi, r.dec),
                    stats.len(r.key)
                ),
            ),
            _ => ("no data".into(), "—".into()),
        };
        let (target, result) = match (r.goal, stats.median(r.key)) {
            (Some(g), Some(m)) => {
                let (ok, text) = g.judge(m, r.dec, r.unit);
                tally.0 += 1;
                tally.1 += usize::from(!ok);
                if !ok {
                    misses.push(format!(
                        "{} — {}: median {} against {}: {text}.",
                        r.scen,
                        r.metric,
                        num(m, r.dec),
                        g.text(r.dec, r.unit)
                    ));
                }
                (
                    g.text(r.dec, r.unit),
                    if ok { text } else { format!("**{text}**") },
                )
            }
            (Some(g), None) => (g.text(r.dec, r.unit), "ERROR: no data".into()),
            (None, _) => ("—".into(), "".into()),
        };
        let _ = writeln!(
            w,
            "| {scen} | {} | {median} | {range} | {target} | {result} |",
            r.metric
        );
    }
    let _ = writeln!(w);

    if on(8) {
        let _ = writeln!(w, "### 8. Side by side with Redis\n");
        match &meta.redis {
            Err(why) => {
                let _ = writeln!(w, "Skipped: {why}.\n");
            }
            Ok(version) => {
                let _ = writeln!(
                    w,
                    "A private `{version}` on a free loopback port (`--save '' --appendonly no \
                     --daemonize no`, `--maxclients` raised to hold the idle crowd), pinned like \
                     drainport, driven by the same client workers with inline `PING\\r\\n` and \
                     checked for `+PONG\\r\\n`. The two servers take turns run by run.\n"
                );
                let _ = writeln!(
                    w,
                    "| Metric | drainport | Redis | drainport ÷ Redis | Target | Result |"
                );
                let _ = writeln!(w, "|---|---:|---:|---:|---|---|");
                let redis_rows: [RedisRow; 13] = [
                    (
                        "1. RSS per idle connection (bytes)",
                        "s1.bpc",
                        "r1.bpc",
                        "x1.bpc",
                        1,
                        None,
                    ),
                    (
                        "2. ping-pong requests/s",
                        "s2.rate",
                        "r2.rate",
                        "x2.rate",
                        0,
                        Some(Goal::AtLeast(1.0)),
                    ),
                    (
                        "2. ping-pong latency p50 (µs)",
                        "s2.p50",
                        "r2.p50",
                        "x2.p50",
                        1,
                        None,
                    ),
                    (
                        "2. ping-pong latency p99 (µs)",
                        "s2.p99",
                        "r2.p99",
                        "x2.p99",
                        1,
                        None,
                    ),
                    (
                        "2. ping-pong server user CPU per request (µs)",
                        "s2.user",
                        "r2.user",
                        "x2.user",
                        3,
                        Some(Goal::AtMost(0.4)),
                    ),
                    (
                        "2. ping-pong server user+system CPU per request (µs)",
                        "s2.total",
                        "r2.total",
                        "x2.total",
                        3,
                        Some(Goal::AtMost(1.0)),
                    ),
                    (
                        "2. ping-pong: server on CPU (% of the window)",
                        "s2.sbusy",
                        "r2.sbusy",
                        "",
                        0,
                        None,
                    ),
                    (
                        "2. ping-pong: client worker on CPU (% of the window)",
                        "s2.cbusy",
                        "r2.cbusy",
                        "",
                        0,
                        None,
                    ),
                    (
                        "4. pipelined requests/s",
                        "s4.rate",
                        "r4.rate",
                        "x4.rate",
                        0,
                        Some(Goal::AtLeast(1.0)),
                    ),
                    (
                        "4. pipelined server user CPU per request (µs)",
                        "s4.user",
                        "r4.user",
                        "x4.user",
                        3,
                        Some(Goal::AtMost(0.4)),
                    ),
                    (
                        "4. pipelined server user+system CPU per request (µs)",
                        "s4.total",
                        "r4.total",
                        "x4.total",
                        3,
                        Some(Goal::AtMost(1.0)),
                    ),
                    (
                        "4. pipelined: server on CPU (% of the window)",
                        "s4.sbusy",
                        "r4.sbusy",
                        "",
                        0,
                        None,
                    ),
                    (
                        "4. pipelined: client worker on CPU (% of the window)",
                        "s4.cbusy",
                        "r4.cbusy",
                        "",
                        0,
                        None,
                    ),
                ];
                for (metric, ours, theirs, ratio, dec, goal) in redis_rows {
                    let show = |k: &str| stats.median(k).map_or("no data".into(), |m| num(m, dec));
                    let rm = stats.median(ratio);
                    let (target, result) = match (goal, rm) {
                        (Some(g), Some(m)) => {
                            let (ok, text) = g.judge(m, 2, "x");
                            tally.0 += 1;
                            tally.1 += usize::from(!ok);
                            if !ok {
                                misses.push(format!(
                                    "8. vs Redis — {metric}: drainport {} vs Redis {}, ratio {} against {}: {text}.",
                                    show(ours), show(theirs), num(m, 2), g.text(1, "x")
                                ));
                            }
                            (
                                g.text(1, "x"),
                                if ok { text } else { format!("**{text}**") },
                            )
                        }
                        (Some(g), None) => (g.text(1, "x"), "ERROR: no data".into()),
                        (None, _) => ("—".into(), String::new()),
                    };
                    let ratio_text = if ratio.is_empty() {
                        "—".to_owned()
                    } else {
                        rm.map_or("no data".into(), |m| {
                            let (lo, hi) = stats.range(ratio).unwrap_or((m, m));
                            format!("{} ({} – {})", ratio_num(m), ratio_num(lo), ratio_num(hi))
                        })
                    };
                    let _ = writeln!(
                        w,
                        "| {metric} | {} | {} | {ratio_text} | {target} | {result} |",
                        show(ours),
                        show(theirs)
                    );
                }
                let _ = writeln!(w);
                let mut pooled = Vec::new();
                for (scen, label) in [("2", "ping-pong"), ("4", "pipelined")] {
                    let (Some(ours), Some(theirs)) = (
                        stats.pooled_cpu(&format!("s{scen}")),
                        stats.pooled_cpu(&format!("r{scen}")),
                    ) else {
                        continue;
                    };
                    let user_ticks = stats.median(&format!("s{scen}.uticks")).unwrap_or(0.0);
                    pooled.push(format!(
                        "{label}: user {} vs {} µs, ratio {}; user+system {} vs {} µs, ratio {} \
                         (drainport's user time is about {} ticks per run)",
                        num(ours.0, 3),
                        num(theirs.0, 3),
                        ratio_num(ours.0 / theirs.0),
                        num(ours.1, 3),
                        num(theirs.1, 3),
                        ratio_num(ours.1 / theirs.1),
                        num(user_ticks, 0)
                    ));
                }
                if !pooled.is_empty() {
                    let _ = writeln!(
                        w,
                        "The kernel splits CPU time into user and system by sampling at each \
                         clock tick, so a run's user time of a few dozen ticks carries a \
                         sampling error of roughly one over its square root (about ±20% at 25 \
                         ticks); hence the wide per-run range of the user CPU ratios. Pooled \
                         over all runs (ticks summed, then divided by all requests), server CPU \
                         per request, drainport vs Redis: {}.\n",
                        pooled.join("; ")
                    );
                }
            }
        }
    }

    if on(5) {
        let _ = writeln!(w, "### 5. Syscall breakdown\n");
        match &meta.perf {
            Err(why) => {
                let _ = writeln!(w, "Skipped: {why}.\n");
            }
            Ok(_) => {
                let mut sc: Vec<(String, f64)> = stats
                    .with_prefix("s5.sc.")
                    .filter_map(|k| Some((k["s5.sc.".len()..].to_owned(), stats.median(k)?)))
                    .collect();
                sc.sort_by(|a, b| b.1.total_cmp(&a.1));
                let _ = writeln!(
                    w,
                    "`perf stat -e 'syscalls:sys_enter_*' -p <pid>` on a fresh server, counting \
                     only during the measured window of a ping-pong run (the client worker \
                     enables perf after its warm-up and disables it at the end), divided by \
                     the {} requests completed in that window (median). Per request:\n",
                    stats.median("s5.reqs").map_or("?".into(), |r| num(r, 0))
                );
                let _ = writeln!(w, "| Syscall | Per request |");
                let _ = writeln!(w, "|---|---:|");
                for (name, per) in sc.iter().take(10) {
                    let _ = writeln!(w, "| {name} | {} |", num(*per, 4));
                }
                let _ = writeln!(w);
                if misses.iter().any(|m| m.starts_with("5.")) {
                    let top: Vec<String> = sc
                        .iter()
                        .filter(|(n, _)| {
                            !n.starts_with("epoll_wait") && !n.starts_with("epoll_pwait")
                        })
                        .take(4)
                        .map(|(n, p)| format!("{n} {}", num(*p, 3)))
                        .collect();
                    misses.push(format!("5. Syscalls are dominated by: {}.", top.join(", ")));
                }
            }
        }
    }

    add_context(&mut misses, stats);
    let _ = writeln!(w, "### Misses\n");
    if misses.is_empty() && errors.is_empty() {
        let _ = writeln!(w, "None: every measured figure meets its target.\n");
    }
    for m in &misses {
        let _ = writeln!(w, "- {m}");
    }
    if !misses.is_empty() {
        let _ = writeln!(w);
    }
    if !errors.is_empty() {
        let _ = writeln!(w, "### Errors\n");
        for e in errors {
            let _ = writeln!(w, "- {e}");
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "### How it is measured\n");
    let _ = writeln!(
        w,
        "The bench starts the release binary (`drainport -q 127.0.0.1:0`) and reads its port \
         from the `listening on` line. Clients are separate processes (the bench binary \
         re-executed as a worker), each a single-threaded `mio` loop; the server runs on CPU 0, \
         the clients, the driver and perf on CPU 1. Every reply is read and compared byte for \
         byte: `<line>: from <pid>\\n` for drainport, `+PONG\\r\\n` for Redis; one wrong reply \
         fails the run.\n"
    );
    let _ = writeln!(
        w,
        "1. VmRSS of a fresh server, then the crowd is opened by 4 worker processes bound to \
         127.0.0.2–127.0.0.5 (128 connects in flight each); each connection sends one probe \
         line and checks its reply, then VmRSS and VmHWM are read again. \
         Bytes per connection = ΔVmRSS ÷ connections.\n\
         2. 50 connections, one line in flight each; latency is send-to-checked-reply at the \
         client. Server CPU comes from `/proc/<pid>/stat` utime and stime read at the edges of \
         the measured window, divided by the requests completed in it.\n\
         3. As 2, with scenario 1's idle crowd still connected, on the same server just \
         before its run of 2; the ratio is taken run by run.\n\
         4. As 2 with 16 lines in flight per connection, written together.\n\
         5. As 2 on a fresh server under `perf stat`, started with its events disabled; the \
         client worker enables them through perf's control pipe when its warm-up ends and \
         disables them when its measured window ends, so only steady-state requests count.\n\
         6. 50 loops, each: non-blocking connect from one of 127.0.0.10–17, one line, check the \
         reply, close; connections per second in the measured window.\n\
         7. A fresh server holding the drain crowd gets SIGHUP; 200 ms later (after its \
         listener has retired) the workers close every connection at once. Exit is seen \
         through a pidfd; the time from the last client `close()` (CLOCK_MONOTONIC, reported \
         by the workers) to the exit is reported. A thread samples VmRSS and VmHWM about every \
         millisecond from the signal to the exit. A second drain per run closes all clients \
         but one, waits until the server's descriptor count shows it holds only that one, \
         then closes it alone and times the exit the same way.\n\
         8. Redis runs 1, 2 and 4 in the same run, under the same pinning and client.\n"
    );
    let _ = writeln!(
        w,
        "CPU times in `/proc/<pid>/stat` are in clock ticks (10 ms); their sum tracks the \
         scheduler's exact run time, but the split into user and system is sampled once per \
         tick, so per-request user CPU varies by tens of percent from run to run ({} s \
         windows). The server's time on CPU comes from `/proc/<pid>/schedstat`.",
        meta.plan.secs
    );
    let summary = format!(
        "**{} of {} targets met, {} missed** (see Misses below){}.",
        tally.0 - tally.1,
        tally.0,
        tally.1,
        if errors.is_empty() {
            String::new()
        } else {
            format!("; {} scenario runs failed (see Errors)", errors.len())
        }
    );
    out.replacen("SUMMARY_PLACEHOLDER", &summary, 1)
}
