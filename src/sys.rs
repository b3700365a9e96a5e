//! Every raw system call drainport makes beyond what std and mio wrap, as
//! small safe functions, by topic. This is the crate's only `unsafe` code:
//! each call sits in one `unsafe` block with a `SAFETY` note saying why it
//! is sound, and every other module is compiled with `deny(unsafe_code)`
//! (`lib.rs`), so the compiler keeps it that way.
//!
//! - [`socket`]: TCP sockets and their options: made, bound, listening,
//!   asked how many connections wait, given a socket filter
//! - [`stream`]: stream sockets of any family (TCP, Unix) as clients:
//!   accepted, read, written, shut down, and their names
//! - [`unix`]: Unix stream sockets under abstract names, their peer's
//!   credentials, and descriptors passed over them (`SCM_RIGHTS`)
//! - [`netlink`]: the socket diagnostics' netlink socket
//! - [`file`](mod@file): files and directories reached from a directory descriptor,
//!   never through a link; descriptors passed at start
//! - [`process`]: this process: its user, its descriptor limit, its CPU,
//!   the kernel's release, random bytes, its pidfd, its environment
//! - [`epoll`]: listeners added to and taken out of mio's epoll set
//! - [`memchr`]: the C library's vectorised byte search
//! - [`poll`]: a wait on a few descriptors, outside the loop
//!
//! Conventions (mio's and socket2's): every call that returns `-1` on
//! failure goes through `syscall!`, which turns that into an `io::Error`
//! carrying `errno`; a new descriptor is an [`OwnedFd`](std::os::fd::OwnedFd)
//! the moment the call returns, so every early return closes it; a
//! descriptor is passed in borrowed (`BorrowedFd`), so none is used after
//! it was closed.

/// Maps a libc call's `-1` return to `io::Error::last_os_error()`. The
/// caller writes the call's `unsafe` block, and its `SAFETY` note above
/// it, which clippy checks (`undocumented_unsafe_blocks`, `lib.rs`).
macro_rules! syscall {
    ($call:expr) => {{
        let res = $call;
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

pub(crate) mod epoll;
pub(crate) mod file;
pub(crate) mod netlink;
pub(crate) mod process;
pub(crate) mod socket;
pub(crate) mod stream;
pub(crate) mod unix;

/// The index of the first `needle` in `hay`, found with the C library's
/// vectorised `memchr` rather than a byte-at-a-time scan. On the hot path
/// (framing, the telnet filter): inlined, it costs what the call costs.
#[inline]
pub(crate) fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    // SAFETY: `hay` is a valid slice of `hay.len()` readable bytes, and
    // memchr reads no further; a hit points into it.
    let hit = unsafe { libc::memchr(hay.as_ptr().cast(), i32::from(needle), hay.len()) };
    if hit.is_null() {
        None
    } else {
        Some(hit as usize - hay.as_ptr() as usize)
    }
}

/// Waits at most `timeout_ms` for the events each of `fds` asks for
/// (`poll(2)`); returns how many descriptors have some. A descriptor in
/// `fds` is a number the kernel looks up, so a closed one comes back as
/// `POLLNVAL`, never as memory touched.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> std::io::Result<usize> {
    let (ptr, len) = (fds.as_mut_ptr(), fds.len() as libc::nfds_t);
    // SAFETY: `ptr` is a live array of `len` pollfd, of which poll writes
    // only the `revents`.
    let n = syscall!(unsafe { libc::poll(ptr, len, timeout_ms) })?;
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::memchr;

    #[test]
    fn memchr_finds_the_first() {
        assert_eq!(memchr(b'\n', b""), None);
        assert_eq!(memchr(b'\n', b"abc"), None);
        assert_eq!(memchr(b'\n', b"\n"), Some(0));
        assert_eq!(memchr(b'\n', b"ab\ncd\n"), Some(2));
        assert_eq!(memchr(0xff, &[1, 2, 0xff, 0xff]), Some(2));
        let long = [b"x".repeat(1000), b"\n".to_vec()].concat();
        assert_eq!(memchr(b'\n', &long), Some(1000));
    }
}
