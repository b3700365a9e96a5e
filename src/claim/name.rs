//! An announcement's name, as bytes: `drainport|<addr>|<pid>.<nonce>|<service>`.
//!
//! The nonce, 64 random bits in hex, makes a process's name unguessable,
//! so that no one can take it before the process binds it. The address
//! comes first, so a listing can pick an address's claims by their start;
//! the pid follows, so a process's claims can be found by it; the service
//! comes last and is cut, if anything is, to fit the 107 bytes an abstract
//! name holds.
//!
//! Decoding is lenient in what the service holds (anyone can bind any
//! name, and a listing reads them all as bytes) and accepts the name of
//! older releases too, `drainport|<addr>|<pid>|<service>`, so that a new
//! release still sees the processes it replaces. Those releases, for their
//! part, cannot read a pid in `<pid>.<nonce>` and ignore the new names: a
//! rollback is never refused for a name it cannot read.

use crate::peer::Address;

/// The start of every announcement's name.
pub(crate) const PREFIX: &[u8] = b"drainport|";
/// The longest abstract name: `sun_path` less its leading NUL.
pub(crate) const MAX_NAME: usize = 107;

/// The name under which `pid` announces `service` on `addr`, with `nonce`;
/// `None` when the address and pid alone do not fit (a long Unix path):
/// cutting them would make a name no one reads right.
pub(crate) fn encode(addr: &Address, pid: u32, nonce: u64, service: &str) -> Option<Vec<u8>> {
    let mut name = format!("drainport|{addr}|{pid}.{nonce:016x}|").into_bytes();
    if name.len() > MAX_NAME {
        return None;
    }
    name.extend_from_slice(service.as_bytes());
    name.truncate(MAX_NAME);
    Some(name)
}

/// What a name says, borrowed from it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Parts<'a> {
    /// The address as the announcing process printed it.
    pub(crate) addr: &'a [u8],
    pub(crate) pid: u32,
    /// The service, as bytes: whatever the name holds after the pid.
    pub(crate) service: &'a [u8],
}

/// Reads an announcement's name (without the abstract name's leading NUL),
/// or `None` for any other name.
pub(crate) fn decode(name: &[u8]) -> Option<Parts<'_>> {
    let rest = name.strip_prefix(PREFIX)?;
    let (addr, rest) = split(rest)?;
    let (id, service) = split(rest)?;
    // A pid alone (older releases), or a pid, a dot and a nonce.
    let pid = match id.iter().position(|&b| b == b'.') {
        Some(dot) => &id[..dot],
        None => id,
    };
    if pid.is_empty() || !pid.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(Parts {
        addr,
        pid: std::str::from_utf8(pid).ok()?.parse().ok()?,
        service,
    })
}

/// Whether a claim whose `name` holds `listed` as its service announces
/// `service`. A name of the longest length may have had its service cut
/// to fit (a long IPv6 address, a long pid), so a cut one matches what it
/// starts.
pub(crate) fn same_service(name: &[u8], listed: &[u8], service: &[u8]) -> bool {
    listed == service || (name.len() >= MAX_NAME && service.starts_with(listed))
}

/// Splits at the first `|`.
fn split(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == b'|')?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(addr: &str) -> Address {
        Address::Ip(addr.parse().unwrap())
    }

    #[test]
    fn a_name_says_address_pid_and_service() {
        let addr = ip("127.0.0.1:8080");
        let name = encode(&addr, 4242, 0x0123_4567_89ab_cdef, "Lines<Echo>").unwrap();
        assert_eq!(
            name,
            b"drainport|127.0.0.1:8080|4242.0123456789abcdef|Lines<Echo>"
        );
        let parts = decode(&name).unwrap();
        assert_eq!(
            parts,
            Parts {
                addr: b"127.0.0.1:8080",
                pid: 4242,
                service: b"Lines<Echo>"
            }
        );
    }

    #[test]
    fn names_are_read_as_bytes() {
        // Older releases' names, and any bytes in the service.
        let old = decode(b"drainport|127.0.0.1:8080|10|kv").unwrap();
        assert_eq!((old.pid, old.service), (10, &b"kv"[..]));
        let odd = decode(b"drainport|[::1]:80|7.x|\xff\x1b[31m|a|b\n").unwrap();
        assert_eq!(odd.addr, b"[::1]:80");
        assert_eq!((odd.pid, odd.service), (7, &b"\xff\x1b[31m|a|b\n"[..]));
        let empty = decode(b"drainport|a|1|").unwrap();
        assert_eq!(empty.service, b"");
        for not in [
            &b"drainport|127.0.0.1:8080|x|bad"[..],
            b"drainport|127.0.0.1:8080||bad",
            b"drainport|127.0.0.1:8080|.abc|bad",
            b"drainport|127.0.0.1:8080|+1|bad",
            b"drainport|127.0.0.1:8080|99999999999|too big",
            b"drainport|127.0.0.1:8080|12",
            b"drainport|127.0.0.1:8080",
            b"drainport",
            b"\xffdrainport|127.0.0.1:8080|1|kv",
            b"/run/systemd/notify",
            b"",
        ] {
            assert_eq!(decode(not), None, "{:?}", String::from_utf8_lossy(not));
        }
    }

    #[test]
    fn names_fit_and_a_cut_service_still_matches() {
        // The longest address text: every group in full, and a scope id.
        let v6 = Address::Ip(std::net::SocketAddr::V6(std::net::SocketAddrV6::new(
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            65535,
            0,
            u32::MAX,
        )));
        let long = "s".repeat(40);
        let name = encode(&v6, u32::MAX, u64::MAX, &long).unwrap();
        assert_eq!(name.len(), MAX_NAME);
        let parts = decode(&name).unwrap();
        assert_eq!(parts.pid, u32::MAX);
        assert!(parts.service.len() < long.len());
        assert!(same_service(&name, parts.service, long.as_bytes()));
        assert!(!same_service(&name, parts.service, b"s"));
        // The nonce is whole, cut or not: the service gives way first.
        assert!(name.windows(17).any(|w| w == b".ffffffffffffffff"));
        // Uncut, a service matches only itself.
        let short = encode(&ip("127.0.0.1:1"), 1, 0, "ab").unwrap();
        assert!(same_service(&short, b"ab", b"ab"));
        assert!(!same_service(&short, b"a", b"ab"));
        assert!(!same_service(&short, b"ab", b"a"));
    }

    #[test]
    fn a_unix_socket_is_named_by_its_path_unless_too_long_to_read_back() {
        use std::os::unix::net::SocketAddr as UnixAddr;
        let unix = |path: &str| Address::Unix(UnixAddr::from_pathname(path).unwrap());
        let name = encode(&unix("/run/x.sock"), 7, 1, "Lines<Echo>").unwrap();
        assert_eq!(
            name,
            b"drainport|unix:/run/x.sock|7.0000000000000001|Lines<Echo>"
        );
        assert_eq!(decode(&name).unwrap().addr, b"unix:/run/x.sock");
        // A `|` in the path is printed escaped: the name reads back whole.
        let name = encode(&unix("/run/a|b.sock"), 7, 1, "Lines<Echo>").unwrap();
        let parts = decode(&name).unwrap();
        assert_eq!(parts.addr, b"unix:/run/a\\x7cb.sock");
        assert_eq!((parts.pid, parts.service), (7, &b"Lines<Echo>"[..]));
        // A path that leaves no room for the pid and nonce gets no name,
        // rather than one cut where the pid should be.
        let long = format!("/{}", "p".repeat(80));
        assert_eq!(encode(&unix(&long), u32::MAX, 1, "s"), None);
        // The limit the docs give: 73 bytes less the pid's digits.
        let path = |len: usize| unix(&format!("/{}", "p".repeat(len - 1)));
        assert!(encode(&path(66), 4_194_304, 1, "s").is_some());
        assert_eq!(encode(&path(67), 4_194_304, 1, "s"), None);
    }
}
