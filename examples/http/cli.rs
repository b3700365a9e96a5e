//! The example's command line: `[-q] [--drain-timeout SECS]
//! [--close-spread SECS] [ADDR]`, into a `Config` whose drain has a
//! timeout by default (see `main.rs` for why).

use std::time::Duration;

use drainport::Config;

/// How long a drain waits for idle keep-alive clients to send again.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Over how long the clients left at the drain timeout are closed.
const CLOSE_SPREAD: Duration = Duration::from_secs(1);

const USAGE: &str = "usage: http [-q] [--drain-timeout SECS] [--close-spread SECS] [ADDR]";

/// The configuration to serve with, or `None` when `--help` asked for the
/// usage line, which then goes to stdout.
pub fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Config>, String> {
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
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            addr if !addr.starts_with('-') => {
                config.addr = addr
                    .parse()
                    .map_err(|_| format!("invalid address '{addr}': expected IP:PORT"))?;
            }
            other => return Err(format!("unknown flag '{other}'; {USAGE}")),
        }
    }
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        parse_args(args.iter().map(|s| s.to_string()))
            .map(|c| c.expect("a configuration, not --help"))
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
        assert!(matches!(
            parse_args(["--help".to_string()].into_iter()),
            Ok(None)
        ));
    }
}
