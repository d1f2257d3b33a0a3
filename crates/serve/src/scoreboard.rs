//! The scoreboard: a shared memory page the master and every worker process read and write
//! without locks (Apache's scoreboard, uWSGI's stats area are the models).
//!
//! The master creates it (`memfd_create`, so nothing touches the file system) before starting any
//! worker and passes the descriptor down; each worker owns one slot and writes only to it with
//! relaxed atomic stores. The master reads every slot: heartbeats for `--timeout`, readiness for
//! boot failures, counters for status.
//!
//! Beside the slots, each worker has a [`Stats`] block (requests by status class, bytes, a
//! fixed-bucket histogram of request durations) and a table of [`ENTRIES_PER_SLOT`] connection
//! entries: the processlist. A connection claims a free entry with one compare-and-swap on its
//! state word when it opens and frees it when it closes; in between, only its own thread writes
//! it, so the request path never takes a lock. Text fields (method, path, client) are published
//! under a per-entry sequence counter (a seqlock), so the master never shows a torn path. When
//! the table is full the connection is served and counted, just not listed. The memfd is sized
//! for every slot, but pages are only touched when used: the master reads entries only up to the
//! highest index a worker ever claimed.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{
    fence, AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::MmapRaw;

/// Most worker slots (the ceiling for `--workers` and SIGTTIN).
pub const MAX_SLOTS: usize = 256;
const SLOT_SIZE: usize = 128;
const HEADER: usize = 128;
const MAGIC: u64 = 0x6331_306b_5342_0003; // "c10kSB" v3
const STATS_SIZE: usize = 256;
/// Connection entries per worker slot (the processlist); more connections are served unlisted.
pub const ENTRIES_PER_SLOT: usize = 256;
const ENTRY_SIZE: usize = 192;
/// Bytes of the request path kept in an entry; longer paths are cut.
pub const PATH_BYTES: usize = 96;
const STATS_AT: usize = HEADER + MAX_SLOTS * SLOT_SIZE;
const ENTRIES_AT: usize = STATS_AT + MAX_SLOTS * STATS_SIZE;
const STORE_AT: usize = ENTRIES_AT + MAX_SLOTS * ENTRIES_PER_SLOT * ENTRY_SIZE;
const STORE_SIZE: usize = 128;
const TOTAL: usize = STORE_AT + MAX_SLOTS * STORE_SIZE;

/// Upper bounds, in microseconds, of the request-duration histogram buckets (Prometheus' default
/// buckets from 1 ms to 10 s); one more bucket counts everything slower.
pub const BUCKETS_US: [u64; 14] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];

/// The scoreboard's first bytes: what the master says about the whole server, read by workers
/// too (readiness on the public port, `--health-path`).
#[repr(C, align(64))]
pub struct Header {
    magic: AtomicU64,
    /// The number of workers the master keeps (`--workers`, moved by TTIN/TTOU).
    pub target: AtomicU32,
    /// 1 once every worker of the first generation has booted; it stays 1 through restarts.
    pub booted: AtomicU32,
    /// 1 from SIGTERM on while `--drain-delay` runs: readiness answers 503.
    pub draining: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER);

/// One worker's slot. All fields are atomics living in the shared mapping.
#[repr(C, align(64))]
pub struct Slot {
    pub pid: AtomicU32,
    /// 1 once the worker has built its application and is accepting.
    pub ready: AtomicU32,
    /// Milliseconds since the Unix epoch of the worker's last sign of life.
    pub heartbeat_ms: AtomicU64,
    pub requests: AtomicU64,
    pub started_ms: AtomicU64,
    /// Requests being handled right now.
    pub busy: AtomicU32,
    /// Open client connections.
    pub connections: AtomicU32,
    /// How many workers have run in this slot (respawns + 1).
    pub generation: AtomicU32,
    _pad: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Slot>() <= SLOT_SIZE);

impl Slot {
    pub fn beat(&self) {
        self.heartbeat_ms.store(now_ms(), Relaxed);
    }
}

/// A worker's request counters, written by its connections, read by the master.
#[repr(C, align(64))]
pub struct Stats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub status: [AtomicU64; 5],
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Connections served but not listed because the entry table was full.
    pub unlisted: AtomicU64,
    /// uwsgi connections closed unanswered: a malformed packet, or a peer not in
    /// `--uwsgi-allow-from`.
    pub uwsgi_refused: AtomicU64,
    /// Sum of request durations in microseconds (the histogram's `_sum`).
    pub duration_us: AtomicU64,
    /// Non-cumulative bucket counts: `buckets[i]` counts durations ≤ `BUCKETS_US[i]` and above
    /// the bucket before; the last counts everything slower.
    pub buckets: [AtomicU64; BUCKETS_US.len() + 1],
    /// One past the highest entry index ever claimed: the master reads no further.
    pub entries_hwm: AtomicU32,
    /// Where the next claim starts looking.
    hint: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Stats>() <= STATS_SIZE);

impl Stats {
    /// Records one answered request.
    pub fn record(&self, status: u16, duration_us: u64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.status[class].fetch_add(1, Relaxed);
        self.duration_us.fetch_add(duration_us, Relaxed);
        let bucket = BUCKETS_US
            .iter()
            .position(|&b| duration_us <= b)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
    }

    fn clear(&self) {
        for c in [
            &self.accepted,
            &self.bytes_in,
            &self.bytes_out,
            &self.unlisted,
            &self.uwsgi_refused,
            &self.duration_us,
        ]
        .into_iter()
        .chain(self.status.iter())
        .chain(self.buckets.iter())
        {
            c.store(0, Relaxed);
        }
        // Entries are left alone: a previous worker's connections are gone, and `reset` frees
        // whatever it left claimed.
        self.hint.store(0, Relaxed);
    }

    /// A plain copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            accepted: self.accepted.load(Relaxed),
            status: std::array::from_fn(|i| self.status[i].load(Relaxed)),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            unlisted: self.unlisted.load(Relaxed),
            uwsgi_refused: self.uwsgi_refused.load(Relaxed),
            duration_us: self.duration_us.load(Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
        }
    }
}

/// Counters copied out of [`Stats`]; they add up across workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub accepted: u64,
    pub status: [u64; 5],
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub unlisted: u64,
    pub uwsgi_refused: u64,
    pub duration_us: u64,
    pub buckets: [u64; BUCKETS_US.len() + 1],
}

impl StatsSnapshot {
    pub fn add(&mut self, o: &StatsSnapshot) {
        self.accepted += o.accepted;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.unlisted += o.unlisted;
        self.uwsgi_refused += o.uwsgi_refused;
        self.duration_us += o.duration_us;
        for (a, b) in self.status.iter_mut().zip(o.status) {
            *a += b;
        }
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
    }

    /// Requests answered (the histogram's `_count`).
    pub fn requests(&self) -> u64 {
        self.status.iter().sum()
    }
}

/// An application's write-path figures (journal, flusher, database pool), as `/status` and
/// `/metrics` report them. The server knows these names, not the store behind them: an
/// application that has a write path converts its own figures into this (see
/// [`crate::Hosted::with_figures`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WritePathFigures {
    /// Records appended to the journal.
    pub appended: u64,
    pub fsyncs: u64,
    /// Group commits (one fsync for many records).
    pub groups: u64,
    /// Rows written to the database.
    pub flushed: u64,
    /// Database statements (batches) written.
    pub batches: u64,
    pub db_errors: u64,
    /// The last database attempt succeeded.
    pub db_up: bool,
    /// Acknowledged rows not yet in the database.
    pub backlog: u64,
    pub segments_deleted: u64,
    pub pool_size: u64,
    pub pool_idle: u64,
    pub pool_max: u64,
    /// The backlog at which the application refuses new writes (`--max-lag`); 0 when it has no
    /// such limit. Readiness (`/readyz`, `--health-path`) turns 503 while a worker is there.
    pub max_backlog: u64,
    /// Damaged ranges found inside journal segments at start-up (skipped; the records after them
    /// were replayed), and the records lost in them.
    pub journal_damaged: u64,
    pub journal_records_lost: u64,
}

/// A worker's write-path figures, copied in by the worker about twice a second; the application
/// owns them, the master only reads the copy.
#[repr(C, align(64))]
pub struct StoreFigures {
    /// 1 once the worker has published figures (it has a write path).
    present: AtomicU64,
    values: [AtomicU64; 15],
}

const _: () = assert!(std::mem::size_of::<StoreFigures>() <= STORE_SIZE);

impl StoreFigures {
    pub fn publish(&self, s: &WritePathFigures) {
        let values = [
            s.appended,
            s.fsyncs,
            s.groups,
            s.flushed,
            s.batches,
            s.db_errors,
            u64::from(s.db_up),
            s.backlog,
            s.segments_deleted,
            s.pool_size,
            s.pool_idle,
            s.pool_max,
            s.max_backlog,
            s.journal_damaged,
            s.journal_records_lost,
        ];
        for (a, v) in self.values.iter().zip(values) {
            a.store(v, Relaxed);
        }
        self.present.store(1, Release);
    }

    /// The last figures published, or `None` for a worker without a write path.
    pub fn snapshot(&self) -> Option<WritePathFigures> {
        if self.present.load(Acquire) != 1 {
            return None;
        }
        let v: [u64; 15] = std::array::from_fn(|i| self.values[i].load(Relaxed));
        Some(WritePathFigures {
            appended: v[0],
            fsyncs: v[1],
            groups: v[2],
            flushed: v[3],
            batches: v[4],
            db_errors: v[5],
            db_up: v[6] == 1,
            backlog: v[7],
            segments_deleted: v[8],
            pool_size: v[9],
            pool_idle: v[10],
            pool_max: v[11],
            max_backlog: v[12],
            journal_damaged: v[13],
            journal_records_lost: v[14],
        })
    }
}

/// What a listed connection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u32)]
pub enum ConnState {
    /// Waiting for (the rest of) a request.
    Reading = 1,
    /// The application is running the request.
    Handling = 2,
    /// Sending the response.
    Writing = 3,
    /// Between requests on a keep-alive connection.
    KeepAlive = 4,
}

impl ConnState {
    fn from_u32(v: u32) -> Option<ConnState> {
        Some(match v {
            1 => ConnState::Reading,
            2 => ConnState::Handling,
            3 => ConnState::Writing,
            4 => ConnState::KeepAlive,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Reading => "reading",
            ConnState::Handling => "handling",
            ConnState::Writing => "writing",
            ConnState::KeepAlive => "keepalive",
        }
    }
}

const FREE: u32 = 0;

/// One connection of the processlist. Only the connection that claimed it writes to it.
#[repr(C, align(64))]
pub struct Entry {
    /// `FREE` or a [`ConnState`].
    state: AtomicU32,
    /// Odd while the text fields are being written.
    seq: AtomicU32,
    /// [`mono_us`] when the current state began.
    since_us: AtomicU64,
    /// [`mono_us`] when the current (or last) request began.
    started_us: AtomicU64,
    /// Requests served on this connection.
    requests: AtomicU64,
    /// Client: 16 address bytes (IPv4 mapped into IPv6), then port (2 bytes), then family.
    peer: [AtomicU64; 3],
    method: AtomicU64,
    path_len: AtomicU64,
    path: [AtomicU64; PATH_BYTES / 8],
}

const _: () = assert!(std::mem::size_of::<Entry>() <= ENTRY_SIZE);

impl Entry {
    pub fn set_state(&self, state: ConnState, now_us: u64) {
        self.since_us.store(now_us, Relaxed);
        self.state.store(state as u32, Release);
    }

    /// A request begins: publish its method and target (`path?query`, cut at [`PATH_BYTES`]).
    pub fn begin_request(&self, method: &str, path: &str, query: Option<&str>, now_us: u64) {
        let mut target = [0u8; PATH_BYTES];
        let mut len = 0;
        let q = query.map(|q| ["?", q]).unwrap_or(["", ""]);
        for part in [path, q[0], q[1]] {
            let n = part.len().min(PATH_BYTES - len);
            target[len..len + n].copy_from_slice(&part.as_bytes()[..n]);
            len += n;
        }
        let seq = self.seq.load(Relaxed);
        self.seq.store(seq.wrapping_add(1), Relaxed);
        fence(Release);
        self.method.store(pack8(method.as_bytes()), Relaxed);
        let bytes = &target[..len];
        self.path_len.store(bytes.len() as u64, Relaxed);
        for (word, chunk) in self.path.iter().zip(bytes.chunks(8)) {
            word.store(pack8(chunk), Relaxed);
        }
        self.seq.store(seq.wrapping_add(2), Release);
        // Only this connection writes the entry: no read-modify-write needed.
        self.requests
            .store(self.requests.load(Relaxed) + 1, Relaxed);
        self.started_us.store(now_us, Relaxed);
        self.set_state(ConnState::Handling, now_us);
    }

    fn set_peer(&self, peer: Option<std::net::SocketAddr>) {
        let mut raw = [0u8; 24];
        match peer {
            Some(std::net::SocketAddr::V4(a)) => {
                raw[..16].copy_from_slice(&a.ip().to_ipv6_mapped().octets());
                raw[16..18].copy_from_slice(&a.port().to_le_bytes());
                raw[18] = 4;
            }
            Some(std::net::SocketAddr::V6(a)) => {
                raw[..16].copy_from_slice(&a.ip().octets());
                raw[16..18].copy_from_slice(&a.port().to_le_bytes());
                raw[18] = 6;
            }
            None => {}
        }
        for (word, chunk) in self.peer.iter().zip(raw.chunks(8)) {
            word.store(pack8(chunk), Relaxed);
        }
    }

    /// A consistent copy, or `None` when the entry is free (or kept changing while read).
    pub fn snapshot(&self) -> Option<EntrySnapshot> {
        for _ in 0..4 {
            let state = ConnState::from_u32(self.state.load(Acquire))?;
            let seq = self.seq.load(Acquire);
            if seq % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let method = unpack8(self.method.load(Relaxed));
            let len = (self.path_len.load(Relaxed) as usize).min(PATH_BYTES);
            let mut path = Vec::with_capacity(len);
            for w in &self.path {
                path.extend_from_slice(&w.load(Relaxed).to_le_bytes());
            }
            path.truncate(len);
            let mut peer = [0u8; 24];
            for (chunk, w) in peer.chunks_mut(8).zip(&self.peer) {
                chunk.copy_from_slice(&w.load(Relaxed).to_le_bytes());
            }
            let since_us = self.since_us.load(Relaxed);
            let started_us = self.started_us.load(Relaxed);
            let requests = self.requests.load(Relaxed);
            fence(Acquire);
            if self.seq.load(Relaxed) != seq {
                continue;
            }
            let ip: [u8; 16] = peer[..16].try_into().unwrap_or([0; 16]);
            let port = u16::from_le_bytes([peer[16], peer[17]]);
            let v6 = std::net::Ipv6Addr::from(ip);
            let client = match peer[18] {
                4 => v6
                    .to_ipv4_mapped()
                    .map(|v4| std::net::SocketAddr::from((v4, port))),
                6 => Some(std::net::SocketAddr::from((v6, port))),
                _ => None,
            };
            return Some(EntrySnapshot {
                state,
                since_us,
                started_us,
                requests,
                client,
                method: String::from_utf8_lossy(trim_nul(&method)).into_owned(),
                path: String::from_utf8_lossy(&path).into_owned(),
            });
        }
        None
    }
}

/// A listed connection as the master sees it.
#[derive(Clone, Debug)]
pub struct EntrySnapshot {
    pub state: ConnState,
    pub since_us: u64,
    pub started_us: u64,
    /// Requests begun on this connection; 0 while the first is still being read.
    pub requests: u64,
    /// `None` for unix-socket clients.
    pub client: Option<std::net::SocketAddr>,
    pub method: String,
    pub path: String,
}

fn pack8(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(b)
}

fn unpack8(w: u64) -> [u8; 8] {
    w.to_le_bytes()
}

fn trim_nul(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

pub struct Scoreboard {
    map: MmapRaw,
    fd: OwnedFd,
}

impl std::fmt::Debug for Scoreboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoreboard").field("fd", &self.fd).finish()
    }
}

impl Scoreboard {
    /// Creates a zeroed scoreboard in anonymous shared memory.
    pub fn create() -> std::io::Result<Scoreboard> {
        // SAFETY: the name is a valid C string; the returned fd is checked.
        let fd = unsafe { libc::memfd_create(c"c10k-scoreboard".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = crate::sys::move_fd_high(unsafe { OwnedFd::from_raw_fd(fd) })?;
        let len = TOTAL;
        let file = std::fs::File::from(fd.try_clone()?);
        file.set_len(len as u64)?;
        let sb = Scoreboard::map(fd)?;
        sb.header_magic().store(MAGIC, Relaxed);
        Ok(sb)
    }

    /// Maps a scoreboard inherited from the master.
    ///
    /// # Safety
    /// `fd` must be the scoreboard descriptor the master passed down, owned by nobody else.
    pub unsafe fn from_raw_fd(fd: RawFd) -> std::io::Result<Scoreboard> {
        // SAFETY: per the contract above.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sb = Scoreboard::map(fd)?;
        if sb.header_magic().load(Relaxed) != MAGIC {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "inherited descriptor is not a c10k scoreboard",
            ));
        }
        Ok(sb)
    }

    fn map(fd: OwnedFd) -> std::io::Result<Scoreboard> {
        let file = std::fs::File::from(fd.try_clone()?);
        let len = file.metadata()?.len() as usize;
        if len < TOTAL {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "scoreboard too small",
            ));
        }
        let map = MmapRaw::map_raw(&file)?;
        Ok(Scoreboard { map, fd })
    }

    fn header_magic(&self) -> &AtomicU64 {
        &self.header().magic
    }

    /// The server-wide words the master writes for every process to read.
    pub fn header(&self) -> &Header {
        // SAFETY: the mapping is page-aligned and at least HEADER bytes long (Header fits, see
        // the assertion beside it); every field is an atomic, with no invalid bit patterns, and
        // the memory lives as long as `self`.
        unsafe { &*(self.map.as_mut_ptr() as *const Header) }
    }

    /// The slot of worker `index` (`index < MAX_SLOTS`).
    pub fn slot(&self, index: usize) -> &Slot {
        assert!(index < MAX_SLOTS, "scoreboard slot {index} out of range");
        // SAFETY: in bounds (checked above and in `map`), 64-byte aligned (page-aligned base,
        // HEADER and SLOT_SIZE multiples of 64), and every field is an atomic.
        unsafe { &*(self.map.as_mut_ptr().add(HEADER + index * SLOT_SIZE) as *const Slot) }
    }

    /// The request counters of worker `index`.
    pub fn stats(&self, index: usize) -> &Stats {
        assert!(index < MAX_SLOTS, "scoreboard slot {index} out of range");
        // SAFETY: in bounds (checked above and in `map`), 64-byte aligned, all fields atomics.
        unsafe { &*(self.map.as_mut_ptr().add(STATS_AT + index * STATS_SIZE) as *const Stats) }
    }

    /// The write-path figures of worker `index`.
    pub fn store(&self, index: usize) -> &StoreFigures {
        assert!(index < MAX_SLOTS, "scoreboard slot {index} out of range");
        // SAFETY: in bounds (checked above and in `map`), 64-byte aligned, all fields atomics.
        unsafe {
            &*(self.map.as_mut_ptr().add(STORE_AT + index * STORE_SIZE) as *const StoreFigures)
        }
    }

    /// Entry `i` of worker `index`'s processlist.
    pub fn entry(&self, index: usize, i: usize) -> &Entry {
        assert!(
            index < MAX_SLOTS && i < ENTRIES_PER_SLOT,
            "scoreboard entry {index}/{i} out of range"
        );
        let at = ENTRIES_AT + (index * ENTRIES_PER_SLOT + i) * ENTRY_SIZE;
        // SAFETY: in bounds (checked above and in `map`), 64-byte aligned (ENTRY_SIZE and every
        // offset are multiples of 64), all fields atomics.
        unsafe { &*(self.map.as_mut_ptr().add(at) as *const Entry) }
    }

    /// Claims a free entry of worker `index` for a new connection, or `None` when all are
    /// taken. Lock-free: one compare-and-swap per entry tried, starting at a hint.
    pub fn claim(
        &self,
        index: usize,
        peer: Option<std::net::SocketAddr>,
        now_us: u64,
    ) -> Option<usize> {
        let stats = self.stats(index);
        let start = stats.hint.load(Relaxed) as usize % ENTRIES_PER_SLOT;
        for k in 0..ENTRIES_PER_SLOT {
            let i = (start + k) % ENTRIES_PER_SLOT;
            let e = self.entry(index, i);
            if e.state.load(Relaxed) != FREE {
                continue;
            }
            if e.state
                .compare_exchange(FREE, ConnState::Reading as u32, Acquire, Relaxed)
                .is_ok()
            {
                stats.hint.store((i + 1) as u32, Relaxed);
                stats.entries_hwm.fetch_max((i + 1) as u32, Relaxed);
                e.requests.store(0, Relaxed);
                e.path_len.store(0, Relaxed);
                e.method.store(0, Relaxed);
                e.started_us.store(now_us, Relaxed);
                e.set_peer(peer);
                e.set_state(ConnState::Reading, now_us);
                return Some(i);
            }
        }
        stats.unlisted.fetch_add(1, Relaxed);
        None
    }

    /// Frees entry `i` of worker `index` when its connection closes.
    pub fn release(&self, index: usize, i: usize) {
        self.entry(index, i).state.store(FREE, Release);
        // Prefer low entries, so the table a reader scans stays as short as the concurrency.
        let stats = self.stats(index);
        if (i as u32) < stats.hint.load(Relaxed) {
            stats.hint.store(i as u32, Relaxed);
        }
    }

    /// Every listed connection of worker `index`, with its entry index.
    pub fn entries(&self, index: usize) -> Vec<(usize, EntrySnapshot)> {
        let hwm = (self.stats(index).entries_hwm.load(Relaxed) as usize).min(ENTRIES_PER_SLOT);
        (0..hwm)
            .filter_map(|i| self.entry(index, i).snapshot().map(|e| (i, e)))
            .collect()
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Clears a slot before a new worker starts in it, keeping its generation count.
    pub fn reset(&self, index: usize, pid: u32) {
        let s = self.slot(index);
        s.pid.store(pid, Relaxed);
        s.ready.store(0, Relaxed);
        s.requests.store(0, Relaxed);
        s.busy.store(0, Relaxed);
        s.connections.store(0, Relaxed);
        s.started_ms.store(now_ms(), Relaxed);
        s.heartbeat_ms.store(now_ms(), Relaxed);
        s.generation.fetch_add(1, Relaxed);
        self.stats(index).clear();
        self.store(index).present.store(0, Relaxed);
        // A dead worker cannot free its entries; its successor starts with an empty table.
        let hwm = self.stats(index).entries_hwm.swap(0, Relaxed) as usize;
        for i in 0..hwm.min(ENTRIES_PER_SLOT) {
            self.entry(index, i).state.store(FREE, Relaxed);
        }
    }
}

/// Microseconds of `CLOCK_MONOTONIC`: one clock for every process on the machine, so a worker's
/// timestamps and the master's "now" compare directly. (`Instant` hides its value; the clock read
/// costs the same.)
pub fn mono_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_between_two_mappings() {
        let a = Scoreboard::create().unwrap();
        let dup = a.fd.try_clone().unwrap();
        let raw = std::os::fd::IntoRawFd::into_raw_fd(dup);
        // SAFETY: raw was just duplicated for this mapping alone.
        let b = unsafe { Scoreboard::from_raw_fd(raw) }.unwrap();
        a.reset(3, 42);
        b.slot(3).requests.fetch_add(7, Relaxed);
        assert_eq!(a.slot(3).pid.load(Relaxed), 42);
        assert_eq!(a.slot(3).requests.load(Relaxed), 7);
        assert_eq!(a.slot(3).generation.load(Relaxed), 1);
    }

    #[test]
    fn entries_claim_publish_release() {
        let sb = Scoreboard::create().unwrap();
        sb.reset(1, 7);
        let peer = "10.1.2.3:4567".parse().ok();
        let i = sb.claim(1, peer, 100).unwrap();
        let long = format!("/{}", "x".repeat(200));
        sb.entry(1, i).begin_request("GET", &long, Some("a=1"), 200);
        let list = sb.entries(1);
        assert_eq!(list.len(), 1);
        let e = &list[0].1;
        assert_eq!(e.state, ConnState::Handling);
        assert_eq!(e.method, "GET");
        assert_eq!(e.path.len(), PATH_BYTES);
        assert!(long.starts_with(&e.path));
        assert_eq!(e.client, peer);
        assert_eq!((e.started_us, e.requests), (200, 1));
        let j = sb.claim(1, "[::1]:9".parse().ok(), 300).unwrap();
        assert_ne!(i, j);
        sb.entry(1, j)
            .begin_request("POST", "/echo", Some("a=1"), 300);
        assert_eq!(sb.entries(1)[1].1.path, "/echo?a=1");
        sb.release(1, i);
        assert_eq!(sb.entries(1).len(), 1);
        assert_eq!(sb.entries(1)[0].1.client, "[::1]:9".parse().ok());
        sb.release(1, j);
        assert!(sb.entries(1).is_empty());
    }

    #[test]
    fn full_table_counts_unlisted() {
        let sb = Scoreboard::create().unwrap();
        sb.reset(0, 1);
        for _ in 0..ENTRIES_PER_SLOT {
            assert!(sb.claim(0, None, 1).is_some());
        }
        assert!(sb.claim(0, None, 1).is_none());
        assert_eq!(sb.stats(0).unlisted.load(Relaxed), 1);
        // A respawn frees what the dead worker held.
        sb.reset(0, 2);
        assert!(sb.entries(0).is_empty());
        assert!(sb.claim(0, None, 1).is_some());
    }

    #[test]
    fn histogram_buckets() {
        let sb = Scoreboard::create().unwrap();
        let st = sb.stats(2);
        st.record(200, 500);
        st.record(404, 1_000);
        st.record(503, 1_001);
        st.record(200, 99_000_000);
        let s = st.snapshot();
        assert_eq!(s.status, [0, 2, 0, 1, 1]);
        assert_eq!(s.buckets[0], 2);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(s.buckets[BUCKETS_US.len()], 1);
        assert_eq!(s.requests(), 4);
    }
}
