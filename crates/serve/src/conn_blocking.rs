//! Drives one connection on a blocking OS thread over the shared codec (the `sync`, `thread` and
//! `gthread` classes).
//!
//! A blocked `read` cannot see a shutdown, so reads use a short socket timeout and re-check the
//! stop phase in between; the cost is one wake-up per poll interval per idle connection.

use std::io::{self, Read, Write};
use std::net::{Shutdown as SockShutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use c10k_app::{Ctx, Handler, Response, Wait};

use crate::conn::{ConnSettings, Lingering};
use crate::proto::{encode_response, Decoder, HttpError, Persist, CONTINUE};
use crate::shutdown::{Phase, Shutdown};
use crate::track::ConnTrack;

/// How often a blocked read wakes to look at the stop phase.
const POLL: Duration = Duration::from_millis(200);

/// A stream the blocking drivers can serve.
pub(crate) trait BlockingStream: Read + Write + AsRawFd + Send + 'static {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn shutdown_write(&self) -> io::Result<()>;
}

impl BlockingStream for TcpStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, t)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(SockShutdown::Write)
    }
}

impl BlockingStream for UnixStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, t)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(SockShutdown::Write)
    }
}

/// How long a driver keeps a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Answer one request, then close (the `sync` class: no keep-alive, like gunicorn's).
    OneRequest,
    /// Serve until the client or a timeout closes the connection (the `thread` class).
    UntilClosed,
    /// Serve while requests are buffered; hand the connection back when it goes idle, so an idle
    /// keep-alive connection holds no thread (the `gthread` class).
    UntilIdle,
}

/// What became of a connection.
pub(crate) enum Outcome<S> {
    Closed,
    /// Idle between requests (only in [`Mode::UntilIdle`]); wait for it to become readable.
    Idle(S),
}

/// Serves `stream`. `on_request` is called once per answered request (scoreboard, max-requests);
/// `track` follows the connection's state for the processlist.
#[allow(clippy::too_many_arguments)]
pub(crate) fn serve<S: BlockingStream, H: Handler>(
    mut stream: S,
    track: &mut ConnTrack,
    handler: &H,
    settings: &ConnSettings,
    shutdown: &Shutdown,
    mode: Mode,
    on_request: &mut dyn FnMut(),
) -> io::Result<Outcome<S>> {
    let mut buf = BytesMut::with_capacity(settings.read_buffer);
    let mut out = Vec::new();
    let mut decoder = Decoder::new(settings.limits.clone()).capture_log_fields(settings.log_fields);
    let mut head_started: Option<Instant> = None;
    let mut idle_since = Instant::now();
    let mut last_read = Instant::now();
    // A connection handed back to a thread became readable: read before judging it idle.
    let mut must_read = mode == Mode::UntilIdle;
    loop {
        let mut close = None;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(incoming)) => {
                    head_started = None;
                    track.begin(&incoming.request);
                    let resp = call(handler, &incoming.request, settings);
                    on_request();
                    track.end(&incoming, resp.status, resp.body.len());
                    let may_keep = mode != Mode::OneRequest
                        && settings.keepalive.is_some()
                        && shutdown.phase() == Phase::Running;
                    if !crate::conn::answer(&mut out, &incoming, &resp, may_keep) {
                        close = Some(Lingering::No);
                        break;
                    }
                }
                Ok(None) => {
                    if !buf.is_empty() || !decoder.is_idle() {
                        track.partial();
                    }
                    break;
                }
                Err(err) => {
                    crate::conn::refuse(&mut out, &err);
                    close = Some(Lingering::Yes);
                    break;
                }
            }
        }
        if !out.is_empty() {
            track.writing(out.len());
            stream.write_all(&out)?;
            out.clear();
            idle_since = Instant::now();
            track.waiting(!buf.is_empty());
        }
        if let Some(mut lingering) = close {
            if !buf.is_empty() {
                // Pipelined requests we will not answer: read them off before closing.
                lingering = Lingering::Yes;
            }
            finish(&mut stream, lingering, settings);
            return Ok(Outcome::Closed);
        }
        if decoder.take_continue() {
            stream.write_all(CONTINUE)?;
        }

        let idle = decoder.is_idle() && buf.is_empty();
        if idle {
            if shutdown.phase() >= Phase::Graceful {
                return Ok(Outcome::Closed);
            }
            if mode == Mode::UntilIdle && !must_read {
                return Ok(Outcome::Idle(stream));
            }
        }
        // The time this read may take before the connection is given up.
        let allowed = if idle {
            settings
                .keepalive
                .unwrap_or(settings.header_timeout)
                .saturating_sub(idle_since.elapsed())
        } else if decoder.is_idle() {
            let started = *head_started.get_or_insert_with(Instant::now);
            settings.header_timeout.saturating_sub(started.elapsed())
        } else {
            settings.header_timeout.saturating_sub(last_read.elapsed())
        };
        if allowed.is_zero() {
            if idle {
                return Ok(Outcome::Closed);
            }
            request_timeout(&mut stream, &mut out, settings)?;
            return Ok(Outcome::Closed);
        }
        stream.set_read_timeout(Some(allowed.min(POLL)))?;
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(settings.read_buffer.max(buf.len()));
        }
        must_read = false;
        match read_buf(&mut stream, &mut buf) {
            Ok(0) => return Ok(Outcome::Closed),
            Ok(n) => {
                track.read(n);
                last_read = Instant::now();
                if idle {
                    head_started = Some(last_read);
                }
            }
            // Not fatal: the loop re-checks the stop phase and the deadlines.
            Err(e) if is_timeout(&e) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Continues serving a connection that [`Mode::UntilIdle`] handed back and that is now readable.
pub(crate) fn resume<S: BlockingStream, H: Handler>(
    stream: S,
    track: &mut ConnTrack,
    handler: &H,
    settings: &ConnSettings,
    shutdown: &Shutdown,
    on_request: &mut dyn FnMut(),
) -> io::Result<Outcome<S>> {
    serve(
        stream,
        track,
        handler,
        settings,
        shutdown,
        Mode::UntilIdle,
        on_request,
    )
}

fn call<H: Handler>(handler: &H, req: &c10k_app::Request, s: &ConnSettings) -> Response {
    let started = Instant::now();
    let deadline = s.request_timeout.map(|t| started + t);
    let resp = pollster::block_on(handler.call(req, Ctx::new(Wait::Block).with_deadline(deadline)));
    if let Some(limit) = s.request_timeout {
        let elapsed = started.elapsed();
        if elapsed >= limit {
            // The handler could not be interrupted (it did not wait through Ctx); its answer is
            // late, so the client gets the same 504 as under the async class.
            crate::conn::log_timeout(req, elapsed);
            return crate::conn::timeout_response();
        }
    }
    resp
}

fn request_timeout<S: BlockingStream>(
    stream: &mut S,
    out: &mut Vec<u8>,
    settings: &ConnSettings,
) -> io::Result<()> {
    let err = HttpError {
        status: 408,
        reason: "request not received in time (--header-timeout)".into(),
    };
    encode_response(out, &err.response(), 1, Persist::Close, false);
    stream.write_all(out)?;
    finish(stream, Lingering::No, settings);
    Ok(())
}

fn read_buf<S: Read>(stream: &mut S, buf: &mut BytesMut) -> io::Result<usize> {
    let start = buf.len();
    let cap = buf.capacity();
    buf.resize(cap, 0);
    match stream.read(&mut buf[start..]) {
        Ok(n) => {
            buf.truncate(start + n);
            Ok(n)
        }
        Err(e) => {
            buf.truncate(start);
            Err(e)
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// See `conn_async::finish`: read briefly after refusing so our answer is not lost to a RST.
fn finish<S: BlockingStream>(stream: &mut S, lingering: Lingering, settings: &ConnSettings) {
    let _ = stream.flush();
    let _ = stream.shutdown_write();
    if lingering == Lingering::Yes {
        let deadline = Instant::now() + settings.linger;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < settings.linger_bytes {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match stream.read(&mut sink) {
                Ok(n) if n > 0 => drained += n,
                _ => break,
            }
        }
    }
}
