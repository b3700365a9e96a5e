//! The pid file: written atomically once the process listens, removed when
//! it exits.
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

impl PidFile {
    /// Writes `<pid>\n` to a temporary file beside `path`, then renames it
    /// over `path`, so a reader never sees a partial file.
    pub(crate) fn create(path: &Path) -> io::Result<PidFile> {
        let pid = std::process::id();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{pid}.tmp"));
        let tmp = PathBuf::from(tmp);
        let written = fs::File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(format!("{pid}\n").as_bytes())
                    .and_then(|()| f.sync_all())
            })
            .and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io::Error::new(
                e.kind(),
                format!("cannot write pid file {}: {e}", path.display()),
            ));
        }
        Ok(PidFile {
            path: path.to_owned(),
            pid,
        })
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
