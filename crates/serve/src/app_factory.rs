//! Builds the built-in application inside a worker process.
//!
//! This runs in each worker process after it starts (never in the master), because what the
//! application owns — a journal and a database pool with their own threads — must not cross a
//! process boundary. `slot` is the worker's stable index (0..workers): a replacement worker gets
//! the slot of the one it replaces, so it reopens that slot's journal (`<data-dir>/journal-<slot>`)
//! and replays what its predecessor had not flushed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use c10k_app::{App, AppConfig};
use c10k_store::Store;

use crate::config::ServeConfig;

pub(crate) fn build_app(config: &ServeConfig, slot: usize) -> anyhow::Result<App> {
    let app_config = AppConfig {
        max_delay: Duration::from_secs_f64(config.max_delay),
        ..AppConfig::default()
    };
    let store = Store::open(&config.store, slot).with_context(|| {
        format!(
            "opening the write path (worker {slot}, database {})",
            config.store.database_url_redacted()
        )
    })?;
    Ok(App::with_store(app_config, Arc::new(store)))
}
