//! Several addresses in one process: each gets its own listeners, its own
//! announcement of the service, and its own retirement, and a drain covers
//! them all. Before, the command line took one address only.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};

use libc::SIGHUP;

use crate::runner::{Runner, Who};
use crate::util::{Client, DEADLINE, Server, example_bin, one_line_error, output_retrying, skip};

/// Whether IPv6 loopback works here.
fn have_ipv6() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// A port free on both 0.0.0.0 and [::] a moment ago.
fn free_port() -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind("0.0.0.0:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port();
        // Dual-stack, as std binds it: free on both families.
        if TcpListener::bind(("::", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both families");
}

/// The addresses the process announced its service on, from
/// `/proc/net/unix`.
fn announced(pid: u32) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/unix").expect("read /proc/net/unix");
    let mut found: Vec<String> = table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(7))
        .filter_map(|name| name.strip_prefix("@drainport|"))
        .filter_map(|rest| {
            let mut parts = rest.split('|');
            let addr = parts.next()?;
            // `<pid>.<nonce>`
            let owner = parts.next()?.split('.').next()?;
            (owner == pid.to_string()).then(|| addr.to_owned())
        })
        .collect();
    found.sort();
    found
}

/// `drainport 0.0.0.0:P [::]:P`, the README's example: IPv4 and IPv6
/// clients are both served, each address is announced, and a drain keeps
/// serving a client on each until it leaves.
#[test]
fn one_process_serves_every_address_it_is_given() {
    if !have_ipv6() {
        return skip("no IPv6 loopback");
    }
    let run = match Runner::new(Who::Unprivileged) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let port = free_port();
    let (any4, any6) = (format!("0.0.0.0:{port}"), format!("[::]:{port}"));
    let mut server = run.start(&["-q", &any4, &any6]);
    server.expect_line(&format!("listening on: {any6}"));
    assert!(
        server
            .seen
            .iter()
            .any(|l| l.ends_with(&format!("listening on: {any4}"))),
        "{:#?}",
        server.seen
    );
    let mut want = vec![any4.clone(), any6.clone()];
    want.sort();
    assert_eq!(announced(server.pid), want);

    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let mut kept4 = Client::connect(v4);
    let mut kept6 = Client::connect(v6);
    assert_eq!(kept4.echo("four"), server.pid);
    assert_eq!(kept6.echo("six"), server.pid);

    // A sibling on one of the addresses joins it.
    let mut sibling = run.start(&["-q", &any6]);
    server.signal(SIGHUP);
    server.expect_line(&format!("process {} closing tasks: 2", server.pid));
    assert_eq!(kept4.echo("four, draining"), server.pid);
    assert_eq!(kept6.echo("six, draining"), server.pid);
    // Its listeners on both addresses close while its clients stay: the
    // IPv4 port is then served by nobody, the IPv6 one by the sibling.
    crate::util::wait_until("the drainer's IPv4 listeners to close", || {
        match TcpStream::connect_timeout(&v4, DEADLINE) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    });
    assert_eq!(Client::connect(v6).echo("new six"), sibling.pid);
    drop((kept4, kept6));
    server.expect_clean_exit();
    sibling.signal(SIGHUP);
    sibling.expect_clean_exit();
}

/// `[::]:P` means IPv6 only, as the README says: nothing answers an IPv4
/// client on P.
#[test]
fn the_ipv6_wildcard_takes_no_ipv4_client() {
    if !have_ipv6() {
        return skip("no IPv6 loopback");
    }
    let mut server = Server::start(&["-q", "[::]:0"]);
    let port = server.addr.port();
    assert_eq!(
        Client::connect(format!("[::1]:{port}").parse().unwrap()).echo("six"),
        server.pid
    );
    let four: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let refused = TcpStream::connect_timeout(&four, DEADLINE).map(|_| ());
    assert_eq!(
        refused.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionRefused)
    );
    server.signal(SIGHUP);
    server.expect_clean_exit();
}

/// Each address is claimed on its own: another program may not join a
/// process on any of them.
#[test]
fn another_program_is_refused_on_each_address() {
    let mut server = Server::start(&["-q", "127.0.0.1:0", "127.0.0.2:0"]);
    let second = server.expect_line("listening on: 127.0.0.2:");
    let second = second.rsplit(' ').next().unwrap().to_owned();
    let output = output_retrying(std::process::Command::new(example_bin("kv")).arg(&second))
        .expect("run kv");
    let refusal = format!(
        "kv: {second} is served by another service, Lines<Echo> (pid {})",
        server.pid
    );
    let stderr = one_line_error(&output, "kv", &refusal);
    assert!(stderr.starts_with(&refusal), "{stderr}");
    server.signal(SIGHUP);
    server.expect_clean_exit();
}
