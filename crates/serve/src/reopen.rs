//! SIGUSR1 reopens the log files, as in gunicorn, so logrotate's `postrotate kill -USR1
//! $(cat PIDFILE)` works: each process opens every log path it writes anew (appending, created
//! if logrotate moved it away) and puts it in place of the old descriptor with `dup2`, so every
//! holder of that descriptor (a `File`, the log subscriber, standard output and error under
//! `--capture-output`) writes to the new file at once, without a lock. The master reopens its
//! own and passes the signal on to its workers.

use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

static FILES: Mutex<Vec<(PathBuf, RawFd)>> = Mutex::new(Vec::new());

/// Registers `fd`, open on `path` for as long as the process lives, to be reopened on SIGUSR1.
pub fn register(path: &Path, fd: RawFd) {
    if let Ok(mut files) = FILES.lock() {
        files.push((path.to_owned(), fd));
    }
}

/// Reopens every registered file; with `owner`, a file created anew is given to the workers'
/// user (the master runs as root; the workers must still open it).
pub fn reopen_all(owner: Option<&crate::owner::Owner>) {
    let Ok(files) = FILES.lock() else {
        return;
    };
    for (path, fd) in files.iter() {
        let opened = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("SIGUSR1: cannot reopen {}: {e}", path.display());
                continue;
            }
        };
        if let Some(owner) = owner {
            let _ = crate::owner::give(path, owner);
        }
        // SAFETY: both descriptors are open; dup2 replaces fd's file atomically.
        if unsafe { libc::dup2(file.as_raw_fd(), *fd) } < 0 {
            let e = std::io::Error::last_os_error();
            tracing::error!("SIGUSR1: cannot reopen {}: {e}", path.display());
        }
    }
}
