//! The control channel: each claim socket ([`crate::claim`]) listens, and
//! the loop answers what processes of this user ask through it: `drainport
//! stats` asking for the process's numbers ([`crate::stats`] is the other
//! end), and a successor taking over the listeners ([`crate::takeover`]);
//! another kind of request is one more arm of [`wire::Request`].
//!
//! Contracts:
//! - Only this process's effective uid is served. The kernel says who
//!   connected (`SO_PEERCRED`); a peer of any other uid is closed at once,
//!   without a word or a log line, so no other user can make this process
//!   do, hold or print anything.
//! - Bounded, whoever connects: at most [`MAX_PEERS`] connections at
//!   once, each with a [`PEER_BUFFER`]-byte buffer held inline (no heap),
//!   each closed [`DEADLINE`] after it was accepted, and at most
//!   [`ACCEPTS_PER_TURN`] accepts per socket per turn of the loop. A
//!   connection beyond the bound is closed at once.
//! - Nothing here blocks the loop: every socket is non-blocking, and a
//!   reply that the socket will not take at once ends the exchange.
//!
//! # Answering stats
//!
//! A request `stats` is answered with one line, the process's snapshot
//! ([`crate::stats::Stats`]), and the connection closes. The channel does
//! not know the snapshot: it marks the connection as asking
//! ([`Control::wants_stats`]), and the loop, right after the event or
//! timer that read the request, takes one and hands it over
//! ([`Control::answer_stats`]). A connection is read as soon as it is
//! accepted, so a request sent with the connect is answered in the turn of
//! the loop that accepts it. Nothing is logged: monitoring asks often.
//!
//! # Handing the listeners over
//!
//! A request `take <addr> <service>` asks for the listeners on `addr`. It
//! is refused, with the reason, unless `addr` is the address of the claim
//! it came through, `service` is this process's, the listeners there are
//! open, and they were never handed over before. Then:
//!
//! 1. The listeners are lent: they stay open whatever the drain decides
//!    ([`Holder::lend`]), until the exchange ends.
//! 2. They go in batches of at most [`unix::MAX_FDS`], each descriptor
//!    with its CPU tag, each batch acknowledged by the successor before
//!    the next.
//! 3. The successor validates them, starts accepting from them, and says
//!    `taking`. If that comes within the deadline (and a grace of
//!    [`GRACE`] for a late turn of the loop), the process answers `done`
//!    and only then lets go ([`Holder::hand_over`]): it deregisters its
//!    copies from its epoll set and closes them. It clears no tag, opens no
//!    handshake window and resets nothing: the sockets, their queues and
//!    their handshakes in flight live on in the successor.
//! 4. Anything else (the successor gives up, dies, breaks the protocol, or
//!    runs out of time) returns the listeners: the process goes on as if
//!    nothing had happened, and says so.
//!
//! A process hands the listeners of an address over once: later requests
//! are refused. A process that is draining hands them over too, as long as
//! its handshake window keeps them open: the successor then saves the
//! handshakes still in flight on them.

pub(crate) mod wire;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::claim::Claim;
use crate::log::{Escaped, say};
use crate::peer::Address;
use crate::sys::unix;

use wire::{Answer, Request};

/// The first token of the channel's range: claim sockets from here, their
/// connections from [`PEERS_AT`]. Client tokens (slab keys) stay far
/// below, and the listeners' far above.
pub(crate) const FIRST_TOKEN: usize = usize::MAX / 4;
/// Where the connections' tokens start.
const PEERS_AT: usize = FIRST_TOKEN + (1 << 16);
/// Connections served at once.
pub(crate) const MAX_PEERS: usize = 4;
/// Bytes buffered per connection: a request, or an answer, is one short
/// line.
pub(crate) const PEER_BUFFER: usize = 256;
/// How long a connection may last, from its accept: HAProxy's 1 s.
pub(crate) const DEADLINE: Duration = Duration::from_secs(1);
/// How late after [`DEADLINE`] a `taking` is still honoured, for a turn
/// of the loop that came late. A successor waits longer for the answer
/// ([`crate::takeover`]), so one that hears nothing has not been served.
pub(crate) const GRACE: Duration = Duration::from_secs(1);
/// Accepts per claim socket per turn of the loop.
pub(crate) const ACCEPTS_PER_TURN: usize = 16;
/// The claim sockets' listen backlog.
const BACKLOG: i32 = 8;
/// How long accepting waits after an error that is not the connection's
/// (out of descriptors).
const RETRY: Duration = Duration::from_millis(100);

/// One past the channel's last token.
pub(crate) const END_TOKEN: usize = PEERS_AT + MAX_PEERS;

/// Whether `token` is the channel's.
pub(crate) fn owns(token: usize) -> bool {
    (FIRST_TOKEN..END_TOKEN).contains(&token)
}

/// What the channel needs from whoever holds the listeners: the loop's
/// admission.
pub(crate) trait Holder {
    /// How many listeners this process holds open on `addr`, its own to
    /// hand over; or why there are none (in words for the successor).
    fn available(&self, addr: &Address) -> Result<usize, String>;
    /// Listener `i` on `addr`: its descriptor and its CPU.
    fn listener(&self, addr: &Address, i: usize) -> Option<(RawFd, libc::c_int)>;
    /// A takeover of the listeners on `addr` starts (`true`) or ends
    /// without one (`false`): meanwhile they must not close.
    fn lend(&mut self, addr: &Address, lent: bool);
    /// The successor accepts from them: deregister and close this
    /// process's copies, and nothing else.
    fn hand_over(&mut self, addr: &Address);
}

/// The channel of one process: its claim sockets and the connections on
/// them.
pub(crate) struct Control {
    pid: u32,
    uid: u32,
    service: String,
    registry: Option<Registry>,
    endpoints: Vec<Endpoint>,
    peers: [Option<Peer>; MAX_PEERS],
    /// When to try accepting again without an event: the turn's accepts
    /// ran out, or accepting failed.
    retry_at: Option<Instant>,
    /// The nearest of the connections' deadlines and `retry_at`, worked
    /// out after each event and timer: the loop asks on every wakeup.
    due: Option<Instant>,
}

/// One claim socket.
struct Endpoint {
    claim: Claim,
    addr: Address,
    /// The process the listeners went to.
    handed_to: Option<u32>,
    /// The connection taking them over now.
    lending: Option<usize>,
}

/// One connection.
struct Peer {
    socket: OwnedFd,
    endpoint: usize,
    pid: u32,
    deadline: Instant,
    buf: [u8; PEER_BUFFER],
    len: usize,
    step: Step,
}

/// Where a connection is in its exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Waiting for its request.
    Request,
    /// A batch of `size` went, `sent` in all of `total`: waiting for its
    /// `got`.
    Batch {
        sent: usize,
        size: usize,
        total: usize,
    },
    /// Everything went: waiting for `taking`.
    Verdict { total: usize },
    /// It asked for the stats: waiting for the loop's snapshot.
    Stats,
}

impl Control {
    /// A channel with no socket yet, for a process serving `service`.
    pub(crate) fn new(service: &str, registry: &Registry) -> Control {
        Control {
            pid: std::process::id(),
            uid: crate::sys::process::euid(),
            service: service.to_owned(),
            registry: registry.try_clone().ok(),
            endpoints: Vec::new(),
            peers: Default::default(),
            retry_at: None,
            due: None,
        }
    }

    /// Makes `claim`, the announcement on `addr`, listen, and watches it.
    /// A claim that cannot listen stays an announcement, and the process
    /// says that it cannot hand over its listeners there.
    pub(crate) fn add(&mut self, claim: Claim, addr: Address) {
        let token = Token(FIRST_TOKEN + self.endpoints.len());
        let fd = claim.socket().as_raw_fd();
        let watched = unix::listen_nonblocking(claim.socket(), BACKLOG).and_then(|()| {
            let registry = self
                .registry
                .as_ref()
                .ok_or_else(|| io::Error::other("no registry"))?;
            registry.register(&mut SourceFd(&fd), token, Interest::READABLE)
        });
        if let Err(e) = watched {
            say!(
                "Process {} cannot open its control channel on {addr} ({e}); it cannot hand its listeners over",
                self.pid
            );
        }
        self.endpoints.push(Endpoint {
            claim,
            addr,
            handed_to: None,
            lending: None,
        });
    }

    /// When the channel next wants the loop: a connection's deadline, or
    /// accepting again. A field read, since the loop asks on every wakeup.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Works out [`Control::due`] again, after what may have changed it.
    fn refresh_due(&mut self) {
        let deadlines = self.peers.iter().flatten().map(|p| p.deadline);
        self.due = deadlines.chain(self.retry_at).min();
    }

    /// A readiness event on one of the channel's tokens.
    pub(crate) fn on_event(&mut self, token: usize, holder: &mut impl Holder, now: Instant) {
        if !owns(token) {
            return;
        }
        if token >= PEERS_AT {
            self.serve(token - PEERS_AT, holder, now);
        } else if token - FIRST_TOKEN < self.endpoints.len() {
            let admitted = self.accept(token - FIRST_TOKEN, now);
            self.serve_new(admitted, holder, now);
        }
        self.refresh_due();
    }

    /// Reads the connections just admitted (the slots set in `admitted`):
    /// a request sent with the connect is there already, and is answered
    /// in this turn rather than at the readiness event of the next one.
    fn serve_new(&mut self, admitted: u32, holder: &mut impl Holder, now: Instant) {
        for slot in 0..MAX_PEERS {
            if admitted & (1 << slot) != 0 {
                self.serve(slot, holder, now);
            }
        }
    }

    /// Whether a connection asked for the stats and waits for them.
    pub(crate) fn wants_stats(&self) -> bool {
        self.peers.iter().flatten().any(|p| p.step == Step::Stats)
    }

    /// Answers every connection that asked for the stats with `snapshot`
    /// (as [`crate::stats::Stats::line`] writes it), and closes it.
    pub(crate) fn answer_stats(&mut self, snapshot: &str) {
        let answer = wire::stats(snapshot);
        for slot in &mut self.peers {
            if slot.as_ref().is_some_and(|p| p.step == Step::Stats) {
                if let Some(peer) = slot.take() {
                    // A socket that will not take the line at once ends
                    // the exchange all the same: the asker reads nothing.
                    let _ = unix::send(peer.socket.as_fd(), answer.as_bytes(), &[]);
                }
            }
        }
        self.refresh_due();
    }

    /// Runs what is due: connections past their deadline end (after one
    /// last read, so that an answer already there counts), and accepting
    /// resumes.
    pub(crate) fn on_timer(&mut self, holder: &mut impl Holder, now: Instant) {
        for slot in 0..MAX_PEERS {
            if self.peers[slot].as_ref().is_some_and(|p| p.deadline <= now) {
                self.serve(slot, holder, now);
                if self.peers[slot].is_some() {
                    let late = format!("did not finish within {}s", DEADLINE.as_secs());
                    self.end(slot, holder, &late);
                }
            }
        }
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            for e in 0..self.endpoints.len() {
                let admitted = self.accept(e, now);
                self.serve_new(admitted, holder, now);
            }
        }
        self.refresh_due();
    }

    /// Accepts on claim socket `e`, up to the turn's budget. Returns the
    /// slots it filled, as bits.
    fn accept(&mut self, e: usize, now: Instant) -> u32 {
        let mut admitted = 0;
        for _ in 0..ACCEPTS_PER_TURN {
            let socket = match unix::accept(self.endpoints[e].claim.socket()) {
                Ok(socket) => socket,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return admitted,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(_) => {
                    self.retry_at = Some(now + RETRY);
                    return admitted;
                }
            };
            if let Some(slot) = self.admit(socket, e, now) {
                admitted |= 1 << slot;
            }
        }
        // More may be waiting: come back at once, after the clients' turn.
        self.retry_at = Some(now);
        admitted
    }

    /// Takes in a connection from a peer of this uid, if there is room,
    /// and returns its slot.
    fn admit(&mut self, socket: OwnedFd, endpoint: usize, now: Instant) -> Option<usize> {
        let Ok(peer) = unix::peer(socket.as_fd()) else {
            return None;
        };
        if peer.uid != self.uid {
            return None;
        }
        let Some(slot) = self.peers.iter().position(Option::is_none) else {
            let _ = unix::send(socket.as_fd(), wire::refused("busy").as_bytes(), &[]);
            return None;
        };
        let fd = socket.as_raw_fd();
        let registered = self.registry.as_ref().is_some_and(|r| {
            r.register(
                &mut SourceFd(&fd),
                Token(PEERS_AT + slot),
                Interest::READABLE,
            )
            .is_ok()
        });
        if !registered {
            return None;
        }
        self.peers[slot] = Some(Peer {
            socket,
            endpoint,
            pid: peer.pid,
            deadline: now + DEADLINE,
            buf: [0; PEER_BUFFER],
            len: 0,
            step: Step::Request,
        });
        Some(slot)
    }

    /// Reads what connection `slot` sent and acts on each whole line.
    fn serve(&mut self, slot: usize, holder: &mut impl Holder, now: Instant) {
        loop {
            let Some(peer) = self.peers[slot].as_mut() else {
                return;
            };
            if peer.len == PEER_BUFFER {
                return self.refuse(slot, holder, "a line longer than the channel takes");
            }
            // Descriptors sent this way are not wanted: dropped, so closed.
            let mut unwanted = Vec::new();
            let read = unix::recv(
                peer.socket.as_fd(),
                &mut peer.buf[peer.len..],
                &mut unwanted,
            );
            drop(unwanted);
            match read {
                Ok(0) => return self.end(slot, holder, "closed the connection"),
                Ok(n) => peer.len += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.end(slot, holder, &format!("failed: {e}")),
            }
            while let Some(line) = self.next_line(slot) {
                self.act(slot, &line, holder, now);
                if self.peers[slot].is_none() {
                    return;
                }
            }
        }
    }

    /// Takes the next whole line out of connection `slot`'s buffer.
    fn next_line(&mut self, slot: usize) -> Option<Vec<u8>> {
        let peer = self.peers[slot].as_mut()?;
        let end = peer.buf[..peer.len].iter().position(|&b| b == b'\n')?;
        let line = peer.buf[..end].to_vec();
        peer.buf.copy_within(end + 1..peer.len, 0);
        peer.len -= end + 1;
        Some(line)
    }

    /// Acts on one line from connection `slot`; the connection is closed
    /// when the exchange is over.
    fn act(&mut self, slot: usize, line: &[u8], holder: &mut impl Holder, now: Instant) {
        let Some(peer) = &mut self.peers[slot] else {
            return;
        };
        match peer.step {
            Step::Request => match wire::request(line) {
                Ok(Request::Stats) => peer.step = Step::Stats,
                Ok(Request::Take { addr, service }) => self.start_take(slot, addr, service, holder),
                Err(why) => self.refuse(slot, holder, why),
            },
            // Nothing more is to come before the answer.
            Step::Stats => self.end(slot, holder, "broke the protocol"),
            Step::Batch { sent, size, total } => match wire::answer(line) {
                Some(Answer::Got(k)) if k == size && sent == total => {
                    peer.step = Step::Verdict { total };
                }
                Some(Answer::Got(k)) if k == size => self.send_batch(slot, sent, total, holder),
                other => self.stopped(slot, other, holder),
            },
            Step::Verdict { total } => match wire::answer(line) {
                Some(Answer::Taking) => self.commit(slot, total, holder, now),
                other => self.stopped(slot, other, holder),
            },
        }
    }

    /// A take request: refused with the reason, or the first batch goes.
    fn start_take(&mut self, slot: usize, addr: &[u8], service: &[u8], holder: &mut impl Holder) {
        let Some(peer) = &self.peers[slot] else {
            return;
        };
        let e = peer.endpoint;
        let endpoint = &self.endpoints[e];
        let asked = std::str::from_utf8(addr)
            .ok()
            .and_then(|a| a.parse::<SocketAddr>().ok());
        let why = if asked.is_none_or(|asked| endpoint.addr != asked) {
            Some(format!(
                "it serves {} here, not {}",
                endpoint.addr,
                Escaped(addr)
            ))
        } else if service != self.service.as_bytes() {
            Some(format!(
                "it serves {}, not {}",
                self.service,
                Escaped(service)
            ))
        } else if let Some(to) = endpoint.handed_to {
            Some(format!("it handed them over to process {to} already"))
        } else if let Some(other) = endpoint.lending {
            let pid = self.peers[other].as_ref().map_or(0, |p| p.pid);
            Some(format!("process {pid} is taking them over now"))
        } else {
            holder.available(&endpoint.addr).err()
        };
        if let Some(why) = why {
            return self.refuse(slot, holder, &why);
        }
        let addr = &endpoint.addr;
        let Ok(total) = holder.available(addr) else {
            return;
        };
        holder.lend(addr, true);
        self.endpoints[e].lending = Some(slot);
        self.send_batch(slot, 0, total, holder);
    }

    /// Sends the batch after the first `sent` of `total` listeners.
    fn send_batch(&mut self, slot: usize, sent: usize, total: usize, holder: &mut impl Holder) {
        let Some(peer) = &mut self.peers[slot] else {
            return;
        };
        let addr = &self.endpoints[peer.endpoint].addr;
        let size = (total - sent).min(unix::MAX_FDS);
        let listeners: Option<Vec<(RawFd, libc::c_int)>> = (sent..sent + size)
            .map(|i| holder.listener(addr, i))
            .collect();
        let Some(listeners) = listeners.filter(|_| holder.available(addr) == Ok(total)) else {
            return self.refuse(
                slot,
                holder,
                &format!("its listeners on {addr} closed meanwhile"),
            );
        };
        let (fds, cpus): (Vec<RawFd>, Vec<libc::c_int>) = listeners.into_iter().unzip();
        let line = wire::fds(&cpus, total - sent - size);
        match unix::send(peer.socket.as_fd(), line.as_bytes(), &fds) {
            Ok(n) if n == line.len() => {
                peer.step = Step::Batch {
                    sent: sent + size,
                    size,
                    total,
                };
            }
            Ok(_) => self.end(slot, holder, "could not be sent a whole batch"),
            Err(e) => self.end(slot, holder, &format!("could not be sent its batch: {e}")),
        }
    }

    /// The successor accepts from the listeners: confirm, then let go.
    fn commit(&mut self, slot: usize, total: usize, holder: &mut impl Holder, now: Instant) {
        let Some(peer) = &self.peers[slot] else {
            return;
        };
        let (e, pid) = (peer.endpoint, peer.pid);
        let addr = self.endpoints[e].addr.clone();
        if now > peer.deadline + GRACE {
            return self.end(slot, holder, "answered too late");
        }
        if holder.available(&addr) != Ok(total) {
            return self.refuse(
                slot,
                holder,
                &format!("its listeners on {addr} closed meanwhile"),
            );
        }
        // Confirmed first: if the successor is gone, the listeners stay.
        if let Err(err) = unix::send(peer.socket.as_fd(), wire::DONE, &[]) {
            return self.end(slot, holder, &format!("could not be told: {err}"));
        }
        holder.hand_over(&addr);
        let endpoint = &mut self.endpoints[e];
        endpoint.lending = None;
        endpoint.handed_to = Some(pid);
        self.peers[slot] = None;
        say!(
            "Process {} handed its {total} listener{} on {addr} to process {pid}",
            self.pid,
            if total == 1 { "" } else { "s" }
        );
    }

    /// The exchange stopped on `answer`, which was not the one expected.
    fn stopped(&mut self, slot: usize, answer: Option<Answer<'_>>, holder: &mut impl Holder) {
        let why = match answer {
            Some(Answer::Refused(reason)) => format!("gave up: {}", Escaped(reason)),
            _ => "broke the protocol".to_owned(),
        };
        self.end(slot, holder, &why);
    }

    /// Takes connection `slot` out, closing it. A takeover under way on it
    /// is off: the listeners are returned. Says whether one was.
    fn close(&mut self, slot: usize, holder: &mut impl Holder) -> Option<(Peer, bool)> {
        let peer = self.peers[slot].take()?;
        let endpoint = &mut self.endpoints[peer.endpoint];
        let lent = endpoint.lending == Some(slot);
        if lent {
            endpoint.lending = None;
            holder.lend(&endpoint.addr, false);
        }
        Some((peer, lent))
    }

    /// Ends connection `slot` for `why`: if a takeover was under way on
    /// it, the process keeps its listeners and says so.
    fn end(&mut self, slot: usize, holder: &mut impl Holder, why: &str) {
        if let Some((peer, true)) = self.close(slot, holder) {
            say!(
                "Process {} keeps its listeners on {}: process {} {why}",
                self.pid,
                self.endpoints[peer.endpoint].addr,
                peer.pid
            );
        }
    }

    /// Tells connection `slot` why not, says it, and closes it. A takeover
    /// under way on it is off.
    fn refuse(&mut self, slot: usize, holder: &mut impl Holder, why: &str) {
        if let Some((peer, _)) = self.close(slot, holder) {
            let _ = unix::send(peer.socket.as_fd(), wire::refused(why).as_bytes(), &[]);
            say!(
                "Process {} refused to hand its listeners on {} to process {}: {why}",
                self.pid,
                self.endpoints[peer.endpoint].addr,
                peer.pid
            );
        }
    }
}

// The tests' own raw call polls a socket for its hangup.
#[cfg(test)]
#[allow(unsafe_code)]
mod tests;
