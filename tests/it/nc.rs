//! Debian's `nc` (OpenBSD netcat), run the way the README tells a user to:
//! `nc -N ADDR PORT`, typing lines, then Ctrl-D, which is EOF on nc's
//! standard input.

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;

use crate::util::{DEADLINE, Server, find_tool, have_tool, line_reader, skip, wait_until};

/// A running `nc` with its standard input in the test's hands and its
/// output read line by line. Dropping it kills nc if it still runs.
struct Nc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Nc {
    fn start(nc: &Path, server: &Server) -> Nc {
        let mut child = Command::new(nc)
            .arg("-N")
            .arg(server.addr.ip().to_string())
            .arg(server.addr.port().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nc");
        let stdin = child.stdin.take();
        let lines = line_reader(child.stdout.take().expect("piped stdout"));
        Nc {
            child,
            stdin,
            lines,
        }
    }

    fn type_text(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("nc's input is still open");
        stdin.write_all(text.as_bytes()).expect("write to nc");
        stdin.flush().expect("flush nc's input");
    }

    /// Ctrl-D at the start of a line: nc's input ends.
    fn end_input(&mut self) {
        self.stdin = None;
    }

    #[track_caller]
    fn expect_line(&self, want: &str) {
        let line = self
            .lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("no line {want:?} from nc within {DEADLINE:?}: {e}"));
        assert_eq!(line, want);
    }

    #[track_caller]
    fn wait_exit(&mut self) -> ExitStatus {
        wait_until("nc to exit", || self.child.try_wait().expect("try_wait"))
    }
}

impl Drop for Nc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `nc` on `PATH`, if it is OpenBSD netcat (whose `-h` names itself
/// and lists `-N`); other builds skip the test with the reason.
fn openbsd_nc() -> Option<std::path::PathBuf> {
    if !have_tool("nc", "netcat-openbsd") {
        return None;
    }
    let nc = find_tool("nc").expect("found above");
    let help = Command::new(&nc)
        .arg("-h")
        .stdin(Stdio::null())
        .output()
        .expect("run nc -h");
    let text = String::from_utf8_lossy(&help.stderr);
    if !text.contains("OpenBSD netcat") {
        skip(&format!(
            "{} is not OpenBSD netcat (Debian package netcat-openbsd), whose -N the README documents",
            nc.display()
        ));
        return None;
    }
    Some(nc)
}

#[test]
fn nc_dash_n_gets_every_reply_and_lets_a_drain_end() {
    let Some(nc) = openbsd_nc() else {
        return;
    };
    let mut server = Server::start(&["127.0.0.1:0"]);
    let from = format!(": from {}", server.pid);
    let mut client = Nc::start(&nc, &server);
    client.type_text("hello\n");
    client.expect_line("hello");
    client.expect_line(&from);

    // A draining process keeps serving nc...
    server.signal(libc::SIGHUP);
    server.expect_line("received hangup signal");
    client.type_text("still here\n");
    client.expect_line("still here");
    client.expect_line(&from);

    // ...and a partial line followed by Ctrl-D is answered, after which
    // -N closes nc's side, the server closes its own, and both exit.
    client.type_text("tail");
    client.end_input();
    client.expect_line("tail");
    client.expect_line(&from);
    let status = client.wait_exit();
    assert!(status.success(), "nc exited with {status:?}");
    let lines = server.expect_clean_exit();
    assert!(
        lines.iter().any(|l| l.contains("has no clients left")),
        "stdout: {lines:#?}"
    );
}
