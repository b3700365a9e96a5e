//! `cargo bench --bench soak`: drainport under a long, mixed load.
//!
//! Two instances share one loopback port. Slot 1 is upgraded by
//! `scripts/rolling-restart` every 30 s; slot 2 is started once and never
//! restarted, and it is the process whose memory and descriptors are
//! watched. Against them run, all at once:
//!
//! - 10000 idle connections on one mio loop (`soak/idle.rs`), from
//!   127.0.0.2..=127.0.0.5, each probed once and then quiet, leaving and
//!   reconnecting within 2 s of a drain notice;
//! - short clients on three threads: connect, one line, check, close;
//! - hostile clients on two threads (`soak/traffic.rs`): slowloris, a flood
//!   that never reads, an oversized line, resets, half-closes and binary.
//!
//! Every 5 s it samples slot 2's RSS and open descriptors. At the end it
//! closes every client, checks that slot 2 is back to the descriptors it
//! had before its first client, that every drained generation exited, that
//! no well-behaved client failed and that RSS is flat, then drains both
//! slots. The report is printed and written between the soak markers of
//! docs/benchmarks.md. The exit status is 1 on FAIL.
//!
//! Flags (after `--`): `--minutes N` (default 10), `--restart-every SECS`
//! (default 30; 15 with `--quick`), `--quick` (1 minute, 2000 idle
//! clients; the report is not written unless `--write` is given too),
//! `--idle N`, `--no-write`. Other arguments (cargo passes
//! `--bench`) are ignored. Every loop is bounded in time, every wait has a
//! deadline, and every process started is killed by pid if the bench stops
//! early.

mod idle;
mod procs;
mod report;
mod run;
mod traffic;

use std::time::Duration;

/// xorshift64*: enough randomness for delays, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

pub struct Opts {
    pub minutes: f64,
    pub restart_every: Duration,
    pub idle: usize,
    pub write: bool,
    /// The flags as given, for the report's command line.
    pub given: Vec<String>,
}

fn parse_args() -> Result<Opts, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mut o = Opts {
        minutes: if quick { 1.0 } else { 10.0 },
        restart_every: Duration::from_secs(if quick { 15 } else { 30 }),
        idle: if quick { 2000 } else { 10_000 },
        // A quick run is a check, not a measurement worth keeping.
        write: !quick,
        given: Vec::new(),
    };
    let mut i = 0;
    while i < args.len() {
        let value = |i: usize| -> Result<f64, String> {
            args.get(i + 1)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| format!("{} needs a positive number", args[i]))
        };
        match args[i].as_str() {
            "--minutes" => {
                o.minutes = value(i)?;
                o.given.extend_from_slice(&args[i..i + 2]);
                i += 1;
            }
            "--restart-every" => {
                o.restart_every = Duration::from_secs_f64(value(i)?.max(1.0));
                o.given.extend_from_slice(&args[i..i + 2]);
                i += 1;
            }
            "--idle" => {
                o.idle = value(i)? as usize;
                o.given.extend_from_slice(&args[i..i + 2]);
                i += 1;
            }
            "--quick" => o.given.push(args[i].clone()),
            "--write" => {
                o.write = true;
                o.given.push(args[i].clone());
            }
            "--no-write" => {
                o.write = false;
                o.given.push(args[i].clone());
            }
            "--bench" => {}
            other => eprintln!("soak: ignoring argument {other:?}"),
        }
        i += 1;
    }
    // The bench holds the idle crowd plus a few dozen descriptors of its own
    // under RLIMIT_NOFILE; the servers, which inherit it, hold as many.
    if o.idle > 15_000 {
        return Err(format!(
            "--idle {} is more than the 15000 the fd limit allows",
            o.idle
        ));
    }
    Ok(o)
}

fn main() {
    let code = match parse_args().and_then(|o| run::soak(&o)) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("soak: {e}");
            2
        }
    };
    std::process::exit(code);
}
