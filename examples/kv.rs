//! A second protocol on the same drain machinery: a tiny in-memory key-value
//! store, shared by every client of the process.
//!
//! ```text
//! cargo run --example kv -- 127.0.0.1:7070
//! SET colour blue  -> OK
//! GET colour       -> blue
//! DEL colour       -> 1
//! GET colour       -> (nil)
//! QUIT             -> BYE, and the server closes the connection
//! ```
//!
//! SIGHUP drains it exactly as it drains the echo server.

use std::collections::HashMap;
use std::process::ExitCode;

use drainport::protocol::line_body;
use drainport::{Action, Config, LineProtocol, Lines};

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
    let mut config = Config {
        addr: "127.0.0.1:7070".parse().expect("a valid default address"),
        // Typed by hand in telnet: Ctrl-C must not swallow the replies.
        telnet: true,
        ..Config::default()
    };
    if let Some(arg) = std::env::args().nth(1) {
        match arg.parse() {
            Ok(addr) => config.addr = addr,
            Err(_) => {
                eprintln!("kv: invalid address '{arg}': expected IP:PORT");
                return ExitCode::FAILURE;
            }
        }
    }
    match drainport::serve(&config, Lines(Kv::default())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv: {e}");
            ExitCode::FAILURE
        }
    }
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
}
