//! `c10k serve -k gevent MODULE:APP` end to end with real gevent, Flask and `requests` from the
//! test venv (`C10K_TEST_VENV`, made by `.ci/run`; skipped with a message without it, except
//! under CI): sleeping views overlap on one worker where gthread with 4 threads cannot, a view
//! calling another local HTTP server through `requests` runs concurrently, a failing greenlet
//! leaves the others alone, a disconnected client's streamed body is closed, --request-timeout
//! answers 504 and kills the greenlet, and the boot errors. The server's life cycle with
//! greenlets in flight: `--max-requests` and HUP replace workers without losing a request, a
//! stopping worker still answers a new connection's first request, and the processlist lists each
//! in-flight greenlet's request as a row.

#![cfg(feature = "python")]

#[macro_use]
mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use util::admin::{admin_addr, admin_json, c10k, wait_until};
use util::load::{finish_load, steady_load};
use util::python::{apps, venv, wait_closed};
use util::{connect, get, Resp, Server};

fn serve(venv: &str, class: &str, threads: &str, extra: &[&str], app: &str) -> Server {
    let apps = apps();
    let mut args = vec![
        "-k",
        class,
        "-w",
        "1",
        "--threads",
        threads,
        "--venv",
        venv,
        "--chdir",
        &apps,
    ];
    args.extend_from_slice(extra);
    args.push(app);
    Server::start(&args)
}

/// `n` GETs of `target` at once, each on its own connection; the answers and the wall time.
fn concurrent(addr: SocketAddr, target: &str, n: usize) -> (Vec<Resp>, Duration) {
    let start = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let t = target.to_owned();
            std::thread::spawn(move || get(addr, &t).expect("request"))
        })
        .collect();
    let answers = handles.into_iter().map(|h| h.join().unwrap()).collect();
    (answers, start.elapsed())
}

/// A stopping gevent worker (the async driver) lets a new connection send its first request,
/// as under the other classes (see `util::stop_lets_a_new_connection_send_its_first_request`).
#[test]
fn a_stopping_worker_answers_a_new_connections_first_request() {
    let Some(venv) = venv() else { return };
    let s = serve(
        &venv,
        "gevent",
        "1",
        &["--keepalive", "30", "--no-defer-accept"],
        "flask_app:app",
    );
    util::stop_lets_a_new_connection_send_its_first_request(&s, true);
}

/// The seed's experiment in small: 100 concurrent `time.sleep(0.1)` views.
#[test]
fn sleeping_views_overlap_on_one_gevent_worker_but_not_on_gthread() {
    let Some(venv) = venv() else { return };
    let s = serve(&venv, "gevent", "1", &[], "flask_app:app");
    let (answers, took) = concurrent(s.addr, "/?delay=0.1", 100);
    for r in &answers {
        assert_eq!((r.status, r.text().as_str()), (200, "hello\n"));
    }
    // Serial would be 10 s; greenlets make it ≈ 0.1 s plus overhead. Loose bound.
    assert!(took < Duration::from_millis(1500), "gevent: {took:?}");
    drop(s);

    let s = serve(&venv, "gthread", "4", &[], "flask_app:app");
    let (answers, took_gthread) = concurrent(s.addr, "/?delay=0.1", 100);
    assert!(answers.iter().all(|r| r.status == 200));
    // 4 threads: at least 100 × 0.1 s / 4 = 2.5 s.
    assert!(
        took_gthread >= Duration::from_millis(2000),
        "gthread with 4 threads: {took_gthread:?}"
    );
    eprintln!("100 × sleep(0.1): gevent {took:?}, gthread×4 {took_gthread:?}");
}

/// A plain HTTP server that answers every request after `delay`, one thread per connection,
/// counting the most requests it had in flight at once.
fn slow_upstream(delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let peak2 = peak.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let (now, peak) = (now.clone(), peak2.clone());
            std::thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(delay);
                now.fetch_sub(1, Ordering::SeqCst);
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nupstream",
                );
            });
        }
    });
    (addr, peak)
}

#[test]
fn views_calling_requests_run_concurrently() {
    let Some(venv) = venv() else { return };
    let (up, peak) = slow_upstream(Duration::from_millis(300));
    let s = serve(&venv, "gevent", "1", &[], "gevent_app:app");
    let patched = get(s.addr, "/patched").unwrap().text();
    assert!(patched.contains("\"socket\":true"), "{patched}");
    let (answers, took) = concurrent(s.addr, &format!("/fetch?url=http://{up}/"), 20);
    for r in &answers {
        assert_eq!((r.status, r.text().as_str()), (200, "upstream"));
    }
    // Serial would be 6 s.
    assert!(took < Duration::from_millis(2000), "{took:?}");
    assert!(
        peak.load(Ordering::SeqCst) >= 10,
        "the upstream saw at most {} requests at once",
        peak.load(Ordering::SeqCst)
    );
}

#[test]
fn a_failing_greenlet_leaves_the_others_alone() {
    let Some(venv) = venv() else { return };
    let s = serve(&venv, "gevent", "1", &[], "flask_app:app");
    let addr = s.addr;
    let slow: Vec<_> = (0..20)
        .map(|_| std::thread::spawn(move || get(addr, "/?delay=0.3").unwrap()))
        .collect();
    let failing: Vec<_> = (0..20)
        .map(|_| std::thread::spawn(move || get(addr, "/fail").unwrap()))
        .collect();
    for h in failing {
        assert_eq!(h.join().unwrap().status, 500);
    }
    for h in slow {
        let r = h.join().unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hello\n"));
    }
    s.wait_log("flask view failed", Duration::from_secs(5));
    assert_eq!(get(addr, "/hello").unwrap().text(), "Hello, world!");
}

#[test]
fn a_disconnected_clients_streamed_body_is_closed() {
    let Some(venv) = venv() else { return };
    let s = serve(&venv, "gevent", "1", &[], "probe:app");
    let mut c = connect(s.addr);
    c.write_all(b"GET /stream?n=2000&delay=0.005&token=gone HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let n = c.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(c);
    wait_closed(&s, "gone");
    // A whole stream still works, and its steps did not block the hub meanwhile.
    let r = get(s.addr, "/stream?n=3&token=whole").unwrap();
    assert_eq!(r.text(), "chunk0\nchunk1\nchunk2\n");
    assert_eq!(get(s.addr, "/closed?token=whole").unwrap().text(), "1");
}

#[test]
fn request_timeout_is_504_and_kills_the_greenlet() {
    let Some(venv) = venv() else { return };
    let s = serve(
        &venv,
        "gevent",
        "1",
        &["--request-timeout", "1"],
        "probe:app",
    );
    let start = Instant::now();
    let r = get(s.addr, "/slow?s=30").unwrap();
    assert_eq!(r.status, 504);
    assert!(
        start.elapsed() < Duration::from_millis(3500),
        "{:?}",
        start.elapsed()
    );
    // gevent.Timeout was raised in the view (at its time.sleep), not left running.
    s.wait_log("Timeout", Duration::from_secs(5));
    s.wait_log("/slow", Duration::from_secs(5));
    let r = get(s.addr, "/write").unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.log());
}

/// `--preload` with `-k gevent` (a common gunicorn config: `worker_class = "gevent"`,
/// `preload_app = True`): the zygote patches the standard library and then imports the app, once;
/// the worker serves that app, its sleeping views overlap on the hub, and a view can still run a
/// subprocess (the zygote left no hub behind, so the worker's hub has gevent's default loop).
#[test]
fn preload_imports_the_app_patched_once_and_the_hub_serves_it() {
    let Some(venv) = venv() else { return };
    let s = serve(&venv, "gevent", "1", &["--preload"], "gevent_app:app");
    let r = get(s.addr, "/imported").unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.log());
    let a: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(a["patched"], true, "{a}");
    assert_ne!(a["imported_in"], a["pid"], "imported by the zygote: {a}");
    let (answers, took) = concurrent(s.addr, "/sleep?s=0.3", 50);
    assert!(answers.iter().all(|r| r.text() == "slept\n"), "{}", s.log());
    // One after another would be 15 s. Loose bound.
    assert!(took < Duration::from_secs(5), "{took:?}");
    let r = get(s.addr, "/subprocess").unwrap();
    assert_eq!(r.text(), "from a child fork exit 7", "{}", s.log());
    let log = s.log();
    assert_eq!(log.matches("preloading gevent_app:app").count(), 1, "{log}");
    assert!(
        log.contains("serving the preloaded gevent_app:app"),
        "{log}"
    );
}

/// A thread the app starts at import (a greenlet, once patched) would not run in a worker forked
/// from the zygote: as with a real thread at import, the log says so and the worker is started
/// by exec, imports the app itself, and the thread runs there.
#[test]
fn under_preload_a_thread_started_at_import_runs_in_each_worker() {
    let Some(venv) = venv() else { return };
    let s = serve(
        &venv,
        "gevent",
        "1",
        &["--preload", "--env", "GEVENT_APP_THREAD_AT_IMPORT=1"],
        "gevent_app:app",
    );
    let mut a = Value::Null;
    wait_until(
        Duration::from_secs(5),
        "the thread runs in the worker",
        || {
            a = serde_json::from_slice(&get(s.addr, "/imported").unwrap().body).unwrap();
            a["ran_in"].as_array().unwrap().contains(&a["pid"])
        },
    );
    assert_eq!(a["imported_in"], a["pid"], "{a}");
    assert_eq!(a["patched"], true, "{a}");
    let log = s.log();
    assert!(
        log.contains("started 1 greenlet(s)") && log.contains("started by exec"),
        "{log}"
    );
}

#[test]
fn no_monkey_patch_leaves_the_standard_library_alone() {
    let Some(venv) = venv() else { return };
    let s = serve(
        &venv,
        "gevent",
        "1",
        &["--no-monkey-patch"],
        "gevent_app:app",
    );
    let patched = get(s.addr, "/patched").unwrap().text();
    assert!(patched.contains("\"time\":false"), "{patched}");
}

fn boot(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_c10k"));
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(args)
        .env_remove("VIRTUAL_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, err)
}

#[test]
fn the_built_in_app_is_refused() {
    let (code, err) = boot(&["-k", "gevent"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--worker-class gevent") && err.contains("async"),
        "{err}"
    );
}

#[test]
fn without_gevent_in_the_venv_boot_fails_with_how_to_install_it() {
    // A venv of the embedded Python's version without gevent: the standard library only.
    let dir = tempfile::tempdir().unwrap();
    let python = std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".into());
    let made = Command::new(&python)
        .args(["-m", "venv", "--without-pip"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(made.success());
    let venv = dir.path().display().to_string();
    let apps = apps();
    let (code, err) = boot(
        &[
            "-k",
            "gevent",
            "--venv",
            &venv,
            "--chdir",
            &apps,
            "probe:app",
        ],
        &[],
    );
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("pip install gevent"), "{err}");
}

/// gevent's own warning about `ssl` imported before patching (here by a `sitecustomize` that
/// subclasses `ssl.SSLContext`, as some libraries do at import) reaches the log.
#[test]
fn gevents_warning_about_early_ssl_imports_is_logged() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sitecustomize.py"),
        "import ssl\n\nclass EarlyContext(ssl.SSLContext):\n    pass\n",
    )
    .unwrap();
    let apps = apps();
    let mut child = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "-k",
            "gevent",
        ])
        .args(["--venv", &venv, "--chdir", &apps, "probe:app"])
        .env("PYTHONPATH", dir.path())
        .env("C10K_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = String::new();
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains("gevent: Monkey-patching ssl after ssl has already been imported")
                {
                    break true;
                }
                if line.contains("all workers booted") {
                    break false;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no gevent warning in the log:\n{log}");
}

/// The test Django project on one gevent worker (see [`util::python::django_on_mariadb`]).
fn django_on_mariadb() -> Option<Server> {
    util::python::django_on_mariadb(&["-k", "gevent", "-w", "1"])
}

/// A Django view waiting in MariaDB through PyMySQL (pure Python, so its socket is patched): 20
/// concurrent `SELECT SLEEP(0.5)` on one gevent worker overlap (serial would be 10 s).
#[test]
fn django_views_on_mariadb_through_pymysql_run_concurrently() {
    let Some(s) = django_on_mariadb() else { return };
    let (answers, took) = concurrent(s.addr, "/db-sleep?s=0.5", 20);
    for r in &answers {
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "slept\n"),
            "{}",
            s.log()
        );
    }
    assert!(took < Duration::from_millis(5000), "{took:?}");
}

/// Django with `CONN_MAX_AGE=60` on MariaDB: each greenlet of a burst of 20 opens its own
/// connection; once they have sat idle a few seconds they exit and their connections close (the
/// connection wrapper sits in reference cycles: closed only when the collector runs).
#[test]
fn a_bursts_django_connections_close_once_its_greenlets_are_idle() {
    let Some(s) = django_on_mariadb() else { return };
    let (answers, _) = concurrent(s.addr, "/db-sleep?s=0.3", 20);
    assert!(answers.iter().all(|r| r.status == 200), "{}", s.log());
    let open = || -> u32 {
        get(s.addr, "/db-open")
            .unwrap()
            .text()
            .trim()
            .parse()
            .unwrap()
    };
    assert!(open() >= 20, "a connection per greenlet of the burst");
    // The polling keeps one greenlet (and its connection) busy.
    wait_until(
        Duration::from_secs(15),
        "the burst's connections to close",
        || open() <= 1,
    );
}

/// Each step of a streamed body runs in the greenlet that ran the view, so a patched
/// `threading.local` the view set (Django's database connection, a transaction held open across
/// yields) is the generator's: 20 bodies at once, each must see only its own view's token. (In
/// a greenlet of their own, steps saw other requests' values.)
#[test]
fn streamed_steps_run_in_the_views_greenlet() {
    let Some(venv) = venv() else { return };
    let s = serve(&venv, "gevent", "1", &[], "gevent_app:app");
    let addr = s.addr;
    let handles: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                let r = get(addr, &format!("/stream-local?token=t{i}&n=5")).expect("request");
                (i, r.status, r.text())
            })
        })
        .collect();
    for h in handles {
        let (i, status, text) = h.join().unwrap();
        assert_eq!(status, 200, "{text}");
        assert_eq!(text, format!("t{i}\n").repeat(5), "{}", s.log());
    }
}

/// The steps of a streamed body run in the request's `contextvars` context; Flask's `stream_with_context` needs them
/// all in the request's `contextvars` context (without it: "Working outside of request context").
#[test]
fn flask_stream_with_context_runs_in_the_requests_context() {
    let Some(venv) = venv() else { return };
    let s = serve(&venv, "gevent", "1", &[], "flask_app:app");
    let r = get(s.addr, "/stream?n=3").unwrap();
    assert_eq!(
        r.text(),
        "line 0 /stream\nline 1 /stream\nline 2 /stream\n",
        "{}",
        s.log()
    );
}

/// `c10k serve -k gevent -w WORKERS EXTRA... flask_app:app` from the test venv.
fn flask(venv: &str, workers: &str, extra: &[&str]) -> Server {
    let apps = apps();
    let mut args = vec![
        "-k", "gevent", "-w", workers, "--venv", venv, "--chdir", &apps,
    ];
    args.extend_from_slice(extra);
    args.push("flask_app:app");
    Server::start(&args)
}

/// `--max-requests` under gevent: a worker that has served its share retires while greenlets are
/// still sleeping in it; it stops taking connections, lets them finish, and only then exits, so
/// the clients (keep-alive, 16 at once, each request sleeping 50 ms) never see a failure.
#[test]
fn max_requests_recycles_gevent_workers_without_losing_a_request() {
    let Some(venv) = venv() else { return };
    let s = flask(&venv, "2", &["--max-requests", "40"]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = steady_load(s.addr, "/?delay=0.05", 16, true, stop.clone());
    // Two rotations beyond the first two workers.
    let deadline = Instant::now() + Duration::from_secs(40);
    while s.worker_pids().len() < 4 {
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            panic!("workers never rotated:\n{}", s.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = finish_load(load);
    assert_eq!(failed, 0, "{ok} ok, {failed} failed\n{}", s.log());
    assert!(ok >= 80, "{ok} requests: two workers' worth at least");
    assert!(s.log().contains("--max-requests reached"), "{}", s.log());
    assert_eq!(get(s.addr, "/hello").unwrap().text(), "Hello, world!");
}

/// HUP while 30 greenlets sleep for 1.5 s on the only worker: a new worker takes over, and every
/// one of the 30 requests is answered by the old worker before it exits.
#[test]
fn hup_lets_in_flight_greenlets_finish() {
    let Some(venv) = venv() else { return };
    let s = flask(&venv, "1", &["--admin", "127.0.0.1:0"]);
    let admin = admin_addr(&s);
    let before = s.worker_pids();
    let addr = s.addr;
    let clients: Vec<_> = (0..30)
        .map(|_| std::thread::spawn(move || get(addr, "/?delay=1.5")))
        .collect();
    // All 30 are in their greenlets before the signal.
    wait_until(Duration::from_secs(10), "30 requests in flight", || {
        in_flight(&admin_json(admin, "/processlist"), "/?delay=1.5").len() == 30
    });
    let sent = Instant::now();
    s.signal(libc::SIGHUP);
    for c in clients {
        let r = c
            .join()
            .unwrap()
            .expect("an in-flight request failed across HUP");
        assert_eq!((r.status, r.text().as_str()), (200, "hello\n"));
    }
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "{:?}",
        sent.elapsed()
    );
    s.wait_log("rolling restart done", Duration::from_secs(20));
    let after = s.worker_pids();
    assert_eq!(after.len(), before.len() + 1, "{}", s.log());
    // The new worker serves, sleeping views overlap on it too.
    let (answers, took) = concurrent(s.addr, "/?delay=0.3", 20);
    assert!(answers.iter().all(|r| r.status == 200));
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

/// The rows of `/processlist` handling `path` (the requests in their greenlets).
fn in_flight(list: &Value, path: &str) -> Vec<Value> {
    list["processlist"]
        .as_array()
        .expect("a processlist array")
        .iter()
        .filter(|p| p["path"] == path && p["state"] == "handling")
        .cloned()
        .collect()
}

/// Each in-flight greenlet is a row of the processlist (JSON and `c10k status` table) with its
/// client, method, path and growing time, on the one gevent worker; the worker's
/// `requests_active` counts them; finished, they leave.
#[test]
fn processlist_has_a_row_per_in_flight_greenlet() {
    let Some(venv) = venv() else { return };
    let s = flask(&venv, "1", &["--admin", "127.0.0.1:0"]);
    let admin = admin_addr(&s);
    let admin_s = admin.to_string();
    // Compile the schema before the clock starts on the sleeping requests.
    admin_json(admin, "/processlist");
    let addr = s.addr;
    let clients: Vec<_> = (0..40)
        .map(|_| std::thread::spawn(move || get(addr, "/?delay=2").map(|r| r.status)))
        .collect();
    let mut rows = Vec::new();
    wait_until(Duration::from_secs(10), "40 greenlets listed", || {
        rows = in_flight(&admin_json(admin, "/processlist"), "/?delay=2");
        rows.len() == 40
    });
    let pids: std::collections::HashSet<_> = rows.iter().map(|p| p["pid"].clone()).collect();
    assert_eq!(pids.len(), 1, "one worker: {pids:?}");
    let ids: std::collections::HashSet<_> = rows.iter().map(|p| p["id"].clone()).collect();
    assert_eq!(ids.len(), 40, "a row each: {rows:?}");
    for p in &rows {
        assert_eq!(p["method"], "GET", "{p}");
        assert!(
            p["client"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{p}"
        );
    }
    let status = admin_json(admin, "/status");
    assert_eq!(status["server"]["worker_class"], "gevent", "{status}");
    assert_eq!(
        status["workers"][0]["requests_active"], 40,
        "{}",
        status["workers"]
    );
    let table = c10k(&["status", "processlist", "--admin", &admin_s]);
    assert_eq!(
        table.lines().filter(|l| l.contains("/?delay=2")).count(),
        40,
        "{table}"
    );
    std::thread::sleep(Duration::from_millis(300));
    for p in in_flight(&admin_json(admin, "/processlist"), "/?delay=2") {
        let before = rows.iter().find(|r| r["id"] == p["id"]).expect("same row");
        assert!(
            p["time"].as_f64().unwrap() > before["time"].as_f64().unwrap() + 0.2,
            "time grows: {before} then {p}"
        );
    }
    for c in clients {
        assert_eq!(c.join().unwrap().expect("request"), 200);
    }
    wait_until(
        Duration::from_secs(5),
        "finished greenlets to leave",
        || in_flight(&admin_json(admin, "/processlist"), "/?delay=2").is_empty(),
    );
}

/// A finished greenlet serves the next request (a new greenlet per request costs CPython an mmap
/// and a munmap of its frame stack), yet each request starts in a fresh `contextvars` context, as
/// in a new greenlet: a variable one request set does not leak into the next.
#[test]
fn greenlets_are_reused_with_a_fresh_context_per_request() {
    let Some(venv) = venv() else { return };
    let s = serve(&venv, "gevent", "1", &[], "gevent_app:app");
    // One at a time: each request finds the previous one's greenlet idle.
    let served: Vec<u32> = (0..5)
        .map(|_| get(s.addr, "/greenlet").unwrap().text().parse().unwrap())
        .collect();
    assert!(served[4] >= 3, "greenlets not reused: {served:?}");
    for _ in 0..5 {
        assert_eq!(get(s.addr, "/contextvar").unwrap().text(), "unset");
    }
    // After a view that raised, the next one still starts clean.
    assert_eq!(get(s.addr, "/boom").unwrap().status, 500);
    assert_eq!(get(s.addr, "/contextvar").unwrap().text(), "unset");
}

/// A reused greenlet keeps its `threading.local` (Django's persistent database connection lives
/// there), but one left idle after a burst exits after a few seconds and frees it: a burst of 20
/// requests must not hold 20 database connections for the worker's life.
#[test]
fn idle_greenlets_exit_and_free_their_thread_locals() {
    let Some(venv) = venv() else { return };
    let s = serve(&venv, "gevent", "1", &[], "gevent_app:app");
    let (answers, _) = concurrent(s.addr, "/hold?s=0.3", 20);
    assert!(answers.iter().all(|r| r.status == 200));
    let alive = || -> u32 { get(s.addr, "/held").unwrap().text().parse().unwrap() };
    assert_eq!(alive(), 20, "each of the burst's greenlets keeps its local");
    // Polling keeps one greenlet busy (last in, first out): the other 19 age out.
    wait_until(
        Duration::from_secs(15),
        "idle greenlets to free their locals",
        || alive() <= 1,
    );
}

/// Thousands of requests wait on the hub at once, each holding its objects while it waits: the
/// hub widens the collector's young generations (with CPython's defaults the middle one is
/// collected every few milliseconds under load, promoting every waiting request's objects to the
/// old generation, whose full collections cost the hub of a C10K run a third of its CPU). An app
/// that chose its own thresholds keeps them.
#[test]
fn the_hub_widens_the_collectors_young_generations_unless_the_app_chose() {
    let Some(venv) = venv() else { return };
    let s = serve(&venv, "gevent", "1", &[], "gevent_app:app");
    let t: Value = serde_json::from_str(&get(s.addr, "/gc").unwrap().text()).unwrap();
    assert_eq!(t, serde_json::json!([5000, 100, 10]));
    drop(s);
    let s = serve(
        &venv,
        "gevent",
        "1",
        &["--env", "GEVENT_APP_GC_THRESHOLDS=500,5,5"],
        "gevent_app:app",
    );
    let t: Value = serde_json::from_str(&get(s.addr, "/gc").unwrap().text()).unwrap();
    assert_eq!(t, serde_json::json!([500, 5, 5]));
}

/// A waiting request's greenlet has only Python frames (and gevent's) on its stack: the hub calls
/// the app from Python, not through Rust frames. greenlet copies that stack out at every switch
/// away and back in at every switch back, and keeps the copy while the request waits, so its size
/// is memory and CPU per request in flight (5.3 KB for a Flask view when the app was called from
/// Rust, with an optimized build; more with a debug one).
#[test]
fn a_waiting_greenlet_saves_a_small_stack() {
    let Some(venv) = venv() else { return };
    let s = serve(&venv, "gevent", "1", &[], "gevent_app:app");
    let addr = s.addr;
    let waiting: Vec<_> = (0..20)
        .map(|_| std::thread::spawn(move || get(addr, "/sleep?s=2").unwrap()))
        .collect();
    let mut saved: Vec<u64> = Vec::new();
    wait_until(Duration::from_secs(10), "20 waiting greenlets", || {
        saved = serde_json::from_str(&get(addr, "/stacks").unwrap().text()).unwrap();
        saved.len() >= 20
    });
    let max = saved.iter().copied().max().unwrap_or(0);
    assert!(max < 4096, "saved C stacks of waiting greenlets: {saved:?}");
    for h in waiting {
        assert_eq!(h.join().unwrap().text(), "slept\n");
    }
}

#[test]
fn atexit_handlers_run_when_a_gevent_worker_exits() {
    let Some(venv) = venv() else { return };
    util::python::atexit_runs_on_every_normal_exit(&["-k", "gevent", "--venv", &venv]);
}

/// A view that runs a command (`subprocess.run`) or forks works under `-k gevent`, as under
/// gunicorn's gevent worker: both are patched to watch the child from the hub, which needs
/// gevent's default loop (the hub's thread had its own: "child watchers are only available on
/// the default loop", a 500).
#[test]
fn a_gevent_view_can_run_a_subprocess_and_fork() {
    let Some(venv) = venv() else { return };
    let s = serve(&venv, "gevent", "1", &[], "gevent_app:app");
    for _ in 0..3 {
        let r = get(s.addr, "/subprocess").unwrap();
        assert_eq!(r.status, 200, "{}\n{}", r.text(), s.log());
        assert_eq!(r.text(), "from a child fork exit 7");
    }
}

/// `--reload` under gevent: the watcher is an OS thread of c10k's, not a `threading.Thread`
/// (which monkey-patching makes a greenlet), so it notices edits while greenlets serve; the same
/// scenario as under the other classes (`util::reload::edits_reload_the_app`), with both engines.
#[test]
fn edits_reload_the_app_under_gevent() {
    let Some(venv) = venv() else { return };
    util::reload::edits_reload_the_app(
        &["-k", "gevent", "--venv", &venv],
        util::reload::Source::Flags("auto"),
    );
    util::reload::edits_reload_the_app(
        &["-k", "gevent", "--venv", &venv],
        util::reload::Source::Flags("poll"),
    );
}

/// `--reload` under gevent closes an idle keep-alive connection at once, as under the other
/// classes (`util::reload::a_reload_closes_idle_keep_alive_connections`).
#[test]
fn a_reload_closes_idle_keep_alive_connections_under_gevent() {
    let Some(venv) = venv() else { return };
    util::reload::a_reload_closes_idle_keep_alive_connections(&["-k", "gevent", "--venv", &venv]);
}

#[test]
fn without_reload_an_edit_is_not_picked_up_under_gevent() {
    let Some(venv) = venv() else { return };
    util::reload::without_reload_an_edit_is_not_picked_up(&["-k", "gevent", "--venv", &venv]);
}

/// A thread the app starts at import (a scheduler, a metrics pusher; monkey-patched, a greenlet)
/// runs under `-k gevent`, and a socket it opens at import (a client that connects then) can be
/// waited on in a view, as under gunicorn's gevent worker: the app is imported on the hub's
/// thread, whose hub then serves. (Imported on the main thread, both belonged to the main
/// thread's hub, which never runs: the greenlet never ran again, and the read failed with
/// "operation on destroyed loop".) The import's `signal.signal` still works though CPython
/// allows it only on the main thread: it answers and fails as CPython's does, and the main
/// thread installs the handler once the import is done.
#[test]
fn a_thread_and_a_socket_made_at_import_work_and_signal_handlers_install_under_gevent() {
    let Some(venv) = venv() else { return };
    let s = serve(&venv, "gevent", "1", &[], "import_time:app");
    let read = || -> Value {
        let r = get(s.addr, "/").expect("get");
        assert_eq!(r.status, 200, "{}\n{}", r.text(), s.log());
        serde_json::from_str(&r.text()).expect("json")
    };
    let ticks = |v: &Value| v["ticks"].as_u64().expect("ticks");
    let first = read();
    assert_eq!(first["socket"], "x", "{first}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = first.clone();
    while ticks(&last) < ticks(&first) + 5 {
        assert!(
            Instant::now() < deadline,
            "the thread started at import did not run: {last}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
        last = read();
    }
    let seen = &last["seen"];
    assert_eq!(seen["previous"], "<Handlers.SIG_DFL: 0>", "{last}");
    assert_eq!(seen["getsignal_is_handler"], true, "{last}");
    assert_eq!(seen["second_previous_is_handler"], true, "{last}");
    assert_eq!(seen["kill"], "OSError", "{last}");
    assert_eq!(seen["not_callable"], "TypeError", "{last}");
    assert_eq!(seen["out_of_range"], "ValueError", "{last}");
    // The worker catches SIGUSR2 now (c10k itself leaves it alone).
    let pid = last["pid"].as_u64().expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let caught = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .expect("SigCgt");
    assert_ne!(caught & (1 << (libc::SIGUSR2 - 1)), 0, "{status}");
}

/// An app replacing the worker's SIGTERM handler at import is warned about under `-k gevent`
/// too, though its import runs on the hub's thread: the main thread installs the handler after
/// the import (see the test above), and then finds it.
#[test]
fn an_app_replacing_the_worker_sigterm_handler_is_warned_about_under_gevent() {
    let Some(venv) = venv() else { return };
    let s = serve(&venv, "gevent", "1", &[], "sets_sigterm:app");
    s.wait_log(
        "the application set its own SIGTERM handler at import",
        Duration::from_secs(5),
    );
    assert_eq!(get(s.addr, "/").expect("get").text(), "ok\n", "{}", s.log());
}

/// The app's `atexit` handlers run on the hub under `-k gevent`, where the app was imported, as
/// under gunicorn's gevent worker: a handler that waits on a socket the app opened at import
/// (a client flushing on exit) gets its answer. (Run on the main thread, the wait was another
/// thread's hub's and failed.)
#[test]
fn atexit_handlers_run_on_the_hub_under_gevent() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("atexit.txt");
    let env = format!("IMPORT_TIME_ATEXIT={}", file.display());
    let mut s = serve(&venv, "gevent", "1", &["-e", &env], "import_time:app");
    assert_eq!(get(s.addr, "/").expect("get").status, 200, "{}", s.log());
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(20)), Some(0), "{}", s.log());
    let wrote = std::fs::read_to_string(&file).unwrap_or_default();
    assert_eq!(wrote, "x", "{}", s.log());
}
