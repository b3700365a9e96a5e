//! The successor's end against sockets of every wrong kind, and against a
//! process that answers wrongly (played here over a socket pair). Both ends
//! together, with the real channel, are tested in `control/tests.rs`.

use std::net::{SocketAddr, TcpListener as StdListener, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;

use super::*;
use crate::listener::Listeners;

/// Reuseport listeners on a free loopback port, as drainport opens them,
/// listening when `listen`.
fn listeners(listen: bool) -> Listeners {
    let l = Listeners::open(&["127.0.0.1:0".parse().unwrap()], Vec::new()).unwrap();
    if listen {
        l.listen(16).unwrap();
    }
    l
}

/// The address `l` serves.
fn addr_of(l: &Listeners) -> SocketAddr {
    l.ports()[0].addr.ip().unwrap()
}

/// A descriptor of its own for listener `i` of `l`.
fn copy(l: &Listeners, i: usize) -> OwnedFd {
    let (fd, _) = l.handle(0, i).unwrap();
    // SAFETY: `fd` is open for as long as `l` lives, which outlives this
    // call; the copy is a new descriptor.
    unsafe { BorrowedFd::borrow_raw(fd) }
        .try_clone_to_owned()
        .unwrap()
}

fn checked(fd: OwnedFd, addr: SocketAddr) -> Result<StdListener, String> {
    check(fd, addr, &mut Vec::new())
}

/// An IPv6 reuseport socket, listening, with `IPV6_V6ONLY` as given: on
/// `[::1]` when set, and on `[::]` when not (a specific address makes the
/// kernel set it anyway); `None` where this machine has no IPv6.
fn v6(v6only: libc::c_int) -> Option<(OwnedFd, SocketAddr)> {
    use crate::sys::socket;
    let fd = socket::tcp(libc::AF_INET6, false).unwrap();
    socket::set_int_opt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1).unwrap();
    socket::set_int_opt(fd.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, v6only).unwrap();
    let ip = if v6only == 1 {
        std::net::Ipv6Addr::LOCALHOST
    } else {
        std::net::Ipv6Addr::UNSPECIFIED
    };
    socket::bind(fd.as_fd(), &SocketAddr::from((ip, 0))).ok()?;
    socket::listen(fd.as_fd(), 4).unwrap();
    let addr = socket::local_addr(fd.as_fd()).unwrap();
    Some((fd, addr))
}

#[test]
fn a_listening_reuseport_socket_on_the_address_passes() {
    let l = listeners(true);
    let addr = addr_of(&l);
    let mut seen = Vec::new();
    let first = check(copy(&l, 0), addr, &mut seen).unwrap();
    assert_eq!(first.local_addr().unwrap(), addr);
    // The same socket twice is refused: one socket, one listener.
    let again = check(copy(&l, 0), addr, &mut seen).unwrap_err();
    assert_eq!(again, "is the same socket as another one");
    if l.open_count(0) > 1 {
        check(copy(&l, 1), addr, &mut seen).unwrap();
    }
}

#[test]
fn every_other_kind_of_descriptor_is_refused_with_its_reason() {
    let l = listeners(true);
    let addr = addr_of(&l);
    let idle = listeners(false);
    let elsewhere = listeners(true);
    let plain = StdListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = std::env::temp_dir().join(format!("drainport-check-{}", std::process::id()));
    let unix = UnixListener::bind(&dir).unwrap();
    let _ = std::fs::remove_file(&dir);
    let file = std::fs::File::open("/dev/null").unwrap();
    let cases: Vec<(OwnedFd, SocketAddr, String)> = vec![
        (copy(&idle, 0), addr_of(&idle), "is not listening".into()),
        (
            copy(&elsewhere, 0),
            addr,
            format!("is bound to {}, not {addr}", addr_of(&elsewhere)),
        ),
        (
            OwnedFd::from(plain.try_clone().unwrap()),
            plain.local_addr().unwrap(),
            "does not share its port (SO_REUSEPORT is off)".into(),
        ),
        (OwnedFd::from(udp), addr, "is not a TCP socket".into()),
        (OwnedFd::from(unix), addr, "is not an IPv4 socket".into()),
        (OwnedFd::from(file), addr, "is not a socket".into()),
    ];
    for (fd, addr, want) in cases {
        assert_eq!(checked(fd, addr).unwrap_err(), want);
    }
    match (v6(1), v6(0)) {
        (Some((only, only_addr)), Some((both, both_addr))) => {
            assert!(checked(only.try_clone().unwrap(), only_addr).is_ok());
            assert_eq!(checked(only, addr).unwrap_err(), "is not an IPv4 socket");
            assert_eq!(
                checked(both, both_addr).unwrap_err(),
                "takes IPv4 clients too (IPV6_V6ONLY is off)"
            );
        }
        _ => eprintln!("skipped: the IPv6 cases of the check: no ::1 here"),
    }
}

/// What a process says and does, played by a thread on one end of a
/// socket pair, while `exchange` runs on the other and fails. Returns the
/// error and every line the thread read.
fn against(
    addr: SocketAddr,
    play: impl FnOnce(&mut Vec<u8>, BorrowedFd<'_>) + Send + 'static,
) -> (String, String) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let process = thread::spawn(move || {
        let mut heard = Vec::new();
        play(&mut heard, theirs.as_fd());
        // The process has said all it will.
        theirs.shutdown(std::net::Shutdown::Write).unwrap();
        // Whatever else comes, until the successor's end closes.
        let mut buf = [0u8; 512];
        while let Ok(n @ 1..) = unix::recv(theirs.as_fd(), &mut buf, &mut Vec::new()) {
            heard.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(heard).unwrap()
    });
    let source = Source {
        from: 4242,
        addr,
        name: Vec::new(),
    };
    // A success would be dropped here, closing the successor's end.
    let e = exchange(OwnedFd::from(ours), source, "Lines<Echo>")
        .err()
        .expect("the exchange fails");
    (e.to_string(), process.join().unwrap())
}

/// Reads one line from `fd` into `heard`.
fn hear(heard: &mut Vec<u8>, fd: BorrowedFd<'_>) {
    let mut byte = [0u8; 1];
    while unix::recv(fd, &mut byte, &mut Vec::new()).unwrap() == 1 {
        heard.push(byte[0]);
        if byte[0] == b'\n' {
            return;
        }
    }
}

fn say(fd: BorrowedFd<'_>, line: &str, fds: &[i32]) {
    unix::send(fd, line.as_bytes(), fds).unwrap();
}

#[test]
fn a_refusal_is_reported_with_its_reason() {
    let addr: SocketAddr = "127.0.0.1:7".parse().unwrap();
    let (e, heard) = against(addr, |heard, fd| {
        hear(heard, fd);
        say(fd, "refused it serves Lines<Kv>, not Lines<Echo>\n", &[]);
    });
    assert_eq!(
        e,
        "cannot take over 127.0.0.1:7 from process 4242: it refused: it serves Lines<Kv>, not Lines<Echo>"
    );
    assert_eq!(heard, "take 127.0.0.1:7 Lines<Echo>\n");
}

#[test]
fn a_wrong_listener_is_refused_and_the_process_told_why() {
    let l = listeners(true);
    let idle = listeners(false);
    let (wrong, _) = idle.handle(0, 0).unwrap();
    let (right, _) = l.handle(0, 0).unwrap();
    let addr = addr_of(&l);
    let (e, heard) = against(addr, move |heard, fd| {
        hear(heard, fd);
        say(fd, "fds 2 0 0 1\n", &[right, wrong]);
    });
    assert!(e.ends_with("listener 2: is not listening"), "{e}");
    assert!(
        heard.ends_with("refused listener 2: is not listening\n"),
        "{heard:?}"
    );
    drop((l, idle));
}

#[test]
fn a_batch_must_carry_one_descriptor_per_tag() {
    let l = listeners(true);
    let (right, _) = l.handle(0, 0).unwrap();
    let (e, heard) = against(addr_of(&l), move |heard, fd| {
        hear(heard, fd);
        say(fd, "fds 2 0 0 1\n", &[right]);
    });
    assert!(
        e.ends_with("a batch carried 1 descriptors for 2 tags"),
        "{e}"
    );
    assert!(heard.ends_with("refused a batch carried 1 descriptors for 2 tags\n"));
}

#[test]
fn nonsense_and_silence_end_the_exchange() {
    let l = listeners(true);
    let (e, heard) = against(addr_of(&l), |heard, fd| {
        hear(heard, fd);
        say(fd, "done\n", &[]);
    });
    assert!(e.ends_with("it broke the protocol"), "{e}");
    assert!(heard.ends_with("refused it broke the protocol\n"));
    let (e, _) = against(addr_of(&l), hear);
    assert!(e.ends_with("it closed the connection"), "{e}");
}

#[test]
fn batches_are_acknowledged_and_the_commit_waits_for_done() {
    let l = listeners(true);
    let addr = addr_of(&l);
    let fds: Vec<i32> = (0..l.open_count(0))
        .map(|i| l.handle(0, i).unwrap().0)
        .collect();
    let n = fds.len();
    // One batch per listener, then `done` after `taking`.
    let (ours, theirs) = UnixStream::pair().unwrap();
    let process = thread::spawn(move || {
        let mut heard = Vec::new();
        hear(&mut heard, theirs.as_fd());
        for (i, &fd) in fds.iter().enumerate() {
            say(theirs.as_fd(), &format!("fds 1 {} {i}\n", n - i - 1), &[fd]);
            hear(&mut heard, theirs.as_fd());
        }
        hear(&mut heard, theirs.as_fd());
        say(theirs.as_fd(), "done\n", &[]);
        String::from_utf8(heard).unwrap()
    });
    let source = Source {
        from: 1,
        addr,
        name: Vec::new(),
    };
    let (taken, pending) = exchange(OwnedFd::from(ours), source, "Lines<Echo>").unwrap();
    assert_eq!(taken.len(), n);
    for (i, (listener, cpu)) in taken.iter().enumerate() {
        assert_eq!(listener.local_addr().unwrap(), addr);
        assert_eq!(*cpu, i as libc::c_int);
    }
    pending.commit().unwrap();
    let heard = process.join().unwrap();
    let mut want = format!("take {addr} Lines<Echo>\n");
    want.push_str(&"got 1\n".repeat(n));
    want.push_str("taking\n");
    assert_eq!(heard, want);
}

#[test]
fn a_commit_without_done_keeps_nothing() {
    let l = listeners(true);
    let addr = addr_of(&l);
    let (fd, _) = l.handle(0, 0).unwrap();
    for answer in ["refused its listeners closed meanwhile\n", ""] {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let process = thread::spawn(move || {
            let mut heard = Vec::new();
            hear(&mut heard, theirs.as_fd());
            say(theirs.as_fd(), "fds 1 0 0\n", &[fd]);
            hear(&mut heard, theirs.as_fd());
            hear(&mut heard, theirs.as_fd());
            if !answer.is_empty() {
                say(theirs.as_fd(), answer, &[]);
            }
        });
        let source = Source {
            from: 9,
            addr,
            name: Vec::new(),
        };
        let (taken, pending) = exchange(OwnedFd::from(ours), source, "Lines<Echo>").unwrap();
        assert_eq!(taken.len(), 1);
        let e = pending.commit().unwrap_err().to_string();
        process.join().unwrap();
        if answer.is_empty() {
            assert!(
                e.ends_with("it closed the connection; it keeps its listeners"),
                "{e}"
            );
        } else {
            assert!(
                e.ends_with("it refused at the last step: its listeners closed meanwhile"),
                "{e}"
            );
        }
    }
}
