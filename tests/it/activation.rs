//! Socket activation, with the real tool where users use one: a process
//! serves the listening sockets a service manager passes it
//! (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`) instead of binding its
//! own, says so, and refuses a descriptor that is not a listening stream
//! socket (Unix ones: `unix.rs`). Sockets passed to several processes are shared: a process that
//! drains only lets go of its copy, and its siblings serve everyone.
//!
//! `systemd-socket-activate` passes the socket itself. For several
//! processes on one socket the test is the holder, as systemd would be:
//! it keeps the socket and passes it to each process it starts.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use libc::SIGHUP;

use crate::runner::{Runner, Who};
use crate::steer::Churn;
use crate::util::{
    Client, ScratchDir, Server, have_tool, one_line_error, output_retrying, skip, status_field,
    wait_until,
};
use testbed::activate::{self, LISTEN_PID_SHELL};
use testbed::delaybed::nosteer;

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// The command that runs drainport ARGS as `run`'s user with `sockets`
/// passed as a service manager passes them, named `names`.
pub(crate) fn passing(
    run: &Runner,
    sockets: &[&OwnedFd],
    names: Option<&str>,
    args: &[&str],
) -> Command {
    let mut cmd = run.command(&LISTEN_PID_SHELL, args);
    let fds: Vec<_> = sockets.iter().map(|s| s.as_raw_fd()).collect();
    activate::pass(&mut cmd, &fds, names);
    cmd
}

/// A client that the kernel gave to `server`, found by trying at most 400.
#[track_caller]
fn client_of(addr: SocketAddr, server: &Server) -> Client {
    for i in 0..400 {
        let mut client = Client::connect(addr);
        if client.echo(&format!("pick {i}")) == server.pid {
            return client;
        }
    }
    panic!("no connection reached process {}", server.pid);
}

/// `systemd-socket-activate -l ADDR drainport`: the tool listens, and on
/// the first connection attempt execs drainport in its place with the
/// socket as fd 3. That first client is served from the passed socket.
/// Before socket activation, drainport ignored the socket, bound
/// 127.0.0.1:8080, and the client waited for ever.
#[test]
fn systemd_socket_activate_serves_the_first_client_from_the_passed_socket() {
    if !have_tool("systemd-socket-activate", "systemd") {
        return;
    }
    let run = match Runner::new(Who::Unprivileged) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    // The tool takes no port 0; a port taken meanwhile makes it exit, and
    // the next attempt takes another.
    let (mut server, addr, mut client) = (0..5)
        .find_map(|_| {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let tool = [
                "systemd-socket-activate",
                "-l",
                &addr.to_string(),
                "--fdname=echo",
            ];
            let mut server = Server::launch(run.command(&tool, &[]));
            let client = wait_until("systemd-socket-activate to listen", || {
                if !server.is_running() {
                    return Some(None);
                }
                TcpStream::connect(addr).ok().map(Some)
            })?;
            Some((server, addr, Client::from(client)))
        })
        .expect("systemd-socket-activate never listened on a free port");
    let pid = client.echo("hello from the first connection");
    server.wait_listening();
    assert_eq!(
        pid, server.pid,
        "exec'd in place, drainport has the tool's pid"
    );
    assert_eq!(server.addr, addr);
    let said = |needle: &str| server.seen.iter().any(|l| l.contains(needle));
    assert!(
        said(&format!(
            "Process {pid} takes fd 3 (echo) from the service manager: {addr}"
        )),
        "{:#?}",
        server.seen
    );
    assert!(said("does not bind 127.0.0.1:8080"), "{:#?}", server.seen);
    assert!(
        said(&format!("Process {pid} release protection: shared sockets")),
        "{:#?}",
        server.seen
    );
    let mut second = Client::connect(addr);
    assert_eq!(second.echo("and the next"), pid);
    drop((client, second));
    server.signal(SIGHUP);
    server.expect_clean_exit();
}

/// Two processes share one socket passed by a holder; churn from every
/// CPU runs while the first drains with a client of its own. Every churn
/// connection is served, none is reset or waits for a SYN resent, the
/// drainer admits nothing once it let go, keeps serving its client, and
/// exits 0 when that client leaves. Before socket activation the processes
/// ignored the socket and no churn connection was served.
fn a_hupped_process_leaves_the_shared_socket_to_its_sibling(shim: bool) {
    let run = match Runner::new(Who::Unprivileged) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let dir = ScratchDir::new("shared-hup");
    let preload = if shim {
        match nosteer::build(&dir) {
            Ok(path) => Some(path),
            Err(reason) => return skip(&reason),
        }
    } else {
        None
    };
    let socket = activate::listening_socket("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = activate::local_addr(&socket).unwrap();
    let start = || {
        let mut cmd = passing(&run, &[&socket], Some("drainport"), &["-q"]);
        if let Some(path) = &preload {
            cmd.env(nosteer::PRELOAD, path);
        }
        Server::spawn(cmd)
    };
    let first = start();
    let second = start();
    assert_eq!((first.addr, second.addr), (addr, addr));
    let mut kept = client_of(addr, &first);

    let churn = Churn::start(addr);
    hup_the_first_of_two(
        first,
        second,
        churn,
        move || kept.echo("still served"),
        "a hupped process and its sibling",
    );
}

/// The drain of two processes on one shared socket, under `churn`, which
/// must come to be served by both: `first`, which holds a client of its
/// own, is HUPed. Every churn connection is answered, none is reset or
/// refused, the drainer admits nothing once it let go, and it exits 0
/// once `still_served` has echoed a line on its client (returning the pid
/// that answered) and let it go. `what` names the setup in a failure.
pub(crate) fn hup_the_first_of_two(
    mut first: Server,
    mut second: Server,
    churn: Churn,
    still_served: impl FnOnce() -> u32,
    what: &str,
) {
    churn.wait_served_by(first.pid);
    churn.wait_served_by(second.pid);
    first.signal(SIGHUP);
    // Its own client, and perhaps a churn connection it had taken.
    first.expect_line(&format!("process {} closing tasks: ", first.pid));
    // The status comes from a loop turn after the one that let go of the
    // socket and took what was queued on it then.
    let accepted = status_field(&first.wait_status("state=draining "), "accepted");
    churn.wait_answered(200, "churn to go on with the sibling alone");
    assert_eq!(
        status_field(&first.wait_status("state=draining "), "accepted"),
        accepted,
        "the draining process admitted a client after it let go"
    );
    assert_eq!(still_served(), first.pid);
    first.expect_clean_exit();
    churn.wait_answered(100, "churn to go on after the exit");
    let served = churn.expect_no_failures(what);
    assert!(
        served
            .iter()
            .all(|&(_, pid)| pid == first.pid || pid == second.pid),
        "served by a stranger"
    );
    second.signal(SIGHUP);
    second.expect_clean_exit();
}

#[test]
fn a_hupped_process_leaves_the_shared_socket_to_its_sibling_unprivileged() {
    a_hupped_process_leaves_the_shared_socket_to_its_sibling(false);
}

/// The same where the kernel does not steer (emulated): shared sockets
/// need no steering.
#[test]
fn a_hupped_process_leaves_the_shared_socket_to_its_sibling_without_steering() {
    a_hupped_process_leaves_the_shared_socket_to_its_sibling(true);
}

/// The process count goes down, 3 to 2 to 1, with no replacement started,
/// under churn: on shared sockets nothing is lost, whatever the kernel's
/// steering (here on this kernel, then with steering emulated away). The
/// counts are printed for `docs/operations.md`.
#[test]
fn fewer_processes_on_shared_sockets_lose_nothing() {
    let run = match Runner::new(Who::Unprivileged) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let dir = ScratchDir::new("shared-shrink");
    let shim = match nosteer::build(&dir) {
        Ok(path) => Some(path),
        Err(reason) => {
            skip(&format!("the run without steering: {reason}"));
            None
        }
    };
    for preload in [None, shim.as_ref()] {
        let socket = activate::listening_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = activate::local_addr(&socket).unwrap();
        let mut live: Vec<Server> = (0..3)
            .map(|_| {
                let mut cmd = passing(&run, &[&socket], None, &["-q"]);
                if let Some(path) = preload {
                    cmd.env(nosteer::PRELOAD, path);
                }
                Server::spawn(cmd)
            })
            .collect();
        let churn = Churn::start(addr);
        for server in &live {
            churn.wait_served_by(server.pid);
        }
        while live.len() > 1 {
            let mut leaving = live.remove(0);
            leaving.signal(SIGHUP);
            leaving.expect_clean_exit();
            let from = churn.wait_answered(200, "churn to go on with one process fewer");
            let strays: Vec<u32> = churn
                .served_since(from)
                .into_iter()
                .filter(|pid| !live.iter().any(|s| s.pid == *pid))
                .collect();
            assert!(strays.is_empty(), "served after its exit: {strays:?}");
        }
        let kernel = if preload.is_some() {
            "steering emulated away"
        } else {
            "this kernel"
        };
        let served = churn.expect_no_failures(kernel);
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr().lock(),
            "shared sockets, 3 to 2 to 1 processes ({kernel}): {} connections, none failed",
            served.len()
        );
        for mut server in live {
            server.signal(SIGHUP);
            server.expect_clean_exit();
        }
    }
}

/// Sockets of both families passed together are both served, each
/// announced on a line of its own.
#[test]
fn every_passed_socket_is_served() {
    if TcpListener::bind("[::1]:0").is_err() {
        return skip("no IPv6 loopback");
    }
    let run = match Runner::new(Who::Unprivileged) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let v4 = activate::listening_socket("127.0.0.1:0".parse().unwrap()).unwrap();
    let v6 = activate::listening_socket("[::1]:0".parse().unwrap()).unwrap();
    let addrs = [&v4, &v6].map(|s| activate::local_addr(s).unwrap());
    let mut server = Server::spawn(passing(&run, &[&v4, &v6], Some("web4:web6"), &["-q"]));
    // Both listening lines come together, after everything else.
    server.expect_line("listening on: ");
    for (i, (addr, name)) in addrs.iter().zip(["web4", "web6"]).enumerate() {
        let fd = 3 + i;
        for needle in [
            format!("takes fd {fd} ({name}) from the service manager: {addr}"),
            format!("listening on: {addr}"),
        ] {
            assert!(
                server.seen.iter().any(|l| l.ends_with(&needle)),
                "{needle}: {:#?}",
                server.seen
            );
        }
        assert_eq!(Client::connect(*addr).echo("hi"), server.pid);
    }
    server.signal(SIGHUP);
    server.expect_clean_exit();
}

/// Descriptors that are not listening stream sockets, and variables that
/// do not add up, are the operator's mistakes: one line on stderr, exit 1,
/// and nothing listens. Before socket activation, drainport ignored them
/// and listened on 127.0.0.1:8080.
#[test]
fn what_is_not_a_listening_stream_socket_is_refused() {
    let run = match Runner::new(Who::Unprivileged) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the array with two new descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both are new and owned by nobody else.
    let (pipe, _write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let udp = OwnedFd::from(UdpSocket::bind("127.0.0.1:0").unwrap());
    // A TCP socket that never listened, as Accept=yes would pass a connection.
    // SAFETY: a new descriptor, owned at once.
    let idle = unsafe {
        OwnedFd::from_raw_fd(libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        ))
    };
    let tcp = activate::listening_socket("127.0.0.1:0".parse().unwrap()).unwrap();
    for (sockets, names, needle) in [
        (
            vec![&pipe],
            None,
            "fd 3 (unknown) passed by the service manager is not a socket",
        ),
        (
            vec![&udp],
            Some("dns"),
            "fd 3 (dns) passed by the service manager is a datagram socket (ListenDatagram=) on 127.0.0.1:",
        ),
        (
            vec![&tcp, &idle],
            None,
            "fd 4 (unknown) passed by the service manager is not listening",
        ),
        (
            vec![&tcp],
            Some("a:b"),
            "LISTEN_FDNAMES names 2 descriptors but LISTEN_FDS=1",
        ),
    ] {
        let mut cmd = passing(&run, &sockets, names, &["127.0.0.1:0"]);
        let output = output_retrying(cmd.stdin(Stdio::null())).expect("run drainport");
        let stderr = one_line_error(&output, needle, needle);
        assert!(stderr.starts_with("drainport: "), "{stderr}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(!stdout.contains("listening on"), "{stdout}");
    }
}

/// Variables meant for another process (inherited by mistake) are not
/// this one's: it binds its own address and leaves the descriptor alone.
#[test]
fn variables_for_another_process_are_ignored() {
    let run = match Runner::new(Who::Unprivileged) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let socket = activate::listening_socket("127.0.0.1:0".parse().unwrap()).unwrap();
    let passed = activate::local_addr(&socket).unwrap();
    let mut cmd = run.command(&[], &["-q", "127.0.0.1:0"]);
    activate::pass(&mut cmd, &[socket.as_raw_fd()], None);
    // SAFETY: getppid has no preconditions; it is not the server's pid.
    cmd.env("LISTEN_PID", unsafe { libc::getppid() }.to_string());
    let mut server = Server::spawn(cmd);
    assert_ne!(server.addr, passed);
    assert!(
        !server.seen.iter().any(|l| l.contains("service manager")),
        "{:#?}",
        server.seen
    );
    assert_eq!(Client::connect(server.addr).echo("own"), server.pid);
    server.signal(SIGHUP);
    server.expect_clean_exit();
}
