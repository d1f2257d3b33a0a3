//! Streamed response bodies as the server sees them: a `Stream` of chunks whose `Drop` closes the
//! app's iterable, on a thread allowed to run Python.
//!
//! - [`InlineStream`] (blocking classes): the server pulls it on the worker thread that called the
//!   app, which is attached to Python for good, so each chunk is one `next()` under the GIL and the
//!   GIL is released before the chunk is written to the socket.
//! - [`PoolStream`] (`async`, `gevent`): the server polls it on a tokio thread, which must never
//!   run Python; each `next()` and the final `close()` are jobs for the Python pool (or, under
//!   `gevent`, greenlets on the hub). A body read from a real file needs no Python and is read
//!   where it is polled.
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
use tokio::sync::oneshot;

use crate::call::{Next, PyBody};
use crate::gevent::Owner;
use crate::interp;
use crate::pool::{Job, Pool};

/// Where a [`PoolStream`]'s Python steps run.
pub(crate) enum Runner {
    Pool(Pool),
    /// In the greenlet that ran the view, in its `contextvars.Context`, as the generator expects
    /// (Flask's `stream_with_context`, Django's per-greenlet database connection).
    Hub(Owner),
}

impl Runner {
    fn submit(&self, job: Job) {
        match self {
            Runner::Pool(p) => p.submit(job),
            Runner::Hub(owner) => owner.submit(job),
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

/// A body pulled on a tokio thread; Python runs on the pool.
pub(crate) struct PoolStream {
    first: VecDeque<Bytes>,
    /// The body when no step is in flight.
    body: Option<PyBody>,
    step: Option<oneshot::Receiver<StepResult>>,
    pool: Runner,
    done: bool,
}

impl PoolStream {
    pub(crate) fn new(first: VecDeque<Bytes>, body: PyBody, pool: Runner) -> PoolStream {
        PoolStream {
            first,
            body: Some(body),
            step: None,
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
        if this.step.is_none() {
            let Some(mut body) = this.body.take() else {
                return Poll::Ready(None);
            };
            if !body.needs_python() {
                let next = body.next_file();
                this.body = Some(body);
                return Poll::Ready(this.settle(next));
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
