//! The HTTP example's timeouts as a real process over real TCP: a head
//! that does not come whole in time gets 408, a stalled body gets 408, an
//! idle keep-alive connection is closed without a word, a client quicker
//! than every timeout is never cut, and a drain lets the timers finish
//! their work and still exits 0.
//!
//! Timeouts are short (0.5 to 1 s); no test measures how long anything
//! took. Every read is bounded by [`DEADLINE`] through the client's
//! socket timeout, and a client that must keep busy until the server
//! answers stops after [`DEADLINE`] too.

use std::io::{ErrorKind, Read};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{Client, DEADLINE, Server};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

/// Everything up to the server's EOF, which must be a 408 with
/// `Connection: close`.
#[track_caller]
fn expect_408_then_eof(client: &mut Client) {
    let all = client.read_to_eof().expect("a response, then EOF");
    let text = String::from_utf8(all).expect("UTF-8 response");
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{text:?}"
    );
    assert!(text.contains("\r\nConnection: close\r\n"), "{text:?}");
    assert!(text.ends_with("\r\n\r\nrequest timed out\n"), "{text:?}");
}

/// Reads one `hello` response (head and its one-line body).
#[track_caller]
fn read_hello(client: &mut Client, pid: u32) -> String {
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        head.push_str(&String::from_utf8(client.read_line()).expect("UTF-8 head"));
    }
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let body = client.read_line();
    assert_eq!(body, format!("hello from {pid}\n").as_bytes());
    head
}

#[test]
fn slowloris_gets_408_at_the_header_timeout() {
    let server = Server::start_example("http", &["-q", "--header-timeout", "1", "127.0.0.1:0"]);
    let mut client = Client::connect(server.addr);
    // A head that never ends: one byte of it every 100 ms, until the
    // server answers.
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    client.send(&head[..1]);
    client
        .stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let mut sent = 1;
    let mut first = [0u8; 1];
    loop {
        assert!(start.elapsed() < DEADLINE, "no answer after {sent} bytes");
        match client.stream.read(&mut first) {
            Ok(n) => {
                assert_eq!(n, 1, "EOF without a response after {sent} bytes");
                break;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("read after {sent} bytes: {e}"),
        }
        client.send(&[*head.get(sent).unwrap_or(&b'a')]);
        sent += 1;
    }
    client.stream.set_read_timeout(Some(DEADLINE)).unwrap();
    // The byte read first, then the rest of the response and the EOF.
    let rest = client.read_to_eof().expect("the response, then EOF");
    let text = String::from_utf8([&first[..], &rest].concat()).expect("UTF-8 response");
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{text:?}"
    );
    assert!(text.contains("\r\nConnection: close\r\n"), "{text:?}");
}

#[test]
fn a_connection_that_sends_nothing_gets_408() {
    let server = Server::start_example("http", &["-q", "--header-timeout", "0.5", "127.0.0.1:0"]);
    let mut client = Client::connect(server.addr);
    expect_408_then_eof(&mut client);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_without_a_word() {
    // The header timeout is far off: only the keep-alive one can close it.
    let server =
        Server::start_example("http", &["-q", "--keepalive-timeout", "0.5", "127.0.0.1:0"]);
    let mut client = Client::connect(server.addr);
    client.send(GET);
    let head = read_hello(&mut client, server.pid);
    assert!(!head.contains("Connection:"), "kept alive: {head}");
    client.expect_eof();
}

#[test]
fn a_stalled_body_gets_408() {
    let server = Server::start_example("http", &["-q", "--body-timeout", "0.5", "127.0.0.1:0"]);
    let mut client = Client::connect(server.addr);
    client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123");
    expect_408_then_eof(&mut client);
}

#[test]
fn a_client_quicker_than_every_timeout_is_never_cut() {
    let server = Server::start_example(
        "http",
        &[
            "-q",
            "--header-timeout",
            "1",
            "--keepalive-timeout",
            "1",
            "--body-timeout",
            "1",
            "127.0.0.1:0",
        ],
    );
    let mut client = Client::connect(server.addr);
    // Twenty requests on one connection, each in two pieces, 100 ms
    // apart: about three seconds in all, three times every timeout.
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok";
    for n in 0..20 {
        thread::sleep(Duration::from_millis(50));
        let split = if n % 2 == 0 { 10 } else { request.len() - 1 };
        client.send(&request[..split]);
        thread::sleep(Duration::from_millis(50));
        client.send(&request[split..]);
        let head = read_hello(&mut client, server.pid);
        assert!(!head.contains("Connection:"), "request {n}: {head}");
    }
}

/// The example started with `args`, draining (SIGHUP) with one client in
/// the middle of a head.
#[track_caller]
fn draining_with_half_a_head(args: &[&str]) -> (Server, Client) {
    let mut server = Server::start_example("http", args);
    let pid = server.pid;
    let mut client = Client::connect(server.addr);
    client.send(b"GET / HTTP/1.1\r\nHo");
    server.expect_line("accepted connection");
    server.signal(libc::SIGHUP);
    server.expect_line(&format!("Process {pid} received hangup signal"));
    (server, client)
}

#[test]
fn a_drain_lets_a_slow_head_have_its_408_and_exits_0() {
    // The drain timeout (5 s by default) is the later of the two.
    let (mut server, mut client) =
        draining_with_half_a_head(&["--header-timeout", "1", "127.0.0.1:0"]);
    expect_408_then_eof(&mut client);
    drop(client);
    server.expect_clean_exit();
}

#[test]
fn a_drain_timeout_before_the_header_timeout_closes_and_exits_0() {
    let (mut server, mut client) = draining_with_half_a_head(&[
        "--drain-timeout",
        "0.5",
        "--close-spread",
        "0.1",
        "127.0.0.1:0",
    ]);
    // Closed by the drain, 60 s before its header timeout: a hard stop
    // in the middle of a head has nothing to say.
    client.expect_eof();
    drop(client);
    server.expect_clean_exit();
}

/// A slowloris that goes on dribbling after its 408 and never sends its
/// EOF: the connection waits for that EOF one idle period at most (the
/// longest of the HTTP timeouts), and its bytes do not extend the wait.
#[test]
fn a_slowloris_that_never_closes_after_its_408_is_dropped() {
    let mut server = Server::start_example(
        "http",
        &[
            "-q",
            "--header-timeout",
            "0.5",
            "--body-timeout",
            "0.5",
            "--keepalive-timeout",
            "0.5",
            "127.0.0.1:0",
        ],
    );
    let mut client = Client::connect(server.addr);
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n");
    let response = client.read_to_eof().expect("the 408, then the FIN");
    assert!(
        response.starts_with(b"HTTP/1.1 408 Request Timeout\r\n"),
        "{:?}",
        String::from_utf8_lossy(&response)
    );
    // Our side stays open and keeps sending, a byte every 50 ms, until the
    // server has let the connection go (or the deadline).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dribbler = {
        let stop = stop.clone();
        let mut stream = client.stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && start.elapsed() < DEADLINE {
                if std::io::Write::write_all(&mut stream, b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    server.wait_status("clients=0 ");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    dribbler.join().unwrap();
}
