//! What operators rely on in production: readiness (systemd notify and the
//! pid file), the status line, drain progress, the drain notice and the
//! spread-out close at the drain deadline.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use libc::{SIGHUP, SIGTERM, SIGUSR1};

use crate::util::{
    BIN, Client, DEADLINE, ScratchDir, Server, closing_line, have_tool, one_line_error, reply,
    status_value, systemd_verify, wait_until,
};

/// Receives notify datagrams until one contains `needle`; returns it.
#[track_caller]
fn expect_datagram(socket: &UnixDatagram, needle: &str, seen: &mut Vec<String>) -> String {
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    loop {
        let mut buf = [0; 4096];
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no datagram containing {needle:?}: {e}; saw {seen:#?}"));
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(text.clone());
        if text.contains(needle) {
            return text;
        }
    }
}

#[test]
fn systemd_notify_protocol() {
    let dir = ScratchDir::new("notify");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("127.0.0.1:0").env("NOTIFY_SOCKET", &path);
    let mut server = Server::spawn(cmd);
    let mut seen = Vec::new();

    let ready = expect_datagram(&socket, "READY=1", &mut seen);
    assert!(
        ready
            .lines()
            .any(|l| l == format!("MAINPID={}", server.pid)),
        "{ready:?}"
    );
    assert!(ready.contains("STATUS=serving, 0 clients"), "{ready:?}");

    let mut client = Client::connect(server.addr);
    assert_eq!(client.echo("hi"), server.pid);
    let serving = expect_datagram(&socket, "STATUS=serving, 1 client", &mut seen);
    assert!(
        serving.lines().any(|l| l == "STATUS=serving, 1 client"),
        "{serving:?}"
    );

    server.signal(SIGHUP);
    let stopping = expect_datagram(&socket, "STOPPING=1", &mut seen);
    assert!(
        stopping.contains("STATUS=draining, 1 client left"),
        "{stopping:?}"
    );
    drop(client);
    server.expect_clean_exit();
}

#[test]
fn systemd_notify_to_an_abstract_socket() {
    let name = format!("drainport-test-notify-{}", std::process::id());
    let addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            &name,
        )
        .unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("127.0.0.1:0")
        .env("NOTIFY_SOCKET", format!("@{name}"));
    let server = Server::spawn(cmd);
    let ready = expect_datagram(&socket, "READY=1", &mut Vec::new());
    assert!(
        ready.contains(&format!("MAINPID={}", server.pid)),
        "{ready:?}"
    );
    server.signal(SIGHUP);
}

#[test]
fn pid_file_lives_as_long_as_the_process() {
    let dir = ScratchDir::new("pidfile");
    let path = dir.join("drainport.pid");
    let mut server = Server::start(&["--pid-file", path.to_str().unwrap(), "127.0.0.1:0"]);
    // Written before the listening line, so it is there now.
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}\n", server.pid)
    );
    server.signal(SIGHUP);
    server.expect_clean_exit();
    assert!(!path.exists(), "pid file left behind");
    let leftovers: Vec<_> = std::fs::read_dir(&*dir).unwrap().collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn a_replaced_pid_file_is_left_to_its_new_owner() {
    let dir = ScratchDir::new("pidfile-replaced");
    let path = dir.join("drainport.pid");
    let mut server = Server::start(&["--pid-file", path.to_str().unwrap(), "127.0.0.1:0"]);
    // The next generation took the path over.
    std::fs::write(&path, "4242\n").unwrap();
    server.signal(SIGHUP);
    server.expect_clean_exit();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "4242\n");
}

#[test]
fn unwritable_pid_file_is_an_operator_error() {
    let out = Command::new(BIN)
        .args(["--pid-file", "/nonexistent/dir/d.pid", "127.0.0.1:0"])
        .output()
        .unwrap();
    one_line_error(
        &out,
        "drainport",
        "cannot write pid file /nonexistent/dir/d.pid",
    );
}

#[test]
fn sigusr1_prints_one_status_line() {
    let mut server = Server::start(&["127.0.0.1:0"]);
    let mut a = Client::connect(server.addr);
    let b = Client::connect(server.addr);
    assert_eq!(a.echo("one"), server.pid);
    assert_eq!(a.echo("two"), server.pid);
    // b sent nothing: the server may take it from the queue a moment later.
    let status = server.wait_status("clients=2 ");
    assert_eq!(status_value(&status, "state"), "running");
    assert_eq!(status_value(&status, "clients"), "2");
    assert_eq!(status_value(&status, "accepted"), "2");
    assert_eq!(status_value(&status, "lines"), "2");
    assert_eq!(status_value(&status, "bytes_in"), "8");
    let replies = reply(b"one\n", server.pid).len() * 2;
    assert_eq!(status_value(&status, "bytes_out"), replies.to_string());
    assert_eq!(status_value(&status, "since_hangup"), "-");

    server.signal(SIGHUP);
    server.expect_line("closing tasks: 2");
    server.signal(SIGUSR1);
    let status = server.expect_line(&format!("Process {} status: ", server.pid));
    assert_eq!(status_value(&status, "state"), "draining");
    let since = status_value(&status, "since_hangup");
    assert!(
        since.ends_with('s') && since.trim_end_matches('s').parse::<f64>().is_ok(),
        "{since}"
    );
    // SIGUSR1 does not count as a second stop signal.
    assert_eq!(a.echo("three"), server.pid);
    drop((a, b));
    server.expect_clean_exit();
}

#[test]
fn drain_progress_is_reported_as_clients_leave() {
    let mut server = Server::start(&["-q", "127.0.0.1:0"]);
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(server.addr)).collect();
    for client in &mut clients {
        assert_eq!(client.echo("hi"), server.pid);
    }
    server.signal(SIGHUP);
    server.expect_line("closing tasks: 3");
    clients.pop();
    server.expect_line(&format!("Process {} draining: 2 clients left", server.pid));
    clients.pop();
    server.expect_line(&format!("Process {} draining: 1 client left", server.pid));
    // The last client leaves after the next progress report is due, so a
    // server that reported "0 clients left" before its exit line would
    // print it here.
    std::thread::sleep(Duration::from_millis(1500));
    clients.clear();
    let lines = server.expect_clean_exit().to_vec();
    let progress: Vec<&String> = lines.iter().filter(|l| l.contains(" left")).collect();
    assert_eq!(
        progress,
        [
            &format!("Process {} draining: 2 clients left", server.pid),
            &format!("Process {} draining: 1 client left", server.pid),
            &format!("Process {} has no clients left, exiting", server.pid),
        ],
        "{lines:#?}"
    );
}

#[test]
fn drain_notice_reaches_every_client_once() {
    let mut server = Server::start(&[
        "--drain-notice",
        "going away, please reconnect",
        "127.0.0.1:0",
    ]);
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(server.addr)).collect();
    for client in &mut clients {
        assert_eq!(client.echo("before"), server.pid);
    }
    server.signal(SIGHUP);
    server.expect_line("closing tasks: 3");
    for client in &mut clients {
        assert_eq!(client.read_line(), b"going away, please reconnect\n");
        // Then business as usual, with no second notice.
        assert_eq!(client.echo("after"), server.pid);
    }
    clients.clear();
    server.expect_clean_exit();
}

#[test]
fn close_spread_closes_clients_one_by_one() {
    // Three clients over 30 s: closes are due at 10 s, 20 s and 30 s. What
    // the test checks between the first close and its SIGTERM (a status
    // line, two echoes, and a progress line that comes within a second)
    // must fit before the second close: the 10 s between them leave a busy
    // machine room for that. The window is the schedule under test, so it
    // cannot be taken away, only made wide.
    let mut server = Server::start(&[
        "--drain-timeout",
        "0.1",
        "--close-spread",
        "30",
        "127.0.0.1:0",
    ]);
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(server.addr)).collect();
    for client in &mut clients {
        assert_eq!(client.echo("hi"), server.pid);
    }
    server.signal(SIGHUP);
    server.expect_line("reached its drain timeout of 0.1s: closing 3 clients over 30s");

    // The first close comes a third of the way into the window; the others
    // are still open then and are served.
    let closing = closing_line(server.pid).into_bytes();
    let first = wait_until("the first spread close", || {
        clients.iter_mut().position(|c| {
            c.stream
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            c.try_read_line().is_ok_and(|line| line == closing)
        })
    });
    let mut first_client = clients.remove(first);
    first_client
        .stream
        .set_read_timeout(Some(DEADLINE))
        .unwrap();
    first_client.expect_eof();
    server.signal(SIGUSR1);
    let status = server.expect_line("status: state=closing");
    assert_eq!(status_value(&status, "clients"), "2", "{status}");
    for client in &mut clients {
        client.stream.set_read_timeout(Some(DEADLINE)).unwrap();
        assert_eq!(client.echo("still here"), server.pid);
    }

    // The count of clients left names the phase, as the status line does.
    // It may come before or after the status line.
    let progress = format!("Process {} closing: 2 clients left", server.pid);
    wait_until(&progress, || {
        (server.count_lines(&progress) == 1).then_some(())
    });

    // An impatient operator's second signal closes the rest now, and the
    // log says so.
    server.signal(SIGTERM);
    for client in &mut clients {
        assert_eq!(client.read_line(), closing);
        client.expect_eof();
    }
    server.expect_line(&format!(
        "Process {} received terminate signal while closing: closing 2 clients now",
        server.pid
    ));
    let lines = server.expect_clean_exit().join("\n");
    assert!(
        lines.ends_with(&format!("Process {} exiting", server.pid)),
        "{lines}"
    );
}

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/drainport@.service");

/// The shipped systemd template unit passes `systemd-analyze verify`, runs
/// as an unprivileged user, and is the one `docs/operations.md` shows.
#[test]
fn systemd_unit_passes_verify() {
    let unit = std::fs::read_to_string(UNIT).expect("read the unit");
    let guide = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");
    let guide = std::fs::read_to_string(guide).expect("read docs/operations.md");
    assert!(
        guide.contains(&unit),
        "docs/operations.md does not show {UNIT} as it is"
    );
    let user = unit
        .lines()
        .find_map(|l| l.strip_prefix("User="))
        .expect("a User= line");
    assert!(!["", "root", "0"].contains(&user), "User={user}");

    if !have_tool("systemd-analyze", "systemd") {
        return;
    }
    // verify checks that ExecStart's program exists: point it at the
    // binary under test, in a copy.
    const PROGRAM: &str = "ExecStart=/opt/drainport/current/bin/drainport ";
    assert!(unit.contains(PROGRAM), "{unit}");
    let dir = ScratchDir::new("unit");
    let copy = dir.join("drainport@.service");
    std::fs::write(&copy, unit.replace(PROGRAM, &format!("ExecStart={BIN} "))).unwrap();
    let complaints = systemd_verify(&[&copy]);
    assert!(complaints.is_empty(), "{complaints}");
}

/// The seconds in `--FLAG N` on the unit's `ExecStart`.
#[track_caller]
fn exec_start_seconds(unit: &str, flag: &str) -> f64 {
    let exec = unit.split("ExecStart=").nth(1).expect("an ExecStart= line");
    let mut words = exec.split_whitespace();
    words.find(|w| *w == flag);
    words
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {flag} N in ExecStart"))
}

/// systemd sends SIGKILL once `TimeoutStopSec` has passed, and a shutdown
/// waits for it: the shipped unit's stop timeout is above the longest
/// drain it configures (`--drain-timeout` plus `--close-spread`), so no
/// drain is cut short, and no more than five minutes, so no reboot waits
/// for an hour.
#[test]
fn unit_stop_timeout_covers_the_drain_and_stays_short() {
    let unit = std::fs::read_to_string(UNIT).expect("read the unit");
    let drain = exec_start_seconds(&unit, "--drain-timeout");
    let spread = exec_start_seconds(&unit, "--close-spread");
    let stop: f64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.parse().ok())
        .expect("a TimeoutStopSec= line in plain seconds");
    assert!(
        stop >= drain + spread + 10.0,
        "TimeoutStopSec={stop} leaves no margin over {drain} + {spread}"
    );
    assert!(
        stop <= 300.0,
        "TimeoutStopSec={stop} holds a shutdown too long"
    );
    let guide = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");
    let guide = std::fs::read_to_string(guide).expect("read docs/operations.md");
    for said in [
        format!("`--drain-timeout {drain} --close-spread {spread}`"),
        format!("`TimeoutStopSec={stop}`"),
    ] {
        assert!(
            guide.contains(&said),
            "docs/operations.md does not say {said}"
        );
    }
}

/// The shipped socket unit and the drop-in that gives its socket to every
/// instance pass `systemd-analyze verify` together with the template, the
/// socket listens where the instances' command line says they serve, and
/// `docs/operations.md` shows both as they are.
#[test]
fn the_socket_unit_and_its_drop_in_pass_verify() {
    const SOCKET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/drainport.socket");
    const DROP_IN: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/drainport@.service.d/socket.conf"
    );
    let socket = std::fs::read_to_string(SOCKET).expect("read the socket unit");
    let drop_in = std::fs::read_to_string(DROP_IN).expect("read the drop-in");
    let unit = std::fs::read_to_string(UNIT).expect("read the unit");
    let guide = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");
    let guide = std::fs::read_to_string(guide).expect("read docs/operations.md");
    for (path, text) in [(SOCKET, &socket), (DROP_IN, &drop_in)] {
        assert!(
            guide.contains(text.as_str()),
            "docs/operations.md does not show {path} as it is"
        );
    }
    // The instances' address is the socket's, so they bind nothing.
    let listen = socket
        .lines()
        .find_map(|l| l.strip_prefix("ListenStream="))
        .expect("a ListenStream= line");
    let exec = unit.split("ExecStart=").nth(1).expect("an ExecStart= line");
    let last = exec
        .lines()
        .take_while(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .last()
        .and_then(|l| l.split_whitespace().last())
        .expect("an address on ExecStart");
    assert_eq!(
        listen, last,
        "the socket and the instances' command line differ"
    );
    assert!(
        drop_in.lines().any(|l| l == "Sockets=drainport.socket"),
        "{drop_in}"
    );

    if !have_tool("systemd-analyze", "systemd") {
        return;
    }
    const PROGRAM: &str = "ExecStart=/opt/drainport/current/bin/drainport ";
    let dir = ScratchDir::new("socket-unit");
    std::fs::write(dir.join("drainport.socket"), &socket).unwrap();
    std::fs::write(
        dir.join("drainport@.service"),
        unit.replace(PROGRAM, &format!("ExecStart={BIN} ")),
    )
    .unwrap();
    std::fs::create_dir(dir.join("drainport@.service.d")).unwrap();
    std::fs::write(dir.join("drainport@.service.d/socket.conf"), &drop_in).unwrap();
    std::os::unix::fs::symlink("drainport@.service", dir.join("drainport@g1-1.service")).unwrap();
    let complaints = systemd_verify(&[
        &dir.join("drainport.socket"),
        &dir.join("drainport@g1-1.service"),
    ]);
    assert!(complaints.is_empty(), "{complaints}");
}

/// The drop-ins `docs/operations.md` shows, each as a ```ini block whose
/// first line names `/etc/systemd/system/drainport@.service.d/NAME`:
/// (name, text).
fn guide_drop_ins() -> Vec<(String, String)> {
    const DIR: &str = "# /etc/systemd/system/drainport@.service.d/";
    let guide = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");
    let guide = std::fs::read_to_string(guide).expect("read docs/operations.md");
    guide
        .split("```ini\n")
        .skip(1)
        .filter_map(|block| {
            let text = block.split_once("```").map(|(text, _)| text)?;
            let name = text.lines().next()?.strip_prefix(DIR)?;
            Some((name.to_owned(), text.to_owned()))
        })
        .collect()
}

/// `systemd-analyze verify` on the shipped unit with `drop_in` in its
/// drop-in directory, as instance `drainport@g1-1`, with every program
/// path pointing at the binary under test. Returns its complaints.
fn verify_with_drop_in(name: &str, drop_in: &str) -> String {
    const PROGRAM: &str = "ExecStart=/opt/drainport/current/bin/drainport ";
    let unit = std::fs::read_to_string(UNIT).expect("read the unit");
    let dir = ScratchDir::new("drop-in");
    let bin = format!("ExecStart={BIN} ");
    std::fs::write(dir.join("drainport@.service"), unit.replace(PROGRAM, &bin)).unwrap();
    std::os::unix::fs::symlink("drainport@.service", dir.join("drainport@g1-1.service")).unwrap();
    std::fs::create_dir(dir.join("drainport@.service.d")).unwrap();
    std::fs::write(
        dir.join("drainport@.service.d").join(name),
        drop_in.replace(PROGRAM, &bin),
    )
    .unwrap();
    systemd_verify(&[&dir.join("drainport@g1-1.service")])
}

/// Operators' settings go in drop-ins, which the next install leaves
/// alone: each drop-in the guide shows verifies with the unit. A drop-in
/// naming a program that does not exist is refused, so the drop-ins are
/// read.
#[test]
fn the_guides_drop_ins_verify_with_the_unit() {
    let drop_ins = guide_drop_ins();
    let names: Vec<&str> = drop_ins.iter().map(|(n, _)| n.as_str()).collect();
    for needed in ["site.conf", "environment.conf", "net-admin.conf"] {
        assert!(
            names.contains(&needed),
            "no {needed} in the guide: {names:?}"
        );
    }
    assert!(
        drop_ins.iter().any(|(_, t)| t.contains("EnvironmentFile=")),
        "no EnvironmentFile= drop-in in the guide"
    );
    if !have_tool("systemd-analyze", "systemd") {
        return;
    }
    for (name, text) in &drop_ins {
        let complaints = verify_with_drop_in(name, text);
        assert!(complaints.is_empty(), "{name}:\n{text}\n{complaints}");
    }
    let broken = "[Service]\nExecStart=\nExecStart=/nonexistent/drainport 127.0.0.1:1\n";
    let complaints = verify_with_drop_in("broken.conf", broken);
    assert!(
        complaints.contains("/nonexistent/drainport"),
        "a broken drop-in passed: {complaints}"
    );
}
