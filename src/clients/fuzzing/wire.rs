//! The scripted socket: the connection's end behaves like a Linux TCP
//! socket under edge-triggered epoll, and the driver plays the peer's end.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

use crate::conn::{Ready, Stream};

/// How a reset shows through the socket calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reset {
    /// Every read and write fails with `ECONNRESET`.
    Sticky,
    /// As Linux does it: queued input is still read, the error is reported
    /// once by the next call, then reads return 0 and writes `EPIPE`.
    Once { reported: bool },
}

/// A deliberate defect in the scripted socket, or in the clock the driver
/// gives the server, used by the tests that show each check can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
// Only the tests plant defects; the fuzzer runs the socket as it is.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) enum Mutation {
    #[default]
    None,
    /// Flip a bit of the first byte the connection writes.
    CorruptFirstByte,
    /// Never raise a writable edge.
    NoWritableEdges,
    /// Report EOF while input is still queued.
    EarlyEof,
    /// Turns are dated with the time the loop went to sleep, not the time
    /// it woke: the two clocks the loop once had.
    StaleClock,
}

/// The state the scripted socket shares with the driver playing the peer.
#[derive(Default)]
pub(super) struct Wire {
    /// Sent by the peer and not yet read by the connection.
    pub(super) inbound: VecDeque<u8>,
    /// The peer half-closed; reads return 0 once `inbound` is empty.
    pub(super) fin: bool,
    pub(super) reset: Option<Reset>,
    /// Written by the connection and not yet read by the peer.
    pub(super) outbound: VecDeque<u8>,
    /// The send buffer's size: a write takes at most what is free of it.
    pub(super) capacity: usize,
    /// A write found the buffer full; the kernel owes a writable edge.
    pub(super) nospace: bool,
    /// The connection shut its write side (sent FIN).
    pub(super) shut: bool,
    /// A read returned 0.
    pub(super) eof_read: bool,
    /// The next reads and writes fail with `EINTR`.
    pub(super) interrupts: u32,
    /// Events the kernel owes and the driver has not delivered yet.
    pub(super) edges: Ready,
    pub(super) delivered: usize,
    pub(super) written: usize,
    /// Writes that took less than they were offered.
    pub(super) short_writes: usize,
    pub(super) mutation: Mutation,
}

impl Wire {
    fn free(&self) -> usize {
        self.capacity.saturating_sub(self.outbound.len())
    }

    /// Space was freed: the kernel wakes a writer that found the buffer full
    /// once a third of it is free (`sk_stream_is_writeable`).
    pub(super) fn maybe_writable_edge(&mut self) {
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
pub(super) fn take_front(queue: &mut VecDeque<u8>, out: &mut [u8]) {
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
pub(super) struct Socket(pub(super) Rc<RefCell<Wire>>);

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
