//! The operator's view: one stdout line per event, written at once.
//!
//! Rust's stdout is line-buffered, so each line leaves in one `write(2)` and a
//! supervisor reading a pipe sees it immediately. Write errors are ignored: a
//! closed stdout must not stop a server that still has clients.

use std::fmt;
use std::io::{self, Write as _};

/// Writes one line to stdout.
pub(crate) fn line(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    let _ = out.write_fmt(args);
    let _ = out.write_all(b"\n");
}

/// The ending that makes "client" plural for `n` of them: `""` for one,
/// `"s"` otherwise, so that a line reads `1 client left`, `2 clients left`.
pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `say!(...)` formats and writes one stdout line.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!($($arg)*))
    };
}
pub(crate) use say;
