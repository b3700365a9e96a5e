//! The kv program's command line, run as a process: what `--help` and
//! `--version` print, and each mistake refused in one line.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use testbed::mistake::refused_arguments;

const KV: &str = env!("CARGO_BIN_EXE_kv");

fn os<'a>(args: &[&'a str]) -> Vec<&'a OsStr> {
    args.iter().map(|a| OsStr::new(*a)).collect()
}

#[test]
fn help_and_version() {
    // The users' report: `kv --help` said "invalid address '--help'".
    let out = Command::new(KV).arg("--help").output().expect("run kv");
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    let usage = String::from_utf8(out.stdout).expect("UTF-8 help");
    assert!(usage.contains("Usage: kv [OPTIONS] [ADDR]"), "{usage}");
    for needed in [
        "--log-time",
        "-h, --help",
        "-V, --version",
        "own map",
        "release loses the data",
        "telnet 127.0.0.1 7070",
        "nc -N 127.0.0.1 7070",
    ] {
        assert!(
            usage.contains(needed),
            "kv --help lacks {needed:?}:\n{usage}"
        );
    }
    let out = Command::new(KV).arg("--version").output().expect("run kv");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("kv {}\n", drainport::VERSION)
    );
}

#[test]
fn mistakes_are_one_line() {
    let bad = OsStr::from_bytes(b"\xff");
    for (args, needle) in [
        // Extra arguments used to be ignored; they are addresses now.
        (
            os(&["127.0.0.1:0", "127.0.0.1:0"]),
            "address '127.0.0.1:0' is given twice",
        ),
        (os(&["127.0.0.1:0", "--", "x"]), "invalid address 'x'"),
        (os(&["--help=1"]), "option '--help' takes no value"),
        (os(&["--log-time=no"]), "option '--log-time' takes no value"),
        (os(&["-q"]), "unknown option '-q' (see 'kv --help')"),
        (os(&["nonsense"]), "invalid address 'nonsense'"),
        (vec![bad], "invalid address"),
    ] {
        refused_arguments(Path::new(KV), "kv", &args, needle);
    }
}
