//! Builds the built-in application inside a worker process.
//!
//! This runs in each worker process after it starts (never in the master), because what the
//! application owns — later a journal and a database pool with their own threads — must not
//! cross a process boundary. `slot` is the worker's stable index (0..workers): a replacement
//! worker gets the slot of the one it replaces, so per-worker state on disk is picked up again.

use std::time::Duration;

use c10k_app::{App, AppConfig};

use crate::config::ServeConfig;

pub(crate) fn build_app(config: &ServeConfig, slot: usize) -> anyhow::Result<App> {
    let _ = slot;
    Ok(App::new(AppConfig {
        max_delay: Duration::from_secs_f64(config.max_delay),
        ..AppConfig::default()
    }))
}
