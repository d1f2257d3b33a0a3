//! gunicorn's binary upgrade (`kill -USR2`): the master starts a new master from the binary now
//! at the path it was started from, handing it the listening sockets, and both serve side by
//! side until the operator stops the old one (`WINCH` stops its workers, `TERM` the master).
//!
//! The new master finds the sockets at descriptors 3.. (as systemd's `LISTEN_FDS`) with
//! [`ENV_FDS`] (how many) and [`ENV_PARENT`] (the old master's pid, which must be its parent)
//! in its environment, and takes them in the order of its `--bind` addresses: it runs with the
//! old master's arguments, so the same addresses in the same order, and a `--bind` on port 0
//! keeps the port the old master got. While the old master lives, the new one writes its pid to
//! `FILE.2` (`--pid FILE`), and moves it to `FILE` once the old one has exited — as gunicorn's
//! `Master.2`.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

use crate::config::{Bind, ServeConfig};
use crate::listener::Listener;

/// The old master's pid, in the new master's environment.
pub(crate) const ENV_PARENT: &str = "C10K_UPGRADE_FROM";
/// How many listening sockets the old master passed, at descriptors 3...
pub(crate) const ENV_FDS: &str = "C10K_UPGRADE_FDS";
const FIRST_FD: RawFd = 3;

/// How this master was started, kept to start its successor the same way.
#[derive(Debug)]
pub(crate) struct Start {
    /// The binary's path when this master started: at `USR2` it may hold a newer build.
    exe: PathBuf,
    cwd: Option<PathBuf>,
    args: Vec<OsString>,
}

impl Start {
    pub fn capture() -> Start {
        let exe = std::env::current_exe()
            .map(|p| {
                // Linux names a file replaced since the start "PATH (deleted)".
                let s = p.to_string_lossy();
                match s.strip_suffix(" (deleted)") {
                    Some(path) => PathBuf::from(path),
                    None => p,
                }
            })
            .or_else(|_| {
                std::env::args_os()
                    .next()
                    .map(PathBuf::from)
                    .ok_or(std::io::ErrorKind::NotFound)
            })
            .unwrap_or_else(|_| PathBuf::from("c10k"));
        Start {
            exe,
            cwd: std::env::current_dir().ok(),
            args: std::env::args_os().collect(),
        }
    }

    pub fn exe(&self) -> &std::path::Path {
        &self.exe
    }

    /// Starts the new master with `sockets` (this master's listeners, above descriptor 100) at
    /// 3..; returns its pid.
    pub fn spawn(&self, sockets: &[RawFd]) -> anyhow::Result<i32> {
        let mut cmd = Command::new(&self.exe);
        if let Some(arg0) = self.args.first() {
            cmd.arg0(arg0);
        }
        cmd.args(self.args.iter().skip(1))
            .env(ENV_PARENT, std::process::id().to_string())
            .env(ENV_FDS, sockets.len().to_string())
            // A systemd hand-over was this master's own, not its successor's.
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES");
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        let sources = sockets.to_vec();
        // SAFETY: the closure runs between fork and exec and only calls dup2 (async-signal-safe)
        // on descriptors open in the child; the sources sit above 100 (`move_fd_high`), out of
        // the range they are copied to.
        unsafe {
            cmd.pre_exec(move || {
                for (i, &src) in sources.iter().enumerate() {
                    if libc::dup2(src, FIRST_FD + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.exe.display()))?;
        // Reaped by the master's waitpid loop.
        Ok(child.id() as i32)
    }
}

/// In a new master started by [`Start::spawn`]: the old master's pid and the sockets it passed.
/// `None` when this process was not started by a `USR2` (or its parent is no longer the master
/// that set the variables).
pub(crate) fn inherited() -> anyhow::Result<Option<(i32, Vec<Listener>)>> {
    let (Some(parent), Some(fds)) = (std::env::var_os(ENV_PARENT), std::env::var_os(ENV_FDS))
    else {
        return Ok(None);
    };
    let parent: i32 = match parent.to_str().and_then(|p| p.parse().ok()) {
        Some(p) => p,
        None => return Ok(None),
    };
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != parent {
        return Ok(None);
    }
    let fds = fds.to_string_lossy();
    let sockets = crate::activation::adopt(&fds, ENV_FDS, "the old master")?;
    Ok(Some((parent, sockets)))
}

/// Pairs the sockets the old master passed with `config.bind`, in order, and rewrites each
/// address to the socket's own (a port 0 becomes the port the old master got).
pub(crate) fn take(
    config: &mut ServeConfig,
    sockets: Vec<Listener>,
) -> anyhow::Result<Vec<Listener>> {
    if sockets.len() != config.bind.len() {
        anyhow::bail!(
            "the old master passed {} listening sockets for {} --bind addresses; a USR2 upgrade \
             needs the same --bind",
            sockets.len(),
            config.bind.len()
        );
    }
    for (bind, socket) in config.bind.iter_mut().zip(&sockets) {
        let addr = socket
            .local_addr()
            .context("cannot read the address of a socket from the old master")?;
        *bind = Bind {
            protocol: bind.protocol,
            addr,
        };
    }
    Ok(sockets)
}
