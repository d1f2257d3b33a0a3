//! systemd socket activation (`sd_listen_fds(3)`): listening sockets handed to the master at
//! descriptors 3.. with `LISTEN_PID` (our pid) and `LISTEN_FDS` (how many) in the environment.
//!
//! The master takes them instead of binding: each `--bind` address given uses the inherited
//! socket bound to the same address (and binds the ones no socket matches); with no `--bind`
//! given, every inherited socket is served. Inherited sockets matching no `--bind` are closed,
//! with a warning. A socket's queue length is the unit's `Backlog=`, not `--backlog`.
//!
//! Workers receive listeners at 3.. by the same convention, from the master, but never with
//! `LISTEN_PID`: the master removes it from their environment.

use std::os::fd::RawFd;

use anyhow::Context;

use crate::config::{Bind, BindAddr, Protocol, ServeConfig};
use crate::listener::Listener;

const FIRST_FD: RawFd = 3;
/// More descriptors than this is not a systemd hand-over we can believe.
const MAX_FDS: usize = 1024;

/// The sockets systemd passed to this process; empty when it passed none.
pub(crate) fn inherited() -> anyhow::Result<Vec<Listener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(Vec::new());
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        // Meant for another process (a parent that exported it and forked us).
        return Ok(Vec::new());
    }
    adopt(&fds, "LISTEN_FDS", "systemd")
}

/// Takes the listening sockets a parent put at descriptors 3.. for this process: `count` is the
/// value of the variable `var` that says how many, `from` who passed them (for the errors).
/// Used for systemd's sockets and for an old master's (`upgrade`). Each is made close-on-exec:
/// workers get their copies from the master explicitly.
pub(crate) fn adopt(count: &str, var: &str, from: &str) -> anyhow::Result<Vec<Listener>> {
    let n: usize = count
        .trim()
        .parse()
        .ok()
        .filter(|&n| n <= MAX_FDS)
        .with_context(|| format!("{var}={count:?} is not a count of descriptors"))?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let fd = FIRST_FD + i as RawFd;
        if !is_listening_stream(fd) {
            anyhow::bail!(
                "descriptor {fd} from {from} ({var}={n}) is not a listening stream socket \
                 (a systemd .socket unit needs ListenStream=)"
            );
        }
        // SAFETY: the parent handed descriptor `fd` to this process to own, and nothing else in
        // this process has taken it (this runs once, before any listener exists).
        let l = unsafe { Listener::from_raw_fd(fd) }
            .with_context(|| format!("descriptor {fd} from {from} ({var})"))?;
        crate::sys::set_cloexec(fd);
        out.push(l);
    }
    Ok(out)
}

/// Chooses the listeners of `config`'s `--bind` from `inherited`, binding what no inherited
/// socket provides; with no `--bind` chosen, serves every inherited socket and rewrites
/// `config.bind` to their addresses (workers learn their listeners' protocols from it).
pub(crate) fn take(
    config: &mut ServeConfig,
    inherited: Vec<Listener>,
) -> anyhow::Result<Vec<Listener>> {
    let mut pool: Vec<(BindAddr, Listener)> = inherited
        .into_iter()
        .map(|l| Ok((l.local_addr()?, l)))
        .collect::<std::io::Result<_>>()
        .context("cannot read the address of a socket from systemd")?;
    if !config.bind_chosen {
        config.bind = pool
            .iter()
            .map(|(addr, _)| Bind {
                protocol: Protocol::Http,
                addr: addr.clone(),
            })
            .collect();
        tracing::info!(
            sockets = pool.len(),
            "serving the sockets systemd passed (LISTEN_FDS)"
        );
        return Ok(pool.into_iter().map(|(_, l)| l).collect());
    }
    let mut listeners = Vec::with_capacity(config.bind.len());
    for bind in &config.bind {
        match pool.iter().position(|(addr, _)| *addr == bind.addr) {
            Some(i) => {
                tracing::info!("{bind}: using the socket systemd passed");
                listeners.push(pool.remove(i).1);
            }
            None => listeners.push(Listener::bind_serving(bind, config)?),
        }
    }
    for (addr, _) in &pool {
        tracing::warn!("closing the socket systemd passed for {addr}: it is not a --bind address");
    }
    Ok(listeners)
}

fn is_listening_stream(fd: RawFd) -> bool {
    let get = |opt| {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `v`; a bad fd only fails.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &mut v as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        };
        (rc == 0).then_some(v)
    };
    get(libc::SO_TYPE) == Some(libc::SOCK_STREAM) && get(libc::SO_ACCEPTCONN) == Some(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_binds_take_matching_sockets_and_bind_the_rest() {
        let a = Listener::bind(&"127.0.0.1:0".parse().unwrap(), 8, false).unwrap();
        let b = Listener::bind(&"127.0.0.1:0".parse().unwrap(), 8, false).unwrap();
        let a_addr = a.local_addr().unwrap();
        let mut config = ServeConfig {
            bind: vec![
                format!("{a_addr}").parse().unwrap(),
                "127.0.0.1:0".parse().unwrap(),
            ],
            bind_chosen: true,
            ..ServeConfig::default()
        };
        let got = take(&mut config, vec![b, a]).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].local_addr().unwrap(), a_addr, "matched by address");
        assert_ne!(got[1].local_addr().unwrap(), a_addr, "bound fresh");

        let c = Listener::bind(&"127.0.0.1:0".parse().unwrap(), 8, false).unwrap();
        let c_addr = c.local_addr().unwrap();
        let mut config = ServeConfig::default();
        let got = take(&mut config, vec![c]).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(config.bind.len(), 1);
        assert_eq!(
            config.bind[0].addr, c_addr,
            "no --bind: all inherited, bind rewritten"
        );
    }

    #[test]
    fn not_ours_when_the_pid_differs() {
        // LISTEN_PID of another process: nothing is taken (the test process's environment is
        // not changed; a parent's pid never equals ours).
        if std::env::var_os("LISTEN_PID").is_none() {
            assert!(inherited().unwrap().is_empty());
        }
    }
}
