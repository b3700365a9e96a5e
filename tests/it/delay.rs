//! Rolling restarts over a long round trip, through the delay bed
//! (`benches/delaybed/`): a client and a server namespace joined by a relay
//! that delays every packet. Servers run as uid 65534, as in production;
//! `net.ipv4.tcp_migrate_req` stays 0, the kernel's default, so nothing
//! but drainport itself keeps handshakes in flight at a HUP alive.
//!
//! Each test needs root, `/dev/net/tun`, `ip` and `setpriv`, and skips
//! with the reason otherwise.

use std::time::{Duration, Instant};

use crate::delaybed::rolling::{self, Case, Outcome};
use crate::delaybed::servers::Binary;
use crate::delaybed::unavailable;
use crate::util::{BIN, skip};

/// Runs `case` with servers as uid 65534, or returns `None` after saying
/// why the test is skipped.
fn run(case: &Case) -> Option<Outcome> {
    if let Some(reason) = unavailable(true) {
        skip(&reason);
        return None;
    }
    let bin = Binary::prepare(BIN, true).expect("copy the binary for uid 65534");
    let started = Instant::now();
    let outcome = rolling::run(&bin, case).unwrap_or_else(|e| panic!("the delay bed failed: {e}"));
    eprintln!(
        "delay bed, {:?} one way, took {:.1?}: {}",
        case.delay,
        started.elapsed(),
        outcome.summary()
    );
    Some(outcome)
}

/// No short connection failed, no long-lived client was cut or went
/// unanswered, and every server exited 0 by itself.
#[track_caller]
fn assert_nothing_lost(case: &Case, outcome: &Outcome) {
    let load = &outcome.load;
    let long = &load.long;
    assert!(
        load.failed_total() == 0
            && long.cut == 0
            && outcome.long_ready == case.long_lived
            && long.bad_replies == 0
            && long.missing == 0
            && outcome.bad_exits.is_empty()
            && load.attempted > 0,
        "{} restarts at {} ms one way ({} ms round trip), {} connections/s, {} long-lived clients: \
         {} of {} connections failed, by kind: {}; {} long-lived clients cut {:?}\n{}",
        case.restarts,
        case.delay.as_millis(),
        case.rtt().as_millis(),
        case.rate,
        case.long_lived,
        load.failed_total(),
        load.attempted,
        load.failed_by_kind(),
        long.cut,
        long.cuts,
        outcome.summary(),
    );
}

fn small(delay: Duration) -> Case {
    Case {
        restarts: 5,
        rate: 50.0,
        long_lived: 5,
        ..Case::new(delay)
    }
}

/// The bed itself, with no delay: the same restarts lose nothing.
#[test]
fn restarts_without_delay_lose_no_connection() {
    let case = small(Duration::ZERO);
    if let Some(outcome) = run(&case) {
        assert_nothing_lost(&case, &outcome);
    }
}
