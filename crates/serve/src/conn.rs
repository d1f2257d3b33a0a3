//! One connection's protocol state, sans I/O: bytes in → decode → dispatch → encode →
//! keep-alive, close or lingering close, with every deadline expressed as an action.
//!
//! [`Machine`] owns the read buffer, the output buffer, the codec and the clocks of one
//! connection. A driver (`conn_blocking` on an OS thread, `conn_async` on tokio) only asks it
//! [`Machine::next`] and executes the [`Action`] it gets: write the output, read with a deadline,
//! run the handler on a request, pull a chunk of a streamed body, or close (lingering or not).
//! The key design choice is that the drivers hold no protocol logic at all — keep-alive rules,
//! 100-continue, the head/body/idle deadlines and the 408 that ends them, refusals, pipelining
//! (all responses to already-buffered requests go out in one write) live here once, and are
//! unit-tested without a socket. Before this, the two drivers each carried a copy and the copies
//! drifted (the idle deadline was measured differently in each).
//!
//! Protocols plug in as a [`Codec`]: HTTP/1.x, and nginx's uwsgi (`crate::uwsgi`: one request
//! per connection, never chunked, close-delimited streams; a malformed packet is closed
//! unanswered, logged and counted, as uWSGI does and nginx expects).

use std::borrow::{Borrow, BorrowMut};
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use c10k_http::{Body, BodyStream, BoxError, FileBody, Request, Response};

use crate::config::{Protocol, ServeConfig};
use crate::proto::{
    encode_head, has_content, BodyFraming, ConnInfo, Decoder, HttpError, Limits, Persist,
    RequestMeta, CONTINUE,
};
use crate::track::ConnTrack;

/// Settings a connection needs, derived once from [`ServeConfig`].
#[derive(Clone, Debug)]
pub(crate) struct ConnSettings {
    pub limits: Limits,
    /// Idle time allowed between requests; `None` disables keep-alive.
    pub keepalive: Option<Duration>,
    /// Time for a whole request head, and for each read of a body to make progress.
    pub header_timeout: Duration,
    /// How long after it was accepted a connection whose client has sent nothing yet may still
    /// send its first request once the worker stops ([`FIRST_REQUEST_GRACE`], at most
    /// `--header-timeout` and `--graceful-timeout`).
    pub first_request_grace: Duration,
    /// Time for a whole request body, from the end of its head (`--body-timeout`); see
    /// [`body_deadline`].
    pub body_timeout: Option<Duration>,
    /// Each this many bytes of a body received extend its `body_timeout` by a second
    /// (`--body-min-rate`); `None`: no extension.
    pub body_min_rate: Option<NonZeroU64>,
    pub request_timeout: Option<Duration>,
    /// How long one write may wait for the client to take any of the response
    /// (`--send-timeout`); past it the driver fails the write and drops the connection.
    pub send_timeout: Option<Duration>,
    /// Initial read buffer; it grows on demand up to the head and body limits.
    pub read_buffer: usize,
    /// How long and how much to read after refusing a request, before closing. The bytes must
    /// cover an upload the client sends whole before it reads the answer (Python's
    /// `http.client` and `requests` do): with 256 KiB, a 20 MB upload over
    /// `--limit-request-body` was cut by a RST and the client saw `BrokenPipeError`, never the
    /// 413 that names the flag. nginx lingers by time alone (`lingering_time`); the bytes here
    /// bound the CPU one refused client can cost.
    pub linger: Duration,
    pub linger_bytes: usize,
    /// Keep what the access log prints.
    pub log_fields: bool,
    /// Limits of a uwsgi listener's requests (the same body limit).
    pub uwsgi: crate::uwsgi::UwsgiLimits,
    /// `--uwsgi-allow-from`.
    pub uwsgi_allow_from: Vec<crate::config::AllowFrom>,
}

impl ConnSettings {
    pub fn from_config(c: &ServeConfig) -> ConnSettings {
        ConnSettings {
            limits: c.limits(),
            keepalive: (c.keepalive > 0.0).then(|| Duration::from_secs_f64(c.keepalive)),
            header_timeout: Duration::from_secs_f64(c.header_timeout),
            first_request_grace: FIRST_REQUEST_GRACE
                .min(Duration::from_secs_f64(c.header_timeout))
                .min(Duration::from_secs_f64(c.graceful_timeout)),
            body_timeout: (c.body_timeout > 0.0).then(|| Duration::from_secs_f64(c.body_timeout)),
            body_min_rate: NonZeroU64::new(c.body_min_rate),
            request_timeout: c.request_timeout.map(Duration::from_secs_f64),
            send_timeout: send_timeout(c),
            read_buffer: 2048,
            linger: Duration::from_secs(1),
            linger_bytes: 64 * 1024 * 1024,
            log_fields: c.access_log.is_some(),
            uwsgi: crate::uwsgi::UwsgiLimits::from_http(&c.limits()),
            uwsgi_allow_from: c.uwsgi_allow_from.clone(),
        }
    }
}

/// How long a stopping worker still waits, from its accept, for the first request of a
/// connection whose client has sent nothing yet. Such a client has just connected to send a
/// request; closing under it fails that request (a broken pipe or a reset, a 502 from nginx for
/// a POST it may not retry), whereas a client whose kept-alive connection closes between requests
/// retries on a new one. nginx's graceful shutdown makes the same distinction. A second covers a
/// client's connect-then-send on any network; one that says nothing for longer is closed quietly.
pub(crate) const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// `--send-timeout` as the drivers use it (`None`: no limit); the blocking classes also give it
/// to their listeners before any connection exists.
pub(crate) fn send_timeout(c: &ServeConfig) -> Option<Duration> {
    (c.send_timeout > 0.0).then(|| Duration::from_secs_f64(c.send_timeout))
}

/// When a body whose head ended at `started` must be complete, `received` bytes of it in:
/// `started + limit + received / min_rate` seconds (Apache mod_reqtimeout's
/// `RequestReadTimeout body=LIMIT,MinRate=RATE`, without its MaxTimeout cap, which
/// `--limit-request-body` makes moot). `None`: beyond what an `Instant` can hold, so no limit.
/// Integer arithmetic only (no allocation, no syscall): it runs on every read of a body.
fn body_deadline(
    started: Instant,
    limit: Duration,
    received: u64,
    min_rate: Option<NonZeroU64>,
) -> Option<Instant> {
    let earned = match min_rate {
        None => Duration::ZERO,
        Some(rate) => {
            let (rate, nanos) = (u128::from(rate.get()), 1_000_000_000u128);
            let n = u128::from(received) * nanos / rate;
            Duration::from_nanos(u64::try_from(n).ok()?)
        }
    };
    started.checked_add(limit)?.checked_add(earned)
}

/// The error of a write that waited `limit` (`--send-timeout`) without the client taking any
/// of the response.
pub(crate) fn stalled(limit: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "the client took none of the response for {} s (--send-timeout); closing",
            limit.as_secs_f64()
        ),
    )
}

/// How much room a read gets while a body arrives.
const BODY_READ: usize = 16 * 1024;

/// Whether to read (and drop) what the client still sends before closing: closing with unread
/// data makes the kernel send a RST that can destroy the answer in flight (nginx's lingering
/// close; RFC 9112 §9.6's staged close).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lingering {
    /// Always: after a refusal the client may be mid-upload.
    Yes,
    /// When closing at once could destroy the answer: the client sent bytes we have not read,
    /// or part of the answer is still queued unsent (`crate::sys::close_may_lose_answer`).
    IfAtRisk,
    /// Never: there is nothing to protect, and the client is dropped at once. The answer did
    /// not get through (a stalled client, a failed send, a body cut by the app), or the client
    /// has closed its sending side: every byte it sent has been read, and no more can come to
    /// make the kernel reset what is still queued (the usual end of a keep-alive connection, so
    /// its close costs no check).
    No,
    /// Never, and with a RST rather than a FIN (see `crate::sys::reset_on_close`): the answer
    /// is incomplete and its framing cannot tell (a body delimited by the close, for HTTP/1.0
    /// and over uwsgi, whose stream failed). A FIN would make the cut body look whole: nginx
    /// behind `uwsgi_pass` then ends the client's chunked answer cleanly and keeps the
    /// connection, where a RST makes it drop the connection without the last chunk.
    Reset,
}

impl Lingering {
    /// Whether to close `io` in stages (shut the writing side, drain what comes for
    /// [`ConnSettings::linger`], then close) rather than at once: both drivers ask here, so
    /// `IfAtRisk`'s checks are made in one place.
    pub(crate) fn wanted(self, io: &impl StagedClose) -> bool {
        match self {
            Lingering::Yes => true,
            Lingering::IfAtRisk => io.close_may_lose_answer(),
            Lingering::No | Lingering::Reset => false,
        }
    }
}

/// A connection's socket, as far as closing it goes: it can tell whether closing it now could
/// destroy the answer just written (see `crate::sys::close_may_lose_answer`, which needs to
/// know whether the socket is TCP or unix).
pub(crate) trait StagedClose {
    fn close_may_lose_answer(&self) -> bool;
    /// Makes the close that follows send a RST (for [`Lingering::Reset`]).
    fn reset_on_close(&self);
}

/// What the driver must do next; see [`Machine::next`].
// An action lives for one step of a driver's loop; boxing the request would cost an allocation
// per request for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Action {
    /// Write all of [`Machine::output`], then call [`Machine::written`].
    Write,
    /// Read into [`Machine::input`] and report with [`Machine::received`] (0 = end of stream).
    /// The read may wait until `deadline`; a driver that wakes earlier just asks again. `idle`:
    /// no request is under way, so the driver may also stop waiting for a shutdown (or, under
    /// gthread, hand the connection back to its poller).
    Read { deadline: Instant, idle: bool },
    /// Run the application on this request, then call [`Machine::respond`].
    Handle(Request),
    /// Poll [`Machine::stream`] for its next chunk and report it with [`Machine::pulled`].
    Pull,
    /// Send all of [`Machine::file`] (`sendfile(2)`), then report with [`Machine::file_sent`].
    SendFile,
    /// Shut the connection down (writing side first; when [`Lingering::wanted`], drain the
    /// reading side for a moment) and drop it.
    Close(Lingering),
}

/// The protocol spoken on a connection: decodes requests, frames answers.
#[derive(Debug)]
pub(crate) enum Codec {
    Http(Decoder),
    Uwsgi(crate::uwsgi::Decoder),
}

/// A request that is not served.
#[derive(Debug)]
enum Refusal {
    /// Answered with this status and reason, then closed.
    Answer(HttpError),
    /// Not answerable (a malformed uwsgi packet): closed unanswered, logged and counted.
    Drop(String),
}

impl From<HttpError> for Refusal {
    fn from(e: HttpError) -> Refusal {
        Refusal::Answer(e)
    }
}

impl From<crate::uwsgi::UwsgiError> for Refusal {
    fn from(e: crate::uwsgi::UwsgiError) -> Refusal {
        match e {
            crate::uwsgi::UwsgiError::Refused { status, reason } => {
                Refusal::Answer(HttpError { status, reason })
            }
            e @ crate::uwsgi::UwsgiError::Malformed(_) => Refusal::Drop(e.to_string()),
        }
    }
}

impl Codec {
    fn new(protocol: Protocol, settings: &ConnSettings, info: ConnInfo) -> Codec {
        match protocol {
            Protocol::Http => Codec::Http(
                Decoder::new(settings.limits.clone())
                    .capture_log_fields(settings.log_fields)
                    .with_conn(info),
            ),
            Protocol::Uwsgi => {
                Codec::Uwsgi(crate::uwsgi::Decoder::new(settings.uwsgi.clone(), info))
            }
        }
    }

    fn decode(
        &mut self,
        buf: &mut BytesMut,
        log_fields: bool,
    ) -> Result<Option<(Request, RequestMeta)>, Refusal> {
        match self {
            Codec::Http(d) => Ok(d.decode(buf)?.map(|i| (i.request, i.meta))),
            Codec::Uwsgi(d) => Ok(d.decode(buf)?.map(|r| {
                let meta = crate::uwsgi::meta(&r, log_fields);
                (r, meta)
            })),
        }
    }

    /// Nothing of a request has been consumed (between requests).
    fn is_idle(&self) -> bool {
        match self {
            Codec::Http(d) => d.is_idle(),
            Codec::Uwsgi(d) => d.is_idle(),
        }
    }

    fn take_continue(&mut self) -> bool {
        match self {
            Codec::Http(d) => d.take_continue(),
            // nginx sends the whole body without waiting for an interim answer.
            Codec::Uwsgi(_) => false,
        }
    }

    /// Appends the head (and a complete body) of `resp`; returns how a stream must be framed.
    fn encode(
        &self,
        out: &mut Vec<u8>,
        meta: &RequestMeta,
        resp: &Response,
        persist: Persist,
    ) -> BodyFraming {
        match self {
            Codec::Http(_) => encode_head(out, resp, meta.minor_version, persist, meta.head_only),
            // One request per connection: `persist` is always a close, which ends a stream.
            Codec::Uwsgi(_) => crate::uwsgi::encode_head(out, resp, meta.head_only),
        }
    }

    fn refuse(&self, out: &mut Vec<u8>, err: &HttpError) {
        match self {
            Codec::Http(_) => {
                crate::proto::encode_response(out, &err.response(), 1, Persist::Close, false)
            }
            Codec::Uwsgi(_) => {
                crate::uwsgi::encode_head(out, &err.response(), false);
            }
        }
    }
}

/// A response whose body is being streamed.
struct Streaming {
    stream: BodyStream,
    framing: BodyFraming,
    keep: bool,
    sent: usize,
    status: u16,
    meta: RequestMeta,
}

/// A response whose body is a file, after its head.
struct Sending {
    file: FileBody,
    keep: bool,
    status: u16,
    meta: RequestMeta,
}

enum State {
    /// Reading (or decoding buffered) requests.
    Reading,
    Sending(Box<Sending>),
    /// The application runs a request; waiting for [`Machine::respond`].
    Handling(RequestMeta),
    Streaming(Box<Streaming>),
    /// Flush the output, then close.
    Closing(Lingering),
    /// Done; asked again (gthread's poller asks, then the pool thread it hands the connection
    /// to), the machine gives the same close.
    Closed(Lingering),
}

/// One connection's protocol state; see the module documentation. The settings and the
/// connection's tracking are borrowed by a driver that serves the connection from start to end
/// (`Machine<&ConnSettings, &mut ConnTrack>`), or owned when the machine travels with its
/// connection between gthread's poller and its pool (`Machine<Arc<ConnSettings>, ConnTrack>`).
pub(crate) struct Machine<S, T> {
    settings: S,
    track: T,
    codec: Codec,
    buf: BytesMut,
    out: Vec<u8>,
    state: State,
    /// The class lets connections live past one request (not `sync`).
    keep_alive_allowed: bool,
    /// The last answer went out (or the connection opened) at this time.
    idle_since: Instant,
    /// The connection was accepted at this time.
    opened: Instant,
    /// A request has been decoded on this connection (it is no longer waiting for its first).
    begun: bool,
    /// The first byte of the current request head arrived at this time.
    head_started: Option<Instant>,
    /// The current request's head was complete at this time; its body is being read.
    body_started: Option<Instant>,
    /// Bytes read since `body_started` (what `--body-min-rate` counts). Bytes that came in the
    /// same read as the end of the head are not among them, so this errs on the short side by
    /// at most one read.
    body_received: u64,
    last_read: Instant,
    /// `track.partial()` was reported for the request under way.
    partial_reported: bool,
}

impl<S: Borrow<ConnSettings>, T: BorrowMut<ConnTrack>> Machine<S, T> {
    pub fn new(
        settings: S,
        track: T,
        info: ConnInfo,
        protocol: Protocol,
        keep_alive_allowed: bool,
        now: Instant,
    ) -> Machine<S, T> {
        let s: &ConnSettings = settings.borrow();
        let codec = Codec::new(protocol, s, info);
        let buf = BytesMut::with_capacity(s.read_buffer);
        Machine {
            settings,
            track,
            codec,
            buf,
            out: Vec::new(),
            state: State::Reading,
            keep_alive_allowed,
            idle_since: now,
            opened: now,
            begun: false,
            head_started: None,
            body_started: None,
            body_received: 0,
            last_read: now,
            partial_reported: false,
        }
    }

    pub fn settings(&self) -> &ConnSettings {
        self.settings.borrow()
    }

    /// What to do next. `stopping`: the worker is shutting down, so an idle connection closes —
    /// at once when it has served a request, or after [`ConnSettings::first_request_grace`]
    /// from its accept when its client has not sent anything yet (see [`FIRST_REQUEST_GRACE`]);
    /// a request that arrives within it is answered with `Connection: close`.
    pub fn next(&mut self, now: Instant, stopping: bool) -> Action {
        loop {
            match &self.state {
                State::Closed(lingering) => return Action::Close(*lingering),
                State::Closing(lingering) => {
                    if !self.out.is_empty() {
                        return Action::Write;
                    }
                    let mut lingering = *lingering;
                    if !self.buf.is_empty()
                        && matches!(lingering, Lingering::Yes | Lingering::IfAtRisk)
                    {
                        // Pipelined requests we will not answer: read them off before closing.
                        lingering = Lingering::Yes;
                    }
                    self.state = State::Closed(lingering);
                    return Action::Close(lingering);
                }
                State::Handling(_) => {
                    // The driver must call `respond` first; treat a confused driver as a close.
                    self.state = State::Closed(Lingering::IfAtRisk);
                    return Action::Close(Lingering::IfAtRisk);
                }
                State::Streaming(_) => {
                    if !self.out.is_empty() {
                        return Action::Write;
                    }
                    return Action::Pull;
                }
                State::Sending(_) => {
                    if !self.out.is_empty() {
                        return Action::Write;
                    }
                    return Action::SendFile;
                }
                State::Reading => {}
            }
            let was_idle = self.codec.is_idle();
            let log_fields = self.settings.borrow().log_fields;
            match self.codec.decode(&mut self.buf, log_fields) {
                Ok(Some((request, meta))) => {
                    self.begun = true;
                    self.head_started = None;
                    self.body_started = None;
                    self.partial_reported = false;
                    if let Codec::Uwsgi(_) = self.codec {
                        // The access log prints nginx's client, not nginx.
                        self.track.borrow_mut().set_client(request.peer);
                    }
                    self.track.borrow_mut().begin(&request);
                    self.state = State::Handling(meta);
                    return Action::Handle(request);
                }
                Ok(None) => {}
                Err(err) => {
                    self.refuse(&err);
                    continue;
                }
            }
            if was_idle && !self.codec.is_idle() {
                // The head is complete; the body is on its way.
                self.body_started = Some(now);
                self.body_received = 0;
            }
            if self.codec.take_continue() {
                self.out.extend_from_slice(CONTINUE);
            }
            if !self.out.is_empty() {
                return Action::Write;
            }
            let idle = self.codec.is_idle() && self.buf.is_empty();
            let (mut deadline, why) = self.deadline(idle);
            if idle && stopping {
                match self.first_request_grace() {
                    Some(end) => deadline = deadline.min(end),
                    None => {
                        self.state = State::Closed(Lingering::IfAtRisk);
                        return Action::Close(Lingering::IfAtRisk);
                    }
                }
            }
            if now >= deadline {
                match why {
                    None => {
                        self.state = State::Closed(Lingering::IfAtRisk);
                        return Action::Close(Lingering::IfAtRisk);
                    }
                    Some(reason) => {
                        self.refuse(&Refusal::Answer(HttpError {
                            status: 408,
                            reason: reason.into(),
                        }));
                        // The client is slow, not hostile: no need to drain it.
                        self.buf.clear();
                        self.state = State::Closing(Lingering::IfAtRisk);
                        continue;
                    }
                }
            }
            if !idle && !self.partial_reported {
                self.partial_reported = true;
                self.track.borrow_mut().partial();
            }
            return Action::Read { deadline, idle };
        }
    }

    /// When the grace of a stopping worker ends for a connection that has not begun a request;
    /// `None` once one has begun (see [`Machine::next`]).
    fn first_request_grace(&self) -> Option<Instant> {
        (!self.begun).then(|| self.opened + self.settings.borrow().first_request_grace)
    }

    /// When the wait for the next bytes ends, and what ends it (`None`: a quiet close, for an
    /// idle connection; `Some(reason)`: a 408).
    fn deadline(&self, idle: bool) -> (Instant, Option<&'static str>) {
        let s: &ConnSettings = self.settings.borrow();
        if idle {
            let allowed = s.keepalive.unwrap_or(s.header_timeout);
            return (self.idle_since + allowed, None);
        }
        if self.codec.is_idle() {
            // Part of a request head has arrived: the head must complete by its deadline.
            let started = self.head_started.unwrap_or(self.last_read);
            return (
                started + s.header_timeout,
                Some("request not received in time (--header-timeout)"),
            );
        }
        // Reading a body: each read must make progress in time, and the whole body too, by a
        // deadline that its bytes push back (`body_deadline`).
        let progress = self.last_read + s.header_timeout;
        let whole = match (s.body_timeout, self.body_started) {
            (Some(limit), Some(started)) => {
                body_deadline(started, limit, self.body_received, s.body_min_rate)
            }
            _ => None,
        };
        match whole {
            Some(whole) if whole < progress => (
                whole,
                Some("request body not received in time (--body-timeout, --body-min-rate)"),
            ),
            _ => (
                progress,
                Some("request body not received in time (--header-timeout)"),
            ),
        }
    }

    fn refuse(&mut self, refusal: &Refusal) {
        match refusal {
            Refusal::Answer(err) => {
                if err.status == 500 {
                    // The server's set-up, not the client, is at fault: say so where it shows.
                    tracing::warn!(reason = %err.reason, "refused request");
                } else {
                    tracing::debug!(status = err.status, reason = %err.reason, "refused request");
                }
                self.track.borrow_mut().refused(err.status, &err.reason);
                self.codec.refuse(&mut self.out, err);
                self.state = State::Closing(Lingering::Yes);
            }
            Refusal::Drop(why) => {
                self.malformed(why);
                self.buf.clear();
                self.state = State::Closing(Lingering::IfAtRisk);
            }
        }
    }

    /// A uwsgi connection closed unanswered: logged with the peer, and counted.
    fn malformed(&mut self, why: &str) {
        let track = self.track.borrow_mut();
        track.uwsgi_refused();
        tracing::warn!(
            peer = %track.peer().map_or_else(|| "unix socket".to_owned(), |p| p.to_string()),
            "closing uwsgi connection unanswered: {why}"
        );
    }

    /// The read buffer, with room for at least one more read.
    pub fn input(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < 512 {
            // A body is taken out of the buffer as it arrives (or spooled): read it in large
            // pieces rather than let the buffer grow to the body's size.
            let piece = if self.codec.is_idle() {
                self.settings.borrow().read_buffer
            } else {
                BODY_READ
            };
            self.buf.reserve(piece.max(self.buf.len()));
        }
        &mut self.buf
    }

    /// `n` bytes were read into [`Machine::input`] at `now`; 0 means the client closed.
    pub fn received(&mut self, n: usize, now: Instant) {
        if n == 0 {
            match &self.codec {
                Codec::Uwsgi(d) => {
                    // nginx never half-sends a packet; a connect with nothing sent (a health
                    // check) is no error.
                    if !(d.is_idle() && self.buf.is_empty()) {
                        let why = d.truncated(self.buf.len());
                        self.malformed(&why);
                    }
                }
                Codec::Http(d) => {
                    // A body cut short: the client may only have shut down its sending side
                    // and still read, so it is told why instead of seeing a bare close.
                    if let Some(err) = d.incomplete(self.buf.len()) {
                        self.refuse(&Refusal::Answer(err));
                        self.buf.clear();
                        // Nothing more can come to reset the answer (see `Lingering::No`).
                        self.state = State::Closing(Lingering::No);
                        return;
                    }
                }
            }
            // The client sent its last byte and we have read it: closing cannot cause a reset,
            // so no check is worth its syscalls (see `Lingering::No`).
            self.state = State::Closed(Lingering::No);
            return;
        }
        self.track.borrow_mut().read(n);
        if self.body_started.is_some() {
            self.body_received = self.body_received.saturating_add(n as u64);
        }
        if self.codec.is_idle() && self.head_started.is_none() {
            self.head_started = Some(now);
        }
        self.last_read = now;
    }

    /// The bytes to write for [`Action::Write`].
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// [`Machine::output`] was written entirely at `now`.
    pub fn written(&mut self, now: Instant) {
        self.track.borrow_mut().writing(self.out.len());
        self.out.clear();
        if matches!(self.state, State::Reading) {
            self.idle_since = now;
            self.track.borrow_mut().waiting(!self.buf.is_empty());
        }
    }

    /// The application answered the request of the last [`Action::Handle`]. `may_keep`: the
    /// worker lets the connection stay open (it is not stopping or retiring).
    pub fn respond(&mut self, mut resp: Response, may_keep: bool) {
        let meta = match std::mem::replace(&mut self.state, State::Reading) {
            State::Handling(meta) => meta,
            other => {
                // Not answering a request: keep the state, drop the response.
                self.state = other;
                return;
            }
        };
        self.track.borrow_mut().responding(&resp);
        let keep = may_keep
            && !resp.close
            && self.keep_alive_allowed
            && self.settings.borrow().keepalive.is_some()
            && meta.keep_alive;
        let persist = if keep {
            Persist::KeepAlive
        } else {
            Persist::Close
        };
        let framing = self.codec.encode(&mut self.out, &meta, &resp, persist);
        let keep = keep && framing.keeps_alive();
        let status = resp.status;
        match std::mem::replace(&mut resp.body, Body::empty()) {
            Body::Stream(stream) if framing != BodyFraming::Empty => {
                self.state = State::Streaming(Box::new(Streaming {
                    stream,
                    framing,
                    keep,
                    sent: 0,
                    status,
                    meta,
                }));
            }
            Body::File(file) if framing != BodyFraming::Empty => {
                self.state = State::Sending(Box::new(Sending {
                    file,
                    keep,
                    status,
                    meta,
                }));
            }
            // A complete body is in the output; a HEAD answer's stream is dropped unread (that
            // is how a stream learns it is done). A body that is not sent (HEAD, 1xx, 204, 304)
            // counts as none in the access log.
            body => {
                let len = match &body {
                    Body::Full(b) if !meta.head_only && has_content(status) => b.len(),
                    Body::Full(_) | Body::Stream(_) | Body::File(_) => 0,
                };
                self.track.borrow_mut().end(&meta, status, len);
                if !keep {
                    self.state = State::Closing(Lingering::IfAtRisk);
                }
            }
        }
    }

    /// The file to send for [`Action::SendFile`]; the driver advances its offset and length as
    /// it sends.
    pub fn file(&mut self) -> Option<&mut FileBody> {
        match &mut self.state {
            State::Sending(s) => Some(&mut s.file),
            _ => None,
        }
    }

    /// The driver sent `sent` bytes of the file: all of it when `ok`; otherwise the connection
    /// failed or the file ended early, and it closes (the client must not mistake a truncated
    /// body for a whole one).
    pub fn file_sent(&mut self, sent: u64, ok: bool, now: Instant) {
        let State::Sending(s) = std::mem::replace(&mut self.state, State::Reading) else {
            return;
        };
        let Sending {
            file,
            keep,
            status,
            meta,
        } = *s;
        let ok = ok && file.len == 0;
        self.track.borrow_mut().writing(sent as usize);
        self.track.borrow_mut().end(&meta, status, sent as usize);
        if !ok {
            self.state = State::Closing(Lingering::No);
        } else if !keep {
            self.state = State::Closing(Lingering::IfAtRisk);
        } else {
            self.idle_since = now;
            self.track.borrow_mut().waiting(!self.buf.is_empty());
        }
    }

    /// Whether a streamed body is being sent (what [`Action::Pull`] pulls from).
    pub fn is_streaming(&self) -> bool {
        matches!(self.state, State::Streaming(_))
    }

    /// The stream to poll for [`Action::Pull`].
    pub fn stream(&mut self) -> Option<&mut BodyStream> {
        match &mut self.state {
            State::Streaming(s) => Some(&mut s.stream),
            _ => None,
        }
    }

    /// What the stream yielded: a chunk, its end (`None`) or its failure. A stream that fails
    /// or breaks its announced length ends the connection (the client must not mistake a
    /// truncated body for a whole one).
    pub fn pulled(&mut self, item: Option<Result<Bytes, BoxError>>) {
        let State::Streaming(s) = &mut self.state else {
            return;
        };
        let ok = match item {
            Some(Ok(chunk)) => match s.framing.chunk(&mut self.out, &chunk) {
                Ok(()) => {
                    s.sent += chunk.len();
                    return;
                }
                Err(e) => {
                    tracing::warn!("{e}; closing the connection");
                    false
                }
            },
            Some(Err(e)) => {
                tracing::warn!("response body stream failed: {e}; closing the connection");
                false
            }
            None => match s.framing.end(&mut self.out) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("{e}; closing the connection");
                    false
                }
            },
        };
        let State::Streaming(s) = std::mem::replace(&mut self.state, State::Reading) else {
            return;
        };
        // The stream is dropped here, whatever ended it.
        let Streaming {
            keep,
            sent,
            status,
            meta,
            framing,
            ..
        } = *s;
        self.track.borrow_mut().end(&meta, status, sent);
        if !ok && framing == BodyFraming::Close {
            // Only the close delimits this body: a FIN would make the cut one look whole.
            self.state = State::Closing(Lingering::Reset);
        } else if !ok {
            self.state = State::Closing(Lingering::No);
        } else if !keep {
            self.state = State::Closing(Lingering::IfAtRisk);
        }
    }
}

pub(crate) fn log_timeout(method: &str, path: &str, elapsed: Duration) {
    tracing::warn!(
        method = %method,
        path = %path,
        elapsed_ms = elapsed.as_millis() as u64,
        "request exceeded --request-timeout; answered 504"
    );
}

pub(crate) fn timeout_response() -> Response {
    Response::error(504, "request exceeded --request-timeout")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::scoreboard::Scoreboard;
    use crate::track::Tracker;

    type M<'a> = Machine<&'a ConnSettings, &'a mut ConnTrack>;

    fn settings() -> ConnSettings {
        let mut s = ConnSettings::from_config(&ServeConfig::default());
        s.keepalive = Some(Duration::from_secs(5));
        s.header_timeout = Duration::from_secs(10);
        s.body_timeout = Some(Duration::from_secs(30));
        s
    }

    fn track() -> ConnTrack {
        let sb = Arc::new(Scoreboard::create().unwrap());
        sb.reset(0, 1);
        let tracker = Arc::new(Tracker::new(sb, 0, &ServeConfig::default()).unwrap());
        tracker.open(None)
    }

    /// A body stream that never yields: the tests hand the machine its items with `pulled`.
    struct Never;
    impl futures_core::Stream for Never {
        type Item = Result<Bytes, BoxError>;
        fn poll_next(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Pending
        }
    }

    fn feed(m: &mut M<'_>, bytes: &[u8], now: Instant) {
        m.input().extend_from_slice(bytes);
        m.received(bytes.len(), now);
    }

    fn written(m: &mut M<'_>, now: Instant) -> String {
        assert!(matches!(m.next(now, false), Action::Write));
        let text = String::from_utf8_lossy(m.output()).into_owned();
        m.written(now);
        text
    }

    fn handle(m: &mut M<'_>, now: Instant) -> Request {
        match m.next(now, false) {
            Action::Handle(r) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn pipelined_requests_are_answered_in_one_write_then_it_waits_idle() {
        let (s, mut t, t0) = (settings(), track(), Instant::now());
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, true, t0);
        assert!(matches!(m.next(t0, false), Action::Read { idle: true, .. }));
        feed(
            &mut m,
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
            t0,
        );
        assert_eq!(handle(&mut m, t0).path, "/a");
        m.respond(Response::text(200, "a"), true);
        assert_eq!(handle(&mut m, t0).path, "/b");
        m.respond(Response::text(200, "b"), true);
        let out = written(&mut m, t0);
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
        let Action::Read { deadline, idle } = m.next(t0, false) else {
            panic!("expected a read")
        };
        assert!(idle);
        assert_eq!(
            deadline,
            t0 + Duration::from_secs(5),
            "the keep-alive timeout"
        );
        // Past it, the connection closes quietly.
        assert!(matches!(
            m.next(t0 + Duration::from_secs(5), false),
            Action::Close(Lingering::IfAtRisk)
        ));
    }

    #[test]
    fn a_stopping_worker_closes_idle_connections_and_stops_keep_alive() {
        let (s, mut t, t0) = (settings(), track(), Instant::now());
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, true, t0);
        feed(&mut m, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", t0);
        handle(&mut m, t0);
        m.respond(Response::text(200, "x"), false);
        assert!(written(&mut m, t0).contains("Connection: close"));
        assert!(matches!(
            m.next(t0, false),
            Action::Close(Lingering::IfAtRisk)
        ));

        // Kept alive after its answer, then the worker stops: closed at once (a client retries
        // an idempotent request when a reused connection closes).
        let mut t = track();
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, true, t0);
        feed(&mut m, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", t0);
        handle(&mut m, t0);
        m.respond(Response::text(200, "x"), true);
        written(&mut m, t0);
        assert!(matches!(m.next(t0, false), Action::Read { idle: true, .. }));
        assert!(matches!(
            m.next(t0, true),
            Action::Close(Lingering::IfAtRisk)
        ));
    }

    #[test]
    fn a_stopping_worker_waits_a_moment_for_a_new_connections_first_request() {
        let (s, t0) = (settings(), Instant::now());
        let grace = s.first_request_grace;
        assert_eq!(grace, FIRST_REQUEST_GRACE);
        // The request comes within the grace: answered, with the connection closed after it.
        let mut t = track();
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, true, t0);
        let later = t0 + grace / 2;
        let Action::Read { deadline, idle } = m.next(later, true) else {
            panic!("expected a read")
        };
        assert!(idle);
        assert_eq!(deadline, t0 + grace, "the grace counts from the accept");
        feed(&mut m, b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n", later);
        let Action::Handle(r) = m.next(later, true) else {
            panic!("expected the request")
        };
        assert_eq!(r.path, "/late");
        m.respond(Response::text(200, "x"), false);
        let out = written(&mut m, later);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("Connection: close"), "{out}");
        assert!(matches!(
            m.next(later, true),
            Action::Close(Lingering::IfAtRisk)
        ));

        // Silent through the grace: closed quietly, no 408.
        let mut t = track();
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, true, t0);
        assert!(matches!(m.next(t0, true), Action::Read { .. }));
        assert!(matches!(
            m.next(t0 + grace, true),
            Action::Close(Lingering::IfAtRisk)
        ));
        assert!(m.output().is_empty());

        // A head under way when the stop comes is not cut: it keeps its --header-timeout.
        let mut t = track();
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, true, t0);
        feed(&mut m, b"GET / HTTP/1.1\r\n", t0);
        let Action::Read { deadline, idle } = m.next(t0 + grace, true) else {
            panic!("expected a read")
        };
        assert!(!idle);
        assert_eq!(deadline, t0 + s.header_timeout);
    }

    #[test]
    fn the_first_request_grace_is_bounded_by_the_usual_timeouts() {
        let t0 = Instant::now();
        // A shorter keep-alive (the wait for a first request too) ends it sooner.
        let mut s = settings();
        s.keepalive = Some(Duration::from_millis(300));
        let mut t = track();
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, true, t0);
        let Action::Read { deadline, .. } = m.next(t0, true) else {
            panic!("expected a read")
        };
        assert_eq!(deadline, t0 + Duration::from_millis(300));
        // --header-timeout and --graceful-timeout bound it.
        let mut c = ServeConfig {
            header_timeout: 0.5,
            ..ServeConfig::default()
        };
        assert_eq!(
            ConnSettings::from_config(&c).first_request_grace,
            Duration::from_millis(500)
        );
        c.graceful_timeout = 0.25;
        assert_eq!(
            ConnSettings::from_config(&c).first_request_grace,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn sync_closes_after_one_answer() {
        let (s, mut t, t0) = (settings(), track(), Instant::now());
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, false, t0);
        feed(&mut m, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", t0);
        handle(&mut m, t0);
        m.respond(Response::text(200, "x"), true);
        assert!(written(&mut m, t0).contains("Connection: close"));
        assert!(matches!(
            m.next(t0, false),
            Action::Close(Lingering::IfAtRisk)
        ));
    }

    #[test]
    fn expect_100_continue_is_answered_before_the_body_is_read() {
        let (s, mut t, t0) = (settings(), track(), Instant::now());
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, true, t0);
        feed(
            &mut m,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
            t0,
        );
        assert_eq!(written(&mut m, t0), "HTTP/1.1 100 Continue\r\n\r\n");
        assert!(matches!(
            m.next(t0, false),
            Action::Read { idle: false, .. }
        ));
        feed(&mut m, b"hi", t0);
        assert_eq!(handle(&mut m, t0).body.len(), 2);
    }

    #[test]
    fn a_slow_head_gets_408_at_its_deadline() {
        let (s, mut t, t0) = (settings(), track(), Instant::now());
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, true, t0);
        feed(&mut m, b"GET / HTTP/1.1\r\nHo", t0);
        let Action::Read { deadline, idle } = m.next(t0, false) else {
            panic!("expected a read")
        };
        assert!(!idle);
        assert_eq!(deadline, t0 + Duration::from_secs(10));
        // A byte now and then does not move the head's deadline.
        feed(&mut m, b"s", t0 + Duration::from_secs(9));
        let out = written(&mut m, t0 + Duration::from_secs(10));
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        assert!(out.contains("--header-timeout"), "{out}");
        assert!(matches!(
            m.next(t0 + Duration::from_secs(10), false),
            Action::Close(Lingering::IfAtRisk)
        ));
    }

    #[test]
    fn a_trickled_body_gets_408_at_the_body_deadline() {
        // --body-min-rate 0: the whole body within --body-timeout, however many bytes came.
        let mut s = settings();
        s.body_min_rate = None;
        let (mut t, t0) = (track(), Instant::now());
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, true, t0);
        feed(
            &mut m,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
            t0,
        );
        assert!(matches!(
            m.next(t0, false),
            Action::Read { idle: false, .. }
        ));
        // A byte every 5 s keeps each read within --header-timeout ...
        let mut now = t0;
        for _ in 0..5 {
            now += Duration::from_secs(5);
            feed(&mut m, b"x", now);
            assert!(matches!(m.next(now, false), Action::Read { .. }));
        }
        // ... but not the whole body within --body-timeout (30 s).
        let Action::Read { deadline, .. } = m.next(now, false) else {
            panic!("expected a read")
        };
        assert_eq!(deadline, t0 + Duration::from_secs(30));
        let out = written(&mut m, deadline);
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        assert!(out.contains("--body-timeout, --body-min-rate"), "{out}");
    }

    #[test]
    fn body_deadline_is_the_limit_plus_a_second_per_min_rate_bytes() {
        let (t0, limit) = (Instant::now(), Duration::from_secs(20));
        let rate = NonZeroU64::new(500);
        let at = |received| body_deadline(t0, limit, received, rate).map(|d| d - t0);
        assert_eq!(at(0), Some(limit));
        assert_eq!(at(250), Some(Duration::from_millis(20_500)));
        assert_eq!(at(1_000), Some(Duration::from_secs(22)));
        // A 20 MB upload at 1 Mbit/s (125 kB/s, 160 s) has 20 + 40 000 s.
        assert_eq!(at(20_000_000), Some(Duration::from_secs(40_020)));
        assert_eq!(body_deadline(t0, limit, 1_000, None), Some(t0 + limit));
        // Past what an Instant holds: no limit, not a panic.
        assert_eq!(body_deadline(t0, limit, u64::MAX, NonZeroU64::new(1)), None);
    }

    /// Feeds `body` in pieces of `piece` bytes, one every second from `t0`, while the
    /// machine keeps reading; returns the time and the action that ended the reads.
    fn trickle(m: &mut M<'_>, body: &[u8], piece: usize, t0: Instant) -> (Instant, Action) {
        let mut now = t0;
        for part in body.chunks(piece) {
            match m.next(now, false) {
                Action::Read { deadline, .. } if deadline > now + Duration::from_secs(1) => {}
                other => return (now, other),
            }
            now += Duration::from_secs(1);
            feed(m, part, now);
        }
        (now, m.next(now, false))
    }

    /// Compared with Apache's `RequestReadTimeout body=30,MinRate=500`: a body sent faster
    /// than --body-min-rate is taken however long it takes (before it, 408 at 30 s); one
    /// sent slower is cut once its bytes no longer pay for the time. Content-Length,
    /// chunked and uwsgi bodies are counted alike.
    #[test]
    fn a_body_faster_than_the_min_rate_outlasts_the_body_timeout() {
        let s = settings(); // --body-timeout 30, --body-min-rate 500
        let body = vec![b'x'; 60_000];
        let mut chunked = Vec::new();
        for part in body.chunks(1000) {
            chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            chunked.extend_from_slice(part);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let length = "60000".to_string();
        let uwsgi = uwsgi_packet(
            &[
                ("REQUEST_METHOD", "POST"),
                ("PATH_INFO", "/"),
                ("CONTENT_LENGTH", &length),
            ],
            b"",
        );
        let cases: [(Protocol, Vec<u8>, &[u8]); 3] = [
            (
                Protocol::Http,
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n".to_vec(),
                &body,
            ),
            (
                Protocol::Http,
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
                &chunked,
            ),
            (Protocol::Uwsgi, uwsgi, &body),
        ];
        for (protocol, head, body) in cases {
            // 1 kB/s, twice the rate: 60 s, each second earning two more.
            let (mut t, t0) = (track(), Instant::now());
            let mut m = Machine::new(&s, &mut t, ConnInfo::default(), protocol, true, t0);
            feed(&mut m, &head, t0);
            let (now, last) = trickle(&mut m, body, 1000, t0);
            let Action::Handle(req) = last else {
                panic!("{protocol:?}: expected the request, got {last:?}")
            };
            assert!(now >= t0 + Duration::from_secs(60), "{protocol:?}");
            assert_eq!(req.body.to_bytes().unwrap().len(), 60_000, "{protocol:?}");

            // 100 B/s, a fifth of the rate: each second earns 0.2 s, so the deadline
            // (30 + 0.2 t) comes at 37.5 s.
            let (mut t, t0) = (track(), Instant::now());
            let mut m = Machine::new(&s, &mut t, ConnInfo::default(), protocol, true, t0);
            feed(&mut m, &head, t0);
            let (now, last) = trickle(&mut m, body, 100, t0);
            let Action::Read { deadline, .. } = last else {
                panic!("{protocol:?}: expected a read, got {last:?}")
            };
            assert_eq!(now, t0 + Duration::from_secs(37), "{protocol:?}");
            assert_eq!(deadline, t0 + Duration::from_millis(37_400), "{protocol:?}");
            let out = written(&mut m, deadline);
            assert!(out.contains("408"), "{protocol:?}: {out}");
            assert!(out.contains("--body-min-rate"), "{protocol:?}: {out}");
        }
    }

    #[test]
    fn a_refusal_is_answered_then_the_connection_lingers() {
        let (s, mut t, t0) = (settings(), track(), Instant::now());
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, true, t0);
        feed(
            &mut m,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            t0,
        );
        let out = written(&mut m, t0);
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        assert!(matches!(m.next(t0, false), Action::Close(Lingering::Yes)));
    }

    #[test]
    fn a_stream_is_pulled_chunk_by_chunk_and_the_connection_kept() {
        let (s, mut t, t0) = (settings(), track(), Instant::now());
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, true, t0);
        feed(&mut m, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", t0);
        handle(&mut m, t0);
        m.respond(Response::new(200).with_stream(Box::pin(Never)), true);
        assert!(written(&mut m, t0).contains("Transfer-Encoding: chunked"));
        assert!(matches!(m.next(t0, false), Action::Pull));
        assert!(m.stream().is_some());
        m.pulled(Some(Ok(Bytes::from_static(b"abc"))));
        assert_eq!(written(&mut m, t0), "3\r\nabc\r\n");
        assert!(matches!(m.next(t0, false), Action::Pull));
        m.pulled(None);
        assert!(m.stream().is_none(), "the stream is dropped at its end");
        assert_eq!(written(&mut m, t0), "0\r\n\r\n");
        assert!(matches!(m.next(t0, false), Action::Read { idle: true, .. }));

        // A stream that fails closes the connection without the last chunk.
        handle_again(&mut m, t0);
        m.respond(Response::new(200).with_stream(Box::pin(Never)), true);
        written(&mut m, t0);
        m.pulled(Some(Err("boom".into())));
        // The answer is cut: nothing to protect, so no lingering.
        assert!(matches!(m.next(t0, false), Action::Close(Lingering::No)));
    }

    /// A close-delimited body (HTTP/1.0) has no way to say it was cut but the close itself: a
    /// stream that fails there ends with a RST, not the FIN that would make it look whole.
    #[test]
    fn a_failed_close_delimited_stream_is_reset() {
        let (s, mut t, t0) = (settings(), track(), Instant::now());
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, true, t0);
        feed(&mut m, b"GET / HTTP/1.0\r\n\r\n", t0);
        handle(&mut m, t0);
        m.respond(Response::new(200).with_stream(Box::pin(Never)), true);
        written(&mut m, t0);
        m.pulled(Some(Ok(Bytes::from_static(b"first"))));
        m.pulled(Some(Err("boom".into())));
        assert_eq!(written(&mut m, t0), "first");
        // Before: Close(No), a plain close.
        assert!(matches!(m.next(t0, false), Action::Close(Lingering::Reset)));
    }

    fn handle_again(m: &mut M<'_>, now: Instant) {
        feed(m, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", now);
        handle(m, now);
    }

    /// A client that closes its side has sent all it ever will and we have read it: nothing can
    /// arrive to make the kernel reset what we queued, so the close is plain and the drivers
    /// make no check (before, `IfAtRisk` cost a peek and an ioctl on the usual end of a
    /// keep-alive connection). Asked again, the machine says the same: gthread's poller asks
    /// first, then the pool thread it hands the close to.
    #[test]
    fn a_client_that_closes_is_closed() {
        let (s, mut t, t0) = (settings(), track(), Instant::now());
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, true, t0);
        feed(&mut m, b"GET / HT", t0);
        m.received(0, t0);
        assert!(matches!(m.next(t0, false), Action::Close(Lingering::No)));
        assert!(matches!(m.next(t0, false), Action::Close(Lingering::No)));

        // Between keep-alive requests.
        let mut t = track();
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, true, t0);
        handle_again(&mut m, t0);
        m.respond(Response::text(200, "x"), true);
        written(&mut m, t0);
        assert!(matches!(m.next(t0, false), Action::Read { idle: true, .. }));
        m.received(0, t0);
        assert!(matches!(m.next(t0, false), Action::Close(Lingering::No)));
        assert!(matches!(m.next(t0, false), Action::Close(Lingering::No)));
    }

    /// Compared with gunicorn 27: a client that sends a head and part of its body, then shuts
    /// down its sending side, got a bare close (gunicorn runs the app with the short body).
    /// It is now told why, and the application is not called.
    #[test]
    fn a_body_cut_short_by_the_client_is_answered_400_and_closed() {
        for (body, reason) in [
            (
                &b"Content-Length: 10\r\n\r\nhello"[..],
                "request body incomplete: the client closed after 5 of 10 bytes",
            ),
            (
                b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                "chunked request body incomplete: the client closed before its last chunk",
            ),
        ] {
            let (s, mut t, t0) = (settings(), track(), Instant::now());
            let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, true, t0);
            let mut raw = b"POST / HTTP/1.1\r\nHost: x\r\n".to_vec();
            raw.extend_from_slice(body);
            feed(&mut m, &raw, t0);
            assert!(matches!(
                m.next(t0, false),
                Action::Read { idle: false, .. }
            ));
            m.received(0, t0);
            let out = written(&mut m, t0);
            assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
            assert!(out.ends_with(&format!("{reason}\n")), "{out}");
            // The client closed its side: nothing can come to reset the 400.
            assert!(matches!(m.next(t0, false), Action::Close(Lingering::No)));
        }
    }
    /// A uwsgi packet (modifier1 0) with these vars and body.
    fn uwsgi_packet(vars: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut block = Vec::new();
        for (k, v) in vars {
            block.extend_from_slice(&(k.len() as u16).to_le_bytes());
            block.extend_from_slice(k.as_bytes());
            block.extend_from_slice(&(v.len() as u16).to_le_bytes());
            block.extend_from_slice(v.as_bytes());
        }
        let mut p = vec![0u8];
        p.extend_from_slice(&(block.len() as u16).to_le_bytes());
        p.push(0);
        p.extend_from_slice(&block);
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn uwsgi_one_request_streamed_close_delimited_then_closed() {
        let packet = uwsgi_packet(
            &[
                ("REQUEST_METHOD", "POST"),
                ("PATH_INFO", "/echo"),
                ("CONTENT_LENGTH", "3"),
            ],
            b"abc",
        );
        // Byte by byte: the head is timed as a whole, like an HTTP head.
        let (s, mut t, t0) = (settings(), track(), Instant::now());
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Uwsgi, true, t0);
        for &b in &packet[..packet.len() - 1] {
            feed(&mut m, &[b], t0);
            assert!(matches!(
                m.next(t0, false),
                Action::Read { idle: false, .. }
            ));
        }
        feed(&mut m, &packet[packet.len() - 1..], t0);
        let req = handle(&mut m, t0);
        assert_eq!(&req.body.to_bytes().unwrap()[..], b"abc");
        m.respond(
            Response::new(200)
                .with_header("Transfer-Encoding", "chunked")
                .with_stream(Box::pin(futures_stream(&["x", "y"]))),
            true,
        );
        assert_eq!(written(&mut m, t0), "HTTP/1.1 200 OK\r\n\r\n");
        assert!(matches!(m.next(t0, false), Action::Pull));
        m.pulled(Some(Ok(Bytes::from_static(b"x"))));
        assert_eq!(written(&mut m, t0), "x", "never chunked");
        m.pulled(None);
        assert!(
            matches!(m.next(t0, false), Action::Close(Lingering::IfAtRisk)),
            "one request per connection: the close ends the body"
        );
    }

    fn file_body(len: u64) -> Body {
        let file = tempfile::tempfile().unwrap();
        Body::File(FileBody {
            file,
            offset: 0,
            len,
        })
    }

    #[test]
    fn a_file_body_is_sent_after_its_head_and_a_short_one_closes() {
        let (s, mut t, t0) = (settings(), track(), Instant::now());
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, true, t0);
        feed(&mut m, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", t0);
        handle(&mut m, t0);
        let mut resp = Response::new(200);
        resp.body = file_body(10);
        m.respond(resp, true);
        let head = written(&mut m, t0);
        assert!(head.contains("Content-Length: 10\r\n"), "{head}");
        assert!(!head.contains("Connection: close"), "{head}");
        assert!(matches!(m.next(t0, false), Action::SendFile));
        m.file().unwrap().len = 0; // what a driver does as it sends
        m.file_sent(10, true, t0);
        assert!(matches!(m.next(t0, false), Action::Read { idle: true, .. }));

        // The file ended early: the connection closes, the client sees a short body.
        feed(&mut m, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", t0);
        handle(&mut m, t0);
        let mut resp = Response::new(200);
        resp.body = file_body(10);
        m.respond(resp, true);
        written(&mut m, t0);
        assert!(matches!(m.next(t0, false), Action::SendFile));
        m.file_sent(4, false, t0);
        assert!(matches!(m.next(t0, false), Action::Close(Lingering::No)));

        // HEAD: the length, no file.
        let mut t = track();
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Http, true, t0);
        feed(&mut m, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", t0);
        handle(&mut m, t0);
        let mut resp = Response::new(200);
        resp.body = file_body(10);
        m.respond(resp, true);
        assert!(written(&mut m, t0).contains("Content-Length: 10\r\n"));
        assert!(matches!(m.next(t0, false), Action::Read { idle: true, .. }));
    }

    #[test]
    fn uwsgi_file_body_has_its_length_then_closes() {
        let packet = uwsgi_packet(&[("REQUEST_METHOD", "GET"), ("PATH_INFO", "/f")], b"");
        let (s, mut t, t0) = (settings(), track(), Instant::now());
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Uwsgi, true, t0);
        feed(&mut m, &packet, t0);
        handle(&mut m, t0);
        let mut resp = Response::new(200);
        resp.body = file_body(7);
        m.respond(resp, true);
        assert_eq!(
            written(&mut m, t0),
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
        );
        assert!(matches!(m.next(t0, false), Action::SendFile));
        m.file().unwrap().len = 0;
        m.file_sent(7, true, t0);
        assert!(matches!(
            m.next(t0, false),
            Action::Close(Lingering::IfAtRisk)
        ));
    }

    #[test]
    fn uwsgi_malformed_and_truncated_packets_close_unanswered() {
        let (s, t0) = (settings(), Instant::now());
        // HTTP spoken to a uwsgi listener.
        let mut t = track();
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Uwsgi, true, t0);
        feed(&mut m, b"GET / HTTP/1.1\r\n", t0);
        assert!(matches!(
            m.next(t0, false),
            Action::Close(Lingering::IfAtRisk)
        ));
        assert!(m.output().is_empty(), "no answer");
        // A body cut short by the peer.
        let mut t = track();
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Uwsgi, true, t0);
        let packet = uwsgi_packet(
            &[
                ("REQUEST_METHOD", "POST"),
                ("PATH_INFO", "/"),
                ("CONTENT_LENGTH", "9"),
            ],
            b"abc",
        );
        feed(&mut m, &packet, t0);
        assert!(matches!(
            m.next(t0, false),
            Action::Read { idle: false, .. }
        ));
        m.received(0, t0);
        assert!(matches!(m.next(t0, false), Action::Close(Lingering::No)));
        // A body over the limit is answered 413 as uWSGI would write it.
        let mut t = track();
        let mut m = Machine::new(&s, &mut t, ConnInfo::default(), Protocol::Uwsgi, true, t0);
        let packet = uwsgi_packet(
            &[
                ("REQUEST_METHOD", "POST"),
                ("PATH_INFO", "/"),
                ("CONTENT_LENGTH", "999999999999"),
            ],
            b"",
        );
        feed(&mut m, &packet, t0);
        let out = written(&mut m, t0);
        assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
        assert!(!out.contains("Connection"), "{out}");
        assert!(matches!(m.next(t0, false), Action::Close(Lingering::Yes)));
    }

    /// A stream of fixed chunks.
    fn futures_stream(
        chunks: &[&'static str],
    ) -> impl futures_core::Stream<Item = Result<Bytes, BoxError>> {
        struct Chunks(Vec<&'static str>);
        impl futures_core::Stream for Chunks {
            type Item = Result<Bytes, BoxError>;
            fn poll_next(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Self::Item>> {
                let next = (!self.0.is_empty()).then(|| Ok(Bytes::from(self.0.remove(0))));
                std::task::Poll::Ready(next)
            }
        }
        Chunks(chunks.to_vec())
    }
}
