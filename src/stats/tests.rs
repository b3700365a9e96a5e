use std::time::Duration;

use super::*;

fn sample() -> Stats {
    let mut closed = Closes::default();
    for (i, why) in Reason::ALL.into_iter().enumerate() {
        closed.add(why, i as u64 * 3);
    }
    Stats {
        pid: 4242,
        service: "Lines<Echo>".into(),
        version: "0.1.0+git.1a2b3c4d5e6f".into(),
        state: State::Draining,
        uptime: Duration::from_millis(812_400),
        draining: Some(Duration::from_millis(41_700)),
        clients: 3,
        accepted: 1052 + 135,
        closed,
        full: 2,
        out_of_fds: 1,
        lines: 88123,
        bytes_in: 4412877,
        bytes_out: 5734003,
        buffers: 65720,
    }
}

#[test]
fn a_line_reads_back_as_the_snapshot_it_was() {
    let stats = sample();
    let line = stats.line();
    assert!(
        line.starts_with("pid=4242 service=Lines<Echo> version=0.1.0+git.1a2b3c4d5e6f state=draining clients=3 accepted=1187 closed=135 left=0 failed=3 "),
        "{line}"
    );
    assert!(
        line.ends_with(" since_hangup=41.7s uptime=812.4s"),
        "{line}"
    );
    assert_eq!(Stats::parse(&line), Ok(stats.clone()));
    let running = Stats {
        state: State::Running,
        draining: None,
        ..stats
    };
    let line = running.line();
    assert!(line.contains(" since_hangup=- "), "{line}");
    assert_eq!(Stats::parse(&line), Ok(running));
}

#[test]
fn the_status_line_counts_leave_out_who_the_process_is() {
    let counts = sample().counts().to_string();
    assert!(
        counts.starts_with("state=draining clients=3 accepted="),
        "{counts}"
    );
    assert!(!counts.contains("pid=") && !counts.contains("service="));
}

#[test]
fn a_reader_takes_unknown_keys_and_refuses_a_broken_answer() {
    let line = sample().line();
    let newer = format!("{line} something_new=7");
    assert_eq!(Stats::parse(&newer), Ok(sample()));
    for (broken, why) in [
        (line.replace("clients=3 ", ""), "no clients="),
        (line.replace("state=draining", "state=asleep"), "state="),
        (line.replace("failed=3 ", "failed=4 "), "do not add up"),
        (line.replace("uptime=812.4s", "uptime=long"), "uptime="),
        (line.replace("pid=4242", "pid=99999999999"), "pid="),
        (String::new(), "no "),
    ] {
        let err = Stats::parse(&broken).expect_err(&broken);
        assert!(err.contains(why), "{err} for {broken}");
    }
}

fn listed() -> Vec<Listed> {
    vec![
        Listed {
            addrs: vec!["127.0.0.1:8080".into(), "[::1]:8080".into()],
            pid: 4242,
            service: "Lines<Echo>".into(),
            answer: Ok(sample()),
        },
        Listed {
            addrs: vec!["127.0.0.1:8080".into()],
            pid: 4243,
            service: "a\"b\\c".into(),
            answer: Err("no answer within 1s".into()),
        },
    ]
}

#[test]
fn a_process_that_does_not_answer_is_listed_as_such() {
    let lines: Vec<String> = listed().iter().map(Listed::line).collect();
    assert!(
        lines[0].starts_with("127.0.0.1:8080,[::1]:8080 pid=4242 service=Lines<Echo> "),
        "{lines:?}"
    );
    assert_eq!(
        lines[1],
        "127.0.0.1:8080 pid=4243 service=a\"b\\c state=not_answering (no answer within 1s)"
    );
}

/// The text format line by line: each family once, `# HELP` then `# TYPE`
/// then its samples; every sample's name is its family's; label values
/// escaped; the silent process only in `drainport_up`.
#[test]
fn the_prometheus_text_is_well_formed() {
    let text = prometheus(&listed());
    let mut family: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    let mut samples = 0;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_owned();
            assert!(seen.insert(name.clone()), "{name} twice");
            let kind = lines.next().expect("a TYPE line");
            let kind = kind
                .strip_prefix(&format!("# TYPE {name} "))
                .unwrap_or_else(|| panic!("{kind:?} after HELP {name}"));
            assert!(["gauge", "counter"].contains(&kind), "{kind}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
            family = Some(name);
            continue;
        }
        let name = family.as_deref().expect("a sample before any family");
        let (series, value) = line.rsplit_once(' ').expect("a value");
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let labels = series
            .strip_prefix(name)
            .and_then(|l| l.strip_prefix('{'))
            .and_then(|l| l.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{line} is not a sample of {name}"));
        assert!(labels.starts_with("addr=\""), "{line}");
        samples += 1;
    }
    assert_eq!(seen.len(), 1 + FAMILIES.len());
    // The silent process: up 0, with its service escaped, and nothing else.
    assert!(
        text.contains(
            "drainport_up{addr=\"127.0.0.1:8080\",pid=\"4243\",service=\"a\\\"b\\\\c\"} 0\n"
        ),
        "{text}"
    );
    assert_eq!(text.matches("pid=\"4243\"").count(), 1);
    for want in [
        "drainport_up{addr=\"127.0.0.1:8080,[::1]:8080\",pid=\"4242\",service=\"Lines<Echo>\"} 1\n",
        "drainport_info{addr=\"127.0.0.1:8080,[::1]:8080\",pid=\"4242\",service=\"Lines<Echo>\",version=\"0.1.0+git.1a2b3c4d5e6f\"} 1\n",
        ",state=\"draining\"} 1\n",
        ",state=\"running\"} 0\n",
        "drainport_uptime_seconds{addr=\"127.0.0.1:8080,[::1]:8080\",pid=\"4242\",service=\"Lines<Echo>\"} 812.400\n",
        "drainport_draining_seconds{addr=\"127.0.0.1:8080,[::1]:8080\",pid=\"4242\",service=\"Lines<Echo>\"} 41.700\n",
        ",reason=\"hard_stop\"} 27\n",
        ",cause=\"out_of_fds\"} 1\n",
        "drainport_sent_bytes_total{addr=\"127.0.0.1:8080,[::1]:8080\",pid=\"4242\",service=\"Lines<Echo>\"} 5734003\n",
    ] {
        assert!(text.contains(want), "{want} not in {text}");
    }
    // up, info, 3 states, uptime, draining, clients, accepted, 10 reasons,
    // 2 causes, messages, bytes in and out, buffers; and the silent up.
    assert_eq!(samples, 1 + 1 + 3 + 1 + 1 + 1 + 1 + 10 + 2 + 1 + 2 + 1 + 1);
}
