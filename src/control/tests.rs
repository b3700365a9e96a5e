//! The channel against real connections: a successor (`crate::takeover`,
//! on a thread) or a raw peer, while the test runs the loop's part. The
//! listeners are real, held by a stand-in for admission that records what
//! the channel asked of it.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::thread::{self, JoinHandle};

use mio::{Events, Poll};

use super::*;
use crate::claim;
use crate::listener::Listeners;
use crate::takeover;

const SERVICE: &str = "Lines<Echo>";

/// Admission's part: real listeners on one address, and a record of what
/// the channel did with them.
struct Held {
    addr: SocketAddr,
    groups: Vec<Listeners>,
    lent: bool,
    lends: Vec<bool>,
    handed: bool,
}

impl Held {
    /// `n` listeners (rounded up to whole groups of one per CPU) on a free
    /// loopback port.
    fn new(n: usize) -> Held {
        let first = Listeners::open(&["127.0.0.1:0".parse().unwrap()], Vec::new()).unwrap();
        let addr = first.ports()[0].addr.ip().unwrap();
        let mut groups = vec![first];
        while groups.iter().map(|g| g.open_count(0)).sum::<usize>() < n {
            groups.push(Listeners::open(&[addr], Vec::new()).unwrap());
        }
        for group in &groups {
            group.listen(16).unwrap();
        }
        Held {
            addr,
            groups,
            lent: false,
            lends: Vec::new(),
            handed: false,
        }
    }

    fn total(&self) -> usize {
        self.groups.iter().map(|g| g.open_count(0)).sum()
    }
}

impl Holder for Held {
    fn available(&self, addr: &Address) -> Result<usize, String> {
        if self.handed || *addr != self.addr {
            Err(format!("its listeners on {addr} are closed"))
        } else {
            Ok(self.total())
        }
    }

    fn listener(&self, addr: &Address, mut i: usize) -> Option<(RawFd, libc::c_int)> {
        self.available(addr).ok()?;
        for group in &self.groups {
            if i < group.open_count(0) {
                return group.handle(0, i);
            }
            i -= group.open_count(0);
        }
        None
    }

    fn lend(&mut self, _: &Address, lent: bool) {
        self.lent = lent;
        self.lends.push(lent);
    }

    fn hand_over(&mut self, _: &Address) {
        self.handed = true;
        self.groups.clear();
    }
}

/// A channel on `held`'s address, and the loop's part of running it.
struct Rig {
    poll: Poll,
    control: Control,
    held: Held,
}

impl Rig {
    fn new(held: Held) -> Rig {
        let poll = Poll::new().unwrap();
        let mut control = Control::new(SERVICE, poll.registry());
        let addr = Address::from(held.addr);
        control.add(claim::announce(&addr, SERVICE).unwrap(), addr);
        Rig {
            poll,
            control,
            held,
        }
    }

    /// One turn: events, then what is due.
    fn turn(&mut self) {
        let mut events = Events::with_capacity(16);
        let now = Instant::now();
        let wait = self
            .control
            .due()
            .map_or(Duration::from_millis(10), |at| {
                at.saturating_duration_since(now)
            })
            .min(Duration::from_millis(10));
        self.poll.poll(&mut events, Some(wait)).unwrap();
        let now = Instant::now();
        for event in &events {
            let token = event.token().0;
            assert!(owns(token), "a token the channel does not own: {token}");
            self.control.on_event(token, &mut self.held, now);
        }
        if self.control.due().is_some_and(|at| at <= now) {
            self.control.on_timer(&mut self.held, now);
        }
    }

    /// Turns until `done` holds, for at most 30 s.
    #[track_caller]
    fn until(&mut self, what: &str, done: impl Fn(&Rig) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(start.elapsed() < Duration::from_secs(30), "never: {what}");
            self.turn();
        }
    }

    /// Runs until `successor` is over, and returns what it returned.
    fn serve<T>(&mut self, successor: JoinHandle<T>) -> T {
        self.until("the successor finished", |_| successor.is_finished());
        successor.join().unwrap()
    }

    /// The claim's name, to connect to.
    fn name(&self) -> Vec<u8> {
        takeover::find(std::process::id(), self.held.addr, SERVICE)
            .unwrap()
            .name
    }

    /// A raw connection to the channel.
    fn connect(&self) -> OwnedFd {
        unix::connect_abstract(&self.name(), Duration::from_secs(5)).unwrap()
    }

    /// A raw connection that asks to take the listeners, once the holder
    /// has lent them (`what` names that wait).
    fn ask_to_take(&mut self, what: &str) -> OwnedFd {
        let conn = self.connect();
        let ask = wire::take(&self.held.addr.to_string(), SERVICE);
        unix::send(conn.as_fd(), ask.as_bytes(), &[]).unwrap();
        self.until(what, |r| r.held.lent);
        conn
    }
}

/// A successor on a thread: what it took, with the tags, or why not.
fn successor(
    addr: SocketAddr,
    service: &'static str,
) -> JoinHandle<Result<Vec<(SocketAddr, libc::c_int)>, String>> {
    thread::spawn(move || {
        let source =
            takeover::find(std::process::id(), addr, service).map_err(|e| e.to_string())?;
        let (taken, pending) = takeover::receive(source, service).map_err(|e| e.to_string())?;
        pending.commit().map_err(|e| e.to_string())?;
        Ok(taken
            .iter()
            .map(|(l, cpu)| (l.local_addr().unwrap(), *cpu))
            .collect())
    })
}

/// Whether the other end of `fd` has closed (or shut down its sending
/// side), without waiting.
fn hung_up(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one live pollfd, and no wait.
    let n = unsafe { libc::poll(&raw mut p, 1, 0) };
    n == 1 && p.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0
}

/// Everything that comes on `fd` until it closes, as text.
fn rest(fd: &OwnedFd) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = unix::recv(fd.as_fd(), &mut buf, &mut Vec::new()) {
        all.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&all).into_owned()
}

#[test]
fn a_successor_takes_every_listener_in_batches_then_the_process_lets_go() {
    // More than one message holds: two batches, each acknowledged.
    let held = Held::new(unix::MAX_FDS + 3);
    let addr = held.addr;
    let total = held.total();
    let cpus: Vec<libc::c_int> = (0..total)
        .map(|i| held.listener(&addr.into(), i).unwrap().1)
        .collect();
    let mut rig = Rig::new(held);
    let taken = rig.serve(successor(addr, SERVICE)).unwrap();
    assert_eq!(taken.len(), total);
    assert!(taken.iter().all(|(a, _)| *a == addr));
    assert_eq!(taken.iter().map(|t| t.1).collect::<Vec<_>>(), cpus);
    assert!(rig.held.handed);
    assert_eq!(rig.held.lends, [true], "lent once, and not returned");
    // Once only.
    let again = rig.serve(successor(addr, SERVICE)).unwrap_err();
    assert!(
        again.ends_with(&format!(
            "it refused: it handed them over to process {} already",
            std::process::id()
        )),
        "{again}"
    );
}

#[test]
fn a_successor_that_leaves_before_taking_leaves_everything_as_it_was() {
    let mut rig = Rig::new(Held::new(1));
    let addr = rig.held.addr;
    let total = rig.held.total();
    // It asks, gets the first batch, and leaves without a word.
    let conn = rig.ask_to_take("the listeners lent");
    let mut buf = [0u8; 4096];
    let mut fds = Vec::new();
    let n = unix::recv(conn.as_fd(), &mut buf, &mut fds).unwrap();
    assert!(buf[..n].starts_with(b"fds "), "{:?}", &buf[..n]);
    assert_eq!(fds.len(), total.min(unix::MAX_FDS));
    drop((conn, fds));
    rig.until("the listeners returned", |r| !r.held.lent);
    assert_eq!(rig.held.lends, [true, false]);
    assert!(!rig.held.handed);
    assert_eq!(rig.held.available(&addr.into()), Ok(total));
    // One that says it gives up, after the batch, is the same.
    let conn = rig.ask_to_take("the listeners lent again");
    unix::send(
        conn.as_fd(),
        wire::refused("changed its mind").as_bytes(),
        &[],
    )
    .unwrap();
    rig.until("the listeners returned again", |r| !r.held.lent);
    drop(conn);
    // Nothing was used up: the next successor takes them.
    let taken = rig.serve(successor(addr, SERVICE)).unwrap();
    assert_eq!(taken.len(), total);
    assert!(rig.held.handed);
}

#[test]
fn a_successor_that_never_answers_runs_out_of_time() {
    let mut rig = Rig::new(Held::new(1));
    let conn = rig.ask_to_take("the listeners lent");
    let start = Instant::now();
    rig.until("the listeners returned", |r| !r.held.lent);
    // Not before the deadline (which counts from the accept, a little
    // before `start`).
    assert!(start.elapsed() + Duration::from_millis(200) >= DEADLINE);
    assert!(rest(&conn).starts_with("fds "));
    // A peer that says nothing at all is closed at its deadline too.
    let quiet = rig.connect();
    let start = Instant::now();
    rig.until("the quiet peer closed", |_| hung_up(&quiet));
    assert!(start.elapsed() + Duration::from_millis(200) >= DEADLINE);
    assert_eq!(rest(&quiet), "");
    assert!(!rig.held.handed);
}

#[test]
fn wrong_requests_are_refused_with_the_reason() {
    let mut rig = Rig::new(Held::new(1));
    let addr = rig.held.addr;
    let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let long = format!("take {addr} {}\n", "x".repeat(PEER_BUFFER));
    for (request, reply) in [
        (
            format!("take {other} {SERVICE}\n"),
            format!("refused it serves {addr} here, not {other}\n"),
        ),
        (
            format!("take {addr} Lines<Kv>\n"),
            format!("refused it serves {SERVICE}, not Lines<Kv>\n"),
        ),
        (
            "status\n".to_owned(),
            "refused unknown request\n".to_owned(),
        ),
        (
            format!("take {addr}\n"),
            "refused a take request is 'take <addr> <service>'\n".to_owned(),
        ),
        (
            long,
            "refused a line longer than the channel takes\n".to_owned(),
        ),
    ] {
        let conn = rig.connect();
        unix::send(conn.as_fd(), request.as_bytes(), &[]).unwrap();
        rig.until("the refusal", |_| hung_up(&conn));
        assert_eq!(rest(&conn), reply, "{request:?}");
    }
    assert!(rig.held.lends.is_empty() && !rig.held.handed);
}

/// A stats request is read in the turn that accepts its connection (the
/// request came with the connect), waits for the loop's snapshot, and gets
/// it as one line before the close; two at once get the same one.
#[test]
fn a_stats_request_is_answered_with_the_loops_snapshot() {
    let mut rig = Rig::new(Held::new(1));
    let asking: Vec<OwnedFd> = (0..2).map(|_| rig.connect()).collect();
    for conn in &asking {
        unix::send(conn.as_fd(), wire::STATS, &[]).unwrap();
    }
    let admitted = |r: &Rig| r.control.peers.iter().flatten().count();
    rig.until("a connection admitted", |r| admitted(r) > 0);
    // The turn that accepted it read it: none waits for a readiness event.
    assert!(
        rig.control
            .peers
            .iter()
            .flatten()
            .all(|p| p.step == Step::Stats),
        "a connection accepted with its request unread"
    );
    rig.until("both asked", |r| admitted(r) == 2);
    assert!(rig.control.wants_stats());
    rig.control.answer_stats("pid=7 state=running");
    assert!(!rig.control.wants_stats());
    assert_eq!(admitted(&rig), 0, "answered, and closed");
    for conn in &asking {
        assert_eq!(rest(conn), "stats pid=7 state=running\n");
    }
    // Anything after the request, before the answer, breaks the exchange.
    let chatty = rig.connect();
    unix::send(chatty.as_fd(), b"stats\nstats\n", &[]).unwrap();
    rig.until("the chatty peer closed", |_| hung_up(&chatty));
    assert_eq!(rest(&chatty), "");
    assert!(rig.held.lends.is_empty() && !rig.held.handed);
}

#[test]
fn connections_beyond_the_bound_are_closed_at_once() {
    let mut rig = Rig::new(Held::new(1));
    let held: Vec<OwnedFd> = (0..MAX_PEERS).map(|_| rig.connect()).collect();
    rig.until("every slot taken", |r| {
        r.control.peers.iter().all(Option::is_some)
    });
    let extra = rig.connect();
    rig.until("the extra connection closed", |_| hung_up(&extra));
    assert_eq!(rest(&extra), "refused busy\n");
    drop(held);
    rig.until("the slots freed", |r| {
        r.control.peers.iter().all(Option::is_none)
    });
    // Room again.
    let total = rig.held.total();
    let taken = rig.serve(successor(rig.held.addr, SERVICE)).unwrap();
    assert_eq!(taken.len(), total);
    assert!(rig.held.handed);
}
