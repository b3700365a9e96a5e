//! The pid file's directory, opened through a path that no other user can
//! change, and refused if another user can write in it.
//!
//! Trusted are this process's effective uid and root: root can do anything
//! anyway. Everyone else is not. [`open`] walks the path one component at a
//! time from `/`, with `O_NOFOLLOW`, holding each directory open while it
//! looks at the next, and checks every directory it passes through:
//! - it is owned by a trusted uid, since its owner can always make it
//!   writable (`chmod`) and then replace any name in it;
//! - on the way (not the last one): it is not writable by its group or by
//!   others, or it is sticky (`/tmp`) and the entry taken in it is owned by
//!   a trusted uid, since the sticky bit keeps others from renaming or
//!   removing an entry they do not own;
//! - the last one, where the pid file goes, is not writable by its group or
//!   by others, sticky or not. In a sticky directory others still create
//!   names: they could hold the pid file's name before the process starts,
//!   or put a file there naming any pid once it has gone, and a reader of
//!   the name could not tell whose file it found.
//!
//! A symbolic link on the way is followed only where it was found in a
//! directory that passed, and (in a sticky one) if a trusted uid owns it,
//! which is the kernel's `fs.protected_symlinks` rule made unconditional.
//! The group bits are refused even when the group has no other member:
//! the process cannot know that, and an ACL that grants writing to a named
//! user shows in them too (as the mask).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::sys::{file, process};

/// Symbolic links followed while opening one path, as the kernel's own
/// lookup allows (`MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// Opens the directory `dir` (relative to the working directory if it is
/// not absolute) for use with the `*at` calls, after checking it and every
/// directory on the way as the module doc says. The error names the
/// directory at fault and why.
pub(crate) fn open(dir: &Path) -> io::Result<OwnedFd> {
    let me = process::euid();
    let absolute = if dir.is_absolute() {
        dir.to_owned()
    } else {
        std::env::current_dir()?.join(dir)
    };
    let mut todo: Vec<OsString> = Vec::new();
    push_components(&mut todo, &absolute);
    let mut at = PathBuf::from("/");
    let mut cur = file::open_root()?;
    let mut links = 0;
    while let Some(name) = todo.pop() {
        let here = stat_fd(&cur)?;
        trusted_owner(&here, &at, me)?;
        let shared = here.st_mode & 0o022 != 0;
        if shared && here.st_mode & libc::S_ISVTX == 0 {
            return Err(refused(&at, &here, "can be written by other users"));
        }
        if name == ".." {
            cur = open_dir_at(&cur, OsStr::new(".."))?;
            at.pop();
            continue;
        }
        let entry = stat_at(&cur, &name)?;
        let next = at.join(&name);
        if shared && !is_trusted(entry.st_uid, me) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} belongs to uid {} in {}, which other users can write",
                    next.display(),
                    entry.st_uid,
                    at.display()
                ),
            ));
        }
        if entry.st_mode & libc::S_IFMT == libc::S_IFLNK {
            links += 1;
            if links > MAX_LINKS {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            let target = read_link_at(&cur, &name)?;
            if target.is_absolute() {
                cur = file::open_root()?;
                at = PathBuf::from("/");
            }
            push_components(&mut todo, &target);
            continue;
        }
        cur = open_dir_at(&cur, &name).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot open {}: {e}", next.display()))
        })?;
        at = next;
    }
    let last = stat_fd(&cur)?;
    trusted_owner(&last, &at, me)?;
    if last.st_mode & 0o022 != 0 {
        return Err(refused(&at, &last, "can be written by other users"));
    }
    Ok(cur)
}

/// Pushes the names of `path`'s components onto `todo` so that the first
/// is popped first. `.` is dropped; `..` is kept and taken physically.
fn push_components(todo: &mut Vec<OsString>, path: &Path) {
    let names: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    todo.extend(names.into_iter().rev());
}

fn is_trusted(uid: libc::uid_t, me: libc::uid_t) -> bool {
    uid == me || uid == 0
}

fn trusted_owner(st: &libc::stat, at: &Path, me: libc::uid_t) -> io::Result<()> {
    if is_trusted(st.st_uid, me) {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "directory {} belongs to uid {}, who could replace what is in it",
            at.display(),
            st.st_uid
        ),
    ))
}

fn refused(at: &Path, st: &libc::stat, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "directory {} {why} (mode {:o})",
            at.display(),
            st.st_mode & 0o7777
        ),
    )
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Opens the directory `name` in `dir`, never through a link: a name that
/// became a link since it was looked at fails with `ELOOP` or `ENOTDIR`.
fn open_dir_at(dir: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    file::open_dir_at(dir.as_fd(), &c_name(name)?)
}

pub(super) fn stat_fd(fd: &OwnedFd) -> io::Result<libc::stat> {
    file::stat(fd.as_fd())
}

/// The entry `name` in `dir` itself, not what a link there points to.
pub(super) fn stat_at(dir: &OwnedFd, name: &OsStr) -> io::Result<libc::stat> {
    file::stat_at(dir.as_fd(), &c_name(name)?)
}

fn read_link_at(dir: &OwnedFd, name: &OsStr) -> io::Result<PathBuf> {
    file::read_link_at(dir.as_fd(), &c_name(name)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh directory under the temporary directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let path = std::env::temp_dir()
                .join(format!("drainport-unit-dir-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir(&path).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn refusal(path: &Path) -> String {
        open(path).map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn a_private_directory_opens_and_is_that_directory() {
        let s = Scratch::new("private");
        let fd = open(&s.0).unwrap();
        let st = stat_fd(&fd).unwrap();
        let want = fs::metadata(&s.0).unwrap();
        assert_eq!(
            (st.st_dev, st.st_ino),
            (
                std::os::unix::fs::MetadataExt::dev(&want),
                std::os::unix::fs::MetadataExt::ino(&want)
            )
        );
    }

    #[test]
    fn a_directory_others_or_the_group_can_write_is_refused_sticky_or_not() {
        let s = Scratch::new("shared");
        for m in [0o777, 0o1777, 0o775, 0o1770, 0o757] {
            mode(&s.0, m);
            let err = refusal(&s.0);
            assert!(
                err.contains("can be written by other users"),
                "{m:o}: {err}"
            );
            assert!(err.contains(&format!("(mode {m:o})")), "{m:o}: {err}");
        }
    }

    #[test]
    fn a_private_directory_under_a_shared_one_is_refused_unless_that_is_sticky() {
        let s = Scratch::new("under");
        let inner = s.0.join("inner");
        fs::create_dir(&inner).unwrap();
        mode(&inner, 0o755);
        mode(&s.0, 0o777);
        let err = refusal(&inner);
        assert!(err.contains("can be written by other users"), "{err}");
        // Sticky: others cannot rename `inner`, which is ours.
        mode(&s.0, 0o1777);
        open(&inner).unwrap();
        mode(&s.0, 0o755);
    }

    #[test]
    fn links_on_the_way_are_followed_where_they_are_safe() {
        let s = Scratch::new("links");
        let real = s.0.join("real");
        fs::create_dir(&real).unwrap();
        mode(&real, 0o700);
        std::os::unix::fs::symlink("real", s.0.join("link")).unwrap();
        std::os::unix::fs::symlink(&real, s.0.join("abs")).unwrap();
        let want = stat_fd(&open(&real).unwrap()).unwrap().st_ino;
        for via in ["link", "abs", "link/../real", "real/."] {
            let got = stat_fd(&open(&s.0.join(via)).unwrap()).unwrap().st_ino;
            assert_eq!(got, want, "{via}");
        }
        // A link in a directory others can write is not followed.
        mode(&s.0, 0o777);
        let err = refusal(&s.0.join("link"));
        assert!(err.contains("can be written by other users"), "{err}");
        mode(&s.0, 0o755);
    }

    #[test]
    fn a_loop_of_links_ends() {
        let s = Scratch::new("loop");
        std::os::unix::fs::symlink("b", s.0.join("a")).unwrap();
        std::os::unix::fs::symlink("a", s.0.join("b")).unwrap();
        let err = open(&s.0.join("a")).map(|_| ()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
    }

    #[test]
    fn a_file_on_the_way_is_not_a_directory() {
        let s = Scratch::new("file");
        fs::write(s.0.join("f"), "").unwrap();
        let err = refusal(&s.0.join("f"));
        assert!(err.contains("Not a directory"), "{err}");
    }
}
