//! Files and directories, reached from a directory descriptor held open
//! and never through a link (the pid file's `*at` calls), and the
//! descriptors a service manager passes at start.

use std::ffi::{CStr, OsString};
use std::fs::File;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// What `fstat` says of `fd`.
pub(crate) fn stat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { mem::zeroed() };
    // SAFETY: `st` is live for the call.
    syscall!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// The entry `name` in `dir` itself, not what a link there points to.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value for fstatat to overwrite.
    let mut st: libc::stat = unsafe { mem::zeroed() };
    // SAFETY: `name` is NUL-terminated and `st` is live for the call.
    syscall!(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// The root directory, opened to walk from (`O_PATH`).
pub(crate) fn open_root() -> io::Result<OwnedFd> {
    // SAFETY: the path is a NUL-terminated literal.
    let fd = syscall!(unsafe {
        libc::open(
            c"/".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the directory `name` in `dir` (`O_PATH`), never through a link: a
/// name that became a link since it was looked at fails with `ELOOP` or
/// `ENOTDIR`.
pub(crate) fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated.
    let fd = syscall!(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Where the link `name` in `dir` points.
pub(crate) fn read_link_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `name` is NUL-terminated, and readlinkat writes at most
    // `buf.len()` bytes into `buf`.
    let n = syscall!(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n as usize);
    Ok(PathBuf::from(OsString::from_vec(buf)))
}

/// Creates the file `name` in `dir` for writing, with `mode` (less the
/// umask). With `O_EXCL`, a name that exists, even as a dangling link, is
/// never opened (`AlreadyExists`), and with `O_NOFOLLOW` neither is a link.
pub(crate) fn create_new_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: libc::mode_t,
) -> io::Result<File> {
    // SAFETY: `name` is NUL-terminated.
    let fd = syscall!(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            libc::c_uint::from(mode),
        )
    })?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Opens the file `name` in `dir` for reading, never through a link, and
/// without waiting (`O_NONBLOCK`: a FIFO there does not block the open) or
/// taking a terminal.
pub(crate) fn open_read_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<File> {
    // SAFETY: `name` is NUL-terminated.
    let fd = syscall!(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Renames `from` to `to`, both in `dir`; whatever is at `to`, a link
/// included, is replaced, not followed.
pub(crate) fn rename_at(dir: BorrowedFd<'_>, from: &CStr, to: &CStr) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated.
    syscall!(unsafe {
        libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr())
    })?;
    Ok(())
}

/// Removes the entry `name` from `dir` (a link itself, never its target).
pub(crate) fn unlink_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated.
    syscall!(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) })?;
    Ok(())
}

/// Takes descriptor `number`, which the service manager passed to this
/// process alone to own (`sd_listen_fds(3)`), and makes it close-on-exec so
/// that no program this process starts inherits it. A number that is not
/// open is an error, found before it is owned, so that nothing closes a
/// stranger's.
pub(crate) fn take_passed(number: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD reads the descriptor's flags; on a number that is
    // not open it fails with EBADF.
    let flags = syscall!(unsafe { libc::fcntl(number, libc::F_GETFD) })?;
    // SAFETY: the descriptor is open, and the activation protocol hands it
    // to this process alone to own; nothing else in it owns the number.
    let fd = unsafe { OwnedFd::from_raw_fd(number) };
    // SAFETY: F_SETFD on a descriptor this process now owns.
    syscall!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags | libc::FD_CLOEXEC) })?;
    Ok(fd)
}
