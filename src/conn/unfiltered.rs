//! Telnet input that waits behind a command: the order in which the
//! filter, the protocol and the commands take their turns.
//!
//! The filter stops at each command the connection has to act on. The
//! command waits until the protocol has taken all it can of the data before
//! it; only then is it acted on, and only then is the rest of the read
//! filtered, up to the next command. So a command's answer goes out after
//! the replies to the data before it and before the replies to the data
//! after it, and a Discard drops only what the protocol left untaken
//! before it.
//!
//! [`Unfiltered`] holds the sequence and nothing else: it never touches the
//! socket or the connection's flags, and it is told whether the output has
//! room for an answer. The connection decides when the protocol runs and
//! when the next step may be taken.

use crate::telnet::{Command, Reply, Telnet};

/// Bytes of one read that the filter has not reached yet, and the command
/// it stopped at.
#[derive(Debug, Default)]
pub(crate) struct Unfiltered {
    /// At most one read's worth: the connection reads nothing more while
    /// any of it waits.
    raw: Vec<u8>,
    /// Where the filter stands in `raw`. A cursor, not a drain: many
    /// commands in one read must not cost a copy of the rest each.
    at: usize,
    /// The command the filter stopped at, to act on once the protocol has
    /// taken all it can of the data before it.
    command: Option<Command>,
}

/// What [`Unfiltered::advance`] leaves the connection to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Advance {
    /// Data was filtered onto the input: let the protocol take what it
    /// can, then advance again.
    Fed,
    /// The command's answer did not fit in the output; it waits for room.
    Blocked,
    /// Every byte is filtered and every command acted on.
    Done,
}

impl Unfiltered {
    /// Keeps freshly read bytes for the filter.
    pub(super) fn push(&mut self, fresh: &[u8]) {
        self.raw.extend_from_slice(fresh);
        debug_assert!(
            self.len() <= super::READ_CHUNK,
            "more than one read waits for the filter"
        );
    }

    /// Bytes allocated for what waits.
    pub(super) fn capacity(&self) -> usize {
        self.raw.capacity()
    }

    /// True when nothing waits.
    pub(super) fn is_empty(&self) -> bool {
        self.raw.is_empty() && self.command.is_none()
    }

    /// Bytes not yet filtered: at most one read's worth.
    pub(crate) fn len(&self) -> usize {
        self.raw.len() - self.at
    }

    /// The next step, to take only once the protocol has taken all it can
    /// of `input`: acts on the command the filter stopped at, if any, then
    /// filters on up to the next command, appending the data before it to
    /// `input`.
    ///
    /// `answer` appends a command's answer to the output and returns true,
    /// or returns false if the output has no room for it; the command then
    /// waits, and nothing after it is filtered.
    pub(super) fn advance(
        &mut self,
        filter: &mut Telnet,
        input: &mut Vec<u8>,
        answer: impl FnOnce(Reply) -> bool,
    ) -> Advance {
        let acted = match self.command {
            Some(Command::Reply(reply)) => answer(reply),
            Some(Command::Discard) => {
                input.clear();
                true
            }
            None => true,
        };
        if !acted {
            return Advance::Blocked;
        }
        self.command = None;
        if self.at == self.raw.len() {
            // Freed, not cleared: a connection left with a partial line
            // must not keep a read chunk's worth of capacity too.
            *self = Unfiltered::default();
            return Advance::Done;
        }
        let raw = &mut self.raw[self.at..];
        let got = filter.filter(raw);
        input.extend_from_slice(&raw[..got.data]);
        self.at += got.used;
        self.command = got.command;
        Advance::Fed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telnet::AYT_REPLY;

    /// IAC AYT.
    const AYT: &[u8] = &[0xff, 0xf6];
    /// IAC IP: telnet's Ctrl-C.
    const IP: &[u8] = &[0xff, 0xf4];

    fn unfiltered(bytes: &[&[u8]]) -> Unfiltered {
        let mut u = Unfiltered::default();
        u.push(&bytes.concat());
        u
    }

    fn send(out: &mut Vec<u8>) -> impl FnOnce(Reply) -> bool + '_ {
        |reply| {
            reply.append_to(out);
            true
        }
    }

    #[test]
    fn data_after_a_command_waits_until_the_command_is_acted_on() {
        let mut u = unfiltered(&[b"a\n", AYT, b"b\n"]);
        let (mut filter, mut input, mut out) = (Telnet::new(), Vec::new(), Vec::new());
        assert_eq!(
            u.advance(&mut filter, &mut input, send(&mut out)),
            Advance::Fed
        );
        assert_eq!(input, b"a\n", "only the data before the command");
        assert!(out.is_empty(), "the answer waits for the protocol");
        input.clear(); // the protocol takes the line
        assert_eq!(
            u.advance(&mut filter, &mut input, send(&mut out)),
            Advance::Fed
        );
        assert_eq!(out, AYT_REPLY);
        assert_eq!(input, b"b\n");
        assert_eq!(
            u.advance(&mut filter, &mut input, send(&mut out)),
            Advance::Done
        );
        assert!(u.is_empty());
        assert_eq!(u.raw.capacity(), 0, "the read chunk is freed");
    }

    #[test]
    fn an_answer_without_room_waits_and_holds_back_what_follows() {
        let mut u = unfiltered(&[AYT, b"b\n"]);
        let (mut filter, mut input) = (Telnet::new(), Vec::new());
        assert_eq!(u.advance(&mut filter, &mut input, |_| true), Advance::Fed);
        assert_eq!(
            u.advance(&mut filter, &mut input, |_| false),
            Advance::Blocked
        );
        assert!(input.is_empty(), "nothing after the command is filtered");
        assert!(!u.is_empty());
        assert_eq!(u.len(), 2);
        let mut out = Vec::new();
        assert_eq!(
            u.advance(&mut filter, &mut input, send(&mut out)),
            Advance::Fed
        );
        assert_eq!(out, AYT_REPLY, "answered once there is room");
        assert_eq!(input, b"b\n");
    }

    #[test]
    fn a_discard_drops_what_the_protocol_left_before_it() {
        let mut u = unfiltered(&[b"abc", IP, b"d\n"]);
        let (mut filter, mut input) = (Telnet::new(), b"partial ".to_vec());
        assert_eq!(u.advance(&mut filter, &mut input, |_| true), Advance::Fed);
        assert_eq!(input, b"partial abc");
        assert_eq!(u.advance(&mut filter, &mut input, |_| true), Advance::Fed);
        assert_eq!(input, b"d\n", "the partial line before Ctrl-C is gone");
    }
}
