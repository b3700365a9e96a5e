//! Telnet clients: the exact bytes Debian's telnet sends (Ctrl-C, `send
//! ayt`, option negotiation) against the real binary, and the real telnet
//! in a pseudo-terminal when telnet and tmux are installed.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::util::{
    Client, Server, assert_long_bytes, find_tool, have_tool, reply, status_field, wait_until,
};

/// What telnet sends on Ctrl-C: Interrupt Process, then DO TIMING-MARK. It
/// throws away everything it receives until the timing mark is answered.
const CTRL_C: &[u8] = b"\xff\xf4\xff\xfd\x06";
/// The answer telnet waits for: WILL TIMING-MARK.
const WILL_TM: &[u8] = b"\xff\xfb\x06";
/// What `send ayt` sends, and the answer.
const AYT: &[u8] = b"\xff\xf6";
const YES: &[u8] = b"[Yes]\r\n";

/// Half-closes, then returns everything the server sends until it closes:
/// a reply that should not be there shows up here.
#[track_caller]
fn rest(client: &mut Client) -> Vec<u8> {
    client.shutdown_write();
    client.read_to_eof().expect("read to EOF")
}

#[track_caller]
fn assert_bytes(got: &[u8], want: &[u8]) {
    assert!(
        got == want,
        "got  {:?}\nwant {:?}",
        String::from_utf8_lossy(got),
        String::from_utf8_lossy(want)
    );
}

#[test]
fn ctrl_c_drops_the_partial_line_and_answers_the_timing_mark() {
    let server = Server::start(&["127.0.0.1:0"]);
    let mut client = Client::connect(server.addr);
    client.send(b"before\r\npart");
    client.expect_reply(b"before\r\n", server.pid);
    client.send(CTRL_C);
    client.send(b"after\r\n");
    // The timing mark's answer first, then the new line; not the partial
    // line, and no telnet command echoed back.
    let want = [WILL_TM, &reply(b"after\r\n", server.pid)].concat();
    assert_bytes(&rest(&mut client), &want);
}

#[test]
fn ctrl_c_in_one_read_keeps_every_reply_in_order() {
    let server = Server::start(&["127.0.0.1:0"]);
    let mut client = Client::connect(server.addr);
    client.send(&[&b"one\r\ntwo\r\npart"[..], CTRL_C, b"after\r\n"].concat());
    let want = [
        &reply(b"one\r\n", server.pid)[..],
        &reply(b"two\r\n", server.pid),
        WILL_TM,
        &reply(b"after\r\n", server.pid),
    ]
    .concat();
    assert_bytes(&rest(&mut client), &want);
}

#[test]
fn ctrl_c_split_over_two_reads_is_still_one_command() {
    let mut server = Server::start(&["127.0.0.1:0"]);
    let mut bytes_in = 0;
    for split in 1..CTRL_C.len() {
        let mut client = Client::connect(server.addr);
        let first = [&b"part"[..], &CTRL_C[..split]].concat();
        client.send(&first);
        // The server has read the first piece before the second is sent,
        // so the sequence really is cut between two reads.
        bytes_in += first.len();
        server.wait_status(&format!("bytes_in={bytes_in} "));
        let second = [&CTRL_C[split..], b"next\r\n"].concat();
        client.send(&second);
        bytes_in += second.len();
        let want = [WILL_TM, &reply(b"next\r\n", server.pid)].concat();
        assert_bytes(&rest(&mut client), &want);
    }
}

#[test]
fn are_you_there_gets_a_visible_line_and_keeps_the_line() {
    let server = Server::start(&["127.0.0.1:0"]);
    let mut client = Client::connect(server.addr);
    client.send(AYT);
    assert_bytes(&client.read_line(), YES);
    client.send(&[&b"ab"[..], AYT, b"cd\r\n"].concat());
    let want = [YES, &reply(b"abcd\r\n", server.pid)].concat();
    assert_bytes(&rest(&mut client), &want);
}

#[test]
fn option_requests_are_refused_and_subnegotiation_dropped() {
    let server = Server::start(&["127.0.0.1:0"]);
    let mut client = Client::connect(server.addr);
    // `mode character` asks DO SGA, DO ECHO; a full telnet also offers
    // terminal type and window size and sends the window size.
    client.send(b"\xff\xfd\x03\xff\xfd\x01\xff\xfb\x18\xff\xfb\x1f");
    client.send(b"\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0");
    // Refusals confirmed by the client are not answered again.
    client.send(b"\xff\xfc\x03\xff\xfe\x01hello\r\n");
    let want = [
        &b"\xff\xfc\x03\xff\xfc\x01\xff\xfe\x18\xff\xfe\x1f"[..],
        &reply(b"hello\r\n", server.pid),
    ]
    .concat();
    assert_bytes(&rest(&mut client), &want);
}

#[test]
fn an_escaped_iac_is_one_data_byte() {
    let server = Server::start(&["127.0.0.1:0"]);
    let mut client = Client::connect(server.addr);
    client.send(b"a\xff\xffb\r\n");
    assert_bytes(&rest(&mut client), &reply(b"a\xffb\r\n", server.pid));
}

#[test]
fn raw_echoes_telnet_bytes_exactly() {
    let server = Server::start(&["--raw", "127.0.0.1:0"]);
    let mut client = Client::connect(server.addr);
    let line = [&b"x"[..], CTRL_C, AYT, b"\xff\xff\xff\xfa\r\n"].concat();
    client.send(&line);
    assert_bytes(&rest(&mut client), &reply(&line, server.pid));
}

#[test]
fn replies_held_back_by_a_full_output_stay_ahead_of_telnet_answers() {
    // Output is capped at 1 KiB, and the client sends about 40 KiB before it
    // reads anything, so most lines wait behind the cap when the server
    // reaches the timing mark, the Are You There and the Ctrl-C. Every line
    // before them is still answered first, and only the partial line goes.
    let server = Server::start(&["--max-output", "1024", "127.0.0.1:0"]);
    let mut client = Client::connect(server.addr);
    let lines: Vec<Vec<u8>> = (0..3000)
        .map(|i| format!("l{i}\r\n").into_bytes())
        .collect();
    let mut sent = lines.concat();
    sent.extend_from_slice(b"\xff\xfd\x06");
    sent.extend_from_slice(&lines.concat());
    sent.extend_from_slice(AYT);
    sent.extend_from_slice(b"partial");
    sent.extend_from_slice(CTRL_C);
    sent.extend_from_slice(b"end\r\n");
    // From a thread: the server stops reading while this side does not
    // read, so a blocking write of everything could wait forever.
    let mut writer = Client::from(client.stream.try_clone().unwrap());
    let writing = std::thread::spawn(move || {
        writer.send(&sent);
        writer.shutdown_write();
    });
    let got = client.read_to_eof().expect("read to EOF");
    writing.join().expect("writer");
    let replies: Vec<u8> = lines.iter().flat_map(|l| reply(l, server.pid)).collect();
    let want = [
        &replies[..],
        WILL_TM,
        &replies,
        YES,
        WILL_TM,
        &reply(b"end\r\n", server.pid),
    ]
    .concat();
    assert_long_bytes(&got, &want);
}

#[test]
fn hostile_telnet_clients_cost_bounded_memory() {
    let server = Server::start(&["-q", "127.0.0.1:0"]);
    let mut bystander = Client::connect(server.addr);
    assert_eq!(bystander.echo("before"), server.pid);
    let base_kib = server.rss_kib();

    // A subnegotiation that never ends: 8 MiB swallowed, none of it kept.
    let mut endless = Client::connect(server.addr);
    endless.send(b"\xff\xfa\x18");
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..128 {
        endless.send(&chunk);
    }
    endless.send(b"\xff\xf0after\r\n");
    endless.expect_reply(b"after\r\n", server.pid);

    // Are You There, as fast as the server takes it, from a client that
    // does not read: the answers fill the output limit and the server
    // stops reading, as it does for lines.
    let mut flood = Client::connect(server.addr);
    let written = flood.write_without_reading(AYT, 16 << 20);
    assert!(written < 16 << 20, "the server never stopped reading");
    let grown = server.peak_rss_kib().saturating_sub(base_kib);
    // The output limit (64 KiB), a read chunk and its unfiltered copy, and
    // the reply scratch (kept up to 256 KiB): under 512 KiB, doubled for
    // the allocator. Queueing every answer would take 7 bytes per 2 sent.
    assert!(grown <= 1024, "peak RSS grew by {grown} KiB");
    // The rest is sent from a thread, as the server reads only as this
    // side takes its answers: the last AYT's second byte if a write cut
    // it, then a line.
    let mut writer = Client::from(flood.stream.try_clone().unwrap());
    let tail = [&AYT[2 - written % 2..], b"end\r\n"].concat();
    let writing = std::thread::spawn(move || writer.send(&tail));
    for _ in 0..written.div_ceil(2) {
        assert_bytes(&flood.read_line(), YES);
    }
    assert_bytes(&flood.read_line(), b"end\r\n");
    writing.join().expect("writer");
    assert_eq!(bystander.echo("after"), server.pid);
}

#[test]
fn kv_example_answers_after_ctrl_c() {
    // The report: after a Ctrl-C, telnet showed no reply from kv at
    // all, BYE included.
    let server = Server::start_example("kv", &["127.0.0.1:0"]);
    let mut client = Client::connect(server.addr);
    client.send(b"SET k v\r\n");
    assert_bytes(&client.read_line(), b"OK\n");
    client.send(&[&b"GET "[..], CTRL_C, b"GET k\r\nQUIT\r\n"].concat());
    let want = [WILL_TM, b"v\n", b"BYE\n"].concat();
    assert_bytes(&client.read_to_eof().expect("read to EOF"), &want);
}

/// A private tmux server (its own socket) running one command in a
/// detached 100x40 window. Dropping it kills that server by pid.
struct Tmux {
    socket: String,
    pid: Option<libc::pid_t>,
}

impl Tmux {
    #[track_caller]
    fn start(tmux: &PathBuf, command: &str) -> Tmux {
        let socket = format!("drainport-test-{}", std::process::id());
        let mut session = Tmux { socket, pid: None };
        // The window stays when its command exits, so a test that waits
        // for text can say why it never came instead of losing the server.
        session.run(
            tmux,
            &[
                "start-server",
                ";",
                "set-option",
                "-g",
                "remain-on-exit",
                "on",
                ";",
                "new-session",
                "-d",
                "-x",
                "100",
                "-y",
                "40",
                command,
            ],
        );
        let pid = session.run(tmux, &["display-message", "-p", "#{pid}"]);
        session.pid = Some(pid.trim().parse().expect("tmux server pid"));
        session
    }

    #[track_caller]
    fn run(&self, tmux: &PathBuf, args: &[&str]) -> String {
        let out = Command::new(tmux)
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env("TERM", "xterm")
            // tmux runs the command with $SHELL, else the user's login
            // shell, which for a system user such as nobody is nologin.
            .env("SHELL", "/bin/sh")
            // Run from inside tmux, the test still gets its own server.
            .env_remove("TMUX")
            .stdin(Stdio::null())
            .output()
            .expect("run tmux");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The text on the window; panics with it if the command has exited.
    #[track_caller]
    fn screen(&self, tmux: &PathBuf) -> String {
        let text = self.run(tmux, &["capture-pane", "-p"]);
        let dead = self.run(tmux, &["display-message", "-p", "#{pane_dead}"]);
        assert!(dead.trim() != "1", "the command in tmux exited:\n{text}");
        text
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // SAFETY: kill(2) on the tmux server this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

#[test]
fn real_telnet_in_a_terminal_keeps_its_replies_after_ctrl_c() {
    if !(have_tool("telnet", "telnet") && have_tool("tmux", "tmux")) {
        return;
    }
    let telnet = find_tool("telnet").expect("found above");
    let tmux = find_tool("tmux").expect("found above");
    let mut server = Server::start(&["127.0.0.1:0"]);
    let command = format!(
        "{} {} {}",
        telnet.display(),
        server.addr.ip(),
        server.addr.port()
    );
    let term = Tmux::start(&tmux, &command);
    let screen = || term.screen(&tmux);
    let from = format!(": from {}", server.pid);
    let wait_for = |what: &str, count: usize| {
        wait_until(&format!("{count} x {what:?} on telnet's screen"), || {
            let text = screen();
            (text.lines().filter(|l| l.trim_end() == what).count() >= count).then_some(text)
        })
    };
    let keys = |keys: &[&str]| {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        term.run(&tmux, &args);
    };
    wait_for("Escape character is '^]'.", 1);
    keys(&["first", "Enter"]);
    wait_for(&from, 1);
    keys(&["partial"]);
    wait_until("the partial line on screen", || {
        screen().contains("partial").then_some(())
    });
    keys(&["C-c"]);
    // Type on only once the Ctrl-C has reached the server ("first\r\n"
    // and at least IAC IP), so the keys cannot race telnet's handling of it.
    wait_until("telnet's Ctrl-C at the server", || {
        let status = server.wait_status("status:");
        (status_field(&status, "bytes_in") >= 9).then_some(())
    });
    keys(&["second", "Enter"]);
    // Before the fix, telnet discarded this reply while it waited for its
    // timing mark.
    let text = wait_for(&from, 2);
    assert!(
        text.lines().any(|l| l.trim_end() == "second"),
        "screen:\n{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.contains("partial") && !l.contains("^C")),
        "the partial line came back:\n{text}"
    );
    keys(&["C-]"]);
    wait_for("telnet>", 1);
    keys(&["send ayt", "Enter"]);
    wait_for("[Yes]", 1);
    keys(&["third", "Enter"]);
    let text = wait_for(&from, 3);
    assert!(
        text.lines().any(|l| l.trim_end() == "third"),
        "screen:\n{text}"
    );
}
