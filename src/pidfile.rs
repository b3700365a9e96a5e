//! The pid file: written before the process listens, put in place
//! atomically once it does, removed when it exits.
//!
//! A supervisor that sees the file can rely on the pid in it listening. At
//! exit the file is removed only if it still names this process, because
//! during a rolling restart the next generation may already have replaced it
//! under the same path.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

pub(crate) struct PidFile {
    path: PathBuf,
    pid: u32,
}

/// A pid file written beside its path but not yet in place: what can fail
/// (a missing directory, no permission, a full disk) fails here, before
/// the process listens.
pub(crate) struct Pending {
    tmp: PathBuf,
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Writes `<pid>\n` to a temporary file beside `path`. The rename over
    /// `path` comes with [`Pending::commit`], so a reader never sees a
    /// partial file, nor the pid of a process that is not listening yet.
    pub(crate) fn prepare(path: &Path) -> io::Result<Pending> {
        let pid = std::process::id();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{pid}.tmp"));
        let pending = Pending {
            tmp: PathBuf::from(tmp),
            path: path.to_owned(),
            pid,
        };
        fs::File::create(&pending.tmp)
            .and_then(|mut f| {
                f.write_all(format!("{pid}\n").as_bytes())
                    .and_then(|()| f.sync_all())
            })
            .map_err(|e| pending.error(e))?;
        Ok(pending)
    }
}

impl Pending {
    /// Puts the file in place.
    pub(crate) fn commit(self) -> io::Result<PidFile> {
        fs::rename(&self.tmp, &self.path).map_err(|e| self.error(e))?;
        Ok(PidFile {
            path: self.path.clone(),
            pid: self.pid,
        })
    }

    fn error(&self, e: io::Error) -> io::Error {
        io::Error::new(
            e.kind(),
            format!("cannot write pid file {}: {e}", self.path.display()),
        )
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // After a commit the temporary name is gone, and this fails quietly.
        let _ = fs::remove_file(&self.tmp);
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours =
            fs::read_to_string(&self.path).is_ok_and(|text| text.trim() == self.pid.to_string());
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}
