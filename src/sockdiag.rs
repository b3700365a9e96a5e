//! Asking the kernel's socket diagnostics (`NETLINK_SOCK_DIAG`, what `ss`
//! reads) for a dump: one netlink socket, one request, and the replies read
//! until the dump ends. Listing needs no privilege.
//!
//! Guarantees: every reply is read whole or not at all. A reply longer than
//! the caller's buffer is an error ([`truncated`]), never a shorter list:
//! a caller that cannot see everything must know it. A dump that the
//! kernel refuses, that does not end, or that is garbled is an error too.
//!
//! The message framing is pure ([`parse`], [`attributes`]) and tested over
//! bytes; [`dump`] is the one call that talks to the kernel. What a
//! request asks and what a reply's body means is the caller's:
//! [`crate::handshakes`] for TCP, [`crate::claim`] for Unix sockets'
//! names, `listener::unix_queue` for a Unix listener's queue.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use crate::sys::netlink;

/// `SOCK_DIAG_BY_FAMILY` from `<linux/sock_diag.h>`: the type of a request
/// and of each socket in the answer.
pub(crate) const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `struct nlmsghdr`.
pub(crate) const NLMSG_HDR: usize = 16;
/// `struct nlattr`: a length and a type, each 16 bits.
const NLA_HDR: usize = 4;
/// The buffer a dump should be read into. The kernel fills each reply up
/// to the larger of a page's worth (`NLMSG_GOODSIZE`: up to 8 KiB, on
/// 16 KiB and 64 KiB page kernels too) and the largest read the socket has
/// seen, capped near 32 KiB, so 64 KiB holds any reply on any page size.
/// The loop's shared read buffer is that size and is lent to a look.
pub(crate) const DUMP_BUFFER: usize = 64 * 1024;
/// How long one reply may take before the question counts as unanswered.
/// The kernel answers a dump at once; this only bounds a broken one.
const REPLY_TIMEOUT: Duration = Duration::from_millis(500);
/// Reads per question. A dump arrives a reply at a time, each of at least
/// a page's worth: 32768 of them hold far more sockets than a port's
/// handshakes or a namespace's Unix sockets.
const MAX_READS: usize = 32 * 1024;

/// A dump request's netlink header, for a body of `body_len` bytes.
pub(crate) fn header(body_len: usize) -> [u8; NLMSG_HDR] {
    let mut h = [0u8; NLMSG_HDR];
    h[0..4].copy_from_slice(&((NLMSG_HDR + body_len) as u32).to_ne_bytes());
    h[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    h[6..8].copy_from_slice(&flags.to_ne_bytes());
    h[8..12].copy_from_slice(&1u32.to_ne_bytes());
    h
}

/// Sends `request` (a [`header`] and its body) and gives `each` the body of
/// every socket in the answer, reading into `buf` (at least
/// [`DUMP_BUFFER`] bytes, or a long reply is an error).
pub(crate) fn dump(request: &[u8], buf: &mut [u8], mut each: impl FnMut(&[u8])) -> io::Result<()> {
    let fd = netlink::sock_diag(REPLY_TIMEOUT)?;
    netlink::send_to_kernel(fd.as_fd(), request)?;
    for _ in 0..MAX_READS {
        let n = match receive(fd.as_fd(), buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        };
        match parse(&buf[..n], &mut each) {
            Parsed::More => {}
            Parsed::Done => return Ok(()),
            Parsed::Failed(errno) => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
    Err(io::Error::other("the socket list did not end"))
}

/// Reads one reply into `buf`, whole: the length it holds, or an error if
/// it was longer.
fn receive(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let (len, flags) = netlink::receive(fd, buf)?;
    truncated(len, flags, buf.len())
}

/// What `recvmsg` said about one reply (its real length, by `MSG_TRUNC`, and
/// the flags it set), for a buffer of `room` bytes: the length read, or an
/// error if the reply did not fit. A reply is cut wherever the buffer ends,
/// on a message's boundary as often as not, and what was cut would simply
/// be missing from the list.
pub(crate) fn truncated(len: usize, flags: libc::c_int, room: usize) -> io::Result<usize> {
    if flags & libc::MSG_TRUNC != 0 || len > room {
        return Err(io::Error::other(format!(
            "a {len}-byte reply was cut to the {room}-byte buffer"
        )));
    }
    Ok(len)
}

/// What one reply of the dump said.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    More,
    Done,
    /// The kernel refused, with this errno, or the reply was garbled
    /// (`EBADMSG`).
    Failed(i32),
}

/// Decodes one reply's netlink messages, giving `each` the body of every
/// socket in it.
pub(crate) fn parse(mut buf: &[u8], each: &mut impl FnMut(&[u8])) -> Parsed {
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
            SOCK_DIAG_BY_FAMILY => each(body),
            _ => {}
        }
        buf = buf.get(align(len)..).unwrap_or_default();
    }
    Parsed::More
}

/// The attributes (`struct nlattr`) in `buf`, as their type and payload.
/// A garbled one ends the list: what follows it cannot be framed.
pub(crate) fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(buf.get(0..2)?.try_into().ok()?));
        let kind = u16::from_ne_bytes(buf.get(2..4)?.try_into().ok()?);
        let payload = buf.get(NLA_HDR..len)?;
        buf = buf.get(align(len)..).unwrap_or_default();
        // The top two bits are flags (nested, byte order), not the type.
        Some((kind & 0x3fff, payload))
    })
}

/// Netlink messages and attributes are padded to four bytes.
fn align(len: usize) -> usize {
    (len + 3) & !3
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One netlink message of type `kind` around `body`, padded.
    pub(crate) fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDR + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        m.resize(align(len), 0);
        m
    }

    /// One attribute of type `kind` holding `payload`, padded.
    pub(crate) fn attribute(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = NLA_HDR + payload.len();
        let mut a = Vec::new();
        a.extend_from_slice(&(len as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(payload);
        a.resize(align(len), 0);
        a
    }

    fn bodies(buf: &[u8]) -> (Parsed, Vec<Vec<u8>>) {
        let mut found = Vec::new();
        let parsed = parse(buf, &mut |body: &[u8]| found.push(body.to_vec()));
        (parsed, found)
    }

    #[test]
    fn the_header_asks_for_a_dump() {
        let h = header(56);
        assert_eq!(u32::from_ne_bytes(h[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes(h[4..6].try_into().unwrap()), 20);
        let flags = u16::from_ne_bytes(h[6..8].try_into().unwrap());
        assert_eq!(flags, (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16);
    }

    #[test]
    fn a_reply_yields_each_socket_until_done() {
        let mut buf = message(SOCK_DIAG_BY_FAMILY, b"one");
        buf.extend(message(libc::NLMSG_NOOP as u16, b"skipped"));
        buf.extend(message(SOCK_DIAG_BY_FAMILY, b"second"));
        assert_eq!(
            bodies(&buf),
            (Parsed::More, vec![b"one".to_vec(), b"second".to_vec()])
        );
        buf.extend(message(libc::NLMSG_DONE as u16, &[0; 4]));
        buf.extend(message(SOCK_DIAG_BY_FAMILY, b"after the end"));
        assert_eq!(bodies(&buf).0, Parsed::Done);
        assert_eq!(bodies(&buf).1.len(), 2);
    }

    #[test]
    fn errors_and_garbage_end_the_dump() {
        let err = message(libc::NLMSG_ERROR as u16, &(-libc::EPERM).to_ne_bytes());
        assert_eq!(bodies(&err).0, Parsed::Failed(libc::EPERM));
        // A length past the reply's end: the rest cannot be framed.
        let mut long = message(SOCK_DIAG_BY_FAMILY, &[0; 8]);
        long[0..4].copy_from_slice(&4000u32.to_ne_bytes());
        assert_eq!(bodies(&long), (Parsed::Failed(libc::EBADMSG), vec![]));
        let mut short = message(SOCK_DIAG_BY_FAMILY, &[0; 8]);
        short[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert_eq!(bodies(&short).0, Parsed::Failed(libc::EBADMSG));
    }

    #[test]
    fn a_cut_reply_is_an_error_not_a_short_list() {
        assert_eq!(truncated(4000, 0, 4096).unwrap(), 4000);
        assert_eq!(truncated(4096, 0, 4096).unwrap(), 4096);
        // What a 16 KiB page kernel sends into the 4 KiB buffer of old.
        let e = truncated(8000, libc::MSG_TRUNC, 4096).unwrap_err();
        assert!(e.to_string().contains("8000-byte reply"), "{e}");
        assert!(truncated(8000, 0, 4096).is_err());
        assert!(truncated(100, libc::MSG_TRUNC, 4096).is_err());
    }

    #[test]
    fn attributes_are_framed_and_garbage_ends_them() {
        let mut buf = attribute(0, b"name");
        buf.extend(attribute(7 | 0x8000, &1000u32.to_ne_bytes()));
        buf.extend(attribute(3, b""));
        let all: Vec<(u16, Vec<u8>)> = attributes(&buf).map(|(k, p)| (k, p.to_vec())).collect();
        assert_eq!(
            all,
            [
                (0, b"name".to_vec()),
                (7, 1000u32.to_ne_bytes().to_vec()),
                (3, vec![])
            ]
        );
        // A length shorter than its header, or past the end.
        let mut bad = attribute(0, b"x");
        bad[0..2].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(attributes(&bad).count(), 0);
        let mut past = attribute(0, b"x");
        past[0..2].copy_from_slice(&200u16.to_ne_bytes());
        assert_eq!(attributes(&past).count(), 0);
        assert_eq!(attributes(&[1, 0]).count(), 0);
    }
}
