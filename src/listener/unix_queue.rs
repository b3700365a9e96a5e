//! How many connections wait in a listening Unix socket's accept queue,
//! which `TCP_INFO` cannot say: the kernel's Unix socket diagnostics
//! (`unix_diag`, what `ss -xl` reads) give a listener's queue length as
//! `UNIX_DIAG_RQLEN` (`udiag_rqueue`). The socket is found by its inode
//! in a dump of the namespace's listening Unix sockets: asked once per
//! socket at the drain, never on the hot path.
//!
//! The request and the decoding are pure and tested over bytes;
//! [`queued`] is the one call that talks to the kernel, through
//! [`crate::sockdiag`].

use std::io;
use std::os::fd::BorrowedFd;

use crate::sockdiag::{self, DUMP_BUFFER, NLMSG_HDR, attributes};
use crate::sys::file;

/// `struct unix_diag_req`.
const REQ_LEN: usize = 24;
/// `struct unix_diag_msg`: family, type, state, pad, inode, cookie.
const MSG_LEN: usize = 16;
const REQUEST_LEN: usize = NLMSG_HDR + REQ_LEN;
/// From `<linux/unix_diag.h>`.
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_RQLEN: u16 = 4;
/// Listening sockets only (`TCP_LISTEN`).
const LISTENING: u32 = 1 << 10;

/// How many connections wait to be accepted on the listening Unix socket
/// `fd`.
pub(crate) fn queued(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let inode = file::stat(fd)?.st_ino;
    let mut buf = vec![0; DUMP_BUFFER];
    let mut found = None;
    sockdiag::dump(&request(), &mut buf, |body| {
        if let Some((ino, queue)) = decode(body) {
            if u64::from(ino) == inode {
                found = Some(queue);
            }
        }
    })?;
    found.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "the socket diagnostics do not list this socket",
        )
    })
}

/// The dump request: every listening Unix socket, with its queue lengths.
fn request() -> [u8; REQUEST_LEN] {
    let mut r = [0u8; REQUEST_LEN];
    r[..NLMSG_HDR].copy_from_slice(&sockdiag::header(REQ_LEN));
    // unix_diag_req: family, protocol, pad, states, inode, show, cookie.
    let req = &mut r[NLMSG_HDR..];
    req[0] = libc::AF_UNIX as u8;
    req[4..8].copy_from_slice(&LISTENING.to_ne_bytes());
    req[12..16].copy_from_slice(&UDIAG_SHOW_RQLEN.to_ne_bytes());
    r
}

/// One `unix_diag_msg`: its inode and, for a listener, how many
/// connections wait in its queue.
fn decode(msg: &[u8]) -> Option<(u32, u32)> {
    let inode = u32::from_ne_bytes(msg.get(4..8)?.try_into().ok()?);
    let (_, rqlen) = attributes(msg.get(MSG_LEN..)?).find(|&(kind, _)| kind == UNIX_DIAG_RQLEN)?;
    let queue = u32::from_ne_bytes(rqlen.get(0..4)?.try_into().ok()?);
    Some((inode, queue))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockdiag::tests::attribute;
    use std::os::fd::AsFd;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn the_request_asks_for_listeners_and_their_queues() {
        let r = request();
        assert_eq!(r[NLMSG_HDR], libc::AF_UNIX as u8);
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), 1 << 10);
        assert_eq!(u32::from_ne_bytes(r[28..32].try_into().unwrap()), 0x10);
    }

    #[test]
    fn a_reply_gives_the_inode_and_the_queue() {
        let mut msg = vec![0u8; MSG_LEN];
        msg[4..8].copy_from_slice(&77u32.to_ne_bytes());
        assert_eq!(decode(&msg), None, "no queue length: no answer");
        let rqlen = [3u32.to_ne_bytes(), 128u32.to_ne_bytes()].concat();
        msg.extend(attribute(UNIX_DIAG_RQLEN, &rqlen));
        assert_eq!(decode(&msg), Some((77, 3)));
        assert_eq!(decode(&msg[..6]), None);
    }

    #[test]
    fn the_kernel_counts_the_connections_waiting() {
        let dir = std::env::temp_dir().join(format!("drainport-unixq-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("q.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let Ok(none) = queued(listener.as_fd()) else {
            std::fs::remove_dir_all(&dir).unwrap();
            return eprintln!("skipped: the kernel's Unix socket diagnostics cannot be asked");
        };
        assert_eq!(none, 0);
        let clients: Vec<UnixStream> = (0..3)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        assert_eq!(queued(listener.as_fd()).unwrap(), 3);
        drop(listener.accept().unwrap());
        assert_eq!(queued(listener.as_fd()).unwrap(), 2);
        drop(clients);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
