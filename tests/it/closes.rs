//! Closes on the real binary: each close the server decides leaves one
//! line with its reason, under the rule of the accepted lines (`-q`
//! silences both), and every close is counted under its reason in the
//! status line, logged or not. No test asserts a time: each waits for the
//! line or the count, within the suite's bound.

use std::net::SocketAddr;

use libc::SIGHUP;

use crate::util::{Client, Server, closing_line, status_field};

/// The line a close for `reason` of the client at `peer` leaves.
fn close_line(server: &Server, peer: SocketAddr, reason: &str) -> String {
    format!(
        "Process {} closed connection from: {peer} ({reason})",
        server.pid
    )
}

fn peer_of(client: &Client) -> SocketAddr {
    client.stream.local_addr().expect("local address")
}

/// The status line, once the server has counted `closed` closes.
#[track_caller]
fn status_after(server: &mut Server, closed: u64) -> String {
    server.wait_status(&format!(" closed={closed} "))
}

#[test]
fn an_idle_timeout_close_is_logged_with_its_reason_and_counted() {
    let mut server = Server::start(&["--idle-timeout", "0.3", "127.0.0.1:0"]);
    let mut mute = Client::connect(server.addr);
    let peer = peer_of(&mute);
    assert_eq!(mute.read_line(), b"error: idle for 0.3s, closing\n");
    server.expect_line(&close_line(&server, peer, "idle_timeout"));
    mute.expect_eof();
    // Counted when its end began: while the server waits for the client's
    // EOF it is still one of its clients.
    let status = status_after(&mut server, 1);
    assert_eq!(status_field(&status, "idle_timeout"), 1, "{status}");
    drop(mute);
    let status = server.wait_status("clients=0 ");
    assert_eq!(status_field(&status, "accepted"), 1, "{status}");
    assert_eq!(status_field(&status, "closed"), 1, "{status}");
}

#[test]
fn a_send_timeout_close_is_logged_with_its_reason_and_counted() {
    let mut server = Server::start(&["--send-timeout", "0.3", "127.0.0.1:0"]);
    let mut hog = Client::connect(server.addr);
    let peer = peer_of(&hog);
    let line = [b"0123456789abcdef".repeat(4).as_slice(), b"\n"].concat();
    assert!(
        hog.write_until_closed(&line),
        "a client that never reads stayed"
    );
    server.expect_line(&close_line(&server, peer, "send_timeout"));
    let status = status_after(&mut server, 1);
    assert_eq!(status_field(&status, "send_timeout"), 1, "{status}");
}

#[test]
fn a_drain_deadline_close_is_logged_with_its_reason_and_counted() {
    let mut server = Server::start(&["--drain-timeout", "0.3", "127.0.0.1:0"]);
    let mut stays = Client::connect(server.addr);
    let peer = peer_of(&stays);
    assert_eq!(stays.echo("here"), server.pid);
    server.signal(SIGHUP);
    server.expect_line("closing tasks: 1");
    assert_eq!(stays.read_line(), closing_line(server.pid).into_bytes());
    server.expect_line(&close_line(&server, peer, "drain_timeout"));
    stays.expect_eof();
    server.expect_clean_exit();
}

#[test]
fn a_hard_stop_close_and_a_line_too_long_are_logged_with_their_reasons() {
    let mut server = Server::start(&["--max-line", "16", "127.0.0.1:0"]);
    let mut long = Client::connect(server.addr);
    let long_peer = peer_of(&long);
    long.send(b"this line is longer than sixteen bytes\n");
    assert_eq!(long.read_line(), b"error: line longer than 16 bytes\n");
    server.expect_line(&close_line(&server, long_peer, "too_long"));
    long.shutdown_write();
    long.expect_eof();

    let mut stays = Client::connect(server.addr);
    let peer = peer_of(&stays);
    assert_eq!(stays.echo("here"), server.pid);
    let status = status_after(&mut server, 1);
    assert_eq!(status_field(&status, "too_long"), 1, "{status}");
    server.signal(SIGHUP);
    server.expect_line("closing tasks: 1");
    server.signal(SIGHUP);
    server.expect_line(&close_line(&server, peer, "hard_stop"));
    server.expect_clean_exit();
}

/// The client's own ends are counted, not logged: a client that leaves
/// (its EOF) and one whose connection fails (a reset).
#[test]
fn a_client_that_leaves_or_resets_is_counted_and_not_logged() {
    let mut server = Server::start(&["127.0.0.1:0"]);
    let mut leaves = Client::connect(server.addr);
    assert_eq!(leaves.echo("bye"), server.pid);
    leaves.shutdown_write();
    leaves.expect_eof();
    let resets = Client::connect(server.addr);
    let mut probe = Client::connect(server.addr);
    assert_eq!(probe.echo("after both"), server.pid);
    resets.reset();
    let status = status_after(&mut server, 2);
    assert_eq!(status_field(&status, "left"), 1, "{status}");
    assert_eq!(status_field(&status, "failed"), 1, "{status}");
    assert_eq!(status_field(&status, "accepted"), 3, "{status}");
    assert_eq!(status_field(&status, "clients"), 1, "{status}");
    assert_eq!(server.count_lines("closed connection"), 0);
}

/// With `-q`, none of the server's closes leaves a line (as no accept
/// does), and each is still counted.
#[test]
fn quiet_silences_the_close_lines_and_keeps_the_counts() {
    // Each timeout on a process of its own: a client that never reads is
    // also silent, and either timer could come first.
    for timeout in ["--idle-timeout", "--send-timeout"] {
        let mut server = Server::start(&["-q", timeout, "0.3", "127.0.0.1:0"]);
        let mut client = Client::connect(server.addr);
        if timeout == "--idle-timeout" {
            assert_eq!(client.read_line(), b"error: idle for 0.3s, closing\n");
            client.expect_eof();
        } else {
            let line = [b"0123456789abcdef".repeat(4).as_slice(), b"\n"].concat();
            assert!(
                client.write_until_closed(&line),
                "a client that never reads stayed"
            );
        }
        let status = status_after(&mut server, 1);
        let reason = &timeout[2..].replace('-', "_");
        assert_eq!(status_field(&status, reason), 1, "{status}");
        drop(client);
        server.signal(SIGHUP);
        let lines = server.expect_clean_exit().to_vec();
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("closed connection") || l.contains("accepted connection")),
            "{timeout}: {lines:#?}"
        );
    }

    // The drain deadline and the hard stop, on a process without an idle
    // timeout to come first.
    for (args, signals) in [(&["--drain-timeout", "0.3"][..], 1), (&[][..], 2)] {
        let mut server = Server::start(&[&["-q"], args, &["127.0.0.1:0"]].concat());
        let mut stays = Client::connect(server.addr);
        assert_eq!(stays.echo("here"), server.pid);
        server.signal(SIGHUP);
        server.expect_line("closing tasks: 1");
        if signals == 2 {
            server.signal(SIGHUP);
        }
        assert_eq!(stays.read_line(), closing_line(server.pid).into_bytes());
        stays.expect_eof();
        let lines = server.expect_clean_exit().to_vec();
        assert!(
            !lines.iter().any(|l| l.contains("closed connection")),
            "{args:?}: {lines:#?}"
        );
    }
}
