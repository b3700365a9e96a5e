//! One client: its socket, its buffers, its protocol state, and its verdict
//! after each event.
//!
//! A connection that has decided to end (the protocol asked to close, a
//! line was too long, or the client half-closed) is *ending*: it flushes
//! its output and then, unless the client's EOF has come already, sends
//! its FIN and reads and discards input until that EOF or until
//! [`DISCARD_LIMIT`], so that the close never turns into a reset. Ending is
//! not the server's hard stop (its closing phase), whose last word
//! [`Conn::close_hard`] sends. Why a connection began to end is counted,
//! and logged if the server decided it, at that moment
//! ([`crate::closes::ended`]).
//!
//! A connection owns no heap memory while idle. Bytes are read into a buffer
//! shared by the whole loop and replies are built in a shared scratch vector;
//! a connection takes buffers of its own only to keep what is left over (an
//! unfinished message, or output the socket would not take), and gives them
//! back as soon as they are empty. The protocol's per-connection state
//! ([`Protocol::Conn`]) sits inline in the slot, so `()` costs nothing.
//! Buffers of its own carry their part of the process's budget
//! ([`crate::budget`]): the turn function ([`crate::clients`]) counts them
//! after each turn ([`Conn::count_buffers`]), they give it back when they
//! are freed, and [`Conn::evict`] drops them when the budget is spent.
//!
//! With `Config::telnet`, fresh bytes pass through the telnet filter
//! ([`crate::telnet`]) before the protocol sees them. Bytes without 0xFF
//! cost one `memchr` and take the ordinary path. Otherwise the filter runs
//! from command to command ([`unfiltered`] keeps that order): the protocol
//! takes the data before a command, and the command is acted on only once
//! the protocol has answered all it can of that data, so a telnet answer
//! never overtakes a reply owed before it, even when the output limit holds
//! input back. A Discard (Ctrl-C) then drops what the protocol left
//! untaken.
//!
//! The code here never touches the poll registry or the connection table. It
//! answers every event with a [`Verdict`], and the server acts on it.

use std::io;
use std::mem;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::Duration;

use mio::event::Event;

use crate::budget::{Budget, Share};
use crate::closes::{self, Closes, Reason};
use crate::peer::{Address, Peer};
use crate::protocol::{Action, Fed, Protocol, Stop, feed};
use crate::sys::stream::StreamSocket;
use crate::telnet::Telnet;

mod unfiltered;

use unfiltered::{Advance, Unfiltered};

/// Bytes read per `read(2)`. A read shorter than this proves the socket empty.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// Reads per event before other clients get their turn.
const READS_PER_EVENT: usize = 16;
/// Bytes thrown away while waiting for a client's EOF before closing anyway.
pub(crate) const DISCARD_LIMIT: usize = 256 * 1024;
/// Reads spent emptying a socket before a hard close: up to this many full
/// chunks of unread input leave with a FIN, not a reset.
pub(crate) const HARD_CLOSE_READS: usize = 4;
/// Scratch capacity kept between events; a larger one is freed after use.
const SCRATCH_KEEP: usize = 256 * 1024;

/// The socket may hold bytes not yet read.
const UNREAD: u8 = 1;
/// The kernel reported the peer's FIN or an error: read until `read` says so.
const PEER_CLOSED: u8 = 1 << 1;
/// `read` returned 0: the client sends nothing more.
const EOF: u8 = 1 << 2;
/// The connection has decided to end: flush, send FIN, discard input
/// until the client's EOF.
const ENDING: u8 = 1 << 3;
/// Our side has been shut down for writing.
const FIN_SENT: u8 = 1 << 4;
/// The socket would not take more output; wait for a writable event.
const WRITE_BLOCKED: u8 = 1 << 5;
/// The input buffer holds bytes not offered to the protocol because the
/// output was full.
const INPUT_HELD: u8 = 1 << 6;
/// Telnet only: bytes read but not yet filtered, or a command the filter
/// stopped at, wait in `Bufs::unfiltered` behind the input.
const UNFILTERED: u8 = 1 << 7;

/// What the server does with a connection after handling an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Wait for the next event.
    Keep,
    /// More work is ready without an event; come back after other clients.
    Again,
    /// Drop the connection now.
    Close,
}

/// The socket operations a connection needs. The server uses
/// [`StreamSocket`], one type for TCP and Unix clients alike; tests and
/// the fuzzer use a scripted stand-in.
pub(crate) trait Stream {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn write(&self, buf: &[u8]) -> io::Result<usize>;
    fn shutdown_write(&self) -> io::Result<()>;
    /// Who the client is, for a log line: `None` when the socket no
    /// longer knows (after a reset), or has no address (a test's stand-in).
    fn peer(&self) -> Option<Address> {
        None
    }
}

impl Stream for StreamSocket {
    #[inline]
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        StreamSocket::read(self, buf)
    }

    #[inline]
    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        StreamSocket::write(self, buf)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        StreamSocket::shutdown_write(self)
    }

    fn peer(&self) -> Option<Address> {
        StreamSocket::peer(self).ok()
    }
}

/// What a readiness event said about a socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ready {
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// The peer sent FIN, or the connection is gone.
    pub(crate) read_closed: bool,
    /// The socket has a pending error (a reset, say).
    pub(crate) error: bool,
}

impl From<&Event> for Ready {
    fn from(event: &Event) -> Ready {
        Ready {
            readable: event.is_readable(),
            writable: event.is_writable() || event.is_write_closed(),
            read_closed: event.is_read_closed(),
            error: event.is_error(),
        }
    }
}

/// Traffic counters for the whole process.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) accepted: u64,
    /// Messages taken by the protocol: lines, for a line protocol.
    pub(crate) lines: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// The connections that ended, by reason ([`crate::closes`]).
    pub(crate) closed: Closes,
}

/// What every connection of a loop shares: the protocol, the limits, the
/// buffers that let an idle connection own none, and the budget that the
/// buffers connections do own are counted against.
pub(crate) struct Context<P> {
    pub(crate) protocol: P,
    /// The input cap: the most bytes held for one unfinished message.
    pub(crate) max_input: usize,
    pub(crate) max_output: usize,
    /// Run input through the telnet filter (`Config::telnet`).
    telnet: bool,
    pub(crate) counters: Counters,
    /// The pid, when the ends the server decides are logged
    /// (`Config::quiet` off).
    pub(crate) log: Option<u32>,
    /// What the connections' own buffers hold in all (`Config::max_buffers`).
    pub(crate) budget: Rc<Budget>,
    read_buf: Box<[u8]>,
    scratch: Vec<u8>,
}

impl<P: Protocol> Context<P> {
    pub(crate) fn new(protocol: P, max_input: usize, max_output: usize) -> Self {
        Context {
            protocol,
            max_input: max_input.max(1),
            max_output: max_output.max(1),
            telnet: false,
            counters: Counters::default(),
            log: None,
            budget: Budget::new(usize::MAX),
            read_buf: vec![0; READ_CHUNK].into_boxed_slice(),
            scratch: Vec::new(),
        }
    }

    /// The shared read buffer, for other work of the loop between reads:
    /// its first page is touched by the first read, so borrowing it costs
    /// no memory that idle clients do not already cost.
    pub(crate) fn spare_buffer(&mut self) -> &mut [u8] {
        &mut self.read_buf
    }

    /// Runs every connection's input through the telnet filter, or not.
    pub(crate) fn with_telnet(mut self, on: bool) -> Self {
        self.telnet = on;
        self
    }

    /// Logs the ends the server decides as process `pid`'s, or not.
    pub(crate) fn with_log(mut self, pid: Option<u32>) -> Self {
        self.log = pid;
        self
    }

    /// Counts the connections' own buffers against `limit` bytes (no
    /// limit without this).
    pub(crate) fn with_budget(mut self, limit: usize) -> Self {
        self.budget = Budget::new(limit);
        self
    }
}

/// Bytes a connection keeps between events.
pub(crate) struct Bufs {
    /// Read but not taken: an unfinished message, or input held back.
    pub(crate) input: Vec<u8>,
    /// Replies from `sent` on are not yet written.
    pub(crate) output: Vec<u8>,
    pub(crate) sent: usize,
    /// Bytes thrown away while ending, waiting for the client's EOF.
    discarded: usize,
    /// Telnet only: the command the filter stopped at and the bytes read
    /// after it, waiting for the protocol to answer the data before it.
    pub(crate) unfiltered: Unfiltered,
    /// Their part of the process's budget, given back when they are freed.
    pub(crate) share: Share,
}

impl Bufs {
    fn new(budget: &Rc<Budget>) -> Box<Bufs> {
        Box::new(Bufs {
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            discarded: 0,
            unfiltered: Unfiltered::default(),
            share: Share::new(budget),
        })
    }

    /// What the buffers cost the allocator: their capacities, and the box.
    pub(crate) fn capacity(&self) -> usize {
        mem::size_of::<Bufs>()
            + self.input.capacity()
            + self.output.capacity()
            + self.unfiltered.capacity()
    }

    fn pending(&self) -> usize {
        self.output.len() - self.sent
    }

    /// The output buffer, ready to be appended to. The part already sent is
    /// dropped first: a client that takes its replies slowly but without
    /// pause would otherwise keep a sent prefix growing for ever. The copy
    /// moves at most the pending bytes, and happens only for such clients.
    fn output_for_append(&mut self) -> &mut Vec<u8> {
        if self.sent > 0 {
            self.output.drain(..self.sent);
            self.sent = 0;
        }
        &mut self.output
    }
}

/// One client connection, with the protocol's state `C` for it.
pub(crate) struct Conn<S = StreamSocket, C = ()> {
    stream: S,
    flags: u8,
    pub(crate) bufs: Option<Box<Bufs>>,
    /// Where the telnet filter stands; one byte, unused without telnet.
    telnet: Telnet,
    state: C,
}

impl<S: Stream, C: Default> Conn<S, C> {
    pub(crate) fn new(stream: S) -> Conn<S, C> {
        Conn {
            stream,
            flags: 0,
            bufs: None,
            telnet: Telnet::new(),
            state: C::default(),
        }
    }
}

impl<S: Stream, C> Conn<S, C> {
    fn is(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn pending(&self) -> usize {
        self.bufs.as_ref().map_or(0, |b| b.pending())
    }

    fn bufs(&mut self, budget: &Rc<Budget>) -> &mut Bufs {
        self.bufs.get_or_insert_with(|| Bufs::new(budget))
    }

    /// Handles a readiness event.
    pub(crate) fn on_ready<P: Protocol<Conn = C>>(
        &mut self,
        ready: Ready,
        cx: &mut Context<P>,
    ) -> Verdict {
        if ready.readable {
            self.flags |= UNREAD;
        }
        if ready.read_closed || ready.error {
            self.flags |= UNREAD | PEER_CLOSED;
        }
        if ready.writable || ready.error {
            self.flags &= !WRITE_BLOCKED;
        }
        self.pump(cx)
    }

    /// Moves bytes until the connection must wait for an event, runs out of
    /// its turn, or is done. Each round either serves the client or, once
    /// the connection is ending, winds it down; a connection that decides
    /// to end mid-turn spends the rest of the turn winding down.
    pub(crate) fn pump<P: Protocol<Conn = C>>(&mut self, cx: &mut Context<P>) -> Verdict {
        for _ in 0..READS_PER_EVENT {
            let round = if self.is(ENDING) {
                self.wind_down(cx)
            } else {
                self.serve(cx)
            };
            if let ControlFlow::Break(verdict) = round {
                return verdict;
            }
        }
        Verdict::Again
    }

    /// One round of the data path: flush, then feed held input, answer the
    /// client's EOF, or read and feed fresh bytes.
    fn serve<P: Protocol<Conn = C>>(&mut self, cx: &mut Context<P>) -> ControlFlow<Verdict> {
        if self.flush(&mut cx.counters).is_err() {
            return ControlFlow::Break(Verdict::Close);
        }
        if self.pending() >= cx.max_output {
            // Backpressure: leave the client's input unread until it takes
            // its replies.
            return ControlFlow::Break(self.keep());
        }
        let fed = if self.is(INPUT_HELD | UNFILTERED) {
            self.feed_held(cx)
        } else if self.is(EOF) {
            self.on_eof(cx)
        } else if !self.is(UNREAD) {
            return ControlFlow::Break(self.keep());
        } else {
            match self.read(cx) {
                Ok(0) => Ok(()),
                Ok(n) => self.ingest(n, cx),
                Err(e) => Err(e),
            }
        };
        match fed {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(Verdict::Close),
        }
    }

    /// One round of ending: flush, send FIN once, then read and discard
    /// until the client's EOF or the discard limit.
    fn wind_down<P>(&mut self, cx: &mut Context<P>) -> ControlFlow<Verdict> {
        debug_assert!(
            !self.is(INPUT_HELD | UNFILTERED),
            "ending drops what was held back"
        );
        if self.flush(&mut cx.counters).is_err() {
            return ControlFlow::Break(Verdict::Close);
        }
        if self.pending() > 0 {
            // The FIN must follow the replies; until they are flushed the
            // input waits unread, as under backpressure.
            return ControlFlow::Break(self.keep());
        }
        if self.is(EOF) {
            return ControlFlow::Break(Verdict::Close);
        }
        if !self.is(FIN_SENT) {
            // Tell the client we are done, then wait for its EOF so that the
            // close cannot turn into a reset that destroys the replies it
            // has not read yet.
            self.flags |= FIN_SENT;
            if self.stream.shutdown_write().is_err() {
                return ControlFlow::Break(Verdict::Close);
            }
        }
        if !self.is(UNREAD) {
            return ControlFlow::Break(self.keep());
        }
        match self.read(cx) {
            Ok(0) => ControlFlow::Continue(()),
            Ok(n) => {
                let bufs = self.bufs(&cx.budget);
                bufs.discarded += n;
                if bufs.discarded > DISCARD_LIMIT {
                    return ControlFlow::Break(Verdict::Close);
                }
                ControlFlow::Continue(())
            }
            Err(_) => ControlFlow::Break(Verdict::Close),
        }
    }

    /// One read into the shared buffer, counted and noted in the flags.
    /// Returns the bytes read, 0 when none were: at EOF, or when the read
    /// would block or was interrupted.
    fn read<P>(&mut self, cx: &mut Context<P>) -> io::Result<usize> {
        match self.stream.read(&mut cx.read_buf) {
            Ok(0) => {
                self.flags |= EOF;
                self.flags &= !(UNREAD | PEER_CLOSED);
                Ok(0)
            }
            Ok(n) => {
                if n < cx.read_buf.len() && !self.is(PEER_CLOSED) {
                    // A short read emptied the socket; new bytes will raise
                    // a new edge. Reading again would only return WouldBlock.
                    self.flags &= !UNREAD;
                }
                cx.counters.bytes_in += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.flags &= !UNREAD;
                Ok(0)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Gives the buffers back if they are empty, then waits for an event.
    fn keep(&mut self) -> Verdict {
        if let Some(b) = &self.bufs {
            if b.input.is_empty() && b.pending() == 0 && b.unfiltered.is_empty() && !self.is(ENDING)
            {
                self.bufs = None;
            }
        }
        Verdict::Keep
    }

    /// Offers the `n` bytes just read into the shared buffer to the protocol.
    fn ingest<P: Protocol<Conn = C>>(&mut self, n: usize, cx: &mut Context<P>) -> io::Result<()> {
        let fresh = &cx.read_buf[..n];
        if cx.telnet && !self.telnet.passes(fresh) {
            // Rare: people type few commands. The bytes are kept so that
            // the filter can stop at each command and resume after it.
            self.bufs(&cx.budget).unfiltered.push(fresh);
            self.flags |= UNFILTERED;
            return self.feed_held(cx);
        }
        let buffered = self.bufs.as_ref().is_some_and(|b| !b.input.is_empty());
        if buffered {
            // The new bytes continue a message already begun.
            self.bufs(&cx.budget).input.extend_from_slice(fresh);
            return self.feed_buffered(cx);
        }
        // The fast path: feed straight from the shared buffer and keep only
        // what the protocol did not take.
        let got = feed(
            &mut cx.protocol,
            &mut self.state,
            fresh,
            cx.max_input,
            out_for(self.bufs.as_deref_mut(), &mut cx.scratch),
            cx.max_output,
        );
        let rest = &fresh[got.consumed..];
        if !rest.is_empty() && matches!(got.stop, Stop::NeedMore | Stop::Full) {
            self.bufs(&cx.budget).input.extend_from_slice(rest);
        }
        self.note(got, cx);
        self.send_scratch(cx)
    }

    /// Offers the connection's own input buffer to the protocol.
    fn feed_buffered<P: Protocol<Conn = C>>(&mut self, cx: &mut Context<P>) -> io::Result<()> {
        self.feed_input(cx);
        self.send_scratch(cx)
    }

    /// Offers the input buffer to the protocol, leaving its replies in the
    /// shared scratch vector (or after the pending output) unsent.
    fn feed_input<P: Protocol<Conn = C>>(&mut self, cx: &mut Context<P>) {
        let bufs = self.bufs.get_or_insert_with(|| Bufs::new(&cx.budget));
        let input = mem::take(&mut bufs.input);
        let got = feed(
            &mut cx.protocol,
            &mut self.state,
            &input,
            cx.max_input,
            out_for(Some(bufs), &mut cx.scratch),
            cx.max_output,
        );
        bufs.input = input;
        bufs.input.drain(..got.consumed);
        self.note(got, cx);
    }

    /// Feeds what waits in the connection's buffers: input held back by
    /// the output limit and, with telnet, the command and the unfiltered
    /// bytes after it. Stops when the output is full again, the connection
    /// is ending, or everything has been offered; then sends the replies
    /// in one write.
    fn feed_held<P: Protocol<Conn = C>>(&mut self, cx: &mut Context<P>) -> io::Result<()> {
        // Each round filters at least one raw byte, so the rounds are
        // bounded by the raw bytes: at most one read chunk.
        loop {
            self.feed_input(cx);
            if self.is(INPUT_HELD | ENDING) || !self.is(UNFILTERED) {
                break;
            }
            match self.advance_telnet(cx) {
                Advance::Fed => {}
                Advance::Blocked => break,
                Advance::Done => {
                    self.flags &= !UNFILTERED;
                    break;
                }
            }
        }
        self.send_scratch(cx)
    }

    /// The protocol has taken every message it could before the telnet
    /// command: the command's turn, then the filter's up to the next one.
    fn advance_telnet<P>(&mut self, cx: &mut Context<P>) -> Advance {
        let bufs = self.bufs.get_or_insert_with(|| Bufs::new(&cx.budget));
        let mut unfiltered = mem::take(&mut bufs.unfiltered);
        let mut input = mem::take(&mut bufs.input);
        let next = unfiltered.advance(&mut self.telnet, &mut input, |reply| {
            let out = out_for(Some(&mut *bufs), &mut cx.scratch);
            if out.len() >= cx.max_output {
                // As for a message: a client that sends commands and
                // never reads gets no more answers until it does.
                return false;
            }
            reply.append_to(out);
            true
        });
        bufs.input = input;
        bufs.unfiltered = unfiltered;
        next
    }

    /// The client half-closed: the protocol gets what it left untaken, and
    /// the connection ends: it closes once the replies are flushed.
    fn on_eof<P: Protocol<Conn = C>>(&mut self, cx: &mut Context<P>) -> io::Result<()> {
        self.begin_end(Reason::Left, cx);
        let rest = match self.bufs.as_deref_mut() {
            Some(bufs) => mem::take(&mut bufs.input),
            None => Vec::new(),
        };
        // The rest is shorter than the cap, or it would have been refused.
        cx.counters.lines += u64::from(!rest.is_empty());
        self.say(cx, |protocol, state, out| {
            protocol.on_eof(state, &rest, out);
        })
    }

    /// Records why feeding stopped. Inlined: on the hot path it is a
    /// count and a flag.
    #[inline]
    fn note<P>(&mut self, got: Fed, cx: &mut Context<P>) {
        cx.counters.lines += got.messages;
        match got.stop {
            Stop::NeedMore => self.flags &= !INPUT_HELD,
            Stop::Full => self.flags |= INPUT_HELD,
            Stop::Close => self.end_after_flush(Reason::Protocol, cx),
            Stop::TooLong => self.end_after_flush(Reason::TooLong, cx),
        }
    }

    /// The connection starts to end, for `why`, unless it is ending
    /// already: so each connection is counted once, for the reason its
    /// end began.
    fn begin_end<P>(&mut self, why: Reason, cx: &mut Context<P>) {
        if !self.is(ENDING) {
            self.flags |= ENDING;
            closes::ended(&mut cx.counters.closed, cx.log, why, || self.stream.peer());
        }
    }

    /// Ends the connection, for `why`: it closes once its output is
    /// flushed, its FIN sent and the client's EOF read; input not yet
    /// taken will never be.
    fn end_after_flush<P>(&mut self, why: Reason, cx: &mut Context<P>) {
        self.begin_end(why, cx);
        self.flags &= !(INPUT_HELD | UNFILTERED);
        if let Some(b) = self.bufs.as_deref_mut() {
            b.input = Vec::new();
            b.unfiltered = Unfiltered::default();
        }
    }

    /// Runs a protocol hook that appends output outside of `on_data`, and
    /// sends what it appended after whatever was pending.
    fn say<P: Protocol<Conn = C>, R>(
        &mut self,
        cx: &mut Context<P>,
        hook: impl FnOnce(&mut P, &mut C, &mut Vec<u8>) -> R,
    ) -> io::Result<R> {
        let out = out_for(self.bufs.as_deref_mut(), &mut cx.scratch);
        let result = hook(&mut cx.protocol, &mut self.state, out);
        self.send_scratch(cx).map(|()| result)
    }

    /// Writes the replies built in the shared scratch vector, keeping what
    /// the socket would not take.
    fn send_scratch<P>(&mut self, cx: &mut Context<P>) -> io::Result<()> {
        if cx.scratch.is_empty() {
            return Ok(());
        }
        let result = if self.is(WRITE_BLOCKED) {
            Ok(0)
        } else {
            write_once(&self.stream, &cx.scratch)
        };
        if let Ok(written) = result {
            cx.counters.bytes_out += written as u64;
            if written < cx.scratch.len() {
                self.flags |= WRITE_BLOCKED;
                self.bufs(&cx.budget)
                    .output
                    .extend_from_slice(&cx.scratch[written..]);
            }
        }
        cx.scratch.clear();
        if cx.scratch.capacity() > SCRATCH_KEEP {
            cx.scratch = Vec::new();
        }
        result.map(drop)
    }

    /// Writes pending output once, unless the socket is known to be full.
    /// Inlined: on the hot path there is nothing pending, and the check
    /// should cost a branch, not a call.
    #[inline]
    fn flush(&mut self, counters: &mut Counters) -> io::Result<()> {
        match &self.bufs {
            Some(bufs) if bufs.pending() > 0 && !self.is(WRITE_BLOCKED) => {
                self.flush_pending(counters)
            }
            _ => Ok(()),
        }
    }

    fn flush_pending(&mut self, counters: &mut Counters) -> io::Result<()> {
        let Some(bufs) = self.bufs.as_deref_mut() else {
            return Ok(());
        };
        let n = write_once(&self.stream, &bufs.output[bufs.sent..])?;
        counters.bytes_out += n as u64;
        bufs.sent += n;
        if bufs.pending() == 0 {
            bufs.output.clear();
            bufs.sent = 0;
        } else {
            // A short write means the send buffer is full.
            self.flags |= WRITE_BLOCKED;
        }
        Ok(())
    }

    /// A client was admitted from `peer`: the protocol may greet it, or
    /// turn it away.
    pub(crate) fn on_connect<P: Protocol<Conn = C>>(
        &mut self,
        peer: Peer<'_>,
        cx: &mut Context<P>,
    ) -> Verdict {
        let said = self.say(cx, |protocol, state, out| {
            protocol.on_connect(state, peer, out)
        });
        self.act_on(said, Reason::Protocol, cx)
    }

    /// The drain started: queues `notice` (the operator's line, newline
    /// included) after any pending output, whatever the backpressure, then
    /// what the protocol has to say. A connection already ending gets
    /// neither.
    pub(crate) fn on_drain<P: Protocol<Conn = C>>(
        &mut self,
        notice: Option<&[u8]>,
        cx: &mut Context<P>,
    ) -> Verdict {
        if self.is(ENDING) {
            return Verdict::Keep;
        }
        let said = self.say(cx, |protocol, state, out| {
            if let Some(notice) = notice {
                out.extend_from_slice(notice);
            }
            protocol.on_drain(state, out)
        });
        self.act_on(said, Reason::Protocol, cx)
    }

    /// The client sent nothing for `idle`: the protocol's last word, then
    /// the connection ends.
    pub(crate) fn on_idle_timeout<P: Protocol<Conn = C>>(
        &mut self,
        idle: Duration,
        cx: &mut Context<P>,
    ) -> Verdict {
        let said = self.say(cx, |protocol, state, out| {
            protocol.on_idle_timeout(state, idle, out);
            Action::Close
        });
        self.act_on(said, Reason::IdleTimeout, cx)
    }

    /// The protocol's deadline passed; a connection already ending is not
    /// told.
    pub(crate) fn on_deadline<P: Protocol<Conn = C>>(&mut self, cx: &mut Context<P>) -> Verdict {
        if self.is(ENDING) {
            return Verdict::Keep;
        }
        let said = self.say(cx, |protocol, state, out| protocol.on_deadline(state, out));
        self.act_on(said, Reason::Deadline, cx)
    }

    /// Who the client is, as the socket knows it now: for a log line.
    pub(crate) fn peer(&self) -> Option<Address> {
        self.stream.peer()
    }

    /// The protocol's state for this connection.
    pub(crate) fn state(&self) -> &C {
        &self.state
    }

    /// The connection has decided to end and waits for its flush and the
    /// client's EOF.
    pub(crate) fn is_ending(&self) -> bool {
        self.is(ENDING)
    }

    /// Output waits for the client to take it.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending() > 0
    }

    /// The connection has buffers of its own, to count after its turn.
    #[inline]
    pub(crate) fn has_buffers(&self) -> bool {
        self.bufs.is_some()
    }

    /// Counts the buffers against the budget, as they stand after a turn.
    /// Returns the size class to file the connection under, when it is not
    /// filed under it already ([`crate::budget::Classes`]).
    pub(crate) fn count_buffers(&mut self) -> Option<u8> {
        let bufs = self.bufs.as_deref_mut()?;
        let held = bufs.capacity();
        bufs.share.count(held)
    }

    /// The buffers' part of the budget, if the connection has buffers.
    pub(crate) fn share(&self) -> Option<&Share> {
        self.bufs.as_deref().map(|b| &b.share)
    }

    pub(crate) fn share_mut(&mut self) -> Option<&mut Share> {
        self.bufs.as_deref_mut().map(|b| &mut b.share)
    }

    /// The process's buffers are over their budget and this connection
    /// holds among the most: what it holds goes (input not taken yet,
    /// replies not taken yet), the protocol says why
    /// ([`Protocol::on_evicted`]), and the connection ends: FIN, then a
    /// wait for the client's EOF that reads into the shared buffer and
    /// keeps nothing. One already ending has had its last word: its unsent
    /// output goes, and if it had none, it is closed at once, since all it
    /// still holds is the little its ending needs.
    pub(crate) fn evict<P: Protocol<Conn = C>>(&mut self, cx: &mut Context<P>) -> Verdict {
        let held = self.share().map_or(0, Share::counted);
        let had_output = self.pending() > 0;
        if let Some(b) = self.bufs.as_deref_mut() {
            b.output = Vec::new();
            b.sent = 0;
        }
        if self.is(ENDING) {
            if !had_output {
                return Verdict::Close;
            }
            return self.pump(cx);
        }
        self.end_after_flush(Reason::Evicted, cx);
        let said = self.say(cx, |protocol, state, out| {
            protocol.on_evicted(state, held, out);
            Action::Close
        });
        self.act_on(said, Reason::Evicted, cx)
    }

    /// The verdict after a hook outside of `on_data` ran: keep, end for
    /// `why` (close once its output is flushed), or close now if sending
    /// it failed.
    fn act_on<P: Protocol<Conn = C>>(
        &mut self,
        said: io::Result<Action>,
        why: Reason,
        cx: &mut Context<P>,
    ) -> Verdict {
        match said {
            Ok(Action::Continue) => Verdict::Keep,
            Ok(Action::Close) => {
                self.end_after_flush(why, cx);
                self.pump(cx)
            }
            Err(_) => Verdict::Close,
        }
    }

    /// Closes at the hard stop (the server's closing phase), without
    /// waiting for the client: empties the socket of up to
    /// `HARD_CLOSE_READS` chunks so the close does not become a reset,
    /// writes any pending output with the protocol's `on_closing` last word
    /// after it in one write, and shuts the write side. The server drops the
    /// connection after this.
    pub(crate) fn close_hard<P: Protocol<Conn = C>>(mut self, cx: &mut Context<P>) {
        for _ in 0..HARD_CLOSE_READS {
            match self.stream.read(&mut cx.read_buf) {
                Ok(n) if n == cx.read_buf.len() => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                _ => break,
            }
        }
        // One write, of the pending output with the last word after it, or
        // of the last word alone.
        self.flags &= !WRITE_BLOCKED;
        if self
            .say(cx, |protocol, state, out| protocol.on_closing(state, out))
            .is_ok()
        {
            let _ = self.flush(&mut cx.counters);
        }
        let _ = self.stream.shutdown_write();
    }
}

/// Where replies go: after the connection's pending output if it has any,
/// so that order is kept, and into the shared scratch vector otherwise.
#[inline]
fn out_for<'a>(bufs: Option<&'a mut Bufs>, scratch: &'a mut Vec<u8>) -> &'a mut Vec<u8> {
    match bufs {
        Some(b) if b.pending() > 0 => b.output_for_append(),
        _ => scratch,
    }
}

/// One `write(2)`, retried only when a signal interrupted it. `WouldBlock`
/// counts as nothing written.
fn write_once<S: Stream>(stream: &S, data: &[u8]) -> io::Result<usize> {
    loop {
        match stream.write(data) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The most an idle slot may take: the socket, the flags, the telnet
    /// filter's byte and an empty buffer handle, which is what 15000 idle
    /// clients cost beyond the kernel's own socket memory.
    const SLOT: usize = 16;

    #[test]
    fn an_idle_connection_is_a_small_slot() {
        // The server's socket, a bare 4-byte descriptor for TCP and Unix
        // clients alike, in every profile.
        let size = std::mem::size_of::<Option<Conn<StreamSocket, ()>>>();
        assert!(size <= SLOT, "an idle slot takes {size} bytes");
        // docs/design.md promises two bytes of protocol state for free.
        let size = std::mem::size_of::<Option<Conn<StreamSocket, u16>>>();
        assert!(
            size <= SLOT,
            "a slot with a u16 of state takes {size} bytes"
        );
    }

    /// A socket that reads what `inbound` holds and writes at most
    /// `room` bytes into `outbound`.
    #[derive(Default)]
    struct Scripted {
        inbound: std::cell::RefCell<Vec<u8>>,
        outbound: std::cell::RefCell<Vec<u8>>,
        room: std::cell::Cell<usize>,
        shut: std::cell::Cell<bool>,
    }

    impl Stream for &Scripted {
        fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
            let mut inbound = self.inbound.borrow_mut();
            if inbound.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(inbound.len());
            buf[..n].copy_from_slice(&inbound[..n]);
            inbound.drain(..n);
            Ok(n)
        }

        fn write(&self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.room.get());
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.room.set(self.room.get() - n);
            self.outbound.borrow_mut().extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn shutdown_write(&self) -> io::Result<()> {
            self.shut.set(true);
            Ok(())
        }
    }

    struct Echo;

    impl crate::protocol::LineProtocol for Echo {
        fn on_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Action {
            out.extend_from_slice(line);
            Action::Continue
        }
    }

    #[test]
    fn an_evicted_connection_loses_what_it_holds_says_why_and_ends() {
        use crate::protocol::Lines;
        let socket = Scripted::default();
        let mut cx = Context::new(Lines(Echo), 1024, 64).with_budget(1);
        let mut conn: Conn<&Scripted> = Conn::new(&socket);
        // Replies the client does not take, and a line it has not finished.
        let line = [&[b'x'; 300][..], b"\n"].concat();
        *socket.inbound.borrow_mut() = [&line[..], &line, &[b'y'; 600]].concat();
        let readable = Ready {
            readable: true,
            ..Ready::default()
        };
        assert_eq!(conn.on_ready(readable, &mut cx), Verdict::Keep);
        assert!(conn.has_pending());
        assert!(conn.count_buffers().is_some(), "new buffers are filed");
        let held = cx.budget.held();
        assert_eq!(held, conn.bufs.as_deref().unwrap().capacity());
        assert!(cx.budget.over());

        socket.room.set(4096);
        let verdict = conn.evict(&mut cx);
        assert_eq!(verdict, Verdict::Keep, "it waits for the client's EOF");
        assert!(conn.is_ending());
        // The write side was blocked: the line waits for a writable event,
        // alone, the replies and the partial line gone.
        let bufs = conn.bufs.as_deref().unwrap();
        assert!(bufs.input.is_empty());
        let line = format!(
            "error: the server's memory for client buffers is full and this connection held {held} bytes of it, closing\n"
        );
        assert_eq!(&bufs.output[bufs.sent..], line.as_bytes());
        let writable = Ready {
            writable: true,
            ..Ready::default()
        };
        assert_eq!(conn.on_ready(writable, &mut cx), Verdict::Keep);
        assert_eq!(*socket.outbound.borrow(), line.as_bytes());
        assert!(socket.shut.get(), "the FIN follows the line");
        conn.count_buffers();
        assert!(
            cx.budget.held() < held,
            "only the box is left: {} bytes",
            cx.budget.held()
        );

        // Taken again while ending, with nothing left to drop: closed now.
        assert_eq!(conn.evict(&mut cx), Verdict::Close);
        drop(conn);
        assert_eq!(cx.budget.held(), 0, "everything given back");
        assert_eq!(cx.budget.shares(), 0);
    }

    #[test]
    fn a_socket_of_any_family_costs_what_a_tcp_socket_does() {
        assert_eq!(
            std::mem::size_of::<Option<Conn<StreamSocket, u16>>>(),
            std::mem::size_of::<Option<Conn<std::net::TcpStream, u16>>>(),
        );
    }
}
