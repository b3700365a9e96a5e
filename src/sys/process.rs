//! This process and the machine it runs on: its effective user, its
//! descriptor limit, the CPU it runs on and how many are online, the
//! kernel's release, random bytes, its pidfd, and its environment.

use std::ffi::CStr;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::file;

/// `PID_FS_MAGIC` from `<linux/magic.h>`: the file system of pidfds that
/// have an inode of their own (pidfs, Linux 6.9).
const PID_FS_MAGIC: libc::c_long = 0x5049_4446;

/// This process's effective user id.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the new soft limit.
///
/// Each client costs one descriptor, so the soft limit (often 1024) and not
/// memory is what caps a process first. The hard limit is the ceiling an
/// operator set on purpose, so it is taken as the budget.
pub(crate) fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live rlimit for getrlimit to fill.
    syscall!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a live rlimit; setrlimit only reads it.
        syscall!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) })?;
        lim.rlim_cur = lim.rlim_max;
    }
    Ok(lim.rlim_cur)
}

/// How many CPUs are online, by the C library's count; `None` if it
/// cannot say.
pub(crate) fn online_cpu_count() -> Option<u32> {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).ok()
}

/// The CPU the calling thread runs on now.
pub(crate) fn current_cpu() -> io::Result<libc::c_int> {
    // SAFETY: sched_getcpu has no memory effects.
    syscall!(unsafe { libc::sched_getcpu() })
}

/// The running kernel's release, as `uname -r` prints it.
pub(crate) fn kernel_release() -> Option<String> {
    // SAFETY: utsname is plain data for which all-zero is valid.
    let mut uts: libc::utsname = unsafe { mem::zeroed() };
    // SAFETY: `uts` is live for uname to fill.
    syscall!(unsafe { libc::uname(&mut uts) }).ok()?;
    // SAFETY: uname NUL-terminates `release` within the array.
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    release.to_str().ok().map(str::to_owned)
}

/// 64 bits from the kernel's random source. It blocks only until the
/// source is first seeded, early in boot.
pub(crate) fn random_u64() -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    let mut filled = 0;
    while filled < bytes.len() {
        let rest = &mut bytes[filled..];
        // SAFETY: `rest` is live and writable for its whole length, which
        // getrandom writes at most.
        match syscall!(unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) }) {
            Ok(n) => filled += n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(u64::from_ne_bytes(bytes))
}

/// This process's pidfd inode number, where pidfs gives it one.
pub(crate) fn pidfd_inode() -> Option<u64> {
    // SAFETY: pidfd_open(2) on our own pid, no flags; no memory is passed.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    if raw < 0 {
        return None;
    }
    // SAFETY: a descriptor the kernel just returned, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
    // SAFETY: all-zero is a valid statfs, which fstatfs fills.
    let mut fs: libc::statfs = unsafe { mem::zeroed() };
    // SAFETY: `fs` is live for the call.
    syscall!(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut fs) }).ok()?;
    if fs.f_type as libc::c_long != PID_FS_MAGIC {
        return None;
    }
    Some(file::stat(fd.as_fd()).ok()?.st_ino)
}

/// Takes the variable `name` out of the environment.
///
/// Sound only while no other thread reads or writes the environment
/// (`std::env::remove_var`): its one caller, [`crate::activation::take`],
/// runs as `serve` starts, which `serve`'s contract keeps single-threaded.
pub(crate) fn unset_env(name: &str) {
    // SAFETY: see above: no other thread touches the environment now.
    unsafe { std::env::remove_var(name) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_draws_differ() {
        assert_ne!(random_u64().unwrap(), random_u64().unwrap());
    }

    #[test]
    fn this_process_and_its_machine() {
        assert!(online_cpu_count().is_some_and(|n| n >= 1));
        let cpu = current_cpu().unwrap();
        assert!(cpu >= 0);
        let release = kernel_release().unwrap();
        assert!(
            release.starts_with(|c: char| c.is_ascii_digit()),
            "{release}"
        );
        // The effective uid is the one /proc says.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        let effective: u32 = uid_line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert_eq!(euid(), effective);
    }
}
