//! What the app answered ([`Called`]): a complete response, or a head and the rest of its body, a
//! [`PyBody`] that the server pulls chunk by chunk, never read ahead (stream.rs runs its steps
//! where the app ran). A body comes from the app's iterator, stepped under the GIL, or from a real
//! file behind `wsgi.file_wrapper`, read without it; `write()` data the iterator gives meanwhile
//! goes out before its next chunk; nothing goes past the app's `Content-Length`; and the
//! iterable's `close()` is called once, whether the body ends, fails or is given up on.
//!
//! A body made in a request's own `contextvars.Context` ([`RequestContext`], see call.rs) keeps it
//! and enters it around every step and the `close()`, wherever they run.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use c10k_http::{Body, Response};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::start_response::StartResponse;
use crate::traceback::log_exception;

/// What the app answered.
pub(crate) enum Called {
    /// A complete response; the iterable is already closed.
    Done(Response),
    /// The head (its body is to be replaced by a stream), the chunks already taken, and the rest.
    Streaming {
        head: Response,
        first: VecDeque<Bytes>,
        body: PyBody,
    },
}

/// Turns a [`Called`] into a response whose stream is `make(first, body)`.
pub(crate) fn into_response(
    called: Called,
    make: impl FnOnce(VecDeque<Bytes>, PyBody) -> c10k_http::BodyStream,
) -> Response {
    match called {
        Called::Done(r) => r,
        Called::Streaming { head, first, body } => {
            let mut head = head;
            head.body = Body::Stream(make(first, body));
            head
        }
    }
}

/// Where the rest of a streamed body comes from.
pub(crate) enum Source {
    /// The app's iterator, stepped under the GIL.
    Iter(Py<PyAny>),
    /// A real file behind `wsgi.file_wrapper`, read without the GIL.
    File { file: File, pos: u64 },
}

/// The rest of a streamed response body, and the iterable to `close()` when it ends or the
/// server gives up on it.
pub(crate) struct PyBody {
    pub source: Source,
    /// The object returned by the app; `None` once closed.
    pub closer: Option<Py<PyAny>>,
    pub sr: Py<StartResponse>,
    /// What is left of the app's `Content-Length`: no more is sent (PEP 3333).
    pub remaining: Option<u64>,
    pub pending: VecDeque<Bytes>,
    pub label: Arc<str>,
    /// The request's context when the call ran in one (call.rs's `run_request_isolated`): every
    /// step and the `close()` run in it.
    pub context: Option<RequestContext>,
}

/// One step of a streamed body.
#[derive(Debug)]
pub(crate) enum Next {
    Chunk(Bytes),
    End,
    /// The app raised (already logged): the server must abort the response.
    Failed,
}

const FILE_CHUNK: usize = 64 * 1024;

impl PyBody {
    /// Whether [`PyBody::next`] needs the GIL ([`PyBody::next_file`] does not).
    pub(crate) fn needs_python(&self) -> bool {
        matches!(self.source, Source::Iter(_))
    }

    /// The next chunk from the app's iterator (with any `write()` data queued before it).
    pub(crate) fn next(&mut self, py: Python<'_>) -> Next {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return self.limit(c);
            }
            if self.remaining == Some(0) {
                return Next::End;
            }
            let Source::Iter(iter) = &self.source else {
                return self.next_file();
            };
            let step = self
                .context
                .as_ref()
                .map(|c| c.enter(py))
                .transpose()
                .and_then(|_entered| {
                    iter.bind(py)
                        .cast::<pyo3::types::PyIterator>()
                        .map_err(PyErr::from)
                        .and_then(|it| it.clone().next().transpose())
                });
            let item = match step {
                Ok(item) => item,
                Err(e) => {
                    log_exception(py, &self.label, "iterating the response", &e);
                    return Next::Failed;
                }
            };
            {
                let mut sr = self.sr.borrow_mut(py);
                self.pending.extend(sr.take_written());
            }
            match item {
                None if self.pending.is_empty() => return Next::End,
                None => {}
                Some(item) => match item.cast::<PyBytes>() {
                    Ok(b) if b.as_bytes().is_empty() => {}
                    Ok(b) => self.pending.push_back(Bytes::copy_from_slice(b.as_bytes())),
                    Err(_) => {
                        let e = pyo3::exceptions::PyTypeError::new_err(
                            "the response iterable yielded something other than bytes",
                        );
                        log_exception(py, &self.label, "iterating the response", &e);
                        return Next::Failed;
                    }
                },
            }
        }
    }

    /// The next chunk of a file body; no Python involved.
    pub(crate) fn next_file(&mut self) -> Next {
        if let Some(c) = self.pending.pop_front() {
            return self.limit(c);
        }
        let Source::File { file, pos } = &mut self.source else {
            return Next::Failed;
        };
        let want = self
            .remaining
            .map_or(FILE_CHUNK, |r| (r as usize).min(FILE_CHUNK));
        if want == 0 {
            return Next::End;
        }
        let mut buf = vec![0u8; want];
        match file.read_at(&mut buf, *pos) {
            Ok(0) => Next::End,
            Ok(n) => {
                *pos += n as u64;
                buf.truncate(n);
                self.limit(Bytes::from(buf))
            }
            Err(e) => {
                tracing::error!(
                    request = &*self.label,
                    "reading the wsgi.file_wrapper file: {e}"
                );
                Next::Failed
            }
        }
    }

    fn limit(&mut self, mut c: Bytes) -> Next {
        if let Some(r) = &mut self.remaining {
            if *r == 0 {
                return Next::End;
            }
            if c.len() as u64 > *r {
                c.truncate(*r as usize);
                warn_longer(&self.label);
            }
            *r -= c.len() as u64;
        }
        Next::Chunk(c)
    }

    /// Calls the iterable's `close()` (once); errors are logged. The body has ended: a later
    /// `write()` (from a thread the app started) raises (see call.rs's `finish`).
    pub(crate) fn close(&mut self, py: Python<'_>) {
        if let Some(obj) = self.closer.take() {
            if let Ok(mut sr) = self.sr.bind(py).try_borrow_mut() {
                sr.ended = true;
            }
            let closed = self
                .context
                .as_ref()
                .map(|c| c.enter(py))
                .transpose()
                .and_then(|_entered| close(py, obj.bind(py)));
            if let Err(e) = closed {
                log_exception(py, &self.label, "closing the iterable", &e);
            }
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closer.is_none()
    }
}

/// Calls `close()` on the app's iterable if it has one.
pub(crate) fn close(py: Python<'_>, result: &Bound<'_, PyAny>) -> PyResult<()> {
    // A plain list or tuple (the usual answer of a small app) has no close(): looking it up
    // would raise and catch an AttributeError, message formatting included, on every request.
    if result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>() {
        return Ok(());
    }
    if let Some(close) = result.getattr_opt(pyo3::intern!(py, "close"))? {
        close.call0()?;
    }
    Ok(())
}

/// The log line for a body cut at the app's `Content-Length`.
pub(crate) fn warn_longer(label: &str) {
    tracing::warn!(
        request = label,
        "the response body is longer than the application's Content-Length: the rest is not sent"
    );
}

/// A request's own `contextvars.Context`.
pub(crate) struct RequestContext(Py<PyAny>);

impl RequestContext {
    pub(crate) fn copy_current(py: Python<'_>) -> PyResult<RequestContext> {
        // SAFETY: PyContext_CopyCurrent returns a new reference or NULL with an exception set.
        let ctx = unsafe { Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyContext_CopyCurrent())? };
        Ok(RequestContext(ctx.unbind()))
    }

    /// Makes it the thread's current context until the guard is dropped.
    pub(crate) fn enter<'a>(&'a self, py: Python<'a>) -> PyResult<Entered<'a>> {
        // SAFETY: a Context object, with the GIL held; fails (with an exception set) when the
        // context is already entered, e.g. by another thread.
        if unsafe { pyo3::ffi::PyContext_Enter(self.0.as_ptr()) } < 0 {
            return Err(PyErr::take(py).unwrap_or_else(|| {
                pyo3::exceptions::PySystemError::new_err("PyContext_Enter failed")
            }));
        }
        Ok(Entered { ctx: self, py })
    }
}

/// An entered [`RequestContext`]; dropping it restores the thread's previous context.
pub(crate) struct Entered<'a> {
    ctx: &'a RequestContext,
    py: Python<'a>,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        // SAFETY: the context this guard entered on this thread, with the GIL held.
        if unsafe { pyo3::ffi::PyContext_Exit(self.ctx.0.as_ptr()) } < 0 {
            if let Some(e) = PyErr::take(self.py) {
                log_exception(self.py, "-", "leaving the request's context", &e);
            }
        }
    }
}
