//! The c10k write path: global ids, a durable write-behind journal, batched database flushes.
//!
//! The seed's advice for database writes under load is: drop auto-increment keys and pre-generate
//! ids; answer the user before the database has the row; let a background task write to the
//! database bit by bit. Done naively that loses every buffered write on a crash. Here a
//! `POST /messages` is answered only once its record is **durable in a local journal**:
//!
//! 1. [`journal`] takes the record with every other record waiting at that moment, gives each a
//!    64-bit time-ordered id from [`ids`] (no auto-increment lock in the database), appends them
//!    and fsyncs once (group commit); then the requests get `201`;
//! 2. [`flusher`] writes the rows to the database in batches, idempotently on the id, and only
//!    then forgets them.
//!
//! # What is guaranteed
//!
//! - `--durability fsync` (default): when the 201 arrives the message is on disk in the journal.
//!   A process crash, `kill -9`, an OS crash or a power cut loses nothing acknowledged: the next
//!   start replays the journal into the database, and the insert is idempotent on the id, so no
//!   row is ever written twice.
//! - `--durability none`: the 201 comes after the record is handed to the OS, before fsync. A
//!   process crash still loses nothing (the kernel has the bytes); an OS crash or power cut loses
//!   the writes the kernel had not written back yet — by Linux defaults up to ~30 s of writes
//!   (`vm.dirty_expire_centisecs`) — minus those already flushed to the database.
//! - Database down: writes keep being acknowledged from the journal, the flusher retries with
//!   backoff, and once more than `--max-lag` rows are waiting new writes get `503` with
//!   `Retry-After` instead of filling the disk. When the database is back the backlog drains.
//! - Reads (`GET /messages`) see every write acknowledged **by the same worker process**, flushed
//!   or not: the unflushed rows are kept in memory and merged. A write acknowledged by another
//!   worker process becomes visible once flushed (normally within `--flush-interval`).
//!
//! # One journal per worker process
//!
//! Each worker process owns `<data-dir>/journal-<slot>` and its own instance id (leased, or
//! `--instance-id + slot`). Sharing one journal between processes would need a cross-process lock
//! around every append, the contention this path exists to avoid, while separate journals need
//! nothing: a replacement worker gets the slot of the one it replaces and replays its journal.

pub mod config;
pub mod db;
pub mod flusher;
pub mod ids;
pub mod journal;
pub mod record;
pub mod throttle;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};

pub use config::{ConfigError, Durability, StoreConfig, WriteMode};
pub use db::{Db, Dialect, PoolStats};
pub use ids::{Clock, IdError, IdGenerator, SystemClock};
pub use record::{Invalid, Message};

use flusher::{FlushStats, Flusher};
use journal::Shared;

/// How long a lease on an instance id lasts without renewal, and how often it is renewed. Long,
/// so a database outage of a few minutes does not stop id issue; see [`Store::ids`].
const LEASE_TTL: Duration = Duration::from_secs(300);
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// How long [`Store::close`] lets the flusher drain before leaving the rest to the next start.
const CLOSE_DRAIN: Duration = Duration::from_secs(5);
const SEGMENT_BYTES: u64 = 64 << 20;
/// How long a new worker waits for the worker it replaces to release the slot's journal.
const JOURNAL_LOCK_WAIT: Duration = Duration::from_secs(60);
/// Most ids one `GET /ids` may ask for.
pub const MAX_IDS_PER_CALL: usize = 10_000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("write backlog of {backlog} unflushed rows is at --max-lag ({max_lag}); the database is behind, retry later")]
    Backlog { backlog: usize, max_lag: u64 },
    #[error("id generator: {0}")]
    Ids(#[from] IdError),
    #[error("id generator: {0}")]
    IdsUnavailable(String),
    #[error("the lease on instance id {0} was lost; refusing to issue ids")]
    LeaseLost(u16),
    #[error("journal write failed: {0}")]
    Journal(std::io::Error),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("request exceeded its time limit")]
    Deadline,
    #[error("the store is shut down")]
    Closed,
    #[error("{what}: {source}")]
    Open {
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl StoreError {
    /// Whether the client should try again later: the failure is the server's state (backlog,
    /// database, journal, ids), not the request. The application turns this into its answer.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            StoreError::Invalid(_) | StoreError::Config(_) | StoreError::Deadline
        )
    }

    /// A short name of the failure for logs and rate limits (`db`, `journal`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Invalid(_) => "invalid",
            StoreError::Backlog { .. } => "backlog",
            StoreError::Ids(_) | StoreError::IdsUnavailable(_) | StoreError::LeaseLost(_) => "ids",
            StoreError::Journal(_) => "journal",
            StoreError::Db(_) => "database",
            StoreError::Deadline => "deadline",
            StoreError::Closed => "closed",
            StoreError::Open { .. } => "open",
            StoreError::Config(_) => "config",
        }
    }

    fn open(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError::Open {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

/// Figures for `c10k status` and the tests.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StoreStats {
    pub instance_id: u16,
    pub appended: u64,
    pub fsyncs: u64,
    pub groups: u64,
    pub flushed: u64,
    pub batches: u64,
    pub db_errors: u64,
    pub db_up: bool,
    pub backlog: usize,
    pub segments_deleted: u64,
    /// Damaged ranges found inside journal segments at start-up (skipped, records after them
    /// replayed), and the records lost in them.
    pub journal_damaged: u64,
    pub journal_records_lost: u64,
    pub pool: PoolStats,
}

struct Lease {
    id: u16,
    holder: String,
    /// Unix ms until which this process may issue ids under the lease.
    valid_until: AtomicU64,
    lost: AtomicBool,
}

/// The write path of one worker process. Share it in an `Arc`; every method may be called from
/// any thread, and the `async` ones may be awaited under any executor (`block_on` or tokio).
pub struct Store {
    _dir_lock: journal::DirLock,
    config: StoreConfig,
    journal_dir: PathBuf,
    ids: Arc<IdGenerator>,
    db: Db,
    shared: Arc<Shared>,
    flush_stats: Arc<FlushStats>,
    recovered: RecoveredFigures,
    tx: RwLock<Option<mpsc::Sender<journal::Append>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    rt: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    flusher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    flush_wake: Arc<Notify>,
    flush_stop: Arc<AtomicBool>,
    lease: Option<Arc<Lease>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("journal_dir", &self.journal_dir)
            .field("instance", &self.ids.instance())
            .field("dialect", &self.db.dialect())
            .finish()
    }
}

/// Runs `fut` on `handle` and waits for it from any context (even inside another runtime, where
/// `block_on` would panic).
fn run_blocking<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().ok()
}

fn unix_ms() -> u64 {
    SystemClock.now_ms()
}

/// The instance id this store issues ids under, and the lease behind it if it is leased.
struct Instance {
    id: u16,
    lease: Option<Arc<Lease>>,
    /// The last id timestamp its previous holder recorded (Unix ms): a floor for the generator.
    floor: u64,
}

/// What [`Store::recover_and_start`] started.
struct Started {
    ids: Arc<IdGenerator>,
    shared: Arc<Shared>,
    recovered: RecoveredFigures,
    tx: mpsc::Sender<journal::Append>,
    writer: std::thread::JoinHandle<()>,
    flusher: tokio::task::JoinHandle<()>,
    flush_stats: Arc<FlushStats>,
    flush_wake: Arc<Notify>,
    flush_stop: Arc<AtomicBool>,
}

/// What recovery found wrong with the journal, for the figures.
#[derive(Clone, Copy, Debug, Default)]
struct RecoveredFigures {
    damaged: u64,
    records_lost: u64,
}

/// What a journal directory remembers of the lease its last owner held: `id holder`.
const LEASE_FILE: &str = "lease";

impl Store {
    /// Opens the write path for worker `slot`, in named steps: lock the slot's journal, connect
    /// the pool (lazily), lease an instance id (unless `--instance-id` is set), recover the
    /// journal, start the writer thread, start the flusher.
    pub fn open(config: &StoreConfig, slot: usize) -> Result<Store, StoreError> {
        config.validate()?;
        let journal_dir = config.data_dir.join(format!("journal-{slot}"));
        let dir_lock = Store::lock_journal(config, &journal_dir, slot)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("c10k-store-{slot}"))
            .enable_all()
            .build()
            .map_err(|e| StoreError::open("cannot start the store runtime", e))?;
        let handle = rt.handle().clone();
        let db = Store::connect(config, &handle)?;
        let instance = Store::lease(config, slot, &journal_dir, &db, &handle)?;
        // From here on a failure gives the lease back rather than leaving it to expire.
        let rest = Store::recover_and_start(config, slot, &journal_dir, &db, &handle, &instance);
        let started = match rest {
            Ok(started) => started,
            Err(e) => {
                if let Some(lease) = &instance.lease {
                    release_lease(&handle, &db, lease, instance.floor);
                }
                return Err(e);
            }
        };
        let ids = started.ids;
        if let Some(lease) = &instance.lease {
            handle.spawn(renew_lease(db.clone(), lease.clone(), ids.clone()));
        }
        handle.spawn(extend_high_water(ids.clone()));
        Ok(Store {
            _dir_lock: dir_lock,
            config: config.clone(),
            journal_dir,
            ids,
            db,
            shared: started.shared,
            flush_stats: started.flush_stats,
            recovered: started.recovered,
            tx: RwLock::new(Some(started.tx)),
            writer: Mutex::new(Some(started.writer)),
            rt: Mutex::new(Some(rt)),
            handle,
            flusher: Mutex::new(Some(started.flusher)),
            flush_wake: started.flush_wake,
            flush_stop: started.flush_stop,
            lease: instance.lease,
            closed: AtomicBool::new(false),
        })
    }

    /// Step 1: create and lock `<data-dir>/journal-<slot>`. The worker this one replaces may still
    /// hold it for a moment (it is finishing its requests): wait for it. Anyone else holding it is
    /// another server on the same data dir: refuse at once, naming it.
    fn lock_journal(
        config: &StoreConfig,
        journal_dir: &Path,
        slot: usize,
    ) -> Result<journal::DirLock, StoreError> {
        // Sync the data dir too: the journal directory's own entry must survive a power cut.
        std::fs::create_dir_all(journal_dir)
            .and_then(|()| std::fs::File::open(&config.data_dir)?.sync_all())
            .map_err(|e| {
                StoreError::open(
                    format!(
                        "--data-dir {}: cannot create {}",
                        config.data_dir.display(),
                        journal_dir.display()
                    ),
                    e,
                )
            })?;
        journal::DirLock::acquire(journal_dir, JOURNAL_LOCK_WAIT).map_err(|e| {
            StoreError::open(
                format!(
                    "--data-dir {}: the journal of worker {slot}",
                    config.data_dir.display()
                ),
                e,
            )
        })
    }

    /// Step 2: the pool, built without connecting (the database may be down at start).
    fn connect(config: &StoreConfig, handle: &tokio::runtime::Handle) -> Result<Db, StoreError> {
        let acquire = Duration::from_secs_f64(config.db_acquire_timeout);
        // sqlx starts its pool's maintenance task on the current runtime: enter ours.
        let _rt = handle.enter();
        Db::connect_lazy(&config.database_url(), config.pool_size(), acquire).map_err(|e| {
            StoreError::open(format!("--database {}", config.database_url_redacted()), e)
        })
    }

    /// Step 3: the schema and the instance id. With `--instance-id` the id is fixed and the
    /// database may be down (the flusher creates the schema later). Otherwise the id is leased:
    /// first the lease this slot's previous owner held (recorded in its journal directory, whose
    /// lock we now hold, so that owner is gone — a worker that crashed or was killed does not
    /// leave its id held until the lease expires), else the lowest free one.
    fn lease(
        config: &StoreConfig,
        slot: usize,
        journal_dir: &Path,
        db: &Db,
        handle: &tokio::runtime::Handle,
    ) -> Result<Instance, StoreError> {
        let shown = config.database_url_redacted();
        if let Some(base) = config.instance_id {
            let id = usize::from(base) + slot;
            if id >= usize::from(ids::MAX_INSTANCES) {
                return Err(ConfigError {
                    flag: "--instance-id",
                    message: format!(
                        "{base} + worker slot {slot} is past the last instance id 1023"
                    ),
                }
                .into());
            }
            let db2 = db.clone();
            if let Some(Err(e)) = run_blocking(handle, async move { db2.migrate().await }) {
                tracing::warn!(error = %e, database = %shown, "database unreachable at start; writes go to the journal");
            }
            return Ok(Instance {
                id: id as u16,
                lease: None,
                floor: 0,
            });
        }
        let holder = format!(
            "{}:{}:{slot}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
            std::process::id(),
            unix_ms()
        );
        let lease_file = journal_dir.join(LEASE_FILE);
        let previous = std::fs::read_to_string(&lease_file)
            .ok()
            .and_then(|t| {
                let (id, holder) = t.trim().split_once(' ')?;
                Some((id.parse::<u16>().ok()?, holder.to_owned()))
            })
            .filter(|(id, _)| *id < config.lease_ids);
        let (db2, h2, space) = (db.clone(), holder.clone(), config.lease_ids);
        let got = run_blocking(handle, async move {
            // Workers start together: on SQLite their first schema writes can meet a lock the
            // busy timeout does not cover (WAL set-up), and a connection whose pragmas wait out
            // a lock (another process's transaction, siblings creating the file on a slow
            // disk) can take longer than the pool's acquire timeout. Retry those briefly.
            let mut backoff = Duration::from_millis(50);
            loop {
                let attempt = async {
                    db2.migrate().await?;
                    let now = unix_ms();
                    let until = now + LEASE_TTL.as_millis() as u64;
                    if let Some((id, old)) = &previous {
                        if let Some(last) = db2.take_over(*id, old, &h2, until).await? {
                            return Ok(Some((*id, last, true)));
                        }
                    }
                    Ok(db2
                        .lease(&h2, now, until, space)
                        .await?
                        .map(|(id, last)| (id, last, false)))
                };
                match attempt.await {
                    Err(e)
                        if (is_busy(&e) || sqlite_timed_out(&db2, &e))
                            && backoff < Duration::from_secs(5) =>
                    {
                        tracing::debug!(error = %e, "database busy at start; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                    other => break other,
                }
            }
        })
        .ok_or(StoreError::Closed)?
        .map_err(|e| {
            StoreError::open(
                format!("cannot lease an instance id from {shown} (or set --instance-id)"),
                e,
            )
        })?;
        let Some((id, last_ts, taken_over)) = got else {
            return Err(StoreError::open(
                "cannot lease an instance id",
                std::io::Error::other(format!(
                    "all {} instance ids are held by live instances",
                    config.lease_ids
                )),
            ));
        };
        let lease = Arc::new(Lease {
            id,
            holder,
            valid_until: AtomicU64::new(unix_ms() + LEASE_TTL.as_millis() as u64),
            lost: AtomicBool::new(false),
        });
        if let Err(e) = write_lease_file(&lease_file, id, &lease.holder) {
            // Only costs the next worker in this slot the takeover; the lease still expires.
            tracing::warn!(error = %e, "cannot record the lease in the journal directory");
        }
        tracing::info!(instance_id = id, holder = %lease.holder, taken_over, "leased instance id");
        Ok(Instance {
            id,
            lease: Some(lease),
            floor: last_ts,
        })
    }

    /// Steps 4–6: recover the journal, open the id generator, start the writer thread and the
    /// flusher.
    fn recover_and_start(
        config: &StoreConfig,
        slot: usize,
        journal_dir: &Path,
        db: &Db,
        handle: &tokio::runtime::Handle,
        instance: &Instance,
    ) -> Result<Started, StoreError> {
        // Step 4: recover.
        let recovered = journal::recover(journal_dir).map_err(|e| {
            StoreError::open(
                format!("cannot read the journal in {}", journal_dir.display()),
                e,
            )
        })?;
        if !recovered.pending.is_empty() {
            tracing::info!(rows = recovered.pending.len(), dir = %journal_dir.display(), "replaying unflushed journal rows");
        }
        let figures = RecoveredFigures {
            damaged: recovered.damage.len() as u64,
            records_lost: recovered.damage.iter().map(|d| d.records).sum(),
        };
        let state_file = config.data_dir.join(format!("ids-{}.hw", instance.id));
        let ids = Arc::new(IdGenerator::open(
            instance.id,
            SystemClock,
            &state_file,
            recovered.max_ts.max(instance.floor),
        )?);

        // Step 5: the writer thread.
        let shared = Arc::new(Shared::default());
        shared
            .backlog
            .store(recovered.pending.len(), Ordering::SeqCst);
        shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(recovered.pending);
        let flush_wake = Arc::new(Notify::new());
        let sync = match config.durability {
            Durability::Fsync => journal::Sync::Fsync,
            Durability::None => journal::Sync::None,
        };
        let writer = journal::Writer::create(
            journal_dir,
            recovered.next_segment,
            journal::WriterOptions {
                segment_bytes: SEGMENT_BYTES,
                sync,
                flush_batch: config.flush_batch,
            },
            shared.clone(),
            flush_wake.clone(),
            Some(ids.clone()),
        )
        .map_err(|e| {
            StoreError::open(
                format!(
                    "cannot create a journal segment in {}",
                    journal_dir.display()
                ),
                e,
            )
        })?;
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name(format!("c10k-journal-{slot}"))
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::open("cannot start the journal thread", e))?;

        // Step 6: the flusher.
        let flush_stats = Arc::new(FlushStats::default());
        let flush_stop = Arc::new(AtomicBool::new(false));
        let flusher = handle.spawn(
            Flusher {
                db: db.clone(),
                shared: shared.clone(),
                stats: flush_stats.clone(),
                dir: journal_dir.to_owned(),
                batch: config.flush_batch,
                interval: Duration::from_millis(config.flush_interval),
                wake: flush_wake.clone(),
                stop: flush_stop.clone(),
            }
            .run(),
        );
        Ok(Started {
            ids,
            shared,
            recovered: figures,
            tx,
            writer,
            flusher,
            flush_stats,
            flush_wake,
            flush_stop,
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn journal_dir(&self) -> &std::path::Path {
        &self.journal_dir
    }

    pub fn instance_id(&self) -> u16 {
        self.ids.instance()
    }

    /// The pool, for tests and tools.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// `n` fresh ids (`GET /ids`).
    pub fn ids(&self, n: usize) -> Result<Vec<u64>, StoreError> {
        self.check_lease()?;
        Ok(self.ids.next_ids(n)?)
    }

    fn check_lease(&self) -> Result<(), StoreError> {
        if let Some(lease) = &self.lease {
            if lease.lost.load(Ordering::SeqCst)
                || unix_ms() >= lease.valid_until.load(Ordering::SeqCst)
            {
                return Err(StoreError::LeaseLost(lease.id));
            }
        }
        Ok(())
    }

    /// Stores one message and returns it with its id once it is durable (journal mode) or
    /// committed (direct mode).
    pub async fn post(
        &self,
        room: &str,
        user: &str,
        text: &str,
        deadline: Option<Instant>,
    ) -> Result<Message, StoreError> {
        record::validate_field("room", room, record::MAX_ROOM)?;
        record::validate_field("user", user, record::MAX_USER)?;
        record::validate_field("text", text, record::MAX_TEXT)?;
        if self.config.write_mode == WriteMode::Direct {
            return self.post_direct(room, user, text, deadline).await;
        }
        // Admission: count the row before it exists, so concurrent writers cannot all slip past.
        let before = self.shared.backlog.fetch_add(1, Ordering::SeqCst);
        if before as u64 >= self.config.max_lag {
            self.shared.backlog.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Backlog {
                backlog: before,
                max_lag: self.config.max_lag,
            });
        }
        let result = self.append(room, user, text).await;
        if result.is_err() {
            self.shared.backlog.fetch_sub(1, Ordering::SeqCst);
        }
        result
    }

    async fn append(&self, room: &str, user: &str, text: &str) -> Result<Message, StoreError> {
        self.check_lease()?;
        // The writer thread assigns the id when it takes the group, so journal order is id order.
        let mut msg = Message {
            id: 0,
            room: room.to_owned(),
            user: user.to_owned(),
            text: text.to_owned(),
            ts: 0,
        };
        let (reply, rx) = oneshot::channel();
        {
            let tx = self.tx.read().unwrap_or_else(|p| p.into_inner());
            let tx = tx.as_ref().ok_or(StoreError::Closed)?;
            tx.send(journal::Append {
                msg: msg.clone(),
                reply,
            })
            .map_err(|_| StoreError::Closed)?;
        }
        match rx.await {
            Ok(Ok(id)) => {
                msg.id = id;
                msg.ts = ids::decode(id).unix_ms;
                Ok(msg)
            }
            Ok(Err(journal::AppendError::Io(e))) => {
                Err(StoreError::Journal(std::io::Error::other(e)))
            }
            Ok(Err(journal::AppendError::Ids(e))) => Err(StoreError::IdsUnavailable(e)),
            Err(_) => Err(StoreError::Closed),
        }
    }

    async fn post_direct(
        &self,
        room: &str,
        user: &str,
        text: &str,
        deadline: Option<Instant>,
    ) -> Result<Message, StoreError> {
        let db = self.db.clone();
        let (room, user, text) = (room.to_owned(), user.to_owned(), text.to_owned());
        let ts = unix_ms();
        self.on_runtime(deadline, async move {
            let id = db.insert_direct(&room, &user, &text, ts).await?;
            Ok(Message {
                id,
                room,
                user,
                text,
                ts,
            })
        })
        .await
    }

    /// Messages of `room` with ids above `after`, oldest first, at most `limit`: the database's
    /// rows merged with the durable rows not flushed yet (read-your-writes).
    pub async fn list(
        &self,
        room: &str,
        after: u64,
        limit: u32,
        deadline: Option<Instant>,
    ) -> Result<Vec<Message>, StoreError> {
        // Snapshot memory first, then query: a row flushed in between is in the database by the
        // time we ask it (the flusher drops rows only after the commit), so nothing falls through.
        let mut rows: Vec<Message> = {
            let pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Rows are in id order (the writer issues ids in journal order): skip to `after` by
            // binary search, then scan.
            let from = pending.partition_point(|p| p.msg.id <= after);
            pending
                .range(from..)
                .filter(|p| p.msg.room == room)
                .take(limit as usize)
                .map(|p| p.msg.clone())
                .collect()
        };
        let db = self.db.clone();
        let room = room.to_owned();
        let table = match self.config.write_mode {
            WriteMode::Journal => "c10k_messages",
            WriteMode::Direct => "c10k_messages_direct",
        };
        let from_db = self
            .on_runtime(deadline, async move {
                Ok(db.room_after(table, &room, after, limit).await?)
            })
            .await?;
        rows.extend(from_db);
        rows.sort_unstable_by_key(|m| m.id);
        rows.dedup_by_key(|m| m.id);
        rows.truncate(limit as usize);
        Ok(rows)
    }

    /// Runs a database future on the store's runtime and awaits its answer from any executor.
    async fn on_runtime<T: Send + 'static>(
        &self,
        deadline: Option<Instant>,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.handle.spawn(async move {
            let r = match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), fut)
                    .await
                    .unwrap_or(Err(StoreError::Deadline)),
                None => fut.await,
            };
            let _ = tx.send(r);
        });
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    pub fn stats(&self) -> StoreStats {
        let s = &self.shared;
        let f = &self.flush_stats;
        StoreStats {
            instance_id: self.ids.instance(),
            appended: s.appended.load(Ordering::Relaxed),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
            groups: s.groups.load(Ordering::Relaxed),
            flushed: f.flushed.load(Ordering::Relaxed),
            batches: f.batches.load(Ordering::Relaxed),
            db_errors: f.db_errors.load(Ordering::Relaxed),
            db_up: f.db_up.load(Ordering::Relaxed),
            backlog: s.backlog.load(Ordering::SeqCst),
            segments_deleted: f.segments_deleted.load(Ordering::Relaxed),
            journal_damaged: self.recovered.damaged,
            journal_records_lost: self.recovered.records_lost,
            pool: self.db.pool_stats(),
        }
    }

    /// Waits (blocking) until nothing is left to flush, or `timeout`. Tests and tools.
    pub fn wait_flushed(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.shared.backlog.load(Ordering::SeqCst) == 0 {
                return true;
            }
            self.flush_wake.notify_one();
            std::thread::sleep(Duration::from_millis(5));
        }
        self.shared.backlog.load(Ordering::SeqCst) == 0
    }

    /// Runs a database future on the store's runtime, blocking (tests and tools).
    pub fn block_on<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        run_blocking(&self.handle, fut)
    }

    /// Stops accepting writes, waits for the acknowledged ones, lets the flusher drain for a few
    /// seconds, records the last id timestamp and gives the lease back. Idempotent; also run on
    /// drop. What is not flushed stays in the journal for the next start.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.tx.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = w.join();
        }
        let deadline = Instant::now() + CLOSE_DRAIN;
        while Instant::now() < deadline
            && self.shared.backlog.load(Ordering::SeqCst) > 0
            && (self.flush_stats.db_up.load(Ordering::Relaxed)
                || self.flush_stats.db_errors.load(Ordering::Relaxed) == 0)
        {
            self.flush_wake.notify_one();
            std::thread::sleep(Duration::from_millis(5));
        }
        self.flush_stop.store(true, Ordering::SeqCst);
        self.flush_wake.notify_one();
        if let Some(f) = self
            .flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = run_blocking(&self.handle, async move {
                let _ = tokio::time::timeout(Duration::from_secs(2), f).await;
            });
        }
        if let Err(e) = self.ids.persist_exact() {
            tracing::warn!(error = %e, "cannot record the last id timestamp");
        }
        if let Some(lease) = &self.lease {
            release_lease(&self.handle, &self.db, lease, self.ids.high_water_unix_ms());
        }
        let db = self.db.clone();
        let _ = run_blocking(&self.handle, async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), db.close()).await;
        });
        if let Some(rt) = self.rt.lock().unwrap_or_else(|p| p.into_inner()).take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// Gives a lease back (expires it now), recording the last id timestamp issued under it.
fn release_lease(handle: &tokio::runtime::Handle, db: &Db, lease: &Lease, last_ts: u64) {
    let (db, id, holder) = (db.clone(), lease.id, lease.holder.clone());
    let released = run_blocking(handle, async move {
        tokio::time::timeout(Duration::from_secs(2), db.release(id, &holder, last_ts)).await
    });
    match released {
        Some(Ok(Ok(()))) => tracing::debug!(instance_id = id, "released the instance id lease"),
        Some(Ok(Err(e))) => {
            tracing::warn!(error = %e, instance_id = id, "cannot release the instance id lease; it expires on its own")
        }
        _ => tracing::warn!(
            instance_id = id,
            "releasing the instance id lease timed out; it expires on its own"
        ),
    }
}

/// Records in the journal directory which lease its owner holds, so the next owner of the slot
/// can take it over (see [`Store::lease`]).
fn write_lease_file(path: &Path, id: u16, holder: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{id} {holder}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Keeps the ids' persisted high-water mark ahead of the clock, off the request path.
async fn extend_high_water(ids: Arc<IdGenerator>) {
    let every = Duration::from_millis(ids::HIGH_WATER_STEP_MS / 4);
    loop {
        let ids2 = ids.clone();
        match tokio::task::spawn_blocking(move || ids2.extend_high_water()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot extend the id high-water mark"),
            Err(_) => return,
        }
        tokio::time::sleep(every).await;
    }
}

async fn renew_lease(db: Db, lease: Arc<Lease>, ids: Arc<IdGenerator>) {
    loop {
        tokio::time::sleep(LEASE_RENEW).await;
        let now = unix_ms();
        let until = now + LEASE_TTL.as_millis() as u64;
        match db
            .renew(lease.id, &lease.holder, until, ids.high_water_unix_ms())
            .await
        {
            Ok(true) => lease.valid_until.store(until, Ordering::SeqCst),
            Ok(false) => {
                tracing::error!(
                    instance_id = lease.id,
                    "instance id lease lost; refusing ids"
                );
                lease.lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, instance_id = lease.id, "cannot renew the instance id lease")
            }
        }
    }
}

/// SQLite's "database is busy/locked" (result codes 5 and 6, any extended form): transient.
/// A pool time-out on SQLite: the file is local, so the connection's pragmas were waiting out a
/// lock. (On a server database it means the server is down or unreachable: no retry, so a wrong
/// `--database` stops the start at once.)
fn sqlite_timed_out(db: &Db, e: &sqlx::Error) -> bool {
    db.dialect() == Dialect::Sqlite && matches!(e, sqlx::Error::PoolTimedOut)
}

fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|n| matches!(n & 0xff, 5 | 6)),
        _ => false,
    }
}
