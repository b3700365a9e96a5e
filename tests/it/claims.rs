//! The port check against names that anyone can write. Any local user can
//! bind an abstract Unix socket under any name, including one that looks
//! like a drainport announcement. Such a name must not refuse a start
//! (only the service's own uid could share the port), must not switch the
//! check off (a name is bytes, not text), must not leave a process
//! unannounced (by taking its name first), and must not reach a line raw.
//!
//! Where the names come from another uid, a helper process of that uid
//! makes them, so those tests run as root, each in a network namespace of
//! its own: abstract names belong to the namespace, and nothing there is
//! seen by other tests or other programs on the machine. The tests of the
//! server's own uid's names run as any user, on an address of their own.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use libc::SIGHUP;

use crate::netns::in_namespace;
use crate::runner::{NOBODY, Runner, Who};
use crate::util::{
    BIN, Client, DEADLINE, Server, example_bin, one_line_error, raise_fd_limit, skip,
    spawn_retrying,
};
use testbed::claim;

/// The address the servers use, inside a namespace of the test's own.
const ADDR: &str = "127.0.0.1:7000";

/// Abstract names held by a helper process of another uid for as long as
/// this lives. The helper binds them, then runs `cat` on a pipe, which ends
/// when the test does, so no helper outlives it.
struct Names {
    child: Child,
}

impl Names {
    /// Binds each of `names` (the bytes after the abstract name's NUL) as
    /// `uid`, as a datagram socket and as a stream socket: the kernel keeps
    /// names of different types apart, and a claim is one or the other.
    fn hold(uid: u32, names: &[Vec<u8>]) -> Names {
        let addrs: Vec<(libc::sockaddr_un, libc::socklen_t)> =
            names.iter().map(|name| claim::sockaddr(name)).collect();
        let mut cmd = Command::new("cat");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .uid(uid)
            .gid(uid);
        let bind_all = move || -> std::io::Result<()> {
            // Room for two sockets a name, whatever limit the test has.
            raise_fd_limit();
            for (addr, len) in &addrs {
                for kind in [libc::SOCK_DGRAM, libc::SOCK_STREAM] {
                    // Not close-on-exec: `cat` holds them.
                    // SAFETY: plain socket(2) and bind(2) on a sockaddr
                    // prepared before the fork; nothing is allocated.
                    unsafe {
                        let fd = libc::socket(libc::AF_UNIX, kind, 0);
                        if fd < 0 || libc::bind(fd, (&raw const *addr).cast(), *len) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                }
            }
            Ok(())
        };
        // SAFETY: the closure runs between fork and exec, after the uid
        // change, and makes only system calls on memory prepared before
        // the fork.
        unsafe { cmd.pre_exec(bind_all) };
        let child = spawn_retrying(&mut cmd)
            .unwrap_or_else(|e| panic!("a helper as uid {uid} binding {} names: {e}", names.len()));
        Names { child }
    }
}

impl Drop for Names {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The uid of a user other than the one `who` runs the servers as.
fn stranger(who: Who) -> u32 {
    match who {
        Who::Root => NOBODY.parse().unwrap(),
        Who::Unprivileged => 0,
    }
}

/// Runs `cmd`, which must refuse to start, and returns what it printed.
/// One that listens instead fails the test at once, rather than at the
/// deadline.
#[track_caller]
fn refused(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_retrying(cmd).expect("spawn");
    let lines = byte_lines(child.stdout.take().expect("piped stdout"));
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let mut stdout = Vec::new();
    let start = Instant::now();
    let status = loop {
        stdout.extend(lines.try_iter());
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        let listening = stdout.iter().any(|l| contains(l, b"listening on"));
        if listening || start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{:?} started instead of refusing: {:#?}",
                cmd.get_program(),
                stdout
                    .iter()
                    .map(|l| String::from_utf8_lossy(l))
                    .collect::<Vec<_>>()
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    while let Ok(line) = lines.recv_timeout(DEADLINE) {
        stdout.push(line);
    }
    Output {
        status,
        stdout: stdout.concat(),
        stderr: err.join().expect("stderr reader"),
    }
}

/// A child's output as lines of bytes, newline included: the bytes as
/// they came, whatever they are.
fn byte_lines(mut out: impl Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while let Ok(1) = out.read(&mut byte) {
            line.push(byte[0]);
            if byte[0] == b'\n' && tx.send(std::mem::take(&mut line)).is_err() {
                return;
            }
        }
        if !line.is_empty() {
            let _ = tx.send(line);
        }
    });
    rx
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that `bytes` holds printable ASCII and line ends only.
#[track_caller]
fn assert_printable(what: &str, bytes: &[u8]) {
    let raw: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|&b| b != b'\n' && !(b' '..=b'~').contains(&b))
        .collect();
    assert!(
        raw.is_empty(),
        "{what} holds raw bytes {raw:x?}: {:?}",
        String::from_utf8_lossy(bytes)
    );
}

/// A stranger made names of drainport's shape on port 80, which that user
/// could never bind. Root's drainport on it starts, serves, and says
/// nothing of them.
#[test]
fn a_strangers_name_does_not_refuse_a_start() {
    in_namespace(&[], || {
        let addr = "127.0.0.1:80";
        let _names = Names::hold(
            stranger(Who::Root),
            &[
                b"drainport|127.0.0.1:80|1|Squatter".to_vec(),
                b"drainport|127.0.0.1:80|1.0123456789abcdef|Squatter".to_vec(),
            ],
        );
        let mut server = Server::start(&["-q", addr]);
        assert_eq!(Client::connect(server.addr).echo("still mine"), server.pid);
        server.signal(SIGHUP);
        let seen = server.expect_clean_exit();
        assert!(
            seen.iter()
                .all(|l| !l.contains("Squatter") && !l.contains("cannot")),
            "{seen:#?}"
        );
    });
}

/// Names that are not UTF-8, made by another user, one of them of
/// drainport's shape on the address: the kv example is still refused on
/// the echo server's address.
fn a_name_that_is_not_text_leaves_the_check_on(who: Who) {
    in_namespace(&[], move || {
        let run = match Runner::new(who) {
            Ok(run) => run,
            Err(reason) => return skip(&reason),
        };
        let _names = Names::hold(
            stranger(who),
            &[
                b"junk\xff".to_vec(),
                format!("drainport|{ADDR}|1|")
                    .into_bytes()
                    .into_iter()
                    .chain(*b"\xff")
                    .collect(),
            ],
        );
        let mut echo = run.start(&["-q", ADDR]);
        let kv = example_bin("kv");
        let out = refused(&mut run.program_command(&kv, "kv", &[ADDR]));
        one_line_error(
            &out,
            "kv",
            &format!(
                "is served by another service, Lines<Echo> (pid {}), and this is Lines<Kv>",
                echo.pid
            ),
        );
        assert!(!contains(&out.stdout, b"not checked"));
        echo.signal(SIGHUP);
        let seen = echo.expect_clean_exit();
        assert!(seen.iter().all(|l| !l.contains("cannot")), "{seen:#?}");
    });
}

#[test]
fn a_name_that_is_not_text_leaves_the_check_on_as_root() {
    a_name_that_is_not_text_leaves_the_check_on(Who::Root);
}

#[test]
fn a_name_that_is_not_text_leaves_the_check_on_unprivileged() {
    a_name_that_is_not_text_leaves_the_check_on(Who::Unprivileged);
}

/// Pids to squat after the last one given out: the helper itself and
/// whatever other tests start meanwhile take some.
const SQUATTED_PIDS: u32 = 300;

/// A stranger takes the names the echo server would announce under, with
/// each of the next pids, before it starts. The echo server is still
/// announced: the kv example is refused on its address.
#[test]
fn taking_the_next_names_leaves_no_process_unannounced() {
    in_namespace(&[], || {
        // The pid is guessed, and a guess can miss when other tests start
        // processes meanwhile: try until the echo server's pid was among
        // those squatted.
        for _attempt in 0..10 {
            let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
                .expect("read ns_last_pid")
                .trim()
                .parse()
                .expect("a pid");
            let pids = last + 1..=last + SQUATTED_PIDS;
            let names: Vec<Vec<u8>> = pids
                .clone()
                .map(|pid| format!("drainport|{ADDR}|{pid}|Lines<Echo>").into_bytes())
                .collect();
            let names = Names::hold(stranger(Who::Root), &names);
            let mut echo = Server::start(&["-q", ADDR]);
            if !pids.contains(&echo.pid) {
                echo.signal(SIGHUP);
                echo.expect_clean_exit();
                drop(names);
                continue;
            }
            assert!(
                echo.drain_lines()
                    .iter()
                    .all(|l| !l.contains("cannot announce")),
                "{:#?}",
                echo.seen
            );
            let kv = example_bin("kv");
            let out = refused(Command::new(&kv).arg(ADDR));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains(&format!("Lines<Echo> (pid {})", echo.pid)),
                "{stderr}"
            );
            echo.signal(SIGHUP);
            echo.expect_clean_exit();
            return;
        }
        panic!("the echo server's pid was never among the {SQUATTED_PIDS} squatted");
    });
}

/// A claim of the server's own uid whose service holds control
/// characters, a newline and a right-to-left override (`--service` cannot
/// make one: it is made here with a raw bind, in the shape older releases
/// used, which is still read). The refusal's error line and the line of a
/// process that joins anyway show it escaped.
#[test]
fn a_names_control_characters_are_escaped() {
    let mut echo = Server::start(&["-q", "127.0.0.1:0"]);
    let addr = echo.addr.to_string();
    let pid = std::process::id();
    let name = format!("drainport|{addr}|{pid}|Evil\x1b]0;owned\x07\r\nfake\u{202e}");
    let (sun, len) = claim::sockaddr(name.as_bytes());
    // SAFETY: socket(2), then bind(2) on a live sockaddr of that length.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let _claim = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: as above.
    let rc = unsafe { libc::bind(fd, (&raw const sun).cast(), len) };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    let escaped = r"Evil\x1b]0;owned\x07\x0d\x0afake\xe2\x80\xae";

    let out = refused(Command::new(BIN).args(["-q", &addr]));
    assert_printable("stderr", &out.stderr);
    assert_printable("stdout", &out.stdout);
    one_line_error(
        &out,
        "drainport",
        &format!("another service, {escaped} (pid {pid})"),
    );

    let mut cmd = Command::new(BIN);
    cmd.args(["--join-any", &addr])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = spawn_retrying(&mut cmd).expect("spawn");
    let lines = byte_lines(child.stdout.take().expect("piped stdout"));
    let mut seen = Vec::new();
    let start = Instant::now();
    while !seen.iter().any(|l: &Vec<u8>| contains(l, b"listening on")) {
        assert!(start.elapsed() < DEADLINE, "no listening line: {seen:?}");
        seen.extend(lines.recv_timeout(DEADLINE));
    }
    let all = seen.concat();
    let _ = child.kill();
    let _ = child.wait();
    assert_printable("stdout", &all);
    assert!(
        contains(&all, format!("which {escaped} (pid {pid})").as_bytes()),
        "{}",
        String::from_utf8_lossy(&all)
    );
    echo.signal(SIGHUP);
    echo.expect_clean_exit();
}

/// `AUDIT_ARCH_*` of this build, for the seccomp filter.
fn audit_arch() -> Option<u32> {
    if cfg!(target_arch = "x86_64") {
        Some(0xC000_003E)
    } else if cfg!(target_arch = "aarch64") {
        Some(0xC000_00B7)
    } else {
        None
    }
}

fn bpf(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Where the kernel's socket diagnostics cannot be asked (a sandbox that
/// forbids netlink, as a unit's address-family allow list without
/// `AF_NETLINK` does), owners are unknown: the process says so once, and
/// another service on its address is reported, not refused.
#[test]
fn without_socket_diagnostics_another_service_is_reported_not_refused() {
    let Some(arch) = audit_arch() else {
        return skip("the seccomp filter here knows x86_64 and aarch64 only");
    };
    let mut echo = Server::start(&["-q", "127.0.0.1:0"]);
    let addr = echo.addr.to_string();
    // socket(AF_NETLINK, ...) fails with EAFNOSUPPORT; all else is allowed.
    let (ld, jeq, ret) = (
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        libc::BPF_RET | libc::BPF_K,
    );
    let filter = [
        bpf(ld, 0, 0, 4), // seccomp_data.arch
        bpf(jeq, 0, 5, arch),
        bpf(ld, 0, 0, 0), // seccomp_data.nr
        bpf(jeq, 0, 3, libc::SYS_socket as u32),
        bpf(ld, 0, 0, 16), // the low half of args[0] (little-endian)
        bpf(jeq, 0, 1, libc::AF_NETLINK as u32),
        bpf(
            ret,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32,
        ),
        bpf(ret, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let mut cmd = Command::new(example_bin("kv"));
    cmd.arg(&addr);
    let install = move || -> std::io::Result<()> {
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: prctl with a live sock_fprog over `filter`; no allocation.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::c_ulong::from(libc::SECCOMP_MODE_FILTER),
                    &raw const prog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure runs between fork and exec and makes only
    // system calls on memory prepared before the fork.
    unsafe { cmd.pre_exec(install) };
    let mut kv = Server::spawn(cmd);
    let seen = kv.seen.join("\n");
    assert!(
        seen.contains(&format!(
            "cannot tell who announced the services on {addr} (the kernel's socket diagnostics \
             cannot be asked: Address family not supported by protocol (os error 97)); another \
             service there is reported, not refused"
        )),
        "{seen}"
    );
    assert!(
        seen.contains(&format!(
            "joins {addr}, which Lines<Echo> (pid {}) may also serve: who announced it is unknown",
            echo.pid
        )),
        "{seen}"
    );
    assert_eq!(
        kv.seen
            .iter()
            .filter(|l| l.contains("cannot tell who"))
            .count(),
        1
    );
    for server in [&mut echo, &mut kv] {
        server.signal(SIGHUP);
        server.expect_clean_exit();
    }
}
