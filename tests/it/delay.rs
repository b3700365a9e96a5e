//! Rolling restarts over a long round trip, through the delay bed
//! (`benches/delaybed/`): a client and a server namespace joined by a relay
//! that delays every packet. Servers run as uid 65534, as in production;
//! `net.ipv4.tcp_migrate_req` stays 0, the kernel's default, so nothing
//! but drainport itself keeps handshakes in flight at a HUP alive.
//!
//! Each test needs root, `/dev/net/tun`, `ip` and `setpriv`, and skips
//! with the reason otherwise.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::delaybed::bed::Bed;
use crate::delaybed::relay::Link;
use crate::delaybed::rolling::{self, Case, Kind, Outcome, PORT};
use crate::delaybed::servers::{Binary, Serve, Server};
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
    let mut bin = Binary::prepare(BIN, true).expect("copy the binary for uid 65534");
    if !case.steering {
        if let Err(reason) = bin.build_shim() {
            skip(&reason);
            return None;
        }
    }
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

/// On a kernel that does not steer by CPU tag (Linux 5.14 to 6.1, emulated
/// by the shim that leaves the tags unset), 300 ms each way: processes that
/// bind their own listeners keep receiving new clients while they drain,
/// and reset the handshakes in flight when their listeners close; the same
/// restarts with each new process taking over the listeners of the one it
/// replaces close no listener, and lose nothing. The plain drain runs first,
/// as the control: it shows that this bed, on this run, produces the loss.
#[test]
fn takeover_loses_nothing_without_steering_where_a_plain_drain_loses() {
    let plain = Case {
        steering: false,
        ..small(Duration::from_millis(300))
    };
    let Some(lost) = run(&plain) else {
        return;
    };
    assert!(
        lost.load.failed_total() > 0,
        "without steering, plain drains lost nothing, so this run shows nothing: {}",
        lost.summary()
    );
    let taken = Case {
        kind: Kind::Takeover,
        ..plain
    };
    if let Some(outcome) = run(&taken) {
        assert_eq!(outcome.protection, "takeover", "{}", outcome.summary());
        assert_nothing_lost(&taken, &outcome);
    }
}

/// Whether the server namespace holds a handshake in flight (SYN_RECV) on
/// the bed's port, from the kernel's table as a thread in it sees it.
fn handshake_in_flight(bed: &Bed) -> bool {
    let port = format!(":{PORT:04X} ");
    bed.server
        .run(move || std::fs::read_to_string("/proc/thread-self/net/tcp").unwrap_or_default())
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.len() > 3 && format!("{} ", fields[1]).ends_with(&port) && fields[3] == "03"
        })
}

/// One client whose handshake takes longer than the handshake window
/// (2.5 s each way: its final ACK reaches the server 7.5 s after its
/// connect, 5 s after its SYN) meets a release. Returns what it read, or
/// how it failed, and the old server's lines.
fn a_late_handshake_across(
    takeover: bool,
    bed: &Bed,
    bin: &Binary,
) -> (Result<String, String>, Vec<String>) {
    let addr = SocketAddr::from((bed.server_ip, PORT));
    let mut old = Server::start(&bed.server, bin, Serve::Bind(addr), true).unwrap();
    old.wait_listening(Duration::from_secs(10)).unwrap();
    let client = bed.client.spawn(move || -> Result<String, String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(b"late\n").map_err(|e| e.to_string())?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 256];
        while !reply.ends_with(b"\n") || reply.iter().filter(|&&b| b == b'\n').count() < 2 {
            match stream.read(&mut buf) {
                Ok(0) => {
                    return Err(format!(
                        "end of stream after {:?}",
                        String::from_utf8_lossy(&reply)
                    ));
                }
                Ok(n) => reply.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(String::from_utf8_lossy(&reply).into_owned())
    });
    // The SYN has reached the server; its handshake is in flight.
    let start = Instant::now();
    while !handshake_in_flight(bed) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no handshake in flight"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let serve = if takeover {
        Serve::TakeOver {
            addr,
            from: old.pid,
        }
    } else {
        Serve::Bind(addr)
    };
    let mut new = Server::start(&bed.server, bin, serve, true).unwrap();
    new.wait_listening(Duration::from_secs(10)).unwrap();
    old.hup();
    let outcome = client
        .join()
        .expect("the client thread")
        .expect("the client namespace");
    if let Ok(reply) = &outcome {
        assert_eq!(reply, &format!("late\n: from {}\n", new.pid));
    }
    old.wait_exit(Duration::from_secs(20));
    new.hup();
    new.wait_exit(Duration::from_secs(20));
    (outcome, old.notes.clone())
}

/// No handshake is reset however long its round trip, with takeover: the
/// old process closes no listening socket, so a handshake still in flight
/// when it drains completes on the successor, 5 s later. A plain drain
/// waits 4 s at most (the handshake window) and then closes its listeners
/// on it: that client is reset, on a kernel that steers too. The plain
/// drain runs first, as the control.
#[test]
fn a_handshake_longer_than_the_window_survives_a_takeover() {
    if let Some(reason) = unavailable(true) {
        return skip(&reason);
    }
    let bed = match Bed::up(Link {
        delay: Duration::from_millis(2500),
        loss_percent: 0.0,
        seed: 1,
    }) {
        Ok(bed) => bed,
        Err(reason) => return skip(&format!("cannot build the delay bed: {reason}")),
    };
    bed.server
        .set_sysctl("net.ipv4.tcp_migrate_req", "0")
        .unwrap();
    let bin = Binary::prepare(BIN, true).expect("copy the binary for uid 65534");
    let (plain, notes) = a_late_handshake_across(false, &bed, &bin);
    assert!(
        plain.is_err(),
        "a plain drain kept a 5 s handshake: {plain:?}"
    );
    assert!(
        notes
            .iter()
            .any(|l| l.contains("with 1 handshake still in flight after 4s")),
        "{notes:?}"
    );
    let (taken, notes) = a_late_handshake_across(true, &bed, &bin);
    assert!(
        taken.is_ok(),
        "reset across a takeover: {taken:?}; {notes:?}"
    );
}
