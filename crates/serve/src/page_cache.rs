//! Keeping the disk off the event loop when it sends a file with `sendfile(2)`: before each
//! piece, the loop asks without blocking whether the piece's pages are in the page cache
//! ([`Probe::ready`]); a piece that is not is read into the cache on tokio's blocking pool
//! ([`Probe::load`]), and only then sent from the loop.
//!
//! `sendfile(2)` reads the file where it is called: a page that is not cached is read from the
//! disk right there, and on the event loop that holds every connection of the worker. nginx's
//! `aio threads` moves each `sendfile` call to a thread; its FreeBSD `aio` first tries
//! `sendfile(SF_NODISKIO)` and, when that would touch the disk, has the range read by an AIO
//! read, then tries again. This is the second way: a cached file (what a busy static path
//! serves) costs one extra system call per MiB on the loop and no thread hop; a cold one costs a
//! thread hop and a copy per MiB, done while the loop serves the others.
//!
//! The question is asked with `cachestat(2)` (Linux 6.5): one call for a whole MiB, no copy.
//! Recent kernels answer it only for a file the worker owns or may write (`EPERM` otherwise;
//! `mincore(2)` has the same rule but pretends every page is there, so it is no help); then,
//! and on older kernels, a `preadv2(RWF_NOWAIT)` of a quarter MiB into a scratch buffer asks,
//! at the price of a copy (it may also start the kernel's readahead from the loop: submitted,
//! not waited for). A file system that supports neither gets every piece loaded first.
//!
//! What cannot be seen: `cachestat` counts a page whose read is still in flight as cached, and
//! a page found cached may be evicted before the `sendfile` (an answer is trusted for
//! [`FRESH`] only). Either makes one `sendfile` wait for the disk, as it did every time before.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use c10k_http::FileBody;

/// The most one `cachestat` probe and one load cover: `crate::sendfile`'s most per call, so a
/// cached file goes out in calls as large as before.
const SPAN: u64 = 1 << 20;
/// The most one `RWF_NOWAIT` probe covers (it copies what it reads, into [`SCRATCH`]-sized
/// pieces of one buffer).
const NOWAIT_SPAN: u64 = 1 << 18;
const SCRATCH: usize = 1 << 16;
/// How long a "cached" answer is trusted: a client that is slow to take the file leaves time
/// for its pages to be evicted.
const FRESH: Duration = Duration::from_millis(100);

/// `cachestat(2)`'s number: new system calls have one number on every architecture.
const SYS_CACHESTAT: libc::c_long = 451;

/// Set once the kernel has said it has no `cachestat` (`ENOSYS`), so it is not asked again.
static NO_CACHESTAT: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Where `RWF_NOWAIT` probes copy to (and forget).
    static SCRATCH_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// How a file is asked about; a way the file refuses is not tried again for it.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Way {
    Cachestat,
    NoWait,
    /// Neither works: every piece is loaded first.
    Load,
}

/// What is known of one file body's pages as it is sent from the loop.
pub(crate) struct Probe {
    way: Way,
    /// The file's pages up to here (an offset) were found cached, or loaded, at `at`.
    ready_until: u64,
    at: Instant,
    /// Readahead is off for the file (see [`Probe::load`]).
    random: bool,
}

impl Probe {
    pub fn new() -> Probe {
        let way = if NO_CACHESTAT.load(Relaxed) {
            Way::NoWait
        } else {
            Way::Cachestat
        };
        Probe {
            way,
            ready_until: 0,
            at: Instant::now(),
            random: false,
        }
    }

    /// How many bytes of `f` from its offset are in the page cache, so that `sendfile` sends
    /// them without waiting for the disk (more than 0), or `None`: load some first.
    pub fn ready(&mut self, f: &FileBody) -> Option<u64> {
        if f.len == 0 {
            // (`cachestat` would read a length of 0 as "to the end of the file".)
            return Some(0);
        }
        if self.ready_until > f.offset && self.at.elapsed() < FRESH {
            return Some(self.ready_until - f.offset);
        }
        let fd = f.file.as_raw_fd();
        loop {
            let span = match self.way {
                Way::Cachestat => f.len.min(SPAN),
                Way::NoWait => f.len.min(NOWAIT_SPAN),
                Way::Load => return None,
            };
            let answer = match self.way {
                Way::Cachestat => cached(fd, f.offset, span),
                _ => read_nowait(fd, f.offset, span),
            };
            match answer {
                Ok(true) => {
                    self.ready_until = f.offset + span;
                    self.at = Instant::now();
                    return Some(span);
                }
                Ok(false) => return None,
                Err(e) => {
                    if self.way == Way::Cachestat && e.raw_os_error() == Some(libc::ENOSYS) {
                        NO_CACHESTAT.store(true, Relaxed);
                    }
                    self.way = match self.way {
                        Way::Cachestat => Way::NoWait,
                        _ => Way::Load,
                    };
                }
            }
        }
    }

    /// Reads the next piece of `f` (at most a MiB) into the page cache on tokio's blocking pool
    /// and returns its length; the loop then sends it with no disk read of its own. The first
    /// load also turns the file's readahead off (`POSIX_FADV_RANDOM`): the loads read ahead
    /// themselves, and a `sendfile` that starts a readahead may wait for the disk to take it.
    pub async fn load(&mut self, f: &FileBody) -> io::Result<u64> {
        let span = f.len.min(SPAN);
        let file = f.file.try_clone()?;
        if !self.random {
            self.random = true;
            // SAFETY: advice on a descriptor we hold open; integer arguments only. Advice
            // that fails changes nothing.
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
        }
        let offset = f.offset;
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; SCRATCH];
            let mut at = 0u64;
            while at < span {
                let want = (span - at).min(SCRATCH as u64) as usize;
                match file.read_at(&mut buf[..want], offset + at) {
                    // The file ends early: `sendfile` finds out too and says so.
                    Ok(0) => break,
                    Ok(n) => at += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .await;
        match read {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("reading the file ahead failed")),
        }
        self.ready_until = offset + span;
        self.at = Instant::now();
        Ok(span)
    }
}

/// `cachestat(2)` over `len` bytes from `offset`: whether every page of them is cached.
fn cached(fd: RawFd, offset: u64, len: u64) -> io::Result<bool> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    let range = Range { off: offset, len };
    let mut stat = Stat::default();
    // SAFETY: a descriptor we hold open, and two structs of the kernel's layout that live
    // through the call; the kernel only writes `stat`.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd,
            std::ptr::from_ref(&range),
            std::ptr::from_mut(&mut stat),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let page = page_size();
    let pages = (offset + len).div_ceil(page) - offset / page;
    Ok(stat.nr_cache >= pages)
}

/// `preadv2(RWF_NOWAIT)` of `len` bytes (at most [`NOWAIT_SPAN`]) from `offset`, copied into
/// one scratch buffer over and over: whether all of them came without waiting.
fn read_nowait(fd: RawFd, offset: u64, len: u64) -> io::Result<bool> {
    let Ok(off) = libc::off_t::try_from(offset) else {
        return Ok(false);
    };
    SCRATCH_BUF.with_borrow_mut(|buf| {
        buf.resize(SCRATCH, 0);
        let mut iov = [libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: 0,
        }; (NOWAIT_SPAN as usize) / SCRATCH];
        let mut left = len as usize;
        let mut n = 0;
        while left > 0 && n < iov.len() {
            iov[n].iov_len = left.min(SCRATCH);
            left -= iov[n].iov_len;
            n += 1;
        }
        // SAFETY: a descriptor we hold open; every iovec points into `buf` (the same bytes
        // again and again, which the kernel may write in any order: they are thrown away), which
        // lives through the call.
        let r = unsafe { libc::preadv2(fd, iov.as_ptr(), n as libc::c_int, off, libc::RWF_NOWAIT) };
        if r >= 0 {
            return Ok(r as u64 == len);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            // Not cached (or a read in flight): the answer "no", not a refusal.
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(false),
            _ => Err(e),
        }
    })
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; glibc answers this one from memory.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file of `len` bytes, written, synced and dropped from the page cache (`None` where the
    /// kernel keeps it, as tmpfs does: its pages are the file).
    fn cold_file(dir: &std::path::Path, len: usize) -> Option<std::fs::File> {
        let path = dir.join("cold.bin");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&vec![7u8; len]).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: advice on a descriptor we hold open.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        (cached(f.as_raw_fd(), 0, len as u64).ok() == Some(false)).then_some(f)
    }

    fn body(file: std::fs::File, len: u64) -> FileBody {
        FileBody {
            file,
            offset: 0,
            len,
        }
    }

    #[test]
    fn a_cold_file_is_loaded_then_found_cached() {
        let dir = tempfile::tempdir().unwrap();
        let len = 3 * SPAN as usize / 2;
        let Some(f) = cold_file(dir.path(), len) else {
            eprintln!("skipped: the page cache kept the file (tmpfs?), or no cachestat");
            return;
        };
        let mut f = body(f, len as u64);
        let mut probe = Probe::new();
        assert_eq!(probe.ready(&f), None, "a cold file is not ready");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(probe.load(&f)).unwrap(), SPAN);
        assert!(cached(f.file.as_raw_fd(), 0, SPAN).unwrap());
        assert_eq!(probe.ready(&f), Some(SPAN));
        // Half sent: the rest of the loaded piece is known without asking again.
        f.offset += SPAN / 2;
        f.len -= SPAN / 2;
        assert_eq!(probe.ready(&f), Some(SPAN / 2));
        // Past it, the kernel's readahead may or may not have read the rest.
        f.offset += SPAN / 2;
        f.len -= SPAN / 2;
        if probe.ready(&f).is_none() {
            assert_eq!(rt.block_on(probe.load(&f)).unwrap(), SPAN / 2);
        }
        assert_eq!(probe.ready(&f), Some(SPAN / 2));
    }

    #[test]
    fn the_nowait_probe_answers_for_a_cold_file() {
        let dir = tempfile::tempdir().unwrap();
        let Some(f) = cold_file(dir.path(), NOWAIT_SPAN as usize) else {
            eprintln!("skipped: the page cache kept the file (tmpfs?), or no cachestat");
            return;
        };
        // Not asserted "no": the probe starts the kernel's readahead, which a fast disk (a VM's
        // host cache) may have finished by the time the probe looks.
        read_nowait(f.as_raw_fd(), 0, NOWAIT_SPAN).unwrap();
        let mut probe = Probe::new();
        probe.way = Way::NoWait;
        let f = body(f, NOWAIT_SPAN);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        if probe.ready(&f).is_none() {
            rt.block_on(probe.load(&f)).unwrap();
        }
        assert!(read_nowait(f.file.as_raw_fd(), 0, NOWAIT_SPAN).unwrap());
    }

    #[test]
    fn a_cached_file_is_ready_without_a_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warm.bin");
        std::fs::write(&path, vec![1u8; 10_000]).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        assert!(read_nowait(f.as_raw_fd(), 0, 10_000).unwrap());
        let mut probe = Probe::new();
        assert_eq!(probe.ready(&body(f, 10_000)), Some(10_000));
    }

    #[test]
    fn a_file_that_ends_early_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.bin");
        std::fs::write(&path, vec![1u8; 100]).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        // Past the end there are no pages: "not ready", and the load then reads what is there.
        assert!(!read_nowait(f.as_raw_fd(), 0, 5000).unwrap());
        let mut probe = Probe::new();
        let f = body(f, 5000);
        assert_eq!(probe.ready(&f), None);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(probe.load(&f)).unwrap(), 5000);
    }
}
