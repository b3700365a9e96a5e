//! `scripts/rolling-restart` against real processes: generations that
//! drain side by side, and upgrades that fail without hurting anyone.

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{BIN, Client, DEADLINE, ScratchDir, closing_line, one_line_error, wait_until};

pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rolling-restart");

/// Instances managed by the script in a private state directory. Every
/// process the script started is killed, by pid, when the fleet is dropped.
pub struct Fleet {
    pub dir: ScratchDir,
    pub addr: SocketAddr,
    /// Seconds a new process may take to become ready.
    pub timeout: &'static str,
    pub started: Vec<u32>,
}

impl Fleet {
    pub fn new(name: &str) -> Fleet {
        let dir = ScratchDir::new(&format!("rolling-{name}"));
        // A port nobody uses: bind one, let it go, and take it.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        Fleet {
            dir,
            addr,
            timeout: "5",
            started: Vec::new(),
        }
    }

    /// Runs the script for one instance with `command`, where `None` means
    /// drainport on the fleet's address.
    pub fn upgrade_with(&mut self, command: Option<&[&str]>) -> Output {
        let addr = self.addr.to_string();
        let default = [BIN, addr.as_str()];
        let out = Command::new(SCRIPT)
            .args(["-n", "1", "-t", self.timeout, "-d"])
            .arg(&*self.dir)
            .arg("--")
            .args(command.unwrap_or(&default))
            .output()
            .expect("run rolling-restart");
        if let Some(pid) = self.pid() {
            if !self.started.contains(&pid) {
                self.started.push(pid);
            }
        }
        out
    }

    /// Runs the script with `args` on the fleet's state directory.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(SCRIPT)
            .arg("-d")
            .arg(&*self.dir)
            .args(args)
            .output()
            .expect("run rolling-restart")
    }

    /// The lines `rolling-restart status` prints.
    #[track_caller]
    pub fn status(&self) -> Vec<String> {
        let out = self.run(&["status"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The same, each line without its last field, ` clients=N`, which it
    /// must have: for a test about the states, where a client that just
    /// left may or may not be counted yet.
    #[track_caller]
    pub fn states(&self) -> Vec<String> {
        self.status()
            .into_iter()
            .map(|line| {
                let (state, clients) = line
                    .rsplit_once(' ')
                    .unwrap_or_else(|| panic!("no clients field in {line:?}"));
                let n = clients
                    .strip_prefix("clients=")
                    .unwrap_or_else(|| panic!("no clients field in {line:?}"));
                assert!(n == "?" || n.parse::<u32>().is_ok(), "{line:?}");
                state.to_owned()
            })
            .collect()
    }

    /// Two upgrades, with a client that keeps the first generation
    /// draining: returns both pids and that client, once `status` shows
    /// the first draining and the second running.
    #[track_caller]
    fn two_generations(&mut self) -> (u32, u32, Client) {
        let first = self.upgrade();
        let mut held = Client::connect(self.addr);
        assert_eq!(held.echo("hold"), first);
        let second = self.upgrade();
        self.wait_log(&format!("Process {first} received hangup signal"));
        assert_eq!(
            self.status(),
            [
                format!("generation=1 instance=1 pid={first} state=draining clients=1"),
                format!("generation=2 instance=1 pid={second} state=running clients=0"),
            ]
        );
        (first, second, held)
    }

    /// Upgrades and returns the new pid.
    #[track_caller]
    pub fn upgrade(&mut self) -> u32 {
        let before = self.pid();
        let out = self.upgrade_with(None);
        assert!(out.status.success(), "rolling-restart failed: {out:?}");
        let pid = self.pid().expect("a pid file after an upgrade");
        assert_ne!(Some(pid), before);
        pid
    }

    /// The pid in the instance's pid file.
    pub fn pid(&self) -> Option<u32> {
        // Not a FIFO or a link some test planted there.
        let path = self.dir.join("1.pid");
        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            return None;
        }
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("1.log")).unwrap_or_default()
    }

    /// Waits until the log holds `needle`.
    #[track_caller]
    pub fn wait_log(&self, needle: &str) {
        wait_for_text("the instance's log", needle, || self.log());
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for &pid in &self.started {
            // A pid of ours that has exited may since name something else.
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if alive(pid) && comm.trim() == "drainport" {
                // SAFETY: kill(2) on a process this test started through the script.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

/// Whether `pid` is a live process (not gone, not a zombie). Processes the
/// script started are not our children, so this reads /proc.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat[stat.rfind(')').unwrap_or(0)..].starts_with(") Z"),
        Err(_) => false,
    }
}

/// Polls `read` (a log file, say) until the text contains `needle`, and
/// returns it. On timeout the panic shows the last text read.
#[track_caller]
fn wait_for_text(what: &str, needle: &str, mut read: impl FnMut() -> String) -> String {
    let start = Instant::now();
    loop {
        let text = read();
        if text.contains(needle) {
            return text;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no {needle:?} in {what} within {DEADLINE:?}; it reads:\n{text}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Connects clients until `n` are served by `pid`. Right after an upgrade
/// a client may still reach the previous, draining generation for a moment,
/// and that client is kept too: it must be served to the end.
fn clients_of(
    addr: SocketAddr,
    pid: u32,
    n: usize,
    strays: &mut Vec<(u32, Client)>,
) -> Vec<Client> {
    let mut mine = Vec::new();
    for i in 0..50 {
        if mine.len() == n {
            break;
        }
        let mut client = Client::connect(addr);
        match client.echo(&format!("hello {i}")) {
            p if p == pid => mine.push(client),
            other => strays.push((other, client)),
        }
    }
    assert_eq!(mine.len(), n, "could not reach pid {pid}");
    mine
}

#[test]
fn three_generations_drain_while_a_fourth_accepts() {
    let mut fleet = Fleet::new("generations");
    let mut strays = Vec::new();
    let mut generations = Vec::new();
    for _ in 0..4 {
        let pid = fleet.upgrade();
        let clients = clients_of(fleet.addr, pid, 2, &mut strays);
        generations.push((pid, clients));
    }
    // Every generation but the last was told to drain. The script sends the
    // HUP and returns without waiting for the process to act on it.
    for (pid, _) in &generations[..3] {
        fleet.wait_log(&format!("Process {pid} received hangup signal"));
        assert!(
            alive(*pid),
            "generation {pid} exited with clients connected"
        );
    }
    // Every client of every generation is still served by its own process.
    for (pid, clients) in &mut generations {
        for client in clients {
            assert_eq!(client.echo("still here"), *pid);
        }
    }
    for (pid, client) in &mut strays {
        assert_eq!(client.echo("stray"), *pid);
    }
    let newest = generations[3].0;
    for i in 0..5 {
        assert_eq!(
            Client::connect(fleet.addr).echo(&format!("new {i}")),
            newest
        );
    }

    // Each old generation exits once its own clients leave.
    strays.clear();
    for (pid, clients) in generations.drain(..3) {
        drop(clients);
        wait_until(&format!("pid {pid} to exit"), || {
            (!alive(pid)).then_some(())
        });
        // Its last line reaches the log through the script's filter.
        fleet.wait_log(&format!("Process {pid} has no clients left, exiting"));
    }
    assert!(alive(newest));
}

#[test]
fn an_upgrade_that_never_gets_ready_leaves_the_old_process_serving() {
    let mut fleet = Fleet::new("never-ready");
    let old = fleet.upgrade();
    let mut client = Client::connect(fleet.addr);
    assert_eq!(client.echo("before"), old);

    // A "new version" that never writes its pid file.
    fleet.timeout = "1";
    let out = fleet.upgrade_with(Some(&["sh", "-c", "exec sleep 60", "sh"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("not ready after 1s"), "{stderr}");
    assert!(
        stderr.contains(&format!("old process {old} keeps serving")),
        "{stderr}"
    );

    assert!(!stderr.contains("tail:"), "{stderr}");
    assert_eq!(fleet.pid(), Some(old));
    assert!(!fleet.log().contains("received hangup signal"));
    assert_eq!(client.echo("after"), old);
    assert_eq!(Client::connect(fleet.addr).echo("new client"), old);
}

#[test]
fn an_upgrade_that_exits_leaves_the_old_process_serving() {
    let mut fleet = Fleet::new("exits");
    let old = fleet.upgrade();
    let out = fleet.upgrade_with(Some(&[BIN, "--no-such-flag"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("exited before it was ready"), "{stderr}");
    assert!(
        stderr.contains("unknown option '--no-such-flag'"),
        "{stderr}"
    );
    assert_eq!(fleet.pid(), Some(old));
    assert_eq!(Client::connect(fleet.addr).echo("served"), old);
}

#[test]
fn script_usage_errors_are_one_line() {
    for (args, needle) in [
        (&["-n", "zero", "--", "true"][..], "-n takes a whole number"),
        (&["--frob"][..], "unknown option '--frob'"),
        (&["-n", "1"][..], "no command given"),
        (&["-t", "0", "--", "true"][..], "-t takes whole seconds"),
        (&["-t", "08", "--", "true"][..], "-t takes whole seconds"),
        (&["-t", "1.5", "status"][..], "-t takes whole seconds"),
        (&["-n", "", "--", "true"][..], "-n takes a whole number"),
        (&["-d", "", "status"][..], "-d needs a directory"),
        (&["statu"][..], "unknown command 'statu'"),
        (&["stop", "wait"][..], "one of status, stop, wait"),
        (&["status", "--", "true"][..], "status takes no command"),
        (
            &["-a", "status"][..],
            "-a is for an upgrade, not for status",
        ),
    ] {
        let out = Command::new(SCRIPT).args(args).output().unwrap();
        one_line_error(&out, &format!("{args:?}"), needle);
    }
}

/// An operator's view of the fleet: `status` lists every live process the
/// script started, by generation and state; `stop` drains the running ones
/// and leaves the draining ones alone (a second SIGHUP would be a hard
/// stop); `wait` returns once all have exited.
#[test]
fn status_stop_and_wait_cover_every_generation() {
    let mut fleet = Fleet::new("status");
    let (first, second, mut held) = fleet.two_generations();

    let out = fleet.run(&["stop"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout,
        format!("rolling-restart: generation 2, instance 1: pid {second} draining\n")
    );
    // stop returns once the drain has started, so the log says so now.
    assert!(
        fleet
            .log()
            .contains(&format!("Process {second} received hangup signal")),
        "{}",
        fleet.log()
    );

    // The first generation still has its client, so wait runs out.
    let out = fleet.run(&["-t", "1", "wait"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("still alive after 1s: pid "), "{stderr}");
    assert!(stderr.contains(&first.to_string()), "{stderr}");
    // Not stopped hard: the client is served, by its own process.
    assert_eq!(held.echo("still here"), first);
    assert!(fleet.status().contains(&format!(
        "generation=1 instance=1 pid={first} state=draining clients=1"
    )));

    drop(held);
    let out = fleet.run(&["-t", "30", "wait"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!alive(first) && !alive(second));
    assert_eq!(fleet.status(), Vec::<String>::new());
    let log = fleet.log();
    for pid in [first, second] {
        assert!(
            log.contains(&format!("Process {pid} has no clients left, exiting")),
            "{log}"
        );
    }
    let out = fleet.run(&["stop"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing running"));
}

/// `status` follows a process through its drain: running, draining, then
/// closing once the drain timeout passes, and still closing after a signal
/// that cuts the close spread short.
#[test]
fn status_follows_a_drain_into_closing() {
    let mut fleet = Fleet::new("closing");
    let addr = fleet.addr.to_string();
    // A long spread keeps the second client open well past the deadline.
    let command = [
        BIN,
        "--drain-timeout",
        "0.2",
        "--close-spread",
        "600",
        addr.as_str(),
    ];
    let out = fleet.upgrade_with(Some(&command));
    assert!(out.status.success(), "{out:?}");
    let pid = fleet.pid().expect("a pid file after an upgrade");
    let state = |s: &str, n: u32| {
        vec![format!(
            "generation=1 instance=1 pid={pid} state={s} clients={n}"
        )]
    };
    assert_eq!(fleet.status(), state("running", 0));
    let mut clients: Vec<Client> = (0..2).map(|_| Client::connect(fleet.addr)).collect();
    for client in &mut clients {
        assert_eq!(client.echo("hold"), pid);
    }

    let out = fleet.run(&["stop"]);
    assert!(out.status.success(), "{out:?}");
    fleet.wait_log(&format!("Process {pid} reached its drain timeout"));
    // Both clients are still there: the spread closes the first in 300 s.
    assert_eq!(fleet.status(), state("closing", 2));

    // SAFETY: kill(2) on the process this test started through the script.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
    fleet.wait_log(&format!("Process {pid} exiting"));
    assert!(
        fleet.log().contains(&format!(
            "Process {pid} received hangup signal while closing: closing "
        )),
        "{}",
        fleet.log()
    );
    let closing = closing_line(pid);
    for client in &mut clients {
        let rest = client.read_to_eof().expect("read to EOF");
        assert_eq!(String::from_utf8_lossy(&rest), closing);
    }
    let out = fleet.run(&["-t", "30", "wait"]);
    assert!(out.status.success(), "{out:?}");
}

/// A process whose log does not show it starting (the log was moved) may
/// already be draining, and a second SIGHUP would stop it hard: `status`
/// says its state is unknown and `stop` leaves it alone.
#[test]
fn stop_leaves_alone_a_process_whose_state_is_unknown() {
    let mut fleet = Fleet::new("unknown");
    let pid = fleet.upgrade();
    let moved = fleet.dir.join("1.log.old");
    std::fs::rename(fleet.dir.join("1.log"), &moved).unwrap();
    assert_eq!(
        fleet.states(),
        [format!("generation=1 instance=1 pid={pid} state=unknown")]
    );
    let out = fleet.run(&["stop"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stderr.contains(&format!("pid {pid} left alone")),
        "{stderr}"
    );
    // The process still writes to the moved log: no drain started.
    let mut client = Client::connect(fleet.addr);
    assert_eq!(client.echo("served"), pid);
    let log = std::fs::read_to_string(&moved).unwrap();
    assert!(!log.contains("received hangup signal"), "{log}");
}

/// A mistyped `-d` must not read as "nothing running": `status`, `stop`
/// and `wait` on a directory that does not exist fail with one line, and
/// create nothing. An upgrade creates the directory, as `--help` says.
#[test]
fn a_missing_state_directory_is_an_error_except_for_an_upgrade() {
    let mut fleet = Fleet::new("missing");
    let missing = fleet.dir.join("no/such/dir");
    for action in ["status", "stop", "wait"] {
        let out = Command::new(SCRIPT)
            .arg("-d")
            .arg(&missing)
            .args(["-t", "1", action])
            .output()
            .unwrap();
        one_line_error(
            &out,
            action,
            &format!("no state directory '{}'", missing.display()),
        );
        assert!(out.stdout.is_empty(), "{action}: {out:?}");
    }
    assert!(!fleet.dir.join("no").exists());

    let help = Command::new(SCRIPT).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("upgrade creates it, status, stop and wait fail if it is missing"),
        "{help}"
    );
    let sub = ScratchDir::new("rolling-created");
    let created = sub.join("state");
    let addr = fleet.addr.to_string();
    let out = Command::new(SCRIPT)
        .args(["-t", "5", "-d"])
        .arg(&created)
        .args(["--", BIN, "-q", addr.as_str()])
        .output()
        .unwrap();
    let pid: Option<u32> = std::fs::read_to_string(created.join("1.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok());
    fleet.started.extend(pid);
    assert!(out.status.success(), "{out:?}");
    let pid = pid.expect("a pid file in the created directory");
    let out = Command::new(SCRIPT)
        .arg("-d")
        .arg(&created)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("generation=1 instance=1 pid={pid} state=running clients=0\n")
    );
}

/// The pids whose stdout is `path`: the log filters the script started.
fn writers_of(path: &std::path::Path) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/fd/1")).is_ok_and(|target| target == path)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The instance log is appended to by every generation, so a failure
/// report shows only the lines of the attempt that failed: not those of an
/// earlier failed attempt, and not those that the old process (or an older
/// generation) writes while the new one starts.
#[test]
fn a_failure_report_shows_only_the_failed_attempts_lines() {
    let mut fleet = Fleet::new("report");
    let old = fleet.upgrade();
    let log_path = fleet.dir.join("1.log");
    let filters = writers_of(&log_path);

    let out = fleet.upgrade_with(Some(&["sh", "-c", "echo first attempt; exit 3", "sh"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("exited before it was ready"), "{stderr}");
    assert!(stderr.contains("first attempt"), "{stderr}");

    // The second attempt waits, and meanwhile the old process logs the
    // clients it accepts into the same file.
    let mut script = Command::new(SCRIPT)
        .args(["-n", "1", "-t", "10", "-d"])
        .arg(&*fleet.dir)
        .args([
            "--",
            "sh",
            "-c",
            "echo second attempt; sleep 2; echo second gives up >&2; exit 4",
            "sh",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    fleet.wait_log("second attempt");
    let clients: Vec<Client> = (0..3).map(|_| Client::connect(fleet.addr)).collect();
    wait_until("the old process to log its clients", || {
        let log = fleet.log();
        let after = &log[log.find("second attempt").unwrap()..];
        (after.matches("accepted connection from").count() == 3).then_some(())
    });
    let out = wait_until("the script to give up", || script.try_wait().unwrap());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut script.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(out.code(), Some(1), "{stderr}");
    assert!(stderr.contains("second attempt"), "{stderr}");
    assert!(stderr.contains("second gives up"), "{stderr}");
    assert!(!stderr.contains("first attempt"), "{stderr}");
    assert!(!stderr.contains("accepted connection"), "{stderr}");
    assert!(!stderr.contains(&format!("Process {old}")), "{stderr}");
    // Only the old process's filter is left writing to the log.
    assert_eq!(writers_of(&log_path), filters);
    drop(clients);
}

/// A "new version" that is a wrapper: it forks, and one of its children
/// ignores SIGTERM. When it is not ready in time the script stops its whole
/// process group, with SIGKILL for what SIGTERM left, and says so.
#[test]
fn not_ready_stops_a_wrappers_whole_process_group() {
    let mut fleet = Fleet::new("group");
    let old = fleet.upgrade();
    let kids = fleet.dir.join("kids");
    fleet.timeout = "1";
    let wrapper = "sleep 600 & echo $! >\"$0\"; (trap '' TERM; exec sleep 600) & echo $! >>\"$0\"; \
                   echo wrapper waiting; wait";
    let out = fleet.upgrade_with(Some(&["sh", "-c", wrapper, kids.to_str().unwrap()]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("not ready after 1s"), "{stderr}");
    assert!(stderr.contains("wrapper waiting"), "{stderr}");
    assert!(
        stderr.contains("1s after SIGTERM; sent SIGKILL"),
        "{stderr}"
    );
    let started: u32 = stderr
        .split("new process (pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {stderr}"));
    let mut pids: Vec<u32> = std::fs::read_to_string(&kids)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    pids.push(started);
    for pid in pids {
        wait_until(&format!("pid {pid} of the wrapper's group to go"), || {
            (!alive(pid)).then_some(())
        });
    }
    assert_eq!(fleet.pid(), Some(old));
    assert_eq!(Client::connect(fleet.addr).echo("served"), old);
}

/// A generation number is used up only by an upgrade that started a
/// process: failed attempts leave it for the next one.
#[test]
fn a_failed_upgrade_keeps_its_generation_number() {
    let mut fleet = Fleet::new("generation");
    let fail = ["sh", "-c", "exit 3", "sh"];
    let out = fleet.upgrade_with(Some(&fail));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let first = fleet.upgrade();
    for _ in 0..2 {
        let out = fleet.upgrade_with(Some(&fail));
        assert_eq!(out.status.code(), Some(1), "{out:?}");
    }
    let out = fleet.upgrade_with(None);
    assert!(out.status.success(), "{out:?}");
    let second = fleet.pid().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "rolling-restart: generation 2, instance 1: pid {second} ready, took over pid {first}'s listeners; pid {first} draining\n"
        )
    );
    // It has no clients, so it exits.
    wait_until(&format!("pid {first} to exit"), || {
        (!alive(first)).then_some(())
    });
    assert_eq!(
        fleet.states(),
        [format!(
            "generation=2 instance=1 pid={second} state=running"
        )]
    );
}

/// Seconds since 1970 of a `YYYY-MM-DDTHH:MM:SSZ` time (days from civil,
/// after Howard Hinnant), or `None` if it is not one.
fn utc_seconds(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let shape = b.len() == 20
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text[r].parse::<i64>().unwrap();
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + num(11..13) * 3600 + num(14..16) * 60 + num(17..19))
}

fn now_seconds() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(now.as_secs()).unwrap()
}

/// Every line the script writes to an instance's log starts with the UTC
/// time it was written and the generation, and the script still reads its
/// own log: `status` and `stop` follow the process through its drain.
#[test]
fn every_log_line_carries_its_time_and_generation() {
    let mut fleet = Fleet::new("stamps");
    let before = now_seconds();
    let (first, second, held) = fleet.two_generations();
    let out = fleet.run(&["stop"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("rolling-restart: generation 2, instance 1: pid {second} draining\n")
    );
    drop(held);
    let out = fleet.run(&["-t", "30", "wait"]);
    assert!(out.status.success(), "{out:?}");
    let after = now_seconds();

    let log = fleet.log();
    for (generation, pid) in [(1, first), (2, second)] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("rocess {pid} ")))
            .collect();
        assert!(lines.len() >= 5, "{log}");
        for line in lines {
            let (time, rest) = line.split_once(' ').unwrap();
            let at = utc_seconds(time).unwrap_or_else(|| panic!("no time in {line:?}"));
            assert!(
                before - 1 <= at && at <= after + 1,
                "{line:?}: {before}..{after}"
            );
            let (tag, _) = rest.split_once(' ').unwrap();
            assert_eq!(tag, format!("g{generation}"), "{line:?}");
        }
    }
    assert!(
        log.lines()
            .all(|l| l.split(' ').next().and_then(utc_seconds).is_some()),
        "{log}"
    );
}

/// A program that puts its own time first on each line (drainport's
/// `--log-time`, say; here a shell loop stands in for it) still has its
/// state read: the script skips both times.
#[test]
fn status_reads_lines_that_carry_the_programs_own_time_too() {
    let mut fleet = Fleet::new("own-time");
    let addr = fleet.addr.to_string();
    let stamped = "exec \"$@\" | while IFS= read -r l; do \
                   printf '%s %s\\n' 2026-03-01T12:00:00.123+01:00 \"$l\"; done";
    let out = fleet.upgrade_with(Some(&["sh", "-c", stamped, "sh", BIN, addr.as_str()]));
    assert!(out.status.success(), "{out:?}");
    let pid = fleet.pid().unwrap();
    fleet.wait_log(&format!(
        "g1 2026-03-01T12:00:00.123+01:00 Process {pid} running"
    ));
    assert_eq!(
        fleet.states(),
        [format!("generation=1 instance=1 pid={pid} state=running")]
    );
    let out = fleet.run(&["stop"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("rolling-restart: generation 1, instance 1: pid {pid} draining\n")
    );
    let out = fleet.run(&["-t", "30", "wait"]);
    assert!(out.status.success(), "{out:?}");
}

/// An upgrade whose processes listen on another address than the ones they
/// replace would move the instances off the port. By default the new
/// process cannot take over an address the old one does not serve, and
/// says so; with `-b` (listeners of its own) the script stops it, gives
/// the pid file back to the old one, and fails, naming both addresses.
/// Either way the old process keeps serving and is not signalled. With
/// `-a` the move is meant, and goes ahead.
#[test]
fn an_upgrade_to_another_address_is_refused_unless_meant() {
    let mut fleet = Fleet::new("address");
    let old = fleet.upgrade();
    let other = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = fleet.upgrade_with(Some(&[BIN, "-q", other.as_str()]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains(&format!(
            "drainport: cannot take over {other} from process {old}: it does not serve that address (it serves {})",
            fleet.addr
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("old process {old} keeps serving")),
        "{stderr}"
    );
    let out = Command::new(SCRIPT)
        .args(["-b", "-n", "1", "-t", fleet.timeout, "-d"])
        .arg(&*fleet.dir)
        .args(["--", BIN, "-q", other.as_str()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains(&format!(
            "listens on {other}, not on {} as pid {old} does, which keeps serving",
            fleet.addr
        )),
        "{stderr}"
    );
    assert!(stderr.contains("give -a"), "{stderr}");
    let refused: u32 = stderr
        .split("new process (pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {stderr}"));
    fleet.started.push(refused);
    wait_until(&format!("the refused pid {refused} to exit"), || {
        (!alive(refused)).then_some(())
    });
    assert_eq!(fleet.pid(), Some(old));
    assert!(!fleet.log().contains("received hangup signal"));
    assert!(!fleet.log().contains("handed its"));
    assert_eq!(Client::connect(fleet.addr).echo("still here"), old);
    assert_eq!(
        fleet.states(),
        [format!("generation=1 instance=1 pid={old} state=running")]
    );

    // Meant: the same move with -a.
    let out = Command::new(SCRIPT)
        .args(["-a", "-n", "1", "-t", fleet.timeout, "-d"])
        .arg(&*fleet.dir)
        .args(["--", BIN, "-q", other.as_str()])
        .output()
        .unwrap();
    let moved = fleet.pid().unwrap();
    fleet.started.push(moved);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "rolling-restart: generation 2, instance 1: pid {moved} ready; pid {old} draining\n"
        )
    );
    let other: SocketAddr = other.parse().unwrap();
    assert_eq!(Client::connect(other).echo("moved"), moved);
}

/// By default each upgrade takes over the listeners of the process it
/// replaces: the new process says it took them, the old one that it
/// handed them over, and a client queued on them meanwhile is served by
/// the new one. With `-b` the new process opens listeners of its own.
#[test]
fn an_upgrade_takes_over_the_old_listeners_unless_told_to_bind() {
    let mut fleet = Fleet::new("takeover");
    let first = fleet.upgrade();
    let second = fleet.upgrade();
    fleet.wait_log(&format!("Process {second} took over "));
    fleet.wait_log(&format!("Process {first} handed its "));
    let log = fleet.log();
    let took = log
        .lines()
        .find(|l| l.contains(&format!("Process {second} took over ")))
        .unwrap();
    assert!(
        took.ends_with(&format!("on {} from process {first}", fleet.addr)),
        "{took}"
    );
    assert_eq!(Client::connect(fleet.addr).echo("new"), second);
    let out = Command::new(SCRIPT)
        .args(["-b", "-n", "1", "-t", fleet.timeout, "-d"])
        .arg(&*fleet.dir)
        .args(["--", BIN, "-q", &fleet.addr.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let third = fleet.pid().unwrap();
    fleet.started.push(third);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "rolling-restart: generation 3, instance 1: pid {third} ready; pid {second} draining\n"
        )
    );
    fleet.wait_log(&format!("Process {second} has no clients left, exiting"));
    assert!(!fleet.log().contains(&format!("Process {third} took over")));
    assert!(!fleet.log().contains(&format!("Process {second} handed")));
    let out = fleet.run(&["stop"]);
    assert!(out.status.success(), "{out:?}");
    let out = fleet.run(&["-t", "30", "wait"]);
    assert!(out.status.success(), "{out:?}");
}
