//! The embedded interpreter: started once per process, and attached once per OS thread.
//!
//! **Starting.** `Py_InitializeFromConfig` with `PyConfig.program_name` set to the venv's
//! `bin/python`: Python's own path calculation then reads the venv's `pyvenv.cfg`, so `sys.prefix`
//! is the venv and its `site-packages` is on `sys.path` whatever `PATH` holds (the binary finds the
//! right `libpython` through the rpath added at build time). Python's signal handlers are not
//! installed: the worker's signals belong to c10k.
//!
//! **Attaching.** PyO3's `Python::attach` on a thread with no Python thread state creates one and
//! destroys it when the closure returns, which would reset every `threading.local` on each request.
//! [`attach`] first gives the calling thread a permanent thread state (one `PyGILState_Ensure`
//! that is only released when the thread exits), so later attaches just take the GIL. A thread
//! that exits (a retired `-k thread` thread) is followed by a garbage collection, which frees what
//! its `threading.local` values held in reference cycles, such as Django's database connection;
//! it runs on a thread of its own a moment later ([`collect_after_exits`]), so a stopping worker
//! whose threads all exit at once is not held up by it.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, Once, OnceLock};
use std::time::Duration;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::boot_error::BootError;

/// Where the interpreter was started from, for the boot log.
#[derive(Clone, Debug)]
pub struct Started {
    /// `sys.prefix` (the venv when one is used).
    pub prefix: String,
    /// `sys.version`, first line.
    pub version: String,
}

static STARTED: Mutex<Option<Started>> = Mutex::new(None);

/// Starts the interpreter if this process has not yet (later calls return the first result).
/// `venv`: see [`crate::config::WsgiConfig::venv`].
pub fn start(venv: Option<&Path>) -> Result<Started, BootError> {
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = started.as_ref() {
        return Ok(s.clone());
    }
    let program = python_program(venv)?;
    // SAFETY: called once per process (guarded by STARTED), before any other Python API use.
    unsafe { initialize(program.as_deref())? };
    let info = Python::attach(|py| -> PyResult<Started> {
        let sys = py.import("sys")?;
        let prefix: String = sys.getattr("prefix")?.extract()?;
        let version: String = sys.getattr("version")?.extract()?;
        let version = version.lines().next().unwrap_or_default().to_owned();
        let mark = install_forget_dummy(py).unwrap_or_else(|e| {
            tracing::warn!(
                "cannot arrange for exiting threads to leave threading.active_count(): {e}"
            );
            None
        });
        let _ = MARK_THREAD.set(mark);
        Ok(Started { prefix, version })
    })
    .map_err(|e| BootError::Interpreter(e.to_string()))?;
    *started = Some(info.clone());
    Ok(info)
}

/// `mark()`, called on each thread's first attach ([`mark_thread`]): `None` on Python 3.12+,
/// which does the same itself.
static MARK_THREAD: OnceLock<Option<Py<PyAny>>> = OnceLock::new();

/// What CPython 3.12 does for a thread it did not start (gh-102512's `_DeleteDummyThreadOnDel`),
/// for 3.8-3.11: `threading.current_thread()` there (logging calls it for every record) puts a
/// `_DummyThread` in `threading._active` that nothing removes, so after c10k's threads exit
/// (a retired `-k thread` thread, an idle pool thread) `threading.active_count()` and
/// `threading.enumerate()` still counted them. A `_thread._local` value made on each thread's
/// first attach is dropped when its thread state is cleared at exit, and takes the thread's dummy
/// out. The `_thread` functions are taken before gevent can patch them.
const FORGET_DUMMY: &CStr = c"
import threading
import _thread

_local = _thread._local()
_get_ident = _thread.get_ident
_active = threading._active
_lock = threading._active_limbo_lock
_Dummy = threading._DummyThread


class _Forget:
    __slots__ = ('ident',)

    def __init__(self, ident):
        self.ident = ident

    def __del__(self):
        with _lock:
            if isinstance(_active.get(self.ident), _Dummy):
                del _active[self.ident]


def mark():
    _local.forget = _Forget(_get_ident())
";

fn install_forget_dummy(py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
    if py.version_info() >= (3, 12) {
        return Ok(None);
    }
    let module = PyModule::from_code(py, FORGET_DUMMY, c"<c10k>", c"_c10k_threads")?;
    Ok(Some(module.getattr("mark")?.unbind()))
}

/// Arranges for this thread's `threading._DummyThread`, if it gets one, to go when the thread
/// exits (see [`FORGET_DUMMY`]). Call it once per thread, attached.
pub(crate) fn mark_thread(py: Python<'_>) {
    if let Some(Some(mark)) = MARK_THREAD.get() {
        if let Err(e) = mark.call0(py) {
            e.print(py);
        }
    }
}

/// The interpreter's `program_name`: `<venv>/bin/python` for `--venv` or `$VIRTUAL_ENV`, else the
/// `python3` found on `PATH` (`None` when there is none: Python's compiled-in prefix is used).
/// Public so that the binary can run the same Python as a program (a gunicorn config file is
/// evaluated with it) and refuse the same venvs, with the same messages.
pub fn python_program(venv: Option<&Path>) -> Result<Option<PathBuf>, BootError> {
    let from_env = std::env::var_os("VIRTUAL_ENV")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let (venv, flag) = match (venv, from_env) {
        (Some(v), _) => (Some(v.to_path_buf()), "--venv"),
        (None, Some(v)) => (Some(v), "$VIRTUAL_ENV"),
        (None, None) => (None, ""),
    };
    let Some(venv) = venv else {
        return Ok(which("python3"));
    };
    let candidates = ["python3", "python"].map(|n| venv.join("bin").join(n));
    let Some(python) = candidates.iter().find(|p| p.exists()).cloned() else {
        // A venv's python is a link to the interpreter it was made from. Unreachable — that
        // Python removed or upgraded, or under a directory `--user` cannot enter (`/root`) —
        // it is not "missing": say where the link points and why it cannot be followed.
        let dangling = candidates.iter().find_map(|p| {
            let target = std::fs::read_link(p).ok()?;
            let why = std::fs::metadata(p).err()?;
            Some(format!(
                "{flag} {}: bin/{} links to {}, which cannot be reached ({why}; as uid {});                  recreate the venv with a Python that exists and that user can read",
                venv.display(),
                p.file_name().unwrap_or_default().to_string_lossy(),
                target.display(),
                // SAFETY: geteuid has no preconditions.
                unsafe { libc::geteuid() }
            ))
        });
        return Err(BootError::Environment(dangling.unwrap_or_else(|| {
            format!(
                "{flag} {}: no bin/python3 in it (create one with `python3 -m venv {}`)",
                venv.display(),
                venv.display()
            )
        })));
    };
    if let Some(version) = venv_version(&venv) {
        let linked = linked_version();
        if !linked.is_empty() && !version.starts_with(&format!("{linked}.")) && version != linked {
            return Err(BootError::Environment(format!(
                "{flag} {} is Python {version}, but this c10k embeds Python {linked}; create the \
                 venv with Python {linked}, or rebuild c10k with PYO3_PYTHON={}",
                venv.display(),
                python.display()
            )));
        }
    }
    Ok(Some(python))
}

/// `version = 3.11.7` from the venv's `pyvenv.cfg` (`version_info` on newer venvs).
fn venv_version(venv: &Path) -> Option<String> {
    let text = std::fs::read_to_string(venv.join("pyvenv.cfg")).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        matches!(k.trim(), "version" | "version_info").then(|| v.trim().to_owned())
    })
}

/// `3.11`: the major.minor of the libpython this binary runs with.
fn linked_version() -> String {
    // SAFETY: Py_GetVersion returns a static string and may be called before initialisation.
    let v = unsafe { CStr::from_ptr(ffi::Py_GetVersion()) };
    let v = v.to_string_lossy();
    let num = v.split_whitespace().next().unwrap_or_default();
    let mut parts = num.split('.');
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => format!("{a}.{b}"),
        _ => String::new(),
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// # Safety
/// Once per process, before any other use of the Python C API.
unsafe fn initialize(program: Option<&Path>) -> Result<(), BootError> {
    let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
    // SAFETY: PyConfig_InitPythonConfig fully initialises the struct.
    let mut config = unsafe {
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        config.assume_init()
    };
    config.install_signal_handlers = 0;
    // No "-c"/argv parsing: sys.argv is just the program.
    config.parse_argv = 0;
    let result = (|| {
        if let Some(program) = program {
            let c = CString::new(program.as_os_str().as_bytes()).map_err(|_| {
                BootError::Environment("the python path contains a NUL byte".into())
            })?;
            // SAFETY: config is initialised; program_name is a field of it.
            let status = unsafe {
                ffi::PyConfig_SetBytesString(&mut config, &mut config.program_name, c.as_ptr())
            };
            check(status)?;
        }
        // SAFETY: config is initialised and the interpreter is not (caller's contract).
        check(unsafe { ffi::Py_InitializeFromConfig(&config) })
    })();
    // SAFETY: config was initialised above.
    unsafe { ffi::PyConfig_Clear(&mut config) };
    result?;
    // This thread holds the GIL and keeps its thread state for good; release the GIL.
    // SAFETY: the interpreter is initialised and this thread holds the GIL.
    unsafe { ffi::PyEval_SaveThread() };
    Ok(())
}

fn check(status: ffi::PyStatus) -> Result<(), BootError> {
    // SAFETY: status was returned by the C API.
    if unsafe { ffi::PyStatus_Exception(status) } == 0 {
        return Ok(());
    }
    let msg = if status.err_msg.is_null() {
        "unknown error".to_owned()
    } else {
        // SAFETY: err_msg is a static C string when set.
        unsafe { CStr::from_ptr(status.err_msg) }
            .to_string_lossy()
            .into_owned()
    };
    Err(BootError::Interpreter(msg))
}

/// Puts `dirs` at the front of `sys.path`, in order, skipping ones already there.
pub(crate) fn prepend_sys_path(py: Python<'_>, dirs: &[PathBuf]) -> PyResult<()> {
    let sys_path = py.import("sys")?.getattr("path")?.cast_into::<PyList>()?;
    for (i, d) in dirs.iter().enumerate() {
        let s = d.to_string_lossy();
        if sys_path.contains(&*s)? {
            continue;
        }
        sys_path.insert(i, &*s)?;
    }
    Ok(())
}

/// A thread's permanent Python thread state; released when the thread exits.
struct ThreadState {
    tstate: *mut ffi::PyThreadState,
    gstate: ffi::PyGILState_STATE,
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        // SAFETY: the pair below mirrors the Ensure/SaveThread of `attach`; this runs on the
        // thread that made them, which holds no GIL now (no attach is active during TLS teardown).
        unsafe {
            ffi::PyEval_RestoreThread(self.tstate);
            ffi::PyGILState_Release(self.gstate);
        }
        // The main thread's state goes only as the process exits: nothing to free for anyone.
        if !is_main_thread() {
            thread_exited();
        }
    }
}

/// Called once a thread's Python state is gone (its `threading.local` values dropped): the
/// collector thread frees what they held in reference cycles (see [`collect_after_exits`]). A
/// thread that attaches with `Python::attach` for its whole life (a pool thread) calls it after
/// that attach has returned, and [`start_collector`] before.
pub(crate) fn thread_exited() {
    let mut garbage = GARBAGE.lock().unwrap_or_else(|e| e.into_inner());
    *garbage = true;
    EXITED.notify_one();
}

fn is_main_thread() -> bool {
    // SAFETY: getpid and gettid have no preconditions.
    unsafe { libc::getpid() == libc::gettid() }
}

/// Set when a thread's locals were cleared after the last collection began.
static GARBAGE: Mutex<bool> = Mutex::new(false);
/// Wakes the collector thread when [`GARBAGE`] is set.
static EXITED: Condvar = Condvar::new();
/// Starts the collector thread with the first thread that attaches.
static COLLECTOR: Once = Once::new();
/// How long the collector lets the rest of a burst of exits come before it collects.
const SETTLE: Duration = Duration::from_secs(1);

/// The collector thread: frees what exited threads' `threading.local` values held in reference
/// cycles. Releasing a thread state drops those values, but a Django database wrapper points at
/// its helpers and they at it, so only the cyclic collector closes its connection
/// (`CONN_MAX_AGE`): in a quiet worker, which allocates nothing that would run the collector,
/// never. (The gevent hub does the same for its greenlets, see `gevent/hub.py`.)
///
/// A full collection of a Django worker takes some 20-30 ms. It used to run in the exiting thread,
/// going round again while others exited: a stopping `-k gthread --threads 50` worker, whose
/// threads all exit at once, ran three in a row, and TERM to exit took 290 ms instead of 219
/// (median of 11 runs, Django; up to 432 ms), though all they free dies with the process. Here
/// the exits only set [`GARBAGE`]; this thread waits [`SETTLE`] for the rest of the burst, then
/// collects once for all of them, and a stopping worker has exited by then. Every exit is still
/// followed by a collection that begins after its locals are gone. An app that disabled gc is
/// respected (PyGC_Collect does nothing then).
fn collect_after_exits() {
    loop {
        {
            let mut garbage = GARBAGE.lock().unwrap_or_else(|e| e.into_inner());
            while !*garbage {
                garbage = EXITED.wait(garbage).unwrap_or_else(|e| e.into_inner());
            }
        }
        std::thread::sleep(SETTLE);
        *GARBAGE.lock().unwrap_or_else(|e| e.into_inner()) = false;
        // SAFETY: this thread never holds the GIL otherwise; Ensure gives it a fresh thread
        // state for the collection and Release deletes it again.
        unsafe {
            let gstate = ffi::PyGILState_Ensure();
            ffi::PyGC_Collect();
            ffi::PyGILState_Release(gstate);
        }
    }
}

/// Starts [`collect_after_exits`] once per process, from a thread that attaches (never from an
/// exiting one).
pub(crate) fn start_collector() {
    COLLECTOR.call_once(|| {
        let started = std::thread::Builder::new()
            .name("c10k-py-gc".into())
            .spawn(collect_after_exits);
        if let Err(e) = started {
            tracing::warn!(
                "cannot start the thread that collects after Python threads exit ({e}): their \
                 locals' reference cycles wait for Python's own collector"
            );
        }
    });
}

thread_local! {
    static THREAD_STATE: RefCell<Option<ThreadState>> = const { RefCell::new(None) };
}

/// `Python::attach`, but the calling thread keeps its Python thread state (and so its
/// `threading.local` values) from one call to the next. The interpreter must be started.
pub fn attach<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    let new = THREAD_STATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        // SAFETY: PyGILState_Check is always safe once the interpreter is started; a thread that
        // already holds the GIL (a nested attach) is left as it is.
        if cell.is_none() && unsafe { ffi::PyGILState_Check() } == 0 {
            if !is_main_thread() {
                start_collector();
            }
            // SAFETY: the thread holds no GIL; Ensure takes it (creating the thread state), and
            // SaveThread releases it again while the state stays registered for this thread.
            unsafe {
                let gstate = ffi::PyGILState_Ensure();
                let tstate = ffi::PyEval_SaveThread();
                *cell = Some(ThreadState { tstate, gstate });
            }
            return true;
        }
        false
    });
    Python::attach(|py| {
        if new {
            mark_thread(py);
        }
        f(py)
    })
}

/// `fork(2)` as Python's `os.fork()` does it: `PyOS_BeforeFork` first (it takes the import lock
/// and runs `os.register_at_fork`'s `before` hooks), then `PyOS_AfterFork_Child` in the child
/// (the GIL and the thread states made again for the one thread left, and the `after_in_child`
/// hooks, such as `random`'s reseeding) or `PyOS_AfterFork_Parent` in the parent. Returns 0 in
/// the child and its pid in the parent. The interpreter must be started, and the process should
/// have no other thread: the child gets only this one.
pub fn fork() -> std::io::Result<libc::pid_t> {
    attach(|_py| {
        // SAFETY: this thread holds the GIL, as the PyOS_*Fork functions require.
        unsafe {
            ffi::PyOS_BeforeFork();
            let pid = libc::fork();
            let error = std::io::Error::last_os_error();
            if pid == 0 {
                ffi::PyOS_AfterFork_Child();
            } else {
                ffi::PyOS_AfterFork_Parent();
            }
            if pid < 0 {
                Err(error)
            } else {
                Ok(pid)
            }
        }
    })
}

/// What a Python process does on its way out, for a worker that exits without finalising the
/// interpreter (finalising with pool threads, a gevent hub or a stuck view still attached is not
/// safe): runs the `atexit` handlers — `logging.shutdown` flushes the app's log handlers there,
/// and libraries flush metrics, close pools, remove pid files — then flushes `sys.stdout` and
/// `sys.stderr`, whose buffered `print()` output would otherwise be lost. An exception in a
/// handler is printed by `atexit` itself and does not stop the others. Does nothing if the
/// interpreter was never started.
pub fn run_exit_handlers() {
    if STARTED.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
        return;
    }
    attach(exit_handlers);
}

/// [`run_exit_handlers`] on a thread that holds the GIL (the gevent hub's, see
/// [`crate::WsgiApp::run_exit_handlers`]).
pub(crate) fn exit_handlers(py: Python<'_>) {
    let run = |py: Python<'_>| -> PyResult<()> {
        py.import("atexit")?.call_method0("_run_exitfuncs")?;
        Ok(())
    };
    if let Err(e) = run(py) {
        e.print(py);
    }
    for stream in ["stdout", "stderr"] {
        if let Ok(s) = py.import("sys").and_then(|sys| sys.getattr(stream)) {
            if !s.is_none() {
                let _ = s.call_method0("flush");
            }
        }
    }
}
