//! A listening socket the service manager passed: checked before it is
//! used, and made ready without changing what its other holders see.
//!
//! Each descriptor must be a socket of type `SOCK_STREAM`, listening
//! (`SO_ACCEPTCONN`), and either IPv4 or IPv6 with protocol TCP
//! (`ListenStream=8080`) or Unix (`ListenStream=/run/app.sock`, or an
//! abstract `@name`). Anything else is the operator's mistake (a
//! `ListenDatagram=`, a `ListenSequentialPacket=`, `Accept=yes`, a file),
//! refused with one sentence naming the descriptor, before this process
//! listens anywhere.
//!
//! A Unix client is served as a TCP one is: reads, writes and the FIN are
//! the same calls on any stream socket ([`crate::sys::stream`]), and the
//! protocol learns it as the name of the socket it connected to
//! ([`crate::Peer`]).
//!
//! The socket is shared with every process it was passed to, and with the
//! manager, so only two settings change, both of the kind every drainport
//! sets alike: `O_NONBLOCK` (which the open file description carries for
//! every holder; systemd opens its sockets non-blocking already) and, on
//! TCP, `TCP_NODELAY` (inherited by accepted sockets, as on the sockets
//! drainport opens). The CPU tag, the backlog and the filter are left
//! alone.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use crate::activation::Passed;
use crate::peer::Address;
use crate::sys::socket::{get_int_opt, set_int_opt, set_nonblocking};
use crate::sys::{file, stream};

/// A passed socket, checked and ready to accept.
pub(crate) struct Adopted {
    pub(crate) socket: OwnedFd,
    pub(crate) addr: Address,
    /// The descriptor's number as passed, and its name.
    pub(crate) number: i32,
    pub(crate) name: String,
    /// An IPv6 socket that takes IPv4 clients too (`IPV6_V6ONLY` off, as
    /// systemd's `BindIPv6Only=both`).
    pub(crate) dual_stack: bool,
}

/// Checks that `passed` is a listening TCP or Unix stream socket and
/// makes it ready.
pub(crate) fn adopt(passed: Passed) -> io::Result<Adopted> {
    let Passed { fd, number, name } = passed;
    let what = format!("fd {number} ({name}) passed by the service manager");
    let mistake =
        |why: String| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} {why}"));
    let raw = fd.as_fd();
    let st = file::stat(raw).map_err(|e| mistake(format!("cannot be examined: {e}")))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(mistake(
            "is not a socket; drainport takes listening stream sockets (ListenStream=)".into(),
        ));
    }
    let opt = |name| get_int_opt(raw, libc::SOL_SOCKET, name);
    let domain = opt(libc::SO_DOMAIN).map_err(|e| mistake(format!("cannot be examined: {e}")))?;
    let tcp = match domain {
        libc::AF_INET | libc::AF_INET6 => true,
        libc::AF_UNIX => false,
        other => {
            return Err(mistake(format!(
                "is a socket of address family {other}, not IPv4, IPv6 or Unix"
            )));
        }
    };
    let addr = stream::local_name(raw).map_err(|e| mistake(format!("has no address ({e})")))?;
    let ty = opt(libc::SO_TYPE)?;
    if ty != libc::SOCK_STREAM {
        let kind = match ty {
            libc::SOCK_DGRAM => "a datagram socket (ListenDatagram=)",
            libc::SOCK_SEQPACKET => "a sequential packet socket (ListenSequentialPacket=)",
            _ => "not a stream socket",
        };
        return Err(mistake(format!(
            "is {kind} on {addr}; drainport serves stream sockets (ListenStream=)"
        )));
    }
    if tcp && opt(libc::SO_PROTOCOL)? != libc::IPPROTO_TCP {
        return Err(mistake(
            "is a stream socket of another protocol than TCP".into(),
        ));
    }
    if opt(libc::SO_ACCEPTCONN)? != 1 {
        return Err(mistake(
            "is not listening (a connection, as Accept=yes passes?); drainport takes \
             listening sockets (Accept=no)"
                .into(),
        ));
    }
    let dual_stack =
        domain == libc::AF_INET6 && get_int_opt(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)? == 0;
    set_nonblocking(raw)?;
    if tcp && get_int_opt(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY)? == 0 {
        set_int_opt(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    }
    Ok(Adopted {
        socket: fd,
        addr,
        number,
        name,
        dual_stack,
    })
}
