//! One request through the app, under the GIL: environ in, response head and body out.
//!
//! [`run_request`] calls the app and looks at what it returned:
//! - a `list` (or `tuple`) is joined into one complete body — the common case of small answers;
//! - otherwise the iterable is stepped until its first non-empty chunk (PEP 3333 allows the app to
//!   call `start_response` that late). If the body is then complete — the iterator ended, or the
//!   app's `Content-Length` is reached, as for every plain Flask answer — `close()` is called at
//!   once and the answer is complete; else the head goes out with that chunk and the rest is a
//!   [`PyBody`] the server pulls chunk by chunk, never read ahead (body.rs);
//! - a `wsgi.file_wrapper` around a real file becomes a [`c10k_http::Body::File`], which the server
//!   sends with `sendfile(2)` (a [`PyBody`] that Rust reads without the GIL if the app also used
//!   the `write()` callable, whose data must go first);
//! - once `write()` has sent the head while the app ran (write.rs, [`Outcome::Sent`]), whatever the
//!   app returns is the rest of that body: a list's items are written at once, a
//!   `wsgi.file_wrapper` around a real file is a [`PyBody`] that Rust reads without the GIL (not
//!   `sendfile(2)`: the head and its framing are already out), any other iterable is a [`PyBody`]
//!   stepped as above, and an exception cuts the answer (too late for a 500, as under gunicorn);
//! - `write()` from a thread the app started goes where the app's own would at that moment; once
//!   the answer is complete (or the rest is such a file), it raises an `OSError` ([`finish`]).
//!
//! The app's `Content-Length` is what the head announces, as under gunicorn: a longer body is cut
//! there (PEP 3333), and a shorter one goes out under it, after which the server closes the
//! connection, so that the client sees the answer incomplete rather than whole and wrong.
//!
//! An exception from the app (or a broken response: no `start_response`, a `str` chunk, a bad
//! status or header) gives the client a 500 with a generic body and the log the traceback; the
//! iterable is closed either way.
//!
//! When the body's later steps may run on another OS thread than the call (the pool of `async`,
//! and `--request-timeout`), [`run_request_isolated`] gives the request its own
//! `contextvars.Context`, entered around the call and around every step and the `close()` of its
//! body: context variables set by the app (Flask's request context, pushed by
//! `stream_with_context` generators) are then seen by every step, and reset in the context that set
//! them, wherever the step runs. Each thread has its own current context, so without this a step on
//! another thread fails with Flask's `LookupError`.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use c10k_http::{Body, FileBody, Method, Request, Response};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::body::{close, warn_longer, Called, PyBody, RequestContext, Source};
use crate::file_wrapper::FileWrapper;
use crate::loader::AppState;
use crate::start_response::{head_response, Exclusive, StartResponse};
use crate::traceback::log_exception;
use crate::write::{Reply, Tail, Writer};

/// What became of a request's call.
pub(crate) enum Outcome {
    /// Nothing was sent yet: the caller answers with the [`Called`] through the [`Reply`] it
    /// gave (handed back).
    Answer(Called, Reply),
    /// `write()` sent the head while the app ran (write.rs); the rest of the body, if the app
    /// returned an iterable that still has some, for the caller to step where the app ran.
    Sent(Option<Tail<PyBody>>),
}

/// The `METHOD /path` of a request, for log lines.
pub(crate) fn label(req: &Request) -> Arc<str> {
    format!("{} {}", req.method, req.path).into()
}

/// [`run_request`] in a fresh copy of the thread's `contextvars.Context`, which a streamed body
/// keeps and enters for each later step (see the module documentation).
pub(crate) fn run_request_isolated(
    py: Python<'_>,
    state: &AppState,
    req: Request,
    reply: Reply,
) -> Outcome {
    let ctx = match RequestContext::copy_current(py) {
        Ok(c) => c,
        Err(e) => {
            let resp = app_error(py, &label(&req), "copying the context", &e);
            return Outcome::Answer(Called::Done(resp), reply);
        }
    };
    let outcome = {
        let _entered = match ctx.enter(py) {
            Ok(g) => g,
            Err(e) => {
                let resp = app_error(py, &label(&req), "entering the context", &e);
                return Outcome::Answer(Called::Done(resp), reply);
            }
        };
        run_request(py, state, req, reply)
    };
    match outcome {
        Outcome::Answer(
            Called::Streaming {
                head,
                first,
                mut body,
            },
            reply,
        ) => {
            body.context = Some(ctx);
            Outcome::Answer(Called::Streaming { head, first, body }, reply)
        }
        Outcome::Sent(Some(mut tail)) => {
            tail.body_mut().context = Some(ctx);
            Outcome::Sent(Some(tail))
        }
        other => other,
    }
}

/// Calls the app for `req`. Never fails: app errors become a logged 500 (or, once `write()` has
/// sent the head, a cut answer).
pub(crate) fn run_request(py: Python<'_>, state: &AppState, req: Request, reply: Reply) -> Outcome {
    let (environ, started) = match start(py, state, req, reply) {
        Ok(s) => s,
        Err((resp, reply)) => return Outcome::Answer(Called::Done(resp), reply),
    };
    let result = state.app.bind(py).call1((environ, started.sr.bind(py)));
    finish(py, started, result)
}

/// A request whose environ and `start_response` are made, between [`start`] and [`finish`].
pub(crate) struct Started {
    req: Request,
    sr: Py<StartResponse>,
}

impl Started {
    /// The `start_response` callable to pass to the app.
    pub(crate) fn start_response(&self) -> &Py<StartResponse> {
        &self.sr
    }
}

/// The first half of [`run_request`], for a caller that calls the app itself (the gevent hub, so
/// that no Rust frame is on a greenlet's stack while the app waits): the environ and what
/// [`finish`] needs, or the (logged) 500 when the environ cannot be made, with `reply` back.
#[allow(clippy::result_large_err)]
pub(crate) fn start<'py>(
    py: Python<'py>,
    state: &AppState,
    mut req: Request,
    reply: Reply,
) -> Result<(Bound<'py, pyo3::types::PyDict>, Started), (Response, Reply)> {
    let environ = match state.template.environ(py, &mut req) {
        Ok(e) => e,
        Err(e) => {
            return Err((
                app_error(py, &label(&req), "building the environ", &e),
                reply,
            ))
        }
    };
    match StartResponse::acquire(py) {
        Ok(sr) => {
            {
                let mut me = sr.borrow_mut(py);
                me.reply = Exclusive::new(Some(reply));
                me.head_only = req.method == Method::Head;
            }
            Ok((environ, Started { req, sr }))
        }
        Err(e) => Err((app_error(py, &label(&req), "start_response", &e), reply)),
    }
}

/// The second half of [`run_request`]: what the app's call returned (or raised) becomes the
/// answer. Never fails: app errors become a logged 500 (a cut answer once the head is out).
pub(crate) fn finish(
    py: Python<'_>,
    started: Started,
    result: PyResult<Bound<'_, PyAny>>,
) -> Outcome {
    let Started { req, sr } = started;
    // From here on, write() (from the body's iterator) is held for the body, as before.
    let (reply, writer) = {
        let mut me = sr.borrow_mut(py);
        (me.reply.get_mut().take(), me.writer.take())
    };
    let mut outcome = match (writer, reply) {
        (Some(writer), _) => Outcome::Sent(after_write(py, &req, sr.bind(py), &writer, result)),
        (None, Some(reply)) => Outcome::Answer(answer(py, &req, sr.bind(py), result), reply),
        // Not reached: the reply is only taken by the write() that makes the writer.
        (None, None) => Outcome::Sent(None),
    };
    // A thread the app started may still hold `write`. Until the body ends, what it writes goes
    // out before the iterable's next chunk (body.rs); once nothing more can be sent in order (the
    // answer is complete, or the rest is a file read without Python), write() raises instead of
    // dropping the data unseen. A body that still steps the app's iterator sets it when it is
    // closed (`PyBody::close`).
    let steps_python = match &mut outcome {
        Outcome::Answer(Called::Streaming { body, .. }, _) => body.needs_python(),
        Outcome::Sent(Some(tail)) => tail.body_mut().needs_python(),
        Outcome::Answer(Called::Done(_), _) | Outcome::Sent(None) => false,
    };
    if !steps_python {
        if let Ok(mut me) = sr.bind(py).try_borrow_mut() {
            me.ended = true;
        }
    }
    StartResponse::release(py, sr);
    outcome
}

/// What the app returned (or raised) after `write()` sent the head: the rest of the body.
fn after_write(
    py: Python<'_>,
    req: &Request,
    sr: &Bound<'_, StartResponse>,
    writer: &Writer,
    result: PyResult<Bound<'_, PyAny>>,
) -> Option<Tail<PyBody>> {
    let label = label(req);
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            // Too late for a 500: the client sees the answer cut, as under gunicorn.
            log_exception(py, &label, "calling the application, after write()", &e);
            writer.end(true);
            return None;
        }
    };
    if writer.takes_no_body() {
        // A HEAD answer, the app's Content-Length reached, or the client gone.
        close_logged(py, req, &result);
        writer.end(false);
        return None;
    }
    let seq = result
        .cast_exact::<PyList>()
        .map(|l| l.as_sequence().clone())
        .or_else(|_| {
            result
                .cast_exact::<PyTuple>()
                .map(|t| t.as_sequence().clone())
        });
    if let Ok(seq) = seq {
        // `write(...); return []`, or a few more chunks: written here, as write() does.
        let written = seq.try_iter().and_then(|items| {
            for item in items {
                let item = item?;
                let b = item.cast::<PyBytes>().map_err(|_| {
                    pyo3::exceptions::PyTypeError::new_err(
                        "the response iterable yielded something other than bytes",
                    )
                })?;
                writer.write(py, b.as_bytes())?;
            }
            Ok(())
        });
        if let Err(e) = &written {
            log_exception(py, &label, "iterating the response", e);
        }
        writer.end(written.is_err());
        return None;
    }
    // A wsgi.file_wrapper over a real file: read by Rust without the GIL, 64 KiB at a time, after
    // what write() sent (sendfile(2) would need the file to be the whole body: the head, with its
    // framing, went out with the first write()).
    let file = match result.cast_exact::<FileWrapper>() {
        Ok(fw) => match real_file(py, &fw.borrow()) {
            Ok(file) => file,
            Err(e) => {
                log_exception(py, &label, "reading the wsgi.file_wrapper", &e);
                close_logged(py, req, &result);
                writer.end(true);
                return None;
            }
        },
        Err(_) => None,
    };
    let source = match file {
        Some((file, pos)) => Source::File { file, pos },
        None => match result.try_iter() {
            Ok(i) => Source::Iter(i.unbind().into_any()),
            Err(e) => {
                log_exception(py, &label, "iterating the response", &e);
                close_logged(py, req, &result);
                writer.end(true);
                return None;
            }
        },
    };
    writer.tail(PyBody {
        source,
        closer: Some(result.clone().unbind()),
        sr: sr.clone().unbind(),
        remaining: writer.remaining(),
        pending: VecDeque::new(),
        label,
        context: None,
    })
}

fn answer(
    py: Python<'_>,
    req: &Request,
    sr: &Bound<'_, StartResponse>,
    result: PyResult<Bound<'_, PyAny>>,
) -> Called {
    let head_only = req.method == Method::Head;
    let result = match result {
        Ok(r) => r,
        Err(e) => return Called::Done(app_error(py, &label(req), "calling the application", &e)),
    };
    match respond(py, req, sr, &result, head_only) {
        Ok(Some(called)) => called,
        Ok(None) => {
            // Complete: close now (lists have no close()).
            close_logged(py, req, &result);
            Called::Done(complete(sr, head_only, req))
        }
        Err(e) => {
            let label = label(req);
            let resp = app_error(py, &label, "iterating the response", &e);
            if let Err(e) = close(py, &result) {
                log_exception(py, &label, "closing the iterable", &e);
            }
            Called::Done(resp)
        }
    }
}

/// `Ok(None)`: everything is in `sr` (head and `written`), ready for [`complete`].
fn respond<'py>(
    py: Python<'py>,
    req: &Request,
    sr: &Bound<'py, StartResponse>,
    result: &Bound<'py, PyAny>,
    head_only: bool,
) -> PyResult<Option<Called>> {
    if let Ok(list) = result.cast_exact::<PyList>() {
        for item in list.iter() {
            push_chunk(sr, &item)?;
        }
        require_head(sr)?;
        return Ok(None);
    }
    if let Ok(tuple) = result.cast_exact::<PyTuple>() {
        for item in tuple.iter() {
            push_chunk(sr, &item)?;
        }
        require_head(sr)?;
        return Ok(None);
    }
    if let Ok(fw) = result.cast_exact::<FileWrapper>() {
        if let Some((file, pos)) = real_file(py, &fw.borrow())? {
            require_head(sr)?;
            let mut me = sr.borrow_mut();
            me.head_sent = true;
            let first: VecDeque<Bytes> = me.take_written().into();
            let head = me.head.take().unwrap_or_default();
            if first.is_empty() {
                // The server sends it with sendfile(2): from the current offset to the end of
                // the file, never past the app's Content-Length. Our descriptor is a duplicate,
                // so the wrapper (and the app's file) is closed now, as PEP 3333 lets the server
                // do once it no longer needs the iterable.
                let size = file.metadata().map_err(PyErr::from)?.len();
                let len = head.content_length.map_or(size.saturating_sub(pos), |n| {
                    n.min(size.saturating_sub(pos))
                });
                drop(me);
                close_logged(py, req, result);
                let mut resp = head_response(head);
                resp.body = Body::File(FileBody {
                    file,
                    offset: pos,
                    len,
                });
                return Ok(Some(Called::Done(resp)));
            }
            let remaining = head.content_length;
            return Ok(Some(Called::Streaming {
                head: head_response(head),
                first,
                body: PyBody {
                    source: Source::File { file, pos },
                    closer: Some(result.clone().unbind()),
                    sr: sr.clone().unbind(),
                    remaining,
                    pending: VecDeque::new(),
                    label: label(req),
                    context: None,
                },
            }));
        }
    }
    let iter = result.try_iter()?;
    for item in iter.clone() {
        let item = item?;
        if !push_chunk(sr, &item)? {
            continue;
        }
        // The first non-empty chunk: the head must be known now.
        require_head(sr)?;
        let mut me = sr.borrow_mut();
        let cl = me.head.as_ref().and_then(|h| h.content_length);
        let have: u64 = me.written.iter().map(|b| b.len() as u64).sum();
        if cl.is_some_and(|n| have >= n) {
            return Ok(None);
        }
        me.head_sent = true;
        let head = me.head.take().unwrap_or_default();
        let first: VecDeque<Bytes> = me.take_written().into();
        let remaining = head.content_length.map(|n| n - have);
        let resp = head_response(head);
        if head_only {
            // The head is all a HEAD request gets: stop the app's iteration here.
            drop(me);
            close_logged(py, req, result);
            return Ok(Some(Called::Done(resp.with_stream(Box::pin(Chunk(None))))));
        }
        return Ok(Some(Called::Streaming {
            head: resp,
            first,
            body: PyBody {
                source: Source::Iter(iter.unbind().into_any()),
                closer: Some(result.clone().unbind()),
                sr: sr.clone().unbind(),
                remaining,
                pending: VecDeque::new(),
                label: label(req),
                context: None,
            },
        }));
    }
    require_head(sr)?;
    Ok(None)
}

/// Appends a body chunk to `sr.written`; false when it was empty.
fn push_chunk(sr: &Bound<'_, StartResponse>, item: &Bound<'_, PyAny>) -> PyResult<bool> {
    let b = item.cast::<PyBytes>().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "the response iterable yielded a {}, not bytes",
            item.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    let b = b.as_bytes();
    if b.is_empty() {
        return Ok(false);
    }
    sr.borrow_mut().written.push(Bytes::copy_from_slice(b));
    Ok(true)
}

fn require_head(sr: &Bound<'_, StartResponse>) -> PyResult<()> {
    if sr.borrow().head.is_none() {
        return Err(pyo3::exceptions::PyAssertionError::new_err(
            "the application returned without calling start_response()",
        ));
    }
    Ok(())
}

/// The complete response from what `sr` collected.
fn complete(sr: &Bound<'_, StartResponse>, head_only: bool, req: &Request) -> Response {
    let mut me = sr.borrow_mut();
    me.head_sent = true;
    let head = me.head.take().unwrap_or_default();
    let written = me.take_written();
    let mut body = match written.len() {
        0 => Bytes::new(),
        1 => written.into_iter().next().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(written.iter().map(Bytes::len).sum());
            for w in &written {
                all.extend_from_slice(w);
            }
            all.freeze()
        }
    };
    if head_only && (body.is_empty() || head.content_length.is_some()) {
        // The app left the body out of its HEAD answer, as Flask (werkzeug) does: its
        // Content-Length, if it set one, is the length GET would get, and without one no
        // length is known — a stream's head announces it or nothing, never the 0 of this body.
        // With a body and a length, the head is GET's too: the app's length.
        return head_response(head).with_stream(Box::pin(Chunk(None)));
    }
    if let Some(n) = head.content_length {
        let have = body.len() as u64;
        if have > n {
            // Never more than the app's Content-Length (PEP 3333; gunicorn cuts it too).
            // The label only when it is needed: building it is a `format!` per request.
            warn_longer(&label(req));
            body.truncate(n as usize);
        } else if have < n {
            // Fewer bytes than the app announced. Its length goes out (as under gunicorn) with
            // what the body has, and the server then closes the connection: the client sees an
            // incomplete answer, never a complete wrong one, and never reads the next answer
            // as the rest of this one (gunicorn's gthread keeps the connection open there).
            // The server logs the mismatch when it closes.
            return head_response(head).with_stream(Box::pin(Chunk(Some(body))));
        }
    }
    head_response(head).with_full_body(body)
}

/// A duplicate of the wrapped file's descriptor and its current offset, when it is a regular file.
fn real_file(py: Python<'_>, fw: &FileWrapper) -> PyResult<Option<(File, u64)>> {
    let f = fw.filelike.bind(py);
    let Some(fileno) = f.getattr_opt(pyo3::intern!(py, "fileno"))? else {
        return Ok(None);
    };
    let Ok(fd) = fileno.call0().and_then(|n| n.extract::<i32>()) else {
        return Ok(None);
    };
    let Ok(pos) = f
        .call_method0(pyo3::intern!(py, "tell"))
        .and_then(|p| p.extract::<u64>())
    else {
        return Ok(None);
    };
    // SAFETY: dup of a descriptor the file object owns; the result is ours alone.
    let dup = unsafe { libc::dup(fd) };
    if dup < 0 {
        return Ok(None);
    }
    // SAFETY: dup is a fresh descriptor owned by nobody else.
    let file = unsafe { File::from_raw_fd(dup) };
    // A regular file that says it is empty may not be: procfs and sysfs files (`/proc/meminfo`,
    // `/sys/.../uevent`) report a size of 0 and have content when read. Sending `st_size` bytes
    // of those would answer an empty body, so they (and truly empty files, at no real cost) are
    // read to their end in Python like any other file-like object.
    match file.metadata() {
        Ok(m) if m.is_file() && m.len() > 0 => Ok(Some((file, pos))),
        _ => Ok(None),
    }
}

/// [`close`] once the answer is complete: an error there (a Flask teardown that raises) is
/// logged and the answer still goes out, as it does when a streamed body's `close()` fails
/// after its last chunk — and as under gunicorn, which has sent it by then.
fn close_logged(py: Python<'_>, req: &Request, result: &Bound<'_, PyAny>) {
    if let Err(e) = close(py, result) {
        log_exception(py, &label(req), "closing the iterable", &e);
    }
}

/// Logs an app failure with its traceback; the client's 500.
pub(crate) fn app_error(py: Python<'_>, label: &str, during: &str, e: &PyErr) -> Response {
    log_exception(py, label, during, e);
    Response::text(500, "Internal Server Error\n")
}

/// A body already complete, sent as a stream so that the head can keep the app's
/// `Content-Length`: nothing for a HEAD answer, or a body shorter than that length.
struct Chunk(Option<Bytes>);

impl futures_core::Stream for Chunk {
    type Item = Result<Bytes, c10k_http::BoxError>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.0.take().map(Ok))
    }
}
