//! One request head, read with `httparse` into the few facts the server
//! acts on: the method, the head's length, the body's length, whether the
//! connection may stay open, and whether the client waits for
//! `100 Continue`. A pure function over bytes: no state, no I/O.
//!
//! What it refuses, and why:
//! - a body framed by `Transfer-Encoding` (411 for `chunked`, 501 for any
//!   other coding): without a length the server cannot find where the next
//!   request starts, so it answers and closes;
//! - an unreadable `Content-Length`, two that differ, or an HTTP/1.1
//!   request without exactly one `Host` (400): the message boundary or the
//!   request itself is in doubt;
//! - an `Expect` other than `100-continue` (417);
//! - more than [`MAX_HEADERS`] header fields (431, like a head over the cap).

/// Header fields read per request; more is refused with 431.
pub const MAX_HEADERS: usize = 64;

/// The methods the server tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// Anything else: answered 405 once its body is read.
    Other,
}

/// A complete, acceptable request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub method: Method,
    /// Bytes of the head, through the empty line.
    pub len: usize,
    /// `Content-Length`, 0 without one.
    pub body: u64,
    /// HTTP/1.0 (else 1.1): keep-alive must be said on each response.
    pub http10: bool,
    /// The client allows the connection to stay open after this request.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1 with a body.
    pub expect_continue: bool,
}

/// Why a request is refused. Every refusal closes the connection, because
/// the server can no longer be sure where the next request starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// 400, with a reason for the body.
    Bad(&'static str),
    /// 411: a chunked body.
    LengthRequired,
    /// 417: an `Expect` the server does not know.
    ExpectationFailed,
    /// 431: too many header fields (a head over the cap comes through
    /// `on_too_long`).
    HeadersTooLarge,
    /// 501: a transfer coding other than chunked.
    NotImplemented,
}

/// What [`parse`] found at the front of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not complete yet.
    Partial,
    Request(Head),
    Rejected(Reject),
}

/// Reads the request head at the front of `input`.
pub fn parse(input: &[u8]) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Rejected(Reject::HeadersTooLarge);
        }
        Err(e) => return Parsed::Rejected(Reject::Bad(bad_reason(e))),
    };
    let http10 = req.version == Some(0);
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        _ => Method::Other,
    };
    let mut body: Option<u64> = None;
    let mut hosts = 0;
    let (mut close, mut keep) = (false, false);
    let mut expect = false;
    let mut coding: Option<bool> = None; // Some(chunked last)
    for field in req.headers.iter() {
        let name = field.name;
        let value = trim(field.value);
        if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = content_length(value) else {
                return Parsed::Rejected(Reject::Bad("bad Content-Length"));
            };
            if body.is_some_and(|b| b != n) {
                return Parsed::Rejected(Reject::Bad("conflicting Content-Length"));
            }
            body = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(|&b| b == b',').next().map(trim);
            coding = Some(last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case(b"100-continue") {
                return Parsed::Rejected(Reject::ExpectationFailed);
            }
            expect = true;
        }
    }
    match coding {
        Some(true) => return Parsed::Rejected(Reject::LengthRequired),
        Some(false) => return Parsed::Rejected(Reject::NotImplemented),
        None => {}
    }
    if !http10 && hosts != 1 {
        return Parsed::Rejected(Reject::Bad("HTTP/1.1 needs exactly one Host"));
    }
    let body = body.unwrap_or(0);
    Parsed::Request(Head {
        method,
        len,
        body,
        http10,
        keep_alive: !close && (!http10 || keep),
        // HTTP/1.0 clients do not know 100 Continue (RFC 9110, 10.1.1).
        expect_continue: expect && !http10 && body > 0,
    })
}

/// A `Content-Length` value: decimal digits only, no sign, no list.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

fn bad_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "bad header name",
        httparse::Error::HeaderValue => "bad header value",
        httparse::Error::NewLine => "bad line ending",
        httparse::Error::Status => "bad status",
        httparse::Error::Token => "bad method or token",
        httparse::Error::Version => "bad or unsupported HTTP version",
        httparse::Error::TooManyHeaders => "too many header fields",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Parsed {
        parse(text.as_bytes())
    }

    fn head(text: &str) -> Head {
        match req(text) {
            Parsed::Request(h) => h,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn get_keeps_alive_on_http11() {
        let text = "GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n";
        let h = head(text);
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.len, text.len());
        assert_eq!(h.body, 0);
        assert!(h.keep_alive && !h.http10 && !h.expect_continue);
    }

    #[test]
    fn head_length_stops_at_the_empty_line() {
        let first = "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n";
        let h = head(&format!("{first}GET / HTTP/1.1\r\n"));
        assert_eq!((h.method, h.len), (Method::Head, first.len()));
    }

    #[test]
    fn connection_tokens() {
        assert!(!head("GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        let h = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(h.keep_alive && h.http10);
        assert!(!head("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
    }

    #[test]
    fn partial_until_the_empty_line() {
        assert_eq!(req("GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial);
        assert_eq!(req("GE"), Parsed::Partial);
        assert_eq!(req(""), Parsed::Partial);
    }

    #[test]
    fn content_length_and_expect() {
        let h = head("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nhello");
        assert_eq!((h.method, h.body), (Method::Other, 12));
        let h =
            head("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n");
        assert!(h.expect_continue);
        // No body: nothing to wait for.
        let h = head("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
        assert!(!h.expect_continue);
        let h = head("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.body, 5);
    }

    #[test]
    fn refusals() {
        let cases = [
            (
                "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                "bad",
            ),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\n",
                "bad",
            ),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "bad",
            ),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "bad",
            ),
            ("GET / HTTP/1.1\r\n\r\n", "bad"),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "bad"),
            ("GET / HTTP/2.0\r\nHost: x\r\n\r\n", "bad"),
            ("hello there\r\n\r\n", "bad"),
            ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", "bad"),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                "411",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 4\r\n\r\n",
                "411",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                "501",
            ),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n",
                "417",
            ),
        ];
        for (text, want) in cases {
            let got = match req(text) {
                Parsed::Rejected(Reject::Bad(_)) => "bad",
                Parsed::Rejected(Reject::LengthRequired) => "411",
                Parsed::Rejected(Reject::NotImplemented) => "501",
                Parsed::Rejected(Reject::ExpectationFailed) => "417",
                other => panic!("{text:?}: {other:?}"),
            };
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn too_many_headers() {
        let mut text = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..MAX_HEADERS {
            text.push_str(&format!("X-{i}: y\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(req(&text), Parsed::Rejected(Reject::HeadersTooLarge));
    }
}
