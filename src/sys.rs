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
