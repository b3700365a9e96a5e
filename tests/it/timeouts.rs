//! Per-connection deadlines on the real binary: `--idle-timeout` and
//! `--send-timeout`, alone, with a drain, and as the way out of a
//! descriptor lockout. Timeouts are short; no test asserts a time, and
//! every wait has the suite's generous bound.
//!
//! No check depends on the machine's pace either. Where a client must say
//! something before its idle timeout can pass, the server is stopped
//! (SIGSTOP) while the client connects and sends, so that the bytes wait
//! in the socket when the server takes the client: it reads them in its
//! next turn, whenever that comes, and the idle clock starts again then.
//! The only timing a test asserts is a timer's own guarantee, never
//! early: an idle line comes no sooner than an idle period after the last
//! line the server answered.

use std::io::Write;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use libc::{SIGCONT, SIGHUP, SIGSTOP};

use crate::util::{BIN, Client, Server, closing_line, from_line, have_tool, raise_fd_limit};

/// Connects `count` clients while the server is stopped, each sending
/// `line` (if any), so that all of it is queued when the server takes them.
/// The server is left stopped: continue it with [`SIGCONT`].
fn queue_clients(server: &Server, count: usize, line: &[u8]) -> Vec<Client> {
    server.signal(SIGSTOP);
    server.wait_stopped();
    (0..count)
        .map(|_| {
            let mut client = Client::connect(server.addr);
            if !line.is_empty() {
                client.send(line);
            }
            client
        })
        .collect()
}

#[test]
fn a_silent_client_is_told_then_closed_after_the_idle_timeout() {
    let server = Server::start(&["-q", "--idle-timeout", "0.3", "127.0.0.1:0"]);
    // One line, then nothing: answered, then told.
    let mut silent = queue_clients(&server, 1, b"one line, then nothing\n").remove(0);
    server.signal(SIGCONT);
    silent.expect_reply(b"one line, then nothing\n", server.pid);
    assert_eq!(silent.read_line(), b"error: idle for 0.3s, closing\n");
    silent.expect_eof();

    // A client that never said a word is timed out too.
    let mut mute = Client::connect(server.addr);
    assert_eq!(mute.read_line(), b"error: idle for 0.3s, closing\n");
    mute.expect_eof();
}

/// A client that sends a line every few milliseconds outlives several idle
/// periods. Whenever its idle line comes, that is an idle period at least
/// after the last line the server answered: the server reads a line after
/// it is sent, and never fires a deadline early. Were the clock not
/// restarted by each read, the line would come an idle period after the
/// client arrived, a few milliseconds after an answered line.
#[test]
fn every_line_read_restarts_the_idle_clock() {
    const IDLE: Duration = Duration::from_millis(300);
    const PACE: Duration = Duration::from_millis(10);
    let server = Server::start(&["-q", "--idle-timeout", "0.3", "127.0.0.1:0"]);
    let told = b"error: idle for 0.3s, closing\n";
    let mut chatty = Client::connect(server.addr);
    let start = Instant::now();
    let mut answered_sent = start;
    let mut answered = 0;
    // Bounded by the count as well as by the time.
    let mut cut = false;
    for _ in 0..1000 {
        if start.elapsed() >= 3 * IDLE {
            break;
        }
        let sent = Instant::now();
        chatty.send(b"still here\n");
        let line = chatty.read_line();
        if line == told {
            cut = true;
            break;
        }
        assert_eq!(line, b"still here\n");
        assert_eq!(chatty.read_line(), from_line(server.pid));
        answered_sent = sent;
        answered += 1;
        thread::sleep(PACE);
    }
    if !cut {
        // Then silent, it goes.
        assert_eq!(chatty.read_line(), told);
    }
    let waited = answered_sent.elapsed();
    assert!(
        waited >= IDLE,
        "told {waited:?} after its last answered line (of {answered}), before its idle timeout"
    );
    chatty.expect_eof();
}

/// A told client that keeps its side open is closed once silent as long
/// again: its slot does not wait for an EOF that never comes.
#[test]
fn a_told_client_that_never_closes_is_closed_anyway() {
    let mut server = Server::start(&["--idle-timeout", "0.2", "127.0.0.1:0"]);
    let mut stuck = Client::connect(server.addr);
    assert_eq!(stuck.read_line(), b"error: idle for 0.2s, closing\n");
    // The FIN: the server's side is done, while ours stays open.
    stuck.expect_eof();
    server.wait_status("clients=0 ");
    drop(stuck);
}

#[test]
fn a_client_that_never_reads_is_closed_after_the_send_timeout_and_freed() {
    let mut server = Server::start(&["-q", "--send-timeout", "0.3", "127.0.0.1:0"]);
    let mut bystander = Client::connect(server.addr);
    assert_eq!(bystander.echo("warm up"), server.pid);
    let line = [b"0123456789abcdef".repeat(4).as_slice(), b"\n"].concat();

    // Rounds of clients that never read, each holding its output limit
    // (64 KiB) and more in the server until it is closed: about 2 MiB a
    // round. Were their buffers kept, five rounds would add 10 MiB; freed,
    // the memory is reused, and what RSS shows moves only with how many
    // hogs happened to be held at once (under 1 MiB measured).
    const HOGS: usize = 16;
    const ROUNDS: usize = 6;
    let mut after_round = Vec::new();
    for _ in 0..ROUNDS {
        let hogs: Vec<thread::JoinHandle<bool>> = (0..HOGS)
            .map(|_| {
                let mut hog = Client::connect(server.addr);
                let line = line.clone();
                thread::spawn(move || hog.write_until_closed(&line))
            })
            .collect();
        for hog in hogs {
            assert!(hog.join().unwrap(), "a client that never reads stayed");
        }
        server.wait_status("clients=1 ");
        assert_eq!(bystander.echo("still served"), server.pid);
        after_round.push(server.rss_kib());
    }
    let grown = after_round[ROUNDS - 1].saturating_sub(after_round[0]);
    assert!(
        grown < 3 * 1024,
        "RSS grew by {grown} KiB over {} rounds of {HOGS} closed clients: {after_round:?}",
        ROUNDS - 1
    );
}

#[test]
fn the_send_timeout_spares_a_slow_reader_that_takes_its_replies() {
    // Replies pending for longer than the timeout in all, but taken a
    // little at a time: the clock restarts with every byte taken. A small
    // receive buffer keeps the replies waiting in the server, not in the
    // kernel.
    let server = Server::start(&["-q", "--send-timeout", "1", "127.0.0.1:0"]);
    let mut slow = Client::connect(server.addr);
    slow.set_socket_option(libc::SOL_SOCKET, libc::SO_RCVBUF, 8192);
    const LINES: usize = 400;
    let line = [b"x".repeat(1000).as_slice(), b"\n"].concat();
    let mut writer = slow.stream.try_clone().unwrap();
    let sent = line.clone();
    let writing = thread::spawn(move || {
        for _ in 0..LINES {
            writer.write_all(&sent).unwrap();
        }
    });
    for i in 0..LINES {
        let from = slow
            .try_read_reply(&line)
            .unwrap_or_else(|e| panic!("reply {i}: {e}"));
        assert_eq!(from, server.pid, "reply {i}");
        if i % 20 == 0 {
            thread::sleep(Duration::from_millis(20));
        }
    }
    writing.join().unwrap();
    assert_eq!(slow.echo("and still served"), server.pid);
}

/// Whichever comes first closes a timed client during a drain, and the
/// process exits 0 either way.
#[test]
fn timers_and_the_drain_close_by_whichever_comes_first() {
    // The idle timeout first: the client is told why and closed, and the
    // drain is over. It is queued with its line while the server is
    // stopped, and the server gets SIGHUP before it continues: it takes
    // the client, then starts the drain, then answers the line.
    let mut server = Server::start(&[
        "--idle-timeout",
        "0.5",
        "--drain-timeout",
        "60",
        "127.0.0.1:0",
    ]);
    let mut client = queue_clients(&server, 1, b"before the drain\n").remove(0);
    server.signal(SIGHUP);
    server.signal(SIGCONT);
    server.expect_line("closing tasks: 1");
    client.expect_reply(b"before the drain\n", server.pid);
    assert_eq!(client.read_line(), b"error: idle for 0.5s, closing\n");
    client.expect_eof();
    drop(client);
    server.expect_clean_exit();

    // The drain timeout first: the hard stop's line.
    let mut server = Server::start(&[
        "--idle-timeout",
        "60",
        "--drain-timeout",
        "0.5",
        "127.0.0.1:0",
    ]);
    let mut client = Client::connect(server.addr);
    assert_eq!(client.echo("before the drain"), server.pid);
    server.signal(SIGHUP);
    let rest = client.read_to_eof().expect("read to EOF");
    assert_eq!(String::from_utf8_lossy(&rest), closing_line(server.pid));
    server.expect_clean_exit();

    // Without a drain timeout, clients that never leave are still let go
    // by the idle timeout, so the drain ends. They are held by the process
    // when the drain starts, whatever the machine's pace.
    let mut server = Server::start(&["--idle-timeout", "0.3", "127.0.0.1:0"]);
    let held = queue_clients(&server, 5, b"");
    server.signal(SIGHUP);
    server.signal(SIGCONT);
    server.expect_line("closing tasks: 5");
    server.expect_clean_exit();
    drop(held);
}

/// 300 clients that connect and then neither speak, read nor close, under
/// a 256-descriptor limit: the process fills up, and without a timeout
/// nobody else would ever be served. The idle timeout frees the slots, so a
/// new client gets its answer: each silent client is told, and closed
/// without waiting for an EOF that is not coming (at once while the
/// process is out of descriptors, a second later otherwise). How long the
/// new client waits is `cargo bench --bench lockout`'s to measure.
#[test]
fn the_idle_timeout_ends_a_descriptor_lockout() {
    if !have_tool("prlimit", "util-linux") {
        return;
    }
    raise_fd_limit();
    let mut cmd = Command::new("prlimit");
    cmd.args([
        "--nofile=256",
        "--",
        BIN,
        "--idle-timeout",
        "1",
        "127.0.0.1:0",
    ]);
    let mut server = Server::spawn(cmd);
    let mut stuck: Vec<Client> = (0..300).map(|_| Client::connect(server.addr)).collect();
    server.expect_line("cannot accept (Too many open files");

    let mut late = Client::connect(server.addr);
    late.send(b"let me in\n");
    late.expect_reply(b"let me in\n", server.pid);
    server.expect_line("is accepting connections again");
    // The stuck ones were told why, first and last in line alike; then
    // every client, the new one too once silent, is closed while it still
    // holds its side open.
    for client in [0, 299] {
        assert_eq!(stuck[client].read_line(), b"error: idle for 1s, closing\n");
        stuck[client].expect_eof();
    }
    server.wait_status("clients=0 ");
    drop(late);
    // Still holding every stuck socket, the drain ends: each is closed.
    server.signal(SIGHUP);
    server.expect_clean_exit();
    stuck.clear();
}
