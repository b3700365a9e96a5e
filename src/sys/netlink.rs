//! The netlink socket that asks the kernel's socket diagnostics
//! (`NETLINK_SOCK_DIAG`): opened, a request sent to the kernel, a reply
//! received whole or known to be cut. What is asked and what the replies
//! mean is [`crate::sockdiag`]'s.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A close-on-exec `NETLINK_SOCK_DIAG` socket on which a receive waits at
/// most `timeout`.
pub(crate) fn sock_diag(timeout: Duration) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no memory.
    let fd = syscall!(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    })?;
    // SAFETY: `socket` just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_usec: timeout.subsec_micros().into(),
    };
    // SAFETY: the option value is a live timeval and the length is its
    // size; setsockopt only reads it.
    syscall!(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// Sends `request` to the kernel (netlink address pid 0).
pub(crate) fn send_to_kernel(fd: BorrowedFd<'_>, request: &[u8]) -> io::Result<()> {
    // SAFETY: all-zero is a valid sockaddr_nl: the kernel, pid 0.
    let mut kernel: libc::sockaddr_nl = unsafe { mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `request` and `kernel` are live for the call, with their
    // lengths; sendto only reads them.
    syscall!(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&raw const kernel).cast(),
            mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Receives one reply into `buf`: its real length, which is more than
/// `buf` holds if it was cut (`MSG_TRUNC`), and the flags the kernel set.
pub(crate) fn receive(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, libc::c_int)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid msghdr: no name, no control data.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    // MSG_TRUNC makes the call return the reply's real length, so a cut
    // shows in the count as well as in the flags.
    // SAFETY: `msg` points at one iovec over `buf`, live and writable for
    // its whole length; recvmsg writes no more than that.
    let n = syscall!(unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, libc::MSG_TRUNC) })?;
    Ok((n as usize, msg.msg_flags))
}
