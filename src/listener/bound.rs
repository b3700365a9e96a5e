//! The sockets a process opens for itself: one per online CPU on an
//! address, made by hand so that they can join the port's `SO_REUSEPORT`
//! group and carry a CPU tag, and the classic BPF filter that drops bare
//! SYNs where the process may attach it.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::sys::socket::{self, SO_DETACH_FILTER, SO_INCOMING_CPU, set_int_opt};
/// The tag that matches no CPU: such a listener is chosen only when no
/// listener in the group carries the SYN's CPU.
pub(crate) const NO_CPU: libc::c_int = -1;

/// Opens a non-blocking, close-on-exec socket with `SO_REUSEADDR`,
/// `SO_REUSEPORT` and the CPU tag `cpu`, bound to `addr` but not yet
/// listening, so that sibling processes can bind the same address and the
/// group steers by CPU. Returns it with the address it got (the real port
/// when 0 was asked for).
pub(crate) fn open(addr: SocketAddr, cpu: libc::c_int) -> io::Result<(OwnedFd, SocketAddr)> {
    open_tagged(addr, cpu).map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("cannot listen on {addr}: {err}{}", bind_hint(&err)),
        )
    })
}

fn open_tagged(addr: SocketAddr, cpu: libc::c_int) -> io::Result<(OwnedFd, SocketAddr)> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let fd = socket::tcp(domain, true)?;
    let raw = fd.as_fd();
    set_int_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    set_int_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    if domain == libc::AF_INET6 {
        // `[::]:port` then means IPv6 only, as the address says, instead of
        // also claiming the IPv4 port.
        set_int_opt(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    // Accepted sockets inherit TCP_NODELAY from the listener, which saves
    // a setsockopt per accept. Replies are written whole, so Nagle's
    // algorithm could only delay them.
    set_int_opt(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    // Tagged before listen(2), so the socket joins the group already
    // carrying its CPU and never takes another CPU's SYN while a
    // sibling carries that CPU's tag.
    set_int_opt(raw, libc::SOL_SOCKET, SO_INCOMING_CPU, cpu)?;
    socket::bind(raw, &addr)?;
    let addr = socket::local_addr(raw)?;
    Ok((fd, addr))
}

/// Sets the CPU tag of a listener: `NO_CPU` takes it out of its group's
/// selection by CPU.
pub(crate) fn tag(socket: BorrowedFd<'_>, cpu: libc::c_int) -> io::Result<()> {
    set_int_opt(socket, libc::SOL_SOCKET, SO_INCOMING_CPU, cpu)
}

/// Whether this process may attach a socket filter to a TCP socket, tried
/// on a socket of its own that never listens.
pub(crate) fn filter_permitted() -> bool {
    let Ok(fd) = socket::tcp(libc::AF_INET, false) else {
        return false;
    };
    attach_syn_filter(fd.as_fd()).is_ok()
}

/// Attaches a classic BPF filter that drops every bare SYN (SYN set, ACK
/// clear), so that no new handshake starts on `fd`; the final ACKs of
/// handshakes in flight still pass.
///
/// A socket filter on a TCP socket sees the segment from its TCP header on,
/// so byte 13 holds the flags.
pub(crate) fn attach_syn_filter(fd: BorrowedFd<'_>) -> io::Result<()> {
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
    socket::attach_filter(fd, &code)
}

/// Takes off the socket filter on `fd`, if one is attached. Needs no
/// privilege.
pub(crate) fn detach_filter(fd: BorrowedFd<'_>) -> io::Result<()> {
    // The value is not read, but the kernel wants an int's worth.
    match set_int_opt(fd, libc::SOL_SOCKET, SO_DETACH_FILTER, 0) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
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
