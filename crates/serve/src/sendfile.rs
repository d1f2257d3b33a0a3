//! Writing a [`FileBody`] to a socket with `sendfile(2)`: the kernel moves the bytes from the
//! page cache to the socket, so a large file costs the worker neither a copy nor a buffer. The
//! blocking drivers call [`send_blocking`]; the async driver calls [`send_once`] whenever the
//! socket is writable (`crate::lazy_io`), for no more than `crate::page_cache` found cached, so
//! that the event loop never waits for the disk (a blocking driver's thread may). Both wait for
//! room in the socket themselves, so that `--send-timeout` bounds the wait, not the kernel's
//! per-send `SO_SNDTIMEO`.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use c10k_http::FileBody;

/// The most one call sends, so that a huge file still yields to the driver's other work.
const MAX_CALL: u64 = 1 << 20;

/// One `sendfile(2)` call: sends up to `limit` bytes (and 1 MiB) of `f` to `sock` and advances
/// `f`. `Ok(0)` only when `f` is empty or `limit` 0; a file that ends before its length is an
/// `UnexpectedEof` error.
pub(crate) fn send_once(sock: RawFd, f: &mut FileBody, limit: u64) -> io::Result<usize> {
    let want = f.len.min(limit).min(MAX_CALL) as usize;
    if want == 0 {
        return Ok(0);
    }
    let Ok(mut offset) = libc::off_t::try_from(f.offset) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "file offset out of range",
        ));
    };
    // SAFETY: two descriptors we hold open for the duration of the call, and an offset variable
    // the kernel updates (the file's own position is left alone).
    let n = unsafe { libc::sendfile(sock, f.file.as_raw_fd(), &mut offset, want) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file ended before the length announced for it",
        ));
    }
    f.offset += n as u64;
    f.len -= n as u64;
    Ok(n as usize)
}

/// Sends all of `f` to the blocking socket `sock`, giving up once the client has taken none of
/// it for `stall` (`--send-timeout`; the clock restarts whenever bytes go out). Returns the
/// bytes sent and whether that was all of it (an error is logged at debug: a client going away
/// mid-file is ordinary; a stall at warn).
///
/// The socket's `SO_SNDTIMEO` cannot bound the wait: in the kernel one `sendfile(2)` call is
/// several socket sends, each allowed the whole timeout, so a call that moved some bytes and
/// then found the socket full took two timeouts (4.3 s under `--send-timeout 2`). So the
/// socket is non-blocking while the file goes out, and the wait for room is `poll(2)`'s.
pub(crate) fn send_blocking(sock: RawFd, f: &mut FileBody, stall: Option<Duration>) -> (u64, bool) {
    let mut sent = 0u64;
    let result = NonBlocking::set(sock).and_then(|_restored_on_drop| {
        let mut progress = Instant::now();
        while f.len > 0 {
            match send_once(sock, f, MAX_CALL) {
                Ok(n) => {
                    sent += n as u64;
                    progress = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    writable_by(sock, progress, stall)?
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => (sent, true),
        Err(e) => {
            if e.kind() == io::ErrorKind::TimedOut {
                tracing::warn!("sending a file body: {e}");
            } else {
                tracing::debug!("sending a file body: {e}");
            }
            (sent, false)
        }
    }
}

/// Waits until `sock` has room, for at most what is left of `stall` after `progress` (the last
/// bytes that went out); `Ok` also when `poll` was interrupted or saw an error (the next send
/// reports it).
fn writable_by(sock: RawFd, progress: Instant, stall: Option<Duration>) -> io::Result<()> {
    let timeout_ms = match stall {
        None => -1,
        Some(limit) => {
            let left = (progress + limit).saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(crate::conn::stalled(limit));
            }
            // Rounded up, so that a wait never ends just short of the deadline and spins.
            i32::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX)
        }
    };
    let mut pfd = libc::pollfd {
        fd: sock,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one pollfd that we own, for the duration of the call.
    let ready = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    match (ready, stall) {
        (0, Some(limit)) => Err(crate::conn::stalled(limit)),
        _ => Ok(()),
    }
}

/// `O_NONBLOCK` on a socket until dropped, then its flags as they were: the blocking drivers
/// (and gthread's pool, which hands sockets between threads) rely on it blocking otherwise.
struct NonBlocking {
    fd: RawFd,
    flags: libc::c_int,
}

impl NonBlocking {
    fn set(fd: RawFd) -> io::Result<NonBlocking> {
        // SAFETY: fcntl on a descriptor the caller holds open, with integer arguments only.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NonBlocking { fd, flags })
    }
}

impl Drop for NonBlocking {
    fn drop(&mut self) {
        // SAFETY: as in `set`; the descriptor outlives this guard (see `send_blocking`).
        unsafe { libc::fcntl(self.fd, libc::F_SETFL, self.flags) };
    }
}
