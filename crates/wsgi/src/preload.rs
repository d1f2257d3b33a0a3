//! `--preload`: the application imported once, in the process the workers are forked from (the
//! zygote), as gunicorn's `--preload` imports it in its master and uWSGI does by default. A
//! worker forked from that process takes the imported app from [`take`] instead of importing it:
//! it starts serving sooner, and the modules' pages are shared by every worker until one writes
//! to them.
//!
//! `gc.freeze()` follows the import, as CPython's documentation advises a process that forks
//! without exec: objects in the permanent generation are never visited by a collection, so a
//! worker's garbage collector does not write to the pages they share (about 0.5 MiB of PSS per
//! worker of the Flask test app after a few thousand requests). They are never collected either,
//! and `gc.get_objects()` and `gc.get_referrers()` do not see them: that is why only `--preload`,
//! which the user asks for, freezes. (gevent's monkey-patching finds early imports of `ssl` with
//! `gc.get_referrers`, and frozen objects hid them from it.)
//!
//! What the app starts at import is in the zygote, not in the workers: a thread makes the zygote
//! refuse to fork (the workers are then started by exec and import the app themselves), and a
//! socket (a database connection) would be shared by every worker, so it must be opened later,
//! as under gunicorn's `--preload`.
//!
//! Under `-k gevent` the zygote patches the standard library before the import, as each gevent
//! worker does without `--preload`, so the app is imported patched and the workers inherit the
//! patched modules. (gunicorn's master imports a preloaded app unpatched, and its gevent workers
//! patch only after the fork: locks and sockets made at import are then the blocking kind.) The
//! zygote then destroys the gevent hub the import may have made, so that a worker inherits none
//! and makes its own on the thread that serves. A greenlet (a patched thread) the app started at
//! import would not run in a forked worker: then, as with a real thread, the log says so and
//! the workers are started by exec and import the app themselves.

use std::path::PathBuf;
use std::sync::OnceLock;

use pyo3::prelude::*;

use crate::boot_error::BootError;
use crate::config::WsgiConfig;
use crate::traceback::format_exception;
use crate::{interp, loader};

/// The preloaded app, and the spec it was loaded from.
struct Preloaded {
    spec: String,
    app: Py<PyAny>,
}

static PRELOADED: OnceLock<Preloaded> = OnceLock::new();

/// Starts the interpreter, applies `--chdir`, `--pythonpath` and `--env`, and imports the app,
/// as a worker's boot does (for `gevent` workers, after patching the standard library), then
/// freezes the garbage collector's objects. Call it once, in a process with no other thread
/// that is going to fork the workers.
pub(crate) fn run(
    config: &WsgiConfig,
    venv: Option<PathBuf>,
    gevent: bool,
) -> Result<(), BootError> {
    let cwd = loader::enter_dir(config.chdir.as_deref())?;
    let started = interp::start(venv.as_deref())?;
    tracing::info!(
        "Python {} (sys.prefix {}) preloading {}",
        started.version,
        started.prefix,
        config.app
    );
    interp::attach(|py| -> Result<(), BootError> {
        let exception = |e: PyErr| BootError::Exception {
            spec: config.app.clone(),
            traceback: format_exception(py, &e),
        };
        if gevent {
            crate::gevent::prepare(py, !config.no_monkey_patch)?;
            crate::gevent::note_main_hub(py)?;
        }
        loader::setup(py, config, &cwd).map_err(exception)?;
        let app = loader::load(py, &config.app).map_err(|f| f.error)?;
        if gevent {
            let started = crate::gevent::started_at_import(py)?;
            if started > 0 {
                // As with a real thread at import (zygote.rs): the workers are started by exec
                // and import the app themselves, so that what it starts runs in each.
                let why = format!(
                    "--preload: importing {} started {started} greenlet(s) (a thread, under \
                     gevent's patching), which would not run in workers forked from the \
                     zygote: they are started by exec and import the application themselves \
                     (start it at the first request to keep --preload)",
                    config.app
                );
                tracing::warn!("{why}");
                return Err(BootError::Environment(why));
            }
            crate::gevent::note_main_hub(py)?;
        }
        freeze_objects(py).map_err(exception)?;
        let preloaded = Preloaded {
            spec: config.app.clone(),
            app,
        };
        if PRELOADED.set(preloaded).is_err() {
            return Err(BootError::Environment(
                "the application was preloaded twice in one process".to_owned(),
            ));
        }
        Ok(())
    })
}

/// Whether `spec` was preloaded in this process (before the fork that made it a worker).
pub(crate) fn is_preloaded(spec: &str) -> bool {
    PRELOADED.get().is_some_and(|p| p.spec == spec)
}

/// The app preloaded from `spec`, if it was.
pub(crate) fn take(py: Python<'_>, spec: &str) -> Option<Py<PyAny>> {
    PRELOADED
        .get()
        .filter(|p| p.spec == spec)
        .map(|p| p.app.clone_ref(py))
}

fn freeze_objects(py: Python<'_>) -> PyResult<()> {
    py.import("gc")?.call_method0("freeze").map(drop)
}
