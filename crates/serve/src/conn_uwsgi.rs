//! Drives one uwsgi connection (nginx's `uwsgi_pass`), blocking or async, over [`crate::uwsgi`]:
//! read one request packet, answer it, close. nginx opens a connection per request and never
//! reuses it, so there is no keep-alive, pipelining or 100-continue to handle here — the HTTP
//! drivers' state is not needed, only their handler call and stream writer, which are shared.
//!
//! Deadlines: the packet's header and vars must arrive within `--header-timeout` of the first
//! read; while the body arrives, each read must make progress within it (as for HTTP). A
//! connection that closes before sending a byte (a health check's connect) is closed quietly; a
//! malformed or truncated packet is closed unanswered, logged and counted
//! (`c10k_uwsgi_refused_total`); nginx answers its client 502 then, as with uWSGI.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use c10k_http::{Body, Handler, Method, Request, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::conn::{ConnSettings, Lingering};
use crate::conn_blocking::BlockingStream;
use crate::proto::{BodyFraming, ConnInfo, LogFields, RequestMeta};
use crate::track::ConnTrack;
use crate::uwsgi::{encode_head, Decoder, UwsgiError};

/// Whether a uwsgi listener serves a connection from `peer` (`None`: a unix socket, always
/// allowed). A refused peer is logged and counted; the caller drops the connection unanswered.
pub(crate) fn admit(settings: &ConnSettings, track: &ConnTrack, peer: Option<SocketAddr>) -> bool {
    let Some(p) = peer else {
        return true;
    };
    if settings.uwsgi_allow_from.iter().any(|a| a.allows(p.ip())) {
        return true;
    }
    track.uwsgi_refused();
    tracing::warn!(
        peer = %p,
        "closing uwsgi connection: peer not in --uwsgi-allow-from"
    );
    false
}

/// What reading the packet came to.
enum Read {
    Request(Request),
    /// Closed, refused or timed out: nothing more to do.
    Done,
    /// A readable request we refuse: answer this, then close with a lingering read.
    Refuse(UwsgiError),
}

/// The deadline of the next read: the packet head as a whole, then each body read.
fn allowed(decoder: &Decoder, started: Instant, last_read: Instant, s: &ConnSettings) -> Duration {
    if decoder.body_missing(0).is_some() {
        s.header_timeout.saturating_sub(last_read.elapsed())
    } else {
        s.header_timeout.saturating_sub(started.elapsed())
    }
}

/// Logs and counts a packet that is closed unanswered.
fn malformed(track: &ConnTrack, info: &ConnInfo, why: &dyn std::fmt::Display) {
    track.uwsgi_refused();
    tracing::warn!(
        peer = %info.peer.map_or_else(|| "unix socket".to_owned(), |p| p.to_string()),
        "closing uwsgi connection unanswered: {why}"
    );
}

/// Why a connection ended before its packet was complete.
fn truncated(decoder: &Decoder, buffered: usize, timed_out: bool) -> String {
    let how = if timed_out {
        "no complete packet within --header-timeout"
    } else {
        "the peer closed mid-packet"
    };
    match decoder.body_missing(buffered) {
        Some(missing) => format!("{how} ({missing} body bytes missing)"),
        None => format!("{how} ({buffered} bytes of the packet head)"),
    }
}

/// The request's line in the access log, and how the answer is framed.
fn meta(req: &Request, s: &ConnSettings) -> RequestMeta {
    let header = |n: &str| {
        req.headers
            .get(n)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    RequestMeta {
        minor_version: match req.version {
            Version::Http10 => 0,
            Version::Http11 => 1,
        },
        keep_alive: false,
        head_only: req.method == Method::Head,
        log: s.log_fields.then(|| {
            Box::new(LogFields {
                method: req.method.as_str().to_owned(),
                target: req.target.clone(),
                referer: header("referer"),
                user_agent: header("user-agent"),
            })
        }),
    }
}

/// Serves one uwsgi request on a blocking stream (the `sync`, `thread` and `gthread` classes).
pub(crate) fn serve_blocking<S: BlockingStream, H: Handler>(
    mut stream: S,
    track: &mut ConnTrack,
    handler: &H,
    settings: &ConnSettings,
    on_request: &mut dyn FnMut(),
) -> io::Result<()> {
    let info = stream.info();
    let request = match read_blocking(&mut stream, track, settings, &info)? {
        Read::Request(r) => r,
        Read::Done => return Ok(()),
        Read::Refuse(err) => {
            let mut out = Vec::new();
            if let Some(resp) = err.response() {
                tracing::debug!("refused uwsgi request: {err}");
                encode_head(&mut out, &resp, false);
            }
            track.writing(out.len());
            stream.write_all(&out)?;
            crate::conn_blocking::finish(&mut stream, Lingering::Yes, settings);
            return Ok(());
        }
    };
    let meta = meta(&request, settings);
    track.set_client(request.peer);
    track.begin(&request);
    let resp = crate::conn_blocking::call(handler, request, settings);
    on_request();
    let mut out = Vec::new();
    let framing = encode_head(&mut out, &resp, meta.head_only);
    let (status, full_len) = (resp.status, crate::conn::full_len(&resp));
    match resp.body {
        Body::Stream(body) if framing != BodyFraming::Empty => {
            let sent =
                crate::conn_blocking::send_stream(&mut stream, body, framing, &mut out, track)?;
            track.end(&meta, status, sent.unwrap_or(0));
        }
        _ => {
            track.writing(out.len());
            stream.write_all(&out)?;
            track.end(&meta, status, full_len);
        }
    }
    crate::conn_blocking::finish(&mut stream, Lingering::No, settings);
    Ok(())
}

fn read_blocking<S: BlockingStream>(
    stream: &mut S,
    track: &mut ConnTrack,
    settings: &ConnSettings,
    info: &ConnInfo,
) -> io::Result<Read> {
    let mut decoder = Decoder::new(settings.uwsgi.clone(), *info);
    let mut buf = BytesMut::with_capacity(settings.read_buffer);
    let started = Instant::now();
    let mut last_read = started;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(r)) => return Ok(Read::Request(r)),
            Ok(None) => {}
            Err(e @ UwsgiError::Malformed(_)) => {
                malformed(track, info, &e);
                return Ok(Read::Done);
            }
            Err(e) => return Ok(Read::Refuse(e)),
        }
        let allowed = allowed(&decoder, started, last_read, settings);
        if allowed.is_zero() {
            malformed(track, info, &truncated(&decoder, buf.len(), true));
            return Ok(Read::Done);
        }
        stream.set_read_timeout(Some(allowed))?;
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(settings.read_buffer.max(buf.len()));
        }
        match crate::conn_blocking::read_buf(stream, &mut buf) {
            Ok(0) => {
                if !(buf.is_empty() && decoder.is_idle()) {
                    malformed(track, info, &truncated(&decoder, buf.len(), false));
                }
                return Ok(Read::Done);
            }
            Ok(n) => {
                track.read(n);
                last_read = Instant::now();
            }
            // The loop re-checks the deadline.
            Err(e) if crate::conn_blocking::is_timeout(&e) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Serves one uwsgi request on the tokio runtime (the `async` class).
pub(crate) async fn serve_async<S, H>(
    mut io: S,
    track: &mut ConnTrack,
    handler: &H,
    settings: &ConnSettings,
    on_request: &(dyn Fn() + Sync),
    info: ConnInfo,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let request = match read_async(&mut io, track, settings, &info).await? {
        Read::Request(r) => r,
        Read::Done => return Ok(()),
        Read::Refuse(err) => {
            let mut out = Vec::new();
            if let Some(resp) = err.response() {
                tracing::debug!("refused uwsgi request: {err}");
                encode_head(&mut out, &resp, false);
            }
            track.writing(out.len());
            io.write_all(&out).await?;
            return crate::conn_async::finish(io, Lingering::Yes, settings).await;
        }
    };
    let meta = meta(&request, settings);
    track.set_client(request.peer);
    track.begin(&request);
    let resp = crate::conn_async::call(handler, request, settings).await;
    on_request();
    let mut out = Vec::new();
    let framing = encode_head(&mut out, &resp, meta.head_only);
    let (status, full_len) = (resp.status, crate::conn::full_len(&resp));
    match resp.body {
        Body::Stream(body) if framing != BodyFraming::Empty => {
            let sent =
                crate::conn_async::send_stream(&mut io, body, framing, &mut out, track).await?;
            track.end(&meta, status, sent.unwrap_or(0));
        }
        _ => {
            track.writing(out.len());
            io.write_all(&out).await?;
            track.end(&meta, status, full_len);
        }
    }
    crate::conn_async::finish(io, Lingering::No, settings).await
}

async fn read_async<S: AsyncRead + Unpin>(
    io: &mut S,
    track: &mut ConnTrack,
    settings: &ConnSettings,
    info: &ConnInfo,
) -> io::Result<Read> {
    let mut decoder = Decoder::new(settings.uwsgi.clone(), *info);
    let mut buf = BytesMut::with_capacity(settings.read_buffer);
    let started = Instant::now();
    let mut last_read = started;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(r)) => return Ok(Read::Request(r)),
            Ok(None) => {}
            Err(e @ UwsgiError::Malformed(_)) => {
                malformed(track, info, &e);
                return Ok(Read::Done);
            }
            Err(e) => return Ok(Read::Refuse(e)),
        }
        let allowed = allowed(&decoder, started, last_read, settings);
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(settings.read_buffer.max(buf.len()));
        }
        match tokio::time::timeout(allowed, io.read_buf(&mut buf)).await {
            Ok(Ok(0)) => {
                if !(buf.is_empty() && decoder.is_idle()) {
                    malformed(track, info, &truncated(&decoder, buf.len(), false));
                }
                return Ok(Read::Done);
            }
            Ok(Ok(n)) => {
                track.read(n);
                last_read = Instant::now();
            }
            Ok(Err(e)) => return Err(e),
            Err(_elapsed) => {
                malformed(track, info, &truncated(&decoder, buf.len(), true));
                return Ok(Read::Done);
            }
        }
    }
}
