//! The examples' command lines, run as real processes: `--help` and `-V`
//! on stdout with status 0, every mistake one line on stderr and status 1,
//! as with `drainport` itself; and the usage texts beside the README.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Output};

use crate::util::{BIN, Client, Server, accept_queue_len, example_bin, wait_until};

fn run(program: &OsStr, args: &[&OsStr]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program:?}: {e}"))
}

/// `args` must make `example` print one line on stderr, starting with its
/// name, containing `needle`, and exit 1 without starting.
#[track_caller]
fn expect_one_line_error(example: &str, args: &[&OsStr], needle: &str) {
    let out = run(example_bin(example).as_os_str(), args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{example} {args:?}: {out:?}");
    assert_eq!(stderr.lines().count(), 1, "{example} {args:?}: {stderr:?}");
    assert!(stderr.starts_with(&format!("{example}: ")), "{stderr:?}");
    assert!(
        stderr.contains(needle),
        "{example} {args:?}: {stderr:?} lacks {needle:?}"
    );
    assert!(!stderr.contains("panicked"), "{stderr:?}");
    assert!(out.stdout.is_empty(), "{example} {args:?} started: {out:?}");
}

fn os<'a>(args: &[&'a str]) -> Vec<&'a OsStr> {
    args.iter().map(|a| OsStr::new(*a)).collect()
}

/// What `program --help` prints, which must succeed.
fn help(program: &OsStr) -> String {
    let out = run(program, &[OsStr::new("--help")]);
    assert!(out.status.success(), "{program:?} --help: {out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    String::from_utf8(out.stdout).expect("UTF-8 help")
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

    let version = run(example_bin("http").as_os_str(), &os(&["-V"]));
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("http {}\n", env!("DRAINPORT_VERSION"))
    );
}

#[test]
fn http_mistakes_are_one_line() {
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
        expect_one_line_error("http", &args, needle);
    }
}

/// `--max-clients` reaches `Config::max_clients`: with a cap of one, a
/// second client waits in the backlog until the first leaves.
#[test]
fn http_max_clients_caps_the_process() {
    let mut cmd = Command::new(example_bin("http"));
    cmd.args(["--max-clients", "1", "127.0.0.1:0"]);
    let mut server = Server::spawn(cmd);
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = Client::connect(server.addr);
    first.send(request);
    assert!(first.read_line().starts_with(b"HTTP/1.1 200"));
    // The handshake completes in the kernel; the process does not accept.
    // Once the kernel holds the second client in the accept queue, the
    // loop sees its listener ready no later than the SIGUSR1 asked for
    // next, and it accepts before it handles signals: had it taken the
    // client, the status line would count it.
    let mut second = Client::connect(server.addr);
    second.send(request);
    wait_until("the second client in the accept queue", || {
        (accept_queue_len(server.addr) == 1).then_some(())
    });
    let status = server.wait_status("status:");
    assert!(
        status.contains(" clients=1 accepted=1 "),
        "second client taken past --max-clients 1: {status}"
    );
    drop(first);
    server.expect_line("accepted connection");
    assert!(second.read_line().starts_with(b"HTTP/1.1 200"));
}

#[test]
fn kv_help_version_and_one_address() {
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
    let version = run(example_bin("kv").as_os_str(), &os(&["--version"]));
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("kv {}\n", env!("DRAINPORT_VERSION"))
    );

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
        expect_one_line_error("kv", &args, needle);
    }
}
