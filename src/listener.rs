//! Every listening socket of the process, grouped by the address it serves
//! (a *port* here), with where each came from, taken in turns, and let go
//! at drain time as its origin requires: without resetting a connection or
//! delaying a new one.
//!
//! # Origins
//!
//! - **Bound** ([`Listeners::bind`]): opened by this process, one per
//!   online CPU, each tagged with its CPU through `SO_INCOMING_CPU` (see
//!   [`crate::kernel`] for what the kernel does with the tags). This process
//!   holds them alone, so retiring them is its job (below).
//! - **Passed** ([`Listeners::adopt`]): listening sockets the service
//!   manager passed (`LISTEN_FDS`, [`crate::activation`]), which it keeps
//!   and passes to every sibling too: one queue per socket, shared. A
//!   socket dies only at its last close, so letting go of this process's
//!   copy resets nothing and needs no kernel feature.
//!
//! - **Taken** ([`Listeners::taken`]): the sockets of the process this one
//!   replaces, handed over through its control channel
//!   ([`crate::takeover`]), each with the CPU it was tagged with there.
//!   Once that process has let go of them ([`Listeners::make_own`]) they
//!   are held alone, and retired as bound ones. Handed on to a successor in
//!   turn ([`Listeners::close`] on a port the successor holds), bound or
//!   taken sockets are let go like shared ones: closing this process's
//!   copies resets nothing.
//!
//! Whatever the origin, a port is *shared* while another process holds
//! copies of its sockets ([`Port::shared`]), and that alone decides how it
//! is let go.
//!
//! # Bound sockets: steering, then retiring
//!
//! Between them, the tags of any running process cover every SYN the
//! kernel can handle. Retirement then takes three steps:
//!
//! 1. [`Listeners::leave`] sets every tag back to -1. From then on, the
//!    group gives each new SYN to a sibling that still carries the SYN's CPU
//!    tag, so while a sibling runs, this process receives no new SYN at all:
//!    none is dropped, so no client waits, and none is admitted here. The
//!    sockets keep their accept queues and the handshakes in flight on them.
//!    Where the process may attach it (`CAP_NET_ADMIN`), a classic BPF filter
//!    that drops bare SYNs ([`Listeners::refuse_syns`]) is added as a safety
//!    net for SYNs that steering could not place elsewhere (a kernel before
//!    6.2, or no sibling for that CPU).
//! 2. The process keeps accepting until the handshakes that were in flight
//!    on the port have completed or been dropped (the handshake window of
//!    [`crate::admission`]) and every queue is empty.
//! 3. It closes the sockets, which now hold nothing to reset.
//!
//! The same tags are taken off while a running process cannot accept (at
//! its client limit, or out of descriptors) and put back when it can, so
//! a full process leaves the group's selection to its siblings.
//!
//! # Shared sockets: one queue, taken in turns
//!
//! Every holder of a shared socket watches it with `EPOLLEXCLUSIVE`, so a
//! new connection wakes one process asleep in `epoll_wait` rather than all
//! of them. epoll wakes the first such process in the socket's wait queue,
//! so a process takes the socket out of its epoll set and adds it back
//! every [`REARM_EVERY`] accepts, going to the back of the queue (nginx's
//! `ngx_reorder_accept_events`). Leaving the selection (full, or out of
//! descriptors) takes the socket out of the epoll set, so that connections
//! wake the siblings instead; rejoining adds it back. The tags, the
//! backlog and the filter are the socket's, shared by every holder, and
//! never touched.
//!
//! Letting go at the drain ([`Listeners::let_go`]): the socket leaves the
//! epoll set, so no new connection wakes this process; the process takes
//! the connections that were queued at that moment (epoll may have woken
//! it alone for them), at most that many; then it closes its copy. No
//! window: the handshakes in flight stay with the socket.

mod bound;
mod passed;
mod unix_queue;

use std::io;
use std::net::SocketAddr;
use std::net::TcpListener as StdListener;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use crate::activation::Passed;
use crate::kernel;
use crate::peer::Address;
use crate::sys::stream::{self, StreamSocket};
use crate::sys::{epoll, socket};

pub(crate) use bound::filter_permitted;
use passed::{Adopted, adopt};

/// Accepts between two re-arms of a shared socket (nginx's figure).
pub(crate) const REARM_EVERY: u32 = 16;

/// Where a port's sockets came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Opened by this process, one per online CPU, tagged.
    Bound,
    /// Passed by the service manager, which holds them too.
    Passed,
    /// Taken over from the process this one replaces, tagged as they were
    /// there.
    Taken,
}

/// One address served, and how.
#[derive(Debug)]
pub(crate) struct Port {
    /// An IP address and port, or (passed only) a Unix socket's name.
    pub(crate) addr: Address,
    pub(crate) origin: Origin,
    /// Another process holds copies of these sockets: letting go of them
    /// is enough, and their tags and queues are not this process's alone.
    pub(crate) shared: bool,
    /// The passed descriptors' numbers and names, for the startup lines.
    pub(crate) passed_as: Vec<(RawFd, String)>,
    /// An IPv6 socket passed with `IPV6_V6ONLY` off: IPv4 clients too.
    pub(crate) dual_stack: bool,
    /// Its sockets, as indices into [`Listeners`]' list.
    socks: Range<usize>,
}

/// One listening socket.
struct Listener {
    /// `None` once closed. A listening stream socket of any family.
    socket: Option<OwnedFd>,
    /// The CPU tag it carries while the process takes new clients; `None`
    /// for a shared socket, whose tag is not this process's to set.
    cpu: Option<libc::c_int>,
    /// Whether it is in the epoll set now.
    watched: bool,
    /// Accepts since it was last added to the epoll set.
    since_rearm: u32,
    /// For a shared socket let go: how many more connections it may give
    /// this process, of those queued when it was let go.
    quota: Option<u32>,
}

/// Every listener this process holds.
pub(crate) struct Listeners {
    socks: Vec<Listener>,
    ports: Vec<Port>,
    /// Which listeners may hold connections not yet accepted, and whose
    /// turn is next.
    marks: Marks,
    /// The epoll set and listener 0's token, once registered.
    poll: Option<(RawFd, usize)>,
}

impl Listeners {
    /// The listeners of a process asked to serve `addrs`, to which the
    /// service manager passed `passed`: those sockets if there are any
    /// (each checked, [`adopt`]), else sockets of its own on every address.
    /// None listens yet, unless it was passed listening.
    pub(crate) fn open(addrs: &[SocketAddr], passed: Vec<Passed>) -> io::Result<Listeners> {
        let mut listeners = Listeners::new();
        if !passed.is_empty() {
            let adopted = passed.into_iter().map(adopt).collect::<io::Result<_>>()?;
            listeners.adopt(adopted);
            return Ok(listeners);
        }
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no address to serve, and no listening socket passed by the service manager",
            ));
        }
        for (i, &addr) in addrs.iter().enumerate() {
            if addrs[..i].contains(&addr) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("address {addr} is given twice"),
                ));
            }
            listeners.bind(addr)?;
        }
        Ok(listeners)
    }

    fn new() -> Listeners {
        Listeners {
            socks: Vec::new(),
            ports: Vec::new(),
            marks: Marks::new(0),
            poll: None,
        }
    }

    /// Opens one socket per online CPU on `addr`, tagged with its CPU and
    /// bound but not yet listening: nothing can queue on it until
    /// [`Listeners::listen`]. With port 0 the first one picks the port and
    /// the rest join it. Returns the address bound.
    fn bind(&mut self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let first = self.socks.len();
        let mut addr = addr;
        for cpu in kernel::online_cpus() {
            let cpu = libc::c_int::try_from(cpu).unwrap_or(bound::NO_CPU);
            let (socket, bound) = bound::open(addr, cpu)?;
            addr = bound;
            self.socks.push(Listener::new(socket, Some(cpu)));
        }
        self.ports.push(Port {
            addr: Address::Ip(addr),
            origin: Origin::Bound,
            shared: false,
            passed_as: Vec::new(),
            dual_stack: false,
            socks: first..self.socks.len(),
        });
        self.marks = Marks::new(self.socks.len());
        Ok(addr)
    }

    /// Takes sockets the service manager passed, one port per address, in
    /// the order each address was first passed.
    fn adopt(&mut self, adopted: Vec<Adopted>) {
        let mut rest = adopted;
        while !rest.is_empty() {
            // Sockets of one address keep the order they were passed in.
            let addr = rest[0].addr.clone();
            let (same, others): (Vec<Adopted>, Vec<Adopted>) =
                rest.into_iter().partition(|a| a.addr == addr);
            rest = others;
            let first = self.socks.len();
            let mut port = Port {
                addr,
                origin: Origin::Passed,
                shared: true,
                passed_as: Vec::new(),
                dual_stack: same[0].dual_stack,
                socks: first..first,
            };
            for a in same {
                port.passed_as.push((a.number, a.name));
                self.socks.push(Listener::new(a.socket, None));
            }
            port.socks.end = self.socks.len();
            self.ports.push(port);
        }
        self.marks = Marks::new(self.socks.len());
    }

    /// Sockets taken over from the process this one replaces, one port per
    /// address, each socket with the CPU it was tagged with there. They
    /// listen already, and until that process lets go of them nothing they
    /// share is changed ([`Listeners::make_own`]).
    pub(crate) fn taken(taken: Vec<(SocketAddr, Vec<(StdListener, libc::c_int)>)>) -> Listeners {
        let mut listeners = Listeners::new();
        for (addr, socks) in taken {
            let first = listeners.socks.len();
            for (socket, cpu) in socks {
                listeners
                    .socks
                    .push(Listener::new(OwnedFd::from(socket), Some(cpu)));
            }
            listeners.ports.push(Port {
                addr: Address::Ip(addr),
                origin: Origin::Taken,
                shared: false,
                passed_as: Vec::new(),
                dual_stack: false,
                socks: first..listeners.socks.len(),
            });
        }
        listeners.marks = Marks::new(listeners.socks.len());
        listeners
    }

    /// Makes `port`'s taken sockets this process's own, once the process
    /// that handed them over has let go: its SYN filter (attached if it was
    /// retiring them, as root) comes off, and every CPU tag goes back on (it
    /// may have cleared them, full or retiring). Before that, both would
    /// change what the other process sees.
    pub(crate) fn make_own(&mut self, port: usize) -> io::Result<()> {
        for sock in &self.socks[self.ports[port].socks.clone()] {
            if let Some(socket) = &sock.socket {
                bound::detach_filter(socket.as_fd())?;
            }
        }
        self.rejoin(port)
    }

    /// The port serving `addr`, if one does.
    pub(crate) fn port_of(&self, addr: &Address) -> Option<usize> {
        self.ports.iter().position(|p| p.addr == *addr)
    }

    /// The address listener `i` serves.
    pub(crate) fn address_of(&self, i: usize) -> &Address {
        let port = self.ports.iter().find(|p| p.socks.contains(&i));
        &port.expect("every listener belongs to a port").addr
    }

    /// How many of `port`'s sockets are open.
    pub(crate) fn open_count(&self, port: usize) -> usize {
        self.socks[self.ports[port].socks.clone()]
            .iter()
            .filter(|s| s.socket.is_some())
            .count()
    }

    /// Socket `i` of `port`, to hand over: its descriptor and CPU tag, if it
    /// is open and this process's own (a shared socket is not).
    pub(crate) fn handle(&self, port: usize, i: usize) -> Option<(RawFd, libc::c_int)> {
        let sock = &self.socks[self.ports[port].socks.clone()].get(i)?;
        Some((sock.socket.as_ref()?.as_raw_fd(), sock.cpu?))
    }

    /// The addresses served, in the order they were added.
    pub(crate) fn ports(&self) -> &[Port] {
        &self.ports
    }

    /// Starts listening on every bound socket (passed ones listen
    /// already), and sets the backlog of taken ones (`listen` on a
    /// listening socket changes only that). From the first success on,
    /// clients can queue here, so a caller that fails after this must
    /// retire the listeners like a drain does rather than close them.
    pub(crate) fn listen(&self, backlog: u32) -> io::Result<()> {
        let backlog = libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX);
        for port in self.ports.iter().filter(|p| p.origin != Origin::Passed) {
            for sock in &self.socks[port.socks.clone()] {
                let Some(socket) = &sock.socket else { continue };
                socket::listen(socket.as_fd(), backlog).map_err(|err| {
                    io::Error::new(err.kind(), format!("cannot listen on {}: {err}", port.addr))
                })?;
            }
        }
        Ok(())
    }

    /// Adds every listener to the epoll set `epoll`, listener `i` under
    /// token `first + i`: a shared one with `EPOLLEXCLUSIVE`.
    pub(crate) fn register(&mut self, epoll: RawFd, first: usize) -> io::Result<()> {
        self.poll = Some((epoll, first));
        for i in 0..self.socks.len() {
            self.watch(i)?;
        }
        Ok(())
    }

    /// Notes that listener `i` reported a connection.
    pub(crate) fn mark(&mut self, i: usize) {
        self.marks.mark(i);
    }

    /// Notes that any open listener may hold connections, for a sweep that
    /// does not wait for an event.
    pub(crate) fn mark_all(&mut self) {
        for (i, sock) in self.socks.iter().enumerate() {
            if sock.socket.is_some() {
                self.marks.mark(i);
            }
        }
    }

    /// Whose turn it is among the listeners that may hold connections.
    pub(crate) fn next_queued(&self) -> Option<usize> {
        self.marks.next()
    }

    /// Whether any listener may hold connections.
    pub(crate) fn any_queued(&self) -> bool {
        self.marks.any()
    }

    /// Whether a client waits in the queue of a socket this process bound,
    /// as the kernel counts it (a listening socket's `TCP_INFO` has its
    /// accept queue's length in `tcpi_unacked`). A shared socket's queue
    /// is left out: who waits there waits for any of its holders. Only
    /// marked listeners are asked: an unmarked one was seen empty.
    pub(crate) fn anyone_waiting(&self) -> bool {
        self.socks.iter().enumerate().any(|(i, sock)| {
            sock.cpu.is_some()
                && self.marks.is_marked(i)
                && sock
                    .socket
                    .as_ref()
                    .is_some_and(|s| queued(s).is_ok_and(|n| n > 0))
        })
    }

    /// Accepts one connection from listener `i`, and gives the next turn
    /// to the listener after it; `WouldBlock` clears its mark. A shared
    /// socket goes to the back of the epoll queue every [`REARM_EVERY`]
    /// accepts. A TCP client comes with its address; a Unix one is known
    /// by its listener's ([`Listeners::address_of`]).
    pub(crate) fn accept(&mut self, i: usize) -> io::Result<(StreamSocket, Option<SocketAddr>)> {
        let sock = &mut self.socks[i];
        let result = match (&sock.socket, sock.quota) {
            (Some(socket), None | Some(1..)) => stream::accept(socket.as_fd()),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        };
        if result.is_ok() {
            if let Some(left) = &mut sock.quota {
                *left -= 1;
            }
            sock.since_rearm += 1;
        }
        let rearm = sock.cpu.is_none() && sock.watched && sock.since_rearm >= REARM_EVERY;
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.marks.clear(i);
            return result;
        }
        self.marks.took(i);
        if rearm {
            // A failure leaves the socket where it was, or out of the set;
            // the sweep still finds what queues on it.
            let _ = self.unwatch(i).and_then(|()| self.watch(i));
        }
        result
    }

    /// Leaves the selection on `port` (a drain, or the process cannot
    /// accept): a bound port clears its CPU tags so that the group sends new
    /// SYNs to siblings; a shared one leaves the epoll set so that new
    /// connections wake siblings.
    pub(crate) fn leave(&mut self, port: usize) -> io::Result<()> {
        for i in self.ports[port].socks.clone() {
            match self.socks[i].cpu {
                Some(_) => self.tag(i, bound::NO_CPU)?,
                None => self.unwatch(i)?,
            }
        }
        Ok(())
    }

    /// Rejoins the selection on `port`: puts the CPU tags back, or the
    /// shared sockets in the epoll set.
    pub(crate) fn rejoin(&mut self, port: usize) -> io::Result<()> {
        for i in self.ports[port].socks.clone() {
            match self.socks[i].cpu {
                Some(cpu) => self.tag(i, cpu)?,
                None => self.watch(i)?,
            }
        }
        Ok(())
    }

    /// The safety net of a bound port's retirement: drops every bare SYN
    /// (SYN set, ACK clear) that still reaches its sockets. Needs
    /// `CAP_NET_ADMIN` on recent kernels.
    pub(crate) fn refuse_syns(&self, port: usize) -> io::Result<()> {
        for sock in &self.socks[self.ports[port].socks.clone()] {
            if let (Some(socket), Some(_)) = (&sock.socket, sock.cpu) {
                bound::attach_syn_filter(socket.as_fd())?;
            }
        }
        Ok(())
    }

    /// Lets go of a shared port at the drain: its sockets leave the epoll
    /// set, and each may still give this process as many connections as
    /// were queued on it now, which epoll may have announced to this
    /// process alone. Later ones are the siblings'.
    pub(crate) fn let_go(&mut self, port: usize) {
        let unix = matches!(self.ports[port].addr, Address::Unix(_));
        for i in self.ports[port].socks.clone() {
            let _ = self.unwatch(i);
            let sock = &mut self.socks[i];
            // TCP_INFO counts a TCP listener's queue; a Unix one's is
            // asked of the socket diagnostics.
            let count = |s: &OwnedFd| {
                if unix {
                    unix_queue::queued(s.as_fd())
                } else {
                    queued(s)
                }
            };
            // Unknown counts as none queued: a sibling's sweep finds them.
            sock.quota = Some(sock.socket.as_ref().map_or(0, |s| count(s).unwrap_or(0)));
            self.marks.mark(i);
        }
    }

    /// Closes `port`'s listeners. For a bound port, whatever is still
    /// queued on them is reset, so the caller first makes sure nothing is;
    /// for a shared one, this closes this process's copies only.
    pub(crate) fn close(&mut self, port: usize) {
        for i in self.ports[port].socks.clone() {
            let _ = self.unwatch(i);
            self.socks[i].socket = None;
            self.marks.clear(i);
        }
    }

    fn tag(&self, i: usize, cpu: libc::c_int) -> io::Result<()> {
        match &self.socks[i].socket {
            Some(socket) => bound::tag(socket.as_fd(), cpu),
            None => Ok(()),
        }
    }

    /// Adds listener `i` to the epoll set, if it is open and out of it.
    fn watch(&mut self, i: usize) -> io::Result<()> {
        let Some((epoll, first)) = self.poll else {
            return Ok(());
        };
        let sock = &mut self.socks[i];
        let Some(socket) = &sock.socket else {
            return Ok(());
        };
        if !sock.watched {
            epoll::add(epoll, socket.as_fd(), first + i, sock.cpu.is_none())?;
            sock.watched = true;
            sock.since_rearm = 0;
        }
        Ok(())
    }

    /// Takes listener `i` out of the epoll set, if it is in it. epoll
    /// follows the open file description, which a shared socket's other
    /// holders keep open: closing this copy alone would not take it out.
    fn unwatch(&mut self, i: usize) -> io::Result<()> {
        let Some((epoll, _)) = self.poll else {
            return Ok(());
        };
        let sock = &mut self.socks[i];
        if let (Some(socket), true) = (&sock.socket, sock.watched) {
            sock.watched = false;
            epoll::delete(epoll, socket.as_fd())?;
        }
        Ok(())
    }
}

impl Listener {
    fn new(socket: OwnedFd, cpu: Option<libc::c_int>) -> Listener {
        Listener {
            socket: Some(socket),
            cpu,
            watched: false,
            since_rearm: 0,
            quota: None,
        }
    }
}

/// How many finished connections wait in a listener's accept queue:
/// `tcpi_unacked` of a listening socket's `TCP_INFO` is its
/// `sk_ack_backlog`.
fn queued(socket: &OwnedFd) -> io::Result<u32> {
    socket::accept_queue_len(socket.as_fd())
}

/// Which listeners may hold connections, taken in turn: after a listener
/// gives up a connection, the scan starts at the one after it, so a flood
/// on one CPU's queue cannot starve the others.
#[derive(Debug)]
struct Marks {
    queued: Vec<bool>,
    /// How many are marked: the loop asks on every wakeup whether any is,
    /// and a count answers without a scan.
    marked: usize,
    /// Where the next scan starts.
    cursor: usize,
}

impl Marks {
    fn new(n: usize) -> Marks {
        Marks {
            queued: vec![false; n],
            marked: 0,
            cursor: 0,
        }
    }

    fn mark(&mut self, i: usize) {
        if let Some(q) = self.queued.get_mut(i) {
            self.marked += usize::from(!*q);
            *q = true;
        }
    }

    fn clear(&mut self, i: usize) {
        if let Some(q) = self.queued.get_mut(i) {
            self.marked -= usize::from(*q);
            *q = false;
        }
    }

    fn any(&self) -> bool {
        self.marked > 0
    }

    fn is_marked(&self, i: usize) -> bool {
        self.queued.get(i).copied().unwrap_or(false)
    }

    /// Listener `i` gave up a connection: the next turn is the next one's.
    fn took(&mut self, i: usize) {
        self.cursor = (i + 1) % self.queued.len();
    }

    /// The first marked listener from the cursor on, wrapping around.
    fn next(&self) -> Option<usize> {
        let n = self.queued.len();
        (0..n)
            .map(|k| (self.cursor + k) % n)
            .find(|&i| self.queued[i])
    }
}

// The tests' own raw calls read what the kernel holds for a listener.
#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    #[test]
    fn a_flooded_listener_does_not_starve_the_others() {
        // Listener 0 always has more; listener 1 has one waiting. Before
        // turns were kept, every scan started at 0 and 1 waited for 0 to
        // run dry.
        let mut marks = Marks::new(2);
        marks.mark(0);
        marks.mark(1);
        let first = marks.next().unwrap();
        marks.took(first);
        let second = marks.next().unwrap();
        assert_ne!(first, second, "one listener took two turns in a row");
    }

    #[test]
    fn turns_go_round_and_skip_empty_queues() {
        let mut marks = Marks::new(4);
        for i in 0..4 {
            marks.mark(i);
        }
        marks.clear(2);
        let mut order = Vec::new();
        for _ in 0..6 {
            let i = marks.next().unwrap();
            order.push(i);
            marks.took(i);
        }
        assert_eq!(order, [0, 1, 3, 0, 1, 3]);
        for i in [0, 1, 3] {
            marks.clear(i);
        }
        assert_eq!(marks.next(), None);
        assert!(!marks.any());
        marks.mark(2);
        marks.mark(2);
        assert_eq!(marks.next(), Some(2));
        assert!(marks.any());
        marks.clear(2);
        assert!(!marks.any(), "a listener marked twice is cleared once");
        marks.mark(99); // out of range: ignored, never a panic
        marks.clear(99);
    }

    /// How many instructions the socket filter on `fd` has (0: none).
    fn filter_len(fd: RawFd) -> libc::socklen_t {
        let mut len: libc::socklen_t = 0;
        // SAFETY: with a length of 0 the kernel writes only the length.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                socket::SO_ATTACH_FILTER,
                std::ptr::null_mut(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        len
    }

    fn tag_of(fd: RawFd) -> libc::c_int {
        // SAFETY: `fd` is a listener the test's `Listeners` holds open.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        socket::get_int_opt(fd, libc::SOL_SOCKET, socket::SO_INCOMING_CPU).unwrap()
    }

    #[test]
    fn listeners_taken_over_get_their_tags_back_and_no_filter() {
        let mut l = Listeners::open(&["127.0.0.1:0".parse().unwrap()], Vec::new()).unwrap();
        l.listen(4).unwrap();
        // As the process that handed them over may have left them: full
        // or retiring, its tags cleared and, as root, its filter on.
        l.leave(0).unwrap();
        let filtered = l.refuse_syns(0).is_ok();
        let n = l.open_count(0);
        assert!(n >= 1 && l.handle(0, n).is_none());
        for i in 0..n {
            let (fd, _) = l.handle(0, i).unwrap();
            assert_eq!(tag_of(fd), bound::NO_CPU);
            assert_eq!(filter_len(fd) > 0, filtered);
        }
        l.make_own(0).unwrap();
        for i in 0..n {
            let (fd, cpu) = l.handle(0, i).unwrap();
            assert_eq!(tag_of(fd), cpu);
            assert_eq!(filter_len(fd), 0);
        }
        // Again, with no filter to take off.
        l.make_own(0).unwrap();
        if !filtered {
            eprintln!("skipped: the filter half: attaching it needs CAP_NET_ADMIN");
        }
    }
}
