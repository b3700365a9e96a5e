//! A request body's framing, read and discarded in place: `Content-Length`
//! bytes, or the chunked coding (RFC 9112, 7.1). A pure state machine over
//! the front of the input window: no I/O, and no buffer of its own.
//!
//! Guarantees:
//! - Body bytes are taken as they arrive, in any split. A chunk-size line,
//!   the CRLF after a chunk's data and a trailer field line are taken only
//!   once whole: until then nothing of them is taken, and the machinery
//!   offers them again with more bytes behind them. So the window holds at
//!   most one such line, bounded by [`MAX_CHUNK_LINE`] or
//!   [`MAX_TRAILER`].
//! - A body is at most [`MAX_BODY`] bytes of data, however it is framed. A
//!   chunk that would pass the limit is refused at its size line, before
//!   its data is read.
//! - The end of the body is found exactly, so a request pipelined behind
//!   it is left untaken. Framing is read strictly: every line ends in
//!   CRLF, and control characters in a chunk-size line or a trailer field
//!   are refused, so that no bare LF can end a line here that another
//!   parser on the path would read differently (request smuggling).
//! - Chunk extensions and trailer fields are checked and then ignored: the
//!   server acts on neither.

/// The largest request body read, in data bytes (chunk framing not
/// counted); a larger one is refused with 413.
pub const MAX_BODY: u32 = 16 << 20;
/// The longest chunk-size line, extensions and CRLF included.
pub const MAX_CHUNK_LINE: usize = 4096;
/// The largest trailer section, its final empty line included.
pub const MAX_TRAILER: u32 = 8192;

/// Where the reader is in a body, with the counts it needs: 12 bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body, or its end has been read.
    #[default]
    Done,
    /// `Content-Length` bytes still to come (at least 1).
    Length(u32),
    /// At a chunk-size line; `room` more data bytes are allowed.
    Size { room: u32 },
    /// In a chunk's data, `left` bytes of it still to come (at least 1).
    Data { left: u32, room: u32 },
    /// At the CRLF that ends a chunk's data.
    DataEnd { room: u32 },
    /// In the trailer section, `room` more bytes of it allowed.
    Trailer { room: u32 },
}

/// What [`Body::read`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Took this many bytes (0 when a line is not whole yet); the body
    /// goes on.
    More(usize),
    /// Took this many bytes, through the end of the body: at least 1,
    /// unless `read` was called on [`Body::Done`].
    End(usize),
    /// The framing is broken (400, with a reason for the body).
    Bad(&'static str),
    /// The data passes [`MAX_BODY`] (413).
    TooLarge,
    /// The trailer section passes [`MAX_TRAILER`] (431).
    TrailerTooLarge,
}

impl Body {
    /// A body of `Content-Length: len`, already checked against
    /// [`MAX_BODY`].
    pub fn length(len: u32) -> Body {
        if len == 0 {
            Body::Done
        } else {
            Body::Length(len)
        }
    }

    /// A chunked body, from its first chunk-size line.
    pub fn chunked() -> Body {
        Body::Size { room: MAX_BODY }
    }

    /// Takes what it can of the body from the front of `input`. After
    /// anything but [`Read::More`] the state is [`Body::Done`].
    pub fn read(&mut self, input: &[u8]) -> Read {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match *self {
                Body::Done => return Read::End(at),
                Body::Length(left) => {
                    let took = left.min(clamp(rest.len()));
                    at += took as usize;
                    if took < left {
                        *self = Body::Length(left - took);
                        return Read::More(at);
                    }
                    *self = Body::Done;
                    return Read::End(at);
                }
                Body::Size { room } => match chunk_size(rest) {
                    Line::Partial => return Read::More(at),
                    Line::Bad(why) => return self.fail(Read::Bad(why)),
                    Line::Size(_, size) if size > u64::from(room) => {
                        return self.fail(Read::TooLarge);
                    }
                    Line::Size(len, 0) => {
                        at += len;
                        *self = Body::Trailer { room: MAX_TRAILER };
                    }
                    Line::Size(len, size) => {
                        at += len;
                        // `size <= room`, so it fits.
                        let left = size as u32;
                        *self = Body::Data {
                            left,
                            room: room - left,
                        };
                    }
                },
                Body::Data { left, room } => {
                    let took = left.min(clamp(rest.len()));
                    at += took as usize;
                    if took < left {
                        *self = Body::Data {
                            left: left - took,
                            room,
                        };
                        return Read::More(at);
                    }
                    *self = Body::DataEnd { room };
                }
                Body::DataEnd { room } => match rest {
                    [b'\r', b'\n', ..] => {
                        at += 2;
                        *self = Body::Size { room };
                    }
                    [] | [b'\r'] => return Read::More(at),
                    _ => return self.fail(Read::Bad("chunk data not followed by CRLF")),
                },
                Body::Trailer { room } => {
                    let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() >= room as usize {
                            return self.fail(Read::TrailerTooLarge);
                        }
                        return Read::More(at);
                    };
                    let len = lf + 1;
                    if len > room as usize {
                        return self.fail(Read::TrailerTooLarge);
                    }
                    let Some(field) = rest[..lf].strip_suffix(b"\r") else {
                        return self.fail(Read::Bad("bare LF in the trailer section"));
                    };
                    at += len;
                    if field.is_empty() {
                        *self = Body::Done;
                        return Read::End(at);
                    }
                    if !is_field_line(field) {
                        return self.fail(Read::Bad("bad trailer field"));
                    }
                    *self = Body::Trailer {
                        room: room - len as u32,
                    };
                }
            }
        }
    }

    fn fail(&mut self, why: Read) -> Read {
        *self = Body::Done;
        why
    }
}

/// A window length as a count of body bytes: anything past `u32::MAX`
/// is more than any body needs.
fn clamp(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// A chunk-size line at the front of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Partial,
    /// The line's length, CRLF included, and the chunk's size.
    Size(usize, u64),
    Bad(&'static str),
}

/// Reads `chunk-size [chunk-ext] CRLF` with `httparse`, adding what it
/// lets through: it reads an empty size as 0, and takes any byte in an
/// extension, a bare LF included.
fn chunk_size(input: &[u8]) -> Line {
    let Some(&first) = input.first() else {
        return Line::Partial;
    };
    if !first.is_ascii_hexdigit() {
        return Line::Bad("bad chunk size");
    }
    match httparse::parse_chunk_size(input) {
        Ok(httparse::Status::Complete((len, size))) => {
            // The line without its CRLF, which httparse has checked.
            if input[..len - 2].iter().any(|&b| is_ctl(b)) {
                return Line::Bad("control character in a chunk-size line");
            }
            Line::Size(len, size)
        }
        Ok(httparse::Status::Partial) => {
            if input.contains(&b'\n') {
                // httparse only stops at CR; an LF before it is in an
                // extension.
                Line::Bad("control character in a chunk-size line")
            } else if input.len() >= MAX_CHUNK_LINE {
                Line::Bad("chunk-size line too long")
            } else {
                Line::Partial
            }
        }
        // Not hex, more than 15 digits, or CR without LF.
        Err(httparse::InvalidChunkSize) => Line::Bad("bad chunk size"),
    }
}

/// A control character other than HTAB.
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// `field-name ":" field-value` without its CRLF (RFC 9110, 5.1 and 5.5):
/// a token, a colon, then no control character but HTAB. A line that
/// starts with whitespace (obsolete line folding) is not one.
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    !name.is_empty() && name.iter().all(|&b| is_tchar(b)) && !value.iter().any(|&b| is_ctl(b))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunked body with an extension, a quoted extension value, an
    /// uppercase size and two trailer fields.
    const CHUNKED: &[u8] = b"5;name=value\r\nhello\r\n\
        A ; q=\"a;b\"\r\n0123456789\r\n\
        1\r\n!\r\n\
        0\r\nExpires: never\r\nX-Sum:\tabc\r\n\r\n";
    const NEXT: &[u8] = b"GET / HTTP/1.1\r\n";

    /// Reads `pieces` the way the machinery delivers them: the bytes not
    /// taken stay at the front of the window and the next piece is added
    /// behind them; `read` is called again while it takes bytes. Returns
    /// the outcome and how many bytes of the whole were taken.
    fn read_in(body: &mut Body, pieces: &[&[u8]]) -> (Read, usize) {
        let mut window = Vec::new();
        let mut taken = 0;
        for piece in pieces {
            window.extend_from_slice(piece);
            loop {
                match body.read(&window) {
                    Read::More(0) => break,
                    Read::More(n) => {
                        window.drain(..n);
                        taken += n;
                    }
                    Read::End(n) => return (Read::End(n), taken + n),
                    other => return (other, taken),
                }
            }
        }
        (Read::More(0), taken)
    }

    fn whole(input: &[u8]) -> (Read, usize) {
        read_in(&mut Body::chunked(), &[input])
    }

    #[test]
    fn a_body_stays_small() {
        assert!(std::mem::size_of::<Body>() <= 12);
    }

    #[test]
    fn chunked_across_every_split_point() {
        let mut all = CHUNKED.to_vec();
        all.extend_from_slice(NEXT);
        for i in 0..=all.len() {
            let mut body = Body::chunked();
            let (read, taken) = read_in(&mut body, &[&all[..i], &all[i..]]);
            assert!(matches!(read, Read::End(_)), "split at {i}: {read:?}");
            assert_eq!(taken, CHUNKED.len(), "split at {i}");
            assert_eq!(body, Body::Done);
        }
    }

    #[test]
    fn chunked_across_every_pair_of_split_points() {
        for i in 0..=CHUNKED.len() {
            for j in i..=CHUNKED.len() {
                let pieces = [&CHUNKED[..i], &CHUNKED[i..j], &CHUNKED[j..]];
                let (read, taken) = read_in(&mut Body::chunked(), &pieces);
                assert!(matches!(read, Read::End(_)), "split at {i}, {j}: {read:?}");
                assert_eq!(taken, CHUNKED.len(), "split at {i}, {j}");
            }
        }
    }

    #[test]
    fn chunked_byte_by_byte() {
        let pieces: Vec<&[u8]> = CHUNKED.chunks(1).collect();
        let (read, taken) = read_in(&mut Body::chunked(), &pieces);
        assert_eq!((read, taken), (Read::End(2), CHUNKED.len()));
    }

    #[test]
    fn the_shortest_body_and_its_end() {
        assert_eq!(whole(b"0\r\n\r\nGET"), (Read::End(5), 5));
        assert_eq!(whole(b"0\r\n\r"), (Read::More(0), 3));
        assert_eq!(whole(b"0\r\n"), (Read::More(0), 3));
        assert_eq!(whole(b"0"), (Read::More(0), 0));
    }

    #[test]
    fn content_length_in_pieces() {
        let mut body = Body::length(10);
        assert_eq!(body.read(b"0123"), Read::More(4));
        assert_eq!(body.read(b"456789GET"), Read::End(6));
        assert_eq!(body, Body::Done);
        assert_eq!(Body::length(0), Body::Done);
    }

    #[test]
    fn malformed_chunk_sizes_are_bad() {
        for text in [
            &b"\r\n"[..],
            b";ext\r\n",
            b" 5\r\n",
            b"-1\r\n",
            b"+5\r\n",
            b"0x5\r\n",
            b"g\r\n",
            b"5 6\r\n",
            b"5\n",
            b"5\rX",
            b"10000000000000000\r\n",
            b"5;a\nb\r\n",
            b"5;a\x00b\r\n",
            b"5;a\nb",
        ] {
            let (read, _) = whole(text);
            assert!(
                matches!(read, Read::Bad(_)),
                "{:?}: {read:?}",
                String::from_utf8_lossy(text)
            );
        }
        // Whitespace before the extension is allowed (BWS).
        assert_eq!(whole(b"3 ;x\r\nabc\r\n0\r\n\r\n"), (Read::End(16), 16));
    }

    #[test]
    fn chunk_data_must_end_in_crlf() {
        for text in [
            &b"3\r\nabcd\r\n"[..],
            b"3\r\nabc\n0\r\n\r\n",
            b"3\r\nabc\rX",
        ] {
            let (read, _) = whole(text);
            assert!(matches!(read, Read::Bad(_)), "{text:?}: {read:?}");
        }
    }

    #[test]
    fn a_long_chunk_size_line_is_refused_before_the_window_fills() {
        let mut line = b"5;".to_vec();
        line.resize(MAX_CHUNK_LINE - 1, b'x');
        assert_eq!(whole(&line), (Read::More(0), 0));
        line.push(b'x');
        assert!(matches!(whole(&line).0, Read::Bad(_)));
    }

    #[test]
    fn bad_trailers() {
        for text in [
            &b"0\r\nNo-Colon\r\n\r\n"[..],
            b"0\r\n: no name\r\n\r\n",
            b"0\r\nBad Name: x\r\n\r\n",
            b"0\r\nA: b\r\n folded\r\n\r\n",
            b"0\r\nA: b\n\r\n",
            b"0\r\n\n",
            b"0\r\nA: b\x01\r\n\r\n",
        ] {
            let (read, _) = whole(text);
            assert!(matches!(read, Read::Bad(_)), "{text:?}: {read:?}");
        }
    }

    #[test]
    fn the_trailer_section_is_bounded() {
        let mut text = b"0\r\n".to_vec();
        let field = b"X-Pad: 0123456789012345678901234567890123456789\r\n";
        while text.len() + field.len() + 2 <= 3 + MAX_TRAILER as usize {
            text.extend_from_slice(field);
        }
        let fits = [&text[..], b"\r\n"].concat();
        assert_eq!(whole(&fits).1, fits.len());
        text.extend_from_slice(field);
        text.extend_from_slice(b"\r\n");
        assert_eq!(whole(&text).0, Read::TrailerTooLarge);
        // One unterminated line as long as the section.
        let mut one = b"0\r\nX: ".to_vec();
        one.resize(3 + MAX_TRAILER as usize, b'a');
        assert_eq!(whole(&one).0, Read::TrailerTooLarge);
    }

    #[test]
    fn the_body_limit_counts_data_across_chunks() {
        // A size line over the limit is refused before any data comes.
        let over = format!("{:x}\r\n", u64::from(MAX_BODY) + 1);
        assert_eq!(whole(over.as_bytes()), (Read::TooLarge, 0));
        // Two chunks that together pass it: the second size is refused.
        let half = MAX_BODY / 2;
        let mut body = Body::chunked();
        let head = format!("{half:x}\r\n");
        let data = vec![b'x'; half as usize];
        let second = format!("\r\n{:x}\r\n", half + 1);
        let (read, taken) = read_in(&mut body, &[head.as_bytes(), &data, second.as_bytes()]);
        assert_eq!(read, Read::TooLarge);
        // The refusal's call took the CRLF before the size line too, but
        // a refusal closes the connection: what it took is not counted.
        assert_eq!(taken, head.len() + data.len());
        // Exactly the limit is read.
        let mut body = Body::chunked();
        let last = format!("\r\n{half:x}\r\n");
        let end = b"\r\n0\r\n\r\n";
        let (read, _) = read_in(
            &mut body,
            &[head.as_bytes(), &data, last.as_bytes(), &data, end],
        );
        assert_eq!(read, Read::End(end.len()));
    }
}
