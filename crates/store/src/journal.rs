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
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use crate::record::{self, Message};

/// An exclusive lock on a journal directory, held for the life of the store: two processes
/// appending to one journal would interleave records. `flock` locks vanish with the process, so a
/// `kill -9`ed worker never leaves a stale lock behind.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock, waiting up to `wait` for a previous holder (a worker being replaced that is
    /// still finishing its last requests) to let go.
    pub fn acquire(dir: &Path, wait: std::time::Duration) -> io::Result<DirLock> {
        use std::os::fd::AsRawFd;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))?;
        let start = std::time::Instant::now();
        let mut logged = false;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is passed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(DirLock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(err);
            }
            if start.elapsed() >= wait {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is in use by another live process (two servers on one --data-dir?)",
                        dir.display()
                    ),
                ));
            }
            if !logged {
                tracing::info!(dir = %dir.display(), "journal is locked by another process; waiting for it to exit");
                logged = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
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

/// Reads every unflushed record, cutting a torn or corrupt tail. Never panics on file content.
pub fn recover(dir: &Path) -> io::Result<Recovered> {
    fs::create_dir_all(dir)?;
    let checkpoint = read_checkpoint(dir);
    let mut out = Recovered::default();
    let segs = segments(dir)?;
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
                    offset = next;
                    out.pending.push(Pending {
                        msg,
                        end: Position {
                            segment: seg,
                            offset: next as u64,
                        },
                    });
                }
                Err(e) => {
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
                self.shared.broken.store(true, Ordering::SeqCst);
            }
            tracing::error!(error = %e, "journal write failed");
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

    fn start(
        dir: &Path,
        sync: Sync,
    ) -> (
        mpsc::Sender<Append>,
        Arc<Shared>,
        std::thread::JoinHandle<()>,
    ) {
        let rec = recover(dir).unwrap();
        let shared = Arc::new(Shared::default());
        shared.pending.lock().unwrap().extend(rec.pending);
        let w = Writer::create(
            dir,
            rec.next_segment,
            WriterOptions {
                segment_bytes: 1 << 20,
                sync,
                flush_batch: 1000,
            },
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
        let shared = Arc::new(Shared::default());
        let w = Writer::create(
            dir.path(),
            1,
            WriterOptions {
                segment_bytes: 200, // a few records per segment
                sync: Sync::None,
                flush_batch: 1000,
            },
            shared.clone(),
            Arc::new(tokio::sync::Notify::new()),
            None,
        )
        .unwrap();
        let (tx, rx) = mpsc::channel();
        let h = std::thread::spawn(move || w.run(rx));
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
        let e = DirLock::acquire(dir.path(), std::time::Duration::from_millis(100)).unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
        drop(held);
        DirLock::acquire(dir.path(), std::time::Duration::ZERO).unwrap();
    }

    #[test]
    fn corrupt_crc_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        record::encode(&msg(1), &mut buf);
        let second = buf.len();
        record::encode(&msg(2), &mut buf);
        record::encode(&msg(3), &mut buf);
        buf[second + 4] ^= 0xff; // the CRC of record 2
        fs::write(segment_path(dir.path(), 1), &buf).unwrap();
        let rec = recover(dir.path()).unwrap();
        assert_eq!(rec.pending.len(), 1);
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
