//! Drives one connection on the tokio runtime over the shared codec.
//!
//! Requests on a connection run one after another (HTTP/1.1 has no multiplexing); all responses
//! to the requests already buffered are written with one `write` call, which is what makes
//! pipelined clients fast.

use std::io;
use std::time::Instant;

use bytes::BytesMut;
use c10k_http::{BodyStream, Ctx, Handler, Request, Response, Wait};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::conn::{Answer, ConnSettings, Lingering};
use crate::proto::{
    encode_response, BodyFraming, ConnInfo, Decoder, HttpError, Incoming, Persist, CONTINUE,
};
use crate::shutdown::Phase;
use crate::track::ConnTrack;

/// Serves requests on `io` until the client closes, a timeout fires, or the server stops.
pub(crate) async fn serve<S, H>(
    mut io: S,
    track: &mut ConnTrack,
    handler: &H,
    settings: &ConnSettings,
    mut stop: watch::Receiver<Phase>,
    on_request: &(dyn Fn() + Sync),
    info: ConnInfo,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let mut buf = BytesMut::with_capacity(settings.read_buffer);
    let mut out = Vec::new();
    let mut decoder = Decoder::new(settings.limits.clone())
        .capture_log_fields(settings.log_fields)
        .with_conn(info);
    let mut head_started: Option<Instant> = None;
    loop {
        let mut close = None;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Incoming { request, meta })) => {
                    head_started = None;
                    track.begin(&request);
                    let resp = call(handler, request, settings).await;
                    on_request();
                    let may_keep = settings.keepalive.is_some() && *stop.borrow() == Phase::Running;
                    let (status, full_len) = (resp.status, crate::conn::full_len(&resp));
                    let keep = match crate::conn::answer(&mut out, &meta, resp, may_keep) {
                        Answer::Done { keep } => {
                            track.end(&meta, status, full_len);
                            keep
                        }
                        Answer::Stream {
                            stream,
                            framing,
                            keep,
                        } => {
                            let sent =
                                send_stream(&mut io, stream, framing, &mut out, track).await?;
                            track.end(&meta, status, sent.unwrap_or(0));
                            keep && sent.is_some()
                        }
                    };
                    if !keep {
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
            io.write_all(&out).await?;
            out.clear();
            track.waiting(!buf.is_empty());
        }
        if let Some(mut lingering) = close {
            if !buf.is_empty() {
                // Pipelined requests we will not answer: read them off before closing.
                lingering = Lingering::Yes;
            }
            return finish(io, lingering, settings).await;
        }
        if decoder.take_continue() {
            io.write_all(CONTINUE).await?;
        }

        let idle = decoder.is_idle() && buf.is_empty();
        if idle && *stop.borrow() >= Phase::Graceful {
            return Ok(());
        }
        let timeout = if idle {
            match settings.keepalive {
                Some(t) => t,
                None => settings.header_timeout,
            }
        } else if decoder.is_idle() {
            // Part of a request head has arrived: the head must complete by its deadline.
            let started = *head_started.get_or_insert_with(Instant::now);
            settings.header_timeout.saturating_sub(started.elapsed())
        } else {
            // Reading a body: each read must make progress within the header timeout.
            settings.header_timeout
        };
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(settings.read_buffer.max(buf.len()));
        }
        let read = tokio::select! {
            r = tokio::time::timeout(timeout, io.read_buf(&mut buf)) => r,
            changed = stop.changed(), if idle => {
                if changed.is_err() {
                    return Ok(());
                }
                continue;
            }
        };
        match read {
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => {
                track.read(n);
                if idle {
                    head_started = Some(Instant::now());
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_elapsed) if idle => return Ok(()),
            Err(_elapsed) => {
                let err = HttpError {
                    status: 408,
                    reason: "request not received in time (--header-timeout)".into(),
                };
                encode_response(&mut out, &err.response(), 1, Persist::Close, false);
                io.write_all(&out).await?;
                return finish(io, Lingering::No, settings).await;
            }
        }
    }
}

/// Writes what is buffered, then the streamed body chunk by chunk as the stream yields it.
/// `Ok(Some(bytes))`: the body went out whole; `Ok(None)`: the stream failed or broke its
/// announced length, and the connection must close. The stream is dropped on every way out,
/// a client that went away included.
pub(crate) async fn send_stream<S: AsyncWrite + Unpin>(
    io: &mut S,
    mut stream: BodyStream,
    mut framing: BodyFraming,
    out: &mut Vec<u8>,
    track: &mut ConnTrack,
) -> io::Result<Option<usize>> {
    let mut sent = 0;
    loop {
        if !out.is_empty() {
            track.writing(out.len());
            io.write_all(out).await?;
            out.clear();
        }
        match std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
            Some(Ok(chunk)) => {
                if framing.chunk(out, &chunk).is_err() {
                    tracing::warn!("response body longer than its Content-Length; closing");
                    return Ok(None);
                }
                sent += chunk.len();
            }
            Some(Err(e)) => {
                tracing::warn!("response body stream failed: {e}; closing the connection");
                return Ok(None);
            }
            None => {
                let whole = framing.end(out).is_ok();
                if !out.is_empty() {
                    track.writing(out.len());
                    io.write_all(out).await?;
                    out.clear();
                }
                if !whole {
                    tracing::warn!("response body shorter than its Content-Length; closing");
                    return Ok(None);
                }
                return Ok(Some(sent));
            }
        }
    }
}

pub(crate) async fn call<H: Handler>(handler: &H, req: Request, s: &ConnSettings) -> Response {
    let Some(limit) = s.request_timeout else {
        return handler.call(req, Ctx::new(Wait::Yield)).await;
    };
    let (method, path) = (req.method.as_str().to_owned(), req.path.clone());
    let started = Instant::now();
    let ctx = Ctx::new(Wait::Yield).with_deadline(Some(started + limit));
    // Either the application notices its deadline in a wait, or the timer cuts it off.
    let resp = tokio::time::timeout(limit, handler.call(req, ctx)).await;
    let elapsed = started.elapsed();
    match resp {
        Ok(resp) if elapsed < limit => resp,
        _ => {
            crate::conn::log_timeout(&method, &path, elapsed);
            crate::conn::timeout_response()
        }
    }
}

/// Closes the connection. After refusing a request the client may still be sending; reading
/// what it sends for a moment before closing keeps the kernel from answering with a RST that
/// would destroy our error response in flight (nginx's lingering close).
pub(crate) async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    lingering: Lingering,
    settings: &ConnSettings,
) -> io::Result<()> {
    io.shutdown().await?;
    if lingering == Lingering::Yes {
        let mut sink = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + settings.linger;
        let mut drained = 0usize;
        while drained < settings.linger_bytes {
            match tokio::time::timeout_at(deadline, io.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    }
    Ok(())
}
