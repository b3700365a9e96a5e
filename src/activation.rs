//! Socket activation: the listening sockets a service manager passes to
//! this process, read as `sd_listen_fds_with_names(3)` reads them.
//!
//! The protocol (systemd's `sd-daemon.c`):
//! - `LISTEN_PID` must name this process; missing, or another pid, means
//!   nothing was passed to it (the variables were inherited by mistake).
//!   `LISTEN_PIDFDID`, where present and where the kernel gives pidfds an
//!   inode of their own (pidfs, Linux 6.9), must be this process's too,
//!   against a pid reused since the variables were set.
//! - `LISTEN_FDS` descriptors were passed, numbered from 3; each gets
//!   `FD_CLOEXEC`, so a program this process starts inherits none.
//! - `LISTEN_FDNAMES`, where present, names them, `:`-separated, one name
//!   per descriptor: another count is an error. Without it every name is
//!   `unknown`.
//! - The variables are unset whatever the outcome, so that a child does
//!   not take them for its own.
//!
//! What the descriptors are is checked where they become listeners
//! ([`crate::listener`]); this module only takes them. Reading the
//! variables is a pure function, tested without an environment.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::sys::syscall;

/// `SD_LISTEN_FDS_START`: the first descriptor passed.
const FIRST_FD: RawFd = 3;
/// The variables of the protocol, all unset once read.
const VARIABLES: [&str; 4] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "LISTEN_PIDFDID",
];
/// `PID_FS_MAGIC` from `<linux/magic.h>`: pidfds of pidfs have an inode
/// number of their own; older ones all share one.
const PID_FS_MAGIC: libc::c_long = 0x5049_4446;

/// One descriptor the service manager passed.
#[derive(Debug)]
pub(crate) struct Passed {
    pub(crate) fd: OwnedFd,
    /// Its number as passed, for messages.
    pub(crate) number: RawFd,
    /// Its name from `LISTEN_FDNAMES` (`FileDescriptorName=`), or `unknown`.
    pub(crate) name: String,
}

/// The protocol's variables as they were found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Vars {
    pid: Option<String>,
    fds: Option<String>,
    names: Option<String>,
    pidfd_id: Option<String>,
}

/// Takes the descriptors passed to this process, and unsets the variables.
///
/// An error is the operator's (or the manager's) mistake, said in one
/// sentence: a variable that is not a number, names that do not match
/// the count, a descriptor that is not open.
///
/// The variables are unset with `std::env::remove_var`, which is sound
/// only while no other thread reads or writes the environment; `serve`
/// documents that it must be called so.
pub(crate) fn take() -> io::Result<Vec<Passed>> {
    let read = |name| std::env::var(name).ok();
    let vars = Vars {
        pid: read("LISTEN_PID"),
        fds: read("LISTEN_FDS"),
        names: read("LISTEN_FDNAMES"),
        pidfd_id: read("LISTEN_PIDFDID"),
    };
    for name in VARIABLES {
        // SAFETY: `serve`'s contract: no other thread touches the
        // environment while it starts.
        unsafe { std::env::remove_var(name) };
    }
    let names = plan(&vars, std::process::id(), own_pidfd_id)
        .map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?;
    let count = names.len();
    let mut passed = Vec::with_capacity(count);
    for (i, name) in names.into_iter().enumerate() {
        let number = FIRST_FD + i as RawFd;
        // F_GETFD fails with EBADF on a number that is not open: checked
        // before the number is owned, so that nothing closes a stranger's.
        let flags = syscall!(fcntl(number, libc::F_GETFD)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("LISTEN_FDS={count} says fd {number} was passed, but it is not open ({e})"),
            )
        })?;
        // SAFETY: the descriptor is open, and the protocol hands it to this
        // process alone to own.
        let fd = unsafe { OwnedFd::from_raw_fd(number) };
        syscall!(fcntl(number, libc::F_SETFD, flags | libc::FD_CLOEXEC))?;
        passed.push(Passed { fd, number, name });
    }
    Ok(passed)
}

/// The names of the descriptors passed to process `pid`, one per
/// descriptor (empty when none were), from the variables `vars`.
/// `pidfd_id` gives this process's pidfd inode, when the kernel has one.
fn plan(
    vars: &Vars,
    pid: u32,
    pidfd_id: impl FnOnce() -> Option<u64>,
) -> Result<Vec<String>, String> {
    let Some(listen_pid) = &vars.pid else {
        return Ok(Vec::new());
    };
    let listen_pid: u32 = listen_pid
        .parse()
        .map_err(|_| format!("LISTEN_PID is not a process id: {listen_pid:?}"))?;
    if listen_pid != pid {
        return Ok(Vec::new());
    }
    if let Some(id) = &vars.pidfd_id {
        let id: u64 = id
            .parse()
            .map_err(|_| format!("LISTEN_PIDFDID is not a number: {id:?}"))?;
        if pidfd_id().is_some_and(|own| own != id) {
            return Ok(Vec::new());
        }
    }
    let Some(count) = &vars.fds else {
        return Ok(Vec::new());
    };
    let count: usize = count
        .parse()
        .ok()
        .filter(|&n: &usize| n <= (RawFd::MAX - FIRST_FD) as usize)
        .ok_or_else(|| format!("LISTEN_FDS is not a count of descriptors: {count:?}"))?;
    match &vars.names {
        None => Ok(vec!["unknown".to_owned(); count]),
        Some(names) => {
            let names: Vec<String> = if count == 0 && names.is_empty() {
                Vec::new()
            } else {
                names.split(':').map(str::to_owned).collect()
            };
            if names.len() != count {
                return Err(format!(
                    "LISTEN_FDNAMES names {} descriptor{} but LISTEN_FDS={count}",
                    names.len(),
                    if names.len() == 1 { "" } else { "s" }
                ));
            }
            Ok(names)
        }
    }
}

/// This process's pidfd inode number, where pidfs gives it one.
fn own_pidfd_id() -> Option<u64> {
    // SAFETY: pidfd_open(2) on our own pid, no flags.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    if raw < 0 {
        return None;
    }
    // SAFETY: a descriptor the kernel just returned, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero is valid for both, and each call fills its own.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    syscall!(fstatfs(fd.as_raw_fd(), &mut fs)).ok()?;
    if fs.f_type as libc::c_long != PID_FS_MAGIC {
        return None;
    }
    syscall!(fstat(fd.as_raw_fd(), &mut st)).ok()?;
    Some(st.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pid: &str, fds: &str, names: Option<&str>) -> Vars {
        Vars {
            pid: Some(pid.to_owned()),
            fds: Some(fds.to_owned()),
            names: names.map(str::to_owned),
            pidfd_id: None,
        }
    }

    fn none() -> Option<u64> {
        None
    }

    #[test]
    fn descriptors_for_this_process_only() {
        assert_eq!(plan(&Vars::default(), 42, none), Ok(vec![]));
        assert_eq!(
            plan(&vars("42", "2", None), 42, none),
            Ok(vec!["unknown".to_owned(), "unknown".to_owned()])
        );
        // Inherited from a parent: not ours.
        assert_eq!(plan(&vars("41", "2", None), 42, none), Ok(vec![]));
        assert_eq!(plan(&vars("42", "0", None), 42, none), Ok(vec![]));
        let no_count = Vars {
            fds: None,
            ..vars("42", "", None)
        };
        assert_eq!(plan(&no_count, 42, none), Ok(vec![]));
    }

    #[test]
    fn names_must_match_the_count() {
        assert_eq!(
            plan(&vars("7", "2", Some("web:web")), 7, none),
            Ok(vec!["web".to_owned(), "web".to_owned()])
        );
        let err = plan(&vars("7", "2", Some("web")), 7, none).unwrap_err();
        assert_eq!(err, "LISTEN_FDNAMES names 1 descriptor but LISTEN_FDS=2");
        assert!(plan(&vars("7", "1", Some("a:b:c")), 7, none).is_err());
        assert_eq!(plan(&vars("7", "0", Some("")), 7, none), Ok(vec![]));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(
            plan(&vars("x", "1", None), 7, none)
                .unwrap_err()
                .contains("LISTEN_PID")
        );
        assert!(
            plan(&vars("7", "-1", None), 7, none)
                .unwrap_err()
                .contains("LISTEN_FDS")
        );
        assert!(plan(&vars("7", "99999999999", None), 7, none).is_err());
    }

    #[test]
    fn a_pidfd_id_of_another_process_means_nothing_was_passed() {
        let with_id = |id: &str| Vars {
            pidfd_id: Some(id.to_owned()),
            ..vars("7", "1", None)
        };
        assert_eq!(
            plan(&with_id("100"), 7, || Some(100)).map(|n| n.len()),
            Ok(1)
        );
        assert_eq!(plan(&with_id("100"), 7, || Some(101)), Ok(vec![]));
        // A kernel without pidfs cannot tell: the pid decides.
        assert_eq!(plan(&with_id("100"), 7, none).map(|n| n.len()), Ok(1));
        assert!(plan(&with_id("x"), 7, none).is_err());
    }
}
