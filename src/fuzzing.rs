//! A scripted socket and a driver that run one [`Conn`] through any sequence
//! of peer actions and readiness events, and check it against a model.
//!
//! Guarantees: a sequence of operations that ends without an error has
//! shown, at every step, that
//! - the peer received a prefix of the model's replies (each line as sent
//!   plus a suffix, in order, nothing lost, nothing duplicated, whatever the
//!   split points), and exactly the too-long error and nothing after it for a
//!   line longer than `max_line`;
//! - the connection's buffers held at most `max_output` + one reply +
//!   `READ_CHUNK` + `max_line` bytes, plus the length of each drain notice
//!   it took (a notice is queued whatever the backpressure);
//! - a drain notice landed after the output produced so far and ahead of any
//!   later reply, and only a connection already closing dropped it;
//! - a hard stop sent what was pending and then the closing line when the
//!   send buffer had room, shut the write side, and left no unread input
//!   behind when there were at most four read chunks of it;
//! - a `Close` verdict came only for a reset, a peer that half-closed and was
//!   answered, or a closing connection whose EOF arrived (or whose discarded
//!   input passed the limit), so a close never turns into a reset;
//! - once every event the kernel owed had been delivered, every `Again`
//!   pumped (the driver pumps only after `Again`, as the server does) and
//!   all output read by the peer, all complete lines were
//!   answered, a closing connection had sent its FIN, a half-closed or reset
//!   one was closed, and an idle one held nothing but an unterminated tail.
//!
//! The scripted socket behaves like a Linux TCP socket under edge-triggered
//! epoll, delivering the fewest events the kernel may: a readable edge per
//! arrival, a writable edge only after a write found the send buffer full and
//! a third of it has since been freed. The driver may add spurious events on
//! top. The same decoder turns a fuzzer's bytes and the property test's
//! pseudo-random bytes into operations, so both explore the same space.
//!
//! Compiled only for tests and under the `fuzzing` feature.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

use crate::conn::{Conn, Context, DISCARD_LIMIT, READ_CHUNK, Ready, Stream, Verdict};
use crate::protocol::{Action, Protocol};

/// Appended to every reply by the test protocol.
const SUFFIX: &[u8] = b"~ok\n";
/// The test protocol's last line on a hard stop.
const CLOSING: &[u8] = b"~bye\n";
/// The line the server sends every client when a drain starts.
const NOTICE: &[u8] = b"~notice\n";
/// A line whose body is this asks the protocol to close.
const QUIT: &[u8] = b"q";
/// The reads `close_with_notice` spends emptying the socket (its
/// `HARD_CLOSE_READS`): up to this many full chunks are taken, so a hard
/// close with no more than this much unread input is a FIN, not a reset.
const HARD_CLOSE_CHUNKS: usize = 4;
/// Rounds of a settle that move no byte before it is called a livelock. A
/// round that moves nothing can only come from an interrupted call, and at
/// most a few are injected.
const IDLE_ROUNDS: usize = 64;
/// The upper bound on the rounds of one settle, so a bug cannot hang a run.
const SETTLE_ROUNDS: usize = 4_000_000;
/// Bytes a fuzz case may send per byte of the smallest send buffer it uses:
/// a settle moves at most one buffer per round, so this keeps a case with a
/// tiny buffer from running for seconds.
const FUZZ_PER_CAPACITY: usize = 5_000;

/// Bytes a fuzz case may send in all. Large enough for lines longer than a
/// read chunk and for output several times `max_output`.
const FUZZ_BUDGET: usize = 2 << 20;

/// Runs the operations encoded in `data` (any bytes) and panics with the
/// first broken invariant and the operations that led to it.
pub fn run(data: &[u8]) {
    let case = Case::decode(data, FUZZ_BUDGET, FUZZ_PER_CAPACITY);
    if let Err(failure) = case.run() {
        panic!("{failure}\n{case:#?}");
    }
}

/// Replies with the line, a `\n` if it had none, then [`SUFFIX`]; closes
/// after a line whose body is [`QUIT`].
struct Suffix;

impl Protocol for Suffix {
    fn on_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Action {
        out.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(SUFFIX);
        if body(line) == QUIT {
            Action::Close
        } else {
            Action::Continue
        }
    }

    fn on_closing(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(CLOSING);
    }
}

/// A line without its `\n` and a `\r` before it. Written here rather than
/// taken from `protocol` so that the model shares no code with what it checks.
fn body(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn too_long_reply(max_line: usize) -> Vec<u8> {
    format!("error: line longer than {max_line} bytes\n").into_bytes()
}

/// Why the model stopped taking lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelStop {
    TooLong,
    Quit,
    HalfClosed,
}

/// What a correct connection answers, computed from the bytes the peer sent.
struct Model {
    max_line: usize,
    input: Vec<u8>,
    /// Where the next unanswered line starts.
    pos: usize,
    /// `input[pos..pos + scanned]` holds no `\n`: a long tail sent in small
    /// pieces is scanned once, not once per piece.
    scanned: usize,
    out: Vec<u8>,
    stop: Option<ModelStop>,
}

impl Model {
    fn new(max_line: usize) -> Model {
        Model {
            max_line,
            input: Vec::new(),
            pos: 0,
            scanned: 0,
            out: Vec::new(),
            stop: None,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        while self.stop.is_none() {
            let rest = &self.input[self.pos..];
            let window = &rest[..rest.len().min(self.max_line)];
            let fresh = &window[self.scanned.min(window.len())..];
            match fresh.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    let line = rest[..=self.scanned + at].to_vec();
                    self.pos += line.len();
                    self.scanned = 0;
                    self.reply(&line);
                    if body(&line) == QUIT {
                        self.stop = Some(ModelStop::Quit);
                    }
                }
                None if rest.len() >= self.max_line => {
                    self.out.extend_from_slice(&too_long_reply(self.max_line));
                    self.stop = Some(ModelStop::TooLong);
                }
                None => {
                    self.scanned = window.len();
                    break;
                }
            }
        }
    }

    /// The peer half-closed: an unterminated tail is answered as a line.
    fn half_close(&mut self) {
        if self.stop.is_none() {
            let tail = self.input[self.pos..].to_vec();
            if !tail.is_empty() {
                self.reply(&tail);
            }
            self.stop = Some(ModelStop::HalfClosed);
        }
    }

    fn reply(&mut self, line: &[u8]) {
        self.out.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            self.out.push(b'\n');
        }
        self.out.extend_from_slice(SUFFIX);
    }
}

/// How a reset shows through the socket calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reset {
    /// Every read and write fails with `ECONNRESET`.
    Sticky,
    /// As Linux does it: queued input is still read, the error is reported
    /// once by the next call, then reads return 0 and writes `EPIPE`.
    Once { reported: bool },
}

/// A deliberate defect in the scripted socket, used by the tests that show
/// each check can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
// Only the tests plant defects; the fuzzer runs the socket as it is.
#[cfg_attr(not(test), allow(dead_code))]
enum Mutation {
    #[default]
    None,
    /// Flip a bit of the first byte the connection writes.
    CorruptFirstByte,
    /// Never raise a writable edge.
    NoWritableEdges,
    /// Report EOF while input is still queued.
    EarlyEof,
}

/// The state the scripted socket shares with the driver playing the peer.
#[derive(Default)]
struct Wire {
    /// Sent by the peer and not yet read by the connection.
    inbound: VecDeque<u8>,
    /// The peer half-closed; reads return 0 once `inbound` is empty.
    fin: bool,
    reset: Option<Reset>,
    /// Written by the connection and not yet read by the peer.
    outbound: VecDeque<u8>,
    /// The send buffer's size: a write takes at most what is free of it.
    capacity: usize,
    /// A write found the buffer full; the kernel owes a writable edge.
    nospace: bool,
    /// The connection shut its write side (sent FIN).
    shut: bool,
    /// A read returned 0.
    eof_read: bool,
    /// The next reads and writes fail with `EINTR`.
    interrupts: u32,
    /// Events the kernel owes and the driver has not delivered yet.
    edges: Ready,
    delivered: usize,
    written: usize,
    /// Writes that took less than they were offered.
    short_writes: usize,
    mutation: Mutation,
}

impl Wire {
    fn free(&self) -> usize {
        self.capacity.saturating_sub(self.outbound.len())
    }

    /// Space was freed: the kernel wakes a writer that found the buffer full
    /// once a third of it is free (`sk_stream_is_writeable`).
    fn maybe_writable_edge(&mut self) {
        if self.nospace && self.free() * 3 >= self.capacity && self.free() > 0 {
            self.nospace = false;
            if self.mutation != Mutation::NoWritableEdges {
                self.edges.writable = true;
            }
        }
    }

    fn interrupted(&mut self) -> bool {
        if self.interrupts > 0 {
            self.interrupts -= 1;
            return true;
        }
        false
    }
}

/// Moves the first `out.len()` bytes of `queue` into `out`.
fn take_front(queue: &mut VecDeque<u8>, out: &mut [u8]) {
    let n = out.len();
    let (front, back) = queue.as_slices();
    let split = front.len().min(n);
    out[..split].copy_from_slice(&front[..split]);
    out[split..].copy_from_slice(&back[..n - split]);
    queue.drain(..n);
}

fn reset_error() -> io::Error {
    io::Error::from(io::ErrorKind::ConnectionReset)
}

/// The connection's end of the scripted socket.
struct Socket(Rc<RefCell<Wire>>);

impl Stream for Socket {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut w = self.0.borrow_mut();
        if w.interrupted() {
            return Err(io::ErrorKind::Interrupted.into());
        }
        match w.reset {
            Some(Reset::Sticky) => return Err(reset_error()),
            Some(Reset::Once { reported }) if w.inbound.is_empty() => {
                w.reset = Some(Reset::Once { reported: true });
                return if reported { Ok(0) } else { Err(reset_error()) };
            }
            _ => {}
        }
        if w.inbound.is_empty() || w.mutation == Mutation::EarlyEof {
            if w.fin || w.mutation == Mutation::EarlyEof {
                w.eof_read = true;
                return Ok(0);
            }
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(w.inbound.len());
        take_front(&mut w.inbound, &mut buf[..n]);
        w.delivered += n;
        Ok(n)
    }

    fn write(&self, data: &[u8]) -> io::Result<usize> {
        let mut w = self.0.borrow_mut();
        if w.interrupted() {
            return Err(io::ErrorKind::Interrupted.into());
        }
        match w.reset {
            Some(Reset::Sticky) => return Err(reset_error()),
            Some(Reset::Once { reported }) => {
                w.reset = Some(Reset::Once { reported: true });
                return Err(if reported {
                    io::ErrorKind::BrokenPipe.into()
                } else {
                    reset_error()
                });
            }
            None => {}
        }
        if w.shut {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let n = data.len().min(w.free());
        if n < data.len() {
            w.nospace = true;
            w.short_writes += 1;
        }
        if n == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let first = w.written == 0;
        w.outbound.extend(&data[..n]);
        if first && n > 0 && w.mutation == Mutation::CorruptFirstByte {
            w.outbound[0] ^= 0x20;
        }
        w.written += n;
        Ok(n)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        let mut w = self.0.borrow_mut();
        if w.reset.is_some() {
            return Err(io::ErrorKind::NotConnected.into());
        }
        w.shut = true;
        Ok(())
    }
}

const READABLE: u8 = 1;
const WRITABLE: u8 = 2;
const READ_CLOSED: u8 = 4;
const ERROR: u8 = 8;

fn ready_from(mask: u8) -> Ready {
    Ready {
        readable: mask & READABLE != 0,
        writable: mask & WRITABLE != 0,
        read_closed: mask & READ_CLOSED != 0,
        error: mask & ERROR != 0,
    }
}

fn any(ready: Ready) -> bool {
    ready.readable || ready.writable || ready.read_closed || ready.error
}

/// One step of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
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
}

/// One scenario: the limits, the send buffer, and the operations.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Case {
    max_line: usize,
    max_output: usize,
    capacity: usize,
    ops: Vec<Op>,
}

const MAX_LINES: [usize; 10] = [2, 5, 16, 64, 100, 1000, 4096, 65536, 70_000, 1 << 20];
const MAX_OUTPUTS: [usize; 8] = [1, 2, 5, 16, 100, 1000, 65536, 200_000];
const CAPACITIES: [usize; 8] = [1, 2, 3, 7, 64, 1000, 65536, 1 << 20];
const READ_SIZES: [usize; 8] = [1, 2, 5, 13, 100, 4096, 65536, usize::MAX];
const LINE_LENS: [usize; 8] = [1, 2, 5, 64, 1000, 65535, 65536, 70_000];
const LINE_COUNTS: [usize; 6] = [1, 2, 10, 100, 1000, 5000];
const RUN_LENS: [usize; 8] = [1, 10, 1000, 65535, 65536, 65537, 200_000, 300_000];

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

impl Case {
    /// Turns any bytes into a case that sends at most `budget` bytes, and
    /// at most `per_capacity` for each byte of its smallest send buffer.
    fn decode(data: &[u8], budget: usize, per_capacity: usize) -> Case {
        let mut bytes = Bytes { data, at: 0 };
        let max_line = bytes.pick(&MAX_LINES);
        let max_output = bytes.pick(&MAX_OUTPUTS);
        let capacity = bytes.pick(&CAPACITIES);
        let mut smallest = capacity;
        let mut sent = 0usize;
        let mut ops = Vec::new();
        while !bytes.done() {
            let left = budget
                .min(smallest.saturating_mul(per_capacity))
                .saturating_sub(sent);
            let op = match bytes.byte() % 16 {
                0..=2 => {
                    let len = usize::from(bytes.byte() % 32) + 1;
                    let data: Vec<u8> = (0..len.min(left)).map(|_| payload(bytes.byte())).collect();
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
                _ => match bytes.byte() % 8 {
                    0 => Op::HardStop,
                    1 => Op::Notice,
                    _ => Op::Settle,
                },
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
            max_output,
            capacity,
            ops,
        }
    }

    /// Runs the case, turning a panic inside the connection into an error.
    fn run(&self) -> Result<(), String> {
        self.run_with(Mutation::None)
    }

    fn run_with(&self, mutation: Mutation) -> Result<(), String> {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            let mut driver = Driver::new(self, mutation);
            for (step, op) in self.ops.iter().enumerate() {
                driver
                    .apply(op)
                    .map_err(|e| format!("after op {step} ({op:?}): {e}"))?;
            }
            driver.finish().map_err(|e| format!("at the end: {e}"))
        }));
        outcome.unwrap_or_else(|panic| {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Err(format!("panicked: {text}"))
        })
    }
}

/// The outcome of the connection so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Open,
    /// The connection answered `Close` and was dropped.
    Closed,
    /// `close_with_notice` consumed it.
    HardStopped {
        /// Everything pending and the closing line fit in the send buffer.
        fully_flushed: bool,
    },
}

struct Driver {
    wire: Rc<RefCell<Wire>>,
    conn: Option<Conn<Socket>>,
    cx: Context<Suffix>,
    model: Model,
    /// Bytes the peer has read, checked against the model as they arrive.
    received: Vec<u8>,
    /// The connection answered `Again` and has not been pumped since.
    again: bool,
    life: Life,
    /// After a hard stop: what the connection had answered, then the
    /// closing line.
    expected_after_stop: Vec<u8>,
    bound: usize,
    max_output: usize,
    max_reply: usize,
    /// Drain notices the connection took. Each is queued whatever the
    /// backpressure, so it adds its length to the bounds.
    notices: usize,
}

impl Driver {
    fn new(case: &Case, mutation: Mutation) -> Driver {
        let wire = Rc::new(RefCell::new(Wire {
            capacity: case.capacity,
            mutation,
            ..Wire::default()
        }));
        let max_reply = (case.max_line + 1 + SUFFIX.len()).max(too_long_reply(case.max_line).len());
        Driver {
            conn: Some(Conn::new(Socket(Rc::clone(&wire)))),
            wire,
            cx: Context::new(Suffix, case.max_line, case.max_output),
            model: Model::new(case.max_line),
            received: Vec::new(),
            again: false,
            life: Life::Open,
            expected_after_stop: Vec::new(),
            bound: case.max_output + max_reply + READ_CHUNK + case.max_line,
            max_output: case.max_output,
            max_reply,
            notices: 0,
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Send(data) => self.peer_send(data),
            Op::SendLines { len, count } => {
                let mut line = vec![b'l'; *len];
                line[len - 1] = b'\n';
                for _ in 0..*count {
                    self.peer_send(&line);
                }
            }
            Op::SendRun(len) => self.peer_send(&vec![b'r'; *len]),
            Op::Deliver(mask) => {
                let owed = self.take_edges(*mask);
                if any(owed) {
                    self.event(owed)?;
                }
            }
            Op::Spurious(mask) => self.event(ready_from(*mask))?,
            Op::Pump => self.pump()?,
            Op::PeerRead(n) => self.peer_read(*n)?,
            Op::PeerHalfClose => self.peer_half_close(),
            Op::PeerReset { sticky } => self.peer_reset(*sticky),
            Op::Capacity(c) => {
                let mut w = self.wire.borrow_mut();
                w.capacity = *c;
                w.maybe_writable_edge();
            }
            Op::Interrupt(n) => self.wire.borrow_mut().interrupts = *n,
            Op::Settle => self.settle()?,
            Op::HardStop => self.hard_stop()?,
            Op::Notice => self.notice()?,
        }
        Ok(())
    }

    /// The last word: everything settles, then the peer half-closes and the
    /// connection must end.
    fn finish(&mut self) -> Result<(), String> {
        self.settle()?;
        if self.life == Life::Open && self.wire.borrow().reset.is_none() {
            self.peer_half_close();
            self.settle()?;
            if self.life == Life::Open {
                return Err(
                    "the peer half-closed and read everything, yet the connection stayed open"
                        .into(),
                );
            }
        }
        Ok(())
    }

    fn peer_gone(&self) -> bool {
        let w = self.wire.borrow();
        w.fin || w.reset.is_some() || self.life != Life::Open
    }

    fn peer_send(&mut self, data: &[u8]) {
        if data.is_empty() || self.peer_gone() {
            return;
        }
        let mut w = self.wire.borrow_mut();
        w.inbound.extend(data);
        w.edges.readable = true;
        self.model.send(data);
    }

    fn peer_half_close(&mut self) {
        if self.peer_gone() {
            return;
        }
        let mut w = self.wire.borrow_mut();
        w.fin = true;
        w.edges.readable = true;
        w.edges.read_closed = true;
        self.model.half_close();
    }

    fn peer_reset(&mut self, sticky: bool) {
        if self.wire.borrow().reset.is_some() || self.life != Life::Open {
            return;
        }
        let mut w = self.wire.borrow_mut();
        w.reset = Some(if sticky {
            Reset::Sticky
        } else {
            Reset::Once { reported: false }
        });
        // The peer's socket is gone, and with it what was on the way to it.
        w.outbound.clear();
        w.edges = ready_from(READABLE | WRITABLE | READ_CLOSED | ERROR);
    }

    /// The peer reads up to `n` bytes; each must be the next the model expects.
    fn peer_read(&mut self, n: usize) -> Result<(), String> {
        let mut w = self.wire.borrow_mut();
        if w.reset.is_some() {
            return Ok(());
        }
        let n = n.min(w.outbound.len());
        let start = self.received.len();
        self.received.resize(start + n, 0);
        take_front(&mut w.outbound, &mut self.received[start..]);
        w.maybe_writable_edge();
        drop(w);
        self.check_received(start)
    }

    fn check_received(&self, start: usize) -> Result<(), String> {
        let got = &self.received[start..];
        let expected: &[u8] = match self.life {
            Life::HardStopped { .. } => &self.expected_after_stop,
            _ => &self.model.out,
        };
        let want = expected.get(start..self.received.len()).unwrap_or_default();
        if got == want {
            return Ok(());
        }
        let at = start + got.iter().zip(want).take_while(|(a, b)| a == b).count();
        Err(format!(
            "peer received byte {at} = {:?}, expected {:?}; received so far {:?}, model {:?}",
            char::from(self.received[at]),
            expected.get(at).copied().map(char::from),
            String::from_utf8_lossy(&self.received),
            String::from_utf8_lossy(expected),
        ))
    }

    fn take_edges(&mut self, mask: u8) -> Ready {
        let mut w = self.wire.borrow_mut();
        let owed = w.edges;
        let take = ready_from(mask);
        let taken = Ready {
            readable: owed.readable && take.readable,
            writable: owed.writable && take.writable,
            read_closed: owed.read_closed && take.read_closed,
            error: owed.error && take.error,
        };
        w.edges = Ready {
            readable: owed.readable && !take.readable,
            writable: owed.writable && !take.writable,
            read_closed: owed.read_closed && !take.read_closed,
            error: owed.error && !take.error,
        };
        taken
    }

    fn event(&mut self, ready: Ready) -> Result<(), String> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let verdict = conn.on_ready(ready, &mut self.cx);
        self.after(verdict)
    }

    /// Only a connection that answered `Again` is pumped, as the server does.
    fn pump(&mut self) -> Result<(), String> {
        if !self.again {
            return Ok(());
        }
        self.again = false;
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let verdict = conn.pump(&mut self.cx);
        self.after(verdict)
    }

    fn after(&mut self, verdict: Verdict) -> Result<(), String> {
        self.check_memory()?;
        match verdict {
            Verdict::Keep => Ok(()),
            Verdict::Again => {
                self.again = true;
                Ok(())
            }
            Verdict::Close => {
                self.conn = None;
                self.again = false;
                self.life = Life::Closed;
                self.check_clean_close()
            }
        }
    }

    fn check_memory(&self) -> Result<(), String> {
        let Some(bufs) = self.conn.as_ref().and_then(|c| c.bufs.as_deref()) else {
            return Ok(());
        };
        let notices = self.notices * NOTICE.len();
        let pending = bufs.output.len() - bufs.sent;
        if pending >= self.max_output + self.max_reply + notices {
            return Err(format!(
                "{pending} bytes of output pending, over max_output {} + one reply {} + notices {notices}",
                self.max_output, self.max_reply
            ));
        }
        let held = bufs.input.len() + bufs.output.len();
        if held > self.bound + notices {
            return Err(format!(
                "the connection holds {held} bytes ({} input, {} output of which {} already sent), over the bound {} + notices {notices}",
                bufs.input.len(),
                bufs.output.len(),
                bufs.sent,
                self.bound
            ));
        }
        Ok(())
    }

    /// A close the server decides on must not become a reset: the input is
    /// read to its EOF, unless more than the discard limit came after the
    /// close began.
    fn check_clean_close(&self) -> Result<(), String> {
        let w = self.wire.borrow();
        if w.reset.is_some() {
            return Ok(());
        }
        let reason = self.model.stop;
        if reason.is_none() {
            return Err("closed a connection that neither half-closed nor had to close".into());
        }
        let read_to_eof = w.inbound.is_empty() && w.eof_read;
        if !read_to_eof && w.delivered <= DISCARD_LIMIT {
            return Err(format!(
                "closed ({reason:?}) with {} bytes unread and no EOF read: the close would be a reset",
                w.inbound.len()
            ));
        }
        Ok(())
    }

    /// The notice goes after the output produced so far and before any
    /// later reply; only a connection already closing may drop it.
    fn notice(&mut self) -> Result<(), String> {
        let at = self.produced().len();
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let verdict = conn.send_line(NOTICE, &mut self.cx);
        if self.wire.borrow().reset.is_none() {
            let produced = self.produced();
            if at > self.model.out.len() {
                return Err(format!(
                    "produced {at} bytes, more than the model's {}",
                    self.model.out.len()
                ));
            }
            if produced.get(at..at + NOTICE.len()) == Some(NOTICE) {
                self.model.out.splice(at..at, NOTICE.iter().copied());
                self.notices += 1;
            } else if self.model.stop.is_none() {
                return Err("an open connection dropped the drain notice".into());
            }
        }
        self.after(verdict)
    }

    fn hard_stop(&mut self) -> Result<(), String> {
        if self.conn.is_none() {
            return Ok(());
        }
        let answered = self.produced().len().min(self.model.out.len());
        self.expected_after_stop = [&self.model.out[..answered], CLOSING].concat();
        let (unread, interrupts, reset, shut, short_before) = {
            let w = self.wire.borrow();
            (
                w.inbound.len(),
                w.interrupts,
                w.reset.is_some(),
                w.shut,
                w.short_writes,
            )
        };
        let conn = self.conn.take().expect("checked above");
        conn.close_with_notice(&mut self.cx);
        self.again = false;
        let w = self.wire.borrow();
        let clean = interrupts == 0 && !reset;
        if clean && unread <= HARD_CLOSE_CHUNKS * READ_CHUNK && !w.inbound.is_empty() {
            return Err(format!(
                "a hard stop left {} of {unread} unread bytes: its close is a reset",
                w.inbound.len()
            ));
        }
        let fully_flushed = clean && !shut && w.short_writes == short_before;
        if fully_flushed && !w.shut {
            return Err("a hard stop did not shut the write side".into());
        }
        drop(w);
        self.life = Life::HardStopped { fully_flushed };
        Ok(())
    }

    /// The output the connection has produced: what the peer got, what is
    /// on the wire, and what the connection still holds unsent.
    fn produced(&self) -> Vec<u8> {
        let w = self.wire.borrow();
        let mut all = self.received.clone();
        all.extend(&w.outbound);
        if let Some(b) = self.conn.as_ref().and_then(|c| c.bufs.as_deref()) {
            all.extend_from_slice(&b.output[b.sent..]);
        }
        all
    }

    fn progress(&self) -> (usize, usize, usize, bool) {
        let w = self.wire.borrow();
        (
            w.delivered,
            w.written,
            self.received.len(),
            self.conn.is_some(),
        )
    }

    /// Delivers what the kernel owes, pumps every `Again` and lets the peer
    /// read everything, until nothing moves; then checks liveness.
    fn settle(&mut self) -> Result<(), String> {
        let mut idle = 0;
        for _ in 0..SETTLE_ROUNDS {
            let before = self.progress();
            self.peer_read(usize::MAX)?;
            let owed = self.take_edges(0xff);
            if self.conn.is_none() {
                return self.check_settled();
            }
            if any(owed) {
                self.event(owed)?;
            } else if self.again {
                self.pump()?;
            } else {
                return self.check_settled();
            }
            if self.progress() == before {
                idle += 1;
                if idle > IDLE_ROUNDS {
                    return Err(format!(
                        "livelock: {IDLE_ROUNDS} rounds of events and pumps moved nothing"
                    ));
                }
            } else {
                idle = 0;
            }
        }
        Err(format!("did not settle within {SETTLE_ROUNDS} rounds"))
    }

    fn check_settled(&self) -> Result<(), String> {
        let w = self.wire.borrow();
        if w.reset.is_some() {
            return match self.life {
                Life::Open => Err("reset, every event delivered, yet not closed".into()),
                _ => Ok(()),
            };
        }
        if let Life::HardStopped { fully_flushed } = self.life {
            let want = &self.expected_after_stop;
            if fully_flushed && self.received != *want {
                return Err(format!(
                    "after a hard stop with room to flush, the peer got {:?}, expected {:?}",
                    String::from_utf8_lossy(&self.received),
                    String::from_utf8_lossy(want)
                ));
            }
            return Ok(());
        }
        if self.received != self.model.out {
            return Err(format!(
                "settled with lines unanswered: the peer got {:?}, expected {:?}",
                String::from_utf8_lossy(&self.received),
                String::from_utf8_lossy(&self.model.out)
            ));
        }
        match (self.model.stop, self.life) {
            (None, Life::Open) => {
                let conn = self.conn.as_ref().expect("open");
                match conn.bufs.as_deref() {
                    None => Ok(()),
                    Some(b) if b.input.is_empty() => {
                        Err("an idle connection kept empty buffers".into())
                    }
                    Some(b) if b.output.len() > b.sent || b.input.len() >= self.model.max_line => {
                        Err(format!(
                            "an idle connection holds {} pending output and {} input bytes",
                            b.output.len() - b.sent,
                            b.input.len()
                        ))
                    }
                    Some(_) => Ok(()),
                }
            }
            (Some(ModelStop::HalfClosed), Life::Open) => {
                Err("the peer half-closed and was answered, yet the connection stayed open".into())
            }
            (Some(ModelStop::TooLong | ModelStop::Quit), Life::Open) if !w.shut => {
                Err("closing, all output read, yet no FIN sent".into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

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

    /// A small pseudo-random generator with a fixed seed, so that a failing
    /// case can be rerun from its seed alone.
    struct SplitMix(u64);

    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn bytes(&mut self, max_len: usize) -> Vec<u8> {
            let len = (self.next() % max_len as u64) as usize + 1;
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    /// Cases per run. Each is fast in a debug build; together they stay well
    /// under two seconds.
    const CASES: u64 = 3000;
    /// Bytes a generated case may send: enough for lines past a read chunk,
    /// small enough that thousands of cases stay quick.
    const BUDGET: usize = 96 * 1024;
    /// Bytes per byte of send buffer: a one-byte buffer still carries
    /// hundreds of lines, yet settles in a few thousand rounds.
    const PER_CAPACITY: usize = 1_500;

    fn case_for(seed: u64) -> Case {
        let mut rng = SplitMix(seed);
        Case::decode(&rng.bytes(160), BUDGET, PER_CAPACITY)
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
            max_output,
            capacity,
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

    /// The drain notice lands after the replies already produced, ahead of
    /// those to lines still held back, and an open connection never drops it.
    #[test]
    fn the_drain_notice_keeps_its_place_in_the_output() {
        let ops = vec![
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
        let notices = driver.received.windows(NOTICE.len());
        assert_eq!(notices.filter(|w| *w == NOTICE).count(), 3);
        driver.finish().unwrap();
    }

    /// A closing connection waits for its peer's EOF, but not through more
    /// than the discard limit of further input.
    #[test]
    fn a_closing_connection_stops_discarding_at_the_limit() {
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
        let mut m = Model::new(4);
        m.send(b"ab\r\ncd");
        assert_eq!(m.out, b"ab\r\n~ok\n");
        m.half_close();
        assert_eq!(m.out, b"ab\r\n~ok\ncd\n~ok\n");
        let mut m = Model::new(4);
        m.send(b"abcd\nzz\n");
        assert_eq!(m.out, b"error: line longer than 4 bytes\n");
        assert_eq!(m.stop, Some(ModelStop::TooLong));
    }

    /// Replays a fuzzer's crash file: `DRAINPORT_CASE=path cargo test
    /// --features fuzzing replay -- --ignored --nocapture`.
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
}
