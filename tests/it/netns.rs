//! Private network namespaces, so a test can set sysctls such as
//! `net.ipv4.tcp_migrate_req` without touching the host.
//!
//! `setns(2)` moves only the calling thread, and every thread and process it
//! starts inherits that, so [`Namespace::run`] runs a whole scenario,
//! servers included, inside the namespace from a dedicated thread.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use crate::util::{find_tool, skip};

/// The sysctl that makes a closing listener hand its accept queue to a
/// sibling on the same port.
pub const MIGRATE_REQ: (&str, &str) = ("net.ipv4.tcp_migrate_req", "1");

/// Runs `f` in a namespace of its own with `sysctls` set or, where no
/// namespace can be made here, skips the calling test with the reason.
pub fn in_namespace(sysctls: &[(&str, &str)], f: impl FnOnce() + Send + 'static) {
    match Namespace::create(sysctls) {
        Ok(ns) => ns.run(f),
        Err(reason) => skip(&reason),
    }
}

pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates a namespace with loopback up and the given sysctls set, or
    /// says why that is impossible here.
    pub fn create(sysctls: &[(&str, &str)]) -> Result<Namespace, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root, to make a network namespace".into());
        }
        if find_tool("ip").is_none() {
            return Err("needs `ip` (Debian package iproute2), not found on PATH".into());
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "drainport-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        ip(&["netns", "add", &name])
            .map_err(|e| format!("cannot create a network namespace: {e}"))?;
        let ns = Namespace { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])
            .map_err(|e| format!("cannot bring up loopback: {e}"))?;
        for &(key, value) in sysctls {
            // /proc/sys/net shows the namespace of the thread that opens it.
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            let wanted = value.to_owned();
            let read_back = ns
                .run(move || {
                    std::fs::write(&path, &wanted).and_then(|()| std::fs::read_to_string(&path))
                })
                .map_err(|e| format!("cannot set {key}={value} in the namespace: {e}"))?;
            if read_back.trim() != value {
                return Err(format!("{key} reads {read_back:?} after setting {value}"));
            }
        }
        Ok(ns)
    }

    /// Runs `f` on a thread that has entered the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        let handle = thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns on a valid namespace descriptor, for this thread only.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            f()
        });
        match handle.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}
