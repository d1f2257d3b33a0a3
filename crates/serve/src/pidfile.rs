//! `--pid FILE` (gunicorn's `-p/--pid`): the master writes its pid there once it starts and
//! removes the file when it stops, so `kill -HUP $(cat FILE)` and systemd's `PIDFile=` find it.
//!
//! As gunicorn's `Pidfile`: a file that names a live process stops the start ("already
//! running"), a stale one is replaced; the pid is written to a temporary file in the same
//! directory and renamed over, so a reader never sees a half-written file; and the file is only
//! removed if it still holds this process's pid.
//!
//! A master started by a `USR2` upgrade while the old one still runs writes `FILE.2` and moves
//! it to `FILE` once the old master has exited ([`PidFile::promote`]), as gunicorn does.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The pid file of this master; removed on drop.
#[derive(Debug)]
pub(crate) struct PidFile {
    path: PathBuf,
    pid: u32,
    /// `FILE`, while this master writes `FILE.2` beside the old master's.
    promote_to: Option<PathBuf>,
}

impl PidFile {
    /// `path.2`, for a master started by a `USR2` upgrade; [`PidFile::promote`] moves it.
    pub fn create_beside(path: &Path) -> anyhow::Result<PidFile> {
        let mut second = path.as_os_str().to_owned();
        second.push(".2");
        let mut me = PidFile::create(Path::new(&second))?;
        me.promote_to = Some(path.to_owned());
        Ok(me)
    }

    /// The old master has exited: `FILE.2` becomes `FILE`.
    pub fn promote(&mut self) {
        let Some(to) = self.promote_to.take() else {
            return;
        };
        match std::fs::rename(&self.path, &to) {
            Ok(()) => self.path = to,
            Err(e) => tracing::warn!(
                "cannot move --pid {} to {}: {e}",
                self.path.display(),
                to.display()
            ),
        }
    }

    pub fn create(path: &Path) -> anyhow::Result<PidFile> {
        let pid = std::process::id();
        if let Some(other) = read_pid(path).filter(|&p| p != pid && alive(p)) {
            anyhow::bail!(
                "--pid {}: c10k is already running as pid {other} (or the pid file is stale: \
                 remove it)",
                path.display()
            );
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".c10k-pid")
            .tempfile_in(dir)
            .with_context(|| format!("cannot write --pid {}", path.display()))?;
        writeln!(tmp, "{pid}")
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                tmp.as_file()
                    .set_permissions(std::fs::Permissions::from_mode(0o644))
            })
            .with_context(|| format!("cannot write --pid {}", path.display()))?;
        tmp.persist(path)
            .with_context(|| format!("cannot write --pid {}", path.display()))?;
        Ok(PidFile {
            path: path.to_owned(),
            pid,
            promote_to: None,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid(&self.path) == Some(self.pid) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether a process with this pid exists (one of another user's answers EPERM).
fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_replaced_when_stale_refused_when_live_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c10k.pid");
        let me = std::process::id();
        {
            let _p = PidFile::create(&path).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{me}\n"));
        }
        assert!(!path.exists());
        // A pid no process has (above pid_max): stale, replaced.
        std::fs::write(&path, "2147483647\n").unwrap();
        drop(PidFile::create(&path).unwrap());
        assert!(!path.exists());
        // Our parent is alive: refused, and its file left alone.
        let parent = std::os::unix::process::parent_id();
        std::fs::write(&path, format!("{parent}\n")).unwrap();
        let e = PidFile::create(&path).unwrap_err().to_string();
        assert!(e.contains("--pid") && e.contains("already running"), "{e}");
        assert!(path.exists());
    }

    #[test]
    fn an_upgraded_master_writes_beside_then_takes_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c10k.pid");
        let parent = std::os::unix::process::parent_id();
        std::fs::write(&path, format!("{parent}\n")).unwrap();
        let mut p = PidFile::create_beside(&path).unwrap();
        let me = format!("{}\n", std::process::id());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("c10k.pid.2")).unwrap(),
            me
        );
        p.promote();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), me);
        assert!(!dir.path().join("c10k.pid.2").exists());
        drop(p);
        assert!(!path.exists());
    }
}
