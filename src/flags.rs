//! The standard flags: the options every server on the library takes, read
//! into a [`Config`] with the names, ranges and error words of the
//! `drainport` binary, which reads its own command line with this module,
//! as the examples do.
//!
//! A program makes an [`Args`] and takes its options one at a time: `-h`
//! and `-V` through [`Args::help_or_version`], the standard ones through
//! [`Args::server_option`], and its own through the value readers
//! ([`Args::number`], [`Args::seconds`], [`Args::line_of_text`],
//! [`Args::path`], [`Args::switch`]); [`Args::unknown`] words the refusal
//! of anything else. The operands are the addresses to listen on.
//!
//! ```
//! use std::ffi::OsString;
//!
//! use drainport::Config;
//! use drainport::flags::{Args, Command};
//!
//! const USAGE: &str = "Usage: upper [OPTIONS] [ADDR]...\n";
//!
//! fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
//!     let mut config = Config::default();
//!     let mut args = Args::new("upper", env!("CARGO_PKG_VERSION"), args);
//!     while let Some(flag) = args.next_option()? {
//!         if let Some(text) = args.help_or_version(&flag, || USAGE.into())? {
//!             return Ok(Command::Print(text));
//!         }
//!         if !args.server_option(&flag, &mut config)? {
//!             return Err(args.unknown(&flag));
//!         }
//!     }
//!     if !args.given_addresses().is_empty() {
//!         config.addrs = args.given_addresses().to_vec();
//!     }
//!     Ok(Command::Serve(config))
//! }
//!
//! let given = ["-q", "--drain-timeout=30", "--backlog", "64", "127.0.0.1:7000"];
//! match parse(given.map(OsString::from)) {
//!     Ok(Command::Serve(config)) => {
//!         assert!(config.quiet);
//!         assert_eq!(config.backlog, 64);
//!         assert_eq!(config.addrs, ["127.0.0.1:7000".parse().unwrap()]);
//!     }
//!     _ => unreachable!(),
//! }
//! assert_eq!(
//!     parse(["--backlog=0"].map(OsString::from)).err().unwrap(),
//!     "option '--backlog' takes a whole number from 1 to 2147483647, not '0'"
//! );
//! ```
//!
//! The module is the library's only user of [lexopt]; it comes with the
//! default feature `flags`, and a program that reads its command line
//! another way leaves it out with `default-features = false`.
//!
//! lexopt splits the arguments: `--name=value` or `--name value`, `--`
//! ending the options, and arguments that are not UTF-8 kept as they are.
//! On top of it, the rules every program here follows:
//!
//! - A switch takes no value: `--raw=0`, `--help=1` and `-q5` are mistakes,
//!   never the switch. Short options are not bundled (`-qV` is a mistake).
//! - An option with a value is given once: a second one would silently
//!   override the first. A switch may be repeated, which changes nothing.
//! - A value is never empty. A text or path value that starts with `-` must
//!   be attached (`--pid-file=-x`): in `--pid-file --quiet` the value was
//!   forgotten, and the next option would otherwise become a file name.
//! - The operands are addresses, each given once; everything after `--` is
//!   an operand.
//!
//! Every mistake is one line: values shown in a message have their control
//! characters escaped, so a newline in an argument cannot split it.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{Config, Setting, SettingError};

/// What a command line asks for, in a program that only serves.
pub enum Command {
    /// Serve with this configuration.
    Serve(Config),
    /// `--help` or `--version`: print this on stdout and exit 0.
    Print(String),
}

/// One argument, owned.
pub enum Arg {
    /// An option as named, without its value: `-q`, `--backlog`.
    Option(String),
    /// Anything that is not an option: an address.
    Operand(OsString),
}

/// The longest drain timeout or close spread taken: a year. Longer means
/// never, which leaving the option out already says.
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// The arguments of one program, read one at a time.
pub struct Args {
    parser: lexopt::Parser,
    /// The program's name, for `--version` and for pointing at `--help`.
    program: &'static str,
    /// What `--version` prints after the name.
    version: &'static str,
    /// Options with a value given so far, to refuse a second one.
    given: Vec<String>,
    addresses: Vec<SocketAddr>,
}

impl Args {
    /// Reads `args`, the arguments after the name of `program`, whose
    /// version is `version` (`env!("CARGO_PKG_VERSION")`, say).
    pub fn new(
        program: &'static str,
        version: &'static str,
        args: impl IntoIterator<Item = OsString>,
    ) -> Args {
        Args {
            parser: lexopt::Parser::from_args(args),
            program,
            version,
            given: Vec::new(),
            addresses: Vec::new(),
        }
    }

    /// The next argument, or `None` at the end.
    pub fn next_arg(&mut self) -> Result<Option<Arg>, String> {
        match self.parser.next() {
            Ok(None) => Ok(None),
            Ok(Some(lexopt::Arg::Short(c))) => Ok(Some(Arg::Option(format!("-{c}")))),
            Ok(Some(lexopt::Arg::Long(name))) => Ok(Some(Arg::Option(format!("--{name}")))),
            Ok(Some(lexopt::Arg::Value(operand))) => Ok(Some(Arg::Operand(operand))),
            // A value attached to an option that was not asked for it; every
            // switch asks through `switch`, so this is a safety net.
            Err(lexopt::Error::UnexpectedValue { option, value }) => {
                Err(takes_no_value(&option, &value))
            }
            Err(e) => Err(escaped(&e.to_string())),
        }
    }

    /// The next option's name, or `None` at the end. An operand on the way
    /// is taken as an address.
    pub fn next_option(&mut self) -> Result<Option<String>, String> {
        while let Some(arg) = self.next_arg()? {
            match arg {
                Arg::Operand(operand) => self.address(operand)?,
                Arg::Option(flag) => return Ok(Some(flag)),
            }
        }
        Ok(None)
    }

    /// `-h`/`--help` and `-V`/`--version`, the same in every program: the
    /// text to print on stdout before exiting 0 (`usage`, or the program
    /// and its version); `None` for any other option.
    pub fn help_or_version(
        &mut self,
        flag: &str,
        usage: impl FnOnce() -> String,
    ) -> Result<Option<String>, String> {
        let text = match flag {
            "-h" | "--help" => usage(),
            "-V" | "--version" => self.version(),
            _ => return Ok(None),
        };
        self.switch(flag)?;
        Ok(Some(text))
    }

    /// The options every server on drainport takes, under the binary's
    /// names and with its ranges: `-q`, `--backlog`, `--max-output`,
    /// `--max-buffers`, `--max-clients`, `--drain-timeout`,
    /// `--close-spread`, `--pid-file`, `--log-time`, `--service`,
    /// `--join-any` and `--take-over`. Returns `false` for any
    /// other option, which the program then handles or refuses.
    pub fn server_option(&mut self, flag: &str, config: &mut Config) -> Result<bool, String> {
        match flag {
            "-q" | "--quiet" => {
                self.switch(flag)?;
                config.quiet = true;
            }
            "--log-time" => {
                self.switch(flag)?;
                config.log_time = true;
            }
            "--backlog" => config.backlog = self.number(flag, libc::c_int::MAX as u64)?,
            "--max-output" => config.max_output = self.number(flag, usize::MAX as u64)?,
            "--max-buffers" => config.max_buffers = self.number(flag, usize::MAX as u64)?,
            "--max-clients" => config.max_clients = Some(self.number(flag, usize::MAX as u64)?),
            "--drain-timeout" => config.drain_timeout = Some(self.seconds(flag)?),
            "--close-spread" => config.close_spread = Some(self.seconds(flag)?),
            "--pid-file" => config.pid_file = Some(self.path(flag)?),
            "--service" => config.service = Some(self.line_of_text(flag)?),
            "--join-any" => {
                self.switch(flag)?;
                config.join_any = true;
            }
            "--take-over" => config.take_over = Some(self.number(flag, libc::pid_t::MAX as u64)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Checks that the switch just read came without a value.
    pub fn switch(&mut self, flag: &str) -> Result<(), String> {
        match self.parser.optional_value() {
            None => Ok(()),
            Some(value) => Err(takes_no_value(flag, &value)),
        }
    }

    /// A whole number from 1 to `max`, which `T` must hold.
    pub fn number<T: TryFrom<u64>>(&mut self, flag: &str, max: u64) -> Result<T, String> {
        let (text, _) = self.value(flag)?;
        let text = text.to_string_lossy();
        text.parse::<u64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| {
                format!(
                    "option '{flag}' takes a whole number from 1 to {max}, not {}",
                    shown(&text)
                )
            })
    }

    /// A number of seconds from one nanosecond to [`MAX_SECONDS`].
    pub fn seconds(&mut self, flag: &str) -> Result<Duration, String> {
        let (text, _) = self.value(flag)?;
        let text = text.to_string_lossy();
        text.parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .filter(|d| !d.is_zero() && *d <= Duration::from_secs(MAX_SECONDS))
            .ok_or_else(|| {
                format!(
                    "option '{flag}' takes a number of seconds from 0.000000001 to {MAX_SECONDS} (a year), not {}",
                    shown(&text)
                )
            })
    }

    /// One line of text: not empty, and no newline to make it several.
    pub fn line_of_text(&mut self, flag: &str) -> Result<String, String> {
        let (text, attached) = self.value(flag)?;
        let text = text
            .into_string()
            .map_err(|t| format!("option '{flag}' takes UTF-8 text, not {}", shown_os(&t)))?;
        self.not_an_option(flag, &text, attached)?;
        if text.is_empty() {
            return Err(format!(
                "option '{flag}' takes one line of text, not an empty one"
            ));
        }
        if text.contains(['\n', '\r']) {
            return Err(format!(
                "option '{flag}' takes one line of text, without newlines"
            ));
        }
        Ok(text)
    }

    /// A path, which need not be UTF-8.
    pub fn path(&mut self, flag: &str) -> Result<PathBuf, String> {
        let (path, attached) = self.value(flag)?;
        self.not_an_option(flag, &path.to_string_lossy(), attached)?;
        if path.is_empty() {
            return Err(format!("option '{flag}' takes a path, not an empty one"));
        }
        Ok(path.into())
    }

    /// Takes `operand` as an address to listen on.
    pub fn address(&mut self, operand: OsString) -> Result<(), String> {
        let text = operand.to_string_lossy();
        let addr = text.parse().map_err(|_| {
            format!(
                "invalid address {}: expected IP:PORT, such as 127.0.0.1:8080 or [::1]:8080",
                shown(&text)
            )
        })?;
        if self.addresses.contains(&addr) {
            return Err(format!("address {} is given twice", shown(&text)));
        }
        self.addresses.push(addr);
        Ok(())
    }

    /// The addresses given, in order; empty when none was.
    pub fn given_addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// The mistake of an option this program does not take.
    pub fn unknown(&self, flag: &str) -> String {
        format!(
            "unknown option {} (see '{} --help')",
            shown(flag),
            self.program
        )
    }

    /// What `-V` prints: the program and its version.
    pub fn version(&self) -> String {
        format!("{} {}\n", self.program, self.version)
    }

    /// The value of the option just read, attached (`--x=v`) or the next
    /// argument, whatever it looks like; and whether it was attached.
    fn value(&mut self, flag: &str) -> Result<(OsString, bool), String> {
        if self.given.iter().any(|g| g == flag) {
            return Err(format!("option '{flag}' is given twice: give it once"));
        }
        self.given.push(flag.to_owned());
        if let Some(value) = self.parser.optional_value() {
            return Ok((value, true));
        }
        self.parser
            .value()
            .map(|value| (value, false))
            .map_err(|_| format!("option '{flag}' needs a value"))
    }

    /// Refuses a separate value that looks like an option: in
    /// `--pid-file --quiet` the path was forgotten.
    fn not_an_option(&self, flag: &str, value: &str, attached: bool) -> Result<(), String> {
        if !attached && value.len() > 1 && value.starts_with('-') {
            return Err(format!(
                "option '{flag}' needs a value, and {} looks like an option \
                 (if it is the value, write '{flag}={}')",
                shown(value),
                escaped(value)
            ));
        }
        Ok(())
    }
}

fn takes_no_value(flag: &str, value: &std::ffi::OsStr) -> String {
    format!(
        "option '{flag}' takes no value, but was given {}",
        shown_os(value)
    )
}

/// The line for an error from `serve`: its message, with a setting that
/// it names named by its flag, as every program here spells it.
pub fn serve_error(error: &std::io::Error) -> String {
    match SettingError::of(error) {
        Some(e) => match flag(e.setting()) {
            Some(flag) => e.naming(flag).to_string(),
            None => e.to_string(),
        },
        None => error.to_string(),
    }
}

/// The option that sets `setting` in every program on these flags, if
/// one does. Inside the library the match is exhaustive: a new setting
/// that an error can name must be given its flag here.
pub fn flag(setting: Setting) -> Option<&'static str> {
    match setting {
        Setting::Addrs => Some("ADDR"),
        Setting::PidFile => Some("--pid-file"),
        Setting::JoinAny => Some("--join-any"),
    }
}

/// `text` in single quotes, with control characters escaped so that the
/// message stays on one line.
pub fn shown(text: &str) -> String {
    format!("'{}'", escaped(text))
}

fn shown_os(text: &std::ffi::OsStr) -> String {
    shown(&text.to_string_lossy())
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`).
fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
