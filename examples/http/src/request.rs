//! One request head, read with `httparse` into the few facts the server
//! acts on: the method, the head's length, how the body is framed,
//! whether the connection may stay open, and whether the client waits for
//! `100 Continue`. A pure function over bytes: no state, no I/O.
//!
//! What it refuses from the head alone, and why:
//! - a `Content-Length` over [`MAX_BODY`] (413), before any of the body
//!   is read;
//! - a transfer coding other than `chunked` alone (501): the server would
//!   have to undo it to find where the body ends;
//! - `chunked` that is not the last coding, or comes twice, or
//!   `Transfer-Encoding` beside `Content-Length` or on HTTP/1.0 (400):
//!   RFC 9112 (6.1, 6.3) calls such framing faulty and a sign of request
//!   smuggling;
//! - an unreadable `Content-Length`, two that differ, or an HTTP/1.1
//!   request without exactly one `Host` (400): the message boundary or the
//!   request itself is in doubt;
//! - an `Expect` other than `100-continue` (417);
//! - more than [`MAX_HEADERS`] header fields (431, like a head over the cap).
//!
//! Every refusal is answered at once, so a client waiting for
//! `100 Continue` gets the final status instead and sends no body.

use super::body::MAX_BODY;

/// Header fields read per request; more is refused with 431.
pub const MAX_HEADERS: usize = 64;

/// The methods the server tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// Anything else: answered 405 (see `protocol.rs` for when).
    Other,
}

/// How the body of a request is framed (RFC 9112, 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: neither `Content-Length` nor `Transfer-Encoding`, or
    /// `Content-Length: 0`.
    None,
    /// `Content-Length`, at most [`MAX_BODY`].
    Length(u32),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A complete, acceptable request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub method: Method,
    /// Bytes of the head, through the empty line.
    pub len: usize,
    pub body: Framing,
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
    /// 413: a body over [`MAX_BODY`].
    ContentTooLarge,
    /// 417: an `Expect` the server does not know.
    ExpectationFailed,
    /// 431: too many header fields (a head over the cap comes through
    /// `on_too_long`).
    HeadersTooLarge,
    /// 501: a transfer coding other than `chunked`.
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

/// How far a head still arriving has been looked at, so that each byte of
/// it is scanned once however the client cuts it into reads: a 64 KiB head
/// sent a byte at a time costs 64 K short scans, not 64 K parses of up to
/// 64 KiB each. 4 bytes: the bytes scanned, and in the top bit whether the
/// request line has ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scan(u32);

impl Scan {
    const LINE_ENDED: u32 = 1 << 31;

    /// Looks at the bytes of `input` that earlier calls did not see (the
    /// input begins with the ones they did) and says whether [`parse`] can
    /// now find more than `Partial`: the request line has just ended (so a
    /// bad one is refused at once, as a complete head would be), or an
    /// empty line has arrived. httparse ends lines at `\n` with or without
    /// `\r`, so an empty line is `\n\n` or `\n\r\n`.
    pub fn worth_parsing(&mut self, input: &[u8]) -> bool {
        let from = (self.0 & !Self::LINE_ENDED) as usize;
        let mut line_ended = self.0 & Self::LINE_ENDED != 0;
        let mut worth = false;
        for (at, _) in input
            .iter()
            .enumerate()
            .skip(from)
            .filter(|&(_, &b)| b == b'\n')
        {
            if !line_ended {
                line_ended = true;
                worth = true;
            }
            let empty = match at.checked_sub(1).map(|i| input[i]) {
                Some(b'\n') => true,
                Some(b'\r') => at >= 2 && input[at - 2] == b'\n',
                _ => false,
            };
            if empty {
                worth = true;
                break;
            }
        }
        // The window never reaches 2 GiB (the input cap bounds it), and a
        // count that did would only scan again.
        let seen = u32::try_from(input.len()).unwrap_or(0) & !Self::LINE_ENDED;
        self.0 = seen | if line_ended { Self::LINE_ENDED } else { 0 };
        worth
    }
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
    let mut codings = Codings::default();
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
            if let Err(reject) = codings.add(value) {
                return Parsed::Rejected(reject);
            }
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
    if !http10 && hosts != 1 {
        return Parsed::Rejected(Reject::Bad("HTTP/1.1 needs exactly one Host"));
    }
    let body = match (codings.coding(), body) {
        (None, None | Some(0)) => Framing::None,
        (None, Some(n)) => match u32::try_from(n) {
            Ok(n) if n <= MAX_BODY => Framing::Length(n),
            _ => return Parsed::Rejected(Reject::ContentTooLarge),
        },
        // RFC 9112 (6.3) lets a server refuse this, and makes it close
        // the connection either way: a sign of request smuggling.
        (Some(_), Some(_)) => {
            return Parsed::Rejected(Reject::Bad("both Content-Length and Transfer-Encoding"));
        }
        // RFC 9112 (6.1): the framing is faulty.
        (Some(_), None) if http10 => {
            return Parsed::Rejected(Reject::Bad("Transfer-Encoding in HTTP/1.0"));
        }
        (Some(Ok(())), None) => Framing::Chunked,
        (Some(Err(reject)), None) => return Parsed::Rejected(reject),
    };
    Parsed::Request(Head {
        method,
        len,
        body,
        http10,
        keep_alive: !close && (!http10 || keep),
        // HTTP/1.0 clients do not know 100 Continue (RFC 9110, 10.1.1).
        expect_continue: expect && !http10 && body != Framing::None,
    })
}

/// What the `Transfer-Encoding` fields say, read in order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Codings {
    /// There is a `Transfer-Encoding` field.
    present: bool,
    /// `chunked` came, as the last coding so far.
    chunked: bool,
    /// A coding other than `chunked` came.
    other: bool,
}

impl Codings {
    /// Adds one field's list. A coding after `chunked` is refused at once:
    /// `chunked` must be last, and applied once (RFC 9112, 6.1 and 7).
    fn add(&mut self, value: &[u8]) -> Result<(), Reject> {
        self.present = true;
        // Empty list elements are allowed and ignored (RFC 9110, 5.6.1).
        for coding in value.split(|&b| b == b',').map(trim) {
            if coding.is_empty() {
                continue;
            }
            if self.chunked {
                return Err(Reject::Bad("chunked must be the last transfer coding"));
            }
            if coding.eq_ignore_ascii_case(b"chunked") {
                self.chunked = true;
            } else {
                self.other = true;
            }
        }
        Ok(())
    }

    /// `None` without a field, `Ok` for `chunked` alone, else the refusal.
    fn coding(self) -> Option<Result<(), Reject>> {
        match self {
            Codings { present: false, .. } => None,
            Codings { other: true, .. } => Some(Err(Reject::NotImplemented)),
            Codings { chunked: true, .. } => Some(Ok(())),
            _ => Some(Err(Reject::Bad("empty Transfer-Encoding"))),
        }
    }
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
        assert_eq!(h.body, Framing::None);
        assert!(h.keep_alive && !h.http10 && !h.expect_continue);
    }

    /// Feeds `text` to a fresh scan in reads of `step` bytes, as the
    /// machinery offers a growing window, and returns the window lengths
    /// at which it asked for a parse.
    fn parses(text: &[u8], step: usize) -> Vec<usize> {
        let mut scan = Scan::default();
        (step..text.len() + step)
            .step_by(step)
            .map(|end| end.min(text.len()))
            .filter(|&end| scan.worth_parsing(&text[..end]))
            .collect()
    }

    #[test]
    fn a_head_is_parsed_when_its_request_line_ends_and_at_its_empty_line() {
        let text = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: aaaa\r\n\r\n";
        let line = b"GET / HTTP/1.1\r\n".len();
        // A byte at a time: twice, whatever the head's length.
        assert_eq!(parses(text, 1), [line, text.len()]);
        // Whole, or in reads that cut the line ends anywhere.
        assert_eq!(parses(text, text.len()), [text.len()]);
        for step in 2..text.len() {
            let at = parses(text, step);
            assert_eq!(at.last(), Some(&text.len()), "step {step}");
            assert!(at.len() <= 2, "step {step}: {at:?}");
        }
        // Bare LF ends lines too, as httparse reads them.
        let bare = b"GET / HTTP/1.1\nHost: x\n\n";
        assert_eq!(parses(bare, 1), [15, bare.len()]);
        let mixed = b"GET / HTTP/1.1\r\nHost: x\n\r\n";
        assert_eq!(parses(mixed, 1).last(), Some(&mixed.len()));
        // A CR alone ends nothing; CR LF CR is not yet an empty line.
        assert_eq!(parses(b"GET / HTTP/1.1\r\nA: b\r\n\r", 1), [16]);
        // Garbage with no line end is never parsed until one comes.
        assert_eq!(parses(&[0x16; 100], 1), Vec::<usize>::new());
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
        assert_eq!((h.method, h.body), (Method::Other, Framing::Length(12)));
        let h =
            head("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n");
        assert!(h.expect_continue);
        // No body: nothing to wait for.
        let h = head("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
        assert!(!h.expect_continue);
        let h =
            head("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n");
        assert!(!h.expect_continue && h.body == Framing::None);
        let h = head("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.body, Framing::Length(5));
        // HTTP/1.0 clients do not know 100 Continue.
        let h = head("PUT / HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
        assert!(!h.expect_continue);
    }

    #[test]
    fn chunked_alone_is_read() {
        for te in ["chunked", "Chunked", " chunked ", ", chunked,"] {
            let text = format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert_eq!(head(&text).body, Framing::Chunked, "{te:?}");
        }
        let h = head(
            "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        );
        assert!(h.body == Framing::Chunked && h.expect_continue);
    }

    #[test]
    fn the_body_limit_is_decided_from_the_head() {
        let at = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY}\r\n\r\n");
        assert_eq!(head(&at).body, Framing::Length(MAX_BODY));
        for n in [u64::from(MAX_BODY) + 1, u64::from(u32::MAX) + 1, u64::MAX] {
            let text = format!("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n");
            assert_eq!(req(&text), Parsed::Rejected(Reject::ContentTooLarge), "{n}");
        }
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
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
                "bad",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
                "bad",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                "bad",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                "bad",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n",
                "bad",
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                "bad",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "501",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                "501",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                "501",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;x=1\r\n\r\n",
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
