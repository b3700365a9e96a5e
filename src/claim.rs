//! Which service an address belongs to, so that two different programs
//! run by one user cannot split a port's clients between them without a
//! word.
//!
//! The kernel lets any process of the same user join a `SO_REUSEPORT`
//! group, and then gives each new client to any member: an echo server and
//! a key-value store on one port would each get some of the other's
//! clients. So every process announces, for as long as it lives, the
//! service it runs on the address it serves: an abstract Unix socket named
//! `drainport|<addr>|<pid>|<service>`. Abstract names live in the network
//! namespace, as ports do; anyone in it can list them in `/proc/net/unix`,
//! so no privilege is needed; and the kernel removes a name when its
//! process dies, so nothing goes stale.
//!
//! A process announces itself, then lists the others: of two processes of
//! different services that start at the same moment, at least the second
//! to list sees the first. It refuses to start when another service serves
//! the address, unless told to join anyway.
//!
//! A service is named by what it speaks: by default, the name of its
//! protocol's type without module paths (`Lines<Echo>` for the echo
//! server, `Lines<Kv>` for the kv example). A new release of the same
//! program serves the same protocol type wherever it is installed and
//! whatever its file is called, so it is never refused; a release that
//! renames its protocol type, or two programs that should share a port on
//! purpose, name their service explicitly (`Config::service`).
//!
//! What it cannot see: a process that does not announce (an older
//! drainport, or any other server of the same user with `SO_REUSEPORT` on
//! the port), and a process in another network namespace (which cannot
//! share the port either).

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::log::say;
use crate::sys::syscall;

/// The start of every announcement's name.
const PREFIX: &str = "drainport|";
/// The longest abstract name: `sun_path` less its leading NUL.
const MAX_NAME: usize = 107;

/// One process's announcement, withdrawn when dropped (or at its death).
pub(crate) struct Claim {
    _socket: OwnedFd,
}

/// Another process serving the same address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sibling {
    pub(crate) pid: u32,
    pub(crate) service: String,
}

/// The default service name of a process serving protocol `P`: the type's
/// name without module paths, as in `Lines<Echo>`.
pub(crate) fn service_of<P>() -> String {
    clean(OsStr::new(&short_type_name(std::any::type_name::<P>())))
}

/// `a::b::Lines<c::Echo>` becomes `Lines<Echo>`: each path keeps its last
/// segment.
fn short_type_name(name: &str) -> String {
    let mut short = String::new();
    let mut segment = String::new();
    for c in name.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            segment.push(c);
        } else {
            short.push_str(segment.rsplit("::").next().unwrap_or_default());
            segment.clear();
            if c != ' ' {
                short.push(c);
            }
        }
    }
    short.push_str(segment.rsplit("::").next().unwrap_or_default());
    short
}

/// A service name as it goes in an announcement: no separator, no space,
/// nothing unprintable, and short enough for the name to fit.
pub(crate) fn clean(name: &OsStr) -> String {
    name.to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '|' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect()
}

/// Announces the service this process runs on `addr`, and refuses to go on
/// when another service already serves it (unless `join_any`). Comes after
/// the bind and before the listen, so refusing resets nothing. Where the
/// announcement cannot be made or read, the process says so and goes on:
/// the check protects against a mistake, it is not a lock.
pub(crate) fn stake(addr: SocketAddr, service: &str, join_any: bool) -> io::Result<Option<Claim>> {
    let pid = std::process::id();
    let claimed = match announce(addr, service) {
        Ok(claimed) => claimed,
        Err(e) => {
            say!(
                "Process {pid} cannot announce its service on {addr} ({e}); siblings cannot check it"
            );
            return Ok(None);
        }
    };
    let siblings = match siblings(addr) {
        Ok(siblings) => siblings,
        Err(e) => {
            say!("Process {pid} cannot list the services on {addr} ({e}); not checked");
            return Ok(Some(claimed));
        }
    };
    if let Some(other) = siblings.iter().find(|s| s.service != service) {
        if !join_any {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{addr} is served by another service, {} (pid {}), and this is {service}; \
                     refusing to split its clients between two programs (--join-any to share it)",
                    other.service, other.pid
                ),
            ));
        }
        say!(
            "Process {pid} joins {addr}, which {} (pid {}) also serves",
            other.service,
            other.pid
        );
    }
    Ok(Some(claimed))
}

/// Announces that this process serves `service` on `addr`.
pub(crate) fn announce(addr: SocketAddr, service: &str) -> io::Result<Claim> {
    let name = name(addr, std::process::id(), service);
    let fd = syscall!(socket(
        libc::AF_UNIX,
        libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
        0
    ))?;
    // SAFETY: `socket` just returned this descriptor and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut sun: libc::sockaddr_un = unsafe { mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // sun_path[0] stays 0: an abstract name.
    for (dst, &src) in sun.sun_path[1..].iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    let len = mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    // SAFETY: `sun` is a live sockaddr_un and `len` is within it.
    syscall!(bind(
        fd,
        (&raw const sun).cast::<libc::sockaddr>(),
        len as libc::socklen_t
    ))?;
    Ok(Claim { _socket: socket })
}

/// The other processes that announced `addr`.
pub(crate) fn siblings(addr: SocketAddr) -> io::Result<Vec<Sibling>> {
    let table = fs::read_to_string("/proc/net/unix")?;
    Ok(parse(&table, addr, std::process::id()))
}

/// The announcement's name for `service` on `addr` by `pid`.
fn name(addr: SocketAddr, pid: u32, service: &str) -> String {
    let mut name = format!("{PREFIX}{addr}|{pid}|{service}");
    name.truncate(MAX_NAME);
    name
}

/// Reads the announcements of `addr` other than `me`'s from the text of
/// `/proc/net/unix`, where an abstract name shows with `@` for its NUL.
fn parse(table: &str, addr: SocketAddr, me: u32) -> Vec<Sibling> {
    let wanted = format!("@{PREFIX}{addr}|");
    let mut found: Vec<Sibling> = table
        .lines()
        .filter_map(|line| line.split_whitespace().nth(7))
        .filter_map(|path| path.strip_prefix(&wanted))
        .filter_map(|rest| {
            let (pid, service) = rest.split_once('|')?;
            Some(Sibling {
                pid: pid.parse().ok()?,
                service: service.to_owned(),
            })
        })
        .filter(|s| s.pid != me)
        .collect();
    found.sort_by_key(|s| s.pid);
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00000000 0002 01 11 @drainport|127.0.0.1:8080|10|drainport
0000000000000000: 00000002 00000000 00000000 0002 01 12 @drainport|127.0.0.1:8080|11|kv
0000000000000000: 00000002 00000000 00000000 0002 01 13 @drainport|127.0.0.1:8081|12|kv
0000000000000000: 00000002 00000000 00000000 0002 01 14 @drainport|127.0.0.1:8080|99|drainport
0000000000000000: 00000002 00000000 00000000 0002 01 15 /run/systemd/notify
0000000000000000: 00000002 00000000 00000000 0002 01 16
0000000000000000: 00000002 00000000 00000000 0002 01 17 @drainport|127.0.0.1:8080|x|bad
";

    #[test]
    fn announcements_of_the_address_from_others() {
        let addr = "127.0.0.1:8080".parse().unwrap();
        let found = parse(TABLE, addr, 99);
        let want = [(10, "drainport"), (11, "kv")].map(|(pid, service)| Sibling {
            pid,
            service: service.to_owned(),
        });
        assert_eq!(found, want);
    }

    #[test]
    fn a_service_is_named_by_its_protocol_type() {
        assert_eq!(
            short_type_name("drainport::protocol::Lines<drainport::echo::Echo>"),
            "Lines<Echo>"
        );
        assert_eq!(short_type_name("http::Http"), "Http");
        assert_eq!(short_type_name("a::B<c::D, e::F<g::H>>"), "B<D,F<H>>");
        assert_eq!(service_of::<u8>(), "u8");
    }

    #[test]
    fn names_fit_and_say_the_address() {
        let v6: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
            .parse()
            .unwrap();
        let long = "s".repeat(40);
        let n = name(v6, u32::MAX, &long);
        assert!(n.len() <= MAX_NAME, "{}", n.len());
        assert!(n.starts_with("drainport|[ffff:"));
        assert_eq!(clean(OsStr::new("my server|v2")), "my_server_v2");
        assert_eq!(clean(OsStr::new(&"x".repeat(99))).len(), 40);
    }

    #[test]
    fn an_announcement_is_seen_and_withdrawn() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let unique = format!("test-{}", std::process::id());
        let claim = announce(addr, &unique).expect("announce");
        let table = fs::read_to_string("/proc/net/unix").unwrap();
        // Seen by anyone but this process.
        let seen = parse(&table, addr, 0);
        assert!(seen.iter().any(|s| s.service == unique), "{seen:?}");
        drop(claim);
        let table = fs::read_to_string("/proc/net/unix").unwrap();
        assert!(!parse(&table, addr, 0).iter().any(|s| s.service == unique));
    }
}
