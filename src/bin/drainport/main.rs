//! The `drainport` command: parse the command line, serve the echo protocol,
//! map the outcome to an exit code.

#![deny(unsafe_code)]

mod cli;
mod echo;

use std::process::ExitCode;

use drainport::Lines;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("drainport: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let config = match cli::parse(std::env::args_os().skip(1))? {
        cli::Command::Serve(config) => config,
        cli::Command::Print(text) => {
            print!("{text}");
            return Ok(());
        }
        cli::Command::Stats { addrs, prometheus } => return stats(&addrs, prometheus),
    };
    drainport::serve(&config, Lines(echo::Echo::new()))
        .map_err(|e| drainport::flags::serve_error(&e))
}

/// `drainport stats`: every process found, printed; a mistake when there
/// is none.
fn stats(addrs: &[std::net::SocketAddr], prometheus: bool) -> Result<(), String> {
    let fleet =
        drainport::stats::ask(addrs).map_err(|e| format!("cannot list the processes: {e}"))?;
    if fleet.is_empty() {
        let place = match addrs {
            [] => "any address".to_owned(),
            addrs => addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        };
        let uid = fleet.uid();
        let others = match fleet.other_users() {
            0 => String::new(),
            n => format!(
                "; {n} process{} of other users serve{} it, and answer their own user only",
                if n == 1 { "" } else { "es" },
                if n == 1 { "s" } else { "" }
            ),
        };
        return Err(format!(
            "no drainport process of this user (uid {uid}) serves {place}{others}"
        ));
    }
    if prometheus {
        print!("{}", fleet.prometheus());
    } else {
        print!("{}", fleet.lines());
    }
    Ok(())
}
