//! The `sync` worker class: the worker's one thread accepts a connection, answers one request
//! and closes it (gunicorn's `sync`: no keep-alive, so a client cannot hold the worker between
//! requests). One request at a time per worker; a wait inside the request blocks the worker.
//! So connections wait in the listen queue while the worker is busy, and a graceful stop serves
//! those already there before the worker exits (gunicorn's `sync` leaves them to be reset).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use c10k_http::Handler;

use super::blocking::{accept_error, Accepted, Acceptor};
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
    let serve = |accepted: Accepted| {
        let slot = life.slot();
        slot.connections.fetch_add(1, Relaxed);
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
        slot.connections.fetch_sub(1, Relaxed);
        if let Err(e) = result {
            super::async_::log_io_error(&e);
        }
    };
    life.ready();
    while life.phase() == Phase::Running {
        life.beat();
        match acceptor.accept(super::POLL) {
            Ok(Some(accepted)) => serve(accepted),
            Ok(None) => {}
            Err(e) => accept_error(&e),
        }
    }
    // A graceful stop: the connections already queued are served, one after another, until the
    // queue is empty or the deadline passes (see `Shutdown::queue_drain_until`).
    let graceful = Duration::from_secs_f64(config.graceful_timeout);
    while let Some(until) = life.shutdown.queue_drain_until(graceful) {
        if Instant::now() >= until {
            break;
        }
        life.beat();
        match acceptor.take_queued() {
            Ok(Some(accepted)) => serve(accepted),
            Ok(None) => break,
            Err(e) => accept_error(&e),
        }
    }
    Ok(())
}
