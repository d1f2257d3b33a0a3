//! A worker's link to the outside: its stop phase, its scoreboard slot, its request budget.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;

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

/// A count of open connections, shared by a worker's threads.
#[derive(Debug, Default)]
pub(crate) struct Gauge {
    n: AtomicUsize,
}

impl Gauge {
    pub fn get(&self) -> usize {
        self.n.load(SeqCst)
    }

    pub fn inc(&self) {
        self.n.fetch_add(1, SeqCst);
    }

    pub fn dec(&self) {
        let _ = self
            .n
            .fetch_update(SeqCst, SeqCst, |n| Some(n.saturating_sub(1)));
    }
}
