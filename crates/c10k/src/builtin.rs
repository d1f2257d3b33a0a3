//! The built-in application as `c10k serve` runs it: its settings (flags, `C10K_*` variables and
//! config-file keys, beside the server's) and the factory each worker process calls.
//!
//! The settings are parsed in the master and, identically, in every worker: a worker is this
//! binary started again with the master's arguments and environment (see `c10k_serve::run`), so
//! nothing has to be passed to it by hand.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use c10k_app::{App, AppConfig};
use c10k_serve::{Hosted, WorkerInfo, WritePathFigures};
use c10k_store::{StoreConfig, StoreStats};
use clap::Args;
use serde::{Deserialize, Serialize};

fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?} must be a number of seconds ≥ 0"));
    }
    Ok(v)
}

/// Settings of the built-in application.
#[derive(Clone, Debug, Args, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct AppArgs {
    /// Longest ?delay= the built-in application accepts, in seconds (400 above it).
    #[arg(allow_negative_numbers = true, long, env = "C10K_MAX_DELAY", default_value_t = 60.0, value_parser = seconds,
          help_heading = "Application")]
    pub max_delay: f64,

    /// The write path (`/messages`, `/ids`): data dir, database, journal and flusher settings.
    /// Opened on the first request that needs it, or at start when --data-dir or --database is
    /// given.
    #[command(flatten)]
    #[serde(flatten)]
    pub store: StoreConfig,

    /// Whether --data-dir or --database was chosen (command line, environment or file): then
    /// the write path opens when a worker starts, so a bad one stops the start.
    #[arg(skip)]
    #[serde(skip)]
    pub store_chosen: bool,
}

impl Default for AppArgs {
    fn default() -> AppArgs {
        AppArgs {
            max_delay: 60.0,
            store: StoreConfig::default(),
            store_chosen: false,
        }
    }
}

impl AppArgs {
    pub fn validate(&self) -> Result<(), String> {
        if !self.max_delay.is_finite() || self.max_delay < 0.0 {
            return Err("--max-delay: must be a number of seconds ≥ 0".into());
        }
        self.store.validate().map_err(|e| e.to_string())
    }

    /// The settings as TOML (for `--check-config`), the database password hidden when
    /// `redact`.
    pub fn to_toml(&self, redact: bool) -> String {
        let mut shown = self.clone();
        if redact {
            shown.store.database = shown.store.database.map(|u| c10k_store::config::redact(&u));
        }
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    fn app_config(&self) -> AppConfig {
        AppConfig {
            max_delay: Duration::from_secs_f64(self.max_delay),
            store: Some(self.store.clone()),
            open_store_at_boot: self.store_chosen,
            ..AppConfig::default()
        }
    }
}

/// Refuses to start a second server on a `--data-dir` another one uses, naming it, before
/// anything is bound: its workers would otherwise find every journal locked. Creates nothing.
///
/// A master started by a `SIGUSR2` upgrade is refused even when no journal is open yet (no
/// `--data-dir` or `--database` chosen, and no `/messages` or `/ids` request so far): both
/// masters' workers would serve, and whichever worker of a slot opened its journal first would
/// keep it, every write reaching the other one a 503 until the old master stopped.
pub fn refuse_a_data_dir_in_use(args: &AppArgs) -> anyhow::Result<()> {
    let dir = &args.store.data_dir;
    let holder = c10k_store::journal::data_dir_holder(dir);
    if c10k_serve::started_by_upgrade() {
        let state = match holder {
            Some((pid, parent)) => {
                format!("is in use by the old master's worker (pid {pid}, started by pid {parent})")
            }
            None => "would be opened by the old master's workers at their first /messages or \
                     /ids request"
                .to_owned(),
        };
        anyhow::bail!(
            "--data-dir {} {state}: the built-in application keeps a journal per worker, so a \
             SIGUSR2 upgrade cannot run beside the old master; restart the server instead",
            dir.display()
        );
    }
    match holder {
        Some((pid, parent)) => anyhow::bail!(
            "--data-dir {} is in use by another c10k server: pid {pid} (started by pid {parent}) \
             holds its journal; stop that server or choose another --data-dir",
            dir.display()
        ),
        None => Ok(()),
    }
}

/// Builds the built-in application in a worker process (never in the master: the journal and
/// database pool it may open have threads of their own). A replacement worker gets the slot of
/// the one it replaces, so it reopens that slot's journal and replays what was not flushed.
///
/// `worker_timeout` is `--timeout` (0: none): a `sync` worker blocked in a request beats no heart,
/// so the master kills it at `--timeout`; the accepted `?delay=` range is kept under it there, so
/// the app never accepts a request the server will cut (a 400 with the limit instead).
pub fn factory(
    args: &AppArgs,
    info: &WorkerInfo,
    worker_timeout: f64,
) -> anyhow::Result<Hosted<App>> {
    let mut config = args.app_config();
    if let Some(cap) = sync_delay_cap(info.class, args.max_delay, worker_timeout) {
        if info.slot == 0 {
            tracing::warn!(
                "--max-delay {} s lowered to {cap} s under the sync class: a sync worker busy for \
                 --timeout ({worker_timeout} s) is killed by the master",
                args.max_delay
            );
        }
        config.max_delay = Duration::from_secs_f64(cap);
    }
    let app = App::boot(config, info.slot).with_context(|| {
        format!(
            "opening the write path (worker {}, database {})",
            info.slot,
            args.store.database_url_redacted()
        )
    })?;
    let app = Arc::new(app);
    let figures = Arc::downgrade(&app);
    let max_lag = args.store.max_lag;
    Ok(Hosted::new(app).with_figures(move || {
        let app = figures.upgrade()?;
        app.store_stats().map(|s| write_path_figures(&s, max_lag))
    }))
}

/// The longest `?delay=` a `sync` worker may accept under `--timeout`: one second under it (so
/// the heartbeat after the request lands in time), or `None` when `--max-delay` is already below.
fn sync_delay_cap(class: &str, max_delay: f64, worker_timeout: f64) -> Option<f64> {
    if class != "sync" || worker_timeout <= 0.0 {
        return None;
    }
    let cap = (worker_timeout - 1.0).max(0.0);
    (max_delay > cap).then_some(cap)
}

fn write_path_figures(s: &StoreStats, max_lag: u64) -> WritePathFigures {
    WritePathFigures {
        appended: s.appended,
        fsyncs: s.fsyncs,
        groups: s.groups,
        flushed: s.flushed,
        batches: s.batches,
        db_errors: s.db_errors,
        db_up: s.db_up,
        backlog: s.backlog as u64,
        segments_deleted: s.segments_deleted,
        pool_size: u64::from(s.pool.size),
        pool_idle: s.pool.idle as u64,
        pool_max: u64::from(s.pool.max),
        max_backlog: max_lag,
        journal_damaged: s.journal_damaged,
        journal_records_lost: s.journal_records_lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_keeps_delays_under_the_worker_timeout() {
        assert_eq!(sync_delay_cap("sync", 60.0, 30.0), Some(29.0));
        assert_eq!(sync_delay_cap("sync", 10.0, 30.0), None);
        assert_eq!(sync_delay_cap("sync", 60.0, 0.0), None);
        assert_eq!(sync_delay_cap("gthread", 60.0, 30.0), None);
        assert_eq!(sync_delay_cap("async", 60.0, 30.0), None);
    }
}
