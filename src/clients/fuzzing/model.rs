//! The model: what a correct connection answers to the bytes the peer sent,
//! worked out with no code shared with the connection or the telnet filter.

use std::time::Duration;

use super::{DRAINING, GREETING, NOTICE, QUIT, SUFFIX, TAGS, body};
use crate::telnet::AYT_REPLY;

pub(super) fn too_long_reply(max_line: usize) -> Vec<u8> {
    format!("error: line longer than {max_line} bytes\n").into_bytes()
}

/// What a line protocol says to a client idle for `idle`.
pub(super) fn idle_line(idle: Duration) -> Vec<u8> {
    format!("error: idle for {}s, closing\n", idle.as_secs_f64()).into_bytes()
}

/// Why the model stopped taking lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ModelStop {
    TooLong,
    Quit,
    HalfClosed,
    /// The protocol answered a drain with `Close`.
    Drained,
    /// The idle timeout fired.
    Idle,
    /// The protocol's deadline passed and it closed.
    Late,
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
    /// With telnet: the telnet decoder, else `None`.
    telnet: Option<TelnetModel>,
}

/// What a telnet command asks of the connection.
enum Event {
    Answer(Vec<u8>),
    DropPartial,
}

/// The telnet rules of `src/telnet.rs`'s docs, decoded one byte at a time
/// from the command bytes seen so far.
#[derive(Default)]
struct TelnetModel {
    /// The unfinished command: empty, `[IAC]`, or `[IAC, verb]`.
    cmd: Vec<u8>,
    /// Inside a subnegotiation (`cmd` is then empty or `[IAC]`).
    sub: bool,
}

impl TelnetModel {
    /// Takes one byte; a data byte goes to `data`.
    fn byte(&mut self, b: u8, data: &mut Vec<u8>) -> Option<Event> {
        match (self.sub, self.cmd.as_slice()) {
            (false, []) if b == 0xff => self.cmd.push(b),
            (false, []) => data.push(b),
            (false, [_]) => {
                self.cmd.clear();
                match b {
                    0xff => data.push(0xff),
                    251..=254 => self.cmd.extend([0xff, b]),
                    250 => self.sub = true,
                    244 | 245 | 248 => return Some(Event::DropPartial),
                    246 => return Some(Event::Answer(AYT_REPLY.to_vec())),
                    _ => {}
                }
            }
            (false, [_, verb]) => {
                let answer = match (*verb, b) {
                    (253, 6) => Some(vec![0xff, 251, 6]),
                    (253, _) => Some(vec![0xff, 252, b]),
                    (251, _) => Some(vec![0xff, 254, b]),
                    _ => None,
                };
                self.cmd.clear();
                return answer.map(Event::Answer);
            }
            (true, []) if b == 0xff => self.cmd.push(b),
            (true, []) => {}
            (true, _) => match b {
                240 => {
                    self.sub = false;
                    self.cmd.clear();
                }
                0xff => self.cmd.clear(),
                _ => {
                    // Another command ends the subnegotiation.
                    self.sub = false;
                    return self.byte(b, data);
                }
            },
            (false, _) => unreachable!("commands are at most two bytes before their last"),
        }
        None
    }
}

impl Model {
    pub(super) fn new(max_line: usize, telnet: bool) -> Model {
        Model {
            max_line,
            input: Vec::new(),
            pos: 0,
            scanned: 0,
            out: GREETING.to_vec(),
            stop: None,
            ends: Vec::new(),
            telnet: telnet.then(TelnetModel::default),
        }
    }

    /// The peer sent `bytes`.
    pub(super) fn send(&mut self, bytes: &[u8]) {
        let Some(mut telnet) = self.telnet.take() else {
            self.take_data(bytes);
            return;
        };
        let mut data = Vec::new();
        for &b in bytes {
            if let Some(event) = telnet.byte(b, &mut data) {
                // Lines before a command are answered before it.
                self.take_data(&data);
                data.clear();
                if self.stop.is_none() {
                    match event {
                        Event::Answer(bytes) => self.out.extend_from_slice(&bytes),
                        Event::DropPartial => {
                            self.pos = self.input.len();
                            self.scanned = 0;
                        }
                    }
                }
            }
        }
        self.take_data(&data);
        self.telnet = Some(telnet);
    }

    /// Data bytes, after any telnet commands are taken out.
    fn take_data(&mut self, bytes: &[u8]) {
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
        let answered = self.ends.partition_point(|&end| end <= at);
        let close = answered % 2 == 1;
        let said = [NOTICE, DRAINING].concat();
        self.say(at, &said, close.then_some(ModelStop::Drained));
        close
    }

    /// The connection said `words` outside of any reply (a drain notice, an
    /// idle line, a deadline's word) when it had produced `at` bytes, a
    /// boundary between replies. They go between the replies before and
    /// after; if it then closed for `stop`, the replies after never come,
    /// and nothing sent later is answered.
    pub(super) fn say(&mut self, at: usize, words: &[u8], stop: Option<ModelStop>) {
        let answered = self.ends.partition_point(|&end| end <= at);
        if stop.is_some() {
            self.out.truncate(at);
            self.ends.truncate(answered);
            self.out.extend_from_slice(words);
            self.stop = stop;
        } else {
            for end in &mut self.ends[answered..] {
                *end += words.len();
            }
            self.out.splice(at..at, words.iter().copied());
        }
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
