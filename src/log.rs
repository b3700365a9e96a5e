//! The operator's view: one stdout line per event, written at once.
//!
//! Rust's stdout is line-buffered, so each line leaves in one `write(2)` and a
//! supervisor reading a pipe sees it immediately. Write errors are ignored: a
//! closed stdout must not stop a server that still has clients.
//!
//! With [`Config::log_time`](crate::Config::log_time) every line starts with
//! the time it was written, as RFC 3339 UTC with milliseconds and a space
//! (`2026-12-02T18:30:00.123Z `); without it the lines are exactly as the
//! README shows them.

use std::fmt;
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// Whether lines carry a timestamp: one setting for the whole process, set
/// by `serve` from its `Config` before the first line.
static TIME: AtomicBool = AtomicBool::new(false);

/// Turns the timestamp on every line on or off.
pub(crate) fn set_time(on: bool) {
    TIME.store(on, Ordering::Relaxed);
}

/// Writes one line to stdout.
pub(crate) fn line(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if TIME.load(Ordering::Relaxed) {
        // A clock before 1970 is a broken clock; it reads as the epoch.
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let _ = write!(out, "{} ", Rfc3339(now));
    }
    let _ = out.write_fmt(args);
    let _ = out.write_all(b"\n");
}

/// The ending that makes "client" plural for `n` of them: `""` for one,
/// `"s"` otherwise, so that a line reads `1 client left`, `2 clients left`.
pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Bytes that someone else chose (a Unix socket's name, say), shown so
/// that they cannot forge or garble a line: printable ASCII stays as it is,
/// a backslash is doubled, and every other byte (control characters,
/// non-ASCII, invalid UTF-8) shows as `\xNN`. The one way such bytes reach
/// a line or an error message.
pub(crate) struct Escaped<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            match b {
                b'\\' => f.write_str("\\\\")?,
                b' '..=b'~' => fmt::Write::write_char(f, char::from(b))?,
                _ => write!(f, "\\x{b:02x}")?,
            }
        }
        Ok(())
    }
}

/// A time since the Unix epoch, shown in UTC to the millisecond:
/// `2026-12-02T18:30:00.123Z`. Truncated, not rounded, so a line never
/// carries a time later than the moment it was written.
pub(crate) struct Rfc3339(pub(crate) Duration);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let (year, month, day) = civil_from_days(secs / 86_400);
        let of_day = secs % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60,
            self.0.subsec_millis()
        )
    }
}

/// The proleptic Gregorian date `days` days after 1970-01-01, by Howard
/// Hinnant's `civil_from_days` (unsigned, since a log line is never dated
/// before 1970). Years count from March, so that the leap day ends one.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01, the start of a 400-year era.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // 0 for March, 11 for February.
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// `say!(...)` formats and writes one stdout line.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!($($arg)*))
    };
}
pub(crate) use say;

// The tests' own raw call asks the C library for the date to compare.
#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> String {
        Rfc3339(Duration::from_secs(secs) + Duration::from_millis(millis)).to_string()
    }

    #[test]
    fn foreign_bytes_are_escaped() {
        let shown = |b: &[u8]| Escaped(b).to_string();
        assert_eq!(shown(b"Lines<Echo> v2"), "Lines<Echo> v2");
        assert_eq!(shown(b"a\x1b[31mred\r\n"), "a\\x1b[31mred\\x0d\\x0a");
        assert_eq!(shown(b"\xff\x00\x7f"), "\\xff\\x00\\x7f");
        // A backslash is doubled, so an escape cannot be forged.
        assert_eq!(shown(b"\\x41"), "\\\\x41");
        // Valid UTF-8 beyond ASCII is escaped too: no look-alike letters,
        // no reordering marks.
        assert_eq!(shown("é\u{202e}".as_bytes()), "\\xc3\\xa9\\xe2\\x80\\xae");
        let every: Vec<u8> = (0..=255).collect();
        assert!(shown(&every).bytes().all(|b| (b' '..=b'~').contains(&b)));
    }

    #[test]
    fn known_dates() {
        for (secs, millis, want) in [
            (0, 0, "1970-01-01T00:00:00.000Z"),
            (86_399, 999, "1970-01-01T23:59:59.999Z"),
            (68_169_600, 0, "1972-02-29T00:00:00.000Z"),
            (951_782_400, 1, "2000-02-29T00:00:00.001Z"),
            (951_868_800, 0, "2000-03-01T00:00:00.000Z"),
            (1_709_164_800, 0, "2024-02-29T00:00:00.000Z"),
            (1_735_689_599, 500, "2024-12-31T23:59:59.500Z"),
            (1_796_236_200, 123, "2026-12-02T18:30:00.123Z"),
            (2_147_483_648, 0, "2038-01-19T03:14:08.000Z"),
            (4_107_456_000, 0, "2100-02-28T00:00:00.000Z"),
            // 2100 is not a leap year: the day after 28 February is 1 March.
            (4_107_542_400, 0, "2100-03-01T00:00:00.000Z"),
            (253_402_300_799, 999, "9999-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(at(secs, millis), want, "{secs}");
        }
        // Milliseconds are truncated, never rounded up into the next second.
        let almost = Duration::from_secs(59) + Duration::from_nanos(999_999_999);
        assert_eq!(Rfc3339(almost).to_string(), "1970-01-01T00:00:59.999Z");
    }

    #[test]
    fn agrees_with_the_c_library() {
        // Every 25 hours and 13 seconds from 1970 to past 2400: each hour of
        // the day, each day of the month and every leap rule gets visited.
        let step = 25 * 3600 + 13;
        for secs in (0..13_500_000_000_u64).step_by(step) {
            // SAFETY: gmtime_r writes only into the `tm` it is given.
            let tm = unsafe {
                let mut tm: libc::tm = std::mem::zeroed();
                let t = secs as libc::time_t;
                assert!(!libc::gmtime_r(&t, &mut tm).is_null());
                tm
            };
            let want = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000Z",
                tm.tm_year + 1900,
                tm.tm_mon + 1,
                tm.tm_mday,
                tm.tm_hour,
                tm.tm_min,
                tm.tm_sec
            );
            assert_eq!(at(secs, 0), want, "{secs}");
        }
    }
}
