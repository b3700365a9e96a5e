//! The Unix socket calls of the claims and the control channel that std
//! does not offer on stable Rust: binding an abstract name, connecting to
//! one with its timeouts set first, accepting without blocking, asking who
//! the peer is (`SO_PEERCRED`), and passing descriptors (`SCM_RIGHTS`).
//!
//! Contracts:
//! - A descriptor that arrives is owned at once ([`OwnedFd`]) and
//!   close-on-exec (`MSG_CMSG_CLOEXEC`), so an early return closes it and
//!   no child inherits it.
//! - A message whose descriptors did not all fit (`MSG_CTRUNC`: the
//!   receiver's descriptor limit, or a buffer too small) is an error, never
//!   a shorter list; the descriptors that did arrive are closed.
//! - At most [`MAX_FDS`] descriptors go in one message, the kernel's
//!   `SCM_MAX_FD`: more would fail with `EINVAL`.

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// The most descriptors one message carries: `SCM_MAX_FD` in
/// `include/net/scm.h`.
pub(crate) const MAX_FDS: usize = 253;

/// Room for one `SCM_RIGHTS` header and [`MAX_FDS`] descriptors: 16 bytes of
/// header and 1,012 of descriptors, aligned to 8, on 64-bit Linux; kept
/// in `u64`s for the header's alignment.
const CONTROL_WORDS: usize = 160;

/// Who is at the other end of a connected Unix socket, as the kernel
/// recorded it when the connection was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    pub(crate) pid: u32,
    pub(crate) uid: u32,
}

/// The credentials of the process at the other end of `socket`: the one
/// that connected, for an accepted socket; the one that called `listen`,
/// for a connected one.
pub(crate) fn peer(socket: BorrowedFd<'_>) -> io::Result<Peer> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are live for the call, and `len` is the size
    // of `cred`, which getsockopt writes at most.
    syscall!(unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    })?;
    Ok(Peer {
        pid: u32::try_from(cred.pid).unwrap_or(0),
        uid: cred.uid,
    })
}

/// A new close-on-exec Unix stream socket, non-blocking if asked.
pub(crate) fn stream(nonblocking: bool) -> io::Result<OwnedFd> {
    let mut ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    if nonblocking {
        ty |= libc::SOCK_NONBLOCK;
    }
    // SAFETY: socket(2) takes no memory.
    let fd = syscall!(unsafe { libc::socket(libc::AF_UNIX, ty, 0) })?;
    // SAFETY: `socket` just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The address of the abstract name `name` (the bytes after the leading
/// NUL), and its length; `InvalidInput` for a name too long to hold.
fn abstract_addr(name: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut sun: libc::sockaddr_un = unsafe { mem::zeroed() };
    if name.len() >= sun.sun_path.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // sun_path[0] stays 0: an abstract name.
    for (dst, &src) in sun.sun_path[1..].iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    let len = mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    Ok((sun, len as libc::socklen_t))
}

/// Binds `socket` to the abstract name `name`. A failed bind leaves the
/// socket unbound, free to try another name.
pub(crate) fn bind_abstract(socket: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let (sun, len) = abstract_addr(name)?;
    // SAFETY: `sun` is a live sockaddr_un and `len` is within it; bind
    // only reads it.
    syscall!(unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const sun).cast::<libc::sockaddr>(),
            len,
        )
    })?;
    Ok(())
}

/// Connects a blocking, close-on-exec Unix stream socket to the abstract
/// name `name` (the bytes after the leading NUL), with `timeout` on every
/// send and receive, the connect included: a listener whose backlog is
/// full makes `connect` wait, and never longer than that.
pub(crate) fn connect_abstract(name: &[u8], timeout: Duration) -> io::Result<OwnedFd> {
    let socket = stream(false)?;
    let tv = libc::timeval {
        tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_usec: timeout.subsec_micros().into(),
    };
    for option in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: `tv` is a live timeval and the length is its size;
        // setsockopt only reads it.
        syscall!(unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const tv).cast(),
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        })?;
    }
    connect(socket.as_fd(), name)?;
    Ok(socket)
}

/// A non-blocking, close-on-exec Unix stream socket connected to the
/// abstract name `name`. Connecting to a listening Unix socket does not
/// wait for the other side: it succeeds at once, or fails with `EAGAIN`
/// when the backlog is full.
pub(crate) fn connect_abstract_nonblocking(name: &[u8]) -> io::Result<OwnedFd> {
    let socket = stream(true)?;
    connect(socket.as_fd(), name)?;
    Ok(socket)
}

fn connect(socket: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let (sun, len) = abstract_addr(name)?;
    // SAFETY: `sun` is a live sockaddr_un and `len` is within it; connect
    // only reads it.
    syscall!(unsafe {
        libc::connect(
            socket.as_raw_fd(),
            (&raw const sun).cast::<libc::sockaddr>(),
            len,
        )
    })?;
    Ok(())
}

/// Makes `socket` listen with `backlog`, and makes it non-blocking (for
/// `accept`, which the event loop calls).
pub(crate) fn listen_nonblocking(socket: BorrowedFd<'_>, backlog: i32) -> io::Result<()> {
    super::socket::set_nonblocking(socket)?;
    super::socket::listen(socket, backlog)
}

/// Accepts one connection, non-blocking and close-on-exec, without its
/// address (`SO_PEERCRED` says who it is).
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: null address and length pointers are allowed: the peer's
    // address is not asked for.
    let fd = syscall!(unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: `accept4` just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `data` with `fds` attached (none for a plain send), in one
/// message, without raising `SIGPIPE`. Returns how many bytes went; the
/// descriptors go with the first of them. More than [`MAX_FDS`] is an
/// error.
pub(crate) fn send(socket: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} descriptors in one message, more than {MAX_FDS}",
                fds.len()
            ),
        ));
    }
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: all-zero is a valid msghdr: no name, no iovec, no control.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let bytes = mem::size_of_val(fds);
        // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes.
        let (space, len) =
            unsafe { (libc::CMSG_SPACE(bytes as u32), libc::CMSG_LEN(bytes as u32)) };
        assert!(
            space as usize <= mem::size_of_val(&control),
            "control buffer too small"
        );
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as usize;
        // SAFETY: `msg` points at `control`, which holds `space` bytes, so
        // the first header and `bytes` of data after it are within it;
        // CMSG_FIRSTHDR returns that first header, aligned for cmsghdr as
        // the u64 buffer is; the descriptors are copied unaligned.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = len as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), bytes);
        }
    }
    let flags = libc::MSG_NOSIGNAL;
    // SAFETY: `msg` points at `iov` (which points at `data`) and at
    // `control`, all alive for the call; sendmsg only reads them.
    let sent = syscall!(unsafe { libc::sendmsg(socket.as_raw_fd(), &raw const msg, flags) })?;
    Ok(sent as usize)
}

/// Receives into `buf`, and the descriptors that came with those bytes
/// into `fds`. Returns how many bytes came (0 at the end of the stream).
pub(crate) fn recv(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid msghdr: no name, no iovec, no control.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control);
    // SAFETY: `msg` points at `iov` (which points at `buf`) and at
    // `control`, with their real lengths, all alive for the call.
    let got = syscall!(unsafe {
        libc::recvmsg(socket.as_raw_fd(), &raw mut msg, libc::MSG_CMSG_CLOEXEC)
    })?;
    let before = fds.len();
    // SAFETY: the kernel filled `msg.msg_controllen` bytes of `control`
    // with well-formed headers; CMSG_FIRSTHDR and CMSG_NXTHDR stay within
    // them, and each SCM_RIGHTS header's data holds `cmsg_len - CMSG_LEN(0)`
    // bytes of descriptors, read unaligned. Each descriptor is new to this
    // process and owned by nothing else.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let bytes = (*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / mem::size_of::<RawFd>() {
                    let fd = data
                        .add(i * mem::size_of::<RawFd>())
                        .cast::<RawFd>()
                        .read_unaligned();
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        // Close what did arrive: the message is refused whole.
        fds.truncate(before);
        return Err(io::Error::other(
            "descriptors were cut from the message (the descriptor limit?)",
        ));
    }
    Ok(got as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn descriptors_travel_with_their_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let (x, _y) = UnixStream::pair().unwrap();
        let sent = send(a.as_fd(), b"two\n", &[x.as_raw_fd(), x.as_raw_fd()]).unwrap();
        assert_eq!(sent, 4);
        let mut buf = [0u8; 16];
        let mut fds = Vec::new();
        let n = recv(b.as_fd(), &mut buf, &mut fds).unwrap();
        assert_eq!(&buf[..n], b"two\n");
        assert_eq!(fds.len(), 2);
        // Each is a new descriptor for the same socket, close-on-exec.
        for fd in &fds {
            assert_ne!(fd.as_raw_fd(), x.as_raw_fd());
            // SAFETY: F_GETFD reads the flags of a descriptor we own.
            let flags = syscall!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) }).unwrap();
            assert_ne!(flags & libc::FD_CLOEXEC, 0);
        }
        // Plain bytes carry none.
        send(a.as_fd(), b"x", &[]).unwrap();
        let n = recv(b.as_fd(), &mut buf, &mut fds).unwrap();
        assert_eq!((n, fds.len()), (1, 2));
        drop(a);
        assert_eq!(recv(b.as_fd(), &mut buf, &mut fds).unwrap(), 0);
    }

    #[test]
    fn at_most_scm_max_fd_in_one_message() {
        let (a, b) = UnixStream::pair().unwrap();
        let many = vec![a.as_raw_fd(); MAX_FDS];
        send(a.as_fd(), b"m", &many).unwrap();
        let mut fds = Vec::new();
        recv(b.as_fd(), &mut [0u8; 4], &mut fds).unwrap();
        assert_eq!(fds.len(), MAX_FDS);
        let too_many = vec![a.as_raw_fd(); MAX_FDS + 1];
        assert!(send(a.as_fd(), b"m", &too_many).is_err());
    }

    #[test]
    fn the_peer_is_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let me = peer(a.as_fd()).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.uid, crate::sys::process::euid());
    }

    #[test]
    fn connect_accept_and_refusal() {
        let name = format!("drainport-fdpass-test|{}", std::process::id());
        let addr =
            <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
                name.as_bytes(),
            )
            .unwrap();
        let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        listen_nonblocking(listener.as_fd(), 4).unwrap();
        let e = accept(listener.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let client = connect_abstract(name.as_bytes(), Duration::from_secs(1)).unwrap();
        let server = accept(listener.as_fd()).unwrap();
        assert_eq!(peer(server.as_fd()).unwrap().pid, std::process::id());
        assert_eq!(peer(client.as_fd()).unwrap().pid, std::process::id());
        drop(listener);
        let e = connect_abstract(name.as_bytes(), Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }
}
