//! gunicorn's Python config files: `-c gunicorn.conf.py`, `-c python:pkg.module`, and
//! `./gunicorn.conf.py` when no `-c` is given — read when gunicorn 27 would read them, and run
//! the way it runs them (`gunicorn/app/base.py`: the file executed as the module `__config__`,
//! `__file__` set; a `python:` module imported; the working directory first on `sys.path`).
//!
//! The design choice: c10k parses no Python and does not run the file in its own process. It
//! runs it in a subprocess of the Python its workers use (`--venv`, `$VIRTUAL_ENV`, else the
//! `python3` on `PATH`), with a time limit, through a small script (`pyconfig_eval.py`) that
//! prints JSON: the module-level names that are gunicorn settings (any other name is ignored,
//! as gunicorn ignores it), their line in the file, and the plain values (str, int, float,
//! bool, a list or tuple of str). The caller (`settings::ConfigFile`) then takes those exactly
//! as keys of a TOML `--config` file, so every check and message applies, naming this file and
//! the key. Server hooks (`post_fork`, `when_ready`, ...) are not called by c10k: they are
//! named in a warning.
//!
//! `os.environ`: gunicorn runs the file in its master, so what it sets there is inherited by
//! the workers and seen by the app (`os.environ.setdefault("DJANGO_SETTINGS_MODULE", ...)` is
//! common). c10k does the same: the variables the file set or changed are set in the master's
//! environment at start (and so in every worker's), and given to the workers a `SIGHUP` starts
//! when it reads the file again. They do not change c10k's own settings (`PORT`,
//! `WEB_CONCURRENCY`, `C10K_*` were read before the file ran), as in gunicorn, whose defaults
//! are computed before it reads the file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What runs the file and prints JSON; see its own comments.
const EVAL_SCRIPT: &str = include_str!("pyconfig_eval.py");

/// How long a config file may run. gunicorn has no limit, but a file that hangs (a network call
/// to a secrets service that never answers) would hang the start, or a `SIGHUP` in the master.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// gunicorn 27's settings (`gunicorn.config.KNOWN_SETTINGS`): the module-level names of a
/// config file that it reads; every other name is ignored. (The integration tests compare this
/// list with the gunicorn installed in the test venv.)
#[rustfmt::skip]
pub const GUNICORN_SETTINGS: &[&str] = &[
    "config", "wsgi_app", "bind", "backlog", "workers", "worker_class", "threads",
    "worker_connections", "max_requests", "max_requests_jitter", "timeout", "graceful_timeout",
    "keepalive", "limit_request_line", "limit_request_fields", "limit_request_field_size",
    "reload", "reload_engine", "reload_extra_files", "spew", "check_config", "print_config",
    "preload_app", "sendfile", "reuse_port", "chdir", "daemon", "raw_env", "pidfile",
    "worker_tmp_dir", "user", "group", "umask", "initgroups", "tmp_upload_dir",
    "secure_scheme_headers", "forwarded_allow_ips", "accesslog",
    "disable_redirect_access_to_syslog", "access_log_format", "errorlog", "loglevel",
    "capture_output", "logger_class", "logconfig", "logconfig_dict", "logconfig_json",
    "syslog_addr", "syslog", "syslog_prefix", "syslog_facility", "enable_stdio_inheritance",
    "statsd_host", "dogstatsd_tags", "statsd_prefix", "enable_backlog_metric", "proc_name",
    "default_proc_name", "pythonpath", "paste", "on_starting", "on_reload", "when_ready",
    "pre_fork", "post_fork", "post_worker_init", "worker_int", "worker_abort", "pre_exec",
    "pre_request", "post_request", "child_exit", "worker_exit", "nworkers_changed", "on_exit",
    "ssl_context", "proxy_protocol", "proxy_allow_ips", "protocol", "uwsgi_allow_ips", "keyfile",
    "certfile", "ssl_version", "cert_reqs", "ca_certs", "suppress_ragged_eofs",
    "do_handshake_on_connect", "ciphers", "http_protocols", "http2_cleartext",
    "http2_max_concurrent_streams", "http2_initial_window_size", "http2_max_frame_size",
    "http2_max_header_list_size", "raw_paste_global_conf", "permit_obsolete_folding",
    "strip_header_spaces", "permit_unconventional_http_method",
    "permit_unconventional_http_version", "casefold_http_method", "forwarder_headers",
    "header_map", "asgi_loop", "asgi_lifespan", "asgi_disconnect_grace_period",
    "websocket_max_message_size", "http_parser", "root_path", "dirty_apps", "dirty_workers",
    "dirty_timeout", "dirty_threads", "dirty_graceful_timeout", "on_dirty_starting",
    "dirty_post_fork", "dirty_worker_init", "dirty_worker_exit", "control_socket",
    "control_socket_mode", "control_socket_disable",
];

/// The settings that are server hooks (gunicorn validates them as callables): c10k does not
/// call them.
#[rustfmt::skip]
pub const HOOKS: &[&str] = &[
    "on_starting", "on_reload", "when_ready", "pre_fork", "post_fork", "post_worker_init",
    "worker_int", "worker_abort", "pre_exec", "pre_request", "post_request", "child_exit",
    "worker_exit", "nworkers_changed", "on_exit", "ssl_context", "on_dirty_starting",
    "dirty_post_fork", "dirty_worker_init", "dirty_worker_exit",
];

/// gunicorn's settings that c10k reads under another name (the TOML file must use c10k's name,
/// and says so; a Python file is gunicorn's, so its names are taken as they are).
const RENAMED: &[(&str, &str)] = &[
    ("accesslog", "access_log"),
    ("errorlog", "error_log"),
    ("pidfile", "pid"),
    ("raw_env", "env"),
    ("wsgi_app", "app"),
    ("uwsgi_allow_ips", "uwsgi_allow_from"),
];

/// Where a Python config is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A file (`gunicorn.conf.py`, or `file:PATH` naming one).
    File(PathBuf),
    /// `python:pkg.module`: a module imported from `sys.path`.
    Module(String),
}

impl Location {
    /// The argument the script takes.
    fn arg(&self) -> String {
        match self {
            Location::File(p) => p.display().to_string(),
            Location::Module(m) => format!("python:{m}"),
        }
    }
}

/// Whether `--config ARG` is a Python config: `python:MODULE`, or a file ending in `.py`/`.pyc`
/// (after gunicorn's optional `file:` prefix). gunicorn reads any other file as Python too
/// (with a warning); c10k reads it as its own TOML.
pub fn location(arg: &Path) -> Option<Location> {
    let text = arg.to_str()?;
    if let Some(module) = text.strip_prefix("python:") {
        return Some(Location::Module(module.to_owned()));
    }
    let path = Path::new(text.strip_prefix("file:").unwrap_or(text));
    path.extension()
        .is_some_and(|e| e == "py" || e == "pyc")
        .then(|| Location::File(path.to_owned()))
}

/// The TOML path of `--config ARG` given as `file:PATH` (gunicorn's prefix), else `ARG`.
pub fn strip_file_prefix(arg: &Path) -> PathBuf {
    match arg.to_str().and_then(|t| t.strip_prefix("file:")) {
        Some(p) => PathBuf::from(p),
        None => arg.to_owned(),
    }
}

/// `./gunicorn.conf.py` if it exists: the file gunicorn reads when no `-c` is given (neither on
/// the command line nor in `GUNICORN_CMD_ARGS`); `gunicorn.config.get_default_config_file`.
pub fn default_file() -> Option<PathBuf> {
    let path = Path::new("gunicorn.conf.py");
    path.exists().then(|| path.to_owned())
}

/// One gunicorn setting of the file, as c10k takes it.
#[derive(Clone, Debug)]
pub struct Setting {
    /// gunicorn's name, as the file spells it.
    pub name: String,
    /// c10k's key for it (snake_case, the settings' clap id).
    pub key: String,
    pub line: Option<usize>,
    pub value: toml::Value,
}

/// What running the file gave.
#[derive(Clone, Debug, Default)]
pub struct Evaluated {
    pub settings: Vec<Setting>,
    /// Hooks set, with their lines.
    pub hooks: Vec<(String, Option<usize>)>,
    /// `loglevel`, which c10k takes as `--log-level` (a flag, not a file key, in TOML).
    pub log_level: Option<String>,
    /// Variables the file set or changed in `os.environ`.
    pub environ: Vec<(String, String)>,
    /// Variables the file removed from `os.environ`.
    pub removed: Vec<String>,
    /// The interpreter that ran it.
    pub python: PathBuf,
    /// The file that ran (a `python:` module's).
    pub file: Option<String>,
}

/// The script's answer.
#[derive(serde::Deserialize)]
struct Answer {
    error: Option<String>,
    line: Option<usize>,
    #[serde(default)]
    settings: Vec<Found>,
    #[serde(default)]
    hooks: Vec<Found>,
    #[serde(default)]
    environ: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    removed: Vec<String>,
    file: Option<String>,
}

#[derive(serde::Deserialize)]
struct Found {
    name: String,
    line: Option<usize>,
    value: Option<serde_json::Value>,
    /// The Python type of a value c10k cannot take.
    #[serde(rename = "type")]
    type_name: Option<String>,
}

/// "line 4, key `workers`" or "key `workers`".
fn place(name: &str, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("line {line}, key `{name}`"),
        None => format!("key `{name}`"),
    }
}

/// Runs the config at `at` with the workers' Python and returns its gunicorn settings. The
/// error is the message for the user (the caller names the file).
pub fn evaluate(
    at: &Location,
    venv: Option<&Path>,
    timeout: Duration,
) -> Result<Evaluated, String> {
    let python = interpreter(venv)?;
    let json = |list: &[&str]| serde_json::to_string(list).unwrap_or_default();
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(EVAL_SCRIPT)
        .arg(at.arg())
        .arg(json(GUNICORN_SETTINGS))
        .arg(json(HOOKS))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let mut stdout = child.stdout.take().ok_or("no pipe from Python")?;
    // Read on a thread, so that a file that hangs, or leaves a process behind that holds the
    // pipe, cannot hold up the start past the limit.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let got = stdout.read_to_string(&mut text).map(|_| text);
        let _ = tx.send(got);
    });
    let deadline = Instant::now() + timeout;
    let too_long = || {
        format!(
            "still running after {} s (c10k runs it with {}, as gunicorn runs it in its master, \
             and stops it then): does it wait for something, such as a network service?",
            timeout.as_secs_f64(),
            python.display()
        )
    };
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(too_long());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => return Err(format!("cannot read what Python answered: {e}")),
        Err(_) => return Err(too_long()),
    };
    let answer: Answer = serde_json::from_str(&text).map_err(|_| {
        format!(
            "{} stopped ({status}) before it had read the file",
            python.display()
        )
    })?;
    if let Some(error) = answer.error {
        let at = answer
            .line
            .map(|l| format!("line {l}: "))
            .unwrap_or_default();
        return Err(format!("{at}{error}"));
    }
    let mut out = Evaluated {
        python,
        file: answer.file,
        environ: answer.environ.into_iter().collect(),
        removed: answer.removed,
        hooks: answer.hooks.into_iter().map(|h| (h.name, h.line)).collect(),
        ..Evaluated::default()
    };
    for found in answer.settings {
        let value = match (found.value, found.type_name) {
            (Some(v), _) => {
                to_toml(v).map_err(|why| format!("{}: {why}", place(&found.name, found.line)))?
            }
            (None, type_name) => {
                // A setting c10k refuses is refused for what it is, whatever its value.
                if let Some(why) = crate::gunicorn::refuse_key(&found.name) {
                    return Err(format!("{}: {why}", place(&found.name, found.line)));
                }
                return Err(format!(
                    "{}: a {} is not a value c10k takes (it takes str, int, float, bool, or a \
                     list of str, as a TOML --config file does)",
                    place(&found.name, found.line),
                    type_name.unwrap_or_else(|| "value of another type".into())
                ));
            }
        };
        if found.name == "loglevel" {
            match value {
                // gunicorn's validate_string strips it.
                toml::Value::String(level) => out.log_level = Some(level.trim().to_owned()),
                other => {
                    return Err(format!(
                        "{}: {other}: a level name (debug, info, warning, error, critical)",
                        place(&found.name, found.line)
                    ))
                }
            }
            continue;
        }
        let key = RENAMED
            .iter()
            .find(|(g, _)| *g == found.name)
            .map_or(found.name.as_str(), |(_, c)| c)
            .to_owned();
        out.settings.push(Setting {
            name: found.name,
            key,
            line: found.line,
            value,
        });
    }
    Ok(out)
}

/// A value from Python's JSON as TOML (which has no null: the script leaves `None` out, and
/// sends a dict only without one). gunicorn's validators then convert it as for a TOML file
/// (`gunicorn_values`: `workers = "4"`, `forwarded_allow_ips = "a,b"`).
fn to_toml(v: serde_json::Value) -> Result<toml::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        J::Object(map) => toml::Value::Table(
            map.into_iter()
                .map(|(k, v)| Ok((k, in_dict(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        J::Bool(b) => toml::Value::Boolean(b),
        J::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            (None, Some(_)) if n.is_u64() => return Err(format!("{n} is too large")),
            (None, Some(f)) => toml::Value::Float(f),
            (None, None) => return Err(format!("{n} is not a number c10k takes")),
        },
        J::String(s) => toml::Value::String(s),
        J::Array(items) => toml::Value::Array(
            items
                .into_iter()
                .map(|i| match i {
                    J::String(s) => Ok(toml::Value::String(s)),
                    other => Err(format!("{other} is not a str")),
                })
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(format!("{other} is not a value c10k takes")),
    })
}

/// A value inside a dict (`logconfig_dict`'s nested ones): any JSON but null.
fn in_dict(v: serde_json::Value) -> Result<toml::Value, String> {
    use serde_json::Value as J;
    match v {
        J::Array(items) => Ok(toml::Value::Array(
            items.into_iter().map(in_dict).collect::<Result<_, _>>()?,
        )),
        J::Object(_) | J::Bool(_) | J::Number(_) | J::String(_) => to_toml(v),
        J::Null => Err("a dict holding None is not a value c10k takes".into()),
    }
}

/// The Python the workers run: `c10k_wsgi`'s choice, with its checks and messages.
#[cfg(feature = "python")]
fn interpreter(venv: Option<&Path>) -> Result<PathBuf, String> {
    c10k_wsgi::interp::python_program(venv)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            "no python3 on PATH to run it with: give --venv DIR (or set VIRTUAL_ENV), the \
             environment the app runs in"
                .to_owned()
        })
}

/// Without the `python` feature a config file in Python is not read.
#[cfg(not(feature = "python"))]
fn interpreter(_: Option<&Path>) -> Result<PathBuf, String> {
    Err(not_built())
}

/// What a build without Python says about a Python config file.
#[cfg_attr(feature = "python", allow(dead_code))]
pub fn not_built() -> String {
    "this c10k was built without Python support (the cargo feature `python`, on by default), \
     so it cannot read a gunicorn config written in Python; rebuild it with default features, \
     e.g. `cargo install --path crates/c10k`, or write the settings into a TOML file for \
     --config (the README's gunicorn → c10k table names each one)"
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_configs_are_python() {
        let at = |s: &str| location(Path::new(s));
        assert_eq!(
            at("gunicorn.conf.py"),
            Some(Location::File("gunicorn.conf.py".into()))
        );
        assert_eq!(
            at("file:conf/g.py"),
            Some(Location::File("conf/g.py".into()))
        );
        assert_eq!(at("x.pyc"), Some(Location::File("x.pyc".into())));
        assert_eq!(
            at("python:pkg.conf"),
            Some(Location::Module("pkg.conf".into()))
        );
        assert_eq!(at("c10k.toml"), None);
        assert_eq!(at("file:c10k.toml"), None);
        assert_eq!(
            strip_file_prefix(Path::new("file:c.toml")),
            PathBuf::from("c.toml")
        );
        for hook in HOOKS {
            assert!(GUNICORN_SETTINGS.contains(hook), "{hook}");
        }
    }

    /// The lists are gunicorn's own, from the gunicorn in the test venv (skipped without it).
    #[test]
    fn the_settings_and_hooks_are_gunicorns() {
        let Some(venv) = std::env::var_os("C10K_TEST_VENV") else {
            eprintln!("skipped: C10K_TEST_VENV is not set");
            return;
        };
        let out = Command::new(Path::new(&venv).join("bin/python3"))
            .args([
                "-c",
                "import json, gunicorn\n\
                 from gunicorn.config import KNOWN_SETTINGS as K\n\
                 print(json.dumps([[s.name for s in K], [s.name for s in K if \
                 s.validator.__name__ in ('_validate_callable', 'validate_post_request')], \
                 gunicorn.__version__]))",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (settings, hooks, version): (Vec<String>, Vec<String>, String) =
            serde_json::from_slice(&out.stdout).unwrap();
        // The lists are gunicorn 27's. A later gunicorn (CI installs the newest) may add
        // settings, which a file then sets unread: said here, without failing the build for an
        // upstream release. What 27 has must still be there.
        if version.starts_with("27.") {
            assert_eq!(settings, GUNICORN_SETTINGS);
            assert_eq!(hooks, HOOKS);
        } else {
            for name in GUNICORN_SETTINGS {
                assert!(
                    settings.iter().any(|s| s == name),
                    "{name} gone in {version}"
                );
            }
            let new: Vec<&String> = settings
                .iter()
                .filter(|s| !GUNICORN_SETTINGS.contains(&s.as_str()))
                .collect();
            if !new.is_empty() {
                eprintln!("note: gunicorn {version} has settings c10k does not list: {new:?}");
            }
        }
    }

    /// A file that hangs is stopped at the limit, and its message says so (the start uses
    /// [`TIMEOUT`]; a second here).
    #[cfg(feature = "python")]
    #[test]
    fn a_file_that_hangs_is_stopped() {
        let Some(venv) = std::env::var_os("C10K_TEST_VENV") else {
            eprintln!("skipped: C10K_TEST_VENV is not set");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gunicorn.conf.py");
        std::fs::write(&file, "import time\ntime.sleep(60)\nworkers = 2\n").unwrap();
        let started = Instant::now();
        let e = evaluate(
            &Location::File(file),
            Some(Path::new(&venv)),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.starts_with("still running after 1 s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn values_as_toml() {
        let v = to_toml;
        assert_eq!(v(5.into()), Ok(toml::Value::Integer(5)));
        assert_eq!(v(2.5.into()), Ok(toml::Value::Float(2.5)));
        // Split later, for TOML files too (gunicorn_values).
        assert_eq!(
            v("10.0.0.1, 10.0.0.2".into()),
            Ok(toml::Value::String("10.0.0.1, 10.0.0.2".into()))
        );
        let dict = serde_json::json!({"version": 1, "loggers": {"x": {"handlers": ["a", 2]}}});
        let toml::Value::Table(t) = v(dict).unwrap() else {
            panic!("not a table")
        };
        assert_eq!(t["version"], toml::Value::Integer(1));
        assert!(v(serde_json::json!({"x": null})).is_err());
        assert!(v(serde_json::json!(u64::MAX)).is_err());
        assert!(v(serde_json::json!([1])).is_err());
    }
}
