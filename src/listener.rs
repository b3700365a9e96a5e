//! The shared listening sockets: made by hand so they can join a
//! `SO_REUSEPORT` group and carry a CPU tag, and retired at drain time
//! without resetting a connection or delaying a new one.
//!
//! # Steering, then retiring
//!
//! A process opens one listener per online CPU, each tagged with that CPU
//! through `SO_INCOMING_CPU` (see [`crate::steer`] for what the kernel does
//! with the tags). Between them, the tags of any running process cover every
//! SYN the kernel can handle. Retirement then takes three steps:
//!
//! 1. [`Listeners::steer_away`] sets every tag back to -1. From then on, the
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
//! Closing a listener with connections still queued would reset them unless
//! `net.ipv4.tcp_migrate_req` is 1; with the steps above there are none, so
//! the setting does not matter.

use std::io;
use std::mem;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::steer;
use crate::sys::syscall;

/// `SO_ATTACH_FILTER` from `<asm-generic/socket.h>`; not exported by libc for glibc.
const SO_ATTACH_FILTER: libc::c_int = 26;
/// `SO_INCOMING_CPU` from `<asm-generic/socket.h>`; not exported by libc for glibc.
const SO_INCOMING_CPU: libc::c_int = 49;
/// The tag that matches no CPU: such a listener is chosen only when no
/// listener in the group carries the SYN's CPU.
const NO_CPU: libc::c_int = -1;

/// How well this process can keep new clients away once it drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protection {
    /// The kernel steers by CPU tag: new clients go to siblings.
    Steering,
    /// No steering, but the SYN filter can be attached: new clients that
    /// reach a draining process retry about a second later on a sibling.
    FilterOnly,
    /// Neither: clients that connect while a process drains may be admitted
    /// by it, or reset when its listeners close.
    None,
}

impl Protection {
    /// Works out what this kernel and this process's privileges allow.
    pub(crate) fn probe() -> Protection {
        if steer::kernel_steers() {
            Protection::Steering
        } else if filter_permitted() {
            Protection::FilterOnly
        } else {
            Protection::None
        }
    }
}

/// Every listener this process holds on one address, one per online CPU.
pub(crate) struct Listeners {
    socks: Vec<Listener>,
    /// Which listeners may hold connections not yet accepted, and whose
    /// turn is next.
    marks: Marks,
    addr: SocketAddr,
}

impl Listeners {
    /// Opens one socket per online CPU on `addr`, tagged with its CPU and
    /// bound but not yet listening: nothing can queue on it until
    /// [`Listeners::listen`]. With port 0 the first one picks the port and
    /// the rest join it.
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Listeners> {
        let mut addr = addr;
        let mut socks = Vec::new();
        for cpu in steer::online_cpus() {
            let sock = Listener::bind(addr, cpu)?;
            addr = sock.addr;
            socks.push(sock);
        }
        Ok(Listeners {
            marks: Marks::new(socks.len()),
            socks,
            addr,
        })
    }

    /// Starts listening on every socket. From the first success on,
    /// clients can queue here, so a caller that fails after this must
    /// retire the listeners like a drain does rather than close them.
    pub(crate) fn listen(&self, backlog: u32) -> io::Result<()> {
        let backlog = libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX);
        for sock in &self.socks {
            syscall!(listen(sock.socket.as_raw_fd(), backlog)).map_err(|err| {
                io::Error::new(err.kind(), format!("cannot listen on {}: {err}", self.addr))
            })?;
        }
        Ok(())
    }

    /// The address actually bound (with the real port when 0 was asked for).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Registers listener `i` under token `first + i`.
    pub(crate) fn register(&mut self, registry: &Registry, first: usize) -> io::Result<()> {
        for (i, sock) in self.socks.iter_mut().enumerate() {
            registry.register(&mut sock.socket, Token(first + i), Interest::READABLE)?;
        }
        Ok(())
    }

    /// Closes every listener. Whatever is still queued on them is reset,
    /// so the caller first makes sure nothing is.
    pub(crate) fn close(&mut self) {
        self.socks.clear();
        self.marks = Marks::new(0);
    }

    /// Takes every listener out of `registry`.
    pub(crate) fn deregister(&mut self, registry: &Registry) {
        for sock in &mut self.socks {
            let _ = registry.deregister(&mut sock.socket);
        }
    }

    /// Notes that listener `i` reported a connection.
    pub(crate) fn mark(&mut self, i: usize) {
        self.marks.mark(i);
    }

    /// Notes that any listener may hold connections, for a sweep that does
    /// not wait for an event.
    pub(crate) fn mark_all(&mut self) {
        self.marks.mark_all();
    }

    /// Whose turn it is among the listeners that may hold connections.
    pub(crate) fn next_queued(&self) -> Option<usize> {
        self.marks.next()
    }

    /// Whether any listener may hold connections.
    pub(crate) fn any_queued(&self) -> bool {
        self.marks.any()
    }

    /// Accepts one connection from listener `i`, and gives the next turn
    /// to the listener after it; `WouldBlock` clears its mark.
    pub(crate) fn accept(&mut self, i: usize) -> io::Result<(TcpStream, SocketAddr)> {
        let result = self.socks[i].socket.accept();
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.marks.clear(i);
        } else {
            self.marks.took(i);
        }
        result
    }

    /// Leaves the group's selection: clears every CPU tag so that the group
    /// sends new SYNs to siblings. Used at the drain, and while the process
    /// cannot accept (full, or out of descriptors).
    pub(crate) fn steer_away(&self) -> io::Result<()> {
        for sock in &self.socks {
            set_int_opt(&sock.socket, libc::SOL_SOCKET, SO_INCOMING_CPU, NO_CPU)?;
        }
        Ok(())
    }

    /// Rejoins the selection: puts every listener's CPU tag back.
    pub(crate) fn steer_back(&self) -> io::Result<()> {
        for sock in &self.socks {
            set_int_opt(&sock.socket, libc::SOL_SOCKET, SO_INCOMING_CPU, sock.cpu)?;
        }
        Ok(())
    }

    /// The safety net of step 1: drops every bare SYN (SYN set, ACK clear)
    /// that still reaches these sockets. Needs `CAP_NET_ADMIN` on recent
    /// kernels.
    pub(crate) fn refuse_syns(&self) -> io::Result<()> {
        for sock in &self.socks {
            attach_syn_filter(sock.socket.as_raw_fd())?;
        }
        Ok(())
    }
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

    fn mark_all(&mut self) {
        self.queued.fill(true);
        self.marked = self.queued.len();
    }

    fn clear(&mut self, i: usize) {
        self.marked -= usize::from(self.queued[i]);
        self.queued[i] = false;
    }

    fn any(&self) -> bool {
        self.marked > 0
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

/// One listening socket in a `SO_REUSEPORT` group.
struct Listener {
    socket: TcpListener,
    addr: SocketAddr,
    /// The CPU tag it carries while the process takes new clients.
    cpu: libc::c_int,
}

impl Listener {
    /// Opens a non-blocking, close-on-exec socket with `SO_REUSEADDR`,
    /// `SO_REUSEPORT` and the CPU tag `cpu`, bound to `addr`, so that
    /// sibling processes can bind the same address and the group steers
    /// by CPU.
    fn bind(addr: SocketAddr, cpu: u32) -> io::Result<Listener> {
        Self::open(addr, cpu).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot listen on {addr}: {err}{}", bind_hint(&err)),
            )
        })
    }

    fn open(addr: SocketAddr, cpu: u32) -> io::Result<Listener> {
        let domain = match addr {
            SocketAddr::V4(_) => libc::AF_INET,
            SocketAddr::V6(_) => libc::AF_INET6,
        };
        let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        let fd = syscall!(socket(domain, ty, 0))?;
        // SAFETY: `socket` just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        if domain == libc::AF_INET6 {
            // `[::]:port` then means IPv6 only, as the address says, instead of
            // also claiming the IPv4 port.
            set_int_opt(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
        }
        // Accepted sockets inherit TCP_NODELAY from the listener, which saves
        // a setsockopt per accept. Replies are written whole, so Nagle's
        // algorithm could only delay them.
        set_int_opt(&fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
        // Tagged before listen(2), so the socket joins the group already
        // carrying its CPU and never takes another CPU's SYN while a
        // sibling carries that CPU's tag.
        let cpu = libc::c_int::try_from(cpu).unwrap_or(NO_CPU);
        set_int_opt(&fd, libc::SOL_SOCKET, SO_INCOMING_CPU, cpu)?;
        let (storage, len) = sockaddr(&addr);
        // SAFETY: `storage` is a live sockaddr_storage holding a sockaddr of
        // `len` bytes, which is no longer than the storage; bind only reads it.
        syscall!(bind(
            fd.as_raw_fd(),
            (&raw const storage).cast::<libc::sockaddr>(),
            len
        ))?;
        let socket = TcpListener::from_std(StdListener::from(fd));
        let addr = socket.local_addr()?;
        Ok(Listener { socket, addr, cpu })
    }
}

/// Whether this process may attach a socket filter to a TCP socket, tried
/// on a socket of its own that never listens.
fn filter_permitted() -> bool {
    let Ok(fd) = syscall!(socket(
        libc::AF_INET,
        libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
        0
    )) else {
        return false;
    };
    // SAFETY: `socket` just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    attach_syn_filter(fd.as_raw_fd()).is_ok()
}

/// Attaches a classic BPF filter that drops every bare SYN (SYN set, ACK
/// clear), so that no new handshake starts on `fd`; the final ACKs of
/// handshakes in flight still pass.
///
/// A socket filter on a TCP socket sees the segment from its TCP header on,
/// so byte 13 holds the flags.
fn attach_syn_filter(fd: libc::c_int) -> io::Result<()> {
    const TCP_FLAGS: u32 = 13;
    const SYN: u32 = 0x02;
    const ACK: u32 = 0x10;
    let code = [
        bpf(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, TCP_FLAGS),
        bpf(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, 0, 0, SYN | ACK),
        bpf(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 1, SYN),
        bpf(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
        bpf(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
    ];
    let prog = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `code`, both alive for the call, and its
    // length is `code`'s; the kernel copies the program before returning.
    syscall!(setsockopt(
        fd,
        libc::SOL_SOCKET,
        SO_ATTACH_FILTER,
        (&raw const prog).cast(),
        mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
    ))?;
    Ok(())
}

fn bpf(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

fn set_int_opt(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a live `c_int` and the length is its size;
    // setsockopt only reads it.
    syscall!(setsockopt(
        fd.as_raw_fd(),
        level,
        name,
        (&raw const value).cast(),
        mem::size_of::<libc::c_int>() as libc::socklen_t,
    ))?;
    Ok(())
}

/// Encodes `addr` as the C structure `bind(2)` takes.
fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data for which all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// A hint for the operator mistakes behind common bind errors.
fn bind_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EADDRINUSE) => {
            "; a process that did not set SO_REUSEPORT (or that runs as another user) holds this address"
        }
        Some(libc::EADDRNOTAVAIL) => "; no local interface has this address",
        Some(libc::EACCES) => "; ports below 1024 need privileges",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::Marks;

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
        marks.mark_all();
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
    }
}
