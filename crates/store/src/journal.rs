//! The write-behind journal: where a message is made durable before the client hears "201".
//!
//! The main design choice is **group commit on one writer thread**. Requests hand their record to
//! the thread over a channel and wait on a `tokio::sync::oneshot` (which any executor can await,
//! so `block_on` workers and tokio workers use the same code). The thread takes every record
//! waiting at that moment, writes them with one `write`, makes them durable with one
//! `fdatasync`, and only then answers them all. While one fsync runs the next group gathers, so
//! the fsync rate stays at what the disk sustains while the write rate grows with concurrency.
//! The thread also issues the group's ids (one id-generator call per group), so the journal, the
//! in-memory rows and the flush order are all in id order: a reader paging with `after=ID` never
//! sees a row appear behind one it has already read (within one worker process).
//!
//! On disk a journal is a directory of segment files `0000000000000001.log`, ... each a sequence
//! of records (see [`crate::record`]), plus a `checkpoint` file naming the segment and offset up
//! to which the database has committed. Recovery reads from the checkpoint on, cuts a torn or
//! corrupt tail (logging its offset), and hands the unflushed rows back; the writer then starts a
//! fresh segment. Segments wholly below the checkpoint are deleted.
//!
//! One journal belongs to one process (`<data-dir>/journal-<slot>`): a shared journal would need a
//! cross-process lock on every append, exactly the contention this path exists to avoid.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use crate::record::{self, Message};

/// An exclusive lock on a journal directory, held for the life of the store: two processes
/// appending to one journal would interleave records. `flock` locks vanish with the process, so a
/// `kill -9`ed worker never leaves a stale lock behind.
///
/// The lock file names its holder (`pid ppid`). A holder started by the same parent as us is the
/// worker we replace, finishing its last requests: we wait for it. Any other holder is another
/// server on the same `--data-dir`: we refuse at once, naming it.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Why a journal directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("in use by another process (pid {pid}, started by pid {parent}); is another c10k server running on this --data-dir?")]
    Busy { pid: u32, parent: u32 },
    #[error("still in use by the worker being replaced (pid {pid}) after {waited_s} s")]
    Predecessor { pid: u32, waited_s: u64 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Holder and its parent, as written in a lock file; `None` when unreadable.
fn read_holder(path: &Path) -> Option<(u32, u32)> {
    let text = fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace().map(|s| s.parse::<u32>());
    match (it.next(), it.next()) {
        (Some(Ok(pid)), Some(Ok(parent))) => Some((pid, parent)),
        _ => None,
    }
}

impl DirLock {
    /// Takes the lock. A holder that is our sibling (same parent process: the worker being
    /// replaced) or ourselves is waited for up to `wait`; any other holder is refused at once.
    pub fn acquire(dir: &Path, wait: std::time::Duration) -> Result<DirLock, LockError> {
        use std::os::fd::AsRawFd;
        let path = dir.join("LOCK");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        let start = std::time::Instant::now();
        let me = std::process::id();
        let parent = std::os::unix::process::parent_id();
        let mut logged = false;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is passed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                // Name ourselves for whoever finds the lock taken.
                file.set_len(0)?;
                use std::io::Seek;
                file.seek(io::SeekFrom::Start(0))?;
                writeln!(file, "{me} {parent}")?;
                return Ok(DirLock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(err.into());
            }
            let holder = read_holder(&path);
            // A lock held only for a moment is a probe (`data_dir_holder`) or a holder that has
            // not written its name yet: look again before judging whose it is.
            let settling = start.elapsed() < std::time::Duration::from_millis(300);
            let sibling = settling
                || match holder {
                    Some((pid, p)) => pid == me || p == parent,
                    None => false,
                };
            if !sibling {
                let (pid, parent) = holder.unwrap_or((0, 0));
                return Err(LockError::Busy { pid, parent });
            }
            if start.elapsed() >= wait {
                return Err(LockError::Predecessor {
                    pid: holder.map_or(0, |h| h.0),
                    waited_s: wait.as_secs(),
                });
            }
            if !logged {
                tracing::info!(dir = %dir.display(), holder = holder.map_or(0, |h| h.0),
                    "journal is locked by the worker being replaced; waiting for it to exit");
                logged = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// Whether another live process holds a journal lock under `data_dir` (`journal-*/LOCK`), and
/// who: `(pid, parent pid)` as it wrote them. Probes without creating anything; a server checks
/// this before it starts its workers, so a second server on one `--data-dir` is refused at once.
pub fn data_dir_holder(data_dir: &Path) -> Option<(u32, u32)> {
    use std::os::fd::AsRawFd;
    let entries = fs::read_dir(data_dir).ok()?;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("journal-") {
            continue;
        }
        let path = entry.path().join("LOCK");
        let Ok(file) = OpenOptions::new().read(true).open(&path) else {
            continue;
        };
        // SAFETY: flock on a descriptor we own; no memory is passed. Closing the file (at the
        // end of this iteration) releases a lock we got.
        let got = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !got && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
            return Some(read_holder(&path).unwrap_or((0, 0)));
        }
    }
    None
}

/// Where a record ends: the checkpoint unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// A durable row the database does not have yet.
#[derive(Clone, Debug)]
pub struct Pending {
    pub msg: Message,
    pub end: Position,
}

/// What the writer thread, the flusher and the request path share.
#[derive(Debug, Default)]
pub struct Shared {
    /// Durable, unflushed rows in journal (= id) order. Read-your-writes reads it; the flusher
    /// drains its front.
    pub pending: Mutex<VecDeque<Pending>>,
    /// Rows admitted but not yet in the database (admission counts before the journal write, so
    /// the `--max-lag` check cannot be raced past).
    pub backlog: AtomicUsize,
    pub appended: AtomicU64,
    pub fsyncs: AtomicU64,
    pub groups: AtomicU64,
    pub active_segment: AtomicU64,
    /// Set when a write failed in a way the writer cannot undo; appends are refused after it.
    pub broken: AtomicBool,
}

/// The durability of an acknowledged write; see the crate docs for the loss window of `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    Fsync,
    None,
}

/// Why an append failed; cloned to every writer of the failed group.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AppendError {
    #[error("journal write failed: {0}")]
    Io(String),
    #[error("id generator: {0}")]
    Ids(String),
}

/// The answer to one append: the id the writer gave the record.
pub type Reply = tokio::sync::oneshot::Sender<Result<u64, AppendError>>;

pub struct Append {
    /// The row; the writer fills in `id` and `ts` when it has an id generator.
    pub msg: Message,
    pub reply: Reply,
}

/// The result of reading a journal directory at start-up.
#[derive(Debug, Default)]
pub struct Recovered {
    pub pending: Vec<Pending>,
    /// Segment number the writer should start with.
    pub next_segment: u64,
    /// Newest id timestamp found (Unix ms), a floor for the id generator.
    pub max_ts: u64,
    /// Tails cut: (segment file, offset, why).
    pub cut: Vec<(PathBuf, u64, String)>,
    /// Damaged ranges skipped inside segments (records after them were replayed).
    pub damage: Vec<Damage>,
}

pub fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:016}.log"))
}

fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_suffix(".log")
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

pub fn read_checkpoint(dir: &Path) -> Position {
    let text = fs::read_to_string(dir.join("checkpoint")).unwrap_or_default();
    let mut it = text.split_whitespace().map(|s| s.parse::<u64>());
    match (it.next(), it.next()) {
        (Some(Ok(segment)), Some(Ok(offset))) => Position { segment, offset },
        // Missing or unreadable: replay everything; inserts are idempotent.
        _ => Position::default(),
    }
}

/// Records that the database holds everything up to `pos`. Not synced: a stale checkpoint only
/// means an idempotent replay of rows the database already has.
pub fn write_checkpoint(dir: &Path, pos: Position) -> io::Result<()> {
    let tmp = dir.join("checkpoint.tmp");
    fs::write(&tmp, format!("{} {}\n", pos.segment, pos.offset))?;
    fs::rename(tmp, dir.join("checkpoint"))
}

/// Deletes segments that are wholly below `pos` and are not the one being written.
pub fn delete_flushed(dir: &Path, pos: Position, active: u64) -> io::Result<usize> {
    let mut n = 0;
    for seg in segments(dir)? {
        if seg < pos.segment && seg < active {
            fs::remove_file(segment_path(dir, seg))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Damage found inside a journal segment at start-up: bytes that are not valid records, followed
/// by valid records that were replayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub segment: PathBuf,
    /// The byte range that was skipped.
    pub from: u64,
    pub to: u64,
    /// Records lost in that range, as far as their length fields tell (at least 1).
    pub records: u64,
    pub why: String,
    /// Where the damaged segment was copied, untouched, for recovery by hand.
    pub copy: Option<PathBuf>,
}

/// The offset of the first valid record after `from`, if any: a record whose length is in range
/// and whose checksum and payload hold, with an id above `after` (ids only grow in a journal).
fn resync(buf: &[u8], from: usize, after: u64) -> Option<usize> {
    (from + 1..buf.len().saturating_sub(record::HEADER - 1)).find(|&off| {
        // Cheap header test first: almost every offset fails it.
        let len = u32::from_le_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]);
        len as usize <= record::MAX_PAYLOAD
            && off + record::HEADER + len as usize <= buf.len()
            && matches!(record::read_record(buf, off), Ok(Some((m, _))) if m.id > after)
    })
}

/// How many records the damaged range `[from, to)` held, walking its length fields while they
/// make sense; whatever cannot be walked counts as one record.
fn records_in(buf: &[u8], from: usize, to: usize) -> u64 {
    let mut n = 0;
    let mut off = from;
    while off < to {
        n += 1;
        let Some(h) = buf.get(off..off + 4) else {
            break;
        };
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let next = off + record::HEADER + len;
        if len > record::MAX_PAYLOAD || next > to {
            break;
        }
        off = next;
    }
    n.max(1)
}

/// Copies a damaged segment aside (`<segment>.damaged`), keeping an earlier copy if there is one.
fn keep_copy(path: &Path) -> io::Result<PathBuf> {
    let mut name = path.as_os_str().to_owned();
    name.push(".damaged");
    let copy = PathBuf::from(name);
    if !copy.exists() {
        let tmp = copy.with_extension("damaged.tmp");
        fs::copy(path, &tmp)?;
        File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, &copy)?;
    }
    Ok(copy)
}

/// The bytes `range` of the segment at `path` (whose content is `buf`) as [`Damage`]: the segment
/// is copied aside first, and the loss is logged as an error saying `what`.
fn damaged(path: &Path, buf: &[u8], range: Range<usize>, why: &str, what: &str) -> Damage {
    let copy = keep_copy(path);
    let damage = Damage {
        segment: path.to_owned(),
        from: range.start as u64,
        to: range.end as u64,
        records: records_in(buf, range.start, range.end),
        why: why.to_owned(),
        copy: copy.as_ref().ok().cloned(),
    };
    tracing::error!(
        segment = %path.display(),
        from = damage.from,
        to = damage.to,
        bytes = damage.to - damage.from,
        records_lost = damage.records,
        why,
        copy = %copy.as_ref().map_or_else(|e| format!("cannot copy: {e}"), |c| c.display().to_string()),
        "{what}"
    );
    damage
}

/// Reads every unflushed record. Never panics on file content.
///
/// A torn or corrupt *tail* of the newest segment (nothing valid after it: a write the crash cut
/// short, never acknowledged under `--durability fsync`) is cut. Bad bytes with valid records
/// after them are damage, not a tail: the segment is copied aside untouched, reading resumes at
/// the next record whose header and checksum hold, and the range is reported in
/// [`Recovered::damage`] — so at most the damaged records are lost.
pub fn recover(dir: &Path) -> io::Result<Recovered> {
    fs::create_dir_all(dir)?;
    let checkpoint = read_checkpoint(dir);
    let mut out = Recovered::default();
    let segs = segments(dir)?;
    let newest = segs.last().copied();
    let mut last_id = 0;
    for &seg in &segs {
        if seg < checkpoint.segment {
            fs::remove_file(segment_path(dir, seg))?;
            continue;
        }
        let path = segment_path(dir, seg);
        let buf = fs::read(&path)?;
        let mut offset = if seg == checkpoint.segment {
            (checkpoint.offset as usize).min(buf.len())
        } else {
            0
        };
        loop {
            match record::read_record(&buf, offset) {
                Ok(None) => break,
                Ok(Some((msg, next))) => {
                    out.max_ts = out.max_ts.max(msg.ts);
                    last_id = last_id.max(msg.id);
                    offset = next;
                    out.pending.push(Pending {
                        msg,
                        end: Position {
                            segment: seg,
                            offset: next as u64,
                        },
                    });
                }
                Err(e) => match resync(&buf, e.offset, last_id) {
                    Some(good) => {
                        out.damage.push(damaged(
                            &path,
                            &buf,
                            e.offset..good,
                            e.why,
                            "journal segment is damaged: skipped the bad bytes and replayed the records after them",
                        ));
                        offset = good;
                    }
                    None if Some(seg) == newest => {
                        tracing::warn!(
                            segment = %path.display(),
                            offset = e.offset,
                            why = e.why,
                            dropped_bytes = buf.len() - e.offset,
                            "journal tail is torn or corrupt; cutting it"
                        );
                        out.cut
                            .push((path.clone(), e.offset as u64, e.why.to_owned()));
                        let f = OpenOptions::new().write(true).open(&path)?;
                        f.set_len(e.offset as u64)?;
                        f.sync_all()?;
                        break;
                    }
                    None => {
                        // The end of an older segment: the writer moved on after it, so this was
                        // acknowledged data, not a torn write. Keep the evidence; nothing to cut.
                        out.damage.push(damaged(
                            &path,
                            &buf,
                            e.offset..buf.len(),
                            e.why,
                            "end of an older journal segment is damaged; its records there are lost",
                        ));
                        break;
                    }
                },
            }
        }
    }
    out.next_segment = segs.last().map_or(1, |s| s + 1).max(checkpoint.segment + 1);
    Ok(out)
}

/// The writer thread's state.
pub struct Writer {
    dir: PathBuf,
    file: File,
    segment: u64,
    size: u64,
    segment_bytes: u64,
    sync: Sync,
    shared: Arc<Shared>,
    /// Woken after each group so the flusher can start a full batch early.
    flush_wake: Arc<tokio::sync::Notify>,
    flush_batch: usize,
    /// Ids are issued here, per group, so the journal (and what readers see) is in id order.
    ids: Option<Arc<crate::ids::IdGenerator>>,
}

/// The writer's settings.
#[derive(Clone, Copy, Debug)]
pub struct WriterOptions {
    /// A segment past this size is closed and the next one started.
    pub segment_bytes: u64,
    pub sync: Sync,
    /// Pending rows at which the flusher is woken before its interval.
    pub flush_batch: usize,
}

/// Most records one group takes, so one fsync never holds a huge write.
const MAX_GROUP: usize = 16 * 1024;

impl Writer {
    pub fn create(
        dir: &Path,
        segment: u64,
        opts: WriterOptions,
        shared: Arc<Shared>,
        flush_wake: Arc<tokio::sync::Notify>,
        ids: Option<Arc<crate::ids::IdGenerator>>,
    ) -> io::Result<Writer> {
        let file = open_segment(dir, segment)?;
        shared.active_segment.store(segment, Ordering::SeqCst);
        Ok(Writer {
            dir: dir.to_owned(),
            file,
            segment,
            size: 0,
            segment_bytes: opts.segment_bytes,
            sync: opts.sync,
            shared,
            flush_wake,
            flush_batch: opts.flush_batch,
            ids,
        })
    }

    /// Runs until every sender is gone, answering each append once its group is durable.
    pub fn run(mut self, rx: mpsc::Receiver<Append>) {
        let mut buf = Vec::with_capacity(1 << 20);
        let mut group: Vec<Append> = Vec::with_capacity(1024);
        while let Ok(first) = rx.recv() {
            group.push(first);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(a) => group.push(a),
                    Err(_) => break,
                }
            }
            let result = self.commit(&mut group, &mut buf);
            for a in group.drain(..) {
                let r = match &result {
                    Ok(()) => Ok(a.msg.id),
                    Err(e) => Err(e.clone()),
                };
                let _ = a.reply.send(r);
            }
        }
        if self.sync == Sync::None {
            let _ = self.file.sync_data();
        }
    }

    fn commit(&mut self, group: &mut [Append], buf: &mut Vec<u8>) -> Result<(), AppendError> {
        if self.shared.broken.load(Ordering::SeqCst) {
            return Err(AppendError::Io(
                "journal is unusable after an earlier write error".into(),
            ));
        }
        if self.size >= self.segment_bytes {
            self.rotate().map_err(|e| AppendError::Io(e.to_string()))?;
        }
        if let Some(ids) = &self.ids {
            let fresh = ids
                .next_ids(group.len())
                .map_err(|e| AppendError::Ids(e.to_string()))?;
            for (a, id) in group.iter_mut().zip(fresh) {
                a.msg.id = id;
                a.msg.ts = crate::ids::decode(id).unix_ms;
            }
        }
        buf.clear();
        let mut ends = Vec::with_capacity(group.len());
        for a in group.iter() {
            record::encode(&a.msg, buf);
            ends.push(self.size + buf.len() as u64);
        }
        if let Err(e) = self.write_durably(buf) {
            // Undo a partial write so the next group does not follow garbage.
            if self.file.set_len(self.size).is_err() {
                tracing::error!(error = %e, "journal write failed and cannot be undone; refusing writes until restart");
                self.shared.broken.store(true, Ordering::SeqCst);
            }
            // Not logged here: every request of the group gets the error, and whoever answers
            // it logs it (rate-limited, with the error id the client sees).
            return Err(AppendError::Io(e.to_string()));
        }
        self.size += buf.len() as u64;
        let n = group.len();
        {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for (a, end) in group.iter().zip(ends) {
                pending.push_back(Pending {
                    msg: a.msg.clone(),
                    end: Position {
                        segment: self.segment,
                        offset: end,
                    },
                });
            }
            if pending.len() >= self.flush_batch {
                self.flush_wake.notify_one();
            }
        }
        self.shared.appended.fetch_add(n as u64, Ordering::Relaxed);
        self.shared.groups.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn write_durably(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        if self.sync == Sync::Fsync {
            self.file.sync_data()?;
            self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let next = self.segment + 1;
        self.file = open_segment(&self.dir, next)?;
        self.segment = next;
        self.size = 0;
        self.shared.active_segment.store(next, Ordering::SeqCst);
        Ok(())
    }
}

fn open_segment(dir: &Path, segment: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, segment))?;
    // The new file's directory entry must be durable too, or a crash could lose the whole file.
    File::open(dir)?.sync_all()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u64) -> Message {
        Message {
            id,
            room: "r".into(),
            user: "u".into(),
            text: format!("text {id}"),
            ts: 1_800_000_000_000 + id,
        }
    }

    /// A running writer: its channel, the state it shares, its thread.
    type Running = (
        mpsc::Sender<Append>,
        Arc<Shared>,
        std::thread::JoinHandle<()>,
    );

    /// `start_with` with 1 MiB segments, `sync`, and a flush batch of 1000.
    fn start(dir: &Path, sync: Sync) -> Running {
        start_with(
            dir,
            WriterOptions {
                segment_bytes: 1 << 20,
                sync,
                flush_batch: 1000,
            },
        )
    }

    /// Recovers `dir` and runs a writer over it on its own thread.
    fn start_with(dir: &Path, options: WriterOptions) -> Running {
        let rec = recover(dir).unwrap();
        let shared = Arc::new(Shared::default());
        shared.pending.lock().unwrap().extend(rec.pending);
        let w = Writer::create(
            dir,
            rec.next_segment,
            options,
            shared.clone(),
            Arc::new(tokio::sync::Notify::new()),
            None,
        )
        .unwrap();
        let (tx, rx) = mpsc::channel();
        let h = std::thread::spawn(move || w.run(rx));
        (tx, shared, h)
    }

    fn append(
        tx: &mpsc::Sender<Append>,
        m: Message,
    ) -> tokio::sync::oneshot::Receiver<Result<u64, AppendError>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        tx.send(Append { msg: m, reply }).unwrap();
        rx
    }

    #[test]
    fn group_commit_uses_fewer_fsyncs_than_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, shared, h) = start(dir.path(), Sync::Fsync);
        let writers = 32;
        let per = 50;
        let threads: Vec<_> = (0..writers)
            .map(|w| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..per {
                        let rx = append(&tx, msg(w * 1000 + i));
                        pollster::block_on(rx).unwrap().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(tx);
        h.join().unwrap();
        let writes = shared.appended.load(Ordering::SeqCst);
        let fsyncs = shared.fsyncs.load(Ordering::SeqCst);
        assert_eq!(writes, writers * per);
        assert!(fsyncs < writes, "{fsyncs} fsyncs for {writes} writes");
        eprintln!("group commit: {writes} writes, {fsyncs} fsyncs");
        let rec = recover(dir.path()).unwrap();
        assert_eq!(rec.pending.len() as u64, writes);
    }

    #[test]
    fn torn_tail_at_every_offset_is_cut_and_earlier_records_survive() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (tx, _shared, h) = start(dir.path(), Sync::Fsync);
            for i in 1..=3 {
                pollster::block_on(append(&tx, msg(i))).unwrap().unwrap();
            }
            drop(tx);
            h.join().unwrap();
        }
        let seg = segment_path(dir.path(), 1);
        let full = fs::read(&seg).unwrap();
        let mut one = Vec::new();
        record::encode(&msg(3), &mut one);
        let last_start = full.len() - one.len();
        for cut in last_start..full.len() {
            let d = tempfile::tempdir().unwrap();
            fs::write(segment_path(d.path(), 1), &full[..cut]).unwrap();
            let rec = recover(d.path()).unwrap();
            let ids: Vec<u64> = rec.pending.iter().map(|p| p.msg.id).collect();
            assert_eq!(ids, vec![1, 2], "cut at {cut}");
            if cut > last_start {
                assert_eq!(rec.cut.len(), 1, "cut at {cut}");
                assert_eq!(rec.cut[0].1, last_start as u64);
            }
            assert_eq!(
                fs::metadata(segment_path(d.path(), 1)).unwrap().len(),
                last_start as u64
            );
            assert_eq!(rec.next_segment, 2);
        }
    }

    #[test]
    fn segments_rotate_and_durability_none_skips_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, shared, h) = start_with(
            dir.path(),
            WriterOptions {
                segment_bytes: 200, // a few records per segment
                sync: Sync::None,
                flush_batch: 1000,
            },
        );
        for i in 1..=20 {
            pollster::block_on(append(&tx, msg(i))).unwrap().unwrap();
        }
        drop(tx);
        h.join().unwrap();
        assert_eq!(shared.fsyncs.load(Ordering::SeqCst), 0);
        let segs = segments(dir.path()).unwrap();
        assert!(segs.len() > 3, "{segs:?}");
        let rec = recover(dir.path()).unwrap();
        let ids: Vec<u64> = rec.pending.iter().map(|p| p.msg.id).collect();
        assert_eq!(ids, (1..=20).collect::<Vec<_>>());
        // Flushed up to record 10: the segments before its one go away, the rest replay.
        let tenth = rec.pending[9].end;
        write_checkpoint(dir.path(), tenth).unwrap();
        delete_flushed(dir.path(), tenth, u64::MAX).unwrap();
        assert_eq!(segments(dir.path()).unwrap()[0], tenth.segment);
        let rec = recover(dir.path()).unwrap();
        let ids: Vec<u64> = rec.pending.iter().map(|p| p.msg.id).collect();
        assert_eq!(ids, (11..=20).collect::<Vec<_>>());
    }

    #[test]
    fn a_journal_dir_has_one_owner() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path(), std::time::Duration::ZERO).unwrap();
        // Ourselves: waited for (as the worker being replaced), then refused.
        let e = DirLock::acquire(dir.path(), std::time::Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, LockError::Predecessor { .. }), "{e}");
        drop(held);
        DirLock::acquire(dir.path(), std::time::Duration::ZERO).unwrap();
    }

    #[test]
    fn damage_inside_a_segment_is_skipped_and_the_rest_replayed() {
        let mut buf = Vec::new();
        record::encode(&msg(1), &mut buf);
        let second = buf.len();
        record::encode(&msg(2), &mut buf);
        let third = buf.len();
        record::encode(&msg(3), &mut buf);
        // Every byte of record 2, in turn: header (length, CRC) or payload.
        for at in second..third {
            let dir = tempfile::tempdir().unwrap();
            let mut bad = buf.clone();
            bad[at] ^= 0xff;
            fs::write(segment_path(dir.path(), 1), &bad).unwrap();
            let rec = recover(dir.path()).unwrap();
            let ids: Vec<u64> = rec.pending.iter().map(|p| p.msg.id).collect();
            assert_eq!(ids, vec![1, 3], "flipped byte {at}");
            assert!(rec.cut.is_empty(), "flipped byte {at}");
            assert_eq!(rec.damage.len(), 1);
            let d = &rec.damage[0];
            assert_eq!((d.from, d.to), (second as u64, third as u64), "byte {at}");
            assert_eq!(d.records, 1, "byte {at}");
            // The segment is left whole, and a copy of it as found is kept.
            assert_eq!(fs::read(segment_path(dir.path(), 1)).unwrap(), bad);
            assert_eq!(fs::read(d.copy.as_ref().unwrap()).unwrap(), bad);
        }
    }

    #[test]
    fn damage_at_the_end_of_an_older_segment_is_reported_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut one = Vec::new();
        record::encode(&msg(1), &mut one);
        let second = one.len();
        record::encode(&msg(2), &mut one);
        one[second + 4] ^= 0xff;
        fs::write(segment_path(dir.path(), 1), &one).unwrap();
        let mut two = Vec::new();
        record::encode(&msg(3), &mut two);
        fs::write(segment_path(dir.path(), 2), &two).unwrap();
        let rec = recover(dir.path()).unwrap();
        let ids: Vec<u64> = rec.pending.iter().map(|p| p.msg.id).collect();
        assert_eq!(ids, vec![1, 3]);
        assert!(rec.cut.is_empty());
        assert_eq!(rec.damage.len(), 1);
        assert_eq!(rec.damage[0].from, second as u64);
    }

    #[test]
    fn a_corrupt_last_record_is_a_torn_tail_and_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        record::encode(&msg(1), &mut buf);
        let second = buf.len();
        record::encode(&msg(2), &mut buf);
        buf[second + 4] ^= 0xff; // the CRC of the last record
        fs::write(segment_path(dir.path(), 1), &buf).unwrap();
        let rec = recover(dir.path()).unwrap();
        assert_eq!(rec.pending.len(), 1);
        assert!(rec.damage.is_empty());
        assert_eq!(rec.cut[0].1, second as u64);
        assert!(rec.cut[0].2.contains("checksum"));
    }

    #[test]
    fn checkpoint_skips_flushed_rows_and_deletes_old_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        record::encode(&msg(1), &mut buf);
        fs::write(segment_path(dir.path(), 1), &buf).unwrap();
        let mid = buf.len();
        record::encode(&msg(2), &mut buf);
        fs::write(segment_path(dir.path(), 2), &buf).unwrap();
        write_checkpoint(
            dir.path(),
            Position {
                segment: 2,
                offset: mid as u64,
            },
        )
        .unwrap();
        let rec = recover(dir.path()).unwrap();
        let ids: Vec<u64> = rec.pending.iter().map(|p| p.msg.id).collect();
        assert_eq!(ids, vec![2]);
        assert!(!segment_path(dir.path(), 1).exists());
        assert_eq!(rec.next_segment, 3);
    }
}
