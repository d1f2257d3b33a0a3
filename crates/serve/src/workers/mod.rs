//! Worker classes, one module each, behind one entry point ([`Server::serve`]), as gunicorn's
//! `workers/{sync,gthread,...}.py` behind `SUPPORTED_WORKERS`.
//!
//! A worker owns its listeners (inherited from the master, or bound here when running alone) and
//! serves until the shared [`Shutdown`] moves past `Running`.

use std::sync::Arc;

use anyhow::Context;
use c10k_app::Handler;

use crate::config::{BindAddr, ServeConfig, WorkerClass};
use crate::listener::{self, Listener};
use crate::shutdown::{Phase, Shutdown};

mod async_;

/// A bound server, ready to serve a [`Handler`] in this process.
#[derive(Debug)]
pub struct Server {
    listeners: Vec<Listener>,
    config: ServeConfig,
    shutdown: Shutdown,
}

impl Server {
    /// Binds every `--bind` address of `config`.
    pub fn bind(config: ServeConfig) -> anyhow::Result<Server> {
        config.validate()?;
        let mut listeners = Vec::with_capacity(config.bind.len());
        for addr in &config.bind {
            let l = Listener::bind(addr, config.backlog, config.reuse_port)
                .with_context(|| format!("cannot listen on {addr} (--bind)"))?;
            listeners.push(l);
        }
        Ok(Server::from_listeners(listeners, config))
    }

    /// Serves on listeners made elsewhere (inherited from the master).
    pub fn from_listeners(listeners: Vec<Listener>, config: ServeConfig) -> Server {
        Server {
            listeners,
            config,
            shutdown: Shutdown::new(),
        }
    }

    /// The addresses actually bound, in `--bind` order (ports chosen for `:0` filled in).
    pub fn local_addrs(&self) -> Vec<BindAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// A handle that stops the server: `trigger(Phase::Graceful)` from any thread.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Runs the configured worker class in this process until shut down.
    pub fn serve<H: Handler>(self, handler: Arc<H>) -> anyhow::Result<()> {
        match self.config.worker_class {
            WorkerClass::Async => async_::run(self.listeners, &self.config, handler, self.shutdown),
            other => anyhow::bail!("--worker-class {other} is not available yet"),
        }
    }
}

/// `c10k serve`: raises limits, binds, logs the effective configuration, and serves the built-in
/// application until SIGTERM/SIGINT (graceful) or SIGQUIT (immediate).
pub fn run(config: ServeConfig) -> anyhow::Result<()> {
    match crate::sys::raise_nofile_limit() {
        Ok((soft, hard)) => tracing::info!(soft, hard, "open files limit (RLIMIT_NOFILE)"),
        Err(e) => tracing::warn!("cannot read or raise RLIMIT_NOFILE: {e}"),
    }
    if let Some(w) = listener::backlog_warning(config.backlog, listener::somaxconn()) {
        tracing::warn!("{w}");
    }
    let app = Arc::new(crate::app_factory::build_app(&config, 0)?);
    let server = Server::bind(config.clone())?;
    for addr in server.local_addrs() {
        let scheme = match addr {
            BindAddr::Tcp(_) => "http://",
            BindAddr::Unix(_) => "",
        };
        tracing::info!("Listening at: {scheme}{addr} ({})", std::process::id());
    }
    tracing::info!(
        worker_class = %config.worker_class,
        workers = config.workers,
        threads = config.threads,
        worker_connections = config.worker_connections,
        backlog = config.backlog,
        keepalive = config.keepalive,
        "c10k {} serving; effective config: {}",
        env!("CARGO_PKG_VERSION"),
        config.to_toml().trim_end().replace('\n', ", ")
    );
    spawn_signal_thread(server.shutdown_handle())?;
    server.serve(app)?;
    tracing::info!("stopped");
    Ok(())
}

/// Turns SIGTERM/SIGINT into a graceful stop (a second one into an immediate stop) and SIGQUIT
/// into an immediate stop. The handler only records the signal; this thread acts on it.
fn spawn_signal_thread(shutdown: Shutdown) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGQUIT])
        .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("c10k-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let next = match (sig, shutdown.phase()) {
                    (SIGQUIT, _) | (_, Phase::Graceful | Phase::Immediate) => Phase::Immediate,
                    _ => Phase::Graceful,
                };
                tracing::info!(signal = sig, "stopping: {next:?}");
                shutdown.trigger(next);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}
