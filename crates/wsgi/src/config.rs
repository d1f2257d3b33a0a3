//! [`WsgiConfig`]: how to find and host the application, as the command line gives it.

use std::path::PathBuf;
use std::sync::Arc;

use crate::reload::Reload;

/// How to find and host the application; the command line's `APP_MODULE`, `--chdir`,
/// `--pythonpath`, `--venv`, `--env` and `--root-path`.
#[derive(Clone, Default)]
pub struct WsgiConfig {
    /// `module:callable`, `module` (callable `application`), or `module:factory(args)`.
    pub app: String,
    /// Change to this directory before importing (it also goes on `sys.path`, first after the
    /// `pythonpath` directories).
    pub chdir: Option<PathBuf>,
    /// Directories put in front of `sys.path`.
    pub pythonpath: Vec<PathBuf>,
    /// The virtual environment whose `site-packages` the app uses; `None`: `$VIRTUAL_ENV`, else the
    /// `python3` on `PATH`. A relative path is taken from the directory the worker started in,
    /// not from `chdir`.
    pub venv: Option<PathBuf>,
    /// Environment variables set in the app's `os.environ` before it is imported.
    pub env: Vec<(String, String)>,
    /// The mount point (`SCRIPT_NAME`), e.g. `/api`; empty for the root.
    pub root_path: String,
    /// Python threads that may be stuck past `--request-timeout` before the worker asks to be
    /// recycled; `None`: as many as the worker has threads.
    pub max_stuck_threads: Option<usize>,
    /// How long a Python thread that runs the blocking classes' requests with a
    /// `--request-timeout` may wait for one before it exits (`None`: 30 s, the `thread` class's
    /// connection threads' time). Settable for tests.
    pub pool_thread_idle: Option<std::time::Duration>,
    /// `--no-monkey-patch`: under `--worker-class gevent`, do not call `gevent.monkey.patch_all()`
    /// before importing the app (it patches itself).
    pub no_monkey_patch: bool,
    /// Called once when more Python threads are stuck than tolerated: the worker should finish
    /// what it is doing and exit, so the master replaces it with a fresh process.
    pub recycle: Option<Arc<dyn Fn() + Send + Sync>>,
    /// `--reload`: watch the application's files and call its `on_change` when one changes;
    /// a `SyntaxError` at import is then served as a 500 instead of failing the boot (see
    /// [`reload`]).
    pub reload: Option<Reload>,
}

impl std::fmt::Debug for WsgiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsgiConfig")
            .field("app", &self.app)
            .field("chdir", &self.chdir)
            .field("pythonpath", &self.pythonpath)
            .field("venv", &self.venv)
            .field("env", &self.env)
            .field("root_path", &self.root_path)
            .field("max_stuck_threads", &self.max_stuck_threads)
            .field("pool_thread_idle", &self.pool_thread_idle)
            .field("no_monkey_patch", &self.no_monkey_patch)
            .field("reload", &self.reload)
            .finish_non_exhaustive()
    }
}
