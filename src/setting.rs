//! The settings of a [`Config`] that an error from [`serve`] can name, and
//! the error payload that names one.
//!
//! A library program has its own flags, or none, so an error from the
//! library names a setting as the program's author knows it, the
//! `Config` field (`Config::join_any`), and carries which setting it was
//! ([`SettingError::setting`]), so that a program with flags can name its
//! own instead ([`SettingError::naming`]), as the `drainport` binary and
//! the examples do. The payload sits inside the [`io::Error`] that
//! `serve` returns, whose `Display` is the payload's.
//!
//! [`Config`]: crate::Config
//! [`serve`]: crate::serve

use std::error::Error;
use std::fmt;
use std::io;

/// A setting of [`Config`](crate::Config), as an error names it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setting {
    /// [`Config::addrs`](crate::Config::addrs).
    Addrs,
    /// [`Config::pid_file`](crate::Config::pid_file).
    PidFile,
    /// [`Config::join_any`](crate::Config::join_any).
    JoinAny,
}

impl Setting {
    /// The field's name in [`Config`](crate::Config): `join_any`.
    pub fn field(self) -> &'static str {
        match self {
            Setting::Addrs => "addrs",
            Setting::PidFile => "pid_file",
            Setting::JoinAny => "join_any",
        }
    }
}

/// `Config::join_any`.
impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Config::{}", self.field())
    }
}

/// The payload of an error from [`serve`](crate::serve) that a setting
/// caused, or that a setting would fix: the message, and which setting.
///
/// It reads as one line through `Display` (and so does the `io::Error`
/// around it), naming the setting as its `Config` field where the message
/// names one: `127.0.0.1:7171 is served by another service, Lines<Echo>
/// (pid 4242), and this is Lines<Upper>; refusing to split its clients
/// between two programs (Config::join_any to share it)`. `Debug` is that
/// line in quotes, so that a `main` returning `io::Result` shows it too,
/// inside Rust's `Custom { kind: .., error: .. }`.
///
/// ```no_run
/// use std::process::ExitCode;
///
/// # fn serve() -> std::io::Result<()> { Ok(()) }
/// fn main() -> ExitCode {
///     match serve() {
///         Ok(()) => ExitCode::SUCCESS,
///         Err(e) => {
///             // A program with flags names its own.
///             match drainport::SettingError::of(&e) {
///                 Some(s) if s.setting() == drainport::Setting::JoinAny => {
///                     eprintln!("myserver: {}", s.naming("--share"))
///                 }
///                 _ => eprintln!("myserver: {e}"),
///             }
///             ExitCode::FAILURE
///         }
///     }
/// }
/// ```
pub struct SettingError {
    setting: Setting,
    message: String,
    /// What the setting would do, when the message ends on a fix:
    /// `to share it` becomes `(Config::join_any to share it)`.
    fix: Option<&'static str>,
}

impl SettingError {
    /// An error about `setting`, saying `message`.
    pub(crate) fn new(setting: Setting, message: String) -> SettingError {
        SettingError {
            setting,
            message,
            fix: None,
        }
    }

    /// Ends the message with the fix: `(<setting> <fix>)`.
    pub(crate) fn fixed_by(mut self, fix: &'static str) -> SettingError {
        self.fix = Some(fix);
        self
    }

    /// `error`, as an error about `setting`: the same kind and message.
    pub(crate) fn wrap(setting: Setting, error: io::Error) -> io::Error {
        let kind = error.kind();
        SettingError::new(setting, error.to_string()).into_io(kind)
    }

    /// An `io::Error` of `kind` carrying this.
    pub(crate) fn into_io(self, kind: io::ErrorKind) -> io::Error {
        io::Error::new(kind, self)
    }

    /// The setting the error concerns.
    pub fn setting(&self) -> Setting {
        self.setting
    }

    /// The payload of `error`, if it has one.
    pub fn of(error: &io::Error) -> Option<&SettingError> {
        error.get_ref()?.downcast_ref()
    }

    /// The message, with the setting named `name` (a program's own flag,
    /// say) instead of as its `Config` field.
    pub fn naming<'a>(&'a self, name: &'a str) -> impl fmt::Display + 'a {
        Named { error: self, name }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, name: &dyn fmt::Display) -> fmt::Result {
        f.write_str(&self.message)?;
        match self.fix {
            Some(fix) => write!(f, " ({name} {fix})"),
            None => Ok(()),
        }
    }
}

struct Named<'a> {
    error: &'a SettingError,
    name: &'a str,
}

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.write(f, &self.name)
    }
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, &self.setting)
    }
}

impl fmt::Debug for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

impl Error for SettingError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_by_default_the_programs_name_on_request() {
        let e = SettingError::new(Setting::JoinAny, "two programs".into())
            .fixed_by("to share it")
            .into_io(io::ErrorKind::AddrInUse);
        assert_eq!(e.to_string(), "two programs (Config::join_any to share it)");
        let payload = SettingError::of(&e).expect("a payload");
        assert_eq!(payload.setting(), Setting::JoinAny);
        assert_eq!(
            payload.naming("--join-any").to_string(),
            "two programs (--join-any to share it)"
        );
        // The debug form a `main` returning `io::Result` prints.
        assert_eq!(
            format!("{e:?}"),
            "Custom { kind: AddrInUse, error: \"two programs (Config::join_any to share it)\" }"
        );
        // Without a fix, the message alone, whatever the name.
        let e = SettingError::new(Setting::PidFile, "cannot write".into());
        assert_eq!(e.naming("--pid-file").to_string(), "cannot write");
        assert!(SettingError::of(&io::Error::other("plain")).is_none());
    }

    #[test]
    fn every_setting_names_a_field() {
        for s in [Setting::Addrs, Setting::PidFile, Setting::JoinAny] {
            assert_eq!(s.to_string(), format!("Config::{}", s.field()));
        }
    }
}
