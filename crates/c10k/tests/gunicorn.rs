//! A gunicorn command line moved to `c10k serve`, as from a Procfile, Dockerfile or systemd unit:
//! the settings c10k has keep gunicorn's meaning and spelling (`WEB_CONCURRENCY`,
//! `--access-logfile`, `--log-level warning`, ...), and the ones it has not stop it at once with
//! a message that names the flag and says what to do instead — never silently ignored, unless
//! they give gunicorn's default, which asks for nothing (`protocol = 'http'`, `--protocol http`).

mod util;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use util::{get, Server};

fn c10k(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(args)
        .env_remove("WEB_CONCURRENCY")
        .env_remove("PORT")
        .env_remove("GUNICORN_CMD_ARGS")
        .env("C10K_ADMIN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .output()
        .expect("run c10k")
}

/// Runs `c10k serve ARGS`, which must fail as a usage error (exit status 2); its stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut argv = vec!["serve"];
    argv.extend_from_slice(args);
    let out = c10k(&argv, env);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    err
}

/// `c10k serve ARGS --check-config`: the effective settings as TOML.
fn effective(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut argv = vec!["serve"];
    argv.extend_from_slice(args);
    argv.push("--check-config");
    let out = c10k(&argv, env);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn gunicorn_only_flags_stop_the_server_naming_the_flag() {
    for (args, needles) in [
        (&["--daemon"][..], &["--daemon: ", "systemd"][..]),
        (&["-D"], &["--daemon: "]),
        (&["--paste", "production.ini"], &["--paste: ", "loadapp"]),
        (
            &["--certfile", "c.pem", "--keyfile", "k.pem"],
            &["--certfile: ", "TLS"],
        ),
        (
            &["--statsd-host", "localhost:8125"],
            &["--statsd-host: ", "/metrics"],
        ),
        (
            &["--proxy-protocol"],
            &["--proxy-protocol: ", "PROXY protocol"],
        ),
        (&["--log-config", "logging.conf"], &["--log-config: "]),
        (
            &[
                "--log-syslog-prefix",
                "web",
                "--log-syslog-facility",
                "local0",
            ],
            &["--log-syslog-prefix: ", "--error-log"],
        ),
        (&["--no-sendfile"], &["--no-sendfile: ", "sendfile(2)"]),
        // gunicorn 27's uwsgi listener: clap's own answer suggested --proxy-protocol.
        (
            &["--protocol", "uwsgi"],
            &["--protocol: ", "--bind uwsgi://127.0.0.1:3031"],
        ),
    ] {
        let mut argv = args.to_vec();
        argv.push("myapp:app");
        let err = refused(&argv, &[]);
        for needle in needles {
            assert!(err.contains(needle), "{args:?}: {needle:?} missing: {err}");
        }
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
    }
}

#[test]
fn gunicorn_config_files_get_a_c10k_answer() {
    // A gunicorn.conf.py is read (see `python_config` below); one that is not there is c10k's
    // "cannot read", as for a TOML file.
    let err = refused(&["-c", "gunicorn.conf.py", "myapp:app"], &[]);
    assert!(
        err.contains("cannot read config file gunicorn.conf.py: No such file"),
        "{err}"
    );
    if let Some(venv) = util::python::venv() {
        // gunicorn's own names are taken from a Python file (TOML's `accesslog` is refused
        // below, with c10k's name).
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gunicorn.conf.py");
        std::fs::write(&file, "workers = 2\naccesslog = \"-\"\n").unwrap();
        let text = effective(&["-c", file.to_str().unwrap()], &[("VIRTUAL_ENV", &venv)]);
        assert!(text.contains("workers = 2"), "{text}");
        assert!(text.contains("access-log = \"-\""), "{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c10k.toml");
    // Named as written: it said "key `preload-app`", a spelling the file does not have.
    std::fs::write(&file, "workers = 2\nlog_syslog_to = \"udp://x:514\"\n").unwrap();
    let err = refused(&["--config", file.to_str().unwrap()], &[]);
    assert!(
        err.contains("line 2, key `log_syslog_to`: gunicorn's `log_syslog_to` (--log-syslog-to)"),
        "{err}"
    );
    // gunicorn's `preload_app` is c10k's --preload (it was refused before c10k had it); it
    // goes with a Python application only.
    std::fs::write(&file, "workers = 2\npreload_app = true\n").unwrap();
    if let Some(venv) = util::python::venv() {
        let apps = util::python::apps();
        let args = [
            "--config",
            file.to_str().unwrap(),
            "--pythonpath",
            &apps,
            "forked:app",
        ];
        let text = effective(&args, &[("VIRTUAL_ENV", &venv)]);
        assert!(text.contains("preload-app = true"), "{text}");
    }
    let err = refused(&["--config", file.to_str().unwrap()], &[]);
    assert!(
        err.contains("--preload: it imports a hosted Python application once"),
        "{err}"
    );
    // gunicorn 27's config-file names of --proxy-allow-from and --uwsgi-allow-from.
    std::fs::write(&file, "proxy_allow_ips = \"*\"\n").unwrap();
    let err = refused(&["--config", file.to_str().unwrap()], &[]);
    assert!(
        err.contains("gunicorn's `proxy_allow_ips` (--proxy-allow-from)"),
        "{err}"
    );
    std::fs::write(&file, "uwsgi_allow_ips = [\"10.0.0.1\"]\n").unwrap();
    let err = refused(&["--config", file.to_str().unwrap()], &[]);
    assert!(err.contains("c10k's is `uwsgi-allow-from`"), "{err}");
    std::fs::write(&file, "accesslog = \"-\"\n").unwrap();
    let err = refused(&["--config", file.to_str().unwrap()], &[]);
    assert!(
        err.contains("unknown key (gunicorn's name; c10k's is `access-log`)"),
        "{err}"
    );
    // gunicorn's defaults of settings c10k refuses, written out, ask for nothing in TOML too,
    // as in a gunicorn.conf.py; and numbers and booleans may be strings, as gunicorn takes them.
    // Before, `preload_app = false` was refused as --preload.
    std::fs::write(
        &file,
        "workers = \"3\"\nreload = \"false\"\npreload_app = false\ndaemon = false\n\
         spew = false\nproxy_protocol = \"off\"\n\
         [secure_scheme_headers]\nX-FORWARDED-PROTOCOL = \"ssl\"\nX-FORWARDED-PROTO = \"https\"\n\
         X-FORWARDED-SSL = \"on\"\n",
    )
    .unwrap();
    let text = effective(&["-c", file.to_str().unwrap()], &[]);
    assert!(text.contains("workers = 3"), "{text}");
    std::fs::write(&file, "daemon = true\n").unwrap();
    let err = refused(&["--config", file.to_str().unwrap()], &[]);
    assert!(
        err.contains("line 1, key `daemon`: gunicorn's `daemon`"),
        "{err}"
    );
    // -c is --config, as in gunicorn.
    std::fs::write(&file, "workers = 2\n").unwrap();
    let text = effective(&["-c", file.to_str().unwrap()], &[]);
    assert!(text.contains("workers = 2"), "{text}");
}

/// A boolean flag's environment variable takes what environment files write for yes and no
/// (`1`/`0`, `yes`/`no`, `on`/`off`, `true`/`false`, any case), as uWSGI's `UWSGI_*` variables
/// do; anything else is refused naming the flag.
#[test]
fn a_boolean_flags_variable_takes_1_yes_on_and_their_opposites() {
    for yes in ["1", "yes", "on", "true", "TRUE", "Y"] {
        let text = effective(
            &[],
            &[("C10K_NO_DEFER_ACCEPT", yes), ("C10K_REUSE_PORT", yes)],
        );
        assert!(text.contains("no-defer-accept = true"), "{yes}: {text}");
        assert!(text.contains("reuse-port = true"), "{yes}: {text}");
    }
    for no in ["0", "no", "off", "false"] {
        let text = effective(&[], &[("C10K_NO_DEFER_ACCEPT", no)]);
        assert!(text.contains("no-defer-accept = false"), "{no}: {text}");
    }
    let err = refused(&[], &[("C10K_NO_DEFER_ACCEPT", "sure")]);
    assert!(
        err.contains("'sure'") && err.contains("--no-defer-accept"),
        "{err}"
    );
}

/// gunicorn (and Heroku, Render, Dokku, which set it) take `WEB_CONCURRENCY` as the default
/// number of workers; a flag, `C10K_WORKERS` or the file's `workers` wins over it.
#[test]
fn web_concurrency_is_the_default_worker_count() {
    let wc = [("WEB_CONCURRENCY", "3")];
    assert!(effective(&[], &wc).contains("workers = 3"));
    assert!(effective(&["-w", "2"], &wc).contains("workers = 2"));
    assert!(
        effective(&[], &[("WEB_CONCURRENCY", "3"), ("C10K_WORKERS", "4")]).contains("workers = 4")
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c10k.toml");
    std::fs::write(&file, "workers = 5\n").unwrap();
    assert!(effective(&["--config", file.to_str().unwrap()], &wc).contains("workers = 5"));
    assert!(effective(&[], &[]).contains("workers = 1"));
    for bad in ["0", "four", "-2"] {
        let err = refused(&[], &[("WEB_CONCURRENCY", bad)]);
        assert!(
            err.contains("WEB_CONCURRENCY") && err.contains("--workers"),
            "{err}"
        );
    }
    // And the server really starts that many.
    let s = Server::start_env(&[], &[("WEB_CONCURRENCY", "2")]);
    assert!(
        s.log().contains("Using worker: async (2 workers"),
        "{}",
        s.log()
    );
    assert_eq!(s.worker_pids().len(), 2, "{}", s.log());
}

/// A level that is not one (a typo, `--log-level verbose`) was read by the log filter as a module
/// name and silenced the whole log; gunicorn logs at `info` then. c10k refuses it, naming it.
#[test]
fn log_level_that_is_no_level_is_refused() {
    for level in ["foo", "verbose"] {
        let err = refused(&["--log-level", level, "--check-config"], &[]);
        assert!(
            err.contains(&format!("--log-level \"{level}\": not a level")),
            "{level}: {err}"
        );
    }
    effective(&["--log-level", "info,c10k_serve=debug"], &[]);
}

/// Durations beyond what `std::time::Duration` holds panicked (`--graceful-timeout 1e20` at
/// SIGTERM, `--keepalive 1e300` in every worker at boot); now each is refused naming its flag, or
/// its file, line and key. So is a worker count above the scoreboard's slots.
#[test]
fn huge_values_are_refused_naming_the_setting() {
    for flag in [
        "--graceful-timeout",
        "--keep-alive",
        "--timeout",
        "--request-timeout",
        "--drain-delay",
    ] {
        let err = refused(&[flag, "1e20", "--check-config"], &[]);
        assert!(err.contains("from 0 to 1000000000"), "{flag}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c10k.toml");
    std::fs::write(&file, "workers = 1\ngraceful_timeout = 1e20\n").unwrap();
    let err = refused(&["--config", file.to_str().unwrap(), "--check-config"], &[]);
    assert!(
        err.contains("line 2, key `graceful_timeout`") && err.contains("from 0 to 1000000000"),
        "{err}"
    );
    // More workers than the scoreboard has slots: refused at once (exit 2), not after the
    // banner by the master (exit 1).
    let err = refused(&["--workers", "1000", "--check-config"], &[]);
    assert!(
        err.contains("--workers: 1000 is above the maximum of 256"),
        "{err}"
    );
    // A long one that fits is still taken, as gunicorn takes it.
    assert!(effective(&["--graceful-timeout", "86400"], &[]).contains("graceful-timeout = 86400"));
}

/// `--check-config` refuses what the start refuses: `-k gevent` or `--reload` for the built-in
/// application passed the check (exit 0, the settings printed) and then stopped `c10k serve`
/// with exit status 2, so a Dockerfile's `RUN c10k serve --check-config` step did not catch them.
#[test]
fn check_config_refuses_what_the_start_refuses() {
    for (args, needle) in [
        (&["-k", "gevent"][..], "use --worker-class async"),
        (
            &["--reload"],
            "the built-in application is part of the c10k binary",
        ),
    ] {
        let err = refused(&[args, &["--check-config"]].concat(), &[]);
        assert!(err.contains(needle), "{args:?}: {err}");
        let err = refused(args, &[]);
        assert!(
            err.contains(needle),
            "{args:?} without --check-config: {err}"
        );
    }
}

/// gunicorn's `--log-level warning` was read by the log filter as the name of a module, so
/// c10k logged nothing at all, errors included.
#[test]
fn log_level_warning_shows_warnings_only() {
    for level in ["warning", "WARNING"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_c10k"))
            .args(["serve", "--bind", "127.0.0.1:0", "--admin", "off"])
            // Above any somaxconn: the master warns that it is capped.
            .args(["--backlog", "1000000", "--log-level", level])
            .env_remove("C10K_LOG")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let done = line.contains("capped");
            seen.push(line);
            if done {
                break;
            }
        }
        // SAFETY: kill has no memory-safety preconditions; the group is the server's own.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let _ = child.wait();
        let text = seen.join("\n");
        assert!(
            text.contains("WARN") && text.contains("capped"),
            "{level}: {text:?}"
        );
        assert!(!text.contains("INFO"), "{level}: {text}");
    }
}

#[test]
fn access_logfile_and_print_config_are_gunicorns_spellings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let text = effective(&["--access-logfile", path.to_str().unwrap()], &[]);
    assert!(text.contains("access-log = "), "{text}");
    let out = c10k(&["serve", "-w", "2", "--print-config"], &[]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("workers = 2"),
        "{out:?}"
    );
    let s = Server::start(&["--access-logfile", path.to_str().unwrap()]);
    assert_eq!(get(s.addr, "/gunicorn-spelling").unwrap().status, 404);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        if log.contains("\"GET /gunicorn-spelling HTTP/1.1\" 404") {
            break;
        }
        assert!(Instant::now() < deadline, "access log: {log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// gunicorn's `GUNICORN_CMD_ARGS`: extra flags, shell-quoted, below the command line (a flag
/// given in both takes the command line's value, whole, `--bind` too) and above `C10K_*`.
#[test]
fn gunicorn_cmd_args_are_flags_below_the_command_line() {
    let fmt = r#"%(h)s "%(r)s" %(s)s"#;
    let var = format!("--workers=3 --access-log - --access-log-format '{fmt}' -b 127.0.0.1:1");
    let out = c10k(
        &["serve", "--check-config"],
        &[("GUNICORN_CMD_ARGS", &var), ("C10K_WORKERS", "7")],
    );
    let (toml, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{err}");
    assert!(toml.contains("workers = 3\n"), "{toml}");
    assert!(
        toml.contains(&format!("access-log-format = '{fmt}'")),
        "{toml}"
    );
    assert!(toml.contains("127.0.0.1:1"), "{toml}");
    assert!(
        err.contains("flags taken from GUNICORN_CMD_ARGS: --workers=3"),
        "{err}"
    );

    let toml = effective(
        &["-w", "5", "--bind", "127.0.0.1:4"],
        &[(
            "GUNICORN_CMD_ARGS",
            "-w 3 -b 127.0.0.1:1 -b 127.0.0.1:2 --timeout 9",
        )],
    );
    assert!(toml.contains("workers = 5\n"), "{toml}");
    assert!(toml.contains("timeout = 9.0\n"), "{toml}");
    assert!(toml.contains("127.0.0.1:4"), "{toml}");
    assert!(
        !toml.contains("127.0.0.1:1") && !toml.contains("127.0.0.1:2"),
        "{toml}"
    );

    // A started server: the variable's -w, the command line's --bind (127.0.0.1:0) alone; the
    // workers, this binary started again, read the same variable.
    let s = Server::start_env(&[], &[("GUNICORN_CMD_ARGS", "-w 3 --bind 127.0.0.1:1")]);
    s.wait_for_workers(3);
    assert!(get(s.addr, "/").is_ok());
}

/// A `GUNICORN_CMD_ARGS` c10k cannot take stops it (exit status 2) naming the variable
/// (`--check-config`, so that a server started by mistake does not hang the test).
#[test]
fn a_bad_gunicorn_cmd_args_is_refused_naming_it() {
    for (var, needle) in [
        ("--bind '127.0.0.1:1", "unbalanced quote"),
        ("--no-such-flag", "unexpected argument '--no-such-flag'"),
        ("-w many", "invalid value 'many'"),
        ("--daemon", "--daemon: "),
    ] {
        let err = refused(&["--check-config"], &[("GUNICORN_CMD_ARGS", var)]);
        assert!(err.contains(&format!("GUNICORN_CMD_ARGS={var:?}")), "{err}");
        assert!(err.contains(needle), "{var}: {err}");
    }
}

/// gunicorn's `-p/--pid FILE`: the master's pid while it runs, gone after it stops; a second
/// server given the same file while the first runs does not start.
#[test]
fn pid_file_holds_the_master_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/c10k.pid");
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let pidfile = path.to_str().unwrap();
    let mut s = Server::start(&["-w", "2", "-p", pidfile]);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text, format!("{}\n", s.child.id()));
    let out = c10k(&["serve", "--bind", "127.0.0.1:0", "--pid", pidfile], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "--pid {pidfile}: c10k is already running as pid {}",
            s.child.id()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "left alone");
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0), "{}", s.log());
    assert!(!path.exists(), "removed at exit");
    // A stale file (its process is gone) is replaced; the config file takes gunicorn's
    // `pidfile` under c10k's name.
    std::fs::write(&path, "2147483647\n").unwrap();
    let conf = dir.path().join("c10k.toml");
    std::fs::write(&conf, format!("pid = {pidfile:?}\n")).unwrap();
    let mut s = Server::start(&["--config", conf.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}\n", s.child.id())
    );
    s.signal(libc::SIGINT);
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0), "{}", s.log());
    assert!(!path.exists());
}

/// A WSGI app that writes to each of its outputs, at import and in its view.
#[cfg(feature = "python")]
const PRINTING_APP: &str = r#"
import sys
print("stdout at import", flush=True)
def app(environ, start_response):
    print("stdout in view", flush=True)
    sys.stderr.write("stderr in view\n")
    sys.stderr.flush()
    environ["wsgi.errors"].write("wsgi.errors in view\n")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"#;

/// Starts `c10k serve ARGS printing_app:app` from `dir` with its standard output and error in
/// `dir/stdout` and `dir/stderr`, asks `/` once, stops it and returns (stdout, stderr, the
/// file `log` in `dir`).
#[cfg(feature = "python")]
fn run_printing_app(dir: &std::path::Path, args: &[&str]) -> (String, String, String) {
    std::fs::write(dir.join("printing_app.py"), PRINTING_APP).unwrap();
    let log = dir.join("log");
    let mut child = util::serve_command()
        .args(["-w", "2"])
        .args(["--pythonpath", dir.to_str().unwrap()])
        .args(args)
        .arg("printing_app:app")
        .current_dir(dir)
        .env("C10K_LOG", "info")
        .env(
            "VIRTUAL_ENV",
            std::env::var("C10K_TEST_VENV").unwrap_or_default(),
        )
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let all = || format!("{}{}{}", read("log"), read("stderr"), read("stdout"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let text = all();
        let found = text
            .split("Listening at: http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next()?.parse().ok());
        if let (Some(addr), 2) = (found, text.matches("stdout at import").count()) {
            break addr;
        }
        assert!(Instant::now() < deadline, "no start: {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let r = get(addr, "/").unwrap();
    assert_eq!(r.status, 200, "{}", all());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !all().contains("wsgi.errors in view") || !all().contains("stderr in view") {
        assert!(Instant::now() < deadline, "no view output: {}", all());
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success(), "{}", all());
    let _ = log;
    (read("stdout"), read("stderr"), read("log"))
}

/// gunicorn's `--error-logfile FILE`: the server's log (wsgi.errors included) goes to FILE, from
/// the master and every worker; what the app prints stays on standard output and error.
#[cfg(feature = "python")]
#[test]
fn error_logfile_takes_the_servers_log() {
    if util::python::venv().is_none() {
        return;
    }
    for flag in ["--error-logfile", "--log-file", "--error-log"] {
        let dir = tempfile::tempdir().unwrap();
        let (stdout, stderr, log) = run_printing_app(dir.path(), &[flag, "log"]);
        for needle in [
            "Listening at",
            "Booting worker",
            "wsgi.errors in view",
            "stopped",
        ] {
            assert!(
                log.contains(needle),
                "{flag}: {needle:?} not in the log: {log}"
            );
        }
        assert!(!log.contains('\x1b'), "no colour codes in a file: {log}");
        assert!(!stderr.contains("Listening at"), "{flag}: {stderr}");
        assert!(stderr.contains("stderr in view"), "{flag}: {stderr}");
        assert_eq!(stdout.matches("stdout at import").count(), 2, "{stdout}");
        assert!(stdout.contains("stdout in view"), "{stdout}");
        assert!(!log.contains("stdout in view"), "{log}");
    }
}

/// What the app writes to wsgi.errors (Flask's tracebacks of a 500) stays in the log at
/// `--log-level error` and `critical`, as gunicorn writes it whatever the level; c10k's own info
/// and warnings do not. Before, those levels hid it.
#[cfg(feature = "python")]
#[test]
fn wsgi_errors_stay_at_log_level_error() {
    use std::io::{Read, Write};
    if util::python::venv().is_none() {
        return;
    }
    for level in ["error", "critical"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("printing_app.py"), PRINTING_APP).unwrap();
        // No "Listening at" line at these levels: reach it on a unix socket of known path.
        let sock = dir.path().join("s.sock");
        let mut child = util::serve_command()
            .args(["--bind", &format!("unix:{}", sock.display())])
            .args(["--pythonpath", dir.path().to_str().unwrap()])
            .args(["--error-logfile", "log", "--log-level", level])
            .arg("printing_app:app")
            .current_dir(dir.path())
            .env(
                "VIRTUAL_ENV",
                std::env::var("C10K_TEST_VENV").unwrap_or_default(),
            )
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A failed assertion must not leave the server running.
        let _group = util::KillGroup(child.id() as i32);
        let log = || std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(20);
        let answer = loop {
            if let Ok(mut c) = std::os::unix::net::UnixStream::connect(&sock) {
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
                let mut answer = String::new();
                let _ = c.read_to_string(&mut answer);
                break answer;
            }
            assert!(Instant::now() < deadline, "{level}: no socket: {}", log());
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{level}: {answer}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !log().contains("wsgi.errors in view") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().unwrap();
        let log = log();
        assert!(log.contains("wsgi.errors in view"), "{level}: {log}");
        assert!(!log.contains("Booting worker"), "{level}: {log}");
    }
}

/// gunicorn's `--capture-output`: with an error log file, the app's standard output and error
/// (print(), sys.stderr) land in it too, from every worker.
#[cfg(feature = "python")]
#[test]
fn capture_output_sends_the_apps_output_to_the_error_log() {
    if util::python::venv().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (stdout, stderr, log) =
        run_printing_app(dir.path(), &["--error-logfile", "log", "--capture-output"]);
    assert_eq!(log.matches("stdout at import").count(), 2, "{log}");
    for needle in [
        "Listening at",
        "Booting worker",
        "stdout in view",
        "stderr in view",
        "wsgi.errors in view",
        "stopped",
    ] {
        assert!(log.contains(needle), "{needle:?} not in the log: {log}");
    }
    assert!(!log.contains('\x1b'), "no colour codes in a file: {log}");
    assert_eq!(stdout, "");
    assert_eq!(stderr, "");
    // Without a file it changes nothing, as in gunicorn, and says so.
    let dir = tempfile::tempdir().unwrap();
    let (stdout, stderr, _) = run_printing_app(dir.path(), &["--capture-output"]);
    assert!(stdout.contains("stdout in view"), "{stdout}");
    assert!(
        stderr.contains("--capture-output without --error-log FILE changes nothing"),
        "{stderr}"
    );
}

/// gunicorn's `--access-logformat`, with a request header atom (the client address a proxy
/// reports) and a response header atom, under every worker class; without an access log it is refused, not ignored.
#[test]
fn access_logformat_takes_gunicorns_atoms() {
    for class in ["sync", "thread", "gthread", "async"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let s = Server::start(&[
            "-k",
            class,
            "--access-logfile",
            path.to_str().unwrap(),
            "--access-logformat",
            "%({x-forwarded-for}i)s %(h)s %(l)s %(u)s \"%(r)s\" %(s)s %(b)s %(m)s %(U)s %(q)s %(H)s \
             \"%(a)s\" %({x-missing}i)s %({Content-Type}o)s %(zz)s",
        ]);
        let mut c = util::Reader::new(util::connect(s.addr));
        c.send(
            b"GET /?delay=0&token=s3cret HTTP/1.1\r\nHost: h\r\nUser-Agent: t/1\r\n\
              Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l\r\n\
              X-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert_eq!(c.response().unwrap().status, 200);
        let want =
            "203.0.113.9 127.0.0.1 - aladdin \"GET /?delay=0&token=*** HTTP/1.1\" 200 6 GET / \
                    delay=0&token=*** HTTP/1.1 \"t/1\" - text/plain; charset=utf-8 -\n";
        let (line, log) = util::wait_for_line(&path, class, |l| l.contains("token"));
        assert_eq!(line, want, "{class}");
        // The start-up probe's line first ("GET / HTTP/1.1", no header: -).
        assert!(
            log.starts_with("- 127.0.0.1 - - \"GET / HTTP/1.1\" 200"),
            "{log}"
        );
        assert!(!log.contains("opensesame"), "{log}");
    }
    let err = refused(&["--access-logformat", "%(h)s"], &[]);
    assert!(
        err.contains("--access-log-format: needs --access-log FILE"),
        "{err}"
    );
}

/// gunicorn's `%({name}e)s` environ atoms (the name in any case, as gunicorn looks it up): the
/// variables the server derives from the request, for the built-in app too, under every worker
/// class; an empty one prints nothing, one the environ lacks `-`.
#[test]
fn access_logformat_prints_environ_variables() {
    for class in ["sync", "thread", "gthread", "async"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let s = Server::start(&[
            "-k",
            class,
            "--access-logfile",
            path.to_str().unwrap(),
            "--access-logformat",
            "%({PATH_INFO}e)s|%({request_method}e)s|%({query_string}e)s|%({raw_uri}e)s|\
             %({server_protocol}e)s|%({server_name}e)s:%({server_port}e)s|\
             %({remote_addr}e)s:%({remote_port}e)s|%({content_type}e)s|%({content_length}e)s|\
             %({http_x_forwarded_for}e)s|%({HTTP_COOKIE}e)s|%({wsgi.url_scheme}e)s|\
             %({script_name}e)s|%({HOME}e)s",
        ]);
        let stream = util::connect(s.addr);
        let me = stream.local_addr().unwrap();
        let mut c = util::Reader::new(stream);
        c.send(
            b"GET /?delay=0&token=s3cret HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\n\
              X-Forwarded-For: 203.0.113.9\r\nX_Forwarded_For: spoofed\r\nCookie: b=\"2\"\r\n\
              Connection: close\r\n\r\n",
        )
        .unwrap();
        assert_eq!(c.response().unwrap().status, 200);
        let want = format!(
            "/|GET|delay=0&token=***|/?delay=0&token=***|HTTP/1.1|127.0.0.1:{}|127.0.0.1:{}|-|-|\
             203.0.113.9|a=1; b=\\\"2\\\"|http||-\n",
            s.addr.port(),
            me.port()
        );
        let (line, log) = util::wait_for_line(&path, class, |l| l.contains("token"));
        assert_eq!(line, want, "{class}");
        // The start-up probe's line first: no query, an empty QUERY_STRING.
        assert!(log.starts_with("/|GET||/|HTTP/1.1|"), "{class}: {log}");
    }
}

/// gunicorn's `-m/--umask` on a unix-socket bind: the socket's mode is 0777 without the mask, so
/// `--umask 0o117` leaves it to the socket's owner and group (0660); from a TOML file too.
#[test]
fn umask_sets_the_unix_sockets_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c10k.toml");
    std::fs::write(&conf, "umask = 0o077\n").unwrap();
    for (args, mode) in [
        (&["--umask", "0o117"][..], 0o660),
        (&["-m", "0117"], 0o660),
        (&["--umask", "0"], 0o777),
        (&["--config", conf.to_str().unwrap()], 0o700),
        (&[], 0o666),
    ] {
        let path = dir.path().join("c10k.sock");
        let bind = format!("unix:{}", path.display());
        let mut argv = vec!["serve", "--bind", &bind, "--admin", "off"];
        argv.extend_from_slice(args);
        let mut child = Command::new(env!("CARGO_BIN_EXE_c10k"))
            .args(&argv)
            .env("C10K_DATA_DIR", dir.path())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&path).is_err() {
            assert!(Instant::now() < deadline, "{args:?}: no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        let got = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(got, mode, "{args:?}: {got:o}");
    }
    for bad in ["0o1000", "9x", "-1"] {
        let err = refused(&["--umask", bad], &[]);
        assert!(
            err.contains("--umask") && err.contains("umask from 0 to 0o777"),
            "{err}"
        );
    }
}

/// A unix `--bind` as gunicorn's: a stale socket file (a crash) is replaced, anything else at the
/// path is refused and left alone, and the socket file goes away when the server stops.
#[test]
fn unix_socket_files_are_replaced_kept_and_removed_as_gunicorns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    let bind = format!("unix:{}", path.display());
    // A file that is no socket, a mistyped `--bind unix:app.py`: before, it was deleted.
    std::fs::write(&path, "precious\n").unwrap();
    let errfile = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(["serve", "--bind", &bind, "--admin", "off"])
        .env("C10K_DATA_DIR", dir.path())
        .stderr(std::fs::File::create(&errfile).unwrap())
        .spawn()
        .unwrap();
    let status = util::exit_within(&mut child, Duration::from_secs(15));
    let err = std::fs::read_to_string(&errfile).unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "still serving: {err}"
    );
    assert!(
        err.contains(&format!("cannot listen on {bind} (--bind)")) && err.contains("not a socket"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious\n");
    std::fs::remove_file(&path).unwrap();
    // A socket file nothing answers on, as a killed server leaves it: replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let mut s = Server::start(&["--bind", &bind]);
    assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0), "{}", s.log());
    // Before, the file stayed after every stop.
    assert!(!path.exists(), "the socket file is removed at exit");
}

/// The uid of a process, from /proc.
fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// gunicorn's `-u/--user`, `-g/--group`: the master stays root (it bound the port), every
/// worker runs as the user, the log files it opens are the user's, and the workers still stop
/// when the master dies (a change of user clears the parent-death signal, so it is set after).
#[test]
fn user_and_group_run_the_workers_as_that_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: --user needs the test run as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The user must reach the files it writes (as for any log directory).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let access = dir.path().join("access.log");
    let errors = dir.path().join("error.log");
    // The built-in app's journal is written by the workers: a directory of the user's.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    let mut s = Server::start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "-w",
        "2",
        "-u",
        "nobody",
        "-g",
        "nogroup",
        "--access-logfile",
        access.to_str().unwrap(),
    ]);
    let master = s.child.id();
    assert_eq!(uid_of(master), Some(0));
    let workers = s.worker_pids();
    for &w in &workers {
        assert_eq!(uid_of(w), Some(65534), "worker {w}: {}", s.log());
    }
    assert_eq!(get(s.addr, "/").unwrap().status, 200);
    {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&access).unwrap().uid(), 65534);
    }
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(master as i32, libc::SIGKILL) };
    let _ = s.wait_exit(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(10);
    while workers.iter().any(|&w| uid_of(w).is_some()) {
        assert!(Instant::now() < deadline, "workers outlived their master");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The error log file too; an unknown user is refused by name.
    let out = c10k(
        &[
            "serve",
            "--user",
            "no-such-user-c10k",
            "--error-logfile",
            errors.to_str().unwrap(),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--user: no-such-user-c10k: no such user"),
        "{err}"
    );
}

/// gunicorn's spellings of its worker classes are c10k's classes; the ones c10k does not have
/// (ASGI's uvicorn worker, eventlet, tornado) are refused with what to use instead rather than
/// clap's list of values.
#[test]
fn gunicorn_worker_classes() {
    for (k, class) in [
        ("gunicorn.workers.sync.SyncWorker", "sync"),
        ("gunicorn.workers.gthread.ThreadWorker", "gthread"),
    ] {
        let text = effective(&["-k", k], &[]);
        assert!(
            text.contains(&format!("worker-class = \"{class}\"")),
            "{k}: {text}"
        );
    }
    // gevent hosts Python apps only: for the built-in app the check refuses it by name.
    for k in [
        "egg:gunicorn#gevent",
        "gunicorn.workers.ggevent.GeventWorker",
    ] {
        let err = refused(&["-k", k, "--check-config"], &[]);
        assert!(
            err.contains("--worker-class gevent runs a Python WSGI application"),
            "{k}: {err}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c10k.toml");
    std::fs::write(
        &conf,
        "worker_class = \"gunicorn.workers.gthread.ThreadWorker\"\n",
    )
    .unwrap();
    let text = effective(&["--config", conf.to_str().unwrap()], &[]);
    assert!(text.contains("worker-class = \"gthread\""), "{text}");
    for (args, needle) in [
        (
            &["-k", "uvicorn.workers.UvicornWorker", "main:app"][..],
            "ASGI",
        ),
        (
            &["--worker-class=uvicorn_worker.UvicornWorker", "main:app"],
            "ASGI",
        ),
        (&["-keventlet", "app:app"], "-k gevent"),
        (&["-k", "tornado", "app:app"], "Tornado"),
    ] {
        let err = refused(args, &[]);
        assert!(
            err.contains("--worker-class ") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
    let err = refused(
        &["app:app"],
        &[("C10K_WORKER_CLASS", "uvicorn.workers.UvicornWorker")],
    );
    assert!(err.contains("ASGI"), "{err}");
}

/// gunicorn's `--check-config APP` loads the app: a Dockerfile's `RUN ... --check-config` step
/// must fail on an app that cannot be imported (it printed the settings and passed). The
/// settings it prints name the app, given as APP_MODULE (they left it out: only `--app` showed).
#[cfg(feature = "python")]
#[test]
fn check_config_loads_the_app() {
    let Some(venv) = util::python::venv() else {
        return;
    };
    let apps = util::python::apps();
    let env = [("VIRTUAL_ENV", venv.as_str())];
    let ok = effective(&["--pythonpath", &apps, "probe:app"], &env);
    assert!(ok.contains("workers = 1"), "{ok}");
    assert!(ok.contains("app = \"probe:app\""), "{ok}");
    for (app, needle) in [
        ("broken_import:app", "broken_import:app does not load"),
        (
            "no_such_module_c10k:app",
            "No module named 'no_such_module_c10k'",
        ),
    ] {
        let out = c10k(
            &["serve", "--check-config", "--pythonpath", &apps, app],
            &env,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{app}: {err}");
        assert!(err.contains(needle), "{app}: {err}");
    }
}

/// gunicorn binds `0.0.0.0:$PORT` when `PORT` is set and no bind is given (Heroku, Render,
/// Cloud Run set it, and a Procfile's `web: gunicorn app:app` relies on it); c10k listened on
/// 127.0.0.1:8000 there, out of the platform's reach.
#[test]
fn port_is_the_default_bind() {
    let port = [("PORT", "5000")];
    assert!(effective(&[], &port).contains("bind = [\"0.0.0.0:5000\"]"));
    assert!(effective(&["-b", "127.0.0.1:7000"], &port).contains("bind = [\"127.0.0.1:7000\"]"));
    let env_bind = [("PORT", "5000"), ("C10K_BIND", "127.0.0.1:7001")];
    assert!(effective(&[], &env_bind).contains("bind = [\"127.0.0.1:7001\"]"));
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c10k.toml");
    std::fs::write(&conf, "bind = \"127.0.0.1:7002\"\n").unwrap();
    let text = effective(&["--config", conf.to_str().unwrap()], &port);
    assert!(text.contains("bind = [\"127.0.0.1:7002\"]"), "{text}");
    assert!(effective(&[], &[]).contains("bind = [\"127.0.0.1:8000\"]"));
    let err = refused(&[], &[("PORT", "http")]);
    assert!(err.contains("PORT") && err.contains("--bind"), "{err}");
}

/// logrotate's `postrotate kill -USR1 $(cat PIDFILE)`, as for gunicorn: the log files moved
/// away are reopened by the master and every worker, and later lines go to the new files. The
/// master did not handle SIGUSR1, so the signal's default action killed it.
#[test]
fn sigusr1_reopens_rotated_log_files() {
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    let errors = dir.path().join("error.log");
    let (mut child, _group) = util::spawn_quiet(
        util::serve_command()
            .args(["-w", "2"])
            .args(["--access-logfile", access.to_str().unwrap()])
            .args(["--access-logformat", "%(p)s %(r)s"])
            .args(["--error-logfile", errors.to_str().unwrap()])
            .env("C10K_LOG", "info")
            .env("C10K_DATA_DIR", dir.path()),
    );
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let wait_for = util::wait_for_count;
    wait_for(&errors, "Booting worker", 2);
    wait_for(&errors, "all workers booted", 1);
    let addr: std::net::SocketAddr = read(&errors)
        .split("Listening at: http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert_eq!(get(addr, "/before").unwrap().status, 404);
    wait_for(&access, "/before", 1);
    std::fs::rename(&access, dir.path().join("access.log.1")).unwrap();
    std::fs::rename(&errors, dir.path().join("error.log.1")).unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    wait_for(&errors, "SIGUSR1: log files reopened", 1);
    // Both workers have reopened once each answers into the new file (each connection lands on
    // either; ask until two worker pids have written there).
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0.. {
        assert_eq!(get(addr, &format!("/after{i}")).unwrap().status, 404);
        let pids: std::collections::HashSet<String> = read(&access)
            .lines()
            .filter(|l| l.contains("/after"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        if pids.len() >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no lines after rotation: {}",
            read(&access)
        );
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGUSR1 stopped the master"
    );
    // (A request a worker served before its own SIGUSR1 arrived still went to the old file.)
    assert!(read(&dir.path().join("access.log.1")).contains("/before"));
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(
        read(&errors).contains("all workers stopped"),
        "{}",
        read(&errors)
    );
}

/// `--worker-tmp-dir /dev/shm` (gunicorn's advice for Docker) and `-R` ask for what c10k always
/// does (no heartbeat files; stdio kept), and `-n/--name` (`proc_name`) only a process title, so
/// they are accepted with a note instead of refused;
/// a tmp dir that does not exist is refused, as gunicorn could not start there.
#[test]
fn worker_tmp_dir_and_stdio_inheritance_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = c10k(
        &[
            "serve",
            "--worker-tmp-dir",
            d,
            "-R",
            "-n",
            "web",
            "--check-config",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("--worker-tmp-dir: accepted: "), "{err}");
    // gunicorn's process title (only with setproctitle installed): c10k keeps its own.
    assert!(err.contains("--name: accepted: "), "{err}");
    assert!(
        err.contains("--enable-stdio-inheritance: accepted: "),
        "{err}"
    );
    let out = c10k(
        &["serve", &format!("--worker-tmp-dir={d}"), "--check-config"],
        &[],
    );
    assert!(out.status.success());
    let conf = dir.path().join("c10k.toml");
    std::fs::write(
        &conf,
        format!("worker_tmp_dir = {d:?}\nproc_name = \"web\"\nworkers = 2\n"),
    )
    .unwrap();
    assert!(effective(&["--config", conf.to_str().unwrap()], &[]).contains("workers = 2"));
    let out = c10k(
        &[
            "serve",
            "--config",
            conf.to_str().unwrap(),
            "--check-config",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--name: accepted: "), "{err}");
    let err = refused(&["--worker-tmp-dir", "/no/such/dir/c10k"], &[]);
    assert!(
        err.contains("--worker-tmp-dir /no/such/dir/c10k: not a directory"),
        "{err}"
    );
}

/// gunicorn's `--reload` is taken for a Python app (tests in wsgi.rs and gevent.rs); for the
/// built-in app, which is compiled in, c10k says what it is for instead of ignoring it, from a
/// flag, `C10K_RELOAD` or a config file's `reload` alike. A `--reload-extra-file` that does not
/// exist is refused, as gunicorn refuses it (a pattern may match nothing yet).
#[test]
fn reload_is_for_python_apps_and_its_extra_files_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c10k.toml");
    std::fs::write(&file, "reload = true\n").unwrap();
    let file = file.to_str().unwrap();
    for (args, env) in [
        (&["--reload"][..], &[][..]),
        (&[], &[("C10K_RELOAD", "true")]),
        (&["--config", file], &[]),
    ] {
        let err = refused(args, env);
        assert!(
            err.contains("--reload restarts the workers of a hosted Python application")
                && err.contains("c10k serve --reload MODULE:APP"),
            "{args:?} {env:?}: {err}"
        );
    }
    let err = refused(
        &[
            "--reload",
            "--reload-extra-file",
            "/nonexistent/page.html",
            "myapp:app",
        ],
        &[],
    );
    assert!(
        err.contains("--reload-extra-file /nonexistent/page.html: no such file"),
        "{err}"
    );
    let err = refused(&["--reload-engine", "fsevents", "myapp:app"], &[]);
    assert!(err.contains("fsevents") && err.contains("inotify"), "{err}");
}

/// gunicorn's Python config files (`-c gunicorn.conf.py`, `-c python:MODULE`, and
/// `./gunicorn.conf.py` when no `-c` is given), run with the app's Python (the test venv) as
/// gunicorn runs them, their settings taken as a TOML file's keys.
#[cfg(feature = "python")]
mod python_config {
    use super::*;
    use std::path::Path;
    use util::python::{apps, venv};

    /// `c10k serve ARGS` in `dir` with the test venv as `VIRTUAL_ENV`, bounded (20 s).
    fn run_in(dir: &Path, args: &[&str]) -> Output {
        run_in_env(dir, args, &[])
    }

    /// [`run_in`] with variables added to its environment.
    fn run_in_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_c10k"));
        cmd.arg("serve")
            .args(args)
            .current_dir(dir)
            .env_remove("WEB_CONCURRENCY")
            .env_remove("PORT")
            .env_remove("GUNICORN_CMD_ARGS")
            .env_remove("C10K_CONFIG")
            .env("C10K_ADMIN", "127.0.0.1:0")
            .env("VIRTUAL_ENV", venv().unwrap())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().unwrap();
        let pid = child.id() as i32;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done2 = done.clone();
        let watchdog = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !done2.load(std::sync::atomic::Ordering::Relaxed) {
                if Instant::now() > deadline {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        });
        let out = child.wait_with_output().unwrap();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(
            !watchdog.join().unwrap(),
            "c10k serve {args:?} did not stop"
        );
        out
    }

    fn text(out: &Output) -> (String, String) {
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// What the config-file tests ask of every error: a usage error (exit status 2) naming the
    /// file, and nothing of c10k's insides.
    fn config_error(dir: &Path, args: &[&str]) -> String {
        let out = run_in(dir, args);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for inside in ["pyconfig", "<string>", "importlib", "Error {", "panicked"] {
            assert!(!err.contains(inside), "{inside:?} in: {err}");
        }
        err
    }

    const REALISTIC: &str = r#"# A gunicorn.conf.py as projects write it.
import multiprocessing
import os

bind = ["127.0.0.1:0"]
workers = int(os.environ.get("TEST_WORKERS", multiprocessing.cpu_count() * 2 + 1))
worker_class = "gthread"
threads = 4
timeout = 45
keepalive = 5
accesslog = os.path.join(os.path.dirname(__file__), "access.log")
errorlog = "-"
loglevel = "info"
raw_env = ["PROBE_BOOT_MARK=from raw_env"]
forwarded_allow_ips = "10.0.0.1,10.0.0.2"
proc = "not a gunicorn setting: ignored"
proc_name = "mysite"
# gunicorn's defaults spelled out: they ask for nothing c10k lacks.
preload_app = False
daemon = False
secure_scheme_headers = {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-Forwarded-Ssl": "on"}
"#;

    #[test]
    fn a_realistic_gunicorn_conf_py_serves_with_its_settings() {
        let Some(venv) = venv() else { return };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gunicorn.conf.py");
        std::fs::write(&file, REALISTIC).unwrap();
        let file = file.to_str().unwrap();
        // The number multiprocessing gives in the venv's Python.
        let cpus = Command::new(format!("{venv}/bin/python3"))
            .args([
                "-c",
                "import multiprocessing; print(multiprocessing.cpu_count() * 2 + 1)",
            ])
            .output()
            .unwrap();
        let cpus = String::from_utf8_lossy(&cpus.stdout).trim().to_owned();
        let out = run_in(dir.path(), &["-c", file, "--check-config"]);
        let (toml, err) = text(&out);
        assert!(out.status.success(), "{err}");
        for line in [
            "bind = [\"127.0.0.1:0\"]".to_owned(),
            format!("workers = {cpus}"),
            "worker-class = \"gthread\"".to_owned(),
            "threads = 4".to_owned(),
            "timeout = 45.0".to_owned(),
            "keepalive = 5.0".to_owned(),
            format!("access-log = \"{}/access.log\"", dir.path().display()),
            "forwarded-allow-ips = [\"10.0.0.1\", \"10.0.0.2\"]".to_owned(),
        ] {
            assert!(toml.contains(&line), "{line:?} not in:\n{toml}");
        }
        assert!(
            err.contains(&format!(
                "config file {file} read (a gunicorn config, run with {venv}/bin/python"
            )),
            "{err}"
        );
        // Served, with the settings in force: the workers, the class, the app's environment
        // and the access log.
        let apps = apps();
        let s = Server::start_env(
            &["-c", file, "--pythonpath", &apps, "probe:app"],
            &[("TEST_WORKERS", "2"), ("VIRTUAL_ENV", &venv)],
        );
        let _group = util::KillGroup(s.child.id() as i32);
        s.wait_for_workers(2);
        let log = s.log();
        assert!(
            log.contains("Using worker: gthread (2 workers × 4 threads)"),
            "{log}"
        );
        assert_eq!(get(s.addr, "/boot").unwrap().text(), "from raw_env");
        util::wait_for_line(&dir.path().join("access.log"), "access log", |l| {
            l.contains("GET /boot")
        });
    }

    /// Writes, from the gunicorn of the test venv (`KNOWN_SETTINGS`, each `.default` as
    /// gunicorn computes it here: `chdir` is this directory, `control_socket` under `$HOME`),
    /// every gunicorn setting at its default: `gunicorn.conf.py` (all but the hooks, which are
    /// callables, warned about), `defaults.toml` (the same but `None`s and the names c10k's TOML
    /// spells otherwise) and the command line (`--flag=value` for each flag whose value can
    /// be the default, and `--suppress-ragged-eofs`, whose switch sets its default).
    /// Returns the flags, them shell-quoted for GUNICORN_CMD_ARGS, and gunicorn's version.
    fn write_gunicorn_defaults(venv: &str, dir: &Path) -> (Vec<String>, String, String) {
        const SCRIPT: &str = r#"
import enum, json, shlex
from gunicorn.config import KNOWN_SETTINGS
# c10k's TOML names these otherwise (access-log, error-log, pid, env, app, uwsgi-allow-from,
# and --log-level, a flag), and says so; a gunicorn.conf.py takes them.
TOML_RENAMED = {"accesslog", "errorlog", "pidfile", "raw_env", "wsgi_app", "uwsgi_allow_ips",
                "loglevel"}
def toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{ %s }" % ", ".join("%s = %s" % (json.dumps(k), toml(x)) for k, x in v.items())
    return json.dumps(v)
py, tm, cli = [], [], []
for s in KNOWN_SETTINGS:
    d = s.default
    if callable(d):
        continue
    if isinstance(d, enum.Enum):
        d = d.value
    py.append("%s = %r" % (s.name, d))
    if d is not None and s.name not in TOML_RENAMED:
        tm.append("%s = %s" % (s.name, toml(d)))
    flag = (s.cli or [None])[-1]
    # --config would name a file to read; gunicorn reads --ssl-version's "2" as a str, not its
    # default ssl.PROTOCOL_TLS (and warns).
    if not flag or not flag.startswith("--") or s.name in ("config", "ssl_version"):
        continue
    if s.action == "store_true" and d is True:
        cli.append(flag)
    elif s.action in (None, "store") and d is not None and not isinstance(d, (list, dict)):
        cli.append("%s=%s" % (flag, d))
open("gunicorn.conf.py", "w").write("\n".join(py) + "\n")
open("defaults.toml", "w").write("\n".join(tm) + "\n")
import gunicorn
print(json.dumps([cli, shlex.join(cli), gunicorn.__version__]))
"#;
        let out = Command::new(format!("{venv}/bin/python3"))
            .args(["-c", SCRIPT])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A gunicorn config often spells settings out at gunicorn's defaults, and gunicorn starts
    /// with them; so does c10k now, for every setting it refuses or does not have, in a
    /// gunicorn.conf.py, a TOML file, on the command line and in GUNICORN_CMD_ARGS. Before,
    /// 44 of gunicorn 27's settings written alone at their default stopped a gunicorn.conf.py
    /// (`check_config = False`: "a gunicorn setting that c10k does not have"; `protocol =
    /// 'http'` refused as --protocol; `access_log_format` without an access log), this whole
    /// file at line 44, `logger_class`, and 29 flags at their default the command line
    /// (`--protocol=http` refused, `--http-parser=auto` an unexpected argument). A value that is
    /// not the default is refused as before, naming the file, line and key, or the flag.
    #[test]
    fn every_gunicorn_setting_at_its_default_is_accepted() {
        let Some(venv) = venv() else { return };
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().canonicalize().unwrap();
        let (flags, joined, version) = write_gunicorn_defaults(&venv, &dir);
        let python = std::fs::read_to_string(dir.join("gunicorn.conf.py")).unwrap();
        for (name, at) in [
            ("check_config", "check_config = False"),
            ("protocol", "protocol = 'http'"),
            ("http_parser", "http_parser = 'auto'"),
            ("secure_scheme_headers", "secure_scheme_headers = {"),
        ] {
            assert!(python.contains(at), "{name}: {python}");
        }
        assert!(flags.iter().any(|f| f == "--protocol=http"), "{flags:?}");

        let out = run_in(&dir, &["--check-config"]);
        let (toml, err) = text(&out);
        assert!(out.status.success(), "gunicorn.conf.py:\n{python}\n{err}");
        assert!(
            err.contains("at gunicorn's default, which asks for nothing c10k lacks, so ignored: ")
                && err.contains("check_config")
                && err.contains("protocol"),
            "{err}"
        );
        assert!(toml.contains("workers = 1"), "{toml}");
        // A later gunicorn (CI installs the newest) may add settings and flags, which c10k's
        // TOML and command line do not know (a gunicorn.conf.py's unknown names are ignored,
        // as gunicorn ignores them): said, without failing the build for an upstream release.
        if version.starts_with("27.") {
            std::fs::write(dir.join("empty.toml"), "").unwrap();
            let out = run_in(&dir, &["-c", "defaults.toml", "--check-config"]);
            let (_, err) = text(&out);
            let written = std::fs::read_to_string(dir.join("defaults.toml")).unwrap();
            assert!(out.status.success(), "defaults.toml:\n{written}\n{err}");

            let mut args = vec!["-c", "empty.toml", "--check-config"];
            args.extend(flags.iter().map(String::as_str));
            let out = run_in(&dir, &args);
            let (_, err) = text(&out);
            assert!(out.status.success(), "{args:?}\n{err}");
            assert!(
                err.contains(
                    "gunicorn flags at gunicorn's default, which ask for nothing c10k lacks, ignored: "
                ) && err.contains("--protocol=http"),
                "{err}"
            );
            let out = run_in_env(
                &dir,
                &["-c", "empty.toml", "--check-config"],
                &[("GUNICORN_CMD_ARGS", &joined)],
            );
            let (_, err) = text(&out);
            assert!(out.status.success(), "GUNICORN_CMD_ARGS={joined}\n{err}");
        } else {
            eprintln!("note: gunicorn {version}: the TOML and command-line parts are for 27");
        }

        // Not the default: refused as before.
        let other = tempfile::tempdir().unwrap();
        for (file, needle) in [
            (
                "workers = 2\nprotocol = 'uwsgi'\n",
                "line 2, key `protocol`: gunicorn's `protocol` (--protocol): c10k chooses",
            ),
            (
                "check_config = True\n",
                "line 1, key `check_config`: a gunicorn setting that c10k does not have",
            ),
            (
                "http_parser = 'fast'\n",
                "line 1, key `http_parser`: a gunicorn setting that c10k does not have",
            ),
            (
                "proxy_allow_ips = '*'\n",
                "line 1, key `proxy_allow_ips`: gunicorn's `proxy_allow_ips` (--proxy-allow-from)",
            ),
            (
                "access_log_format = '%(h)s'\n",
                "line 1, key `access_log_format`: needs --access-log FILE",
            ),
        ] {
            std::fs::write(other.path().join("gunicorn.conf.py"), file).unwrap();
            let err = config_error(other.path(), &["--check-config"]);
            assert!(
                err.contains(&format!("config file gunicorn.conf.py: {needle}")),
                "{file:?}: {err}"
            );
        }
        std::fs::remove_file(other.path().join("gunicorn.conf.py")).unwrap();
        for (args, needle) in [
            (
                &["--http-parser", "fast"][..],
                "unexpected argument '--http-parser'",
            ),
            (&["--protocol=uwsgi"][..], "--protocol: c10k chooses"),
            (
                &["--proxy-protocol", "v1"][..],
                "--proxy-protocol: c10k does not read",
            ),
        ] {
            let err = config_error(other.path(), args);
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn the_default_gunicorn_conf_py_is_read_and_dash_c_wins() {
        let Some(venv) = venv() else { return };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("gunicorn.conf.py"),
            "import os\n\
             os.environ['PROBE_BOOT_MARK'] = 'set by the file'\n\
             workers = 2\n\
             \n\
             def when_ready(server):\n\
             \x20   server.log.info('ready')\n\
             \n\
             def post_fork(server, worker):\n\
             \x20   pass\n",
        )
        .unwrap();
        // Read without -c; the workers inherit what it put in os.environ, as gunicorn's do.
        let apps = apps();
        let s = Server::start_in(
            dir.path(),
            &["--pythonpath", &apps, "probe:app"],
            &[("VIRTUAL_ENV", &venv)],
        );
        let _group = util::KillGroup(s.child.id() as i32);
        s.wait_for_workers(2);
        let log = s.log();
        assert!(
            log.contains("config file gunicorn.conf.py read (a gunicorn config"),
            "{log}"
        );
        assert!(log.contains("it set os.environ PROBE_BOOT_MARK"), "{log}");
        assert!(
            log.contains(
                "c10k does not call gunicorn's server hooks: when_ready (line 5), post_fork \
                 (line 8) are ignored"
            ),
            "{log}"
        );
        assert_eq!(get(s.addr, "/boot").unwrap().text(), "set by the file");
        drop(s);
        // -c names another file: ./gunicorn.conf.py is not read.
        std::fs::write(dir.path().join("other.toml"), "workers = 3\n").unwrap();
        let out = run_in(dir.path(), &["-c", "other.toml", "--check-config"]);
        let (toml, err) = text(&out);
        assert!(out.status.success(), "{err}");
        assert!(toml.contains("workers = 3"), "{toml}");
        assert!(!err.contains("gunicorn.conf.py"), "{err}");
    }

    #[test]
    fn a_python_module_config() {
        if venv().is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("deploy")).unwrap();
        std::fs::write(dir.path().join("deploy/__init__.py"), "").unwrap();
        std::fs::write(
            dir.path().join("deploy/gunicorn_settings.py"),
            "workers = 4\nthreads = 2\nworker_class = 'gthread'\n",
        )
        .unwrap();
        let out = run_in(
            dir.path(),
            &["-c", "python:deploy.gunicorn_settings", "--check-config"],
        );
        let (toml, err) = text(&out);
        assert!(out.status.success(), "{err}");
        assert!(
            toml.contains("workers = 4") && toml.contains("threads = 2"),
            "{toml}"
        );
        assert!(
            err.contains("config file python:deploy.gunicorn_settings read"),
            "{err}"
        );
        let err = config_error(
            dir.path(),
            &["-c", "python:deploy.missing", "--check-config"],
        );
        assert!(
            err.contains(
                "config file python:deploy.missing: ModuleNotFoundError: No module named \
                 'deploy.missing'"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_broken_file_stops_the_start_naming_it() {
        if venv().is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gunicorn.conf.py");
        for (text, needle) in [
            (
                "import os\nworkers = int(os.environ['NOT_SET_ANYWHERE'])\n",
                "config file gunicorn.conf.py: line 2: KeyError: 'NOT_SET_ANYWHERE'",
            ),
            (
                "workers = (\n",
                "config file gunicorn.conf.py: line 1: SyntaxError: '(' was never closed",
            ),
            // What gunicorn's validators refuse too, with what was given and what is expected.
            (
                "bind = '127.0.0.1:0'\nworkers = 'four'\n",
                "config file gunicorn.conf.py: line 2, key `workers`: \"four\" is not a whole \
                 number: an int, or a str that Python's int(value, 0) reads, such as \"4\"",
            ),
            (
                "import os\nworkers = os.environ.get('NOT_SET_ANYWHERE', '-1')\n",
                "config file gunicorn.conf.py: line 2, key `workers`: \"-1\" is -1: must not be \
                 negative",
            ),
            (
                "reload = 'yes'\n",
                "config file gunicorn.conf.py: line 1, key `reload`: \"yes\" is not a boolean: \
                 true or false, or the str \"true\" or \"false\"",
            ),
            (
                "raw_env = ['DJANGO_DEBUG']\n",
                "config file gunicorn.conf.py: line 1, key `raw_env`: \"DJANGO_DEBUG\" is not \
                 KEY=VALUE",
            ),
            // gunicorn turns sendfile off when `sendfile` is set at all; c10k cannot.
            (
                "sendfile = False\n",
                "line 1, key `sendfile`: gunicorn's `sendfile` (--no-sendfile)",
            ),
            (
                "logconfig_dict = {'version': 1, 'root': {'level': 'INFO'}}\n",
                "line 1, key `logconfig_dict`: gunicorn's `logconfig_dict` (--log-config-dict): \
                 c10k's log is text or JSON lines",
            ),
            (
                "timeout = {'worker': 30}\n",
                "config file gunicorn.conf.py: line 1, key `timeout`: a dict is not a value \
                 c10k takes",
            ),
            (
                "bind = ['127.0.0.1:0', 8000]\n",
                "line 1, key `bind`: a list with the item 8000 is not a value c10k takes",
            ),
            (
                "workers = 0\n",
                "config file gunicorn.conf.py: line 1, key `workers`: must be at least 1",
            ),
            (
                "daemon = True\n",
                "line 1, key `daemon`: gunicorn's `daemon` (--daemon)",
            ),
            (
                "loglevel = 'verbose'\n",
                "config file gunicorn.conf.py: key `loglevel`: --log-level \"verbose\": not a level",
            ),
            (
                "secure_scheme_headers = {'X-SCHEME': 'https'}\n",
                "line 1, key `secure_scheme_headers`: gunicorn's `secure_scheme_headers` \
                 (--secure-scheme-headers): c10k believes exactly gunicorn's default scheme \
                 headers",
            ),
            (
                "secure_scheme_headers = {'X-FORWARDED-PROTO': 'https'}\n",
                "line 1, key `secure_scheme_headers`: gunicorn's `secure_scheme_headers`",
            ),
            (
                "secure_scheme_headers = 'x'\n",
                "line 1, key `secure_scheme_headers`: gunicorn's `secure_scheme_headers`",
            ),
            (
                "timeout = {'worker': None}\n",
                "line 1, key `timeout`: a dict is not a value c10k takes",
            ),
        ] {
            std::fs::write(&file, text).unwrap();
            // By -c and by default.
            for args in [
                &["-c", "gunicorn.conf.py", "--check-config"][..],
                &["--check-config"],
            ] {
                let err = config_error(dir.path(), args);
                assert!(err.contains(needle), "{text:?} {args:?}: {err}");
            }
        }
    }

    /// gunicorn's validators take a number or a boolean as a string (`validate_pos_int` does
    /// `int(val, 0)`), so a gunicorn.conf.py often passes environment variables on as they
    /// are: c10k takes them as gunicorn does, and starts with them; gunicorn's default
    /// `logconfig_dict = {}` asks for nothing. Before, the start stopped at `logconfig_dict`
    /// (refused as --log-config-dict), and without it at `workers` ("\"3\": invalid type:
    /// string \"3\", expected usize", as `workers = 'four'` still showed in the test above).
    #[test]
    fn strings_from_os_environ_are_taken_as_gunicorn_takes_them() {
        let Some(venv) = venv() else { return };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gunicorn.conf.py");
        std::fs::write(
            &file,
            r#"import os

workers = os.environ.get("WEB_CONCURRENCY_TEST", "3")
worker_class = os.environ.get("TEST_WORKER_CLASS", "gthread")
threads = os.environ.get("PYTHON_MAX_THREADS", "5")
timeout = os.environ.get("GUNICORN_TIMEOUT", "45")
graceful_timeout = os.getenv("GUNICORN_GRACEFUL_TIMEOUT", "20")
keepalive = os.getenv("GUNICORN_KEEPALIVE", "0x3")
max_requests = os.getenv("GUNICORN_MAX_REQUESTS", "1_000")
max_requests_jitter = os.getenv("GUNICORN_MAX_REQUESTS_JITTER", " 50 ")
backlog = os.getenv("GUNICORN_BACKLOG", "64")
reuse_port = os.getenv("GUNICORN_REUSE_PORT", "False")
capture_output = os.getenv("GUNICORN_CAPTURE_OUTPUT", "false")
forwarded_allow_ips = os.getenv("FORWARDED_ALLOW_IPS", "10.0.0.1, 10.0.0.2")
raw_env = "PROBE_BOOT_MARK=" + os.getenv("TEST_MARK", "default")
preload_app = os.getenv("GUNICORN_PRELOAD", "false")
logconfig_dict = {}
"#,
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let out = run_in(dir.path(), &["-c", file, "--check-config"]);
        let (toml, err) = text(&out);
        assert!(out.status.success(), "{err}");
        for line in [
            "workers = 3",
            "worker-class = \"gthread\"",
            "threads = 5",
            "timeout = 45.0",
            "graceful-timeout = 20.0",
            "keepalive = 3.0",
            "max-requests = 1000",
            "max-requests-jitter = 50",
            "backlog = 64",
            "reuse-port = false",
            "forwarded-allow-ips = [\"10.0.0.1\", \"10.0.0.2\"]",
        ] {
            assert!(toml.contains(line), "{line:?} not in:\n{toml}");
        }
        // The server comes up with the values the environment gave.
        let apps = apps();
        let s = Server::start_env(
            &["-c", file, "--pythonpath", &apps, "probe:app"],
            &[
                ("WEB_CONCURRENCY_TEST", "2"),
                ("PYTHON_MAX_THREADS", "3"),
                ("TEST_MARK", "from os.environ"),
                ("VIRTUAL_ENV", &venv),
            ],
        );
        let _group = util::KillGroup(s.child.id() as i32);
        s.wait_for_workers(2);
        let log = s.log();
        assert!(
            log.contains("Using worker: gthread (2 workers × 3 threads)"),
            "{log}"
        );
        assert_eq!(get(s.addr, "/boot").unwrap().text(), "from os.environ");
    }

    /// gunicorn's `loglevel` is c10k's `--log-level` (not a file key in TOML), unless the
    /// command line or `C10K_LOG` gives one.
    #[test]
    fn loglevel_is_the_log_level_unless_given() {
        if venv().is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("gunicorn.conf.py"),
            "loglevel = 'warning'\ndef on_exit(server):\n    pass\n",
        )
        .unwrap();
        let out = run_in(dir.path(), &["--check-config"]);
        let (_, err) = text(&out);
        assert!(out.status.success(), "{err}");
        assert!(!err.contains("config file gunicorn.conf.py read"), "{err}");
        assert!(err.contains("on_exit (line 2) is ignored"), "{err}");
        let out = run_in(dir.path(), &["--check-config", "--log-level", "info"]);
        let (_, err) = text(&out);
        assert!(err.contains("config file gunicorn.conf.py read"), "{err}");
    }

    #[test]
    fn hup_runs_the_file_again() {
        let Some(venv) = venv() else { return };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gunicorn.conf.py");
        std::fs::write(&file, "workers = 1\nraw_env = ['PROBE_BOOT_MARK=one']\n").unwrap();
        let apps = apps();
        let s = Server::start_env(
            &[
                "-c",
                file.to_str().unwrap(),
                "--pythonpath",
                &apps,
                "probe:app",
            ],
            &[("VIRTUAL_ENV", &venv)],
        );
        let _group = util::KillGroup(s.child.id() as i32);
        assert_eq!(get(s.addr, "/boot").unwrap().text(), "one");
        std::fs::write(
            &file,
            "import os\nos.environ['PYCONFIG_HUP'] = '2'\nworkers = 2\n\
             raw_env = ['PROBE_BOOT_MARK=two']\n",
        )
        .unwrap();
        s.signal(libc::SIGHUP);
        s.wait_log("rolling restart done", Duration::from_secs(20));
        // The old worker and two new ones.
        s.wait_for_workers(3);
        for _ in 0..4 {
            assert_eq!(get(s.addr, "/boot").unwrap().text(), "two", "{}", s.log());
        }
        assert!(
            s.log().contains("SIGHUP: config file") && s.log().contains("workers = 2"),
            "{}",
            s.log()
        );
        // A broken file keeps the running configuration.
        std::fs::write(&file, "workers = 1\nraise ValueError('half-edited')\n").unwrap();
        s.signal(libc::SIGHUP);
        s.wait_log(
            "SIGHUP: the new configuration was not loaded, so nothing changed",
            Duration::from_secs(20),
        );
        let log = s.log();
        assert!(log.contains("line 2: ValueError: half-edited"), "{log}");
        assert_eq!(get(s.addr, "/boot").unwrap().text(), "two", "{log}");
    }
}

// A flag given twice takes its last value, as under gunicorn (argparse): a wrapper script's
// `exec c10k serve --workers 2 "$@"` run with `--workers 4` gets 4. Before, clap refused it
// ("the argument '--workers <WORKERS>' cannot be used multiple times"), on the command line and
// in GUNICORN_CMD_ARGS. Flags that take a list (`-b`) keep every value.
#[test]
fn a_flag_given_twice_takes_its_last_value() {
    let toml = effective(
        &[
            "--workers",
            "2",
            "-b",
            "127.0.0.1:8001",
            "--graceful-timeout",
            "10",
            "--workers",
            "4",
            "-b",
            "127.0.0.1:8002",
            "--graceful-timeout=2",
        ],
        &[],
    );
    assert!(toml.contains("\nworkers = 4\n"), "{toml}");
    assert!(toml.contains("graceful-timeout = 2.0\n"), "{toml}");
    assert!(
        toml.contains(r#"bind = ["127.0.0.1:8001", "127.0.0.1:8002"]"#),
        "{toml}"
    );
    let toml = effective(&[], &[("GUNICORN_CMD_ARGS", "--workers 2 --workers 3")]);
    assert!(toml.contains("\nworkers = 3\n"), "{toml}");
}
