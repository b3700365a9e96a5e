//! HTTP/1.1 on the drain machinery: one request per `on_data` call,
//! answered in order, with the per-connection state that keep-alive,
//! request bodies and the drain need.
//!
//! Guarantees:
//! - A request body (`Content-Length` or chunked, up to `MAX_BODY`) is
//!   read and discarded as it arrives (`body.rs`), so a body far larger
//!   than the input window passes through it; the answer goes out once the
//!   whole body has been read, and a request pipelined behind it is read
//!   next.
//! - **`Expect: 100-continue`.** Whether a request will be served is
//!   decided from its head alone. One that will be gets `100 Continue`
//!   before its body is read. One that will not (a method other than GET
//!   and HEAD, a body over the limit, a transfer coding the server does
//!   not read, any other refusal of the head) gets its final status at
//!   once, with `Connection: close`, and no `100 Continue`. The connection
//!   then closes rather than read the body: the client may send the body
//!   anyway or hold it back (RFC 9110, 10.1.1), and the server cannot tell
//!   which, so it cannot know where the next request would start. The
//!   close is the machinery's: FIN after the response, then whatever the
//!   client still sends is read and thrown away until its EOF, so the
//!   response is not lost to a reset (RFC 9112, 9.6). Without `Expect`,
//!   a refused method's body is read and the 405 keeps the connection.
//! - A body refused part way (broken chunk framing: 400; chunk data past
//!   `MAX_BODY`: 413; a trailer section too large: 431) is answered at
//!   once and the connection closes.
//! - The connection stays open after a response unless the client asked
//!   otherwise (`Connection: close`, or HTTP/1.0 without keep-alive), the
//!   request was refused, or the drain has started.
//! - **Drain.** A connection finishes the request it is on, and its next
//!   response carries `Connection: close`; then the server closes it. A
//!   connection idle between requests is not cut, since a request may be
//!   on its way: it closes after answering the next one. Idle clients that
//!   never send again are closed by the drain timeout (see `main.rs`).
//! - Pipelined requests after the one answered with `Connection: close`
//!   are discarded unanswered, as RFC 9112 (9.3.2) lets a client expect.
//! - **Timeouts**, nginx's three, through [`Protocol::deadline`]; a
//!   connection waits for one thing at a time ([`Wait`]), and has one
//!   deadline for it:
//!   - the *head* of a request must be whole `header` after it began (at
//!     connect, or at the first byte of a later request); more bytes do
//!     not move it, so a client dribbling its head is cut as surely as a
//!     silent one. It gets `408 Request Timeout` with `Connection: close`;
//!   - a *body* must go on: `body` after the head, and after every read
//!     that takes body bytes. It gets a 408 too;
//!   - *keep-alive*: a connection idle after a response is closed
//!     `keepalive` after it, without a word. A response it did not ask
//!     for would be read as the answer to its next request, and an HTTP
//!     client expects an idle connection to close at any time.
//!
//!   A deadline is never reported before it passes and at most two
//!   [`TICK`]s after (the stored one is rounded up to a tick, then the
//!   machinery's), plus however late the loop gets to it. During a drain
//!   they run on: whichever of a deadline and the drain's own ending
//!   comes first ends the connection.

use std::num::NonZeroU32;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drainport::Peer;
use drainport::protocol::{Action, Protocol, Step};

use super::body::{Body, Read};
use super::request::{self, Framing, Head, Method, Parsed, Reject, Scan};
use super::response::{self, Persist, Status};

/// The response waiting for the end of a request body.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Pending {
    #[default]
    None,
    Get,
    Head,
    NotAllowed,
}

/// nginx's `client_header_timeout`.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `keepalive_timeout`.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// nginx's `client_body_timeout`.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// The unit a connection's deadline is kept in: the machinery's own
/// granularity. A `u32` of them spans over 13 years of uptime.
pub const TICK: Duration = Duration::from_millis(100);

/// The protocol's timeouts (the send timeout is the machinery's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For a whole request head.
    pub header: Duration,
    /// For an idle keep-alive connection.
    pub keepalive: Duration,
    /// Between two reads of a request body.
    pub body: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            header: HEADER_TIMEOUT,
            keepalive: KEEPALIVE_TIMEOUT,
            body: BODY_TIMEOUT,
        }
    }
}

/// What a connection waits for, and so which deadline it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The rest of a request head (or its first byte, on a new
    /// connection): 408 at the header timeout.
    Head,
    /// More of a request body: 408 at the body timeout.
    Body,
    /// The first byte of the next request: closed, silently, at the
    /// keep-alive timeout.
    KeepAlive,
}

/// Instants as ticks from the server's start, so that a connection keeps
/// its deadline in four bytes.
struct Clock {
    origin: Instant,
    /// How far the tests have moved the clock on.
    #[cfg(test)]
    skew: Duration,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            origin: Instant::now(),
            #[cfg(test)]
            skew: Duration::ZERO,
        }
    }

    #[cfg(not(test))]
    fn now(&self) -> Instant {
        Instant::now()
    }

    #[cfg(test)]
    fn now(&self) -> Instant {
        Instant::now() + self.skew
    }

    /// The tick `after` from now ends in, rounded up so that a deadline is
    /// never early; `None` (never) past the range of a `u32`.
    fn due_in(&self, after: Duration) -> Option<NonZeroU32> {
        let since = self.now().saturating_duration_since(self.origin);
        let nanos = since.checked_add(after)?.as_nanos();
        // At least one tick: `after` is at least a nanosecond.
        NonZeroU32::new(u32::try_from(nanos.div_ceil(TICK.as_nanos())).ok()?)
    }

    fn instant(&self, due: NonZeroU32) -> Instant {
        self.origin + TICK * due.get()
    }
}

/// One connection's state: 24 bytes, no heap.
#[derive(Debug, Default)]
pub struct Conn {
    /// How far the head still arriving has been scanned.
    scan: Scan,
    /// Where the current request's body is, to read and discard the rest.
    body: Body,
    /// When the current wait ends, in ticks of the server's [`Clock`].
    due: Option<NonZeroU32>,
    /// What to answer once they are read.
    pending: Pending,
    /// What the current request asked of the connection after it.
    persist: Persist,
    /// The drain has started: the next response says `Connection: close`.
    draining: bool,
    /// A response went out, and no byte of the next request has come.
    idle: bool,
}

impl Conn {
    /// What the connection waits for.
    pub fn waits_for(&self) -> Wait {
        if self.body != Body::Done {
            Wait::Body
        } else if self.idle {
            Wait::KeepAlive
        } else {
            Wait::Head
        }
    }
}

/// The server: the body every GET gets, the `Date` of this second, and
/// the timeouts with the clock they are counted on.
pub struct Http {
    body: Vec<u8>,
    date_secs: u64,
    date: [u8; 29],
    timeouts: Timeouts,
    clock: Clock,
}

impl Http {
    pub fn new(pid: u32, timeouts: Timeouts) -> Http {
        Http {
            body: format!("hello from {pid}\n").into_bytes(),
            date_secs: 0,
            date: response::http_date(0),
            timeouts,
            clock: Clock::new(),
        }
    }

    /// Starts `conn`'s wait of `after` from now.
    fn arm(&self, conn: &mut Conn, after: Duration) {
        conn.due = self.clock.due_in(after);
    }

    /// The `Date` value, formatted again only when the second changes.
    fn date(&mut self) -> [u8; 29] {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if now != self.date_secs {
            self.date_secs = now;
            self.date = response::http_date(now);
        }
        self.date
    }

    /// Sends the response to the request that just ended (its head and
    /// body fully taken, `took` bytes of them in this call).
    fn answer(&mut self, conn: &mut Conn, took: usize, out: &mut Vec<u8>) -> Step {
        let persist = if conn.draining {
            Persist::Close
        } else {
            conn.persist
        };
        let close = persist == Persist::Close;
        let date = self.date();
        match std::mem::take(&mut conn.pending) {
            // `start` always sets a response before `answer` runs; `None`
            // is only the state between requests.
            Pending::Get | Pending::None => {
                response::write(out, Status::Ok, &date, &self.body, false, persist);
            }
            Pending::Head => response::write(out, Status::Ok, &date, &self.body, true, persist),
            Pending::NotAllowed => response::write(
                out,
                Status::MethodNotAllowed,
                &date,
                b"only GET and HEAD are served here\n",
                false,
                persist,
            ),
        }
        if close {
            // Ending: the machinery reports no deadline from here.
            conn.due = None;
            Step::Close(took)
        } else {
            conn.idle = true;
            self.arm(conn, self.timeouts.keepalive);
            Step::Took(took)
        }
    }

    /// Answers a refused request; the caller closes.
    fn refuse(&mut self, conn: &mut Conn, reject: Reject, out: &mut Vec<u8>) {
        // Nothing is left to answer, should a hard stop come before the
        // close.
        conn.body = Body::Done;
        conn.pending = Pending::None;
        conn.due = None;
        let (status, body): (Status, &[u8]) = match reject {
            Reject::Bad(why) => (Status::BadRequest, why.as_bytes()),
            Reject::ContentTooLarge => (Status::ContentTooLarge, b"request body too large"),
            Reject::ExpectationFailed => (Status::ExpectationFailed, b"only 100-continue"),
            Reject::HeadersTooLarge => (Status::HeadersTooLarge, b"request head too large"),
            Reject::NotImplemented => (
                Status::NotImplemented,
                b"only the chunked transfer coding is supported",
            ),
        };
        let mut text = body.to_vec();
        text.push(b'\n');
        let date = self.date();
        response::write(out, status, &date, &text, false, Persist::Close);
    }

    fn start(&mut self, conn: &mut Conn, head: Head, out: &mut Vec<u8>) -> Step {
        conn.persist = match (head.keep_alive, head.http10) {
            (false, _) => Persist::Close,
            (true, true) => Persist::KeepAlive,
            (true, false) => Persist::Default,
        };
        conn.pending = match head.method {
            Method::Get => Pending::Get,
            Method::Head => Pending::Head,
            Method::Other => Pending::NotAllowed,
        };
        conn.body = match head.body {
            Framing::None => return self.answer(conn, head.len, out),
            Framing::Length(len) => Body::length(len),
            Framing::Chunked => Body::chunked(),
        };
        if head.expect_continue {
            if conn.pending == Pending::NotAllowed {
                // Refused from the head: the final status now, and a close,
                // since the body may or may not follow (see the module
                // docs).
                conn.body = Body::Done;
                conn.persist = Persist::Close;
                return self.answer(conn, head.len, out);
            }
            // The client holds its body back until it hears this.
            response::write(out, Status::Continue, b"", b"", true, Persist::Default);
        }
        self.arm(conn, self.timeouts.body);
        Step::Took(head.len)
    }

    /// Reads on in the current request's body.
    fn body(&mut self, conn: &mut Conn, input: &[u8], out: &mut Vec<u8>) -> Step {
        let reject = match conn.body.read(input) {
            Read::More(0) => return Step::NeedMore,
            Read::More(took) => {
                self.arm(conn, self.timeouts.body);
                return Step::Took(took);
            }
            Read::End(took) => return self.answer(conn, took, out),
            Read::Bad(why) => Reject::Bad(why),
            Read::TooLarge => Reject::ContentTooLarge,
            Read::TrailerTooLarge => Reject::HeadersTooLarge,
        };
        self.refuse(conn, reject, out);
        Step::Close(input.len())
    }
}

impl Protocol for Http {
    type Conn = Conn;

    fn on_connect(&mut self, conn: &mut Conn, _: Peer<'_>, _: &mut Vec<u8>) -> Action {
        self.arm(conn, self.timeouts.header);
        Action::Continue
    }

    fn on_data(&mut self, conn: &mut Conn, input: &[u8], out: &mut Vec<u8>) -> Step {
        if input.is_empty() {
            return Step::NeedMore;
        }
        if conn.body != Body::Done {
            return self.body(conn, input, out);
        }
        if conn.idle {
            // The next request begins: its head has the header timeout.
            conn.idle = false;
            self.arm(conn, self.timeouts.header);
        }
        if !conn.scan.worth_parsing(input) {
            return Step::NeedMore;
        }
        match request::parse(input) {
            Parsed::Partial => Step::NeedMore,
            Parsed::Request(head) => {
                conn.scan = Scan::default();
                self.start(conn, head, out)
            }
            Parsed::Rejected(reject) => {
                conn.scan = Scan::default();
                self.refuse(conn, reject, out);
                Step::Close(input.len())
            }
        }
    }

    fn on_too_long(&mut self, conn: &mut Conn, _: usize, out: &mut Vec<u8>) {
        // Body data is taken as it comes, and a chunk-size line or trailer
        // is refused by `body.rs` well below the cap; only a head, or those
        // under a cap set lower than their limits, reaches it.
        let reject = match conn.body {
            Body::Done | Body::Trailer { .. } => Reject::HeadersTooLarge,
            _ => Reject::Bad("chunk-size line too long"),
        };
        self.refuse(conn, reject, out);
    }

    fn deadline(&self, conn: &Conn) -> Option<Instant> {
        conn.due.map(|due| self.clock.instant(due))
    }

    fn on_deadline(&mut self, conn: &mut Conn, out: &mut Vec<u8>) -> Action {
        if conn.waits_for() != Wait::KeepAlive {
            let date = self.date();
            let body = b"request timed out\n";
            response::write(
                out,
                Status::RequestTimeout,
                &date,
                body,
                false,
                Persist::Close,
            );
        }
        // Nothing is left to answer, should a hard stop come before the
        // close.
        conn.body = Body::Done;
        conn.pending = Pending::None;
        conn.due = None;
        Action::Close
    }

    fn on_drain(&mut self, conn: &mut Conn, _: &mut Vec<u8>) -> Action {
        conn.draining = true;
        Action::Continue
    }

    fn on_closing(&mut self, conn: &mut Conn, out: &mut Vec<u8>) {
        // A hard stop in the middle of a body: say why it will not be
        // answered. An idle connection gets nothing (a response nobody
        // asked for would be read as the answer to its next request).
        if conn.body != Body::Done {
            let date = self.date();
            let body = b"server is shutting down\n";
            response::write(out, Status::Unavailable, &date, body, false, Persist::Close);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` the way the machinery does: calls `on_data` with the
    /// rest while it takes bytes. Returns the output, the bytes taken and
    /// whether the protocol asked to close.
    fn feed(http: &mut Http, conn: &mut Conn, input: &[u8]) -> (String, usize, bool) {
        let mut out = Vec::new();
        let mut at = 0;
        for _ in 0..1000 {
            match http.on_data(conn, &input[at..], &mut out) {
                Step::Took(n) => at += n,
                Step::Close(n) => {
                    return (String::from_utf8(out).unwrap(), at + n, true);
                }
                Step::NeedMore => break,
            }
        }
        (String::from_utf8(out).unwrap(), at, false)
    }

    fn responses(out: &str) -> usize {
        out.matches("HTTP/1.1 ").count()
    }

    /// The output without its `Date` lines, which change each second.
    fn undated(out: &str) -> String {
        out.split_inclusive("\r\n")
            .filter(|line| !line.starts_with("Date: "))
            .collect()
    }

    #[test]
    fn conn_stays_small() {
        // The deadline is four bytes of ticks, not a 16-byte `Instant`.
        // With the machinery's 16 bytes before it, a slot of 8-byte
        // alignment is 40 bytes for 20 to 24 bytes of state alike.
        assert!(std::mem::size_of::<Conn>() <= 24);
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Timeouts far apart, so that each deadline tells which it is.
    fn distinct() -> Timeouts {
        Timeouts {
            header: secs(10),
            keepalive: secs(20),
            body: secs(30),
        }
    }

    /// Runs `step` and checks that it left `conn` waiting for `wait` with
    /// a deadline `after` from when it ran: never before, and less than a
    /// tick late. Returns the deadline.
    #[track_caller]
    fn armed<T>(
        http: &mut Http,
        conn: &mut Conn,
        wait: Wait,
        after: Duration,
        step: impl FnOnce(&mut Http, &mut Conn) -> T,
    ) -> Instant {
        let before = http.clock.now();
        step(http, conn);
        let end = http.clock.now();
        assert_eq!(conn.waits_for(), wait);
        let due = http.deadline(conn).expect("a deadline");
        assert!(due >= before + after, "{:?} early", before + after - due);
        assert!(due < end + after + TICK, "{:?} late", due - (end + after));
        due
    }

    fn connect(http: &mut Http, conn: &mut Conn) {
        let peer = Peer::Ip(std::net::SocketAddr::from(([127, 0, 0, 1], 1)));
        assert_eq!(
            http.on_connect(conn, peer, &mut Vec::new()),
            Action::Continue
        );
    }

    #[test]
    fn the_clock_rounds_up_to_a_tick_and_gives_up_past_its_range() {
        let mut clock = Clock::new();
        for after in [
            Duration::from_nanos(1),
            secs(1),
            Duration::from_millis(1234),
        ] {
            let before = clock.now();
            let due = clock.due_in(after).unwrap();
            let end = clock.now();
            let at = clock.instant(due);
            assert!(at >= before + after && at < end + after + TICK, "{after:?}");
        }
        // A year is in range; 13.6 years of uptime on, nothing is.
        assert!(clock.due_in(secs(365 * 24 * 3600)).is_some());
        clock.skew = TICK * u32::MAX;
        assert_eq!(clock.due_in(secs(1)), None);
    }

    #[test]
    fn a_head_has_the_header_timeout_from_connect_and_bytes_do_not_move_it() {
        let mut http = Http::new(1, distinct());
        let mut conn = Conn::default();
        assert_eq!(http.deadline(&conn), None, "none before connect");
        let due = armed(&mut http, &mut conn, Wait::Head, secs(10), connect);
        http.clock.skew = secs(9);
        let (out, took, _) = feed(&mut http, &mut conn, b"GET / HTTP/1.1\r\nHo");
        assert_eq!((out.as_str(), took), ("", 0));
        assert_eq!(
            http.deadline(&conn),
            Some(due),
            "a dribbled head gains nothing"
        );
        // It passes: 408, Connection: close, and the connection ends.
        let mut out = Vec::new();
        assert_eq!(http.on_deadline(&mut conn, &mut out), Action::Close);
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{out}");
        assert!(out.contains("Connection: close\r\n"), "{out}");
        assert_eq!(http.deadline(&conn), None);
        // A hard stop after it adds nothing.
        let mut last = Vec::new();
        http.on_closing(&mut conn, &mut last);
        assert!(last.is_empty());
    }

    #[test]
    fn after_a_response_keepalive_then_the_next_head_from_its_first_byte() {
        let mut http = Http::new(1, distinct());
        let mut conn = Conn::default();
        connect(&mut http, &mut conn);
        armed(&mut http, &mut conn, Wait::KeepAlive, secs(20), |h, c| {
            assert_eq!(responses(&feed(h, c, GET).0), 1);
        });
        http.clock.skew = secs(15);
        armed(&mut http, &mut conn, Wait::Head, secs(10), |h, c| {
            feed(h, c, b"G");
        });
        // More of the head, later, does not move it again. (Bytes not
        // taken are offered again with the new ones behind them.)
        let due = http.deadline(&conn);
        http.clock.skew = secs(19);
        feed(&mut http, &mut conn, b"GET / HTTP/1.1\r\n");
        assert_eq!(http.deadline(&conn), due);
        // Whole: answered, and idle again, counted from the answer.
        armed(&mut http, &mut conn, Wait::KeepAlive, secs(20), |h, c| {
            assert_eq!(responses(&feed(h, c, GET).0), 1);
        });
        // Idle too long: closed without a word.
        let mut out = Vec::new();
        assert_eq!(http.on_deadline(&mut conn, &mut out), Action::Close);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn pipelined_requests_leave_the_connection_idle_after_the_last() {
        let mut http = Http::new(1, distinct());
        let mut conn = Conn::default();
        connect(&mut http, &mut conn);
        let mut three = GET.repeat(3);
        armed(&mut http, &mut conn, Wait::KeepAlive, secs(20), |h, c| {
            assert_eq!(responses(&feed(h, c, &three).0), 3);
        });
        // A partial fourth behind them: its head is what it waits for.
        three.extend_from_slice(b"GET /");
        armed(&mut http, &mut conn, Wait::Head, secs(10), |h, c| {
            assert_eq!(responses(&feed(h, c, &three).0), 3);
        });
    }

    #[test]
    fn every_read_of_a_body_moves_its_deadline() {
        let mut http = Http::new(1, distinct());
        let mut conn = Conn::default();
        connect(&mut http, &mut conn);
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        armed(&mut http, &mut conn, Wait::Body, secs(30), |h, c| {
            feed(h, c, head);
        });
        for (skew, bytes) in [(25, &b"5\r\nab"[..]), (50, b"c"), (75, b"de\r\n")] {
            http.clock.skew = secs(skew);
            armed(&mut http, &mut conn, Wait::Body, secs(30), |h, c| {
                let (out, took, _) = feed(h, c, bytes);
                assert_eq!((out.as_str(), took), ("", bytes.len()));
            });
        }
        // A read that takes nothing (half a chunk-size line) moves nothing.
        let due = http.deadline(&conn);
        http.clock.skew = secs(90);
        assert_eq!(feed(&mut http, &mut conn, b"1").1, 0);
        assert_eq!(http.deadline(&conn), due);
        // It stalls: 408, and no 503 on a hard stop after it.
        let mut out = Vec::new();
        assert_eq!(http.on_deadline(&mut conn, &mut out), Action::Close);
        assert!(out.starts_with(b"HTTP/1.1 408 "));
        let mut last = Vec::new();
        http.on_closing(&mut conn, &mut last);
        assert!(last.is_empty());
    }

    #[test]
    fn a_response_that_closes_leaves_no_deadline() {
        let mut http = Http::new(1, distinct());
        for req in [
            &b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
            b"GET / HTTP/1.0\r\n\r\n",
            b"nonsense\r\n\r\n",
        ] {
            let mut conn = Conn::default();
            connect(&mut http, &mut conn);
            let (_, _, close) = feed(&mut http, &mut conn, req);
            assert!(close);
            assert_eq!(http.deadline(&conn), None);
        }
    }

    #[test]
    fn timers_run_on_through_a_drain() {
        let mut http = Http::new(1, distinct());
        // Idle when the drain starts: its keep-alive deadline stands.
        let mut idle = Conn::default();
        connect(&mut http, &mut idle);
        feed(&mut http, &mut idle, GET);
        let due = http.deadline(&idle);
        http.on_drain(&mut idle, &mut Vec::new());
        assert_eq!(
            (idle.waits_for(), http.deadline(&idle)),
            (Wait::KeepAlive, due)
        );
        // In the middle of a head: its header deadline stands, and passing
        // it gets the 408.
        let mut slow = Conn::default();
        connect(&mut http, &mut slow);
        feed(&mut http, &mut slow, b"GET / HT");
        let due = http.deadline(&slow);
        http.on_drain(&mut slow, &mut Vec::new());
        assert_eq!((slow.waits_for(), http.deadline(&slow)), (Wait::Head, due));
        let mut out = Vec::new();
        assert_eq!(http.on_deadline(&mut slow, &mut out), Action::Close);
        assert!(out.starts_with(b"HTTP/1.1 408 "));
    }

    #[test]
    fn get_head_and_pipelining() {
        let mut http = Http::new(42, Timeouts::default());
        let mut conn = Conn::default();
        let two = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nHEAD /a HTTP/1.1\r\nHost: x\r\n\r\nGET";
        let (out, took, close) = feed(&mut http, &mut conn, two);
        assert_eq!(responses(&out), 2, "{out}");
        assert_eq!(took, two.len() - 3, "the partial third request waits");
        assert!(!close);
        assert!(
            out.ends_with("Content-Length: 14\r\n\r\n"),
            "HEAD has no body: {out}"
        );
        assert_eq!(out.matches("hello from 42\n").count(), 1, "{out}");
        assert!(!out.contains("Connection:"), "{out}");
    }

    #[test]
    fn http10_closes_unless_kept_alive() {
        let mut http = Http::new(1, Timeouts::default());
        let (out, _, close) = feed(&mut http, &mut Conn::default(), b"GET / HTTP/1.0\r\n\r\n");
        assert!(close && out.contains("Connection: close\r\n"), "{out}");
        let req = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
        let (out, _, close) = feed(&mut http, &mut Conn::default(), req);
        assert!(
            !close && out.contains("Connection: keep-alive\r\n"),
            "{out}"
        );
    }

    #[test]
    fn body_is_read_in_pieces_then_answered() {
        let mut http = Http::new(1, Timeouts::default());
        let mut conn = Conn::default();
        let head = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123";
        let (out, took, _) = feed(&mut http, &mut conn, head);
        assert_eq!(
            (out.as_str(), took),
            ("", head.len()),
            "no answer before the body ends"
        );
        let (out, took, _) = feed(&mut http, &mut conn, b"45678");
        assert_eq!((out.as_str(), took), ("", 5));
        // The body's last byte, then the next request, in one read.
        let rest = b"9GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let (out, took, close) = feed(&mut http, &mut conn, rest);
        assert_eq!(
            (responses(&out), took, close),
            (2, rest.len(), false),
            "{out}"
        );
    }

    #[test]
    fn a_body_larger_than_any_window_is_taken() {
        let mut http = Http::new(1, Timeouts::default());
        let mut conn = Conn::default();
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n";
        feed(&mut http, &mut conn, head);
        let chunk = vec![b'x'; 65_536];
        let mut sent = 0;
        let mut last = String::new();
        while sent < 10_000_000 {
            let n = chunk.len().min(10_000_000 - sent);
            let (out, took, _) = feed(&mut http, &mut conn, &chunk[..n]);
            assert_eq!(took, n);
            sent += n;
            last = out;
        }
        assert!(last.starts_with("HTTP/1.1 405 "), "{last}");
        assert!(last.contains("Allow: GET, HEAD\r\n"), "{last}");
    }

    #[test]
    fn expect_continue_only_for_a_request_that_will_be_served() {
        let mut http = Http::new(1, Timeouts::default());
        for framing in ["Content-Length: 2", "Transfer-Encoding: chunked"] {
            let mut conn = Conn::default();
            let req =
                format!("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n{framing}\r\n\r\n");
            let (out, took, _) = feed(&mut http, &mut conn, req.as_bytes());
            assert_eq!(
                (out.as_str(), took),
                ("HTTP/1.1 100 Continue\r\n\r\n", req.len())
            );
            let body: &[u8] = if framing.starts_with("Content") {
                b"ok"
            } else {
                b"2\r\nok\r\n0\r\n\r\n"
            };
            let (out, _, close) = feed(&mut http, &mut conn, body);
            assert!(out.starts_with("HTTP/1.1 200 ") && !close, "{out}");

            // Refused from the head: the final status at once, and a close.
            let mut conn = Conn::default();
            let req = req.replace("GET", "PUT");
            let (out, took, close) = feed(&mut http, &mut conn, req.as_bytes());
            assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
            assert!(!out.contains("100 Continue"), "{out}");
            assert!(out.contains("Connection: close\r\n"), "{out}");
            assert_eq!((took, close), (req.len(), true));
        }
        // Over the body limit, with the body already behind the head.
        let req = b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 999999999\r\n\r\nxx";
        let (out, took, close) = feed(&mut http, &mut Conn::default(), req);
        assert!(
            out.starts_with("HTTP/1.1 413 ") && !out.contains("100 Continue"),
            "{out}"
        );
        assert_eq!((took, close), (req.len(), true));
    }

    #[test]
    fn a_refused_method_without_expect_keeps_the_connection() {
        let mut http = Http::new(1, Timeouts::default());
        let mut conn = Conn::default();
        let req = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let (out, took, close) = feed(&mut http, &mut conn, req);
        assert!(
            out.starts_with("HTTP/1.1 405 ") && !out.contains("Connection:"),
            "{out}"
        );
        assert_eq!((took, close), (req.len(), false));
    }

    /// A chunked body, then a pipelined request, and a partial third.
    const CHUNKED_THEN_GET: &[u8] =
        b"GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
        4;ext=1\r\nbody\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n\
        HEAD /b HTTP/1.1\r\nHost: x\r\n\r\nGET";

    #[test]
    fn chunked_body_then_pipelined_request_at_every_split_point() {
        let (whole, took, _) = feed(
            &mut Http::new(1, Timeouts::default()),
            &mut Conn::default(),
            CHUNKED_THEN_GET,
        );
        assert_eq!(responses(&whole), 2, "{whole}");
        assert_eq!(took, CHUNKED_THEN_GET.len() - 3);
        for at in 0..=CHUNKED_THEN_GET.len() {
            let (mut http, mut conn) = (Http::new(1, Timeouts::default()), Conn::default());
            // What the first read leaves untaken is offered again, with
            // the second read behind it.
            let (first, taken, _) = feed(&mut http, &mut conn, &CHUNKED_THEN_GET[..at]);
            let (second, rest_taken, close) =
                feed(&mut http, &mut conn, &CHUNKED_THEN_GET[taken..]);
            assert_eq!(
                undated(&(first + &second)),
                undated(&whole),
                "split at {at}"
            );
            assert_eq!((taken + rest_taken, close), (took, false), "split at {at}");
        }
    }

    #[test]
    fn a_refused_chunked_body_is_answered_and_closed() {
        let mut http = Http::new(1, Timeouts::default());
        let head = "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (body, status) in [
            ("zz\r\n", "400"),
            ("3\r\nabcX", "400"),
            ("1000001\r\n", "413"),
            ("0\r\nno colon\r\n\r\n", "400"),
        ] {
            let mut conn = Conn::default();
            let req = format!("{head}{body}GET / HTTP/1.1\r\n\r\n");
            let (out, took, close) = feed(&mut http, &mut conn, req.as_bytes());
            assert!(
                out.starts_with(&format!("HTTP/1.1 {status} ")),
                "{body:?}: {out}"
            );
            assert!(out.contains("Connection: close\r\n"), "{out}");
            assert_eq!(
                (responses(&out), took, close),
                (1, req.len(), true),
                "{out}"
            );
            // A hard stop after the refusal adds nothing.
            let mut last = Vec::new();
            http.on_closing(&mut conn, &mut last);
            assert!(last.is_empty());
        }
    }

    /// Offers `input` as the machinery would if it came a byte at a time:
    /// a window growing by one byte while nothing is taken. Returns the
    /// output, and the window's length when the protocol took or closed.
    fn dribble(http: &mut Http, conn: &mut Conn, input: &[u8]) -> (String, Option<usize>) {
        let mut out = Vec::new();
        for end in 1..=input.len() {
            match http.on_data(conn, &input[..end], &mut out) {
                Step::NeedMore => {}
                Step::Took(_) | Step::Close(_) => {
                    return (String::from_utf8(out).unwrap(), Some(end));
                }
            }
        }
        (String::from_utf8(out).unwrap(), None)
    }

    #[test]
    fn a_head_sent_a_byte_at_a_time_is_answered_and_a_bad_one_refused_at_its_line() {
        let mut http = Http::new(1, Timeouts::default());
        let mut conn = Conn::default();
        let long = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n",
            "a".repeat(60_000)
        );
        let (out, at) = dribble(&mut http, &mut conn, long.as_bytes());
        assert_eq!(at, Some(long.len()));
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        // The next request on the connection is scanned from its start.
        let (out, at) = dribble(&mut http, &mut conn, GET);
        assert_eq!(at, Some(GET.len()));
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        // A request line that cannot be HTTP is refused when it ends, not
        // only once an empty line comes.
        let mut conn = Conn::default();
        let (out, at) = dribble(&mut http, &mut conn, b"\x16\x03\x01 hello\r\nmore bytes");
        assert_eq!(at, Some(b"\x16\x03\x01 hello\r\n".len()));
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    }

    #[test]
    fn refusals_answer_then_close() {
        let mut http = Http::new(1, Timeouts::default());
        for (req, status) in [
            (&b"nonsense\r\n\r\n"[..], "400"),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, br\r\n\r\n",
                "400",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 16777217\r\n\r\n",
                "413",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: br\r\n\r\n",
                "501",
            ),
        ] {
            let (out, took, close) = feed(&mut http, &mut Conn::default(), req);
            assert!(out.starts_with(&format!("HTTP/1.1 {status} ")), "{out}");
            assert!(out.contains("Connection: close\r\n"), "{out}");
            assert_eq!((took, close), (req.len(), true));
        }
        let mut out = Vec::new();
        http.on_too_long(&mut Conn::default(), 65_536, &mut out);
        assert!(out.starts_with(b"HTTP/1.1 431 "));
    }

    #[test]
    fn drain_closes_after_the_next_response() {
        let mut http = Http::new(1, Timeouts::default());
        let mut conn = Conn::default();
        let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let (out, _, close) = feed(&mut http, &mut conn, get);
        assert!(!close && !out.contains("Connection:"));
        // Idle when the drain starts: nothing is sent, nothing closed.
        let mut notice = Vec::new();
        assert_eq!(http.on_drain(&mut conn, &mut notice), Action::Continue);
        assert!(notice.is_empty());
        // The next request is answered, with Connection: close, and the
        // pipelined one behind it is left.
        let mut two = get.to_vec();
        two.extend_from_slice(get);
        let (out, took, close) = feed(&mut http, &mut conn, &two);
        assert_eq!(responses(&out), 1, "{out}");
        assert!(out.contains("Connection: close\r\n") && close, "{out}");
        assert_eq!(took, get.len());
    }

    #[test]
    fn drain_in_the_middle_of_a_body() {
        let mut http = Http::new(1, Timeouts::default());
        let mut conn = Conn::default();
        feed(
            &mut http,
            &mut conn,
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab",
        );
        http.on_drain(&mut conn, &mut Vec::new());
        let (out, _, close) = feed(&mut http, &mut conn, b"cd");
        assert!(close && out.starts_with("HTTP/1.1 200 ") && out.contains("Connection: close"));
    }

    #[test]
    fn hard_stop_speaks_only_mid_request() {
        let mut http = Http::new(1, Timeouts::default());
        let mut out = Vec::new();
        http.on_closing(&mut Conn::default(), &mut out);
        assert!(out.is_empty());
        let mut conn = Conn::default();
        feed(
            &mut http,
            &mut conn,
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n",
        );
        http.on_closing(&mut conn, &mut out);
        assert!(out.starts_with(b"HTTP/1.1 503 "));
    }
}
