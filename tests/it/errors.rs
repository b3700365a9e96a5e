//! Operator mistakes: one plain line on stderr, exit status 1, no panic.

use std::net::TcpListener;
use std::process::{Command, Output};

use crate::util::BIN;

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run drainport")
}

#[track_caller]
fn expect_one_line_error(args: &[&str], needle: &str) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: stderr {stderr:?}");
    assert!(stderr.starts_with("drainport: "), "{stderr:?}");
    assert!(
        stderr.contains(needle),
        "{args:?}: {stderr:?} lacks {needle:?}"
    );
    assert!(!stderr.contains("panicked"), "{stderr:?}");
}

#[test]
fn unknown_flag() {
    expect_one_line_error(&["--frobnicate"], "unknown option '--frobnicate'");
}

#[test]
fn bad_address() {
    expect_one_line_error(&["localhost"], "invalid address 'localhost'");
    expect_one_line_error(&["127.0.0.1:99999"], "invalid address");
}

#[test]
fn bad_values() {
    expect_one_line_error(&["--max-line", "lots"], "--max-line");
    expect_one_line_error(&["--drain-timeout"], "needs a value");
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

#[test]
fn help_and_version() {
    let help = run(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("Usage: drainport"), "{text}");
    assert!(text.contains("--drain-timeout"), "{text}");

    let version = run(&["-V"]);
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("drainport {}\n", env!("CARGO_PKG_VERSION"))
    );
}
