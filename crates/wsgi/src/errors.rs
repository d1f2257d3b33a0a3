//! `wsgi.errors`: what the app writes there goes to the server's log, a line per log event.
//!
//! One object serves every request of the worker (PEP 3333 allows it). Partial lines are kept until
//! their newline arrives or the app calls `flush()`, so `print(..., file=environ['wsgi.errors'])`
//! and tracebacks written piecewise become whole log lines.

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
}
