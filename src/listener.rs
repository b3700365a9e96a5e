//! The shared listening socket: made by hand so it can join a `SO_REUSEPORT`
//! group, and retired at drain time without resetting a connection.
//!
//! # Why retirement takes three steps
//!
//! The kernel spreads new connections over every socket in a `SO_REUSEPORT`
//! group. Closing one of them resets the connections waiting in its accept
//! queue and the handshakes still in flight on it, unless
//! `net.ipv4.tcp_migrate_req` is 1 (Linux 5.14+), which hands them to a
//! sibling. drainport loses none with either setting:
//!
//! 1. [`Listener::refuse_syns`] attaches a classic BPF filter that drops bare
//!    SYN segments. New clients are no longer admitted here; their SYN is
//!    retransmitted about a second later and lands on a sibling, because by
//!    then this socket has left the group. Handshakes already in flight
//!    complete, since their final ACK still passes the filter.
//! 2. The server keeps accepting until the queue is empty and a grace period
//!    has passed for in-flight handshakes.
//! 3. It closes the socket, which now holds nothing to reset.

use std::io;
use std::mem;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use mio::net::{TcpListener, TcpStream};

use crate::sys::syscall;

/// `SO_ATTACH_FILTER` from `<asm-generic/socket.h>`; not exported by libc for glibc.
const SO_ATTACH_FILTER: libc::c_int = 26;

/// A listening socket in a `SO_REUSEPORT` group.
pub(crate) struct Listener {
    socket: TcpListener,
    addr: SocketAddr,
}

impl Listener {
    /// Opens a non-blocking, close-on-exec listener with `SO_REUSEADDR` and
    /// `SO_REUSEPORT`, so that sibling processes can bind the same address.
    pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> io::Result<Listener> {
        Self::open(addr, backlog).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot listen on {addr}: {err}{}", bind_hint(&err)),
            )
        })
    }

    fn open(addr: SocketAddr, backlog: u32) -> io::Result<Listener> {
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
        let (storage, len) = sockaddr(&addr);
        syscall!(bind(
            fd.as_raw_fd(),
            (&raw const storage).cast::<libc::sockaddr>(),
            len
        ))?;
        let backlog = libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX);
        syscall!(listen(fd.as_raw_fd(), backlog))?;
        let socket = TcpListener::from_std(StdListener::from(fd));
        let addr = socket.local_addr()?;
        Ok(Listener { socket, addr })
    }

    /// The address actually bound (with the real port when 0 was asked for).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        self.socket.accept()
    }

    /// Step 1 of retirement: drop every bare SYN (SYN set, ACK clear) sent to
    /// this socket, so that no new handshake starts here.
    ///
    /// A socket filter on a TCP socket sees the segment from its TCP header
    /// on, so byte 13 holds the flags.
    pub(crate) fn refuse_syns(&self) -> io::Result<()> {
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
        syscall!(setsockopt(
            self.socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_FILTER,
            (&raw const prog).cast(),
            mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        ))?;
        Ok(())
    }
}

impl mio::event::Source for Listener {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.socket.register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.socket.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.socket.deregister(registry)
    }
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
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
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
