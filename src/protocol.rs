//! The seam between the drain machinery and what a server says.
//!
//! A [`Protocol`] turns lines into replies. It never sees a socket: the
//! connection code frames bytes with [`frame`], feeds lines through
//! [`answer`], and writes whatever the protocol appended. Everything here is
//! a pure function over byte slices, so it is tested without I/O.

use std::io::Write as _;

/// What a protocol wants done with the connection after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep reading lines.
    Continue,
    /// Send what has been appended so far, then close the connection.
    Close,
}

/// A line protocol served on the drain machinery.
///
/// One value serves every connection of a process, so state kept in `self`
/// is shared by all clients.
pub trait Protocol {
    /// Appends the reply to one line to `out`.
    ///
    /// `line` holds the bytes exactly as received, terminator included
    /// (`\n`, or `\r\n`). It lacks a terminator only when a client half-closes
    /// after an unterminated tail; that tail is offered as a last line.
    fn on_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Action;

    /// Appends the reply to a line longer than `max_line` bytes. The
    /// connection is closed once this reply is sent.
    fn on_line_too_long(&mut self, max_line: usize, out: &mut Vec<u8>) {
        let _ = writeln!(out, "error: line longer than {max_line} bytes");
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

/// The result of looking for one line at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A complete line of this many bytes, terminator included.
    Line(usize),
    /// No terminator yet, and the bytes so far still fit in a line.
    Incomplete,
    /// No terminator within `max_line` bytes: the line is too long.
    TooLong,
}

/// Finds the first line in `buf`. A line is at most `max_line` bytes,
/// counting its `\n` (and a `\r` before it, which stays part of the line).
pub fn frame(buf: &[u8], max_line: usize) -> Frame {
    let window = &buf[..buf.len().min(max_line)];
    match find_newline(window) {
        Some(at) => Frame::Line(at + 1),
        None if buf.len() >= max_line => Frame::TooLong,
        None => Frame::Incomplete,
    }
}

/// Strips the terminator from a line: `\n`, with an optional `\r` before it.
pub fn line_body(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Why [`answer`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Every complete line was answered; the rest waits for more bytes.
    NeedMore,
    /// `out` reached its limit; the unconsumed lines wait until it drains.
    Full,
    /// The protocol asked to close after the last answered line.
    Close,
    /// A line was too long; its error reply has been appended.
    TooLong,
}

/// What one pass of [`answer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// Bytes of input taken, always whole lines.
    pub consumed: usize,
    /// Lines answered.
    pub lines: u64,
    /// Why the pass ended.
    pub stop: Stop,
}

/// Answers the complete lines at the start of `input`, appending replies to
/// `out` until `out` holds `out_limit` bytes or more.
///
/// The limit is checked before each line, so `out` overshoots it by at most
/// one reply. That is what bounds memory for a client that writes and never
/// reads: its lines stay unanswered, and unread, until it takes its replies.
pub fn answer<P: Protocol + ?Sized>(
    protocol: &mut P,
    input: &[u8],
    max_line: usize,
    out: &mut Vec<u8>,
    out_limit: usize,
) -> Answered {
    let mut pos = 0;
    let mut lines = 0;
    let stop = loop {
        if pos == input.len() {
            // The common end of a batch: no need to look for another line.
            break Stop::NeedMore;
        }
        if out.len() >= out_limit {
            break Stop::Full;
        }
        match frame(&input[pos..], max_line) {
            Frame::Incomplete => break Stop::NeedMore,
            Frame::TooLong => {
                protocol.on_line_too_long(max_line, out);
                break Stop::TooLong;
            }
            Frame::Line(len) => {
                let action = protocol.on_line(&input[pos..pos + len], out);
                pos += len;
                lines += 1;
                if action == Action::Close {
                    break Stop::Close;
                }
            }
        }
    };
    Answered {
        consumed: pos,
        lines,
        stop,
    }
}

/// The index of the first `\n` in `hay`, using the C library's vectorised
/// `memchr` rather than a byte-at-a-time scan.
pub fn find_newline(hay: &[u8]) -> Option<usize> {
    // SAFETY: `hay` is a valid slice of `hay.len()` readable bytes.
    let hit = unsafe { libc::memchr(hay.as_ptr().cast(), i32::from(b'\n'), hay.len()) };
    if hit.is_null() {
        None
    } else {
        Some(hit as usize - hay.as_ptr() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replies with the line and a fixed suffix; closes on `quit`.
    struct Suffix;

    impl Protocol for Suffix {
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

    #[test]
    fn frame_finds_lf_and_crlf_lines() {
        assert_eq!(frame(b"abc\nrest", 100), Frame::Line(4));
        assert_eq!(frame(b"abc\r\nrest", 100), Frame::Line(5));
        assert_eq!(frame(b"\n", 100), Frame::Line(1));
        assert_eq!(frame(b"", 100), Frame::Incomplete);
        assert_eq!(frame(b"abc", 100), Frame::Incomplete);
    }

    #[test]
    fn frame_limit_counts_the_terminator() {
        assert_eq!(frame(b"abc\n", 4), Frame::Line(4));
        assert_eq!(frame(b"abcd\n", 4), Frame::TooLong);
        assert_eq!(frame(b"abc", 4), Frame::Incomplete);
        assert_eq!(frame(b"abcd", 4), Frame::TooLong);
    }

    #[test]
    fn binary_bytes_are_ordinary_data() {
        let data = b"\0\xff\xfb\x01\r\r\n";
        assert_eq!(frame(data, 100), Frame::Line(data.len()));
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
    fn answer_takes_whole_lines_and_leaves_the_tail() {
        let mut out = Vec::new();
        let got = answer(&mut Suffix, b"a\nb\r\npart", 100, &mut out, 1000);
        assert_eq!(
            got,
            Answered {
                consumed: 5,
                lines: 2,
                stop: Stop::NeedMore
            }
        );
        assert_eq!(out, b"a\n+\nb\r\n+\n");
    }

    #[test]
    fn answer_stops_when_output_is_full() {
        let mut out = Vec::new();
        let got = answer(&mut Suffix, b"aaaa\nbbbb\ncccc\n", 100, &mut out, 8);
        assert_eq!(got.stop, Stop::Full);
        assert_eq!(got.consumed, 10);
        assert_eq!(out, b"aaaa\n+\nbbbb\n+\n");
    }

    #[test]
    fn answer_stops_at_close() {
        let mut out = Vec::new();
        let got = answer(&mut Suffix, b"quit\nmore\n", 100, &mut out, 1000);
        assert_eq!(got.stop, Stop::Close);
        assert_eq!(got.consumed, 5);
        assert_eq!(out, b"quit\n+\n");
    }

    #[test]
    fn answer_reports_a_long_line_after_the_good_ones() {
        let mut out = Vec::new();
        let got = answer(&mut Suffix, b"ok\nxxxxxxxxxx", 5, &mut out, 1000);
        assert_eq!(got.stop, Stop::TooLong);
        assert_eq!(got.consumed, 3);
        assert_eq!(out, b"ok\n+\nerror: line longer than 5 bytes\n");
    }
}
