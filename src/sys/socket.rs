//! TCP sockets and their options: made by hand (for the options std does
//! not set before `bind`), bound, listening, connected, asked how many
//! finished connections wait, and given a socket filter.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `SO_INCOMING_CPU` from `<asm-generic/socket.h>`; not exported by libc for glibc.
pub(crate) const SO_INCOMING_CPU: libc::c_int = 49;
/// `SO_ATTACH_FILTER` from `<asm-generic/socket.h>`; not exported by libc for glibc.
pub(crate) const SO_ATTACH_FILTER: libc::c_int = 26;
/// `SO_DETACH_FILTER` from `<asm-generic/socket.h>`; not exported by libc for glibc.
pub(crate) const SO_DETACH_FILTER: libc::c_int = 27;

/// A new close-on-exec TCP socket of `domain` (`AF_INET`, `AF_INET6`),
/// non-blocking if asked.
pub(crate) fn tcp(domain: libc::c_int, nonblocking: bool) -> io::Result<OwnedFd> {
    let mut ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    if nonblocking {
        ty |= libc::SOCK_NONBLOCK;
    }
    // SAFETY: socket(2) takes no memory.
    let fd = syscall!(unsafe { libc::socket(domain, ty, 0) })?;
    // SAFETY: `socket` just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads an integer socket option.
pub(crate) fn get_int_opt(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live for the call, and `len` is the
    // size of `value`, which getsockopt writes at most.
    syscall!(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// Sets an integer socket option.
pub(crate) fn set_int_opt(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a live `c_int` and the length is its size;
    // setsockopt only reads it.
    syscall!(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Binds `fd` to `addr`.
pub(crate) fn bind(fd: BorrowedFd<'_>, addr: &SocketAddr) -> io::Result<()> {
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` is a live sockaddr_storage holding a sockaddr of
    // `len` bytes, which is no longer than the storage; bind only reads it.
    syscall!(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const storage).cast::<libc::sockaddr>(),
            len,
        )
    })?;
    Ok(())
}

/// Starts connecting `fd` to `addr`. On a non-blocking socket a connect
/// still under way is the error `EINPROGRESS`.
pub(crate) fn connect(fd: BorrowedFd<'_>, addr: &SocketAddr) -> io::Result<()> {
    let (storage, len) = sockaddr(addr);
    // SAFETY: as in `bind`; connect only reads the address.
    syscall!(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&raw const storage).cast::<libc::sockaddr>(),
            len,
        )
    })?;
    Ok(())
}

/// Makes `fd` listen with `backlog`; on a listening socket, changes only
/// the backlog.
pub(crate) fn listen(fd: BorrowedFd<'_>, backlog: libc::c_int) -> io::Result<()> {
    // SAFETY: listen(2) takes no memory.
    syscall!(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(())
}

/// The address `fd` is bound to.
pub(crate) fn local_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data for which all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` are live, and `len` is the storage's
    // size, which getsockname writes at most.
    syscall!(unsafe { libc::getsockname(fd.as_raw_fd(), (&raw mut storage).cast(), &mut len) })?;
    ip_of(&storage).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))
}

/// The IP address and port in `storage`, as the kernel wrote it; `None`
/// for another family.
pub(super) fn ip_of(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in, which the storage is
            // large and aligned enough to hold.
            let sin = unsafe { (&raw const *storage).cast::<libc::sockaddr_in>().read() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for a sockaddr_in6.
            let sin6 = unsafe { (&raw const *storage).cast::<libc::sockaddr_in6>().read() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// How many finished connections wait in a listener's accept queue:
/// `tcpi_unacked` of a listening socket's `TCP_INFO` is its
/// `sk_ack_backlog`.
pub(crate) fn accept_queue_len(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: all-zero is a valid tcp_info.
    let mut info: libc::tcp_info = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are live, and `len` is `info`'s size, which
    // getsockopt writes at most.
    syscall!(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    })?;
    Ok(info.tcpi_unacked)
}

/// Attaches the classic BPF `program` to `fd` as its socket filter.
pub(crate) fn attach_filter(fd: BorrowedFd<'_>, program: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `program`, both alive for the call, and its
    // length is `program`'s; the kernel copies the program before
    // returning and never writes through the pointer.
    syscall!(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_FILTER,
            (&raw const prog).cast(),
            mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Makes `fd` non-blocking, if it is not already. The flag belongs to the
/// open file description, so every holder of a shared socket sees it.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL reads the descriptor's flags.
    let flags = syscall!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: F_SETFL sets them; no memory is passed.
        syscall!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    }
    Ok(())
}

/// Encodes `addr` as the C structure `bind(2)` and `connect(2)` take.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn bound_where_asked_and_read_back() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let domain = if addr.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            };
            let Ok(fd) = tcp(domain, true) else { continue };
            if bind(fd.as_fd(), &addr).is_err() {
                continue; // no IPv6 loopback here
            }
            let got = local_addr(fd.as_fd()).unwrap();
            assert_eq!(got.ip(), addr.ip());
            assert_ne!(got.port(), 0);
            listen(fd.as_fd(), 4).unwrap();
            assert_eq!(accept_queue_len(fd.as_fd()).unwrap(), 0);
            let client = std::net::TcpStream::connect(got).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while accept_queue_len(fd.as_fd()).unwrap() == 0 {
                assert!(std::time::Instant::now() < deadline, "never queued");
                std::thread::yield_now();
            }
            drop(client);
        }
    }
}
