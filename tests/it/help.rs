//! What `--help` and `--version` print, for drainport and each example:
//! stdout and status 0; and the usage texts beside the README.

use std::ffi::OsStr;
use std::process::{Command, Output};

use crate::util::{BIN, example_bin};

fn run(program: &OsStr, args: &[&OsStr]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program:?}: {e}"))
}

/// What `program --help` prints, which must succeed.
fn help(program: &OsStr) -> String {
    let out = run(program, &[OsStr::new("--help")]);
    assert!(out.status.success(), "{program:?} --help: {out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

/// `program FLAG` must print `NAME <version>` and succeed.
#[track_caller]
fn expect_version(program: &OsStr, flag: &str, name: &str) {
    let out = run(program, &[OsStr::new(flag)]);
    assert!(out.status.success(), "{program:?} {flag}: {out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{name} {}\n", env!("DRAINPORT_VERSION"))
    );
}

/// The options a usage text lists: each option line's `-x` and `--name`.
fn options_in(usage: &str) -> Vec<String> {
    let mut flags: Vec<String> = usage
        .lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .flat_map(|l| {
            l.split([' ', ','])
                .take_while(|w| w.is_empty() || w.starts_with('-'))
                .filter(|w| w.len() > 1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    flags.sort();
    flags
}

#[test]
fn drainport_help_and_version() {
    let text = help(OsStr::new(BIN));
    assert!(text.contains("Usage: drainport"), "{text}");
    assert!(text.contains("--drain-timeout"), "{text}");
    expect_version(OsStr::new(BIN), "-V", "drainport");
}

/// The README's flag table and `drainport --help` name the same options.
#[test]
fn readme_and_help_name_the_same_options() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let section = readme
        .split("\n## Command line\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Command line section");
    let mut table: Vec<String> = section
        .lines()
        .filter_map(|row| row.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .filter_map(|code| code.split(' ').next())
        .filter(|flag| flag.starts_with('-'))
        .map(str::to_owned)
        .collect();
    table.sort();
    assert_eq!(table, options_in(&help(OsStr::new(BIN))));
}

#[test]
fn http_takes_the_binary_s_server_options() {
    let usage = help(example_bin("http").as_os_str());
    assert!(usage.contains("Usage: http [OPTIONS] [ADDR]"), "{usage}");
    // Every option of the binary's but the echo server's own (HTTP's waits
    // are its protocol deadlines, not the idle timeout), and HTTP's own
    // timeouts.
    let echo_s = ["--raw", "--max-line", "--drain-notice", "--idle-timeout"];
    let http_s = ["--header-timeout", "--body-timeout", "--keepalive-timeout"];
    let mut want = options_in(&help(OsStr::new(BIN)));
    want.retain(|f| !echo_s.contains(&f.as_str()));
    want.extend(http_s.map(str::to_owned));
    want.sort();
    assert_eq!(options_in(&usage), want, "{usage}");
    // The README's HTTP paragraph names them, with nginx's defaults.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    for needed in http_s.iter().chain(&["--send-timeout"]) {
        assert!(
            readme.contains(&format!("`{needed}`")),
            "the README does not name {needed}"
        );
    }

    expect_version(example_bin("http").as_os_str(), "-V", "http");
}

#[test]
fn kv_help_and_version() {
    // The users' report: `kv --help` said "invalid address '--help'".
    let usage = help(example_bin("kv").as_os_str());
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
    expect_version(example_bin("kv").as_os_str(), "--version", "kv");
}
