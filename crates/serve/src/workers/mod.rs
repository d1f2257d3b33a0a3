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
use crate::master;
use crate::scoreboard::Scoreboard;
use crate::shutdown::{Phase, Shutdown};

mod async_;
mod blocking;
mod gthread;
mod life;
mod sync;
mod thread;

use life::Life;

/// How often blocking loops wake to beat their heart and look at the stop phase.
const POLL: std::time::Duration = std::time::Duration::from_millis(200);

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
        let scoreboard = Arc::new(Scoreboard::create().context("cannot create the scoreboard")?);
        scoreboard.reset(0, std::process::id());
        self.serve_in_slot(handler, scoreboard, 0)
    }

    pub(crate) fn serve_in_slot<H: Handler>(
        self,
        handler: Arc<H>,
        scoreboard: Arc<Scoreboard>,
        slot: usize,
    ) -> anyhow::Result<()> {
        let config = &self.config;
        let tracker = crate::track::Tracker::new(scoreboard.clone(), slot, config)?;
        let life = Arc::new(Life::new(
            self.shutdown.clone(),
            scoreboard,
            slot,
            max_requests_with_jitter(config, slot),
            tracker,
        ));
        match config.worker_class {
            WorkerClass::Sync => sync::run(self.listeners, config, handler, life),
            WorkerClass::Thread => thread::run(self.listeners, config, handler, life),
            WorkerClass::Gthread => gthread::run(self.listeners, config, handler, life),
            WorkerClass::Async => async_::run(self.listeners, config, handler, life),
        }
    }
}

/// `--max-requests` plus a per-worker random share of `--max-requests-jitter`, so workers do not
/// all retire at the same moment.
fn max_requests_with_jitter(config: &ServeConfig, slot: usize) -> u64 {
    if config.max_requests == 0 {
        return 0;
    }
    let jitter = if config.max_requests_jitter == 0 {
        0
    } else {
        // No RNG needed for spreading: the clock's nanoseconds and the pid and slot differ enough.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0)
            ^ (u64::from(std::process::id()) << 16)
            ^ slot as u64;
        seed % (config.max_requests_jitter + 1)
    };
    config.max_requests + jitter
}

/// `c10k serve`: raises limits, binds, logs the effective configuration, and serves the built-in
/// application until SIGTERM/SIGINT (graceful) or SIGQUIT (immediate).
pub fn run(config: ServeConfig) -> anyhow::Result<()> {
    if std::env::var_os(master::ENV_SLOT).is_some() {
        return run_worker_process();
    }
    let config = effective_class(config);
    // Two servers on one data dir would fight over every journal: refuse before binding, naming
    // the one already there (its workers would otherwise wait for locks that are never freed).
    if let Some((pid, parent)) = c10k_store::journal::data_dir_holder(&config.store.data_dir) {
        anyhow::bail!(
            "--data-dir {} is in use by another c10k server: pid {pid} (started by pid {parent}) \
             holds its journal; stop that server or choose another --data-dir",
            config.store.data_dir.display()
        );
    }
    match crate::sys::raise_nofile_limit() {
        Ok((soft, hard)) => tracing::info!(soft, hard, "open files limit (RLIMIT_NOFILE)"),
        Err(e) => tracing::warn!("cannot read or raise RLIMIT_NOFILE: {e}"),
    }
    if let Some(w) = listener::backlog_warning(config.backlog, listener::somaxconn()) {
        tracing::warn!("{w}");
    }
    if let Some(path) = config.access_log.as_deref().filter(|p| *p != "-") {
        // Every worker opens it; fail here, once and clearly, rather than in each of them.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open --access-log {path}"))?;
    }
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
    let admin = match &config.admin.0 {
        Some(addr) => {
            let admin = match crate::admin::Admin::bind(addr) {
                Ok(admin) => admin,
                Err(e) if !config.admin_chosen => {
                    tracing::warn!(
                        "admin listener off: cannot listen on the default {addr} ({e}); \
                         choose one with --admin ADDR"
                    );
                    return serve_master(config, server, None);
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot listen on {addr} (--admin; another port, or --admin off)")
                    })
                }
            };
            let scheme = match addr {
                BindAddr::Tcp(_) => "http://",
                BindAddr::Unix(_) => "",
            };
            let shown = admin
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            tracing::info!("Admin listening at: {scheme}{shown} (/status /processlist /metrics)");
            Some(admin)
        }
        None => None,
    };
    serve_master(config, server, admin)
}

fn serve_master(
    config: ServeConfig,
    server: Server,
    admin: Option<crate::admin::Admin>,
) -> anyhow::Result<()> {
    // The master starts no thread before its workers exist (see `master`).
    master::Master::new(config, server.listeners, admin)?.run()?;
    tracing::info!("stopped");
    Ok(())
}

/// gunicorn runs `sync` with more than one thread as `gthread`; so do we, and say so.
fn effective_class(mut config: ServeConfig) -> ServeConfig {
    if config.worker_class == WorkerClass::Sync && config.threads > 1 {
        tracing::warn!(
            threads = config.threads,
            "--worker-class sync runs one request at a time; with --threads > 1 using gthread"
        );
        config.worker_class = WorkerClass::Gthread;
    }
    config
}

/// The life of a worker process started by the master: take over the inherited listeners and
/// scoreboard, build the application, serve until told to stop.
fn run_worker_process() -> anyhow::Result<()> {
    let slot: usize = env_number(master::ENV_SLOT)?;
    let n: usize = env_number(master::ENV_LISTEN_FDS)?;
    let sb_fd: i32 = env_number(master::ENV_SCOREBOARD_FD)?;
    let text = std::env::var(master::ENV_CONFIG).context("worker started without its config")?;
    let config: ServeConfig = toml::from_str(&text).context("worker config from the master")?;
    let mut listeners = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: the master placed listening sockets at 3..3+n for this process alone.
        listeners
            .push(unsafe { Listener::from_raw_fd(3 + i as i32) }.context("inherited listener")?);
    }
    // SAFETY: the master placed the scoreboard at this descriptor for this process alone.
    let scoreboard = Arc::new(unsafe { Scoreboard::from_raw_fd(sb_fd) }.context("scoreboard")?);
    let server = Server::from_listeners(listeners, config);
    spawn_signal_thread(server.shutdown_handle())?;
    let app = match crate::app_factory::build_app(&server.config, slot) {
        Ok(app) => Arc::new(app),
        Err(e) => {
            tracing::error!(slot, "worker failed to boot: {e:#}");
            std::process::exit(master::BOOT_ERROR);
        }
    };
    if let Some(store) = app.store() {
        // The master shows pool and journal figures; it cannot ask the store, which lives here.
        // A weak reference: this thread must not keep the store (and its lease) alive.
        let store = Arc::downgrade(store);
        let sb = scoreboard.clone();
        std::thread::Builder::new()
            .name("c10k-store-figures".into())
            .spawn(move || {
                while let Some(store) = store.upgrade() {
                    sb.store(slot).publish(&store.stats());
                    drop(store);
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
            })
            .context("cannot start the store figures thread")?;
    }
    let served = server.serve_in_slot(app.clone(), scoreboard, slot);
    // A retiring or stopping worker gives its instance id lease back and lets the flusher drain,
    // whoever still holds a reference to the application.
    if let Some(store) = app.store() {
        store.close();
    }
    served
}

fn env_number<T: std::str::FromStr>(name: &str) -> anyhow::Result<T> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("worker started without a valid {name}"))
}

/// A worker's signals, as gunicorn's: SIGTERM stops gracefully, SIGINT/SIGQUIT stop at once,
/// SIGHUP retires the worker (finish, then exit so the master starts a fresh one). The handler
/// only records the signal; this thread acts on it.
fn spawn_signal_thread(shutdown: Shutdown) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP])
        .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("c10k-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                match sig {
                    SIGINT | SIGQUIT => {
                        tracing::info!(signal = sig, "worker stopping now");
                        std::process::exit(0);
                    }
                    SIGHUP => shutdown.trigger(Phase::Draining),
                    _ => shutdown.trigger(Phase::Graceful),
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}
