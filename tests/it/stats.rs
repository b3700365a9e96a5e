//! `drainport stats` against real processes: running, draining and
//! closing ones, one of another service on the same address, a stopped one,
//! one of another user, and a busy one; its lines, and its Prometheus text
//! checked line by line (and by `promtool` where it is installed).

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use libc::{SIGCONT, SIGHUP, SIGSTOP};

use crate::runner::{Runner, Who};
use crate::util::{BIN, Client, Server, find_tool, one_line_error, skip, status_value};

/// Runs `drainport stats ARGS` to its end.
fn run_stats(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("stats")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run drainport stats")
}

/// The lines `drainport stats ADDR` prints, by pid; it must succeed.
#[track_caller]
fn lines(addr: &str) -> HashMap<u32, String> {
    let out = run_stats(&[addr]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    stdout
        .lines()
        .map(|line| {
            assert!(line.starts_with(&format!("{addr} pid=")), "{line}");
            let pid = status_value(line, "pid").parse().expect("a pid");
            (pid, line.to_owned())
        })
        .collect()
}

/// The version `drainport -V` names, which every answer here carries.
fn version() -> String {
    let out = Command::new(BIN).arg("-V").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim()
        .strip_prefix("drainport ")
        .expect("drainport <version>")
        .to_owned()
}

/// Processes in each state on one address, and one of another service:
/// one line each, with its state, its clients and what it counted.
#[test]
fn processes_running_draining_closing_and_of_another_service() {
    // A: two clients, then a drain whose timeout passes at once, with the
    // closes spread so wide that both clients stay through the test.
    let mut a = Server::start(&[
        "-q",
        "--drain-timeout",
        "0.2",
        "--close-spread",
        "600",
        "127.0.0.1:0",
    ]);
    let addr = a.addr.to_string();
    let mut a_clients: Vec<Client> = (0..2).map(|_| Client::connect(a.addr)).collect();
    for client in &mut a_clients {
        assert_eq!(client.echo("to a"), a.pid);
    }
    // B: one client, then a drain without a timeout.
    let mut b = a.sibling(&["-q"]);
    a.signal(SIGHUP);
    a.expect_line("reached its drain timeout");
    let mut b_client = Client::connect(a.addr);
    assert_eq!(
        b_client.echo("to b"),
        b.pid,
        "A drains: new clients go to B"
    );
    // C: one client, running. D: another service, on purpose.
    let mut c = a.sibling(&["-q"]);
    b.signal(SIGHUP);
    b.expect_line("closing tasks: 1");
    let mut c_client = Client::connect(a.addr);
    assert_eq!(
        c_client.echo("to c"),
        c.pid,
        "B drains: new clients go to C"
    );
    let mut d = Server::start(&["-q", "--service", "other", "--join-any", &addr]);

    let found = lines(&addr);
    assert_eq!(found.len(), 4, "{found:#?}");
    let version = version();
    for (pid, state, clients, accepted, service) in [
        (a.pid, "closing", 2, 2, "Lines<Echo>"),
        (b.pid, "draining", 1, 1, "Lines<Echo>"),
        (c.pid, "running", 1, 1, "Lines<Echo>"),
        (d.pid, "running", 0, 0, "other"),
    ] {
        let line = &found[&pid];
        assert_eq!(status_value(line, "state"), state, "{line}");
        assert_eq!(status_value(line, "service"), service, "{line}");
        assert_eq!(status_value(line, "version"), version, "{line}");
        assert_eq!(status_value(line, "clients"), clients.to_string(), "{line}");
        assert_eq!(
            status_value(line, "accepted"),
            accepted.to_string(),
            "{line}"
        );
        assert_eq!(status_value(line, "closed"), "0", "{line}");
        let since = status_value(line, "since_hangup");
        if state == "running" {
            assert_eq!(since, "-", "{line}");
        } else {
            let secs: f64 = since.strip_suffix('s').unwrap().parse().unwrap();
            assert!(secs >= 0.0, "{line}");
        }
        let uptime: f64 = status_value(line, "uptime")
            .strip_suffix('s')
            .unwrap()
            .parse()
            .unwrap();
        assert!(uptime >= 0.0, "{line}");
        assert!(
            status_value(line, "bytes_in").parse::<u64>().is_ok(),
            "{line}"
        );
    }
    // A's drain began first, so it has been draining longest.
    let since = |pid: u32| -> f64 {
        let line = &found[&pid];
        status_value(line, "since_hangup")
            .trim_end_matches('s')
            .parse()
            .unwrap()
    };
    assert!(since(a.pid) >= since(b.pid), "{found:#?}");

    // The same in the Prometheus text format.
    let prom = prometheus(&addr);
    for (pid, state, clients) in [
        (a.pid, "closing", 2),
        (b.pid, "draining", 1),
        (c.pid, "running", 1),
        (d.pid, "running", 0),
    ] {
        let service = if pid == d.pid { "other" } else { "Lines<Echo>" };
        let labels = format!("{{addr=\"{addr}\",pid=\"{pid}\",service=\"{service}\"");
        assert!(
            prom.contains(&format!("drainport_up{labels}}} 1\n")),
            "{prom}"
        );
        assert!(
            prom.contains(&format!("drainport_clients{labels}}} {clients}\n")),
            "{prom}"
        );
        assert!(
            prom.contains(&format!("drainport_state{labels},state=\"{state}\"}} 1\n")),
            "{prom}"
        );
    }

    // Done: A's clients are closed now, the others leave, all exit.
    a.signal(SIGHUP);
    drop((a_clients, b_client, c_client));
    for server in [&mut c, &mut d] {
        server.signal(SIGHUP);
    }
    for server in [&mut a, &mut b, &mut c, &mut d] {
        server.expect_clean_exit();
    }
}

/// `drainport stats --prometheus ADDR`, which must succeed, checked line
/// by line as the text exposition format has it, and by `promtool` where
/// it is installed.
#[track_caller]
fn prometheus(addr: &str) -> String {
    let out = run_stats(&["--prometheus", addr]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("text");
    check_exposition(&text);
    if let Some(promtool) = find_tool("promtool") {
        let mut check = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool");
        use std::io::Write as _;
        check
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let verdict = check.wait_with_output().unwrap();
        assert!(
            verdict.status.success(),
            "promtool check metrics: {verdict:?}\n{text}"
        );
    } else {
        skip(
            "the Prometheus text is checked by hand only: needs `promtool` (Debian package prometheus)",
        );
    }
    text
}

/// The text exposition format (0.0.4), line by line: every family once,
/// `# HELP` then `# TYPE` (gauge or counter, a counter's name ending in
/// `_total`) then its samples, each named as its family, with
/// `name="value"` labels (values escaped), a number, and no timestamp.
#[track_caller]
fn check_exposition(text: &str) {
    assert!(text.ends_with('\n'), "{text}");
    let mut families = std::collections::HashSet::new();
    let mut family: Option<(String, String)> = None;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let (name, doc) = help.split_once(' ').expect("a HELP text");
            assert!(!doc.is_empty() && !doc.contains('\\'), "{line}");
            assert!(valid_name(name), "{line}");
            assert!(families.insert(name.to_owned()), "{name} twice");
            let kind = lines.next().expect("a TYPE line after HELP");
            let kind = kind
                .strip_prefix(&format!("# TYPE {name} "))
                .unwrap_or_else(|| panic!("{kind:?} after HELP {name}"));
            assert!(kind == "gauge" || kind == "counter", "{kind}");
            assert!(kind != "counter" || name.ends_with("_total"), "{name}");
            family = Some((name.to_owned(), kind.to_owned()));
            continue;
        }
        assert!(
            !line.starts_with('#'),
            "a comment that is no HELP or TYPE: {line}"
        );
        let (name, _) = family.as_ref().expect("a sample before any family");
        let rest = line
            .strip_prefix(name.as_str())
            .and_then(|r| r.strip_prefix('{'))
            .unwrap_or_else(|| panic!("{line} is not a sample of {name}"));
        let (labels, value) = rest.rsplit_once("} ").expect("labels, then a value");
        assert!(
            value.parse::<f64>().is_ok_and(f64::is_finite) && !value.contains(' '),
            "{line}: one finite value, no timestamp"
        );
        // name="value" pairs, separated by commas; a value may hold \\, \"
        // and \n only as escapes.
        let mut rest = labels;
        while !rest.is_empty() {
            let (label, after) = rest.split_once("=\"").expect("label=\"value\"");
            assert!(valid_name(label), "{line}");
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => {
                        let (_, c) = chars.next().expect("an escape");
                        assert!(matches!(c, '\\' | '"' | 'n'), "{line}");
                    }
                    Some((i, '"')) => break i,
                    Some((_, '\n')) => panic!("a newline in {line}"),
                    Some(_) => {}
                    None => panic!("an unterminated label value in {line}"),
                }
            };
            rest = after[end + 1..]
                .strip_prefix(',')
                .unwrap_or(&after[end + 1..]);
        }
    }
    assert!(families.contains("drainport_up"), "{text}");
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A stopped process cannot answer: it is listed as not answering, within
/// the bound, and its sibling's line is there as ever.
#[test]
fn a_stopped_process_is_listed_as_not_answering() {
    let mut a = Server::start(&["-q", "127.0.0.1:0"]);
    let b = a.sibling(&["-q"]);
    let addr = a.addr.to_string();
    b.signal(SIGSTOP);
    b.wait_stopped();
    let found = lines(&addr);
    let out = run_stats(&["--prometheus", &addr]);
    b.signal(SIGCONT);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_eq!(status_value(&found[&a.pid], "state"), "running");
    assert_eq!(
        found[&b.pid],
        format!(
            "{addr} pid={} service=Lines<Echo> state=not_answering (no answer within 1s)",
            b.pid
        )
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "drainport_up{{addr=\"{addr}\",pid=\"{}\",service=\"Lines<Echo>\"}} 0\n",
            b.pid
        )),
        "{text}"
    );
    a.signal(SIGHUP);
    a.expect_clean_exit();
}

/// A process busy serving clients answers every time it is asked.
#[test]
fn a_busy_process_answers_every_time() {
    let mut server = Server::start(&["-q", "127.0.0.1:0"]);
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    // Every client answered once before the first question.
    let ready = Arc::new(Barrier::new(5));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let (stop, ready) = (Arc::clone(&stop), Arc::clone(&ready));
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                client.echo("ready");
                ready.wait();
                let mut n = 0u64;
                // Bounded by the count as well as by the flag.
                while !stop.load(Ordering::Relaxed) && n < 1_000_000 {
                    client.echo(&format!("load {i} {n}"));
                    n += 1;
                }
                n
            })
        })
        .collect();
    ready.wait();
    let mut answered = 0;
    for _ in 0..20 {
        let found = lines(&addr.to_string());
        assert_eq!(status_value(&found[&server.pid], "state"), "running");
        assert_eq!(status_value(&found[&server.pid], "clients"), "4");
        answered += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let served: u64 = load.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(answered, 20);
    assert!(served > 0);
    server.signal(SIGHUP);
    server.expect_clean_exit();
}

/// Nothing there is a mistake: one line, exit 1; so are bad arguments.
#[test]
fn no_process_or_a_bad_argument_is_one_line() {
    let out = run_stats(&["127.0.0.1:1"]);
    let stderr = one_line_error(
        &out,
        "stats 127.0.0.1:1",
        "no drainport process of this user",
    );
    assert!(stderr.contains("serves 127.0.0.1:1"), "{stderr}");
    assert!(out.stdout.is_empty());
    for (args, needle) in [
        (
            &["--bogus"][..],
            "unknown option '--bogus' (see 'drainport stats --help')",
        ),
        (
            &["--prometheus=yes"][..],
            "option '--prometheus' takes no value",
        ),
        (&["localhost:80"][..], "invalid address 'localhost:80'"),
    ] {
        one_line_error(&run_stats(args), &format!("stats {args:?}"), needle);
    }
}

/// Only a process's own user may ask it: run as another user, a process
/// is not listed to root (who is told how many such processes there are),
/// its channel closes on root without a word, and its own user gets its
/// line.
#[test]
fn only_the_services_own_user_may_ask() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip("needs root, to run a process of another user");
    }
    let run = match Runner::new(Who::Unprivileged) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let mut server = run.start(&["-q", "127.0.0.1:0"]);
    let addr = server.addr.to_string();

    let out = run_stats(&[&addr]);
    let stderr = one_line_error(
        &out,
        "stats as root",
        "no drainport process of this user (uid 0)",
    );
    assert!(
        stderr.contains("1 process of other users serves it, and answer their own user only"),
        "{stderr}"
    );

    // Asked directly, the channel closes without a word: the request
    // unread, so the close may come as a reset.
    let name = testbed::claim::name(server.pid, &addr).unwrap();
    let mut conn = testbed::claim::connect(&name).expect("connect to its claim");
    use std::io::{Read as _, Write as _};
    conn.write_all(b"stats\n").unwrap();
    let mut got = Vec::new();
    match conn.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading the channel: {e}"),
    }
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));

    // Its own user gets its line.
    let out = run
        .command(&[], &["stats", &addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.starts_with(&format!("{addr} pid={} service=Lines<Echo> ", server.pid)),
        "{stdout}"
    );
    assert_eq!(status_value(stdout.trim_end(), "state"), "running");
    server.signal(SIGHUP);
    server.expect_clean_exit();
}
