//! The drain: how it starts, how it ends, and that no connection is lost
//! across it.

use libc::{SIGCONT, SIGHUP, SIGINT, SIGSTOP, SIGTERM};

use crate::netns::{MIGRATE_REQ, in_namespace};
use crate::util::{Client, Server, closing_line, connect_burst, raise_fd_limit};

#[test]
fn no_clients_means_immediate_exit() {
    let mut server = Server::start(&["127.0.0.1:0"]);
    server.signal(SIGHUP);
    let lines = server.expect_clean_exit().to_vec();
    let pid = server.pid;
    assert_eq!(
        &lines[lines.len() - 3..],
        [
            format!("Process {pid} received hangup signal"),
            format!("process {pid} closing tasks: 0"),
            format!("Process {pid} has no clients left, exiting"),
        ]
    );
}

#[test]
fn term_and_int_drain_like_hup() {
    for (signal, name) in [(SIGTERM, "terminate"), (SIGINT, "interrupt")] {
        let mut server = Server::start(&["127.0.0.1:0"]);
        let mut client = Client::connect(server.addr);
        assert_eq!(client.echo("before"), server.pid);
        server.signal(signal);
        server.expect_line(&format!("Process {} received {name} signal", server.pid));
        server.expect_line(&format!("process {} closing tasks: 1", server.pid));
        assert_eq!(client.echo("during"), server.pid);
        drop(client);
        server.expect_clean_exit();
    }
}

#[test]
fn drain_timeout_closes_with_a_last_line() {
    let mut server = Server::start(&["--drain-timeout", "0.3", "127.0.0.1:0"]);
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(server.addr)).collect();
    for client in &mut clients {
        assert_eq!(client.echo("hi"), server.pid);
    }
    server.signal(SIGHUP);
    server.expect_line(&format!("process {} closing tasks: 3", server.pid));
    let closing = closing_line(server.pid);
    for client in &mut clients {
        assert_eq!(String::from_utf8(client.read_line()).unwrap(), closing);
        client.expect_eof();
    }
    let lines = server.expect_clean_exit().join("\n");
    assert!(
        lines.contains("reached its drain timeout of 0.3s: closing 3 clients"),
        "{lines}"
    );
}

#[test]
fn second_signal_is_a_hard_stop() {
    let mut server = Server::start(&["127.0.0.1:0"]);
    let mut client = Client::connect(server.addr);
    assert_eq!(client.echo("hi"), server.pid);
    server.signal(SIGHUP);
    server.expect_line(&format!("process {} closing tasks: 1", server.pid));
    assert_eq!(client.echo("still"), server.pid);
    server.signal(SIGTERM);
    let closing = closing_line(server.pid);
    assert_eq!(String::from_utf8(client.read_line()).unwrap(), closing);
    client.expect_eof();
    let pid = server.pid;
    let lines = server.expect_clean_exit();
    assert!(
        lines.contains(&format!(
            "Process {pid} received terminate signal during drain: closing 1 client"
        )),
        "{lines:#?}"
    );
}

/// The HUP lands while the leaving server's accept queue is full: the
/// server is stopped (SIGSTOP) while a burst of clients connects, then gets
/// SIGHUP and SIGCONT together, and a second burst follows during the drain.
/// Each client sends a line at once but reads its reply only after both
/// bursts, so a connection reset in a queue shows up as a failed read.
/// Every client must connect and be answered.
fn burst_across_hup() {
    raise_fd_limit();
    let mut leaving = Server::start(&["-q", "127.0.0.1:0"]);
    let staying = leaving.sibling(&["-q"]);
    let pids = [leaving.pid, staying.pid];

    leaving.signal(SIGSTOP);
    // kill(2) returns before the stop takes effect: until it does, the
    // process could take some of the burst, and the queue would not build.
    leaving.wait_stopped();
    let mut clients = connect_burst(leaving.addr, 8, 100, "queued");
    leaving.signal(SIGHUP);
    leaving.signal(SIGCONT);
    clients.extend(connect_burst(leaving.addr, 8, 100, "draining"));

    let mut served_by = [0usize; 2];
    for (line, mut client) in clients {
        let pid = client.read_reply(line.as_bytes());
        let index = pids
            .iter()
            .position(|&p| p == pid)
            .expect("reply from an unknown pid");
        served_by[index] += 1;
    }
    assert!(
        served_by[0] > 0,
        "the draining server served nobody: {served_by:?}"
    );
    assert!(
        served_by[1] > 0,
        "the staying server served nobody: {served_by:?}"
    );
    leaving.expect_clean_exit();
}

#[test]
fn burst_across_hup_with_kernel_defaults() {
    burst_across_hup();
}

#[test]
fn burst_across_hup_with_tcp_migrate_req() {
    in_namespace(&[MIGRATE_REQ], burst_across_hup);
}

#[test]
fn signals_during_exit_never_kill_the_process() {
    // Stop signals after stop signals until the process is gone: the first
    // starts a drain, the second stops it hard, and the rest land while it
    // stops and exits. Three different ones are sent while the process is
    // stopped (SIGSTOP), so they all wait for it and the third reaches a
    // process already stopping hard, however the machine schedules this
    // test; the storm after SIGCONT lands wherever it happens to.
    let mut server = Server::start(&["127.0.0.1:0"]);
    let mut client = Client::connect(server.addr);
    assert_eq!(client.echo("hi"), server.pid);
    server.signal(SIGSTOP);
    server.wait_stopped();
    for signal in [SIGHUP, SIGINT, SIGTERM] {
        server.signal(signal);
    }
    server.signal(SIGCONT);
    let mut sent = 3;
    while server.is_running() && sent < 100_000 {
        server.signal(if sent % 2 == 0 { SIGHUP } else { SIGTERM });
        sent += 1;
    }
    let status = server.wait_exit();
    assert!(
        status.success(),
        "exit {status:?} after {sent} signals; stdout {:#?}",
        server.seen
    );
    let pid = server.pid;
    let count = |needle: &str| server.seen.iter().filter(|l| l.contains(needle)).count();
    let received = format!("Process {pid} received ");
    let drains = server
        .seen
        .iter()
        .filter(|l| l.starts_with(&received) && l.ends_with(" signal"))
        .count();
    assert_eq!(drains, 1, "one drain; stdout {:#?}", server.seen);
    assert_eq!(
        count(" signal during drain: closing 1 client"),
        1,
        "one hard stop; stdout {:#?}",
        server.seen
    );
    assert!(
        count(" signal while closing: ") >= 1,
        "no stop signal reached the process after its hard stop; stdout {:#?}",
        server.seen
    );
}
