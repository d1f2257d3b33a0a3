//! A worker's link to the outside: its stop phase, its scoreboard slot, its request budget.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::scoreboard::{Scoreboard, Slot};
use crate::shutdown::{Phase, Shutdown};
use crate::track::{ConnTrack, Tracker};

#[derive(Debug)]
pub(crate) struct Life {
    pub shutdown: Shutdown,
    scoreboard: Arc<Scoreboard>,
    slot: usize,
    /// Retire after this many requests (`--max-requests` plus jitter); 0 = never.
    max_requests: u64,
    tracker: Arc<Tracker>,
}

impl Life {
    pub fn new(
        shutdown: Shutdown,
        scoreboard: Arc<Scoreboard>,
        slot: usize,
        max_requests: u64,
        tracker: Tracker,
    ) -> Life {
        Life {
            shutdown,
            scoreboard,
            slot,
            max_requests,
            tracker: Arc::new(tracker),
        }
    }

    /// A connection was accepted: count it and give it a processlist entry.
    pub fn open(&self, peer: Option<std::net::SocketAddr>) -> ConnTrack {
        self.tracker.open(peer)
    }

    pub fn slot(&self) -> &Slot {
        self.scoreboard.slot(self.slot)
    }

    pub fn phase(&self) -> Phase {
        self.shutdown.phase()
    }

    pub fn beat(&self) {
        self.slot().beat();
    }

    /// The worker has built its application and accepts connections.
    pub fn ready(&self) {
        self.beat();
        self.slot().ready.store(1, Relaxed);
    }

    /// Counts an answered request; past the budget the worker starts retiring.
    pub fn on_request(&self) {
        let n = self.slot().requests.fetch_add(1, Relaxed) + 1;
        if self.max_requests > 0 && n == self.max_requests {
            tracing::info!(requests = n, "--max-requests reached; retiring this worker");
            self.shutdown.trigger(Phase::Draining);
        }
    }
}

/// A count of open connections that threads can wait on (below a cap, or down to zero).
#[derive(Debug, Default)]
pub(crate) struct Gauge {
    n: Mutex<usize>,
    cv: Condvar,
}

impl Gauge {
    pub fn get(&self) -> usize {
        *self.n.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn inc(&self) {
        *self.n.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    pub fn dec(&self) {
        let mut n = self.n.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        self.cv.notify_all();
    }

    /// Waits until the count is zero or `deadline` passes, giving up early if `abort` says so.
    pub fn wait_zero(&self, deadline: Instant, abort: impl Fn() -> bool) -> bool {
        let mut n = self.n.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || abort() {
                return false;
            }
            n = self
                .cv
                .wait_timeout(n, left.min(Duration::from_millis(100)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}
