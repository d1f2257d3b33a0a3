//! The flusher: moves durable journal rows into the database in batches.
//!
//! It runs as a task on the store's own tokio runtime (worker processes of the blocking classes
//! have none). It wakes when the writer has a full batch or when `--flush-interval` passes, writes
//! at most `--flush-batch` rows in one idempotent statement, and only after the database commits
//! does it drop them from memory, advance the checkpoint and delete finished segments. A failed
//! batch is retried with exponential backoff (50 ms doubling to 5 s) while writes keep being
//! acknowledged from the journal; the `--max-lag` admission check is what bounds the backlog.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::db::Db;
use crate::journal::{self, Shared};
use crate::record::Message;

/// Counters the flusher keeps, for `c10k status`.
#[derive(Debug, Default)]
pub struct FlushStats {
    pub flushed: AtomicU64,
    pub batches: AtomicU64,
    pub db_errors: AtomicU64,
    pub db_up: AtomicBool,
    pub segments_deleted: AtomicU64,
}

pub struct Flusher {
    pub db: Db,
    pub shared: Arc<Shared>,
    pub stats: Arc<FlushStats>,
    pub dir: PathBuf,
    pub batch: usize,
    pub interval: Duration,
    /// Woken by the writer when a full batch is waiting.
    pub wake: Arc<Notify>,
    /// Set (then `wake` notified) to drain and stop.
    pub stop: Arc<AtomicBool>,
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Flusher {
    pub async fn run(self) {
        let mut migrated = false;
        let mut backoff = MIN_BACKOFF;
        loop {
            let stopping = self.stop.load(Ordering::SeqCst);
            if !stopping {
                let _ = tokio::time::timeout(self.interval, self.wake.notified()).await;
            }
            // Drain full batches back to back; a partial one waits for the interval next time.
            loop {
                let (rows, end) = {
                    let pending = self
                        .shared
                        .pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    let n = pending.len().min(self.batch);
                    let rows: Vec<Message> =
                        pending.iter().take(n).map(|p| p.msg.clone()).collect();
                    (rows, pending.get(n.wrapping_sub(1)).map(|p| p.end))
                };
                let Some(end) = end else { break };
                let result = async {
                    if !migrated {
                        self.db.migrate().await?;
                        migrated = true;
                    }
                    self.db.insert_batch(&rows).await
                }
                .await;
                match result {
                    Ok(_) => {
                        if !self.stats.db_up.swap(true, Ordering::SeqCst) {
                            tracing::info!("database reachable; flushing");
                        }
                        backoff = MIN_BACKOFF;
                        self.committed(rows.len(), end);
                    }
                    Err(e) => {
                        migrated = false;
                        self.stats.db_errors.fetch_add(1, Ordering::Relaxed);
                        if self.stats.db_up.swap(false, Ordering::SeqCst) {
                            tracing::warn!(error = %e, "database write failed; retrying with backoff");
                        } else {
                            tracing::debug!(error = %e, "database still failing");
                        }
                        if self.stop.load(Ordering::SeqCst) {
                            // The journal keeps the rows; the next start flushes them.
                            return;
                        }
                        // Woken early by `close`, which wants the flusher to stop.
                        let _ = tokio::time::timeout(backoff, self.wake.notified()).await;
                        if self.stop.load(Ordering::SeqCst) {
                            return;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
                if rows.len() < self.batch {
                    break;
                }
            }
            if stopping {
                return;
            }
        }
    }

    fn committed(&self, n: usize, end: journal::Position) {
        {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Only the flusher removes rows, so the front is still the batch just written.
            pending.drain(..n);
        }
        self.shared.backlog.fetch_sub(n, Ordering::SeqCst);
        self.stats.flushed.fetch_add(n as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = journal::write_checkpoint(&self.dir, end) {
            tracing::warn!(error = %e, "cannot write the journal checkpoint (replay will redo rows)");
            return;
        }
        let active = self.shared.active_segment.load(Ordering::SeqCst);
        match journal::delete_flushed(&self.dir, end, active) {
            Ok(n) => {
                self.stats
                    .segments_deleted
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "cannot delete flushed journal segments"),
        }
    }
}
