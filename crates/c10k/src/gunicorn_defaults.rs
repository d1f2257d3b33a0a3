//! gunicorn 27's defaults for the settings c10k does not have or refuses, and whether a value
//! given for one of them is that default — so asks for nothing, and is dropped instead of
//! refused.
//!
//! A gunicorn.conf.py moved to c10k often spells settings out at their defaults
//! (`check_config = False`, `protocol = "http"`, `http_parser = "auto"`), and a Procfile or
//! `GUNICORN_CMD_ARGS` may carry `--protocol http`; gunicorn starts with them, so c10k must too.
//! The design choice: one table of (gunicorn's name, its command-line flag, its default as its
//! validator reads values), written out here rather than asked of gunicorn at start, because
//! the app's environment need not have gunicorn installed (c10k replaces it) and a TOML file or
//! a command line has no Python to ask. The tests compare the table with the gunicorn of the
//! test venv (`tests/gunicorn.rs` writes every setting at gunicorn's default). A value that is
//! not the default is left alone, so it is refused exactly as before, with the same message.
//! Settings whose default is `None` are not here: a Python file's `None` is skipped already,
//! and no other value is their default.

use std::ffi::OsString;

use toml::Value;

/// How gunicorn's validator for a setting reads a value, with the setting's default.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `validate_bool`: a bool, or the str "true"/"false" (any case, blanks around).
    Bool(bool),
    /// `validate_pos_int` and the HTTP/2 limits: an int, a bool (an int in Python), or a str
    /// that `int(value, 0)` reads.
    Int(i64),
    /// `validate_string` (and `validate_class` given a str): a str, blanks around dropped.
    Str(&'static str),
    /// The validators that also lower-case the str (`header_map`, `asgi_loop`, `http_parser`).
    Word(&'static str),
    /// `validate_list_string` at its default `[]`: an empty list, or an empty str.
    EmptyList,
    /// `validate_string_to_addr_list`: one str of comma-separated addresses (a list is a
    /// TypeError in gunicorn), compared as a set.
    AddrList(&'static [&'static str]),
    /// `validate_http_protocols`: comma-separated, lower-cased; an empty str is its default.
    Protocols(&'static str),
    /// `validate_http2_cleartext`: "off" (any case), or False.
    Cleartext,
    /// `validate_proxy_protocol`: "off", "false", "0", "none" (any case), or False.
    ProxyProtocol,
    /// `validate_dict` at `{}`.
    EmptyDict,
    /// `secure_scheme_headers`: gunicorn's three headers and values (names in any case).
    SchemeHeaders,
    /// `control_socket`: `$XDG_RUNTIME_DIR/gunicorn.ctl` when that is a directory, else
    /// `$HOME/.gunicorn/gunicorn.ctl` (`_get_default_control_socket`).
    ControlSocket,
    /// `ssl_version`: `ssl.PROTOCOL_TLS`, an int (gunicorn warns for anything else).
    SslVersion,
}

/// One setting: gunicorn's config-file name, the command-line flag whose value can be the
/// default (`None` when there is none: a switch such as `--spew` sets the opposite of the
/// default, `--check-config` is c10k's own flag), and the default.
struct Setting {
    name: &'static str,
    flag: Option<&'static str>,
    default: Kind,
}

const fn s(name: &'static str, flag: Option<&'static str>, default: Kind) -> Setting {
    Setting {
        name,
        flag,
        default,
    }
}

/// gunicorn's default `secure_scheme_headers`, the headers c10k believes (keys upper-cased).
const SECURE_SCHEME_HEADERS: [(&str, &str); 3] = [
    ("X-FORWARDED-PROTOCOL", "ssl"),
    ("X-FORWARDED-PROTO", "https"),
    ("X-FORWARDED-SSL", "on"),
];

/// gunicorn's default `access_log_format`, the combined log format. c10k has the setting, but
/// refuses a format without an access log to write it to; gunicorn's default written out asks
/// for nothing, as in gunicorn (see `settings::resolve_serve`).
pub const ACCESS_LOG_FORMAT: &str =
    r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// Every gunicorn 27 setting that c10k has no setting for, or refuses, and whose default is a
/// value (not `None`, not a hook). The settings c10k has (`workers`, `chdir`, ...) are not
/// here: a file's value for one of them is taken, whatever c10k's own default.
#[rustfmt::skip]
const SETTINGS: &[Setting] = {
    use Kind::*;
    &[
        s("config", None, Str("./gunicorn.conf.py")),
        s("spew", None, Bool(false)),
        s("check_config", None, Bool(false)),
        s("print_config", None, Bool(false)),
        s("daemon", None, Bool(false)),
        s("secure_scheme_headers", None, SchemeHeaders),
        s("disable_redirect_access_to_syslog", None, Bool(false)),
        s("logger_class", Some("logger-class"), Str("gunicorn.glogging.Logger")),
        s("logconfig_dict", None, EmptyDict),
        s("syslog_addr", Some("log-syslog-to"), Str("udp://localhost:514")),
        s("syslog", None, Bool(false)),
        s("syslog_facility", Some("log-syslog-facility"), Str("user")),
        s("enable_stdio_inheritance", None, Bool(false)),
        s("dogstatsd_tags", Some("dogstatsd-tags"), Str("")),
        s("statsd_prefix", Some("statsd-prefix"), Str("")),
        s("enable_backlog_metric", None, Bool(false)),
        s("default_proc_name", None, Str("gunicorn")),
        s("proxy_protocol", Some("proxy-protocol"), ProxyProtocol),
        s("proxy_allow_ips", Some("proxy-allow-from"), AddrList(&["127.0.0.1", "::1"])),
        s("protocol", Some("protocol"), Str("http")),
        s("ssl_version", None, SslVersion),
        s("cert_reqs", Some("cert-reqs"), Int(0)),
        s("suppress_ragged_eofs", Some("suppress-ragged-eofs"), Bool(true)),
        s("do_handshake_on_connect", None, Bool(false)),
        s("http_protocols", Some("http-protocols"), Protocols("h1")),
        s("http2_cleartext", Some("http2-cleartext"), Cleartext),
        s("http2_max_concurrent_streams", Some("http2-max-concurrent-streams"), Int(100)),
        s("http2_initial_window_size", Some("http2-initial-window-size"), Int(65535)),
        s("http2_max_frame_size", Some("http2-max-frame-size"), Int(16384)),
        s("http2_max_header_list_size", Some("http2-max-header-list-size"), Int(65536)),
        s("raw_paste_global_conf", None, EmptyList),
        s("permit_obsolete_folding", None, Bool(false)),
        s("strip_header_spaces", None, Bool(false)),
        s("permit_unconventional_http_method", None, Bool(false)),
        s("permit_unconventional_http_version", None, Bool(false)),
        s("casefold_http_method", None, Bool(false)),
        s("header_map", Some("header-map"), Word("drop")),
        s("asgi_loop", Some("asgi-loop"), Word("auto")),
        s("asgi_lifespan", Some("asgi-lifespan"), Word("auto")),
        s("asgi_disconnect_grace_period", Some("asgi-disconnect-grace-period"), Int(3)),
        s("websocket_max_message_size", Some("websocket-max-message-size"), Int(16777216)),
        s("http_parser", Some("http-parser"), Word("auto")),
        s("dirty_apps", None, EmptyList),
        s("dirty_workers", Some("dirty-workers"), Int(0)),
        s("dirty_timeout", Some("dirty-timeout"), Int(300)),
        s("dirty_threads", Some("dirty-threads"), Int(1)),
        s("dirty_graceful_timeout", Some("dirty-graceful-timeout"), Int(30)),
        s("control_socket", Some("control-socket"), ControlSocket),
        s("control_socket_mode", Some("control-socket-mode"), Int(0o600)),
        s("control_socket_disable", None, Bool(false)),
    ]
};

/// Whether `value` of the gunicorn setting `name` (its config-file name) is gunicorn's
/// default for it, as gunicorn's validator would read the value. `false` for a setting that
/// is not in the table.
pub fn is_default(name: &str, value: &Value) -> bool {
    let Some(setting) = SETTINGS.iter().find(|s| s.name == name) else {
        return false;
    };
    let strip = crate::gunicorn_values::py_strip;
    match (setting.default, value) {
        (Kind::Bool(b), Value::Boolean(v)) => *v == b,
        (Kind::Bool(b), Value::String(v)) => strip(v).eq_ignore_ascii_case(&b.to_string()),
        (Kind::Int(n), Value::Integer(v)) => *v == n,
        // `ssl.PROTOCOL_TLS`; gunicorn compares with `!=`, so "2" is not it.
        (Kind::SslVersion, Value::Integer(v)) => *v == 2,
        (Kind::Int(n), Value::Boolean(v)) => i64::from(*v) == n,
        (Kind::Int(n), Value::String(v)) => crate::gunicorn_values::python_int(v) == Some(Ok(n)),
        (Kind::Str(d), Value::String(v)) => strip(v) == d,
        (Kind::Word(d), Value::String(v)) => strip(v).to_lowercase() == d,
        (Kind::EmptyList, Value::Array(items)) => items.is_empty(),
        (Kind::EmptyList, Value::String(v)) => v.is_empty(),
        (Kind::AddrList(d), Value::String(v)) => {
            let mut given: Vec<&str> = strip(v)
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .collect();
            given.sort_unstable();
            given.dedup();
            let mut want = d.to_vec();
            want.sort_unstable();
            given == want
        }
        (Kind::Protocols(d), Value::String(v)) => {
            let given: Vec<String> = v
                .split(',')
                .map(|p| p.trim().to_lowercase())
                .filter(|p| !p.is_empty())
                .collect();
            given.is_empty() || given == [d]
        }
        (Kind::Cleartext, Value::Boolean(v)) => !v,
        (Kind::Cleartext, Value::String(v)) => strip(v).eq_ignore_ascii_case("off"),
        (Kind::ProxyProtocol, Value::Boolean(v)) => !v,
        (Kind::ProxyProtocol, Value::String(v)) => {
            ["off", "false", "0", "none"].contains(&strip(v).to_lowercase().as_str())
        }
        (Kind::EmptyDict, Value::Table(t)) => t.is_empty(),
        (Kind::SchemeHeaders, Value::Table(t)) => {
            t.len() == SECURE_SCHEME_HEADERS.len()
                && t.iter().all(|(k, v)| {
                    SECURE_SCHEME_HEADERS
                        .iter()
                        .any(|(h, s)| k.eq_ignore_ascii_case(h) && v.as_str() == Some(s))
                })
        }
        (Kind::ControlSocket, Value::String(v)) => control_socket().is_some_and(|d| strip(v) == d),
        _ => false,
    }
}

/// gunicorn's `_get_default_control_socket()`, in this environment (the one gunicorn would
/// have run in). `None` without `$HOME` (Python would then ask the password database).
fn control_socket() -> Option<String> {
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        let xdg = std::path::PathBuf::from(xdg);
        if xdg.is_dir() {
            return Some(xdg.join("gunicorn.ctl").to_string_lossy().into_owned());
        }
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(
        std::path::Path::new(&home)
            .join(".gunicorn")
            .join("gunicorn.ctl")
            .to_string_lossy()
            .into_owned(),
    )
}

/// `tokens`, `c10k serve`'s arguments (after `serve`), without the gunicorn flags that give a
/// setting c10k lacks its default (`--protocol http`, `--http-parser=auto`,
/// `--proxy-protocol off`, `--suppress-ragged-eofs`), and those flags as given, for the log. A
/// flag with another value is kept, for clap and `gunicorn::refuse` to answer as before. The
/// walk stops at `--`, and steps over the value of each of `serve`'s own flags that takes one.
pub fn drop_default_flags(
    serve: &clap::Command,
    tokens: &[OsString],
) -> (Vec<OsString>, Vec<String>) {
    let mut kept = Vec::with_capacity(tokens.len());
    let mut dropped = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        let Some(text) = token.to_str() else {
            kept.push(token.clone());
            i += 1;
            continue;
        };
        if text == "--" {
            kept.extend(tokens[i..].iter().cloned());
            break;
        }
        let Some(long) = text.strip_prefix("--") else {
            kept.push(token.clone());
            i += 1;
            // A short flag that takes its value from the next token (`-e K=V`).
            if let Some(c) = text.strip_prefix('-').and_then(|s| s.chars().last()) {
                let alone = text.chars().count() == 2;
                if alone
                    && crate::arg_lookup::find_short(serve, c)
                        .is_some_and(crate::arg_lookup::takes_value)
                {
                    kept.extend(tokens.get(i).cloned());
                    i += 1;
                }
            }
            continue;
        };
        let (name, inline) = match long.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (long, None),
        };
        let setting = SETTINGS.iter().find(|s| s.flag == Some(name));
        if let Some(setting) = setting {
            let next = tokens.get(i + 1).and_then(|t| t.to_str());
            // What argparse gives the setting, and how many tokens that takes.
            let (value, taken) = match (setting.default, inline) {
                (_, Some(v)) => (Some(Value::String(v.to_owned())), 1),
                (Kind::Bool(_), None) => (Some(Value::Boolean(true)), 1),
                // nargs="?": the next token is the mode unless it looks like a flag.
                (Kind::ProxyProtocol, None) => match next.filter(|n| !n.starts_with('-')) {
                    Some(v) => (Some(Value::String(v.to_owned())), 2),
                    None => (Some(Value::Boolean(true)), 1),
                },
                (_, None) => (next.map(|v| Value::String(v.to_owned())), 2),
            };
            if value.is_some_and(|v| is_default(setting.name, &v)) {
                let words: Vec<String> = tokens[i..i + taken]
                    .iter()
                    .map(|t| t.to_string_lossy().into_owned())
                    .collect();
                dropped.push(words.join(" "));
                i += taken;
                continue;
            }
        }
        kept.push(token.clone());
        i += 1;
        if inline.is_none()
            && crate::arg_lookup::find_long(serve, name).is_some_and(crate::arg_lookup::takes_value)
        {
            kept.extend(tokens.get(i).cloned());
            i += 1;
        }
    }
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, CommandFactory};

    fn value(toml: &str) -> Value {
        let table: toml::Table = toml::from_str(&format!("v = {toml}")).unwrap();
        table["v"].clone()
    }

    #[test]
    fn defaults_as_gunicorns_validators_read_them() {
        for (name, v) in [
            ("check_config", "false"),
            ("print_config", "\" False \""),
            ("protocol", "\" http \""),
            ("cert_reqs", "0"),
            ("cert_reqs", "\"0x0\""),
            ("cert_reqs", "false"),
            ("ssl_version", "2"),
            ("suppress_ragged_eofs", "true"),
            ("http_protocols", "\"H1\""),
            ("http_protocols", "\"\""),
            ("http2_cleartext", "false"),
            ("http2_cleartext", "\"OFF\""),
            ("header_map", "\"Drop\""),
            ("proxy_allow_ips", "\"::1, 127.0.0.1\""),
            ("raw_paste_global_conf", "[]"),
            ("raw_paste_global_conf", "\"\""),
            ("control_socket_mode", "384"),
            ("control_socket_mode", "\"0o600\""),
            ("dogstatsd_tags", "\"\""),
            ("logconfig_dict", "{}"),
        ] {
            assert!(is_default(name, &value(v)), "{name} = {v}");
        }
        for (name, v) in [
            ("check_config", "true"),
            ("protocol", "\"uwsgi\""),
            ("cert_reqs", "2"),
            ("ssl_version", "\"2\""),
            ("suppress_ragged_eofs", "false"),
            ("http_protocols", "\"h2,h1\""),
            ("http2_cleartext", "true"),
            ("header_map", "\"refuse\""),
            ("proxy_allow_ips", "\"*\""),
            ("proxy_allow_ips", "[\"127.0.0.1\", \"::1\"]"),
            ("raw_paste_global_conf", "[\"a=b\"]"),
            ("control_socket_mode", "\"600\""),
            ("logconfig_dict", "{ version = 1 }"),
            // Not in the table: c10k has the setting, or its default is None.
            ("workers", "1"),
            ("statsd_host", "\"\""),
        ] {
            assert!(!is_default(name, &value(v)), "{name} = {v}");
        }
    }

    fn serve() -> clap::Command {
        let mut cmd = crate::cli::Cli::command();
        cmd.build();
        cmd.find_subcommand("serve").unwrap().clone()
    }

    /// The table holds only settings c10k has no setting for: a file's value for one of c10k's
    /// is taken, never dropped; and no flag of the table is one of c10k's visible flags.
    #[test]
    fn only_settings_and_flags_c10k_lacks() {
        let structs = [
            c10k_serve::ServeConfig::augment_args(clap::Command::new("serve")),
            crate::builtin::AppArgs::augment_args(clap::Command::new("serve")),
            crate::python::PythonArgs::augment_args(clap::Command::new("serve")),
            crate::logging::LogArgs::augment_args(clap::Command::new("serve")),
        ];
        let serve = serve();
        for s in SETTINGS {
            assert!(
                crate::pyconfig::GUNICORN_SETTINGS.contains(&s.name),
                "{}",
                s.name
            );
            for c in &structs {
                assert!(
                    c.get_arguments().all(|a| a.get_id() != s.name),
                    "{}",
                    s.name
                );
            }
            if let Some(flag) = s.flag {
                if let Some(arg) = crate::arg_lookup::find_long(&serve, flag) {
                    assert!(arg.is_hide_set(), "--{flag} is c10k's");
                }
            }
        }
    }

    #[test]
    fn default_flags_are_dropped_and_others_kept() {
        let serve = serve();
        let run = |args: &[&str]| {
            let tokens: Vec<OsString> = args.iter().map(OsString::from).collect();
            let (kept, dropped) = drop_default_flags(&serve, &tokens);
            let kept: Vec<String> = kept
                .iter()
                .map(|t| t.to_string_lossy().into_owned())
                .collect();
            (kept, dropped)
        };
        let (kept, dropped) = run(&[
            "--protocol",
            "http",
            "-w",
            "2",
            "--http-parser=AUTO",
            "--proxy-protocol",
            "off",
            "--suppress-ragged-eofs",
            "app:app",
            "--dirty-workers",
            "0",
        ]);
        assert_eq!(kept, ["-w", "2", "app:app"]);
        assert_eq!(
            dropped,
            [
                "--protocol http",
                "--http-parser=AUTO",
                "--proxy-protocol off",
                "--suppress-ragged-eofs",
                "--dirty-workers 0"
            ]
        );
        // Other values, a bare --proxy-protocol (gunicorn's "auto"), values of c10k's flags
        // and everything after `--` stay for clap.
        for args in [
            &["--protocol", "uwsgi"][..],
            &["--proxy-protocol", "app:app"][..],
            &["--proxy-protocol", "-w", "2"][..],
            &["--http-parser", "fast"][..],
            &["--access-log-format", "--protocol"][..],
            &["-e", "--protocol=http"][..],
            &["--", "--protocol", "http"][..],
            &["--check-config"][..],
        ] {
            let (kept, dropped) = run(args);
            assert_eq!(kept, args, "{args:?}");
            assert!(dropped.is_empty(), "{args:?}");
        }
    }
}
