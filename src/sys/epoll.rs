//! Listeners added to and taken out of mio's epoll set by hand.
//!
//! Listeners are added here rather than through mio so that both kinds are
//! added and removed the same way: mio has no exclusive registration, and
//! its debug builds refuse to deregister what they did not register. The
//! epoll set is mio's, known by its number (`Registry` gives no borrowed
//! descriptor); a wrong number is an error from the kernel, never memory
//! touched.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// Adds `fd` to the epoll set `epoll` under `token`, edge-triggered and for
/// reading, as mio registers a source. `exclusive` adds `EPOLLEXCLUSIVE`:
/// of the epoll sets that watch one socket and sleep in `epoll_wait`, a new
/// connection then wakes one instead of all (epoll(7)).
pub(crate) fn add(
    epoll: RawFd,
    fd: BorrowedFd<'_>,
    token: usize,
    exclusive: bool,
) -> io::Result<()> {
    let mut events = libc::EPOLLIN | libc::EPOLLET;
    if exclusive {
        events |= libc::EPOLLEXCLUSIVE;
    }
    let mut event = libc::epoll_event {
        events: events as u32,
        // What mio reads back as the event's token.
        u64: token as u64,
    };
    // SAFETY: `event` is a live epoll_event for the call; the kernel copies it.
    syscall!(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut event) })?;
    Ok(())
}

/// Takes `fd` out of the epoll set `epoll`.
pub(crate) fn delete(epoll: RawFd, fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: EPOLL_CTL_DEL ignores the event pointer, which may be null.
    syscall!(unsafe {
        libc::epoll_ctl(
            epoll,
            libc::EPOLL_CTL_DEL,
            fd.as_raw_fd(),
            std::ptr::null_mut(),
        )
    })?;
    Ok(())
}
