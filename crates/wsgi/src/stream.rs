//! Streamed response bodies as the server sees them: a `Stream` of chunks whose `Drop` closes the
//! app's iterable, on a thread allowed to run Python.
//!
//! - [`InlineStream`] (blocking classes): the server pulls it on the worker thread that called the
//!   app, which is attached to Python for good, so each chunk is one `next()` under the GIL and the
//!   GIL is released before the chunk is written to the socket.
//! - [`PoolStream`] (`async`, `gevent`, and the blocking classes with `--request-timeout`): the
//!   server polls it on a thread that must not run the app's Python (a tokio thread, or the
//!   connection's thread while the view ran on the pool); each `next()` and the final `close()`
//!   run where the view ran: on the pool thread that called the app, which serves nothing else
//!   until the body is done ([`Steps`]), or under `gevent` in the view's greenlet. A body read
//!   from a real file needs no Python and is read where it is polled.
//!
//! Why the view's own thread: frameworks keep per-thread state that a streamed body still uses.
//! Django's database connection is a `threading.local`; a generator over `queryset.iterator()`
//! reads from a cursor of the view thread's connection. When the steps ran on whichever pool
//! thread was free, the view's thread took other requests meanwhile, and with Django's default
//! `CONN_MAX_AGE = 0` their `request_started` closed that connection under the cursor: the body
//! broke off with "the connection is closed" (PostgreSQL) or "Cannot operate on a closed
//! database" (SQLite); a generator inside `transaction.atomic()` would have had other requests'
//! queries run in its transaction. gunicorn's workers iterate the body on the view's thread too.
//!
//! On the view's pool thread the body is pumped, not pulled step by step: the thread runs `next()`
//! one chunk after another and hands each over at once ([`Pump`]), holding up to [`PUMP_BYTES`]
//! the writer has not taken yet (always at least one chunk), and waits, the GIL released, when
//! that much is ahead. A step per chunk cost two thread hand-offs per chunk: a body of 100,000
//! small rows took 0.75 s under `async` against 0.28 s under `gthread` (gunicorn's gthread: 0.34).
//! A chunk is never held back for the next one, so a body that waits between chunks (server-sent
//! events) still sends each as soon as the app yields it.
//!
//! Either way `close()` is called exactly once: at the end of the body, when the app fails, or when
//! the server drops the stream early because the client went away.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use c10k_http::BoxError;
use futures_core::Stream;
use pyo3::Python;
use tokio::sync::oneshot;

use crate::call::{Next, PyBody};
use crate::gevent::Owner;
use crate::interp;
use crate::pool::Job;

/// Where a [`PoolStream`]'s Python steps run.
pub(crate) enum Runner {
    /// On the pool thread that ran the view, which waits in [`Steps::serve`] for them.
    Thread(crossbeam_channel::Sender<Job>),
    /// In the greenlet that ran the view, in its `contextvars.Context`, as the generator expects
    /// (Flask's `stream_with_context`, Django's per-greenlet database connection).
    Hub(Owner),
}

impl Runner {
    fn submit(&self, job: Job) {
        match self {
            Runner::Thread(steps) => {
                // Err: the thread is gone (it only leaves once every sender is dropped, so only
                // a panic gets here); the job is dropped, and a step's dropped answer reads as
                // the app failing.
                let _ = steps.send(job);
            }
            Runner::Hub(owner) => owner.submit(job),
        }
    }
}

/// The steps of a streamed body, kept on the pool thread that ran its view.
pub(crate) struct Steps {
    tx: crossbeam_channel::Sender<Job>,
    rx: crossbeam_channel::Receiver<Job>,
}

impl Steps {
    pub(crate) fn new() -> Steps {
        let (tx, rx) = crossbeam_channel::unbounded();
        Steps { tx, rx }
    }

    /// Where the body's [`PoolStream`] sends its steps.
    pub(crate) fn runner(&self) -> Runner {
        Runner::Thread(self.tx.clone())
    }

    /// Runs the body's steps on this thread, the GIL released between them, until its stream is
    /// dropped (after its `close()`); at once when the answer was not a stream (no runner left).
    pub(crate) fn serve(self, py: Python<'_>) {
        let Steps { tx, rx } = self;
        drop(tx);
        while let Ok(job) = py.detach(|| rx.recv()) {
            job(py);
        }
    }
}

fn failed() -> BoxError {
    "the WSGI application failed while streaming its response (see the log)".into()
}

/// A body pulled on an attached worker thread.
pub(crate) struct InlineStream {
    first: VecDeque<Bytes>,
    body: Option<PyBody>,
}

impl InlineStream {
    pub(crate) fn new(first: VecDeque<Bytes>, body: PyBody) -> InlineStream {
        InlineStream {
            first,
            body: Some(body),
        }
    }
}

impl Stream for InlineStream {
    type Item = Result<Bytes, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(c) = self.first.pop_front() {
            return Poll::Ready(Some(Ok(c)));
        }
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let next = if body.needs_python() {
            interp::attach(|py| {
                let n = body.next(py);
                if !matches!(n, Next::Chunk(_)) {
                    body.close(py);
                }
                n
            })
        } else {
            body.next_file()
        };
        Poll::Ready(match next {
            Next::Chunk(c) => Some(Ok(c)),
            Next::End => {
                self.finish();
                None
            }
            Next::Failed => {
                self.finish();
                Some(Err(failed()))
            }
        })
    }
}

impl InlineStream {
    fn finish(&mut self) {
        if let Some(mut body) = self.body.take() {
            if !body.is_closed() {
                interp::attach(|py| body.close(py));
            }
        }
    }
}

impl Drop for InlineStream {
    fn drop(&mut self) {
        self.finish();
    }
}

type StepResult = (PyBody, Next);

/// How many bytes a [`Pump`] may run ahead of the writer (at least one chunk always goes).
const PUMP_BYTES: usize = 64 * 1024;

/// What a pump and the stream it feeds share: the bytes handed over and not yet taken, and
/// whether the stream is gone (its client left; the pump then closes the body).
#[derive(Default)]
struct Budget {
    state: std::sync::Mutex<(usize, bool)>,
    taken: std::sync::Condvar,
}

impl Budget {
    /// Waits until `len` more bytes fit (or nothing is outstanding), then counts them; `false`:
    /// the stream is gone.
    fn reserve(&self, len: usize) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !s.1 && s.0 > 0 && s.0 + len > PUMP_BYTES {
            s = self.taken.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.1 {
            return false;
        }
        s.0 += len;
        true
    }

    fn took(&self, len: usize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = s.0.saturating_sub(len);
        drop(s);
        self.taken.notify_one();
    }

    fn gone(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.taken.notify_one();
    }
}

/// The receiving end of a pumped body, held by its [`PoolStream`].
struct Pump {
    rx: tokio::sync::mpsc::UnboundedReceiver<Next>,
    budget: std::sync::Arc<Budget>,
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.budget.gone();
    }
}

/// Runs on the view's pool thread: `next()` until the body ends or its stream is gone, each
/// chunk handed over as it comes; `close()` at the end either way.
fn pump(
    py: Python<'_>,
    mut body: PyBody,
    tx: tokio::sync::mpsc::UnboundedSender<Next>,
    budget: std::sync::Arc<Budget>,
) {
    loop {
        let next = body.next(py);
        let len = match &next {
            Next::Chunk(c) => c.len(),
            Next::End | Next::Failed => {
                body.close(py);
                let _ = tx.send(next);
                return;
            }
        };
        if !py.detach(|| budget.reserve(len)) || tx.send(next).is_err() {
            // The server dropped the stream (its client went away).
            body.close(py);
            return;
        }
    }
}

/// A body pulled on a tokio thread; Python runs on the pool.
pub(crate) struct PoolStream {
    first: VecDeque<Bytes>,
    /// The body when no step is in flight.
    body: Option<PyBody>,
    step: Option<oneshot::Receiver<StepResult>>,
    /// Set once the body is pumped on its view's thread ([`Runner::Thread`]).
    pump: Option<Pump>,
    pool: Runner,
    done: bool,
}

impl PoolStream {
    pub(crate) fn new(first: VecDeque<Bytes>, body: PyBody, pool: Runner) -> PoolStream {
        PoolStream {
            first,
            body: Some(body),
            step: None,
            pump: None,
            pool,
            done: false,
        }
    }

    fn close_on_pool(&mut self) {
        if let Some(mut body) = self.body.take() {
            if !body.is_closed() {
                self.pool.submit(Box::new(move |py| body.close(py)));
            }
        }
    }
}

impl Stream for PoolStream {
    type Item = Result<Bytes, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(c) = this.first.pop_front() {
            return Poll::Ready(Some(Ok(c)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(p) = this.pump.as_mut() {
            return match p.rx.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Next::Chunk(c))) => {
                    p.budget.took(c.len());
                    Poll::Ready(Some(Ok(c)))
                }
                // The pump closed the body.
                Poll::Ready(Some(Next::End)) => {
                    this.done = true;
                    Poll::Ready(None)
                }
                // Failed, or the pump is gone without a word (a panic).
                Poll::Ready(Some(Next::Failed) | None) => {
                    this.done = true;
                    Poll::Ready(Some(Err(failed())))
                }
            };
        }
        if this.step.is_none() {
            let Some(mut body) = this.body.take() else {
                return Poll::Ready(None);
            };
            if !body.needs_python() {
                let next = body.next_file();
                this.body = Some(body);
                return Poll::Ready(this.settle(next));
            }
            if matches!(this.pool, Runner::Thread(_)) {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let budget = std::sync::Arc::new(Budget::default());
                let b = budget.clone();
                this.pool.submit(Box::new(move |py| pump(py, body, tx, b)));
                this.pump = Some(Pump { rx, budget });
                return self.poll_next(cx);
            }
            let (tx, rx) = oneshot::channel();
            this.pool.submit(Box::new(move |py| {
                let next = body.next(py);
                if !matches!(next, Next::Chunk(_)) {
                    body.close(py);
                }
                if let Err((mut body, _)) = tx.send((body, next)) {
                    // The server dropped the stream meanwhile.
                    body.close(py);
                }
            }));
            this.step = Some(rx);
        }
        let Some(rx) = this.step.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok((body, next))) => {
                this.step = None;
                this.body = Some(body);
                Poll::Ready(this.settle(next))
            }
            Poll::Ready(Err(_)) => {
                this.step = None;
                this.done = true;
                Poll::Ready(Some(Err(failed())))
            }
        }
    }
}

impl PoolStream {
    fn settle(&mut self, next: Next) -> Option<Result<Bytes, BoxError>> {
        match next {
            Next::Chunk(c) => Some(Ok(c)),
            Next::End => {
                self.done = true;
                self.close_on_pool();
                None
            }
            Next::Failed => {
                self.done = true;
                self.close_on_pool();
                Some(Err(failed()))
            }
        }
    }
}

impl Drop for PoolStream {
    fn drop(&mut self) {
        // A step in flight closes the body itself when its answer finds no receiver.
        self.close_on_pool();
    }
}
