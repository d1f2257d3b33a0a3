//! Drives one connection on the tokio runtime: a thin I/O shell around [`crate::conn::Machine`],
//! which holds every protocol decision. Reads wait with the machine's deadline; an idle
//! connection also wakes for a shutdown or a reload ([`Phase::closes_idle`]).

use std::future::Future;
use std::io;
use std::task::Poll;
use std::time::Instant;

use c10k_http::{Ctx, Handler, Request, Response, Wait};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::config::Protocol;
use crate::conn::{Action, ConnSettings, Lingering, Machine, StagedClose};
use crate::lazy_io::SendFile;
use crate::proto::ConnInfo;
use crate::shutdown::Phase;
use crate::track::ConnTrack;

/// How long a new connection whose client sends nothing counts as opening (see `on_opened` in
/// [`serve`]). A client's first request follows its connection within microseconds, or a round
/// trip; one that says nothing for longer is not about to take a thread.
const OPENING: std::time::Duration = std::time::Duration::from_millis(10);

/// Serves requests on `io` until the client closes, a timeout fires, or the server stops.
/// `on_opened` is called once the connection is past opening: as its first request goes to the
/// handler, or when its client has sent nothing for [`OPENING`] (or it is dropped uncalled when
/// the connection ends before either).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve<S, H>(
    mut io: S,
    track: &mut ConnTrack,
    handler: &H,
    settings: &ConnSettings,
    stop: watch::Receiver<Phase>,
    on_request: &(dyn Fn() + Sync),
    on_opened: impl FnOnce(),
    info: ConnInfo,
    protocol: Protocol,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + SendFile + StagedClose + Unpin,
    H: Handler,
{
    let mut conn = Machine::new(settings, track, info, protocol, true, Instant::now());
    // One timer and one stop watch for the connection's life, not one of each per read: a
    // keep-alive read usually waits (the client sends its next request after our answer), and a
    // fresh `timeout_at` and `changed()` would register and unregister a timer and a watch
    // waiter, under their locks, on every request. Moving the deadline later is lock-free.
    let mut timer = std::pin::pin!(tokio::time::sleep_until(tokio::time::Instant::now()));
    let mut stop_watch = stop.clone();
    // `true`: idle connections close (a stop, or a reload); `false`: the stop channel closed
    // (the worker is exiting).
    let mut stopped =
        std::pin::pin!(async move { stop_watch.wait_for(|p| p.closes_idle()).await.is_ok() });
    let mut stop_seen = false;
    // The time after the last wait: each step after an await reads the clock once and the
    // machine's next decision reuses it (a clock read is a measurable share of a small request).
    let mut now = Instant::now();
    let opening_ends = tokio::time::Instant::from_std(now + OPENING);
    let mut on_opened = Some(on_opened);
    loop {
        let stopping = stop.borrow().closes_idle();
        match conn.next(now, stopping) {
            Action::Write => {
                // A write the socket takes at once (the usual case) took no time worth a
                // clock read; one that had to wait did.
                if write_all(&mut io, conn.output(), settings.send_timeout).await? {
                    now = Instant::now();
                }
                conn.written(now);
            }
            Action::Read { deadline, idle } => {
                let mut reading = std::pin::pin!(io.read_buf(conn.input()));
                // Bytes that are there already are read without arming the timer (a uwsgi
                // request is all there when nginx's connection is accepted): arming it would
                // insert it into the runtime's timer wheel, under its lock, for nothing.
                let ready = std::future::poll_fn(|cx| Poll::Ready(reading.as_mut().poll(cx))).await;
                let read = match ready {
                    // Bytes that were there already: no time passed worth a clock read.
                    Poll::Ready(r) => Some(r),
                    Poll::Pending => {
                        let mut wake = tokio::time::Instant::from_std(deadline);
                        if on_opened.is_some() {
                            // The same timer ends the opening, so a silent client costs no other.
                            wake = wake.min(opening_ends);
                        }
                        if timer.deadline() != wake {
                            timer.as_mut().reset(wake);
                        }
                        // Biased: bytes that arrive are read before the timer or the stop is
                        // looked at (the machine judges the deadline itself on its next step).
                        let r = tokio::select! {
                            biased;
                            r = &mut reading => Some(r),
                            () = &mut timer => None,
                            open = &mut stopped, if idle && !stop_seen => {
                                if !open {
                                    return Ok(());
                                }
                                stop_seen = true;
                                now = Instant::now();
                                continue;
                            }
                        };
                        now = Instant::now();
                        if r.is_none() {
                            opened(&mut on_opened);
                        }
                        r
                    }
                };
                match read {
                    Some(Ok(n)) => conn.received(n, now),
                    Some(Err(e)) => return Err(e),
                    // The machine sees the deadline has passed and says what to do.
                    None => {}
                }
            }
            Action::Handle(request) => {
                opened(&mut on_opened);
                let resp = call(handler, request, settings).await;
                now = Instant::now();
                on_request();
                let may_keep = *stop.borrow() == Phase::Running;
                conn.respond(resp, may_keep);
            }
            Action::SendFile => {
                let (sent, ok) = match conn.file() {
                    Some(f) => io.send_file(f, settings.send_timeout).await,
                    None => (0, false),
                };
                now = Instant::now();
                conn.file_sent(sent, ok, now);
            }
            Action::Pull => {
                let item = match conn.stream() {
                    Some(s) => std::future::poll_fn(|cx| s.as_mut().poll_next(cx)).await,
                    None => None,
                };
                now = Instant::now();
                conn.pulled(item);
            }
            Action::Close(lingering) => {
                drop(conn);
                return finish(io, lingering, settings).await;
            }
        }
    }
}

/// Writes all of `buf`; `Ok(true)` when that had to wait for the client. A wait in which the
/// client takes none of it for `stall` (`--send-timeout`) fails the write: a client that stops
/// reading must not hold the connection, and a streamed body's Python thread, for ever. Each
/// write that goes through starts the wait anew, so a slow download is not cut, only a stall.
async fn write_all<S: AsyncWrite + Unpin>(
    io: &mut S,
    mut buf: &[u8],
    stall: Option<std::time::Duration>,
) -> io::Result<bool> {
    let mut waited = false;
    while !buf.is_empty() {
        let mut writing = std::pin::pin!(io.write(buf));
        // The timer is armed only when the socket is full: most writes never wait.
        let n = match std::future::poll_fn(|cx| Poll::Ready(writing.as_mut().poll(cx))).await {
            Poll::Ready(r) => r?,
            Poll::Pending => {
                waited = true;
                match stall {
                    Some(limit) => tokio::time::timeout(limit, writing)
                        .await
                        .map_err(|_| crate::conn::stalled(limit))??,
                    None => writing.await?,
                }
            }
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(waited)
}

/// Calls the `on_opened` hook of [`serve`] if it has not been called yet.
fn opened(hook: &mut Option<impl FnOnce()>) {
    if let Some(f) = hook.take() {
        f();
    }
}

async fn call<H: Handler>(handler: &H, req: Request, s: &ConnSettings) -> Response {
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
/// would destroy our error response in flight (nginx's lingering close). The same holds after
/// any answer when the client sent more meanwhile (a pipelined request) that lies unread in the
/// socket, or when part of the answer is still unsent: RFC 9112 §9.6's staged close, which
/// gunicorn does on every close.
async fn finish<S: AsyncRead + AsyncWrite + StagedClose + Unpin>(
    mut io: S,
    lingering: Lingering,
    settings: &ConnSettings,
) -> io::Result<()> {
    if lingering == Lingering::Reset {
        io.reset_on_close();
    }
    if lingering.wanted(&io) {
        // The FIN goes first so the client sees the answer is complete while we drain. Without
        // lingering, dropping the socket closes it with the same FIN: a shutdown would be a
        // syscall for nothing.
        io.shutdown().await?;
        // On the heap: an array here would live in every connection's future (and be copied
        // with it when the task is spawned), for the few connections that linger.
        let mut sink = vec![0u8; 64 * 1024];
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
