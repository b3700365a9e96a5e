//! delaybed: rolling restarts over long round trips and lossy links, on a
//! kernel without netem. The Rust form of the Python bed in
//! `/work/shared/delaybed/`, with the same definitions.
//!
//! A client and a server network namespace, each with a TUN device, are
//! joined by relay threads in this process that hold every packet for a
//! fixed one-way delay and drop a chosen share. drainport runs in the
//! server namespace, the client load in the client namespace. Needs root,
//! `/dev/net/tun`, `ip` (iproute2) and, for servers run as uid 65534,
//! `setpriv` (util-linux); [`unavailable`] says which is missing.
//!
//! - `netns.rs`: named namespaces, entered per thread
//! - `relay.rs`: TUN devices, the relay and its fidelity counters
//! - `bed.rs`: the two namespaces, their devices and the relay, torn down
//!   on drop
//! - `servers.rs`: drainport processes in the server namespace
//! - `churn.rs`: the client load and how each failure is classified
//! - `rolling.rs`: one case of rolling restarts under that load
//! - `nosteer.rs`, `nosteer.c`: the emulation of a kernel that does not
//!   steer by CPU tag (Linux 5.14 to 6.1)
//! - `../shared/activate.rs`: passing listening sockets to a server as a
//!   service manager does
//!
//! The delay benchmark (`benches/delay.rs`) and the integration test
//! (`tests/it/delay.rs`) compile this module in with `#[path]`.

/// Passing listening sockets as a service manager does.
#[path = "../shared/activate.rs"]
pub mod activate;
pub mod bed;
pub mod churn;
pub mod netns;
pub mod nosteer;
pub mod relay;
pub mod rolling;
pub mod servers;

/// Why the bed cannot run here, if it cannot.
pub fn unavailable(need_setpriv: bool) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root, for network namespaces and TUN devices".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("needs /dev/net/tun (the tun kernel module)".into());
    }
    let mut tools = vec![("ip", "iproute2")];
    if need_setpriv {
        tools.push(("setpriv", "util-linux"));
    }
    tools
        .into_iter()
        .find(|(tool, _)| !on_path(tool))
        .map(|(tool, package)| {
            format!("needs `{tool}` (Debian package {package}), not found on PATH")
        })
}

fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}
