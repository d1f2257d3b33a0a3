//! The `sync` worker class: the worker's one thread accepts a connection, answers one request
//! and closes it (gunicorn's `sync`: no keep-alive, so a client cannot hold the worker between
//! requests). One request at a time per worker; a wait inside the request blocks the worker.

use std::sync::Arc;

use c10k_http::Handler;

use super::blocking::{accept_error, Acceptor};
use super::life::Life;
use crate::config::ServeConfig;
use crate::conn::ConnSettings;
use crate::conn_blocking::Mode;
use crate::listener::Listener;
use crate::shutdown::Phase;

pub(super) fn run<H: Handler>(
    listeners: Vec<Listener>,
    config: &ServeConfig,
    handler: Arc<H>,
    life: Arc<Life>,
) -> anyhow::Result<()> {
    let settings = ConnSettings::from_config(config);
    let mut acceptor = Acceptor::new(listeners, config)?;
    life.ready();
    while life.phase() == Phase::Running {
        life.beat();
        match acceptor.accept(super::POLL) {
            Ok(Some(accepted)) => {
                let slot = life.slot();
                slot.connections
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut track = life.open(accepted.peer);
                let mut on_request = || life.on_request();
                let result = super::blocking::serve_accepted(
                    accepted,
                    &mut track,
                    &*handler,
                    &settings,
                    &life.shutdown,
                    Mode::OneRequest,
                    &mut on_request,
                );
                drop(track);
                slot.connections
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = result {
                    super::async_::log_io_error(&e);
                }
            }
            Ok(None) => {}
            Err(e) => accept_error(&e),
        }
    }
    Ok(())
}
