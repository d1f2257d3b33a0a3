//! Hosting a Python WSGI application (Flask, Django, any PEP 3333 callable) in a c10k worker
//! process, through PyO3.
//!
//! [`WsgiApp::boot`] starts the embedded interpreter once per worker process (with the venv's
//! `site-packages`, whatever `PATH` holds), imports the application, and returns a
//! [`c10k_http::Handler`]. The key design decision is **where Python runs**:
//!
//! - Under [`Wait::Block`](c10k_http::Wait) (the `sync`, `thread` and `gthread` classes) the app is
//!   called on the worker thread that serves the connection. Each such OS thread attaches to the
//!   interpreter once for its whole life ([`interp::attach`]), so `threading.local` state — Django's
//!   and SQLAlchemy's per-thread database connections — survives from one request to the next, and
//!   the GIL is held only while Python runs (never across socket I/O).
//! - Under [`Wait::Yield`](c10k_http::Wait) (`async`) connections stay on the event loop and each
//!   request is handed to a bounded pool of `--threads` Python threads ([`pool`]); a tokio thread
//!   never touches Python. The same pool runs requests of the blocking classes when
//!   `--request-timeout` is set, so that a stuck app can be answered 504 on time (see [`pool`] for
//!   what happens to the stuck Python thread). A streamed body's steps run on the pool thread that
//!   ran its view, which serves nothing else until the body is done (see [`stream`]: the body
//!   still uses that thread's `threading.local` state, Django's database connection).
//!
//! What runs under the GIL is the same code whoever drives it: [`environ`] builds the environ,
//! [`call`] calls the app and turns its answer into a [`c10k_http::Response`] (a list is joined, a
//! `wsgi.file_wrapper` over a real file is read by Rust without the GIL, any other iterable is
//! streamed chunk by chunk and `close()`d when the server drops the stream). Under `gevent`
//! (`Wait::Yield` with a hub) the same two pieces, [`call::run_request`] and [`body::PyBody`], run
//! in greenlets on the worker's gevent hub instead of the pool (see [`gevent`]). Data given to the
//! legacy `write()` callable goes to the client as the app writes it, under every class (see
//! [`write`]).

use std::path::PathBuf;
use std::sync::Arc;

mod answers;
mod body;
mod call;
mod environ;
mod errors;
mod file_wrapper;
mod gevent;
mod handler;
mod hub_handle;
mod input;
pub mod interp;
mod loader;
mod pool;
pub mod reload;
mod start_response;
mod stream;
mod traceback;
mod write;

pub use handler::WsgiApp;
pub use reload::{Engine as ReloadEngine, Reload};

/// How to find and host the application; the command line's `APP_MODULE`, `--chdir`,
/// `--pythonpath`, `--venv`, `--env` and `--root-path`.
#[derive(Clone, Default)]
pub struct WsgiConfig {
    /// `module:callable`, `module` (callable `application`), or `module:factory(args)`.
    pub app: String,
    /// Change to this directory before importing (it also goes on `sys.path`, first after the
    /// `pythonpath` directories).
    pub chdir: Option<PathBuf>,
    /// Directories put in front of `sys.path`.
    pub pythonpath: Vec<PathBuf>,
    /// The virtual environment whose `site-packages` the app uses; `None`: `$VIRTUAL_ENV`, else the
    /// `python3` on `PATH`. A relative path is taken from the directory the worker started in,
    /// not from `chdir`.
    pub venv: Option<PathBuf>,
    /// Environment variables set in the app's `os.environ` before it is imported.
    pub env: Vec<(String, String)>,
    /// The mount point (`SCRIPT_NAME`), e.g. `/api`; empty for the root.
    pub root_path: String,
    /// Python threads that may be stuck past `--request-timeout` before the worker asks to be
    /// recycled; `None`: as many as the worker has threads.
    pub max_stuck_threads: Option<usize>,
    /// How long a Python thread that runs the blocking classes' requests with a
    /// `--request-timeout` may wait for one before it exits (`None`: 30 s, the `thread` class's
    /// connection threads' time). Settable for tests.
    pub pool_thread_idle: Option<std::time::Duration>,
    /// `--no-monkey-patch`: under `--worker-class gevent`, do not call `gevent.monkey.patch_all()`
    /// before importing the app (it patches itself).
    pub no_monkey_patch: bool,
    /// Called once when more Python threads are stuck than tolerated: the worker should finish
    /// what it is doing and exit, so the master replaces it with a fresh process.
    pub recycle: Option<Arc<dyn Fn() + Send + Sync>>,
    /// `--reload`: watch the application's files and call its `on_change` when one changes;
    /// a `SyntaxError` at import is then served as a 500 instead of failing the boot (see
    /// [`reload`]).
    pub reload: Option<Reload>,
}

impl std::fmt::Debug for WsgiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsgiConfig")
            .field("app", &self.app)
            .field("chdir", &self.chdir)
            .field("pythonpath", &self.pythonpath)
            .field("venv", &self.venv)
            .field("env", &self.env)
            .field("root_path", &self.root_path)
            .field("max_stuck_threads", &self.max_stuck_threads)
            .field("pool_thread_idle", &self.pool_thread_idle)
            .field("no_monkey_patch", &self.no_monkey_patch)
            .field("reload", &self.reload)
            .finish_non_exhaustive()
    }
}

/// Why the application could not be started. Each is a "worker failed to boot": the server stops
/// with exit status 3 instead of starting the worker again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    #[error("{0}")]
    Environment(String),
    #[error("cannot start the Python interpreter: {0}")]
    Interpreter(String),
    #[error("bad application spec {spec:?}: {reason} (expected MODULE:CALLABLE, e.g. myapp:app or myapp:create_app())")]
    Spec { spec: String, reason: String },
    #[error("no module named {module:?} (from {spec:?}; sys.path is {sys_path})\n{traceback}")]
    ModuleNotFound {
        spec: String,
        module: String,
        sys_path: String,
        traceback: String,
    },
    #[error("failed to find attribute {attr:?} in module {module:?}")]
    NoAttribute { module: String, attr: String },
    #[error("the application object {spec:?} is not callable (it is a {type_name})")]
    NotCallable { spec: String, type_name: String },
    #[error("exception while loading the application {spec:?}:\n{traceback}")]
    Exception { spec: String, traceback: String },
}
