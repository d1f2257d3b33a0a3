//! The master process, after gunicorn's arbiter.
//!
//! Signal handlers only record the signal and wake the loop through a pipe; one single-threaded
//! loop waits at most a second, acts on recorded signals, reaps dead workers, kills workers whose
//! heartbeat stopped, and reconciles the number of workers with the target.
//!
//! Workers are started by re-executing this binary with the listening sockets at descriptors
//! 3.. (the `LISTEN_FDS` convention) and the scoreboard after them, so no worker inherits a
//! half-initialised runtime from a `fork` of a threaded process; the master never starts a thread
//! or a runtime of its own.
//!
//! The same loop serves the admin listener (`admin`): its descriptors join the poll, every step
//! on them is non-blocking, and the listen queues are sampled about once a second.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU};

use crate::admin::{self, Admin, Answer, ListenerInfo, Report};
use crate::config::{BindAddr, ServeConfig};
use crate::listener::Listener;
use crate::scoreboard::{self, Scoreboard, StatsSnapshot, MAX_SLOTS};
use crate::sys::move_fd_high;

/// Exit status of a worker whose application could not be built (gunicorn's WORKER_BOOT_ERROR).
pub const BOOT_ERROR: i32 = 3;

/// Environment a worker process finds its inheritance in.
pub(crate) const ENV_SLOT: &str = "C10K_WORKER_SLOT";
pub(crate) const ENV_CONFIG: &str = "C10K_WORKER_CONFIG";
pub(crate) const ENV_SCOREBOARD_FD: &str = "C10K_SCOREBOARD_FD";
pub(crate) const ENV_LISTEN_FDS: &str = "LISTEN_FDS";
const FIRST_FD: RawFd = 3;

#[derive(Debug)]
struct Worker {
    slot: usize,
    started: Instant,
    /// Told to finish and exit (rolling restart, TTOU); not respawned if beyond the target.
    retiring: bool,
    killed_for_timeout: bool,
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
        for sig in [SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGCHLD] {
            let flag = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(sig, flag.clone())
                .with_context(|| format!("cannot install a handler for signal {sig}"))?;
            signal_hook::low_level::pipe::register(sig, write.try_clone()?)
                .with_context(|| format!("cannot install a wake-up for signal {sig}"))?;
            flags.push((sig, flag));
        }
        Ok(Signals { flags, wake: read })
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
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
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
    /// Listening descriptors, moved above the range workers receive them in.
    listen_fds: Vec<OwnedFd>,
    scoreboard: Scoreboard,
    workers: HashMap<i32, Worker>,
    target: usize,
    boot_failures: u32,
    /// Slots still to restart in a rolling restart (SIGHUP), in order.
    rolling: Vec<usize>,
    /// When the current rolling restart began: workers started before it are replaced.
    rolling_since: Option<Instant>,
    signals: Signals,
    admin: Option<Admin>,
    /// What `/status` needs beyond the scoreboard.
    books: Books,
}

/// The master's own figures for status: what exited workers served, and the listen queues.
struct Books {
    started: Instant,
    started_at: u64,
    /// Counters of workers that have exited (each slot resets when a worker starts in it).
    retired: StatsSnapshot,
    retired_requests: u64,
    respawns: u64,
    /// Address of each listener, beside `listen_fds`.
    addrs: Vec<BindAddr>,
    queues: Vec<ListenerInfo>,
    last_sample: Option<Instant>,
    /// When each listener's full queue was last logged.
    warned: Vec<Option<Instant>>,
    overflows_at_start: Option<u64>,
    overflows_seen: Option<u64>,
}

impl Master {
    pub fn new(
        config: ServeConfig,
        listeners: Vec<Listener>,
        admin: Option<Admin>,
    ) -> anyhow::Result<Master> {
        if config.workers > MAX_SLOTS {
            anyhow::bail!(
                "--workers {} is above the maximum of {MAX_SLOTS}",
                config.workers
            );
        }
        let mut listen_fds = Vec::new();
        let mut addrs = Vec::new();
        for l in listeners {
            addrs.push(l.local_addr().context("cannot read a listener's address")?);
            listen_fds.push(move_fd_high(l.into_fd()).context("cannot move a listener")?);
        }
        let scoreboard = Scoreboard::create().context("cannot create the scoreboard")?;
        let signals = Signals::install()?;
        Ok(Master {
            target: config.workers,
            config,
            listen_fds,
            scoreboard,
            workers: HashMap::new(),
            boot_failures: 0,
            rolling: Vec::new(),
            rolling_since: None,
            signals,
            admin,
            books: Books {
                started: Instant::now(),
                started_at: scoreboard::now_ms() / 1000,
                retired: StatsSnapshot::default(),
                retired_requests: 0,
                respawns: 0,
                warned: vec![None; addrs.len()],
                queues: Vec::new(),
                addrs,
                last_sample: None,
                overflows_at_start: admin::listen_overflows(),
                overflows_seen: None,
            },
        })
    }

    /// Runs until stopped. Returns an error when workers cannot boot.
    pub fn run(mut self) -> anyhow::Result<()> {
        tracing::info!(pid = std::process::id(), "master started");
        self.reconcile()?;
        loop {
            let mut timeout = Duration::from_secs(1);
            let extra = match &self.admin {
                Some(a) => {
                    if let Some(d) = a.next_deadline() {
                        timeout = timeout.min(d.saturating_duration_since(Instant::now()));
                    }
                    a.pollfds()
                }
                None => Vec::new(),
            };
            let signals = self.signals.wait(timeout, &extra);
            self.reap()?;
            for sig in signals {
                match sig {
                    SIGTERM | SIGINT => {
                        tracing::info!("signal {}: graceful stop", signal_name(sig));
                        return self.stop(true);
                    }
                    SIGQUIT => {
                        tracing::info!("SIGQUIT: fast stop");
                        return self.stop(false);
                    }
                    SIGHUP => {
                        tracing::info!("SIGHUP: rolling restart of all workers");
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
                    SIGTTIN => {
                        if self.target < MAX_SLOTS {
                            self.target += 1;
                        }
                        tracing::info!(workers = self.target, "SIGTTIN: one more worker");
                    }
                    SIGTTOU => {
                        if self.target > 1 {
                            self.target -= 1;
                        }
                        tracing::info!(workers = self.target, "SIGTTOU: one fewer worker");
                    }
                    _ => {}
                }
            }
            self.murder_stuck();
            self.advance_rolling();
            self.reconcile()?;
            if self
                .books
                .last_sample
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            {
                self.sample_queues();
            }
            if let Some(mut admin) = self.admin.take() {
                admin.progress(|method, path| self.route(method, path));
                self.admin = Some(admin);
            }
        }
    }

    /// Answers one admin request.
    fn route(&mut self, _method: &str, path: &str) -> Answer {
        match path {
            "/status" => admin::json(&self.report()),
            "/processlist" => {
                let list = self.processlist();
                admin::json(&serde_json::json!({ "processlist": list }))
            }
            "/metrics" => Answer {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: admin::metrics(&self.report()).into_bytes(),
            },
            "/" => admin::text(200, "c10k admin: /status /processlist /metrics\n"),
            _ => admin::text(404, "not found; try /status, /processlist or /metrics\n"),
        }
    }

    /// Reads every listener's accept queue and warns about full ones (uWSGI's "listen queue of
    /// socket ... full"), at most every 10 s per listener.
    fn sample_queues(&mut self) {
        let b = &mut self.books;
        let now = Instant::now();
        b.last_sample = Some(now);
        let overflows = admin::listen_overflows();
        let new_overflows = match (b.overflows_seen, overflows) {
            (Some(before), Some(after)) => after.saturating_sub(before),
            _ => 0,
        };
        b.overflows_seen = overflows;
        b.queues = b
            .addrs
            .iter()
            .zip(&self.listen_fds)
            .map(|(addr, fd)| {
                let q = match addr {
                    BindAddr::Tcp(_) => admin::listen_queue(fd.as_raw_fd()),
                    BindAddr::Unix(_) => None,
                };
                ListenerInfo {
                    address: addr.to_string(),
                    queue: q.map(|q| q.0),
                    queue_max: q.map(|q| q.1),
                    queue_full: q.is_some_and(|(n, max)| n >= max),
                }
            })
            .collect();
        for (i, l) in b.queues.iter().enumerate() {
            let recently =
                b.warned[i].is_some_and(|t| now.duration_since(t) < Duration::from_secs(10));
            if l.queue_full && !recently {
                b.warned[i] = Some(now);
                tracing::warn!(
                    listener = %l.address,
                    queue = l.queue.unwrap_or(0),
                    queue_max = l.queue_max.unwrap_or(0),
                    listen_overflows = new_overflows,
                    "listen queue of socket {} full ({}/{}): new connections wait for a SYN \
                     retry or are dropped; add workers or raise --backlog (and \
                     net.core.somaxconn)",
                    l.address,
                    l.queue.unwrap_or(0),
                    l.queue_max.unwrap_or(0),
                );
            }
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

    fn processlist(&self) -> Vec<admin::Process> {
        let now = scoreboard::mono_us();
        let mut list = Vec::new();
        for (slot, pid) in self.live() {
            for (i, e) in self.scoreboard.entries(slot) {
                list.push(admin::Process::new(slot, pid, i, &e, now));
            }
        }
        list
    }

    fn report(&mut self) -> Report {
        // Queue figures fresh for the asker (and the once-a-second sampling goes on as well).
        self.sample_queues();
        let now_ms = scoreboard::now_ms();
        let b = &self.books;
        let mut totals = b.retired;
        let mut requests = b.retired_requests;
        let mut connections = 0u64;
        let mut active_total = 0u64;
        let mut workers = Vec::new();
        let mut stores = Vec::new();
        for (slot, pid) in self.live() {
            stores.extend(self.scoreboard.store(slot).snapshot());
            let s = self.scoreboard.slot(slot);
            let stats = self.scoreboard.stats(slot).snapshot();
            totals.add(&stats);
            let served = s.requests.load(Relaxed);
            requests += served;
            let conns = s.connections.load(Relaxed);
            connections += u64::from(conns);
            let active = self
                .scoreboard
                .entries(slot)
                .iter()
                .filter(|(_, e)| {
                    matches!(
                        e.state,
                        scoreboard::ConnState::Handling | scoreboard::ConnState::Writing
                    )
                })
                .count();
            active_total += active as u64;
            let started = s.started_ms.load(Relaxed);
            workers.push(admin::WorkerInfo {
                slot,
                pid,
                respawns: s.generation.load(Relaxed).saturating_sub(1),
                started_at: started / 1000,
                uptime_seconds: now_ms.saturating_sub(started) as f64 / 1000.0,
                ready: s.ready.load(Relaxed) == 1,
                state: if active > 0 || s.busy.load(Relaxed) > 0 {
                    "busy"
                } else {
                    "idle"
                },
                requests: served,
                requests_active: active,
                connections: conns,
                bytes_in: stats.bytes_in,
                bytes_out: stats.bytes_out,
                rss_bytes: admin::rss_bytes(pid),
                heartbeat_age_ms: now_ms.saturating_sub(s.heartbeat_ms.load(Relaxed)),
            });
        }
        let refused = match (b.overflows_at_start, b.overflows_seen) {
            (Some(start), Some(now)) => Some(now.saturating_sub(start)),
            _ => None,
        };
        let (pool, journal) = match admin::JournalReport::from_stores(&stores) {
            Some((p, j)) => (Some(p), Some(j)),
            None => (None, None),
        };
        let counters = admin::Counters {
            pool_size: pool.as_ref().map(|p| p.size),
            pool_idle: pool.as_ref().map(|p| p.idle),
            journal_appended: journal.as_ref().map(|j| j.appended),
            journal_unflushed: journal.as_ref().map(|j| j.unflushed),
            journal_flushed: journal.as_ref().map(|j| j.flushed),
            journal_flushes: journal.as_ref().map(|j| j.flushes),
            journal_db_errors: journal.as_ref().map(|j| j.db_errors),
            uptime_seconds: b.started.elapsed().as_secs(),
            workers_running: workers.len(),
            worker_respawns: b.respawns,
            connections_accepted: totals.accepted,
            connections_active: connections,
            connections_refused: refused,
            connections_unlisted: totals.unlisted,
            listen_queue: b.queues.iter().filter_map(|l| l.queue).map(u64::from).sum(),
            listen_queue_max: b
                .queues
                .iter()
                .filter_map(|l| l.queue_max)
                .map(u64::from)
                .sum(),
            requests,
            requests_active: active_total,
            requests_1xx: totals.status[0],
            requests_2xx: totals.status[1],
            requests_3xx: totals.status[2],
            requests_4xx: totals.status[3],
            requests_5xx: totals.status[4],
            bytes_in: totals.bytes_in,
            bytes_out: totals.bytes_out,
            request_seconds_total: totals.duration_us as f64 / 1e6,
        };
        Report {
            server: admin::ServerInfo {
                version: env!("CARGO_PKG_VERSION"),
                pid: std::process::id(),
                started_at: b.started_at,
                uptime_seconds: b.started.elapsed().as_secs_f64(),
                worker_class: self.config.worker_class.to_string(),
                workers: self.target,
                threads: self.config.threads,
                worker_connections: self.config.worker_connections,
                backlog: self.config.backlog,
                request_tracking: !self.config.no_request_tracking,
            },
            listeners: b.queues.clone(),
            workers,
            counters,
            totals,
            pool,
            journal,
        }
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

    /// Whether `pid` was running when the current rolling restart began.
    fn is_original(&self, pid: i32) -> bool {
        let since = self.rolling_since;
        self.workers
            .get(&pid)
            .is_some_and(|w| !w.retiring && since.is_some_and(|t| w.started < t))
    }

    fn spawn(&mut self, slot: usize) -> anyhow::Result<()> {
        let exe =
            std::env::current_exe().context("cannot find this executable to start a worker")?;
        let n = self.listen_fds.len();
        let sources: Vec<RawFd> = self.listen_fds.iter().map(|f| f.as_raw_fd()).collect();
        let scoreboard_fd = self.scoreboard.as_raw_fd();
        let mut cmd = Command::new(exe);
        // The worker runs the binary's own `main` again with the master's arguments, so the
        // application's settings reach it as they reached the master (see `crate::run`).
        cmd.args(std::env::args_os().skip(1))
            .env(ENV_SLOT, slot.to_string())
            .env(ENV_CONFIG, self.config.to_toml())
            .env(ENV_LISTEN_FDS, n.to_string())
            .env(ENV_SCOREBOARD_FD, (FIRST_FD + n as RawFd).to_string());
        // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
        // functions (dup2, prctl) on descriptors that are open in the child.
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
                // If the master dies, its workers stop gracefully instead of living on.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().context("cannot start a worker process")?;
        let pid = child.id() as i32;
        // The child is reaped with waitpid in `reap`; the handle itself is not needed.
        drop(child);
        if self.scoreboard.slot(slot).generation.load(Relaxed) > 0 {
            self.books.respawns += 1;
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
            },
        );
        Ok(())
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
                continue;
            };
            let slot = worker.slot;
            let ready = self.scoreboard.slot(slot).ready.load(Relaxed) == 1
                && self.scoreboard.slot(slot).pid.load(Relaxed) as i32 == pid;
            let served = self.scoreboard.slot(slot).requests.load(Relaxed);
            // The slot is cleared when the next worker starts in it: keep what this one served.
            self.books.retired_requests += served;
            self.books
                .retired
                .add(&self.scoreboard.stats(slot).snapshot());
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
                anyhow::bail!(
                    "worker failed to boot twice in a row; stopping (see the worker's error above)"
                );
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
                tracing::error!(
                    pid = *pid,
                    slot = w.slot,
                    silent_ms = now.saturating_sub(beat),
                    "WORKER TIMEOUT: no heartbeat within --timeout; killing it"
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
        // Close our copies of the listeners: once workers stop accepting, new connections are
        // refused instead of waiting in a queue nobody reads.
        self.listen_fds.clear();
        self.admin = None;
        for pid in self.workers.keys() {
            signal(*pid, sig);
        }
        let deadline = Instant::now() + grace;
        while !self.workers.is_empty() && Instant::now() < deadline {
            for s in self.signals.wait(Duration::from_millis(100), &[]) {
                if graceful && matches!(s, SIGINT | SIGQUIT | SIGTERM) && s != libc::SIGTERM {
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

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
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
