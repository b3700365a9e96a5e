//! The listeners' life across a takeover: lent while a successor takes
//! them, so that a retirement does not close them under it, and handed
//! over by closing only this process's copies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{BorrowedFd, OwnedFd};

use mio::Poll;

use super::*;

fn admission(poll: &Poll, now: Instant) -> (Admission, SocketAddr) {
    let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listeners.local_addr();
    let a = Admission::new(1, listeners, poll.registry(), 1000, None, now).unwrap();
    a.listen(16).unwrap();
    (a, addr)
}

/// Runs a retirement's window to its end.
fn end_window(a: &mut Admission, t0: Instant) {
    let mut buf = vec![0u8; sockdiag::DUMP_BUFFER];
    a.on_timer(0, t0 + window::WINDOW_MAX, &mut buf);
}

#[test]
fn lent_listeners_stay_open_past_the_window_until_returned() {
    let poll = Poll::new().unwrap();
    let t0 = Instant::now();
    let (mut a, addr) = admission(&poll, t0);
    let n = a.count(addr);
    assert!(n >= 1 && a.listener(addr, n - 1).is_some() && a.listener(addr, n).is_none());
    a.retire(t0).unwrap();
    a.lend(addr, true);
    end_window(&mut a, t0);
    let t = t0 + window::WINDOW_MAX;
    assert!(matches!(a.accept(0, t), Accept::Empty));
    assert!(!a.is_closed() && a.count(addr) == n, "closed while lent");
    // Returned: the retirement closes them at once.
    a.lend(addr, false);
    assert_eq!(a.due(0, t), Some(t));
    assert!(matches!(a.accept(0, t), Accept::Closed));
    assert_eq!(a.count(addr), 0);
    assert!(a.listener(addr, 0).is_none());
}

#[test]
fn handing_over_closes_only_this_processs_copies() {
    let poll = Poll::new().unwrap();
    let t0 = Instant::now();
    let (mut a, addr) = admission(&poll, t0);
    // The successor's copies.
    let theirs: Vec<OwnedFd> = (0..a.count(addr))
        .map(|i| {
            let (fd, _) = a.listener(addr, i).unwrap();
            // SAFETY: `fd` stays open while `a` holds it, past this call.
            unsafe { BorrowedFd::borrow_raw(fd) }
                .try_clone_to_owned()
                .unwrap()
        })
        .collect();
    // A client queued on the listeners, and one retirement under way.
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"queued\n").unwrap();
    a.retire(t0).unwrap();
    a.lend(addr, true);
    a.hand_over(addr);
    assert!(a.is_closed() && a.count(addr) == 0);
    assert!(matches!(a.accept(0, t0), Accept::Closed));
    // The queue lives on in the successor's copies: the client is there,
    // not reset.
    let served = theirs.into_iter().find_map(|fd| {
        let listener = std::net::TcpListener::from(fd);
        listener.set_nonblocking(true).unwrap();
        listener.accept().ok()
    });
    let (mut stream, _) = served.expect("the queued client, in the successor's copies");
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"queued\n");
}
