//! What steering new connections needs to know about this machine: the CPUs
//! that can handle a SYN, whether this kernel honours `SO_INCOMING_CPU`
//! when it picks a socket in a `SO_REUSEPORT` group, and whether a closing
//! listener hands what it holds to a sibling (`net.ipv4.tcp_migrate_req`).
//!
//! Since Linux 6.2 the group's hash selection, once any member carries a
//! CPU tag, gives a SYN handled on CPU `c` to the first member tagged `c`,
//! counting on from the hash's own pick, and falls back to that pick only
//! when no member matches (`reuseport_select_sock_by_hash()` in
//! `net/core/sock_reuseport.c`). A process that tags one listener per online
//! CPU therefore covers every SYN, and one that sets its tags back to -1
//! receives none while a sibling covers them. Setting the tag needs no
//! privilege. See `docs/design.md` for the alternatives.
//!
//! The version number does not say whether a kernel does this:
//! distributions backport the fix to older numbers, and a kernel built or
//! patched otherwise may not have it whatever its number. So [`probe`] asks
//! the kernel itself, at every start, on a port of its own.

mod probe;

use std::ffi::CStr;
use std::fs;
use std::mem;

pub(crate) use probe::{Steering, probe};

/// `SO_INCOMING_CPU` from `<asm-generic/socket.h>`; not exported by libc for glibc.
pub(crate) const SO_INCOMING_CPU: libc::c_int = 49;
/// Where this network namespace says whether a closing listener hands its
/// queue and handshakes to a sibling (Linux 5.14 and later).
const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// The first kernel whose reuseport selection honours `SO_INCOMING_CPU`.
pub(crate) const STEERING_KERNEL: (u32, u32) = (6, 2);

/// Where Linux lists the CPUs that are online now, as in `0-3,6`.
const ONLINE_CPUS: &str = "/sys/devices/system/cpu/online";

/// More tagged listeners than this would cost descriptors for nothing: a
/// machine with more online CPUs falls back to the hash for the rest, which
/// the startup message reports.
pub(crate) const MAX_TAGGED_CPUS: usize = 1024;

/// The CPUs that may handle a SYN: every online CPU, whatever this
/// process's own affinity, because a SYN is handled on the CPU where the
/// packet arrives (on loopback, the client's).
pub(crate) fn online_cpus() -> Vec<u32> {
    if let Some(cpus) = fs::read_to_string(ONLINE_CPUS)
        .ok()
        .and_then(|list| parse_cpu_list(&list))
    {
        return cpus;
    }
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    (0..u32::try_from(n).unwrap_or(1).max(1)).collect()
}

/// Parses the kernel's CPU list format (`0-3,6,8-9`). Returns `None` for
/// anything else, and for an empty list.
pub(crate) fn parse_cpu_list(list: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let cpu = part.parse::<u32>().ok()?;
                (cpu, cpu)
            }
        };
        if last < first || cpus.len() + (last - first) as usize >= MAX_TAGGED_CPUS {
            return None;
        }
        cpus.extend(first..=last);
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// The running kernel's version, as `(major, minor)`.
pub(crate) fn kernel_version() -> Option<(u32, u32)> {
    // SAFETY: utsname is plain data for which all-zero is valid, and uname
    // fills it with NUL-terminated strings.
    let mut uts: libc::utsname = unsafe { mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    // SAFETY: uname NUL-terminates `release` within the array.
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    parse_release(release.to_str().ok()?)
}

/// Reads `major.minor` from a release string such as `6.18.44-generic`.
pub(crate) fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// `net.ipv4.tcp_migrate_req` in this process's network namespace: whether
/// a listener that closes hands the connections queued on it and the
/// handshakes in flight to another listener of its group. `None` where the
/// kernel has no such setting (before 5.14) or it cannot be read.
pub(crate) fn migrate_req() -> Option<bool> {
    parse_flag(&fs::read_to_string(MIGRATE_REQ).ok()?)
}

fn parse_flag(text: &str) -> Option<bool> {
    match text.trim() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_in_the_kernel_format() {
        assert_eq!(parse_cpu_list("0\n"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0-2,5,7-8"), Some(vec![0, 1, 2, 5, 7, 8]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(parse_cpu_list("0-100000"), None);
    }

    #[test]
    fn online_cpus_include_this_one() {
        // SAFETY: sched_getcpu has no memory effects.
        let here = unsafe { libc::sched_getcpu() };
        let cpus = online_cpus();
        assert!(cpus.contains(&(here as u32)), "{here} not in {cpus:?}");
    }

    #[test]
    fn migrate_req_reads_as_a_flag() {
        assert_eq!(parse_flag("1\n"), Some(true));
        assert_eq!(parse_flag("0\n"), Some(false));
        assert_eq!(parse_flag(""), None);
        // This kernel has the setting (5.14+), readable by anyone.
        if kernel_version().is_some_and(|v| v >= (5, 14)) {
            assert!(migrate_req().is_some());
        }
    }

    #[test]
    fn release_strings() {
        assert_eq!(parse_release("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(parse_release("6.2.0"), Some((6, 2)));
        assert_eq!(parse_release("5.15-rc1"), Some((5, 15)));
        assert_eq!(parse_release("garbage"), None);
        assert!((6, 18) >= STEERING_KERNEL && (5, 15) < STEERING_KERNEL);
        assert!((7, 0) >= STEERING_KERNEL);
    }
}
