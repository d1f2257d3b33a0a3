//! `--preload` (gunicorn's `preload_app`): the app is imported once, in the zygote the workers
//! are forked from, and the workers serve it without importing it; `HUP` imports it again; an app
//! that starts a thread at import is served by workers started by exec; and what cannot take a
//! preloaded app (`--reload`, the built-in app) is refused at start. (`-k gevent --preload`:
//! gevent.rs.)

#![cfg(feature = "python")]

#[macro_use]
mod util;

use std::time::Duration;

use util::python::apps;
use util::{children, get, running, Server};

fn answer(s: &Server) -> serde_json::Value {
    let r = get(s.addr, "/").unwrap();
    assert_eq!(r.status, 200, "{}", s.log());
    serde_json::from_slice(&r.body).unwrap()
}

/// The master's children that are not workers the log names: the zygote, while one runs.
fn zygotes(s: &Server) -> Vec<u32> {
    let workers = s.worker_pids();
    children(s.child.id())
        .into_iter()
        .filter(|&c| running(c) && !workers.contains(&c))
        .collect()
}

/// Every answer comes from a worker that did not import the app: the zygote did, once, and the
/// worker says so in the log. Without --preload each worker imports it (`zygote.rs`).
#[test]
fn a_preloaded_app_is_imported_once_by_the_zygote_and_served_by_every_worker() {
    for class in ["sync", "gthread", "async"] {
        let s = util::python::forked(class, &["--preload"]);
        let workers = s.worker_pids();
        let zygote = zygotes(&s);
        assert_eq!(zygote.len(), 1, "{class}: {zygote:?}\n{}", s.log());
        for _ in 0..6 {
            let a = answer(&s);
            let pid = a["pid"].as_u64().unwrap() as u32;
            assert!(workers.contains(&pid), "{class}: {a}");
            assert_eq!(
                a["imported_in"].as_u64(),
                Some(u64::from(zygote[0])),
                "{class}: {a}\n{}",
                s.log()
            );
            // gc.freeze() after the import: the app's objects are in the permanent generation.
            assert!(a["frozen"].as_u64().unwrap() > 1000, "{class}: {a}");
        }
        let log = s.log();
        assert_eq!(log.matches("preloading forked:app").count(), 1, "{log}");
        assert_eq!(
            log.matches("serving the preloaded forked:app").count(),
            2,
            "{log}"
        );
    }
}

/// A module that says which version of its code runs and which process imported it.
fn write_versioned(dir: &std::path::Path, version: u32) {
    std::fs::write(
        dir.join("versioned.py"),
        format!(
            "import json, os\nIMPORTED_IN = os.getpid()\n\n\
             def app(environ, start_response):\n    \
             start_response('200 OK', [('Content-Type', 'application/json')])\n    \
             return [json.dumps({{'version': {version}, 'imported_in': IMPORTED_IN}}).encode()]\n"
        ),
    )
    .unwrap();
}

/// gunicorn's master keeps the app it preloaded across `HUP`, so a deploy needs a restart; c10k's
/// `HUP` replaces the zygote, which imports the new code, and the new workers serve it.
#[test]
fn hup_imports_a_preloaded_app_again() {
    let dir = tempfile::tempdir().unwrap();
    write_versioned(dir.path(), 1);
    let path = dir.path().to_str().unwrap();
    let s = Server::start(&[
        "-w",
        "2",
        "--preload",
        "--pythonpath",
        path,
        "versioned:app",
    ]);
    assert_eq!(answer(&s)["version"], 1, "{}", s.log());
    write_versioned(dir.path(), 2);
    s.signal(libc::SIGHUP);
    s.wait_for_workers(4);
    util::admin::wait_until(Duration::from_secs(10), "the old workers to stop", || {
        s.log().matches("worker exited").count() >= 2
    });
    for _ in 0..4 {
        let a = answer(&s);
        assert_eq!(a["version"], 2, "{a}\n{}", s.log());
    }
    assert_eq!(s.log().matches("preloading versioned:app").count(), 2);
}

/// A thread started at import stays in the zygote, which then cannot fork (the child would get
/// the forking thread alone, and a lock the other held stays locked in it): the log says why, and
/// the workers are started by exec and import the app themselves, and serve.
#[test]
fn an_app_that_starts_a_thread_at_import_is_served_by_executed_workers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("threaded.py"),
        "import json, os, threading, time\nIMPORTED_IN = os.getpid()\n\
         threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n\n\
         def app(environ, start_response):\n    \
         start_response('200 OK', [('Content-Type', 'application/json')])\n    \
         return [json.dumps({'pid': os.getpid(), 'imported_in': IMPORTED_IN}).encode()]\n",
    )
    .unwrap();
    let path = dir.path().to_str().unwrap();
    let s = Server::start(&["-w", "2", "--preload", "--pythonpath", path, "threaded:app"]);
    for _ in 0..4 {
        let a = answer(&s);
        assert_eq!(a["imported_in"], a["pid"], "{a}\n{}", s.log());
    }
    let log = s.log();
    assert!(
        log.contains("the zygote has more than one thread")
            && log.contains("the application started a thread at import"),
        "{log}"
    );
}

/// A module that sleeps `secs` at import, then says which process imported it.
fn write_slow(dir: &std::path::Path, secs: u32) {
    std::fs::write(
        dir.join("slow.py"),
        format!(
            "import json, os, time\ntime.sleep({secs})\nIMPORTED_IN = os.getpid()\n\n\
             def app(environ, start_response):\n    \
             start_response('200 OK', [('Content-Type', 'application/json')])\n    \
             return [json.dumps({{'pid': os.getpid(), 'imported_in': IMPORTED_IN}}).encode()]\n"
        ),
    )
    .unwrap();
}

/// `c10k serve --preload` with `workers` workers on the app [`write_slow`] wrote in `path`, its
/// log in `log`; started, not waited for.
fn serve_slow(path: &str, workers: &str, log: &std::path::Path) -> std::process::Child {
    util::serve_command()
        .args(["-w", workers, "--preload", "--pythonpath", path, "slow:app"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// An import longer than the 15 s the master gives the zygote for any other answer is waited
/// for as long as a worker's boot may take (`--timeout`): the workers are forked from the zygote
/// that imported it. It used to be given up on at 15 s, and each worker was then started by exec
/// and imported the app again.
#[test]
fn a_preload_import_longer_than_15_s_is_waited_for_up_to_timeout() {
    let dir = tempfile::tempdir().unwrap();
    write_slow(dir.path(), 16);
    let path = dir.path().to_str().unwrap();
    let s = Server::start_booting_within(
        &[
            "-w",
            "2",
            "--preload",
            "--timeout",
            "25",
            "--pythonpath",
            path,
            "slow:app",
        ],
        Duration::from_secs(40),
    );
    let zygote = zygotes(&s);
    assert_eq!(zygote.len(), 1, "{zygote:?}\n{}", s.log());
    for _ in 0..4 {
        let a = answer(&s);
        assert_eq!(
            a["imported_in"].as_u64(),
            Some(u64::from(zygote[0])),
            "{a}\n{}",
            s.log()
        );
    }
    assert!(!s.log().contains("could not fork"), "{}", s.log());
}

/// A `TERM` or Ctrl-C (`INT`) during the zygote's import stops the server at once, with no
/// worker started: it once waited for the import to end (up to 15 s), and a worker was then
/// started by exec, to import the app again, only to be stopped.
#[test]
fn a_stop_signal_during_a_slow_preload_import_stops_the_server_at_once() {
    let dir = tempfile::tempdir().unwrap();
    write_slow(dir.path(), 20);
    let path = dir.path().to_str().unwrap();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let log = dir.path().join("err.log");
        let mut child = serve_slow(path, "2", &log);
        let read = || std::fs::read_to_string(&log).unwrap_or_default();
        util::admin::wait_until(Duration::from_secs(10), "the zygote's import", || {
            read().contains("preloading slow:app")
        });
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = util::exit_within(&mut child, Duration::from_secs(5));
        let err = read();
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "signal {sig}: {err}"
        );
        assert!(!err.contains("Booting worker"), "signal {sig}: {err}");
        assert!(err.contains("graceful stop"), "signal {sig}: {err}");
    }
}

/// The master does not wait for the zygote's import: a signal that comes meanwhile is handled
/// at once (here `TTIN`, one more worker), and once the app is imported every worker, the added
/// one too, is forked from the zygote. Before, the master waited for the import and handled no
/// signal but a stop until it ended (nor its admin endpoint, nor the workers of a `HUP`).
#[test]
fn the_master_handles_signals_while_the_zygote_imports_the_app() {
    let dir = tempfile::tempdir().unwrap();
    write_slow(dir.path(), 8);
    let path = dir.path().to_str().unwrap();
    let log = dir.path().join("err.log");
    let mut child = serve_slow(path, "1", &log);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait = |child: &mut std::process::Child,
                limit: Duration,
                what: &str,
                done: &dyn Fn(&str) -> bool| {
        let deadline = std::time::Instant::now() + limit;
        while !done(&read()) {
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("timed out waiting for {what}:\n{}", read());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait(
        &mut child,
        Duration::from_secs(10),
        "the zygote's import",
        &|l| l.contains("preloading slow:app"),
    );
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTTIN) };
    wait(
        &mut child,
        Duration::from_secs(3),
        "SIGTTIN handled",
        &|l| l.contains("SIGTTIN: one more worker"),
    );
    assert!(!read().contains("serving the preloaded"), "{}", read());
    wait(
        &mut child,
        Duration::from_secs(30),
        "two forked workers",
        &|l| l.matches("serving the preloaded slow:app").count() == 2,
    );
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = util::exit_within(&mut child, Duration::from_secs(10));
    let err = read();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{err}");
    assert_eq!(err.matches("preloading slow:app").count(), 1, "{err}");
    assert!(!err.contains("could not fork"), "{err}");
}

/// What cannot take an app imported before the fork is refused at start (status 2), naming
/// --preload and why.
#[test]
fn preload_is_refused_where_it_cannot_work() {
    let apps = apps();
    for (args, needle) in [
        (
            &["--reload", "forked:app"][..],
            "--reload restarts a worker",
        ),
        (&[], "the built-in application has nothing to import"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("err.log");
        let mut child = util::serve_command()
            .args(["--preload", "--pythonpath", &apps])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let status = util::exit_within(&mut child, Duration::from_secs(20));
        let err = std::fs::read_to_string(&log).unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(2), "{args:?}: {err}");
        assert!(err.contains("--preload: "), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {needle:?} missing: {err}");
    }
}
