//! The telnet input filter: telnet commands out of a client's byte stream,
//! and the few answers a telnet client waits for.
//!
//! A [`Telnet`] value is one connection's filter state: one byte, so it fits
//! in an idle connection's slot. [`Telnet::filter`] runs over freshly read
//! bytes, in place, with no I/O and no allocation. It moves the data bytes to
//! the front of the buffer and stops after each command the connection has
//! to act on, so that the connection can let the protocol answer the data
//! before it and then act, in order.
//!
//! # Which bytes are commands
//!
//! With the filter on ([`Config::telnet`]), every byte 0xFF (IAC, "interpret
//! as command") starts a command, wherever it appears. No other byte does:
//! bytes outside commands are data and pass through unchanged, including
//! 0xF0 to 0xFE, NUL, CR and any CR NUL or CR LF pair.
//!
//! | bytes | meaning | what the filter does |
//! |---|---|---|
//! | `IAC IAC` | an escaped 0xFF | one data byte 0xFF |
//! | `IAC DO 6` | DO TIMING-MARK: telnet's Ctrl-C asks for it and throws away all output until the answer | answers `IAC WILL 6` ([`Command::Reply`]) |
//! | `IAC DO x`, x ≠ 6 | asks us to enable option x | refuses: `IAC WONT x` |
//! | `IAC WILL x` | offers to enable option x | refuses: `IAC DONT x` |
//! | `IAC WONT x`, `IAC DONT x` | option x off, as it already is | dropped, not answered |
//! | `IAC AYT` (246) | Are You There | answers the visible line [`AYT_REPLY`] |
//! | `IAC IP` (244), `IAC AO` (245), `IAC EL` (248) | Interrupt Process (telnet's Ctrl-C), Abort Output, Erase Line | [`Command::Discard`] |
//! | `IAC SB` ... `IAC SE` | a subnegotiation | dropped, contents and all |
//! | `IAC x`, any other x | NOP, DM, BRK, EC, GA, a stray SE, or a byte that is no command | dropped |
//!
//! Inside a subnegotiation, `IAC IAC` is part of it and `IAC SE` ends it. An
//! IAC followed by anything else also ends it and starts that command: a
//! client that never sends `IAC SE` loses what it types until its next
//! command (Ctrl-C in telnet), and the filter buffers none of it.
//!
//! Because only options the filter never offers are refused, and a refusal
//! is never answered, no negotiation loop can start: each `DO` or `WILL` gets
//! exactly one answer. The filter never starts a negotiation itself, so a
//! client that sends no commands gets none back.
//!
//! # What the connection does with a command
//!
//! - [`Command::Reply`]: the reply bytes go out after the replies to the data
//!   before the command, and before the replies to the data after it.
//! - [`Command::Discard`]: the complete messages before the command are
//!   answered; then whatever the protocol has not taken (the partial line a
//!   user abandoned with Ctrl-C) is thrown away.
//!
//! # State across reads
//!
//! A command split over two reads is resumed: the state between calls is
//! where the filter stands in a command (after IAC, after a verb, inside a
//! subnegotiation), held in one byte. Data is never held back: every data
//! byte is returned by the call that sees it.
//!
//! [`Config::telnet`]: crate::Config::telnet

/// Interpret As Command: starts every telnet command.
pub(crate) const IAC: u8 = 255;
/// Refuses, or confirms the end of, an option on our side.
pub(crate) const DONT: u8 = 254;
/// Asks us to enable an option.
pub(crate) const DO: u8 = 253;
/// The client will not use an option.
pub(crate) const WONT: u8 = 252;
/// The client offers to use an option.
pub(crate) const WILL: u8 = 251;
/// Starts a subnegotiation.
pub(crate) const SB: u8 = 250;
/// Erase Line.
pub(crate) const EL: u8 = 248;
/// Are You There.
pub(crate) const AYT: u8 = 246;
/// Abort Output.
pub(crate) const AO: u8 = 245;
/// Interrupt Process: what telnet sends on Ctrl-C.
pub(crate) const IP: u8 = 244;
/// Ends a subnegotiation.
pub(crate) const SE: u8 = 240;
/// The TIMING-MARK option (RFC 860).
pub(crate) const TIMING_MARK: u8 = 6;

/// The line answering `IAC AYT`. CR LF, as the telnet network virtual
/// terminal ends lines.
pub(crate) const AYT_REPLY: &[u8] = b"[Yes]\r\n";

/// Where the filter stands between two bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    /// Outside any command.
    #[default]
    Data,
    /// After IAC.
    Iac,
    /// After IAC and a verb (WILL, WONT, DO or DONT), before the option.
    Verb(Verb),
    /// Inside a subnegotiation.
    Sub,
    /// Inside a subnegotiation, after IAC.
    SubIac,
}

/// The four option verbs, named so that `State` stays one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Will,
    Wont,
    Do,
    Dont,
}

/// One connection's telnet filter: one byte of state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Telnet {
    state: State,
}

/// A command the connection has to act on, in its place in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// Send this reply after the replies to the data before the command.
    Reply(Reply),
    /// Interrupt Process, Abort Output or Erase Line: answer the complete
    /// messages before the command, then drop what the protocol has not
    /// taken.
    Discard,
}

/// An answer the filter owes the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `IAC verb option`: WILL TIMING-MARK, or a refusal (WONT, DONT).
    Option {
        /// WILL, WONT or DONT.
        verb: u8,
        /// The option the client named.
        option: u8,
    },
    /// [`AYT_REPLY`].
    AreYouThere,
}

impl Reply {
    /// Appends the reply's bytes to `out`.
    pub(crate) fn append_to(self, out: &mut Vec<u8>) {
        match self {
            Reply::Option { verb, option } => out.extend_from_slice(&[IAC, verb, option]),
            Reply::AreYouThere => out.extend_from_slice(AYT_REPLY),
        }
    }
}

/// What one call to [`Telnet::filter`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Filtered {
    /// The data bytes, now at the front of the buffer: `buf[..data]`.
    pub(crate) data: usize,
    /// Bytes of the input used up, data and commands (`data <= used`).
    /// Call again with `buf[used..]` for the rest.
    pub(crate) used: usize,
    /// The command that stopped the call, right after the data; `None` when
    /// the call used the whole buffer.
    pub(crate) command: Option<Command>,
}

impl Telnet {
    /// A filter outside any command, as at the start of a connection.
    pub(crate) const fn new() -> Telnet {
        Telnet { state: State::Data }
    }

    /// True when `fresh` can be used as it is: the filter is outside any
    /// command and `fresh` holds no IAC. The check is one `memchr`, so
    /// ordinary text costs next to nothing.
    pub(crate) fn passes(&self, fresh: &[u8]) -> bool {
        self.state == State::Data && find_iac(fresh).is_none()
    }

    /// Filters `buf` in place, up to and including the first command the
    /// connection must act on.
    ///
    /// The data bytes met before that command are moved to `buf[..data]`, in
    /// order; commands that need no action are dropped on the way. A command
    /// cut short by the end of `buf` is remembered and finished by the next
    /// call.
    pub(crate) fn filter(&mut self, buf: &mut [u8]) -> Filtered {
        let mut read = 0;
        let mut data = 0;
        let mut command = None;
        while read < buf.len() && command.is_none() {
            match self.state {
                State::Data => {
                    let rest = &buf[read..];
                    let run = find_iac(rest).unwrap_or(rest.len());
                    buf.copy_within(read..read + run, data);
                    data += run;
                    read += run;
                    if read < buf.len() {
                        read += 1;
                        self.state = State::Iac;
                    }
                }
                State::Iac => {
                    let byte = buf[read];
                    read += 1;
                    self.state = State::Data;
                    match byte {
                        IAC => {
                            // `data < read` here: the IAC pair took two
                            // bytes of input and gives one.
                            buf[data] = IAC;
                            data += 1;
                        }
                        WILL => self.state = State::Verb(Verb::Will),
                        WONT => self.state = State::Verb(Verb::Wont),
                        DO => self.state = State::Verb(Verb::Do),
                        DONT => self.state = State::Verb(Verb::Dont),
                        SB => self.state = State::Sub,
                        IP | AO | EL => command = Some(Command::Discard),
                        AYT => command = Some(Command::Reply(Reply::AreYouThere)),
                        _ => {}
                    }
                }
                State::Verb(verb) => {
                    let option = buf[read];
                    read += 1;
                    self.state = State::Data;
                    command = answer(verb, option).map(Command::Reply);
                }
                State::Sub => {
                    // Skipped, not kept: a subnegotiation costs no memory
                    // however long it runs.
                    match find_iac(&buf[read..]) {
                        Some(at) => {
                            read += at + 1;
                            self.state = State::SubIac;
                        }
                        None => read = buf.len(),
                    }
                }
                State::SubIac => match buf[read] {
                    SE => {
                        read += 1;
                        self.state = State::Data;
                    }
                    IAC => {
                        read += 1;
                        self.state = State::Sub;
                    }
                    // A command inside an unfinished subnegotiation ends it,
                    // so that a user's Ctrl-C still gets through. The byte is
                    // read again as the command.
                    _ => self.state = State::Iac,
                },
            }
        }
        Filtered {
            data,
            used: read,
            command,
        }
    }
}

/// The answer to `IAC verb option`, if one is owed.
fn answer(verb: Verb, option: u8) -> Option<Reply> {
    let verb = match verb {
        Verb::Do if option == TIMING_MARK => WILL,
        Verb::Do => WONT,
        Verb::Will => DONT,
        // We already do not use any option: confirming would only invite
        // another round.
        Verb::Wont | Verb::Dont => return None,
    };
    Some(Reply::Option { verb, option })
}

/// The index of the first IAC in `hay`, with the C library's vectorised
/// `memchr`.
fn find_iac(hay: &[u8]) -> Option<usize> {
    crate::sys::memchr(IAC, hay)
}

#[cfg(test)]
mod tests;
