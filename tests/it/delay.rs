//! Rolling restarts over a long round trip, through the delay bed
//! (`benches/delaybed/`): a client and a server namespace joined by a relay
//! that delays every packet. Servers run as uid 65534, as in production;
//! `net.ipv4.tcp_migrate_req` stays 0, the kernel's default, so nothing
//! but drainport itself keeps handshakes in flight at a HUP alive.
//!
//! Each test needs root, `/dev/net/tun`, `ip` and `setpriv`, and skips
//! with the reason otherwise.

use std::time::Duration;

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
    let bed = match rolling::prepare(case) {
        Ok(bed) => bed,
        Err(reason) => {
            skip(&format!("cannot build the delay bed: {reason}"));
            return None;
        }
    };
    let bin = Binary::prepare(BIN, true).expect("copy the binary for uid 65534");
    let outcome =
        rolling::run(bed, &bin, case).unwrap_or_else(|e| panic!("the delay bed failed: {e}"));
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

/// 300 ms each way: a handshake whose SYN reached a process just before
/// its HUP completes 600 ms later, and must still be served.
///
/// A server that closes its listeners a fixed 200 ms after the HUP resets
/// every handshake whose final ACK arrives later: about restarts x rate x
/// 1/2 x (RTT - 200 ms), some 50 `reset_after_connect` here, each answered
/// by two bare RSTs from the server namespace.
#[test]
fn restarts_over_a_600ms_round_trip_lose_no_connection() {
    let case = small(Duration::from_millis(300));
    if let Some(outcome) = run(&case) {
        assert_nothing_lost(&case, &outcome);
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
