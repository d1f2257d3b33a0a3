//! `--reload` end to end, shared by `wsgi.rs` and `gevent.rs`: a throw-away app directory served
//! by two workers, edited the way an editor saves (a new file renamed over the old one), with an
//! explicit modification time for each edit, whole seconds apart: Python's bytecode cache checks
//! a source by its size and its time in seconds, and `v1` and `v2` have the same size.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::{get, Resp, Server};

/// Where `--reload`'s settings come from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// `--reload --reload-engine ENGINE --reload-extra-file FILE`.
    Flags(&'a str),
    /// `C10K_RELOAD`, `C10K_RELOAD_ENGINE`, `C10K_RELOAD_EXTRA_FILE`.
    Env(&'a str),
    /// A `--config` file's `reload`, `reload_engine` and `reload_extra_files`.
    ConfigFile(&'a str),
}

/// The app under test: `/` answers `text`, `/slow` sleeps first (an in-flight request across a
/// reload).
fn app_source(text: &str) -> String {
    format!(
        "import time\n\n\
         def app(environ, start_response):\n\
         \x20   if environ['PATH_INFO'] == '/slow':\n\
         \x20       time.sleep(2)\n\
         \x20       body = b'{text} slow'\n\
         \x20   else:\n\
         \x20       body = b'{text}'\n\
         \x20   start_response('200 OK', [('Content-Type', 'text/plain')])\n\
         \x20   return [body]\n"
    )
}

/// A directory holding `reloadme.py` and an extra file, edited with times whole seconds apart.
pub struct AppDir {
    pub dir: tempfile::TempDir,
    edits: u64,
    start: SystemTime,
}

impl AppDir {
    pub fn new(text: &str) -> AppDir {
        let dir = tempfile::tempdir().unwrap();
        let d = AppDir {
            dir,
            edits: 0,
            start: SystemTime::now(),
        };
        std::fs::write(d.module(), app_source(text)).unwrap();
        std::fs::write(d.extra(), "<p>template</p>\n").unwrap();
        d
    }

    pub fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    pub fn module(&self) -> PathBuf {
        self.dir.path().join("reloadme.py")
    }

    pub fn extra(&self) -> PathBuf {
        self.dir.path().join("page.html")
    }

    /// Replaces `file` with `text` (written beside it, then renamed over it, as editors save)
    /// and gives it a modification time of its own, 10 s past the last edit's.
    pub fn save(&mut self, file: &Path, text: &str) {
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, file).unwrap();
        self.bump(file);
    }

    /// Sets `file`'s modification time forward (as `touch` does), 10 s past the last edit's.
    pub fn bump(&mut self, file: &Path) {
        self.edits += 1;
        let f = std::fs::File::options().write(true).open(file).unwrap();
        f.set_modified(self.start + Duration::from_secs(10 * self.edits))
            .unwrap();
    }

    pub fn save_app(&mut self, text: &str) {
        self.save(&self.module(), &app_source(text));
    }
}

/// GETs `/` on fresh connections until `done` holds for 10 answers in a row (so that every
/// worker answers so, whichever takes each connection), 20 s at most; returns the last answer.
pub fn wait_answer(s: &Server, what: &str, done: impl Fn(&Resp) -> bool) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut in_a_row = 0;
    let mut last = None;
    while in_a_row < 10 {
        assert!(
            Instant::now() < deadline,
            "never {what}; last answer {:?}:\n{}",
            last.as_ref().map(|r: &Resp| (r.status, r.text())),
            s.log()
        );
        match get(s.addr, "/") {
            Ok(r) if done(&r) => {
                in_a_row += 1;
                last = Some(r);
            }
            Ok(r) => {
                in_a_row = 0;
                last = Some(r);
                std::thread::sleep(Duration::from_millis(100));
            }
            // Every worker may be between processes for a moment: the master holds the
            // listening socket, so the connection waits, but a refused one is a failure.
            Err(e) => panic!(
                "the server did not answer while reloading: {e}\n{}",
                s.log()
            ),
        }
    }
    last.unwrap()
}

fn count(s: &Server, needle: &str) -> usize {
    s.log().matches(needle).count()
}

/// Waits (20 s at most) until the log says `needle` at least `n` times.
fn wait_count(s: &Server, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(s, needle) < n {
        assert!(
            Instant::now() < deadline,
            "the log never said {needle:?} {n} times:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (20 s at most) until the server is settled: every worker that reloaded has exited, both
/// slots have a worker, and every worker booted so far has taken its first look at its files.
/// An edit made before a fresh worker's first look reloads that worker too (it may have
/// imported the code before the edit), so the next edit waits for this, and each edit reloads
/// each worker once. (Workers exit here only by reloading.) A worker whose first look finds an
/// edit made while it was loading (one in the same tick of the kernel's coarse clock counts)
/// reloads at once and never says it is watching.
pub fn wait_watching(s: &Server) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = s.log();
        let booted = log.matches("Booting worker with pid: ").count();
        let exited = log.matches("worker exited").count();
        let reloaded = log.matches("Worker reloading: ").count();
        let watching = log
            .matches("--reload: watching the application's files")
            .count();
        let while_loading = log
            .matches("modified while the worker was loading the application")
            .count();
        if reloaded == exited && booted == exited + 2 && watching + while_loading == booted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the workers did not settle ({booted} booted, {exited} exited, {reloaded} reloaded, \
             {watching} watching):\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `c10k serve CLASS -w 2 --chdir DIR` with `--reload` from `source`.
fn start(class: &[&str], source: Source<'_>, dir: &AppDir) -> Server {
    let extra = dir.extra().display().to_string();
    let config = dir.dir.path().join("c10k.toml");
    let config_s = config.display().to_string();
    let mut args: Vec<&str> = class.to_vec();
    args.extend_from_slice(&["-w", "2", "--chdir", dir.path()]);
    let mut env: Vec<(&str, &str)> = Vec::new();
    match source {
        Source::Flags(engine) => args.extend_from_slice(&[
            "--reload",
            "--reload-engine",
            engine,
            "--reload-extra-file",
            &extra,
        ]),
        Source::Env(engine) => env.extend_from_slice(&[
            ("C10K_RELOAD", "true"),
            ("C10K_RELOAD_ENGINE", engine),
            ("C10K_RELOAD_EXTRA_FILE", &extra),
        ]),
        Source::ConfigFile(engine) => {
            std::fs::write(
                &config,
                format!(
                    "reload = true\nreload_engine = \"{engine}\"\n\
                     reload_extra_files = [\"{extra}\"]\n"
                ),
            )
            .unwrap();
            args.extend_from_slice(&["--config", &config_s]);
        }
    }
    args.push("reloadme:app");
    Server::start_env(&args, &env)
}

/// Under `class` (its flags, e.g. `["-k", "gthread", "--threads", "4"]`) with `--reload` from
/// `source`: an edit reaches both workers while a request in flight is finished by the old code;
/// a `SyntaxError` is served as a 500 naming it while the server stays up, and fixing it brings
/// the new code; touching a `--reload-extra-file` reloads both workers again.
pub fn edits_reload_the_app(class: &[&str], source: Source<'_>) {
    let mut dir = AppDir::new("v1");
    let mut s = start(class, source, &dir);
    assert_eq!(get(s.addr, "/").unwrap().text(), "v1");
    let reloading = format!("Worker reloading: {} modified", dir.module().display());

    // An edit while a request is in flight: that request is finished, by the old code.
    wait_watching(&s);
    let addr = s.addr;
    let slow = std::thread::spawn(move || get(addr, "/slow"));
    std::thread::sleep(Duration::from_millis(500));
    dir.save_app("v2");
    wait_answer(&s, "answered v2", |r| r.status == 200 && r.text() == "v2");
    // Each worker watches for itself: both reloaded.
    wait_count(&s, &reloading, 2);
    for slot in ["slot=0", "slot=1"] {
        assert!(
            s.log()
                .lines()
                .any(|l| l.contains(&reloading) && l.contains(slot)),
            "no reload of {slot}:\n{}",
            s.log()
        );
    }
    let slow = slow
        .join()
        .unwrap()
        .expect("the in-flight request was answered");
    assert_eq!(
        (slow.status, slow.text().as_str()),
        (200, "v1 slow"),
        "{}",
        s.log()
    );

    // A SyntaxError: a 500 carrying it, and the server stays up.
    wait_watching(&s);
    let before = count(&s, &reloading);
    dir.save(
        &dir.module(),
        "def app(environ, start_response:\n    pass\n",
    );
    // Both workers notice it (10 answers in a row may all come from one of them).
    wait_count(&s, &reloading, before + 2);
    let r = wait_answer(&s, "answered the SyntaxError", |r| r.status == 500);
    let body = r.text();
    assert!(
        body.contains("SyntaxError") && body.contains("reloadme.py"),
        "{body}"
    );
    assert!(s.child.try_wait().unwrap().is_none(), "{}", s.log());
    assert!(!s.log().contains("failed to boot"), "{}", s.log());

    // Fixing the file brings the new code.
    wait_watching(&s);
    let before = count(&s, &reloading);
    dir.save_app("v3");
    wait_count(&s, &reloading, before + 2);
    wait_answer(&s, "answered v3 after the fix", |r| {
        r.status == 200 && r.text() == "v3"
    });

    // An extra file (a template) reloads every worker too.
    let extra_reloading = format!("Worker reloading: {} modified", dir.extra().display());
    assert_eq!(count(&s, &extra_reloading), 0, "{}", s.log());
    wait_watching(&s);
    let booted = s.worker_pids().len();
    dir.bump(&dir.extra());
    wait_count(&s, &extra_reloading, 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.worker_pids().len() < booted + 2 {
        assert!(Instant::now() < deadline, "no new workers:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_answer(&s, "answered v3 after the extra file", |r| {
        r.status == 200 && r.text() == "v3"
    });
    assert!(s.child.try_wait().unwrap().is_none(), "{}", s.log());
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(20)), Some(0), "{}", s.log());
}

/// Under `class` with `--reload-engine engine`: an edit saved while the worker imports the app
/// (its module already read, the watcher not yet looking) reloads it once the worker is up,
/// and only once. Before, the first look took the edited file for the starting state and the
/// worker kept the old code until the next edit, as gunicorn's reloader does.
pub fn an_edit_while_the_worker_imports_reloads(class: &[&str], engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("slowimport.py");
    let importing = dir.path().join("importing");
    let app = |text: &str, import: &str| {
        format!(
            "{import}\n\
             def app(environ, start_response):\n\
             \x20   start_response('200 OK', [('Content-Type', 'text/plain')])\n\
             \x20   return [b'{text}']\n"
        )
    };
    // v1 says it is being imported (Python has read the whole file by then), then takes 1.5 s
    // more to define its app.
    let slow = format!(
        "import time\nopen({:?}, 'w').close()\ntime.sleep(1.5)\n",
        importing.display().to_string()
    );
    std::fs::write(&module, app("v1", &slow)).unwrap();
    let edit = {
        let (module, importing) = (module.clone(), importing.clone());
        let v2 = app("v2", "");
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !importing.exists() {
                assert!(Instant::now() < deadline, "the worker never imported v1");
                std::thread::sleep(Duration::from_millis(10));
            }
            // Saved as editors save: a new file renamed over the old one.
            let tmp = module.with_extension("tmp");
            std::fs::write(&tmp, v2).unwrap();
            std::fs::rename(&tmp, &module).unwrap();
        })
    };
    let mut args: Vec<&str> = class.to_vec();
    let path = dir.path().to_str().unwrap();
    args.extend_from_slice(&["-w", "1", "--reload", "--reload-engine", engine]);
    args.extend_from_slice(&["--chdir", path, "slowimport:app"]);
    let mut s = Server::start(&args);
    edit.join().unwrap();
    wait_answer(&s, "answered v2", |r| r.status == 200 && r.text() == "v2");
    let reloading = format!(
        "Worker reloading: {} modified while the worker was loading the application",
        module.display()
    );
    assert_eq!(count(&s, &reloading), 1, "{}", s.log());
    // The fresh worker found nothing to reload for: three more looks change nothing.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count(&s, "Worker reloading"), 1, "{}", s.log());
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(20)), Some(0), "{}", s.log());
}

/// Without `--reload` an edit changes nothing: the workers keep the code they imported, and no
/// watcher says a word (the engine looks once a second: 3 s is three looks).
pub fn without_reload_an_edit_is_not_picked_up(class: &[&str]) {
    let mut dir = AppDir::new("v1");
    let mut args: Vec<&str> = class.to_vec();
    args.extend_from_slice(&["-w", "1", "--chdir", dir.path(), "reloadme:app"]);
    let s = Server::start(&args);
    assert_eq!(get(s.addr, "/").unwrap().text(), "v1");
    dir.save_app("v2");
    std::thread::sleep(Duration::from_secs(3));
    for _ in 0..5 {
        assert_eq!(get(s.addr, "/").unwrap().text(), "v1", "{}", s.log());
    }
    assert!(!s.log().contains("Worker reloading"), "{}", s.log());
    assert_eq!(s.worker_pids().len(), 1, "{}", s.log());
}

/// Under `class`: a keep-alive connection idle when its worker reloads is closed at once, so
/// that its client's next request (a browser's refresh) goes to a new connection and meets the
/// new code, as under gunicorn's reloader; it is not answered once more by the old code, which
/// a retirement by HUP or `--max-requests` does (see `serve.rs`). Two workers, a `--keepalive`
/// (20 s) longer than every wait here, so that only the reload can close the connection.
pub fn a_reload_closes_idle_keep_alive_connections(class: &[&str]) {
    let mut dir = AppDir::new("v1");
    let mut args = class.to_vec();
    args.extend_from_slice(&["--keepalive", "20"]);
    let s = start(&args, Source::Flags("auto"), &dir);
    wait_watching(&s);
    let reloading = format!("Worker reloading: {} modified", dir.module().display());

    let mut kept = super::Reader::new(super::connect(s.addr));
    kept.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    kept.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = kept.response().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "v1"), "{}", s.log());
    let sync = class.contains(&"sync");
    // `sync` keeps no connection (as gunicorn's): there the close below is its usual one.
    assert_eq!(
        r.header("connection") == Some("close"),
        sync,
        "{:?}",
        r.headers
    );

    dir.save_app("v2");
    wait_count(&s, &reloading, 2);
    // Closed (the blocking classes see the reload within their 200 ms poll), not kept for the
    // request below: before the fix the read waited out its 5 s for the 20 s keep-alive.
    let closed_at = Instant::now();
    assert!(
        kept.closed(),
        "the idle keep-alive connection is still open {:?} after the reload:\n{}",
        closed_at.elapsed(),
        s.log()
    );
    // Nor does the old code answer a request sent on it (the send may already fail).
    if kept.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").is_ok() {
        if let Ok(r) = kept.response() {
            panic!("answered {:?} on the reloaded connection", r.text());
        }
    }
    // A new connection meets the new code.
    wait_answer(&s, "answered v2", |r| r.status == 200 && r.text() == "v2");
    assert!(!s.log().contains("failed to boot"), "{}", s.log());
}
