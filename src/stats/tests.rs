use std::time::Duration;

use super::*;

fn sample() -> Stats {
    let mut closed = Closes::default();
    for (i, why) in Reason::ALL.into_iter().enumerate() {
        for _ in 0..i * 3 {
            closed.count(why);
        }
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
fn the_status_line_counts_leave_out_who_the_process_is() {
    let counts = sample().counts().to_string();
    assert!(
        counts.starts_with("state=draining clients=3 accepted="),
        "{counts}"
    );
    assert!(!counts.contains("pid=") && !counts.contains("service="));
}
