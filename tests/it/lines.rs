//! What a client sees line by line: terminators, odd bytes, half-closes,
//! oversized lines and resets.

use libc::SIGHUP;

use crate::util::{Client, Server};

#[test]
fn crlf_and_odd_bytes_come_back_exactly() {
    let lines: [&[u8]; 6] = [
        b"test\r\n",
        b"\n",
        b"\r\n",
        b"\r\r\r\n",
        b"nul\0byte\n",
        b"high \x80\xf0\xf4\xfd\xfe bytes\n",
    ];
    // With --raw, telnet IAC sequences are ordinary data too.
    let iac: &[u8] = b"\xff\xf4\xff\xfd\x06\n";
    for (args, extra) in [(&[][..], None), (&["--raw"][..], Some(iac))] {
        let server = Server::start(&[args, &["127.0.0.1:0"]].concat());
        let mut client = Client::connect(server.addr);
        let lines: Vec<&[u8]> = lines.iter().copied().chain(extra).collect();
        // Sent in one write, answered in order.
        client.send(&lines.concat());
        for line in lines {
            let from = client
                .try_read_reply(line)
                .unwrap_or_else(|e| panic!("{args:?}: {:?}: {e}", String::from_utf8_lossy(line)));
            assert_eq!(from, server.pid, "{args:?}");
        }
    }
}

#[test]
fn a_line_split_across_writes_waits_for_its_end() {
    let server = Server::start(&["127.0.0.1:0"]);
    let mut client = Client::connect(server.addr);
    for piece in [&b"sp"[..], b"lit ", b"line\r", b"\nnext\n"] {
        client.send(piece);
        std::thread::yield_now();
    }
    client.expect_reply(b"split line\r\n", server.pid);
    client.expect_reply(b"next\n", server.pid);
}

#[test]
fn half_close_answers_the_tail_then_closes() {
    let server = Server::start(&["127.0.0.1:0"]);
    let mut client = Client::connect(server.addr);
    client.send(b"whole\nunterminated");
    client.shutdown_write();
    client.expect_reply(b"whole\n", server.pid);
    client.expect_reply(b"unterminated\n", server.pid);
    client.expect_eof();
}

#[test]
fn half_close_without_a_tail_just_closes() {
    let server = Server::start(&["127.0.0.1:0"]);
    let mut client = Client::connect(server.addr);
    client.send(b"only\n");
    client.shutdown_write();
    client.expect_reply(b"only\n", server.pid);
    client.expect_eof();
}

#[test]
fn oversized_line_gets_an_error_then_a_close() {
    let server = Server::start(&["--max-line", "1024", "127.0.0.1:0"]);
    let mut bystander = Client::connect(server.addr);
    let mut client = Client::connect(server.addr);

    // A line of exactly the limit, terminator included, is fine.
    let fits = format!("{}\n", "a".repeat(1023));
    client.send(fits.as_bytes());
    client.expect_reply(fits.as_bytes(), server.pid);

    client.send(&[b'x'; 3000]);
    assert_eq!(client.read_line(), b"error: line longer than 1024 bytes\n");
    client.shutdown_write();
    client.expect_eof();

    assert_eq!(bystander.echo("unaffected"), server.pid);
}

#[test]
fn oversized_line_in_pieces_is_caught() {
    let server = Server::start(&["--max-line", "100", "127.0.0.1:0"]);
    let mut client = Client::connect(server.addr);
    for _ in 0..20 {
        client.send(&[b'y'; 10]);
        std::thread::yield_now();
    }
    assert_eq!(client.read_line(), b"error: line longer than 100 bytes\n");
    client.shutdown_write();
    client.expect_eof();
}

#[test]
fn client_reset_leaves_the_server_serving() {
    let mut server = Server::start(&["127.0.0.1:0"]);
    let mut bystander = Client::connect(server.addr);
    for i in 0..20 {
        let mut client = Client::connect(server.addr);
        if i % 2 == 0 {
            assert_eq!(client.echo("before reset"), server.pid);
        } else {
            // Reset with a request in flight.
            client.send(b"never read\n");
        }
        client.reset();
    }
    assert_eq!(bystander.echo("still served"), server.pid);
    // The reset clients leave the table: only the bystander is left.
    server.wait_status("clients=1 ");
    server.signal(SIGHUP);
    server.expect_line(&format!("process {} closing tasks: 1", server.pid));
    drop(bystander);
    server.expect_clean_exit();
}
