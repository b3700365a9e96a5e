//! Bounded memory and graceful behaviour at the edges: clients that never
//! read, descriptor exhaustion, and the client limit.

use std::time::Duration;

use libc::SIGHUP;

use crate::util::{Client, Server, closing_line, have_tool, starved_server, status_field};

#[test]
fn clients_that_never_read_cannot_grow_memory() {
    let server = Server::start(&["-q", "127.0.0.1:0"]);
    let mut bystander = Client::connect(server.addr);
    assert_eq!(bystander.echo("warm up"), server.pid);
    let before = server.rss_kib();

    const LIMIT: usize = 64 << 20;
    let line = [b"0123456789abcdef".repeat(4).as_slice(), b"\n"].concat();
    let mut hogs: Vec<Client> = (0..4).map(|_| Client::connect(server.addr)).collect();
    for hog in &mut hogs {
        let written = hog.write_without_reading(&line, LIMIT);
        assert!(
            written < LIMIT,
            "the server kept reading {written} bytes from a client that never reads"
        );
        assert_eq!(bystander.echo("still served"), server.pid);
    }
    let grown = server.rss_kib().saturating_sub(before);
    // Each hog may hold its output bound plus a read chunk of input.
    assert!(
        grown < 4 * 1024,
        "RSS grew by {grown} KiB for 4 clients that never read"
    );

    // Once a hog reads, it gets its replies, in order and intact.
    let hog = &mut hogs[0];
    for _ in 0..100 {
        hog.expect_reply(&line, server.pid);
    }
}

/// CPU time `server` has used so far (user + system), in clock ticks.
fn cpu_ticks(server: &Server) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid)).expect("read stat");
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_descriptors_pauses_accept_then_recovers() {
    if !have_tool("prlimit", "util-linux") {
        return;
    }
    // 256 descriptors: a handful for the server itself, the rest for clients.
    const CLIENTS: usize = 320;
    let (mut server, mut clients, accepted) = starved_server(256, CLIENTS, "client");

    // While stuck, the server sleeps rather than spinning on the listener.
    let ticks = cpu_ticks(&server);
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(&server) - ticks;
    assert!(
        spent < 30,
        "{spent} ticks of CPU in one second while unable to accept"
    );

    // Connections are accepted in the order they completed, so the first
    // ones are being served.
    for (i, client) in clients.iter_mut().enumerate().take(accepted) {
        client.expect_reply(format!("client {i}\n").as_bytes(), server.pid);
    }
    // Free descriptors: the waiting clients are accepted and answered.
    let waiting = clients.split_off(accepted);
    drop(clients);
    for (i, mut client) in waiting.into_iter().enumerate() {
        client.expect_reply(format!("client {}\n", accepted + i).as_bytes(), server.pid);
    }
    server.expect_line("is accepting connections again");
    assert_eq!(
        server.count_lines("cannot accept"),
        1,
        "one episode, one line"
    );
    // The clients waited: counted once, as the stretch it was.
    let status = server.wait_status("status:");
    assert_eq!(status_field(&status, "out_of_fds"), 1, "{status}");
    assert_eq!(status_field(&status, "full"), 0, "{status}");
    server.signal(SIGHUP);
}

#[test]
fn client_limit_keeps_the_rest_waiting() {
    let mut server = Server::start(&["--max-clients", "2", "127.0.0.1:0"]);
    let mut a = Client::connect(server.addr);
    let mut b = Client::connect(server.addr);
    assert_eq!(a.echo("a"), server.pid);
    assert_eq!(b.echo("b"), server.pid);

    let mut c = Client::connect(server.addr);
    c.send(b"c\n");
    server.expect_one_left_in_backlog(2);
    assert_eq!(
        c.unread_in_kernel(),
        0,
        "third client served past --max-clients 2"
    );
    // Nobody is refused; that c waited is counted, once the kernel said so.
    let status = server.wait_status(" full=1 ");
    assert_eq!(status_field(&status, "out_of_fds"), 0, "{status}");

    drop(a);
    c.expect_reply(b"c\n", server.pid);
    assert_eq!(b.echo("b again"), server.pid);
    // Full again, in the same stretch (the queue has not been seen empty
    // since): still counted once.
    let status = server.wait_status(" clients=2 accepted=3 ");
    assert_eq!(status_field(&status, "full"), 1, "{status}");
}

/// The hard stop of a process at `--max-clients`, with a client still
/// waiting in its backlog: the drain takes the waiting client (the limit
/// holds only while running), the second signal closes all three with the
/// closing line, and the process exits 0.
#[test]
fn a_full_process_stops_hard_with_its_queue() {
    let mut server = Server::start(&["--max-clients", "2", "127.0.0.1:0"]);
    let mut held: Vec<Client> = (0..2).map(|_| Client::connect(server.addr)).collect();
    for (i, client) in held.iter_mut().enumerate() {
        assert_eq!(client.echo(&format!("held {i}")), server.pid);
    }
    let mut queued = Client::connect(server.addr);
    queued.send(b"queued\n");
    server.wait_status("state=running clients=2 ");

    server.signal(libc::SIGHUP);
    server.expect_line("closing tasks: 2");
    assert_eq!(queued.read_line(), b"queued\n");
    server.signal(libc::SIGHUP);
    server.expect_line("received hangup signal during drain: closing 3 clients");
    let closing = closing_line(server.pid);
    for client in held.iter_mut().chain([&mut queued]) {
        let rest = client.read_to_eof().expect("read to EOF");
        assert!(
            String::from_utf8_lossy(&rest).ends_with(&closing),
            "{:?}",
            String::from_utf8_lossy(&rest)
        );
    }
    server.expect_clean_exit();
}
