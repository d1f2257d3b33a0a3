//! Writing a [`FileBody`] to a socket with `sendfile(2)`: the kernel moves the bytes from the
//! page cache to the socket, so a large file costs the worker neither a copy nor a buffer. The
//! blocking drivers call [`send_blocking`]; the async driver calls [`send_once`] whenever the
//! socket is writable (`crate::lazy_io`).

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use c10k_http::FileBody;

/// The most one call sends, so that a huge file still yields to the driver's other work.
const MAX_CALL: u64 = 1 << 20;

/// One `sendfile(2)` call: sends up to 1 MiB of `f` to `sock` and advances `f`. `Ok(0)` only
/// when `f` is empty; a file that ends before its length is an `UnexpectedEof` error.
pub(crate) fn send_once(sock: RawFd, f: &mut FileBody) -> io::Result<usize> {
    if f.len == 0 {
        return Ok(0);
    }
    let want = f.len.min(MAX_CALL) as usize;
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

/// Sends all of `f` to a blocking socket whose `SO_SNDTIMEO` is `stall` (`--send-timeout`, see
/// `accept_blocking`). Returns the bytes sent and whether that was all of it (an error is
/// logged at debug: a client going away mid-file is ordinary; a stall at warn).
pub(crate) fn send_blocking(
    sock: RawFd,
    f: &mut FileBody,
    stall: Option<std::time::Duration>,
) -> (u64, bool) {
    let mut sent = 0u64;
    while f.len > 0 {
        let started = std::time::Instant::now();
        let want = f.len.min(MAX_CALL);
        let stalled = match send_once(sock, f) {
            Ok(n) => {
                sent += n as u64;
                // A call cut short only after waiting out the timeout: the bytes it moved went
                // into room the socket had at its start, and the client has taken nothing since.
                (n as u64) < want && stall.is_some_and(|t| started.elapsed() >= t)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
            // The socket blocks, so this is its SO_SNDTIMEO: `--send-timeout` ran out with the
            // client taking nothing.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(e) => {
                tracing::debug!("sending a file body: {e}");
                return (sent, false);
            }
        };
        if stalled {
            tracing::warn!("the client took none of the file body for --send-timeout; closing");
            return (sent, false);
        }
    }
    (sent, true)
}
