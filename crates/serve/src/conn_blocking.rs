//! Drives one connection on a blocking OS thread (the `sync`, `thread` and `gthread` classes): a
//! thin I/O shell around [`crate::conn::Machine`], which holds every protocol decision.
//!
//! A blocked `read` cannot see a shutdown (or a reload: [`Phase::closes_idle`]), so reads use a
//! short socket timeout and re-check the stop phase in between; the cost is one wake-up per poll
//! interval per idle connection.
//!
//! While the handler runs, the connection's writing side is lent to it ([`c10k_http::early`]), so
//! that a handler running on this thread (a WSGI app's `write()`) can answer before it returns;
//! the answer still goes through the machine, and the driver serves the rest of its stream after.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use c10k_http::{Ctx, Handler, Request, Response, Wait};

use crate::config::Protocol;
use crate::conn::{Action, ConnSettings, Lingering, Machine, StagedClose};
use crate::proto::ConnInfo;
use crate::shutdown::{Phase, Shutdown};
use crate::stream::Stream;
use crate::track::ConnTrack;

/// A blocking connection's socket, for the staged close (here, not in stream.rs, so that the
/// stream type names nothing of the connection state machine above it).
impl StagedClose for Stream {
    fn close_may_lose_answer(&self) -> bool {
        use c10k_http::Transport;
        match self {
            Stream::Tcp(s) => crate::sys::close_may_lose_answer(s.as_raw_fd(), Transport::Tcp),
            Stream::Unix(s) => crate::sys::close_may_lose_answer(s.as_raw_fd(), Transport::Unix),
        }
    }

    fn reset_on_close(&self) {
        match self {
            Stream::Tcp(s) => crate::sys::reset_on_close(s),
            Stream::Unix(s) => crate::sys::reset_on_close(s),
        }
    }
}

/// How often a blocked read wakes to look at the stop phase.
const POLL: Duration = Duration::from_millis(200);

/// How long a driver keeps a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Answer one request, then close (the `sync` class: no keep-alive, like gunicorn's).
    OneRequest,
    /// Serve until the client or a timeout closes the connection (the `thread` class).
    UntilClosed,
    /// Run what is ready (requests already read, answers, streams) and give the connection back
    /// as soon as it must wait for the client: a pool thread never waits on a socket's reads,
    /// so neither idle keep-alive connections nor clients that send slowly hold one (the
    /// `gthread` class; its poller does the reading).
    Pool,
}

/// What became of a connection.
pub(crate) enum Outcome {
    Closed,
    /// Waiting for the client (only in [`Mode::Pool`]): watch it until it is readable or
    /// `deadline` passes.
    Wait(Stream, Instant),
}

/// Serves `stream` (whose addresses are `info`) from its start. `on_request` is called once per
/// answered request (scoreboard, max-requests); `track` follows the connection's state for the
/// processlist.
#[allow(clippy::too_many_arguments)]
pub(crate) fn serve<H: Handler>(
    stream: Stream,
    info: ConnInfo,
    track: &mut ConnTrack,
    handler: &H,
    settings: &ConnSettings,
    shutdown: &Shutdown,
    mode: Mode,
    protocol: Protocol,
    on_request: &mut dyn FnMut(),
) -> io::Result<Outcome> {
    let keep_alive_allowed = mode != Mode::OneRequest;
    let now = Instant::now();
    let mut conn = Machine::new(settings, track, info, protocol, keep_alive_allowed, now);
    drive(stream, &mut conn, None, handler, shutdown, mode, on_request)
}

/// Executes `conn`'s actions on `stream`, starting with `first` (a request the poller already
/// read) if there is one.
pub(crate) fn drive<C, T, H>(
    mut stream: Stream,
    conn: &mut Machine<C, T>,
    mut first: Option<Request>,
    handler: &H,
    shutdown: &Shutdown,
    mode: Mode,
    on_request: &mut dyn FnMut(),
) -> io::Result<Outcome>
where
    C: std::borrow::Borrow<ConnSettings>,
    T: std::borrow::BorrowMut<ConnTrack>,
    H: Handler,
{
    // The socket's receive timeout, as last set here (`None`: never set, or set elsewhere).
    let mut read_timeout: Option<Duration> = None;
    loop {
        let stopping = shutdown.phase().closes_idle();
        let action = match first.take() {
            Some(request) => Action::Handle(request),
            None => conn.next(Instant::now(), stopping),
        };
        match action {
            Action::Write => {
                write_all(&mut stream, conn.output(), conn.settings().send_timeout)?;
                conn.written(Instant::now());
            }
            Action::Read { deadline, .. } if mode == Mode::Pool => {
                return Ok(Outcome::Wait(stream, deadline));
            }
            Action::Read { deadline, .. } => {
                // What is already there is read without a timeout to set (a uwsgi request is
                // all there when nginx's connection is accepted): one syscall, not two.
                let read = match read_nonblocking(&stream, conn.input()) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // A blocked read cannot see a shutdown: wake at least every POLL to look.
                        let left = deadline.saturating_duration_since(Instant::now());
                        let wait = Some(left.clamp(Duration::from_millis(1), POLL));
                        if wait != read_timeout {
                            stream.set_read_timeout(wait)?;
                            read_timeout = wait;
                        }
                        read_buf(&mut stream, conn.input())
                    }
                    read => read,
                };
                match read {
                    Ok(n) => conn.received(n, Instant::now()),
                    // Not fatal: the machine re-checks the stop phase and the deadlines.
                    Err(e) if is_timeout(&e) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Action::Handle(request) => {
                let timeout = conn.settings().request_timeout;
                let mut early = Early {
                    stream: &mut stream,
                    conn: &mut *conn,
                    shutdown,
                    answered: false,
                    failed: None,
                };
                let resp = c10k_http::early::lend(&mut early, || call(handler, request, timeout));
                let Early {
                    answered, failed, ..
                } = early;
                on_request();
                if answered {
                    // The handler answered while it ran (see `Early`); what it returned is moot.
                    if let Some(e) = failed {
                        return Err(e);
                    }
                } else {
                    let may_keep = shutdown.phase() == Phase::Running;
                    conn.respond(resp, may_keep);
                }
            }
            Action::SendFile => {
                let stall = conn.settings().send_timeout;
                let (sent, ok) = match conn.file() {
                    Some(f) => crate::sendfile::send_blocking(stream.as_raw_fd(), f, stall),
                    None => (0, false),
                };
                conn.file_sent(sent, ok, Instant::now());
            }
            Action::Pull => {
                let item = match conn.stream() {
                    Some(s) => {
                        pollster::block_on(std::future::poll_fn(|cx| s.as_mut().poll_next(cx)))
                    }
                    None => None,
                };
                conn.pulled(item);
            }
            Action::Close(lingering) => {
                finish(&mut stream, lingering, conn.settings());
                return Ok(Outcome::Closed);
            }
        }
    }
}

/// Reads what `stream` has for `conn` without blocking (gthread's poller, on a readable event),
/// then says what the connection needs: `Ok(None)`: more bytes (keep watching it until the
/// deadline); `Ok(Some(first))`: a pool thread, with the request it must run if there is one.
pub(crate) fn read_ready<C, T>(
    stream: &Stream,
    conn: &mut Machine<C, T>,
    stopping: bool,
) -> io::Result<Result<Option<Request>, Instant>>
where
    C: std::borrow::Borrow<ConnSettings>,
    T: std::borrow::BorrowMut<ConnTrack>,
{
    // Bounded: a client that sends faster than we read still yields to the others.
    let mut deadline = Instant::now();
    for _ in 0..64 {
        let got = match read_nonblocking(stream, conn.input()) {
            Ok(n) => {
                conn.received(n, Instant::now());
                n > 0
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        match conn.next(Instant::now(), stopping) {
            Action::Read { deadline: d, .. } if got => deadline = d,
            Action::Read { deadline, .. } => return Ok(Err(deadline)),
            Action::Handle(request) => return Ok(Ok(Some(request))),
            // Something to write, or a close: the pool's work.
            _ => return Ok(Ok(None)),
        }
    }
    Ok(Err(deadline))
}

/// `recv(2)` with `MSG_DONTWAIT`: reads what is there without changing the socket's blocking
/// mode, which the pool's threads rely on.
fn read_nonblocking(stream: &Stream, buf: &mut BytesMut) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: `recv` writes at most `spare.len()` bytes into memory we own (the buffer's spare
    // capacity); only the bytes it reports written are then marked initialised.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            spare.as_mut_ptr().cast(),
            spare.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialised `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Writes all of `buf` to `stream`, whose `SO_SNDTIMEO` is `stall` (`--send-timeout`, see
/// `accept_blocking`). The kernel fails a `send` that could move nothing within the timeout, but
/// one that moved some bytes into the room the socket had at its start waits out the timeout and
/// returns them: without a look at the clock, that partial write would count as progress, and a
/// client that never reads again would hold the thread for ever, one timeout per call.
fn write_all(stream: &mut Stream, mut buf: &[u8], stall: Option<Duration>) -> io::Result<()> {
    while !buf.is_empty() {
        let started = Instant::now();
        match stream.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                if let Some(limit) = stall {
                    if n < buf.len() && started.elapsed() >= limit {
                        return Err(crate::conn::stalled(limit));
                    }
                }
                buf = &buf[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(match stall {
                    Some(limit) if is_timeout(&e) => crate::conn::stalled(limit),
                    _ => e,
                })
            }
        }
    }
    Ok(())
}

/// The connection's writing side, lent to a handler while it runs on this thread
/// ([`c10k_http::early`]): a WSGI app's `write()` sends its head and data through it as it runs.
/// The answer goes to the machine as any other; a flush then executes the machine's writes and
/// pulls until the body stream has nothing ready (its chunks come from the running handler), so
/// the handler waits for the client as the connection's writes do (`--send-timeout` included).
struct Early<'a, C, T> {
    stream: &'a mut Stream,
    conn: &'a mut Machine<C, T>,
    shutdown: &'a Shutdown,
    answered: bool,
    /// The connection failed under a flush: it closes once the handler returns.
    failed: Option<io::Error>,
}

impl<C, T> c10k_http::early::Responder for Early<'_, C, T>
where
    C: std::borrow::Borrow<ConnSettings>,
    T: std::borrow::BorrowMut<ConnTrack>,
{
    fn answer(&mut self, resp: Response) -> io::Result<()> {
        if self.answered {
            return Err(io::Error::other("the request was already answered"));
        }
        self.answered = true;
        let may_keep = self.shutdown.phase() == Phase::Running;
        self.conn.respond(resp, may_keep);
        self.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = &self.failed {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        let done = self.pump();
        if let Err(e) = &done {
            self.failed = Some(io::Error::new(e.kind(), e.to_string()));
        }
        done
    }
}

impl<C, T> Early<'_, C, T>
where
    C: std::borrow::Borrow<ConnSettings>,
    T: std::borrow::BorrowMut<ConnTrack>,
{
    fn pump(&mut self) -> io::Result<()> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if !self.conn.output().is_empty() {
                let stall = self.conn.settings().send_timeout;
                write_all(self.stream, self.conn.output(), stall)?;
                self.conn.written(Instant::now());
            }
            // Only the answered stream: once it ends (or a HEAD answer dropped it), what comes
            // next (the next request, a close) is the driver's, after the handler returns.
            if !self.conn.is_streaming() {
                return Ok(());
            }
            let Some(s) = self.conn.stream() else {
                return Ok(());
            };
            match s.as_mut().poll_next(&mut cx) {
                std::task::Poll::Pending => return Ok(()),
                std::task::Poll::Ready(item) => self.conn.pulled(item),
            }
        }
    }
}

fn call<H: Handler>(handler: &H, req: Request, request_timeout: Option<Duration>) -> Response {
    let started = Instant::now();
    let deadline = request_timeout.map(|t| started + t);
    let names = request_timeout.map(|_| (req.method.as_str().to_owned(), req.path.clone()));
    let resp = pollster::block_on(handler.call(req, Ctx::new(Wait::Block).with_deadline(deadline)));
    if let (Some(limit), Some((method, path))) = (request_timeout, names) {
        let elapsed = started.elapsed();
        if elapsed >= limit {
            // The handler could not be interrupted (it did not wait through Ctx); its answer is
            // late, so the client gets the same 504 as under the async class.
            crate::conn::log_timeout(&method, &path, elapsed);
            return crate::conn::timeout_response();
        }
    }
    resp
}

fn read_buf(stream: &mut Stream, buf: &mut BytesMut) -> io::Result<usize> {
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

/// See `conn_async::finish`: read briefly after refusing, or when the client's bytes lie unread
/// in the socket or our answer is not all sent, so the answer is not lost to a RST.
fn finish(stream: &mut Stream, lingering: Lingering, settings: &ConnSettings) {
    let _ = stream.flush();
    if lingering == Lingering::Reset {
        stream.reset_on_close();
    }
    if lingering.wanted(&*stream) {
        // Without lingering, the close that follows sends the same FIN (see conn_async).
        let _ = stream.shutdown_write();
        let deadline = Instant::now() + settings.linger;
        let mut sink = vec![0u8; 64 * 1024];
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use c10k_http::BoxError;

    use crate::config::ServeConfig;
    use crate::scoreboard::Scoreboard;
    use crate::track::Tracker;

    /// A body stream that yields its items, then ends; records when it is dropped.
    struct Chunks {
        items: std::collections::VecDeque<Result<Bytes, BoxError>>,
        dropped: Arc<AtomicBool>,
    }

    impl futures_core::Stream for Chunks {
        type Item = Result<Bytes, BoxError>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.items.pop_front())
        }
    }

    impl Drop for Chunks {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    /// Answers `/ok` with a three-chunk stream and `/broken` with a stream that fails after one
    /// chunk.
    struct Streamer {
        dropped: Arc<AtomicBool>,
    }

    impl Handler for Streamer {
        async fn call(&self, req: Request, _ctx: Ctx) -> Response {
            let mut items: std::collections::VecDeque<Result<Bytes, BoxError>> =
                ["one ", "two ", "three"]
                    .into_iter()
                    .map(|s| Ok(Bytes::from_static(s.as_bytes())))
                    .collect();
            if req.path == "/broken" {
                items.truncate(1);
                items.push_back(Err("the app gave up".into()));
            }
            let chunks = Chunks {
                items,
                dropped: self.dropped.clone(),
            };
            Response::new(200).with_stream(Box::pin(chunks))
        }
    }

    /// Serves `server` with `handler` on a thread of its own, with default settings, until the
    /// client closes.
    fn serve_on<H: Handler + Send + 'static>(
        server: std::os::unix::net::UnixStream,
        handler: H,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let sb = Arc::new(Scoreboard::create().unwrap());
            sb.reset(0, 1);
            let config = ServeConfig::default();
            let tracker = Arc::new(Tracker::new(sb, 0, &config).unwrap());
            let mut track = tracker.open(None);
            let settings = ConnSettings::from_config(&config);
            let server = Stream::Unix(server);
            let info = server.info();
            let _ = serve(
                server,
                info,
                &mut track,
                &handler,
                &settings,
                &Shutdown::new(),
                Mode::UntilClosed,
                Protocol::Http,
                &mut || {},
            );
        })
    }

    fn serve_pair(
        requests: &'static [u8],
    ) -> (Vec<u8>, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
        let (mut client, server) = std::os::unix::net::UnixStream::pair().unwrap();
        let dropped = Arc::new(AtomicBool::new(false));
        let handler = Streamer {
            dropped: dropped.clone(),
        };
        let t = serve_on(server, handler);
        client.write_all(requests).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        let _ = client.read_to_end(&mut got);
        (got, dropped, t)
    }

    #[test]
    fn a_stream_is_chunked_and_the_connection_kept() {
        let (got, dropped, t) = serve_pair(
            b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        t.join().unwrap();
        let text = String::from_utf8(got).unwrap();
        let body = "4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n";
        assert_eq!(text.matches(body).count(), 2, "{text}");
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn a_stream_that_fails_closes_the_connection_unterminated() {
        let (got, dropped, t) = serve_pair(
            b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        t.join().unwrap();
        let text = String::from_utf8(got).unwrap();
        assert!(text.ends_with("4\r\none \r\n"), "{text:?}");
        assert_eq!(
            text.matches("HTTP/1.1").count(),
            1,
            "the pipelined request is not answered"
        );
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn http_1_0_gets_a_close_delimited_stream() {
        let (got, _, t) = serve_pair(b"GET /ok HTTP/1.0\r\n\r\n");
        t.join().unwrap();
        let text = String::from_utf8(got).unwrap();
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\none two three"), "{text:?}");
    }

    /// A stream fed from a channel: `Pending` while it has nothing (the handler still runs).
    struct Fed(std::sync::Mutex<std::sync::mpsc::Receiver<Option<Bytes>>>);

    impl futures_core::Stream for Fed {
        type Item = Result<Bytes, BoxError>;
        fn poll_next(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            match self.0.lock().unwrap().try_recv() {
                Ok(item) => std::task::Poll::Ready(item.map(Ok)),
                Err(_) => std::task::Poll::Pending,
            }
        }
    }

    /// Answers through the lent responder while it runs (as a WSGI app's write() does): the head
    /// and `one `, then waits until the client says it has them before it sends `two` and returns
    /// a response the driver must ignore.
    struct EarlyAnswer {
        client_has_one: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
        in_time: Arc<AtomicBool>,
    }

    impl Handler for EarlyAnswer {
        async fn call(&self, _: Request, _: Ctx) -> Response {
            let (tx, rx) = std::sync::mpsc::channel();
            tx.send(Some(Bytes::from_static(b"one "))).unwrap();
            let resp = Response::new(200).with_stream(Box::pin(Fed(rx.into())));
            c10k_http::early::with(|r| r.answer(resp))
                .expect("a responder is lent")
                .unwrap();
            let waited = self
                .client_has_one
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(10));
            self.in_time.store(waited.is_ok(), Ordering::SeqCst);
            tx.send(Some(Bytes::from_static(b"two"))).unwrap();
            c10k_http::early::with(|r| r.flush()).unwrap().unwrap();
            tx.send(None).unwrap();
            Response::text(500, "ignored")
        }
    }

    #[test]
    fn a_handler_answers_through_the_lent_responder_before_it_returns() {
        let (mut client, server) = std::os::unix::net::UnixStream::pair().unwrap();
        let (has_one, client_has_one) = std::sync::mpsc::channel();
        let in_time = Arc::new(AtomicBool::new(false));
        let handler = EarlyAnswer {
            client_has_one: client_has_one.into(),
            in_time: in_time.clone(),
        };
        let t = serve_on(server, handler);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains("one ") {
            let n = client.read(&mut buf).unwrap();
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        has_one.send(()).unwrap();
        client.read_to_end(&mut got).unwrap();
        t.join().unwrap();
        assert!(
            in_time.load(Ordering::SeqCst),
            "the head waited for the handler"
        );
        let text = String::from_utf8(got).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.ends_with("\r\n\r\n4\r\none \r\n3\r\ntwo\r\n0\r\n\r\n"),
            "{text:?}"
        );
        assert!(!text.contains("ignored"), "{text}");
    }
}
