//! A new process that fails to start costs its running siblings nothing.
//! Whatever makes it fail, before it binds or after it listens, no client
//! of the port is reset: it exits 1 with one line on stderr, and a client
//! the kernel queued on it in between is served first. And a process of
//! another program refuses to share a port, where a new release of the
//! same one joins it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use libc::SIGHUP;

use crate::netns::{MIGRATE_REQ, in_namespace};
use crate::runner::{Runner, Who};
use crate::steer::Churn;
use crate::util::{
    BIN, Client, ScratchDir, example_bin, have_tool, one_line_error, output_retrying, skip,
};

/// Failed starts per run, half of each kind.
const STARTS: usize = 60;

fn a_failed_start_resets_no_client(who: Who) {
    if !have_tool("strace", "strace") {
        return;
    }
    let run = match Runner::new(who) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let mut server = run.start(&["-q", "127.0.0.1:0"]);
    let addr = server.addr.to_string();
    // The pid file's directory belongs to the user the servers run as.
    let dir = ScratchDir::new("failed-start");
    if run.who == Who::Unprivileged && run.is_under_root() {
        std::os::unix::fs::chown(&*dir, Some(65534), Some(65534)).unwrap();
    }
    let pid_file = dir.join("d.pid");
    let pid_file = pid_file.to_str().unwrap();
    // Every check passes before listening, and the rename that puts the
    // pid file in place fails after: strace makes it fail, as a full or
    // broken disk would.
    let fail_rename = [
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "--seccomp-bpf",
        "-e",
        "trace=/^rename",
        "-e",
        "inject=/^rename:error=EIO",
    ];
    let after_listen = ["--pid-file", pid_file, &addr];
    let before_bind = ["-q", "--pid-file", "/nonexistent-dir/x.pid", &addr];

    let churn = Churn::start(server.addr);
    churn.wait_served_by(server.pid);
    let mut served_by_failed = 0;
    for i in 0..STARTS {
        let (wrapper, args): (&[&str], &[&str]) = if i % 2 == 0 {
            (&fail_rename, &after_listen)
        } else {
            (&[], &before_bind)
        };
        let output = output_retrying(run.command(wrapper, args).stdin(Stdio::null()))
            .expect("run a failing start");
        let stderr = one_line_error(&output, &format!("start {i}"), "cannot write pid file");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stderr.starts_with("drainport: cannot write pid file"),
            "start {i}: {stderr}"
        );
        if i % 2 == 0 {
            assert!(
                stdout.contains("cannot start (cannot write pid file"),
                "start {i}: {stdout}"
            );
            served_by_failed += stdout.matches("accepted connection").count();
        } else {
            assert!(!stdout.contains("listening"), "start {i}: {stdout}");
        }
    }
    // Churn goes on past the last failed start before it is judged.
    churn.wait_answered(20, "churn to go on after the last failed start");
    churn.expect_no_failures(&format!(
        "{who:?}; {served_by_failed} were served by a failing process"
    ));
    assert!(
        fs::read_dir(&*dir).unwrap().next().is_none(),
        "a temporary pid file was left"
    );
    server.signal(SIGHUP);
    server.expect_clean_exit();
}

#[test]
fn a_failed_start_resets_no_client_unprivileged() {
    a_failed_start_resets_no_client(Who::Unprivileged);
}

#[test]
fn a_failed_start_resets_no_client_as_root() {
    a_failed_start_resets_no_client(Who::Root);
}

/// The same, unprivileged, in a namespace where `tcp_migrate_req` is 1.
#[test]
fn a_failed_start_resets_no_client_with_tcp_migrate_req() {
    in_namespace(&[MIGRATE_REQ], || {
        a_failed_start_resets_no_client(Who::Unprivileged)
    });
}

/// drainport and the kv example, run by one user, on one address: whichever
/// starts second refuses with one line and exits 1, before it listens, and
/// the first keeps every client. A copy of drainport from another path (a
/// new release) joins; `--join-any` makes kv join anyway, and a kv that
/// names its service as the echo server's shares the port without a word.
fn another_program_is_refused_a_release_joins(who: Who) {
    let run = match Runner::new(who) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let kv = example_bin("kv");
    let mut echo = run.start(&["-q", "127.0.0.1:0"]);
    let addr = echo.addr.to_string();

    let refused = output_retrying(
        run.program_command(&kv, "kv", &[&addr])
            .stdin(Stdio::null()),
    )
    .expect("run kv");
    one_line_error(
        &refused,
        "kv beside drainport",
        &format!(
            "is served by another service, Lines<Echo> (pid {}), and this is Lines<Kv>",
            echo.pid
        ),
    );
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("listening"));
    for i in 0..50 {
        assert_eq!(
            Client::connect(echo.addr).echo(&format!("mine {i}")),
            echo.pid
        );
    }

    // A new release, from another path and under another name, joins.
    let release = ScratchDir::new("release");
    fs::set_permissions(&*release, fs::Permissions::from_mode(0o755)).unwrap();
    let copy = release.join("drainport");
    fs::copy(BIN, &copy).unwrap();
    let mut next = run.start_program(&copy, "drainport-next", &["-q", &addr]);
    assert!(
        next.seen.iter().all(|l| !l.contains("also serves")),
        "{:#?}",
        next.seen
    );

    // Named alike, two programs share on purpose.
    let mut named = run.start_program(&kv, "kv", &["--service", "Lines<Echo>", &addr]);
    assert!(
        named.seen.iter().all(|l| !l.contains("also serves")),
        "{:#?}",
        named.seen
    );
    // Told to, kv joins, and says so.
    let mut joined = run.start_program(&kv, "kv", &["--join-any", &addr]);
    assert!(
        joined
            .seen
            .iter()
            .any(|l| l.contains(&format!("which Lines<Echo> (pid {}) also serves", echo.pid))),
        "{:#?}",
        joined.seen
    );
    for server in [&mut echo, &mut next, &mut joined, &mut named] {
        server.signal(SIGHUP);
        server.expect_clean_exit();
    }
}

#[test]
fn another_program_is_refused_a_release_joins_unprivileged() {
    another_program_is_refused_a_release_joins(Who::Unprivileged);
}

#[test]
fn another_program_is_refused_a_release_joins_as_root() {
    another_program_is_refused_a_release_joins(Who::Root);
}
