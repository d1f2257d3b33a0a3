//! Where c10k's own log goes: standard error, or gunicorn's `--error-logfile FILE`; and
//! `--capture-output`, which sends the application's standard output and error there too.
//!
//! Worker processes are the binary executed again with the master's arguments (or forked from a
//! zygote that is, for a Python app), so each opens the same file itself (appending: every log
//! line is one `write`, so lines of all processes interleave whole). `--capture-output` is done the way gunicorn does it, by pointing
//! descriptors 1 and 2 at the file (`dup2`) in the master before any worker starts: the workers
//! inherit them, so whatever the app prints (`print()`, `sys.stderr`, a C library) lands in the
//! file, and c10k's own lines reach it through standard error.

use std::fs::File;
use std::sync::Arc;

use anyhow::Context;
use c10k_bench::UsageError;
use clap::Args;
use serde::{Deserialize, Serialize};

/// The log settings of `c10k serve` (a flag, a `C10K_*` variable and a `--config` key each).
#[derive(Clone, Debug, Default, PartialEq, Args, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct LogArgs {
    /// Write c10k's log to FILE (appended) instead of standard error; `-` is standard error.
    /// gunicorn's --error-logfile and --log-file are accepted too.
    #[arg(
        long,
        visible_alias = "error-logfile",
        alias = "log-file",
        env = "C10K_ERROR_LOG",
        value_name = "FILE|-",
        help_heading = "Status"
    )]
    pub error_log: Option<String>,

    /// Send the application's standard output and error (print(), tracebacks it writes itself)
    /// to the --error-log FILE as well, as gunicorn's --capture-output. Python buffers print()
    /// to a file: set PYTHONUNBUFFERED=1 to see lines at once. Without an --error-log FILE it
    /// changes nothing, as in gunicorn.
    #[arg(long, env = "C10K_CAPTURE_OUTPUT", help_heading = "Status")]
    pub capture_output: bool,
}

impl LogArgs {
    /// The file named by `--error-log`, unless it is `-`.
    fn file(&self) -> Option<&str> {
        self.error_log.as_deref().filter(|f| *f != "-")
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.error_log.as_deref() == Some("") {
            return Err("--error-log: needs a file name, or - for standard error".into());
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// With `--user`/`--group`, gives the `--error-log` file to the workers' user, who opens it
/// (as gunicorn does, so that it can still be written).
pub fn give_to_workers(args: &LogArgs, config: &c10k_serve::ServeConfig) -> anyhow::Result<()> {
    let owner = c10k_serve::owner::resolve(config.user.as_deref(), config.group.as_deref())
        .map_err(|(flag, message)| UsageError::new(format!("{flag}: {message}")))?;
    if let (Some(owner), Some(path)) = (owner, args.file()) {
        // Only root may give files away; run_hosted refuses a switch it cannot make.
        if c10k_serve::owner::can_switch(&owner) {
            std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))
                .with_context(|| format!("--user: cannot give --error-log {path} to it"))?;
        }
    }
    Ok(())
}

/// Where log lines are written; `Stderr(false)`: no colour codes, because standard error is not
/// a terminal (the --error-log file, a pipe, journald) or `NO_COLOR` is set.
pub enum Target {
    Stderr(bool),
    File(Arc<File>),
}

impl Target {
    /// Standard error, coloured when a person is likely to read it there.
    pub fn stderr() -> Target {
        Target::Stderr(colours_on_stderr())
    }
}

/// Colour codes only for a person at a terminal: standard error redirected to a file, a pipe,
/// journald or a container's log gets plain lines (as gunicorn writes them), and `NO_COLOR`
/// (no-color.org) turns them off at a terminal too.
fn colours_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Opens `--error-log` and, in the master with `--capture-output`, points standard output and
/// error at it. Returns where c10k's own lines go.
pub fn open(args: &LogArgs, worker: bool) -> anyhow::Result<Target> {
    let Some(path) = args.file() else {
        return Ok(Target::stderr());
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open --error-log {path}"))?;
    // SIGUSR1 reopens it (logrotate), in the master and in every worker.
    let reopen = |fd| c10k_serve::reopen::register(path.as_ref(), fd);
    if args.capture_output {
        if !worker {
            use std::os::fd::AsFd;
            c10k_serve::sys::redirect_stdout_stderr(file.as_fd())
                .with_context(|| format!("--capture-output: cannot redirect to {path}"))?;
        }
        // Standard error is the file now (inherited by a worker).
        reopen(1);
        reopen(2);
        return Ok(Target::Stderr(false));
    }
    {
        use std::os::fd::AsRawFd;
        reopen(file.as_raw_fd());
    }
    Ok(Target::File(Arc::new(file)))
}

/// Installs the global subscriber: `filter` (a level or tracing directives) and `json` lines or
/// text, written to `target`.
pub fn init(filter: &str, json: bool, target: Target) -> anyhow::Result<()> {
    check_level(filter).map_err(UsageError::new)?;
    let level = filter.trim();
    let mut filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| UsageError::new(format!("--log-level {filter:?}: {e}")))?;
    // What the app writes to wsgi.errors (Flask's app.logger, the traceback of each 500) is the
    // app's output, not c10k's, and gunicorn writes it whatever --log-level says. Its lines are
    // warnings, so `--log-level error` (or `critical`) hid every traceback; keep them unless the
    // log is off or the filter names targets itself.
    if level.eq_ignore_ascii_case("error") {
        filter = filter.add_directive(
            "wsgi.errors=warn"
                .parse()
                .context("the wsgi.errors directive")?,
        );
    }
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match (target, json) {
        (Target::Stderr(ansi), false) => fmt.with_writer(std::io::stderr).with_ansi(ansi).init(),
        (Target::Stderr(ansi), true) => fmt
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .json()
            .init(),
        // No colours in a file.
        (Target::File(f), false) => fmt.with_writer(f).with_ansi(false).init(),
        (Target::File(f), true) => fmt.with_writer(f).with_ansi(false).json().init(),
    }
    Ok(())
}

/// Refuses a bare word that is not a level. tracing reads one as a target (`--log-level verbose`:
/// the lines of a module named `verbose`), which silenced the whole log, errors included; a
/// directive naming a target says `target=level`. (gunicorn takes an unknown level as `info`.)
pub fn check_level(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let word = filter.trim();
    if word.contains(['=', ',', '[', ':']) || LEVELS.iter().any(|l| word.eq_ignore_ascii_case(l)) {
        return Ok(());
    }
    Err(format!(
        "--log-level {filter:?}: not a level: debug, info, warning, error or critical (also \
         trace, off, or tracing directives such as info,c10k_serve=debug)"
    ))
}

#[cfg(test)]
mod tests {
    use super::check_level;

    #[test]
    fn bare_words_must_be_levels() {
        for ok in [
            "info",
            "DEBUG",
            "warn",
            "error",
            "off",
            "info,c10k_serve=debug",
            "c10k_serve=trace",
        ] {
            assert!(check_level(ok).is_ok(), "{ok}");
        }
        for bad in ["foo", "verbose", "", "warnings"] {
            assert!(
                check_level(bad).unwrap_err().contains("--log-level"),
                "{bad}"
            );
        }
    }
}
