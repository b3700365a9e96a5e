//! `--log-time`: every stdout line starts with the time it was written, as
//! RFC 3339 UTC to the millisecond and a space; without the flag the lines
//! are exactly the seed's.

use std::process::Command;
use std::time::{Duration, SystemTime};

use libc::SIGHUP;

use crate::util::{Client, Server, example_bin};

/// The length of `2026-12-02T18:30:00.123Z `.
const STAMP: usize = 25;

/// Now, as a time since the epoch.
fn now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("a clock after 1970")
}

/// The time a line's prefix names, and the rest of the line; or why the
/// line has no such prefix. The date is turned back into seconds by the C
/// library's `timegm`, not by anything the server uses.
fn split_time(line: &str) -> Result<(Duration, &str), String> {
    let bytes = line.as_bytes();
    if bytes.len() < STAMP {
        return Err(format!("too short for a timestamp: {line:?}"));
    }
    for (at, want) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
        (24, b' '),
    ] {
        if bytes[at] != want {
            return Err(format!("no {:?} at {at}: {line:?}", want as char));
        }
    }
    let field = |from: usize, to: usize, range: std::ops::RangeInclusive<i32>| {
        let text = &line[from..to];
        text.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| text.parse::<i32>().ok())
            .flatten()
            .filter(|n| range.contains(n))
            .ok_or_else(|| format!("bad field {text:?} in {line:?}"))
    };
    // SAFETY: a zeroed `tm` is a valid value; timegm reads only it.
    let secs = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = field(0, 4, 1970..=9999)? - 1900;
        tm.tm_mon = field(5, 7, 1..=12)? - 1;
        tm.tm_mday = field(8, 10, 1..=31)?;
        tm.tm_hour = field(11, 13, 0..=23)?;
        tm.tm_min = field(14, 16, 0..=59)?;
        tm.tm_sec = field(17, 19, 0..=59)?;
        libc::timegm(&mut tm)
    };
    let millis = field(20, 23, 0..=999)?;
    let time = Duration::from_secs(secs as u64) + Duration::from_millis(millis as u64);
    Ok((time, &line[STAMP..]))
}

/// Starts a server, has one client send a line, drains it and returns
/// every stdout line it printed, with the times just before the start and
/// just after the exit.
fn one_release(mut cmd: Command, line: &[u8]) -> (u32, Vec<String>, Duration, Duration) {
    // timegm counts whole seconds and the stamp truncates to the
    // millisecond, so the window starts at the millisecond.
    let before = Duration::from_millis(now().as_millis() as u64);
    cmd.arg("127.0.0.1:0");
    let mut server = Server::spawn(cmd);
    let mut client = Client::connect(server.addr);
    client.send(line);
    let _ = client.read_line();
    server.signal(SIGHUP);
    server.expect_line("closing tasks");
    drop(client);
    let lines = server.expect_clean_exit().to_vec();
    (server.pid, lines, before, now())
}

#[track_caller]
fn assert_dated(pid: u32, lines: &[String], before: Duration, after: Duration) -> Vec<String> {
    let mut last = before;
    let mut rest = Vec::new();
    for line in lines {
        let (time, text) = split_time(line).unwrap_or_else(|e| panic!("{e}; lines {lines:#?}"));
        assert!(
            last <= time && time <= after,
            "{line:?} is dated outside {before:?}..={after:?} or before the line above it"
        );
        last = time;
        rest.push(text.to_owned());
    }
    assert_eq!(rest[0], format!("Process {pid} running"), "{lines:#?}");
    assert!(
        rest.iter().all(|l| l.contains(&format!("rocess {pid}"))),
        "{lines:#?}"
    );
    rest
}

#[test]
fn every_line_starts_with_the_time_with_log_time() {
    let mut cmd = Command::new(crate::util::BIN);
    cmd.arg("--log-time");
    let (pid, lines, before, after) = one_release(cmd, b"hello\n");
    let rest = assert_dated(pid, &lines, before, after);
    for want in [
        "accepted connection from: 127.0.0.1:",
        "received hangup signal",
        "closing tasks: 1",
        "has no clients left, exiting",
    ] {
        assert!(rest.iter().any(|l| l.contains(want)), "{lines:#?}");
    }
    assert_eq!(
        rest.last().unwrap(),
        &format!("Process {pid} has no clients left, exiting")
    );
}

#[test]
fn without_log_time_the_lines_are_unchanged() {
    let (pid, lines, _, _) = one_release(Command::new(crate::util::BIN), b"hello\n");
    assert_eq!(lines[0], format!("Process {pid} running"));
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with(&format!("Process {pid}"))
                || l.starts_with(&format!("process {pid}"))),
        "{lines:#?}"
    );
    assert!(lines.iter().all(|l| split_time(l).is_err()), "{lines:#?}");
    assert!(lines.contains(&format!("process {pid} closing tasks: 1")));
    assert_eq!(
        lines.last().unwrap(),
        &format!("Process {pid} has no clients left, exiting")
    );
}

#[test]
fn the_examples_date_their_lines_too() {
    for (example, request) in [
        ("kv", &b"GET x\r\n"[..]),
        ("http", &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]),
    ] {
        let mut cmd = Command::new(example_bin(example));
        cmd.arg("--log-time");
        let (pid, lines, before, after) = one_release(cmd, request);
        let rest = assert_dated(pid, &lines, before, after);
        assert!(
            rest.last().unwrap().ends_with("exiting"),
            "{example}: {lines:#?}"
        );
    }
}

#[test]
fn the_check_above_refuses_what_is_not_a_timestamp() {
    assert!(split_time("2026-12-02T18:30:00.123Z Process 1 running").is_ok());
    for bad in [
        "Process 1 running",
        "2026-12-02 18:30:00.123Z Process 1",
        "2026-12-02T18:30:00.123 Process 1 ",
        "2026-13-02T18:30:00.123Z Process 1",
        "2026-12-02T24:30:00.123Z Process 1",
        "2026-12-02T18:30:00.12Z  Process 1",
        "2026-12-02T18:30:00+123Z Process 1",
    ] {
        assert!(split_time(bad).is_err(), "{bad}");
    }
    let (time, rest) = split_time("1970-01-02T00:00:01.250Z x").unwrap();
    assert_eq!(time, Duration::from_millis(86_401_250));
    assert_eq!(rest, "x");
}
