//! A small HTTP/1.1 server on the drain machinery.
//!
//! ```text
//! cargo run --release --example http -- [-q] [--drain-timeout SECS] [--close-spread SECS] [ADDR]
//! curl -v http://127.0.0.1:8080/any/path     -> hello from <pid>
//! kill -HUP <pid>                             -> drains the HTTP way
//! ```
//!
//! `GET` and `HEAD` for any path answer `hello from <pid>\n`; keep-alive,
//! pipelining and `Content-Length` bodies work; everything else gets a
//! clear 4xx/5xx (`protocol.rs` and `request.rs` list them).
//!
//! **Drain.** On SIGHUP every connection finishes the request it is on and
//! its next response carries `Connection: close`. A keep-alive connection
//! idle between requests is left open, since a request may be on its way,
//! and closes after answering the next one. A keep-alive client that never
//! sends again would hold the process forever, so the drain has a timeout:
//! by default 5 s, after which the idle clients left are closed one by one
//! over 1 s (`--close-spread`), so their reconnects do not land on the
//! siblings all at once. HTTP clients expect an idle keep-alive connection
//! to close at any time and retry an idempotent request that found it
//! closed; the timeout leaves that race only to clients idle for the whole
//! of it. A close is a FIN after the flush, never a reset.

mod protocol;
mod request;
mod response;

use std::process::ExitCode;
use std::time::Duration;

use drainport::Config;

/// How long a drain waits for idle keep-alive clients to send again.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Over how long the clients left at the drain timeout are closed.
const CLOSE_SPREAD: Duration = Duration::from_secs(1);

const USAGE: &str = "usage: http [-q] [--drain-timeout SECS] [--close-spread SECS] [ADDR]";

fn parse_args(args: impl Iterator<Item = String>) -> Result<Config, String> {
    let mut config = Config {
        drain_timeout: Some(DRAIN_TIMEOUT),
        close_spread: Some(CLOSE_SPREAD),
        ..Config::default()
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut secs = |flag: &str| -> Result<Duration, String> {
            let value = args.next().ok_or_else(|| format!("{flag} needs SECS"))?;
            value
                .parse::<f64>()
                .ok()
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .ok_or_else(|| format!("{flag}: '{value}' is not a number of seconds"))
        };
        match arg.as_str() {
            "-q" | "--quiet" => config.quiet = true,
            "--drain-timeout" => config.drain_timeout = Some(secs("--drain-timeout")?),
            "--close-spread" => config.close_spread = Some(secs("--close-spread")?),
            "-h" | "--help" => return Err(USAGE.into()),
            addr if !addr.starts_with('-') => {
                config.addr = addr
                    .parse()
                    .map_err(|_| format!("invalid address '{addr}': expected IP:PORT"))?;
            }
            other => return Err(format!("unknown flag '{other}'\n{USAGE}")),
        }
    }
    Ok(config)
}

fn main() -> ExitCode {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("http: {e}");
            return ExitCode::FAILURE;
        }
    };
    match drainport::serve(&config, protocol::Http::new(std::process::id())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_drain_with_a_timeout_and_spread() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.drain_timeout, Some(DRAIN_TIMEOUT));
        assert_eq!(c.close_spread, Some(CLOSE_SPREAD));
        assert!(!c.quiet);
    }

    #[test]
    fn flags() {
        let c = parse(&[
            "-q",
            "--drain-timeout",
            "0.5",
            "--close-spread",
            "0",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert!(c.quiet);
        assert_eq!(c.drain_timeout, Some(Duration::from_millis(500)));
        assert_eq!(c.close_spread, Some(Duration::ZERO));
        assert_eq!(c.addr.port(), 0);
        assert!(parse(&["--drain-timeout"]).is_err());
        assert!(parse(&["--drain-timeout", "-1"]).is_err());
        assert!(parse(&["--nope"]).is_err());
        assert!(parse(&["localhost"]).is_err());
    }
}
