//! The `drainport` command: parse the command line, serve the echo protocol,
//! map the outcome to an exit code.

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
    };
    drainport::serve(&config, Lines(echo::Echo::new())).map_err(|e| cli::args::serve_error(&e))
}
