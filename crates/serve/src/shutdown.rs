//! The stop signal every worker watches. One `watch` channel serves both worlds: async code
//! awaits `changed()`, blocking threads read the current phase between requests.

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// Retiring (rolling restart, --max-requests): stop accepting; each keep-alive connection
    /// is closed after its next response or when its keep-alive time runs out, so no client has
    /// its connection closed under a request it is about to send.
    Draining,
    /// Stop accepting; finish in-flight requests; close idle connections at once, except one
    /// whose client has not sent its first request yet, which gets a short grace to send it
    /// (`crate::conn::FIRST_REQUEST_GRACE`).
    Graceful,
    /// Stop now (SIGQUIT, or the graceful timeout ran out).
    Immediate,
}

#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: std::sync::Arc<watch::Sender<Phase>>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown {
            tx: std::sync::Arc::new(watch::channel(Phase::Running).0),
        }
    }

    /// Moves to `phase` unless already at or past it.
    pub fn trigger(&self, phase: Phase) {
        self.tx.send_if_modified(|p| {
            if phase > *p {
                *p = phase;
                true
            } else {
                false
            }
        });
    }

    pub fn phase(&self) -> Phase {
        *self.tx.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.tx.subscribe()
    }
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        Shutdown::new()
    }
}
