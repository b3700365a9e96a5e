//! Hostile clients. Each case attacks a real server, then checks three
//! things: the server is still running (where the contract allows), its peak
//! resident memory grew by less than a bound stated with the case, and a
//! well-behaved client connected since before the attack still gets correct
//! replies.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::Duration;

use libc::{SIGHUP, SIGUSR1};

use crate::util::{
    BIN, Client, Server, assert_long_bytes, closing_line, connect_burst, have_tool, raise_fd_limit,
    reply, status_field, wait_until,
};

/// A server under attack and the well-behaved client that watches it.
struct Siege {
    server: Server,
    bystander: Client,
    /// Resident memory once the bystander has been served, before the attack.
    base_kib: u64,
}

impl Siege {
    fn start(args: &[&str]) -> Siege {
        Siege::spawn(server_command(args))
    }

    fn spawn(cmd: Command) -> Siege {
        let server = Server::spawn(cmd);
        let mut bystander = Client::connect(server.addr);
        assert_eq!(bystander.echo("before the attack"), server.pid);
        let base_kib = server.rss_kib();
        Siege {
            server,
            bystander,
            base_kib,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    fn pid(&self) -> u32 {
        self.server.pid
    }

    /// The bystander sends a line and must get it back from this server.
    #[track_caller]
    fn bystander_served(&mut self, when: &str) {
        let pid = self
            .bystander
            .try_echo(&format!("bystander {when}"))
            .unwrap_or_else(|e| panic!("{when}: the well-behaved client was not served: {e}"));
        assert_eq!(pid, self.server.pid, "{when}: answered by another process");
    }

    /// Peak memory growth since the start of the attack, against `bound_kib`.
    #[track_caller]
    fn memory_within(&self, bound_kib: u64, when: &str) {
        let grown = self.server.peak_rss_kib().saturating_sub(self.base_kib);
        assert!(
            grown <= bound_kib,
            "{when}: peak RSS grew by {grown} KiB, over the {bound_kib} KiB bound"
        );
    }

    /// The three checks.
    #[track_caller]
    fn check(&mut self, bound_kib: u64, when: &str) {
        assert!(self.server.is_running(), "{when}: the server exited");
        self.memory_within(bound_kib, when);
        self.bystander_served(when);
    }
}

/// How a process ended: `Ok(code)` for an exit, `Err(signal)` when a
/// signal killed it.
fn exit_code_or_signal(status: ExitStatus) -> Result<i32, i32> {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ok(code),
        (None, Some(signal)) => Err(signal),
        (None, None) => unreachable!("a status is an exit or a signal"),
    }
}

fn server_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    cmd
}

#[test]
fn a_line_that_never_ends_is_cut_at_max_line() {
    let mut siege = Siege::start(&["-q", "127.0.0.1:0"]);
    let mut attacker = Client::connect(siege.addr());
    // The default --max-line is 64 KiB. Send up to a mebibyte without a
    // `\n`, looking for a reply after each piece: a server that kept
    // buffering would take all of it and answer nothing.
    const PIECE: usize = 4096;
    const LIMIT: usize = 1 << 20;
    let piece = [b'x'; PIECE];
    let mut sent = 0;
    let mut reply = Vec::new();
    while sent < LIMIT && reply.is_empty() {
        if attacker.stream.write_all(&piece).is_err() {
            // The server closed: what it said before is still readable.
            break;
        }
        sent += PIECE;
        attacker.stream.set_nonblocking(true).unwrap();
        let mut chunk = [0; 256];
        match attacker.stream.read(&mut chunk) {
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // Past the limit, pace the pieces so that the server's
                // reply is seen long before it has discarded its 256 KiB
                // and closes: the attack stays a line, not a flood.
                if sent > 64 * 1024 {
                    thread::sleep(Duration::from_millis(5));
                }
            }
            Err(e) => panic!("read: {e}"),
        }
        attacker.stream.set_nonblocking(false).unwrap();
    }
    // The error line, whole, and then the end of the connection: EOF, or a
    // reset if the attacker sent past the discard limit first.
    let _ = attacker.stream.shutdown(std::net::Shutdown::Write);
    reply.extend(read_until_closed(&mut attacker));
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "error: line longer than 65536 bytes\n",
        "after {sent} bytes of one line"
    );
    // At most one line of 64 KiB and a 64 KiB read chunk were ever held;
    // 512 KiB leaves room for the allocator. A server that buffered the
    // line until a mebibyte arrived would exceed it.
    siege.check(512, "after the endless line");
}

/// Everything readable until EOF or a reset, within a hundred lines.
fn read_until_closed(client: &mut Client) -> Vec<u8> {
    let mut all = Vec::new();
    for _ in 0..100 {
        match client.try_read_line() {
            Ok(line) => all.extend(line),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                // try_read_line reports a tail without `\n` in its message.
                assert!(e.to_string().contains("\"\" unread"), "{e}");
                return all;
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return all,
            Err(e) => panic!("reading to the close: {e}"),
        }
    }
    panic!(
        "a hundred lines and no close: {:?}",
        String::from_utf8_lossy(&all)
    );
}

#[test]
fn a_client_that_writes_megabytes_and_never_reads() {
    let mut siege = Siege::start(&["-q", "127.0.0.1:0"]);
    let mut hog = Client::connect(siege.addr());
    const LIMIT: usize = 32 << 20;
    let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
    let written = hog.write_without_reading(line, LIMIT);
    assert!(
        written < LIMIT,
        "the server took all {written} bytes from a client that never reads"
    );
    // What the server holds for the hog: --max-output (64 KiB) plus one
    // reply, a 64 KiB read chunk and a partial line. Half a mebibyte leaves
    // room for the allocator; a server without backpressure would hold
    // megabytes of replies.
    siege.check(512, "while the hog is stalled");

    // Once the hog reads, its replies come in order and intact.
    for _ in 0..1000 {
        hog.expect_reply(line, siege.pid());
    }
    siege.check(512, "after the hog read");
}

/// Three hundred clients each send 60,000 bytes of a line they never
/// finish and never read: 17 MiB in all, where the process may hold 2 MiB
/// (`--max-buffers`). Those holding the most are closed, each told why, so
/// the process's memory stays within the budget plus a margin, and a
/// well-behaved client is served throughout. Without the budget the
/// process would hold every partial line.
#[test]
fn partial_lines_from_many_clients_stay_within_max_buffers() {
    raise_fd_limit();
    const BUDGET: usize = 2 << 20;
    const FLOODERS: usize = 300;
    const PARTIAL: usize = 60_000;
    let budget = BUDGET.to_string();
    let mut siege = Siege::start(&["-q", "--max-buffers", &budget, "127.0.0.1:0"]);
    let partial = vec![b'x'; PARTIAL];
    let mut flooders: Vec<Client> = Vec::with_capacity(FLOODERS);
    for i in 0..FLOODERS {
        let mut flooder = Client::connect(siege.addr());
        flooder.send(&partial);
        flooders.push(flooder);
        if i % 50 == 49 {
            siege.bystander_served(&format!("after {} flooders", i + 1));
        }
    }
    // Every byte sent has been read: the process has decided about each
    // flooder, to hold it or to close it.
    let sent = (FLOODERS * PARTIAL) as u64;
    let status = wait_until("every partial line read", || {
        let line = siege.server.wait_status("");
        (status_field(&line, "bytes_in") >= sent).then_some(line)
    });
    let held = status_field(&status, "buffers");
    let evicted = status_field(&status, "evicted") as usize;
    assert!(
        held <= BUDGET as u64,
        "the buffers hold {held} bytes, over the {BUDGET}-byte budget: {status}"
    );
    // A partial line of 60,000 bytes takes at least that much: the budget
    // holds fewer than 35 of them, so the rest were closed.
    assert!(
        evicted >= FLOODERS - BUDGET / PARTIAL,
        "only {evicted} of {FLOODERS} flooders closed: {status}"
    );
    siege
        .server
        .expect_line("is over its budget for client buffers (2 MiB): closed ");
    // Each closed one was told why before its FIN; each held one was not.
    let mut heard: Vec<(Vec<u8>, bool)> = vec![(Vec::new(), false); FLOODERS];
    wait_until("every closed flooder to get its line", || {
        for (flooder, (got, closed)) in flooders.iter_mut().zip(&mut heard) {
            if !*closed {
                *closed = read_to_fin(flooder, got);
            }
        }
        (heard.iter().filter(|(_, closed)| *closed).count() == evicted).then_some(())
    });
    let line = b"error: the server's memory for client buffers is full and this connection held ";
    for (got, closed) in &heard {
        if *closed {
            let text = String::from_utf8_lossy(got);
            assert!(
                got.starts_with(line) && got.ends_with(b" bytes of it, closing\n"),
                "a closed flooder got {text:?}"
            );
        } else {
            assert!(
                got.is_empty(),
                "a flooder still held got {text:?}",
                text = String::from_utf8_lossy(got)
            );
        }
    }
    // Twice the budget covers the budget, one turn's growth past it and
    // the allocator; the 17 MiB of partial lines would not fit.
    siege.check(2 * BUDGET as u64 / 1024, "after the flood");
    drop(flooders);
    siege.bystander_served("after the flooders left");
}

/// Reads what has arrived on `client` into `got`, without waiting, and
/// says whether the server's FIN came after it.
fn read_to_fin(client: &mut Client, got: &mut Vec<u8>) -> bool {
    client.stream.set_nonblocking(true).unwrap();
    let fin = loop {
        let mut chunk = [0; 512];
        match client.stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(e) => panic!("a flooder's read: {e}"),
        }
    };
    client.stream.set_nonblocking(false).unwrap();
    fin
}

#[test]
fn slowloris_clients_sending_a_byte_at_a_time() {
    let mut siege = Siege::start(&["-q", "127.0.0.1:0"]);
    const SENDERS: usize = 40;
    let lines: Vec<Vec<u8>> = (0..SENDERS)
        .map(|i| format!("slow {i} {}\r\n", "z".repeat(60 + i)).into_bytes())
        .collect();
    let mut slow: Vec<Client> = (0..SENDERS)
        .map(|_| Client::connect(siege.addr()))
        .collect();
    for client in &slow {
        // Every byte its own segment: Nagle would otherwise batch them.
        client.stream.set_nodelay(true).unwrap();
    }
    let longest = lines.iter().map(Vec::len).max().unwrap();
    for at in 0..longest {
        for (client, line) in slow.iter_mut().zip(&lines) {
            if let Some(byte) = line.get(at) {
                client.send(std::slice::from_ref(byte));
            }
        }
        if at % 25 == 0 {
            // Served while forty partial lines are open.
            siege.bystander_served(&format!("at byte {at}"));
        }
        thread::sleep(Duration::from_millis(1));
    }
    for (client, line) in slow.iter_mut().zip(&lines) {
        client.expect_reply(line, siege.pid());
    }
    // Forty partial lines of under 120 bytes each. A server that reserved
    // even 16 KiB per client would need 640 KiB.
    siege.check(512, "after the slow senders");
}

#[test]
fn two_thousand_clients_in_a_burst() {
    raise_fd_limit();
    let mut siege = Siege::start(&["-q", "127.0.0.1:0"]);
    let mut clients = connect_burst(siege.addr(), 8, 250, "burst");
    siege.bystander_served("with 2000 clients connected");
    for (line, client) in &mut clients {
        client.expect_reply(line.as_bytes(), siege.pid());
    }
    siege.server.wait_status("clients=2001 ");
    // An idle client costs a table slot of a few dozen bytes, not a buffer:
    // 2000 of them fit in a mebibyte with room for the table's growth. A
    // server that kept even 512 bytes per idle client would exceed it.
    siege.check(1024, "with 2000 clients connected");
    drop(clients);
    siege.server.wait_status("clients=1 ");
    siege.check(1024, "after 2000 clients left");
}

#[test]
fn connect_then_reset_over_and_over() {
    let mut siege = Siege::start(&["-q", "127.0.0.1:0"]);
    for i in 0..300 {
        let mut client = Client::connect(siege.addr());
        match i % 3 {
            // Reset before the server has even accepted it, most likely.
            0 => {}
            // Reset with a request in flight.
            1 => client.send(b"never read\n"),
            // Reset in the middle of a line.
            _ => client.send(b"half a li"),
        }
        client.reset();
        if i % 50 == 0 {
            siege.bystander_served(&format!("after {i} resets"));
        }
    }
    // Every reset connection leaves the table: only the bystander is left.
    siege.server.wait_status("clients=1 ");
    // 300 short-lived connections leave nothing behind but a reused slot;
    // a server that leaked a kibibyte for each would exceed this.
    siege.check(256, "after 300 resets");
}

#[test]
fn half_close_with_data_pending_both_ways() {
    let mut siege = Siege::start(&["-q", "127.0.0.1:0"]);
    let client = Client::connect(siege.addr());
    // The replies are twice what the server's send buffer can ever hold
    // (tcp_wmem's maximum), so they back up in the server while the client
    // reads nothing, and the server stops reading. A large send buffer lets
    // the client queue all its lines and its FIN regardless.
    client.set_socket_option(libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .expect("read tcp_wmem")
        .split_whitespace()
        .last()
        .and_then(|v| v.parse().ok())
        .expect("tcp_wmem max");
    // "half 000000\n" and ": from <pid>\n": about 25 bytes of reply a line.
    let lines = 2 * wmem_max / 25;
    let mut data: Vec<u8> = (0..lines)
        .flat_map(|i| format!("half {i:06}\n").into_bytes())
        .collect();
    let total_in = data.len() + b"the tail".len();
    data.extend_from_slice(b"the tail");

    let mut writer = client.stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        writer.write_all(&data).expect("send lines");
        writer
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
    });
    // The client reads nothing until its FIN is queued behind all the lines.
    wait_until("the lines and FIN to be queued", || {
        sender.is_finished().then_some(())
    });
    sender.join().expect("sender panicked");

    // At the half-close, input was still unread in the server, and its
    // replies were waiting for the client: data pending both ways. The
    // server is held by backpressure, so its byte count has settled.
    let status = wait_until("the server's input count to settle", || {
        let a = siege.server.wait_status("bytes_in=");
        thread::sleep(Duration::from_millis(100));
        let b = siege.server.wait_status("bytes_in=");
        (status_field(&a, "bytes_in") == status_field(&b, "bytes_in")).then_some(b)
    });
    let bytes_in = status_field(&status, "bytes_in") as usize;
    assert!(
        bytes_in < total_in,
        "the server read all {total_in} bytes at once: no input was pending; {status}"
    );
    let mut client = client;
    wait_until("a reply waiting for the client", || {
        (client.unread_in_kernel() > 0).then_some(())
    });
    siege.bystander_served("while a half-closed client is backed up");

    // Every line and the tail come back in order, then EOF.
    let pid = siege.pid();
    let got = client.read_to_eof().expect("read replies");
    let mut want = Vec::with_capacity(got.len());
    for i in 0..lines {
        want.extend_from_slice(&reply(format!("half {i:06}\n").as_bytes(), pid));
    }
    want.extend_from_slice(&reply(b"the tail\n", pid));
    assert_long_bytes(&got, &want);
    // --max-output (64 KiB) of replies, a 64 KiB read chunk, a partial line
    // and the shared reply scratch (kept up to 256 KiB): under 512 KiB,
    // doubled for the allocator. A server that took all the input and held
    // the replies would need 8 MiB.
    siege.check(1024, "after the half-closed client");
}

#[test]
fn telnet_negotiation_nul_bytes_and_bare_carriage_returns() {
    // With --raw every byte is data, telnet's included; tests/it/telnet.rs
    // covers what the default telnet filter makes of them.
    let mut siege = Siege::start(&["-q", "--raw", "--max-line", "4096", "127.0.0.1:0"]);
    let pid = siege.pid();

    // What a telnet client sends before the user types: option
    // negotiation (IAC DO/WILL/SB ... SE), then the typed line, echoed as
    // it came.
    let mut telnet = Client::connect(siege.addr());
    let negotiation = b"\xff\xfd\x03\xff\xfb\x18\xff\xfa\x18\x00VT100\xff\xf0\xff\xfb\x1f";
    let line = [&negotiation[..], b"hello\r\n"].concat();
    telnet.send(&line);
    telnet.expect_reply(&line, pid);
    // Interrupt Process and Are You There, mid-session.
    let line = b"\xff\xf4\xff\xf6typed\r\n";
    telnet.send(line);
    telnet.expect_reply(line, pid);

    // A thousand lines of random bytes (every value but `\n`), NULs and
    // lines of nothing but `\r`, in one write.
    let mut binary = Client::connect(siege.addr());
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let lines: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            let mut line: Vec<u8> = match i % 4 {
                0 => vec![0; (next() % 50) as usize],
                1 => vec![b'\r'; (next() % 50) as usize],
                _ => (0..next() % 200)
                    .map(|_| next() as u8)
                    .filter(|&b| b != b'\n')
                    .collect(),
            };
            line.push(b'\n');
            line
        })
        .collect();
    binary.send(&lines.concat());
    for line in &lines {
        binary.expect_reply(line, pid);
    }

    // A client whose lines end in `\r` alone never ends a line: it gets the
    // too-long error at --max-line, then the end of the connection.
    let mut cr_only = Client::connect(siege.addr());
    for _ in 0..3 {
        cr_only.send(&[b'\r'; 2048]);
    }
    assert_eq!(cr_only.read_line(), b"error: line longer than 4096 bytes\n");
    cr_only.shutdown_write();
    assert_eq!(cr_only.read_to_eof().expect("EOF after the error"), b"");

    // About 100 KiB of lines in one write, answered from a 64 KiB read
    // chunk: nothing here needs half a mebibyte.
    siege.check(512, "after binary lines");
}

#[test]
fn out_of_descriptors_then_recovery_twice() {
    if !have_tool("prlimit", "util-linux") {
        return;
    }
    // 64 descriptors: a handful for the server itself, the rest for clients.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=64", "--", BIN, "-q", "127.0.0.1:0"]);
    let mut siege = Siege::spawn(cmd);
    const FLOOD: usize = 120;
    for episode in 1..=2 {
        let mut flood: Vec<Client> = (0..FLOOD).map(|_| Client::connect(siege.addr())).collect();
        for (i, client) in flood.iter_mut().enumerate() {
            client.send(format!("flood {episode} {i}\n").as_bytes());
        }
        wait_until("the server to run out of descriptors", || {
            (siege
                .server
                .count_lines("cannot accept (Too many open files")
                == episode)
                .then_some(())
        });
        // Out of descriptors, it still serves the clients it has.
        siege.bystander_served(&format!("out of descriptors, episode {episode}"));
        // The flood leaves; those still queued are accepted, answered and
        // closed in turn.
        drop(flood);
        siege.server.expect_line("is accepting connections again");
        siege.server.wait_status("clients=1 ");
        let mut fresh = Client::connect(siege.addr());
        assert_eq!(fresh.echo("after the flood"), siege.pid());
        // At most 60 clients at a time, each with one short line: a
        // kibibyte each would still be far below this.
        siege.check(512, &format!("after episode {episode}"));
    }
    assert_eq!(
        siege.server.count_lines("cannot accept"),
        2,
        "one line per episode"
    );
}

#[test]
fn a_hundred_sigusr1_to_a_running_server() {
    let mut siege = Siege::start(&["-q", "127.0.0.1:0"]);
    for i in 0..100 {
        siege.server.signal(SIGUSR1);
        if i % 20 == 0 {
            siege.bystander_served(&format!("after {i} SIGUSR1"));
        }
    }
    // Signals that arrive together merge, so there are between 1 and 100
    // status lines, each in the documented form.
    siege
        .server
        .expect_line(&format!("Process {} status:", siege.pid()));
    siege.bystander_served("after 100 SIGUSR1");
    let seen = siege.server.drain_lines().to_vec();
    let status: Vec<&String> = seen.iter().filter(|l| l.contains("status:")).collect();
    assert!(
        (1..=100).contains(&status.len()),
        "{} status lines for 100 signals",
        status.len()
    );
    let form = format!("Process {} status: state=running clients=1 ", siege.pid());
    for line in status {
        assert!(line.starts_with(&form), "{line:?}");
    }
    // Status lines are formatted on the stack and printed: nothing kept.
    siege.check(256, "after 100 SIGUSR1");
}

#[test]
fn a_hundred_sighups_to_a_draining_server() {
    let mut siege = Siege::start(&["-q", "127.0.0.1:0"]);
    let pid = siege.pid();
    let mut clients: Vec<Client> = (0..5).map(|_| Client::connect(siege.addr())).collect();
    for client in &mut clients {
        assert_eq!(client.echo("before the drain"), pid);
    }
    siege.server.signal(SIGHUP);
    siege
        .server
        .expect_line(&format!("process {pid} closing tasks: 6"));
    siege.bystander_served("while draining");
    siege.memory_within(256, "while draining");

    // A second stop signal is a hard stop; the other 99 must change nothing.
    for _ in 0..100 {
        siege.server.signal(SIGHUP);
    }
    let closing = closing_line(pid).into_bytes();
    clients.push(siege.bystander);
    for client in &mut clients {
        assert_eq!(client.read_line(), closing);
        client.expect_eof();
    }
    let status = siege.server.wait_exit();
    assert_eq!(
        exit_code_or_signal(status),
        Ok(0),
        "{status:?}; stdout {:#?}",
        siege.server.seen
    );
    let lines = siege.server.seen.join("\n");
    for (needle, times) in [
        (format!("Process {pid} received hangup signal\n"), 1),
        (
            format!("Process {pid} received hangup signal during drain: closing 6 clients"),
            1,
        ),
        (format!("Process {pid} exiting"), 1),
    ] {
        assert_eq!(
            format!("{lines}\n").matches(&needle).count(),
            times,
            "{needle:?} in {lines}"
        );
    }
}
