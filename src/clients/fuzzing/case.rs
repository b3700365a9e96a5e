//! What a case is: the limits, the send buffer, the timeouts and the
//! operations, and how any bytes decode into one.

use std::time::Duration;

use crate::conn::Ready;

use super::QUIT;

pub(super) const READABLE: u8 = 1;
pub(super) const WRITABLE: u8 = 2;
pub(super) const READ_CLOSED: u8 = 4;
pub(super) const ERROR: u8 = 8;

pub(super) fn ready_from(mask: u8) -> Ready {
    Ready {
        readable: mask & READABLE != 0,
        writable: mask & WRITABLE != 0,
        read_closed: mask & READ_CLOSED != 0,
        error: mask & ERROR != 0,
    }
}

/// One step of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
    /// The peer sends these bytes.
    Send(Vec<u8>),
    /// The peer sends `count` lines of `len` bytes each, `\n` included.
    SendLines {
        len: usize,
        count: usize,
    },
    /// The peer sends `len` bytes with no `\n`.
    SendRun(usize),
    /// The events the kernel owes, limited to the mask's kinds, arrive.
    Deliver(u8),
    /// An event with exactly the mask's kinds arrives, owed or not.
    Spurious(u8),
    /// The server gives a connection that answered `Again` its next turn.
    Pump,
    /// The peer reads up to this many bytes.
    PeerRead(usize),
    PeerHalfClose,
    PeerReset {
        sticky: bool,
    },
    /// The send buffer changes size.
    Capacity(usize),
    /// The next reads and writes fail with `EINTR`.
    Interrupt(u32),
    /// Everything owed is delivered and all output read; then liveness is
    /// checked.
    Settle,
    /// The server closes the connection on a hard stop.
    HardStop,
    /// The server sends the drain notice.
    Notice,
    /// The loop sleeps this long on the virtual clock, after serving what
    /// it owes (the kernel's events, the `Again`s): a poll would not sleep
    /// with those ready.
    Advance(Duration),
    /// The loop sleeps until the nearest deadline, if any, and fires what
    /// is due, as the server's poll timeout does.
    Sleep,
    /// What is due now fires, whatever else is owed: the server's timers
    /// run after a batch of events, so this is any point between turns.
    Expire,
    /// A turn in which the protocol sets its deadline `at` from the clock
    /// (in the past if negative) or clears it (`None`), and decides what it
    /// does when it passes.
    Deadline {
        at: Option<Ms>,
        then: Then,
    },
}

/// Milliseconds on the virtual clock, either way.
pub(super) type Ms = i32;

/// What the test protocol does when its deadline passes, after saying
/// [`super::LATE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Then {
    /// Leaves the deadline where it is: it is not reported again.
    #[default]
    Stay,
    Clear,
    /// Moves it by this much from where it was: a periodic deadline, or
    /// one moved within its tick.
    Move(Ms),
    /// Closes the connection.
    Close,
}

/// One scenario: the limits, the send buffer, and the operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Case {
    pub(super) max_line: usize,
    /// The connection runs its input through the telnet filter.
    pub(super) telnet: bool,
    pub(super) max_output: usize,
    pub(super) capacity: usize,
    /// `Config::idle_timeout` and `Config::send_timeout`.
    pub(super) idle: Option<Duration>,
    pub(super) send: Option<Duration>,
    pub(super) ops: Vec<Op>,
}

const MAX_LINES: [usize; 10] = [2, 5, 16, 64, 100, 1000, 4096, 65536, 70_000, 1 << 20];
const MAX_OUTPUTS: [usize; 8] = [1, 2, 5, 16, 100, 1000, 65536, 200_000];
const CAPACITIES: [usize; 8] = [1, 2, 3, 7, 64, 1000, 65536, 1 << 20];
const READ_SIZES: [usize; 8] = [1, 2, 5, 13, 100, 4096, 65536, usize::MAX];
const LINE_LENS: [usize; 8] = [1, 2, 5, 64, 1000, 65535, 65536, 70_000];
const LINE_COUNTS: [usize; 6] = [1, 2, 10, 100, 1000, 5000];
const RUN_LENS: [usize; 8] = [1, 10, 1000, 65535, 65536, 65537, 200_000, 300_000];
/// Idle and send timeouts in ms, 0 for none: mostly off, and on at a tick,
/// between ticks, and long.
const TIMEOUTS: [u64; 8] = [0, 0, 0, 100, 150, 300, 1000, 5000];
/// Clock steps: within a tick, at a tick, just past one, and long.
const ADVANCES: [u64; 10] = [1, 30, 50, 99, 100, 101, 170, 300, 1000, 5000];
/// Protocol deadlines from now: passed, now, within a tick, and later.
const DEADLINES: [Ms; 12] = [-500, -100, -1, 0, 1, 49, 100, 101, 250, 1000, 5000, 60_000];
/// How far the protocol moves its deadline when it passes.
const MOVES: [Ms; 8] = [-100, -30, -1, 1, 30, 99, 100, 1000];

fn timeout(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// Reads a fuzzer's bytes; past the end every byte reads as 0.
struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }

    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn pick<T: Copy>(&mut self, table: &[T]) -> T {
        table[usize::from(self.byte()) % table.len()]
    }
}

/// A payload byte: newlines, `\r` and the quit letter often enough that
/// short lines, CRLF and closes all happen, with NUL and 0xff mixed in.
fn payload(b: u8) -> u8 {
    match b % 16 {
        0..=2 => b'\n',
        3 => b'\r',
        4 => QUIT[0],
        5 => 0,
        6 => 0xff,
        _ => b'a' + b / 16,
    }
}

/// Telnet commands a payload byte 0xff stands for when the case runs the
/// telnet filter: Ctrl-C, Are You There, negotiation, subnegotiations
/// (finished, and unfinished so that data is swallowed until the next
/// command), an escaped 0xff, and an IAC whose command comes with the
/// next payload byte.
const TELNET: [&[u8]; 16] = [
    b"\xff\xf4\xff\xfd\x06",
    b"\xff\xf6",
    b"\xff\xfd\x01",
    b"\xff\xfb\x18",
    b"\xff\xfc\x03",
    b"\xff\xfe\x03",
    b"\xff\xfa\x18\x00xy\xff\xff\xff\xf0",
    b"\xff\xfa\x1f",
    b"\xff\xf0",
    b"\xff\xff",
    b"\xff\xf1",
    b"\xff\xf5",
    b"\xff\xf8",
    b"\xff\xfd\x06",
    b"\xff\xf4",
    b"\xff",
];

/// The bytes one payload byte stands for.
fn payload_bytes(b: u8, telnet: bool, data: &mut Vec<u8>) {
    match payload(b) {
        0xff if telnet => data.extend_from_slice(TELNET[usize::from(b / 16)]),
        byte => data.push(byte),
    }
}

impl Case {
    /// Turns any bytes into a case that sends at most `budget` bytes, and
    /// at most `per_capacity` for each byte of its smallest send buffer.
    pub(super) fn decode(data: &[u8], budget: usize, per_capacity: usize) -> Case {
        let mut bytes = Bytes { data, at: 0 };
        // The first byte picks the line limit and, with its top bit,
        // whether the telnet filter runs.
        let first = bytes.byte();
        let max_line = MAX_LINES[usize::from(first & 0x7f) % MAX_LINES.len()];
        let telnet = first & 0x80 != 0;
        let max_output = bytes.pick(&MAX_OUTPUTS);
        let capacity = bytes.pick(&CAPACITIES);
        let timeouts = bytes.byte();
        let idle = timeout(TIMEOUTS[usize::from(timeouts % 8)]);
        let send = timeout(TIMEOUTS[usize::from(timeouts / 8 % 8)]);
        let mut smallest = capacity;
        let mut sent = 0usize;
        let mut ops = Vec::new();
        while !bytes.done() {
            let left = budget
                .min(smallest.saturating_mul(per_capacity))
                .saturating_sub(sent);
            let op = match bytes.byte() % 20 {
                0..=2 => {
                    let len = usize::from(bytes.byte() % 32) + 1;
                    let mut data = Vec::new();
                    for _ in 0..len.min(left) {
                        payload_bytes(bytes.byte(), telnet, &mut data);
                    }
                    Op::Send(data)
                }
                3 => {
                    let len = bytes.pick(&LINE_LENS);
                    let count = bytes.pick(&LINE_COUNTS).min(left / len);
                    Op::SendLines { len, count }
                }
                4 => Op::SendRun(bytes.pick(&RUN_LENS).min(left)),
                5 | 6 => Op::Deliver(bytes.byte() | READABLE | WRITABLE),
                7 => Op::Spurious(bytes.byte() % 16),
                8 => Op::Pump,
                9 | 10 => Op::PeerRead(bytes.pick(&READ_SIZES)),
                11 => match bytes.byte() % 4 {
                    0 => Op::PeerHalfClose,
                    _ => Op::Deliver(0xff),
                },
                12 => match bytes.byte() % 8 {
                    0 => Op::PeerReset { sticky: false },
                    1 => Op::PeerReset { sticky: true },
                    _ => Op::PeerRead(usize::MAX),
                },
                13 => {
                    let c = bytes.pick(&CAPACITIES);
                    smallest = smallest.min(c);
                    Op::Capacity(c)
                }
                14 => Op::Interrupt(u32::from(bytes.byte() % 4) + 1),
                15 => match bytes.byte() % 8 {
                    0 => Op::HardStop,
                    1 => Op::Notice,
                    _ => Op::Settle,
                },
                16 => Op::Advance(Duration::from_millis(bytes.pick(&ADVANCES))),
                17 => match bytes.byte() % 2 {
                    0 => Op::Sleep,
                    _ => Op::Expire,
                },
                _ => {
                    let b = bytes.byte();
                    let at = (b % 8 != 0).then(|| bytes.pick(&DEADLINES));
                    let then = match b / 8 % 4 {
                        0 => Then::Stay,
                        1 => Then::Clear,
                        2 => Then::Move(bytes.pick(&MOVES)),
                        _ => Then::Close,
                    };
                    Op::Deadline { at, then }
                }
            };
            sent += match &op {
                Op::Send(data) => data.len(),
                Op::SendLines { len, count } => len * count,
                Op::SendRun(len) => *len,
                _ => 0,
            };
            ops.push(op);
        }
        Case {
            max_line,
            telnet,
            max_output,
            capacity,
            idle,
            send,
            ops,
        }
    }
}
