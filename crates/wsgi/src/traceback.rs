//! An exception from Python as the log shows it: its traceback as Python prints it
//! ([`format_exception`]), and the log line for an app's failure that carries it
//! ([`log_exception`]). Below everything else in the crate: the loader, the call, the body's steps
//! and the gevent hub all report exceptions through it.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// The traceback of `e` as Python prints it.
pub(crate) fn format_exception(py: Python<'_>, e: &PyErr) -> String {
    static FORMAT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let text = FORMAT
        .get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            Ok(py
                .import("traceback")?
                .getattr("format_exception")?
                .unbind())
        })
        // Type, value and traceback apart: before Python 3.12 a fetched exception's traceback is
        // held beside its value, not in `value.__traceback__`, so the value alone printed only
        // its last line (no frames) under 3.11.
        .and_then(|f| {
            f.bind(py)
                .call1((e.get_type(py), e.value(py), e.traceback(py)))
        })
        .and_then(|lines| {
            let mut out = String::new();
            for l in lines.try_iter()? {
                out.push_str(&l?.extract::<String>()?);
            }
            Ok(out)
        });
    text.unwrap_or_else(|_| e.to_string())
}

/// Logs an app's failure (`during`: what was being done for the request `label`) with its
/// traceback.
pub(crate) fn log_exception(py: Python<'_>, label: &str, during: &str, e: &PyErr) {
    tracing::error!(
        request = label,
        "error in the WSGI application ({during}):\n{}",
        format_exception(py, e).trim_end()
    );
}
