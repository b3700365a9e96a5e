//! The command line: flags to a [`Config`], text to print and exit, or
//! the `stats` command.
//!
//! Every mistake becomes one plain sentence for stderr. The reading rules
//! (no value on a switch, one value per option, `--`) and the options every
//! server takes live in [`drainport::flags`], which the examples use too.

use std::ffi::OsString;
use std::net::SocketAddr;

use drainport::{
    Config, DEFAULT_BACKLOG, DEFAULT_MAX_BUFFERS, DEFAULT_MAX_INPUT, DEFAULT_MAX_OUTPUT,
};

use drainport::flags::Args;

/// What the command line asks for.
pub enum Command {
    /// Serve the echo protocol.
    Serve(Config),
    /// `--help` or `--version`: print this on stdout and exit 0.
    Print(String),
    /// `drainport stats`: ask the processes on these addresses (every
    /// address, if none) for their numbers, and print them as lines or in
    /// the Prometheus text format.
    Stats {
        addrs: Vec<SocketAddr>,
        prometheus: bool,
    },
}

fn usage() -> String {
    format!(
        "\
drainport {version}: a SO_REUSEPORT line-echo server that drains on SIGHUP

Usage: drainport [OPTIONS] [ADDR]...

Arguments:
  [ADDR]...  IP:PORT to listen on, shared with sibling processes; several
             are served together [default: 127.0.0.1:8080]. IPv6 as
             [::1]:8080, and [::]:8080 is IPv6 only

Options:
  -q, --quiet               no stdout line per accepted connection
      --backlog N           listen backlog [default: {DEFAULT_BACKLOG}]
      --max-line BYTES      longest line, terminator included: the most bytes
                            held for one unfinished message [default: {DEFAULT_MAX_INPUT}]
      --max-output BYTES    unsent output per client before its input is left
                            unread [default: {DEFAULT_MAX_OUTPUT}]
      --max-buffers BYTES   what all clients' buffers may hold together; above
                            it the clients holding the most are closed, with
                            a line [default: {DEFAULT_MAX_BUFFERS}]
      --max-clients N       stop accepting at N clients; others wait in the
                            backlog [default: no limit]
      --drain-timeout SECS  close the remaining clients SECS after a drain
                            starts [default: wait for them]
      --close-spread SECS   with --drain-timeout: close those clients one by
                            one over SECS instead of all at once
      --drain-notice TEXT   send TEXT as one line to every client when the
                            drain starts
      --idle-timeout SECS   close a client that sent nothing for SECS, after
                            one line saying so, and a second later at most
                            [default: never]
      --send-timeout SECS   close a client at once when its replies waited
                            SECS without it reading a byte [default: never]
      --pid-file PATH       write the pid to PATH once listening; removed at
                            exit
      --log-time            start every stdout line with the time, in UTC to
                            the millisecond: 2026-12-02T18:30:00.123Z
      --service NAME        the service this process runs, as siblings on the
                            address see it [default: its protocol's type]
      --join-any            start even if another service serves ADDR
      --take-over PID       take the listening sockets of the running process
                            PID (same user, service and ADDR) instead of
                            opening new ones; PID stops accepting, and drains
                            its clients at its SIGHUP
      --raw                 echo every byte as data, 0xFF included; without
                            it, telnet commands are answered, not echoed
  -h, --help                print this help
  -V, --version             print the version

       drainport stats [--prometheus] [ADDR]...
  One line per drainport process of this user serving ADDR (any address if
  none is given), whatever its service: its numbers, or why it did not
  answer. --prometheus prints them in the Prometheus text format.
  'drainport stats --help' says more.

An option's value follows it or is attached with '=' (--backlog=64), once;
a switch takes no value. Everything after -- is an address.

Signals:
  SIGHUP, SIGTERM, SIGINT   stop accepting, serve current clients, exit when
                            none is left; a second one closes them all now
  SIGUSR1                   print one status line

With NOTIFY_SOCKET set (systemd Type=notify), readiness, stopping and the
client count are reported to the service manager. Listening sockets that
the service manager passes (LISTEN_FDS: socket activation) are served
instead of binding ADDR.
",
        version = drainport::VERSION
    )
}

fn stats_usage() -> String {
    format!(
        "\
drainport stats {version}: the numbers of every drainport process serving an address

Usage: drainport stats [OPTIONS] [ADDR]...

Arguments:
  [ADDR]...  IP:PORT served; without one, every address

Options:
      --prometheus  print the Prometheus text exposition format (with # HELP
                    and # TYPE lines) instead of one line per process
  -h, --help        print this help
  -V, --version     print the version

Each process of this user that serves ADDR, of any service built on
drainport, is asked over its control channel (its abstract Unix socket,
which answers its own user only) and gets one line: its addresses, pid,
service, version, state, the time since the drain began, its uptime,
clients, accepted, closed and each close reason, waits, messages, bytes in
and out, and buffer memory. A process that does not answer within {wait}s
(stopped, too busy, or a drainport without stats) is listed as
not_answering, with why. Processes of other users are not asked. Exits 1
when no process of this user serves ADDR.
",
        version = drainport::VERSION,
        wait = drainport::stats::ANSWER_WAIT.as_secs_f64(),
    )
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut args = args.into_iter().peekable();
    if args.peek().is_some_and(|first| first == "stats") {
        args.next();
        return parse_stats(args);
    }
    parse_server(args)
}

/// The arguments after `stats`.
fn parse_stats(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut args = Args::new("drainport stats", drainport::VERSION, args);
    let mut prometheus = false;
    while let Some(flag) = args.next_option()? {
        if let Some(text) = args.help_or_version(&flag, stats_usage)? {
            return Ok(Command::Print(text));
        }
        match flag.as_str() {
            "--prometheus" => {
                args.switch(&flag)?;
                prometheus = true;
            }
            _ => return Err(args.unknown(&flag)),
        }
    }
    Ok(Command::Stats {
        addrs: args.given_addresses().to_vec(),
        prometheus,
    })
}

/// The server's arguments.
fn parse_server(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    // People poke at the echo server with telnet, so its commands are
    // handled unless asked otherwise.
    let mut config = Config {
        telnet: true,
        // The console session's contract: a line per accepted connection
        // unless -q. (The library's default is quiet.)
        quiet: false,
        ..Config::default()
    };
    let mut args = Args::new("drainport", drainport::VERSION, args);
    while let Some(flag) = args.next_option()? {
        if let Some(text) = args.help_or_version(&flag, usage)? {
            return Ok(Command::Print(text));
        }
        if args.server_option(&flag, &mut config)? {
            continue;
        }
        match flag.as_str() {
            "--raw" => {
                args.switch(&flag)?;
                config.telnet = false;
            }
            "--max-line" => config.max_input = args.number(&flag, usize::MAX as u64)?,
            "--drain-notice" => config.drain_notice = Some(args.line_of_text(&flag)?),
            "--idle-timeout" => config.idle_timeout = Some(args.seconds(&flag)?),
            "--send-timeout" => config.send_timeout = Some(args.seconds(&flag)?),
            _ => return Err(args.unknown(&flag)),
        }
    }
    if !args.given_addresses().is_empty() {
        config.addrs = args.given_addresses().to_vec();
    }
    if config.close_spread.is_some() && config.drain_timeout.is_none() {
        return Err(
            "option '--close-spread' needs '--drain-timeout': the spread starts at that deadline"
                .into(),
        );
    }
    Ok(Command::Serve(config))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(args: &[&str]) -> Result<Config, String> {
        match parse(args.iter().map(OsString::from))? {
            Command::Serve(config) => Ok(config),
            Command::Print(_) => Err("printed".into()),
            Command::Stats { .. } => Err("stats".into()),
        }
    }

    #[test]
    fn the_stats_command() {
        let stats = |args: &[&str]| match parse(args.iter().map(OsString::from)) {
            Ok(Command::Stats { addrs, prometheus }) => Ok((addrs, prometheus)),
            Ok(_) => Err("not stats".to_owned()),
            Err(e) => Err(e),
        };
        assert_eq!(stats(&["stats"]), Ok((vec![], false)));
        assert_eq!(
            stats(&["stats", "--prometheus", "127.0.0.1:8080"]),
            Ok((vec!["127.0.0.1:8080".parse().unwrap()], true))
        );
        let err = stats(&["stats", "-q"]).unwrap_err();
        assert!(
            err.contains("unknown option '-q' (see 'drainport stats --help')"),
            "{err}"
        );
        let err = stats(&["stats", "--prometheus=1"]).unwrap_err();
        assert!(err.contains("takes no value"), "{err}");
        assert!(
            stats(&["stats", "nowhere"])
                .unwrap_err()
                .contains("invalid address")
        );
        match parse(["stats", "--help"].map(OsString::from)) {
            Ok(Command::Print(text)) => assert!(text.contains("--prometheus"), "{text}"),
            _ => panic!("no help"),
        }
        // Only as the first word: after an option it is an address, and
        // not one.
        assert!(
            config(&["-q", "stats"])
                .unwrap_err()
                .contains("invalid address 'stats'")
        );
    }

    #[test]
    fn defaults_and_flags() {
        let c = config(&[]).unwrap();
        assert_eq!(c.addrs, [drainport::DEFAULT_ADDR]);
        assert!(!c.quiet);
        // Several addresses, in the order given, before and after options.
        let c = config(&["0.0.0.0:8080", "-q", "[::]:8080", "--", "127.0.0.1:9"]).unwrap();
        assert_eq!(
            c.addrs,
            ["0.0.0.0:8080", "[::]:8080", "127.0.0.1:9"].map(|a| a.parse().unwrap())
        );
        assert!(c.telnet, "telnet commands are handled by default");
        assert!(!c.log_time, "lines are undated by default");
        assert_eq!((c.idle_timeout, c.send_timeout), (None, None));
        assert_eq!(c.max_buffers, drainport::DEFAULT_MAX_BUFFERS);
        assert_eq!(
            config(&["--max-buffers=1048576"]).unwrap().max_buffers,
            1 << 20
        );
        let c = config(&["--idle-timeout=0.25", "--send-timeout", "30"]).unwrap();
        assert_eq!(c.idle_timeout, Some(Duration::from_millis(250)));
        assert_eq!(c.send_timeout, Some(Duration::from_secs(30)));
        assert!(!config(&["--raw"]).unwrap().telnet);
        assert!(config(&["--log-time"]).unwrap().log_time);
        assert_eq!(config(&[]).unwrap().take_over, None);
        assert_eq!(
            config(&["--take-over", "4242"]).unwrap().take_over,
            Some(4242)
        );
        // A switch may be repeated; the address may follow `--`.
        let c = config(&["-q", "--quiet", "--", "127.0.0.1:7"]).unwrap();
        assert!(c.quiet);
        assert_eq!(c.addrs, ["127.0.0.1:7".parse().unwrap()]);
        // A value that starts with '-' is fine attached, or for a number.
        let c = config(&["--pid-file=-p", "--drain-notice=-- bye"]).unwrap();
        assert_eq!(c.pid_file, Some("-p".into()));
        assert_eq!(c.drain_notice.as_deref(), Some("-- bye"));
        let c = config(&[
            "-q",
            "--max-line=10",
            "--max-clients",
            "3",
            "[::1]:9000",
            "--drain-timeout",
            "1.5",
        ])
        .unwrap();
        assert!(c.quiet);
        assert_eq!(c.max_input, 10);
        assert_eq!(c.max_clients, Some(3));
        assert_eq!(c.addrs, ["[::1]:9000".parse().unwrap()]);
        assert_eq!(c.drain_timeout, Some(Duration::from_millis(1500)));
        let c = config(&[
            "--drain-timeout=60",
            "--close-spread",
            "30",
            "--drain-notice",
            "reconnect soon",
            "--pid-file",
            "/run/d.pid",
        ])
        .unwrap();
        assert_eq!(c.close_spread, Some(Duration::from_secs(30)));
        assert_eq!(c.drain_notice.as_deref(), Some("reconnect soon"));
        assert_eq!(c.pid_file, Some("/run/d.pid".into()));
    }

    #[test]
    fn mistakes_are_one_sentence() {
        for (args, needle) in [
            (&["--bogus"][..], "unknown option '--bogus'"),
            (&["nonsense"][..], "invalid address 'nonsense'"),
            (&["--max-line"][..], "needs a value"),
            (&["--max-buffers", "0"][..], "from 1 to"),
            (&["--max-buffers", "64M"][..], "not '64M'"),
            (&["--max-line", "0"][..], "from 1 to"),
            (&["--backlog", "99999999999"][..], "from 1 to 2147483647,"),
            (&["--max-clients", "99999999999999999999"][..], "from 1 to"),
            (
                &["--drain-timeout", "-1"][..],
                "from 0.000000001 to 31536000",
            ),
            (
                &["--drain-timeout", "1e300"][..],
                "from 0.000000001 to 31536000",
            ),
            (
                &["--close-spread", "1e-10"][..],
                "from 0.000000001 to 31536000",
            ),
            (
                &["127.0.0.1:1", "[::1]:2", "127.0.0.1:1"][..],
                "address '127.0.0.1:1' is given twice",
            ),
            (&["--idle-timeout", "0"][..], "from 0.000000001 to 31536000"),
            (&["--take-over", "0"][..], "from 1 to 2147483647, not '0'"),
            (&["--take-over", "-1"][..], "not '-1'"),
            (&["--take-over"][..], "needs a value"),
            (&["--send-timeout"][..], "needs a value"),
            (
                &["--idle-timeout=1", "--idle-timeout=2"][..],
                "'--idle-timeout' is given twice",
            ),
            (&["--close-spread", "5"][..], "needs '--drain-timeout'"),
            (&["--drain-notice", "two\nlines"][..], "one line"),
            // Switches take no value, in any spelling.
            (
                &["--raw=0"][..],
                "option '--raw' takes no value, but was given '0'",
            ),
            (&["--quiet=no"][..], "option '--quiet' takes no value"),
            (&["--help=1"][..], "option '--help' takes no value"),
            (&["--version="][..], "option '--version' takes no value"),
            (
                &["--log-time=yes"][..],
                "option '--log-time' takes no value",
            ),
            (
                &["-q5"][..],
                "option '-q' takes no value, but was given '5'",
            ),
            (
                &["-q=1"][..],
                "option '-q' takes no value, but was given '1'",
            ),
            (&["-qV"][..], "option '-q' takes no value"),
            (&["-hV"][..], "option '-h' takes no value"),
            // Once only, and never empty.
            (
                &["--backlog", "1", "--backlog=2"][..],
                "'--backlog' is given twice",
            ),
            (&["--pid-file", "a", "--pid-file", "a"][..], "given twice"),
            (&["--pid-file", ""][..], "takes a path, not an empty one"),
            (&["--pid-file="][..], "takes a path, not an empty one"),
            (&["--drain-notice="][..], "not an empty one"),
            (&["--max-line="][..], "from 1 to"),
            (&[""][..], "invalid address ''"),
            // A forgotten value does not swallow the next option.
            (
                &["--pid-file", "--quiet"][..],
                "'--quiet' looks like an option",
            ),
            (&["--drain-notice", "-q"][..], "looks like an option"),
            (&["--max-clients", "--raw"][..], "not '--raw'"),
            // After `--` everything is an operand: an address.
            (
                &["--", "127.0.0.1:1", "--raw"][..],
                "invalid address '--raw'",
            ),
            (&["--", "--raw"][..], "invalid address '--raw'"),
            (&["-"][..], "invalid address '-'"),
            (&["-x"][..], "unknown option '-x' (see 'drainport --help')"),
            (&["--max-line=10=2"][..], "not '10=2'"),
            // A newline in an argument cannot split the message.
            (&["a\nb"][..], "invalid address 'a\\nb'"),
            (&["--bo\ngus"][..], "unknown option '--bo\\ngus'"),
        ] {
            let err = config(args).err().unwrap();
            assert!(err.contains(needle), "{args:?} gave {err:?}");
            assert!(!err.contains('\n'));
        }
    }
}
