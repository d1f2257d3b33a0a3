//! Status of a running server: what the admin listener (`--admin`) shows and how it is gathered.
//!
//! - [`report`]: the typed model ([`Report`], [`Processlist`]), serde both ways, shared with
//!   `c10k status`;
//! - `metrics`: `/metrics`, the Prometheus text of a report, from one table of families;
//! - `probes`: the Linux probes (accept queues, listen overflows, resident memory);
//! - `admin`: the admin listener's connections, spoken through the project's HTTP codec;
//! - `health`: liveness and readiness (`/livez`, `/readyz`, and `--health-path` on the public
//!   port), read from the scoreboard.
//!
//! This module owns the master's books for status (what exited workers served, the listen
//! queues) and turns the scoreboard into a [`Report`]. The master only tells it what happens
//! (a worker started or exited) and hands it a [`View`] of the workers when it wakes; the
//! supervision itself stays in `master`.

mod admin;
mod health;
mod metrics;
mod probes;
pub(crate) mod redact;
pub mod report;

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use c10k_http::Response;

pub(crate) use admin::Admin;
pub(crate) use health::HealthPath;
pub use report::{Process, Processlist, Report};

use crate::config::{BindAddr, ServeConfig};
use crate::scoreboard::{self, ConnState, Scoreboard, StatsSnapshot};
use report::{Counters, JournalReport, ListenerInfo, ServerInfo, WorkerInfo, WorkerState};

/// What the master shows status at one moment: its workers and settings.
pub(crate) struct View<'a> {
    pub config: &'a ServeConfig,
    pub scoreboard: &'a Scoreboard,
    /// Live workers as (slot, pid), in slot order.
    pub live: Vec<(usize, u32)>,
    /// The number of workers the master is keeping (`--workers`, moved by TTIN/TTOU).
    pub target: usize,
    /// The listeners the master serves now, as (address bound, descriptor), in `--bind` order:
    /// a `SIGHUP` may change them (see `rebind`).
    pub listeners: Vec<(&'a BindAddr, RawFd)>,
}

/// The master's books for status, and its admin listener.
pub(crate) struct Status {
    admin: Option<Admin>,
    started: Instant,
    started_at: u64,
    /// Counters of workers that have exited (each slot resets when a worker starts in it).
    retired: StatsSnapshot,
    retired_requests: u64,
    respawns: u64,
    queues: Vec<ListenerInfo>,
    last_sample: Option<Instant>,
    /// When each listener's full queue was last logged, by address.
    warned: HashMap<String, Instant>,
    overflows_at_start: Option<u64>,
    overflows_seen: Option<u64>,
}

impl Status {
    pub fn new(admin: Option<Admin>) -> Status {
        Status {
            admin,
            started: Instant::now(),
            started_at: scoreboard::now_ms() / 1000,
            retired: StatsSnapshot::default(),
            retired_requests: 0,
            respawns: 0,
            warned: HashMap::new(),
            queues: Vec::new(),
            last_sample: None,
            overflows_at_start: probes::listen_overflows(),
            overflows_seen: None,
        }
    }

    /// A worker started in a slot that had one before.
    pub fn respawned(&mut self) {
        self.respawns += 1;
    }

    /// A worker left `slot`: keep what it served before the next worker clears the slot.
    pub fn retire(&mut self, scoreboard: &Scoreboard, slot: usize) {
        self.retired_requests += scoreboard.slot(slot).requests.load(Relaxed);
        self.retired.add(&scoreboard.stats(slot).snapshot());
    }

    /// Closes the admin listener (the server is stopping).
    pub fn close_admin(&mut self) {
        self.admin = None;
    }

    /// Serves `admin` from now on (after [`Status::close_admin`]).
    pub fn reopen_admin(&mut self, admin: Admin) {
        self.admin = Some(admin);
    }

    /// How long the master may sleep before status needs it again, and the descriptors to wake
    /// it for.
    pub fn wake(&self) -> (Option<Instant>, Vec<libc::pollfd>) {
        let sample = self
            .last_sample
            .map(|t| t + Duration::from_secs(1))
            .unwrap_or_else(Instant::now);
        match &self.admin {
            Some(a) => {
                let next = a.next_deadline().map_or(sample, |d| d.min(sample));
                (Some(next), a.pollfds())
            }
            None => (Some(sample), Vec::new()),
        }
    }

    /// Samples the listen queues about once a second and answers admin requests that are ready.
    pub fn tick(&mut self, view: &View) {
        if self
            .last_sample
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.sample_queues(&view.listeners);
        }
        if let Some(mut admin) = self.admin.take() {
            admin.progress(|req| self.route(&req.path, view));
            self.admin = Some(admin);
        }
    }

    /// Answers one admin request.
    fn route(&mut self, path: &str, view: &View) -> Response {
        match path {
            "/status" => json(&self.report(view)),
            "/processlist" => json(&processlist(view)),
            "/metrics" => Response::with_body(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics::render(&self.report(view)),
            ),
            "/livez" => health::liveness_response(),
            "/readyz" => health::readiness_response(view.scoreboard),
            "/" => Response::text(
                200,
                "c10k admin: /status /processlist /metrics /livez /readyz\n",
            ),
            _ => Response::error(
                404,
                "not found; try /status, /processlist, /metrics, /livez or /readyz",
            ),
        }
    }

    /// Reads every listener's accept queue and warns about full ones (uWSGI's "listen queue of
    /// socket ... full"), at most every 10 s per listener.
    fn sample_queues(&mut self, listeners: &[(&BindAddr, RawFd)]) {
        let now = Instant::now();
        self.last_sample = Some(now);
        let overflows = probes::listen_overflows();
        let new_overflows = match (self.overflows_seen, overflows) {
            (Some(before), Some(after)) => after.saturating_sub(before),
            _ => 0,
        };
        self.overflows_seen = overflows;
        self.queues = listeners
            .iter()
            .map(|&(addr, fd)| {
                let q = match addr {
                    BindAddr::Tcp(_) => probes::listen_queue(fd),
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
        for l in &self.queues {
            let recently = self
                .warned
                .get(&l.address)
                .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(10));
            if l.queue_full && !recently {
                self.warned.insert(l.address.clone(), now);
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

    /// Gathers the report from the scoreboard and the books.
    pub fn report(&mut self, view: &View) -> Report {
        // Queue figures fresh for the asker (and the once-a-second sampling goes on as well).
        self.sample_queues(&view.listeners);
        let sb = view.scoreboard;
        let now_ms = scoreboard::now_ms();
        let mut totals = self.retired;
        let mut requests = self.retired_requests;
        let mut connections = 0u64;
        let mut active_total = 0u64;
        let mut workers = Vec::new();
        let mut stores = Vec::new();
        for &(slot, pid) in &view.live {
            stores.extend(sb.store(slot).snapshot());
            let s = sb.slot(slot);
            let stats = sb.stats(slot).snapshot();
            totals.add(&stats);
            let served = s.requests.load(Relaxed);
            requests += served;
            let conns = s.connections.load(Relaxed);
            connections += u64::from(conns);
            let active = sb
                .entries(slot)
                .iter()
                .filter(|(_, e)| matches!(e.state, ConnState::Handling | ConnState::Writing))
                .count();
            active_total += active as u64;
            let started = s.started_ms.load(Relaxed);
            workers.push(WorkerInfo {
                slot,
                pid,
                respawns: s.generation.load(Relaxed).saturating_sub(1),
                started_at: started / 1000,
                uptime_seconds: now_ms.saturating_sub(started) as f64 / 1000.0,
                ready: s.ready.load(Relaxed) == 1,
                state: if active > 0 || s.busy.load(Relaxed) > 0 {
                    WorkerState::Busy
                } else {
                    WorkerState::Idle
                },
                requests: served,
                requests_active: active,
                connections: conns,
                bytes_in: stats.bytes_in,
                bytes_out: stats.bytes_out,
                rss_bytes: probes::rss_bytes(pid),
                heartbeat_age_ms: now_ms.saturating_sub(s.heartbeat_ms.load(Relaxed)),
            });
        }
        let refused = match (self.overflows_at_start, self.overflows_seen) {
            (Some(start), Some(now)) => Some(now.saturating_sub(start)),
            _ => None,
        };
        let (pool, journal) = match JournalReport::from_stores(&stores) {
            Some((p, j)) => (Some(p), Some(j)),
            None => (None, None),
        };
        let counters = Counters {
            pool_size: pool.as_ref().map(|p| p.size),
            pool_idle: pool.as_ref().map(|p| p.idle),
            journal_appended: journal.as_ref().map(|j| j.appended),
            journal_unflushed: journal.as_ref().map(|j| j.unflushed),
            journal_flushed: journal.as_ref().map(|j| j.flushed),
            journal_flushes: journal.as_ref().map(|j| j.flushes),
            journal_db_errors: journal.as_ref().map(|j| j.db_errors),
            uptime_seconds: self.started.elapsed().as_secs(),
            workers_running: workers.len(),
            worker_respawns: self.respawns,
            connections_accepted: totals.accepted,
            connections_active: connections,
            connections_refused: refused,
            connections_unlisted: totals.unlisted,
            uwsgi_refused: totals.uwsgi_refused,
            listen_queue: self
                .queues
                .iter()
                .filter_map(|l| l.queue)
                .map(u64::from)
                .sum(),
            listen_queue_max: self
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
        let c = view.config;
        Report {
            server: ServerInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                pid: std::process::id(),
                started_at: self.started_at,
                uptime_seconds: self.started.elapsed().as_secs_f64(),
                worker_class: c.worker_class,
                workers: view.target,
                threads: c.threads,
                worker_connections: c.worker_connections,
                backlog: c.backlog,
                request_tracking: !c.no_request_tracking,
            },
            listeners: self.queues.clone(),
            workers,
            counters,
            totals,
            pool,
            journal,
        }
    }
}

/// Every listed connection of the live workers.
fn processlist(view: &View) -> Processlist {
    let now = scoreboard::mono_us();
    let mut list = Vec::new();
    for &(slot, pid) in &view.live {
        for (i, e) in view.scoreboard.entries(slot) {
            list.push(Process::new(slot, pid, i, &e, now));
        }
    }
    Processlist { processlist: list }
}

fn json(value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            Response::with_body(200, "application/json", body)
        }
        Err(e) => Response::error(500, format!("cannot render JSON: {e}")),
    }
}
