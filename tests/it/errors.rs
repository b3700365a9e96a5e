//! Operator mistakes, made with drainport: one plain line on stderr that
//! starts with `drainport: `, exit status 1, no panic. A mistake in the
//! arguments is found before the program starts: nothing comes on stdout.
//! (The examples check theirs in their own packages' tests.)

use std::ffi::OsStr;
use std::fmt::Debug;
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Output;

use testbed::mistake::{refused, refused_arguments};

use crate::util::BIN;

/// Runs drainport with `args`, which must make it fail as a mistake must
/// (see [`refused`]). Returns what it printed.
#[track_caller]
fn expect_one_line_error<A: AsRef<OsStr> + Debug>(args: &[A], needle: &str) -> Output {
    refused(Path::new(BIN), "drainport", args, needle)
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
