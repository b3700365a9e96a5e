//! The seam between the drain machinery and what a server says.
//!
//! A [`Protocol`] consumes bytes and appends replies. It never sees a
//! socket: the connection code reads, calls [`feed`] to hand the bytes to
//! the protocol within the machinery's limits, and writes whatever the
//! protocol appended. Everything here is a pure function over byte slices,
//! so it is tested without I/O.
//!
//! Guarantees [`feed`] gives a protocol, and through it the machinery gives
//! every protocol:
//! - `on_data` never sees more than the input cap at once, so a protocol
//!   that returns [`Step::NeedMore`] on a full window is refused a message
//!   longer than the cap ([`Protocol::on_too_long`]), and between reads a
//!   connection keeps less than the cap of one unfinished message;
//! - `on_data` is not called while the output holds the output limit or
//!   more, so the output overshoots the limit by at most one call's replies;
//! - per-connection state ([`Protocol::Conn`]) lives in the connection's
//!   slot, made with `Default` when the client is admitted.
//!
//! Line protocols implement [`LineProtocol`] and are served through
//! [`Lines`]. Anything else implements [`Protocol`] over bytes. This one
//! numbers the lines of each client, which takes state per connection, and
//! sends a client away when the drain starts:
//!
//! ```
//! use std::io::Write as _;
//!
//! use drainport::protocol::{Action, Protocol, Step, Stop, feed, find_newline};
//!
//! struct Numbered;
//!
//! impl Protocol for Numbered {
//!     /// Lines this client sent. Two bytes fit in the slot's padding.
//!     type Conn = u16;
//!
//!     fn on_data(&mut self, seen: &mut u16, input: &[u8], out: &mut Vec<u8>) -> Step {
//!         let Some(end) = find_newline(input) else {
//!             // A line longer than the input cap is refused for us.
//!             return Step::NeedMore;
//!         };
//!         *seen = seen.wrapping_add(1);
//!         let _ = write!(out, "{seen}: ");
//!         out.extend_from_slice(&input[..=end]);
//!         Step::Took(end + 1)
//!     }
//!
//!     fn on_drain(&mut self, seen: &mut u16, out: &mut Vec<u8>) -> Action {
//!         let _ = writeln!(out, "draining after {seen} lines, bye");
//!         Action::Close
//!     }
//! }
//!
//! // Fed as the machinery feeds it, for two clients.
//! let (mut one, mut two) = (0, 0);
//! let mut out = Vec::new();
//! let fed = feed(&mut Numbered, &mut one, b"a\nb\npart", 1024, &mut out, 65536);
//! assert_eq!((fed.consumed, fed.stop), (4, Stop::NeedMore));
//! feed(&mut Numbered, &mut two, b"x\n", 1024, &mut out, 65536);
//! assert_eq!(Numbered.on_drain(&mut one, &mut out), Action::Close);
//! assert_eq!(out, b"1: a\n2: b\n1: x\ndraining after 2 lines, bye\n");
//! ```

use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::peer::Peer;

/// What a protocol wants done with the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep the connection.
    Continue,
    /// Send everything appended so far, then close (FIN, then wait for EOF).
    Close,
}

/// What one call to [`Protocol::on_data`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Took this many bytes (at least 1) from the front of the input.
    /// `Took(0)` is read as [`Step::NeedMore`], and a count past the end of
    /// the input as all of it.
    Took(usize),
    /// Took this many bytes (may be 0), then wants the connection closed
    /// once its output is flushed. The input after them is discarded.
    Close(usize),
    /// Took nothing: a whole message needs more bytes.
    NeedMore,
}

/// A protocol served on the drain machinery.
///
/// One value serves every connection of a process, so state kept in `self`
/// is shared by all clients; state of one client lives in [`Protocol::Conn`].
/// Every hook appends its replies to `out`; the machinery sends them in the
/// order they were appended, after anything the connection still has to
/// send.
pub trait Protocol {
    /// Per-connection state, made with `Default` when a client is admitted
    /// and stored inline in the connection's slot. Use `()` for none; keep it
    /// a few bytes, and `Box` anything large (allocate only when needed), so
    /// that an idle client stays cheap.
    type Conn: Default;

    /// A client was admitted from `peer`: a TCP client's IP address and
    /// port, or for a client of a Unix socket that socket's name
    /// ([`Peer`]). May append a greeting, or return [`Action::Close`] to
    /// turn it away (after the flush).
    fn on_connect(&mut self, conn: &mut Self::Conn, peer: Peer<'_>, out: &mut Vec<u8>) -> Action {
        let _ = (conn, peer, out);
        Action::Continue
    }

    /// Consumes bytes from the front of `input`, appending replies to `out`.
    ///
    /// The machinery calls it again with the rest while it takes bytes and
    /// `out` is below the output limit, so one call may handle one message.
    /// Bytes not taken are offered again, with more after them, once more
    /// arrive. `input` is never longer than the input cap
    /// ([`Config::max_input`](crate::Config::max_input)): if a protocol
    /// returns [`Step::NeedMore`] on a full window, the message is too long,
    /// [`Protocol::on_too_long`] is called and the connection closes.
    fn on_data(&mut self, conn: &mut Self::Conn, input: &[u8], out: &mut Vec<u8>) -> Step;

    /// The client half-closed (EOF). `rest` is what it sent that was not
    /// taken (shorter than the cap). The connection closes after the flush.
    fn on_eof(&mut self, conn: &mut Self::Conn, rest: &[u8], out: &mut Vec<u8>) {
        let _ = (conn, rest, out);
    }

    /// An unfinished message reached the input cap of `cap` bytes. The
    /// connection closes once this reply is sent.
    fn on_too_long(&mut self, conn: &mut Self::Conn, cap: usize, out: &mut Vec<u8>) {
        let _ = (conn, cap, out);
    }

    /// The drain started. Called once per connection, also for clients
    /// accepted from the queue after the drain began, but not for one that is
    /// already ending (one that decided to close and waits for its flush and
    /// the client's EOF). Return [`Action::Close`] to close after the flush.
    fn on_drain(&mut self, conn: &mut Self::Conn, out: &mut Vec<u8>) -> Action {
        let _ = (conn, out);
        Action::Continue
    }

    /// Hard stop (a second signal, or the drain timeout): append a last word,
    /// if any. The connection is closed right after.
    fn on_closing(&mut self, conn: &mut Self::Conn, out: &mut Vec<u8>) {
        let _ = (conn, out);
    }

    /// The connection's own deadline, if it has one: a header that must be
    /// complete by then, a keep-alive that ends then. The machinery reads
    /// it after every hook call for the connection, so a protocol sets,
    /// moves or clears it by changing `conn`, and calls
    /// [`Protocol::on_deadline`] once it passes: never before, and at most
    /// one tick (100 ms) after. It must be cheap: it is called often.
    fn deadline(&self, conn: &Self::Conn) -> Option<Instant> {
        let _ = conn;
        None
    }

    /// The deadline [`Protocol::deadline`] gave has passed. Append a last
    /// word and return [`Action::Close`], or move the deadline and return
    /// [`Action::Continue`]; a deadline left where it was is not reported
    /// again until it changes. Not called for a connection already ending.
    fn on_deadline(&mut self, conn: &mut Self::Conn, out: &mut Vec<u8>) -> Action {
        let _ = (conn, out);
        Action::Continue
    }

    /// The client sent nothing for `idle` ([`Config::idle_timeout`]):
    /// append the last word it gets. The connection then ends (flush, FIN,
    /// and a wait for the client's EOF of a second at most, or `idle` if
    /// shorter, and none while the process is out of descriptors).
    ///
    /// [`Config::idle_timeout`]: crate::Config::idle_timeout
    fn on_idle_timeout(&mut self, conn: &mut Self::Conn, idle: Duration, out: &mut Vec<u8>) {
        let _ = (conn, idle, out);
    }

    /// The connections' buffers hold more than their budget
    /// ([`Config::max_buffers`]) and this one holds among the most: `held`
    /// bytes. What it held is dropped (input not taken yet, replies the
    /// client has not taken); append the last word it gets. The connection
    /// then ends: flush, FIN, and a wait for the client's EOF that keeps no
    /// buffer.
    ///
    /// [`Config::max_buffers`]: crate::Config::max_buffers
    fn on_evicted(&mut self, conn: &mut Self::Conn, held: usize, out: &mut Vec<u8>) {
        let _ = (conn, held, out);
    }
}

/// A protocol of newline-terminated lines, served through [`Lines`].
pub trait LineProtocol {
    /// Appends the reply to one line to `out`.
    ///
    /// `line` holds the bytes exactly as received, terminator included
    /// (`\n`, or `\r\n`). It lacks a terminator only when a client half-closes
    /// after an unterminated tail; that tail is offered as a last line.
    fn on_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Action;

    /// Appends the reply to a line longer than `max_line` bytes, terminator
    /// included. The connection is closed once this reply is sent.
    fn on_line_too_long(&mut self, max_line: usize, out: &mut Vec<u8>) {
        let _ = writeln!(out, "error: line longer than {max_line} bytes");
    }

    /// Appends the last line a client gets when it sent nothing for `idle`
    /// ([`Config::idle_timeout`](crate::Config::idle_timeout)); the
    /// connection ends after it.
    fn on_idle_timeout(&mut self, idle: Duration, out: &mut Vec<u8>) {
        let _ = writeln!(out, "error: idle for {}s, closing", idle.as_secs_f64());
    }

    /// Appends the last line a client gets when it is closed to keep the
    /// clients' buffers within their budget
    /// ([`Config::max_buffers`](crate::Config::max_buffers)), which they
    /// passed while it held `held` bytes, among the most of any client.
    fn on_evicted(&mut self, held: usize, out: &mut Vec<u8>) {
        let _ = writeln!(
            out,
            "error: the server's memory for client buffers is full and this connection held {held} bytes of it, closing"
        );
    }

    /// Appends the last line a client gets when the server closes it on a
    /// hard stop (a second signal or the drain timeout).
    fn on_closing(&mut self, out: &mut Vec<u8>) {
        let _ = writeln!(
            out,
            ": process {} is closing this connection",
            std::process::id()
        );
    }
}

/// Serves a [`LineProtocol`]: one line per [`Protocol::on_data`] call,
/// `type Conn = ()`, and an unterminated tail at EOF offered as a last line.
/// The input cap is the longest line, terminator included.
pub struct Lines<P>(pub P);

impl<P: LineProtocol> Protocol for Lines<P> {
    type Conn = ();

    fn on_data(&mut self, _: &mut (), input: &[u8], out: &mut Vec<u8>) -> Step {
        let Some(at) = find_newline(input) else {
            return Step::NeedMore;
        };
        let line = &input[..=at];
        match self.0.on_line(line, out) {
            Action::Continue => Step::Took(line.len()),
            Action::Close => Step::Close(line.len()),
        }
    }

    fn on_eof(&mut self, _: &mut (), rest: &[u8], out: &mut Vec<u8>) {
        if !rest.is_empty() {
            // Whatever it asks for, the connection closes after this.
            let _ = self.0.on_line(rest, out);
        }
    }

    fn on_too_long(&mut self, _: &mut (), cap: usize, out: &mut Vec<u8>) {
        self.0.on_line_too_long(cap, out);
    }

    fn on_closing(&mut self, _: &mut (), out: &mut Vec<u8>) {
        self.0.on_closing(out);
    }

    fn on_idle_timeout(&mut self, _: &mut (), idle: Duration, out: &mut Vec<u8>) {
        self.0.on_idle_timeout(idle, out);
    }

    fn on_evicted(&mut self, _: &mut (), held: usize, out: &mut Vec<u8>) {
        self.0.on_evicted(held, out);
    }
}

/// Strips the terminator from a line: `\n`, with an optional `\r` before it.
pub fn line_body(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The index of the first `\n` in `hay`, using the C library's vectorised
/// `memchr` rather than a byte-at-a-time scan.
#[inline]
pub fn find_newline(hay: &[u8]) -> Option<usize> {
    crate::sys::memchr(b'\n', hay)
}

/// Why [`feed`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The protocol needs more bytes than the input holds (or it is empty).
    NeedMore,
    /// `out` reached its limit; the input not taken waits until it drains.
    Full,
    /// The protocol asked to close after what it took.
    Close,
    /// A message reached the cap unfinished; `on_too_long` has replied.
    TooLong,
}

/// What one pass of [`feed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Bytes of input the protocol took.
    pub consumed: usize,
    /// Calls to `on_data` that took bytes: lines, for a line protocol.
    pub messages: u64,
    /// Why the pass ended.
    pub stop: Stop,
}

/// Hands `input` to `protocol` as the machinery does: in windows of at most
/// `cap` bytes, again and again while it takes bytes and `out` holds less
/// than `out_limit`.
///
/// The limit is checked before each call, so `out` overshoots it by at most
/// one call's replies. That is what bounds memory for a client that writes
/// and never reads: its input stays untaken, and unread, until it takes its
/// replies. Public so that a protocol can be tested exactly as it is served.
#[inline]
pub fn feed<P: Protocol + ?Sized>(
    protocol: &mut P,
    conn: &mut P::Conn,
    input: &[u8],
    cap: usize,
    out: &mut Vec<u8>,
    out_limit: usize,
) -> Fed {
    let mut pos = 0;
    let mut messages = 0;
    let stop = loop {
        if pos == input.len() {
            // The common end of a batch: no call just to hear NeedMore.
            break Stop::NeedMore;
        }
        if out.len() >= out_limit {
            break Stop::Full;
        }
        let rest = &input[pos..];
        let window = &rest[..rest.len().min(cap)];
        match protocol.on_data(conn, window, out) {
            Step::Took(n) if n > 0 => {
                pos += n.min(window.len());
                messages += 1;
            }
            Step::Close(n) => {
                pos += n.min(window.len());
                messages += u64::from(n > 0);
                break Stop::Close;
            }
            Step::Took(_) | Step::NeedMore if window.len() >= cap => {
                protocol.on_too_long(conn, cap, out);
                break Stop::TooLong;
            }
            Step::Took(_) | Step::NeedMore => break Stop::NeedMore,
        }
    };
    Fed {
        consumed: pos,
        messages,
        stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replies with the line and a fixed suffix; closes on `quit`.
    struct Suffix;

    impl LineProtocol for Suffix {
        fn on_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Action {
            out.extend_from_slice(line);
            out.extend_from_slice(b"+\n");
            if line_body(line) == b"quit" {
                Action::Close
            } else {
                Action::Continue
            }
        }
    }

    fn feed_lines(input: &[u8], cap: usize, out: &mut Vec<u8>, out_limit: usize) -> Fed {
        feed(&mut Lines(Suffix), &mut (), input, cap, out, out_limit)
    }

    /// Messages of one length byte and that many bytes of body. The state
    /// counts the messages of a connection, which the reply carries, and
    /// `on_connect`, `on_drain`, `on_eof` and `on_closing` each say a word.
    struct Counted;

    impl Protocol for Counted {
        type Conn = u8;

        fn on_connect(&mut self, _: &mut u8, peer: Peer<'_>, out: &mut Vec<u8>) -> Action {
            let _ = write!(out, "hi {};", peer.ip().map_or(0, |a| a.port()));
            Action::Continue
        }

        fn on_data(&mut self, seen: &mut u8, input: &[u8], out: &mut Vec<u8>) -> Step {
            let Some((&len, rest)) = input.split_first() else {
                return Step::NeedMore;
            };
            let Some(body) = rest.get(..usize::from(len)) else {
                return Step::NeedMore;
            };
            *seen += 1;
            out.push(b'0' + *seen);
            out.extend_from_slice(body);
            out.push(b';');
            if body == b"bye" {
                Step::Close(1 + body.len())
            } else {
                Step::Took(1 + body.len())
            }
        }

        fn on_eof(&mut self, seen: &mut u8, rest: &[u8], out: &mut Vec<u8>) {
            let _ = write!(out, "eof after {seen} with {} left;", rest.len());
        }

        fn on_too_long(&mut self, _: &mut u8, cap: usize, out: &mut Vec<u8>) {
            let _ = write!(out, "over {cap};");
        }

        fn on_drain(&mut self, seen: &mut u8, out: &mut Vec<u8>) -> Action {
            out.extend_from_slice(b"draining;");
            if *seen > 1 {
                Action::Close
            } else {
                Action::Continue
            }
        }

        fn on_closing(&mut self, _: &mut u8, out: &mut Vec<u8>) {
            out.extend_from_slice(b"bye;");
        }
    }

    #[test]
    fn line_body_strips_one_terminator() {
        assert_eq!(line_body(b"a\r\n"), b"a");
        assert_eq!(line_body(b"a\n"), b"a");
        assert_eq!(line_body(b"a"), b"a");
        assert_eq!(line_body(b"a\r\r\n"), b"a\r");
        assert_eq!(line_body(b"\r"), b"");
    }

    #[test]
    fn find_newline_agrees_with_a_scan() {
        let mut hay = vec![b'x'; 300];
        assert_eq!(find_newline(&hay), None);
        for at in [0, 1, 15, 16, 31, 64, 299] {
            hay[at] = b'\n';
            assert_eq!(find_newline(&hay), hay.iter().position(|&b| b == b'\n'));
            hay[at] = b'x';
        }
        assert_eq!(find_newline(&[]), None);
    }

    #[test]
    fn lines_takes_one_lf_or_crlf_line_per_call() {
        let mut out = Vec::new();
        let mut lines = Lines(Suffix);
        assert_eq!(
            lines.on_data(&mut (), b"abc\nrest", &mut out),
            Step::Took(4)
        );
        assert_eq!(lines.on_data(&mut (), b"d\r\ne\n", &mut out), Step::Took(3));
        assert_eq!(lines.on_data(&mut (), b"\n", &mut out), Step::Took(1));
        assert_eq!(lines.on_data(&mut (), b"abc", &mut out), Step::NeedMore);
        assert_eq!(
            lines.on_data(&mut (), b"quit\nx\n", &mut out),
            Step::Close(5)
        );
        assert_eq!(out, b"abc\n+\nd\r\n+\n\n+\nquit\n+\n");
    }

    #[test]
    fn lines_says_why_an_idle_client_is_closed() {
        let mut out = Vec::new();
        Lines(Suffix).on_idle_timeout(&mut (), Duration::from_secs(30), &mut out);
        Lines(Suffix).on_idle_timeout(&mut (), Duration::from_millis(1500), &mut out);
        assert_eq!(
            out,
            b"error: idle for 30s, closing\nerror: idle for 1.5s, closing\n"
        );
        // By default a byte protocol appends nothing, and has no deadline.
        out.clear();
        Counted.on_idle_timeout(&mut 0, Duration::from_secs(1), &mut out);
        assert_eq!(Counted.deadline(&0), None);
        assert_eq!(Counted.on_deadline(&mut 0, &mut out), Action::Continue);
        assert_eq!(out, b"");
    }

    #[test]
    fn lines_answers_a_tail_at_eof_and_nothing_when_there_is_none() {
        let mut out = Vec::new();
        Lines(Suffix).on_eof(&mut (), b"", &mut out);
        assert_eq!(out, b"");
        Lines(Suffix).on_eof(&mut (), b"tail", &mut out);
        assert_eq!(out, b"tail+\n");
    }

    #[test]
    fn binary_bytes_are_ordinary_data() {
        let data = b"\0\xff\xfb\x01\r\r\n";
        let mut out = Vec::new();
        let got = feed_lines(data, 100, &mut out, 1000);
        assert_eq!((got.consumed, got.messages), (data.len(), 1));
    }

    #[test]
    fn feed_takes_whole_lines_and_leaves_the_tail() {
        let mut out = Vec::new();
        let got = feed_lines(b"a\nb\r\npart", 100, &mut out, 1000);
        assert_eq!(
            got,
            Fed {
                consumed: 5,
                messages: 2,
                stop: Stop::NeedMore
            }
        );
        assert_eq!(out, b"a\n+\nb\r\n+\n");
    }

    #[test]
    fn feed_stops_when_output_is_full() {
        let mut out = Vec::new();
        let got = feed_lines(b"aaaa\nbbbb\ncccc\n", 100, &mut out, 8);
        assert_eq!(got.stop, Stop::Full);
        assert_eq!(got.consumed, 10);
        assert_eq!(out, b"aaaa\n+\nbbbb\n+\n");
    }

    #[test]
    fn feed_stops_at_close() {
        let mut out = Vec::new();
        let got = feed_lines(b"quit\nmore\n", 100, &mut out, 1000);
        assert_eq!(got.stop, Stop::Close);
        assert_eq!(got.consumed, 5);
        assert_eq!(out, b"quit\n+\n");
    }

    #[test]
    fn the_cap_counts_the_terminator() {
        let mut out = Vec::new();
        assert_eq!(feed_lines(b"abc\n", 4, &mut out, 1000).stop, Stop::NeedMore);
        assert_eq!(feed_lines(b"abc", 4, &mut out, 1000).stop, Stop::NeedMore);
        out.clear();
        assert_eq!(feed_lines(b"abcd", 4, &mut out, 1000).stop, Stop::TooLong);
        assert_eq!(out, b"error: line longer than 4 bytes\n");
        out.clear();
        let got = feed_lines(b"abcd\n", 4, &mut out, 1000);
        assert_eq!((got.stop, got.consumed), (Stop::TooLong, 0));
    }

    #[test]
    fn feed_reports_a_long_line_after_the_good_ones() {
        let mut out = Vec::new();
        let got = feed_lines(b"ok\nxxxxxxxxxx", 5, &mut out, 1000);
        assert_eq!(got.stop, Stop::TooLong);
        assert_eq!(got.consumed, 3);
        assert_eq!(out, b"ok\n+\nerror: line longer than 5 bytes\n");
    }

    #[test]
    fn a_window_never_exceeds_the_cap() {
        struct Widths(Vec<usize>);
        impl Protocol for Widths {
            type Conn = ();
            fn on_data(&mut self, _: &mut (), input: &[u8], _: &mut Vec<u8>) -> Step {
                self.0.push(input.len());
                Step::Took(2)
            }
        }
        let mut widths = Widths(Vec::new());
        let got = feed(&mut widths, &mut (), &[0; 9], 4, &mut Vec::new(), 10);
        assert_eq!(widths.0, [4, 4, 4, 3, 1]);
        assert_eq!((got.consumed, got.messages), (9, 5));
    }

    #[test]
    fn a_count_past_the_input_takes_all_of_it_and_zero_needs_more() {
        struct Greedy(usize);
        impl Protocol for Greedy {
            type Conn = ();
            fn on_data(&mut self, _: &mut (), _: &[u8], _: &mut Vec<u8>) -> Step {
                Step::Took(self.0)
            }
        }
        let got = feed(&mut Greedy(100), &mut (), b"abc", 10, &mut Vec::new(), 10);
        assert_eq!((got.consumed, got.stop), (3, Stop::NeedMore));
        let got = feed(&mut Greedy(0), &mut (), b"abc", 10, &mut Vec::new(), 10);
        assert_eq!((got.consumed, got.stop), (0, Stop::NeedMore));
        let got = feed(&mut Greedy(0), &mut (), b"abc", 3, &mut Vec::new(), 10);
        assert_eq!((got.consumed, got.stop), (0, Stop::TooLong));
    }

    #[test]
    fn state_lives_across_calls_of_one_connection_only() {
        let mut p = Counted;
        let (mut a, mut b) = (u8::default(), u8::default());
        let mut out = Vec::new();
        let peer = Peer::Ip(std::net::SocketAddr::from(([127, 0, 0, 1], 4242)));
        assert_eq!(p.on_connect(&mut a, peer, &mut out), Action::Continue);
        let got = feed(&mut p, &mut a, b"\x02ab\x01c\x03de", 100, &mut out, 1000);
        assert_eq!(
            (got.consumed, got.messages, got.stop),
            (5, 2, Stop::NeedMore)
        );
        feed(&mut p, &mut b, b"\x01x", 100, &mut out, 1000);
        feed(&mut p, &mut a, b"\x03def", 100, &mut out, 1000);
        assert_eq!(out, b"hi 4242;1ab;2c;1x;3def;");
        assert_eq!((a, b), (3, 1));
    }

    #[test]
    fn the_hooks_see_the_connection_state() {
        let mut p = Counted;
        let mut out = Vec::new();
        let mut one = 1;
        assert_eq!(p.on_drain(&mut one, &mut out), Action::Continue);
        let mut two = 2;
        assert_eq!(p.on_drain(&mut two, &mut out), Action::Close);
        p.on_eof(&mut two, b"\x05ab", &mut out);
        p.on_closing(&mut two, &mut out);
        assert_eq!(out, b"draining;draining;eof after 2 with 3 left;bye;");
    }

    #[test]
    fn a_close_step_keeps_what_it_took_and_stops() {
        let mut out = Vec::new();
        let mut seen = 0;
        let got = feed(
            &mut Counted,
            &mut seen,
            b"\x03bye\x01z",
            100,
            &mut out,
            1000,
        );
        assert_eq!((got.consumed, got.messages, got.stop), (4, 1, Stop::Close));
        assert_eq!(out, b"1bye;");
    }

    #[test]
    fn a_message_longer_than_the_cap_is_refused_through_the_hook() {
        let mut out = Vec::new();
        let got = feed(
            &mut Counted,
            &mut 0,
            b"\x01a\x09abcdefgh",
            6,
            &mut out,
            1000,
        );
        assert_eq!((got.consumed, got.stop), (2, Stop::TooLong));
        assert_eq!(out, b"1a;over 6;");
    }
}
