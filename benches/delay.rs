//! `cargo bench --bench delay`: rolling restarts over long round trips and
//! lossy links, through the delay bed (`benches/delaybed/`).
//!
//! Each case builds a fresh bed (a client and a server namespace joined by
//! a relay that delays every packet one way and drops a share), sets
//! `net.ipv4.tcp_migrate_req` in the server namespace, and runs R rolling
//! restarts of drainport under short connections at a fixed rate plus
//! long-lived clients; see `delaybed/rolling.rs` for the steps and
//! `delaybed/churn.rs` for how each failure is classified. One markdown
//! row per case goes to stdout as it finishes.
//!
//! Flags (after `--`); those marked "list" take comma lists, and every
//! combination runs:
//!   --delay-ms LIST   one-way delays, ms (default 0,50,150,300)
//!   --loss LIST       loss, percent of packets each way (default 0)
//!   --migrate LIST    net.ipv4.tcp_migrate_req in the server ns (default 0)
//!   --restarts LIST   rolling restarts per case (default 20; 0 = baseline)
//!   --rate LIST       new short connections per second (default 200)
//!   --long LIST       long-lived clients (default 20)
//!   --pause-ms N      pause after each HUP (default 750)
//!   --in-flight N     short connections in flight at most (default 200)
//!   --seed N          seeds the loss draws (default 1)
//!   --servers LIST    how the servers get their sockets: `bound` (each
//!                     binds its own), `shared` (the bench holds one and
//!                     passes it to each, LISTEN_FDS) or `takeover` (each
//!                     new one takes over the sockets of the one it
//!                     replaces, --take-over) (default bound)
//!   --tags LIST       `on`: this kernel; `off`: CPU tags never set, as on
//!                     a kernel that ignores them (Linux 5.14 to 6.1), by
//!                     the LD_PRELOAD shim in delaybed/nosteer.c, built
//!                     here with `cc` (default on)
//!   --shrink          no successor: restarts+1 servers start, and each
//!                     HUP leaves one fewer; with takeover, releases go
//!                     from 3 processes to 2 and back to 3 in turn, the
//!                     third old one leaving with no successor
//!   --as-root         run the servers as root, not as uid 65534
//!
//! Needs root, /dev/net/tun, `ip` and (unless --as-root) `setpriv`;
//! without them it prints `skipped: ...` and exits 0.

// Each shared module has parts this report does not use (the bed's
// helpers for the tests, the marked-section writer).
#[allow(dead_code)]
#[path = "delaybed/mod.rs"]
mod delaybed;
#[allow(dead_code)]
#[path = "shared/num.rs"]
mod num;
#[allow(dead_code)]
#[path = "shared/mod.rs"]
mod shared;

use std::time::Duration;

use delaybed::rolling::{self, Case, Kind, Outcome};
use delaybed::servers::Binary;
use num::num;

const BIN: &str = env!("CARGO_BIN_EXE_drainport");

struct Options {
    delays: Vec<f64>,
    losses: Vec<f64>,
    migrates: Vec<u8>,
    restarts: Vec<usize>,
    rates: Vec<f64>,
    longs: Vec<usize>,
    pause_ms: u64,
    in_flight: usize,
    seed: u64,
    kinds: Vec<Kind>,
    steering: Vec<bool>,
    shrink: bool,
    as_root: bool,
}

/// A comma list of words, each mapped by `word`.
fn words<T>(
    flag: &str,
    value: Option<&String>,
    word: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    value
        .split(',')
        .map(|w| word(w.trim()).ok_or_else(|| format!("{flag}: {w:?} is not one of its words")))
        .collect()
}

fn list<T: std::str::FromStr>(flag: &str, value: Option<&String>) -> Result<Vec<T>, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    value
        .split(',')
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| format!("{flag}: {v:?} is not a number"))
        })
        .collect()
}

fn one<T: std::str::FromStr>(flag: &str, value: Option<&String>) -> Result<T, String> {
    let mut all = list(flag, value)?;
    if all.len() != 1 {
        return Err(format!("{flag} takes one value"));
    }
    Ok(all.remove(0))
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        delays: vec![0.0, 50.0, 150.0, 300.0],
        losses: vec![0.0],
        migrates: vec![0],
        restarts: vec![20],
        rates: vec![200.0],
        longs: vec![20],
        pause_ms: 750,
        in_flight: 200,
        seed: 1,
        kinds: vec![Kind::Bound],
        steering: vec![true],
        shrink: false,
        as_root: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            // cargo bench passes --bench to every harness = false target.
            "--bench" => {}
            "--as-root" => o.as_root = true,
            "--shrink" => o.shrink = true,
            "--servers" => {
                o.kinds = words(flag, it.next(), |w| match w {
                    "bound" => Some(Kind::Bound),
                    "shared" => Some(Kind::Shared),
                    "takeover" => Some(Kind::Takeover),
                    _ => None,
                })?
            }
            "--tags" => {
                o.steering = words(flag, it.next(), |w| match w {
                    "on" => Some(true),
                    "off" => Some(false),
                    _ => None,
                })?
            }
            "--delay-ms" => o.delays = list(flag, it.next())?,
            "--loss" => o.losses = list(flag, it.next())?,
            "--migrate" => o.migrates = list(flag, it.next())?,
            "--restarts" => o.restarts = list(flag, it.next())?,
            "--rate" => o.rates = list(flag, it.next())?,
            "--long" => o.longs = list(flag, it.next())?,
            "--pause-ms" => o.pause_ms = one(flag, it.next())?,
            "--in-flight" => o.in_flight = one(flag, it.next())?,
            "--seed" => o.seed = one(flag, it.next())?,
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    if o.delays
        .iter()
        .chain(&o.losses)
        .chain(&o.rates)
        .any(|v| !v.is_finite() || *v < 0.0)
        || o.losses.iter().any(|&l| l > 100.0)
        || o.rates.contains(&0.0)
        || o.migrates.iter().any(|&m| m > 1)
    {
        return Err(
            "delays, losses (0-100) and rates (> 0) are non-negative numbers; --migrate is 0 or 1"
                .into(),
        );
    }
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "delay bench: {e}\nusage: cargo bench --bench delay -- [--delay-ms LIST] [--loss LIST] [--migrate LIST] [--restarts LIST] [--rate LIST] [--long LIST] [--pause-ms N] [--in-flight N] [--seed N] [--servers bound,shared,takeover] [--tags on,off] [--shrink] [--as-root]"
            );
            std::process::exit(2);
        }
    };
    if let Some(reason) = delaybed::unavailable(!o.as_root) {
        println!("skipped: {reason}");
        return;
    }
    let mut bin = match Binary::prepare(BIN, !o.as_root) {
        Ok(bin) => bin,
        Err(e) => {
            eprintln!("delay bench: {e}");
            std::process::exit(1);
        }
    };
    if o.steering.contains(&false) {
        if let Err(e) = bin.build_shim() {
            println!("skipped: --tags off: {e}");
            return;
        }
    }
    let shown: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|&a| a != "--bench")
        .collect();
    println!(
        "Measured {} on {} cores, Linux {}, commit {}, with\n`cargo bench --bench delay -- {}`\n",
        shared::command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        shared::command_line("uname", &["-r"]),
        shared::command_line(
            "git",
            &[
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "rev-parse",
                "--short",
                "HEAD"
            ]
        ),
        shown.join(" "),
    );
    println!(
        "A fresh bed per row; {} pause after each HUP; at most {} short connections in flight; \
         connect and reply deadlines 10 s; stalled = connect slower than RTT + 800 ms.\n",
        format_args!("{} ms", o.pause_ms),
        o.in_flight,
    );
    println!(
        "| servers | CPU tags | startup says | one-way delay (RTT) | loss | migrate_req | runs as | {} | attempted | conn/s | failed (by kind) \
         | stalled | long-lived cut | HUP→exit p50 / max | idle HUP→exit | relay: late > 2 ms / worst |",
        if o.shrink {
            "HUPs, no successor (takeover: releases 3→2→3)"
        } else {
            "restarts"
        }
    );
    println!("|{}", "---|".repeat(16));
    let mut details = Vec::new();
    let mut errors = 0;
    let setups: Vec<(Kind, bool)> = o
        .kinds
        .iter()
        .flat_map(|&k| o.steering.iter().map(move |&s| (k, s)))
        .collect();
    for &(kind, steering) in &setups {
        for &restarts in &o.restarts {
            for &migrate_req in &o.migrates {
                for &loss in &o.losses {
                    for &delay in &o.delays {
                        for &rate in &o.rates {
                            for &long_lived in &o.longs {
                                let case = Case {
                                    loss_percent: loss,
                                    migrate_req,
                                    restarts,
                                    rate,
                                    long_lived,
                                    pause: Duration::from_millis(o.pause_ms),
                                    max_in_flight: o.in_flight,
                                    seed: o.seed,
                                    kind,
                                    steering,
                                    shrink: o.shrink,
                                    ..Case::new(Duration::from_secs_f64(delay / 1000.0))
                                };
                                match rolling::prepare(&case)
                                    .and_then(|bed| rolling::run(bed, &bin, &case))
                                {
                                    Ok(out) => {
                                        println!("{}", row(&case, &bin, &out));
                                        details.push(detail(&case, &out));
                                    }
                                    Err(e) => {
                                        errors += 1;
                                        println!(
                                            "| {} | {} | | {} | {loss} % | {migrate_req} | {} | {restarts} | error: {e} |",
                                            kind.name(),
                                            tags_text(steering),
                                            delay_text(&case),
                                            bin.who()
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    println!("\nPer row:\n");
    for d in details {
        println!("- {d}");
    }
    if errors > 0 {
        std::process::exit(1);
    }
}

fn tags_text(steering: bool) -> &'static str {
    if steering {
        "this kernel's"
    } else {
        "ignored (shim)"
    }
}

fn delay_text(case: &Case) -> String {
    let d = case.delay.as_secs_f64() * 1e3;
    if d == 0.0 {
        "0".into()
    } else {
        format!("{} ms ({} ms)", num(d, 0), num(2.0 * d, 0))
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| {
        format!("{} ms", num(d.as_secs_f64() * 1e3, 0))
    })
}

fn row(case: &Case, bin: &Binary, out: &Outcome) -> String {
    let l = &out.load;
    let failed = l.failed_total();
    let failed = if failed == 0 {
        "0".to_owned()
    } else {
        format!("**{}** ({})", num(failed as f64, 0), l.failed_by_kind())
    };
    let (p50, max) = out.hup_to_exit_ms();
    let r = &out.relay;
    let packets = r.to_server.packets + r.to_client.packets;
    format!(
        "| {} | {} | {} | {} | {} % | {} | {} | {} | {} | {} | {} | {} | {}/{} | {} / {} ms | {} | {} of {} / {} ms{} |",
        case.kind.name(),
        tags_text(case.steering),
        out.protection,
        delay_text(case),
        case.loss_percent,
        out.migrate_req,
        bin.who(),
        case.restarts,
        num(l.attempted as f64, 0),
        num(l.rate(), 0),
        failed,
        num(l.stalled as f64, 0),
        l.long.cut,
        l.long.connected,
        num(p50, 0),
        num(max, 0),
        ms(out.idle_hup_to_exit),
        num(r.late() as f64, 0),
        num(packets as f64, 0),
        num(r.late_max().as_secs_f64() * 1e3, 1),
        if r.realtime { "" } else { " (no SCHED_FIFO)" },
    )
}

fn detail(case: &Case, out: &Outcome) -> String {
    let l = &out.load;
    let r = &out.relay;
    let q = |p| l.connect_quantile(p).map_or("-".into(), |v| num(v, 0));
    format!(
        "{} servers, CPU tags {}, {} one way, loss {} %, migrate_req {}: connect ms p50 {} / p99 {} / max {}; \
         {} pids answered; {} servers started, bad exits {:?}; long-lived {} lines sent, {} answered, \
         {} unanswered, {} bad; relay lost {} + {} packets, SYN {} / SYN-ACK {}, server RSTs {} ({} bare), \
         most queued {}; {:.1} s, machine {:.0} % busy, {:.1} % stolen",
        case.kind.name(),
        tags_text(case.steering),
        delay_text(case),
        case.loss_percent,
        out.migrate_req,
        q(0.5),
        q(0.99),
        q(1.0),
        l.pids,
        out.servers_started,
        out.bad_exits,
        l.long.sent,
        l.long.replies,
        l.long.missing,
        l.long.bad_replies,
        r.to_server.lost,
        r.to_client.lost,
        r.to_server.syn,
        r.to_client.syn_ack,
        r.to_client.rst,
        r.to_client.bare_rst,
        r.to_server.max_queue.max(r.to_client.max_queue),
        out.wall.as_secs_f64(),
        out.busy_percent,
        out.steal_percent,
    )
}
