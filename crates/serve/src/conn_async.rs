//! Drives one connection on the tokio runtime: a thin I/O shell around [`crate::conn::Machine`],
//! which holds every protocol decision. Reads wait with the machine's deadline; an idle
//! connection also wakes for a shutdown.

use std::io;
use std::time::Instant;

use c10k_http::{BodyStream, Ctx, Handler, Request, Response, Wait};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::conn::{Action, ConnSettings, Lingering, Machine};
use crate::proto::{BodyFraming, ConnInfo};
use crate::shutdown::Phase;
use crate::track::ConnTrack;

/// Serves requests on `io` until the client closes, a timeout fires, or the server stops.
#[allow(clippy::too_many_arguments)]
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
    let mut conn = Machine::new(settings, track, info, true, Instant::now());
    loop {
        let stopping = *stop.borrow() >= Phase::Graceful;
        match conn.next(Instant::now(), stopping) {
            Action::Write => {
                io.write_all(conn.output()).await?;
                conn.written(Instant::now());
            }
            Action::Read { deadline, idle } => {
                let deadline = tokio::time::Instant::from_std(deadline);
                let read = tokio::select! {
                    r = tokio::time::timeout_at(deadline, io.read_buf(conn.input())) => r,
                    changed = stop.changed(), if idle => {
                        if changed.is_err() {
                            return Ok(());
                        }
                        continue;
                    }
                };
                match read {
                    Ok(Ok(n)) => conn.received(n, Instant::now()),
                    Ok(Err(e)) => return Err(e),
                    // The machine sees the deadline has passed and says what to do.
                    Err(_elapsed) => {}
                }
            }
            Action::Handle(request) => {
                let resp = call(handler, request, settings).await;
                on_request();
                let may_keep = *stop.borrow() == Phase::Running;
                conn.respond(resp, may_keep);
            }
            Action::Pull => {
                let item = match conn.stream() {
                    Some(s) => std::future::poll_fn(|cx| s.as_mut().poll_next(cx)).await,
                    None => None,
                };
                conn.pulled(item);
            }
            Action::Close(lingering) => {
                drop(conn);
                return finish(io, lingering, settings).await;
            }
        }
    }
}

/// Writes what is buffered, then the streamed body chunk by chunk as the stream yields it.
/// `Ok(Some(bytes))`: the body went out whole; `Ok(None)`: the stream failed or broke its
/// announced length, and the connection must close. The stream is dropped on every way out,
/// a client that went away included. (The uwsgi driver's; HTTP connections stream through
/// `conn::Machine`.)
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
