//! Takeover with the real binary: a new process takes the listening
//! sockets of a running one (`--take-over PID`), which lets go of them
//! without closing a socket anyone still holds, so no connection queued
//! or in its handshake is reset and no new client waits.
//!
//! The successor and the process it replaces always run as one user. The
//! tests that talk to the control channel themselves (as a successor that
//! goes away, or asks for the wrong thing) run the server as the test's
//! own user, since the channel serves no other; the one that checks a
//! stranger is refused needs root, to be one user and start the other.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use libc::{SIGHUP, SIGUSR1};

use crate::runner::{NOBODY, Runner, Who};
use crate::util::{
    Client, DEADLINE, Server, raise_fd_limit, skip, spawn_retrying, status_field, wait_until,
};
use testbed::claim;
use testbed::tcp::syn_retransmits;

/// What the new clients saw while the test ran.
#[derive(Default, Debug)]
struct Tally {
    answered: usize,
    /// Each failure: what failed, and how.
    failed: Vec<String>,
    /// Connections whose SYN was sent again: the client waited a second.
    stalled: usize,
    pids: HashSet<u32>,
}

/// New clients, one after another on two threads, each connecting,
/// sending a line, checking the echo and closing, until stopped. Unlike
/// a test assertion, a failure is counted, not fatal, so that the test
/// can report all of them.
struct Churn {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    threads: Vec<JoinHandle<()>>,
}

impl Churn {
    fn start(addr: SocketAddr) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let threads = (0..2)
            .map(|t| {
                let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
                thread::spawn(move || {
                    let start = Instant::now();
                    for i in 0..100_000 {
                        if stop.load(Ordering::SeqCst) || start.elapsed() > 4 * DEADLINE {
                            break;
                        }
                        let outcome = Client::try_connect(addr).and_then(|mut client| {
                            let stalled = syn_retransmits(&client.stream).unwrap_or(0) > 0;
                            client
                                .try_echo(&format!("churn {t} {i}"))
                                .map(|pid| (pid, stalled))
                        });
                        let mut tally = tally.lock().unwrap();
                        match outcome {
                            Ok((pid, stalled)) => {
                                tally.answered += 1;
                                tally.stalled += usize::from(stalled);
                                tally.pids.insert(pid);
                            }
                            Err(e) => tally.failed.push(format!("client {t}/{i}: {e}")),
                        }
                    }
                })
            })
            .collect();
        Churn {
            stop,
            tally,
            threads,
        }
    }

    /// Waits until a new client has been answered by `pid`.
    #[track_caller]
    fn wait_served_by(&self, pid: u32) {
        wait_until(&format!("a new client answered by {pid}"), || {
            self.tally.lock().unwrap().pids.contains(&pid).then_some(())
        });
    }

    /// Waits until `n` more clients have been answered.
    #[track_caller]
    fn wait_more(&self, n: usize) {
        let from = self.tally.lock().unwrap().answered;
        wait_until(&format!("{n} more clients answered"), || {
            (self.tally.lock().unwrap().answered >= from + n).then_some(())
        });
    }

    fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            thread.join().expect("a churn thread panicked");
        }
        Arc::try_unwrap(self.tally)
            .expect("threads joined")
            .into_inner()
            .unwrap()
    }
}

/// Nothing failed and nothing waited, and clients were served.
#[track_caller]
fn assert_nothing_lost(tally: &Tally) {
    assert!(
        tally.failed.is_empty() && tally.stalled == 0 && tally.answered > 0,
        "{} answered, {} stalled, {} failed: {:#?}",
        tally.answered,
        tally.stalled,
        tally.failed.len(),
        tally.failed
    );
}

/// Starts a process that takes over `old`, as `run`'s user, and checks
/// the line each of them prints about it.
#[track_caller]
fn take_over(run: &Runner, old: &mut Server, extra: &[&str]) -> Server {
    let (from, addr) = (old.pid.to_string(), old.addr.to_string());
    let mut args = vec!["-q", "--take-over", &from];
    args.extend_from_slice(extra);
    args.push(&addr);
    let new = run.start(&args);
    let took = new
        .seen
        .iter()
        .find(|l| l.contains(" took over "))
        .unwrap_or_else(|| panic!("no takeover line: {:#?}", new.seen))
        .clone();
    let n = listeners_in(&took);
    assert_eq!(
        took,
        format!(
            "Process {} took over {n} listener{} on {addr} from process {from}",
            new.pid,
            if n == 1 { "" } else { "s" }
        )
    );
    let protection = new
        .seen
        .iter()
        .find(|l| l.contains(" release protection"))
        .unwrap_or_else(|| panic!("no protection line: {:#?}", new.seen));
    assert!(
        protection.contains("release protection: takeover (these listeners were taken over"),
        "{protection}"
    );
    let handed = old.expect_line(" handed its ");
    assert_eq!(
        handed,
        format!(
            "Process {from} handed its {n} listener{} on {addr} to process {}",
            if n == 1 { "" } else { "s" },
            new.pid
        )
    );
    new
}

/// The count in `Process P took over N listeners ...`.
fn listeners_in(line: &str) -> usize {
    line.split(" took over ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"))
}

/// How many clients `server` has accepted, from its status line.
fn accepted(server: &mut Server) -> u64 {
    let before = server.count_lines(" status: ");
    server.signal(SIGUSR1);
    let line = wait_until("a status line", || {
        (server.count_lines(" status: ") > before).then(|| {
            server
                .seen
                .iter()
                .rev()
                .find(|l| l.contains(" status: "))
                .cloned()
        })?
    });
    status_field(&line, "accepted")
}

/// Two instances, each taken over three times in a row under churn, with
/// long-lived clients on the first generation: no new client fails or
/// waits, the long-lived ones are answered throughout by the process they
/// started on, a process that handed its listeners over accepts nothing
/// more, and every process exits 0 on its own.
fn takeover_under_churn(who: Who) {
    let run = match Runner::new(who) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    raise_fd_limit();
    let first = run.start(&["-q", "127.0.0.1:0"]);
    let addr = first.addr;
    let second = run.start(&["-q", &addr.to_string()]);
    let mut long: Vec<(Client, u32)> = (0..6)
        .map(|i| {
            let mut client = Client::connect(addr);
            let pid = client.echo(&format!("long {i}"));
            (client, pid)
        })
        .collect();
    let churn = Churn::start(addr);
    let mut instances = vec![first, second];
    let mut retired = Vec::new();
    for round in 0..3 {
        for (k, instance) in instances.iter_mut().enumerate() {
            let new = take_over(&run, instance, &[]);
            let new_pid = new.pid;
            let mut old = std::mem::replace(instance, new);
            if round == 0 && k == 0 {
                // From the handover on, it takes no new client.
                let before = accepted(&mut old);
                churn.wait_more(50);
                churn.wait_served_by(new_pid);
                assert_eq!(accepted(&mut old), before, "it accepted after the handover");
            }
            churn.wait_more(20);
            old.signal(SIGHUP);
            old.expect_line(&format!("Process {} received hangup signal", old.pid));
            churn.wait_served_by(new_pid);
            for (i, (client, pid)) in long.iter_mut().enumerate() {
                assert_eq!(client.echo(&format!("long {i} round {round}")), *pid);
            }
            retired.push(old);
        }
    }
    churn.wait_more(50);
    let tally = churn.stop();
    assert_nothing_lost(&tally);
    drop(long);
    for mut old in retired {
        let lines = old.expect_clean_exit();
        assert!(
            !lines.iter().any(|l| l.contains("handshake")),
            "a retired process closed a listener: {lines:#?}"
        );
    }
    for mut server in instances {
        server.signal(SIGHUP);
        server.expect_clean_exit();
    }
}

#[test]
fn takeover_under_churn_unprivileged() {
    takeover_under_churn(Who::Unprivileged);
}

#[test]
fn takeover_under_churn_as_root() {
    takeover_under_churn(Who::Root);
}

/// The runner whose servers are of the test's own user, which is the
/// only one their control channel serves.
fn own_runner() -> Runner {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    Runner::new(if root { Who::Root } else { Who::Unprivileged }).expect("a runner of this user")
}

/// A connection to a claim's channel, speaking its lines by hand.
struct Peer {
    stream: UnixStream,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Peer {
    #[track_caller]
    fn connect(pid: u32, addr: SocketAddr) -> Peer {
        let name = claim::name(pid, addr).unwrap();
        let stream = claim::connect(&name).expect("connect to the claim");
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        Peer {
            stream,
            buf: Vec::new(),
            fds: Vec::new(),
        }
    }

    fn say(&mut self, line: &str) {
        self.stream
            .write_all(line.as_bytes())
            .expect("write to the channel");
    }

    /// The next line, keeping the descriptors that come with it; `None`
    /// at the end of the stream.
    #[track_caller]
    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return Some(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            let mut chunk = [0u8; 4096];
            let n = recv_with_fds(&self.stream, &mut chunk, &mut self.fds);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// One `recvmsg`, keeping the descriptors it brings.
#[track_caller]
fn recv_with_fds(stream: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> usize {
    let mut control = [0u64; 160];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `msg` points at `iov` (at `buf`) and `control`, live and of
    // the lengths given.
    let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
    assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel wrote well-formed headers within msg_controllen;
    // each descriptor in SCM_RIGHTS data is new and ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize) / 4;
                let data = libc::CMSG_DATA(cmsg).cast::<i32>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    n as usize
}

/// A successor that gets the listeners and goes away before it takes
/// them, while new clients keep coming: it closes the connection (as a
/// process that dies does), or says it gives up. Either way the process
/// keeps serving as if nothing had happened, loses no client, and still
/// hands its listeners to the next successor.
#[test]
fn a_successor_that_goes_away_before_taking_loses_nothing() {
    raise_fd_limit();
    let run = own_runner();
    let mut server = run.start(&["-q", "127.0.0.1:0"]);
    let addr = server.addr;
    let churn = Churn::start(addr);
    churn.wait_served_by(server.pid);
    let me = std::process::id();
    for (leave, why) in [
        (None, "closed the connection"),
        (
            Some("refused changed its mind\n"),
            "gave up: changed its mind",
        ),
    ] {
        let mut peer = Peer::connect(server.pid, addr);
        peer.say(&format!("take {addr} Lines<Echo>\n"));
        let batch = peer.line().expect("a batch");
        assert!(batch.starts_with("fds "), "{batch:?}");
        let n: usize = batch.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(
            n >= 1 && peer.fds.len() == n,
            "{batch:?} with {} descriptors",
            peer.fds.len()
        );
        // Holding copies of every listener while clients keep coming.
        churn.wait_more(50);
        match leave {
            None => drop(peer),
            Some(line) => {
                peer.say(line);
                assert_eq!(peer.line(), None);
            }
        }
        server.expect_line(&format!(
            "Process {} keeps its listeners on {addr}: process {me} {why}",
            server.pid
        ));
        churn.wait_more(50);
    }
    let tally = churn.stop();
    assert_nothing_lost(&tally);
    assert_eq!(tally.pids, HashSet::from([server.pid]));
    // Nothing was used up.
    let mut next = take_over(&run, &mut server, &[]);
    server.signal(SIGHUP);
    server.expect_clean_exit();
    let mut client = Client::connect(addr);
    assert_eq!(client.echo("after"), next.pid);
    drop(client);
    next.signal(SIGHUP);
    next.expect_clean_exit();
}

/// The real successor, stalled between taking the listeners and saying it
/// accepts from them (strace delays its third `sendmsg`, the `taking`, by
/// 5 s), and killed then, while new clients keep coming. The process
/// stops waiting at its 1 s deadline, keeps its listeners and says so; no
/// client fails or waits, and it still hands its listeners to the next
/// successor.
#[test]
fn a_successor_killed_before_it_takes_loses_nothing() {
    if !crate::util::have_tool("strace", "strace") {
        return;
    }
    raise_fd_limit();
    let run = own_runner();
    let mut server = run.start(&["-q", "127.0.0.1:0"]);
    let (addr, from) = (server.addr.to_string(), server.pid.to_string());
    let churn = Churn::start(server.addr);
    churn.wait_served_by(server.pid);
    // Its sendmsg calls: `take`, `got`, `taking`.
    let stall = [
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=sendmsg",
        "-e",
        "inject=sendmsg:delay_enter=5000000:when=3",
    ];
    let mut cmd = run.command(&stall, &["-q", "--take-over", &from, &addr]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let successor = spawn_retrying(&mut cmd).expect("the stalled successor");
    let kept = server.expect_line(&format!(
        "Process {from} keeps its listeners on {addr}: process "
    ));
    assert!(kept.ends_with(" did not finish within 1s"), "{kept}");
    let pid: libc::pid_t = kept
        .split(": process ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {kept:?}"));
    // SAFETY: kill(2) on the successor, a process this test started
    // (under strace), still stalled in its sendmsg.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let output = successor.wait_with_output().expect("the successor's end");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.contains(" took over ") && !stdout.contains("listening on"),
        "{stdout}"
    );
    churn.wait_more(100);
    let tally = churn.stop();
    assert_nothing_lost(&tally);
    assert_eq!(tally.pids, HashSet::from([server.pid]));
    let mut next = take_over(&run, &mut server, &[]);
    server.signal(SIGHUP);
    server.expect_clean_exit();
    next.signal(SIGHUP);
    next.expect_clean_exit();
}

/// A process serving two addresses hands both to a successor that serves
/// both, one exchange each; a successor that serves one of them takes
/// that one, and the old process goes on serving the other until it
/// drains.
#[test]
fn several_addresses_are_taken_over_each_on_its_own() {
    let run = own_runner();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    let (a, b) = (free(), free());
    let mut first = run.start(&["-q", &a, &b]);
    let from = first.pid.to_string();
    let second = run.start(&["-q", "--take-over", &from, &a, &b]);
    for addr in [&a, &b] {
        assert!(
            second.seen.iter().any(|l| l.contains(" took over ")
                && l.ends_with(&format!(" on {addr} from process {from}"))),
            "{:#?}",
            second.seen
        );
        first.expect_line(&format!(" on {addr} to process {}", second.pid));
        let mut client = Client::connect(addr.parse().unwrap());
        assert_eq!(client.echo("both"), second.pid);
    }
    first.signal(SIGHUP);
    first.expect_clean_exit();
    // One of the two.
    let from = second.pid.to_string();
    let mut second = second;
    let third = run.start(&["-q", "--take-over", &from, &a]);
    second.expect_line(&format!(" on {a} to process {}", third.pid));
    let mut on_a = Client::connect(a.parse().unwrap());
    assert_eq!(on_a.echo("a"), third.pid);
    let mut on_b = Client::connect(b.parse().unwrap());
    assert_eq!(on_b.echo("b"), second.pid);
    drop((on_a, on_b));
    second.signal(SIGHUP);
    second.expect_clean_exit();
    let mut third = third;
    third.signal(SIGHUP);
    third.expect_clean_exit();
}

/// Runs `drainport ARGS` as `run`'s user, which must refuse to start:
/// exit 1, one line on stderr, and never a `listening` line.
#[track_caller]
fn refused(run: &Runner, args: &[&str]) -> String {
    let mut cmd = run.command(&[], args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd.output().expect("run drainport");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let line = stderr.trim_end().to_owned();
    assert!(line.starts_with("drainport: cannot take over "), "{line}");
    line
}

/// A successor of another service, or for another address, is refused
/// before it listens, by itself (it finds no claim to take) and by the
/// process (asked by hand); the process keeps serving and still hands
/// its listeners to a successor that asks right.
#[test]
fn another_service_or_address_is_refused() {
    let run = own_runner();
    let mut server = run.start(&["-q", "127.0.0.1:0"]);
    let addr = server.addr;
    let pid = server.pid.to_string();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let elsewhere = free.local_addr().unwrap();
    drop(free);
    let line = refused(
        &run,
        &["--service", "Other", "--take-over", &pid, &addr.to_string()],
    );
    assert_eq!(
        line,
        format!(
            "drainport: cannot take over {addr} from process {pid}: it serves Lines<Echo> there, \
             and this is Other; a takeover stays within one service"
        )
    );
    let line = refused(&run, &["--take-over", &pid, &elsewhere.to_string()]);
    assert_eq!(
        line,
        format!(
            "drainport: cannot take over {elsewhere} from process {pid}: it does not serve that \
             address (it serves {addr})"
        )
    );
    let zero = SocketAddr::new(addr.ip(), 0).to_string();
    let line = refused(&run, &["--take-over", &pid, &zero]);
    assert!(line.ends_with("name the port it serves, not 0"), "{line}");
    // Asked by hand on its channel, the process refuses too, and says so.
    let me = std::process::id();
    for (request, reason) in [
        (
            format!("take {addr} Other\n"),
            "it serves Lines<Echo>, not Other".to_owned(),
        ),
        (
            format!("take {elsewhere} Lines<Echo>\n"),
            format!("it serves {addr} here, not {elsewhere}"),
        ),
    ] {
        let mut peer = Peer::connect(server.pid, addr);
        peer.say(&request);
        assert_eq!(peer.line(), Some(format!("refused {reason}")));
        assert_eq!(peer.line(), None);
        assert!(peer.fds.is_empty());
        server.expect_line(&format!(
            "Process {} refused to hand its listeners on {addr} to process {me}: {reason}",
            server.pid
        ));
    }
    let mut client = Client::connect(addr);
    assert_eq!(client.echo("still here"), server.pid);
    drop(client);
    let mut next = take_over(&run, &mut server, &[]);
    // Once only.
    let line = refused(&run, &["--take-over", &pid, &addr.to_string()]);
    assert_eq!(
        line,
        format!(
            "drainport: cannot take over {addr} from process {pid}: it refused: it handed them \
             over to process {} already",
            next.pid
        )
    );
    server.signal(SIGHUP);
    server.expect_clean_exit();
    next.signal(SIGHUP);
    next.expect_clean_exit();
}

/// A process of another user gets nothing: the real binary as that user
/// finds no claim of its own to take, and a connection made by hand to the
/// claim is closed at once, without a word, and without a line in the
/// server's log (a stranger cannot write there). The server keeps serving.
#[test]
fn a_peer_of_another_uid_is_refused() {
    let run = match Runner::new(Who::Root) {
        Ok(run) => run,
        Err(reason) => return skip(&format!("{reason}, to be one user and run another")),
    };
    let stranger = match Runner::new(Who::Unprivileged) {
        Ok(stranger) => stranger,
        Err(reason) => return skip(&reason),
    };
    let mut server = run.start(&["-q", "127.0.0.1:0"]);
    let addr = server.addr;
    let pid = server.pid.to_string();
    let line = refused(&stranger, &["--take-over", &pid, &addr.to_string()]);
    assert_eq!(
        line,
        format!(
            "drainport: cannot take over {addr} from process {pid}: it announces no service of \
             this user (uid {NOBODY}): it is not a drainport of this user, or not running"
        )
    );
    // By hand: `cat` as the stranger, its input the connection, which the
    // child makes after it became the stranger and before it runs `cat`.
    let name = claim::name(server.pid, addr).unwrap();
    let request = format!("take {addr} Lines<Echo>\n").into_bytes();
    let (sun, len) = claim::sockaddr(&name);
    let uid: u32 = NOBODY.parse().unwrap();
    let mut cmd = Command::new("cat");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .uid(uid)
        .gid(uid);
    let connect = move || -> std::io::Result<()> {
        // SAFETY: socket(2), connect(2), write(2) and dup2(2) on memory
        // prepared before the fork; nothing is allocated.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0
                || libc::connect(fd, (&raw const sun).cast(), len) != 0
                || libc::write(fd, request.as_ptr().cast(), request.len()) < 0
                || libc::dup2(fd, 0) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure runs between fork and exec, after the uid
    // change, and makes only system calls on memory prepared before it.
    unsafe { cmd.pre_exec(connect) };
    let mut cat = spawn_retrying(&mut cmd).expect("cat as the stranger, connected");
    let mut heard = Vec::new();
    cat.stdout.take().unwrap().read_to_end(&mut heard).unwrap();
    // Closed with the request unread: an end of stream, or a reset, which
    // makes `cat` fail.
    cat.wait().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&heard),
        "",
        "the stranger was answered"
    );
    let mut client = Client::connect(addr);
    assert_eq!(client.echo("still here"), server.pid);
    drop(client);
    server.signal(SIGHUP);
    let lines = server.expect_clean_exit();
    assert!(
        !lines.iter().any(|l| l.contains("listeners on")),
        "the stranger reached the log: {lines:#?}"
    );
}

/// A process that drained and closed its listeners has none to hand
/// over: the successor says so and exits 1, and the process goes on
/// serving its last client.
#[test]
fn a_process_whose_listeners_closed_refuses() {
    let run = own_runner();
    let mut server = run.start(&["-q", "127.0.0.1:0"]);
    let addr = server.addr;
    let mut client = Client::connect(addr);
    assert_eq!(client.echo("stay"), server.pid);
    server.signal(SIGHUP);
    server.expect_line("closing tasks: 1");
    // The listeners close once the handshake window ends: nothing is in
    // flight, so at its first look.
    wait_until("the listeners closed", || {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let port = format!(":{:04X} ", addr.port());
        (!table
            .lines()
            .any(|l| l.contains(&port) && l.contains(" 0A ")))
        .then_some(())
    });
    let pid = server.pid.to_string();
    let line = refused(&run, &["--take-over", &pid, &addr.to_string()]);
    assert_eq!(
        line,
        format!(
            "drainport: cannot take over {addr} from process {pid}: it refused: its listeners on \
             {addr} are closed"
        )
    );
    assert_eq!(client.echo("still served"), server.pid);
    drop(client);
    server.expect_clean_exit();
}

/// Three instances become two: two take over, the third drains as it
/// would without a successor. On a kernel that steers by CPU tag (Linux
/// 6.2 and later, as here) the third clears its tags and receives no new
/// SYN, so nothing is lost; on one that does not, its handshakes in flight
/// when its listeners close are reset (docs/operations.md has the figures
/// of `cargo bench --bench delay` for both). The test checks this kernel's
/// behaviour, and skips on one that does not steer.
#[test]
fn a_process_count_that_goes_down_loses_nothing_where_the_kernel_steers() {
    if !kernel_steers() {
        return skip("this kernel does not steer by CPU tag; the delay benchmark measures it");
    }
    raise_fd_limit();
    let run = own_runner();
    let first = run.start(&["-q", "127.0.0.1:0"]);
    let addr = first.addr.to_string();
    let mut old = vec![first, run.start(&["-q", &addr]), run.start(&["-q", &addr])];
    let churn = Churn::start(old[0].addr);
    for server in &old {
        churn.wait_served_by(server.pid);
    }
    let mut new: Vec<Server> = old[..2]
        .iter_mut()
        .map(|server| take_over(&run, server, &[]))
        .collect();
    for server in &old {
        server.signal(SIGHUP);
    }
    for server in &mut old {
        server.expect_clean_exit();
    }
    churn.wait_more(200);
    let tally = churn.stop();
    assert_nothing_lost(&tally);
    for server in &new {
        assert!(tally.pids.contains(&server.pid));
    }
    for server in &mut new {
        server.signal(SIGHUP);
        server.expect_clean_exit();
    }
}

/// Whether this kernel steers by CPU tag, by its version (6.2 or later).
fn kernel_steers() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 2)
}
