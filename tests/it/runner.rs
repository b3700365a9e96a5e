//! Servers run as a chosen user: as the unprivileged user a systemd
//! `User=` service runs as, or as root. Under root, the unprivileged run
//! uses a copy of the binary that user can reach, whatever the checkout's
//! permissions.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use crate::util::{BIN, ScratchDir, Server, have_tool};

/// The unprivileged user the servers run as when the tests run as root.
pub const NOBODY: &str = "65534";

/// Who the servers run as.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Who {
    Unprivileged,
    Root,
}

/// Starts servers as one user. For an unprivileged run under root, the
/// binary is copied where that user can reach it, whatever the checkout's
/// permissions.
pub struct Runner {
    pub who: Who,
    /// Where the copy of the binary is, for an unprivileged run under root.
    copy: Option<ScratchDir>,
}

/// The copied binary's name in the runner's directory.
const COPY: &str = "drainport";

impl Runner {
    /// A runner, or the reason this test cannot run here.
    pub fn new(who: Who) -> Result<Runner, String> {
        // SAFETY: geteuid has no memory effects.
        let root = unsafe { libc::geteuid() } == 0;
        match (who, root) {
            (Who::Root, false) => Err("the root variant needs root".into()),
            (Who::Root, true) | (Who::Unprivileged, false) => Ok(Runner { who, copy: None }),
            (Who::Unprivileged, true) => {
                if !have_tool("setpriv", "util-linux") {
                    return Err("the unprivileged run needs setpriv".into());
                }
                let dir = ScratchDir::new("steer");
                fs::set_permissions(&*dir, fs::Permissions::from_mode(0o755))
                    .map_err(|e| e.to_string())?;
                let bin = dir.join(COPY);
                fs::copy(BIN, &bin).map_err(|e| format!("copy {BIN}: {e}"))?;
                fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))
                    .map_err(|e| e.to_string())?;
                Ok(Runner {
                    who,
                    copy: Some(dir),
                })
            }
        }
    }

    /// Whether this runner runs an unprivileged user's servers from root,
    /// through a copy of the binary.
    pub fn is_under_root(&self) -> bool {
        self.copy.is_some()
    }

    #[track_caller]
    pub fn start(&self, args: &[&str]) -> Server {
        self.start_with(&[], args)
    }

    /// Starts the server through `wrapper` (a command that execs the rest
    /// of its arguments), as this runner's user.
    #[track_caller]
    pub fn start_with(&self, wrapper: &[&str], args: &[&str]) -> Server {
        let server = Server::spawn(self.command(wrapper, args));
        if self.who == Who::Unprivileged {
            let uid = fs::read_to_string(format!("/proc/{}/status", server.pid))
                .expect("read status")
                .lines()
                .find_map(|l| l.strip_prefix("Uid:").map(str::to_owned))
                .expect("Uid line");
            assert!(
                uid.split_whitespace().all(|id| id != "0"),
                "the server runs as root: Uid {uid}"
            );
        }
        server
    }

    /// Starts `program` (an executable built by cargo, such as an example)
    /// with `args`, as this runner's user, and waits until it listens. For
    /// an unprivileged run under root it runs from a copy under `name`.
    #[track_caller]
    pub fn start_program(&self, program: &std::path::Path, name: &str, args: &[&str]) -> Server {
        Server::spawn(self.program_command(program, name, args))
    }

    /// The command that runs `program ARGS` as this runner's user.
    pub fn program_command(&self, program: &std::path::Path, name: &str, args: &[&str]) -> Command {
        match &self.copy {
            Some(dir) => {
                let copy = dir.join(name);
                if !copy.exists() {
                    fs::copy(program, &copy)
                        .unwrap_or_else(|e| panic!("copy {}: {e}", program.display()));
                    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
                }
                let mut cmd = Command::new("setpriv");
                cmd.args([
                    &format!("--reuid={NOBODY}"),
                    &format!("--regid={NOBODY}"),
                    "--clear-groups",
                ])
                .arg(copy)
                .args(args);
                cmd
            }
            None => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                cmd
            }
        }
    }

    /// The command that runs `drainport ARGS` through `wrapper`, as this
    /// runner's user, for a caller that does not expect it to listen.
    pub fn command(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let bin = self
            .copy
            .as_ref()
            .map_or_else(|| PathBuf::from(BIN), |dir| dir.join(COPY));
        let mut cmd = match &self.copy {
            Some(_) => {
                let mut cmd = Command::new("setpriv");
                cmd.args([
                    &format!("--reuid={NOBODY}"),
                    &format!("--regid={NOBODY}"),
                    "--clear-groups",
                ])
                .args(wrapper);
                cmd
            }
            None => match wrapper.split_first() {
                Some((program, rest)) => {
                    let mut cmd = Command::new(program);
                    cmd.args(rest);
                    cmd
                }
                None => Command::new(&bin),
            },
        };
        if self.copy.is_some() || !wrapper.is_empty() {
            cmd.arg(bin);
        }
        cmd.args(args);
        cmd
    }
}
