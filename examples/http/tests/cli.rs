//! The HTTP example's command line, run as a process: each mistake refused
//! in one line, with the binary's words for the options they share. (Its
//! `--help`, beside the binary's, is checked in `tests/it/help.rs`.)

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use testbed::mistake::refused_arguments;

const HTTP: &str = env!("CARGO_BIN_EXE_http");

fn os<'a>(args: &[&'a str]) -> Vec<&'a OsStr> {
    args.iter().map(|a| OsStr::new(*a)).collect()
}

#[test]
fn mistakes_are_one_line() {
    let bad = OsStr::from_bytes(b"\xff");
    for (args, needle) in [
        (
            os(&["--drain-timeout", "0"]),
            "option '--drain-timeout' takes a number of seconds from 0.000000001 to 31536000 (a year), not '0'",
        ),
        (os(&["--close-spread", "0"]), "from 0.000000001 to 31536000"),
        (
            os(&["--drain-timeout", "1e9"]),
            "from 0.000000001 to 31536000",
        ),
        (
            os(&["--drain-timeout"]),
            "option '--drain-timeout' needs a value",
        ),
        (
            os(&["--max-clients", "0"]),
            "option '--max-clients' takes a whole number from 1 to",
        ),
        (os(&["--backlog", "99999999999"]), "from 1 to 2147483647,"),
        (
            os(&["--quiet=1"]),
            "option '--quiet' takes no value, but was given '1'",
        ),
        (os(&["--help=1"]), "option '--help' takes no value"),
        (os(&["-V2"]), "option '-V' takes no value"),
        (os(&["--max-clients=1", "--max-clients=2"]), "given twice"),
        (os(&["--pid-file", "-q"]), "'-q' looks like an option"),
        (os(&["--raw"]), "unknown option '--raw' (see 'http --help')"),
        (os(&["localhost"]), "invalid address 'localhost'"),
        (os(&["127.0.0.1:0", "127.0.0.1:0"]), "is given twice"),
        (vec![bad], "invalid address"),
        (
            vec![OsStr::new("--drain-timeout"), bad],
            "takes a number of seconds",
        ),
        (
            os(&["--header-timeout", "0"]),
            "option '--header-timeout' takes a number of seconds from 0.000000001 to 31536000 (a year), not '0'",
        ),
        (
            os(&["--keepalive-timeout", "1e9"]),
            "from 0.000000001 to 31536000",
        ),
        (
            os(&["--body-timeout"]),
            "option '--body-timeout' needs a value",
        ),
        (os(&["--send-timeout=1", "--send-timeout=2"]), "given twice"),
        (
            os(&["--idle-timeout", "1"]),
            "unknown option '--idle-timeout' (see 'http --help')",
        ),
    ] {
        refused_arguments(Path::new(HTTP), "http", &args, needle);
    }
}
