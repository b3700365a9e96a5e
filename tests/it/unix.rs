//! Unix stream sockets passed by a service manager (`ListenStream=` a
//! path, or an abstract `@name`) are served as TCP ones are: each client
//! is echoed with `: from <pid>`, the lines name the socket
//! (`unix:/run/x.sock`), and a HUPed process leaves the shared socket to
//! its sibling without losing a client. Before, drainport refused such a
//! socket with one line and exit 1.
//!
//! The socket is made by the test (as the holder, the way systemd holds
//! it) or by `systemd-socket-activate`; the servers run as the
//! unprivileged user. They are given the socket already listening, so the
//! socket file's permissions concern only the clients: the test, as root
//! or as that same user.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use libc::SIGHUP;

use crate::activation::{hup_the_first_of_two, passing};
use crate::runner::{Runner, Who};
use crate::steer::Churn;
use crate::util::{
    BIN, ScratchDir, Server, example_bin, from_line, have_tool, one_line_error, output_retrying,
    skip, status_field, wait_until,
};
use testbed::activate::{self, LISTEN_PID_SHELL};

/// The file name of a socket whose claim a test relies on. A claim holds
/// a path of at most 73 bytes less the pid's digits, and the unprivileged
/// run puts `TMPDIR` in a directory of its own
/// (`/tmp/tmp.XXXXXXXXXX/tmp`), so such paths are kept short.
const SHORT: &str = "s.sock";

/// How long a client waits for any one read or write.
const CLIENT_WAIT: Duration = Duration::from_secs(10);

/// Where a client connects: a path, or an abstract name.
#[derive(Clone, Debug)]
enum Name {
    Path(PathBuf),
    Abstract(String),
}

impl Name {
    /// As drainport prints it.
    fn printed(&self) -> String {
        match self {
            Name::Path(p) => format!("unix:{}", p.display()),
            Name::Abstract(n) => format!("unix:@{n}"),
        }
    }

    /// As `systemd-socket-activate -l` takes it.
    fn listen_arg(&self) -> String {
        match self {
            Name::Path(p) => p.display().to_string(),
            Name::Abstract(n) => format!("@{n}"),
        }
    }

    fn connect(&self) -> io::Result<UnixStream> {
        let stream = match self {
            Name::Path(p) => UnixStream::connect(p)?,
            Name::Abstract(n) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(n.as_bytes())?;
                UnixStream::connect_addr(&addr)?
            }
        };
        stream.set_read_timeout(Some(CLIENT_WAIT))?;
        stream.set_write_timeout(Some(CLIENT_WAIT))?;
        Ok(stream)
    }
}

/// Sends `line` (with its newline) on `stream` and reads the echo: the
/// line, then `: from <pid>`. Returns the pid.
fn echo(stream: &mut BufReader<UnixStream>, line: &str) -> Result<u32, String> {
    let line = format!("{line}\n");
    stream
        .get_mut()
        .write_all(line.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut got = String::new();
    for _ in 0..2 {
        match stream.read_line(&mut got) {
            Ok(0) => return Err(format!("end of input after {got:?}")),
            Ok(_) => {}
            Err(e) => return Err(format!("reply after {got:?}: {e}")),
        }
    }
    let pid = got
        .strip_prefix(&line)
        .and_then(|rest| rest.strip_prefix(": from "))
        .and_then(|rest| rest.trim_end().parse().ok())
        .ok_or_else(|| format!("not the echo of {line:?}: {got:?}"))?;
    if got.as_bytes() != [line.as_bytes(), &from_line(pid)].concat() {
        return Err(format!("not the echo of {line:?}: {got:?}"));
    }
    Ok(pid)
}

/// A client connected to `name`.
fn client(name: &Name) -> BufReader<UnixStream> {
    BufReader::new(
        name.connect()
            .unwrap_or_else(|e| panic!("connect to {name:?}: {e}")),
    )
}

/// The line `drainport stats` (no address, as `run`'s user) prints for
/// process `pid` on the socket printed as `printed`; it must print one.
#[track_caller]
fn stats_line(run: &Runner, printed: &str, pid: u32) -> String {
    let out = run
        .command(&[], &["stats"])
        .stdin(Stdio::null())
        .output()
        .expect("run drainport stats");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let start = format!("{printed} pid={pid} ");
    let line = stdout.lines().find(|l| l.starts_with(&start));
    line.unwrap_or_else(|| panic!("no line starting {start:?} in {stdout}"))
        .to_owned()
}

/// A scratch directory the unprivileged user may create sockets in.
fn open_dir(label: &str) -> ScratchDir {
    let dir = ScratchDir::new(label);
    fs::set_permissions(&*dir, fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// `systemd-socket-activate -l <path or @name> drainport`: the tool binds
/// and listens, and on the first connection execs drainport with the
/// socket as fd 3. That first client, and a second, and one through
/// `nc -U`, are echoed; the lines name the socket.
#[test]
fn systemd_socket_activate_serves_a_unix_socket() {
    if !have_tool("systemd-socket-activate", "systemd") {
        return;
    }
    let run = match Runner::new(Who::Unprivileged) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let dir = open_dir("unix-activate");
    let names = [
        Name::Path(dir.join("echo.sock")),
        Name::Abstract(format!("drainport-test-{}", std::process::id())),
    ];
    for name in names {
        let listen = name.listen_arg();
        let tool = ["systemd-socket-activate", "-l", &listen, "--fdname=echo"];
        let mut server = Server::launch(run.command(&tool, &[]));
        let first = wait_until("systemd-socket-activate to listen", || {
            assert!(server.is_running(), "systemd-socket-activate exited");
            name.connect().ok()
        });
        let mut first = BufReader::new(first);
        let pid = echo(&mut first, "hello from the first connection").unwrap();
        server.wait_listening();
        assert_eq!(
            pid, server.pid,
            "exec'd in place, drainport has the tool's pid"
        );
        let printed = name.printed();
        assert_eq!(server.listening, printed);
        let said = |server: &Server, needle: &str| server.seen.iter().any(|l| l.contains(needle));
        for needle in [
            format!("Process {pid} takes fd 3 (echo) from the service manager: {printed}"),
            format!("Process {pid} release protection: shared sockets"),
            "does not bind 127.0.0.1:8080".to_owned(),
        ] {
            assert!(said(&server, &needle), "{needle}: {:#?}", server.seen);
        }
        let mut second = client(&name);
        assert_eq!(echo(&mut second, "and the next"), Ok(pid));
        server.expect_line(&format!(
            "Process {pid} accepted connection from: {printed}"
        ));
        if let (Name::Path(path), true) = (&name, have_tool("nc", "netcat-openbsd")) {
            let out = Command::new("nc")
                .args(["-U", "-N", "-w", "10"])
                .arg(path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .and_then(|mut nc| {
                    nc.stdin.take().unwrap().write_all(b"from nc\n")?;
                    nc.wait_with_output()
                })
                .expect("run nc -U");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                format!("from nc\n: from {pid}\n")
            );
        }
        // A client the drain closes is named as it was admitted.
        server.signal(SIGHUP);
        server.expect_line("closing tasks: 2");
        server.signal(SIGHUP);
        server.expect_line(&format!(
            "Process {pid} closed connection from: {printed} (hard_stop)"
        ));
        drop((first, second));
        server.expect_clean_exit();
    }
}

/// A listening Unix stream socket at `path`, as a socket unit makes one.
fn listening_unix(path: &Path) -> OwnedFd {
    let fd = OwnedFd::from(UnixListener::bind(path).unwrap());
    // SAFETY: a socket this test owns; listen(2) again sets the backlog.
    assert_eq!(
        unsafe { libc::listen(fd.as_raw_fd(), activate::BACKLOG) },
        0
    );
    fd
}

/// One churn connection: connect, echo a line, read the reply.
fn churn_once(name: &Name, cpu: usize, i: usize) -> Result<u32, String> {
    let stream = name.connect().map_err(|e| format!("connect: {e}"))?;
    echo(&mut BufReader::new(stream), &format!("churn {cpu} {i}"))
}

/// Two processes share one Unix socket the test holds and passes, as
/// systemd passes a socket unit's to every instance (`Sockets=`). Churn
/// runs while the first drains with a client of its own: every churn
/// connection is answered and none is reset or refused, the drainer admits
/// nothing once it let go, keeps serving its client, and exits 0 when that
/// client leaves. Before, both processes refused the socket and exited 1.
#[test]
fn a_hupped_process_leaves_the_shared_unix_socket_to_its_sibling() {
    let run = match Runner::new(Who::Unprivileged) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let dir = ScratchDir::new("unix-shared");
    let name = Name::Path(dir.join(SHORT));
    let Name::Path(path) = &name else {
        unreachable!()
    };
    let socket = listening_unix(path);
    let start = || Server::spawn(passing(&run, &[&socket], Some("drainport"), &["-q"]));
    let first = start();
    let second = start();
    assert_eq!(first.listening, name.printed());
    assert_eq!(second.listening, name.printed());
    let mut kept = (0..400)
        .map(|_| client(&name))
        .find_map(|mut c| (echo(&mut c, "pick") == Ok(first.pid)).then_some(c))
        .expect("no connection reached the first process");
    // `drainport stats`, with no address, lists both under the socket's
    // name: the Unix socket is claimed as an IP address is.
    for server in [&first, &second] {
        let line = stats_line(&run, &name.printed(), server.pid);
        assert!(line.contains(" state=running "), "{line}");
        // The first holds the client kept; the second's count may still
        // include the picks it answered, closed a moment ago.
        if server.pid == first.pid {
            assert_eq!(status_field(&line, "clients"), 1, "{line}");
        }
    }

    let churned = name.clone();
    let churn = Churn::start_with(move |cpu, i| churn_once(&churned, cpu, i));
    hup_the_first_of_two(
        first,
        second,
        churn,
        move || echo(&mut kept, "still served").unwrap(),
        "a hupped process and its sibling, on a Unix socket",
    );
}

/// Two programs passed one Unix socket would split its clients between
/// them, as two on one port would: the second is refused with one line
/// naming the socket and the first, and exits 1, while the first serves
/// on. Both run as the test's user, which is all the claim check asks.
#[test]
fn another_program_is_refused_on_a_shared_unix_socket() {
    let dir = ScratchDir::new("unix-2p");
    let name = Name::Path(dir.join(SHORT));
    let Name::Path(path) = &name else {
        unreachable!()
    };
    let socket = listening_unix(path);
    let passing_to = |program: &Path, args: &[&str]| {
        let mut cmd = Command::new(LISTEN_PID_SHELL[0]);
        cmd.args(&LISTEN_PID_SHELL[1..]).arg(program).args(args);
        activate::pass(&mut cmd, &[socket.as_raw_fd()], Some("drainport"));
        cmd
    };
    let mut echo_server = Server::spawn(passing_to(Path::new(BIN), &["-q"]));
    assert_eq!(echo_server.listening, name.printed());
    let output =
        output_retrying(passing_to(&example_bin("kv"), &[]).stdin(Stdio::null())).expect("run kv");
    let needle = format!(
        "{} is served by another service, Lines<Echo> (pid {})",
        name.printed(),
        echo_server.pid
    );
    one_line_error(&output, "kv on the echo server's Unix socket", &needle);
    let mut still = client(&name);
    assert_eq!(echo(&mut still, "still served"), Ok(echo_server.pid));
    drop(still);
    echo_server.signal(SIGHUP);
    echo_server.expect_clean_exit();
}

/// A Unix socket that is not a stream socket is the operator's mistake,
/// as a UDP one is: one line on stderr naming the socket, exit 1, and
/// nothing listens.
#[test]
fn a_unix_datagram_or_seqpacket_socket_is_refused() {
    let run = match Runner::new(Who::Unprivileged) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let dir = ScratchDir::new("unix-refused");
    let dgram_path = dir.join("dgram.sock");
    let dgram = OwnedFd::from(UnixDatagram::bind(&dgram_path).unwrap());
    // SAFETY: a new descriptor, owned at once.
    let seqpacket = unsafe {
        OwnedFd::from_raw_fd(libc::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
        ))
    };
    let seq_path = dir.join("seq.sock");
    bind_listen(&seqpacket, &seq_path);
    for (socket, needle) in [
        (
            &dgram,
            format!(
                "fd 3 (unknown) passed by the service manager is a datagram socket (ListenDatagram=) on unix:{}; drainport serves stream sockets (ListenStream=)",
                dgram_path.display()
            ),
        ),
        (
            &seqpacket,
            format!(
                "fd 3 (unknown) passed by the service manager is a sequential packet socket (ListenSequentialPacket=) on unix:{}",
                seq_path.display()
            ),
        ),
    ] {
        let mut cmd = passing(&run, &[socket], None, &["127.0.0.1:0"]);
        let output = output_retrying(cmd.stdin(Stdio::null())).expect("run drainport");
        let stderr = one_line_error(&output, &needle, &needle);
        assert!(stderr.starts_with("drainport: "), "{stderr}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(!stdout.contains("listening on"), "{stdout}");
    }
}

/// Binds `fd` to `path` and makes it listen.
fn bind_listen(fd: &OwnedFd, path: &Path) {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_encoded_bytes();
    for (dst, &src) in sun.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `sun` is a live sockaddr_un of at least `len` bytes.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sun).cast(),
            len as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
    // SAFETY: listen(2) takes no memory.
    assert_eq!(unsafe { libc::listen(fd.as_raw_fd(), 16) }, 0);
}

/// A path as the lines print it: printable ASCII as it is but `\`
/// (doubled) and `|`, every other byte as `\xNN`.
fn escaped(path: &Path) -> String {
    let mut out = String::from("unix:");
    for &b in path.as_os_str().as_encoded_bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'|' => out.push_str("\\x7c"),
            b' '..=b'~' => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// A socket's path may hold any byte but NUL: a newline, bytes that are
/// not UTF-8. The lines print it escaped, as they print an abstract name,
/// so that it cannot split or forge a line, nor read as another path.
/// Before, the newline split the `takes fd` and `listening on` lines in
/// two, and the rest of the path came out as a line of its own.
#[test]
fn a_path_of_odd_bytes_is_printed_escaped() {
    use std::os::unix::ffi::OsStrExt;
    let run = match Runner::new(Who::Unprivileged) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let dir = ScratchDir::new("unix-odd");
    let path = dir.join(std::ffi::OsStr::from_bytes(b"a\nb\xff.sock"));
    let socket = listening_unix(&path);
    let printed = escaped(&path);
    let mut server = Server::spawn(passing(&run, &[&socket], Some("drainport"), &[]));
    assert_eq!(server.listening, printed, "{:#?}", server.seen);
    let takes = format!(
        "Process {} takes fd 3 (drainport) from the service manager: {printed}",
        server.pid
    );
    assert!(server.seen.contains(&takes), "{:#?}", server.seen);
    let mut c = client(&Name::Path(path.clone()));
    assert_eq!(echo(&mut c, "odd"), Ok(server.pid));
    server.expect_line(&format!(
        "Process {} accepted connection from: {printed}",
        server.pid
    ));
    drop(c);
    server.signal(SIGHUP);
    server.expect_clean_exit();
    // Every line the process wrote starts as its lines do.
    let pid = format!("process {} ", server.pid);
    let stray: Vec<&String> = server
        .seen
        .iter()
        .filter(|l| !l.to_lowercase().starts_with(&pid))
        .collect();
    assert!(stray.is_empty(), "{stray:#?}");
}

/// A `|` in a socket's path, the character that separates the parts of a
/// claim's name, is printed as `\x7c`, so that the claim reads back whole:
/// `drainport stats` lists the process under the text its lines print.
/// Before, the process announced a name that no listing could read, and
/// `drainport stats` did not list it.
#[test]
fn a_path_with_a_bar_is_claimed_and_listed() {
    let run = match Runner::new(Who::Unprivileged) {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let dir = ScratchDir::new("unix-bar");
    let path = dir.join("a|b");
    let socket = listening_unix(&path);
    let printed = escaped(&path);
    assert!(printed.ends_with("a\\x7cb"), "{printed}");
    let mut server = Server::spawn(passing(&run, &[&socket], Some("drainport"), &["-q"]));
    assert_eq!(server.listening, printed, "{:#?}", server.seen);
    stats_line(&run, &printed, server.pid);
    server.signal(SIGHUP);
    server.expect_clean_exit();
}
