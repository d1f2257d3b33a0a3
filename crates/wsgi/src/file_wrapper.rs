//! `wsgi.file_wrapper(filelike, blksize=8192)`.
//!
//! When the app returns one of these around a real file (it has a working `fileno()` on a regular
//! file), [`crate::call`] does not iterate it in Python: it answers a
//! [`c10k_http::Body::File`] over a duplicate of the descriptor, from the file's current offset to
//! its end (never past the app's `Content-Length`), which the server sends with `sendfile(2)`
//! under every worker class, and closes the wrapper at once. Anything else is iterated as PEP 3333
//! describes: `read(blksize)` until it returns `b''`; `close()` closes the file-like object.

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

#[pyclass(module = "c10k", name = "FileWrapper")]
pub(crate) struct FileWrapper {
    pub filelike: Py<PyAny>,
    pub blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> FileWrapper {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1(pyo3::intern!(py, "read"), (self.blksize,))?;
        if !data.is_truthy()? {
            return Err(PyStopIteration::new_err(()));
        }
        Ok(data)
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if let Some(close) = f.getattr_opt(pyo3::intern!(py, "close"))? {
            close.call0()?;
        }
        Ok(())
    }
}
