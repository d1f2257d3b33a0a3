//! The command-line definition and the glue from parsed flags to each subsystem.

use std::path::PathBuf;

use anyhow::Context;
use c10k_serve::ServeConfig;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use c10k_bench::UsageError;

use crate::builtin::AppArgs;
use crate::logging::LogArgs;
use crate::python::PythonArgs;

/// c10k: an application server whose concurrency model is a flag, and the tools to measure it.
#[derive(Debug, Parser)]
#[command(name = "c10k", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log level filter (error, warn, info, debug, trace, or a tracing directive); gunicorn's
    /// warning and critical are warn and error.
    #[arg(long, global = true, env = "C10K_LOG", default_value = "info")]
    log_level: String,

    /// Log line format: text, or json (one object per line, for log shippers).
    #[arg(long, global = true, env = "C10K_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the application server under a chosen worker class: the built-in app, or a Python
    /// WSGI app given as APP_MODULE (`c10k serve app:app`, as `gunicorn app:app`).
    // A flag given twice takes its last value, as gunicorn's argparse does (a wrapper script's
    // `exec gunicorn --workers 2 "$@"` run with `--workers 4`); flags that take a list
    // (`--bind`, `--env`, ...) keep every value.
    #[command(after_long_help = SERVE_AFTER_HELP, args_override_self = true)]
    Serve(Box<ServeArgs>),
    /// Load-test an HTTP server: ApacheBench's flags and report, as fast as wrk.
    Bench(Box<c10k_bench::cli::BenchArgs>),
    /// Reproduce the seed's results table on this machine: every worker class × workload ×
    /// concurrency, direct and behind nginx, with plots.
    Lab(c10k_lab::LabArgs),
    /// Show what a running server is doing, from its admin listener (SHOW PROCESSLIST/STATUS).
    Status(StatusArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// The server's admin address (its --admin): HOST:PORT or unix:/path.
    #[arg(
        long,
        global = true,
        env = "C10K_ADMIN",
        default_value = "127.0.0.1:9191"
    )]
    admin: c10k_serve::BindAddr,

    /// The server's --admin-token, sent as `Authorization: Bearer TOKEN`.
    #[arg(
        long,
        global = true,
        env = "C10K_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,

    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    view: StatusView,
}

#[derive(Debug, Subcommand)]
enum StatusView {
    /// Every open connection and in-flight request across all workers (SHOW PROCESSLIST).
    Processlist,
    /// Connection, queue, request and byte counters (SHOW STATUS).
    Counters {
        /// Only counters whose name matches this SQL LIKE pattern (% and _ wildcards,
        /// case-insensitive), e.g. '%connect%'.
        #[arg(long)]
        like: Option<String>,
    },
    /// A summary and the processlist, refreshed like top until Ctrl-C.
    Watch {
        /// Seconds between refreshes.
        #[arg(long, short = 'n', default_value = "1")]
        interval: f64,
        /// Stop after this many refreshes.
        #[arg(long)]
        count: Option<u64>,
    },
}

const SERVE_AFTER_HELP: &str = "\
Worker classes (how many requests one worker runs at once):
  sync     1: a request holds the worker from start to finish (gunicorn sync, Flask's default).
  thread   one OS thread per connection, up to --worker-connections (Flask threaded=True).
  gthread  --threads: a fixed thread pool; idle keep-alive connections hold no thread.
  async    up to --worker-connections: waits yield to an event loop (gevent, monkey-patched).
  gevent   Python apps, up to --worker-connections: each request in a greenlet (monkey-patched).

Every flag (but -e/--env and --check-config) can also be set as C10K_<FLAG> (C10K_WORKERS=4)
or in the --config TOML file (workers = 4; env = [\"K=V\"] for -e), and gunicorn's
GUNICORN_CMD_ARGS holds extra flags (shell-quoted): the command line wins over GUNICORN_CMD_ARGS
(a flag given in both takes the command line's value, whole), which wins over C10K_* variables,
which win over the file.";

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Read settings from this file: TOML (keys are the long flag names), or a gunicorn config
    /// in Python (FILE.py, python:MODULE), run with the app's Python. Default:
    /// ./gunicorn.conf.py if there is one, as gunicorn reads it.
    #[arg(short, long, env = "C10K_CONFIG", help_heading = "Config")]
    config: Option<PathBuf>,

    /// Print the effective configuration as TOML (the database password as ***) and exit; with
    /// APP_MODULE, also load the application, and fail (exit status 1) if it cannot be, as
    /// gunicorn's --check-config does. gunicorn's --print-config is accepted too.
    #[arg(long, alias = "print-config", help_heading = "Config")]
    check_config: bool,

    #[command(flatten)]
    settings: ServeConfig,

    #[command(flatten)]
    app: AppArgs,

    #[command(flatten)]
    python: PythonArgs,

    #[command(flatten)]
    log: LogArgs,

    #[command(flatten)]
    gunicorn_only: crate::gunicorn::GunicornOnly,
}

pub struct Parsed {
    cli: Cli,
    matches: ArgMatches,
    /// The flags taken from `GUNICORN_CMD_ARGS`, and those the command line overrode.
    from_env: Option<(Vec<String>, Vec<String>)>,
    /// gunicorn flags left out for giving the default of a setting c10k lacks (`--protocol
    /// http`), from the command line or `GUNICORN_CMD_ARGS`.
    at_default: Vec<String>,
}

pub fn parse() -> anyhow::Result<Parsed> {
    // Before clap, which would only list c10k's classes for `-k uvicorn.workers.UvicornWorker`.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut from_env = None;
    let mut at_default = Vec::new();
    if let Some(spliced) = crate::cmd_args::splice(
        &Cli::command(),
        &args,
        std::env::var_os(crate::cmd_args::VAR),
    )? {
        args = spliced.args;
        from_env = Some((spliced.used, spliced.overridden));
        at_default = spliced.at_default;
    }
    // gunicorn's flags at the default of a setting c10k lacks (`--protocol http`) ask for
    // nothing: left out before clap, which refuses (or does not know) the flag.
    let mut cmd = Cli::command();
    cmd.build();
    let argv: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if let (Some(at), Some(serve)) = (
        crate::cmd_args::serve_at(&cmd, &argv),
        cmd.find_subcommand("serve"),
    ) {
        let (rest, dropped) = crate::gunicorn_defaults::drop_default_flags(serve, &args[at + 1..]);
        args.truncate(at + 1);
        args.extend(rest);
        at_default.extend(dropped);
    }
    if let Some(msg) = crate::gunicorn::worker_class_arg(&args)
        .as_deref()
        .and_then(crate::gunicorn::refuse_worker_class)
    {
        return Err(UsageError::new(msg).into());
    }
    let matches = boolish_env(Cli::command()).get_matches_from(args);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    Ok(Parsed {
        cli,
        matches,
        from_env,
        at_default,
    })
}

/// Boolean flags read from their environment variable take what environment files write for yes
/// and no (`1`/`0`, `yes`/`no`, `on`/`off`, `true`/`false`: clap's "boolish" values), as uWSGI's
/// `UWSGI_*` variables do; clap's default takes `true` and `false` only. On the command line they
/// stay plain flags.
fn boolish_env(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| {
        if a.get_env().is_some() && matches!(a.get_action(), clap::ArgAction::SetTrue) {
            a.value_parser(clap::builder::BoolishValueParser::new())
        } else {
            a
        }
    })
    .mut_subcommands(boolish_env)
}

pub fn run(parsed: Parsed) -> anyhow::Result<()> {
    let Parsed {
        cli,
        matches,
        from_env,
        at_default,
    } = parsed;
    let mut log_level = gunicorn_level(&cli.log_level);
    let json = cli.log_format == LogFormat::Json;
    if !matches!(cli.command, Command::Serve(_)) {
        crate::logging::init(&log_level, json, crate::logging::Target::stderr())?;
    }
    // Worker processes are this binary started again by the master: they read the level here.
    std::env::set_var("C10K_LOG", &log_level);
    if cli.log_format == LogFormat::Json {
        std::env::set_var("C10K_LOG_FORMAT", "json");
    }
    match cli.command {
        Command::Serve(args) => {
            let sub = matches
                .subcommand_matches("serve")
                .context("serve matches missing")?;
            if let Some(refused) = crate::gunicorn::refuse(sub) {
                return Err(UsageError::new(refused).into());
            }
            let worker = c10k_serve::is_worker_process();
            // gunicorn reads ./gunicorn.conf.py when no -c is given (get_default_config_file).
            let mut unread_default = None;
            let config_path = match &args.config {
                Some(path) => Some(path.clone()),
                None => match crate::pyconfig::default_file() {
                    Some(path) if cfg!(feature = "python") => {
                        // The workers (and a USR2 upgrade) take the same file, even if it is
                        // gone by then: a worker reads its master's text, named by this path.
                        if !worker {
                            std::env::set_var("C10K_CONFIG", &path);
                        }
                        Some(path)
                    }
                    Some(path) => {
                        unread_default = Some(format!(
                            "./{} is not read: {}",
                            path.display(),
                            crate::pyconfig::not_built()
                        ));
                        None
                    }
                    None => None,
                },
            };
            let settings = crate::serve_settings::build(sub, config_path.as_deref())?;
            if let Some(file) = &settings.file {
                if !worker {
                    file.hand_to_workers();
                }
                // A Python file's `loglevel`, unless --log-level or C10K_LOG gave one (the
                // workers get it in C10K_LOG).
                let level_given = matches!(
                    matches.value_source("log_level"),
                    Some(
                        clap::parser::ValueSource::CommandLine
                            | clap::parser::ValueSource::EnvVariable
                    )
                );
                if let (false, Some(level)) = (level_given, file.log_level()) {
                    log_level = gunicorn_level(level);
                    crate::logging::check_level(&log_level).map_err(|e| {
                        UsageError::new(format!(
                            "config file {}: key `loglevel`: {e}",
                            file.path.display()
                        ))
                    })?;
                    std::env::set_var("C10K_LOG", &log_level);
                }
            }
            let log = &settings.log;
            // --check-config only prints: it leaves standard output and error where they are.
            let target = if args.check_config {
                crate::logging::Target::stderr()
            } else {
                crate::logging::open(log, worker)?
            };
            crate::logging::init(&log_level, json, target)?;
            if !worker {
                if let Some((used, overridden)) = &from_env {
                    let mut line = format!(
                        "flags taken from {}: {}",
                        crate::cmd_args::VAR,
                        if used.is_empty() {
                            "none".to_owned()
                        } else {
                            used.join(" ")
                        }
                    );
                    if !overridden.is_empty() {
                        line += &format!(
                            " (overridden by the command line: {})",
                            overridden.join(" ")
                        );
                    }
                    tracing::info!("{line}");
                }
                if !at_default.is_empty() {
                    tracing::info!(
                        "gunicorn flags at gunicorn's default, which ask for nothing c10k \
                         lacks, ignored: {}",
                        at_default.join(" ")
                    );
                }
                for note in &settings.notes {
                    tracing::info!("{note}");
                }
                if let Some(file) = &settings.file {
                    tracing::info!("{}", file.describe());
                    for warning in file.warnings() {
                        tracing::warn!("{warning}");
                    }
                }
                if let Some(w) = &unread_default {
                    tracing::warn!("{w}");
                }
                if log.capture_output && log.error_log.as_deref().unwrap_or("-") == "-" {
                    tracing::warn!(
                        "--capture-output without --error-log FILE changes nothing (as in \
                         gunicorn): the app's output stays on standard output and error"
                    );
                }
                if let Some(source) = settings.root_path_from {
                    tracing::info!(
                        "--root-path {} taken from {source}, as gunicorn does",
                        settings.python.root_path
                    );
                }
            }
            let config = settings.serve.clone();
            if !worker && !args.check_config {
                crate::logging::give_to_workers(log, &config)?;
            }
            // Before --check-config: a check that passes what the start refuses checks nothing.
            settings.check_servable()?;
            let (app, python) = (&settings.app, &settings.python);
            if args.check_config {
                // For people: the database password is shown as ***. Written, not print!ed: a
                // closed pipe (`| head`) must reach main as an error (exit 0), not a panic.
                let mut text =
                    format!("{}{}{}", config.to_toml(), log.to_toml(), app.to_toml(true));
                if python.spec().is_some() {
                    text.push_str(&python.to_toml());
                }
                let mut out = std::io::stdout().lock();
                std::io::Write::write_all(&mut out, text.as_bytes())
                    .and_then(|()| std::io::Write::flush(&mut out))
                    .context("--check-config: cannot write the configuration")?;
                drop(out);
                if let Some(spec) = python.spec() {
                    // As gunicorn's --check-config: the app is loaded too, so one that cannot
                    // be imported fails the check (exit status 1) with its traceback.
                    check_python_app(&config, python, spec)?;
                }
                return Ok(());
            }
            // `SIGHUP` builds the settings again, with the file read anew (see
            // `serve_settings`); a worker never reloads, so it gets none.
            let reload = (!worker).then(|| {
                crate::serve_settings::reloader(sub.clone(), config_path.clone(), &settings)
            });
            if let Some(spec) = python.spec() {
                return serve_python(config, reload, python, spec);
            }
            if !worker {
                crate::builtin::refuse_a_data_dir_in_use(app)?;
                // The banner stays short (gunicorn's); the whole configuration is at debug.
                tracing::debug!(
                    "application: built-in; {}",
                    app.to_toml(true).trim_end().replace('\n', ", ")
                );
            }
            let worker_timeout = config.timeout;
            c10k_serve::run_reloading(config, reload, |info| {
                crate::builtin::factory(app, info, worker_timeout)
            })
        }
        Command::Bench(args) => c10k_bench::cli::run(*args),
        Command::Lab(args) => {
            let exe = std::env::current_exe().context("cannot find the c10k binary")?;
            c10k_lab::run(args, &exe)
        }
        Command::Status(args) => run_status(args),
    }
}

#[cfg(feature = "python")]
fn serve_python(
    config: ServeConfig,
    reload: Option<c10k_serve::Reload>,
    python: &PythonArgs,
    spec: &str,
) -> anyhow::Result<()> {
    if !c10k_serve::is_worker_process() {
        tracing::info!("application: Python WSGI {spec}");
        for note in python.reload_notes() {
            tracing::warn!("{note}");
        }
        tracing::debug!(
            "Python settings: {}",
            python.to_toml().trim_end().replace('\n', ", ")
        );
    }
    let gevent = config.worker_class == c10k_serve::WorkerClass::Gevent;
    let forking = crate::python::forking(python, gevent);
    c10k_serve::run_forking(config, reload, Some(forking), |info| {
        crate::python::factory(python, info)
    })
}

#[cfg(feature = "python")]
fn check_python_app(config: &ServeConfig, python: &PythonArgs, spec: &str) -> anyhow::Result<()> {
    let info = c10k_serve::worker_info(config, 0);
    // A check loads the app once: no watcher, and a SyntaxError fails it, --reload or not.
    let python = PythonArgs {
        reload: false,
        ..python.clone()
    };
    crate::python::factory(&python, &info)
        .map(drop)
        .with_context(|| format!("--check-config: the application {spec} does not load"))
}

#[cfg(not(feature = "python"))]
fn check_python_app(_: &ServeConfig, _: &PythonArgs, spec: &str) -> anyhow::Result<()> {
    Err(UsageError::new(crate::python::not_built(spec)).into())
}

#[cfg(not(feature = "python"))]
fn serve_python(
    _: ServeConfig,
    _: Option<c10k_serve::Reload>,
    _: &PythonArgs,
    spec: &str,
) -> anyhow::Result<()> {
    Err(UsageError::new(crate::python::not_built(spec)).into())
}

fn run_status(args: StatusArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let admin = crate::status::AdminClient {
        addr: args.admin,
        token: args.admin_token,
    };
    let out = match args.view {
        StatusView::Processlist => crate::status::processlist(&admin, args.json)?,
        StatusView::Counters { like } => {
            crate::status::counters(&admin, like.as_deref(), args.json)?
        }
        StatusView::Watch { interval, count } => {
            if !interval.is_finite() || interval <= 0.0 {
                return Err(UsageError::new("--interval must be a number of seconds > 0").into());
            }
            let every = std::time::Duration::from_secs_f64(interval);
            return crate::status::watch(&admin, every, count, args.json);
        }
    };
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(())
}

pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<c10k_serve::BootFailed>().is_some() {
        // gunicorn's WORKER_BOOT_ERROR: the application cannot start, restarting will not help.
        3
    } else if err.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        1
    }
}

/// gunicorn's level names (`--log-level warning`, `critical`) as tracing's; anything else as
/// given. (A bare `warning` would otherwise be read as a tracing target and show nothing.)
fn gunicorn_level(level: &str) -> String {
    match level.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_owned(),
        "critical" => "error".to_owned(),
        _ => level.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `c10k --help` is where a gunicorn user looks first: its `serve` line must say that it
    /// hosts their WSGI app, not only the built-in one (it said "(the built-in app)").
    #[test]
    fn top_level_help_says_serve_hosts_a_wsgi_app() {
        let help = Cli::command().render_help().to_string();
        let serve = help
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("serve"))
            .take_while(|l| !l.trim_start().starts_with("bench"))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(serve.contains("WSGI"), "{serve}");
        assert!(serve.contains("app:app"), "{serve}");
    }
}
