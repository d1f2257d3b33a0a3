//! 64-bit time-ordered ids (the Snowflake layout) for rows that need no auto-increment key.
//!
//! Layout, high to low: 1 zero bit, 41 bits of milliseconds since [`EPOCH_MS`] (2026-01-01, good
//! for 69 years), 10 bits of instance id, 12 bits of sequence. Ids from one instance are strictly
//! increasing; ids of two instances differ in the instance bits, so they never collide.
//!
//! We write the generator ourselves (~40 lines in `IdGenerator::fill`) instead of using a crate.
//! `snowflaked` reads `SystemTime::elapsed()` and panics ("clock went backwards") when the wall
//! clock steps back, the very case we must turn into a short wait or a 503, and its time source is
//! crate-private, so tests cannot move it. `ferroid` is solid (generators over a `TimeSource`
//! trait; its default clock is monotonic from process start, which sidesteps steps back inside
//! one process) but it has no "wait ≤ 5 ms, refuse above" policy and nothing that survives a
//! restart, so the hard parts — the step-back rule against the wall clock, the persisted
//! high-water mark, lease checks — would still be ours, around a dependency with its own layout
//! and id types. The core under one mutex measures close to the layout's own limit of 4,096 ids
//! per millisecond from one thread (`examples/ids_per_sec.rs`).
//!
//! The high-water mark: no id is issued with a timestamp past the mark persisted in a small
//! file. A background thread keeps the mark 250–500 ms ahead of the clock
//! ([`IdGenerator::extend_high_water`]), so requests do not wait for its fsync; if it falls
//! behind, the request that crosses the mark persists the next one itself. After a crash the next
//! start waits until the clock passes the mark (at most ~0.5 s); after a clean close it waits for
//! nothing, because [`IdGenerator::persist_exact`] wrote the last timestamp itself.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch at 2026-01-01T00:00:00Z, the ids' time origin.
pub const EPOCH_MS: u64 = 1_767_225_600_000;
pub const INSTANCE_BITS: u32 = 10;
pub const SEQUENCE_BITS: u32 = 12;
/// Instance ids are `0..MAX_INSTANCES`.
pub const MAX_INSTANCES: u16 = 1 << INSTANCE_BITS;
const SEQUENCE_MASK: u64 = (1 << SEQUENCE_BITS) - 1;
const TIME_SHIFT: u32 = INSTANCE_BITS + SEQUENCE_BITS;
/// Largest backwards clock step that is waited out; a larger one is refused.
pub const MAX_BACKWARD_WAIT: Duration = Duration::from_millis(5);
/// How far ahead of the issued timestamps the persisted high-water mark runs.
pub const HIGH_WATER_STEP_MS: u64 = 250;

/// Wall-clock milliseconds since the Unix epoch. A trait so tests can move time backwards.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
    /// Waits for roughly `d` (the real clock sleeps; a test clock may advance itself).
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    #[error("clock moved backwards by {behind_ms} ms (more than 5 ms); refusing to issue ids")]
    ClockMovedBack { behind_ms: u64 },
    #[error("clock is before the id epoch (2026-01-01)")]
    BeforeEpoch,
    #[error("instance id {0} is out of range 0..1024")]
    BadInstance(u32),
    #[error("cannot persist the id high-water mark in {path}: {source}")]
    Persist {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The parts of an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdParts {
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
    pub instance: u16,
    pub sequence: u16,
}

pub fn decode(id: u64) -> IdParts {
    IdParts {
        unix_ms: (id >> TIME_SHIFT) + EPOCH_MS,
        instance: ((id >> SEQUENCE_BITS) & (u64::from(MAX_INSTANCES) - 1)) as u16,
        sequence: (id & SEQUENCE_MASK) as u16,
    }
}

#[derive(Debug)]
struct State {
    /// Timestamp (ms since [`EPOCH_MS`]) of the last id issued, and its sequence.
    last: u64,
    seq: u64,
    /// Persisted high-water mark, same unit as `last`.
    high_water: u64,
}

/// Issues ids for one instance id. Share it in an `Arc`; calls from many threads are serialised
/// by one short critical section.
pub struct IdGenerator {
    instance: u64,
    clock: Box<dyn Clock>,
    state: Mutex<State>,
    state_file: Option<PathBuf>,
    /// The mark last written to `state_file` (same unit as `State::last`). Its lock serialises
    /// file writes; lock order is `state` then `disk`.
    disk: Mutex<u64>,
    /// Set by [`IdGenerator::persist_exact`] (closing): the background extension stops writing.
    frozen: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for IdGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdGenerator")
            .field("instance", &self.instance)
            .field("state_file", &self.state_file)
            .finish()
    }
}

impl IdGenerator {
    /// A generator with no persisted state (tests, tools).
    pub fn new(instance: u16, clock: impl Clock) -> Result<IdGenerator, IdError> {
        IdGenerator::build(instance, Box::new(clock), None, 0)
    }

    /// A generator whose high-water mark lives in `state_file`. If the file says ids were issued
    /// up to a time the clock has not reached, this waits until it has (see the module docs);
    /// `floor_unix_ms` adds another lower bound (e.g. the newest id found in the journal).
    pub fn open(
        instance: u16,
        clock: impl Clock,
        state_file: &Path,
        floor_unix_ms: u64,
    ) -> Result<IdGenerator, IdError> {
        let persisted = fs::read_to_string(state_file)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let floor = persisted.max(floor_unix_ms);
        IdGenerator::build(
            instance,
            Box::new(clock),
            Some(state_file.to_owned()),
            floor,
        )
    }

    fn build(
        instance: u16,
        clock: Box<dyn Clock>,
        state_file: Option<PathBuf>,
        floor_unix_ms: u64,
    ) -> Result<IdGenerator, IdError> {
        if instance >= MAX_INSTANCES {
            return Err(IdError::BadInstance(instance.into()));
        }
        let floor = floor_unix_ms.saturating_sub(EPOCH_MS);
        // Wait out a clock that is behind what an earlier run issued (a restart after a step back).
        loop {
            let now = clock.now_ms().saturating_sub(EPOCH_MS);
            if now > floor {
                break;
            }
            let behind = floor - now + 1;
            tracing::warn!(
                behind_ms = behind,
                "clock is behind the last issued id; waiting"
            );
            clock.sleep(Duration::from_millis(behind.min(1000)));
        }
        Ok(IdGenerator {
            instance: u64::from(instance),
            clock,
            state: Mutex::new(State {
                last: floor,
                seq: SEQUENCE_MASK, // the next id in `floor`'s millisecond would overflow: move on
                high_water: floor,
            }),
            state_file,
            disk: Mutex::new(floor),
            frozen: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn instance(&self) -> u16 {
        self.instance as u16
    }

    /// One fresh id.
    pub fn next_id(&self) -> Result<u64, IdError> {
        let mut out = 0;
        self.fill(1, |id| out = id)?;
        Ok(out)
    }

    /// `n` fresh, consecutive-in-order ids.
    pub fn next_ids(&self, n: usize) -> Result<Vec<u64>, IdError> {
        let mut out = Vec::with_capacity(n);
        self.fill(n, |id| out.push(id))?;
        Ok(out)
    }

    fn fill(&self, n: usize, mut emit: impl FnMut(u64)) -> Result<(), IdError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut left = n;
        while left > 0 {
            let now = self.now()?;
            if now < st.last {
                let behind = st.last - now;
                if Duration::from_millis(behind) > MAX_BACKWARD_WAIT {
                    tracing::error!(behind_ms = behind, "clock moved backwards; refusing ids");
                    return Err(IdError::ClockMovedBack { behind_ms: behind });
                }
                self.clock.sleep(Duration::from_millis(behind));
                continue;
            }
            if now == st.last {
                if st.seq == SEQUENCE_MASK {
                    // 4,096 ids this millisecond: spin to the next one (under a millisecond;
                    // yielding instead can lose the CPU for a whole time slice, and with it
                    // whole milliseconds of ids).
                    std::hint::spin_loop();
                    continue;
                }
                st.seq += 1;
            } else {
                st.last = now;
                st.seq = 0;
            }
            if st.last >= st.high_water {
                self.persist_high_water(&mut st)?;
            }
            emit((st.last << TIME_SHIFT) | (self.instance << SEQUENCE_BITS) | st.seq);
            left -= 1;
        }
        Ok(())
    }

    fn now(&self) -> Result<u64, IdError> {
        let unix = self.clock.now_ms();
        if unix < EPOCH_MS {
            return Err(IdError::BeforeEpoch);
        }
        Ok(unix - EPOCH_MS)
    }

    /// The slow path: the background extension (see [`IdGenerator::extend_high_water`]) fell
    /// behind, so the request that crosses the mark persists the next one itself.
    fn persist_high_water(&self, st: &mut State) -> Result<(), IdError> {
        st.high_water = self.write_mark(st.last + HIGH_WATER_STEP_MS, false)?;
        Ok(())
    }

    /// Persists `mark` or the higher mark already on disk (the file never goes down, so a racing
    /// writer cannot leave it below what was issued). Returns the mark now on disk.
    fn write_mark(&self, mark: u64, background: bool) -> Result<u64, IdError> {
        let mut disk = self.disk.lock().unwrap_or_else(|p| p.into_inner());
        if background && self.frozen.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(*disk);
        }
        let mark = mark.max(*disk);
        if let Some(path) = &self.state_file {
            write_synced(path, mark + EPOCH_MS)?;
        }
        *disk = mark;
        Ok(mark)
    }

    /// Keeps the persisted mark ahead of the clock so requests never wait for its fsync. The
    /// store calls this from a background thread every `HIGH_WATER_STEP_MS / 4`.
    pub fn extend_high_water(&self) -> Result<(), IdError> {
        let (last, high_water) = {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            (st.last, st.high_water)
        };
        let now = self.clock.now_ms().saturating_sub(EPOCH_MS).max(last);
        if high_water >= now + HIGH_WATER_STEP_MS {
            return Ok(());
        }
        let mark = self.write_mark(now + 2 * HIGH_WATER_STEP_MS, true)?;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.high_water = st.high_water.max(mark);
        Ok(())
    }

    /// Writes the exact last issued timestamp, so a clean restart does not wait for the mark.
    pub fn persist_exact(&self) -> Result<(), IdError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut disk = self.disk.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = &self.state_file {
            write_synced(path, st.last + EPOCH_MS)?;
        }
        *disk = st.last;
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
        // Ids issued after this (there should be none) persist a mark again first.
        st.high_water = st.last;
        Ok(())
    }

    /// The persisted high-water mark in Unix milliseconds (for the lease row).
    pub fn high_water_unix_ms(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .high_water
            + EPOCH_MS
    }
}

fn write_synced(path: &Path, value: u64) -> Result<(), IdError> {
    let err = |source| IdError::Persist {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(err)?;
    writeln!(f, "{value}").map_err(err)?;
    f.sync_data().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod testclock {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A clock tests set by hand; `sleep` advances it, so waits finish instantly.
    #[derive(Clone, Debug)]
    pub struct ManualClock {
        pub ms: Arc<AtomicU64>,
        pub slept: Arc<AtomicU64>,
    }

    impl ManualClock {
        pub fn at(ms: u64) -> ManualClock {
            ManualClock {
                ms: Arc::new(AtomicU64::new(ms)),
                slept: Arc::new(AtomicU64::new(0)),
            }
        }
        pub fn set(&self, ms: u64) {
            self.ms.store(ms, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now_ms(&self) -> u64 {
            self.ms.load(Ordering::SeqCst)
        }
        fn sleep(&self, d: Duration) {
            let d = d.as_millis().max(1) as u64;
            self.slept.fetch_add(d, Ordering::SeqCst);
            self.ms.fetch_add(d, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testclock::ManualClock;
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    const T0: u64 = EPOCH_MS + 1_000_000;

    #[test]
    fn layout_round_trips() {
        let clock = ManualClock::at(T0);
        let ids = IdGenerator::new(513, clock).unwrap();
        let a = ids.next_id().unwrap();
        let b = ids.next_id().unwrap();
        assert!(b > a);
        let p = decode(b);
        assert_eq!(p.unix_ms, T0);
        assert_eq!(p.instance, 513);
        assert_eq!(p.sequence, decode(a).sequence + 1);
        assert!(IdGenerator::new(1024, ManualClock::at(T0)).is_err());
    }

    #[test]
    fn sequence_overflow_waits_for_the_next_millisecond() {
        let clock = ManualClock::at(T0);
        let ids = IdGenerator::new(1, clock.clone()).unwrap();
        let first = ids.next_ids(4096).unwrap();
        assert_eq!(decode(*first.last().unwrap()).sequence, 4095);
        let c = clock.clone();
        // The 4,097th id spins until the clock ticks; tick it from another thread.
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            c.set(T0 + 1);
        });
        let next = ids.next_id().unwrap();
        t.join().unwrap();
        assert_eq!(decode(next).unix_ms, T0 + 1);
        assert!(next > *first.last().unwrap());
    }

    #[test]
    fn unique_and_increasing_across_threads() {
        let ids = Arc::new(IdGenerator::new(7, SystemClock).unwrap());
        let per_thread = if cfg!(debug_assertions) {
            200_000
        } else {
            1_000_000
        };
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let ids = ids.clone();
                std::thread::spawn(move || {
                    let mut v = Vec::with_capacity(per_thread);
                    for _ in 0..per_thread {
                        v.push(ids.next_id().unwrap());
                    }
                    v
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            let v = h.join().unwrap();
            assert!(v.windows(2).all(|w| w[0] < w[1]), "per-thread order");
            all.extend(v);
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "duplicates across threads");
    }

    #[test]
    fn small_step_back_waits_large_refuses() {
        let clock = ManualClock::at(T0);
        let ids = IdGenerator::new(3, clock.clone()).unwrap();
        let a = ids.next_id().unwrap();
        clock.set(T0 - 4);
        let b = ids.next_id().unwrap();
        assert!(b > a, "waited out a 4 ms step back");
        assert!(clock.slept.load(Ordering::SeqCst) >= 4);

        let before = clock.now_ms();
        clock.set(before - 50);
        match ids.next_id() {
            Err(IdError::ClockMovedBack { behind_ms }) => assert!(behind_ms >= 50),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Once the clock catches up, ids flow again and stay above the old ones.
        clock.set(before + 1);
        assert!(ids.next_id().unwrap() > b);
    }

    #[test]
    fn background_extension_keeps_the_mark_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ids.hw");
        let clock = ManualClock::at(T0);
        let ids = IdGenerator::open(2, clock.clone(), &file, 0).unwrap();
        ids.extend_high_water().unwrap();
        let on_disk: u64 = fs::read_to_string(&file).unwrap().trim().parse().unwrap();
        assert!(on_disk >= T0 + HIGH_WATER_STEP_MS);
        // Issuing below the mark writes nothing: the file is unchanged.
        let id = ids.next_id().unwrap();
        assert!(decode(id).unix_ms < on_disk);
        let again: u64 = fs::read_to_string(&file).unwrap().trim().parse().unwrap();
        assert_eq!(again, on_disk);
        // Past the mark, the slow path persists before issuing.
        clock.set(on_disk + 10);
        let id = ids.next_id().unwrap();
        let after: u64 = fs::read_to_string(&file).unwrap().trim().parse().unwrap();
        assert!(after > decode(id).unix_ms);
        // Once closed, the background extension no longer moves the mark.
        ids.persist_exact().unwrap();
        ids.extend_high_water().unwrap();
        let closed: u64 = fs::read_to_string(&file).unwrap().trim().parse().unwrap();
        assert_eq!(closed, decode(id).unix_ms);
    }

    #[test]
    fn restart_behind_persisted_mark_waits() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ids.hw");
        let clock = ManualClock::at(T0);
        let last = {
            let ids = IdGenerator::open(9, clock.clone(), &file, 0).unwrap();
            ids.next_ids(10).unwrap().pop().unwrap()
            // No clean close: the file holds the high-water mark, ahead of T0.
        };
        // The machine restarts with its clock one second behind.
        let clock2 = ManualClock::at(T0 - 1000);
        let ids = IdGenerator::open(9, clock2.clone(), &file, 0).unwrap();
        assert!(clock2.slept.load(Ordering::SeqCst) >= 1000, "it waited");
        assert!(ids.next_id().unwrap() > last);

        // After a clean close the restart waits for nothing beyond the last id.
        ids.persist_exact().unwrap();
        let now = clock2.now_ms();
        let clock3 = ManualClock::at(now + 1);
        let ids3 = IdGenerator::open(9, clock3.clone(), &file, 0).unwrap();
        assert_eq!(clock3.slept.load(Ordering::SeqCst), 0);
        assert!(ids3.next_id().unwrap() > last);
    }
}
