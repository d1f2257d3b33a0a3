//! The `gevent` worker class's executor: one gevent hub per worker process, on its own OS thread,
//! running each request in a greenlet.
//!
//! c10k's Rust event loop (the `async` class's) accepts, parses and writes every connection;
//! gevent's sockets never see a client. A request is handed to the hub as a [`Call`] through a
//! queue plus an eventfd that an io watcher on the hub watches (`hub.py`): the watcher's callback
//! runs in the hub greenlet and only schedules, one greenlet per request (finished greenlets are
//! reused for later requests: a new one costs CPython an mmap and munmap of its frame stack). The
//! greenlet calls the app itself, from Python, with the environ and `start_response` Rust made
//! ([`HubCall`]), so no Rust frame sits on its stack while the app waits. With
//! `gevent.monkey.patch_all()` applied before the app was imported, the app's `time.sleep`,
//! sockets and locks yield to the hub; when it returns, Rust turns its answer into the response
//! and completes a oneshot the event loop awaits — nothing on the hub ever blocks on Rust.
//!
//! Answers go back in batches: a finished greenlet queues its response ([`Hub::answer`]) and the
//! hub wakes the event loop once, after the greenlets runnable in that loop iteration have run;
//! one task on the event loop (hub_handle.rs's `deliver`) then completes each request's oneshot
//! there. Waking the event loop per answer cost a write to its eventfd and, on a busy CPU, a
//! context switch per request.
//!
//! Streamed bodies are pulled, not pushed: the Rust writer asks for the next chunk only when the
//! previous one has been written, and each `next()` (and the final `close()`) is one more job on
//! the hub ([`crate::stream::PoolStream`] with a hub runner), run in the greenlet that ran the view
//! ([`own`]: greenlet-local state such as Django's database connection must be the view's). A
//! slow client therefore holds one chunk in memory and one parked greenlet. Data the view gives
//! the legacy `write()` is pushed instead, while it runs: its head goes out through the same
//! answer queue ([`Hub::flush_answers`]), and `write()` waits on a gevent event, yielding to the
//! hub, while the client is slow (see write.rs).
//!
//! `--request-timeout`: the job's greenlet arms a `gevent.Timeout` for what is left of the
//! deadline, so the view is interrupted at its next cooperative wait and its iterable closed, and
//! the client gets a 504 (from whichever side sees the deadline first). A request whose waiting
//! future goes away (the server's own timer, shutdown) has its greenlet killed with `GreenletExit`.
//!
//! The app is imported on the hub's thread too ([`Hub::start`]), once its hub is made, as
//! gunicorn's gevent worker imports on the thread that serves: a thread the app starts at import
//! (patched: a greenlet) belongs to the serving hub and runs. Meanwhile `signal.signal`, which
//! CPython allows only on the main thread, is recorded there and made by the main thread after
//! the import (`hub.py`'s `defer_signals`).
//!
//! This folder is what runs on the hub thread (and the boot-time set-up of gevent); the handle that
//! any other thread uses to reach the hub ([`Hub`]: its queue of tasks, a body's [`Owner`], the
//! answers' way back) is hub_handle.rs, which names nothing of it.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Instant;

use crossbeam_channel as chan;
use pyo3::prelude::*;

use crate::body::into_response;
use crate::boot_error::BootError;
use crate::call::{self, Outcome, Started};
use crate::hub_handle::{lock, Call, Hub, Owner, Shared, Slot, Task};
use crate::pool::Job;
use crate::start_response::StartResponse;
use crate::stream::{PoolStream, Runner};
use crate::traceback::format_exception;
use crate::write::Reply;

const HUB_PY: &str = include_str!("hub.py");

/// The hub's Python helpers, compiled once.
fn module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    static MODULE: pyo3::sync::PyOnceLock<Py<PyModule>> = pyo3::sync::PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || {
            let code = std::ffi::CString::new(HUB_PY)
                .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
            Ok(PyModule::from_code(py, &code, c"c10k_gevent_hub.py", c"c10k_gevent_hub")?.unbind())
        })
        .map(|m| m.bind(py).clone())
}

/// Checks that gevent is importable and, unless `monkey_patch` is false, patches the standard
/// library. Runs before the app is imported. gevent's own warnings (ssl or threading imported
/// before patching) go to the log.
pub(crate) fn prepare(py: Python<'_>, monkey_patch: bool) -> Result<(), BootError> {
    if let Err(e) = py.import("gevent") {
        let prefix = py
            .import("sys")
            .and_then(|s| s.getattr("prefix"))
            .map(|p| p.to_string())
            .unwrap_or_default();
        return Err(if e.is_instance_of::<pyo3::exceptions::PyImportError>(py) {
            BootError::Environment(format!(
                "--worker-class gevent needs the gevent package in the application's Python \
                 environment (sys.prefix {prefix}), and it is not installed there: \
                 `{prefix}/bin/pip install gevent`, or choose --worker-class async or gthread"
            ))
        } else {
            BootError::Exception {
                spec: "gevent".into(),
                traceback: format_exception(py, &e),
            }
        });
    }
    if !monkey_patch {
        tracing::info!("--no-monkey-patch: the application patches the standard library itself");
        return Ok(());
    }
    let warnings = module(py)
        .and_then(|m| m.getattr("patch")?.call0())
        .and_then(|w| w.extract::<Vec<String>>())
        .map_err(|e| BootError::Exception {
            spec: "gevent.monkey.patch_all()".into(),
            traceback: format_exception(py, &e),
        })?;
    for w in warnings {
        tracing::warn!("gevent: {}", w.trim_end());
    }
    Ok(())
}

/// Calls `hub.py`'s function `name` without arguments, while the worker boots; a failure is a
/// boot error of `spec`.
fn boot_step(py: Python<'_>, name: &str, spec: &str) -> Result<(), BootError> {
    module(py)
        .and_then(|m| m.getattr(name)?.call0())
        .map(drop)
        .map_err(|e| BootError::Exception {
            spec: spec.into(),
            traceback: format_exception(py, &e),
        })
}

/// On the main thread, after gevent is imported and before the hub's thread starts: frees
/// gevent's default loop for the hub (`hub.py`'s `note_main_hub` and `own_hub`). Under
/// `--preload` the zygote calls it after patching and after the import; it returns whether
/// there was a hub to destroy.
pub(crate) fn note_main_hub(py: Python<'_>) -> Result<bool, BootError> {
    module(py)
        .and_then(|m| m.getattr("note_main_hub")?.call0()?.extract::<bool>())
        .map_err(|e| BootError::Exception {
            spec: "gevent".into(),
            traceback: format_exception(py, &e),
        })
}

/// Under `--preload`, after the import in the zygote: how many greenlets the import started that
/// are alive or waiting to start (`hub.py`'s `started_at_import`).
pub(crate) fn started_at_import(py: Python<'_>) -> Result<usize, BootError> {
    module(py)
        .and_then(|m| m.getattr("started_at_import")?.call0()?.extract::<usize>())
        .map_err(|e| BootError::Exception {
            spec: "gevent".into(),
            traceback: format_exception(py, &e),
        })
}

/// On the main thread, once the hub's thread has imported the app: the `signal.signal` calls
/// the import made there, which CPython allows only here (`hub.py`'s `defer_signals`).
pub(crate) fn apply_deferred_signals(py: Python<'_>) -> Result<(), BootError> {
    boot_step(py, "apply_deferred_signals", "signal.signal at import")
}

/// The running request greenlet, kept for the steps of its streamed body (`hub.py`'s `own`):
/// every `next()` and the `close()` run in it, in its `contextvars.Context`, so what the
/// generator keeps per greenlet (`threading.local` when patched: Django's database connection
/// and its open transaction) is the view's, as under gunicorn's gevent worker. Dropping the
/// owner (the body is done) releases the greenlet.
pub(crate) fn own(py: Python<'_>, hub: Hub) -> Owner {
    let owned = module(py)
        .and_then(|m| m.getattr("own")?.call0())
        .map_err(|e| tracing::error!("gevent: {}", format_exception(py, &e)))
        .ok();
    Owner {
        hub,
        owned: owned.map(|o| Arc::new(o.unbind())),
    }
}

impl Hub {
    /// Starts the hub's thread, which makes its hub, runs `boot` (the app's import) and then
    /// serves; returns what `boot` returned once it has. The interpreter is started and gevent
    /// imported (`prepare`, `note_main_hub`).
    pub(crate) fn start<T: Send + 'static>(
        boot: impl for<'py> FnOnce(Python<'py>) -> Result<T, BootError> + Send + 'static,
    ) -> Result<(Hub, T), BootError> {
        // SAFETY: plain syscall; the result is checked and owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(BootError::Environment(format!(
                "cannot create the gevent hub's eventfd: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let (tx, rx) = chan::unbounded();
        let hub = Hub {
            shared: Arc::new(Shared {
                tx,
                rx,
                fd,
                notified: AtomicBool::new(false),
                answers: Mutex::new(Vec::new()),
                deliverer: Mutex::new(None),
                delivering: Once::new(),
            }),
        };
        let shared = hub.shared.clone();
        let (booted_tx, booted) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("c10k-gevent-hub".into())
            .spawn(move || run_hub(shared, boot, booted_tx))
            .map_err(|e| BootError::Environment(format!("cannot start the gevent hub: {e}")))?;
        match booted.recv() {
            Ok(loaded) => loaded.map(|t| (hub, t)),
            Err(_) => Err(BootError::Environment(
                "the gevent hub's thread stopped while it loaded the application".into(),
            )),
        }
    }
}

/// On the hub's thread: its hub first (gevent's default loop), so that a greenlet the import
/// spawns (a patched `threading.Thread`: a scheduler, a metrics pusher) is the serving hub's
/// and runs once it serves, as under gunicorn's gevent worker; then `boot` with `signal.signal`
/// deferred to the main thread.
fn boot_here<T>(
    py: Python<'_>,
    boot: impl for<'py> FnOnce(Python<'py>) -> Result<T, BootError>,
) -> Result<T, BootError> {
    boot_step(py, "own_hub", "gevent")?;
    boot_step(py, "defer_signals", "gevent")?;
    let booted = boot(py);
    let undone = boot_step(py, "undo_defer_signals", "gevent");
    let t = booted?;
    undone?;
    Ok(t)
}

/// The hub's thread: attached to Python for good, it loads the app (telling [`Hub::start`] how
/// that went) and runs `hub.serve` until the process exits.
fn run_hub<T>(
    shared: Arc<Shared>,
    boot: impl for<'py> FnOnce(Python<'py>) -> Result<T, BootError>,
    booted: std::sync::mpsc::SyncSender<Result<T, BootError>>,
) {
    let fd = shared.fd.as_raw_fd();
    let served = crate::interp::attach(|py| {
        let loaded = boot_here(py, boot);
        let ok = loaded.is_ok();
        if booted.send(loaded).is_err() || !ok {
            // The main thread reports the boot error and the worker exits.
            return None;
        }
        Some(serve(py, shared, fd))
    });
    let Some(result) = served else { return };
    let why = result.err().unwrap_or_else(|| "it returned".into());
    tracing::error!("the gevent hub stopped; the worker exits: {why}");
    // Requests would wait forever: let the master start a fresh worker.
    std::process::exit(1);
}

/// Runs `hub.py`'s `serve`, which returns only if something broke.
fn serve(py: Python<'_>, shared: Arc<Shared>, fd: i32) -> Result<(), String> {
    let queue = Py::new(py, Queue { shared }).map_err(|e| e.to_string())?;
    let (call_type, job_type) = (py.get_type::<HubCall>(), py.get_type::<HubJob>());
    module(py)
        .and_then(|m| m.getattr("serve")?.call1((fd, queue, call_type, job_type)))
        .map(drop)
        .map_err(|e| format_exception(py, &e))
}

/// The jobs to run (a [`HubCall`] or a [`HubJob`] each) and the requests whose greenlets to kill.
type Taken = (Vec<Py<PyAny>>, Vec<Py<Doomed>>);

/// What `hub.py` drains when the eventfd is readable.
#[pyclass(frozen, module = "c10k")]
struct Queue {
    shared: Arc<Shared>,
}

#[pymethods]
impl Queue {
    /// Wakes `deliver` (hub_handle.rs) when answers are queued: once per batch of greenlets, not
    /// per answer.
    fn flush(&self) {
        Hub {
            shared: self.shared.clone(),
        }
        .flush_answers();
    }

    /// The jobs to spawn and the greenlets to kill, queued since the last call.
    fn take(&self, py: Python<'_>) -> PyResult<Taken> {
        // Cleared before draining: a task queued after this point writes the eventfd again.
        self.shared.notified.store(false, Ordering::Release);
        let mut jobs = Vec::new();
        let mut doomed = Vec::new();
        while let Ok(task) = self.shared.rx.try_recv() {
            match task {
                Task::Call {
                    call,
                    deadline,
                    slot,
                } => jobs.push(
                    Py::new(
                        py,
                        HubCall {
                            call: Mutex::new(Some(call)),
                            started: Mutex::new(None),
                            deadline,
                            slot,
                            hub: Hub {
                                shared: self.shared.clone(),
                            },
                        },
                    )?
                    .into_any(),
                ),
                Task::Run { job, context, last } => jobs.push(
                    Py::new(
                        py,
                        HubJob {
                            work: Mutex::new(Some(job)),
                            context: context.map(|c| c.clone_ref(py)),
                            last,
                        },
                    )?
                    .into_any(),
                ),
                Task::Kill(slot) => doomed.push(Py::new(py, Doomed { slot })?),
            }
        }
        Ok((jobs, doomed))
    }
}

/// A request given up on, whose greenlet `hub.py` kills if it is still running that request when
/// the kill's turn comes (greenlets are reused: by then it may be serving another).
#[pyclass(frozen, module = "c10k")]
struct Doomed {
    slot: Arc<Slot>,
}

#[pymethods]
impl Doomed {
    /// The greenlet running the request now, or `None` once it has finished (or not started).
    fn greenlet(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        let g = self.slot.greenlet.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref().map(|g| g.clone_ref(py))
    }
}

/// Seconds from now until `deadline` (negative when past), `None` without one.
fn seconds_left(deadline: Option<Instant>) -> Option<f64> {
    let now = Instant::now();
    deadline.map(|d| {
        if d >= now {
            (d - now).as_secs_f64()
        } else {
            -(now - d).as_secs_f64()
        }
    })
}

/// A request's call of the app, made by `hub.py` itself in the request's greenlet: [`begin`]
/// hands it the app, the environ and `start_response`, and [`finish`] (or [`fail`]) takes what
/// the call returned (or raised). No Rust frame is then on the greenlet's stack while the app
/// waits; greenlet copies that stack out at every switch away and back in at every switch back,
/// so a shallower stack is less to copy and less memory per waiting request.
///
/// [`begin`]: HubCall::begin
/// [`finish`]: HubCall::finish
/// [`fail`]: HubCall::fail
#[pyclass(frozen, module = "c10k")]
struct HubCall {
    call: Mutex<Option<Call>>,
    /// Between `begin` and `finish`/`fail` (the request's `Done` is in its `start_response`,
    /// for `write()`, until then).
    started: Mutex<Option<Started>>,
    deadline: Option<Instant>,
    slot: Arc<Slot>,
    hub: Hub,
}

impl HubCall {
    /// Turns the call's outcome into the request's answer; the greenlet is no longer killable.
    fn complete(&self, py: Python<'_>, result: PyResult<Bound<'_, PyAny>>) {
        let started = lock(&self.started).take();
        if let Some(started) = started {
            let finished = std::panic::catch_unwind(AssertUnwindSafe(|| {
                match call::finish(py, started, result) {
                    Outcome::Answer(called, Reply::Hub { done, hub }) => {
                        // A streamed body's steps run in this greenlet (see `own`).
                        let resp = into_response(called, |first, body| {
                            let runner = Runner::Hub(own(py, hub));
                            Box::pin(PoolStream::new(first, body, runner))
                        });
                        done(py, resp)
                    }
                    Outcome::Answer(..) => {}
                    // `write()` sent the answer; the rest of the body is stepped in this
                    // greenlet, as an iterable's (see `own`).
                    Outcome::Sent(tail) => {
                        if let Some(tail) = tail {
                            let runner = Runner::Hub(own(py, self.hub.clone()));
                            tail.attach(|body| {
                                Box::pin(PoolStream::new(VecDeque::new(), body, runner))
                            });
                        }
                    }
                }
            }));
            if finished.is_err() {
                tracing::error!("a greenlet's request panicked");
            }
        }
        let g = lock(&self.slot.greenlet).take();
        drop(g);
    }
}

#[pymethods]
impl HubCall {
    /// Seconds until the deadline (negative when past), `None` without one.
    fn seconds_left(&self) -> Option<f64> {
        seconds_left(self.deadline)
    }

    /// `(app, environ, start_response)` for the calling greenlet (`greenlet`: it, for a kill) to
    /// call; `None` when there is nothing to call: the request was given up on, or its environ
    /// could not be made (then it is answered already).
    #[allow(clippy::type_complexity)]
    fn begin<'py>(
        &self,
        py: Python<'py>,
        greenlet: Py<PyAny>,
    ) -> Option<(
        Py<PyAny>,
        Bound<'py, pyo3::types::PyDict>,
        Py<StartResponse>,
    )> {
        if self.slot.cancelled.load(Ordering::Acquire) {
            return None;
        }
        let Call { state, req, done } = lock(&self.call).take()?;
        let reply = Reply::Hub {
            done,
            hub: self.hub.clone(),
        };
        match call::start(py, &state, req, reply) {
            Ok((environ, started)) => {
                *lock(&self.slot.greenlet) = Some(greenlet);
                let sr = started.start_response().clone_ref(py);
                *lock(&self.started) = Some(started);
                Some((state.app.clone_ref(py), environ, sr))
            }
            Err((resp, reply)) => {
                if let Reply::Hub { done, .. } = reply {
                    let answered = AssertUnwindSafe(|| done(py, resp));
                    if std::panic::catch_unwind(answered).is_err() {
                        tracing::error!("a greenlet's request panicked");
                    }
                }
                None
            }
        }
    }

    /// The app returned `result`.
    fn finish(&self, py: Python<'_>, result: Bound<'_, PyAny>) {
        self.complete(py, Ok(result));
    }

    /// The app raised `exc` (logged, the client's 500).
    fn fail(&self, py: Python<'_>, exc: Bound<'_, PyAny>) {
        self.complete(py, Err(PyErr::from_value(exc)));
    }
}

/// A step of a streamed body, run by `hub.py` in the greenlet that owns the body.
#[pyclass(frozen, module = "c10k")]
struct HubJob {
    work: Mutex<Option<Job>>,
    context: Option<Py<PyAny>>,
    last: bool,
}

#[pymethods]
impl HubJob {
    /// The body's owner (`hub.py`'s `Owned`: its greenlet and `contextvars.Context`), or `None`.
    fn context(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.context.as_ref().map(|c| c.clone_ref(py))
    }

    /// The owner's release: no step follows.
    #[getter]
    fn last(&self) -> bool {
        self.last
    }

    /// Runs the job in the calling greenlet.
    fn run(&self, py: Python<'_>) {
        let work = lock(&self.work).take();
        if let Some(work) = work {
            if std::panic::catch_unwind(AssertUnwindSafe(|| work(py))).is_err() {
                tracing::error!("a greenlet's job panicked");
            }
        }
    }
}
