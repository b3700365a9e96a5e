//! Who owns each abstract Unix socket name, from the kernel's socket
//! diagnostics for Unix sockets (`unix_diag`, what `ss -x` reads): a dump
//! of the network namespace's named sockets with their names
//! (`UDIAG_SHOW_NAME`) and the uid of the socket's owner
//! (`UDIAG_SHOW_UID`, Linux 5.3 and later; an older kernel leaves it out,
//! and the owner is then unknown). Names come as bytes, whatever they hold.
//!
//! The request and the decoding are pure and tested over bytes; [`names`]
//! is the one call that talks to the kernel, through [`crate::sockdiag`].

use std::io;

use crate::sockdiag::{self, NLMSG_HDR, attributes};

/// `struct unix_diag_req`.
const REQ_LEN: usize = 24;
/// `struct unix_diag_msg`: family, type, state, pad, inode, cookie.
const MSG_LEN: usize = 16;
/// The whole request: a netlink header and `unix_diag_req`.
const REQUEST_LEN: usize = NLMSG_HDR + REQ_LEN;
/// From `<linux/unix_diag.h>`.
const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_UID: u32 = 0x40;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_UID: u16 = 7;
/// The states asked for: a bound socket that neither listens nor is
/// connected is `TCP_CLOSE`, as a claim is; `TCP_LISTEN`, for a claim that
/// will take connections. Connected sockets, which carry their listener's
/// name too, are left out in the kernel.
const STATES: u32 = 1 << 7 | 1 << 10;

/// One named socket: its name (without the abstract name's leading NUL)
/// and its owner's uid, if the kernel said.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Named {
    pub(crate) name: Vec<u8>,
    pub(crate) uid: Option<u32>,
}

/// The abstract names in this network namespace that start with `prefix`,
/// with their owners, reading the dump into `buf`
/// ([`sockdiag::DUMP_BUFFER`] bytes).
pub(crate) fn names(prefix: &[u8], buf: &mut [u8]) -> io::Result<Vec<Named>> {
    let mut found = Vec::new();
    sockdiag::dump(&request(), buf, |body| {
        if let Some(named) = decode(body).filter(|n| n.name.starts_with(prefix)) {
            found.push(named);
        }
    })?;
    Ok(found)
}

/// The dump request: every Unix socket in [`STATES`], with its name and
/// owner.
fn request() -> [u8; REQUEST_LEN] {
    let mut r = [0u8; REQUEST_LEN];
    r[..NLMSG_HDR].copy_from_slice(&sockdiag::header(REQ_LEN));
    // unix_diag_req: family, protocol, pad, states, inode, show, cookie.
    let req = &mut r[NLMSG_HDR..];
    req[0] = libc::AF_UNIX as u8;
    req[4..8].copy_from_slice(&STATES.to_ne_bytes());
    req[12..16].copy_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_UID).to_ne_bytes());
    r
}

/// Decodes one `unix_diag_msg` and its attributes: a socket with an
/// abstract name, or `None` (no name, or a path in the file system).
fn decode(msg: &[u8]) -> Option<Named> {
    let attrs = msg.get(MSG_LEN..)?;
    let mut name = None;
    let mut uid = None;
    for (kind, payload) in attributes(attrs) {
        match kind {
            UNIX_DIAG_NAME => name = Some(payload),
            UNIX_DIAG_UID => uid = payload.try_into().ok().map(u32::from_ne_bytes),
            _ => {}
        }
    }
    // An abstract name starts with a NUL; a path does not.
    let name = name?.strip_prefix(&[0])?;
    Some(Named {
        name: name.to_vec(),
        uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockdiag::tests::{attribute, message};
    use crate::sockdiag::{DUMP_BUFFER, Parsed, SOCK_DIAG_BY_FAMILY, parse};

    fn socket(name: Option<&[u8]>, uid: Option<u32>) -> Vec<u8> {
        let mut b = vec![0u8; MSG_LEN];
        b[0] = libc::AF_UNIX as u8;
        b[1] = libc::SOCK_STREAM as u8;
        b[2] = 7;
        // Attributes come in the kernel's order, which decoding ignores.
        if let Some(uid) = uid {
            b.extend(attribute(UNIX_DIAG_UID, &uid.to_ne_bytes()));
        }
        b.extend(attribute(6, &[0; 2]));
        if let Some(name) = name {
            b.extend(attribute(UNIX_DIAG_NAME, name));
        }
        b
    }

    #[test]
    fn the_request_asks_for_names_and_owners() {
        let r = request();
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 40);
        assert_eq!(u16::from_ne_bytes(r[4..6].try_into().unwrap()), 20);
        assert_eq!(r[16], libc::AF_UNIX as u8);
        let states = u32::from_ne_bytes(r[20..24].try_into().unwrap());
        assert_eq!(states, (1 << 7) | (1 << 10));
        let show = u32::from_ne_bytes(r[28..32].try_into().unwrap());
        assert_eq!(show, 0x41);
    }

    #[test]
    fn a_reply_says_each_abstract_name_and_its_owner() {
        let mut buf = message(
            SOCK_DIAG_BY_FAMILY,
            &socket(Some(b"\0drainport|a|1|\xff\n"), Some(65534)),
        );
        // Before Linux 5.3: no owner.
        buf.extend(message(
            SOCK_DIAG_BY_FAMILY,
            &socket(Some(b"\0drainport|a|2|x"), None),
        ));
        // Unnamed, and a path in the file system: not abstract names.
        buf.extend(message(SOCK_DIAG_BY_FAMILY, &socket(None, Some(0))));
        buf.extend(message(
            SOCK_DIAG_BY_FAMILY,
            &socket(Some(b"/run/x.sock\0"), Some(0)),
        ));
        // Too short to be a socket at all.
        buf.extend(message(SOCK_DIAG_BY_FAMILY, &[0; 8]));
        let mut found = Vec::new();
        let parsed = parse(&buf, &mut |body: &[u8]| found.extend(decode(body)));
        assert_eq!(parsed, Parsed::More);
        assert_eq!(
            found,
            [
                Named {
                    name: b"drainport|a|1|\xff\n".to_vec(),
                    uid: Some(65534)
                },
                Named {
                    name: b"drainport|a|2|x".to_vec(),
                    uid: None
                },
            ]
        );
        // An owner of the wrong size is no owner.
        let odd = socket(Some(b"\0n"), None);
        let mut odd = odd;
        odd.extend(attribute(UNIX_DIAG_UID, &[1, 2]));
        assert_eq!(decode(&odd).unwrap().uid, None);
    }

    #[test]
    fn the_kernel_names_the_owner_of_a_name() {
        // Any user can list (CI runs the tests as uid 65534 too), and sees
        // a name it bound as its own, byte for byte.
        let name = format!("drainport-diag-test|{}|\u{ff}", std::process::id());
        let socket = std::os::unix::net::UnixDatagram::bind_addr(
            &<std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
                name.as_bytes(),
            )
            .unwrap(),
        )
        .unwrap();
        let mut buf = vec![0; DUMP_BUFFER];
        let found = names(name.as_bytes(), &mut buf).unwrap();
        let me = crate::sys::process::euid();
        assert_eq!(
            found,
            [Named {
                name: name.into_bytes(),
                uid: Some(me)
            }]
        );
        // A buffer too small for one reply is an error, never a short
        // list: what a 16 KiB page kernel did to the 4 KiB buffer of old.
        let e = names(b"", &mut buf[..64]).unwrap_err();
        assert!(e.to_string().contains("cut to the 64-byte buffer"), "{e}");
        drop(socket);
    }
}
