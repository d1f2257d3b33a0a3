//! `--reload-engine inotify`: one kernel watch per directory holding a watched file (and per
//! directory of its target, for a file reached through a symbolic link), and a change named only
//! when an event names a watched file — an editor's swap file or a SQLite database written beside
//! the code is not the code. Once a watched file's event came, the engine waits for the
//! directory to be quiet for [`SETTLE`] (at most [`SETTLE_MAX`]), so an editor's save in several
//! steps (rename away, write anew) is seen finished.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ::inotify::{EventMask, WatchDescriptor, WatchMask};

/// How long a watched file's directory must be quiet before the reload.
pub(super) const SETTLE: Duration = Duration::from_millis(150);

/// Never wait longer than this for quiet (a file rewritten without pause).
const SETTLE_MAX: Duration = Duration::from_secs(1);

/// What a directory's watch reports: every way a file in it can change or be replaced.
const EVENTS: WatchMask = WatchMask::MODIFY
    .union(WatchMask::ATTRIB)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO);

pub(super) struct Inotify {
    inotify: ::inotify::Inotify,
    /// Watch → directory.
    dirs: HashMap<WatchDescriptor, PathBuf>,
    watched_dirs: HashSet<PathBuf>,
    /// The watched files, as listed and as resolved through links.
    files: HashSet<PathBuf>,
}

impl Inotify {
    pub(super) fn new() -> std::io::Result<Inotify> {
        Ok(Inotify {
            inotify: ::inotify::Inotify::init()?,
            dirs: HashMap::new(),
            watched_dirs: HashSet::new(),
            files: HashSet::new(),
        })
    }

    /// Adds the files not watched yet (and their directories).
    pub(super) fn watch(&mut self, files: &[PathBuf]) -> std::io::Result<()> {
        for file in files {
            if self.files.contains(file) {
                continue;
            }
            let resolved = std::fs::canonicalize(file).ok();
            for f in std::iter::once(file.clone()).chain(resolved) {
                if let Some(dir) = f.parent() {
                    if !self.watched_dirs.contains(dir) && dir.is_dir() {
                        self.add_dir(dir)?;
                    }
                }
                self.files.insert(f);
            }
        }
        Ok(())
    }

    fn add_dir(&mut self, dir: &Path) -> std::io::Result<()> {
        let wd = self.inotify.watches().add(dir, EVENTS).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot watch {}: {e}", dir.display()))
        })?;
        self.dirs.insert(wd, dir.to_owned());
        self.watched_dirs.insert(dir.to_owned());
        Ok(())
    }

    /// Waits up to `timeout` for an event naming a watched file; once one came, waits for quiet
    /// ([`SETTLE`]) and returns that file.
    pub(super) fn wait(&mut self, timeout: Duration) -> std::io::Result<Option<PathBuf>> {
        let deadline = Instant::now() + timeout;
        let mut changed = None;
        let mut settle_by = None;
        loop {
            let now = Instant::now();
            let until = match settle_by {
                Some(limit) => std::cmp::min(now + SETTLE, limit),
                None => deadline,
            };
            if !self.readable(until.saturating_duration_since(now))? {
                if changed.is_some() || Instant::now() >= deadline {
                    return Ok(changed);
                }
                continue;
            }
            let hit = self.read_events()?;
            if changed.is_none() {
                if let Some(file) = hit {
                    changed = Some(file);
                    settle_by = Some(Instant::now() + SETTLE_MAX);
                }
            }
            if settle_by.is_some_and(|limit| Instant::now() >= limit) {
                return Ok(changed);
            }
            if changed.is_none() && Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Whether events are queued, waiting up to `timeout` for one (the crate's reads either do
    /// not wait or wait without a limit).
    fn readable(&self, timeout: Duration) -> std::io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(n > 0)
    }

    /// Reads the queued events; returns the first watched file one names. A queue overflow
    /// (events lost) counts as a change of every file.
    fn read_events(&mut self) -> std::io::Result<Option<PathBuf>> {
        let mut hit = None;
        let mut buf = [0u8; 8192];
        loop {
            let events = match self.inotify.read_events(&mut buf) {
                Ok(events) => events,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(hit),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for event in events {
                if hit.is_some() {
                    continue;
                }
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    hit = Some(PathBuf::from("(inotify queue overflow: events were lost)"));
                    continue;
                }
                let (Some(dir), Some(name)) = (self.dirs.get(&event.wd), event.name) else {
                    continue;
                };
                let path = dir.join(name);
                if self.files.contains(&path) {
                    hit = Some(path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reload::bump;

    #[test]
    fn inotify_names_only_watched_files_and_follows_a_rename_over_them() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.py");
        std::fs::write(&a, "x = 1\n").unwrap();
        let mut i = Inotify::new().unwrap();
        i.watch(std::slice::from_ref(&a)).unwrap();
        // A swap file or a database beside the code is not the code.
        std::fs::write(dir.path().join(".a.py.swp"), "junk").unwrap();
        std::fs::write(dir.path().join("db.sqlite3"), "junk").unwrap();
        assert_eq!(i.wait(Duration::from_millis(300)).unwrap(), None);
        // An editor's save: write elsewhere, rename over.
        let tmp = dir.path().join("a.py.tmp");
        std::fs::write(&tmp, "x = 2\n").unwrap();
        std::fs::rename(&tmp, &a).unwrap();
        let canonical = std::fs::canonicalize(&a).unwrap();
        let got = i.wait(Duration::from_secs(2)).unwrap().unwrap();
        assert!(got == a || got == canonical, "{got:?}");
        // A bumped time alone (touch) counts too.
        bump(&a, 5);
        assert!(i.wait(Duration::from_secs(2)).unwrap().is_some());
    }
}
