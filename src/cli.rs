//! The command line: flags to a [`Config`], or text to print and exit.
//!
//! Every mistake becomes one plain sentence for stderr.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

use drainport::{Config, DEFAULT_BACKLOG, DEFAULT_MAX_INPUT, DEFAULT_MAX_OUTPUT};

/// What the command line asks for.
pub enum Command {
    Serve(Config),
    /// `--help` or `--version`: print this and exit 0.
    Print(String),
}

fn usage() -> String {
    format!(
        "\
drainport {version}: a SO_REUSEPORT line-echo server that drains on SIGHUP

Usage: drainport [OPTIONS] [ADDR]

Arguments:
  [ADDR]  IP:PORT to listen on, shared with sibling processes
          [default: 127.0.0.1:8080]; IPv6 as [::1]:8080

Options:
  -q, --quiet               no stdout line per accepted connection
      --backlog N           listen backlog [default: {DEFAULT_BACKLOG}]
      --max-line BYTES      longest line, terminator included: the most bytes
                            held for one unfinished message [default: {DEFAULT_MAX_INPUT}]
      --max-output BYTES    unsent output per client before its input is left
                            unread [default: {DEFAULT_MAX_OUTPUT}]
      --max-clients N       stop accepting at N clients; others wait in the
                            backlog [default: no limit]
      --drain-timeout SECS  close the remaining clients SECS after a drain
                            starts [default: wait for them]
      --close-spread SECS   with --drain-timeout: close those clients one by
                            one over SECS instead of all at once
      --drain-notice TEXT   send TEXT as one line to every client when the
                            drain starts
      --pid-file PATH       write the pid to PATH once listening; removed at
                            exit
      --raw                 echo every byte as data, 0xFF included; without
                            it, telnet commands are answered, not echoed
  -h, --help                print this help
  -V, --version             print the version

Signals:
  SIGHUP, SIGTERM, SIGINT   stop accepting, serve current clients, exit when
                            none is left; a second one closes them all now
  SIGUSR1                   print one status line

With NOTIFY_SOCKET set (systemd Type=notify), readiness, stopping and the
client count are reported to the service manager.
",
        version = env!("CARGO_PKG_VERSION")
    )
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    // People poke at the echo server with telnet, so its commands are
    // handled unless asked otherwise.
    let mut config = Config {
        telnet: true,
        ..Config::default()
    };
    let mut addr: Option<SocketAddr> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not valid UTF-8"))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| format!("option '{flag}' needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Print(usage())),
            "-V" | "--version" => {
                return Ok(Command::Print(format!(
                    "drainport {}\n",
                    env!("CARGO_PKG_VERSION")
                )));
            }
            "-q" | "--quiet" => config.quiet = true,
            "--raw" => config.telnet = false,
            "--backlog" => config.backlog = number(&flag, &value()?, libc::c_int::MAX as u64)?,
            "--max-line" => config.max_input = number(&flag, &value()?, usize::MAX as u64)?,
            "--max-output" => config.max_output = number(&flag, &value()?, usize::MAX as u64)?,
            "--max-clients" => {
                config.max_clients = Some(number(&flag, &value()?, usize::MAX as u64)?);
            }
            "--drain-timeout" => config.drain_timeout = Some(seconds(&flag, &value()?)?),
            "--close-spread" => config.close_spread = Some(seconds(&flag, &value()?)?),
            "--drain-notice" => config.drain_notice = Some(notice(&value()?)?),
            "--pid-file" => config.pid_file = Some(value()?.into()),
            "--" => {
                if let Some(rest) = args.next() {
                    let rest = rest.to_string_lossy().into_owned();
                    addr = Some(address(addr, &rest)?);
                }
            }
            _ if flag.starts_with('-') && flag.len() > 1 => {
                return Err(format!("unknown option '{flag}' (see 'drainport --help')"));
            }
            _ => addr = Some(address(addr, &arg)?),
        }
    }
    if let Some(addr) = addr {
        config.addr = addr;
    }
    if config.close_spread.is_some() && config.drain_timeout.is_none() {
        return Err(
            "option '--close-spread' needs '--drain-timeout': the spread starts at that deadline"
                .into(),
        );
    }
    Ok(Command::Serve(config))
}

fn address(previous: Option<SocketAddr>, text: &str) -> Result<SocketAddr, String> {
    if previous.is_some() {
        return Err(format!(
            "unexpected extra argument '{text}': only one address is taken"
        ));
    }
    text.parse().map_err(|_| {
        format!("invalid address '{text}': expected IP:PORT, such as 127.0.0.1:8080 or [::1]:8080")
    })
}

/// A whole number from 1 to `max`, which `T` must hold.
fn number<T: TryFrom<u64>>(flag: &str, text: &str, max: u64) -> Result<T, String> {
    text.parse::<u64>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| {
            format!("option '{flag}' takes a whole number from 1 to {max}, not '{text}'")
        })
}

/// One line of text: a newline inside would make it several.
fn notice(text: &str) -> Result<String, String> {
    if text.contains(['\n', '\r']) {
        return Err("option '--drain-notice' takes one line of text, without newlines".into());
    }
    Ok(text.to_owned())
}

/// The longest drain timeout or close spread taken: a year. Longer means
/// never, which leaving the option out already says.
const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// A number of seconds from one nanosecond to [`MAX_SECONDS`].
fn seconds(flag: &str, text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(MAX_SECONDS))
        .ok_or_else(|| {
            format!(
                "option '{flag}' takes a number of seconds from 0.000000001 to {MAX_SECONDS} (a year), not '{text}'"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, String> {
        match parse(args.iter().map(OsString::from))? {
            Command::Serve(config) => Ok(config),
            Command::Print(_) => Err("printed".into()),
        }
    }

    #[test]
    fn defaults_and_flags() {
        let c = config(&[]).unwrap();
        assert_eq!(c.addr, drainport::DEFAULT_ADDR);
        assert!(!c.quiet);
        assert!(c.telnet, "telnet commands are handled by default");
        assert!(!config(&["--raw"]).unwrap().telnet);
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
        assert_eq!(c.addr, "[::1]:9000".parse().unwrap());
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
            (&["127.0.0.1:1", "127.0.0.1:2"][..], "only one address"),
            (&["--close-spread", "5"][..], "needs '--drain-timeout'"),
            (&["--drain-notice", "two\nlines"][..], "one line"),
        ] {
            let err = config(args).err().unwrap();
            assert!(err.contains(needle), "{args:?} gave {err:?}");
            assert!(!err.contains('\n'));
        }
    }
}
