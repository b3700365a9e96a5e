//! A second protocol on the same drain machinery: a tiny in-memory key-value
//! store, shared by every client of one process.
//!
//! ```text
//! cargo run --bin kv -- 127.0.0.1:7070
//! nc -N 127.0.0.1 7070     (or: telnet 127.0.0.1 7070)
//! SET colour blue  -> OK
//! GET colour       -> blue
//! DEL colour       -> 1
//! GET colour       -> (nil)
//! QUIT             -> BYE, and the server closes the connection
//! ```
//!
//! **Each process has its own map**, in its memory. Sibling processes on
//! the same port share nothing, so a `GET` served by one does not see a
//! `SET` that another served, and which process serves a connection is the
//! kernel's choice. A process that drains takes its map with it when it
//! exits: a release loses the data. This is a protocol on the library, not
//! a store; a real one keeps its data outside the processes it releases.
//!
//! **Talking to it.** A command is one line, ending in `\n` or `\r\n`.
//! telnet works: its Ctrl-C drops the line being typed, and `^]` then
//! `quit` leaves. So does `nc -N`, where Ctrl-D ends the session; without
//! `-N`, OpenBSD nc never closes its side, and a draining process waits
//! for it.
//!
//! SIGHUP drains it exactly as it drains the echo server.
//!
//! **Command line.** `kv [--log-time] [--service NAME] [--join-any]
//! [ADDR]...`, `-h` and `-V`, read by the rules of `drainport`'s own
//! ([`drainport::flags`]). A mistake is one line on stderr starting `kv: `,
//! and exit status 1.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::ExitCode;

use drainport::protocol::line_body;
use drainport::{Action, Config, LineProtocol, Lines};

use drainport::flags::{Args, Command};

/// Where kv listens when no address is given.
const DEFAULT_ADDR: &str = "127.0.0.1:7070";

fn usage() -> String {
    format!(
        "\
kv {version}: a tiny key-value store on drainport that drains on SIGHUP

Usage: kv [OPTIONS] [ADDR]...

Arguments:
  [ADDR]...  IP:PORT to listen on, several served together
             [default: {DEFAULT_ADDR}]; IPv6 as [::1]:7070

Options:
      --log-time  start every stdout line with the time, in UTC to the
                  millisecond: 2026-12-02T18:30:00.123Z
      --service NAME
                  the service this process runs, as siblings on the
                  address see it [default: its protocol's type, Lines<Kv>]
      --join-any  start even if another service serves ADDR
  -h, --help      print this help
  -V, --version   print the version

Commands, one per line:
  SET key value   store value under key: OK
  GET key         the value, or (nil)
  DEL key         1 if key was there, else 0
  QUIT            BYE, then the connection closes

Each process keeps its own map, in memory. Sibling processes on the same
port share nothing, so a GET served by one does not see a SET that another
served; and a process that drains takes its map with it when it exits, so a
release loses the data.

Talk to it with 'telnet 127.0.0.1 7070' (leave with ^] then quit) or with
'nc -N 127.0.0.1 7070' (Ctrl-D ends the session; without -N, OpenBSD nc
never closes its side, and a draining process waits for it).
",
        version = drainport::VERSION
    )
}

/// Parses the arguments after the program name.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut config = Config {
        addrs: vec![
            DEFAULT_ADDR
                .parse::<SocketAddr>()
                .expect("a valid default address"),
        ],
        // Typed by hand in telnet: Ctrl-C must not swallow the replies.
        telnet: true,
        // Poked at by hand: show who connects.
        quiet: false,
        ..Config::default()
    };
    let mut args = Args::new("kv", drainport::VERSION, args);
    while let Some(flag) = args.next_option()? {
        if let Some(text) = args.help_or_version(&flag, usage)? {
            return Ok(Command::Print(text));
        }
        match flag.as_str() {
            "--log-time" => {
                args.switch(&flag)?;
                config.log_time = true;
            }
            "--service" => config.service = Some(args.line_of_text(&flag)?),
            "--join-any" => {
                args.switch(&flag)?;
                config.join_any = true;
            }
            _ => return Err(args.unknown(&flag)),
        }
    }
    if !args.given_addresses().is_empty() {
        config.addrs = args.given_addresses().to_vec();
    }
    Ok(Command::Serve(config))
}

#[derive(Default)]
struct Kv {
    map: HashMap<Vec<u8>, Vec<u8>>,
}

impl LineProtocol for Kv {
    fn on_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Action {
        let mut words = line_body(line).splitn(3, |&b| b == b' ');
        let command = words.next().unwrap_or_default().to_ascii_uppercase();
        let (key, value) = (words.next(), words.next());
        match (command.as_slice(), key, value) {
            (b"SET", Some(key), Some(value)) => {
                self.map.insert(key.to_vec(), value.to_vec());
                out.extend_from_slice(b"OK\n");
            }
            (b"GET", Some(key), None) => match self.map.get(key) {
                Some(value) => {
                    out.extend_from_slice(value);
                    out.push(b'\n');
                }
                None => out.extend_from_slice(b"(nil)\n"),
            },
            (b"DEL", Some(key), None) => {
                let removed = self.map.remove(key).is_some();
                out.extend_from_slice(if removed { b"1\n" } else { b"0\n" });
            }
            (b"QUIT", None, None) => {
                out.extend_from_slice(b"BYE\n");
                return Action::Close;
            }
            _ => out.extend_from_slice(b"ERR expected SET key value, GET key, DEL key or QUIT\n"),
        }
        Action::Continue
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kv: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let config = match parse_args(std::env::args_os().skip(1))? {
        Command::Serve(config) => config,
        Command::Print(text) => {
            print!("{text}");
            return Ok(());
        }
    };
    drainport::serve(&config, Lines(Kv::default())).map_err(|e| drainport::flags::serve_error(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn say(kv: &mut Kv, line: &str) -> (String, Action) {
        let mut out = Vec::new();
        let action = kv.on_line(line.as_bytes(), &mut out);
        (String::from_utf8(out).unwrap(), action)
    }

    #[test]
    fn set_get_del_quit() {
        let mut kv = Kv::default();
        assert_eq!(say(&mut kv, "SET a one two\r\n").0, "OK\n");
        assert_eq!(say(&mut kv, "get a\n").0, "one two\n");
        assert_eq!(say(&mut kv, "DEL a\n").0, "1\n");
        assert_eq!(say(&mut kv, "GET a\n").0, "(nil)\n");
        assert!(say(&mut kv, "nonsense\n").0.starts_with("ERR"));
        assert_eq!(say(&mut kv, "QUIT\n"), ("BYE\n".into(), Action::Close));
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        match parse_args(args.iter().map(OsString::from))? {
            Command::Serve(config) => Ok(config),
            Command::Print(_) => Err("printed".into()),
        }
    }

    #[test]
    fn command_line() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.addrs, [DEFAULT_ADDR.parse().unwrap()]);
        assert!(c.telnet && !c.log_time);
        let c = parse(&["--log-time", "[::1]:0"]).unwrap();
        assert!(c.log_time);
        assert_eq!(c.addrs, ["[::1]:0".parse().unwrap()]);
        let c = parse(&["127.0.0.1:1", "[::1]:1"]).unwrap();
        assert_eq!(c.addrs.len(), 2);
        for help in ["--help", "-h", "-V", "--version"] {
            assert!(matches!(
                parse_args([OsString::from(help)]),
                Ok(Command::Print(_))
            ));
        }
        for (args, needle) in [
            (
                &["127.0.0.1:1", "127.0.0.1:1"][..],
                "address '127.0.0.1:1' is given twice",
            ),
            (&["--help=1"][..], "option '--help' takes no value"),
            (&["--log-time=0"][..], "option '--log-time' takes no value"),
            (&["-q"][..], "unknown option '-q' (see 'kv --help')"),
            (&["--max-clients=3"][..], "unknown option '--max-clients'"),
            (&["nonsense"][..], "invalid address 'nonsense'"),
        ] {
            let err = parse(args).err().unwrap();
            assert!(err.contains(needle), "{args:?} gave {err:?}");
        }
    }
}
