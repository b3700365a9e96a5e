//! The emulation of a kernel that does not steer by CPU tag (Linux 5.14 to
//! 6.1), for the delay benchmark and the tests: `nosteer.c`, built here
//! with the system's C compiler into a shared object that a server loads
//! with `LD_PRELOAD`.
//!
//! Those kernels accept `SO_INCOMING_CPU` on a listener and then ignore it
//! when they pick a socket in a `SO_REUSEPORT` group; the shim makes the
//! option a no-op, so the group picks by hash alone, which is what they do.
//! It is not a switch in the server: the binary under test is the one that
//! ships, and its startup probe must find out for itself that the kernel
//! (as it sees it) does not steer.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The shim's C source, beside this file.
const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/delaybed/nosteer.c");

/// The environment variable that loads the shim.
pub const PRELOAD: &str = "LD_PRELOAD";

/// Builds the shim into `dir` (which the servers' user must be able to
/// read) and returns its path, or why it cannot be built here.
pub fn build(dir: &Path) -> Result<PathBuf, String> {
    let out = dir.join("nosteer.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(SOURCE)
        .arg("-ldl")
        .status()
        .map_err(|e| format!("cannot run `cc` to build the no-steering shim: {e}"))?;
    if !status.success() {
        return Err(format!("`cc` failed to build {SOURCE}: {status}"));
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", out.display()))?;
    Ok(out)
}
