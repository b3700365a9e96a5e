//! The model: what a correct connection answers to the bytes the peer sent,
//! worked out with no code shared with the connection.

use super::{DRAINING, GREETING, NOTICE, QUIT, SUFFIX, TAGS, body};

pub(super) fn too_long_reply(max_line: usize) -> Vec<u8> {
    format!("error: line longer than {max_line} bytes\n").into_bytes()
}

/// Why the model stopped taking lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ModelStop {
    TooLong,
    Quit,
    HalfClosed,
    /// The protocol answered a drain with `Close`.
    Drained,
}

/// What a correct connection answers, computed from the bytes the peer sent.
pub(super) struct Model {
    pub(super) max_line: usize,
    input: Vec<u8>,
    /// Where the next unanswered line starts.
    pos: usize,
    /// `input[pos..pos + scanned]` holds no `\n`: a long tail sent in small
    /// pieces is scanned once, not once per piece.
    scanned: usize,
    pub(super) out: Vec<u8>,
    pub(super) stop: Option<ModelStop>,
    /// Where each reply to a line ends in `out`: how many of them a
    /// connection has produced follows from how much output it produced.
    ends: Vec<usize>,
}

impl Model {
    pub(super) fn new(max_line: usize) -> Model {
        Model {
            max_line,
            input: Vec::new(),
            pos: 0,
            scanned: 0,
            out: GREETING.to_vec(),
            stop: None,
            ends: Vec::new(),
        }
    }

    pub(super) fn send(&mut self, bytes: &[u8]) {
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
    pub(super) fn half_close(&mut self) {
        if self.stop.is_none() {
            let tail = self.input[self.pos..].to_vec();
            if !tail.is_empty() {
                self.reply(&tail);
            }
            self.stop = Some(ModelStop::HalfClosed);
        }
    }

    /// The connection took a drain notice when it had produced `at` bytes,
    /// a boundary between replies. The protocol closes if it had answered an
    /// odd number of lines by then: no reply the connection had not produced
    /// yet will come, and nothing sent later is answered. Returns whether it
    /// closed.
    pub(super) fn drain(&mut self, at: usize) -> bool {
        let said = [NOTICE, DRAINING].concat();
        let answered = self.ends.partition_point(|&end| end <= at);
        let close = answered % 2 == 1;
        if close {
            self.out.truncate(at);
            self.ends.truncate(answered);
            self.out.extend_from_slice(&said);
            self.stop = Some(ModelStop::Drained);
        } else {
            for end in &mut self.ends[answered..] {
                *end += said.len();
            }
            self.out.splice(at..at, said);
        }
        close
    }

    fn reply(&mut self, line: &[u8]) {
        self.out.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            self.out.push(b'\n');
        }
        self.out.extend_from_slice(SUFFIX);
        let number = self.ends.len() + 1;
        self.out
            .extend_from_slice(TAGS[usize::from(number % 2 == 0)]);
        self.ends.push(self.out.len());
    }
}
