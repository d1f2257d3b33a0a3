//! The c10k application server.
//!
//! Layers, from the wire up (hyper's split: the protocol layer serves one connection and knows
//! nothing about accepting):
//!
//! - [`proto`]: a sans-I/O HTTP/1.1 codec on `httparse`. It turns bytes into complete requests and
//!   responses into bytes, enforces every request limit, and is shared by all worker classes, so a
//!   malformed request gets the same answer whichever class serves it.
//! - [`listener`]: sockets bound with `socket2` (backlog, `SO_REUSEADDR`, unix sockets).
//! - `conn_*`: drive one connection over the codec, blocking or async.
//! - `workers`: the worker classes; [`Server::serve`] runs the configured one in this process.
//! - [`scoreboard`] and `track`: what every worker is doing, in shared memory; `admin`: the
//!   master's status listener that reads it (`/status`, `/processlist`, `/metrics`).

pub mod config;
pub mod listener;
pub mod proto;
pub mod scoreboard;
pub mod shutdown;
pub mod sys;

mod admin;
mod app_factory;
mod conn;
mod conn_async;
mod conn_blocking;
mod master;
mod track;
mod workers;

pub use config::{AdminAddr, BindAddr, ServeConfig, WorkerClass};
pub use shutdown::{Phase, Shutdown};
pub use workers::{run, Server};
