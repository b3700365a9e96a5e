//! Unit tests: each command by hand, each command split at every point, and
//! seeded random streams checked against a reference decoder written
//! separately from the filter.

use super::*;

/// What the filter made of a stream: data runs (adjacent ones merged) and
/// commands, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Data(Vec<u8>),
    Cmd(Command),
}

use Token::{Cmd, Data};

use crate::test_rng::Rng;

const WILL_TM: Token = Cmd(Command::Reply(Reply::Option {
    verb: WILL,
    option: TIMING_MARK,
}));
const DISCARD: Token = Cmd(Command::Discard);
const YES: Token = Cmd(Command::Reply(Reply::AreYouThere));

fn refuse(verb: u8, option: u8) -> Token {
    Cmd(Command::Reply(Reply::Option { verb, option }))
}

fn push_data(tokens: &mut Vec<Token>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if let Some(Data(last)) = tokens.last_mut() {
        last.extend_from_slice(bytes);
    } else {
        tokens.push(Data(bytes.to_vec()));
    }
}

/// Feeds `chunks` to one filter, one read each, and records what it
/// returned. Checks the shape of every `Filtered` on the way.
fn run(filter: &mut Telnet, chunks: &[&[u8]]) -> Vec<Token> {
    let mut tokens = Vec::new();
    for chunk in chunks {
        let mut buf = chunk.to_vec();
        let mut at = 0;
        // Each call uses at least one byte, so this ends.
        for _ in 0..=buf.len() {
            if at == buf.len() {
                break;
            }
            let got = filter.filter(&mut buf[at..]);
            assert!(got.data <= got.used, "{got:?}");
            assert!(got.used >= 1 && at + got.used <= buf.len(), "{got:?}");
            if got.command.is_none() {
                assert_eq!(at + got.used, buf.len(), "stopped early: {got:?}");
            }
            push_data(&mut tokens, &buf[at..at + got.data]);
            tokens.extend(got.command.map(Cmd));
            at += got.used;
        }
        assert_eq!(at, buf.len(), "chunk not used up");
    }
    tokens
}

fn whole(input: &[u8]) -> Vec<Token> {
    run(&mut Telnet::new(), &[input])
}

/// The same rules as the module docs, written as a decoder over the whole
/// stream at once with look-ahead, sharing no code with the filter.
fn reference(input: &[u8]) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < input.len() {
        if input[i] != IAC {
            push_data(&mut tokens, &input[i..=i]);
            i += 1;
            continue;
        }
        let Some(&cmd) = input.get(i + 1) else {
            break;
        };
        i += 2;
        match cmd {
            IAC => push_data(&mut tokens, &[0xff]),
            WILL | WONT | DO | DONT => {
                let Some(&option) = input.get(i) else {
                    break;
                };
                i += 1;
                match (cmd, option) {
                    (DO, TIMING_MARK) => tokens.push(refuse(WILL, option)),
                    (DO, _) => tokens.push(refuse(WONT, option)),
                    (WILL, _) => tokens.push(refuse(DONT, option)),
                    _ => {}
                }
            }
            SB => loop {
                match (input.get(i), input.get(i + 1)) {
                    (None, _) | (Some(&IAC), None) => {
                        i = input.len();
                        break;
                    }
                    (Some(&IAC), Some(&SE)) => {
                        i += 2;
                        break;
                    }
                    (Some(&IAC), Some(&IAC)) => i += 2,
                    // Ends the subnegotiation; the outer loop reads the IAC.
                    (Some(&IAC), Some(_)) => break,
                    (Some(_), _) => i += 1,
                }
            },
            IP | AO | EL => tokens.push(DISCARD),
            AYT => tokens.push(YES),
            _ => {}
        }
    }
    tokens
}

/// Every way to cut `input` into consecutive non-empty chunks.
fn every_split(input: &[u8]) -> Vec<Vec<&[u8]>> {
    assert!(input.len() <= 12, "2^(n-1) splits");
    let cuts = input.len().saturating_sub(1);
    (0..1u32 << cuts)
        .map(|mask| {
            let mut chunks = Vec::new();
            let mut start = 0;
            for i in 0..cuts {
                if mask & (1 << i) != 0 {
                    chunks.push(&input[start..=i]);
                    start = i + 1;
                }
            }
            chunks.push(&input[start..]);
            chunks
        })
        .collect()
}

/// Every command in the docs' table, with what it must produce, between
/// two data bytes.
fn sequences() -> Vec<(Vec<u8>, Vec<Token>)> {
    let mut cases = vec![
        (vec![IAC, IAC], vec![Data(b"a\xffb".to_vec())]),
        (
            vec![IAC, DO, TIMING_MARK],
            vec![Data(b"a".to_vec()), WILL_TM, Data(b"b".to_vec())],
        ),
        (
            vec![IAC, DO, 1],
            vec![Data(b"a".to_vec()), refuse(WONT, 1), Data(b"b".to_vec())],
        ),
        (
            vec![IAC, WILL, 24],
            vec![Data(b"a".to_vec()), refuse(DONT, 24), Data(b"b".to_vec())],
        ),
        (
            vec![IAC, WILL, TIMING_MARK],
            vec![
                Data(b"a".to_vec()),
                refuse(DONT, TIMING_MARK),
                Data(b"b".to_vec()),
            ],
        ),
        (vec![IAC, WONT, 1], vec![Data(b"ab".to_vec())]),
        (vec![IAC, DONT, 1], vec![Data(b"ab".to_vec())]),
        (
            vec![IAC, AYT],
            vec![Data(b"a".to_vec()), YES, Data(b"b".to_vec())],
        ),
        (
            // What Debian's telnet sends on Ctrl-C.
            vec![IAC, IP, IAC, DO, TIMING_MARK],
            vec![Data(b"a".to_vec()), DISCARD, WILL_TM, Data(b"b".to_vec())],
        ),
        (
            vec![IAC, SB, 24, 0, b'V', b'T', IAC, IAC, IAC, SE],
            vec![Data(b"ab".to_vec())],
        ),
        (
            vec![IAC, SB, 24, 1, IAC, IP],
            vec![Data(b"a".to_vec()), DISCARD, Data(b"b".to_vec())],
        ),
    ];
    for discard in [IP, AO, EL] {
        cases.push((
            vec![IAC, discard],
            vec![Data(b"a".to_vec()), DISCARD, Data(b"b".to_vec())],
        ));
    }
    // Commands that need no action, and bytes after IAC that are none.
    for quiet in [240, 241, 242, 243, 247, 249, 0, b'a', b'\n', 0x7f, 0xef] {
        cases.push((vec![IAC, quiet], vec![Data(b"ab".to_vec())]));
    }
    cases
}

#[test]
fn the_state_is_one_byte() {
    assert_eq!(std::mem::size_of::<Telnet>(), 1);
    assert_eq!(Telnet::default(), Telnet::new());
}

#[test]
fn text_passes_unchanged() {
    let text = b"hello\r\nNUL\0 high \xf0\xf4\xfd\xfe bytes\r\0\n";
    let filter = Telnet::new();
    assert!(filter.passes(text));
    assert_eq!(whole(text), vec![Data(text.to_vec())]);
    assert!(!filter.passes(b"a\xffb"));
    assert!(filter.passes(b""));
}

#[test]
fn each_command_does_what_the_table_says() {
    for (seq, want) in sequences() {
        let input = [&b"a"[..], &seq, b"b"].concat();
        assert_eq!(whole(&input), want, "{seq:02x?}");
        assert_eq!(reference(&input), want, "reference, {seq:02x?}");
    }
}

#[test]
fn each_command_split_at_every_point_is_resumed() {
    for (seq, want) in sequences() {
        let input = [&b"a"[..], &seq, b"b"].concat();
        for chunks in every_split(&input) {
            assert_eq!(
                run(&mut Telnet::new(), &chunks),
                want,
                "{seq:02x?} as {chunks:02x?}"
            );
        }
    }
}

#[test]
fn ctrl_c_mid_line_then_a_new_line() {
    // A partial line, telnet's Ctrl-C, and the next line in one read: the
    // connection gets the partial line, then Discard, then WILL TM, then
    // the new line.
    let mut buf = b"part\xff\xf4\xff\xfd\x06after\r\n".to_vec();
    let mut filter = Telnet::new();
    let got = filter.filter(&mut buf);
    assert_eq!(
        got,
        Filtered {
            data: 4,
            used: 6,
            command: Some(Command::Discard)
        }
    );
    assert_eq!(&buf[..4], b"part");
    let got = filter.filter(&mut buf[6..]);
    assert_eq!(got.data, 0);
    assert_eq!(got.used, 3);
    assert_eq!(
        got.command,
        Some(Command::Reply(Reply::Option {
            verb: WILL,
            option: TIMING_MARK
        }))
    );
    let got = filter.filter(&mut buf[9..]);
    assert_eq!((got.data, got.used, got.command), (7, 7, None));
    assert_eq!(&buf[9..16], b"after\r\n");
}

#[test]
fn data_is_moved_to_the_front_in_place() {
    let mut buf = b"ab\xff\xfb\x18cd\xff\xffe\xff\xfa\x18\x00xx\xff\xf0fg".to_vec();
    let got = Telnet::new().filter(&mut buf);
    // Stops after WILL 18 with `ab` in front.
    assert_eq!((got.data, got.used), (2, 5));
    let mut filter = Telnet::new();
    let mut rest = buf[5..].to_vec();
    let got = filter.filter(&mut rest);
    assert_eq!(got.command, None);
    assert_eq!(&rest[..got.data], b"cd\xffefg");
    assert_eq!(got.used, rest.len());
}

#[test]
fn replies_are_the_bytes_telnet_expects() {
    let mut out = Vec::new();
    Reply::Option {
        verb: WILL,
        option: TIMING_MARK,
    }
    .append_to(&mut out);
    Reply::Option {
        verb: WONT,
        option: 3,
    }
    .append_to(&mut out);
    Reply::AreYouThere.append_to(&mut out);
    assert_eq!(out, b"\xff\xfb\x06\xff\xfc\x03[Yes]\r\n");
}

#[test]
fn each_request_is_answered_once_and_refusals_are_not() {
    // A client that asks twice is refused twice (once per request); what
    // it says about its own options never gets an answer.
    let input = [IAC, DO, 3, IAC, DO, 3, IAC, WONT, 3, IAC, DONT, 3];
    assert_eq!(whole(&input), vec![refuse(WONT, 3), refuse(WONT, 3)]);
}

#[test]
fn a_long_subnegotiation_is_skipped_without_memory() {
    let mut filter = Telnet::new();
    let mut tokens = run(&mut filter, &[&[IAC, SB, 31]]);
    let filler = vec![b'x'; 100_000];
    for _ in 0..50 {
        tokens.extend(run(&mut filter, &[&filler]));
    }
    tokens.extend(run(&mut filter, &[&[IAC], &[SE], b"back\n"]));
    assert_eq!(tokens, vec![Data(b"back\n".to_vec())]);
}

#[test]
fn ctrl_c_ends_an_unfinished_subnegotiation() {
    let input = [
        &[IAC, SB, 24][..],
        b"lost\r\n",
        &[IAC, IP, IAC, DO, TIMING_MARK],
        b"kept\r\n",
    ]
    .concat();
    assert_eq!(
        whole(&input),
        vec![DISCARD, WILL_TM, Data(b"kept\r\n".to_vec())]
    );
}

#[test]
fn an_iac_at_the_end_of_a_read_is_held() {
    let mut filter = Telnet::new();
    let mut buf = *b"ab\xff";
    let got = filter.filter(&mut buf);
    assert_eq!((got.data, got.used, got.command), (2, 3, None));
    assert!(
        !filter.passes(b"x"),
        "in a command: the next read is filtered"
    );
    let mut buf = [IAC];
    let got = filter.filter(&mut buf);
    assert_eq!((got.data, got.used, got.command), (1, 1, None));
    assert_eq!(buf, [IAC]);
    assert!(filter.passes(b"x"));
}

/// A byte stream thick with IAC, command bytes and the options used above,
/// so that every state and transition is reached often.
fn telnetish(rng: &mut Rng, len: usize) -> Vec<u8> {
    const BYTES: [u8; 12] = [
        IAC,
        IAC,
        IAC,
        DO,
        WILL,
        WONT,
        DONT,
        SB,
        SE,
        IP,
        AYT,
        TIMING_MARK,
    ];
    (0..len)
        .map(|_| match rng.below(4) {
            0 | 1 => BYTES[rng.below(BYTES.len())],
            2 => 240 + rng.below(16) as u8,
            _ => rng.next() as u8,
        })
        .collect()
}

fn random_chunks<'a>(rng: &mut Rng, input: &'a [u8]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut at = 0;
    while at < input.len() {
        let len = 1 + rng.below(input.len() - at);
        let len = if rng.below(3) == 0 { len.min(3) } else { len };
        chunks.push(&input[at..at + len]);
        at += len;
    }
    chunks
}

#[test]
fn random_streams_agree_with_the_reference_however_they_are_split() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..20_000 {
        let len = rng.below(64);
        let input = telnetish(&mut rng, len);
        let want = reference(&input);
        let chunks = random_chunks(&mut rng, &input);
        assert_eq!(
            run(&mut Telnet::new(), &chunks),
            want,
            "round {round}: {input:02x?} as {chunks:02x?}"
        );
    }
}

#[test]
fn random_bytes_never_panic_and_bytes_without_iac_pass_through() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..5_000 {
        let len = rng.below(300);
        let mut input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let chunks = random_chunks(&mut rng, &input);
        let mut filter = Telnet::new();
        run(&mut filter, &chunks);
        // Whatever state that left, an IAC-free stream from a fresh filter
        // comes back byte for byte and unsplit into tokens.
        input.retain(|&b| b != IAC);
        let fresh = Telnet::new();
        assert!(fresh.passes(&input));
        let chunks = random_chunks(&mut rng, &input);
        let got = run(&mut Telnet::new(), &chunks);
        let want = if input.is_empty() {
            vec![]
        } else {
            vec![Data(input.clone())]
        };
        assert_eq!(got, want);
    }
}
