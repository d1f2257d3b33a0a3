//! [`WsgiApp`]: boots the app in a worker process and serves it as a [`Handler`], choosing per
//! request where Python runs (see the crate documentation).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use c10k_http::{Capacity, Ctx, Handler, Request, Response, Wait, WorkerInfo};
use pyo3::prelude::*;

use crate::answers::{Answers, Busy};
use crate::body::{into_response, Called, PyBody};
use crate::boot_error::BootError;
use crate::call::{self, Outcome};
use crate::config::WsgiConfig;
use crate::environ::{MountFault, Template};
use crate::hub_handle::{Call, Hub, Slot};
use crate::loader::AppState;
use crate::pool::Pool;
use crate::stream::{InlineStream, PoolStream, Steps};
use crate::traceback::format_exception;
use crate::write::{Reply, Tail};
use crate::{interp, loader};

/// A hosted WSGI application; one per worker process.
#[derive(Clone)]
pub struct WsgiApp {
    inner: Arc<Inner>,
}

struct Inner {
    /// Shared with the gevent hub's calls.
    state: Arc<AppState>,
    /// Python threads for `async` requests and for requests with a deadline; started lazily.
    pool: OnceLock<Pool>,
    pool_size: usize,
    max_stuck: usize,
    /// How long a pool thread may be idle before it exits (see [`crate::pool`]); `None`: never.
    pool_idle: Option<Duration>,
    recycle: Option<Arc<dyn Fn() + Send + Sync>>,
    /// The `gevent` class: requests run in greenlets on this hub instead of the pool.
    hub: Option<Hub>,
    /// Where pool threads hand `async` answers back to the event loop (see [`Answers`]).
    answers: Answers,
    /// Requests handed to the pool (or the hub) and not answered yet (`async` back-pressure: a count of
    /// requests, never of connections, so idle keep-alive clients cost nothing).
    in_flight: tokio::sync::Semaphore,
    /// `in_flight`'s size.
    max_in_flight: usize,
    /// Pool threads kept by answered `async` requests, and the notice of a freed thread. One per
    /// worker process, for its life: leaked at boot, so that a request's [`Reply`] refers to it
    /// without a reference count to bump.
    busy: &'static Busy,
    /// How long pooled `async` requests hold their thread, in nanoseconds: a moving average
    /// over the last few (see [`Capacity::slow`]).
    held_ns: AtomicU64,
    /// Whether to keep [`Inner::held_ns`]: the accept loop reads it only when the worker has
    /// siblings to leave connections to, so a lone worker does not read the clock twice per
    /// request for it.
    time_held: bool,
}

/// Logs a warning for each of the worker's own signals (TERM, HUP, QUIT) the app gave a Python
/// handler at import (`signal.signal`): it replaces c10k's, so the worker no longer stops or
/// retires on it and the master kills it after `--graceful-timeout`, as gunicorn's worker, which
/// also loads the app after installing its handlers. Only the main thread runs a Python handler,
/// and only `sync` runs Python there after the import: under the other classes the app's handler
/// never runs either.
fn warn_replaced_signals(py: Python<'_>, main_thread_runs_python: bool) {
    let replaced = |py: Python<'_>| -> PyResult<Vec<String>> {
        let signal = py.import("signal")?;
        let callable = py.import("builtins")?.getattr("callable")?;
        let mut out = Vec::new();
        for name in ["SIGTERM", "SIGHUP", "SIGQUIT"] {
            let handler = signal.call_method1("getsignal", (signal.getattr(name)?,))?;
            if callable.call1((handler,))?.is_truthy()? {
                out.push(name.to_owned());
            }
        }
        Ok(out)
    };
    for name in replaced(py).unwrap_or_default() {
        let runs = if main_thread_runs_python {
            "it runs instead"
        } else {
            "and under this worker class it never runs (only `sync` runs Python on the main thread)"
        };
        tracing::warn!(
            "the application set its own {name} handler at import (signal.signal): it replaces \
             c10k's, so this worker no longer stops or retires on {name} and is killed after \
             --graceful-timeout; {runs}"
        );
    }
}

/// Requests that hold a pool thread longer than this on average are [slow](Capacity::slow).
/// A view that sleeps or waits on a database or an upstream holds it for tens of milliseconds
/// or more; CPU-bound views take well under one, a few under a contended GIL.
const SLOW: Duration = Duration::from_millis(5);

/// How long a blocking class's pool thread may wait for a request before it exits (the `thread`
/// class's connection threads wait as long).
const POOL_THREAD_IDLE: Duration = Duration::from_secs(30);

/// What loading the app needs, owned, so that the `gevent` class can load it on its hub's
/// thread.
struct Load {
    config: WsgiConfig,
    /// The directory the app is imported from (after `--chdir`).
    cwd: PathBuf,
    slot: usize,
    multithread: bool,
    several_workers: bool,
}

impl Load {
    /// Applies `--pythonpath` and `--env`, imports the app and makes the environ template. Also
    /// returns the files to watch beyond the modules': a `SyntaxError`'s, when `--reload` serves
    /// it (see `reload`).
    fn run(self, py: Python<'_>) -> Result<(AppState, Vec<PathBuf>), BootError> {
        let Load { config, cwd, .. } = &self;
        let mut broken = Vec::new();
        let preloaded = crate::preload::take(py, &config.app);
        if preloaded.is_none() {
            loader::setup(py, config, cwd).map_err(|e| BootError::Exception {
                spec: config.app.clone(),
                traceback: format_exception(py, &e),
            })?;
        }
        let loaded = match preloaded {
            Some(app) => Ok(app),
            None => loader::load(py, &config.app),
        };
        let app = match loaded {
            Ok(app) => app,
            Err(loader::Failed {
                error,
                syntax: Some(file),
            }) if config.reload.is_some() => {
                // gunicorn's `load_wsgi` under --reload: the worker serves the error and
                // watches the broken file, so that saving the fix reloads it.
                tracing::error!(
                    slot = self.slot,
                    "{error}\n--reload: serving this error as a 500 until a watched file changes"
                );
                broken.extend(file.map(|f| cwd.join(f)));
                let module = loader::parse(&config.app).map(|s| s.module.to_owned());
                if let Some(origin) = module
                    .ok()
                    .and_then(|m| crate::reload::module_origin(py, &m))
                {
                    broken.push(origin);
                }
                crate::reload::fail_app(py, &error.to_string()).map_err(|e| {
                    BootError::Exception {
                        spec: config.app.clone(),
                        traceback: format_exception(py, &e),
                    }
                })?
            }
            Err(failed) => return Err(failed.error),
        };
        let template = Template::new(
            py,
            &config.root_path,
            self.multithread,
            self.several_workers,
        )
        .map_err(|e| BootError::Exception {
            spec: config.app.clone(),
            traceback: format_exception(py, &e),
        })?;
        Ok((AppState { app, template }, broken))
    }
}

impl std::fmt::Debug for WsgiApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsgiApp")
            .field("pool_size", &self.inner.pool_size)
            .finish_non_exhaustive()
    }
}

impl WsgiApp {
    /// Starts the interpreter as [`WsgiApp::boot`] does, and nothing more: for a process that
    /// forks workers which then boot the application (a zygote). Starts no thread.
    pub fn prestart(venv: Option<&std::path::Path>) -> Result<(), BootError> {
        interp::start(absolute_venv(venv)?.as_deref()).map(drop)
    }

    /// `--preload`: what [`WsgiApp::prestart`] does, and then the import of the application, as
    /// [`WsgiApp::boot`] does it (`--chdir`, `--pythonpath`, `--env`; for `gevent` workers,
    /// `gevent.monkey.patch_all()` first): for a zygote whose workers then boot with this app
    /// instead of importing it. Not with `--reload` (a worker started after a change would be
    /// forked with the old code). Starts no thread unless the app does.
    pub fn preload(config: &WsgiConfig, gevent: bool) -> Result<(), BootError> {
        crate::preload::run(config, absolute_venv(config.venv.as_deref())?, gevent)
    }

    /// Starts the interpreter (once per process), applies `--chdir`, `--pythonpath` and `--env`,
    /// imports the application and checks it is callable. Call it in the worker process.
    pub fn boot(config: &WsgiConfig, info: &WorkerInfo) -> Result<WsgiApp, BootError> {
        let venv = absolute_venv(config.venv.as_deref())?;
        // `--reload-extra-file`s are taken from here too, before --chdir, as gunicorn takes them.
        let started_in = std::env::current_dir().unwrap_or_default();
        // A worker forked from a process that preloaded the app: it has the app, the
        // interpreter's `sys.path` and `os.environ`, and the current directory after --chdir.
        let preloaded = crate::preload::is_preloaded(&config.app);
        let gevent = info.class == "gevent";
        if preloaded && config.reload.is_some() {
            return Err(BootError::Environment(
                "--preload: the application was imported before the fork, and --reload's new \
                 workers must import the changed code"
                    .to_owned(),
            ));
        }
        // A preloading process applied --chdir before the fork.
        let cwd = loader::enter_dir(config.chdir.as_deref().filter(|_| !preloaded))?;
        // Before the first module is read: a module file changed after this may have been
        // imported before the change (see `reload`).
        let loading_since = crate::reload::file_clock_now();
        let started = interp::start(venv.as_deref())?;
        tracing::info!(
            slot = info.slot,
            "Python {} (sys.prefix {}) {} {}",
            started.version,
            started.prefix,
            if preloaded {
                "serving the preloaded"
            } else {
                "loading"
            },
            config.app
        );
        let load = Load {
            config: config.clone(),
            cwd,
            slot: info.slot,
            // Greenlets run requests concurrently, as threads would (gunicorn says so too).
            multithread: info.threads > 1 || gevent,
            several_workers: info.workers > 1,
        };
        let (state, broken, hub) = if gevent {
            interp::attach(|py| -> Result<bool, BootError> {
                // Before anything else is imported: the app must see the patched modules. A
                // preloaded app was imported patched, in the zygote (preload.rs).
                if !preloaded {
                    crate::gevent::prepare(py, !config.no_monkey_patch)?;
                }
                crate::gevent::note_main_hub(py)
            })?;
            tracing::info!(
                slot = info.slot,
                max_in_flight = info.max_in_flight,
                "gevent hub: one greenlet per request"
            );
            // The app is imported on the hub's thread, as gunicorn's gevent worker imports and
            // serves on one: a thread it starts at import is a greenlet of the hub that serves.
            let (hub, (state, broken)) = Hub::start(move |py| load.run(py))?;
            interp::attach(|py| -> Result<(), BootError> {
                crate::gevent::apply_deferred_signals(py)?;
                warn_replaced_signals(py, false);
                Ok(())
            })?;
            (state, broken, Some(hub))
        } else {
            let (state, broken) = interp::attach(|py| -> Result<_, BootError> {
                let loaded = load.run(py)?;
                warn_replaced_signals(py, info.class == "sync");
                Ok(loaded)
            })?;
            (state, broken, None)
        };
        let pool_size = match info.wait {
            Wait::Yield => info.threads.max(1),
            // Only requests with a deadline use the pool: as many as may run at once.
            Wait::Block => info.threads.clamp(1, 1024),
        };
        if let Some(reload) = &config.reload {
            crate::reload::spawn(reload, info.slot, &started_in, broken, loading_since).map_err(
                |e| {
                    BootError::Environment(format!(
                        "--reload: cannot start the watcher thread: {e}"
                    ))
                },
            )?;
        }
        let max_in_flight = info
            .max_in_flight
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        Ok(WsgiApp {
            inner: Arc::new(Inner {
                state: Arc::new(state),
                hub,
                pool: OnceLock::new(),
                answers: Answers::default(),
                pool_size,
                max_stuck: config.max_stuck_threads.unwrap_or(pool_size),
                // The `async` pool is `--threads` in size and its threads are the workers': they
                // stay. The blocking classes' pool, up to `--worker-connections` under `thread`,
                // gives back what a burst started.
                pool_idle: (info.wait == Wait::Block)
                    .then(|| config.pool_thread_idle.unwrap_or(POOL_THREAD_IDLE)),
                recycle: config.recycle.clone(),
                in_flight: tokio::sync::Semaphore::new(max_in_flight),
                max_in_flight,
                busy: Box::leak(Box::default()),
                held_ns: AtomicU64::new(0),
                time_held: info.workers > 1,
            }),
        })
    }
}

/// How long a worker that has stopped serving waits for its gevent hub to run the app's `atexit`
/// handlers (gunicorn's default `--graceful-timeout`; the master may kill the worker sooner).
const EXIT_HANDLERS_ON_HUB: Duration = Duration::from_secs(30);

impl WsgiApp {
    /// Runs the app's `atexit` handlers ([`interp::run_exit_handlers`]) once the worker has
    /// stopped serving. Under `gevent` they run in a greenlet on the hub, where the app was
    /// imported, as under gunicorn's gevent worker (whose hub is the main thread's): what they
    /// wait on, a thread the app started or a socket it opened at import, is that hub's. A hub
    /// that does not run them within [`EXIT_HANDLERS_ON_HUB`] (a view that never yields) is
    /// given up on, and they are not run.
    pub fn run_exit_handlers(&self) {
        let Some(hub) = &self.inner.hub else {
            return interp::run_exit_handlers();
        };
        let (done, ran) = std::sync::mpsc::sync_channel(1);
        hub.run(Box::new(move |py| {
            interp::exit_handlers(py);
            let _ = done.send(());
        }));
        if ran.recv_timeout(EXIT_HANDLERS_ON_HUB).is_err() {
            tracing::warn!(
                "the gevent hub did not run the application's atexit handlers within {}s (a \
                 greenlet that never yields?): the worker exits without them",
                EXIT_HANDLERS_ON_HUB.as_secs()
            );
        }
    }

    /// Python threads running a request whose client already got its 504 (see [`crate::pool`]).
    pub fn stuck_threads(&self) -> usize {
        self.inner.pool.get().map_or(0, Pool::stuck)
    }
}

/// Attaches the rest of an early answer's body (write.rs) to be stepped on this pool thread,
/// whose [`Steps`] are then to be served.
fn tail_here(tail: Tail<PyBody>) -> Steps {
    let steps = Steps::new();
    let runner = steps.runner();
    tail.attach(|body| Box::pin(PoolStream::new(VecDeque::new(), body, runner)));
    steps
}

/// The response of an app called on this pool thread, and, when its body is a stream, the
/// [`Steps`] this thread must serve until the body is done (see stream.rs). A complete answer
/// makes no channel and never releases the GIL for one.
fn streamed_here(called: Called) -> (Response, Option<Steps>) {
    let mut steps = None;
    let resp = into_response(called, |first, body| {
        let s = Steps::new();
        let runner = s.runner();
        steps = Some(s);
        Box::pin(PoolStream::new(first, body, runner))
    });
    (resp, steps)
}

impl Inner {
    fn pool(&self) -> &Pool {
        self.pool.get_or_init(|| {
            Pool::new(
                self.pool_size,
                self.max_stuck,
                self.pool_idle,
                self.recycle.clone(),
            )
        })
    }

    /// Folds one request's time on its thread into [`Inner::held_ns`] (an exponential moving
    /// average weighing the newest an eighth; races between threads lose an update, which is
    /// harmless for an average).
    fn held(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let old = self.held_ns.load(Ordering::Relaxed);
        let new = old - old / 8 + ns / 8;
        self.held_ns.store(new, Ordering::Relaxed);
    }

    /// On this (attached-once) thread: the blocking classes without a deadline.
    fn call_inline(&self, req: Request) -> Response {
        let outcome = interp::attach(|py| call::run_request(py, &self.state, req, Reply::Inline));
        match outcome {
            Outcome::Answer(called, _) => into_response(called, |first, body| {
                Box::pin(InlineStream::new(first, body))
            }),
            Outcome::Sent(tail) => {
                // The driver has the answer (c10k_http::early) and pulls the rest from it.
                if let Some(tail) = tail {
                    tail.attach(|body| Box::pin(InlineStream::new(VecDeque::new(), body)));
                }
                Response::new(200)
            }
        }
    }

    /// On the pool, waiting on this thread until `deadline`: the blocking classes with
    /// `--request-timeout`.
    fn call_pooled_blocking(self: &Arc<Self>, req: Request, deadline: Instant) -> Response {
        let label = Some(call::label(&req));
        let (tx, rx) = crossbeam_channel::bounded::<Response>(1);
        let me = self.clone();
        let ticket = self.pool().submit_tracked(
            label,
            Box::new(move |py| {
                let outcome = call::run_request_isolated(py, &me.state, req, Reply::Blocking(tx));
                // The body's steps run here, not on the connection's thread (see stream.rs).
                let steps = match outcome {
                    Outcome::Answer(called, Reply::Blocking(tx)) => {
                        let (resp, steps) = streamed_here(called);
                        // Nobody waiting (timed out): dropping the answer queues its close()
                        // for this thread, which runs it in `serve`.
                        let _ = tx.send(resp);
                        steps
                    }
                    Outcome::Answer(..) => None,
                    Outcome::Sent(tail) => tail.map(tail_here),
                };
                if let Some(steps) = steps {
                    steps.serve(py);
                }
            }),
        );
        match rx.recv_deadline(deadline) {
            Ok(resp) => resp,
            Err(_) => {
                self.pool().abandon(&ticket, true);
                timeout_response()
            }
        }
    }

    /// On the pool, awaited on the event loop: the `async` class.
    async fn call_pooled_async(
        self: &Arc<Self>,
        req: Request,
        deadline: Option<Instant>,
    ) -> Response {
        let Ok(permit) = self.in_flight.acquire().await else {
            return Response::text(503, "Service Unavailable\n");
        };
        let _in_flight = InFlight {
            permit: Some(permit),
            freed: &self.busy.freed,
        };
        // Only a request with a deadline can get stuck and be named in the log.
        let label = deadline.map(|_| call::label(&req));
        let (tx, rx) = tokio::sync::oneshot::channel::<Response>();
        let me = self.clone();
        let answers = self.answers.sender();
        let ticket = self.pool().submit_tracked(
            label,
            Box::new(move |py| {
                let began = me.time_held.then(Instant::now);
                let reply = Reply::Async {
                    tx,
                    answers,
                    busy: me.busy,
                };
                let outcome = call::run_request_isolated(py, &me.state, req, reply);
                if let Some(began) = began {
                    me.held(began.elapsed());
                }
                match outcome {
                    Outcome::Answer(called, Reply::Async { tx, answers, .. }) => {
                        // A streamed body keeps this thread until it is done (see stream.rs).
                        let (resp, steps) = streamed_here(called);
                        // Counted busy before the answer frees its place in `in_flight`.
                        if steps.is_some() {
                            me.busy.begin();
                        }
                        // Nobody waiting: dropping the answer queues its close() for this
                        // thread.
                        let _ = answers.send((tx, resp));
                        if let Some(steps) = steps {
                            steps.serve(py);
                            me.busy.end();
                        }
                    }
                    Outcome::Answer(..) => {}
                    Outcome::Sent(tail) => {
                        // Counted busy when write() sent the answer (`Reply::send`).
                        if let Some(steps) = tail.map(tail_here) {
                            steps.serve(py);
                        }
                        me.busy.end();
                    }
                }
            }),
        );
        let guard = Abandon {
            pool: self.pool(),
            ticket: &ticket,
            deadline,
            armed: true,
        };
        let answer = match deadline {
            None => rx.await.ok(),
            Some(d) => match tokio::time::timeout_at(d.into(), rx).await {
                Ok(r) => r.ok(),
                Err(_) => {
                    let mut guard = guard;
                    guard.armed = false;
                    self.pool().abandon(&ticket, true);
                    return timeout_response();
                }
            },
        };
        let mut guard = guard;
        guard.armed = false;
        answer.unwrap_or_else(|| Response::text(500, "Internal Server Error\n"))
    }
}

impl Inner {
    /// In a greenlet on the hub, awaited on the event loop: the `gevent` class.
    async fn call_hub(
        self: &Arc<Self>,
        hub: &Hub,
        req: Request,
        deadline: Option<Instant>,
    ) -> Response {
        let Ok(_permit) = self.in_flight.acquire().await else {
            return Response::text(503, "Service Unavailable\n");
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<Response>();
        let batched = hub.deliver_on_this_runtime().then(|| hub.clone());
        // Given the response by the request's greenlet (a streamed body's steps run there).
        let done = move |_: Python<'_>, resp: Response| {
            // Interrupted by its gevent.Timeout (or just too late): the client gets the 504;
            // dropping a streamed answer closes its iterable in another greenlet.
            let resp = if deadline.is_some_and(|d| Instant::now() >= d) {
                drop(resp);
                timeout_response()
            } else {
                resp
            };
            match batched {
                Some(hub) => hub.answer(tx, resp),
                None => {
                    let _ = tx.send(resp);
                }
            }
        };
        let slot = hub.call(
            Call {
                state: self.state.clone(),
                req,
                done: Box::new(done),
            },
            deadline,
        );
        // Gone before the answer (the server's timer, shutdown): kill the greenlet.
        let mut guard = KillOnDrop {
            hub,
            slot: &slot,
            deadline,
            armed: true,
        };
        let answer = match deadline {
            None => rx.await.ok(),
            Some(d) => match tokio::time::timeout_at(d.into(), rx).await {
                Ok(r) => r.ok(),
                Err(_) => return timeout_response(),
            },
        };
        guard.armed = false;
        answer.unwrap_or_else(|| Response::text(500, "Internal Server Error\n"))
    }
}

/// Kills a request's greenlet when its future is dropped before the answer. At the deadline the
/// greenlet's own `gevent.Timeout` does it (so the log shows where the view was waiting).
struct KillOnDrop<'a> {
    hub: &'a Hub,
    slot: &'a Arc<Slot>,
    deadline: Option<Instant>,
    armed: bool,
}

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let timed_out = self.deadline.is_some_and(|d| Instant::now() >= d);
        if self.armed && !timed_out {
            self.hub.kill(self.slot);
        }
    }
}

/// Gives up on a pooled request when its future is dropped (the server's own timer fired, or the
/// server stopped).
struct Abandon<'a> {
    pool: &'a Pool,
    ticket: &'a crate::pool::Ticket,
    deadline: Option<Instant>,
    armed: bool,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if self.armed {
            let late = self.deadline.is_some_and(|d| Instant::now() >= d);
            self.pool.abandon(self.ticket, late);
        }
    }
}

/// A pooled `async` request's place in [`Inner::in_flight`]: given back, and
/// [`Inner::freed`] told, however the request ends (answered, timed out, or its client gone).
struct InFlight<'a> {
    permit: Option<tokio::sync::SemaphorePermit<'a>>,
    freed: &'a tokio::sync::Notify,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.freed.notify_one();
    }
}

/// The answer to a request outside the app's mount point (`--root-path`, or a trusted front's
/// `SCRIPT_NAME` header), made without Python: gunicorn's status (500, from its
/// `ConfigurationProblem`: a server or front set up for another mount point is a configuration
/// fault, not the client's) and log level (a warning naming the client), with a short reason
/// and without gunicorn's echo of the path and the root in the body. The worker goes on; the
/// connection closes after the answer (`Connection: close`), as gunicorn's does after any error
/// it answers itself.
fn mount_fault_answer(req: &Request, fault: MountFault) -> Response {
    // (what the log says, what the client reads)
    let (logged, reason) = match fault {
        MountFault::OutsideRoot => (
            "request path is not under --root-path",
            "request path is not under this server's --root-path",
        ),
        MountFault::OutsideFront => {
            let r =
                "request path is not under the SCRIPT_NAME header's prefix (--forwarder-headers)";
            (r, r)
        }
    };
    tracing::warn!(
        peer = %req.peer.map_or_else(|| "unix socket".to_owned(), |p| p.ip().to_string()),
        method = %req.method,
        path = %req.path,
        "{logged}; answered 500"
    );
    Response::error(500, reason).closing()
}

fn timeout_response() -> Response {
    Response::text(504, "Gateway Timeout\n")
}

impl Handler for WsgiApp {
    fn call(&self, req: Request, ctx: Ctx) -> impl std::future::Future<Output = Response> + Send {
        let inner = self.inner.clone();
        async move {
            if let Some(fault) = inner.state.template.mount_fault(&req) {
                return mount_fault_answer(&req, fault);
            }
            match (ctx.wait, ctx.deadline) {
                (Wait::Block, None) => inner.call_inline(req),
                (Wait::Block, Some(d)) => inner.call_pooled_blocking(req, d),
                (Wait::Yield, d) => match inner.hub.clone() {
                    Some(hub) => inner.call_hub(&hub, req, d).await,
                    None => inner.call_pooled_async(req, d).await,
                },
            }
        }
    }

    /// Python runs on the app's own pool (or gevent hub), never on the event loop's threads.
    fn runs_own_threads(&self) -> bool {
        true
    }

    /// Under the `async` class: the pool's threads less the requests in flight, and whether the
    /// app's recent requests held their thread for long ([`SLOW`]). (A gevent hub runs every
    /// request in flight at once: no limit short of `--worker-connections`, which the semaphore
    /// itself holds.)
    fn capacity(&self) -> Option<Capacity> {
        let inner = &self.inner;
        if inner.hub.is_some() {
            return None;
        }
        let in_flight = inner.max_in_flight - inner.in_flight.available_permits();
        let busy = in_flight + inner.busy.streaming.load(Ordering::Acquire);
        Some(Capacity {
            free: inner.pool_size.saturating_sub(busy),
            slow: inner.held_ns.load(Ordering::Relaxed) > SLOW.as_nanos() as u64,
        })
    }

    fn capacity_freed(&self) -> impl std::future::Future<Output = ()> + Send {
        let inner = self.inner.clone();
        async move { inner.busy.freed.notified().await }
    }

    fn script_name(&self) -> &str {
        self.inner.state.template.script_name()
    }
}

/// A relative `--venv` is where it was typed (`--venv .venv --chdir myproject`: the .venv beside
/// myproject), so it is made absolute before `--chdir` moves the process.
fn absolute_venv(venv: Option<&std::path::Path>) -> Result<Option<std::path::PathBuf>, BootError> {
    match venv {
        Some(v) if v.is_relative() => Ok(Some(
            std::env::current_dir()
                .map_err(|e| {
                    BootError::Environment(format!("cannot read the current directory: {e}"))
                })?
                .join(v),
        )),
        v => Ok(v.map(ToOwned::to_owned)),
    }
}
