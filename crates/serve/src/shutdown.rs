//! The stop signal every worker watches. One `watch` channel serves both worlds: async code
//! awaits `changed()`, blocking threads read the current phase between requests.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// Retiring (rolling restart, --max-requests): stop accepting; each keep-alive connection
    /// is closed after its next response or when its keep-alive time runs out, so no client has
    /// its connection closed under a request it is about to send.
    Draining,
    /// Retiring because the application's code changed on disk (`--reload`): as `Draining`, but
    /// an idle keep-alive connection closes at once, as in `Graceful`, since its next request
    /// would be answered by code known to be stale; the client sends it again on a new
    /// connection, which the siblings or the fresh worker answer. A request in flight or being
    /// received, and a new connection's first request within its grace, are still answered.
    /// Unlike `Graceful`, the listen queue is left to the siblings and the successor (see
    /// [`Shutdown::queue_drain_until`]): served here, its requests would meet the stale code.
    Reloading,
    /// Stop accepting new connections, but serve those already waiting in the listen queue
    /// (see [`Shutdown::queue_drain_until`]); finish in-flight requests; close idle connections
    /// at once, except one whose client has not sent its first request yet, which gets a short
    /// grace to send it (`crate::conn::FIRST_REQUEST_GRACE`).
    Graceful,
    /// Stop now (SIGQUIT, or the graceful timeout ran out).
    Immediate,
}

impl Phase {
    /// Whether an idle connection closes now instead of after its next answer (see
    /// `crate::conn::Machine::next`): in `Reloading` and every phase of a stop.
    pub fn closes_idle(self) -> bool {
        self >= Phase::Reloading
    }
}

#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<Phase>>,
    /// When the phase first reached `Graceful` or beyond.
    stopping_since: Arc<OnceLock<Instant>>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown {
            tx: Arc::new(watch::channel(Phase::Running).0),
            stopping_since: Arc::new(OnceLock::new()),
        }
    }

    /// Moves to `phase` unless already at or past it.
    pub fn trigger(&self, phase: Phase) {
        if phase >= Phase::Graceful {
            // Before the phase moves: whoever sees `Graceful` finds the time set.
            self.stopping_since.get_or_init(Instant::now);
        }
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

    /// Until when a worker in a graceful stop still takes the connections waiting in its listen
    /// queue: `graceful` (`--graceful-timeout`) after the stop began. `None` in any other phase.
    ///
    /// Those connections are complete on the client's side — the kernel answered the handshake,
    /// and the request is often sent already — and the kernel resets every one of them when the
    /// last process holding the listener closes it: the client sees "connection reset" after it
    /// sent its request, which nginx in front answers with a 502 and cannot safely retry for a
    /// POST. So a stopping worker serves what is queued, one connection at a time as its threads
    /// free up, until the queue is empty (then it stops taking any) or this deadline passes.
    /// A retiring worker (`Draining`: HUP, `--max-requests`; `Reloading`: `--reload`) does not:
    /// its siblings, its successor and the master keep the listener open, and they serve the
    /// queue.
    pub fn queue_drain_until(&self, graceful: Duration) -> Option<Instant> {
        if self.phase() != Phase::Graceful {
            return None;
        }
        self.stopping_since.get().map(|since| *since + graceful)
    }
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        Shutdown::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listen_queue_is_drained_only_in_a_graceful_stop_and_until_its_deadline() {
        let s = Shutdown::new();
        let g = Duration::from_secs(30);
        assert_eq!(s.queue_drain_until(g), None, "running");
        s.trigger(Phase::Draining);
        assert_eq!(
            s.queue_drain_until(g),
            None,
            "retiring: the siblings serve it"
        );
        s.trigger(Phase::Reloading);
        assert_eq!(
            s.queue_drain_until(g),
            None,
            "retiring for stale code: the siblings serve it"
        );
        let before = Instant::now();
        s.trigger(Phase::Graceful);
        let until = s.queue_drain_until(g).expect("a graceful stop drains");
        assert!(until >= before + g && until <= Instant::now() + g);
        // A later trigger does not move the start of the stop.
        s.trigger(Phase::Graceful);
        assert_eq!(s.queue_drain_until(g), Some(until));
        s.trigger(Phase::Immediate);
        assert_eq!(s.queue_drain_until(g), None, "stopping now");
    }

    #[test]
    fn a_reload_closes_idle_connections_and_outranks_a_plain_retirement_only() {
        assert!(!Phase::Running.closes_idle());
        assert!(!Phase::Draining.closes_idle(), "HUP, --max-requests");
        assert!(Phase::Reloading.closes_idle());
        assert!(Phase::Graceful.closes_idle());
        assert!(Phase::Immediate.closes_idle());
        // --max-requests reached, then an edit: the stale code no longer answers idle clients.
        let s = Shutdown::new();
        s.trigger(Phase::Draining);
        s.trigger(Phase::Reloading);
        assert_eq!(s.phase(), Phase::Reloading);
        // A HUP after the edit changes nothing; a graceful stop still wins.
        s.trigger(Phase::Draining);
        assert_eq!(s.phase(), Phase::Reloading);
        s.trigger(Phase::Graceful);
        assert_eq!(s.phase(), Phase::Graceful);
    }
}
