//! Worker classes, one module each, behind one entry point ([`Server::serve`]), as gunicorn's
//! `workers/{sync,gthread,...}.py` behind `SUPPORTED_WORKERS`.
//!
//! A worker owns its listeners (inherited from the master, or bound here when running alone) and
//! serves until the shared [`Shutdown`] moves past `Running`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use c10k_http::{Handler, Wait, WorkerInfo};

use crate::config::{BindAddr, Scheduling, ServeConfig, WorkerClass};
use crate::listener::{self, Listener};
use crate::master;
use crate::reload::Reload;
use crate::scoreboard::{Scoreboard, WritePathFigures};
use crate::shutdown::{Phase, Shutdown};
use crate::zygote::Forking;

mod async_;
mod blocking;
mod gthread;
mod life;
mod poller;
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
        for bind in &config.bind {
            listeners.push(Listener::bind_serving(bind, &config)?);
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

    /// What this server tells an application factory about worker `slot`.
    pub fn worker_info(&self, slot: usize) -> WorkerInfo {
        worker_info(&self.config, slot)
    }

    /// Runs the configured worker class in this process until shut down.
    pub fn serve<H: Handler>(self, handler: Arc<H>) -> anyhow::Result<()> {
        let scoreboard = Arc::new(Scoreboard::create().context("cannot create the scoreboard")?);
        scoreboard.reset(0, std::process::id());
        // No master here: this process is the whole server, booted once it serves.
        scoreboard.header().target.store(1, Ordering::Relaxed);
        scoreboard.header().booted.store(1, Ordering::Relaxed);
        self.serve_in_slot(handler, scoreboard, 0)
    }

    pub(crate) fn serve_in_slot<H: Handler>(
        self,
        handler: Arc<H>,
        scoreboard: Arc<Scoreboard>,
        slot: usize,
    ) -> anyhow::Result<()> {
        let config = &self.config;
        if config.scheduling == Scheduling::Batch {
            // Before the runtime and pools start: their threads inherit the policy.
            if let Err(e) = crate::sys::batch_scheduling() {
                tracing::warn!("--scheduling batch: cannot set SCHED_BATCH ({e}); running normal");
            }
        }
        let tracker = crate::track::Tracker::new(scoreboard.clone(), slot, config)?
            .with_script_name(handler.script_name());
        let handler = Arc::new(crate::status::HealthPath::new(
            handler,
            config.health_path.clone(),
            scoreboard.clone(),
        ));
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
            // gevent is the async I/O model; the hosted app dispatches to its hub.
            WorkerClass::Async | WorkerClass::Gevent => {
                async_::run(self.listeners, config, handler, life)
            }
        }
    }
}

/// What an application factory learns about the worker it runs in.
/// What an application factory is told about worker `slot` under `config` (also for loading
/// the application once outside a worker, as `c10k serve --check-config` does).
pub fn worker_info(config: &ServeConfig, slot: usize) -> WorkerInfo {
    let (class, threads, max_in_flight) = match config.worker_class {
        WorkerClass::Sync => ("sync", 1, 1),
        WorkerClass::Thread => (
            "thread",
            config.worker_connections,
            config.worker_connections,
        ),
        WorkerClass::Gthread => ("gthread", config.threads, config.threads),
        WorkerClass::Async => ("async", config.threads, config.worker_connections),
        // One Python thread (the hub); every connection's request may be in flight at once.
        WorkerClass::Gevent => ("gevent", 1, config.worker_connections),
    };
    WorkerInfo {
        slot,
        class,
        wait: if matches!(
            config.worker_class,
            WorkerClass::Async | WorkerClass::Gevent
        ) {
            Wait::Yield
        } else {
            Wait::Block
        },
        threads,
        max_in_flight,
        workers: config.workers,
    }
}

/// What a worker process serves: the application's handler and, when the application has a
/// write path, a way to read its figures for `/status` and `/metrics`.
pub struct Hosted<H> {
    pub handler: Arc<H>,
    figures: Option<Box<dyn Fn() -> Option<WritePathFigures> + Send>>,
    at_exit: Option<Box<dyn FnOnce() + Send>>,
}

impl<H> Hosted<H> {
    pub fn new(handler: Arc<H>) -> Hosted<H> {
        Hosted {
            handler,
            figures: None,
            at_exit: None,
        }
    }

    /// `at_exit` runs once on the worker's main thread when the worker has stopped serving and is
    /// about to exit normally (SIGTERM, SIGHUP, `--max-requests`), after its last request is
    /// done: a hosted Python app runs its `atexit` handlers there, as a gunicorn worker does.
    /// It does not run when the worker is killed or stopped at once (SIGQUIT).
    pub fn with_at_exit(mut self, at_exit: impl FnOnce() + Send + 'static) -> Hosted<H> {
        self.at_exit = Some(Box::new(at_exit));
        self
    }

    /// `figures` is called about twice a second on a thread of the worker's; `None` means the
    /// application has no write path (yet): an application that opens its store lazily starts
    /// returning figures once it is open.
    pub fn with_figures(
        mut self,
        figures: impl Fn() -> Option<WritePathFigures> + Send + 'static,
    ) -> Hosted<H> {
        self.figures = Some(Box::new(figures));
        self
    }
}

impl<H> std::fmt::Debug for Hosted<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hosted")
            .field("figures", &self.figures.is_some())
            .finish_non_exhaustive()
    }
}

/// Whether a uwsgi listener serves a connection from `peer` (`None`: a unix socket, always
/// allowed). A refused peer is logged and counted; the caller drops the connection unanswered.
pub(crate) fn uwsgi_admits(
    settings: &crate::conn::ConnSettings,
    track: &crate::track::ConnTrack,
    peer: Option<std::net::SocketAddr>,
) -> bool {
    let Some(p) = peer else {
        return true;
    };
    if settings.uwsgi_allow_from.iter().any(|a| a.allows(p.ip())) {
        return true;
    }
    track.uwsgi_refused();
    tracing::warn!(
        peer = %p,
        "closing uwsgi connection: peer not in --uwsgi-allow-from"
    );
    false
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

/// `c10k serve`: in the master, raises limits, binds, logs the effective configuration and
/// supervises worker processes until SIGTERM/SIGINT (graceful) or SIGQUIT (immediate); in a
/// worker process, calls `factory` once and serves what it returns.
///
/// # How the application reaches a worker
///
/// Worker processes are this same executable started again by the master, with **the same
/// command-line arguments and environment** as the master, plus the inherited listening sockets
/// (`LISTEN_FDS`), the scoreboard descriptor, the worker's slot and the master's effective
/// [`ServeConfig`] (serialised as TOML in an environment variable). So a binary's `main` runs
/// again in the worker, parses the same flags (application settings included: the built-in
/// app's `--database`, a Python `APP_MODULE`, ...), builds the same factory and calls `run`
/// again; `run` sees it is in a worker ([`is_worker_process`]) and calls `factory` there.
/// `factory` is never called in the master, so whatever it builds (threads, a database pool, a
/// Python interpreter) never crosses a `fork`.
///
/// The worker uses the master's `ServeConfig`, not the one its `main` parsed again: a config
/// file edited after the master started does not make workers disagree with their master.
pub fn run<H, F>(config: ServeConfig, factory: F) -> anyhow::Result<()>
where
    H: Handler,
    F: FnOnce(&WorkerInfo) -> anyhow::Result<Arc<H>>,
{
    run_hosted(config, |info| factory(info).map(Hosted::new))
}

/// [`run`] for an application that also reports write-path figures ([`Hosted::with_figures`]).
/// `SIGHUP` replaces the workers and keeps this configuration.
pub fn run_hosted<H, F>(config: ServeConfig, factory: F) -> anyhow::Result<()>
where
    H: Handler,
    F: FnOnce(&WorkerInfo) -> anyhow::Result<Hosted<H>>,
{
    run_reloading(config, None, factory)
}

/// [`run_hosted`] whose `SIGHUP` builds the configuration again with `reload` (see
/// [`crate::reload`]) before it replaces the workers, as gunicorn's does. In a worker process,
/// `reload` is dropped unused.
pub fn run_reloading<H, F>(
    config: ServeConfig,
    reload: Option<Reload>,
    factory: F,
) -> anyhow::Result<()>
where
    H: Handler,
    F: FnOnce(&WorkerInfo) -> anyhow::Result<Hosted<H>>,
{
    run_forking(config, reload, None, factory)
}

/// [`run_reloading`] whose workers are forked from a zygote that prepared the application's
/// runtime once with `forking` (see [`Forking`]), instead of each started by exec: they share
/// the runtime's pages. The zygote is this binary started again too, so its `main` calls this
/// again with the same arguments; in it, this prepares the runtime, forks workers and returns
/// only in them, once they have served.
pub fn run_forking<H, F>(
    config: ServeConfig,
    reload: Option<Reload>,
    forking: Option<Forking>,
    factory: F,
) -> anyhow::Result<()>
where
    H: Handler,
    F: FnOnce(&WorkerInfo) -> anyhow::Result<Hosted<H>>,
{
    // Before anything logs or starts a thread, which is named after the process.
    crate::proc_name::take_back();
    if crate::zygote::is_zygote() {
        let forking = forking.context("started as a zygote by a master that forks no workers")?;
        let slot = crate::zygote::serve(forking, master::BOOT_ERROR)?;
        // In the forked worker: as an executed worker finds it (`is_worker_process`).
        std::env::set_var(master::ENV_SLOT, slot.to_string());
        return run_worker_process(slot, factory);
    }
    if is_worker_process() {
        return run_worker_process(env_number(master::ENV_SLOT)?, factory);
    }
    let config = config.effective_class();
    // The master only needs to know; the zygote runs the preparation.
    let forking = forking.is_some();
    // What a reload compares with: the sockets taken over below rewrite `bind`.
    let as_given = config.clone();
    let owner = crate::owner::resolve(config.user.as_deref(), config.group.as_deref())
        .map_err(|(flag, message)| anyhow::anyhow!("{flag}: {message}"))?;
    if let Some(owner) = &owner {
        if !crate::owner::can_switch(owner) {
            anyhow::bail!(
                "--user/--group: switching the workers to uid {} gid {} needs c10k started as \
                 root (it runs as uid {}); start it as that user instead, without --user",
                owner.uid,
                owner.gid,
                // SAFETY: geteuid has no preconditions.
                unsafe { libc::geteuid() }
            );
        }
    }
    // A master started by an old master's USR2 serves the sockets it passed (see `upgrade`).
    let upgrade = crate::upgrade::inherited()?;
    // Before binding, as gunicorn: a second server given the same file says it is running
    // (a successor writes beside the old master's file). Removed when this function returns,
    // whichever way.
    let pidfile = match (config.pid.as_deref(), &upgrade) {
        (Some(path), Some(_)) => Some(crate::pidfile::PidFile::create_beside(path)?),
        (Some(path), None) => Some(crate::pidfile::PidFile::create(path)?),
        (None, _) => None,
    };
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
        if let Some(owner) = &owner {
            crate::owner::give(path.as_ref(), owner)
                .with_context(|| format!("--user: cannot give --access-log {path} to it"))?;
        }
    }
    tracing::info!("Starting c10k {}", env!("CARGO_PKG_VERSION"));
    let mut config = config;
    let mut upgraded_from = None;
    // The unix socket files bound here are removed when the master exits (see `SocketFile`), or
    // when a `SIGHUP` removes their address; those systemd or an old master passed are not.
    let mut socket_files = Vec::new();
    let server = match upgrade {
        Some((parent, sockets)) => {
            tracing::info!(
                old_master = parent,
                "started by the old master's SIGUSR2: serving its sockets beside it"
            );
            upgraded_from = Some(parent);
            let listeners = crate::upgrade::take(&mut config, sockets)?;
            config.validate()?;
            Server::from_listeners(listeners, config.clone())
        }
        None => {
            let inherited = crate::activation::inherited()?;
            if inherited.is_empty() {
                let server = Server::bind(config.clone())?;
                socket_files = server
                    .listeners
                    .iter()
                    .filter_map(Listener::socket_file)
                    .collect();
                server
            } else {
                let listeners = crate::activation::take(&mut config, inherited)?;
                config.validate()?;
                Server::from_listeners(listeners, config.clone())
            }
        }
    };
    if let Some(owner) = &owner {
        // As gunicorn does: the workers' user owns the unix sockets it serves.
        for addr in server.local_addrs() {
            if let BindAddr::Unix(path) = addr {
                if !path.as_os_str().is_empty() {
                    crate::owner::give(&path, owner)
                        .with_context(|| format!("--user: cannot give {} to it", path.display()))?;
                }
            }
        }
    }
    for (i, addr) in server.local_addrs().into_iter().enumerate() {
        let bind = crate::config::Bind {
            protocol: config.protocol_of(i),
            addr,
        };
        tracing::info!(
            "Listening at: {}{bind} ({})",
            bind.scheme(),
            std::process::id()
        );
    }
    // gunicorn's short banner: version, listeners, class and workers. The whole configuration
    // is one `--check-config` (or `--log-level debug`) away.
    tracing::info!("Using worker: {}", config.worker_summary());
    tracing::debug!(
        "effective config: {}",
        config.to_toml().trim_end().replace('\n', ", ")
    );
    let admin = match &config.admin.0 {
        Some(addr) => {
            let admin = match crate::status::Admin::bind(addr, config.admin_token.clone()) {
                Ok(admin) => admin,
                Err(e) if !config.admin_chosen => {
                    tracing::warn!(
                        "admin listener off: cannot listen on the default {addr} ({e}); \
                         choose one with --admin ADDR"
                    );
                    let started = Started {
                        admin: None,
                        pidfile,
                        upgraded_from,
                        as_given,
                        reload,
                        socket_files,
                        forking,
                    };
                    return serve_master(config, server, started);
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
            tracing::info!(
                token = config.admin_token.is_some(),
                "Admin listening at: {scheme}{shown} (/status /processlist /metrics /livez /readyz)"
            );
            Some(admin)
        }
        None => None,
    };
    let started = Started {
        admin,
        pidfile,
        upgraded_from,
        as_given,
        reload,
        socket_files,
        forking,
    };
    serve_master(config, server, started)
}

/// What the master takes over beside its configuration and listeners.
struct Started {
    admin: Option<crate::status::Admin>,
    pidfile: Option<crate::pidfile::PidFile>,
    upgraded_from: Option<i32>,
    /// The configuration as loaded (before inherited sockets rewrote its `bind`).
    as_given: ServeConfig,
    /// The hook that loads the configuration again on `SIGHUP`.
    reload: Option<Reload>,
    /// The unix socket files this process bound for its listeners.
    socket_files: Vec<crate::listener::SocketFile>,
    /// Whether a zygote forks the workers (see [`run_forking`]).
    forking: bool,
}

fn serve_master(config: ServeConfig, server: Server, started: Started) -> anyhow::Result<()> {
    // The master starts no thread before its workers exist (see `master`).
    let mut master = master::Master::new(
        config,
        &started.as_given,
        server.listeners,
        started.socket_files,
        started.admin,
    )?;
    master.inherit(started.pidfile, started.upgraded_from);
    if started.forking {
        master.fork_workers();
    }
    if let Some(reload) = started.reload {
        master.reload_with(started.as_given, reload);
    }
    master.run()?;
    tracing::info!("stopped");
    Ok(())
}

/// Whether this process is a worker started by a master (see [`run`]), or the zygote that forks
/// them (see [`run_forking`]).
pub fn is_worker_process() -> bool {
    std::env::var_os(master::ENV_SLOT).is_some() || crate::zygote::is_zygote()
}

/// Whether this process is a master started by an old master's `SIGUSR2` (see `upgrade`),
/// which still runs beside it.
pub fn started_by_upgrade() -> bool {
    std::env::var_os(crate::upgrade::ENV_PARENT).is_some()
}

/// This worker process's stop signal, for [`retire_for_reload`]; set once the worker has its
/// [`Server`]. (Like the signal thread that also holds it, it belongs to the process.)
static WORKER_SHUTDOWN: std::sync::OnceLock<Shutdown> = std::sync::OnceLock::new();

/// Retires this worker process because the application's code changed on disk (`--reload`'s
/// watcher, from any thread): as SIGHUP does, except that idle keep-alive connections close at
/// once instead of after one more answer from the stale code (see [`Phase::Reloading`]); the
/// master then starts a fresh worker. `false` (and nothing happens) outside a worker process
/// started by a master, or before it has its server.
pub fn retire_for_reload() -> bool {
    match WORKER_SHUTDOWN.get() {
        Some(shutdown) => {
            shutdown.trigger(Phase::Reloading);
            true
        }
        None => false,
    }
}

/// The life of a worker process started by the master: take over the inherited listeners and
/// scoreboard, build the application, serve until told to stop.
fn run_worker_process<H, F>(slot: usize, factory: F) -> anyhow::Result<()>
where
    H: Handler,
    F: FnOnce(&WorkerInfo) -> anyhow::Result<Hosted<H>>,
{
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
    crate::zygote::unblock_signals();
    // Before the factory, which starts `--reload`'s watcher.
    let _ = WORKER_SHUTDOWN.set(server.shutdown_handle());
    let hosted = match factory(&server.worker_info(slot)) {
        Ok(hosted) => hosted,
        Err(e) => {
            tracing::error!(slot, "worker failed to boot: {e:#}");
            std::process::exit(master::BOOT_ERROR);
        }
    };
    let Hosted {
        handler,
        figures,
        at_exit,
    } = hosted;
    match crate::sys::release_startup_pages() {
        Ok(r) => {
            tracing::debug!(
                slot,
                kib = r.kib,
                files = r.files,
                "released the start-up pages"
            )
        }
        Err(e) => tracing::debug!(slot, "cannot release the start-up pages: {e}"),
    }
    // The master shows the write path's figures; it cannot ask the application, which lives
    // here. The thread stops (and drops what the closure holds) when serving ends.
    let stop_figures = Arc::new(AtomicBool::new(false));
    let figures_thread = match figures {
        Some(figures) => {
            let (sb, stop) = (scoreboard.clone(), stop_figures.clone());
            let t = std::thread::Builder::new()
                .name("c10k-figures".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(f) = figures() {
                            sb.store(slot).publish(&f);
                        }
                        std::thread::park_timeout(std::time::Duration::from_millis(500));
                    }
                })
                .context("cannot start the figures thread")?;
            Some(t)
        }
        None => None,
    };
    let served = server.serve_in_slot(handler, scoreboard, slot);
    stop_figures.store(true, Ordering::Relaxed);
    if let Some(t) = figures_thread {
        t.thread().unpark();
        let _ = t.join();
    }
    if let Some(at_exit) = at_exit {
        at_exit();
    }
    served
}

fn env_number<T: std::str::FromStr>(name: &str) -> anyhow::Result<T> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("worker started without a valid {name}"))
}

/// A worker's signals: SIGTERM stops gracefully, SIGQUIT stops at once, SIGHUP retires the
/// worker (finish, then exit so the master starts a fresh one). SIGINT is ignored: Ctrl-C at a
/// terminal reaches every process of the group, and the master alone decides what it means
/// (graceful stop, then fast on a second one) — gunicorn's workers quit on it and cut in-flight
/// requests. The handler only records the signal; this thread acts on it.
fn spawn_signal_thread(shutdown: Shutdown) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGQUIT, SIGTERM, SIGUSR1};
    // SAFETY: setting a signal's disposition to SIG_IGN has no memory-safety preconditions.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGQUIT, SIGHUP, SIGUSR1])
        .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("c10k-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                match sig {
                    SIGQUIT => {
                        tracing::info!(signal = "SIGQUIT", "worker stopping now");
                        std::process::exit(0);
                    }
                    SIGHUP => shutdown.trigger(Phase::Draining),
                    SIGUSR1 => crate::reopen::reopen_all(None),
                    _ => shutdown.trigger(Phase::Graceful),
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}
