//! The typed model of everything the admin listener shows: [`Report`] (`GET /status`) and
//! [`Processlist`] (`GET /processlist`).
//!
//! The types derive serde both ways: the master serialises them and `c10k status` deserialises
//! the same structs, so a field renamed or added on one side is a compile error on the other, not
//! a silent `null`. `crates/serve/schema/status.schema.json` describes the JSON for other
//! clients, and the tests validate every answer against it.

use serde::{Deserialize, Serialize};

use crate::config::WorkerClass;
use crate::scoreboard::{
    ConnState, EntrySnapshot, StatsSnapshot, WritePathFigures, ENTRIES_PER_SLOT,
};

/// Everything `/status` shows, gathered by the master at one moment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub server: ServerInfo,
    pub listeners: Vec<ListenerInfo>,
    pub workers: Vec<WorkerInfo>,
    pub counters: Counters,
    /// Request durations, for `/metrics` (the JSON carries the counters only).
    #[serde(skip)]
    pub totals: StatsSnapshot,
    /// The write path's database pools; `null` when the workers have no write path.
    pub pool: Option<PoolReport>,
    /// The write path's journals and flushers; `null` when the workers have no write path.
    pub journal: Option<JournalReport>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerInfo {
    pub version: String,
    pub pid: u32,
    /// Unix seconds.
    pub started_at: u64,
    pub uptime_seconds: f64,
    pub worker_class: WorkerClass,
    pub workers: usize,
    pub threads: usize,
    pub worker_connections: usize,
    pub backlog: u32,
    /// False with `--no-request-tracking`: no processlist, status classes, bytes or durations.
    pub request_tracking: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListenerInfo {
    pub address: String,
    /// Connections waiting in the accept queue (TCP only: `tcpi_unacked` of the listener).
    pub queue: Option<u32>,
    /// The accept queue's length limit, after the kernel's somaxconn cap (`tcpi_sacked`).
    pub queue_max: Option<u32>,
    pub queue_full: bool,
}

/// Whether a worker is running a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    Busy,
    Idle,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub slot: usize,
    pub pid: u32,
    /// Workers that have run in this slot before this one (respawns).
    pub respawns: u32,
    pub started_at: u64,
    pub uptime_seconds: f64,
    pub ready: bool,
    /// `busy` while it runs a request, else `idle`.
    pub state: WorkerState,
    pub requests: u64,
    pub requests_active: usize,
    pub connections: u32,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub rss_bytes: Option<u64>,
    pub heartbeat_age_ms: u64,
}

/// `SHOW STATUS`: flat, so `c10k status counters --like` can filter by name.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counters {
    pub uptime_seconds: u64,
    pub workers_running: usize,
    pub worker_respawns: u64,
    pub connections_accepted: u64,
    pub connections_active: u64,
    /// Connections the kernel dropped because a listen queue was full, since start
    /// (`TcpExt: ListenOverflows`; it counts the whole network namespace).
    pub connections_refused: Option<u64>,
    /// Connections served but not in the processlist (the entry table was full).
    pub connections_unlisted: u64,
    /// uwsgi connections closed unanswered (malformed packet, or peer not allowed).
    #[serde(default)]
    pub uwsgi_refused: u64,
    pub listen_queue: u64,
    pub listen_queue_max: u64,
    pub requests: u64,
    pub requests_active: u64,
    pub requests_1xx: u64,
    pub requests_2xx: u64,
    pub requests_3xx: u64,
    pub requests_4xx: u64,
    pub requests_5xx: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub request_seconds_total: f64,
    /// Write path, summed over workers; `null` without one.
    pub pool_size: Option<u64>,
    pub pool_idle: Option<u64>,
    pub journal_appended: Option<u64>,
    /// Rows written to the journal and not yet flushed to the database.
    pub journal_unflushed: Option<u64>,
    pub journal_flushed: Option<u64>,
    pub journal_flushes: Option<u64>,
    pub journal_db_errors: Option<u64>,
}

/// Pool figures, summed over workers (each worker has its own pool).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PoolReport {
    pub size: u64,
    pub idle: u64,
    pub max: u64,
    pub workers: usize,
}

/// Journal and flusher figures, summed over workers (each has its own journal).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JournalReport {
    pub appended: u64,
    pub unflushed: u64,
    pub flushed: u64,
    pub flushes: u64,
    pub fsyncs: u64,
    pub groups: u64,
    pub segments_deleted: u64,
    pub db_errors: u64,
    /// Every worker's last database attempt succeeded.
    pub db_up: bool,
    /// Damaged ranges the workers found inside their journal segments at start-up (skipped; the
    /// records after them were replayed), and the records lost in them.
    #[serde(default)]
    pub damaged: u64,
    #[serde(default)]
    pub records_lost: u64,
}

impl JournalReport {
    /// Pool and journal figures summed over the workers that have a write path.
    pub fn from_stores(stores: &[WritePathFigures]) -> Option<(PoolReport, JournalReport)> {
        if stores.is_empty() {
            return None;
        }
        let sum = |f: fn(&WritePathFigures) -> u64| stores.iter().map(f).sum::<u64>();
        Some((
            PoolReport {
                size: sum(|s| s.pool_size),
                idle: sum(|s| s.pool_idle),
                max: sum(|s| s.pool_max),
                workers: stores.len(),
            },
            JournalReport {
                appended: sum(|s| s.appended),
                unflushed: sum(|s| s.backlog),
                flushed: sum(|s| s.flushed),
                flushes: sum(|s| s.batches),
                fsyncs: sum(|s| s.fsyncs),
                groups: sum(|s| s.groups),
                segments_deleted: sum(|s| s.segments_deleted),
                db_errors: sum(|s| s.db_errors),
                db_up: stores.iter().all(|s| s.db_up),
                damaged: sum(|s| s.journal_damaged),
                records_lost: sum(|s| s.journal_records_lost),
            },
        ))
    }
}

/// `GET /processlist`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Processlist {
    pub processlist: Vec<Process>,
}

/// One row of the processlist.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Process {
    /// Worker slot × entries-per-slot + entry: stable while the connection lives.
    pub id: usize,
    pub worker: usize,
    pub pid: u32,
    pub client: String,
    pub state: ConnState,
    /// Seconds in this request (handling, writing) or in this state (reading, keep-alive).
    pub time: f64,
    pub method: Option<String>,
    pub path: Option<String>,
    /// Requests begun on this connection.
    pub requests: u64,
}

impl Process {
    pub(crate) fn new(
        slot: usize,
        pid: u32,
        index: usize,
        e: &EntrySnapshot,
        now_us: u64,
    ) -> Process {
        let in_request = matches!(e.state, ConnState::Handling | ConnState::Writing);
        let from = if in_request { e.started_us } else { e.since_us };
        let show = in_request || (e.requests > 0 && e.state != ConnState::Reading);
        Process {
            id: slot * ENTRIES_PER_SLOT + index,
            worker: slot,
            pid,
            client: e
                .client
                .map(|c| c.to_string())
                .unwrap_or_else(|| "unix".into()),
            state: e.state,
            time: now_us.saturating_sub(from) as f64 / 1e6,
            method: show.then(|| e.method.clone()),
            path: show.then(|| e.path.clone()),
            requests: e.requests,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_state_serialises_as_the_scoreboard_names_it() {
        for s in [
            ConnState::Reading,
            ConnState::Handling,
            ConnState::Writing,
            ConnState::KeepAlive,
        ] {
            let json = serde_json::to_value(s).unwrap();
            assert_eq!(json, s.as_str());
            assert_eq!(serde_json::from_value::<ConnState>(json).unwrap(), s);
        }
    }

    /// The committed schema names every worker class (`gevent` was missing: every `/status` of a
    /// gevent server failed validation).
    #[test]
    fn schema_lists_every_worker_class() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../schema/status.schema.json")).unwrap();
        let listed = schema
            .pointer("/$defs/status/properties/server/properties/worker_class/enum")
            .and_then(|v| v.as_array())
            .expect("server.worker_class enum in the schema");
        for class in WorkerClass::ALL {
            let name = serde_json::to_value(class).unwrap();
            assert!(listed.contains(&name), "{name} missing from {listed:?}");
        }
    }
}
