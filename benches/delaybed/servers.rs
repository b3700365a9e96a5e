//! drainport processes in the server namespace.
//!
//! Each is started from a thread that entered the namespace, so it and
//! its sockets live there; as root the bed runs it as uid 65534 through
//! `setpriv`, from a world-readable copy of the binary in a fresh
//! directory (the checkout may be out of that user's reach). A server
//! binds its own listeners, or serves a socket the bench holds and passes
//! to it as a service manager does ([`Serve`]); with steering off it runs
//! with the no-steering shim loaded ([`super::nosteer`]). A thread per
//! process reads its stdout and then reaps it, stamping each line and the
//! exit with the time it saw them. Signals go through a pidfd, so they can
//! only ever reach the process this module started, even after it exited.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use super::activate;
use super::netns::Namespace;
use super::nosteer;

/// The unprivileged user and group.
pub const NOBODY: u32 = 65534;

/// A fresh directory under the temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Result<TempDir, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::temp_dir();
        for _ in 0..1000 {
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            let dir = base.join(format!("drainport-{label}-{}-{n}", std::process::id()));
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(TempDir(dir)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("create {}: {e}", dir.display())),
            }
        }
        Err(format!("no free directory name in {}", base.display()))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a server serves.
#[derive(Clone, Copy, Debug)]
pub enum Serve {
    /// Its own listeners on this address.
    Bind(SocketAddr),
    /// The listening socket the bench holds, passed to it as descriptor 3
    /// (`LISTEN_FDS`), as a socket unit's `Sockets=` does.
    Passed(RawFd),
    /// The listening sockets of process `from` on this address, taken
    /// over (`--take-over`), as `scripts/rolling-restart` does.
    TakeOver { addr: SocketAddr, from: u32 },
}

/// The server binary and who runs it.
pub struct Binary {
    path: PathBuf,
    /// Run as uid/gid 65534 through setpriv.
    pub unprivileged: bool,
    /// The no-steering shim, once built.
    shim: Option<PathBuf>,
    dir: Option<TempDir>,
}

impl Binary {
    /// `bin` itself, or for an unprivileged run a copy that everyone can
    /// read and run.
    pub fn prepare(bin: &str, unprivileged: bool) -> Result<Binary, String> {
        if !unprivileged {
            return Ok(Binary {
                path: bin.into(),
                unprivileged,
                shim: None,
                dir: None,
            });
        }
        let dir = TempDir::new("delaybed-bin")?;
        let mode = |m| std::fs::Permissions::from_mode(m);
        std::fs::set_permissions(dir.path(), mode(0o755)).map_err(|e| e.to_string())?;
        let path = dir.path().join("drainport");
        std::fs::copy(bin, &path).map_err(|e| format!("copy {bin}: {e}"))?;
        std::fs::set_permissions(&path, mode(0o755)).map_err(|e| e.to_string())?;
        Ok(Binary {
            path,
            unprivileged,
            shim: None,
            dir: Some(dir),
        })
    }

    /// Builds the no-steering shim, once, where the servers' user can
    /// read it.
    pub fn build_shim(&mut self) -> Result<(), String> {
        if self.shim.is_some() {
            return Ok(());
        }
        if self.dir.is_none() {
            let dir = TempDir::new("delaybed-shim")?;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
            self.dir = Some(dir);
        }
        let dir = self.dir.as_ref().expect("made above");
        self.shim = Some(nosteer::build(dir.path())?);
        Ok(())
    }

    pub fn who(&self) -> &'static str {
        if self.unprivileged { "65534" } else { "root" }
    }

    /// The command that runs a server on `serve`; without `steering`, with
    /// the no-steering shim loaded (built first with [`Binary::build_shim`]).
    fn command(&self, serve: Serve, steering: bool) -> Result<Command, String> {
        // The wrappers, each exec'ing the rest: the shell that sets
        // LISTEN_PID, setpriv; then the server.
        let mut argv: Vec<OsString> = Vec::new();
        if let Serve::Passed(_) = serve {
            argv.extend(activate::LISTEN_PID_SHELL.map(OsString::from));
        }
        if self.unprivileged {
            argv.extend(
                [
                    "setpriv".to_owned(),
                    format!("--reuid={NOBODY}"),
                    format!("--regid={NOBODY}"),
                    "--clear-groups".to_owned(),
                ]
                .map(OsString::from),
            );
        }
        argv.push(self.path.clone().into());
        argv.push("-q".into());
        match serve {
            Serve::Bind(addr) => argv.push(addr.to_string().into()),
            Serve::TakeOver { addr, from } => {
                argv.push("--take-over".into());
                argv.push(from.to_string().into());
                argv.push(addr.to_string().into());
            }
            Serve::Passed(_) => {}
        }
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        if let Serve::Passed(fd) = serve {
            activate::pass(&mut cmd, &[fd], Some("delaybed"));
        }
        if !steering {
            let shim = self
                .shim
                .as_ref()
                .ok_or("the no-steering shim was not built")?;
            cmd.env(nosteer::PRELOAD, shim);
        }
        Ok(cmd)
    }
}

enum Event {
    Line(Instant, String),
    Exit(Instant, io::Result<ExitStatus>),
}

/// One server process.
pub struct Server {
    pub pid: u32,
    pidfd: Option<OwnedFd>,
    events: Receiver<Event>,
    pub started: Instant,
    pub listening: Option<Instant>,
    pub hup_at: Option<Instant>,
    /// When it printed `has no clients left, exiting`.
    pub no_clients_at: Option<Instant>,
    pub exit: Option<(Instant, Result<ExitStatus, String>)>,
    /// Lines that are neither per-connection nor routine, for a report.
    pub notes: Vec<String>,
    /// What its startup line says protects its release: the words after
    /// `release protection: ` up to the explanation.
    pub protection: Option<String>,
}

impl Server {
    /// Starts `drainport -q` on `serve` in `ns`, with steering emulated
    /// away unless `steering`.
    pub fn start(
        ns: &Namespace,
        bin: &Binary,
        serve: Serve,
        steering: bool,
    ) -> Result<Server, String> {
        let mut cmd = bin.command(serve, steering)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let started = Instant::now();
        let mut child = ns
            .run(move || cmd.spawn())?
            .map_err(|e| format!("cannot start the server: {e}"))?;
        let pid = child.id();
        // Before anything can reap the child, so the pidfd names it.
        // SAFETY: pidfd_open(2) on our own unreaped child.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        // SAFETY: a descriptor the kernel just returned, owned by nobody else.
        let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as libc::c_int) });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(Event::Line(Instant::now(), line)).is_err() {
                    break;
                }
            }
            // Stdout closes at exit.
            let status = child.wait();
            let _ = tx.send(Event::Exit(Instant::now(), status));
        });
        Ok(Server {
            pid,
            pidfd,
            events: rx,
            started,
            listening: None,
            hup_at: None,
            no_clients_at: None,
            exit: None,
            notes: Vec::new(),
            protection: None,
        })
    }

    fn take(&mut self, event: Event) {
        match event {
            Event::Line(at, line) => {
                let me = format!("Process {} ", self.pid);
                if line.starts_with(&me) && line.contains(" listening on: ") {
                    self.listening.get_or_insert(at);
                } else if let Some((_, said)) = line.split_once("release protection: ") {
                    let end = said.find([';', ':', '(']).unwrap_or(said.len());
                    self.protection
                        .get_or_insert_with(|| said[..end].trim().to_owned());
                } else if line.contains("has no clients left, exiting") {
                    self.no_clients_at.get_or_insert(at);
                } else if !line.contains("running")
                    && !line.contains("received SIGHUP")
                    && !line.contains("closing tasks")
                    && !line.contains("draining")
                    && self.notes.len() < 5
                {
                    self.notes.push(line);
                }
            }
            Event::Exit(at, status) => self.exit = Some((at, status.map_err(|e| e.to_string()))),
        }
    }

    /// Takes in what the reader thread has seen so far.
    pub fn poll(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.take(event);
        }
    }

    /// Waits until `done` holds or `timeout` passes; false on timeout.
    fn wait_for(&mut self, timeout: Duration, done: impl Fn(&Server) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        self.poll();
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => self.take(event),
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) => return done(self),
            }
        }
        true
    }

    /// Waits for `Process <pid> listening on:`.
    pub fn wait_listening(&mut self, timeout: Duration) -> Result<(), String> {
        if self.wait_for(timeout, |s| s.listening.is_some() || s.exit.is_some())
            && self.listening.is_some()
        {
            return Ok(());
        }
        Err(format!(
            "server {} not listening after {timeout:?} (exit {:?}; other output {:?})",
            self.pid,
            self.exit.as_ref().map(|e| &e.1),
            self.notes
        ))
    }

    /// Waits for the exit; true if it came within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.exit.is_some())
    }

    pub fn running(&mut self) -> bool {
        self.poll();
        self.exit.is_none()
    }

    pub fn hup(&mut self) {
        self.hup_at = Some(Instant::now());
        self.signal(libc::SIGHUP);
    }

    /// Sends `signal` to this process only: through its pidfd, which after
    /// the exit reaches nothing, or where pidfds are missing, by pid while
    /// the process has not been seen to exit.
    pub fn signal(&mut self, signal: libc::c_int) {
        if let Some(fd) = &self.pidfd {
            // SAFETY: pidfd_send_signal(2) on our pidfd, with no siginfo.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    signal,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
        } else if self.running() {
            // SAFETY: kill(2) on the pid of our own child, not yet reaped
            // as far as we know.
            unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        }
    }

    /// SIGHUP to exit.
    pub fn hup_to_exit(&self) -> Option<Duration> {
        self.exit.as_ref()?.0.checked_duration_since(self.hup_at?)
    }

    /// Whether it exited with status 0.
    pub fn exited_cleanly(&self) -> bool {
        matches!(&self.exit, Some((_, Ok(status))) if status.success())
    }

    /// How it ended, for a report.
    pub fn describe_exit(&self) -> String {
        match &self.exit {
            None => "still running".into(),
            Some((_, Ok(status))) => format!("{status}"),
            Some((_, Err(e))) => format!("wait failed: {e}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.running() {
            self.signal(libc::SIGKILL);
            self.wait_exit(Duration::from_secs(5));
        }
    }
}
