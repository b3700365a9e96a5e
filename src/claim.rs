//! Which service an address belongs to, so that two different programs
//! run by one user cannot split a port's clients between them without a
//! word.
//!
//! The kernel lets processes of the same effective uid, and only those,
//! join a `SO_REUSEPORT` group, and then gives each new client to any
//! member: an echo server and a key-value store on one port would each get
//! some of the other's clients. So every process announces, for as long as
//! it lives, the service it runs on the address it serves: an abstract
//! Unix socket (`SOCK_STREAM`) named
//! `drainport|<addr>|<pid>.<nonce>|<service>` ([`name`]), which then
//! listens as the process's control channel ([`crate::control`]). Abstract names
//! live in the network namespace, as ports do; anyone in it can list them,
//! so no privilege is needed; and the kernel removes a name when its
//! process dies, so nothing goes stale.
//!
//! A process announces itself, then lists the others: of two processes of
//! different services that start at the same moment, at least the second
//! to list sees the first. It refuses to start when another service of
//! its own uid serves the address, unless told to join anyway.
//!
//! Anyone can bind any abstract name, so a name alone proves nothing. The
//! listing asks the kernel who owns each one (`unix_diag`, [`diag`]), and
//! the check trusts a claim only as far as its owner could share the port:
//! - a claim of this process's effective uid counts, and another service
//!   there refuses the start;
//! - a claim of any other uid is ignored, and never printed: that process
//!   could not join the port's group, and anyone can make such a name (a
//!   user who could never bind port 80 could otherwise stop every start
//!   of a service on it);
//! - a claim whose owner the kernel cannot tell (before Linux 5.3, or
//!   where `unix_diag` is unavailable and the names come from
//!   `/proc/net/unix`, [`procfs`]) is reported, never refused: refusing on
//!   a name anyone can write is the denial of service the owner check
//!   exists to prevent. The process says once that it cannot tell.
//!
//! Names are read as bytes, whatever they hold, and whatever a name's text
//! puts in a line goes through [`crate::log::Escaped`]. A process's own
//! name holds 64 random bits, so no one can take it in advance, and if it
//! is taken anyway the process draws another ([`MAX_TRIES`] in all): a
//! stranger's name never leaves a process unannounced.
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
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::log::Escaped;
use crate::peer::Address;
use crate::sockdiag::DUMP_BUFFER;
use crate::sys::{process, unix};

mod diag;
mod name;
mod procfs;

/// Names drawn before announcing gives up: each is taken only if someone
/// guessed 64 random bits, so a second try already means a broken
/// random source or a name bound on purpose, and a few more cost nothing.
const MAX_TRIES: usize = 8;

/// One process's announcement, withdrawn when dropped (or at its death).
/// Its socket is also the process's control channel, once
/// [`crate::control`] makes it listen.
pub(crate) struct Claim {
    socket: OwnedFd,
}

impl Claim {
    /// The announcing socket.
    pub(crate) fn socket(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// A claim found on some address: what a listing returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    /// The address, as its process printed it.
    pub(crate) addr: Vec<u8>,
    pub(crate) pid: u32,
    /// The uid that owns the claim's socket, or `None` where the kernel
    /// cannot say.
    pub(crate) owner: Option<u32>,
    /// The service, as bytes: the name may hold anything.
    pub(crate) service: Vec<u8>,
    /// The whole abstract name, without its leading NUL: what a caller
    /// connects to.
    pub(crate) name: Vec<u8>,
}

impl Listed {
    /// Whether this claim announces `service`.
    pub(crate) fn serves(&self, service: &str) -> bool {
        name::same_service(&self.name, &self.service, service.as_bytes())
    }

    /// The address, for a line: as its process printed it when that is
    /// printable ASCII, as a drainport's always is (a Unix socket's name
    /// comes escaped already, and escaping it again would print it
    /// otherwise than that process's own lines do); escaped when not.
    pub(crate) fn addr_text(&self) -> String {
        if self.addr.iter().all(|b| (b' '..=b'~').contains(b)) {
            String::from_utf8_lossy(&self.addr).into_owned()
        } else {
            Escaped(&self.addr).to_string()
        }
    }
}

/// Every claim in the network namespace.
#[derive(Debug)]
pub(crate) struct Listing {
    pub(crate) claims: Vec<Listed>,
    /// Why some owners are unknown, if they are: for one line.
    pub(crate) owners_unknown: Option<String>,
}

impl Listing {
    /// The claim on `addr` of another process and another service that
    /// this process must heed (see [`conflict`]).
    pub(crate) fn conflict(&self, addr: &Address, service: &str) -> Option<Conflict<'_>> {
        let uid = process::euid();
        conflict(&self.claims, addr, std::process::id(), uid, service)
    }
}

/// Another service on the address, and how far its claim can be trusted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Conflict<'a> {
    /// Announced by this process's uid: it could share the port.
    Mine(&'a Listed),
    /// Announced by an owner the kernel cannot tell.
    Unknown(&'a Listed),
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

/// Announces that this process serves `service` on `addr`.
pub(crate) fn announce(addr: &Address, service: &str) -> io::Result<Claim> {
    announce_with(addr, service, std::process::id(), process::random_u64)
}

/// Announces under a name with a nonce from `nonce`, drawing again while
/// the name is taken.
fn announce_with(
    addr: &Address,
    service: &str,
    pid: u32,
    mut nonce: impl FnMut() -> io::Result<u64>,
) -> io::Result<Claim> {
    let socket = unix::stream(false)?;
    for _ in 0..MAX_TRIES {
        let name = name::encode(addr, pid, nonce()?, service).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the address is too long for a name of {} bytes",
                    name::MAX_NAME
                ),
            )
        })?;
        // A failed bind leaves the socket unbound, free to try another.
        match unix::bind_abstract(socket.as_fd(), &name) {
            Ok(()) => return Ok(Claim { socket }),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("{MAX_TRIES} names in a row were taken"),
    ))
}

/// Every claim in this network namespace, with its owner where the kernel
/// can say. Asks `unix_diag`; where that cannot be asked, reads the names
/// from `/proc/net/unix`, with owners unknown. Fails only if neither can
/// be read.
pub(crate) fn list() -> io::Result<Listing> {
    let mut buf = vec![0; DUMP_BUFFER];
    let (named, owners_unknown) = match diag::names(name::PREFIX, &mut buf) {
        Ok(named) => {
            let blind = named.iter().any(|n| n.uid.is_none());
            let why = "the kernel does not say who owns a Unix socket (Linux 5.3 or later does)";
            (named, blind.then(|| why.to_owned()))
        }
        Err(e) => {
            let table = fs::read("/proc/net/unix").map_err(|proc_err| {
                io::Error::new(
                    proc_err.kind(),
                    format!("socket diagnostics: {e}; /proc/net/unix: {proc_err}"),
                )
            })?;
            let named = procfs::names(&table, name::PREFIX)
                .into_iter()
                .map(|name| diag::Named { name, uid: None })
                .collect();
            let why = format!("the kernel's socket diagnostics cannot be asked: {e}");
            (named, Some(why))
        }
    };
    let mut claims: Vec<Listed> = named.into_iter().filter_map(listed).collect();
    // Oldest process first, as pids go; and the table shows a name once
    // per socket that carries it.
    claims.sort_by(|a, b| (a.pid, &a.name).cmp(&(b.pid, &b.name)));
    claims.dedup_by(|a, b| a.name == b.name);
    Ok(Listing {
        claims,
        owners_unknown,
    })
}

/// A named socket as a claim, if its name is one.
fn listed(named: diag::Named) -> Option<Listed> {
    let (addr, pid, service) = {
        let parts = name::decode(&named.name)?;
        (parts.addr.to_vec(), parts.pid, parts.service.to_vec())
    };
    Some(Listed {
        addr,
        pid,
        owner: named.uid,
        service,
        name: named.name,
    })
}

/// The first claim on `addr` by a process other than `me` of a service
/// other than `service` that `uid` must heed: one of its own uid first,
/// else one whose owner is unknown. Claims of other uids are not looked at.
fn conflict<'a>(
    claims: &'a [Listed],
    addr: &Address,
    me: u32,
    uid: u32,
    service: &str,
) -> Option<Conflict<'a>> {
    let addr = addr.to_string();
    let mut others = claims
        .iter()
        .filter(|c| c.addr == addr.as_bytes() && c.pid != me && !c.serves(service));
    let mine = others.clone().find(|c| c.owner == Some(uid));
    mine.map(Conflict::Mine)
        .or_else(|| others.find(|c| c.owner.is_none()).map(Conflict::Unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(addr: &str, pid: u32, owner: Option<u32>, service: &str) -> Listed {
        let addr = Address::Ip(addr.parse().unwrap());
        let name = name::encode(&addr, pid, 7, service).unwrap();
        listed(diag::Named { name, uid: owner }).unwrap()
    }

    #[test]
    fn an_address_prints_as_its_process_printed_it_unless_raw() {
        let listed = |addr: &[u8]| Listed {
            addr: addr.to_vec(),
            pid: 1,
            owner: None,
            service: Vec::new(),
            name: Vec::new(),
        };
        assert_eq!(listed(b"unix:/a\\x0ab").addr_text(), "unix:/a\\x0ab");
        assert_eq!(listed(b"127.0.0.1:1").addr_text(), "127.0.0.1:1");
        // Raw bytes, which no drainport announces, are escaped.
        assert_eq!(listed(b"unix:/a\nb\\").addr_text(), "unix:/a\\x0ab\\\\");
    }

    #[test]
    fn only_a_claim_of_this_uid_refuses() {
        let addr = Address::Ip("127.0.0.1:8080".parse().unwrap());
        let check = |claims: &[Listed]| {
            conflict(claims, &addr, 99, 1000, "Lines<Echo>").map(|c| match c {
                Conflict::Mine(l) => ("mine", l.pid),
                Conflict::Unknown(l) => ("unknown", l.pid),
            })
        };
        let same = claim("127.0.0.1:8080", 10, Some(1000), "Lines<Echo>");
        let other_addr = claim("127.0.0.1:8081", 11, Some(1000), "Lines<Kv>");
        let me = claim("127.0.0.1:8080", 99, Some(1000), "Lines<Kv>");
        let foreign = claim("127.0.0.1:8080", 12, Some(65534), "Squatter");
        let unknown = claim("127.0.0.1:8080", 13, None, "Lines<Kv>");
        let kv = claim("127.0.0.1:8080", 14, Some(1000), "Lines<Kv>");
        // The same service, another address, itself, another uid: nothing.
        assert_eq!(
            check(&[same.clone(), other_addr, me, foreign.clone()]),
            None
        );
        // An unknown owner is reported; one of this uid wins over it.
        assert_eq!(
            check(&[foreign.clone(), unknown.clone()]),
            Some(("unknown", 13))
        );
        assert_eq!(check(&[unknown, foreign, kv, same]), Some(("mine", 14)));
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
        assert_eq!(clean(OsStr::new("my server|v2")), "my_server_v2");
        assert_eq!(clean(OsStr::new(&"x".repeat(99))).len(), 40);
    }

    /// The claims of `service` on `addr` in a fresh listing.
    fn seen(addr: &Address, service: &str) -> Vec<Listed> {
        let listing = list().expect("list");
        let addr = addr.to_string();
        listing
            .claims
            .into_iter()
            .filter(|c| c.addr == addr.as_bytes() && c.service == service.as_bytes())
            .collect()
    }

    #[test]
    fn an_announcement_is_seen_with_its_owner_and_withdrawn() {
        let addr = Address::Ip("127.0.0.1:1".parse().unwrap());
        let unique = format!("test-{}", std::process::id());
        let claim = announce(&addr, &unique).expect("announce");
        let found = seen(&addr, &unique);
        let me = process::euid();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, std::process::id());
        assert_eq!(found[0].owner, Some(me));
        assert!(found[0].name.starts_with(b"drainport|127.0.0.1:1|"));
        drop(claim);
        assert!(seen(&addr, &unique).is_empty());
    }

    #[test]
    fn a_taken_name_is_drawn_again() {
        let addr = &Address::Ip("127.0.0.1:2".parse().unwrap());
        let pid = std::process::id();
        let unique = format!("taken-{pid}");
        // Someone holds the name the first draw gives.
        let squatter = announce_with(addr, &unique, pid, || Ok(1)).expect("squat");
        let mut draws = [1, 1, 2].into_iter();
        let claim = announce_with(addr, &unique, pid, || Ok(draws.next().unwrap()))
            .expect("announce past a taken name");
        assert_eq!(draws.next(), None, "three draws, two taken");
        assert_eq!(seen(addr, &unique).len(), 2);
        // Every draw taken: it gives up, after a bounded number.
        let mut tries = 0;
        let e = announce_with(addr, &unique, pid, || {
            tries += 1;
            Ok(2)
        })
        .err()
        .expect("all taken");
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(tries, MAX_TRIES);
        drop((squatter, claim));
    }
}
