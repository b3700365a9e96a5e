//! `--pid-file` against what another user, or a careless operator, can put
//! in its way: links at the temporary name and at the path, a FIFO or a
//! device at the path at exit, a directory at the path, a directory other
//! users can write, a umask. The real binary, started the way a supervisor
//! starts it.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Stdio};

use libc::SIGHUP;

use crate::util::{
    BIN, DEADLINE, ScratchDir, Server, have_tool, line_reader, one_line_error, output_retrying,
    skip, spawn_retrying, wait_until,
};

/// An address-space ceiling for a server whose exit might read without
/// bound: old code would take the machine's memory, this makes it abort.
const AS_LIMIT: &str = "--as=1073741824";

fn pid_in(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Puts `make`'s file at `path` by a rename, as a user of the directory
/// would swap it in while the server runs.
fn swap_in(path: &Path, make: impl FnOnce(&Path)) {
    let tmp = path.with_extension("swap");
    make(&tmp);
    fs::rename(&tmp, path).unwrap();
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo on a path in the test's own directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

/// The start of drainport as `sh -c SCRIPT ARGS` (so `$0` is the first of
/// ARGS), which execs it with the same pid, so
/// that the script can name the pid before drainport runs.
fn through_sh(script: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]).args(args);
    cmd
}

/// Asserts that drainport refused to start before listening: exit 1, one
/// line on stderr that contains `needle`, no `listening` line.
#[track_caller]
fn refused_before_listening(cmd: &mut Command, needle: &str) {
    let out = output_retrying(cmd.stdin(Stdio::null())).expect("run drainport");
    let stderr = one_line_error(&out, "drainport", needle);
    assert!(
        stderr.starts_with("drainport: cannot write pid file "),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("listening"), "{stdout}");
}

/// The temporary file was `<path>.<pid>.tmp`, made with `File::create`: a
/// link planted at that name had the process truncate and write whatever
/// file it pointed to. Now the name is random and made with `O_EXCL |
/// O_NOFOLLOW`.
#[test]
fn a_link_planted_at_the_old_temporary_name_is_not_followed() {
    let dir = ScratchDir::new("pidfile-tmp-link");
    let path = dir.join("d.pid");
    let victim = dir.join("victim");
    fs::write(&victim, "precious\n").unwrap();
    let path_s = path.to_str().unwrap();
    let plant = "ln -s \"$1\" \"$0.$$.tmp\" && exec \"$2\" --pid-file \"$0\" 127.0.0.1:0";
    let mut server = Server::spawn(through_sh(plant, &[path_s, victim.to_str().unwrap(), BIN]));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(pid_in(&path), Some(server.pid));
    let planted = dir.join(format!("d.pid.{}.tmp", server.pid));
    assert!(fs::symlink_metadata(&planted).unwrap().is_symlink());
    server.signal(SIGHUP);
    server.expect_clean_exit();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(!path.exists());
}

/// A path that is a directory failed only at the rename, after listening.
/// It is found before: one line, exit 1, and no client could have reached
/// the process.
#[test]
fn a_pid_file_path_that_is_a_directory_fails_before_listening() {
    let dir = ScratchDir::new("pidfile-isdir");
    let path = dir.join("d.pid");
    fs::create_dir(&path).unwrap();
    refused_before_listening(
        Command::new(BIN).args(["--pid-file", path.to_str().unwrap(), "127.0.0.1:0"]),
        "it is a directory",
    );
    // Nothing is left beside it.
    assert_eq!(fs::read_dir(&*dir).unwrap().count(), 1);
}

/// At exit the process read the path to see if it still named it: a FIFO
/// there made the exit wait for a writer that never came.
#[test]
fn a_fifo_at_the_path_does_not_hold_up_the_exit() {
    let dir = ScratchDir::new("pidfile-fifo");
    let path = dir.join("d.pid");
    let mut server = Server::start(&["--pid-file", path.to_str().unwrap(), "127.0.0.1:0"]);
    swap_in(&path, mkfifo);
    server.signal(SIGHUP);
    server.expect_clean_exit();
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_fifo());
}

/// Peak resident memory allowed to a process whose exit met a file that
/// reads without end, above what it inherits: the process alone takes a
/// few MiB.
const MAX_RSS_KIB: i64 = 64 * 1024;

/// This test process's own peak resident memory, in KiB. Linux carries a
/// process's peak over a fork and an exec into the child's `ru_maxrss`,
/// so a child's figure starts at its parent's: a test that panicked
/// earlier in the run (and printed a backtrace) raises it for all that
/// follow.
fn own_peak_kib() -> i64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage on this process, with a valid pointer.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    usage.ru_maxrss
}

/// A server that is not [`Server`]: this test reaps it itself, with
/// `wait4`, to learn its peak memory. Killed if the test fails first.
struct Reaped {
    pid: libc::pid_t,
    done: bool,
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if !self.done {
            // SAFETY: kill and waitpid on this test's own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// Starts drainport with a pid file, under an address-space ceiling that
/// keeps a reader without bound from taking the machine, swaps `make`'s
/// file in at the path, and checks that the drain still ends in a clean
/// exit, with a small peak memory, leaving that file where it is.
fn exit_with_at_the_path(tag: &str, make: impl FnOnce(&Path)) {
    if !have_tool("prlimit", "util-linux") {
        return;
    }
    let dir = ScratchDir::new(tag);
    let path = dir.join("d.pid");
    let mut cmd = Command::new("prlimit");
    cmd.args([AS_LIMIT, "--", BIN, "--pid-file", path.to_str().unwrap()])
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let inherited = own_peak_kib();
    // Reaped with wait4 below, for its resource usage, not with wait().
    #[allow(clippy::zombie_processes)]
    let mut child = spawn_retrying(&mut cmd).expect("spawn prlimit");
    let mut server = Reaped {
        pid: child.id() as libc::pid_t,
        done: false,
    };
    let lines = line_reader(child.stdout.take().unwrap());
    let listening = format!("Process {} listening on", server.pid);
    while !lines
        .recv_timeout(DEADLINE)
        .expect("a listening line")
        .contains(&listening)
    {}
    swap_in(&path, make);
    // SAFETY: kill(2) on this test's own child.
    assert_eq!(unsafe { libc::kill(server.pid, SIGHUP) }, 0);
    let (status, usage) = wait_until("the server to exit", || {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on this test's own child, with valid pointers.
        let reaped = unsafe { libc::wait4(server.pid, &mut status, libc::WNOHANG, &mut usage) };
        (reaped == server.pid).then_some((status, usage))
    });
    server.done = true;
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "wait status {status:#x}"
    );
    assert!(
        usage.ru_maxrss < inherited + MAX_RSS_KIB,
        "peak memory {} KiB, of which up to {inherited} KiB inherited from the test process",
        usage.ru_maxrss
    );
    assert!(fs::symlink_metadata(&path).is_ok(), "it was removed");
}

/// A link to `/dev/zero` at the path: the exit read it to the end, which
/// never comes, and memory grew until allocation failed.
#[test]
fn a_link_to_dev_zero_at_the_path_costs_no_memory_at_exit() {
    exit_with_at_the_path("pidfile-zero", |p| symlink("/dev/zero", p).unwrap());
}

/// A large (sparse) regular file at the path: the exit read all of it into
/// memory. Only as much as a pid takes is read now.
#[test]
fn a_large_file_at_the_path_is_read_no_further_than_a_pid() {
    exit_with_at_the_path("pidfile-large", |p| {
        fs::File::create(p).unwrap().set_len(512 << 20).unwrap();
    });
}

/// A link at the path to a file that names this process is not this
/// process's file: it is not read through, and not removed.
#[test]
fn a_link_at_the_path_is_left_alone_even_to_our_own_pid() {
    let dir = ScratchDir::new("pidfile-link");
    let path = dir.join("d.pid");
    let mut server = Server::start(&["--pid-file", path.to_str().unwrap(), "127.0.0.1:0"]);
    let real = dir.join("elsewhere");
    fs::write(&real, format!("{}\n", server.pid)).unwrap();
    swap_in(&path, |p| symlink(&real, p).unwrap());
    server.signal(SIGHUP);
    server.expect_clean_exit();
    assert!(fs::symlink_metadata(&path).unwrap().is_symlink());
    assert_eq!(
        fs::read_to_string(&real).unwrap(),
        format!("{}\n", server.pid)
    );
}

/// The file is readable by everyone (0644) whatever the umask: a monitor
/// running as another user reads it.
#[test]
fn the_pid_file_is_0644_whatever_the_umask() {
    for umask in ["077", "000"] {
        let dir = ScratchDir::new("pidfile-umask");
        let path = dir.join("d.pid");
        let mut server = Server::spawn(through_sh(
            "umask \"$1\" && exec \"$2\" --pid-file \"$0\" 127.0.0.1:0",
            &[path.to_str().unwrap(), umask, BIN],
        ));
        let mode = fs::metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o644, "umask {umask}: mode {mode:o}");
        server.signal(SIGHUP);
        server.expect_clean_exit();
    }
}

/// A directory that another user can write in is refused before listening,
/// whatever its sticky bit: there they could plant names, or take the pid
/// file's name first. So is a private directory reached through one that
/// is not sticky, where another user could swap it for their own.
#[test]
fn a_directory_other_users_can_write_is_refused_before_listening() {
    let dir = ScratchDir::new("pidfile-shared");
    let path = dir.join("d.pid");
    for mode in [0o777, 0o1777, 0o775, 0o757] {
        fs::set_permissions(&*dir, fs::Permissions::from_mode(mode)).unwrap();
        refused_before_listening(
            Command::new(BIN).args(["--pid-file", path.to_str().unwrap(), "127.0.0.1:0"]),
            &format!("can be written by other users (mode {mode:o})"),
        );
    }
    fs::set_permissions(&*dir, fs::Permissions::from_mode(0o777)).unwrap();
    let private = dir.join("private");
    fs::create_dir(&private).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o755)).unwrap();
    refused_before_listening(
        Command::new(BIN)
            .args(["--pid-file", private.join("d.pid").to_str().unwrap()])
            .arg("127.0.0.1:0"),
        &format!("directory {} can be written by other users", dir.display()),
    );
    // Sticky, like /tmp: others cannot rename the private directory away.
    fs::set_permissions(&*dir, fs::Permissions::from_mode(0o1777)).unwrap();
    let private_pid = private.join("d.pid");
    let mut server = Server::start(&["--pid-file", private_pid.to_str().unwrap(), "127.0.0.1:0"]);
    assert_eq!(pid_in(&private_pid), Some(server.pid));
    server.signal(SIGHUP);
    server.expect_clean_exit();
    fs::set_permissions(&*dir, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Root writing its pid file into a directory that belongs to a service
/// user (such as that user's `/run/drainport`) is refused: that user could
/// have planted a link there for root to write through.
#[test]
fn root_refuses_a_directory_of_another_user() {
    // SAFETY: geteuid has no memory effects.
    if unsafe { libc::geteuid() } != 0 {
        skip("only root can give a directory to another user");
        return;
    }
    let dir = ScratchDir::new("pidfile-owner");
    let theirs = dir.join("theirs");
    fs::create_dir(&theirs).unwrap();
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    refused_before_listening(
        Command::new(BIN)
            .args(["--pid-file", theirs.join("d.pid").to_str().unwrap()])
            .arg("127.0.0.1:0"),
        &format!("directory {} belongs to uid 65534", theirs.display()),
    );
}
