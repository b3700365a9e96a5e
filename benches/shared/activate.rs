//! Passing listening sockets to a child as a service manager does
//! (`sd_listen_fds(3)`): the sockets at descriptors 3, 4, …, and
//! `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID` in its environment. The
//! caller is the long-lived holder: it keeps the sockets for as long as it
//! lives, as systemd does, whatever its children do.
//!
//! `LISTEN_PID` must be the pid of the program that reads it, which is not
//! known before the fork; so the child runs through [`LISTEN_PID_SHELL`], a
//! shell that sets it to its own pid and then execs the rest of its
//! arguments, which keeps the pid (as `setpriv` does too).
//!
//! Used by the tests (`tests/it/activation.rs`), the spread benchmark and
//! the delay bed.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// A command prefix that runs the rest of its arguments with `LISTEN_PID`
/// set to their pid.
pub const LISTEN_PID_SHELL: [&str; 4] = [
    "sh",
    "-c",
    "LISTEN_PID=$$; export LISTEN_PID; exec \"$@\"",
    "sh",
];

/// The most descriptors one child is given here.
const MAX_FDS: usize = 16;

/// The backlog a socket unit gives by default (`Backlog=`: `SOMAXCONN`,
/// which the kernel caps at `net.core.somaxconn`).
pub const BACKLOG: libc::c_int = 4096;

/// A listening TCP socket on `addr` as a socket unit makes one
/// (`ListenStream=`): `SO_REUSEADDR`, no `SO_REUSEPORT`, a backlog of
/// [`BACKLOG`].
pub fn listening_socket(addr: SocketAddr) -> io::Result<OwnedFd> {
    let fd = OwnedFd::from(TcpListener::bind(addr)?);
    // listen(2) again on a listening socket sets its backlog.
    // SAFETY: a socket this function owns.
    if unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&fd), BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Arranges for `cmd`'s child to get `fds` as descriptors 3, 4, …, with
/// `LISTEN_FDS` and, when given, `LISTEN_FDNAMES`. `cmd` must run its
/// program through [`LISTEN_PID_SHELL`] (after `setpriv`, or before: both
/// exec in place). The caller keeps `fds` open until the child started.
pub fn pass(cmd: &mut Command, fds: &[RawFd], names: Option<&str>) {
    assert!(fds.len() <= MAX_FDS, "at most {MAX_FDS} descriptors");
    cmd.env("LISTEN_FDS", fds.len().to_string());
    match names {
        Some(names) => cmd.env("LISTEN_FDNAMES", names),
        None => cmd.env_remove("LISTEN_FDNAMES"),
    };
    let mut sources = [0 as RawFd; MAX_FDS];
    sources[..fds.len()].copy_from_slice(fds);
    let n = fds.len();
    // SAFETY: the closure only makes async-signal-safe calls (fcntl, dup2)
    // on descriptors, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // First every source out of the way of 3..3+n, then each into
            // place: a source already at 3 would otherwise be overwritten.
            let mut moved = [0 as RawFd; MAX_FDS];
            for i in 0..n {
                let fd = libc::fcntl(sources[i], libc::F_DUPFD_CLOEXEC, 3 + n as RawFd);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                moved[i] = fd;
            }
            for (i, &fd) in moved[..n].iter().enumerate() {
                // dup2 leaves the copy without FD_CLOEXEC: it survives exec.
                if libc::dup2(fd, 3 + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The address a socket is bound to.
pub fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    TcpListener::from(fd.try_clone()?).local_addr()
}
