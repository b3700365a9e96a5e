//! A listening socket the service manager passed: checked before it is
//! used, and made ready without changing what its other holders see.
//!
//! Each descriptor must be a socket, IPv4 or IPv6, of type `SOCK_STREAM`
//! and protocol TCP, and listening (`SO_ACCEPTCONN`). Anything else is the
//! operator's mistake (a `ListenDatagram=`, `Accept=yes`, a file), refused
//! with one sentence naming the descriptor, before this process listens
//! anywhere.
//!
//! Unix stream sockets, which systemd passes too, are refused: a protocol
//! learns each client as an IP address and port (`Protocol::on_connect`
//! takes a `SocketAddr`), which a Unix client has none of, and a client
//! slot holds a TCP stream.
//!
//! The socket is shared with every process it was passed to, and with the
//! manager, so only two settings change, both of the kind every drainport
//! sets alike: `O_NONBLOCK` (which the open file description carries for
//! every holder; systemd opens its sockets non-blocking already) and
//! `TCP_NODELAY` (inherited by accepted sockets, as on the sockets drainport
//! opens). The CPU tag, the backlog and the filter are left alone.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

use mio::net::TcpListener;

use crate::activation::Passed;
use crate::sys::{get_int_opt, set_int_opt, syscall};

/// A passed socket, checked and ready to accept.
pub(crate) struct Adopted {
    pub(crate) socket: TcpListener,
    pub(crate) addr: SocketAddr,
    /// The descriptor's number as passed, and its name.
    pub(crate) number: i32,
    pub(crate) name: String,
    /// An IPv6 socket that takes IPv4 clients too (`IPV6_V6ONLY` off, as
    /// systemd's `BindIPv6Only=both`).
    pub(crate) dual_stack: bool,
}

/// Checks that `passed` is a listening TCP socket and makes it ready.
pub(crate) fn adopt(passed: Passed) -> io::Result<Adopted> {
    let Passed { fd, number, name } = passed;
    let what = format!("fd {number} ({name}) passed by the service manager");
    let mistake =
        |why: String| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} {why}"));
    let raw = fd.as_raw_fd();
    // SAFETY: all-zero is a valid stat, which fstat fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    syscall!(fstat(raw, &mut st)).map_err(|e| mistake(format!("cannot be examined: {e}")))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(mistake(
            "is not a socket; drainport takes listening TCP sockets (ListenStream=)".into(),
        ));
    }
    let opt = |name| get_int_opt(raw, libc::SOL_SOCKET, name);
    let domain = opt(libc::SO_DOMAIN).map_err(|e| mistake(format!("cannot be examined: {e}")))?;
    match domain {
        libc::AF_INET | libc::AF_INET6 => {}
        libc::AF_UNIX => {
            return Err(mistake(format!(
                "is a Unix socket{}; drainport serves TCP only: a protocol learns each \
                 client by its IP address and port, which a Unix socket's client has none of",
                unix_path(fd)
            )));
        }
        other => {
            return Err(mistake(format!(
                "is a socket of address family {other}, not IPv4 or IPv6"
            )));
        }
    }
    if opt(libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err(mistake(
            "is not a stream socket (ListenDatagram=?); drainport serves TCP".into(),
        ));
    }
    if opt(libc::SO_PROTOCOL)? != libc::IPPROTO_TCP {
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
    set_nonblocking(&fd)?;
    if get_int_opt(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY)? == 0 {
        set_int_opt(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    }
    let socket = TcpListener::from_std(StdListener::from(fd));
    let addr = socket.local_addr()?;
    Ok(Adopted {
        socket,
        addr,
        number,
        name,
        dual_stack,
    })
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = syscall!(fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
    if flags & libc::O_NONBLOCK == 0 {
        syscall!(fcntl(
            fd.as_raw_fd(),
            libc::F_SETFL,
            flags | libc::O_NONBLOCK
        ))?;
    }
    Ok(())
}

/// ` at <path>` for a Unix socket bound to a path, or an abstract name.
fn unix_path(fd: OwnedFd) -> String {
    let Ok(addr) = UnixListener::from(fd).local_addr() else {
        return String::new();
    };
    if let Some(path) = addr.as_pathname() {
        return format!(" at {}", path.display());
    }
    use std::os::linux::net::SocketAddrExt;
    match addr.as_abstract_name() {
        Some(name) => format!(" at @{}", String::from_utf8_lossy(name).escape_default()),
        None => String::new(),
    }
}
