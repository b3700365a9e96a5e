//! The soak's figures, its verdict, and the marked section of
//! docs/benchmarks.md it writes.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::Opts;
use crate::idle::IdleStats;
use crate::procs::{CLOSE_SPREAD_SECS, DRAIN_NOTICE, DRAIN_TIMEOUT_SECS};
use crate::traffic::{ChurnStats, HostileStats, KINDS};

/// RSS growth over the second half of the run that still counts as flat,
/// in KiB per minute.
///
/// drainport serves every connection from buffers shared by the loop, and
/// an idle connection is a 16-byte slot. The churn alone opens several
/// hundred thousand connections a minute, and the idle crowd takes about a
/// thousand drain notices a minute, so a leak of one byte per connection,
/// or of one small allocation per notice, reset or hostile session, grows
/// RSS by hundreds of KiB a minute. 16 KiB/min (four pages a minute) is far
/// below that, and above the allocator's wander: the heap's top moves by a
/// page or a few after a burst (a flood client's 64 KiB buffers, a storm of
/// reconnections), and slot 2 keeps gaining the clients that leave slot 1.
/// A limit of 1 % of RSS per 10 minutes (about 3 KiB/min here, less than a
/// page a minute) would fail on one such step rather than on a leak.
pub const RSS_SLOPE_LIMIT_KIB_MIN: f64 = 16.0;
/// A run shorter than this has too few samples after warm-up for a slope
/// to mean much; its RSS is judged against the warm-up high-water mark.
const SLOPE_MIN_WINDOW_MIN: f64 = 2.0;

const START: &str = "<!-- soak:start -->";
const END: &str = "<!-- soak:end -->";

pub struct Sample {
    /// Seconds since the load started.
    pub t: f64,
    pub rss_kib: u64,
    pub fds: usize,
    /// Slot 2's client count from its status line just before `fds`.
    pub clients: Option<usize>,
    /// Idle connections open and answered at that moment.
    pub held: usize,
}

/// One drained slot-1 generation.
pub struct Drain {
    pub pid: u32,
    pub hup_at: Instant,
    pub exited_after: Option<Duration>,
    pub clients_at_hup: Option<usize>,
    pub timed_out: bool,
    /// Its log ends with its exit line.
    pub said_exiting: bool,
}

/// Least-squares slope of (x, y).
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Whether RSS is flat, and the sentence that says why.
fn rss_verdict(slope: Option<f64>, window_min: f64, warm_max: u64, last: u64) -> (bool, String) {
    match slope {
        Some(s) if window_min >= SLOPE_MIN_WINDOW_MIN => (
            s <= RSS_SLOPE_LIMIT_KIB_MIN,
            format!(
                "least-squares slope {s:+.1} KiB/min over the second half, against a \
                 limit of {RSS_SLOPE_LIMIT_KIB_MIN} KiB/min (four pages a minute: far below \
                 what a leak of one byte per connection, or of one allocation per notice, \
                 would add at this churn, and above the allocator's page-sized steps; see \
                 `benches/soak/report.rs`)"
            ),
        ),
        _ => (
            last <= warm_max + warm_max / 10,
            format!(
                "second half too short for a slope; last RSS {last} KiB against \
                 the first half's maximum {warm_max} KiB + 10 %"
            ),
        ),
    }
}

/// Everything the report needs.
pub struct Figures<'a> {
    pub opts: &'a Opts,
    pub fd_limit: u64,
    pub duration: Duration,
    pub wall: Duration,
    pub ramp: Duration,
    pub starts: usize,
    pub restarts: usize,
    pub drains: &'a [Drain],
    pub samples: &'a [Sample],
    pub fd_baseline: usize,
    pub fd_final: Option<usize>,
    pub rss_end: u64,
    pub hwm_end: u64,
    pub idle: &'a IdleStats,
    pub churn: &'a ChurnStats,
    pub hostile: &'a HostileStats,
    /// Anything that went wrong outside the counters.
    pub problems: &'a [String],
}

fn ld(a: &AtomicU64) -> u64 {
    a.load(Ordering::SeqCst)
}

fn min_max<T: Ord + Copy + Default>(v: impl Iterator<Item = T> + Clone) -> (T, T) {
    (
        v.clone().min().unwrap_or_default(),
        v.max().unwrap_or_default(),
    )
}

impl Figures<'_> {
    /// The report's markdown and the verdict.
    pub fn render(&self) -> (String, bool) {
        let o = self.opts;
        let secs = self.duration.as_secs_f64();
        let half = secs / 2.0;
        let s = self.samples;

        // Memory.
        let second: Vec<(f64, f64)> = s
            .iter()
            .filter(|x| x.t >= half)
            .map(|x| (x.t / 60.0, x.rss_kib as f64))
            .collect();
        let slope = slope(&second);
        let warm_max = s.iter().filter(|x| x.t < half).map(|x| x.rss_kib).max();
        let rss_first = s.first().map_or(0, |x| x.rss_kib);
        let rss_last = s.last().map_or(0, |x| x.rss_kib);
        let rss_max = s
            .iter()
            .map(|x| x.rss_kib)
            .max()
            .unwrap_or(0)
            .max(self.rss_end);
        let (rss_flat, rss_why) = rss_verdict(
            slope,
            (secs - half) / 60.0,
            warm_max.unwrap_or(rss_max),
            rss_last,
        );
        let churn_ok = ld(&self.churn.ok);
        let churn_per_min = churn_ok as f64 / (secs / 60.0).max(1e-9);

        // Descriptors and clients.
        let fds_max = s.iter().map(|x| x.fds).max().unwrap_or(0);
        let clients2 = min_max(s.iter().filter_map(|x| x.clients));
        // Descriptors beyond one per client: the baseline, give or take the
        // connections accepted or closed between the status line and the
        // count. A descriptor leak would make it climb.
        let overhead = min_max(
            s.iter()
                .filter_map(|x| Some(x.fds as i64 - x.clients? as i64)),
        );
        let held = min_max(s.iter().map(|x| x.held));

        // Drains.
        let mut exited: Vec<Duration> = self.drains.iter().filter_map(|d| d.exited_after).collect();
        exited.sort();
        let not_exited: Vec<u32> = self
            .drains
            .iter()
            .filter(|d| d.exited_after.is_none())
            .map(|d| d.pid)
            .collect();
        let unclean: Vec<u32> = self
            .drains
            .iter()
            .filter(|d| d.exited_after.is_some() && !d.said_exiting)
            .map(|d| d.pid)
            .collect();
        let median_drain = exited.get(exited.len() / 2).copied().unwrap_or_default();
        let max_drain = exited.last().copied().unwrap_or_default();
        let at_hup = min_max(self.drains.iter().filter_map(|d| d.clients_at_hup));
        let timed_out = self.drains.iter().filter(|d| d.timed_out).count();

        // Verdict.
        let churn_failed = ld(&self.churn.failed);
        let failures = ld(&self.idle.failures) + churn_failed;
        let fd_ok = self.fd_final == Some(self.fd_baseline);
        let mut fails: Vec<String> = self.problems.to_vec();
        if failures > 0 {
            fails.push(format!("{failures} well-behaved client failures"));
        }
        if !not_exited.is_empty() {
            fails.push(format!(
                "drained generations that did not exit: {not_exited:?}"
            ));
        }
        if !unclean.is_empty() {
            fails.push(format!(
                "drained generations gone without their exit line: {unclean:?}"
            ));
        }
        if !fd_ok {
            fails.push(format!(
                "slot 2 ends with {:?} descriptors, baseline {}",
                self.fd_final, self.fd_baseline
            ));
        }
        if !rss_flat {
            fails.push(format!("RSS is not flat: {rss_why}"));
        }
        let pass = fails.is_empty();

        let mut command = String::from("cargo bench --bench soak");
        if !o.given.is_empty() {
            command = format!("{command} -- {}", o.given.join(" "));
        }
        let mut out = format!(
            "Measured {date} on {cores} cores ({cpu}), Linux {kernel}, with `{command}`.\n\n\
             Two drainport instances share one loopback port, both with `-q --drain-notice \
             {DRAIN_NOTICE} --drain-timeout {DRAIN_TIMEOUT_SECS} --close-spread \
             {CLOSE_SPREAD_SECS}`. Slot 1 is upgraded by `scripts/rolling-restart` every \
             {every} s. Slot 2 is started once and never restarted: its RSS and descriptors \
             are the leak check. Against them run {idle} idle connections (one mio loop, \
             sources 127.0.0.2-5, each probed once; on the drain notice a client leaves \
             within 2 s and reconnects), short clients on 3 threads (connect, one line, \
             check, close, without pause) and hostile clients on 2 threads, each session \
             at most 10 s. Slot 2 is sampled every 5 s. The bench's descriptor limit is \
             {fd_limit}.\n\n\
             | figure | value |\n|---|---|\n",
            date = testbed::report::command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            cores = thread::available_parallelism().map_or(0, |n| n.get()),
            cpu = cpu_model(),
            kernel = testbed::report::command_line("uname", &["-r"]),
            every = o.restart_every.as_secs_f64(),
            idle = o.idle,
            fd_limit = self.fd_limit,
        );
        let mut row = |k: &str, v: String| out += &format!("| {k} | {v} |\n");
        row(
            "load duration (whole bench)",
            format!(
                "{:.1} min ({:.1} min)",
                secs / 60.0,
                self.wall.as_secs_f64() / 60.0
            ),
        );
        row(
            "slot 1 restarts (processes started)",
            format!("{} ({})", self.restarts, self.starts),
        );
        row(
            "drained generations exited (with their exit line) / HUPed",
            format!(
                "**{} ({})** / {}",
                exited.len(),
                exited.len() - unclean.len(),
                self.drains.len()
            ),
        );
        row(
            "drain time, HUP to exit: median / max",
            format!(
                "{:.1} s / {:.1} s",
                median_drain.as_secs_f64(),
                max_drain.as_secs_f64()
            ),
        );
        row(
            "clients at HUP per drain: min / max",
            format!("{} / {}", at_hup.0, at_hup.1),
        );
        row(
            &format!("drains that reached the {DRAIN_TIMEOUT_SECS} s deadline"),
            timed_out.to_string(),
        );
        row(
            "short clients answered / failed",
            format!(
                "{churn_ok} ({:.0}/s) / **{churn_failed}**",
                churn_ok as f64 / secs.max(1e-9)
            ),
        );
        row(
            "short clients that got the drain notice (and their reply)",
            ld(&self.churn.notices).to_string(),
        );
        row(
            "idle clients connected before the load",
            format!(
                "{} in {:.1} s",
                ld(&self.idle.initial_ok),
                self.ramp.as_secs_f64()
            ),
        );
        row(
            "idle connections held: min / max over samples",
            format!("{} / {}", held.0, held.1),
        );
        row(
            "idle drain notices received",
            ld(&self.idle.notices).to_string(),
        );
        row(
            "idle reconnects ok / failed",
            format!(
                "{} / **{}**",
                ld(&self.idle.reconnect_ok),
                ld(&self.idle.reconnect_failed)
            ),
        );
        row(
            "idle clients closed at a drain deadline after the notice",
            ld(&self.idle.closed_after_notice).to_string(),
        );
        row(
            "well-behaved client failures (idle + short)",
            format!("**{failures}**"),
        );
        row(
            "slot 2 clients: min / max over samples",
            format!("{} / {}", clients2.0, clients2.1),
        );
        row(
            "slot 2 RSS: first sample / last sample / max / after the clients left",
            format!(
                "{rss_first} / {rss_last} / {rss_max} / {} KiB",
                self.rss_end
            ),
        );
        row("slot 2 VmHWM at the end", format!("{} KiB", self.hwm_end));
        row(
            "slot 2 RSS slope over the second half (least squares)",
            match slope {
                Some(k) => format!(
                    "**{k:+.2} KiB/min** ({} samples; {:+.3} bytes per 1000 short connections)",
                    second.len(),
                    k * 1024.0 * 1000.0 / churn_per_min.max(1.0)
                ),
                None => format!("- ({} samples)", second.len()),
            },
        );
        row(
            "slot 2 descriptors minus clients: min / max over samples",
            format!("{} / {}", overhead.0, overhead.1),
        );
        row(
            "slot 2 descriptors: baseline / max / after the clients left",
            format!(
                "{} / {fds_max} / **{}**",
                self.fd_baseline,
                self.fd_final.map_or("?".into(), |f| f.to_string())
            ),
        );
        out += "\n| hostile client | sessions | as documented | other | documented behaviour |\n\
                |---|---|---|---|---|\n";
        for (kind, ks) in KINDS.iter().zip(&self.hostile.kinds) {
            out += &format!(
                "| {} | {} | {} | {} | {} |\n",
                kind.describe(),
                ld(&ks.sessions),
                ld(&ks.documented),
                ld(&ks.other),
                kind.expected()
            );
        }
        out += &format!(
            "\nThe most a flood client wrote before the server stopped reading it: {} KiB \
             (kernel socket buffers on both sides plus `--max-output`).\n\n",
            ld(&self.hostile.flood_max_kib)
        );
        out += &format!(
            "RSS: {rss_why}: {}.\n\n",
            if rss_flat { "flat" } else { "NOT flat" }
        );
        let kept: Vec<String> = [&self.idle.failure_log, &self.churn.failure_log]
            .iter()
            .flat_map(|l| l.lock().map(|l| l.clone()).unwrap_or_default())
            .take(10)
            .collect();
        if !kept.is_empty() {
            out += "First well-behaved failures:\n\n";
            for m in kept {
                out += &format!("- `{m}`\n");
            }
            out += "\n";
        }
        if pass {
            out += "**PASS**: no well-behaved client failed, every drained generation exited, \
                    slot 2 came back to its baseline descriptors, and its RSS is flat.\n";
        } else {
            out += &format!("**FAIL**: {}.\n", fails.join("; "));
        }
        (out, pass)
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Replaces the text between the soak markers in `path`, and nothing else.
/// Without markers, a `## Soak` section holding them is appended; without
/// the file, it is created with that section alone.
pub fn write_section(path: &Path, body: &str) -> Result<(), String> {
    testbed::report::write_marked(path, START, END, body, |doc, section| {
        let sep = match doc.len() {
            0 => "",
            _ if doc.ends_with("\n\n") => "",
            _ if doc.ends_with('\n') => "\n",
            _ => "\n\n",
        };
        Some(format!("{doc}{sep}## Soak\n\n{section}\n"))
    })
}
