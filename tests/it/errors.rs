//! Operator mistakes, made with drainport: one plain line on stderr that
//! starts with `drainport: `, exit status 1, no panic. A mistake in the
//! arguments is found before the program starts: nothing comes on stdout.
//! (The examples check theirs in their own packages' tests.)

use std::ffi::OsStr;
use std::fmt::Debug;
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output};

use testbed::mistake::{self, refused_arguments};

use crate::util::{BIN, example_bin};

/// Runs drainport with `args`, which must make it fail as a mistake must
/// (see [`mistake::refused`]). Returns what it printed.
#[track_caller]
fn expect_one_line_error<A: AsRef<OsStr> + Debug>(args: &[A], needle: &str) -> Output {
    mistake::refused(Path::new(BIN), "drainport", args, needle)
}

/// The same for a mistake in `args`, which drainport must refuse before it
/// starts: nothing on stdout.
#[track_caller]
fn expect_argument_error<A: AsRef<OsStr> + Debug>(args: &[A], needle: &str) {
    refused_arguments(Path::new(BIN), "drainport", args, needle);
}

#[test]
fn unknown_flag() {
    expect_argument_error(&["--frobnicate"], "unknown option '--frobnicate'");
}

#[test]
fn bad_address() {
    expect_argument_error(&["localhost"], "invalid address 'localhost'");
    expect_argument_error(&["127.0.0.1:99999"], "invalid address");
}

#[test]
fn bad_values() {
    expect_argument_error(&["--max-line", "lots"], "--max-line");
    expect_argument_error(&["--drain-timeout"], "needs a value");
}

#[test]
fn address_held_without_reuseport() {
    // std's listener does not set SO_REUSEPORT, like many other servers.
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    expect_one_line_error(&[&addr], "SO_REUSEPORT");
}

#[test]
fn address_not_local() {
    // TEST-NET-1 is never assigned to a local interface.
    expect_one_line_error(&["192.0.2.1:8080"], "no local interface");
}

/// Each wrong shape of argument, not just each wrong value: one line, exit
/// 1, and never the server started by a flag that was half read.
#[test]
fn every_bad_form_of_argument_is_one_line() {
    for (args, needle) in [
        // A switch given a value, which the old parser dropped: `--raw=0`
        // turned raw mode on.
        (
            &["--raw=0"][..],
            "option '--raw' takes no value, but was given '0'",
        ),
        (
            &["--quiet=no"][..],
            "option '--quiet' takes no value, but was given 'no'",
        ),
        (&["--help=1"][..], "option '--help' takes no value"),
        (&["--version=2"][..], "option '--version' takes no value"),
        (
            &["--raw="][..],
            "option '--raw' takes no value, but was given ''",
        ),
        // Glued to a short switch.
        (
            &["-q5"][..],
            "option '-q' takes no value, but was given '5'",
        ),
        (
            &["-q=1"][..],
            "option '-q' takes no value, but was given '1'",
        ),
        (&["-qV"][..], "option '-q' takes no value"),
        (&["-V1"][..], "option '-V' takes no value"),
        // Given twice: the second would silently win.
        (
            &["--max-line", "10", "--max-line=20"][..],
            "option '--max-line' is given twice",
        ),
        (
            &["--drain-timeout=1", "--drain-timeout", "1"][..],
            "is given twice",
        ),
        // Empty or missing values.
        (
            &["--pid-file="][..],
            "option '--pid-file' takes a path, not an empty one",
        ),
        (&["--pid-file", ""][..], "takes a path, not an empty one"),
        (
            &["--drain-notice", ""][..],
            "takes one line of text, not an empty one",
        ),
        (
            &["--backlog="][..],
            "option '--backlog' takes a whole number from 1 to 2147483647, not ''",
        ),
        (
            &["--max-clients"][..],
            "option '--max-clients' needs a value",
        ),
        (&[""][..], "invalid address ''"),
        // A forgotten value must not swallow the next option.
        (
            &["--pid-file", "--raw", "127.0.0.1:0"][..],
            "'--raw' looks like an option",
        ),
        (&["--drain-notice", "-q"][..], "'-q' looks like an option"),
        // `--` ends the options: what follows are addresses, each once.
        (
            &["--", "127.0.0.1:0", "--raw"][..],
            "invalid address '--raw'",
        ),
        (&["--", "-q"][..], "invalid address '-q'"),
        (
            &["127.0.0.1:0", "--", "127.0.0.1:0"][..],
            "address '127.0.0.1:0' is given twice",
        ),
        // A control character in an argument cannot split the message.
        (&["127.0.0.1\n:80"][..], "invalid address '127.0.0.1\\n:80'"),
        (&["--\u{1b}[31m"][..], "unknown option '--\\u{1b}[31m'"),
    ] {
        expect_argument_error(args, needle);
    }
    // Arguments that are not UTF-8: a path may be anything, text may not.
    let bad = OsStr::from_bytes(b"\xff\xfe");
    for (args, needle) in [
        (&[bad][..], "invalid address"),
        (
            &[OsStr::new("--drain-notice"), bad][..],
            "option '--drain-notice' takes UTF-8 text",
        ),
        (
            &[OsStr::new("--max-line"), bad][..],
            "option '--max-line' takes a whole number",
        ),
        (
            &[OsStr::from_bytes(b"--raw=\xff")][..],
            "option '--raw' takes no value",
        ),
        (
            &[OsStr::new("--pid-file"), bad, OsStr::new("--bogus")][..],
            "unknown option '--bogus'",
        ),
    ] {
        expect_argument_error(args, needle);
    }
}

/// Runs `program ARGS` to its end, as a server that must refuse to start.
#[track_caller]
fn refused(program: &std::path::Path, args: &[&str]) -> String {
    let out = crate::util::output_retrying(
        Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null()),
    )
    .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{}: {out:?}", program.display());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// A program that knows its flags names them in the error for the setting
/// that would fix it: the binary and both examples, refused an address
/// another service of theirs serves.
#[test]
fn programs_with_flags_name_their_flag_in_a_refusal() {
    let kv = example_bin("kv");
    let mut held_by_kv = crate::util::Server::spawn({
        let mut cmd = Command::new(&kv);
        cmd.arg("127.0.0.1:0");
        cmd
    });
    let addr = held_by_kv.addr.to_string();
    let stderr = refused(std::path::Path::new(BIN), &[&addr]);
    assert!(stderr.starts_with("drainport: "), "{stderr}");
    assert!(
        stderr.contains("is served by another service, Lines<Kv>")
            && stderr.trim_end().ends_with("(--join-any to share it)"),
        "{stderr}"
    );
    let stderr = refused(&example_bin("http"), &[&addr]);
    assert!(stderr.starts_with("http: "), "{stderr}");
    assert!(
        stderr.trim_end().ends_with("(--join-any to share it)"),
        "{stderr}"
    );
    held_by_kv.signal(libc::SIGHUP);
    held_by_kv.expect_clean_exit();

    let echo = crate::util::Server::start(&["-q", "127.0.0.1:0"]);
    let stderr = refused(&kv, &[&echo.addr.to_string()]);
    assert!(stderr.starts_with("kv: "), "{stderr}");
    assert!(
        stderr.trim_end().ends_with("(--join-any to share it)"),
        "{stderr}"
    );
}

/// A library program without flags (the README's example) prints the
/// error as the library words it: one line, naming the `Config` field,
/// neither a flag it does not have nor Rust's debug form.
#[test]
fn a_library_program_names_the_config_field() {
    let echo = crate::util::Server::start(&["-q", "127.0.0.1:0"]);
    let stderr = refused(&example_bin("upper"), &[&echo.addr.to_string()]);
    assert!(stderr.starts_with("upper: "), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "is served by another service, Lines<Echo> (pid {}), and this is Lines<Upper>",
            echo.pid
        )),
        "{stderr}"
    );
    assert!(
        stderr
            .trim_end()
            .ends_with("(Config::join_any to share it)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("--") && !stderr.contains("Custom {"),
        "{stderr}"
    );
}

/// The README's library example is `examples/upper.rs`, which the test
/// above runs: the code block is the file from its first `use` on.
#[test]
fn the_readmes_library_example_is_the_upper_example() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let example = std::fs::read_to_string(format!("{root}/examples/upper.rs")).unwrap();
    let code = &example[example.find("use std::process::ExitCode;").unwrap()..];
    let section = &readme[readme.find("## As a library").expect("the section")..];
    let block = section
        .split("```rust\n")
        .nth(1)
        .and_then(|rest| rest.split("```\n").next())
        .expect("a rust block in the section");
    assert_eq!(
        block, code,
        "README.md's library example and examples/upper.rs differ"
    );
}

/// `net.core.somaxconn` as this network namespace has it.
fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("read net.core.somaxconn")
        .trim()
        .parse()
        .expect("a number")
}

/// A backlog over `net.core.somaxconn` is cut to it by the kernel without a
/// word: startup says so in one line, with the figure the kernel uses
/// (which `ss` confirms where it is installed), and says nothing of a
/// backlog within it.
#[test]
fn a_backlog_over_somaxconn_is_reported_at_startup() {
    let cap = somaxconn();
    if cap >= libc::c_int::MAX as u32 {
        return crate::util::skip("net.core.somaxconn is as large as a backlog can be");
    }
    let asked = (cap + 1)
        .max(100_000)
        .min(libc::c_int::MAX as u32)
        .to_string();
    let mut server = crate::util::Server::start(&["-q", "--backlog", &asked, "127.0.0.1:0"]);
    let line = format!(
        "Process {}: the listen backlog of {asked} is capped at {cap} by net.core.somaxconn; raise that sysctl for a longer queue",
        server.pid
    );
    assert_eq!(
        server.seen.iter().filter(|l| **l == line).count(),
        1,
        "{:#?}",
        server.seen
    );
    // Before the listening line: a startup line.
    assert!(server.seen.last().unwrap().contains("listening on"));
    if crate::util::have_tool("ss", "iproute2") {
        let out = Command::new("ss")
            .args(["-ltnH", &format!("sport = :{}", server.addr.port())])
            .output()
            .expect("run ss");
        let text = String::from_utf8_lossy(&out.stdout);
        for row in text.lines() {
            // State, Recv-Q, Send-Q (a listener's backlog), local, peer.
            let send_q = row.split_whitespace().nth(2).expect("a Send-Q column");
            assert_eq!(send_q, cap.to_string(), "{text}");
        }
        assert!(text.lines().count() >= 1, "no listener in {text:?}");
    }
    server.signal(libc::SIGHUP);
    server.expect_clean_exit();

    let mut within =
        crate::util::Server::start(&["-q", "--backlog", &cap.to_string(), "127.0.0.1:0"]);
    within.signal(libc::SIGHUP);
    let lines = within.expect_clean_exit();
    assert!(!lines.iter().any(|l| l.contains("somaxconn")), "{lines:#?}");
}
