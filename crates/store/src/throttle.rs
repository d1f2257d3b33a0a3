//! Rate-limited error lines: one line per kind of failure per window, with a count of the ones
//! not logged, and an error id that names the logged line.
//!
//! A full disk or a dead database fails every request; logging each one writes thousands of
//! identical lines a second and buries everything else. Here the first failure of a kind in a
//! window is logged with a fresh error id; the failures after it in the same window share that id
//! (the client's answer carries it, so the detail is one `grep` away) and are only counted; the
//! next line logged for that kind says how many were not.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one kind of error is logged at most, by default.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// What to do with one failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it under `id`; `unlogged` failures of this kind were not logged since the last line.
    Log { id: String, unlogged: u64 },
    /// Do not log it: it is one more like the line logged under `id`.
    Quiet { id: String },
}

impl Verdict {
    pub fn id(&self) -> &str {
        match self {
            Verdict::Log { id, .. } | Verdict::Quiet { id } => id,
        }
    }
}

#[derive(Debug)]
struct Window {
    since: Instant,
    id: String,
    unlogged: u64,
}

/// Decides which failures are logged; share one per source of errors.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    windows: Mutex<HashMap<&'static str, Window>>,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle::new(DEFAULT_WINDOW)
    }
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// One failure of `kind`.
    pub fn check(&self, kind: &'static str) -> Verdict {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        match windows.get_mut(kind) {
            Some(w) if now.duration_since(w.since) < self.every => {
                w.unlogged += 1;
                Verdict::Quiet { id: w.id.clone() }
            }
            slot => {
                let unlogged = slot.map_or(0, |w| w.unlogged);
                let id = error_id();
                windows.insert(
                    kind,
                    Window {
                        since: now,
                        id: id.clone(),
                        unlogged: 0,
                    },
                );
                Verdict::Log { id, unlogged }
            }
        }
    }
}

/// A short id for one logged error: 12 hex digits, unique enough to find its line in the log.
pub fn error_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // splitmix64's finaliser: neighbouring inputs give unrelated ids.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    format!("{:012x}", x & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_with_a_count() {
        let t = Throttle::new(Duration::from_millis(200));
        let first = t.check("disk");
        let Verdict::Log { id, unlogged: 0 } = &first else {
            panic!("{first:?}")
        };
        for _ in 0..1000 {
            assert_eq!(t.check("disk"), Verdict::Quiet { id: id.clone() });
        }
        // Another kind has its own window.
        assert!(matches!(t.check("db"), Verdict::Log { .. }));
        std::thread::sleep(Duration::from_millis(250));
        match t.check("disk") {
            Verdict::Log { id: next, unlogged } => {
                assert_eq!(unlogged, 1000);
                assert_ne!(&next, id);
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn ids_differ() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| error_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|i| i.len() == 12));
    }
}
