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
//! a socket; [`in_flight`] is the one call that talks to the kernel.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::sys::syscall;

/// One handshake: the local address it reached, and the client's.
pub(crate) type Handshake = (SocketAddr, SocketAddr);

/// `SOCK_DIAG_BY_FAMILY` from `<linux/sock_diag.h>`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `TCP_SYN_RECV` from the kernel's TCP states; the dump adds request
/// sockets (`TCP_NEW_SYN_RECV`) to it.
const TCP_SYN_RECV: u32 = 3;
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg`, up to and including its inode.
const MSG_LEN: usize = 72;
/// The whole request: a netlink header and `inet_diag_req_v2`.
const REQUEST_LEN: usize = NLMSG_HDR + REQ_LEN;
/// How long one reply may take before the question counts as unanswered.
/// The kernel answers a dump at once; this only bounds a broken one.
const REPLY_TIMEOUT: Duration = Duration::from_millis(500);
/// Reads per question. A dump arrives a buffer at a time, and 32768
/// buffers of 4 KiB hold far more handshakes than a backlog allows.
const MAX_READS: usize = 32 * 1024;
/// The most of the caller's buffer one read uses. The kernel fills a dump
/// buffer up to the reader's size, but never less than a page's worth
/// (`NLMSG_GOODSIZE`), so a page is the least that loses nothing; more
/// would only save reads on a port with thousands of handshakes.
const READ_AT_MOST: usize = 4096;

/// Lists the handshakes in flight on `local`'s port (all of them when its
/// address is unspecified, those to its address otherwise), reading into
/// `buf` (at least a page, or the dump may be cut).
pub(crate) fn in_flight(local: SocketAddr, buf: &mut [u8]) -> io::Result<Vec<Handshake>> {
    let len = buf.len().min(READ_AT_MOST);
    let buf = &mut buf[..len];
    let fd = syscall!(socket(
        libc::AF_NETLINK,
        libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
        libc::NETLINK_SOCK_DIAG
    ))?;
    // SAFETY: `socket` just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: REPLY_TIMEOUT.as_micros() as libc::suseconds_t,
    };
    // SAFETY: the option value is a live timeval and the length is its size.
    syscall!(setsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVTIMEO,
        (&raw const timeout).cast(),
        mem::size_of::<libc::timeval>() as libc::socklen_t,
    ))?;
    let request = request(local);
    // SAFETY: all-zero is a valid sockaddr_nl: the kernel, pid 0.
    let mut kernel: libc::sockaddr_nl = unsafe { mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `request` and `kernel` are live for the call, with their
    // lengths; sendto only reads them.
    syscall!(sendto(
        fd.as_raw_fd(),
        request.as_ptr().cast(),
        request.len(),
        0,
        (&raw const kernel).cast(),
        mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
    ))?;
    let mut found = Vec::new();
    for _ in 0..MAX_READS {
        // SAFETY: `buf` is live and writable for its whole length.
        let n = syscall!(recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0))?;
        match parse(&buf[..n as usize], local, &mut found) {
            Parsed::More => {}
            Parsed::Done => return Ok(found),
            Parsed::Failed(errno) => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
    Err(io::Error::other("the handshake list did not end"))
}

/// The dump request for `local`'s family and port, in SYN_RECV.
fn request(local: SocketAddr) -> [u8; REQUEST_LEN] {
    let mut r = [0u8; REQUEST_LEN];
    r[0..4].copy_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    r[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    r[6..8].copy_from_slice(&flags.to_ne_bytes());
    r[8..12].copy_from_slice(&1u32.to_ne_bytes());
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

/// What one buffer of the dump said.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    More,
    Done,
    /// The kernel refused, with this errno.
    Failed(i32),
}

/// Decodes one buffer of netlink messages, adding each handshake to `local`
/// to `found`.
fn parse(mut buf: &[u8], local: SocketAddr, found: &mut Vec<Handshake>) -> Parsed {
    while buf.len() >= NLMSG_HDR {
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(buf[4..6].try_into().unwrap());
        if len < NLMSG_HDR || len > buf.len() {
            return Parsed::Failed(libc::EBADMSG);
        }
        let body = &buf[NLMSG_HDR..len];
        match kind {
            k if k == libc::NLMSG_DONE as u16 => return Parsed::Done,
            k if k == libc::NLMSG_ERROR as u16 => {
                let code = body.get(0..4).map_or(-libc::EBADMSG, |b| {
                    i32::from_ne_bytes(b.try_into().unwrap())
                });
                return Parsed::Failed(code.checked_neg().unwrap_or(libc::EBADMSG));
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Some(pair) = handshake(body).filter(|(l, _)| matches(local, *l)) {
                    found.push(pair);
                }
            }
            _ => {}
        }
        // Messages are padded to four bytes.
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or_default();
    }
    Parsed::More
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

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDR + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        m.resize((len + 3) & !3, 0);
        m
    }

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
        let mut buf = message(20, &diag([10, 0, 0, 1], 9000, [10, 0, 0, 2], 40000));
        // Another local address on the same port: a listener bound to
        // 10.0.0.1 never sees it.
        buf.extend(message(
            20,
            &diag([10, 0, 0, 3], 9000, [10, 0, 0, 2], 40001),
        ));
        let mut found = Vec::new();
        assert_eq!(parse(&buf, local, &mut found), Parsed::More);
        assert_eq!(
            found,
            [(local, "10.0.0.2:40000".parse().unwrap())],
            "{found:?}"
        );
        // A wildcard listener sees both.
        found.clear();
        let any: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        assert_eq!(parse(&buf, any, &mut found), Parsed::More);
        assert_eq!(found.len(), 2);
        assert_eq!(
            parse(&message(libc::NLMSG_DONE as u16, &[0; 4]), any, &mut found),
            Parsed::Done
        );
    }

    #[test]
    fn errors_and_garbage_end_the_dump() {
        let any: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        let mut found = Vec::new();
        let err = message(libc::NLMSG_ERROR as u16, &(-libc::EPERM).to_ne_bytes());
        assert_eq!(parse(&err, any, &mut found), Parsed::Failed(libc::EPERM));
        let mut short = message(20, &[0; 8]);
        short[0..4].copy_from_slice(&4000u32.to_ne_bytes());
        assert_eq!(
            parse(&short, any, &mut found),
            Parsed::Failed(libc::EBADMSG)
        );
        // A message too short to hold addresses is skipped, not misread.
        assert_eq!(parse(&message(20, &[0; 8]), any, &mut found), Parsed::More);
        assert!(found.is_empty());
    }

    #[test]
    fn the_kernel_answers_without_privilege() {
        // Whoever runs the tests (CI runs them as uid 65534 too) can list;
        // a listener with nothing in flight has an empty list.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let found = in_flight(listener.local_addr().unwrap(), &mut [0; 4096]).unwrap();
        assert!(found.is_empty(), "{found:?}");
    }
}
