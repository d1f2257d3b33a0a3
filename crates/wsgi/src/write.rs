//! The legacy `write()` callable's data, sent as it is written (gunicorn sends it at once).
//!
//! Until an app gives `write()` its first non-empty data, nothing here exists: the request runs as
//! any other, and [`Reply`] only says how its answer would leave the thread that runs the app.
//! At that first write the head goes out with a body stream ([`WriteStream`]) that the server
//! polls as it polls an iterable's, and `write()` hands each piece of data to it ([`Writer`]).
//! When the app returns, what its iterable still yields becomes the rest of that stream
//! ([`Tail`]), served by the same machinery as any streamed body (stream.rs): a PEP 3333 app may
//! mix `write()` and an iterable, in that order.
//!
//! How the head leaves, and how `write()` waits for a slow client, depends on where the app runs:
//! - on the connection's own thread (the blocking classes): the driver lent its writing side
//!   ([`c10k_http::early`]); `write()` writes through it, the GIL released, and so blocks as the
//!   connection's writes do;
//! - on a pool thread (`async`, `--request-timeout`): the head goes through the channel the
//!   connection waits on; `write()` blocks (the GIL released) while more than [`AHEAD`] bytes are
//!   not yet taken by the writer;
//! - in a gevent greenlet: the same, but waiting on a `gevent.event.Event` that the writer side
//!   sets through the hub's queue, so the hub runs other greenlets meanwhile.
//!
//! A thread the app started may call `write()` too. On a pool thread or in a greenlet its data
//! goes out as the app's own would; on the connection's own thread only that thread can write to
//! the socket, so another thread's data waits in memory (in `start_response`, or here without
//! [`Waits::Inline`]'s flush) until the app's thread writes again or returns. Once the answer is
//! complete, `write()` raises ([`ended_error`]) instead of queueing data nobody will send.
//!
//! `write()` copies at most [`PIECE`] bytes at a time before it waits, so a 10 MB `write()` to a
//! slow client costs the worker a piece or two, not a copy of the whole. A client gone (the
//! server dropped the stream, or a write to it failed) is an `OSError` in the app
//! (`BrokenPipeError` and the like, as gunicorn raises the socket's error), and the iterable the
//! app then returns is closed without being iterated.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use c10k_http::{BodyStream, BoxError, Response};
use futures_core::Stream;
use pyo3::prelude::*;

use crate::answers::{Busy, Delivery};
use crate::hub_handle::{Done, Hub};

/// The most `write()` copies at once before it waits for the writer.
pub(crate) const PIECE: usize = 64 * 1024;
/// How far a pool thread or greenlet may write ahead of the connection before `write()` waits.
pub(crate) const AHEAD: usize = 256 * 1024;

/// How a request's answer leaves the thread that runs its app; kept in its `start_response`
/// until the app returns, or taken by the first `write()` that sends the head.
pub(crate) enum Reply {
    /// The app runs on the connection's thread (the blocking classes without a deadline): the
    /// answer is the call's return value, or goes early through the driver's lent responder.
    Inline,
    /// A pool thread; the connection's thread waits on this channel (`--request-timeout`).
    Blocking(crossbeam_channel::Sender<Response>),
    /// A pool thread; the event loop waits on `tx` (the `async` class). `busy` counts the thread
    /// busy once the early answer frees the request's place (see `Handler::capacity`).
    Async {
        tx: tokio::sync::oneshot::Sender<Response>,
        answers: tokio::sync::mpsc::UnboundedSender<Delivery>,
        busy: &'static Busy,
    },
    /// A greenlet on the hub (the `gevent` class).
    Hub { done: Done, hub: Hub },
}

impl Reply {
    /// Whether the head can go out before the app returns: always, except on a connection's
    /// thread whose driver lent no responder (a handler called directly, as in unit tests),
    /// where `write()` data is held for the answer, as PEP 3333 allows.
    pub(crate) fn can_answer_early(&self) -> bool {
        match self {
            Reply::Inline => c10k_http::early::is_lent(),
            _ => true,
        }
    }

    /// How `write()` waits for the connection under this reply.
    fn waits(&self) -> Waits {
        match self {
            Reply::Inline => Waits::Inline,
            Reply::Blocking(_) | Reply::Async { .. } => Waits::Thread,
            Reply::Hub { hub, .. } => Waits::Hub(hub.clone()),
        }
    }

    /// Sends the early answer.
    pub(crate) fn send(self, py: Python<'_>, resp: Response) -> io::Result<()> {
        match self {
            Reply::Inline => py
                .detach(|| c10k_http::early::with(|r| r.answer(resp)))
                .unwrap_or_else(|| Err(io::Error::other("no responder lent on this thread"))),
            // Nobody waiting any more (timed out): the stream is dropped with the answer, and
            // write() sees the connection gone.
            Reply::Blocking(tx) => {
                let _ = tx.send(resp);
                Ok(())
            }
            Reply::Async { tx, answers, busy } => {
                busy.begin();
                let _ = answers.send((tx, resp));
                Ok(())
            }
            Reply::Hub { done, hub } => {
                done(py, resp);
                // Answers are batched until a greenlet's job ends; this one runs on.
                hub.flush_answers();
                Ok(())
            }
        }
    }
}

/// How `write()` waits for the connection to take its data.
#[derive(Clone)]
enum Waits {
    /// Writes it through the lent responder itself.
    Inline,
    /// On the stream's condition variable, the GIL released.
    Thread,
    /// On a gevent event, yielding to the hub.
    Hub(Hub),
}

/// The answer's head and its body stream, and the `write()` side of that stream, for the first
/// non-empty `write()`. `head_only` (a HEAD request): the head goes alone and later data is
/// dropped. `remaining`: the app's `Content-Length`.
pub(crate) fn open(
    head: Response,
    head_only: bool,
    remaining: Option<u64>,
    reply: &Reply,
) -> (Response, Writer) {
    if head_only {
        return (head.with_stream(Box::pin(Empty)), Writer(Kind::Discard));
    }
    let waits = reply.waits();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            chunks: VecDeque::new(),
            ahead: 0,
            remaining,
            cut_logged: false,
            end: End::Writing,
            gone: false,
            reader: None,
            waiter: None,
        }),
        taken: Condvar::new(),
    });
    let hub = match &waits {
        Waits::Hub(h) => Some(h.clone()),
        _ => None,
    };
    let stream = WriteStream {
        shared: shared.clone(),
        hub,
        tail: None,
    };
    (
        head.with_stream(Box::pin(stream)),
        Writer(Kind::Stream { shared, waits }),
    )
}

/// An empty body (a HEAD answer's).
struct Empty;

impl Stream for Empty {
    type Item = Result<Bytes, BoxError>;
    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(None)
    }
}

/// Where the stream stands once `write()` is done with it.
enum End {
    /// The app runs: more may be written.
    Writing,
    /// The app returned an iterable: the rest of the body.
    Tail(BodyStream),
    Done,
    /// The app raised after the head went out: the client must see the answer cut.
    Failed,
}

struct State {
    chunks: VecDeque<Bytes>,
    /// Bytes written and not yet taken by the connection.
    ahead: usize,
    /// What is left of the app's `Content-Length`: no more is sent (PEP 3333).
    remaining: Option<u64>,
    cut_logged: bool,
    end: End,
    /// The stream is dropped: the client is gone (or the server gave up on it).
    gone: bool,
    /// The stream's task, waiting for data.
    reader: Option<Waker>,
    /// A greenlet's `gevent.event.Event`, waiting for the connection to take data.
    waiter: Option<Py<PyAny>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the connection takes data or goes away (pool threads wait on it).
    taken: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn gone_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the client connection is gone: the response cannot be sent",
    )
}

/// What `write()` raises once the answer's body is complete (or is a file being sent): data from
/// a thread the app started, written after the app's call returned and its body ended, has no
/// place in the answer any more. gunicorn raises the closed socket's `OSError` there (or, on a
/// kept-alive connection, writes it into the next answer).
pub(crate) fn ended_error() -> io::Error {
    io::Error::other(
        "write() came after the response was complete: the application's call had returned \
         and its body had ended, so this data cannot be sent",
    )
}

/// The `write()` side of an answer that went out early.
#[derive(Clone)]
pub(crate) struct Writer(Kind);

#[derive(Clone)]
enum Kind {
    /// A HEAD answer: its head is sent, data is dropped.
    Discard,
    Stream {
        shared: Arc<Shared>,
        waits: Waits,
    },
}

impl Writer {
    /// Sends `data` (in pieces, waiting for the connection between them); an `OSError` when the
    /// connection is gone.
    pub(crate) fn write(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let Kind::Stream { shared, waits } = &self.0 else {
            return Ok(());
        };
        for piece in data.chunks(PIECE) {
            push(shared, piece).map_err(PyErr::from)?;
            wait(py, shared, waits).map_err(PyErr::from)?;
        }
        Ok(())
    }

    /// Whether the connection is gone (or the answer is a HEAD's, which takes no body).
    pub(crate) fn takes_no_body(&self) -> bool {
        match &self.0 {
            Kind::Discard => true,
            Kind::Stream { shared, .. } => {
                let s = shared.lock();
                s.gone || s.remaining == Some(0)
            }
        }
    }

    /// What is left of the app's `Content-Length`.
    pub(crate) fn remaining(&self) -> Option<u64> {
        match &self.0 {
            Kind::Discard => Some(0),
            Kind::Stream { shared, .. } => shared.lock().remaining,
        }
    }

    /// The body ends here (`failed`: cut, the app raised).
    pub(crate) fn end(&self, failed: bool) {
        self.set_end(if failed { End::Failed } else { End::Done });
    }

    /// The rest of the body is `body`, to be stepped where the app ran ([`Tail::attach`]); the
    /// connection pulls it after what was written. `None` for a HEAD answer.
    pub(crate) fn tail<B>(&self, body: B) -> Option<Tail<B>> {
        match &self.0 {
            Kind::Discard => None,
            Kind::Stream { shared, .. } => Some(Tail {
                shared: shared.clone(),
                body,
            }),
        }
    }

    fn set_end(&self, end: End) {
        let Kind::Stream { shared, .. } = &self.0 else {
            return;
        };
        let reader = {
            let mut s = shared.lock();
            s.end = end;
            s.reader.take()
        };
        if let Some(w) = reader {
            w.wake();
        }
    }
}

/// Queues one piece, cut at the app's `Content-Length`.
fn push(shared: &Shared, piece: &[u8]) -> io::Result<()> {
    let reader = {
        let mut s = shared.lock();
        if s.gone {
            return Err(gone_error());
        }
        if !matches!(s.end, End::Writing) {
            // The app returned while another of its threads was still in write(): what it
            // still had to give would follow the answer's end (or the iterable's chunks).
            return Err(ended_error());
        }
        let mut piece = piece;
        if let Some(r) = s.remaining {
            if piece.len() as u64 > r {
                piece = &piece[..r as usize];
                if !s.cut_logged {
                    s.cut_logged = true;
                    tracing::warn!(
                        "write() was given more than the application's Content-Length: the rest \
                         is not sent"
                    );
                }
            }
            s.remaining = Some(r - piece.len() as u64);
        }
        if piece.is_empty() {
            return Ok(());
        }
        s.ahead += piece.len();
        s.chunks.push_back(Bytes::copy_from_slice(piece));
        s.reader.take()
    };
    if let Some(w) = reader {
        w.wake();
    }
    Ok(())
}

/// Waits until the connection has taken enough of what was written.
fn wait(py: Python<'_>, shared: &Shared, waits: &Waits) -> io::Result<()> {
    match waits {
        Waits::Inline => py
            .detach(|| c10k_http::early::with(|r| r.flush()))
            .unwrap_or(Ok(())),
        Waits::Thread => py.detach(|| {
            let mut s = shared.lock();
            while s.ahead > AHEAD && !s.gone {
                s = shared.taken.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            if s.gone {
                Err(gone_error())
            } else {
                Ok(())
            }
        }),
        Waits::Hub(_) => loop {
            let event = {
                let mut s = shared.lock();
                if s.gone {
                    return Err(gone_error());
                }
                if s.ahead <= AHEAD {
                    return Ok(());
                }
                let event = new_event(py).map_err(|e| io::Error::other(e.to_string()))?;
                s.waiter = Some(event.clone().unbind());
                event
            };
            // Yields to the hub until the stream sets it (see `WriteStream::taken`); a
            // `gevent.Timeout` (--request-timeout) or a kill raises here, into the app.
            event
                .call_method0(pyo3::intern!(py, "wait"))
                .map_err(|e| io::Error::other(e.to_string()))?;
        },
    }
}

fn new_event(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.import("gevent.event")?.getattr("Event")?.call0()
}

/// The rest of an early answer's body: what the app's iterable yields after its `write()`s.
pub(crate) struct Tail<B> {
    shared: Arc<Shared>,
    body: B,
}

impl<B> Tail<B> {
    pub(crate) fn body_mut(&mut self) -> &mut B {
        &mut self.body
    }

    /// Hands the body to `make`, which wraps it for where it is stepped, and the result to the
    /// connection. A connection already gone drops it at once (which closes the iterable).
    pub(crate) fn attach(self, make: impl FnOnce(B) -> BodyStream) {
        let Tail { shared, body } = self;
        let stream = make(body);
        let (reader, dropped) = {
            let mut s = shared.lock();
            if s.gone {
                (None, Some(stream))
            } else {
                s.end = End::Tail(stream);
                (s.reader.take(), None)
            }
        };
        drop(dropped);
        if let Some(w) = reader {
            w.wake();
        }
    }
}

/// An early answer's body, as the server polls it: what `write()` queued, then the tail.
struct WriteStream {
    shared: Arc<Shared>,
    /// Where a waiting greenlet's event is set (`Waits::Hub`).
    hub: Option<Hub>,
    tail: Option<BodyStream>,
}

impl WriteStream {
    /// The connection took data: a writer waiting for room may go on.
    fn taken(&self, waiter: Option<Py<PyAny>>) {
        self.shared.taken.notify_all();
        if let (Some(event), Some(hub)) = (waiter, &self.hub) {
            hub.run(Box::new(move |py| {
                if let Err(e) = event.bind(py).call_method0(pyo3::intern!(py, "set")) {
                    tracing::error!("waking a greenlet waiting in write(): {e}");
                }
            }));
        }
    }
}

fn failed() -> BoxError {
    "the WSGI application failed after write() had sent the head (see the log)".into()
}

impl Stream for WriteStream {
    type Item = Result<Bytes, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(t) = this.tail.as_mut() {
            return t.as_mut().poll_next(cx);
        }
        let mut s = this.shared.lock();
        if let Some(c) = s.chunks.pop_front() {
            s.ahead -= c.len();
            let waiter = if s.ahead <= AHEAD {
                s.waiter.take()
            } else {
                None
            };
            drop(s);
            this.taken(waiter);
            return Poll::Ready(Some(Ok(c)));
        }
        match std::mem::replace(&mut s.end, End::Done) {
            End::Writing => {
                s.end = End::Writing;
                s.reader = Some(cx.waker().clone());
                Poll::Pending
            }
            End::Tail(t) => {
                drop(s);
                this.tail.insert(t).as_mut().poll_next(cx)
            }
            End::Done => Poll::Ready(None),
            End::Failed => Poll::Ready(Some(Err(failed()))),
        }
    }
}

impl Drop for WriteStream {
    fn drop(&mut self) {
        let (waiter, tail) = {
            let mut s = self.shared.lock();
            s.gone = true;
            s.chunks.clear();
            s.ahead = 0;
            s.reader = None;
            let tail = match std::mem::replace(&mut s.end, End::Done) {
                End::Tail(t) => Some(t),
                _ => None,
            };
            (s.waiter.take(), tail)
        };
        // Outside the lock: dropping a tail closes the app's iterable.
        drop(tail);
        self.taken(waiter);
    }
}
