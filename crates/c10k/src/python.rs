//! `c10k serve APP_MODULE`: hosting a Python WSGI application (Flask, Django) instead of the
//! built-in one — its settings (gunicorn's names: `--chdir`, `--pythonpath`, `--env`; plus
//! `--venv` and `--root-path`) and the factory each worker process calls.
//!
//! Python support is the `python` cargo feature (on by default). Without it the settings still
//! parse, so `c10k serve app:x` can say how to get a build that hosts Python apps.

use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};

pub(crate) fn key_value(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((k, _)) if !k.is_empty() && !k.contains('\0') => Ok(s.to_owned()),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Settings of a hosted Python WSGI application.
#[derive(Clone, Debug, Default, Args, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct PythonArgs {
    /// A Python WSGI application to serve instead of the built-in one: MODULE:CALLABLE
    /// (myproject.wsgi:application, app:app, app:create_app()), as gunicorn takes it.
    #[arg(value_name = "APP_MODULE", help_heading = "Python (WSGI)")]
    #[serde(skip)]
    pub app_module: Option<String>,

    /// The WSGI application, as APP_MODULE (config key `app`).
    #[arg(
        long = "app",
        env = "C10K_APP",
        value_name = "MODULE:CALLABLE",
        help_heading = "Python (WSGI)"
    )]
    pub app: Option<String>,

    /// Change to this directory before loading the application (it goes on sys.path, first
    /// after the --pythonpath directories).
    #[arg(
        long,
        env = "C10K_CHDIR",
        value_name = "DIR",
        help_heading = "Python (WSGI)"
    )]
    pub chdir: Option<PathBuf>,

    /// Directories to put in front of sys.path, comma-separated.
    #[arg(
        long,
        env = "C10K_PYTHONPATH",
        value_name = "DIRS",
        value_delimiter = ',',
        help_heading = "Python (WSGI)"
    )]
    pub pythonpath: Vec<PathBuf>,

    /// The virtual environment the application runs in (its site-packages). Default:
    /// $VIRTUAL_ENV, else the python3 on PATH.
    #[arg(
        long,
        env = "C10K_VENV",
        value_name = "DIR",
        help_heading = "Python (WSGI)"
    )]
    pub venv: Option<PathBuf>,

    /// Set an environment variable for the application (os.environ). Repeat for several.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = key_value,
          help_heading = "Python (WSGI)")]
    pub env: Vec<String>,

    /// The URL prefix the application is mounted at (WSGI SCRIPT_NAME), e.g. /api. Default:
    /// SCRIPT_NAME from --env SCRIPT_NAME=... or the environment, as gunicorn takes it.
    #[arg(
        long,
        env = "C10K_ROOT_PATH",
        value_name = "PATH",
        default_value = "",
        help_heading = "Python (WSGI)"
    )]
    pub root_path: String,

    /// Import the application once, in the process the workers are forked from, instead of in
    /// each worker (gunicorn's --preload; config key preload_app): workers start sooner and
    /// share the modules' memory. What the app opens at import (a database connection, a
    /// socket) is then shared by every worker, and a thread it starts makes c10k start the
    /// workers by exec instead, each importing the app. Not with -k gevent or --reload; HUP
    /// imports the application again.
    #[arg(long = "preload", env = "C10K_PRELOAD", help_heading = "Python (WSGI)")]
    pub preload_app: bool,

    /// With --worker-class gevent: do not call gevent.monkey.patch_all() before importing the
    /// application (for apps that patch the standard library themselves).
    #[arg(long, env = "C10K_NO_MONKEY_PATCH", help_heading = "Python (WSGI)")]
    pub no_monkey_patch: bool,

    /// Restart a worker when a file of its application changes (every module it imported, and
    /// the --reload-extra-file files), for development: it finishes its requests and exits, and
    /// the master starts a fresh one that imports the new code. A SyntaxError is then served as
    /// a 500 with its traceback (to anyone who can reach the server) until the file is fixed.
    #[arg(long, env = "C10K_RELOAD", help_heading = "Python (WSGI)")]
    pub reload: bool,

    /// How --reload notices a change: inotify (kernel events), poll (a look at every file each
    /// second), or auto (inotify where the kernel gives it, else poll).
    #[arg(
        long,
        env = "C10K_RELOAD_ENGINE",
        value_enum,
        default_value_t = ReloadEngine::Auto,
        value_name = "ENGINE",
        help_heading = "Python (WSGI)"
    )]
    pub reload_engine: ReloadEngine,

    /// With --reload, also watch this file (templates, configuration); a glob pattern (*, ?,
    /// [...], ** to recurse) is expanded again on every look. Repeat, or separate with commas.
    /// Config key: reload_extra_files.
    #[arg(
        long = "reload-extra-file",
        env = "C10K_RELOAD_EXTRA_FILE",
        value_name = "FILE",
        value_delimiter = ',',
        help_heading = "Python (WSGI)"
    )]
    pub reload_extra_files: Vec<String>,
}

/// `--reload-engine`, gunicorn's names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadEngine {
    #[default]
    Auto,
    Poll,
    Inotify,
}

impl PythonArgs {
    /// The application spec, from APP_MODULE or `--app`/`C10K_APP`/`app`.
    pub fn spec(&self) -> Option<&str> {
        self.app_module
            .as_deref()
            .or(self.app.as_deref())
            .filter(|s| !s.is_empty())
    }

    pub fn validate(&self) -> Result<(), String> {
        if let (Some(a), Some(b)) = (&self.app_module, &self.app) {
            if a != b {
                return Err(format!(
                    "two applications given: APP_MODULE {a:?} and --app/C10K_APP {b:?}; keep one"
                ));
            }
        }
        if !self.root_path.is_empty() && !self.root_path.starts_with('/') {
            return Err(format!(
                "--root-path {:?}: must start with /, e.g. /api",
                self.root_path
            ));
        }
        if let Some(dir) = &self.chdir {
            if !dir.is_dir() {
                return Err(format!("--chdir {}: not a directory", dir.display()));
            }
        }
        if let Some(dir) = &self.venv {
            if !dir.is_dir() {
                return Err(format!("--venv {}: not a directory", dir.display()));
            }
        }
        // As gunicorn: a file must exist, a pattern may match nothing yet.
        for file in &self.reload_extra_files {
            if !reload_pattern(file) && !std::path::Path::new(file).exists() {
                return Err(format!("--reload-extra-file {file}: no such file"));
            }
        }
        Ok(())
    }

    /// What the master says about `--reload` at start: its warning, and a note for extra files
    /// that do nothing without it.
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub fn reload_notes(&self) -> Vec<String> {
        if self.reload {
            vec![format!(
                "Reloader is on ({} engine): workers restart when the application's files \
                 change. Use in development only!",
                match self.reload_engine {
                    ReloadEngine::Auto => "auto",
                    ReloadEngine::Poll => "poll",
                    ReloadEngine::Inotify => "inotify",
                }
            )]
        } else if !self.reload_extra_files.is_empty() {
            vec!["--reload-extra-file does nothing without --reload".to_owned()]
        } else {
            Vec::new()
        }
    }

    /// gunicorn's mount point when `--root-path` is not set: `SCRIPT_NAME` from `--env
    /// SCRIPT_NAME=...` (the last one), else from c10k's own environment — gunicorn reads
    /// `os.environ["SCRIPT_NAME"]`, which `-e` and a systemd unit or Dockerfile `ENV` both set.
    /// Without this, a project moved from gunicorn with either was served at `/` without a word:
    /// its `/prefix/...` URLs were 404s and Django's `reverse()` left the prefix out. Returns
    /// where the value came from, for the start-up log.
    pub fn root_path_from_script_name(&mut self) -> Result<Option<&'static str>, String> {
        let from_env_flag = self
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k == "SCRIPT_NAME")
            .map(|(_, v)| v.to_owned())
            .next_back();
        let (value, source) = match from_env_flag {
            Some(v) => (v, "--env SCRIPT_NAME"),
            None => match std::env::var_os("SCRIPT_NAME") {
                Some(v) => (v.to_string_lossy().into_owned(), "SCRIPT_NAME"),
                None => return Ok(None),
            },
        };
        if value.is_empty() {
            return Ok(None);
        }
        if !value.starts_with('/') {
            return Err(format!(
                "{source}={value:?}: c10k takes it as --root-path, as gunicorn takes SCRIPT_NAME, \
                 and it must start with /, e.g. /api"
            ));
        }
        self.root_path = value;
        Ok(Some(source))
    }

    /// The settings as TOML (`--check-config`, the debug log), the app under its key `app`
    /// however it was given: APP_MODULE is no key of its own.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        shown.app = self.spec().map(str::to_owned);
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Whether a `--reload-extra-file` is a glob pattern (gunicorn's `is_glob_pattern`; the same
/// test as `c10k_wsgi::reload::is_pattern`, written here for the build without Python).
fn reload_pattern(entry: &str) -> bool {
    entry.contains(['*', '?', '['])
}

#[cfg(feature = "python")]
pub use enabled::{factory, forking};

#[cfg(feature = "python")]
mod enabled {
    use std::sync::Arc;

    use c10k_serve::{Forking, Hosted, WorkerInfo};
    // A direct dependency so that build.rs can ask pyo3-build-config for libpython's rpath.
    use c10k_wsgi::{Reload, WsgiApp, WsgiConfig};
    use pyo3 as _;

    use super::{PythonArgs, ReloadEngine};

    /// How the workers are forked: the zygote starts the interpreter (the venv's, as a worker
    /// would) and forks them with Python's fork hooks; each worker then imports the app itself,
    /// as gunicorn's workers do without `--preload`. With it, the zygote imports the app (for
    /// `gevent` workers, patched) and the workers take it from there.
    pub fn forking(args: &PythonArgs, gevent: bool) -> Forking {
        let prepare: Box<dyn FnOnce() -> anyhow::Result<()>> = if args.preload_app {
            let config = config(args);
            Box::new(move || Ok(WsgiApp::preload(&config, gevent)?))
        } else {
            let venv = args.venv.clone();
            Box::new(move || Ok(WsgiApp::prestart(venv.as_deref())?))
        };
        Forking {
            prepare,
            fork: c10k_wsgi::interp::fork,
        }
    }

    /// The app's settings, as `c10k_wsgi` takes them.
    fn config(args: &PythonArgs) -> WsgiConfig {
        WsgiConfig {
            app: args.spec().unwrap_or_default().to_owned(),
            chdir: args.chdir.clone(),
            pythonpath: args.pythonpath.clone(),
            venv: args.venv.clone(),
            env: args
                .env
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            root_path: args.root_path.clone(),
            max_stuck_threads: None,
            pool_thread_idle: None,
            no_monkey_patch: args.no_monkey_patch,
            // Retiring is what SIGHUP does to a worker: finish in-flight requests, exit, and the
            // master starts a fresh process.
            recycle: Some(Arc::new(|| {
                // SAFETY: kill on our own pid with a signal the worker handles.
                unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
            })),
            reload: args.reload.then(|| Reload {
                engine: match args.reload_engine {
                    ReloadEngine::Auto => c10k_wsgi::ReloadEngine::Auto,
                    ReloadEngine::Poll => c10k_wsgi::ReloadEngine::Poll,
                    ReloadEngine::Inotify => c10k_wsgi::ReloadEngine::Inotify,
                },
                extra_files: args.reload_extra_files.clone(),
                // Retiring, as --max-requests and HUP do (every request that reaches the
                // worker is answered, and the siblings and the successor take the listen
                // queue), except that an idle keep-alive connection closes at once instead of
                // after one more answer from the stale code: a browser's refresh then meets
                // the new code, as under gunicorn's reloader (`Phase::Reloading`).
                on_change: Arc::new(|| {
                    if !c10k_serve::retire_for_reload() {
                        // Only workers start a watcher (`--check-config` loads without one).
                        tracing::warn!("--reload: not in a worker process; nothing to retire");
                    }
                }),
            }),
        }
    }

    /// Boots the app in a worker process. A boot error is the worker's "failed to boot" (exit
    /// status 3), with the Python traceback in the message.
    pub fn factory(args: &PythonArgs, info: &WorkerInfo) -> anyhow::Result<Hosted<WsgiApp>> {
        let config = config(args);
        let app = Arc::new(WsgiApp::boot(&config, info)?);
        // The app's `atexit` handlers run when the worker exits normally, as in gunicorn.
        let exiting = app.clone();
        Ok(Hosted::new(app).with_at_exit(move || exiting.run_exit_handlers()))
    }
}

/// Without the `python` feature, what `c10k serve MODULE:APP` says: that this build cannot host
/// Python, and how to get a build that can. (Compiled in both builds so that its unit test runs in
/// the default one; `tests/no_python.rs` checks the no-Python binary prints it.)
#[cfg_attr(feature = "python", allow(dead_code))]
pub fn not_built(spec: &str) -> String {
    format!(
        "cannot serve {spec}: this c10k was built without Python support (the cargo feature \
         `python`, on by default); rebuild it with default features, e.g. \
         `cargo install --path crates/c10k`, or add `--features python` (needs python3 with its \
         shared libpython at build time)"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_no_python_message_says_how_to_get_python_support() {
        let m = super::not_built("flask_app:app");
        assert!(m.starts_with("cannot serve flask_app:app: "), "{m}");
        for needle in [
            "without Python support",
            "`python`",
            "cargo install --path crates/c10k",
            "--features python",
            "libpython",
        ] {
            assert!(m.contains(needle), "{needle:?} missing from: {m}");
        }
    }
}
