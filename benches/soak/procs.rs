//! The drainport processes the soak starts, the `/proc` readers it samples
//! them with, and the guards that kill them if the bench stops early.
//!
//! Slot 1 is rolled by `scripts/rolling-restart`, which starts each
//! generation in a session of its own: those processes are not our
//! children, so they are watched through `/proc/<pid>` and signalled only
//! after `/proc/<pid>/comm` says `drainport`. Slot 2 is started once, as a
//! child, and never restarted.

use std::fs::{self, File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_drainport");
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The drain policy every instance runs with.
pub const DRAIN_TIMEOUT_SECS: u64 = 20;
pub const CLOSE_SPREAD_SECS: u64 = 5;
pub const DRAIN_NOTICE: &str = "reconnect";

/// How long a new process may take to write its pid file.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one run of the script may take: its own readiness wait (10 s)
/// plus margin for a loaded machine.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// The server flags shared by both slots (the script appends `--pid-file`).
pub fn server_args(addr: SocketAddr) -> Vec<String> {
    vec![
        "-q".into(),
        // The binary clients check that telnet's bytes come back as sent.
        "--raw".into(),
        "--drain-notice".into(),
        DRAIN_NOTICE.into(),
        "--drain-timeout".into(),
        DRAIN_TIMEOUT_SECS.to_string(),
        "--close-spread".into(),
        CLOSE_SPREAD_SECS.to_string(),
        addr.to_string(),
    ]
}

/// True while `pid` exists and is not a zombie. Drained slot-1 processes
/// are reparented away from us, and whoever reaps them may be slow.
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next());
        !matches!(state, Some("Z" | "X") | None)
    })
}

/// True if `pid` is a live drainport process (guards every signal we send
/// to a pid that is not our child: the pid may have been reused).
pub fn is_drainport(pid: u32) -> bool {
    alive(pid)
        && fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "drainport")
}

/// Sends `sig` to `pid` if it is a live drainport process.
pub fn signal(pid: u32, sig: libc::c_int) -> bool {
    if !is_drainport(pid) {
        return false;
    }
    // SAFETY: kill(2) on a pid just checked to be a drainport process.
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .trim_start_matches(':')
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("VmRSS")?, field("VmHWM")?))
}

/// Open descriptors of `pid`.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Waits until `cond` holds or `deadline` passes; returns whether it held.
pub fn wait_until(deadline: Instant, step: Duration, mut cond: impl FnMut() -> bool) -> bool {
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(step);
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Every slot-1 pid the bench has seen. On drop (the end of the bench, or
/// a panic) any of them still running is killed.
#[derive(Default)]
pub struct Reaper {
    pids: Mutex<Vec<u32>>,
}

impl Reaper {
    pub fn add(&self, pid: u32) {
        let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }

    /// The pids still running.
    pub fn running(&self) -> Vec<u32> {
        let pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        pids.iter().copied().filter(|&p| is_drainport(p)).collect()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in self.running() {
            eprintln!("soak: killing leftover drainport {pid}");
            signal(pid, libc::SIGKILL);
        }
    }
}

/// Slot 1: a state directory that `scripts/rolling-restart -n 1` upgrades.
pub struct RolledSlot {
    dir: PathBuf,
    addr: SocketAddr,
    pub starts: usize,
}

impl RolledSlot {
    pub fn new(dir: PathBuf, addr: SocketAddr) -> RolledSlot {
        RolledSlot {
            dir,
            addr,
            starts: 0,
        }
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("1.log")
    }

    /// The pid the slot's pid file names, if it is running.
    pub fn current(&self) -> Option<u32> {
        read_pid(&self.dir.join("1.pid")).filter(|&p| is_drainport(p))
    }

    /// Runs the script once: starts a new generation, waits for it to be
    /// ready, and HUPs the old one. Returns (old, new) and records the new
    /// pid with `reaper` before anything else can fail.
    pub fn upgrade(&mut self, reaper: &Reaper) -> Result<(Option<u32>, u32), String> {
        fs::create_dir_all(&self.dir).map_err(|e| format!("mkdir {}: {e}", self.dir.display()))?;
        let old = self.current();
        let script_log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("script.log"))
            .map_err(|e| format!("script log: {e}"))?;
        let err_log = script_log
            .try_clone()
            .map_err(|e| format!("script log: {e}"))?;
        let mut child = Command::new(Path::new(ROOT).join("scripts/rolling-restart"))
            .args(["-n", "1", "-t", &READY_TIMEOUT.as_secs().to_string(), "-d"])
            .arg(&self.dir)
            .arg("--")
            .arg(BIN)
            .args(server_args(self.addr))
            .stdin(Stdio::null())
            .stdout(script_log)
            .stderr(err_log)
            .spawn()
            .map_err(|e| format!("run rolling-restart: {e}"))?;
        let status = wait_child(&mut child, SCRIPT_DEADLINE);
        let new = read_pid(&self.dir.join("1.pid"));
        if let Some(pid) = new {
            reaper.add(pid);
        }
        match status {
            Some(s) if s.success() => {}
            Some(s) => {
                return Err(format!(
                    "rolling-restart exited with {s}; see {}",
                    self.dir.display()
                ));
            }
            None => {
                return Err(format!(
                    "rolling-restart still running after {SCRIPT_DEADLINE:?}; killed"
                ));
            }
        }
        match new {
            Some(pid) if Some(pid) != old && alive(pid) => {
                self.starts += 1;
                Ok((old, pid))
            }
            _ => Err(format!(
                "rolling-restart succeeded but the pid file names {new:?}"
            )),
        }
    }
}

/// Waits for a child of ours up to `deadline`; kills it past that.
fn wait_child(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + deadline;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < until => thread::sleep(POLL),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Slot 2: one drainport started as our child and never restarted. Killed
/// on drop if it is still running.
pub struct FixedSlot {
    child: Child,
    pub pid: u32,
    pub log: PathBuf,
    exit: Option<ExitStatus>,
}

impl FixedSlot {
    pub fn start(dir: &Path, addr: SocketAddr) -> Result<FixedSlot, String> {
        fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let log = dir.join("2.log");
        let pid_file = dir.join("2.pid");
        let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(BIN)
            .args(server_args(addr))
            .arg("--pid-file")
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("start {BIN}: {e}"))?;
        let pid = child.id();
        let mut slot = FixedSlot {
            child,
            pid,
            log,
            exit: None,
        };
        let ready = wait_until(Instant::now() + READY_TIMEOUT, POLL, || {
            read_pid(&pid_file) == Some(pid) || !slot.running()
        });
        if !ready || !slot.running() {
            let log = fs::read_to_string(&slot.log).unwrap_or_default();
            return Err(format!(
                "slot 2 (pid {pid}) did not become ready; its log:\n{log}"
            ));
        }
        Ok(slot)
    }

    /// True while the child has not exited (reaps it when it has).
    pub fn running(&mut self) -> bool {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit.is_none()
    }

    pub fn signal(&mut self, sig: libc::c_int) -> bool {
        // SAFETY: kill(2) on our own child, which has not been reaped, so
        // its pid cannot have been reused.
        self.running() && unsafe { libc::kill(self.pid as libc::pid_t, sig) == 0 }
    }

    /// Waits up to `deadline` for the child to exit; returns its status.
    pub fn wait(&mut self, deadline: Duration) -> Option<ExitStatus> {
        wait_until(Instant::now() + deadline, POLL, || !self.running());
        self.exit
    }

    /// The client count in the newest status line of its log (written after
    /// a SIGUSR1), if one is there.
    pub fn last_status_clients(&self) -> Option<usize> {
        let log = fs::read_to_string(&self.log).ok()?;
        let line = log.lines().rev().find(|l| l.contains(" status: "))?;
        status_field(line, "clients")?.parse().ok()
    }

    /// Asks for a status line and waits (bounded) for it to appear.
    pub fn status_clients(&mut self) -> Option<usize> {
        let before = fs::read_to_string(&self.log).map_or(0, |l| l.matches(" status: ").count());
        if !self.signal(libc::SIGUSR1) {
            return None;
        }
        let appeared = wait_until(Instant::now() + Duration::from_secs(5), POLL, || {
            fs::read_to_string(&self.log).map_or(0, |l| l.matches(" status: ").count()) > before
        });
        if appeared {
            self.last_status_clients()
        } else {
            None
        }
    }
}

impl Drop for FixedSlot {
    fn drop(&mut self) {
        if self.running() {
            eprintln!("soak: killing slot 2 (pid {})", self.pid);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of `key=` in a status line.
pub fn status_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// What a slot-1 generation's log says about its drain.
pub struct DrainLog {
    /// Clients at the HUP (`closing tasks: N`).
    pub clients: Option<usize>,
    /// The drain timeout ran out.
    pub timed_out: bool,
    /// It printed its last line (`has no clients left, exiting`, or
    /// `exiting` after a hard stop): it ended by returning, not by a crash.
    pub said_exiting: bool,
}

/// A log line without the time and generation (`2026-03-01T12:00:00Z g3 `)
/// that `scripts/rolling-restart` puts before each line it writes.
fn message(line: &str) -> &str {
    let mut rest = line;
    while let Some((word, after)) = rest.split_once(' ') {
        let stamp = word.starts_with(|c: char| c.is_ascii_digit())
            || word
                .strip_prefix('g')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !stamp {
            break;
        }
        rest = after;
    }
    rest
}

pub fn drain_log(log: &str, pid: u32) -> DrainLog {
    let at_hup = format!("process {pid} closing tasks: ");
    let own = format!("Process {pid} ");
    let lines = || log.lines().map(message);
    DrainLog {
        clients: lines().find_map(|l| l.strip_prefix(&at_hup)?.trim().parse().ok()),
        timed_out: lines().any(|l| l.starts_with(&format!("{own}reached its drain timeout"))),
        said_exiting: lines().any(|l| {
            l.strip_prefix(&own)
                .is_some_and(|rest| rest == "has no clients left, exiting" || rest == "exiting")
        }),
    }
}
