//! Unit tests: hand-written cases, seeded random cases with a shrinker,
//! checks that each invariant can fail, and a replay of a fuzzer's crash.

use std::fmt::Write as _;

use std::time::Duration;

use super::case::{Case, Op, Then};
use super::driver::{Driver, Life};
use super::model::{Model, ModelStop, idle_line};
use super::wire::Mutation;
use super::{DRAINING, FUZZ_BUDGET, FUZZ_PER_CAPACITY, LATE, NOTICE};
use crate::conn::{DISCARD_LIMIT, READ_CHUNK};
use crate::test_rng::Rng;

/// Tries smaller versions of a failing case and returns the smallest that
/// still fails, for a reproducer a person can read.
fn shrink(case: &Case) -> Case {
    let mut best = case.clone();
    let mut improved = true;
    let mut tries = 0;
    while improved && tries < 10_000 {
        improved = false;
        let mut i = 0;
        while i < best.ops.len() {
            tries += 1;
            let mut candidate = best.clone();
            candidate.ops.remove(i);
            if candidate.run().is_err() {
                best = candidate;
                improved = true;
            } else {
                i += 1;
            }
        }
        for i in 0..best.ops.len() {
            for smaller in smaller_ops(&best.ops[i]) {
                tries += 1;
                let mut candidate = best.clone();
                candidate.ops[i] = smaller;
                if candidate.run().is_err() {
                    best = candidate;
                    improved = true;
                    break;
                }
            }
        }
    }
    best
}

fn smaller_ops(op: &Op) -> Vec<Op> {
    match op {
        Op::Send(data) if data.len() > 1 => (0..data.len())
            .map(|i| {
                let mut d = data.clone();
                d.remove(i);
                Op::Send(d)
            })
            .collect(),
        Op::SendLines { len, count } if *count > 1 => vec![Op::SendLines {
            len: *len,
            count: count / 2,
        }],
        Op::SendRun(len) if *len > 1 => vec![Op::SendRun(len / 2)],
        _ => Vec::new(),
    }
}

/// Renders a failure with the case that shows it, shrunk.
fn report(label: &str, case: &Case, failure: &str) -> String {
    let small = shrink(case);
    let mut text = format!("{label}: {failure}\n");
    if let Err(e) = small.run() {
        let _ = write!(text, "smallest failing case: {e}\n{small:#?}");
    }
    text
}

/// Cases per run. Each is fast in a debug build; together, timers included,
/// they take about two seconds.
const CASES: u64 = 3000;
/// Bytes a generated case may send: enough for lines past a read chunk,
/// small enough that thousands of cases stay quick.
const BUDGET: usize = 96 * 1024;
/// Bytes per byte of send buffer: a one-byte buffer still carries
/// hundreds of lines, yet settles in a few thousand rounds.
const PER_CAPACITY: usize = 1_500;

fn case_for(seed: u64) -> Case {
    // Spread the seeds over the generator's state; none may be 0.
    let mut rng = Rng(seed.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let len = rng.below(160) + 1;
    let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    Case::decode(&bytes, BUDGET, PER_CAPACITY)
}

#[test]
fn random_operation_sequences_keep_every_invariant() {
    for seed in 0..CASES {
        let case = case_for(seed);
        if let Err(failure) = case.run() {
            panic!(
                "{}",
                report(
                    &format!("seed {seed} (rerun: case_for({seed}))"),
                    &case,
                    &failure
                )
            );
        }
    }
}

fn case(max_line: usize, max_output: usize, capacity: usize, ops: Vec<Op>) -> Case {
    Case {
        max_line,
        telnet: false,
        max_output,
        capacity,
        idle: None,
        send: None,
        ops,
    }
}

#[test]
fn lines_split_anywhere_come_back_whole_and_in_order() {
    let ops = vec![
        Op::Send(b"ab".to_vec()),
        Op::Deliver(0xff),
        Op::Send(b"c\nd\r".to_vec()),
        Op::Send(b"\ne".to_vec()),
        Op::Deliver(0xff),
        Op::PeerRead(3),
        Op::Settle,
    ];
    assert_eq!(case(100, 100, 1000, ops).run(), Ok(()));
}

/// Telnet's Ctrl-C.
const CTRL_C: &[u8] = b"\xff\xf4\xff\xfd\x06";

fn telnet_case(max_line: usize, max_output: usize, capacity: usize, ops: Vec<Op>) -> Case {
    Case {
        telnet: true,
        ..case(max_line, max_output, capacity, ops)
    }
}

#[test]
fn telnet_answers_wait_behind_lines_held_back_by_the_output_limit() {
    // A hundred lines wait behind a 5-byte output limit and a 3-byte send
    // buffer when the Ctrl-C arrives, with a partial line before it and an
    // Are You There after; the model wants every reply, then WILL TM,
    // then the rest.
    let mut sent = b"l\n".repeat(100);
    sent.extend_from_slice(b"part");
    sent.extend_from_slice(CTRL_C);
    sent.extend_from_slice(b"ab\xff\xf6cd\n");
    let ops = vec![
        Op::Send(sent[..150].to_vec()),
        Op::Deliver(0xff),
        Op::Send(sent[150..].to_vec()),
        Op::Deliver(0xff),
        Op::PeerRead(7),
        Op::Deliver(0xff),
        Op::Settle,
    ];
    let c = telnet_case(16, 5, 3, ops);
    let mut driver = Driver::new(&c, Mutation::None);
    for op in &c.ops {
        driver.apply(op).unwrap();
    }
    driver.finish().unwrap();
    let tail: &[u8] = b"l\n~ok\n2\n\xff\xfb\x06[Yes]\r\nabcd\n~ok\n1\n";
    assert!(driver.received.ends_with(tail));
    assert!(!driver.received.windows(4).any(|w| w == b"part"));
}

#[test]
fn a_flood_of_telnet_commands_from_a_peer_that_never_reads_is_held_back() {
    // 20000 Are You There and 20000 refused options, each answered: the
    // answers count against the output limit like replies, so the
    // connection stops reading instead of queueing 230 KB of them.
    let mut flood = b"\xff\xf6".repeat(20_000);
    flood.extend_from_slice(&b"\xff\xfd\x01".repeat(20_000));
    let ops = vec![
        Op::Send(flood),
        Op::Deliver(0xff),
        Op::Pump,
        Op::Pump,
        Op::Deliver(0xff),
        Op::Settle,
    ];
    assert_eq!(telnet_case(100, 100, 64, ops).run(), Ok(()));
}

#[test]
fn the_telnet_model_takes_commands_out_in_order() {
    let mut m = Model::new(100, true);
    m.send(b"one\npa\xff\xf4\xff");
    m.send(b"\xfd\x06\xff\xfa\x18two\xff\xf0three\xff\xff\n");
    assert_eq!(m.out, b"~hi\none\n~ok\n1\n\xff\xfb\x06three\xff\n~ok\n2\n");
}

#[test]
fn a_slow_reader_with_a_tiny_send_buffer_gets_everything() {
    let ops = vec![
        Op::SendLines { len: 10, count: 50 },
        Op::Deliver(0xff),
        Op::PeerRead(7),
        Op::Deliver(0xff),
        Op::Pump,
        Op::Settle,
    ];
    assert_eq!(case(16, 5, 3, ops).run(), Ok(()));
}

#[test]
fn an_oversized_line_in_pieces_gets_the_error_then_a_close() {
    let mut ops = vec![Op::Send(b"ok\n".to_vec())];
    for _ in 0..30 {
        ops.push(Op::Send(b"yyy".to_vec()));
        ops.push(Op::Deliver(0xff));
    }
    ops.push(Op::Settle);
    assert_eq!(case(50, 1000, 1000, ops).run(), Ok(()));
}

#[test]
fn a_reset_with_output_blocked_ends_in_close() {
    for sticky in [false, true] {
        let ops = vec![
            Op::SendLines {
                len: 20,
                count: 100,
            },
            Op::Deliver(0xff),
            Op::PeerReset { sticky },
            Op::Settle,
        ];
        assert_eq!(case(100, 64, 10, ops).run(), Ok(()));
    }
}

#[test]
fn a_hard_stop_sends_pending_output_then_the_closing_line() {
    let ops = vec![
        Op::Send(b"a\nb\npartial".to_vec()),
        Op::Deliver(0xff),
        Op::HardStop,
        Op::Settle,
    ];
    assert_eq!(case(100, 100, 4, ops.clone()).run(), Ok(()));
    assert_eq!(case(100, 100, 1000, ops).run(), Ok(()));
}

/// Every flush is short but pending output never quite reaches zero,
/// as when each writable edge frees a little less than what is pending.
/// The bytes already sent must not pile up in front of the new replies.
/// The first case is the smallest the shrinker found; the second uses the
/// default limits and a 64 KiB send buffer.
#[test]
fn memory_stays_bounded_when_every_flush_is_short() {
    let smallest = case(
        4096,
        1000,
        1000,
        vec![Op::SendLines {
            len: 1000,
            count: 81,
        }],
    );
    assert_eq!(smallest.run(), Ok(()));
    let defaults = case(
        65536,
        65536,
        65536,
        vec![Op::SendLines {
            len: 1000,
            count: 600,
        }],
    );
    assert_eq!(defaults.run(), Ok(()));
}

/// The drain notice, and the protocol's word after it, land after the
/// replies already produced, ahead of those to lines still held back, and an
/// open connection never drops them. The first two drains find an even
/// number of lines answered, so the protocol stays; the third finds 41 and
/// closes, so the `q` after it is never answered.
#[test]
fn the_drain_notice_keeps_its_place_in_the_output() {
    let ops = vec![
        Op::Send(b"x\n".to_vec()),
        Op::SendLines { len: 10, count: 40 },
        Op::Deliver(0xff),
        Op::Notice,
        Op::PeerRead(25),
        Op::Notice,
        Op::Settle,
        Op::Notice,
        Op::Send(b"q\n".to_vec()),
        Op::Settle,
        Op::Notice,
    ];
    let c = case(100, 50, 30, ops);
    let mut driver = Driver::new(&c, Mutation::None);
    for op in &c.ops {
        driver.apply(op).unwrap();
    }
    let said = [NOTICE, DRAINING].concat();
    let notices = driver.received.windows(said.len());
    assert_eq!(notices.filter(|w| *w == said).count(), 3);
    assert_eq!(driver.model.stop, Some(ModelStop::Drained));
    driver.finish().unwrap();
    assert_eq!(driver.life, Life::Closed);
}

/// A protocol that closes at the drain while lines are held back behind
/// full output: the notice follows the replies already produced, the held
/// lines are never answered, the FIN goes out, and the close waits for the
/// peer's EOF.
#[test]
fn a_protocol_that_closes_at_the_drain_answers_nothing_more() {
    let ops = vec![
        Op::SendLines { len: 10, count: 40 },
        Op::Deliver(0xff),
        Op::Notice,
        Op::Settle,
    ];
    let c = case(100, 50, 30, ops);
    let mut driver = Driver::new(&c, Mutation::None);
    for op in &c.ops {
        driver.apply(op).unwrap();
    }
    let said = [NOTICE, DRAINING].concat();
    assert!(driver.received.ends_with(&said), "nothing after the drain");
    assert!(driver.wire.borrow().shut, "no FIN after the drain");
    assert_eq!(driver.life, Life::Open, "closed before the peer's EOF");
    driver.finish().unwrap();
    assert_eq!(driver.life, Life::Closed);
}

/// An ending connection waits for its peer's EOF, but not through more
/// than the discard limit of further input.
#[test]
fn an_ending_connection_stops_discarding_at_the_limit() {
    let ops = vec![
        Op::Send(b"q\n".to_vec()),
        Op::Settle,
        Op::SendRun(DISCARD_LIMIT + 2 * READ_CHUNK),
        Op::Settle,
    ];
    let c = case(100, 100, 1000, ops);
    let mut driver = Driver::new(&c, Mutation::None);
    for op in &c.ops {
        driver.apply(op).unwrap();
    }
    assert_eq!(driver.life, Life::Closed);
    assert!(driver.wire.borrow().shut, "no FIN before the close");
    assert!(!driver.wire.borrow().eof_read);
}

// The checks themselves: each must catch a defect planted in the socket.

#[test]
fn a_corrupted_byte_is_caught() {
    let c = case(100, 100, 100, vec![Op::Send(b"hi\n".to_vec()), Op::Settle]);
    let failure = c.run_with(Mutation::CorruptFirstByte).unwrap_err();
    assert!(failure.contains("peer received byte 0"), "{failure}");
}

#[test]
fn a_missing_writable_edge_is_caught_as_lost_liveness() {
    let c = case(
        100,
        100,
        4,
        vec![Op::SendLines { len: 10, count: 5 }, Op::Settle],
    );
    let failure = c.run_with(Mutation::NoWritableEdges).unwrap_err();
    assert!(failure.contains("unanswered"), "{failure}");
}

#[test]
fn a_close_with_input_unread_is_caught() {
    let c = case(100, 100, 100, vec![Op::Send(b"hi\n".to_vec()), Op::Settle]);
    let failure = c.run_with(Mutation::EarlyEof).unwrap_err();
    assert!(failure.contains("neither half-closed"), "{failure}");
}

#[test]
fn memory_over_the_bound_is_caught() {
    let c = case(1 << 20, 100, 100, vec![Op::SendRun(1000), Op::Settle]);
    let mut driver = Driver::new(&c, Mutation::None);
    driver.bound = 999;
    let failure = c
        .ops
        .iter()
        .try_for_each(|op| driver.apply(op))
        .unwrap_err();
    assert!(failure.contains("holds 1000 bytes"), "{failure}");
}

#[test]
fn the_model_answers_a_tail_and_refuses_a_long_line() {
    let mut m = Model::new(4, false);
    m.send(b"ab\r\ncd");
    assert_eq!(m.out, b"~hi\nab\r\n~ok\n1\n");
    m.half_close();
    assert_eq!(m.out, b"~hi\nab\r\n~ok\n1\ncd\n~ok\n2\n");
    let mut m = Model::new(4, false);
    m.send(b"abcd\nzz\n");
    assert_eq!(m.out, b"~hi\nerror: line longer than 4 bytes\n");
    assert_eq!(m.stop, Some(ModelStop::TooLong));
}

#[test]
fn the_model_places_a_drain_and_closes_on_an_odd_count() {
    let mut m = Model::new(100, false);
    m.send(b"a\nb\nc\n");
    // Two replies produced: the notice goes between the second and third.
    assert!(!m.drain(b"~hi\na\n~ok\n1\nb\n~ok\n2\n".len()));
    assert_eq!(
        m.out,
        b"~hi\na\n~ok\n1\nb\n~ok\n2\n~notice\n~drain\nc\n~ok\n1\n"
    );
    // Three produced: the protocol closes, and d is never answered.
    assert!(m.drain(m.out.len()));
    m.send(b"d\n");
    assert!(m.out.ends_with(b"c\n~ok\n1\n~notice\n~drain\n"));
    assert_eq!(m.stop, Some(ModelStop::Drained));
}

// Timers, on the driver's virtual clock, which starts on a tick.

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn timed(idle: Option<u64>, send: Option<u64>, capacity: usize, ops: Vec<Op>) -> Case {
    Case {
        idle: idle.map(ms),
        send: send.map(ms),
        ..case(100, 100, capacity, ops)
    }
}

fn run_ops(c: &Case) -> Driver {
    let mut driver = Driver::new(c, Mutation::None);
    for (step, op) in c.ops.iter().enumerate() {
        if let Err(e) = driver.apply(op) {
            panic!("after op {step} ({op:?}): {e}");
        }
    }
    driver
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// The idle timeout fires while the replies wait behind a full send
/// buffer: the idle line goes after them, then the FIN, and the close
/// waits for the peer's EOF.
#[test]
fn the_idle_line_follows_the_replies_owed_and_then_the_connection_ends() {
    let ops = vec![
        Op::Send(b"a\nb\n".to_vec()),
        Op::Deliver(0xff),
        Op::Advance(ms(300)),
        Op::Expire,
        Op::Settle,
    ];
    let mut driver = run_ops(&timed(Some(300), None, 3, ops));
    let want = [
        b"~hi\na\n~ok\n1\nb\n~ok\n2\n".as_slice(),
        &idle_line(ms(300)),
    ]
    .concat();
    assert_eq!(driver.received, want);
    assert!(driver.wire.borrow().shut, "no FIN after the idle line");
    assert_eq!(driver.life, Life::Open, "closed before the peer's EOF");
    driver.finish().unwrap();
    assert_eq!(driver.life, Life::Closed);
}

/// An ending connection whose peer never sends its EOF is closed when it
/// has been silent for a second idle period, and not before.
#[test]
fn a_silent_ending_connection_is_closed_a_second_idle_period_later() {
    let ops = vec![
        Op::Advance(ms(300)),
        Op::Expire,
        Op::Settle,
        Op::Advance(ms(299)),
        Op::Expire,
    ];
    let mut driver = run_ops(&timed(Some(300), None, 1000, ops));
    assert_eq!(driver.life, Life::Open);
    driver.apply(&Op::Sleep).unwrap();
    assert_eq!(driver.life, Life::TimedOut);
}

/// The send timeout spares a peer that takes some of its output within
/// the period, and closes one that takes none for a whole period.
#[test]
fn the_send_timeout_closes_only_a_peer_that_takes_nothing() {
    let ops = vec![
        Op::SendLines { len: 10, count: 10 },
        Op::Deliver(0xff),
        Op::Advance(ms(200)),
        Op::PeerRead(2),
        Op::Advance(ms(200)),
        Op::Expire,
    ];
    let mut driver = run_ops(&timed(None, Some(300), 3, ops));
    assert_eq!(driver.life, Life::Open, "closed a peer that was reading");
    driver.apply(&Op::Advance(ms(300))).unwrap();
    driver.apply(&Op::Expire).unwrap();
    assert_eq!(driver.life, Life::TimedOut);
}

/// A protocol that moves its deadline by 1 ms each time it passes, within
/// the tick it fired in, is told each time, once (the bug the fuzzer
/// found in `deadline.rs`); one that leaves it is told once in all.
#[test]
fn a_protocol_deadline_fires_once_per_place_it_is_set() {
    let moving = vec![
        Op::Deadline {
            at: Some(250),
            then: Then::Move(1),
        },
        Op::Sleep,
        Op::Sleep,
        Op::Sleep,
        Op::Settle,
    ];
    let driver = run_ops(&timed(None, None, 1000, moving));
    assert_eq!(count(&driver.received, LATE), 3);
    let staying = vec![
        Op::Deadline {
            at: Some(250),
            then: Then::Stay,
        },
        Op::Sleep,
        Op::Advance(ms(5000)),
        Op::Sleep,
        Op::Expire,
        Op::Settle,
    ];
    let driver = run_ops(&timed(None, None, 1000, staying));
    assert_eq!(count(&driver.received, LATE), 1);
}

/// DeadlineQueue fire during a drain and during a flush: their words keep
/// their place after the notice and the replies before them, and a
/// deadline that closes ends the connection as a drain would.
#[test]
fn deadlines_fire_during_a_drain_and_a_flush() {
    let ops = vec![
        Op::SendLines { len: 10, count: 4 },
        Op::Deliver(0xff),
        Op::Notice,
        Op::Deadline {
            at: Some(0),
            then: Then::Close,
        },
        Op::Expire,
        Op::Settle,
    ];
    let driver = run_ops(&timed(Some(1000), Some(1000), 7, ops));
    let tail = [NOTICE, DRAINING, LATE].concat();
    assert!(driver.received.ends_with(&tail));
    assert_eq!(driver.model.stop, Some(ModelStop::Late));
}

/// With no timeout configured and no deadline set, nothing is armed and
/// nothing fires however long the clock runs; after the connection
/// leaves, nothing fires for it either.
#[test]
fn nothing_fires_unasked_or_after_the_connection_left() {
    let unasked = vec![
        Op::Send(b"a\n".to_vec()),
        Op::Advance(ms(60_000)),
        Op::Sleep,
        Op::Expire,
        Op::Settle,
    ];
    run_ops(&timed(None, None, 1000, unasked));
    let left = vec![
        Op::Deadline {
            at: Some(500),
            then: Then::Stay,
        },
        Op::Send(b"q\n".to_vec()),
        Op::Settle,
        Op::PeerHalfClose,
        Op::Settle,
        Op::Advance(ms(1000)),
        Op::Expire,
        Op::Sleep,
    ];
    let driver = run_ops(&timed(Some(300), Some(300), 1000, left));
    assert_eq!(driver.life, Life::Closed);
}

/// The timer checks catch a loop that dates a turn with the time it went
/// to sleep rather than the time it woke (the two clocks it once had): a
/// read is dated too early, so the idle deadline it moves fires early.
#[test]
fn a_turn_dated_before_the_wakeup_is_caught() {
    let c = timed(
        Some(300),
        None,
        1000,
        vec![
            Op::Advance(ms(200)),
            Op::Send(b"a\n".to_vec()),
            Op::Advance(ms(200)),
            Op::Expire,
        ],
    );
    assert_eq!(c.run(), Ok(()));
    let failure = c.run_with(Mutation::StaleClock).unwrap_err();
    assert!(failure.contains("before it was due"), "{failure}");
}

/// Replays a fuzzer's crash file: `DRAINPORT_CASE=path cargo test --lib
/// replay -- --ignored --nocapture`.
#[test]
#[ignore = "replays a file named by DRAINPORT_CASE"]
fn replay() {
    let path = std::env::var("DRAINPORT_CASE").expect("DRAINPORT_CASE");
    let data = std::fs::read(&path).expect("read case");
    let case = Case::decode(&data, FUZZ_BUDGET, FUZZ_PER_CAPACITY);
    if let Err(failure) = case.run() {
        panic!("{}", report(&path, &case, &failure));
    }
}
