//! Fixtures of the tests that host Python apps: where the test apps are, and the test venv.

use std::path::PathBuf;

/// The directory of the test apps (`crates/wsgi/tests/apps`), for `--chdir`/`--pythonpath`.
pub fn apps() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../wsgi/tests/apps")
        .canonicalize()
        .expect("crates/wsgi/tests/apps")
        .display()
        .to_string()
}

/// `c10k serve -k CLASS -w 2 [EXTRA...] forked:app` (`crates/wsgi/tests/apps/forked.py`, which
/// says which process imported it and which answers), for the zygote and `--preload` tests.
pub fn forked(class: &str, extra: &[&str]) -> super::Server {
    let apps = apps();
    let mut args = vec!["-k", class, "--threads", super::threads(class), "-w", "2"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--pythonpath", &apps, "forked:app"]);
    super::Server::start(&args)
}

/// The test venv (Flask, Django, gevent, requests, PyMySQL), or `None` (skip, with a message)
/// outside CI; under CI a missing venv fails the test.
pub fn venv() -> Option<String> {
    match std::env::var("C10K_TEST_VENV") {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set C10K_TEST_VENV (.ci/run runs scripts/python-venv.sh)"
            );
            eprintln!("skipped: C10K_TEST_VENV is not set (eval \"$(scripts/python-venv.sh)\")");
            None
        }
    }
}

/// Runs `crates/wsgi/tests/clients/browser.py KIND` (what a browser does, through `requests`)
/// against `http://ADDR` (`s` itself, or a proxy in front of it), at most 90 s; panics with the
/// script's account of each failed check and `s`'s log.
pub fn browser(venv: &str, kind: &str, addr: std::net::SocketAddr, s: &super::Server, what: &str) {
    let script = format!("{}/../clients/browser.py", apps());
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new(format!("{venv}/bin/python"))
        .args([&script, kind, &format!("http://{addr}")])
        .stdout(out.reopen().unwrap())
        .stderr(out.reopen().unwrap())
        .spawn()
        .expect("the venv's python");
    let status = super::exit_within(&mut child, std::time::Duration::from_secs(90));
    let said = std::fs::read_to_string(out.path()).unwrap_or_default();
    assert!(
        status.is_some_and(|st| st.success()) && said == "ok\n",
        "{what}: browser.py {kind} {status:?}:\n{said}\nthe server's log:\n{}",
        s.log()
    );
}

/// The MariaDB URL that `scripts/ci-services.sh` exports, or `None` with a skip message (a
/// missing URL fails under CI, which must set it).
pub fn mysql_url() -> Option<String> {
    match std::env::var("C10K_TEST_MYSQL_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set C10K_TEST_MYSQL_URL"
            );
            eprintln!(
                "skipped: C10K_TEST_MYSQL_URL is not set (eval \"$(scripts/ci-services.sh)\")"
            );
            None
        }
    }
}

/// Waits until the probe app (`probe:app`) says the streamed body of `token` was closed, at most
/// 20 s; panics if it never was or was closed more than once.
pub fn wait_closed(s: &super::Server, token: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let closed = super::get(s.addr, &format!("/closed?token={token}"))
            .expect("/closed answered")
            .text();
        if closed == "1" {
            return;
        }
        assert_eq!(closed, "0", "close() called more than once for {token}");
        assert!(
            std::time::Instant::now() < deadline,
            "close() never called for {token}:\n{}",
            s.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The app's `atexit` handlers run in each worker that exits normally, as in gunicorn (whose
/// workers leave through `sys.exit`): one retired by `--max-requests`, then one stopped by
/// SIGTERM. `extra`: the class's arguments.
pub fn atexit_runs_on_every_normal_exit(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("atexit.log");
    let env = format!("LIFECYCLE_ATEXIT={}", file.display());
    let apps = apps();
    let mut args = vec!["-w", "1", "--max-requests", "3", "--pythonpath", &apps];
    args.extend_from_slice(&["-e", &env]);
    args.extend_from_slice(extra);
    args.push("lifecycle:app");
    let mut s = super::Server::start(&args);
    // Server::start's probe was the first request; the third retires the worker.
    for _ in 0..3 {
        let r = super::get(s.addr, "/").expect("request");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    s.wait_log("worker exited", std::time::Duration::from_secs(10));
    // The retiring worker may have answered the fourth itself (a request it had accepted):
    // wait until its successor answers one, so the app is loaded when SIGTERM comes (a worker
    // stopped before it imported the app has no handler to run).
    s.wait_for_workers(2);
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(std::time::Duration::from_secs(20)), Some(0));
    let lines = std::fs::read_to_string(&file).unwrap_or_default();
    let pids = s.worker_pids();
    assert!(pids.len() >= 2, "{}", s.log());
    for pid in &pids {
        assert!(
            lines.contains(&format!("atexit {pid}\n")),
            "worker {pid}'s atexit handler did not run: {lines:?}\n{}",
            s.log()
        );
    }
}

/// The test Django project (`djangoproj`) under `class` (e.g. `["-k", "gevent", "-w", "1"]`), its
/// database on the MariaDB that CI starts; `None` (skip) without the venv or MariaDB.
pub fn django_on_mariadb(class: &[&str]) -> Option<super::Server> {
    let venv = venv()?;
    let url = mysql_url()?;
    let dir = format!("{}/djangoproj", apps());
    let db_url = format!("DJANGO_MYSQL_URL={url}");
    let mut args = class.to_vec();
    args.extend_from_slice(&[
        "--venv",
        &venv,
        "--chdir",
        &dir,
        "--env",
        &db_url,
        "djangoproj.wsgi:application",
    ]);
    Some(super::Server::start(&args))
}
