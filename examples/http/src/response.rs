//! Writing responses: the status line, `Date`, `Content-Type`,
//! `Content-Length`, `Allow` where a method is refused, and the
//! `Connection` header that tells the client whether it may send again.
//! Pure functions appending to the output buffer; the clock is read by
//! the caller.

/// A response the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Continue,
    BadRequest,
    MethodNotAllowed,
    RequestTimeout,
    ContentTooLarge,
    ExpectationFailed,
    HeadersTooLarge,
    NotImplemented,
    Unavailable,
}

impl Status {
    fn line(self) -> &'static [u8] {
        match self {
            Status::Ok => b"HTTP/1.1 200 OK\r\n",
            Status::Continue => b"HTTP/1.1 100 Continue\r\n",
            Status::BadRequest => b"HTTP/1.1 400 Bad Request\r\n",
            Status::MethodNotAllowed => b"HTTP/1.1 405 Method Not Allowed\r\n",
            Status::RequestTimeout => b"HTTP/1.1 408 Request Timeout\r\n",
            Status::ContentTooLarge => b"HTTP/1.1 413 Content Too Large\r\n",
            Status::ExpectationFailed => b"HTTP/1.1 417 Expectation Failed\r\n",
            Status::HeadersTooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            Status::NotImplemented => b"HTTP/1.1 501 Not Implemented\r\n",
            Status::Unavailable => b"HTTP/1.1 503 Service Unavailable\r\n",
        }
    }
}

/// What the `Connection` header says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// HTTP/1.1 keep-alive, the default: no header.
    #[default]
    Default,
    /// HTTP/1.0 keep-alive must be said.
    KeepAlive,
    /// The server closes after this response.
    Close,
}

/// One response. `body` is counted in `Content-Length` but left out for a
/// HEAD request (`head_only`). `date` is an IMF-fixdate (see [`http_date`]).
pub fn write(
    out: &mut Vec<u8>,
    status: Status,
    date: &[u8],
    body: &[u8],
    head_only: bool,
    persist: Persist,
) {
    out.extend_from_slice(status.line());
    if status == Status::Continue {
        out.extend_from_slice(b"\r\n");
        return;
    }
    out.extend_from_slice(b"Date: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\nContent-Type: text/plain\r\nContent-Length: ");
    decimal(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    if status == Status::MethodNotAllowed {
        out.extend_from_slice(b"Allow: GET, HEAD\r\n");
    }
    out.extend_from_slice(match persist {
        Persist::Default => b"",
        Persist::KeepAlive => b"Connection: keep-alive\r\n",
        Persist::Close => b"Connection: close\r\n",
    });
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// Appends `n` in decimal without going through `fmt`.
fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The `Date` value for `secs` since the Unix epoch:
/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110, 5.6.7).
pub fn http_date(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    let mut d = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    d[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    let two = |d: &mut [u8], at: usize, v: u64| {
        d[at] = b'0' + (v / 10) as u8;
        d[at + 1] = b'0' + (v % 10) as u8;
    };
    two(&mut d, 5, day as u64);
    d[8..11].copy_from_slice(MONTHS[month as usize - 1]);
    two(&mut d, 12, (year / 100) as u64);
    two(&mut d, 14, (year % 100) as u64);
    two(&mut d, 17, rem / 3600);
    two(&mut d, 20, rem / 60 % 60);
    two(&mut d, 23, rem % 60);
    d
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01, from
/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(status: Status, body: &str, head_only: bool, persist: Persist) -> String {
        let mut out = Vec::new();
        write(
            &mut out,
            status,
            b"<date>",
            body.as_bytes(),
            head_only,
            persist,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn ok_with_body() {
        assert_eq!(
            text(Status::Ok, "hello from 7\n", false, Persist::Default),
            "HTTP/1.1 200 OK\r\nDate: <date>\r\nContent-Type: text/plain\r\n\
             Content-Length: 13\r\n\r\nhello from 7\n"
        );
    }

    #[test]
    fn head_counts_the_body_but_leaves_it_out() {
        assert_eq!(
            text(Status::Ok, "hello from 7\n", true, Persist::KeepAlive),
            "HTTP/1.1 200 OK\r\nDate: <date>\r\nContent-Type: text/plain\r\n\
             Content-Length: 13\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn refusals_say_allow_and_close() {
        let t = text(Status::MethodNotAllowed, "no\n", false, Persist::Close);
        assert!(t.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{t}");
        assert!(t.contains("\r\nAllow: GET, HEAD\r\n"), "{t}");
        assert!(t.ends_with("Connection: close\r\n\r\nno\n"), "{t}");
        let t = text(Status::HeadersTooLarge, "", false, Persist::Close);
        assert!(t.starts_with("HTTP/1.1 431 "), "{t}");
        assert!(t.contains("Content-Length: 0\r\n"), "{t}");
    }

    #[test]
    fn continue_is_a_bare_status_line() {
        assert_eq!(
            text(Status::Continue, "x", false, Persist::Close),
            "HTTP/1.1 100 Continue\r\n\r\n"
        );
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 17, 65_536, u64::MAX] {
            let mut out = Vec::new();
            decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn dates() {
        let d = |s| String::from_utf8(http_date(s).to_vec()).unwrap();
        assert_eq!(d(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        // RFC 9110's own example.
        assert_eq!(d(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(d(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(d(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(d(4_102_444_799), "Thu, 31 Dec 2099 23:59:59 GMT");
    }
}
