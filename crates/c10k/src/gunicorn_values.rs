//! gunicorn's validators (`gunicorn/config.py`), as they turn a config file's values into
//! settings, for the settings c10k shares with gunicorn. In gunicorn `workers = "4"` is 4
//! (`validate_pos_int` does `int(val, 0)`), so a gunicorn.conf.py often says
//! `workers = os.environ.get("WEB_CONCURRENCY", "2")`; `reload = "true"` is True
//! (`validate_bool`), `raw_env = "K=V"` a list of one (`validate_list_string`),
//! `forwarded_allow_ips = "a,b"` a list (`validate_string_to_list`), `user = 1000` a uid
//! (`validate_user`), and strings lose their surrounding blanks (`validate_string`).
//!
//! The design choice: c10k's settings are typed (serde), so a `--config` file's value, TOML or
//! what a gunicorn.conf.py gave, is converted here first, once, as gunicorn's validator would
//! convert it, through one table of (c10k key, gunicorn's validator) that serves both kinds of
//! file; the typed settings then take the result with all their own checks. A value that
//! gunicorn's validator refuses as well (`workers = "four"`, `workers = -1`) is refused here,
//! saying what was given and what is expected (the caller adds the file, line and key). A value
//! of the type c10k's setting has (an int for `workers`, a float for `timeout`, a list for
//! `forwarded_allow_ips`) is left as it is.

use toml::Value;

/// Which of gunicorn's validators a setting has, as far as c10k takes its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `validate_pos_int`: an int ≥ 0 (a bool is one), or a str that `int(val, 0)` reads.
    PosInt,
    /// `validate_bool`: a bool, or the str "true" or "false" (any case, blanks around).
    Bool,
    /// `validate_user`, `validate_group`: a name, or an id as an int or a str of digits.
    UserOrGroup,
    /// `validate_list_string`: a list of str, or one str for a list of one.
    StrList,
    /// `validate_string_to_list` (and `pythonpath`, which gunicorn splits): one str of
    /// comma-separated items.
    CommaList,
    /// `validate_string`: a str, without the blanks around it.
    Str,
}

/// c10k's keys (clap ids) whose values gunicorn's validators convert; a refused gunicorn
/// switch is here under its gunicorn name and c10k's flag, so that `daemon = "false"` asks for
/// nothing as `daemon = False` does (see `gunicorn::asks_for_nothing`).
/// `umask` is not here: c10k's own parser takes gunicorn's forms and more (`"022"`).
#[rustfmt::skip]
const KINDS: &[(&str, Kind)] = &[
    ("backlog", Kind::PosInt), ("workers", Kind::PosInt), ("threads", Kind::PosInt),
    ("worker_connections", Kind::PosInt), ("max_requests", Kind::PosInt),
    ("max_requests_jitter", Kind::PosInt), ("timeout", Kind::PosInt),
    ("graceful_timeout", Kind::PosInt), ("keepalive", Kind::PosInt),
    ("limit_request_line", Kind::PosInt), ("limit_request_fields", Kind::PosInt),
    ("limit_request_field_size", Kind::PosInt),
    ("reload", Kind::Bool), ("reuse_port", Kind::Bool), ("initgroups", Kind::Bool),
    ("capture_output", Kind::Bool), ("enable_stdio_inheritance", Kind::Bool),
    ("preload_app", Kind::Bool), ("daemon", Kind::Bool),
    ("spew", Kind::Bool), ("syslog", Kind::Bool), ("log_syslog", Kind::Bool),
    ("sendfile", Kind::Bool), ("no_sendfile", Kind::Bool),
    ("user", Kind::UserOrGroup), ("group", Kind::UserOrGroup),
    ("env", Kind::StrList), ("reload_extra_files", Kind::StrList),
    ("forwarded_allow_ips", Kind::CommaList), ("forwarder_headers", Kind::CommaList),
    ("pythonpath", Kind::CommaList), ("uwsgi_allow_from", Kind::CommaList),
    ("access_log", Kind::Str), ("access_log_format", Kind::Str), ("error_log", Kind::Str),
    ("pid", Kind::Str), ("app", Kind::Str), ("worker_class", Kind::Str),
    ("root_path", Kind::Str), ("chdir", Kind::Str),
];

/// `value` of the `--config` key `key` (either spelling, `max-requests` or `max_requests`) as
/// gunicorn's validator for it converts it; a key gunicorn does not validate is left as it is.
/// The error says what was given and what is expected.
pub fn convert(key: &str, value: Value) -> Result<Value, String> {
    let id = key.replace('-', "_");
    let Some(&(_, kind)) = KINDS.iter().find(|(k, _)| *k == id) else {
        return Ok(value);
    };
    match (kind, value) {
        (Kind::PosInt, Value::Boolean(b)) => Ok(Value::Integer(i64::from(b))),
        (Kind::PosInt, Value::Integer(n)) if n < 0 => Err(format!(
            "{n}: must not be negative (a whole number ≥ 0, as in gunicorn)"
        )),
        (Kind::PosInt, Value::String(s)) => match python_int(&s) {
            Some(Ok(n)) if n >= 0 => Ok(Value::Integer(n)),
            Some(Ok(n)) => Err(format!(
                "{s:?} is {n}: must not be negative (a whole number ≥ 0, as in gunicorn)"
            )),
            Some(Err(())) => Err(format!("{s:?} is too large")),
            None => Err(format!(
                "{s:?} is not a whole number: an int, or a str that Python's int(value, 0) \
                 reads, such as \"4\" or \"0x10\", as gunicorn takes it"
            )),
        },
        (Kind::Bool, Value::String(s)) => match py_strip(&s).to_lowercase().as_str() {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => Err(format!(
                "{s:?} is not a boolean: true or false, or the str \"true\" or \"false\" (any \
                 case), as gunicorn takes it"
            )),
        },
        (Kind::UserOrGroup, Value::Integer(n)) => Ok(Value::String(n.to_string())),
        (Kind::StrList, Value::String(s)) => {
            let s = py_strip(&s);
            let items = if s.is_empty() {
                Vec::new()
            } else {
                vec![Value::String(s.to_owned())]
            };
            str_list(&id, items)
        }
        (Kind::StrList, Value::Array(items)) => str_list(&id, items),
        (Kind::CommaList, Value::String(s)) => Ok(Value::Array(
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| Value::String(p.to_owned()))
                .collect(),
        )),
        (Kind::Str, Value::String(s)) => Ok(Value::String(py_strip(&s).to_owned())),
        (_, value) => Ok(value),
    }
}

/// `validate_list_string`'s items, stripped; each `env` item must be `KEY=VALUE`, as gunicorn's
/// `Config.env` requires at start ("environment setting 'X' invalid").
fn str_list(id: &str, items: Vec<Value>) -> Result<Value, String> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(s) = item else {
            // The typed setting names a wrong item (a TOML array of ints, say).
            out.push(item);
            continue;
        };
        let s = py_strip(&s).to_owned();
        if id == "env" {
            crate::python::key_value(&s)?;
        }
        out.push(Value::String(s));
    }
    Ok(Value::Array(out))
}

/// Python's `str.strip()`: Unicode white space, and the separators U+001C to U+001F.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// Python's `int(text, 0)` for the text gunicorn's `validate_pos_int` gets: blanks around, a
/// sign, a `0x`/`0o`/`0b` prefix (any case) or a decimal without leading zeros (`"08"` is not
/// read, `"00"` is), single underscores between digits (`"1_000"`, `"0x_ff"`). `None` when
/// Python would not read it; `Some(Err(()))` when it is beyond what a TOML integer holds.
/// (Python also reads non-ASCII decimal digits, `"٤"`; c10k does not.)
pub(crate) fn python_int(text: &str) -> Option<Result<i64, ()>> {
    let t = text.trim();
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = t.to_ascii_lowercase();
    let (radix, digits) = match lower.get(..2) {
        Some("0x") => (16, &lower[2..]),
        Some("0o") => (8, &lower[2..]),
        Some("0b") => (2, &lower[2..]),
        _ => (10, lower.as_str()),
    };
    // After a prefix one underscore may come first; elsewhere only between digits.
    let digits = if radix == 10 {
        digits
    } else {
        digits.strip_prefix('_').unwrap_or(digits)
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let plain: String = digits.chars().filter(|&c| c != '_').collect();
    if !plain.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    if radix == 10 && plain.starts_with('0') && plain.bytes().any(|b| b != b'0') {
        return None;
    }
    let magnitude = match u128::from_str_radix(&plain, radix) {
        Ok(n) => n,
        Err(_) => return Some(Err(())),
    };
    let n = if negative {
        0i128.checked_sub_unsigned(magnitude)
    } else {
        i128::try_from(magnitude).ok()
    };
    Some(n.and_then(|n| i64::try_from(n).ok()).ok_or(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_as_python_reads_them() {
        for (text, n) in [
            ("4", 4),
            (" 4 ", 4),
            ("\t4\n", 4),
            ("4\u{2003}", 4),
            ("+7", 7),
            ("-3", -3),
            ("1_000", 1000),
            ("0", 0),
            ("00", 0),
            ("0_0", 0),
            ("0x10", 16),
            ("0X1f", 31),
            ("0o17", 15),
            ("0b101", 5),
            ("0b_1", 1),
            ("-0x_10", -16),
        ] {
            assert_eq!(python_int(text), Some(Ok(n)), "{text:?}");
        }
        // Each of these is a ValueError in Python 3.11.
        for text in [
            "", " ", "four", "4.0", "1e3", "08", "0x", "0_x1", "1__0", "_1", "1_", "- 4",
            "4\u{1c}", "0o8", "0b2", "++1", "٤",
        ] {
            assert_eq!(python_int(text), None, "{text:?}");
        }
        assert_eq!(python_int("99999999999999999999"), Some(Err(())));
        assert_eq!(python_int(&"9".repeat(60)), Some(Err(())));
        assert_eq!(python_int("-9223372036854775808"), Some(Ok(i64::MIN)));
    }

    /// gunicorn's `validate_pos_int` on the settings c10k has: a str that int() reads is the
    /// number, a bool is 0 or 1, and what gunicorn refuses is refused, saying what is expected.
    #[test]
    fn pos_ints_take_strs() {
        let int = |n: i64| Ok(Value::Integer(n));
        for key in [
            "workers",
            "threads",
            "timeout",
            "graceful_timeout",
            "keepalive",
            "backlog",
            "worker_connections",
            "max_requests",
            "max-requests-jitter",
            "limit_request_line",
            "limit_request_fields",
            "limit_request_field_size",
        ] {
            assert_eq!(convert(key, "4".into()), int(4), "{key}");
            assert_eq!(convert(key, " 0x10 ".into()), int(16), "{key}");
            assert_eq!(convert(key, Value::Integer(7)), int(7), "{key}");
            assert_eq!(convert(key, Value::Boolean(true)), int(1), "{key}");
        }
        // c10k's fractions of a second stay c10k's.
        assert_eq!(convert("timeout", Value::Float(2.5)), Ok(Value::Float(2.5)));
        let e = convert("workers", "four".into()).unwrap_err();
        assert!(
            e.starts_with("\"four\" is not a whole number: an int, or a str that Python's"),
            "{e}"
        );
        let e = convert("workers", "-1".into()).unwrap_err();
        assert_eq!(
            e,
            "\"-1\" is -1: must not be negative (a whole number ≥ 0, as in gunicorn)"
        );
        let e = convert("workers", Value::Integer(-1)).unwrap_err();
        assert!(e.starts_with("-1: must not be negative"), "{e}");
        let e = convert("backlog", "99999999999999999999".into()).unwrap_err();
        assert_eq!(e, "\"99999999999999999999\" is too large");
        // Not gunicorn's: left to c10k's own parser.
        assert_eq!(convert("umask", "022".into()), Ok("022".into()));
        assert_eq!(convert("body_timeout", "5".into()), Ok("5".into()));
    }

    #[test]
    fn bools_take_true_and_false_strs() {
        for key in [
            "reload",
            "reuse_port",
            "capture_output",
            "preload_app",
            "daemon",
        ] {
            for (text, b) in [("true", true), (" False ", false), ("TRUE", true)] {
                assert_eq!(convert(key, text.into()), Ok(Value::Boolean(b)), "{key}");
            }
            assert_eq!(convert(key, Value::Boolean(true)), Ok(Value::Boolean(true)));
        }
        // validate_bool takes only those two words.
        for text in ["yes", "1", "on", ""] {
            let e = convert("reload", text.into()).unwrap_err();
            assert!(e.contains("is not a boolean: true or false"), "{e}");
        }
    }

    #[test]
    fn lists_users_and_strings() {
        let list = |items: &[&str]| Ok(Value::Array(items.iter().map(|&s| s.into()).collect()));
        assert_eq!(convert("env", "A=1".into()), list(&["A=1"]));
        assert_eq!(convert("env", "".into()), list(&[]));
        assert_eq!(
            convert("env", Value::Array(vec![" A=1 ".into(), "B==2".into()])),
            list(&["A=1", "B==2"])
        );
        let e = convert("env", Value::Array(vec!["NOVALUE".into()])).unwrap_err();
        assert!(e.contains("\"NOVALUE\" is not KEY=VALUE"), "{e}");
        assert_eq!(
            convert("reload_extra_files", "templates/*.html".into()),
            list(&["templates/*.html"])
        );
        assert_eq!(
            convert("forwarded_allow_ips", "10.0.0.1, 10.0.0.2,".into()),
            list(&["10.0.0.1", "10.0.0.2"])
        );
        assert_eq!(convert("forwarded-allow-ips", "*".into()), list(&["*"]));
        assert_eq!(
            convert("pythonpath", "src,lib".into()),
            list(&["src", "lib"])
        );
        assert_eq!(convert("user", Value::Integer(1000)), Ok("1000".into()));
        assert_eq!(convert("group", "www-data".into()), Ok("www-data".into()));
        assert_eq!(
            convert("access_log", " /var/log/a.log\n".into()),
            Ok("/var/log/a.log".into())
        );
        // A list is c10k's own form, kept.
        assert_eq!(
            convert("forwarded_allow_ips", Value::Array(vec!["*".into()])),
            list(&["*"])
        );
    }
}
