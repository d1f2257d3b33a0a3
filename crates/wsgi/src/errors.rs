//! `wsgi.errors`: what the app writes there goes to the server's log, a line per log event.
//!
//! One object serves every request of the worker (PEP 3333 allows it). Partial lines are kept until
//! their newline arrives or the app calls `flush()`, so `print(..., file=environ['wsgi.errors'])`
//! and tracebacks written piecewise become whole log lines.
//!
//! It also answers what code asks of a text stream before it writes to one (a logging handler, a
//! library checking for a terminal before colouring its output): not a terminal, writable only,
//! no file descriptor (`io.UnsupportedOperation`, as `io.StringIO`), UTF-8. `close()` flushes and
//! leaves it open: the object is the worker's, and one request closing it must not silence the
//! next ones (gunicorn gives each request its own wrapper, which a `close()` closes for that
//! request only).

use std::sync::Mutex;

use pyo3::prelude::*;

#[pyclass(module = "c10k", name = "Errors", frozen)]
#[derive(Default)]
pub(crate) struct Errors {
    partial: Mutex<String>,
}

fn emit(line: &str) {
    let line = line.trim_end_matches(['\r', '\n']);
    if !line.is_empty() {
        tracing::warn!(target: "wsgi.errors", "{line}");
    }
}

#[pymethods]
impl Errors {
    fn write(&self, s: &str) -> usize {
        let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
        partial.push_str(s);
        if let Some(end) = partial.rfind('\n') {
            let rest = partial.split_off(end + 1);
            for line in partial.lines() {
                emit(line);
            }
            *partial = rest;
        }
        s.chars().count()
    }

    fn writelines(&self, lines: Vec<String>) {
        for l in lines {
            self.write(&l);
        }
    }

    fn flush(&self) {
        let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
        emit(&partial);
        partial.clear();
    }

    /// Flushes; the stream stays open (see the module's doc).
    fn close(&self) {
        self.flush();
    }

    #[getter]
    fn closed(&self) -> bool {
        false
    }

    #[getter]
    fn encoding(&self) -> &'static str {
        "utf-8"
    }

    fn isatty(&self) -> bool {
        false
    }

    fn writable(&self) -> bool {
        true
    }

    fn readable(&self) -> bool {
        false
    }

    fn seekable(&self) -> bool {
        false
    }

    fn fileno(&self, py: Python<'_>) -> PyResult<i32> {
        let unsupported = py.import("io")?.getattr("UnsupportedOperation")?;
        Err(PyErr::from_value(
            unsupported.call1(("wsgi.errors has no file descriptor",))?,
        ))
    }
}
