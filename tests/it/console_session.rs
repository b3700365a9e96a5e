//! The console session the project started from, replayed with real
//! processes: two servers on one port, a HUP, and clients that never notice.

use libc::SIGHUP;

use crate::util::{Client, Server, skip};

/// Connects clients until `want` of them are served by `server`, keeping the
/// others too. SO_REUSEPORT spreads connections by hash, so this is bounded
/// rather than exact.
fn clients_of(server: &Server, want: usize) -> (Vec<Client>, Vec<Client>) {
    let mut mine = Vec::new();
    let mut others = Vec::new();
    for i in 0..200 {
        if mine.len() == want {
            break;
        }
        let mut client = Client::connect(server.addr);
        if client.echo(&format!("hello {i}")) == server.pid {
            mine.push(client);
        } else {
            others.push(client);
        }
    }
    assert_eq!(
        mine.len(),
        want,
        "SO_REUSEPORT never picked pid {}",
        server.pid
    );
    (mine, others)
}

#[test]
fn two_servers_share_a_port_and_a_hup_cuts_no_client() {
    let mut first = Server::start(&["127.0.0.1:0"]);
    let mut second = first.sibling(&[]);
    assert_eq!(first.addr, second.addr);

    let (mut seconds, firsts) = clients_of(&second, 2);
    second.expect_line("accepted connection from: 127.0.0.1:");

    second.signal(SIGHUP);
    second.expect_line(&format!("Process {} received hangup signal", second.pid));
    second.expect_line(&format!("process {} closing tasks: 2", second.pid));

    // The HUPed process keeps serving its clients.
    for client in &mut seconds {
        assert_eq!(client.echo("fff"), second.pid);
    }
    // New clients land on the process still accepting.
    for i in 0..10 {
        let mut client = Client::connect(first.addr);
        assert_eq!(client.echo(&format!("new {i}")), first.pid);
    }
    assert!(second.is_running(), "exited with clients left");

    drop(seconds);
    let goodbye = format!("Process {} has no clients left, exiting", second.pid);
    let lines = second.expect_clean_exit();
    assert_eq!(lines.last(), Some(&goodbye));

    // The first process keeps its own clients through all of this.
    let mut firsts = firsts;
    for client in &mut firsts {
        assert_eq!(client.echo("still here"), first.pid);
    }
    let mut last = Client::connect(first.addr);
    assert_eq!(last.echo("last"), first.pid);
    let open = firsts.len() + 1;
    first.signal(SIGHUP);
    first.expect_line(&format!("process {} closing tasks: {open}", first.pid));
    drop(firsts);
    drop(last);
    first.expect_clean_exit();
}

#[test]
fn ipv6_addresses_work() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        skip("no IPv6 loopback on this machine");
        return;
    }
    let mut first = Server::start(&["[::1]:0"]);
    assert!(first.addr.is_ipv6());
    let second = first.sibling(&[]);
    for i in 0..4 {
        let pid = Client::connect(first.addr).echo(&format!("v6 {i}"));
        assert!(pid == first.pid || pid == second.pid);
    }
    first.signal(SIGHUP);
    first.expect_clean_exit();
}
