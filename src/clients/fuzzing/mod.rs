//! A scripted socket and a driver that run one connection, held by the
//! server's own [`Clients`], through any sequence of peer actions,
//! readiness events and timers, and check it against a model. Every turn
//! goes through [`Clients::turn`], the function the server's loop calls, so
//! what is checked is the server's glue (hook, verdict, timeouts, the
//! `Again` list), not a copy of it.
//!
//! Guarantees: a sequence of operations that ends without an error has
//! shown, at every step, that
//! - the peer received a prefix of the model's replies (the greeting, then
//!   each line as sent plus a suffix and a tag that only the connection's
//!   own protocol state can get right, in order, nothing lost, nothing
//!   duplicated, whatever the split points), and exactly the too-long error
//!   and nothing after it for a line longer than `max_line`;
//! - with the telnet filter on (half the cases, whose sends then carry
//!   telnet commands), commands were taken out of the data, their answers
//!   came after the replies to the lines before them and before the rest,
//!   and a Ctrl-C dropped the partial line before it, whatever the split
//!   points and backpressure;
//! - the connection's buffers (bytes not yet filtered included) held at
//!   most `max_output` + one reply + `READ_CHUNK` + `max_line` bytes, plus
//!   the length of each drain notice it took with the protocol's word after
//!   it (both are queued whatever the backpressure);
//! - a drain notice, and the protocol's word after it, landed after the
//!   output produced so far and ahead of any later reply, and only a
//!   connection already ending dropped them; a protocol that answered the
//!   drain with `Close` got nothing more answered, and its connection sent
//!   its FIN and closed on the peer's EOF;
//! - a hard stop sent what was pending and then the closing line when the
//!   send buffer had room, shut the write side, and left no unread input
//!   behind when there were at most four read chunks of it;
//! - a `Close` verdict came only for a reset, a peer that half-closed and was
//!   answered, or an ending connection whose EOF arrived (or whose discarded
//!   input passed the limit), so a close never turns into a reset;
//! - run on a virtual clock, the timeouts fired each deadline never before
//!   it was due and at most a tick after, and the loop would never sleep
//!   past one (nor wake to find one still due, but for a deadline the
//!   protocol moved into the past as it fired): the
//!   idle timeout only after that long with no byte read, the send
//!   timeout only when output had waited that long with none of it
//!   written (the peer took none in a way the kernel reports: a writable
//!   edge, raised once a third of the send buffer is free), the
//!   protocol's deadline (set, moved and cleared by the case, and moved or
//!   cleared by `on_deadline` itself) once per place it was set,
//!   `on_deadline` never for an ending connection;
//! - an idle timeout queued the idle line after the output produced before
//!   it, whatever the backpressure, and the connection ended (FIN, then a
//!   close on the peer's EOF, or the told client's wait later); a send
//!   timeout closed at once; a deadline's word landed in order, as a
//!   drain notice does, and its close ended the connection as a drain's;
//! - after every turn, the process's buffer budget held exactly what the
//!   connection's buffers hold, and nothing once it was gone;
//! - the connection was counted among the closed from the turn its end
//!   began (or it was closed) and never before, once, and under the
//!   reason the model ended it for (a hard stop's when it was not ending
//!   already);
//! - nothing fired for a connection once it had left, and with no timeout
//!   configured and no deadline set nothing was armed at all;
//! - once every event the kernel owed had been delivered, every `Again`
//!   pumped (the driver pumps only after `Again`, as the server does) and
//!   all output read by the peer, all complete lines were
//!   answered, an ending connection had sent its FIN, a half-closed or reset
//!   one was closed, and an idle one held nothing but an unterminated tail.
//!
//! The scripted socket behaves like a Linux TCP socket under edge-triggered
//! epoll, delivering the fewest events the kernel may: a readable edge per
//! arrival, a writable edge only after a write found the send buffer full and
//! a third of it has since been freed. The driver may add spurious events on
//! top. Time stands still in a turn; the clock moves only when the loop
//! could sleep (nothing owed), and deadlines may fire between any turns:
//! during a flush, after a drain notice, once the connection is ending.
//! What fired is read from its effects: the hooks the protocol was called
//! with, and a close. The same decoder turns a fuzzer's bytes and the
//! property test's pseudo-random bytes into operations, so both explore
//! the same space.
//!
//! Compiled only for tests and under `cfg(fuzzing)`, which cargo-fuzz sets.
//!
//! [`Clients`]: crate::clients::Clients
//! [`Clients::turn`]: crate::clients::Clients::turn

mod case;
mod driver;
mod model;
#[cfg(test)]
mod tests;
mod wire;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::protocol::{Action, LineProtocol, Lines, Protocol, Step};

use case::{Case, Then};

/// Appended to every reply by the test protocol.
const SUFFIX: &[u8] = b"~ok\n";
/// The test protocol's last line on a hard stop.
const CLOSING_LINE: &[u8] = b"~bye\n";
/// The line the server sends every client when a drain starts.
const NOTICE: &[u8] = b"~notice\n";
/// The test protocol's greeting.
const GREETING: &[u8] = b"~hi\n";
/// What the test protocol appends when the drain starts, after the notice.
const DRAINING: &[u8] = b"~drain\n";
/// The tag after the reply to a connection's odd-numbered lines, and after
/// its even-numbered ones.
const TAGS: [&[u8]; 2] = [b"1\n", b"2\n"];
/// What the test protocol says when its deadline passes.
const LATE: &[u8] = b"~late\n";
/// A line whose body is this asks the protocol to close.
const QUIT: &[u8] = b"q";
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
/// after a line whose body is [`QUIT`]. Served through `Lines`, as the echo
/// server is, inside [`Tagged`].
struct Suffix;

impl LineProtocol for Suffix {
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
        out.extend_from_slice(CLOSING_LINE);
    }
}

/// The protocol the driver serves: [`Suffix`] through `Lines`, wrapped to
/// keep state per connection as a protocol of its own would. It greets on
/// connect, tags each reply with the parity of the connection's line count,
/// says [`DRAINING`] at a drain, and then closes if that count is odd. The
/// state steers what the connection does, so the model catches state that
/// is lost, shared or stale. Its deadline is the [`Plan`]'s, which the
/// driver sets as a protocol's own hooks would; when it passes the
/// protocol says [`LATE`] and does what the plan says. An idle client gets
/// `Lines`' idle line.
struct Tagged {
    lines: Lines<Suffix>,
    plan: Rc<RefCell<Plan>>,
}

/// What [`Tagged`] keeps per connection: the lines it answered, modulo 256
/// (parity is all that matters).
#[derive(Default)]
struct Seen {
    lines: u8,
}

impl Seen {
    fn tag(&mut self, out: &mut Vec<u8>) {
        self.lines = self.lines.wrapping_add(1);
        out.extend_from_slice(TAGS[usize::from(self.lines % 2 == 0)]);
    }

    fn odd(&self) -> bool {
        self.lines % 2 == 1
    }
}

/// What the driver and the protocol share: the protocol's deadline and
/// what it does when it passes, which the driver sets, and how often the
/// timer hooks were called, which the driver checks. One connection is
/// served, so the protocol may keep its deadline here rather than in
/// [`Seen`]: the machinery reads it through [`Protocol::deadline`] after
/// every turn all the same.
#[derive(Default)]
struct Plan {
    deadline: Option<Instant>,
    then: Then,
    /// Calls of `on_deadline`.
    late: u32,
    /// Calls of `on_idle_timeout`.
    idle: u32,
}

impl Protocol for Tagged {
    type Conn = Seen;

    fn on_connect(&mut self, _: &mut Seen, _: crate::Peer<'_>, out: &mut Vec<u8>) -> Action {
        out.extend_from_slice(GREETING);
        Action::Continue
    }

    fn on_data(&mut self, seen: &mut Seen, input: &[u8], out: &mut Vec<u8>) -> Step {
        let step = self.lines.on_data(&mut (), input, out);
        if matches!(step, Step::Took(_) | Step::Close(_)) {
            seen.tag(out);
        }
        step
    }

    fn on_eof(&mut self, seen: &mut Seen, rest: &[u8], out: &mut Vec<u8>) {
        if !rest.is_empty() {
            self.lines.on_eof(&mut (), rest, out);
            seen.tag(out);
        }
    }

    fn on_too_long(&mut self, _: &mut Seen, cap: usize, out: &mut Vec<u8>) {
        self.lines.on_too_long(&mut (), cap, out);
    }

    fn on_drain(&mut self, seen: &mut Seen, out: &mut Vec<u8>) -> Action {
        out.extend_from_slice(DRAINING);
        if seen.odd() {
            Action::Close
        } else {
            Action::Continue
        }
    }

    fn on_closing(&mut self, _: &mut Seen, out: &mut Vec<u8>) {
        self.lines.on_closing(&mut (), out);
    }

    fn deadline(&self, _: &Seen) -> Option<Instant> {
        self.plan.borrow().deadline
    }

    fn on_deadline(&mut self, _: &mut Seen, out: &mut Vec<u8>) -> Action {
        let mut plan = self.plan.borrow_mut();
        plan.late += 1;
        out.extend_from_slice(LATE);
        match plan.then {
            Then::Stay => {}
            Then::Clear => plan.deadline = None,
            Then::Move(ms) => plan.deadline = plan.deadline.map(|at| shift(at, ms)),
            Then::Close => return Action::Close,
        }
        Action::Continue
    }

    fn on_idle_timeout(&mut self, _: &mut Seen, idle: Duration, out: &mut Vec<u8>) {
        self.plan.borrow_mut().idle += 1;
        self.lines.on_idle_timeout(&mut (), idle, out);
    }
}

/// `at` moved by `ms` either way.
fn shift(at: Instant, ms: case::Ms) -> Instant {
    let by = Duration::from_millis(u64::from(ms.unsigned_abs()));
    if ms < 0 {
        at.checked_sub(by).unwrap_or(at)
    } else {
        at + by
    }
}

/// A line without its `\n` and a `\r` before it. Written here rather than
/// taken from `protocol` so that the model shares no code with what it checks.
fn body(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
