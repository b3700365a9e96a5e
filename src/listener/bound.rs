//! The sockets a process opens for itself: one per online CPU on an
//! address, made by hand so that they can join the port's `SO_REUSEPORT`
//! group and carry a CPU tag, and the classic BPF filter that drops bare
//! SYNs where the process may attach it.

use std::io;
use std::mem;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use mio::net::TcpListener;

use crate::steer::SO_INCOMING_CPU;
use crate::sys::{set_int_opt, syscall};

/// `SO_ATTACH_FILTER` from `<asm-generic/socket.h>`; not exported by libc for glibc.
pub(crate) const SO_ATTACH_FILTER: libc::c_int = 26;
/// `SO_DETACH_FILTER` from `<asm-generic/socket.h>`; not exported by libc for glibc.
const SO_DETACH_FILTER: libc::c_int = 27;
/// The tag that matches no CPU: such a listener is chosen only when no
/// listener in the group carries the SYN's CPU.
pub(crate) const NO_CPU: libc::c_int = -1;

/// Opens a non-blocking, close-on-exec socket with `SO_REUSEADDR`,
/// `SO_REUSEPORT` and the CPU tag `cpu`, bound to `addr` but not yet
/// listening, so that sibling processes can bind the same address and the
/// group steers by CPU. Returns it with the address it got (the real port
/// when 0 was asked for).
pub(crate) fn open(addr: SocketAddr, cpu: libc::c_int) -> io::Result<(TcpListener, SocketAddr)> {
    open_tagged(addr, cpu).map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("cannot listen on {addr}: {err}{}", bind_hint(&err)),
        )
    })
}

fn open_tagged(addr: SocketAddr, cpu: libc::c_int) -> io::Result<(TcpListener, SocketAddr)> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    let fd = syscall!(socket(domain, ty, 0))?;
    // SAFETY: `socket` just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();
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
    let (storage, len) = sockaddr(&addr);
    // SAFETY: `storage` is a live sockaddr_storage holding a sockaddr of
    // `len` bytes, which is no longer than the storage; bind only reads it.
    syscall!(bind(
        raw,
        (&raw const storage).cast::<libc::sockaddr>(),
        len
    ))?;
    let socket = TcpListener::from_std(StdListener::from(fd));
    let addr = socket.local_addr()?;
    Ok((socket, addr))
}

/// Sets the CPU tag of a listener: `NO_CPU` takes it out of its group's
/// selection by CPU.
pub(crate) fn tag(socket: &TcpListener, cpu: libc::c_int) -> io::Result<()> {
    set_int_opt(socket.as_raw_fd(), libc::SOL_SOCKET, SO_INCOMING_CPU, cpu)
}

/// Whether this process may attach a socket filter to a TCP socket, tried
/// on a socket of its own that never listens.
pub(crate) fn filter_permitted() -> bool {
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
pub(crate) fn attach_syn_filter(fd: libc::c_int) -> io::Result<()> {
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

/// Takes off the socket filter on `fd`, if one is attached. Needs no
/// privilege.
pub(crate) fn detach_filter(fd: libc::c_int) -> io::Result<()> {
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

/// Encodes `addr` as the C structure `bind(2)` takes.
pub(crate) fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
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
