//! What `scripts/rolling-restart` trusts: a pid only once its start time,
//! executable and boot match what the script recorded when it started it;
//! a state directory only if it belongs to the caller and no other user
//! can write it; its own files only if they are regular files. Each case
//! runs the real script, with real processes standing in for a reused pid.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use crate::rolling::{Fleet, SCRIPT, alive};
use crate::util::{BIN, one_line_error, output_retrying, wait_until};

/// A process of the test's own that the script must never signal: a
/// `sleep`, which SIGHUP would kill. Killed and reaped when dropped.
struct Bystander(Child);

impl Bystander {
    fn start() -> Bystander {
        let child = Command::new("sleep")
            .arg("600")
            .process_group(0)
            .spawn()
            .expect("spawn sleep");
        Bystander(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether it is still running, not a zombie: it is our child, so a
    /// signal that killed it leaves it a zombie until reaped.
    fn alive(&self) -> bool {
        alive(self.pid())
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Field 22 of `/proc/PID/stat`: the start time the script records.
fn start_time(pid: u32) -> String {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(19).unwrap().to_owned()
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_owned()
}

/// `DEV:INO` of a file, as `stat -L -c %d:%i` prints it.
fn file_id(path: &str) -> String {
    let meta = fs::metadata(path).unwrap();
    format!("{}:{}", meta.dev(), meta.ino())
}

/// Runs the script on the fleet's directory in a process group of its own,
/// so that a `kill -HUP 0` in it reaches nothing of the test's, with a
/// deadline: a script that hangs fails the test.
fn run_alone(fleet: &Fleet, args: &[&str]) -> Output {
    output_retrying(
        Command::new(SCRIPT)
            .args(["-t", "5", "-d"])
            .arg(&*fleet.dir)
            .args(args)
            .process_group(0)
            .stdin(Stdio::null()),
    )
    .expect("run rolling-restart")
}

/// An upgrade with drainport on the fleet's address, run alone; the new
/// process is remembered for the fleet to kill.
fn upgrade_alone(fleet: &mut Fleet) -> Output {
    let addr = fleet.addr.to_string();
    let out = run_alone(fleet, &["-n", "1", "--", BIN, "-q", &addr]);
    if let Some(pid) = fleet.pid() {
        if !fleet.started.contains(&pid) {
            fleet.started.push(pid);
        }
    }
    out
}

#[track_caller]
fn ready_without_a_drain(out: &Output, fleet: &Fleet) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let new = fleet.pid().expect("a new process");
    assert!(stdout.ends_with(&format!("pid {new} ready\n")), "{stdout}");
    assert!(!stdout.contains("draining"), "{stdout}");
}

/// After a crash the pid in the pid file may belong to another process. A
/// bystander stands in for it: once with no record of its pid at all, then
/// with a record of its pid that another start time and program made (the
/// crashed drainport's), then with one that has its start time and boot
/// but drainport's executable. None of them is signalled.
#[test]
fn a_reused_pid_is_not_signalled() {
    let bystander = Bystander::start();
    let pid = bystander.pid();
    for case in ["no record", "another start and program", "another program"] {
        let mut fleet = Fleet::new("reused");
        let crashed = fleet.upgrade();
        // SAFETY: kill(2) on the process this test started through the script.
        unsafe { libc::kill(crashed as libc::pid_t, libc::SIGKILL) };
        wait_until("the crashed process to go", || {
            (!alive(crashed)).then_some(())
        });
        let records = fs::read_to_string(fleet.dir.join("processes")).unwrap();
        let forged = match case {
            "no record" => String::new(),
            // The crashed process's record, under the bystander's pid.
            "another start and program" => {
                records.replacen(&format!("1 1 {crashed} "), &format!("1 1 {pid} "), 1)
            }
            _ => format!(
                "1 1 {pid} {} 0 0 {} {}\n",
                start_time(pid),
                boot_id(),
                file_id(BIN)
            ),
        };
        fs::write(fleet.dir.join("processes"), forged).unwrap();
        fs::write(fleet.dir.join("1.pid"), format!("{pid}\n")).unwrap();

        let out = upgrade_alone(&mut fleet);
        ready_without_a_drain(&out, &fleet);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("pid {pid}, named by "))
                && stderr.contains("will not be signalled"),
            "{case}: {stderr}"
        );
        assert!(bystander.alive(), "{case}: the bystander was signalled");
    }
}

/// `status` and `stop` act on the records only: a forged record of a live
/// process that the script did not start is neither listed nor signalled,
/// whether it has the start time alone (as records had before) or the
/// start time and boot with another program's executable.
#[test]
fn a_forged_record_is_neither_listed_nor_stopped() {
    let bystander = Bystander::start();
    let pid = bystander.pid();
    let start = start_time(pid);
    for (record, warning) in [
        (format!("1 1 {pid} {start} 0 0\n"), true),
        (
            format!("1 1 {pid} {start} 0 0 {} {}\n", boot_id(), file_id(BIN)),
            false,
        ),
    ] {
        let fleet = Fleet::new("forged");
        fs::write(fleet.dir.join("processes"), &record).unwrap();
        // The log says the process runs, so that a stop would drain it.
        fs::write(fleet.dir.join("1.log"), format!("Process {pid} running\n")).unwrap();
        let out = run_alone(&fleet, &["status"]);
        assert!(out.status.success(), "{out:?}");
        assert!(out.stdout.is_empty(), "{record}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.contains(&format!(
                "pid {pid}, recorded by an older rolling-restart, cannot be checked"
            )),
            warning,
            "{record}: {stderr}"
        );
        let out = run_alone(&fleet, &["stop"]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!(
                "rolling-restart: nothing running from {}\n",
                fleet.dir.display()
            )
        );
        assert!(bystander.alive(), "{record}: the bystander was signalled");
    }
}

/// `kill -HUP 0` hangs up the sender's own process group, and `kill -HUP $$`
/// the script itself: a pid file holding 0, or the script's pid, is never
/// signalled, and the upgrade goes on.
#[test]
fn a_pid_file_naming_0_or_the_script_itself_is_not_signalled() {
    let mut fleet = Fleet::new("zero");
    fs::write(fleet.dir.join("1.pid"), "0\n").unwrap();
    let out = upgrade_alone(&mut fleet);
    ready_without_a_drain(&out, &fleet);

    // The script runs as the shell that wrote its own pid there.
    let mut fleet = Fleet::new("self");
    let addr = fleet.addr.to_string();
    let out = output_retrying(
        Command::new("sh")
            .args([
                "-c",
                "echo $$ >\"$0/1.pid\" && exec \"$1\" -n 1 -t 5 -d \"$0\" -- \"$2\" -q \"$3\"",
            ])
            .arg(&*fleet.dir)
            .args([SCRIPT, BIN, &addr])
            .process_group(0)
            .stdin(Stdio::null()),
    )
    .unwrap();
    fleet.started.extend(fleet.pid());
    ready_without_a_drain(&out, &fleet);
}

/// A state directory that another user can write in, sticky or not, or
/// that belongs to another user, or that sits in a directory others can
/// write and is not sticky, is refused by every action: one line, exit 1,
/// nothing started.
#[test]
fn a_state_directory_others_can_change_is_refused() {
    let fleet = Fleet::new("shared");
    let addr = fleet.addr.to_string();
    let upgrade = ["--", BIN, "-q", addr.as_str()];
    let refused = |fleet: &Fleet, args: &[&str], needle: &str| {
        let out = run_alone(fleet, args);
        one_line_error(&out, &format!("{args:?}"), needle);
        assert!(fleet.pid().is_none(), "{args:?}: a process was started");
    };
    for mode in [0o777, 0o1777, 0o775] {
        fs::set_permissions(&*fleet.dir, fs::Permissions::from_mode(mode)).unwrap();
        let text = format!("(mode {})", mode_string(mode));
        for args in [&["status"][..], &["stop"], &["wait"], &upgrade] {
            refused(
                &fleet,
                args,
                &format!("can be written by other users {text}"),
            );
        }
    }
    // A private directory in a shared one that is not sticky: others can
    // rename it away and put their own in its place.
    fs::set_permissions(&*fleet.dir, fs::Permissions::from_mode(0o777)).unwrap();
    let inner = fleet.dir.join("inner");
    fs::create_dir(&inner).unwrap();
    fs::set_permissions(&inner, fs::Permissions::from_mode(0o700)).unwrap();
    let out = output_retrying(
        Command::new(SCRIPT)
            .arg("-d")
            .arg(&inner)
            .arg("status")
            .stdin(Stdio::null()),
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains(&format!(
            "'{}', above state directory '{}', can be written by other users",
            fleet.dir.display(),
            inner.display()
        )),
        "{stderr}"
    );
    fs::set_permissions(&*fleet.dir, fs::Permissions::from_mode(0o755)).unwrap();
    // The same directory, sticky: fine.
    fs::set_permissions(&*fleet.dir, fs::Permissions::from_mode(0o1777)).unwrap();
    let out = output_retrying(Command::new(SCRIPT).arg("-d").arg(&inner).arg("status")).unwrap();
    assert!(out.status.success(), "{out:?}");
    fs::set_permissions(&*fleet.dir, fs::Permissions::from_mode(0o755)).unwrap();

    // Another user's directory. Only root can give one away; any other
    // user finds `/`, which root owns.
    // SAFETY: geteuid has no memory effects.
    let theirs = if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&*fleet.dir, Some(65534), Some(65534)).unwrap();
        fleet.dir.to_path_buf()
    } else {
        Path::new("/").to_path_buf()
    };
    let owner = fs::metadata(&theirs).unwrap().uid();
    let out = output_retrying(Command::new(SCRIPT).arg("-d").arg(&theirs).arg("status")).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains(&format!("belongs to uid {owner}, not to uid")),
        "{stderr}"
    );
}

/// `ls -l`'s mode string for a directory mode.
fn mode_string(mode: u32) -> String {
    let mut s = String::from("d");
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if mode & (0o400 >> i) != 0 { c } else { '-' });
    }
    if mode & 0o1000 != 0 {
        s.pop();
        s.push(if mode & 1 != 0 { 't' } else { 'T' });
    }
    s
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo on a path in the test's own directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// What the state directory holds that the script did not make: a link to
/// another file, or a FIFO, where it keeps its log, pid file, records or
/// generation. It neither writes through the link nor waits on the FIFO:
/// it refuses, with one line, before it starts anything. A link at a name
/// it no longer uses (`processes.new`) is left alone.
#[test]
fn links_and_fifos_planted_in_the_state_directory_are_not_written_through() {
    for (name, fifo) in [
        ("1.log", false),
        ("generation", false),
        ("processes", false),
        ("processes.new", false),
        ("1.log", true),
        ("1.pid", true),
        ("processes", true),
    ] {
        let what = format!("{} at {name}", if fifo { "a FIFO" } else { "a link" });
        let mut fleet = Fleet::new("planted");
        let victim = fleet.dir.join("victim");
        fs::write(&victim, "precious\n").unwrap();
        let planted = fleet.dir.join(name);
        if fifo {
            mkfifo(&planted);
        } else {
            symlink(&victim, &planted).unwrap();
        }
        let out = upgrade_alone(&mut fleet);
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n", "{what}");
        if name == "processes.new" {
            ready_without_a_drain(&out, &fleet);
            assert!(
                fs::symlink_metadata(&planted).unwrap().is_symlink(),
                "{what}"
            );
            continue;
        }
        one_line_error(
            &out,
            &what,
            &format!("'{}' is not a regular file", planted.display()),
        );
        assert!(
            fs::read_dir(&*fleet.dir).unwrap().count() == 2,
            "{what}: the script made files"
        );
    }
}
