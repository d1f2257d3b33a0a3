//! `start_response(status, headers, exc_info=None)` and the `write()` callable it returns.
//!
//! The status and headers are checked and converted to Rust values as soon as the app hands them
//! over, so the Rust side never looks at Python objects to build the response head. PEP 3333's
//! rules: a second call needs `exc_info`; with `exc_info` before the head has gone out, the new
//! status and headers replace the old; after it has gone out, or after `write()` was given data,
//! the exception is re-raised into the app. Data given to `write()` is sent before the iterable's
//! chunks, in order, and goes to the client as it is written: the first non-empty `write()` sends
//! the head (write.rs); once the answer is complete, it raises an `OSError` (a thread the app
//! started, writing too late). A `Content-Length` that is not a number of bytes, or two that differ, is a
//! `ValueError` in the app, hence a 500 (gunicorn raises for what `int()` refuses): the server
//! never guesses the framing of an answer, nor replaces the app's length with its own. The
//! checked [`Head`] becomes a response head through [`head_response`] (here and in call.rs).

use std::borrow::Cow;
use std::cell::RefCell;

use bytes::Bytes;
use c10k_http::Response;
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::write::{Reply, Writer};

/// A response head as the app gave it, already checked.
#[derive(Debug, Default)]
pub(crate) struct Head {
    pub status: u16,
    /// The app's reason phrase when it differs from the code's standard one (`404 NOT FOUND`).
    pub reason: Option<Bytes>,
    pub headers: Vec<(Cow<'static, str>, Bytes)>,
    /// The app's `Content-Length`, if it set one (an invalid one, or two that differ, is the
    /// app's `ValueError`).
    pub content_length: Option<u64>,
}

/// The response head, the app's header fields kept: its `Content-Length` frames a stream, and
/// for a complete body, which the encoder frames by its own length (dropping the app's field),
/// it is still the app's field that the access log's `%({Content-Length}o)s` prints, as
/// gunicorn's does. But a 204 never has one (RFC 9110 §8.6): gunicorn drops the app's, so its
/// log prints `-`, and so does ours (a 304's is kept, as gunicorn keeps it).
pub(crate) fn head_response(head: Head) -> Response {
    let mut resp = Response::new(head.status);
    resp.reason = head.reason;
    resp.headers = head.headers;
    if resp.status == 204 {
        resp.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("content-length"));
    }
    resp
}

#[pyclass(module = "c10k", name = "StartResponse")]
#[derive(Default)]
pub(crate) struct StartResponse {
    pub head: Option<Head>,
    /// True once the server has taken the head (it went out with the first body chunk).
    pub head_sent: bool,
    /// Data from `write()` not yet handed to the server.
    pub written: Vec<Bytes>,
    /// How the answer leaves the app's thread, until the app returns or `write()` sends the head
    /// (see write.rs). `None` outside the app's call: `write()` data is then held, as before the
    /// head, for the body that is being stepped.
    pub reply: Exclusive<Option<Reply>>,
    /// Set once `write()` has sent the head, until the app returns.
    pub writer: Option<Writer>,
    /// The request is a HEAD: the head goes out, the body does not.
    pub head_only: bool,
    /// The answer's body is complete, or is a file that Rust reads: data `write()` is given now
    /// (from a thread the app started) can no longer be sent in order, and is refused with an
    /// `OSError` rather than dropped unseen.
    pub ended: bool,
}

/// A value reached only through `&mut` (as in a `start_response`, borrowed mutably under the
/// GIL), so sharing `&Exclusive` between threads shares nothing: [`Reply`] holds the gevent
/// class's `Send`-only callback, and a `#[pyclass]` must be `Sync`. No lock on the request's path.
#[derive(Default)]
pub(crate) struct Exclusive<T>(T);

// SAFETY: `&Exclusive<T>` gives no access to the `T` (only `&mut` does, through `get_mut`), so
// sharing it between threads cannot share the `T`; moving it needs `T: Send`.
unsafe impl<T: Send> Sync for Exclusive<T> {}

impl<T> Exclusive<T> {
    pub(crate) fn new(t: T) -> Exclusive<T> {
        Exclusive(t)
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl StartResponse {
    pub(crate) fn take_written(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.written)
    }

    /// A fresh `start_response` for one request: this thread's spare one when it is free (see
    /// [`Spare`]), else a new one.
    pub(crate) fn acquire(py: Python<'_>) -> PyResult<Py<StartResponse>> {
        SPARE.with(|cell| {
            let mut cell = cell.borrow_mut();
            match cell.as_mut() {
                Some(spare) if !spare.in_use => {
                    spare.in_use = true;
                    return Ok(spare.sr.clone_ref(py));
                }
                // Taken by a request still running (another greenlet of this thread).
                Some(_) => return Py::new(py, StartResponse::default()),
                None => {}
            }
            let sr = Py::new(py, StartResponse::default())?;
            let write = sr.bind(py).getattr(pyo3::intern!(py, "write"))?.unbind();
            *cell = Some(Spare {
                sr: sr.clone_ref(py),
                write,
                in_use: true,
            });
            Ok(sr)
        })
    }

    /// The request `sr` was acquired for is answered. The spare is kept for the next request
    /// only if nothing else holds it or its `write` (an app may keep either, e.g. in a
    /// generator that goes on writing); otherwise this thread makes a new one next time.
    pub(crate) fn release(py: Python<'_>, sr: Py<StartResponse>) {
        let ptr = sr.as_ptr();
        drop(sr);
        let dropped = SPARE.with(|cell| {
            let mut cell = cell.borrow_mut();
            let spare = cell.as_mut()?;
            if spare.sr.as_ptr() != ptr || !spare.in_use {
                return None;
            }
            // SAFETY: reading the reference counts of live objects, with the GIL held.
            let (sr_refs, write_refs) = unsafe {
                (
                    pyo3::ffi::Py_REFCNT(ptr),
                    pyo3::ffi::Py_REFCNT(spare.write.as_ptr()),
                )
            };
            // The spare's own reference and the one its bound `write` holds; the spare's own.
            if sr_refs == 2 && write_refs == 1 {
                if let Ok(mut me) = spare.sr.bind(py).try_borrow_mut() {
                    *me = StartResponse::default();
                    spare.in_use = false;
                    return None;
                }
            }
            cell.take()
        });
        // Dropped outside the cell's borrow.
        drop(dropped);
    }
}

/// This thread's spare `start_response` and its bound `write`, reused from one request to the
/// next: making both is two Python objects and an attribute lookup per request. `in_use` while a
/// request has it.
struct Spare {
    sr: Py<StartResponse>,
    write: Py<PyAny>,
    in_use: bool,
}

thread_local! {
    static SPARE: RefCell<Option<Spare>> = const { RefCell::new(None) };
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let me = slf.borrow();
            match exc_info {
                // Data given to write() counts as sent: PEP 3333's write() returns once its data
                // is sent or buffered for sending under the head given so far.
                Some(info) if me.head_sent || !me.written.is_empty() => {
                    // Too late to change the head: re-raise into the app (PEP 3333).
                    let value = info.cast::<PyTuple>()?.get_item(1)?;
                    return Err(PyErr::from_value(value));
                }
                None if me.head.is_some() => {
                    return Err(PyAssertionError::new_err(
                        "start_response() called a second time without exc_info",
                    ));
                }
                _ => {}
            }
        }
        let head = parse_head(status, headers)?;
        slf.borrow_mut().head = Some(head);
        let spare_write = SPARE.with(|cell| {
            cell.borrow()
                .as_ref()
                .filter(|s| s.sr.as_ptr() == slf.as_ptr())
                .map(|s| s.write.clone_ref(py))
        });
        match spare_write {
            Some(write) => Ok(write.into_bound(py)),
            None => slf.getattr(pyo3::intern!(py, "write")),
        }
    }

    /// The legacy `write(data)` callable. Its first non-empty data sends the head, and it and
    /// the rest go to the client as they are written (write.rs); until then, or when the answer
    /// cannot leave early, the data is held for the answer, before the iterable's chunks.
    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let mut me = slf.borrow_mut();
        if me.ended {
            return Err(crate::write::ended_error().into());
        }
        // Once the head has gone out (`head` taken), the body's iterator may still write.
        if me.head.is_none() && !me.head_sent {
            return Err(PyAssertionError::new_err(
                "write() called before start_response()",
            ));
        }
        let data = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() takes bytes"))?;
        let b = data.as_bytes();
        if b.is_empty() {
            return Ok(());
        }
        if let Some(w) = &me.writer {
            // Not borrowed while it waits for the client.
            let w = w.clone();
            drop(me);
            return w.write(py, b);
        }
        let early = me
            .reply
            .get_mut()
            .as_ref()
            .is_some_and(Reply::can_answer_early);
        let reply = if early {
            me.reply.get_mut().take()
        } else {
            None
        };
        let Some(reply) = reply else {
            me.written.push(Bytes::copy_from_slice(b));
            return Ok(());
        };
        // The first data: the head goes out now, under what start_response was given so far.
        me.head_sent = true;
        let head = me.head.take().unwrap_or_default();
        let remaining = head.content_length;
        let held = me.take_written();
        let resp = head_response(head);
        let (resp, writer) = crate::write::open(resp, me.head_only, remaining, &reply);
        me.writer = Some(writer.clone());
        drop(me);
        reply.send(py, resp).map_err(PyErr::from)?;
        for h in held {
            writer.write(py, &h)?;
        }
        writer.write(py, b)
    }
}

fn parse_head(status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<Head> {
    let status = status
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("status must be a str, e.g. '200 OK'"))?;
    let (code, reason) = parse_status(status)?;
    let mut head = Head {
        status: code,
        reason,
        headers: Vec::new(),
        content_length: None,
    };
    // The usual list is walked directly, not through the generic iterator protocol.
    if let Ok(list) = headers.cast_exact::<PyList>() {
        head.headers.reserve_exact(list.len());
        for item in list.iter() {
            add_header(&mut head, &item)?;
        }
    } else {
        head.headers.reserve_exact(headers.len().unwrap_or(0));
        for item in headers.try_iter()? {
            add_header(&mut head, &item?)?;
        }
    }
    Ok(head)
}

/// Checks one `(name, value)` item of the app's header list and adds it to `head`.
fn add_header(head: &mut Head, item: &Bound<'_, PyAny>) -> PyResult<()> {
    let (name, value) = pair(item)?;
    let name = name
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("header names must be str"))?;
    let name = SEEN_NAMES.with(|seen| seen.borrow_mut().get_or_check(name, check_name))?;
    let value = value
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("header {} must have a str value", name.name)))?;
    let value = SEEN_VALUES.with(|seen| {
        seen.borrow_mut()
            .get_or_check(value, |v| check_value(&name.name, v))
    })?;
    match name.kind {
        NameKind::HopByHop => {
            // The server frames the message itself; an app's framing header would corrupt it.
            tracing::debug!(
                "dropping hop-by-hop response header {} from the app",
                name.name
            );
            return Ok(());
        }
        NameKind::ContentLength => {
            let n = parse_length(&value).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "header {} must be a length in bytes (digits only), not {:?}",
                    name.name,
                    shown(&value)
                ))
            })?;
            match head.content_length {
                // Which one would the client believe? It must refuse the response (RFC 9112
                // §6.3), so it is the app's error, as an invalid value is.
                Some(m) if m != n => {
                    return Err(PyValueError::new_err(format!(
                        "header {} is given twice with different values ({m} and {n})",
                        name.name
                    )));
                }
                // The same length again says nothing new: sent once.
                Some(_) => return Ok(()),
                None => head.content_length = Some(n),
            }
        }
        NameKind::Other => {}
    }
    head.headers.push((name.name, value));
    Ok(())
}

/// The name and value of one header item: a 2-tuple, as PEP 3333 asks, or a 2-item list, which
/// gunicorn takes too (it unpacks any pair): an app that builds its headers as lists works under
/// gunicorn, and refusing it here would only break it.
fn pair<'py>(item: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    if let Ok(t) = item.cast::<PyTuple>() {
        if t.len() == 2 {
            return Ok((t.get_item(0)?, t.get_item(1)?));
        }
    } else if let Ok(l) = item.cast::<PyList>() {
        if l.len() == 2 {
            return Ok((l.get_item(0)?, l.get_item(1)?));
        }
    }
    Err(PyTypeError::new_err(
        "each header must be a (name, value) tuple",
    ))
}

/// A `Content-Length` value: 1*DIGIT (RFC 9110 §8.6), as the request parser accepts it. A sign,
/// a `_` or a list (which Python's `int()` would take, and gunicorn then sends as given) or a
/// number past `u64` is not a length: the server would have to guess the framing.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The start of a (latin-1) header value, for an error message.
fn shown(value: &[u8]) -> String {
    const MAX: usize = 40;
    let mut s: String = value.iter().take(MAX).map(|&b| char::from(b)).collect();
    if value.len() > MAX {
        s.push_str("...");
    }
    s
}

/// A checked response header name.
#[derive(Clone)]
struct Name {
    name: Cow<'static, str>,
    kind: NameKind,
}

#[derive(Clone, Copy)]
enum NameKind {
    HopByHop,
    ContentLength,
    Other,
}

fn check_name(name: &Bound<'_, PyString>) -> PyResult<Name> {
    let name = name.to_str()?;
    if name.is_empty() || !name.bytes().all(c10k_http::is_tchar) {
        return Err(PyValueError::new_err(format!(
            "invalid header name {name:?}"
        )));
    }
    let kind = if is_hop_by_hop(name) {
        NameKind::HopByHop
    } else if name.eq_ignore_ascii_case("content-length") {
        NameKind::ContentLength
    } else {
        NameKind::Other
    };
    Ok(Name {
        name: header_name(name),
        kind,
    })
}

/// A field value is visible characters, latin-1 letters, spaces and tabs (RFC 9110 §5.5, and
/// gunicorn's `HEADER_VALUE_RE`): a line break would inject a header, and any other control
/// character (`\x01`, `\x0b`, DEL) makes strict clients and proxies refuse the whole response
/// (nginx answers 502), so either is the app's `ValueError`, a 500 as in gunicorn. Spaces and
/// tabs around the value are not part of it (§5.5) and are dropped, as gunicorn does.
fn check_value(name: &str, value: &Bound<'_, PyString>) -> PyResult<Bytes> {
    let mut value = latin1_bytes(value)?;
    if let Some(&bad) = value
        .iter()
        .find(|&&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        let what = if matches!(bad, b'\r' | b'\n') {
            "a line break".to_owned()
        } else {
            format!("the control character {bad:#04x}")
        };
        return Err(PyValueError::new_err(format!(
            "header {name} has {what} in its value"
        )));
    }
    let is_blank = |b: &u8| matches!(b, b' ' | b'\t');
    let start = value
        .iter()
        .position(|b| !is_blank(b))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_blank(b))
        .map_or(start, |i| i + 1);
    if start > 0 || end < value.len() {
        value = value.slice(start..end);
    }
    Ok(value)
}

/// How many strings each [`Seen`] remembers.
const SEEN: usize = 32;

thread_local! {
    static SEEN_NAMES: RefCell<Seen<Name>> = RefCell::new(Seen::default());
    static SEEN_VALUES: RefCell<Seen<Bytes>> = RefCell::new(Seen::default());
}

/// Header strings an app passes again and again — the constants in its code, such as
/// `"Content-Type"` and `"text/plain"` — and what checking them gave, found by identity: a hit
/// costs a pointer comparison instead of a check, a copy and an allocation (and the response
/// value is a shared [`Bytes`], whose release on the event loop frees nothing). A `str` is
/// immutable and an entry holds a reference to its string, so a cached address always means the
/// same text. A string is cached the second time it is seen, so values made afresh for every
/// response (`str(len(body))`) do not churn the cache.
struct Seen<T> {
    cached: Vec<(Py<PyString>, T)>,
    next_cached: usize,
    /// Addresses seen once. No reference is held: a reused address only makes a new string
    /// cached at its first sighting, with what checking it gives.
    once: [usize; SEEN],
    next_once: usize,
}

impl<T> Default for Seen<T> {
    fn default() -> Self {
        Seen {
            cached: Vec::new(),
            next_cached: 0,
            once: [0; SEEN],
            next_once: 0,
        }
    }
}

impl<T: Clone> Seen<T> {
    fn get_or_check(
        &mut self,
        s: &Bound<'_, PyString>,
        check: impl FnOnce(&Bound<'_, PyString>) -> PyResult<T>,
    ) -> PyResult<T> {
        let ptr = s.as_ptr();
        if let Some((_, t)) = self.cached.iter().find(|(p, _)| p.as_ptr() == ptr) {
            return Ok(t.clone());
        }
        let t = check(s)?;
        let addr = ptr as usize;
        if self.once.contains(&addr) {
            let entry = (s.clone().unbind(), t.clone());
            if self.cached.len() < SEEN {
                self.cached.push(entry);
            } else {
                self.cached[self.next_cached] = entry;
                self.next_cached = (self.next_cached + 1) % SEEN;
            }
        } else {
            self.once[self.next_once] = addr;
            self.next_once = (self.next_once + 1) % SEEN;
        }
        Ok(t)
    }
}

/// Checks the app's status string: a code of three digits, then nothing or a space and a reason
/// phrase of tabs, spaces, visible ASCII and latin-1 letters (gunicorn's `STATUS_RE`). A line
/// break or other control character in the phrase would end the status line early — a header
/// injected from wherever the app got its phrase — so it is a `ValueError` in the app, which
/// becomes a 500 with the traceback in the log (as in gunicorn). The phrase is sent as given
/// (`404 NOT FOUND`, `200 Fine`); returned only when it differs from the code's standard one,
/// which the server sends anyway.
fn parse_status(status: &Bound<'_, PyString>) -> PyResult<(u16, Option<Bytes>)> {
    let text = status.to_str()?;
    let Some(code) = status_code(text) else {
        return Err(PyValueError::new_err(format!(
            "status {text:?} is not a three-digit code and a reason, e.g. '200 OK'"
        )));
    };
    if code < 200 {
        // An interim status as the answer: the client would take it for one and then read the
        // next response as this request's (101 would even switch protocols).
        return Err(PyValueError::new_err(format!(
            "status {text:?} is informational (1xx), not a final response"
        )));
    }
    let phrase = text.get(4..).unwrap_or("");
    if phrase.is_empty() || phrase == c10k_http::reason_phrase(code) {
        return Ok((code, None));
    }
    let bad = || {
        PyValueError::new_err(format!(
            "status {text:?}: the reason phrase may hold only tabs, spaces, visible ASCII and \
             latin-1 characters (no line breaks or control characters)"
        ))
    };
    let bytes = if phrase.is_ascii() {
        Bytes::copy_from_slice(phrase.as_bytes())
    } else {
        let latin1: Option<Vec<u8>> = phrase.chars().map(|c| u8::try_from(c).ok()).collect();
        Bytes::from(latin1.ok_or_else(bad)?)
    };
    if !c10k_http::is_reason_phrase(&bytes) {
        return Err(bad());
    }
    Ok((code, Some(bytes)))
}

/// `"200 OK"` → 200 (a code of three digits, then a space or the end).
fn status_code(s: &str) -> Option<u16> {
    let b = s.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) || b.get(3).is_some_and(|&c| c != b' ')
    {
        return None;
    }
    let code = s[..3].parse().ok()?;
    (100..=999).contains(&code).then_some(code)
}

fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Common names without an allocation.
fn header_name(name: &str) -> Cow<'static, str> {
    const COMMON: [&str; 8] = [
        "Content-Type",
        "Content-Length",
        "Set-Cookie",
        "Location",
        "Cache-Control",
        "Vary",
        "Content-Disposition",
        "Last-Modified",
    ];
    match COMMON.iter().find(|c| **c == name) {
        Some(c) => Cow::Borrowed(c),
        None => Cow::Owned(name.to_owned()),
    }
}

/// A header value must be latin-1 (PEP 3333 "native strings").
fn latin1_bytes(s: &Bound<'_, PyString>) -> PyResult<Bytes> {
    let text = s.to_str()?;
    if text.is_ascii() {
        return Ok(Bytes::copy_from_slice(text.as_bytes()));
    }
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        let c = c as u32;
        if c > 0xff {
            return Err(PyValueError::new_err(
                "header values must be latin-1 (encode other text, e.g. RFC 8187)",
            ));
        }
        out.push(c as u8);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apps_content_length_is_kept_but_on_a_204() {
        let head = |status| Head {
            status,
            headers: vec![
                ("Content-Length".into(), Bytes::from_static(b"0")),
                ("X-A".into(), Bytes::from_static(b"1")),
            ],
            content_length: Some(0),
            ..Head::default()
        };
        for (status, kept) in [(200, true), (304, true), (404, true), (204, false)] {
            let resp = head_response(head(status));
            assert_eq!(resp.header("content-length").is_some(), kept, "{status}");
            assert!(resp.header("x-a").is_some(), "{status}");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code("200 OK"), Some(200));
        assert_eq!(status_code("404"), Some(404));
        assert_eq!(status_code("599 Whatever you like"), Some(599));
        assert_eq!(status_code("20 OK"), None);
        assert_eq!(status_code("2000 OK"), None);
        assert_eq!(status_code("OK 200"), None);
        assert_eq!(status_code("099 x"), None);
    }

    #[test]
    fn content_length_values() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"0012"), Some(12));
        assert_eq!(parse_length(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"abc",
            b"-5",
            b"+5",
            b"5_0",
            b"5, 5",
            b"5 5",
            b"0x10",
            b"18446744073709551616",
        ] {
            assert_eq!(parse_length(bad), None, "{:?}", shown(bad));
        }
    }
}
