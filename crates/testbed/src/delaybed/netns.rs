//! Named network namespaces (`ip netns add`), entered one thread at a time.
//!
//! `setns(2)` moves only the calling thread, and whatever it then creates
//! (a socket, a TUN device, a child process) belongs to that namespace. So
//! every step that must happen inside runs on a thread of its own that
//! entered first; the thread that built the bed never moves.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::thread::{self, JoinHandle};

/// A namespace under `/run/netns`, deleted when dropped.
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// `ip netns add NAME`, with loopback up.
    pub fn create(name: String) -> Result<Namespace, String> {
        ip(&["netns", "add", &name]).map_err(|e| format!("cannot create namespace {name}: {e}"))?;
        let ns = Namespace { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all).map_err(|e| format!("ip {}: {e}", all.join(" ")))
    }

    /// Runs `f` on a new thread that has entered the namespace, and waits
    /// for it. A panic in `f` goes on in the caller.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        match self.spawn(f).join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Starts `f` on a new thread that enters the namespace first.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<Result<T, String>> {
        let name = self.name.clone();
        thread::spawn(move || {
            enter(&name).map_err(|e| format!("setns into {name}: {e}"))?;
            Ok(f())
        })
    }

    /// Sets a sysctl inside the namespace (`/proc/sys/net` shows the
    /// namespace of the thread that opens it) and reads it back.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<(), String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let wanted = value.to_owned();
        let read_back = self
            .run(move || {
                std::fs::write(&path, &wanted).and_then(|()| std::fs::read_to_string(&path))
            })?
            .map_err(|e| format!("cannot set {key}={value} in {}: {e}", self.name))?;
        // Tabs separate the numbers of a range such as ip_local_port_range.
        let normal = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        if normal(&read_back) != normal(value) {
            return Err(format!("{key} reads {read_back:?} after setting {value:?}"));
        }
        Ok(())
    }

    /// A sysctl's value inside the namespace, trimmed.
    pub fn sysctl(&self, key: &str) -> Result<String, String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(move || std::fs::read_to_string(&path))?
            .map(|v| v.trim().to_owned())
            .map_err(|e| format!("cannot read {key} in {}: {e}", self.name))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("delaybed: cannot delete namespace {}: {e}", self.name);
        }
    }
}

/// Moves the calling thread into the namespace `name`.
fn enter(name: &str) -> io::Result<()> {
    let file = File::open(format!("/run/netns/{name}"))?;
    // SAFETY: setns on a valid namespace descriptor, for this thread only.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}
