//! Stream sockets of any family, TCP or Unix, as the loop uses them: a
//! connection accepted from a listening socket, then read, written and
//! shut down with the plain system calls, which work alike on every stream
//! socket. One type for both families keeps a client's slot a descriptor
//! (4 bytes, no tag) and its reads and writes one call each, whatever the
//! family: a TCP client pays nothing for Unix ones being possible.
//!
//! Names are read as the kernel keeps them: an IP address and port, or a
//! Unix socket's path or abstract name.

use std::ffi::OsStr;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::SocketAddr as UnixAddr;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::peer::Address;

/// A connected stream socket of any family, non-blocking and close-on-exec.
#[derive(Debug)]
pub(crate) struct StreamSocket(OwnedFd);

impl StreamSocket {
    /// Reads what the socket holds into `buf` (`recv(2)`, as std reads a
    /// `TcpStream`).
    #[inline]
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let (fd, ptr, len) = (self.0.as_raw_fd(), buf.as_mut_ptr(), buf.len());
        // SAFETY: `buf` is valid for `len` bytes of writing, of which recv
        // writes at most that many.
        let n = syscall!(unsafe { libc::recv(fd, ptr.cast(), len, 0) })?;
        Ok(n as usize)
    }

    /// Writes what the socket takes of `buf` (`send(2)` with
    /// `MSG_NOSIGNAL`, as std writes a `TcpStream`): a write to a reset
    /// connection is the error `EPIPE`, never a `SIGPIPE`, whatever the
    /// program did with that signal.
    #[inline]
    pub(crate) fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let (fd, ptr, len) = (self.0.as_raw_fd(), buf.as_ptr(), buf.len());
        // SAFETY: `buf` is valid for `len` bytes of reading, which is all
        // send reads.
        let n = syscall!(unsafe { libc::send(fd, ptr.cast(), len, libc::MSG_NOSIGNAL) })?;
        Ok(n as usize)
    }

    /// Sends a FIN: the client reads an end of input, and may go on
    /// sending.
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        // SAFETY: shutdown(2) takes no memory.
        syscall!(unsafe { libc::shutdown(self.0.as_raw_fd(), libc::SHUT_WR) })?;
        Ok(())
    }

    /// Who the client is, as the accept said (see [`crate::peer`]): its IP
    /// address, or for a Unix client the name of the socket it connected
    /// to. A system call or two: for a log line, never the hot path.
    pub(crate) fn peer(&self) -> io::Result<Address> {
        match name(self.0.as_fd(), libc::getpeername)? {
            Address::Unix(_) => name(self.0.as_fd(), libc::getsockname),
            ip => Ok(ip),
        }
    }
}

impl AsFd for StreamSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl From<OwnedFd> for StreamSocket {
    fn from(fd: OwnedFd) -> StreamSocket {
        StreamSocket(fd)
    }
}

/// Registered as mio registers its own sockets, by descriptor.
impl mio::event::Source for StreamSocket {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).register(registry, token, interest)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).reregister(registry, token, interest)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).deregister(registry)
    }
}

/// Accepts one connection from the listening socket `listener`, of any
/// family: non-blocking and close-on-exec, with the client's IP address
/// and port where it has them (`None` for a Unix client, whose own name
/// is almost always empty).
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<(StreamSocket, Option<SocketAddr>)> {
    // SAFETY: sockaddr_storage is plain data for which all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` are live, and `len` is the storage's
    // size, which accept4 writes at most.
    let fd = syscall!(unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            (&raw mut storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: `accept4` just returned this descriptor and nothing else owns it.
    let socket = StreamSocket(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok((socket, super::socket::ip_of(&storage)))
}

/// The name a listening or connected socket is bound to.
pub(crate) fn local_name(fd: BorrowedFd<'_>) -> io::Result<Address> {
    name(fd, libc::getsockname)
}

/// The name `call` (`getsockname` or `getpeername`) gives `fd`.
fn name(
    fd: BorrowedFd<'_>,
    call: unsafe extern "C" fn(RawFd, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int,
) -> io::Result<Address> {
    // SAFETY: sockaddr_storage is plain data for which all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` are live, and `len` is the storage's
    // size, which either call writes at most.
    syscall!(unsafe { call(fd.as_raw_fd(), (&raw mut storage).cast(), &mut len) })?;
    if let Some(ip) = super::socket::ip_of(&storage) {
        return Ok(Address::Ip(ip));
    }
    if libc::c_int::from(storage.ss_family) != libc::AF_UNIX {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: the kernel wrote a sockaddr_un, which the storage is large
    // and aligned enough to hold.
    let sun = unsafe { (&raw const storage).cast::<libc::sockaddr_un>().read() };
    let offset = mem::size_of::<libc::sa_family_t>();
    let used = (len as usize)
        .saturating_sub(offset)
        .min(sun.sun_path.len());
    let path: Vec<u8> = sun.sun_path[..used].iter().map(|&c| c as u8).collect();
    unix_addr(&path).map(Address::Unix)
}

/// A Unix socket's name from the bytes of its `sun_path` that the kernel
/// counted: empty for an unnamed socket, a NUL first for an abstract name,
/// else a path (up to its NUL, if it has one).
fn unix_addr(path: &[u8]) -> io::Result<UnixAddr> {
    match path.split_first() {
        None => UnixAddr::from_pathname(""),
        Some((0, name)) => UnixAddr::from_abstract_name(name),
        Some(_) => {
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            UnixAddr::from_pathname(OsStr::from_bytes(&path[..end]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn a_unix_client_is_read_written_and_known_by_its_listener() {
        let dir = std::env::temp_dir().join(format!("drainport-stream-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        let (server, ip) = accept(listener.as_fd()).unwrap();
        assert_eq!(ip, None);
        let peer = server.peer().unwrap();
        assert_eq!(peer.to_string(), format!("unix:{}", path.display()));
        assert_eq!(local_name(listener.as_fd()).unwrap(), peer);
        client.write_all(b"ping").unwrap();
        let mut buf = [0; 16];
        let n = server.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(server.write(b"pong").unwrap(), 4);
        server.shutdown_write().unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"pong");
        // Non-blocking: nothing to read is WouldBlock, not a wait.
        let err = server.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_tcp_client_is_known_by_its_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, ip) = accept(listener.as_fd()).unwrap();
        assert_eq!(ip, Some(client.local_addr().unwrap()));
        assert_eq!(server.peer().unwrap(), client.local_addr().unwrap());
    }

    #[test]
    fn unix_names_of_every_kind() {
        let abs = unix_addr(b"\0app").unwrap();
        assert_eq!(abs.as_abstract_name(), Some(&b"app"[..]));
        let path = unix_addr(b"/run/x.sock\0\0").unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/x.sock"))
        );
        assert!(unix_addr(b"").unwrap().is_unnamed());
    }
}
