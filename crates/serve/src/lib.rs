//! The c10k application server.
//!
//! Layers, from the wire up (hyper's split: the protocol layer serves one connection and knows
//! nothing about accepting):
//!
//! - [`proto`]: a sans-I/O HTTP/1.1 codec on `httparse`. It turns bytes into complete requests and
//!   responses into bytes, enforces every request limit, and is shared by all worker classes, so a
//!   malformed request gets the same answer whichever class serves it.
//! - [`listener`]: sockets bound with `socket2` (backlog, `SO_REUSEADDR`, unix sockets).
//! - `conn`: one connection's protocol state as a sans-I/O state machine (keep-alive, pipelining,
//!   100-continue, every deadline, streamed answers), returning actions; `conn_blocking` and
//!   `conn_async` are the thin I/O shells that execute them (`conn_uwsgi` drives the uwsgi codec).
//! - `workers`: the worker classes; [`Server::serve`] runs the configured one in this process.
//! - [`scoreboard`] and `track`: what every worker is doing, in shared memory; [`status`]: the
//!   typed report the master gathers from it and serves on its admin listener (`/status`,
//!   `/processlist`, `/metrics`), which `c10k status` reads back.
//! - `master`: the supervising process `c10k serve` runs ([`run`]): the arbiter only; [`reload`]:
//!   what its `SIGHUP` does to the configuration ([`run_reloading`]); `zygote`: the process that
//!   forks workers sharing an application's runtime ([`run_forking`]).
//!
//! Serving your own handler in-process:
//!
//! ```no_run
//! use std::sync::Arc;
//! use c10k_http::{Ctx, Handler, Request, Response};
//!
//! struct Hi;
//! impl Handler for Hi {
//!     fn call(&self, _req: Request, ctx: Ctx) -> impl std::future::Future<Output = Response> + Send {
//!         async move {
//!             // Blocks the thread or yields to the event loop, per worker class.
//!             let _ = ctx.sleep(std::time::Duration::from_millis(10)).await;
//!             Response::text(200, "hi\n")
//!         }
//!     }
//! }
//!
//! # fn main() -> anyhow::Result<()> {
//! let mut config = c10k_serve::ServeConfig::default();
//! config.bind = vec!["127.0.0.1:0".parse().map_err(anyhow::Error::msg)?];
//! let server = c10k_serve::Server::bind(config)?;
//! println!("listening on {:?}", server.local_addrs());
//! server.serve(Arc::new(Hi))?;
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod listener;
pub mod proto;
pub mod scoreboard;
pub mod shutdown;
pub mod status;
pub mod sys;
pub mod uwsgi;

mod access_format;
mod activation;
mod allow;
mod conn;
mod conn_async;
mod conn_blocking;
mod lazy_io;
mod log_text;
mod master;
pub mod owner;
mod page_cache;
mod pidfile;
mod proc_name;
mod rebind;
pub mod reload;
pub mod reopen;
mod sendfile;
mod stream;
mod track;
mod upgrade;
mod workers;
mod zygote;

pub use c10k_http::WorkerInfo;
pub use config::{
    AdminAddr, AllowFrom, Bind, BindAddr, Protocol, Scheduling, ServeConfig, Umask, WorkerClass,
};
pub use master::BootFailed;
pub use reload::{Reload, Reloaded};
pub use scoreboard::WritePathFigures;
pub use shutdown::{Phase, Shutdown};
pub use workers::{
    is_worker_process, retire_for_reload, run, run_forking, run_hosted, run_reloading,
    started_by_upgrade, worker_info, Hosted, Server,
};
pub use zygote::Forking;
