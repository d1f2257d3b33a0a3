//! The master process, after gunicorn's arbiter.
//!
//! Signal handlers only record the signal and wake the loop through a pipe; one single-threaded
//! loop waits at most a second, acts on recorded signals, reaps dead workers, kills workers whose
//! heartbeat stopped, and reconciles the number of workers with the target.
//!
//! Workers are started by re-executing this binary with the listening sockets at descriptors
//! 3.. (the `LISTEN_FDS` convention) and the scoreboard after them, so no worker inherits a
//! half-initialised runtime from a `fork` of a threaded process; the master never starts a thread
//! or a runtime of its own. An application with a runtime to share (Python) has its workers
//! forked instead by a zygote the master starts the same way (see `zygote`).
//!
//! `HUP` loads the configuration again through the binary's hook before the rolling restart
//! (see `reload`): workers started from then on get the new one, and one that does not load
//! changes nothing. Changed addresses are opened first, and the workers started from then on get
//! the new set of listeners (see `rebind`).
//!
//! The same loop wakes [`Status`] (the admin listener and the listen-queue sampling): its
//! descriptors join the poll and every step on them is non-blocking; what status shows and how
//! it is gathered lives in `status`, not here.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use signal_hook::consts::{
    SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGWINCH,
};

use crate::config::ServeConfig;
use crate::listener::{Listener, SocketFile};
use crate::rebind::{Listening, Shape};
use crate::scoreboard::{self, ConnState, Scoreboard, ENTRIES_PER_SLOT, MAX_SLOTS};
use crate::status::{Admin, Status, View};
use crate::zygote::{ForkError, Zygote};

/// Exit status of a worker whose application could not be built (gunicorn's WORKER_BOOT_ERROR).
pub const BOOT_ERROR: i32 = 3;

/// Workers could not start the application (twice in a row): the server stops instead of
/// starting them again and again. `c10k serve` exits with [`BOOT_ERROR`] then.
#[derive(Debug, thiserror::Error)]
#[error("worker failed to boot twice in a row; stopping (see the worker's error above)")]
pub struct BootFailed;

/// Environment a worker process finds its inheritance in.
pub(crate) const ENV_SLOT: &str = "C10K_WORKER_SLOT";
pub(crate) const ENV_CONFIG: &str = "C10K_WORKER_CONFIG";
pub(crate) const ENV_SCOREBOARD_FD: &str = "C10K_SCOREBOARD_FD";
pub(crate) const ENV_LISTEN_FDS: &str = "LISTEN_FDS";
const FIRST_FD: RawFd = 3;
/// How long a rolling restart waits for the queue of a listener a `HUP` removed to empty before
/// it retires the last worker accepting on it.
const QUEUE_HOLD: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Worker {
    slot: usize,
    started: Instant,
    /// Told to finish and exit (rolling restart, TTOU); not respawned if beyond the target.
    retiring: bool,
    killed_for_timeout: bool,
    /// The generation of the listeners it was started with (see `rebind`).
    listeners: u64,
}

struct Signals {
    flags: Vec<(i32, Arc<AtomicBool>)>,
    wake: UnixStream,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        let (read, write) = UnixStream::pair().context("cannot create the signal pipe")?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let mut flags = Vec::new();
        for sig in [
            SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGCHLD, SIGUSR1, SIGUSR2, SIGWINCH,
        ] {
            let flag = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(sig, flag.clone())
                .with_context(|| format!("cannot install a handler for signal {sig}"))?;
            signal_hook::low_level::pipe::register(sig, write.try_clone()?)
                .with_context(|| format!("cannot install a wake-up for signal {sig}"))?;
            flags.push((sig, flag));
        }
        Ok(Signals { flags, wake: read })
    }

    /// Whether a signal to stop (`TERM`, `INT`, `QUIT`) came and waits for [`Signals::wait`].
    fn stop_pending(&self) -> bool {
        self.flags
            .iter()
            .any(|(s, f)| matches!(*s, SIGTERM | SIGINT | SIGQUIT) && f.load(Relaxed))
    }

    /// Waits up to `timeout` for a signal (or for one of `extra` to be ready), then returns
    /// the signals recorded.
    fn wait(&mut self, timeout: Duration, extra: &[libc::pollfd]) -> Vec<i32> {
        let mut pfds = Vec::with_capacity(1 + extra.len());
        pfds.push(libc::pollfd {
            fd: self.wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        pfds.extend_from_slice(extra);
        // A signal whose wake-up was read already (by `Zygote::fork_worker`) is not waited for.
        let ms = if self.flags.iter().any(|(_, f)| f.load(Relaxed)) {
            0
        } else {
            timeout.as_millis().min(i32::MAX as u128) as libc::c_int
        };
        // SAFETY: a valid array of pollfds of the given length.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        let mut sink = [0u8; 64];
        while matches!(self.wake.read(&mut sink), Ok(n) if n > 0) {}
        self.flags
            .iter()
            .filter(|(_, f)| f.swap(false, Relaxed))
            .map(|(s, _)| *s)
            .collect()
    }
}

pub(crate) struct Master {
    config: ServeConfig,
    /// The listeners workers get, and those a `HUP` removed while older workers use them.
    listening: Listening,
    scoreboard: Scoreboard,
    workers: HashMap<i32, Worker>,
    target: usize,
    boot_failures: u32,
    /// Slots still to restart in a rolling restart (SIGHUP), in order.
    rolling: Vec<usize>,
    /// When the current rolling restart began: workers started before it are replaced.
    rolling_since: Option<Instant>,
    signals: Signals,
    /// The admin listener and the books behind `/status`.
    status: Status,
    /// Who workers run as (`--user`, `--group`).
    owner: Option<crate::owner::Owner>,
    /// `--pid`'s file, moved to its name once an old master has gone (see `upgrade`).
    pidfile: Option<crate::pidfile::PidFile>,
    /// How this master was started, to start a successor the same way (`USR2`).
    start: crate::upgrade::Start,
    /// The new master a `USR2` started, while it runs.
    successor: Option<i32>,
    /// The old master whose `USR2` started this one, while it runs.
    predecessor: Option<i32>,
    /// The worker target before `WINCH` stopped the workers (`HUP` brings them back).
    winched: Option<usize>,
    /// The configuration as loaded at start and the hook that loads it again on `HUP` (see
    /// `reload`); without one, `HUP` keeps the configuration.
    reload: Option<(ServeConfig, crate::reload::Reload)>,
    /// What the last reload hands every worker started since (see `Reloaded::worker_env`).
    worker_env: Vec<(String, String)>,
    /// Whether workers are forked by a zygote (see `zygote`): the application has a runtime to
    /// share and this master is a child subreaper.
    forking: bool,
    /// The running zygote, started at the first worker that needs it.
    zygote: Option<Zygote>,
    /// Zygotes in a row that could not give a worker; at [`ZYGOTE_TRIES`] workers are started
    /// by exec until the next `HUP`.
    zygote_failures: u32,
}

/// See `Master::zygote_failures`.
const ZYGOTE_TRIES: u32 = 3;

impl Master {
    /// `as_given` is the configuration as loaded (before inherited sockets rewrote its `bind`),
    /// `files` the unix socket files bound for `listeners`.
    pub fn new(
        config: ServeConfig,
        as_given: &ServeConfig,
        listeners: Vec<Listener>,
        files: Vec<SocketFile>,
        admin: Option<Admin>,
    ) -> anyhow::Result<Master> {
        if config.workers > MAX_SLOTS {
            anyhow::bail!(
                "--workers {} is above the maximum of {MAX_SLOTS}",
                config.workers
            );
        }
        let listening = Listening::new(listeners, &config.bind, &as_given.bind, files)?;
        let scoreboard = Scoreboard::create().context("cannot create the scoreboard")?;
        let signals = Signals::install()?;
        let owner = crate::owner::resolve(config.user.as_deref(), config.group.as_deref())
            .map_err(|(flag, message)| anyhow::anyhow!("{flag}: {message}"))?;
        Ok(Master {
            owner,
            target: config.workers,
            config,
            listening,
            scoreboard,
            workers: HashMap::new(),
            boot_failures: 0,
            rolling: Vec::new(),
            rolling_since: None,
            signals,
            status: Status::new(admin),
            pidfile: None,
            start: crate::upgrade::Start::capture(),
            successor: None,
            predecessor: None,
            winched: None,
            reload: None,
            worker_env: Vec::new(),
            forking: false,
            zygote: None,
            zygote_failures: 0,
        })
    }

    /// Has workers forked by a zygote instead of executed (see `zygote`). Without the subreaper
    /// that adopts them, workers are executed and a warning says so.
    pub fn fork_workers(&mut self) {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER and a flag.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) } == 0 {
            self.forking = true;
        } else {
            tracing::warn!(
                "cannot become a child subreaper ({}): workers are started by exec, not forked",
                std::io::Error::last_os_error()
            );
        }
    }

    /// What this master takes over: its `--pid` file and, after a `USR2`, the old master's pid.
    pub fn inherit(&mut self, pidfile: Option<crate::pidfile::PidFile>, predecessor: Option<i32>) {
        self.pidfile = pidfile;
        self.predecessor = predecessor;
    }

    /// Makes `HUP` load the configuration again with `reload`; `as_given` is the configuration
    /// as loaded, before inherited sockets rewrote its `bind`.
    pub fn reload_with(&mut self, as_given: ServeConfig, reload: crate::reload::Reload) {
        self.reload = Some((as_given, reload));
    }

    /// Runs until stopped. Returns an error when workers cannot boot.
    pub fn run(mut self) -> anyhow::Result<()> {
        tracing::info!(pid = std::process::id(), "master started");
        self.reconcile()?;
        // Set while `--drain-delay` runs: when the graceful stop begins.
        let mut drain_until: Option<Instant> = None;
        loop {
            let mut timeout = Duration::from_secs(1);
            let (next, mut extra) = self.status.wake();
            // A zygote preparing the runtime (a `--preload` import) answers on its socket.
            let preparing = self.zygote.as_ref().and_then(Zygote::preparing);
            if let Some((fd, _)) = preparing {
                extra.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            let deadlines = next.into_iter().chain(drain_until);
            for d in deadlines.chain(preparing.map(|(_, d)| d)) {
                timeout = timeout.min(d.saturating_duration_since(Instant::now()));
            }
            let signals = self.signals.wait(timeout, &extra);
            // Before `reap`: a zygote that answers "not prepared" exits right after.
            self.collect_zygote()?;
            self.reap()?;
            let oldest = self.workers.values().map(|w| w.listeners).min();
            self.listening.release(oldest);
            for sig in signals {
                match sig {
                    SIGTERM if drain_until.is_none() && self.config.drain_delay > 0.0 => {
                        let delay = Duration::from_secs_f64(self.config.drain_delay);
                        tracing::info!(
                            "SIGTERM: draining for {:.1}s (--drain-delay): readiness answers 503, \
                             requests are still served; then a graceful stop",
                            delay.as_secs_f64()
                        );
                        self.scoreboard.header().draining.store(1, Relaxed);
                        drain_until = Some(Instant::now() + delay);
                    }
                    SIGTERM | SIGINT => {
                        tracing::info!("signal {}: graceful stop", signal_name(sig));
                        return self.stop(true);
                    }
                    SIGQUIT => {
                        tracing::info!("SIGQUIT: fast stop");
                        return self.stop(false);
                    }
                    SIGHUP if self.winched.is_some() => {
                        self.target = self.winched.take().unwrap_or(1);
                        tracing::info!(
                            workers = self.target,
                            "SIGHUP: starting the workers SIGWINCH stopped"
                        );
                    }
                    SIGHUP if !self.reload_config() => {}
                    SIGHUP => {
                        tracing::info!("SIGHUP: rolling restart of all workers");
                        // It holds the old configuration and listeners: the next worker starts
                        // a new one.
                        self.stop_zygote();
                        self.zygote_failures = 0;
                        let mut slots: Vec<usize> = self
                            .workers
                            .values()
                            .filter(|w| !w.retiring)
                            .map(|w| w.slot)
                            .collect();
                        slots.sort_unstable();
                        self.rolling = slots;
                        self.rolling_since = Some(Instant::now());
                    }
                    SIGUSR1 => {
                        crate::reopen::reopen_all(self.owner.as_ref());
                        // It ignores the signal and holds the files it opened at start, which
                        // the workers it forks would inherit: the next worker starts a new one.
                        self.stop_zygote();
                        tracing::info!("SIGUSR1: log files reopened");
                        for pid in self.workers.keys() {
                            signal(*pid, libc::SIGUSR1);
                        }
                    }
                    SIGUSR2 => self.upgrade(),
                    SIGWINCH if self.successor.is_some() && self.target > 0 => {
                        tracing::info!(
                            "SIGWINCH: stopping this master's workers gracefully; the new master \
                             serves (SIGHUP starts them again, SIGTERM stops this master)"
                        );
                        self.winched = Some(self.target);
                        self.target = 0;
                    }
                    SIGWINCH => tracing::info!(
                        "SIGWINCH ignored: it stops the old master's workers after a SIGUSR2 \
                         upgrade, and no new master is running"
                    ),
                    SIGTTIN if self.target >= MAX_SLOTS => tracing::warn!(
                        workers = self.target,
                        "SIGTTIN ignored: already at the most workers c10k runs ({MAX_SLOTS})"
                    ),
                    SIGTTIN => {
                        self.target += 1;
                        tracing::info!(workers = self.target, "SIGTTIN: one more worker");
                    }
                    // WINCH stopped them all (gunicorn sets its count to 0 too): TTOU has
                    // nothing to take away, and HUP is what brings them back.
                    SIGTTOU if self.target == 0 => tracing::info!(
                        "SIGTTOU ignored: SIGWINCH stopped this master's workers (SIGHUP starts \
                         them again)"
                    ),
                    // Never fewer than one, as in gunicorn.
                    SIGTTOU if self.target <= 1 => tracing::info!(
                        workers = self.target,
                        "SIGTTOU ignored: never fewer than one worker"
                    ),
                    SIGTTOU => {
                        self.target -= 1;
                        tracing::info!(workers = self.target, "SIGTTOU: one fewer worker");
                    }
                    _ => {}
                }
            }
            if drain_until.is_some_and(|t| Instant::now() >= t) {
                tracing::info!("--drain-delay over: graceful stop");
                return self.stop(true);
            }
            self.watch_predecessor();
            self.murder_stuck();
            self.advance_rolling();
            self.reconcile()?;
            self.publish_boot();
            let view = View {
                config: &self.config,
                scoreboard: &self.scoreboard,
                live: self.live(),
                target: self.target,
                listeners: self.listening.listeners(),
            };
            self.status.tick(&view);
        }
    }

    /// `HUP`'s first half: loads the configuration again and takes it for the workers started
    /// from now on (their number included, as gunicorn resets it). Returns `false`, and changes
    /// nothing, when the new configuration does not load or cannot be run: the old one and its
    /// workers serve on.
    fn reload_config(&mut self) -> bool {
        let Some((as_given, reload)) = self.reload.as_mut() else {
            return true;
        };
        let merged = reload().and_then(|r| {
            Ok((
                crate::reload::merge(as_given, &self.config, r.config)?,
                r.worker_env,
            ))
        });
        let (merged, worker_env) = match merged {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(
                    "SIGHUP: the new configuration was not loaded, so nothing changed: {e:#}; \
                     the workers carry on with the configuration they have (fix it and send \
                     SIGHUP again)"
                );
                return false;
            }
        };
        // The new listeners open before anything else changes: one that cannot changes nothing.
        let rebound = if merged.sockets {
            let old = Shape::of(&self.config);
            match self
                .listening
                .rebind(&merged.config, old, self.owner.as_ref())
            {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!(
                        "SIGHUP: {e:#}, so nothing changed: the listeners and workers carry on \
                         as they were (free the address or fix the file, and send SIGHUP again)"
                    );
                    return false;
                }
            }
        } else {
            None
        };
        if merged.sockets {
            as_given.backlog = merged.config.backlog;
            as_given.reuse_port = merged.config.reuse_port;
            as_given.umask = merged.config.umask;
            if let Some(bind) = &merged.given_bind {
                as_given.bind = bind.clone();
            }
        }
        for kept in &merged.kept {
            tracing::warn!("SIGHUP: {kept}; kept as it was");
        }
        if merged.changed.is_empty() {
            tracing::info!(
                "SIGHUP: configuration reloaded: the server's settings are unchanged; the new \
                 workers read the application's (app, env, chdir, ...) from the file as it is now"
            );
        } else {
            tracing::info!(
                "SIGHUP: configuration reloaded: {}",
                merged.changed.join(", ")
            );
        }
        self.config = merged.config;
        self.target = self.config.workers;
        self.worker_env = worker_env;
        if let Some(r) = rebound {
            for addr in &r.opened {
                tracing::info!("SIGHUP: listening on {addr} too");
            }
            for addr in &r.removed {
                tracing::info!(
                    "SIGHUP: no longer listening on {addr}: it takes no new connection, and \
                     closes once the old workers have answered those waiting in it"
                );
            }
            for (i, (addr, _)) in self.listening.listeners().into_iter().enumerate() {
                let bind = crate::config::Bind {
                    protocol: self.config.protocol_of(i),
                    addr: addr.clone(),
                };
                tracing::info!(
                    "Listening at: {}{bind} ({})",
                    bind.scheme(),
                    std::process::id()
                );
            }
        }
        tracing::info!("Using worker: {}", self.config.worker_summary());
        true
    }

    /// `USR2`, gunicorn's binary upgrade: starts a new master from the binary at the path this
    /// one was started from, with these listening sockets (see `upgrade`). The admin listener
    /// goes to the new master: this one closes it first, and binds it again if the new master
    /// exits.
    fn upgrade(&mut self) {
        if let Some(pid) = self.successor {
            tracing::warn!("SIGUSR2 ignored: the new master (pid {pid}) is running");
            return;
        }
        if let Some(pid) = self.predecessor {
            tracing::warn!(
                "SIGUSR2 ignored: the old master (pid {pid}) is still running; stop it first"
            );
            return;
        }
        self.status.close_admin();
        match self.start.spawn(&self.listening.fds()) {
            Ok(pid) => {
                tracing::info!(
                    new_master = pid,
                    "SIGUSR2: started a new master from {} with the listening sockets; both \
                     serve until this one stops (SIGWINCH stops its workers, SIGTERM the master)",
                    self.start.exe().display()
                );
                self.successor = Some(pid);
            }
            Err(e) => {
                tracing::error!("SIGUSR2: {e:#}; this master carries on");
                self.rebind_admin();
            }
        }
    }

    /// The admin listener again, after a successor that had it exited.
    fn rebind_admin(&mut self) {
        if let Some(addr) = &self.config.admin.0 {
            match Admin::bind(addr, self.config.admin_token.clone()) {
                Ok(admin) => self.status.reopen_admin(admin),
                Err(e) => tracing::warn!("admin listener off: cannot listen on {addr} ({e})"),
            }
        }
    }

    /// After a `USR2` upgrade: once the old master has exited (this process was handed to
    /// another parent), this master's `--pid` file takes the name.
    fn watch_predecessor(&mut self) {
        let Some(old) = self.predecessor else {
            return;
        };
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } != old {
            tracing::info!(old_master = old, "the old master has exited");
            self.predecessor = None;
            if let Some(p) = &mut self.pidfile {
                p.promote();
            }
        }
    }

    /// Tells every process (through the scoreboard header) the worker target and, once, that
    /// the first generation of workers has booted: readiness waits for it.
    fn publish_boot(&mut self) {
        let header = self.scoreboard.header();
        header.target.store(self.target as u32, Relaxed);
        if header.booted.load(Relaxed) == 1 {
            return;
        }
        let booted = (0..self.target).all(|slot| {
            let s = self.scoreboard.slot(slot);
            s.ready.load(Relaxed) == 1
                && self
                    .workers
                    .get(&(s.pid.load(Relaxed) as i32))
                    .is_some_and(|w| w.slot == slot)
        });
        if booted {
            tracing::info!(workers = self.target, "all workers booted: ready");
            header.booted.store(1, Relaxed);
        }
    }

    /// Live workers as (slot, pid), in slot order.
    fn live(&self) -> Vec<(usize, u32)> {
        let mut live: Vec<(usize, u32)> = self
            .workers
            .iter()
            .map(|(pid, w)| (w.slot, *pid as u32))
            .collect();
        live.sort_unstable();
        live
    }

    /// Starts workers for empty slots below the target; retires workers in slots above it.
    fn reconcile(&mut self) -> anyhow::Result<()> {
        for slot in 0..self.target {
            if !self.workers.values().any(|w| w.slot == slot) {
                self.spawn(slot)?;
            }
        }
        let extra: Vec<i32> = self
            .workers
            .iter()
            .filter(|(_, w)| w.slot >= self.target && !w.retiring)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in extra {
            self.retire(pid);
        }
        Ok(())
    }

    fn retire(&mut self, pid: i32) {
        if let Some(w) = self.workers.get_mut(&pid) {
            w.retiring = true;
            tracing::info!(pid, slot = w.slot, "retiring worker");
            signal(pid, libc::SIGHUP);
        }
    }

    /// A rolling restart retires one worker at a time, and moves on once its replacement is up,
    /// so all but one worker keep serving and the listen queue holds connections meanwhile.
    fn advance_rolling(&mut self) {
        let Some(&slot) = self.rolling.first() else {
            if self.rolling_since.take().is_some() {
                tracing::info!("rolling restart done");
            }
            return;
        };
        let in_slot: Vec<(i32, bool)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.slot == slot)
            .map(|(pid, w)| (*pid, w.retiring))
            .collect();
        match in_slot.as_slice() {
            // The old worker is still in the slot: retire it (once).
            // Unless connections wait for it in a removed listener's queue.
            [(pid, false)] if self.is_original(*pid) && self.holds_queue(*pid) => {}
            [(pid, false)] if self.is_original(*pid) => self.retire(*pid),
            // A fresh worker is in the slot and ready: this slot is done.
            [(pid, false)] => {
                let ready = self.scoreboard.slot(slot).ready.load(Relaxed) == 1;
                if ready && self.scoreboard.slot(slot).pid.load(Relaxed) as i32 == *pid {
                    self.rolling.remove(0);
                }
            }
            [] if slot >= self.target => {
                self.rolling.remove(0);
            }
            _ => {}
        }
    }

    /// Whether the rolling restart waits before retiring `pid`: it is the last worker accepting
    /// on a listener a `HUP` removed, and connections still wait in that listener's queue (they
    /// would be reset when its last worker exits). At most [`QUEUE_HOLD`] from the reload.
    fn holds_queue(&self, pid: i32) -> bool {
        let Some(w) = self.workers.get(&pid) else {
            return false;
        };
        let last = |g: u64| {
            w.listeners < g
                && !self
                    .workers
                    .iter()
                    .any(|(p, o)| *p != pid && !o.retiring && o.listeners < g)
        };
        let Some(addr) = self.listening.queued(last) else {
            return false;
        };
        if self.rolling_since.is_some_and(|t| t.elapsed() < QUEUE_HOLD) {
            tracing::debug!(
                pid,
                "waiting for the queue of {addr} to empty before retiring"
            );
            return true;
        }
        tracing::warn!(
            pid,
            "retiring the last worker of {addr} with connections still in its queue (they are \
             reset): it did not empty within {}s",
            QUEUE_HOLD.as_secs()
        );
        false
    }

    /// Whether `pid` was running when the current rolling restart began.
    fn is_original(&self, pid: i32) -> bool {
        let since = self.rolling_since;
        self.workers
            .get(&pid)
            .is_some_and(|w| !w.retiring && since.is_some_and(|t| w.started < t))
    }

    fn spawn(&mut self, slot: usize) -> anyhow::Result<()> {
        // A fork waits for the zygote (briefly: see `fork_from_zygote`): a signal to stop that
        // came meanwhile is handled before any other worker is started.
        if self.signals.stop_pending() {
            return Ok(());
        }
        match self.fork_from_zygote(slot) {
            Forked::Worker(pid) => {
                self.register(slot, pid);
                Ok(())
            }
            // Its slot fills when the zygote answers (`collect_zygote`).
            Forked::Later => Ok(()),
            Forked::No if self.signals.stop_pending() => Ok(()),
            Forked::No => self.exec_worker(slot),
        }
    }

    /// Starts a worker in `slot` by executing this program, as without a zygote.
    fn exec_worker(&mut self, slot: usize) -> anyhow::Result<()> {
        let child = self
            .command(Some(slot), None)
            .spawn()
            .context("cannot start a worker process")?;
        // The child is reaped with waitpid in `reap`; the handle itself is not needed.
        self.register(slot, child.id() as i32);
        Ok(())
    }

    /// Takes the worker `pid`, just started in `slot`, into the master's books.
    fn register(&mut self, slot: usize, pid: i32) {
        if self.scoreboard.slot(slot).generation.load(Relaxed) > 0 {
            self.status.respawned();
        }
        self.scoreboard.reset(slot, pid as u32);
        tracing::info!(pid, slot, "Booting worker with pid: {pid}");
        self.workers.insert(
            pid,
            Worker {
                slot,
                started: Instant::now(),
                retiring: false,
                killed_for_timeout: false,
                listeners: self.listening.generation(),
            },
        );
    }

    /// A worker forked by the zygote. A new zygote is started if none runs, and its first
    /// worker comes [`Forked::Later`]: the master does not wait while it prepares the runtime
    /// (under `--preload` the application's import, up to `--timeout`), and the other slots
    /// wait for it. Later forks take milliseconds, and the master waits for them.
    fn fork_from_zygote(&mut self, slot: usize) -> Forked {
        if !self.forking || self.zygote_failures >= ZYGOTE_TRIES {
            return Forked::No;
        }
        let Some(zygote) = self.zygote.as_mut() else {
            return match self.start_zygote() {
                Ok(zygote) => {
                    let zygote = self.zygote.insert(zygote);
                    match zygote.begin(slot) {
                        Ok(()) => Forked::Later,
                        Err(e) => {
                            self.zygote_failed(slot, e.into());
                            Forked::No
                        }
                    }
                }
                Err(e) => {
                    self.zygote_failures += 1;
                    tracing::warn!("cannot start the zygote ({e:#}); starting the worker by exec");
                    Forked::No
                }
            };
        };
        if zygote.preparing().is_some() {
            return Forked::Later;
        }
        let signals = &self.signals;
        match zygote.fork_worker(slot, signals.wake.as_raw_fd(), || signals.stop_pending()) {
            Ok(pid) => {
                self.zygote_failures = 0;
                Forked::Worker(pid)
            }
            Err(e) => {
                self.zygote_failed(slot, e);
                Forked::No
            }
        }
    }

    /// Takes the zygote's answer to its first request, once it has come: the worker joins its
    /// slot, or, if the zygote failed, that worker is started by exec.
    fn collect_zygote(&mut self) -> anyhow::Result<()> {
        let Some((slot, answer)) = self.zygote.as_mut().and_then(Zygote::answer) else {
            return Ok(());
        };
        match answer {
            Ok(pid) => {
                self.zygote_failures = 0;
                self.register(slot, pid);
                Ok(())
            }
            Err(e) => {
                self.zygote_failed(slot, e);
                // As `spawn` would; a slot above a lowered target is left empty.
                if self.signals.stop_pending() || slot >= self.target {
                    return Ok(());
                }
                self.exec_worker(slot)
            }
        }
    }

    /// The zygote gave no worker for `slot`: says why, counts the failure, and stops it.
    fn zygote_failed(&mut self, slot: usize, e: ForkError) {
        let pid = self.zygote.as_ref().map_or(0, Zygote::pid);
        match e {
            ForkError::NotPrepared => {
                // The same configuration fails the same way in every zygote (a `--preload`
                // import error): none is started again before `HUP`, and the worker started by
                // exec reports the error.
                self.zygote_failures = ZYGOTE_TRIES;
                tracing::warn!(
                    zygote = pid,
                    slot,
                    "the zygote could not start the application's runtime: workers are \
                     started by exec until the next SIGHUP"
                );
            }
            // `run` stops the server when it sees the signal; `spawn` starts no worker.
            ForkError::Stopping => {}
            ForkError::Io(e) => {
                self.zygote_failures += 1;
                tracing::warn!(
                    zygote = pid,
                    slot,
                    "the zygote could not fork a worker ({e}); starting it by exec"
                );
                if self.zygote_failures >= ZYGOTE_TRIES {
                    tracing::warn!(
                        "{ZYGOTE_TRIES} zygotes in a row failed: workers are started by exec \
                         until the next SIGHUP"
                    );
                }
            }
        }
        self.stop_zygote();
    }

    /// Starts a zygote the way a worker is started, with the control socket beside the
    /// scoreboard.
    fn start_zygote(&mut self) -> anyhow::Result<Zygote> {
        let (ours, theirs) =
            crate::zygote::control_pair().context("cannot create the zygote's socket")?;
        let child = self
            .command(None, Some(theirs.as_raw_fd()))
            .spawn()
            .context("cannot start the zygote")?;
        let pid = child.id() as i32;
        tracing::debug!(pid, "zygote started");
        // It prepares the runtime before its first answer, which under `--preload` imports the
        // application: as long as a worker's boot may take (`--timeout`, see `murder_stuck`).
        // With `--timeout 0` the master still gives up on that answer: after 15 s, as for every
        // other answer.
        let boot = Duration::try_from_secs_f64(self.config.timeout).unwrap_or_default();
        Ok(Zygote::new(pid, ours, boot))
    }

    /// Stops the zygote, if one runs, and returns its pid; `reap` collects it.
    fn stop_zygote(&mut self) -> Option<i32> {
        let zygote = self.zygote.take()?;
        signal(zygote.pid(), libc::SIGKILL);
        Some(zygote.pid())
    }

    /// The command that starts a worker in `slot`, or a zygote (`slot` `None`) with `control`
    /// as its control socket.
    fn command(&self, slot: Option<usize>, control: Option<RawFd>) -> Command {
        let sources: Vec<RawFd> = self.listening.fds();
        let n = sources.len();
        let scoreboard_fd = self.scoreboard.as_raw_fd();
        let control_at = FIRST_FD + n as RawFd + 1;
        let owner = self.owner.clone();
        // The worker runs the master's own binary through `/proc/self/exe` (in the forked
        // child it names the same file the master runs), not the path it was started from: a
        // deploy that replaced that file (a rename over it, as package managers and `cargo
        // install` do) would leave the path naming a deleted file, and every respawn (`HUP`,
        // `TTIN`, a crash) would fail; and a worker of a newer build would not share this
        // master's scoreboard layout. argv[0] stays the master's, for `ps`.
        let mut cmd = Command::new("/proc/self/exe");
        if let Some(arg0) = std::env::args_os().next() {
            cmd.arg0(arg0);
        }
        // The worker runs the binary's own `main` again with the master's arguments, so the
        // application's settings reach it as they reached the master (see `crate::run`).
        cmd.args(std::env::args_os().skip(1))
            .envs(self.worker_env.iter().map(|(k, v)| (k, v)))
            .env(ENV_CONFIG, self.config.to_toml())
            .env(ENV_LISTEN_FDS, n.to_string())
            // The systemd hand-over was the master's (see `activation`), not the worker's.
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            // Nor was a USR2 hand-over (see `upgrade`).
            .env_remove(crate::upgrade::ENV_PARENT)
            .env_remove(crate::upgrade::ENV_FDS)
            .env(ENV_SCOREBOARD_FD, (FIRST_FD + n as RawFd).to_string())
            .env(
                crate::proc_name::ENV_NAME,
                std::ffi::OsStr::from_bytes(&crate::proc_name::current()),
            );
        match slot {
            Some(slot) => cmd.env(ENV_SLOT, slot.to_string()),
            None => cmd.env(crate::zygote::ENV_ZYGOTE, control_at.to_string()),
        };
        // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
        // functions (dup2, setgroups, setgid, setuid, prctl) on descriptors that are open in
        // the child and values prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for (i, &src) in sources.iter().enumerate() {
                    if libc::dup2(src, FIRST_FD + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::dup2(scoreboard_fd, FIRST_FD + n as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(control) = control {
                    if libc::dup2(control, control_at) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // --user/--group, before the death signal: a change of user clears it.
                if let Some(owner) = &owner {
                    crate::owner::switch(owner)?;
                }
                // If the master dies, its workers stop gracefully instead of living on.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                // Ctrl-C at a terminal reaches the whole process group: the worker leaves it to
                // the master, which drives the graceful stop. Ignored dispositions survive exec,
                // so no INT can stop the worker before it is running either.
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                // SIGUSR1 (reopen the logs) must not kill a worker that has not installed its
                // handler yet: its default action is to terminate.
                libc::signal(libc::SIGUSR1, libc::SIG_IGN);
                Ok(())
            });
        }
        cmd
    }

    /// Collects exited workers, says why each one died, and counts boot failures.
    fn reap(&mut self) -> anyhow::Result<()> {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with WNOHANG on any child; status is ours.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return Ok(());
            }
            let Some(worker) = self.workers.remove(&pid) else {
                if self.zygote.as_ref().is_some_and(|z| z.pid() == pid) {
                    // Before its first answer (`collect_zygote` looks first, so it said
                    // nothing): a failure like any other, or a zygote that dies at every
                    // start would be started again for ever. Its slot is empty and
                    // `reconcile` fills it.
                    if self.zygote.take().and_then(|mut z| z.abandon()).is_some() {
                        self.zygote_failures += 1;
                    }
                    tracing::warn!(
                        pid,
                        "the zygote exited ({}); the next worker starts a new one",
                        exit_description(status)
                    );
                } else if self.successor == Some(pid) {
                    self.successor = None;
                    tracing::error!(
                        new_master = pid,
                        "the new master exited ({}); this master carries on",
                        exit_description(status)
                    );
                    if let Some(t) = self.winched.take() {
                        self.target = t;
                    }
                    self.rebind_admin();
                }
                continue;
            };
            let slot = worker.slot;
            let ready = self.scoreboard.slot(slot).ready.load(Relaxed) == 1
                && self.scoreboard.slot(slot).pid.load(Relaxed) as i32 == pid;
            let served = self.scoreboard.slot(slot).requests.load(Relaxed);
            // The slot is cleared when the next worker starts in it: keep what this one served.
            self.status.retire(&self.scoreboard, slot);
            if libc::WIFEXITED(status) {
                let code = libc::WEXITSTATUS(status);
                if code == 0 {
                    tracing::info!(pid, slot, requests = served, "worker exited");
                } else {
                    tracing::error!(pid, slot, code, "worker exited with status {code}");
                }
                if code == BOOT_ERROR || (!ready && code != 0) {
                    self.boot_failures += 1;
                }
            } else if libc::WIFSIGNALED(status) {
                let sig = libc::WTERMSIG(status);
                if worker.killed_for_timeout {
                    tracing::error!(pid, slot, "worker killed after --timeout");
                } else if sig == libc::SIGKILL {
                    tracing::error!(
                        pid,
                        slot,
                        "worker was sent SIGKILL! Perhaps out of memory (the OOM killer)?"
                    );
                } else {
                    tracing::error!(pid, slot, "worker killed by signal {}", signal_name(sig));
                }
                if !ready {
                    self.boot_failures += 1;
                }
            }
            if ready {
                self.boot_failures = 0;
            }
            if self.boot_failures >= 2 {
                self.stop(false)?;
                return Err(BootFailed.into());
            }
        }
    }

    /// Kills workers whose heartbeat is older than `--timeout`; `reap` then replaces them.
    fn murder_stuck(&mut self) {
        if self.config.timeout <= 0.0 {
            return;
        }
        let limit_ms = (self.config.timeout * 1000.0) as u64;
        let now = scoreboard::now_ms();
        for (pid, w) in self.workers.iter_mut() {
            if w.killed_for_timeout {
                continue;
            }
            let slot = self.scoreboard.slot(w.slot);
            let beat = slot.heartbeat_ms.load(Relaxed);
            if now.saturating_sub(beat) > limit_ms {
                let booted = slot.ready.load(Relaxed) == 1 && slot.pid.load(Relaxed) as i32 == *pid;
                let running = if booted {
                    format!("running: {}", running_requests(&self.scoreboard, w.slot))
                } else {
                    "still booting: loading the application".to_owned()
                };
                tracing::error!(
                    pid = *pid,
                    slot = w.slot,
                    silent_ms = now.saturating_sub(beat),
                    "WORKER TIMEOUT: no heartbeat within --timeout; killing it ({running})"
                );
                w.killed_for_timeout = true;
                signal(*pid, libc::SIGKILL);
            }
        }
    }

    /// Stops all workers: gracefully (SIGTERM, then SIGKILL after `--graceful-timeout`) or fast
    /// (SIGQUIT, then SIGKILL after a second).
    fn stop(&mut self, graceful: bool) -> anyhow::Result<()> {
        let (sig, grace) = if graceful {
            (
                libc::SIGTERM,
                Duration::from_secs_f64(self.config.graceful_timeout) + Duration::from_millis(500),
            )
        } else {
            (libc::SIGQUIT, Duration::from_secs(1))
        };
        // Close our copies of the listeners: a worker's graceful stop serves what already waits
        // in the queue (see `Shutdown::queue_drain_until`), and once the last worker has closed
        // its copy, new connections are refused instead of waiting in a queue nobody reads.
        self.listening.close();
        self.status.close_admin();
        // The zygote holds copies of the listeners too.
        let zygote = self.stop_zygote();
        for pid in self.workers.keys() {
            signal(*pid, sig);
        }
        let deadline = Instant::now() + grace;
        while !self.workers.is_empty() && Instant::now() < deadline {
            for s in self.signals.wait(Duration::from_millis(100), &[]) {
                if graceful && matches!(s, SIGINT | SIGQUIT) {
                    tracing::info!("{} during the graceful stop: fast stop", signal_name(s));
                    return self.stop(false);
                }
            }
            self.reap_quietly();
        }
        for pid in self.workers.keys() {
            tracing::warn!(pid, "worker did not stop in time; killing it");
            signal(*pid, libc::SIGKILL);
        }
        while !self.workers.is_empty() {
            self.reap_quietly();
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(pid) = zygote {
            // Killed above: it is gone at once (ECHILD if `reap_quietly` collected it).
            let mut status = 0;
            // SAFETY: waits for our own child; status is ours.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
        tracing::info!("all workers stopped");
        Ok(())
    }

    fn reap_quietly(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: as in `reap`.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if let Some(w) = self.workers.remove(&pid) {
                tracing::info!(pid, slot = w.slot, "worker stopped");
            }
        }
    }
}

/// What [`Master::fork_from_zygote`] got for a slot.
enum Forked {
    /// A worker, forked.
    Worker(i32),
    /// Nothing yet: the zygote prepares the runtime, and its first answer fills a slot.
    Later,
    /// Nothing: workers are not forked, or the zygote failed; the caller executes one.
    No,
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
}

/// "status 3", "signal SIGKILL": how a process ended, from `waitpid`'s status.
fn exit_description(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", signal_name(libc::WTERMSIG(status)))
    } else {
        "stopped".into()
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGBUS => "SIGBUS".into(),
        other => format!("signal {other}"),
    }
}

/// What a worker was running, from its processlist rows: `GET /busy?x=1 for 3.2 s`, longest
/// first, at most five and how many more; for the WORKER TIMEOUT line, so the log names the
/// request that hung the worker (gunicorn's names it in the traceback its worker prints).
fn running_requests(sb: &Scoreboard, slot: usize) -> String {
    let now = scoreboard::mono_us();
    let mut running: Vec<(u64, String)> = (0..ENTRIES_PER_SLOT)
        .filter_map(|i| sb.entry(slot, i).snapshot())
        .filter(|e| matches!(e.state, ConnState::Handling | ConnState::Writing))
        .map(|e| {
            let us = now.saturating_sub(e.started_us);
            let what = format!("{} {} for {:.1} s", e.method, e.path, us as f64 / 1e6);
            (us, what)
        })
        .collect();
    if running.is_empty() {
        return "no request listed".into();
    }
    running.sort_by_key(|r| std::cmp::Reverse(r.0));
    let more = running.len().saturating_sub(5);
    let mut text = running
        .into_iter()
        .take(5)
        .map(|(_, what)| what)
        .collect::<Vec<_>>()
        .join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}
