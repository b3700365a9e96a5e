//! The shipped unit's sandbox (`contrib/drainport@.service`): its score
//! from `systemd-analyze security`, and what drainport does in a whole life
//! (start with a pid file and systemd's notify socket, taking over the
//! listeners of the instance it replaces, a client, a status line, handing
//! its listeners to its own successor, a drain, the exit; and a life on a
//! passed Unix socket, whose drain asks `unix_diag`) checked against it
//! under strace: every system
//! call is one the unit's filter allows, every socket family one it lists,
//! no memory is writable and executable, no namespace is made, and nothing
//! is written but the pid file. Starting the unit itself needs systemd as
//! PID 1, which the tests do not have.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;

use crate::runner::{Runner, Who};
use crate::util::{
    Client, DEADLINE, ScratchDir, have_tool, line_reader, next_line, skip, wait_until,
};

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/drainport@.service");
const GUIDE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");
/// The highest exposure the unit may score: the target.
const TARGET: f64 = 2.0;

/// The values of every `KEY=` line in the unit, in order.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_owned)
        .collect()
}

/// `systemd-analyze security --offline=true` on the shipped unit scores at
/// most [`TARGET`], and `docs/operations.md` gives the score it has.
#[test]
fn the_unit_scores_at_most_2_in_systemd_analyze_security() {
    if !have_tool("systemd-analyze", "systemd") {
        return;
    }
    let dir = ScratchDir::new("security");
    let copy = dir.join("drainport@.service");
    std::fs::copy(UNIT, &copy).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("--offline") {
        // systemd 250 brought --offline.
        skip(&format!(
            "this systemd-analyze cannot score a unit file: {stderr}"
        ));
        return;
    }
    let score: f64 = stdout
        .lines()
        .find_map(|l| {
            l.split_once("Overall exposure level for ")?
                .1
                .split_once(": ")
        })
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in {stdout}{stderr}"));
    assert!(
        score <= TARGET,
        "the unit scores {score}, above {TARGET}:\n{stdout}"
    );
    let guide = std::fs::read_to_string(GUIDE).unwrap();
    assert!(
        guide.contains(&format!("scores it **{score:.1}**")),
        "docs/operations.md does not give the score {score:.1}"
    );
}

/// Every group `systemd-analyze syscall-filter` knows, with its members:
/// system calls and other groups.
fn syscall_groups() -> HashMap<String, Vec<String>> {
    let out = Command::new("systemd-analyze")
        .arg("syscall-filter")
        .output()
        .expect("run systemd-analyze syscall-filter");
    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    let mut current = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(name) = line.strip_prefix('@') {
            current = Some(format!("@{}", name.trim()));
            groups.entry(current.clone().unwrap()).or_default();
        } else if !line.starts_with(' ') {
            current = None;
        } else if let Some(group) = &current {
            let member = line.trim();
            if !member.is_empty() && !member.starts_with('#') {
                groups.get_mut(group).unwrap().push(member.to_owned());
            }
        }
    }
    groups
}

fn expand(item: &str, groups: &HashMap<String, Vec<String>>, into: &mut BTreeSet<String>) {
    match groups.get(item) {
        Some(members) => {
            for m in members {
                expand(m, groups, into);
            }
        }
        None => {
            into.insert(item.to_owned());
        }
    }
}

/// The system calls the unit's `SystemCallFilter=` lines allow: the first
/// list allows, and each `~` list after it takes away.
fn allowed_syscalls(unit: &str) -> BTreeSet<String> {
    let groups = syscall_groups();
    let mut allowed = BTreeSet::new();
    let mut denied = BTreeSet::new();
    for value in unit_values(unit, "SystemCallFilter") {
        let (deny, list) = match value.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, value.as_str()),
        };
        for item in list.split_whitespace() {
            expand(item, &groups, if deny { &mut denied } else { &mut allowed });
        }
    }
    assert!(
        !allowed.is_empty(),
        "no SystemCallFilter= allow list in the unit"
    );
    allowed.difference(&denied).cloned().collect()
}

/// Runs drainport, as the unit would (an unprivileged user, a pid file in a
/// directory of its own, `NOTIFY_SOCKET`, the listeners of the instance it
/// replaces), under strace, through a whole life, in which it hands its
/// listeners to a successor too; returns the trace.
fn traced_life(run: &Runner) -> String {
    let dir = ScratchDir::new("sandbox");
    if run.is_under_root() {
        std::os::unix::fs::chown(&*dir, Some(65534), Some(65534)).unwrap();
    }
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    std::fs::set_permissions(
        &notify_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let trace = dir.join("trace");
    let pid_file = dir.join("pid");
    let trace_s = trace.to_str().unwrap().to_owned();
    let wrapper = ["strace", "-f", "-qq", "-o", trace_s.as_str()];
    // The instance it replaces, and takes the listeners of.
    let mut replaced = run.start(&["-q", "127.0.0.1:0"]);
    let (from, addr) = (replaced.pid.to_string(), replaced.addr.to_string());
    let args = [
        "--pid-file",
        pid_file.to_str().unwrap(),
        "--take-over",
        &from,
        &addr,
    ];
    let mut cmd = run.command(&wrapper, &args);
    cmd.env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut child = crate::util::spawn_retrying(&mut cmd).expect("spawn strace");
    let lines = line_reader(child.stdout.take().unwrap());
    let next_line = |needle: &str| next_line(&lines, needle);
    next_line(&format!(" on {addr} from process {from}"));
    let listening = next_line(" listening on: ");
    let pid: libc::pid_t = listening
        .split(' ')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap();
    let addr = listening.rsplit(' ').next().unwrap().parse().unwrap();
    notify.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0; 512];
    let n = notify.recv(&mut buf).expect("READY=1 on the notify socket");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    let mut client = Client::connect(addr);
    assert_eq!(client.echo("inside the sandbox"), pid as u32);
    // SAFETY: kill(2) on the process this test started.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    next_line(" status: ");
    replaced.signal(libc::SIGHUP);
    replaced.expect_clean_exit();
    // Its successor takes the listeners over in turn.
    let mut successor = run.start(&["-q", "--take-over", &pid.to_string(), &addr.to_string()]);
    next_line(&format!(" to process {}", successor.pid));
    drain_to_exit(pid, &lines, client, &mut child);
    successor.signal(libc::SIGHUP);
    successor.expect_clean_exit();
    std::fs::read_to_string(&trace).expect("read the trace")
}

/// The end of a life under strace: SIGHUP to drainport (`pid`), which
/// holds `client` alone; the client leaves, and drainport (and strace,
/// `child`, with it) exits 0. `lines` is drainport's output.
fn drain_to_exit<C>(pid: libc::pid_t, lines: &Receiver<String>, client: C, child: &mut Child) {
    // SAFETY: kill(2) on the process this test started.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    next_line(lines, " closing tasks: ");
    drop(client);
    next_line(lines, " has no clients left, exiting");
    let status = wait_until("drainport under strace to exit", || {
        child.try_wait().expect("try_wait")
    });
    assert!(status.success(), "{status:?}");
}

/// A life on a Unix socket passed as a socket unit passes one, under
/// strace: a client, a drain (which asks `unix_diag` how many connections
/// wait on the socket), the exit. Returns the trace of drainport's own
/// calls: the shell that sets `LISTEN_PID` execs it in place, and its
/// calls before that are left out.
fn traced_unix_life(run: &Runner) -> String {
    use std::io::{BufRead, BufReader, Write};
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::net::{UnixListener, UnixStream};
    use testbed::activate::{self, LISTEN_PID_SHELL};

    let dir = ScratchDir::new("sandbox-unix");
    if run.is_under_root() {
        std::os::unix::fs::chown(&*dir, Some(65534), Some(65534)).unwrap();
    }
    let path = dir.join("s.sock");
    let socket = OwnedFd::from(UnixListener::bind(&path).unwrap());
    let trace = dir.join("trace");
    let trace_s = trace.to_str().unwrap().to_owned();
    let mut wrapper = vec!["strace", "-f", "-qq", "-o", trace_s.as_str()];
    wrapper.extend(LISTEN_PID_SHELL);
    let mut cmd = run.command(&wrapper, &["-q"]);
    activate::pass(&mut cmd, &[socket.as_raw_fd()], Some("drainport"));
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut child = crate::util::spawn_retrying(&mut cmd).expect("spawn strace");
    let lines = line_reader(child.stdout.take().unwrap());
    let next_line = |needle: &str| next_line(&lines, needle);
    let listening = next_line(" listening on: unix:");
    let pid: libc::pid_t = listening
        .split(' ')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap();
    let stream = UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut client = BufReader::new(stream);
    client.get_mut().write_all(b"inside the sandbox\n").unwrap();
    let mut reply = String::new();
    for _ in 0..2 {
        client.read_line(&mut reply).unwrap();
    }
    assert_eq!(reply, format!("inside the sandbox\n: from {pid}\n"));
    drain_to_exit(pid, &lines, client, &mut child);
    let trace = std::fs::read_to_string(&trace).expect("read the trace");
    // drainport's calls start after the shell's last exec.
    let lines: Vec<&str> = trace.lines().collect();
    let exec = lines
        .iter()
        .rposition(|l| l.contains(" execve(") && l.ends_with(" = 0"))
        .expect("the exec of drainport in the trace");
    lines[exec + 1..].join("\n")
}

/// What the unit's sandbox allows, checked against what drainport does:
/// the system calls, the socket families, no memory both writable and
/// executable (`MemoryDenyWriteExecute=`), no namespace
/// (`RestrictNamespaces=`), no personality change (`LockPersonality=`), and
/// nothing opened for writing, renamed or removed but the pid file
/// (`ProtectSystem=strict` leaves it only `RuntimeDirectory=`).
#[test]
fn a_whole_life_of_drainport_fits_in_the_units_sandbox() {
    if !have_tool("strace", "strace") || !have_tool("systemd-analyze", "systemd") {
        return;
    }
    let run = match Runner::new(Who::Unprivileged) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let allowed = allowed_syscalls(&unit);
    let families: BTreeSet<String> = unit_values(&unit, "RestrictAddressFamilies")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert!(families.contains("AF_NETLINK"), "{families:?}");

    let unix = traced_unix_life(&run);
    // The drain of a Unix socket asks unix_diag for its queue.
    let drained = unix.split("--- SIGHUP").nth(1).unwrap_or("");
    assert!(
        drained.contains("socket(AF_NETLINK, SOCK_DGRAM|SOCK_CLOEXEC, NETLINK_SOCK_DIAG)"),
        "no socket diagnostics asked at the drain: {drained}"
    );
    let trace = format!("{}\n{unix}", traced_life(&run));
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for line in trace.lines() {
        // "PID name(args) = result"; resumed calls and signals are skipped.
        let Some((_, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        let Some((name, args)) = call.split_once('(') else {
            continue;
        };
        if name.starts_with('<') || name.starts_with("---") || name.contains(' ') {
            continue;
        }
        used.insert(name.to_owned());
        if name == "socket" || name == "socketpair" {
            let family = args.split(',').next().unwrap_or("");
            if !families.contains(family) {
                problems.push(format!("socket family outside the unit's list: {line}"));
            }
        }
        if (name == "mmap" || name == "mprotect")
            && args.contains("PROT_WRITE")
            && args.contains("PROT_EXEC")
        {
            problems.push(format!("writable and executable memory: {line}"));
        }
        if ["unshare", "setns", "personality"].contains(&name) || args.contains("CLONE_NEW") {
            problems.push(format!("outside the sandbox: {line}"));
        }
        let writes = ["O_WRONLY", "O_RDWR", "O_CREAT"]
            .iter()
            .any(|f| args.contains(f));
        let changes = name.starts_with("rename")
            || name.starts_with("unlink")
            || name.starts_with("mkdir")
            || name.starts_with("rmdir");
        if (name.starts_with("open") && writes) || changes {
            // Every name it writes, renames or removes is the pid file's,
            // given relative to the directory it holds.
            let names: Vec<&str> = args.split('"').skip(1).step_by(2).collect();
            if names.is_empty() || !names.iter().all(|n| *n == "pid" || n.starts_with("pid.")) {
                problems.push(format!("writes something but its pid file: {line}"));
            }
        }
    }
    let outside: Vec<&String> = used.difference(&allowed).collect();
    assert!(
        outside.is_empty(),
        "system calls the unit's filter denies: {outside:?}"
    );
    assert!(problems.is_empty(), "{problems:#?}");
    // The life did happen: the calls that prove each part of it.
    // Taking over and handing over: the connect to the claim, the
    // descriptors in and out, the peer's credentials.
    for call in [
        "prlimit64",
        "renameat",
        "unlinkat",
        "accept4",
        "sendto",
        "connect",
        "sendmsg",
        "recvmsg",
        "getsockopt",
    ] {
        assert!(used.contains(call), "{call} not in the trace: {used:?}");
    }
}
