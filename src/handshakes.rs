//! Handshakes in flight on a port: the connections in SYN_RECV, as the
//! kernel's socket diagnostics (`NETLINK_SOCK_DIAG`, what `ss` reads) list
//! them. Listing needs no privilege.
//!
//! A retiring process asks this to know when its listeners hold no
//! handshake that could still complete: closing a listener drops its
//! request sockets, and the client's final ACK then meets a RST (unless
//! `net.ipv4.tcp_migrate_req` is 1). The kernel does not say which listener
//! of a `SO_REUSEPORT` group a request socket belongs to, so the list
//! covers the whole port, siblings' handshakes included.
//!
//! The encoding and decoding are pure functions over bytes, tested without
//! a socket; [`in_flight`] is the one call that talks to the kernel,
//! through [`crate::sockdiag`]. A reply it cannot read whole is an error,
//! which the caller treats as not seeing (the listeners then stay open for
//! the whole window), never as fewer handshakes.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::sockdiag::{self, NLMSG_HDR};

/// One handshake: the local address it reached, and the client's.
pub(crate) type Handshake = (SocketAddr, SocketAddr);

/// `TCP_SYN_RECV` from the kernel's TCP states; the dump adds request
/// sockets (`TCP_NEW_SYN_RECV`) to it.
const TCP_SYN_RECV: u32 = 3;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg`, up to and including its inode.
const MSG_LEN: usize = 72;
/// The whole request: a netlink header and `inet_diag_req_v2`.
const REQUEST_LEN: usize = NLMSG_HDR + REQ_LEN;

/// Lists the handshakes in flight on `local`'s port (all of them when its
/// address is unspecified, those to its address otherwise), reading into
/// `buf` ([`sockdiag::DUMP_BUFFER`] bytes; a reply that does not fit is an
/// error).
pub(crate) fn in_flight(local: SocketAddr, buf: &mut [u8]) -> io::Result<Vec<Handshake>> {
    let mut found = Vec::new();
    sockdiag::dump(&request(local), buf, |body| add(body, local, &mut found))?;
    Ok(found)
}

/// Adds the handshake one socket of the dump describes to `found`, if it
/// reached `local`.
fn add(body: &[u8], local: SocketAddr, found: &mut Vec<Handshake>) {
    if let Some(pair) = handshake(body).filter(|(l, _)| matches(local, *l)) {
        found.push(pair);
    }
}

/// The dump request for `local`'s family and port, in SYN_RECV.
fn request(local: SocketAddr) -> [u8; REQUEST_LEN] {
    let mut r = [0u8; REQUEST_LEN];
    r[..NLMSG_HDR].copy_from_slice(&sockdiag::header(REQ_LEN));
    // inet_diag_req_v2: family, protocol, extensions, pad, states, sockid.
    let req = &mut r[NLMSG_HDR..];
    req[0] = family(local) as u8;
    req[1] = libc::IPPROTO_TCP as u8;
    req[4..8].copy_from_slice(&(1u32 << TCP_SYN_RECV).to_ne_bytes());
    // The dump skips sockets on other local ports in the kernel.
    req[8..10].copy_from_slice(&local.port().to_be_bytes());
    r
}

fn family(addr: SocketAddr) -> libc::c_int {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

/// Whether a handshake to `addr` reached a listener bound to `local`.
fn matches(local: SocketAddr, addr: SocketAddr) -> bool {
    addr.port() == local.port() && (local.ip().is_unspecified() || local.ip() == addr.ip())
}

/// Decodes the addresses of one `inet_diag_msg`.
fn handshake(msg: &[u8]) -> Option<Handshake> {
    if msg.len() < MSG_LEN {
        return None;
    }
    let family = libc::c_int::from(msg[0]);
    // inet_diag_sockid from byte 4: sport, dport (big-endian), src[16], dst[16].
    let sport = u16::from_be_bytes([msg[4], msg[5]]);
    let dport = u16::from_be_bytes([msg[6], msg[7]]);
    let src: [u8; 16] = msg[8..24].try_into().ok()?;
    let dst: [u8; 16] = msg[24..40].try_into().ok()?;
    let ip = |b: [u8; 16]| -> Option<IpAddr> {
        match family {
            libc::AF_INET => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
            libc::AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(b))),
            _ => None,
        }
    };
    Some((
        SocketAddr::new(ip(src)?, sport),
        SocketAddr::new(ip(dst)?, dport),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockdiag::tests::message;
    use crate::sockdiag::{DUMP_BUFFER, Parsed, SOCK_DIAG_BY_FAMILY, parse};

    fn diag(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut b = vec![0u8; MSG_LEN];
        b[0] = libc::AF_INET as u8;
        b[1] = 12; // TCP_NEW_SYN_RECV: a request socket
        b[4..6].copy_from_slice(&sport.to_be_bytes());
        b[6..8].copy_from_slice(&dport.to_be_bytes());
        b[8..12].copy_from_slice(&src);
        b[24..28].copy_from_slice(&dst);
        b
    }

    fn handshakes(buf: &[u8], local: SocketAddr) -> (Parsed, Vec<Handshake>) {
        let mut found = Vec::new();
        let parsed = parse(buf, &mut |body: &[u8]| add(body, local, &mut found));
        (parsed, found)
    }

    #[test]
    fn the_request_asks_for_syn_recv_on_one_port() {
        let r = request("10.0.0.1:9000".parse().unwrap());
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes(r[4..6].try_into().unwrap()), 20);
        assert_eq!(r[16], libc::AF_INET as u8);
        assert_eq!(r[17], libc::IPPROTO_TCP as u8);
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), 1 << 3);
        assert_eq!(&r[24..26], &9000u16.to_be_bytes());
        let r6 = request("[::1]:9000".parse().unwrap());
        assert_eq!(r6[16], libc::AF_INET6 as u8);
    }

    #[test]
    fn a_dump_yields_the_handshakes_to_the_listeners_address() {
        let local: SocketAddr = "10.0.0.1:9000".parse().unwrap();
        let mut buf = message(
            SOCK_DIAG_BY_FAMILY,
            &diag([10, 0, 0, 1], 9000, [10, 0, 0, 2], 40000),
        );
        // Another local address on the same port: a listener bound to
        // 10.0.0.1 never sees it.
        buf.extend(message(
            SOCK_DIAG_BY_FAMILY,
            &diag([10, 0, 0, 3], 9000, [10, 0, 0, 2], 40001),
        ));
        assert_eq!(
            handshakes(&buf, local),
            (
                Parsed::More,
                vec![(local, "10.0.0.2:40000".parse().unwrap())]
            )
        );
        // A wildcard listener sees both.
        let any: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        assert_eq!(handshakes(&buf, any).1.len(), 2);
        // A message too short to hold addresses is skipped, not misread.
        let short = message(SOCK_DIAG_BY_FAMILY, &[0; 8]);
        assert_eq!(handshakes(&short, any), (Parsed::More, vec![]));
    }

    #[test]
    fn the_kernel_answers_without_privilege() {
        // Whoever runs the tests (CI runs them as uid 65534 too) can list;
        // a listener with nothing in flight has an empty list.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut buf = vec![0; DUMP_BUFFER];
        let found = in_flight(listener.local_addr().unwrap(), &mut buf).unwrap();
        assert!(found.is_empty(), "{found:?}");
        // A reply that does not fit (here the dump's end, 20 bytes, in 8)
        // is an error, which the window treats as not seeing.
        let e = in_flight(listener.local_addr().unwrap(), &mut buf[..8]).unwrap_err();
        assert!(e.to_string().contains("cut to the 8-byte buffer"), "{e}");
    }
}
