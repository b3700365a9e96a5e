//! The few raw system calls drainport makes beyond what mio wraps.
//!
//! Every call goes through [`syscall!`], which turns the C convention of
//! returning `-1` into an `io::Error` carrying `errno`, so callers can use `?`.

use std::io;

/// Calls a libc function and maps a `-1` return to `io::Error::last_os_error()`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        #[allow(unused_unsafe)]
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the new soft limit.
///
/// Each client costs one descriptor, so the soft limit (often 1024) and not
/// memory is what caps a process first. The hard limit is the ceiling an
/// operator set on purpose, so it is taken as the budget.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim))?;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        syscall!(setrlimit(libc::RLIMIT_NOFILE, &raised))?;
        lim.rlim_cur = lim.rlim_max;
    }
    Ok(lim.rlim_cur)
}

/// Adds `fd` to the epoll set `epoll` under `token`, edge-triggered and for
/// reading, as mio registers a source. `exclusive` adds `EPOLLEXCLUSIVE`:
/// of the epoll sets that watch one socket and sleep in `epoll_wait`, a new
/// connection then wakes one instead of all (epoll(7)).
///
/// Listeners are added here rather than through mio so that both kinds are
/// added and removed the same way: mio has no exclusive registration, and
/// its debug builds refuse to deregister what they did not register.
pub(crate) fn epoll_add(
    epoll: libc::c_int,
    fd: libc::c_int,
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
    syscall!(epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event))?;
    Ok(())
}

/// Takes `fd` out of the epoll set `epoll`.
pub(crate) fn epoll_del(epoll: libc::c_int, fd: libc::c_int) -> io::Result<()> {
    // SAFETY: EPOLL_CTL_DEL ignores the event pointer, which may be null.
    syscall!(epoll_ctl(
        epoll,
        libc::EPOLL_CTL_DEL,
        fd,
        std::ptr::null_mut()
    ))?;
    Ok(())
}

/// Reads an integer socket option.
pub(crate) fn get_int_opt(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live for the call, and `len` is the
    // size of `value`, which getsockopt writes at most.
    syscall!(getsockopt(
        fd,
        level,
        name,
        (&raw mut value).cast(),
        &mut len
    ))?;
    Ok(value)
}

/// Sets an integer socket option.
pub(crate) fn set_int_opt(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a live `c_int` and the length is its size;
    // setsockopt only reads it.
    syscall!(setsockopt(
        fd,
        level,
        name,
        (&raw const value).cast(),
        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
    ))?;
    Ok(())
}
