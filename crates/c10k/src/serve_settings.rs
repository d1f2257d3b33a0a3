//! `c10k serve`'s settings as one value, built from the parsed command line (flags,
//! `GUNICORN_CMD_ARGS`, `C10K_*` variables) and the `--config` file: once at start, and again on
//! every `SIGHUP` through [`reloader`], so that a reload applies exactly the checks a start does
//! and fails with the same messages (file, line, key; or the flag).
//!
//! What a reload reads again is the file. The command line is the one the master was started
//! with, as gunicorn keeps `sys.argv`; so is the environment (`GUNICORN_CMD_ARGS`, `C10K_*`,
//! `PORT`, `WEB_CONCURRENCY`): nothing outside a running process can change its environment, so
//! reading it again would give the same values. The matches parsed at start are therefore kept
//! and layered over the file's new text; precedence is the start's.

use std::path::{Path, PathBuf};

use c10k_bench::UsageError;
use c10k_serve::{Reload, Reloaded, ServeConfig};
use clap::{ArgMatches, Args};

use crate::builtin::AppArgs;
use crate::logging::LogArgs;
use crate::python::PythonArgs;
use crate::settings::{given, layered, resolve_serve, ConfigFile};

/// Every setting of `c10k serve`, checked.
pub struct Settings {
    /// The `--config` file as read (its text goes to the workers).
    pub file: Option<ConfigFile>,
    pub log: LogArgs,
    pub serve: ServeConfig,
    pub app: AppArgs,
    pub python: PythonArgs,
    /// For the start-up log: the gunicorn flags c10k's behaviour already satisfies.
    pub notes: Vec<String>,
    /// Where `--root-path` came from when `SCRIPT_NAME` gave it.
    pub root_path_from: Option<&'static str>,
}

/// Builds the settings from `sub` (the `serve` subcommand's matches) and the `--config` file at
/// `config`, read now. Every error is a usage error naming the flag, or the file, line and key.
pub fn build(sub: &ArgMatches, config: Option<&Path>) -> anyhow::Result<Settings> {
    let usage = |e: c10k_serve::config::ConfigError| UsageError::new(e.to_string());
    // A Python config runs with the workers' Python: --venv from the command line or
    // C10K_VENV (the file cannot choose the Python it is run with).
    let venv = sub.get_one::<PathBuf>("venv").map(PathBuf::as_path);
    let file = config
        .map(|path| ConfigFile::load(path, venv))
        .transpose()
        .map_err(usage)?;
    if let Some(file) = &file {
        file.refuse_keys(crate::gunicorn::refuse_key)
            .map_err(usage)?;
        file.check_keys(&[
            ServeConfig::augment_args(clap::Command::new("serve")),
            AppArgs::augment_args(clap::Command::new("serve")),
            PythonArgs::augment_args(clap::Command::new("serve")),
            LogArgs::augment_args(clap::Command::new("serve")),
        ])
        .map_err(usage)?;
    }
    let log: LogArgs = layered(sub, file.as_ref()).map_err(usage)?;
    log.validate().map_err(UsageError::new)?;
    let notes =
        crate::gunicorn::satisfied_notes(sub, |key| file.as_ref().is_some_and(|f| f.contains(key)))
            .map_err(UsageError::new)?;
    let serve = resolve_serve(sub, file.as_ref()).map_err(usage)?;
    let mut app: AppArgs = layered(sub, file.as_ref()).map_err(usage)?;
    app.store_chosen = ["data_dir", "database"]
        .iter()
        .any(|id| given(sub, id) || file.as_ref().is_some_and(|f| f.contains(id)));
    app.validate().map_err(UsageError::new)?;
    let mut python: PythonArgs = layered(sub, file.as_ref()).map_err(usage)?;
    python.app_module = sub.get_one::<String>("app_module").cloned();
    let root_path_set =
        given(sub, "root_path") || file.as_ref().is_some_and(|f| f.contains("root_path"));
    let mut root_path_from = None;
    if python.spec().is_some() && !root_path_set {
        root_path_from = python
            .root_path_from_script_name()
            .map_err(UsageError::new)?;
    }
    python.validate().map_err(UsageError::new)?;
    Ok(Settings {
        file,
        log,
        serve,
        app,
        python,
        notes,
        root_path_from,
    })
}

impl Settings {
    /// What serving needs beyond [`build`]'s checks (`--check-config` prints gevent with the
    /// built-in app, as it prints any class): the gevent class, `--reload` and `--preload` are
    /// for Python apps only, and `--preload` does not go with `--reload`.
    pub fn check_servable(&self) -> anyhow::Result<()> {
        if self.python.spec().is_none()
            && self.serve.worker_class == c10k_serve::WorkerClass::Gevent
        {
            return Err(UsageError::new(
                "--worker-class gevent runs a Python WSGI application (c10k serve -k gevent \
                 MODULE:APP); the built-in application is already asynchronous: use \
                 --worker-class async",
            )
            .into());
        }
        if self.python.spec().is_none() && self.python.reload {
            return Err(UsageError::new(
                "--reload restarts the workers of a hosted Python application when its files \
                 change (c10k serve --reload MODULE:APP); the built-in application is part of \
                 the c10k binary: after a new build, restart the server or send the master \
                 SIGUSR2 to upgrade to the new binary",
            )
            .into());
        }
        if self.python.preload_app {
            let why = if self.python.spec().is_none() {
                Some(
                    "it imports a hosted Python application once, before the workers are \
                     forked (c10k serve --preload MODULE:APP); the built-in application has \
                     nothing to import",
                )
            } else if self.python.reload {
                Some(
                    "--reload restarts a worker that imports the changed code, and a preloaded \
                     application is imported once, before the workers: use --reload without \
                     --preload in development (in production, HUP imports the application \
                     again with --preload)",
                )
            } else {
                None
            };
            if let Some(why) = why {
                return Err(UsageError::new(format!("--preload: {why}")).into());
            }
        }
        Ok(())
    }
}

/// The master's `SIGHUP` hook: [`build`] again with the matches of the start and the file read
/// anew. The new workers get the file's new text (see [`ConfigFile::for_workers`]). The log
/// settings (`--error-log`, `--capture-output`) stay those of `start`: the master's own log
/// and standard streams were set up once, so a change is logged as needing a restart, and the
/// start's values reach the new workers as `C10K_*` variables, which rank above the file.
pub fn reloader(sub: ArgMatches, config: Option<PathBuf>, start: &Settings) -> Reload {
    let start_log = start.log.clone();
    Box::new(move || {
        let new = build(&sub, config.as_deref())?;
        new.check_servable()?;
        let mut worker_env = Vec::new();
        if let Some(file) = &new.file {
            tracing::info!("SIGHUP: {}", file.describe());
            for warning in file.warnings() {
                tracing::warn!("{warning}");
            }
            worker_env.extend(file.for_workers());
        }
        if new.log != start_log {
            tracing::warn!(
                "SIGHUP: --error-log/--capture-output changed: needs a restart (USR2); the \
                 log stays where it is"
            );
            worker_env.push((
                "C10K_ERROR_LOG".into(),
                start_log.error_log.clone().unwrap_or_else(|| "-".into()),
            ));
            worker_env.push((
                "C10K_CAPTURE_OUTPUT".into(),
                start_log.capture_output.to_string(),
            ));
        }
        Ok(Reloaded {
            config: new.serve,
            worker_env,
        })
    })
}
