//! The HTTP example (`examples/http/`) as a real process, driven by `curl`
//! (skipped, with the reason printed, when curl is not installed) and by a
//! raw socket where curl cannot do what a test needs: a request malformed
//! on purpose, a client left waiting in the backlog.
//!
//! `cargo test` builds the examples before the integration tests run, and
//! the example's binary is found beside this test's own
//! (`target/<profile>/examples/http`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::util::{Client, DEADLINE, ScratchDir, Server, have_tool, wait_until};

fn has_curl() -> bool {
    have_tool("curl", "curl")
}

/// Runs curl (silent, errors shown, bounded by `--max-time`) and waits for
/// it with a deadline.
#[track_caller]
fn curl(args: &[&str]) -> Output {
    let secs = DEADLINE.as_secs().to_string();
    let mut child = Command::new("curl")
        .args(["-sS", "--max-time", &secs])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn curl");
    wait_until("curl to finish", || child.try_wait().expect("try_wait"));
    child.wait_with_output().expect("curl output")
}

/// curl's stdout, failing on a non-zero exit.
#[track_caller]
fn curl_ok(args: &[&str]) -> String {
    let out = curl(args);
    assert!(
        out.status.success(),
        "curl {args:?}: {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 from curl")
}

fn url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", server.addr)
}

/// Sends raw bytes on a fresh connection and reads until the server closes.
#[track_caller]
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut client = Client::connect(addr);
    client.send(request);
    let all = client.read_to_eof().expect("response then EOF");
    String::from_utf8(all).expect("UTF-8 response")
}

#[test]
fn keep_alive_reuses_one_connection() {
    if !has_curl() {
        return;
    }
    let server = Server::start_example("http", &["127.0.0.1:0"]);
    let pid = server.pid;
    let (a, b) = (url(&server, "/one"), url(&server, "/two?x=1"));
    let out = curl_ok(&["-w", "[%{num_connects}]\n", &a, &b]);
    assert_eq!(
        out,
        format!("hello from {pid}\n[1]\nhello from {pid}\n[0]\n")
    );

    // HTTP/1.0 closes after each response unless it asks for keep-alive.
    let out = curl_ok(&["-0", "-w", "[%{num_connects}]\n", &a, &b]);
    assert!(
        out.ends_with("\n[1]\n") && out.contains("\n[1]\nhello"),
        "{out}"
    );
    let out = curl_ok(&[
        "-0",
        "-H",
        "Connection: keep-alive",
        "-w",
        "[%{num_connects}]\n",
        &a,
        &b,
    ]);
    assert!(out.ends_with("\n[0]\n"), "{out}");
}

#[test]
fn head_has_headers_only() {
    if !has_curl() {
        return;
    }
    let server = Server::start_example("http", &["127.0.0.1:0"]);
    let body_len = format!("hello from {}\n", server.pid).len();
    let out = curl_ok(&["--head", &url(&server, "/anything")]);
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(
        out.contains(&format!("\r\nContent-Length: {body_len}\r\n")),
        "{out}"
    );
    assert!(out.ends_with("\r\n\r\n"), "no body after the head: {out:?}");
}

#[test]
fn request_bodies_are_read_and_refusals_are_clear() {
    if !has_curl() {
        return;
    }
    let server = Server::start_example("http", &["127.0.0.1:0"]);
    let pid = server.pid;
    let u = url(&server, "/upload");
    // 2 MiB: more than the input cap, and curl sends Expect: 100-continue.
    let dir = ScratchDir::new("http-body");
    let path = dir.join("body");
    std::fs::write(&path, vec![b'x'; 2 << 20]).expect("write the body file");
    let data = format!("@{}", path.display());
    let out = curl_ok(&[
        "-X",
        "GET",
        "--data-binary",
        &data,
        "-w",
        "[%{http_code}]",
        &u,
        &u,
    ]);
    assert_eq!(
        out,
        format!("hello from {pid}\n[200]hello from {pid}\n[200]")
    );

    let out = curl_ok(&["-d", "abc", "-w", "[%{http_code} %header{allow}]", &u]);
    assert!(out.ends_with("[405 GET, HEAD]"), "{out}");
    // curl sends Content-Length beside the Transfer-Encoding it is given:
    // a sign of request smuggling, refused (501 for the coding alone is
    // tested on a raw socket below).
    let out = curl_ok(&[
        "-H",
        "Transfer-Encoding: gzip",
        "-d",
        "abc",
        "-w",
        "[%{http_code}]",
        &u,
    ]);
    assert!(out.ends_with("[400]"), "{out}");
}

/// A file of `len` bytes in a fresh scratch directory, as curl's
/// `--data-binary` argument.
fn body_file(name: &str, len: usize) -> (ScratchDir, String) {
    let dir = ScratchDir::new(name);
    let path = dir.join("body");
    std::fs::write(&path, vec![b'x'; len]).expect("write the body file");
    let arg = format!("@{}", path.display());
    (dir, arg)
}

#[test]
fn chunked_request_bodies_are_read() {
    if !has_curl() {
        return;
    }
    let server = Server::start_example("http", &["127.0.0.1:0"]);
    let pid = server.pid;
    let u = url(&server, "/upload");
    let chunked = "Transfer-Encoding: chunked";
    // 2 MiB: many chunks, more than the input cap, and curl sends
    // Expect: 100-continue with it. Only GET and HEAD are served, so a GET
    // carries it; two URLs on one connection show that the body's end was
    // found exactly.
    let (_dir, data) = body_file("http-chunked", 2 << 20);
    let fmt = "[%{num_connects} %{http_code}]";
    let out = curl_ok(&[
        "-X",
        "GET",
        "-H",
        chunked,
        "--data-binary",
        &data,
        "-w",
        fmt,
        &u,
        &u,
    ]);
    let hello = format!("hello from {pid}\n");
    assert_eq!(out, format!("{hello}[1 200]{hello}[0 200]"));

    // A small chunked POST (no Expect) is read and refused, and the
    // connection is kept.
    let out = curl_ok(&["-H", chunked, "--data-binary", "abc", "-w", fmt, &u, &u]);
    let no = "only GET and HEAD are served here\n";
    assert_eq!(out, format!("{no}[1 405]{no}[0 405]"));
}

#[test]
fn expect_100_continue_only_for_a_request_that_will_be_served() {
    if !has_curl() {
        return;
    }
    let server = Server::start_example("http", &["127.0.0.1:0"]);
    let pid = server.pid;
    let u = url(&server, "/upload");
    // curl sends Expect: 100-continue with a body over 1 MiB, and sends
    // the body only after 100 Continue (or after its 1 s timeout).
    let (_dir, data) = body_file("http-expect", 2 << 20);
    let fmt = "[%{http_code} %{size_upload}]";
    let out = curl_ok(&["--data-binary", &data, "-w", fmt, &u]);
    assert!(
        out.ends_with("[405 0]"),
        "refused at once, nothing uploaded: {out}"
    );
    let out = curl_ok(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &data,
        "-w",
        fmt,
        &u,
    ]);
    assert!(
        out.ends_with("[405 0]"),
        "refused at once, nothing uploaded: {out}"
    );
    let out = curl_ok(&["-X", "GET", "--data-binary", &data, "-w", fmt, &u]);
    assert_eq!(out, format!("hello from {pid}\n[200 {}]", 2 << 20));
}

/// Reads one response head (through its empty line) from `client`.
#[track_caller]
fn read_head(client: &mut Client) -> String {
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        head.push_str(&String::from_utf8(client.read_line()).expect("UTF-8 head"));
    }
    head
}

#[test]
fn expect_100_continue_on_the_wire() {
    let server = Server::start_example("http", &["127.0.0.1:0"]);
    let hello = format!("hello from {}\n", server.pid);

    // Refused from the head: the final status, no 100 Continue, a close.
    for (request, status) in [
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n", "405"),
        (
            "PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n",
            "405",
        ),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 16777217\r\n",
            "413",
        ),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n",
            "501",
        ),
    ] {
        let request = format!("{request}Expect: 100-continue\r\n\r\n");
        let resp = raw_exchange(server.addr, request.as_bytes());
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {status} ")),
            "{request:?}: {resp}"
        );
        assert!(resp.contains("\r\nConnection: close\r\n"), "{resp}");
        assert!(!resp.contains("100 Continue"), "{resp}");
    }

    // Served: 100 Continue, nothing more until the body, then the response.
    for (framing, body) in [
        ("Content-Length: 5", "hello"),
        ("Transfer-Encoding: chunked", "5\r\nhello\r\n0\r\n\r\n"),
    ] {
        let mut client = Client::connect(server.addr);
        client.send(
            format!("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n{framing}\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(read_head(&mut client), "HTTP/1.1 100 Continue\r\n\r\n");
        thread::sleep(Duration::from_millis(100));
        assert_eq!(
            client.unread_in_kernel(),
            0,
            "no final status before the body"
        );
        client.send(body.as_bytes());
        let head = read_head(&mut client);
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n") && !head.contains("Connection:"),
            "{head}"
        );
        // The connection is kept: a second request on it, which closes.
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let rest = String::from_utf8(client.read_to_eof().expect("EOF")).unwrap();
        assert!(rest.starts_with(&hello), "the first body: {rest}");
        assert_eq!(rest.matches("HTTP/1.1 200 OK\r\n").count(), 1, "{rest}");
        assert!(
            rest.ends_with(&format!("\r\nConnection: close\r\n\r\n{hello}")),
            "{rest}"
        );
    }
}

#[test]
fn chunked_bodies_on_the_wire() {
    let server = Server::start_example("http", &["127.0.0.1:0"]);
    let hello = format!("hello from {}\n", server.pid);

    // A body with an extension and a trailer, sent in pieces that cut its
    // lines, then a pipelined request in the same write as its end.
    let mut client = Client::connect(server.addr);
    for piece in [
        "HEAD / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4;na",
        "me=val\r\nab",
        "cd\r",
        "\n1a\r\n01234567890123456789abcdef\r\n0\r\nX-Che",
        "cksum: 1\r\n\r",
        "\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        client.send(piece.as_bytes());
        thread::sleep(Duration::from_millis(20));
    }
    let all = String::from_utf8(client.read_to_eof().expect("EOF")).unwrap();
    assert_eq!(all.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{all}");
    assert!(
        all.ends_with(&format!("\r\nConnection: close\r\n\r\n{hello}")),
        "{all}"
    );
    assert_eq!(all.matches(&hello).count(), 1, "HEAD has no body: {all}");

    // Broken framing and a chunk over the body limit: the answer, a close.
    for (body, status) in [
        ("x\r\n", "400"),
        ("5\nhello\r\n0\r\n\r\n", "400"),
        ("3\r\nabcde\r\n0\r\n\r\n", "400"),
        ("1000001\r\n", "413"),
    ] {
        let request =
            format!("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let resp = raw_exchange(server.addr, request.as_bytes());
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {status} ")),
            "{body:?}: {resp}"
        );
        assert!(resp.contains("\r\nConnection: close\r\n"), "{resp}");
    }
}

#[test]
fn malformed_requests_get_an_answer_and_a_close() {
    let server = Server::start_example("http", &["127.0.0.1:0"]);
    let resp = raw_exchange(
        server.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nNo Colon Here\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{resp}");
    assert!(resp.contains("\r\nConnection: close\r\n"), "{resp}");

    // A head over the input cap (64 KiB).
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.resize(100_000, b'a');
    let mut client = Client::connect(server.addr);
    client.send(&big);
    let resp = String::from_utf8(client.read_to_eof().expect("431 then EOF")).unwrap();
    assert!(resp.starts_with("HTTP/1.1 431 "), "{resp}");

    // The server is still serving.
    let resp = raw_exchange(server.addr, b"GET / HTTP/1.0\r\n\r\n");
    assert!(
        resp.ends_with(&format!("\r\n\r\nhello from {}\n", server.pid)),
        "{resp}"
    );
}

/// A one-shot HTTP server in the test: it tells `arrived` when curl's
/// request is in, and answers only when `release` says so. curl handles its
/// URLs one after another, so while it waits here its connection to the
/// example sits idle in its cache: the moment to start the drain.
fn barrier() -> (
    SocketAddr,
    mpsc::Receiver<()>,
    mpsc::Sender<()>,
    thread::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the barrier");
    let addr = listener.local_addr().unwrap();
    let (arrived_tx, arrived) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let thread = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept curl");
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 65_536 {
            let n = stream.read(&mut byte).expect("read curl's request");
            assert!(n == 1, "curl closed the barrier connection");
            head.push(byte[0]);
        }
        arrived_tx.send(()).unwrap();
        // Dropping the sender (a failed test) releases the barrier too.
        let _ = release_rx.recv_timeout(DEADLINE);
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nbarrier\n",
        );
    });
    (addr, arrived, release, thread)
}

#[test]
fn sighup_makes_the_next_response_say_close_then_exits_0() {
    if !has_curl() {
        return;
    }
    // A drain timeout far beyond the test's waits: the idle connection must
    // close because of its next request, not because of the clock.
    let mut server = Server::start_example("http", &["--drain-timeout", "600", "127.0.0.1:0"]);
    let pid = server.pid;
    let (barrier_addr, arrived, release, barrier_thread) = barrier();
    let (a, b) = (url(&server, "/before-1"), url(&server, "/before-2"));
    let hold = format!("http://{barrier_addr}/hold");
    let after = url(&server, "/after");
    let curl_thread = thread::spawn(move || {
        let fmt = "[%{num_connects} %{http_code} %header{connection}]\n";
        curl(&["-w", fmt, &a, &b, &hold, &after])
    });

    arrived
        .recv_timeout(DEADLINE)
        .expect("curl reached the barrier");
    server.signal(libc::SIGHUP);
    server.expect_line(&format!("Process {pid} received hangup signal"));
    server.expect_line(&format!("process {pid} closing tasks: 1"));
    // The idle keep-alive connection is not cut by the drain.
    assert!(server.is_running());
    release.send(()).unwrap();

    let out = curl_thread.join().expect("curl thread");
    barrier_thread.join().expect("barrier thread");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl: {:?} {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let hello = format!("hello from {pid}\n");
    assert_eq!(
        stdout,
        format!("{hello}[1 200 ]\n{hello}[0 200 ]\nbarrier\n[1 200 close]\n{hello}[0 200 close]\n"),
        "before the drain: one connection, reused; after it: the same connection, \
         answered with Connection: close"
    );
    server.expect_clean_exit();
    assert_eq!(server.count_lines("has no clients left, exiting"), 1);
}

/// `--max-clients` reaches `Config::max_clients`: with a cap of one, a
/// second client waits in the backlog until the first leaves.
#[test]
fn http_max_clients_caps_the_process() {
    let mut server = Server::start_example("http", &["--max-clients", "1", "127.0.0.1:0"]);
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = Client::connect(server.addr);
    first.send(request);
    assert!(first.read_line().starts_with(b"HTTP/1.1 200"));
    // The handshake completes in the kernel; the process does not accept.
    let mut second = Client::connect(server.addr);
    second.send(request);
    server.expect_one_left_in_backlog(1);
    drop(first);
    server.expect_line("accepted connection");
    assert!(second.read_line().starts_with(b"HTTP/1.1 200"));
}
