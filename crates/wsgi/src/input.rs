//! `wsgi.input`: the request body as a file-like object (`read`, `readline`, `readlines`,
//! iteration; `b''` at the end).
//!
//! The server has the whole body before the app runs (in memory, or spooled to a file when large),
//! so reads never wait for the network and `wsgi.input_terminated` is true. Body-less requests —
//! most of them — share one immutable [`EmptyInput`] instead of allocating an object each.

use std::os::unix::fs::FileExt;

use c10k_http::RequestBody;
use pyo3::exceptions::{PyOSError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Converts Python's optional size argument: `None` or negative means "all".
fn limit(size: Option<isize>) -> Option<u64> {
    size.filter(|&n| n >= 0).map(|n| n as u64)
}

/// `wsgi.input` of a request with a body.
#[pyclass(module = "c10k", name = "Input")]
pub(crate) struct Input {
    body: RequestBody,
    pos: u64,
}

impl Input {
    pub(crate) fn new(body: RequestBody) -> Input {
        Input { body, pos: 0 }
    }

    fn left(&self) -> u64 {
        self.body.len().saturating_sub(self.pos)
    }

    /// Reads `n` bytes from `pos` (n ≤ left).
    fn take<'py>(&mut self, py: Python<'py>, n: u64) -> PyResult<Bound<'py, PyBytes>> {
        let start = self.pos;
        let out = match &self.body {
            RequestBody::Memory(b) => PyBytes::new(py, &b[start as usize..(start + n) as usize]),
            RequestBody::File { file, .. } => {
                let file = file.clone();
                PyBytes::new_with(py, n as usize, |buf| {
                    file.read_exact_at(buf, start)
                        .map_err(|e| PyOSError::new_err(e.to_string()))
                })?
            }
        };
        self.pos += n;
        Ok(out)
    }

    /// Length of the next line (through `\n`), at most `max` bytes.
    fn line_len(&self, max: u64) -> PyResult<u64> {
        let max = max.min(self.left());
        match &self.body {
            RequestBody::Memory(b) => {
                let s = &b[self.pos as usize..(self.pos + max) as usize];
                Ok(memchr::memchr(b'\n', s).map_or(max, |i| i as u64 + 1))
            }
            RequestBody::File { file, .. } => {
                let mut buf = [0u8; 8192];
                let mut scanned = 0u64;
                while scanned < max {
                    let want = (max - scanned).min(buf.len() as u64) as usize;
                    let n = file
                        .read_at(&mut buf[..want], self.pos + scanned)
                        .map_err(|e| PyOSError::new_err(e.to_string()))?;
                    if n == 0 {
                        return Ok(scanned);
                    }
                    if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
                        return Ok(scanned + i as u64 + 1);
                    }
                    scanned += n as u64;
                }
                Ok(max)
            }
        }
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let n = limit(size).map_or(self.left(), |n| n.min(self.left()));
        self.take(py, n)
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let n = self.line_len(limit(size).unwrap_or(u64::MAX))?;
        self.take(py, n)
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let hint = limit(hint).filter(|&h| h > 0);
        let mut lines = Vec::new();
        let mut total = 0u64;
        while self.left() > 0 {
            let n = self.line_len(u64::MAX)?;
            total += n;
            lines.push(self.take(py, n)?);
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        if self.left() == 0 {
            return Err(PyStopIteration::new_err(()));
        }
        let n = self.line_len(u64::MAX)?;
        self.take(py, n)
    }

    fn readable(&self) -> bool {
        true
    }

    fn close(&self) {}
}

/// `wsgi.input` of a request without a body: always at its end.
#[pyclass(module = "c10k", name = "EmptyInput", frozen)]
pub(crate) struct EmptyInput;

#[pymethods]
impl EmptyInput {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> Bound<'py, PyBytes> {
        let _ = size;
        PyBytes::new(py, b"")
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> Bound<'py, PyBytes> {
        let _ = size;
        PyBytes::new(py, b"")
    }

    #[pyo3(signature = (hint=None))]
    fn readlines(&self, hint: Option<isize>) -> Vec<Py<PyAny>> {
        let _ = hint;
        Vec::new()
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self) -> PyResult<()> {
        Err(PyStopIteration::new_err(()))
    }

    fn readable(&self) -> bool {
        true
    }

    fn close(&self) {}
}
