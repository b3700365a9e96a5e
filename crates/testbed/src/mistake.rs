//! An operator's mistake as every program here must answer it: exit
//! status 1 and one line on stderr, never a panic. The integration tests
//! and the example programs' own tests check their refusals with these.

use std::ffi::OsStr;
use std::fmt::Debug;
use std::path::Path;
use std::process::{Command, Output};

/// Checks that a program failed as an operator's mistake must: exit status
/// 1 and one line on stderr, which contains `needle`. `what` names the case
/// in a failure. Returns stderr, for the caller's further checks.
#[track_caller]
pub fn one_line_error(out: &Output, what: &str, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: stderr {stderr:?}, stdout {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "{what}: {stderr:?}");
    assert!(
        stderr.contains(needle),
        "{what}: {stderr:?} lacks {needle:?}"
    );
    stderr
}

/// Runs `program` (called `name` in its messages) with `args`, which must
/// make it fail: exit status 1, one line on stderr that starts with
/// `<name>: ` and contains `needle`, no panic. Returns what it printed.
#[track_caller]
pub fn refused<A: AsRef<OsStr> + Debug>(
    program: &Path,
    name: &str,
    args: &[A],
    needle: &str,
) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    let stderr = one_line_error(&out, &format!("{name} {args:?}"), needle);
    assert!(stderr.starts_with(&format!("{name}: ")), "{stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr:?}");
    out
}

/// The same for a mistake in `args`, which the program must refuse before
/// it starts: nothing on stdout.
#[track_caller]
pub fn refused_arguments<A: AsRef<OsStr> + Debug>(
    program: &Path,
    name: &str,
    args: &[A],
    needle: &str,
) {
    let out = refused(program, name, args, needle);
    assert!(out.stdout.is_empty(), "{name} {args:?} started: {out:?}");
}
