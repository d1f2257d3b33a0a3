//! `--reload`, gunicorn's developer reloader: a worker whose application's files change finishes
//! its in-flight requests and exits, and the master starts a fresh process that imports the new
//! code.
//!
//! What is watched, as in gunicorn's `reloader.py`: the file of every module in `sys.modules`
//! (`.pyc` read as its `.py`), the `--reload-extra-file` files, and the glob patterns among them
//! (`*`, `?`, `[`) expanded again on every look, so a file created later is watched too. When the
//! application could not be imported for a `SyntaxError`, the worker serves a 500 carrying the
//! traceback instead of failing to boot ([`fail_app`]) and watches the broken file, so saving the
//! fix reloads.
//!
//! The key design decision is **where this runs**: on a plain OS thread of its own — never a
//! tokio thread, and never a greenlet, since under `gevent` the standard library's `threading` is
//! monkey-patched and a Python thread would be one; this one is started by Rust. It attaches to
//! the interpreter only for a moment, to read `sys.modules` when the count of modules has
//! changed since its last look, and stats the files (or reads inotify events) without the GIL.
//!
//! **An edit made while the worker imports.** A watcher's first look records the files as they
//! are then, but the worker may have read a module before that: an edit saved in between (a
//! second save right after the one that reloaded; Django takes a second or two to import) would
//! be seen as the starting state and never reload, leaving the old code running (gunicorn's
//! reloader has this gap). So the first look also reloads for a module's file (or a broken
//! file) whose status changed after the worker began loading Python. Status change time
//! (`ctime`), not modification time: a write, a rename over the file or a `touch` sets it to the
//! real time, while a modification time can be set anywhere (`touch -d`, an archive's times),
//! and a future one would reload every fresh worker again. `--reload-extra-file`s are left out:
//! an app may write a watched asset while it starts, which would reload it without end.
//!
//! Engines: `poll` stats every file once a second and reloads when one's modification time, size
//! or inode differs from what it saw first (a replaced file counts, in either direction of time);
//! `inotify` watches the files' directories through the kernel and reloads on an event naming a
//! watched file — unlike gunicorn's, an editor's swap file or a SQLite database written beside
//! the code reloads nothing — once the directory has been quiet for a moment, so an editor's
//! save in several steps (rename away, write anew) is seen finished. `auto` is inotify, or poll
//! where inotify cannot be had (`poll.rs`, `inotify.rs`).

mod inotify;
mod poll;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use self::inotify::Inotify;
use self::poll::Poll;

/// How often the poll engine looks, and the inotify engine re-reads `sys.modules` (gunicorn's
/// interval).
const INTERVAL: Duration = Duration::from_secs(1);

/// How file changes are noticed (`--reload-engine`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// inotify where the kernel gives it, else poll.
    Auto,
    /// Stat every watched file once a second.
    Poll,
    /// Kernel events on the watched files' directories (Linux).
    Inotify,
}

/// `--reload`'s settings.
#[derive(Clone)]
pub struct Reload {
    pub engine: Engine,
    /// `--reload-extra-file`: files, and glob patterns (`*`, `?`, `[`; `**` recurses) expanded
    /// on every look. Relative ones are taken from the directory the worker started in, before
    /// `--chdir`, as gunicorn takes them.
    pub extra_files: Vec<String>,
    /// Called once, on the watcher's thread, when a watched file changed: the worker should
    /// finish its in-flight requests and exit, so that the master starts a fresh one.
    pub on_change: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reload")
            .field("engine", &self.engine)
            .field("extra_files", &self.extra_files)
            .finish_non_exhaustive()
    }
}

/// Whether an extra file is a glob pattern (gunicorn's `is_glob_pattern`).
pub fn is_pattern(entry: &str) -> bool {
    entry.contains(['*', '?', '['])
}

/// The application gunicorn's reloader serves when the app has a `SyntaxError`: every request is
/// a 500 whose body is `text` (the traceback). Anyone who can reach the server reads it, which is
/// why `--reload` is for development only.
pub(crate) fn fail_app(py: Python<'_>, text: &str) -> PyResult<Py<PyAny>> {
    const CODE: &std::ffi::CStr = c"
def make(text):
    body = text.encode('utf-8', 'replace')

    def app(environ, start_response):
        start_response('500 Internal Server Error', [
            ('Content-Type', 'text/plain; charset=utf-8'),
            ('Content-Length', str(len(body))),
        ])
        return [body]

    return app
";
    let module = PyModule::from_code(py, CODE, c"c10k_reload.py", c"c10k_reload")?;
    Ok(module.getattr("make")?.call1((text,))?.unbind())
}

/// The file of the app's own module when its import failed (it is not in `sys.modules` then):
/// the file `importlib.util.find_spec` names, looked up only where that imports nothing new (a
/// top-level module, or one whose package is imported), since a package's `__init__` that
/// failed would run again.
pub(crate) fn module_origin(py: Python<'_>, module: &str) -> Option<PathBuf> {
    let find = |py: Python<'_>| -> PyResult<Option<PathBuf>> {
        if let Some((parent, _)) = module.rsplit_once('.') {
            let modules = py.import("sys")?.getattr("modules")?;
            if !modules.contains(parent)? {
                return Ok(None);
            }
        }
        let spec = py
            .import("importlib.util")?
            .call_method1("find_spec", (module,))?;
        if spec.is_none() {
            return Ok(None);
        }
        let origin = spec.getattr("origin")?;
        if origin.is_none() {
            return Ok(None);
        }
        Ok(Some(origin.extract::<PathBuf>()?).filter(|p| p.is_file()))
    };
    find(py).ok().flatten()
}

/// Starts the watcher thread. `cwd` is the directory the worker started in (relative extra
/// files are taken from it); `broken` are files to watch beyond the modules' (the file of a
/// `SyntaxError`); `since` is when the worker began loading Python.
pub(crate) fn spawn(
    reload: &Reload,
    slot: usize,
    cwd: &Path,
    broken: Vec<PathBuf>,
    since: SystemTime,
) -> std::io::Result<()> {
    let mut sources = Sources {
        files: Vec::new(),
        broken,
        patterns: Vec::new(),
        modules_seen: None,
        modules: Vec::new(),
    };
    for entry in &reload.extra_files {
        if is_pattern(entry) {
            sources
                .patterns
                .push(cwd.join(entry).to_string_lossy().into_owned());
        } else {
            sources.files.push(cwd.join(entry));
        }
    }
    let on_change = reload.on_change.clone();
    let engine = reload.engine;
    std::thread::Builder::new()
        .name("c10k-reload".into())
        .spawn(move || watch(sources, engine, slot, since, on_change))
        .map(drop)
}

/// What to watch, gathered again on every look.
struct Sources {
    /// Extra files (absolute).
    files: Vec<PathBuf>,
    /// Files of a `SyntaxError` (absolute).
    broken: Vec<PathBuf>,
    /// Extra-file glob patterns (absolute).
    patterns: Vec<String>,
    /// `len(sys.modules)` at the last look: the module files are listed again when it changes.
    modules_seen: Option<usize>,
    modules: Vec<PathBuf>,
}

impl Sources {
    /// Every file to watch now.
    fn current(&mut self) -> Vec<PathBuf> {
        let seen = self.modules_seen;
        match Python::attach(|py| module_files(py, seen)) {
            Ok(Some((n, files))) => {
                self.modules_seen = Some(n);
                self.modules = files;
            }
            Ok(None) => {}
            Err(e) => tracing::debug!("--reload: cannot read sys.modules: {e}"),
        }
        let mut all = self.code();
        all.extend(self.files.iter().cloned());
        let options = glob::MatchOptions {
            // As Python's glob: `*` does not match a dotfile.
            require_literal_leading_dot: true,
            ..glob::MatchOptions::new()
        };
        for pattern in &self.patterns {
            if let Ok(paths) = glob::glob_with(pattern, options) {
                all.extend(paths.filter_map(Result::ok));
            }
        }
        all
    }

    /// The application's code as last listed: the modules' files and the broken files.
    fn code(&self) -> Vec<PathBuf> {
        let mut code = self.modules.clone();
        code.extend(self.broken.iter().cloned());
        code
    }
}

/// Now, by the clock the kernel stamps files with (`CLOCK_REALTIME_COARSE`, which runs up to a
/// tick, a few milliseconds, behind the precise one): the `since` of [`changed_since`]. By the
/// precise clock, a file changed a moment after `since` could be stamped before it, and an edit
/// made while the worker imports the application would be missed; a worker forked from a zygote
/// starts importing within microseconds of taking it.
pub fn file_clock_now() -> SystemTime {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0 {
        return SystemTime::now() - Duration::from_millis(20);
    }
    match (u64::try_from(ts.tv_sec), u32::try_from(ts.tv_nsec)) {
        (Ok(s), Ok(ns)) => SystemTime::UNIX_EPOCH + Duration::new(s, ns),
        _ => SystemTime::UNIX_EPOCH,
    }
}

/// The first of `files` whose status changed at or after `since` (taken with
/// [`file_clock_now`]; a change in the same tick just before it counts too, which costs one
/// needless reload at most), and not after now: a clock set back would otherwise reload every
/// fresh worker.
fn changed_since(files: &[PathBuf], since: SystemTime) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let now = SystemTime::now();
    files
        .iter()
        .find(|file| {
            let Ok(meta) = std::fs::metadata(file) else {
                return false;
            };
            let Ok(nsec) = u32::try_from(meta.ctime_nsec()) else {
                return false;
            };
            let ctime = u64::try_from(meta.ctime())
                .map(|s| SystemTime::UNIX_EPOCH + Duration::new(s, nsec))
                .unwrap_or(SystemTime::UNIX_EPOCH);
            ctime >= since && ctime <= now
        })
        .cloned()
}

/// The files of the modules in `sys.modules` and how many modules there are, or `None` when
/// there are still `seen` of them (nothing was imported since: no need to list them again).
fn module_files(py: Python<'_>, seen: Option<usize>) -> PyResult<Option<(usize, Vec<PathBuf>)>> {
    let modules = py
        .import("sys")?
        .getattr("modules")?
        .cast_into::<PyDict>()?;
    let n = modules.len();
    if seen == Some(n) {
        return Ok(None);
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    let mut files = Vec::with_capacity(n);
    // `values()` is a list: a module attribute that runs code cannot change what is iterated.
    for module in modules.values() {
        let Ok(Some(file)) = module.getattr_opt("__file__") else {
            continue;
        };
        let Ok(file) = file.extract::<PathBuf>() else {
            continue;
        };
        files.push(cwd.join(source_of(file)));
    }
    Ok(Some((n, files)))
}

/// `x.pyc` → `x.py` (gunicorn's `COMPILED_EXT_RE`): the source is what a developer edits.
fn source_of(file: PathBuf) -> PathBuf {
    match file.extension().and_then(|e| e.to_str()) {
        Some("pyc" | "pyo") => file.with_extension("py"),
        _ => file,
    }
}

/// The watcher thread: looks until a file changed, then reports it and ends.
fn watch(
    mut sources: Sources,
    engine: Engine,
    slot: usize,
    since: SystemTime,
    on_change: Arc<dyn Fn() + Send + Sync>,
) {
    let mut watcher = match engine {
        Engine::Poll => Watcher::Poll(Poll::default()),
        Engine::Auto | Engine::Inotify => match Inotify::new() {
            Ok(i) => Watcher::Inotify(i),
            Err(e) => {
                let log = if engine == Engine::Inotify {
                    "--reload-engine inotify"
                } else {
                    "--reload"
                };
                tracing::warn!("{log}: inotify is not available ({e}); polling files instead");
                Watcher::Poll(Poll::default())
            }
        },
    };
    let mut logged = false;
    let changed = loop {
        // A look: the poll engine stats every file, inotify watches the new ones.
        let files = sources.current();
        // The first look also asks whether the code changed while the worker was loading it.
        if !logged {
            if let Some(file) = changed_since(&sources.code(), since) {
                break (file, " while the worker was loading the application");
            }
        }
        let looked = match &mut watcher {
            Watcher::Poll(p) => Ok(p.check(&files)),
            Watcher::Inotify(i) => i.watch(&files).map(|()| None),
        };
        match looked {
            Ok(Some(file)) => break (file, ""),
            Ok(None) => {}
            Err(e) => watcher = watcher.fall_back(&e, &files),
        }
        if !logged {
            logged = true;
            // After the first look: from here on an edit is noticed.
            tracing::info!(
                slot,
                files = files.len(),
                engine = watcher.name(),
                "--reload: watching the application's files"
            );
        }
        // Until the next look.
        let waited = match &mut watcher {
            Watcher::Poll(_) => {
                std::thread::sleep(INTERVAL);
                Ok(None)
            }
            Watcher::Inotify(i) => i.wait(INTERVAL),
        };
        match waited {
            Ok(Some(file)) => break (file, ""),
            Ok(None) => {}
            Err(e) => watcher = watcher.fall_back(&e, &files),
        }
    };
    let (file, when) = changed;
    tracing::info!(slot, "Worker reloading: {} modified{when}", file.display());
    on_change();
}

enum Watcher {
    Poll(Poll),
    Inotify(Inotify),
}

impl Watcher {
    /// Polling instead of an inotify that failed (a full watch table: `max_user_watches`),
    /// starting from what the files look like now.
    fn fall_back(self, e: &std::io::Error, files: &[PathBuf]) -> Watcher {
        tracing::warn!("--reload: inotify failed ({e}); polling files instead");
        let mut p = Poll::default();
        p.check(files);
        Watcher::Poll(p)
    }

    fn name(&self) -> &'static str {
        match self {
            Watcher::Poll(_) => "poll",
            Watcher::Inotify(_) => "inotify",
        }
    }
}

/// Sets `path`'s modification time `secs` into the future (a test's edit that a coarse clock
/// cannot hide).
#[cfg(test)]
fn bump(path: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(secs))
        .unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_since_reads_the_status_change_not_the_modification_time() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new, gone) = (
            dir.path().join("old.py"),
            dir.path().join("new.py"),
            dir.path().join("gone.py"),
        );
        std::fs::write(&old, "x = 1\n").unwrap();
        // Dated a day ahead before the worker started: not a change since (a modification time
        // would say so to every fresh worker).
        bump(&old, 86_400);
        // The kernel's file times tick coarser than the clock.
        std::thread::sleep(Duration::from_millis(50));
        let since = SystemTime::now();
        assert_eq!(changed_since(&[old.clone(), gone.clone()], since), None);
        std::thread::sleep(Duration::from_millis(50));
        std::fs::write(&new, "y = 1\n").unwrap();
        assert_eq!(changed_since(&[old.clone(), new.clone()], since), Some(new));
        // An older copy put back (`cp -p`, `rsync -t`, a checkout keeping times) is a change,
        // though its modification time is from before the worker started.
        let restored = dir.path().join("restored.py");
        std::fs::write(&restored, "z = 1\n").unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(&restored)
            .unwrap();
        f.set_modified(since - Duration::from_secs(86_400)).unwrap();
        assert_eq!(
            changed_since(&[old, restored.clone()], since),
            Some(restored)
        );
    }

    /// A file changed right after `since` is a change: taken with the precise clock, `since`
    /// was most often later than the file's stamp (the kernel's coarser clock lags it).
    #[test]
    fn a_change_right_after_since_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..20 {
            let file = dir.path().join(format!("m{i}.py"));
            let since = file_clock_now();
            std::fs::write(&file, "x = 1\n").unwrap();
            assert_eq!(
                changed_since(std::slice::from_ref(&file), since),
                Some(file.clone()),
                "round {i}"
            );
        }
    }

    #[test]
    fn patterns_and_compiled_files() {
        assert!(is_pattern("templates/**/*.html") && is_pattern("x?.txt") && is_pattern("[ab]"));
        assert!(!is_pattern("templates/index.html"));
        assert_eq!(
            source_of(PathBuf::from("/a/m.pyc")),
            PathBuf::from("/a/m.py")
        );
        assert_eq!(
            source_of(PathBuf::from("/a/m.so")),
            PathBuf::from("/a/m.so")
        );
    }
}
