//! The scoreboard: a shared memory page the master and every worker process read and write
//! without locks (Apache's scoreboard, uWSGI's stats area are the models).
//!
//! The master creates it (`memfd_create`, so nothing touches the file system) before starting any
//! worker and passes the descriptor down; each worker owns one slot and writes only to it with
//! relaxed atomic stores. The master reads every slot: heartbeats for `--timeout`, readiness for
//! boot failures, counters for status.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::MmapRaw;

/// Most worker slots (the ceiling for `--workers` and SIGTTIN).
pub const MAX_SLOTS: usize = 256;
const SLOT_SIZE: usize = 128;
const HEADER: usize = 128;
const MAGIC: u64 = 0x6331_306b_5342_0001; // "c10kSB" v1

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
        let len = HEADER + MAX_SLOTS * SLOT_SIZE;
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
        if len < HEADER + MAX_SLOTS * SLOT_SIZE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "scoreboard too small",
            ));
        }
        let map = MmapRaw::map_raw(&file)?;
        Ok(Scoreboard { map, fd })
    }

    fn header_magic(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned and at least HEADER bytes long; AtomicU64 has no
        // invalid bit patterns and the memory lives as long as `self`.
        unsafe { &*(self.map.as_mut_ptr() as *const AtomicU64) }
    }

    /// The slot of worker `index` (`index < MAX_SLOTS`).
    pub fn slot(&self, index: usize) -> &Slot {
        assert!(index < MAX_SLOTS, "scoreboard slot {index} out of range");
        // SAFETY: in bounds (checked above and in `map`), 64-byte aligned (page-aligned base,
        // HEADER and SLOT_SIZE multiples of 64), and every field is an atomic.
        unsafe { &*(self.map.as_mut_ptr().add(HEADER + index * SLOT_SIZE) as *const Slot) }
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
    }
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
}
