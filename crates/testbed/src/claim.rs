//! A drainport's claim on an address as a test or a benchmark reaches it:
//! its abstract Unix name, read from `/proc/net/unix`, and a connection
//! to the control channel bound there.

use std::fmt::Display;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};

/// The abstract name (the bytes after its leading NUL, which
/// `/proc/net/unix` shows as `@`) of the claim process `pid` holds on
/// `addr`: `drainport|<addr>|<pid>.<nonce>|<service>`. The name is the
/// rest of its line, so a service with spaces is read whole.
pub fn name(pid: u32, addr: impl Display) -> Result<Vec<u8>, String> {
    let start = format!("@drainport|{addr}|{pid}.");
    let table = std::fs::read_to_string("/proc/net/unix")
        .map_err(|e| format!("read /proc/net/unix: {e}"))?;
    table
        .lines()
        .find_map(|line| {
            line.find(&start)
                .map(|at| line.as_bytes()[at + 1..].to_vec())
        })
        .ok_or_else(|| format!("no claim {start}... in /proc/net/unix"))
}

/// A blocking Unix stream connection to the abstract name `name`.
pub fn connect(name: &[u8]) -> io::Result<UnixStream> {
    UnixStream::connect_addr(&SocketAddr::from_abstract_name(name)?)
}

/// The sockaddr of the abstract name `name`, for a raw `bind` or
/// `connect` where the standard library's cannot go (between fork and
/// exec, where nothing may be allocated).
pub fn sockaddr(name: &[u8]) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    assert!(name.len() < sun.sun_path.len(), "name too long");
    for (dst, &src) in sun.sun_path[1..].iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    (sun, len as libc::socklen_t)
}
