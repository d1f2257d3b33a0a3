//! The `thread` worker class: a new OS thread for every connection (Flask's `threaded=True`),
//! at most `--worker-connections` at once; beyond that, connections wait in the listen queue.
//! A worker runs as many requests at once as it has connections, at the price of a thread
//! (stack, scheduler entry) per connection — the C10K problem in its original form.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use c10k_http::Handler;

use super::blocking::{accept_error, Acceptor};
use super::life::{Gauge, Life};
use crate::config::ServeConfig;
use crate::conn::ConnSettings;
use crate::conn_blocking::Mode;
use crate::listener::Listener;
use crate::shutdown::Phase;

/// Small stacks: the handler's frames are shallow, and thousands of threads must fit.
const STACK: usize = 256 * 1024;

pub(super) fn run<H: Handler>(
    listeners: Vec<Listener>,
    config: &ServeConfig,
    handler: Arc<H>,
    life: Arc<Life>,
) -> anyhow::Result<()> {
    let settings = Arc::new(ConnSettings::from_config(config));
    let mut acceptor = Acceptor::new(listeners, config)?;
    let open = Arc::new(Gauge::default());
    life.ready();
    while life.phase() == Phase::Running {
        life.beat();
        if !open.wait_below(config.worker_connections, super::POLL) {
            continue;
        }
        let accepted = match acceptor.accept(super::POLL) {
            Ok(Some(accepted)) => accepted,
            Ok(None) => continue,
            Err(e) => {
                accept_error(&e);
                continue;
            }
        };
        open.inc();
        life.slot().connections.fetch_add(1, Relaxed);
        let mut track = life.open(accepted.peer);
        let (handler, settings, life2, open2) = (
            handler.clone(),
            settings.clone(),
            life.clone(),
            open.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("c10k-conn".into())
            .stack_size(STACK)
            .spawn(move || {
                let mut on_request = || life2.on_request();
                let result = super::blocking::serve_accepted(
                    accepted,
                    &mut track,
                    &*handler,
                    &settings,
                    &life2.shutdown,
                    Mode::UntilClosed,
                    &mut on_request,
                );
                if let Err(e) = result {
                    super::async_::log_io_error(&e);
                }
                drop(track);
                life2.slot().connections.fetch_sub(1, Relaxed);
                open2.dec();
            });
        if let Err(e) = spawned {
            // The connection was moved into the closure and dropped with it: closed.
            tracing::error!("cannot start a connection thread: {e}; connection closed");
            life.slot().connections.fetch_sub(1, Relaxed);
            open.dec();
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let deadline = Instant::now() + Duration::from_secs_f64(config.graceful_timeout);
    if !open.wait_zero(deadline, || life.phase() == Phase::Immediate) {
        tracing::warn!(open = open.get(), "connections still open at exit");
    }
    Ok(())
}
