//! The listeners' life across a takeover: lent while a successor takes
//! them, so that a retirement does not close them under it, and handed
//! over by closing only this process's copies, port by port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{BorrowedFd, OwnedFd};

use mio::Poll;

use super::*;

fn admission(poll: &Poll, addrs: &[&str], now: Instant) -> (Admission, Vec<Address>) {
    let addrs: Vec<SocketAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    let listeners = Listeners::open(&addrs, Vec::new()).unwrap();
    let bound = listeners.ports().iter().map(|p| p.addr.clone()).collect();
    let a = Admission::new(1, listeners, poll.registry(), 1000, None, now).unwrap();
    a.listen(16).unwrap();
    (a, bound)
}

/// Runs every retiring port's window to its end.
fn end_windows(a: &mut Admission, t0: Instant) {
    let mut buf = vec![0u8; sockdiag::DUMP_BUFFER];
    a.on_timer(0, t0 + window::WINDOW_MAX, &mut buf);
}

#[test]
fn lent_listeners_stay_open_past_the_window_until_returned() {
    let poll = Poll::new().unwrap();
    let t0 = Instant::now();
    let (mut a, addrs) = admission(&poll, &["127.0.0.1:0"], t0);
    let addr = &addrs[0];
    let n = a.available(addr).unwrap();
    assert!(a.listener(addr, n - 1).is_some() && a.listener(addr, n).is_none());
    a.retire(t0).unwrap();
    a.lend(addr, true);
    end_windows(&mut a, t0);
    let t = t0 + window::WINDOW_MAX;
    assert!(matches!(a.accept(0, t), Accept::Empty));
    assert!(!a.is_closed(), "closed while lent");
    assert_eq!(a.available(addr), Ok(n));
    // Returned: the retirement closes them at once.
    a.lend(addr, false);
    assert_eq!(a.due(0, t), Some(t));
    assert!(matches!(a.accept(0, t), Accept::Closed));
    assert_eq!(
        a.available(addr),
        Err(format!("its listeners on {addr} are closed"))
    );
    assert!(a.listener(addr, 0).is_none());
}

#[test]
fn handing_over_closes_only_this_processs_copies() {
    let poll = Poll::new().unwrap();
    let t0 = Instant::now();
    let (mut a, addrs) = admission(&poll, &["127.0.0.1:0"], t0);
    let addr = &addrs[0];
    // The successor's copies.
    let theirs: Vec<OwnedFd> = (0..a.available(addr).unwrap())
        .map(|i| {
            let (fd, _) = a.listener(addr, i).unwrap();
            // SAFETY: `fd` stays open while `a` holds it, past this call.
            unsafe { BorrowedFd::borrow_raw(fd) }
                .try_clone_to_owned()
                .unwrap()
        })
        .collect();
    // A client queued on the listeners, and a retirement under way.
    let mut client = TcpStream::connect(addr.ip().unwrap()).unwrap();
    client.write_all(b"queued\n").unwrap();
    a.retire(t0).unwrap();
    a.lend(addr, true);
    a.hand_over(addr);
    assert!(a.is_closed() && a.available(addr).is_err());
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

#[test]
fn a_port_handed_over_leaves_the_others_serving_and_needs_no_window() {
    let poll = Poll::new().unwrap();
    let t0 = Instant::now();
    let (mut a, addrs) = admission(&poll, &["127.0.0.1:0", "127.0.0.2:0"], t0);
    a.hand_over(&addrs[0]);
    assert!(!a.is_closed());
    assert!(a.available(&addrs[0]).is_err());
    assert!(a.available(&addrs[1]).is_ok());
    let mut client = TcpStream::connect(addrs[1].ip().unwrap()).unwrap();
    client.write_all(b"x").unwrap();
    let taken = (0..100).find_map(|_| match a.accept(0, t0) {
        Accept::Client(stream, _, _) => Some(stream),
        _ => {
            a.mark(0);
            a.listeners.mark_all();
            std::thread::sleep(Duration::from_millis(10));
            None
        }
    });
    assert!(taken.is_some(), "the other port took no client");
    // The drain retires only the port still held; when its window ends
    // and its queue is empty, the process is done.
    a.retire(t0).unwrap();
    end_windows(&mut a, t0);
    assert!(matches!(
        a.accept(0, t0 + window::WINDOW_MAX),
        Accept::Closed
    ));
    // Every port handed over: a drain has nothing to retire at all.
    let (mut b, addrs) = admission(&poll, &["127.0.0.1:0"], t0);
    b.hand_over(&addrs[0]);
    assert!(b.is_closed());
    b.retire(t0).unwrap();
    assert!(b.is_closed() && b.due(0, t0).is_none());
}
