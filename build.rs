//! Names the commit a build comes from, for `--version`.
//!
//! `DRAINPORT_VERSION` is the package version, then, when the package is
//! the top of a git work tree, `+git.` and the commit's first 12 hex
//! digits, then `.dirty` if the files the build reads or the install
//! copies (`src`, `examples`, `build.rs`, `Cargo.toml`, `Cargo.lock`,
//! `scripts`, `contrib`) differ from that commit, untracked ones included:
//! `0.1.0+git.1a2b3c4d5e6f.dirty`. Outside git (a source archive, a copy
//! without `.git`, git missing or refusing the tree) it is the package
//! version alone. It is one word, fit for a directory name: the install
//! names each release folder after it.
//!
//! Cargo runs this again when one of those files changes, and when git's
//! `HEAD`, the branch it names or the index changes (a commit, a checkout,
//! an add), and only then.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the build reads, or the install copies beside the binary.
const SOURCES: [&str; 7] = [
    "src",
    "examples",
    "build.rs",
    "Cargo.toml",
    "Cargo.lock",
    "scripts",
    "contrib",
];

fn main() {
    let package = std::env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    for source in SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    let version = match commit(&root) {
        Some((commit, dirty)) => {
            format!(
                "{package}+git.{commit}{}",
                if dirty { ".dirty" } else { "" }
            )
        }
        None => package,
    };
    println!("cargo:rustc-env=DRAINPORT_VERSION={version}");
}

/// The commit of the work tree whose top is `root`, and whether the
/// sources differ from it; `None` outside git. Says which of git's files
/// to watch.
fn commit(root: &Path) -> Option<(String, bool)> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    // A package unpacked inside some other repository is not that
    // repository's commit.
    let top = git(&["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != root.canonicalize().ok()? {
        return None;
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let mut status = vec!["status", "--porcelain", "--untracked-files=all", "--"];
    status.extend(SOURCES);
    let dirty = !git(&status)?.is_empty();

    let absolute = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { root.join(p) }
    };
    let git_dir = absolute(git(&["rev-parse", "--git-dir"])?);
    let common = absolute(git(&["rev-parse", "--git-common-dir"])?);
    let mut watch = vec![git_dir.join("HEAD"), git_dir.join("index")];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(common.join(branch));
    }
    watch.push(common.join("packed-refs"));
    // A path that does not exist would make cargo run this every time.
    for path in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Some((commit, dirty))
}
