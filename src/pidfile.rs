//! The pid file: written before the process listens, put in place
//! atomically once it does, removed when it exits.
//!
//! A supervisor that sees the file can rely on the pid in it listening. At
//! exit the file is removed only if it still names this process, because
//! during a rolling restart the next generation may already have replaced it
//! under the same path.
//!
//! No other user can steer what is written, or make the exit wait:
//! - the directory is checked and held open first ([`dir`]): one that
//!   another user could write in, or reach into, is refused;
//! - a path that is a directory is refused then too, before listening,
//!   since the rename over it could only fail after;
//! - the file is created under a name no one can guess, with `O_EXCL` and
//!   `O_NOFOLLOW`, so nothing that already exists is written through or
//!   reused, and made mode 0644 whatever the umask;
//! - at exit, the path is read only if it is a regular file, opened with
//!   `O_NOFOLLOW | O_NONBLOCK`, and only its first [`READ_BACK`] bytes:
//!   a link, a FIFO or a device there is left alone.

mod dir;

use std::ffi::{CString, OsStr};
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::sys::{file, process};

/// The most bytes read back from the path at exit: a pid and its newline
/// take at most 11 (`u32::MAX` has ten digits), so anything longer is not
/// this process's file.
const READ_BACK: usize = 32;
/// Names tried for the temporary file before giving up. Each is 64 random
/// bits, so a second try means someone made that name, and more tries
/// than this mean something is wrong with the directory.
const TMP_TRIES: usize = 8;
/// The pid file's mode: readable by every user, whatever the umask.
const MODE: libc::mode_t = 0o644;

pub(crate) struct PidFile {
    /// The directory, held since it was checked: what happens to the path
    /// meanwhile cannot move the file elsewhere.
    dir: OwnedFd,
    name: CString,
    pid: u32,
}

/// A pid file written beside its path but not yet in place: what can fail
/// (a missing or shared directory, a directory at the path, no permission,
/// a full disk) fails here, before the process listens.
pub(crate) struct Pending {
    tmp: TmpName,
    name: CString,
    path: PathBuf,
    pid: u32,
}

/// The directory, and the temporary file's name in it, removed when this
/// is dropped unless the file was put in place ([`TmpName::placed`]).
struct TmpName {
    /// Held until the file is placed, when it goes to the [`PidFile`].
    dir: Option<OwnedFd>,
    name: CString,
}

impl TmpName {
    fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_ref().expect("held until placed").as_fd()
    }

    /// The file was renamed into place: nothing is left to remove, and
    /// the directory is the pid file's.
    fn placed(mut self) -> OwnedFd {
        self.dir.take().expect("held until placed")
    }
}

impl Drop for TmpName {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = file::unlink_at(dir.as_fd(), &self.name);
        }
    }
}

impl PidFile {
    /// Writes `<pid>\n` to a new temporary file beside `path`. The rename
    /// over `path` comes with [`Pending::commit`], so a reader never sees a
    /// partial file, nor the pid of a process that is not listening yet.
    pub(crate) fn prepare(path: &Path) -> io::Result<Pending> {
        let error = |e: io::Error| pid_file_error(path, e);
        let pid = std::process::id();
        let name = path.file_name().ok_or_else(|| {
            error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path names no file",
            ))
        })?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = dir::open(parent).map_err(error)?;
        match dir::stat_at(&dir, name) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                return Err(error(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "it is a directory",
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(error(e)),
        }
        let (tmp, file) = create_new(&dir, name).map_err(error)?;
        let pending = Pending {
            tmp: TmpName {
                dir: Some(dir),
                name: tmp,
            },
            name: c_name(name).map_err(error)?,
            path: path.to_owned(),
            pid,
        };
        write_pid(file, pid).map_err(error)?;
        Ok(pending)
    }
}

/// Creates a file named `<name>.<random>.tmp` in `dir` that did not exist,
/// never through a link.
fn create_new(dir: &OwnedFd, name: &OsStr) -> io::Result<(CString, std::fs::File)> {
    let mut error = None;
    let names = std::iter::from_fn(|| {
        let random = process::random_u64().map_err(|e| error = Some(e)).ok()?;
        let mut tmp = name.as_bytes().to_vec();
        tmp.extend_from_slice(format!(".{random:016x}.tmp").as_bytes());
        CString::new(tmp).ok()
    });
    let made = create_first_free(dir, names.take(TMP_TRIES));
    match error {
        Some(e) => Err(e),
        None => made,
    }
}

/// Creates the first of `names` that does not exist in `dir`: with
/// `O_EXCL`, a name that exists, even as a dangling link, is never opened,
/// and with `O_NOFOLLOW` neither is a link.
fn create_first_free(
    dir: &OwnedFd,
    names: impl Iterator<Item = CString>,
) -> io::Result<(CString, std::fs::File)> {
    let mut tried = 0;
    for tmp in names {
        tried += 1;
        match file::create_new_at(dir.as_fd(), &tmp, MODE) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{tried} random temporary names were all taken"),
    ))
}

fn write_pid(mut file: std::fs::File, pid: u32) -> io::Result<()> {
    // The umask narrowed the mode at creation; the file is new and ours.
    file.set_permissions(std::fs::Permissions::from_mode(MODE))?;
    file.write_all(format!("{pid}\n").as_bytes())?;
    file.sync_all()
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn pid_file_error(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("cannot write pid file {}: {e}", path.display()),
    )
}

impl Pending {
    /// Puts the file in place. Whatever is at the path then, a link
    /// included, is replaced, not followed.
    pub(crate) fn commit(self) -> io::Result<PidFile> {
        let Pending {
            tmp,
            name,
            path,
            pid,
        } = self;
        if let Err(e) = file::rename_at(tmp.dir(), &tmp.name, &name) {
            // `tmp` goes with the error, and its file with it.
            return Err(pid_file_error(&path, e));
        }
        Ok(PidFile {
            dir: tmp.placed(),
            name,
            pid,
        })
    }
}

impl PidFile {
    /// Whether the path still holds this process's file: a regular file
    /// whose first bytes are this pid and a newline.
    fn still_ours(&self) -> bool {
        let name = OsStr::from_bytes(self.name.as_bytes());
        let regular = |st: &libc::stat| st.st_mode & libc::S_IFMT == libc::S_IFREG;
        // Looked at before it is opened: opening a device can do things.
        if !dir::stat_at(&self.dir, name).is_ok_and(|st| regular(&st)) {
            return false;
        }
        let Ok(mut opened) = file::open_read_at(self.dir.as_fd(), &self.name) else {
            return false;
        };
        // It may have been swapped between the look and the open.
        if !file::stat(opened.as_fd()).is_ok_and(|st| regular(&st)) {
            return false;
        }
        let mut buf = [0u8; READ_BACK];
        let mut len = 0;
        while len < buf.len() {
            match opened.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        buf[..len] == *format!("{}\n", self.pid).as_bytes()
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if self.still_ours() {
            let _ = file::unlink_at(self.dir.as_fd(), &self.name);
        }
    }
}

// The tests' own raw call makes a FIFO, which std cannot.
#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn scratch(tag: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "drainport-unit-pidfile-{tag}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_name_that_exists_is_neither_written_through_nor_reused() {
        let dir = scratch("planted");
        let victim = dir.join("victim");
        fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("a.tmp")).unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("b.tmp")).unwrap();
        fs::write(dir.join("c.tmp"), "someone's").unwrap();
        let fd = dir::open(&dir).unwrap();
        let names = ["a.tmp", "b.tmp", "c.tmp", "d.tmp"].map(|n| CString::new(n).unwrap());
        let (tmp, _) = create_first_free(&fd, names.clone().into_iter()).unwrap();
        assert_eq!(tmp.as_bytes(), b"d.tmp");
        assert!(fs::symlink_metadata(dir.join("d.tmp")).unwrap().is_file());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!dir.join("nowhere").exists());
        assert_eq!(fs::read_to_string(dir.join("c.tmp")).unwrap(), "someone's");
        let err = create_first_free(&fd, names.into_iter()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_temporary_name_is_random_and_removed_unless_committed() {
        let dir = scratch("tmp");
        let path = dir.join("p.pid");
        let names = |d: &Path| -> Vec<_> {
            fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect()
        };
        let a = PidFile::prepare(&path).unwrap();
        let b = PidFile::prepare(&path).unwrap();
        let tmps = names(&dir);
        assert_eq!(tmps.len(), 2, "{tmps:?}");
        assert_ne!(tmps[0], tmps[1]);
        for tmp in &tmps {
            let tmp = tmp.to_str().unwrap();
            assert!(tmp.starts_with("p.pid.") && tmp.ends_with(".tmp"), "{tmp}");
            let meta = fs::metadata(dir.join(tmp)).unwrap();
            assert_eq!(meta.mode() & 0o7777, 0o644, "{tmp}");
        }
        drop(a);
        let file = b.commit().unwrap();
        assert_eq!(names(&dir), ["p.pid"]);
        drop(file);
        assert!(names(&dir).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_a_regular_file_naming_this_pid_is_removed() {
        let dir = scratch("ours");
        let path = dir.join("p.pid");
        let pid = std::process::id();
        type Put<'a> = dyn Fn(&Path) + 'a;
        let cases: [(&str, &Put); 4] = [
            ("another pid", &|p| fs::write(p, "1\n").unwrap()),
            ("a longer file", &|p| {
                fs::write(p, format!("{pid}\n{}", "x".repeat(100))).unwrap()
            }),
            ("a link to our own text", &|p| {
                let real = p.with_extension("real");
                fs::write(&real, format!("{pid}\n")).unwrap();
                std::os::unix::fs::symlink(&real, p).unwrap();
            }),
            ("a FIFO", &|p| {
                let c = CString::new(p.as_os_str().as_bytes()).unwrap();
                // SAFETY: mkfifo on a path in the test's own directory.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
            }),
        ];
        for (what, put) in cases {
            let file = PidFile::prepare(&path).unwrap().commit().unwrap();
            fs::remove_file(&path).unwrap();
            put(&path);
            drop(file);
            assert!(fs::symlink_metadata(&path).is_ok(), "{what} was removed");
            fs::remove_file(&path).unwrap();
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
