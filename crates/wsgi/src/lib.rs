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

mod answers;
mod body;
mod boot_error;
mod call;
mod config;
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
mod preload;
pub mod reload;
mod start_response;
mod stream;
mod traceback;
mod write;

pub use boot_error::BootError;
pub use config::WsgiConfig;
pub use handler::WsgiApp;
pub use reload::{Engine as ReloadEngine, Reload};
