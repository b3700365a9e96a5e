//! A small HTTP/1.1 server on the drain machinery.
//!
//! ```text
//! cargo run --release --bin http -- [OPTIONS] [ADDR]...   (--help lists them)
//! curl -v http://127.0.0.1:8080/any/path     -> hello from <pid>
//! kill -HUP <pid>                             -> drains the HTTP way
//! ```
//!
//! `GET` and `HEAD` for any path answer `hello from <pid>\n`; keep-alive,
//! pipelining and request bodies (`Content-Length` or chunked, up to
//! 16 MiB, read and discarded) work; everything else gets a clear 4xx/5xx
//! (`protocol.rs`, `request.rs` and `body.rs` list them).
//!
//! **Drain.** On SIGHUP every connection finishes the request it is on and
//! its next response carries `Connection: close`. A keep-alive connection
//! idle between requests is left open, since a request may be on its way,
//! and closes after answering the next one (or at its keep-alive timeout,
//! if that comes first; the other timeouts run on too). A keep-alive
//! client that never sends again would hold the process forever, so the
//! drain has a timeout: by default 5 s, after which the idle clients left are closed one by one
//! over 1 s (`--close-spread`), so their reconnects do not land on the
//! siblings all at once. HTTP clients expect an idle keep-alive connection
//! to close at any time and retry an idempotent request that found it
//! closed; the timeout leaves that race only to clients idle for the whole
//! of it. A close is a FIN after the flush, never a reset.
//!
//! **Timeouts**, nginx's defaults: a request head must be whole 60 s
//! after it began (`--header-timeout`) and a body may stall 60 s between
//! reads (`--body-timeout`), or the client gets 408 and a close; an idle
//! keep-alive connection is closed silently after 75 s
//! (`--keepalive-timeout`); output not taken for 60 s closes the
//! connection (`--send-timeout`). See `protocol.rs`.
//!
//! **Command line.** The options every server on drainport takes (`-q`,
//! `--backlog`, `--max-output`, `--max-buffers`, `--max-clients`, `--drain-timeout`,
//! `--close-spread`, `--pid-file`, `--log-time`), its timeouts, `-h` and
//! `-V`, read by the binary's own rules with its ranges and error words
//! (`cli.rs`). A mistake is one line on stderr starting `http: `, and
//! exit status 1.

mod body;
mod cli;
mod protocol;
mod request;
mod response;

use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("http: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let (config, timeouts) = match cli::parse_args(std::env::args_os().skip(1))? {
        cli::Command::Serve(config, timeouts) => (config, timeouts),
        cli::Command::Print(text) => {
            print!("{text}");
            return Ok(());
        }
    };
    let http = protocol::Http::new(std::process::id(), timeouts);
    drainport::serve(&config, http).map_err(|e| drainport::flags::serve_error(&e))
}
