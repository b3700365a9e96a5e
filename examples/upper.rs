//! The README's library example, as a program: a line protocol that
//! answers each line in upper case, on the address given (127.0.0.1:7171
//! if none), and prints an error from `serve` as one line.
//!
//! `cargo run --example upper -- 127.0.0.1:7171`. The README shows this
//! file from `use` on, and a test holds the two equal.

use std::process::ExitCode;

use drainport::{Action, Config, LineProtocol, Lines};

struct Upper;

impl LineProtocol for Upper {
    fn on_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Action {
        out.extend(line.iter().map(u8::to_ascii_uppercase));
        Action::Continue
    }
}

fn main() -> ExitCode {
    // The address to serve: the first argument, or 127.0.0.1:7171.
    let arg = std::env::args().nth(1);
    let Ok(addr) = arg.as_deref().unwrap_or("127.0.0.1:7171").parse() else {
        eprintln!("upper: {arg:?} is not IP:PORT");
        return ExitCode::FAILURE;
    };
    let config = Config {
        addrs: vec![addr],
        ..Config::default()
    };
    if let Err(e) = drainport::serve(&config, Lines(Upper)) {
        // One line, naming the Config field at fault where there is one.
        eprintln!("upper: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
