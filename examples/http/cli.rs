//! The example's command line: the options every server on drainport
//! takes, read by the same rules, with the same ranges and the same error
//! words as `drainport`'s (`src/cli/args.rs`, included by path), into a
//! `Config` whose drain has a timeout by default (see `main.rs` for why);
//! and HTTP's own timeouts, nginx's, into [`Timeouts`] (`--send-timeout`
//! is the binary's, and the machinery's).

// Some of the shared reader is the echo server's alone, and the tests crate
// compiles both examples, so this file twice.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../../src/cli/args.rs"]
pub mod args;

use std::ffi::OsString;
use std::time::Duration;

use drainport::{Config, DEFAULT_BACKLOG, DEFAULT_MAX_BUFFERS, DEFAULT_MAX_OUTPUT};

use super::protocol::Timeouts;
use args::Args;

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Serve with this configuration and these HTTP timeouts. Boxed: a
    /// `Config` is large beside a `Print`.
    Serve(Box<Config>, Timeouts),
    /// Print this text (`--help`, `--version`) and exit.
    Print(String),
}

/// How long a drain waits for idle keep-alive clients to send again.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Over how long the clients left at the drain timeout are closed.
const CLOSE_SPREAD: Duration = Duration::from_secs(1);
/// nginx's `send_timeout`.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

fn usage() -> String {
    format!(
        "\
http {version}: an HTTP/1.1 server on drainport that drains on SIGHUP

Usage: http [OPTIONS] [ADDR]...

Arguments:
  [ADDR]...  IP:PORT to listen on, shared with sibling processes; several
             are served together [default: 127.0.0.1:8080]. IPv6 as
             [::1]:8080, and [::]:8080 is IPv6 only

Options:
  -q, --quiet               no stdout line per accepted connection
      --backlog N           listen backlog [default: {DEFAULT_BACKLOG}]
      --max-output BYTES    unsent output per client before its input is left
                            unread [default: {DEFAULT_MAX_OUTPUT}]
      --max-buffers BYTES   what all clients' buffers may hold together; above
                            it the clients holding the most are closed
                            [default: {DEFAULT_MAX_BUFFERS}]
      --max-clients N       stop accepting at N clients; others wait in the
                            backlog [default: no limit]
      --drain-timeout SECS  close the idle keep-alive clients left SECS after
                            a drain starts [default: {timeout}]
      --close-spread SECS   close those clients one by one over SECS
                            [default: {spread}]
      --pid-file PATH       write the pid to PATH once listening; removed at
                            exit
      --log-time            start every stdout line with the time, in UTC to
                            the millisecond: 2026-12-02T18:30:00.123Z
      --service NAME        the service this process runs, as siblings on the
                            address see it [default: its protocol's type]
      --join-any            start even if another service serves ADDR
      --take-over PID       take the listening sockets of the running process
                            PID (same user, service and ADDR)
      --header-timeout SECS answer 408 and close when a request head is not
                            whole SECS after it began [default: {header}]
      --body-timeout SECS   answer 408 and close when a request body stalls
                            for SECS between two reads [default: {body}]
      --keepalive-timeout SECS
                            close a keep-alive connection idle SECS after a
                            response, without a word [default: {keepalive}]
      --send-timeout SECS   close a client at once when its responses waited
                            SECS without it taking a byte [default: {send}]
  -h, --help                print this help
  -V, --version             print the version

An option's value follows it or is attached with '=' (--backlog=64), once;
a switch takes no value. Everything after -- is an address. Listening
sockets that the service manager passes (LISTEN_FDS) are served instead
of binding ADDR.
",
        version = env!("DRAINPORT_VERSION"),
        timeout = DRAIN_TIMEOUT.as_secs_f64(),
        spread = CLOSE_SPREAD.as_secs_f64(),
        header = Timeouts::default().header.as_secs_f64(),
        body = Timeouts::default().body.as_secs_f64(),
        keepalive = Timeouts::default().keepalive.as_secs_f64(),
        send = SEND_TIMEOUT.as_secs_f64(),
    )
}

/// How much longer than the longest HTTP timeout the machinery's idle
/// timeout is.
const LINGER_MARGIN: Duration = Duration::from_secs(1);

/// Parses the arguments after the program name.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut config = Config {
        drain_timeout: Some(DRAIN_TIMEOUT),
        close_spread: Some(CLOSE_SPREAD),
        send_timeout: Some(SEND_TIMEOUT),
        // Like the echo server: a line per connection unless -q.
        quiet: false,
        ..Config::default()
    };
    let mut timeouts = Timeouts::default();
    let mut args = Args::new("http", args);
    while let Some(flag) = args.next_option()? {
        // It gives nothing but `Print`.
        if let Some(args::Command::Print(text)) = args.help_or_version(&flag, usage)? {
            return Ok(Command::Print(text));
        }
        if args.server_option(&flag, &mut config)? {
            continue;
        }
        match flag.as_str() {
            "--header-timeout" => timeouts.header = args.seconds(&flag)?,
            "--body-timeout" => timeouts.body = args.seconds(&flag)?,
            "--keepalive-timeout" => timeouts.keepalive = args.seconds(&flag)?,
            "--send-timeout" => config.send_timeout = Some(args.seconds(&flag)?),
            _ => return Err(args.unknown(&flag)),
        }
    }
    if !args.given_addresses().is_empty() {
        config.addrs = args.given_addresses().to_vec();
    }
    // The machinery's idle timeout, a second longer than every HTTP one
    // (never in the same 100 ms tick), so that it never fires first in a
    // request's life: it bounds how long a closed connection (after a 408,
    // say) waits for a client that never sends its EOF, however it
    // dribbles. HTTP says nothing then: the protocol has no idle word.
    let longest = timeouts.header.max(timeouts.body).max(timeouts.keepalive);
    config.idle_timeout = longest.checked_add(LINGER_MARGIN);
    Ok(Command::Serve(Box::new(config), timeouts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_both(args: &[&str]) -> Result<(Config, Timeouts), String> {
        match parse_args(args.iter().map(OsString::from))? {
            Command::Serve(config, timeouts) => Ok((*config, timeouts)),
            Command::Print(_) => Err("printed".into()),
        }
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        parse_both(args).map(|(config, _)| config)
    }

    #[test]
    fn timeouts_default_to_nginx_s_and_take_fractions() {
        let (c, t) = parse_both(&[]).unwrap();
        assert_eq!(
            (t.header, t.body, t.keepalive, c.send_timeout),
            (
                Duration::from_secs(60),
                Duration::from_secs(60),
                Duration::from_secs(75),
                Some(Duration::from_secs(60))
            )
        );
        // The machinery's idle timeout only bounds the wait for the EOF of
        // a closed connection: past every HTTP one, never in its tick.
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(76)));
        let (c, t) = parse_both(&[
            "--header-timeout",
            "0.5",
            "--body-timeout=2",
            "--keepalive-timeout",
            "0.25",
            "--send-timeout=3",
        ])
        .unwrap();
        assert_eq!(t.header, Duration::from_millis(500));
        assert_eq!(t.body, Duration::from_secs(2));
        assert_eq!(t.keepalive, Duration::from_millis(250));
        assert_eq!(c.send_timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(3)));
        let usage = usage();
        for default in [
            "whole SECS after it began [default: 60]",
            "between two reads [default: 60]",
            "without a word [default: 75]",
            "taking a byte [default: 60]",
        ] {
            assert!(usage.contains(default), "{default:?} in {usage}");
        }
    }

    #[test]
    fn defaults_drain_with_a_timeout_and_spread() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.drain_timeout, Some(DRAIN_TIMEOUT));
        assert_eq!(c.close_spread, Some(CLOSE_SPREAD));
        assert_eq!(c.addrs, [drainport::DEFAULT_ADDR]);
        assert_eq!(c.max_clients, None);
        assert!(!c.quiet);
        assert!(!c.log_time);
        assert!(!c.telnet, "HTTP bytes reach the protocol as sent");
    }

    #[test]
    fn flags() {
        let c = parse(&[
            "-q",
            "--drain-timeout",
            "0.5",
            "--close-spread=2",
            "--max-clients",
            "3",
            "--backlog=16",
            "--max-output",
            "4096",
            "--pid-file",
            "/run/h.pid",
            "--log-time",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert!(c.quiet);
        assert!(c.log_time);
        assert_eq!(c.drain_timeout, Some(Duration::from_millis(500)));
        assert_eq!(c.close_spread, Some(Duration::from_secs(2)));
        assert_eq!(c.max_clients, Some(3));
        assert_eq!(c.backlog, 16);
        assert_eq!(c.max_output, 4096);
        assert_eq!(c.pid_file, Some("/run/h.pid".into()));
        assert_eq!(c.addrs.len(), 1);
        assert_eq!(c.addrs[0].port(), 0);
        match parse_args([OsString::from("--help")]) {
            Ok(Command::Print(text)) => assert!(text.contains("--header-timeout SECS"), "{text}"),
            other => panic!("--help gave {other:?}"),
        }
    }

    #[test]
    fn mistakes_read_as_the_binary_s() {
        for (args, needle) in [
            (
                &["--drain-timeout"][..],
                "option '--drain-timeout' needs a value",
            ),
            (
                &["--drain-timeout", "0"][..],
                "option '--drain-timeout' takes a number of seconds from 0.000000001 to 31536000 (a year), not '0'",
            ),
            (&["--close-spread", "0"][..], "from 0.000000001 to 31536000"),
            (
                &["--drain-timeout", "-1"][..],
                "from 0.000000001 to 31536000",
            ),
            (&["--max-clients", "0"][..], "from 1 to"),
            (
                &["--nope"][..],
                "unknown option '--nope' (see 'http --help')",
            ),
            (&["--raw"][..], "unknown option '--raw'"),
            (
                &["--drain-notice", "x"][..],
                "unknown option '--drain-notice'",
            ),
            (&["--quiet=1"][..], "option '--quiet' takes no value"),
            (&["--help=1"][..], "option '--help' takes no value"),
            (&["localhost"][..], "invalid address 'localhost'"),
            (&["127.0.0.1:1", "127.0.0.1:1"][..], "is given twice"),
            (&["--max-clients=1", "--max-clients=2"][..], "given twice"),
            (
                &["--header-timeout", "0"][..],
                "option '--header-timeout' takes a number of seconds from 0.000000001 to 31536000 (a year), not '0'",
            ),
            (
                &["--body-timeout", "-1"][..],
                "from 0.000000001 to 31536000",
            ),
            (
                &["--keepalive-timeout"][..],
                "option '--keepalive-timeout' needs a value",
            ),
            (
                &["--send-timeout", "1e9"][..],
                "from 0.000000001 to 31536000",
            ),
            (
                &["--header-timeout=1", "--header-timeout=2"][..],
                "'--header-timeout' is given twice",
            ),
            (
                &["--idle-timeout", "1"][..],
                "unknown option '--idle-timeout'",
            ),
        ] {
            let err = parse(args).err().unwrap();
            assert!(err.contains(needle), "{args:?} gave {err:?}");
        }
    }
}
