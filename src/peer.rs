//! Who a client is, and what a listening socket serves: an IP address and
//! port, or a Unix socket's name.
//!
//! [`Peer`] is what a protocol is told when a client is admitted
//! ([`Protocol::on_connect`](crate::Protocol::on_connect)) and what the
//! accepted and closed lines print. A client of a Unix stream socket has
//! almost never bound a name of its own, so it is known by the name of the
//! socket it connected to (`unix:/run/x.sock`, `unix:@name` for an
//! abstract one): the kernel gives an accepted Unix socket its listener's
//! name, so both the accept and a later `getsockname` say the same.
//!
//! [`Address`] is the owned form, which a port keeps; a [`Peer`] borrows
//! from it, so an accept costs no copy of a Unix name.

use std::fmt;
use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::SocketAddr as UnixAddr;

use crate::log::Escaped;

/// Who a client is, as the process learns it when the client is admitted.
///
/// Prints as the address (`127.0.0.1:40312`, `[::1]:40312`) or as
/// `unix:` and the name of the Unix socket the client connected to
/// (`unix:/run/app.sock`, `unix:@app` for an abstract name). A name's
/// bytes other than printable ASCII, and `|`, show as `\xNN`, and a
/// backslash is doubled, so that the text is one line and names one
/// socket.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Peer<'a> {
    /// A TCP client: its IP address and port.
    Ip(SocketAddr),
    /// A client of a Unix stream socket, known by the name of the socket it
    /// connected to (the listening socket's path or abstract name): a Unix
    /// client's own address is almost always unnamed.
    Unix(&'a UnixAddr),
}

impl Peer<'_> {
    /// The client's IP address and port, for a TCP client.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            Peer::Ip(addr) => Some(*addr),
            Peer::Unix(_) => None,
        }
    }
}

impl fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(addr) => addr.fmt(f),
            Peer::Unix(addr) => {
                // A path may hold any byte but NUL, as an abstract name
                // may: both are escaped alike, so that a newline cannot
                // split a line and bytes that are not UTF-8 cannot read as
                // another name.
                if let Some(path) = addr.as_pathname() {
                    write!(f, "unix:{}", Name(path.as_os_str().as_bytes()))
                } else if let Some(name) = addr.as_abstract_name() {
                    write!(f, "unix:@{}", Name(name))
                } else {
                    f.write_str("unix:unnamed")
                }
            }
        }
    }
}

/// A Unix socket's name as the lines print it: [`Escaped`], and `|` as
/// `\x7c` too, since this text is the address in a claim's name, whose
/// parts `|` separates ([`crate::claim`]): a `|` kept would make a name
/// no listing reads.
struct Name<'a>(&'a [u8]);

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.0.split(|&b| b == b'|').enumerate() {
            if i > 0 {
                f.write_str("\\x7c")?;
            }
            Escaped(part).fmt(f)?;
        }
        Ok(())
    }
}

/// What a listening socket serves, owned: an IP address and port, or a
/// Unix socket's name.
#[derive(Debug, Clone)]
pub(crate) enum Address {
    Ip(SocketAddr),
    Unix(UnixAddr),
}

impl Address {
    /// The same, as a client of it is known.
    pub(crate) fn peer(&self) -> Peer<'_> {
        match self {
            Address::Ip(addr) => Peer::Ip(*addr),
            Address::Unix(addr) => Peer::Unix(addr),
        }
    }

    /// The IP address and port, for an IP address.
    pub(crate) fn ip(&self) -> Option<SocketAddr> {
        self.peer().ip()
    }
}

impl PartialEq for Address {
    fn eq(&self, other: &Address) -> bool {
        match (self, other) {
            (Address::Ip(a), Address::Ip(b)) => a == b,
            (Address::Unix(a), Address::Unix(b)) => {
                a.as_pathname() == b.as_pathname()
                    && a.as_abstract_name() == b.as_abstract_name()
                    && a.is_unnamed() == b.is_unnamed()
            }
            _ => false,
        }
    }
}

impl PartialEq<SocketAddr> for Address {
    fn eq(&self, other: &SocketAddr) -> bool {
        self.ip() == Some(*other)
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::Ip(addr)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.peer().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn peers_print_as_their_address_or_unix_and_a_name() {
        let ip = Address::from(SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(ip.to_string(), "127.0.0.1:8080");
        assert_eq!(ip.peer().ip(), ip.ip());
        let path = Address::Unix(UnixAddr::from_pathname("/run/x.sock").unwrap());
        assert_eq!(path.to_string(), "unix:/run/x.sock");
        assert_eq!(path.ip(), None);
        let named = Address::Unix(UnixAddr::from_abstract_name(b"app\n").unwrap());
        assert_eq!(named.to_string(), "unix:@app\\x0a");
        assert_eq!(format!("{}", named.peer()), "unix:@app\\x0a");
        // A path is escaped as an abstract name is: one line, and two
        // paths that are not UTF-8 print apart.
        let odd = |p: &[u8]| Address::Unix(UnixAddr::from_pathname(OsStr::from_bytes(p)).unwrap());
        assert_eq!(odd(b"/a\nb\\").to_string(), "unix:/a\\x0ab\\\\");
        assert_ne!(odd(b"/\xfe").to_string(), odd(b"/\xff").to_string());
        // `|` separates a claim's parts, so the text holds none.
        assert_eq!(odd(b"|a||b|").to_string(), "unix:\\x7ca\\x7c\\x7cb\\x7c");
        let bar = Address::Unix(UnixAddr::from_abstract_name(b"a|b").unwrap());
        assert_eq!(bar.to_string(), "unix:@a\\x7cb");
    }

    #[test]
    fn addresses_are_equal_by_what_they_name() {
        let unix = |p: &str| Address::Unix(UnixAddr::from_pathname(p).unwrap());
        let abs = |n: &[u8]| Address::Unix(UnixAddr::from_abstract_name(n).unwrap());
        assert_eq!(unix("/a"), unix("/a"));
        assert_ne!(unix("/a"), unix("/b"));
        assert_ne!(unix("/a"), abs(b"/a"));
        assert_eq!(abs(b"x"), abs(b"x"));
        let ip: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(Address::from(ip), ip);
        assert_ne!(unix("/a"), ip);
        assert_ne!(Address::from(ip), unix("/a"));
    }
}
