//! gunicorn's settings that `c10k serve` does not take, each with what to do instead.
//!
//! A Procfile, Dockerfile or systemd unit moved from `gunicorn` to `c10k serve` keeps its flags.
//! The ones c10k has take gunicorn's meaning (and often its spelling, as aliases on the settings
//! themselves); the ones in [`REFUSED`] are accepted by the parser only so that c10k can stop
//! with a message naming the flag and saying what to do, instead of clap's bare "unexpected
//! argument" — and never so that they are silently ignored. The same table answers for a
//! `--config` file key (gunicorn's snake_case names, e.g. `preload_app`). A value that is
//! gunicorn's default (`protocol = "http"`, `--protocol http`) asks for nothing and is left out
//! before any of this (see `gunicorn_defaults`).

use clap::{Arg, ArgAction, ArgMatches};

/// One gunicorn flag c10k refuses.
struct Refused {
    /// The long flag, without `--`.
    long: &'static str,
    /// Other spellings: gunicorn's short flag, its config-file name.
    short: Option<char>,
    /// gunicorn's config-file name when it differs from the flag (`preload_app`).
    key: Option<&'static str>,
    takes_value: bool,
    why: &'static str,
}

const TLS: &str = "c10k serves plain HTTP (and uwsgi); terminate TLS in front of it, in nginx \
                   (deploy/nginx/c10k-proxy.conf) or the load balancer, and keep \
                   --forwarded-allow-ips so the app still sees https";
const PASTE: &str = "c10k does not read PasteDeploy .ini files; serve a module that builds the \
                     app (app = paste.deploy.loadapp('config:/path/to/app.ini')) as MODULE:app";
const STATSD: &str = "c10k does not send StatsD; its figures are Prometheus metrics on the admin \
                      listener (--admin, GET /metrics) and `c10k status`";
const LOGGING: &str = "c10k's log is text or JSON lines (--log-format json), on standard error \
                       or in --error-log FILE; under systemd it reaches the journal (and \
                       syslog through it); a Python logging config is not read";

const REFUSED: &[Refused] = &[
    Refused {
        long: "daemon",
        short: Some('D'),
        key: None,
        takes_value: false,
        why: "c10k stays in the foreground; let systemd (deploy/systemd/c10k.service), \
              supervisord or Docker run it in the background, or `nohup c10k serve ... &`",
    },
    Refused {
        long: "enable-stdio-inheritance",
        short: Some('R'),
        key: None,
        takes_value: false,
        why: "accepted: it only matters with --daemon, and c10k and its workers always keep \
              the standard output and error they were started with",
    },
    Refused {
        long: "worker-tmp-dir",
        short: None,
        key: None,
        takes_value: true,
        why: "accepted: c10k's workers report their heartbeat through a shared-memory \
              scoreboard, not through files, so nothing is written there (it is on tmpfs \
              already, in effect)",
    },
    Refused {
        long: "tmp-upload-dir",
        short: None,
        key: None,
        takes_value: true,
        why: "c10k spools a request body larger than --body-buffer-size to an unlinked file in \
              $TMPDIR; set TMPDIR for the c10k process instead",
    },
    Refused {
        long: "paste",
        short: None,
        key: None,
        takes_value: true,
        why: PASTE,
    },
    Refused {
        long: "paster",
        short: None,
        key: None,
        takes_value: true,
        why: PASTE,
    },
    Refused {
        long: "certfile",
        short: None,
        key: None,
        takes_value: true,
        why: TLS,
    },
    Refused {
        long: "keyfile",
        short: None,
        key: None,
        takes_value: true,
        why: TLS,
    },
    Refused {
        long: "ca-certs",
        short: None,
        key: None,
        takes_value: true,
        why: TLS,
    },
    Refused {
        long: "ssl-version",
        short: None,
        key: None,
        takes_value: true,
        why: TLS,
    },
    Refused {
        long: "cert-reqs",
        short: None,
        key: None,
        takes_value: true,
        why: TLS,
    },
    Refused {
        long: "ciphers",
        short: None,
        key: None,
        takes_value: true,
        why: TLS,
    },
    Refused {
        long: "statsd-host",
        short: None,
        key: None,
        takes_value: true,
        why: STATSD,
    },
    Refused {
        long: "statsd-prefix",
        short: None,
        key: None,
        takes_value: true,
        why: STATSD,
    },
    Refused {
        long: "dogstatsd-tags",
        short: None,
        key: None,
        takes_value: true,
        why: STATSD,
    },
    Refused {
        long: "proxy-protocol",
        short: None,
        key: None,
        takes_value: false,
        why: "c10k does not read the PROXY protocol header; turn it off in the proxy (HAProxy \
              send-proxy, an AWS NLB's proxy protocol) and have the proxy speak HTTP (with \
              X-Forwarded-For and X-Forwarded-Proto, believed from --forwarded-allow-ips) or \
              nginx's uwsgi_pass",
    },
    Refused {
        long: "protocol",
        short: None,
        key: None,
        takes_value: true,
        why: "c10k chooses the protocol per listener, by its --bind: --bind \
              uwsgi://127.0.0.1:3031 or --bind uwsgi+unix:/run/c10k.sock speaks uwsgi to nginx's \
              uwsgi_pass (gunicorn's --protocol uwsgi; peers allowed by --uwsgi-allow-from, as \
              in gunicorn), beside or instead of HTTP ones; for HTTP drop the flag",
    },
    Refused {
        long: "proxy-allow-from",
        short: None,
        key: Some("proxy_allow_ips"),
        takes_value: true,
        why: "it only matters with --proxy-protocol, which c10k does not read; the proxies \
              whose X-Forwarded-Proto is believed are --forwarded-allow-ips",
    },
    Refused {
        long: "secure-scheme-headers",
        short: None,
        key: None,
        takes_value: true,
        why: "c10k believes exactly gunicorn's default scheme headers (X-Forwarded-Proto: https, \
              X-Forwarded-Protocol: ssl, X-Forwarded-Ssl: on), from the --forwarded-allow-ips \
              peers only, and no other set; remove the setting (c10k then believes those three, \
              as gunicorn does by default; gunicorn's default written out is accepted) and have \
              the proxy send one of them",
    },
    Refused {
        long: "log-config",
        short: None,
        key: Some("logconfig"),
        takes_value: true,
        why: LOGGING,
    },
    Refused {
        long: "log-config-dict",
        short: None,
        key: Some("logconfig_dict"),
        takes_value: true,
        why: LOGGING,
    },
    Refused {
        long: "log-config-json",
        short: None,
        key: Some("logconfig_json"),
        takes_value: true,
        why: LOGGING,
    },
    Refused {
        long: "log-syslog",
        short: None,
        key: Some("syslog"),
        takes_value: false,
        why: LOGGING,
    },
    Refused {
        long: "log-syslog-to",
        short: None,
        key: Some("syslog_addr"),
        takes_value: true,
        why: LOGGING,
    },
    Refused {
        long: "log-syslog-prefix",
        short: None,
        key: Some("syslog_prefix"),
        takes_value: true,
        why: LOGGING,
    },
    Refused {
        long: "log-syslog-facility",
        short: None,
        key: Some("syslog_facility"),
        takes_value: true,
        why: LOGGING,
    },
    Refused {
        long: "logger-class",
        short: None,
        key: None,
        takes_value: true,
        why: LOGGING,
    },
    Refused {
        long: "name",
        short: Some('n'),
        key: Some("proc_name"),
        takes_value: true,
        why: "accepted: c10k does not rename its processes (gunicorn does only with \
              setproctitle installed); `ps` shows each one's command line (c10k serve ... \
              MODULE:APP), which names the app",
    },
    Refused {
        long: "no-sendfile",
        short: None,
        key: Some("sendfile"),
        takes_value: false,
        why: "c10k sends a wsgi.file_wrapper file with sendfile(2) and has no switch to read it \
              through user space instead",
    },
    Refused {
        long: "spew",
        short: None,
        key: None,
        takes_value: false,
        why: "c10k has no line tracer; run the app under a Python debugger or profiler instead",
    },
];

/// The refused flags as a group of `c10k serve`'s arguments (hidden from `--help`).
#[derive(Clone, Copy, Debug, Default)]
pub struct GunicornOnly;

impl clap::FromArgMatches for GunicornOnly {
    fn from_arg_matches(_: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(GunicornOnly)
    }

    fn update_from_arg_matches(&mut self, _: &ArgMatches) -> Result<(), clap::Error> {
        Ok(())
    }
}

impl clap::Args for GunicornOnly {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        augment(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        augment(cmd)
    }
}

/// Adds each refused flag to `serve`, hidden from `--help`, so that [`refuse`] can name it.
pub fn augment(mut cmd: clap::Command) -> clap::Command {
    for r in REFUSED {
        let mut arg = Arg::new(r.long).long(r.long).hide(true);
        if let Some(c) = r.short {
            arg = arg.short(c);
        }
        arg = if r.takes_value {
            arg.action(ArgAction::Append).num_args(1)
        } else {
            arg.action(ArgAction::SetTrue)
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

/// gunicorn flags whose effect c10k always has, or that change nothing but a name, so they are
/// accepted (with a note in the log): `--worker-tmp-dir /dev/shm` keeps gunicorn's heartbeat
/// files off a slow disk, and c10k has none; `-R` keeps standard output and error under
/// `--daemon`, and c10k never detaches; `-n/--name` (`proc_name`) only sets the process title,
/// and only when setproctitle is installed. Common in Dockerfiles, Procfiles and
/// gunicorn.conf.py files, which a refusal would break for nothing.
const SATISFIED: &[&str] = &["worker-tmp-dir", "enable-stdio-inheritance", "name"];

/// For each satisfied flag given (command line or config key): a note for the log; an error for
/// a `--worker-tmp-dir` that is not a directory (gunicorn could not start there either).
pub fn satisfied_notes(
    matches: &ArgMatches,
    file_has: impl Fn(&str) -> bool,
) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    for r in REFUSED.iter().filter(|r| SATISFIED.contains(&r.long)) {
        let on_line = matches!(
            matches.value_source(r.long),
            Some(clap::parser::ValueSource::CommandLine)
        );
        let in_file = file_has(&r.long.replace('-', "_")) || r.key.is_some_and(&file_has);
        if !on_line && !in_file {
            continue;
        }
        if r.long == "worker-tmp-dir" {
            for dir in matches.get_many::<String>(r.long).into_iter().flatten() {
                if !std::path::Path::new(dir).is_dir() {
                    return Err(format!("--{} {dir}: not a directory", r.long));
                }
            }
        }
        notes.push(format!("--{}: {}", r.long, r.why));
    }
    Ok(notes)
}

/// Whether a `--config` key is a satisfied gunicorn setting (accepted, see [`SATISFIED`]).
pub fn satisfied_key(key: &str) -> bool {
    let key = key.replace('-', "_");
    REFUSED
        .iter()
        .filter(|r| SATISFIED.contains(&r.long))
        .any(|r| r.long.replace('-', "_") == key || r.key == Some(key.as_str()))
}

/// The message for the first refused flag given on the command line, if any.
pub fn refuse(matches: &ArgMatches) -> Option<String> {
    REFUSED
        .iter()
        .filter(|r| !SATISFIED.contains(&r.long))
        .find_map(|r| {
            let given = matches!(
                matches.value_source(r.long),
                Some(clap::parser::ValueSource::CommandLine)
            );
            given.then(|| format!("--{}: {}", r.long, r.why))
        })
}

/// Whether the `--config` key `key`, a gunicorn setting c10k refuses or does not have, asks for
/// nothing with `value` (as gunicorn's validator converted it, see `gunicorn_values`):
/// gunicorn's default written out, as files often do (`preload_app = False`,
/// `check_config = False`, `protocol = "http"`, the default `secure_scheme_headers` dict,
/// `logconfig_dict = {}`, `proxy_protocol = "off"`; see `gunicorn_defaults`), or one of c10k's
/// refused switches set to false (`no-sendfile = false`). Such a key is dropped instead of
/// refused, in a TOML file as in a Python one. `sendfile` has no such value: gunicorn turns
/// sendfile off when it is set at all (`Config.sendfile`), True included.
pub fn asks_for_nothing(key: &str, value: &toml::Value) -> bool {
    let id = key.replace('-', "_");
    let refused = REFUSED
        .iter()
        .find(|r| r.long.replace('-', "_") == id || r.key == Some(id.as_str()));
    // gunicorn's config-file name for c10k's spelling of a refused flag (`log-syslog-to`).
    let name = match refused {
        Some(r) if r.long.replace('-', "_") == id => r.key.map_or(id.clone(), str::to_owned),
        _ => id.clone(),
    };
    match (refused, value) {
        (Some(r), _) if r.long == "no-sendfile" && id == "sendfile" => false,
        (Some(r), toml::Value::Boolean(false)) if !r.takes_value => true,
        _ => crate::gunicorn_defaults::is_default(&name, value),
    }
}

/// The message for a `--config` file key that is a refused gunicorn setting (by its flag name or
/// gunicorn's config-file name), if it is one.
pub fn refuse_key(key: &str) -> Option<String> {
    let id = key.replace('-', "_");
    REFUSED
        .iter()
        .filter(|r| !SATISFIED.contains(&r.long))
        .find(|r| r.long.replace('-', "_") == id || r.key == Some(id.as_str()))
        .map(|r| format!("gunicorn's `{key}` (--{}): {}", r.long, r.why))
}

/// What c10k says to a gunicorn worker class it does not have (`-k uvicorn.workers.UvicornWorker`),
/// or `None` for any other value (clap then takes it, or lists c10k's classes).
pub fn refuse_worker_class(class: &str) -> Option<String> {
    let lower = class.to_ascii_lowercase();
    let why = if lower.contains("uvicorn") || lower.contains("asgi") {
        "c10k hosts WSGI applications (Flask, Django's wsgi.py); an ASGI app (FastAPI, \
         Starlette, Django's asgi.py) needs an ASGI server such as uvicorn. A Django project can \
         be served by c10k through its WSGI entry point, MODULE.wsgi:application"
    } else if lower.contains("eventlet") {
        "c10k has no eventlet class; -k gevent runs each request in a greenlet with the standard \
         library monkey-patched (gevent must be installed in the app's environment)"
    } else if lower.contains("tornado") {
        "c10k does not run Tornado applications; a WSGI app runs under -k sync, gthread, async \
         or gevent"
    } else {
        return None;
    };
    Some(format!("--worker-class {class}: {why}"))
}

/// The `-k`/`--worker-class` value among `c10k serve`'s arguments, as clap would read it.
pub fn worker_class_arg(args: &[std::ffi::OsString]) -> Option<String> {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let serve = args.iter().position(|a| a == "serve")?;
    let mut found = None;
    let mut it = args[serve + 1..].iter();
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "-k" || a == "--worker-class" {
            found = it.next().cloned();
        } else if let Some(v) = a.strip_prefix("--worker-class=") {
            found = Some(v.to_owned());
        } else if let Some(v) = a.strip_prefix("-k").filter(|_| !a.starts_with("--")) {
            found = Some(v.trim_start_matches('=').to_owned());
        }
    }
    found.or_else(|| std::env::var("C10K_WORKER_CLASS").ok())
}

/// The settings in gunicorn's config files that c10k has under another name.
const RENAMED: &[(&str, &str)] = &[
    ("accesslog", "access-log"),
    ("pidfile", "pid"),
    ("errorlog", "error-log"),
    ("error_logfile", "error-log"),
    ("log_file", "error-log"),
    ("access_logfile", "access-log"),
    ("print_config", "check-config (a flag)"),
    ("loglevel", "log-level (a flag, or C10K_LOG)"),
    ("raw_env", "env"),
    ("keep_alive", "keepalive"),
    ("wsgi_app", "app"),
    ("uwsgi_allow_ips", "uwsgi-allow-from"),
];

/// For an unknown `--config` key: the c10k name of a gunicorn setting that has one.
pub fn renamed(key: &str) -> Option<&'static str> {
    let key = key.replace('-', "_");
    RENAMED.iter().find(|(g, _)| *g == key).map(|(_, c)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_flags_do_not_clash_and_parse() {
        // The whole command line: no refused flag clashes with a c10k one.
        <crate::cli::Cli as clap::CommandFactory>::command().debug_assert();
        let cmd = augment(clap::Command::new("serve"));
        let m = cmd
            .clone()
            .try_get_matches_from(["serve", "--daemon", "-n", "web", "--statsd-host=x"])
            .unwrap();
        let msg = refuse(&m).unwrap();
        assert!(msg.starts_with("--daemon: "), "{msg}");
        let m = cmd.try_get_matches_from(["serve"]).unwrap();
        assert!(refuse(&m).is_none());
    }

    #[test]
    fn worker_class_as_clap_reads_it() {
        let args = |v: &[&str]| -> Vec<std::ffi::OsString> { v.iter().map(|s| s.into()).collect() };
        let k = |v: &[&str]| worker_class_arg(&args(v));
        assert_eq!(
            k(&["c10k", "serve", "-k", "a", "x:y"]).as_deref(),
            Some("a")
        );
        assert_eq!(k(&["c10k", "serve", "-kb"]).as_deref(), Some("b"));
        assert_eq!(
            k(&["c10k", "serve", "--worker-class=c"]).as_deref(),
            Some("c")
        );
        assert_eq!(
            k(&["c10k", "serve", "-k", "a", "-k", "d"]).as_deref(),
            Some("d")
        );
        assert_eq!(k(&["c10k", "bench", "-k", "http://h/"]), None);
        assert!(refuse_worker_class("gthread").is_none());
        assert!(refuse_worker_class("uvicorn.workers.UvicornH11Worker").is_some());
    }

    #[test]
    fn config_keys_by_either_name() {
        assert!(refuse_key("daemon").unwrap().contains("--daemon"));
        assert!(refuse_key("statsd_host").unwrap().contains("--statsd-host"));
        // Taken since c10k has --preload.
        assert!(refuse_key("preload_app").is_none() && refuse_key("preload").is_none());
        assert!(refuse_key("worker-tmp-dir").is_none() && satisfied_key("worker-tmp-dir"));
        // Named as the file spells it, whichever spelling matched.
        assert!(refuse_key("log-syslog-to")
            .unwrap()
            .starts_with("gunicorn's `log-syslog-to` (--log-syslog-to)"));
        assert!(refuse_key("log_syslog_to")
            .unwrap()
            .starts_with("gunicorn's `log_syslog_to` (--log-syslog-to)"));
        // Taken now, not refused.
        for key in ["reload", "reload_engine", "reload_extra_files"] {
            assert!(refuse_key(key).is_none(), "{key}");
        }
        assert!(refuse_key("workers").is_none());
        assert!(refuse_key("secure_scheme_headers")
            .unwrap()
            .contains("exactly gunicorn's default scheme headers"));
    }

    #[test]
    fn refused_settings_at_gunicorns_default_ask_for_nothing() {
        use toml::Value;
        let nothing = |key: &str, toml: &str| {
            let table: toml::Table = toml::from_str(&format!("v = {toml}")).unwrap();
            asks_for_nothing(key, &table["v"])
        };
        for (key, value) in [
            ("daemon", "false"),
            ("spew", "false"),
            ("syslog", "false"),
            ("proxy_protocol", "false"),
            ("proxy_protocol", "\"off\""),
            ("proxy_protocol", "\" None \""),
            ("no-sendfile", "false"),
            ("logconfig_dict", "{}"),
            (
                "secure_scheme_headers",
                r#"{ X-FORWARDED-PROTOCOL = "ssl", X-FORWARDED-PROTO = "https", X-Forwarded-Ssl = "on" }"#,
            ),
        ] {
            assert!(nothing(key, value), "{key} = {value}");
        }
        for (key, value) in [
            ("daemon", "true"),
            // Taken, not refused: nothing to drop.
            ("preload_app", "false"),
            ("proxy_protocol", "\"v1\""),
            // gunicorn turns sendfile off for any value it is given.
            ("sendfile", "false"),
            ("sendfile", "true"),
            ("no_sendfile", "true"),
            ("logconfig_dict", "{ version = 1 }"),
            (
                "secure_scheme_headers",
                r#"{ X-FORWARDED-PROTO = "https" }"#,
            ),
            (
                "secure_scheme_headers",
                r#"{ X-FORWARDED-PROTOCOL = "ssl", X-FORWARDED-PROTO = "http", X-FORWARDED-SSL = "on" }"#,
            ),
            // Not refused at all: nothing to drop.
            ("workers", "false"),
            ("statsd_host", "\"\""),
        ] {
            assert!(!nothing(key, value), "{key} = {value}");
        }
        assert!(!asks_for_nothing("reload", &Value::Boolean(false)));
        assert_eq!(renamed("accesslog"), Some("access-log"));
    }
}
