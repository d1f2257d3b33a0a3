//! The WSGI handler called directly with `c10k_http::Request` values, under both kinds of wait:
//! PEP 3333 behaviour with the probe apps in `tests/apps/probe.py` (wrapped in
//! `wsgiref.validate.validator`), thread-local state, close() on every path, timeouts and boot
//! errors. Only the standard library is needed here; Flask and Django run in the `c10k` crate's
//! end-to-end tests.

use std::future::{poll_fn, Future};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use c10k_http::{Body, Ctx, Handler, Method, Request, Response, Scheme, Wait, WorkerInfo};
use c10k_wsgi::{BootError, WsgiApp, WsgiConfig};

fn apps_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/apps")
}

fn config(app: &str) -> WsgiConfig {
    WsgiConfig {
        app: app.into(),
        pythonpath: vec![apps_dir()],
        venv: std::env::var_os("C10K_TEST_VENV").map(PathBuf::from),
        env: vec![("PROBE_BOOT_MARK".into(), "from --env".into())],
        ..WsgiConfig::default()
    }
}

fn info(wait: Wait, threads: usize) -> WorkerInfo {
    WorkerInfo {
        slot: 0,
        class: if wait == Wait::Block {
            "gthread"
        } else {
            "async"
        },
        wait,
        threads,
        max_in_flight: 64,
        workers: 1,
    }
}

fn boot(app: &str, wait: Wait) -> WsgiApp {
    WsgiApp::boot(&config(app), &info(wait, 1)).unwrap_or_else(|e| panic!("boot {app}: {e}"))
}

fn get(target: &str) -> Request {
    let mut r = Request::new(Method::Get, target);
    r.headers.append("Host", "example.test:8080");
    r.peer = Some("10.1.2.3:40000".parse().unwrap());
    r.local = Some("127.0.0.1:8000".parse().unwrap());
    r
}

/// Drains a body: its chunks, and whether it ended with an error.
fn drain(body: Body) -> (Vec<Bytes>, bool) {
    match body {
        Body::Full(b) => (vec![b], false),
        Body::File(f) => {
            let mut buf = vec![0u8; f.len as usize];
            std::os::unix::fs::FileExt::read_exact_at(&f.file, &mut buf, f.offset).unwrap();
            (vec![Bytes::from(buf)], false)
        }
        Body::Stream(mut s) => {
            let mut chunks = Vec::new();
            loop {
                match pollster::block_on(poll_fn(|cx| s.as_mut().poll_next(cx))) {
                    Some(Ok(c)) => chunks.push(c),
                    Some(Err(_)) => return (chunks, true),
                    None => return (chunks, false),
                }
            }
        }
    }
}

fn text(resp: Response) -> (u16, String) {
    let status = resp.status;
    let (chunks, _) = drain(resp.body);
    let all: Vec<u8> = chunks.concat();
    (status, String::from_utf8_lossy(&all).into_owned())
}

/// Calls the app as the blocking classes do (on this thread).
fn block(app: &WsgiApp, req: Request) -> Response {
    pollster::block_on(app.call(req, Ctx::new(Wait::Block)))
}

fn json(app: &WsgiApp, req: Request) -> serde_json::Value {
    let (status, body) = text(block(app, req));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn environ_has_every_required_key_and_pep3333_values() {
    let app = boot("probe:app", Wait::Block);
    let mut req = get("/environ?x=1&y=%41");
    req.headers.append("X-Forwarded-For", "1.1.1.1");
    req.headers.append("X_Forwarded_For", "6.6.6.6");
    req.headers.append("Accept", "text/html");
    req.headers.append("accept", "application/json");
    req.headers.append("Cookie", "a=1");
    req.headers.append("Cookie", "b=2");
    req.headers.append("Content-Type", "text/plain");
    req.headers.append("User-Agent", "caf\u{e9}");
    let e = json(&app, req);
    assert_eq!(e["__type__"], "dict");
    for key in [
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "wsgi.version",
        "wsgi.url_scheme",
        "wsgi.multithread",
        "wsgi.multiprocess",
        "wsgi.run_once",
        "wsgi.input_terminated",
    ] {
        assert!(e.get(key).is_some(), "{key} missing from {e}");
    }
    assert_eq!(e["REQUEST_METHOD"], "GET");
    assert_eq!(e["PATH_INFO"], "/environ");
    assert_eq!(e["QUERY_STRING"], "x=1&y=%41");
    assert_eq!(e["SCRIPT_NAME"], "");
    assert_eq!(e["SERVER_NAME"], "127.0.0.1");
    assert_eq!(e["SERVER_PORT"], "8000", "a string");
    assert_eq!(e["REMOTE_ADDR"], "10.1.2.3");
    assert_eq!(e["REMOTE_PORT"], "40000");
    assert_eq!(e["SERVER_PROTOCOL"], "HTTP/1.1");
    assert_eq!(e["wsgi.version"], serde_json::json!([1, 0]));
    assert_eq!(e["wsgi.url_scheme"], "http");
    assert_eq!(e["wsgi.multithread"], false, "one thread");
    assert_eq!(e["wsgi.multiprocess"], false, "one worker");
    assert_eq!(e["wsgi.input_terminated"], true);
    assert_eq!(e["HTTP_HOST"], "example.test:8080");
    assert_eq!(
        e["HTTP_X_FORWARDED_FOR"], "1.1.1.1",
        "the _ spelling is dropped"
    );
    assert_eq!(e["HTTP_ACCEPT"], "text/html, application/json");
    assert_eq!(e["HTTP_COOKIE"], "a=1; b=2");
    assert_eq!(e["CONTENT_TYPE"], "text/plain");
    assert!(e.get("HTTP_CONTENT_TYPE").is_none());
    assert!(
        e.get("CONTENT_LENGTH").is_none(),
        "no body, no length header"
    );
    assert_eq!(
        e["HTTP_USER_AGENT"], "caf\u{c3}\u{a9}",
        "latin-1 decoded bytes"
    );
    assert_eq!(e["PROBE_BOOT_MARK"], serde_json::Value::Null);
}

#[test]
fn path_info_is_percent_and_latin1_decoded_and_root_path_is_script_name() {
    let mut cfg = config("probe:app");
    cfg.root_path = "/api/".into();
    let app = WsgiApp::boot(&cfg, &info(Wait::Block, 4)).unwrap();
    let mut req = get("/api/caf%C3%A9%20x");
    req.path = "/api/environ".into();
    let e = json(&app, req);
    assert_eq!(e["SCRIPT_NAME"], "/api");
    assert_eq!(e["PATH_INFO"], "/environ");
    assert_eq!(e["wsgi.multithread"], true, "four threads");
    // The decoding itself, through the 404 page that echoes PATH_INFO.
    let (status, body) = text(block(&app, get("/api/caf%C3%A9%20x")));
    assert_eq!(status, 404);
    assert_eq!(body, "not found: /caf\u{c3}\u{a9} x");
}

#[test]
fn a_path_outside_root_path_is_a_500_unless_the_front_set_script_name() {
    let mut cfg = config("probe:app");
    cfg.root_path = "/app".into();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for wait in [Wait::Block, Wait::Yield] {
        let app = WsgiApp::boot(&cfg, &info(wait, 2)).unwrap();
        let call = |req: Request| text(rt.block_on(app.call(req, Ctx::new(wait))));
        // Failed before the fix: 404 "not found: /other" and "not found: /application" (the app
        // was called with PATH_INFO the whole path).
        for target in ["/other", "/application", "/ap", "/"] {
            assert_eq!(
                call(get(target)),
                (
                    500,
                    "request path is not under this server's --root-path\n".into()
                ),
                "{target} {wait:?}"
            );
        }
        for (target, want) in [
            ("/app", (404, "not found: ".into())),
            ("/app/", (200, "probe".into())),
            ("/app/x", (404, "not found: /x".into())),
        ] {
            assert_eq!(call(get(target)), want, "{target} {wait:?}");
        }
        // nginx's `uwsgi_param SCRIPT_NAME` made the split: its SCRIPT_NAME and PATH_INFO stand.
        let mut req = get("/environ");
        req.cgi_vars.push((
            Bytes::from_static(b"SCRIPT_NAME"),
            Bytes::from_static(b"/mnt"),
        ));
        let (status, body) = call(req);
        assert_eq!(status, 200, "{body}");
        let e: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (&e["SCRIPT_NAME"], &e["PATH_INFO"]),
            (&"/mnt".into(), &"/environ".into())
        );
    }
}

#[test]
fn echo_body_through_every_input_method() {
    let app = boot("probe:app", Wait::Block);
    let body = "line one\nline two\nlast";
    for (mode, want) in [
        ("read", body.to_owned()),
        ("small", body.to_owned()),
        ("readline", body.replace('\n', "\n|")),
        ("readlines", body.replace('\n', "\n|")),
        ("iter", body.replace('\n', "\n|")),
    ] {
        let req = get(&format!("/echo?mode={mode}")).with_body("text/plain", body);
        let (status, got) = text(block(&app, req));
        assert_eq!((status, got.as_str()), (200, want.as_str()), "mode {mode}");
    }
}

#[test]
fn spooled_file_bodies_read_like_memory_ones() {
    use std::io::Write;
    let app = boot("probe:app", Wait::Block);
    let data = "a\nbb\nccc\n".repeat(5000);
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(data.as_bytes()).unwrap();
    for mode in ["read", "readline"] {
        let mut req = get(&format!("/echo?mode={mode}")).with_body("text/plain", "");
        req.body = c10k_http::RequestBody::File {
            file: Arc::new(f.try_clone().unwrap()),
            len: data.len() as u64,
        };
        let (status, got) = text(block(&app, req));
        assert_eq!(status, 200);
        let want = if mode == "read" {
            data.clone()
        } else {
            data.replace('\n', "\n|").trim_end_matches('|').to_owned()
        };
        assert_eq!(got.len(), want.len(), "mode {mode}");
        assert_eq!(got, want, "mode {mode}");
    }
}

#[test]
fn streaming_iterable_is_sent_chunk_by_chunk_and_closed() {
    let app = boot("probe:app", Wait::Block);
    let resp = block(&app, get("/stream?n=3&token=s1"));
    assert_eq!(resp.status, 200);
    assert!(matches!(resp.body, Body::Stream(_)), "not joined");
    let (chunks, failed) = drain(resp.body);
    assert!(!failed);
    assert_eq!(chunks, ["chunk0\n", "chunk1\n", "chunk2\n"]);
    assert_eq!(text(block(&app, get("/closed?token=s1"))).1, "1");
}

#[test]
fn dropping_a_stream_midway_closes_the_iterable() {
    let app = boot("probe:app", Wait::Block);
    let resp = block(&app, get("/stream?n=50&token=s2"));
    let Body::Stream(mut s) = resp.body else {
        panic!("expected a stream");
    };
    let first = pollster::block_on(poll_fn(|cx| s.as_mut().poll_next(cx)));
    assert!(matches!(first, Some(Ok(_))));
    assert_eq!(text(block(&app, get("/closed?token=s2"))).1, "0");
    drop(s); // the client went away
    assert_eq!(text(block(&app, get("/closed?token=s2"))).1, "1");
}

#[test]
fn write_callable_data_comes_first() {
    let app = boot("probe:app", Wait::Block);
    assert_eq!(
        text(block(&app, get("/write"))),
        (200, "written1,written2,returned".to_owned())
    );
    // write() from inside the iterable once the head is out: in order, not an error.
    let resp = block(&app, get("/write_in_body"));
    let (chunks, failed) = drain(resp.body);
    assert!(!failed, "the body failed after {chunks:?}");
    assert_eq!(chunks.concat(), b"first,written,last,after the last");
}

#[test]
fn a_failing_close_after_a_complete_answer_is_logged_not_answered() {
    // As under gunicorn, which has sent the answer by then; GET and HEAD alike.
    let app = boot("probe:raw", Wait::Block);
    assert_eq!(
        text(block(&app, get("/close_raises"))),
        (200, "answered".to_owned())
    );
    let mut head = get("/close_raises");
    head.method = Method::Head;
    assert_eq!(block(&app, head).status, 200);
}

#[test]
fn exc_info_replaces_the_head_before_it_is_sent_and_reraises_after() {
    let app = boot("probe:app", Wait::Block);
    assert_eq!(
        text(block(&app, get("/exc_info"))),
        (500, "replaced by the error page".to_owned())
    );
    let resp = block(&app, get("/exc_info_late"));
    assert_eq!(resp.status, 200);
    let (chunks, failed) = drain(resp.body);
    assert_eq!(chunks, ["first"]);
    assert!(failed, "the stream must end in an error, not a clean end");
}

#[test]
fn exc_info_after_write_reraises_and_keeps_the_head() {
    // write() promises its data went out under the head given so far (PEP 3333), so a later
    // start_response(..., exc_info) must re-raise, not swap the status under that data.
    let app = boot("probe:app", Wait::Block);
    assert_eq!(
        text(block(&app, get("/exc_info_after_write"))),
        (200, "written,re-raised".to_owned())
    );
}

#[test]
fn file_wrapper_reads_real_files_in_rust_and_others_in_python() {
    let probe = std::fs::read_to_string(apps_dir().join("probe.py")).unwrap();
    // Unvalidated: the wrapper reaches the server, which reads the file itself.
    let app = boot("probe:raw", Wait::Block);
    let resp = block(&app, get("/file?skip=10"));
    assert!(
        matches!(&resp.body, Body::File(f) if f.offset == 10),
        "a real file is a file body for sendfile: {:?}",
        resp.body
    );
    assert_eq!(resp.header("content-length"), None, "the server sets it");
    let (status, body) = text(resp);
    assert_eq!(status, 200);
    assert_eq!(body, probe[10..]);
    // Never past the app's Content-Length.
    let (_, body) = text(block(&app, get("/file?skip=10&cl=7")));
    assert_eq!(body, probe[10..17]);
    // Validated: the validator wraps the iterable, so it is iterated in Python.
    let app = boot("probe:app", Wait::Block);
    assert_eq!(text(block(&app, get("/file"))), (200, probe));
}

#[test]
fn file_wrapper_sends_what_a_procfs_file_reads_not_its_zero_size() {
    // /proc files are regular files whose st_size is 0; sending st_size bytes answered an empty
    // body (Content-Length: 0) where PEP 3333 wants what iterating the file gives.
    let app = boot("probe:raw", Wait::Block);
    let (status, body) = text(block(&app, get("/file?proc=1")));
    assert_eq!(status, 200);
    assert!(body.starts_with("Name:"), "not /proc/self/status: {body:?}");
    assert!(body.contains("\nPid:"), "{body:?}");
    // Never past the app's Content-Length there either.
    assert_eq!(
        text(block(&app, get("/file?proc=1&cl=5"))),
        (200, "Name:".into())
    );
}

#[test]
fn response_header_values_must_be_field_values_and_are_trimmed() {
    // A control character other than a tab is not allowed in a field value (RFC 9110 §5.5);
    // strict clients, and nginx in front, refuse the whole response. gunicorn raises for it, as
    // for a line break: a 500, and nothing of the value on the wire.
    let app = boot("probe:raw", Wait::Block);
    for v in [
        "a%01b",
        "a%0Bb",
        "a%0Cb",
        "a%7Fb",
        "a%00b",
        "a%0D%0AX-Evil:+1",
    ] {
        let resp = block(&app, get(&format!("/echo_header?v={v}")));
        assert_eq!(resp.status, 500, "{v}: {:?}", resp.headers);
        assert!(resp.header("x-echo").is_none(), "{v}");
    }
    // A tab inside is a field value; spaces and tabs around it are not part of it.
    for (v, sent) in [
        ("a%09b", &b"a\tb"[..]),
        ("++padded%09+", b"padded"),
        ("+in+side+", b"in side"),
        ("+++", b""),
        ("caf%C3%A9", b"caf\xe9"),
    ] {
        let resp = block(&app, get(&format!("/echo_header?v={v}")));
        assert_eq!(resp.status, 200, "{v}");
        let echo = resp.headers.iter().find(|(n, _)| n == "X-Echo");
        assert_eq!(echo.map(|(_, v)| v.as_ref()), Some(sent), "{v}");
    }
}

#[test]
fn thread_local_state_survives_across_requests() {
    let app = boot("probe:app", Wait::Block);
    let worker = std::thread::spawn(move || {
        (1..=5)
            .map(|_| text(block(&app, get("/local"))).1)
            .collect::<Vec<_>>()
    });
    let got = worker.join().unwrap();
    let counts: Vec<&str> = got.iter().map(|s| s.rsplit(' ').next().unwrap()).collect();
    assert_eq!(counts, ["1", "2", "3", "4", "5"], "{got:?}");
}

#[test]
fn app_exception_is_a_500_with_a_generic_body_and_the_app_keeps_serving() {
    let app = boot("probe:app", Wait::Block);
    let (status, body) = text(block(&app, get("/raise")));
    assert_eq!(status, 500);
    assert!(!body.contains("boom"), "no internals in the answer: {body}");
    assert_eq!(text(block(&app, get("/write"))).0, 200);
}

#[test]
fn custom_status_and_head_requests() {
    let app = boot("probe:app", Wait::Block);
    let resp = block(&app, get("/status?s=201+Created"));
    assert_eq!((resp.status, resp.reason.as_deref()), (201, None));
    // The app's own phrase is kept for the status line (gunicorn sends it): `200 Fine`,
    // Werkzeug's `404 NOT FOUND`, latin-1 and tabs included. The standard one is left to the
    // server (no copy per response).
    for (query, code, reason) in [
        ("200+Fine", 200, &b"Fine"[..]),
        ("404+NOT+FOUND", 404, b"NOT FOUND"),
        ("200++two+spaces", 200, b" two spaces"),
        ("200+caf%C3%A9%09x", 200, b"caf\xe9\tx"),
    ] {
        let resp = block(&app, get(&format!("/status?s={query}")));
        assert_eq!((resp.status, resp.reason.as_deref()), (code, Some(reason)));
    }
    // A phrase that could end the status line early (CR, LF, any control character) or is not
    // latin-1 is a ValueError in the app: a 500 (gunicorn's STATUS_RE refuses the same).
    for query in [
        "200+OK%0D%0AX-Evil:+1",
        "200+OK%0A",
        "200+a%00",
        "200+a%7F",
        "200+a%1B[31m",
        "200+ok%E2%9C%93",
    ] {
        let resp = block(&app, get(&format!("/status?s={query}")));
        assert_eq!(
            (resp.status, resp.reason.as_deref()),
            (500, None),
            "{query}"
        );
    }
    let mut head = get("/stream?n=3&token=h1");
    head.method = Method::Head;
    let resp = block(&app, head);
    assert_eq!(resp.status, 200);
    assert!(drain(resp.body).0.is_empty(), "HEAD stops the iteration");
    assert_eq!(text(block(&app, get("/closed?token=h1"))).1, "1");
    // An app that leaves the body out of its HEAD answer (Flask): the length it announced is
    // kept, and without one none is made up from the empty body.
    let mut head = get("/head_empty");
    head.method = Method::Head;
    let resp = block(&app, head);
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-length").map(|v| &v[..]),
        Some(&b"12"[..])
    );
    assert!(drain(resp.body).0.concat().is_empty());
    let mut head = get("/head_empty?cl=0");
    head.method = Method::Head;
    let resp = block(&app, head);
    assert!(resp.header("content-length").is_none());
    assert!(
        matches!(resp.body, Body::Stream(_)),
        "a body of unknown length, not an empty one: {:?}",
        resp.body
    );
    // An informational status is not an answer.
    assert_eq!(text(block(&app, get("/status?s=100+Continue"))).0, 500);
    assert_eq!(
        text(block(&app, get("/status?s=101+Switching+Protocols"))).0,
        500
    );
}

#[test]
fn factory_with_literal_arguments() {
    let app = boot("probe:create_app('hey', loud=True)", Wait::Block);
    assert_eq!(text(block(&app, get("/"))), (200, "HEY".to_owned()));
}

#[test]
fn boot_errors_are_typed() {
    let i = info(Wait::Block, 1);
    let err = |spec: &str| WsgiApp::boot(&config(spec), &i).unwrap_err();
    assert!(matches!(
        err("no_such_module:app"),
        BootError::ModuleNotFound { .. }
    ));
    assert!(matches!(
        err("probe:missing"),
        BootError::NoAttribute { .. }
    ));
    assert!(matches!(
        err("probe:not_callable"),
        BootError::NotCallable { .. }
    ));
    assert!(matches!(err("probe:"), BootError::Spec { .. }));
    let e = err("broken_import:app");
    match &e {
        BootError::Exception { traceback, .. } => {
            assert!(traceback.contains("ZeroDivisionError"), "{traceback}")
        }
        other => panic!("expected an exception at import, got {other:?}"),
    }
    // A module the app imports that is missing is the app's exception, not "no module named app".
    assert!(
        matches!(err("imports_missing:app"), BootError::Exception { .. }),
        "{}",
        err("imports_missing:app")
    );
}

#[test]
fn the_venv_is_the_interpreter_prefix() {
    let Some(venv) = std::env::var_os("C10K_TEST_VENV") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set C10K_TEST_VENV"
        );
        return;
    };
    let app = boot("probe:app", Wait::Block);
    let want = std::fs::canonicalize(&venv).unwrap();
    let (status, prefix) = text(block(&app, get("/prefix")));
    assert_eq!(status, 200);
    assert_eq!(std::fs::canonicalize(prefix).unwrap(), want);
}

#[test]
fn env_values_reach_os_environ() {
    let app = boot("probe:app", Wait::Block);
    assert_eq!(
        text(block(&app, get("/boot"))),
        (200, "from --env".to_owned())
    );
}

#[test]
fn request_timeout_answers_504_and_caps_stuck_threads() {
    let recycled = Arc::new(AtomicUsize::new(0));
    let mut cfg = config("probe:app");
    cfg.max_stuck_threads = Some(1);
    let r = recycled.clone();
    cfg.recycle = Some(Arc::new(move || {
        r.fetch_add(1, Ordering::SeqCst);
    }));
    let app = WsgiApp::boot(&cfg, &info(Wait::Block, 1)).unwrap();
    let with_deadline = |target: &str, ms: u64| {
        let ctx =
            Ctx::new(Wait::Block).with_deadline(Some(Instant::now() + Duration::from_millis(ms)));
        pollster::block_on(app.call(get(target), ctx))
    };
    let start = Instant::now();
    assert_eq!(with_deadline("/slow?s=3", 200).status, 504);
    assert!(start.elapsed() < Duration::from_secs(2), "504 on time");
    assert_eq!(app.stuck_threads(), 1);
    // A replacement thread serves the next request.
    assert_eq!(text(with_deadline("/write", 2000)).0, 200);
    assert_eq!(recycled.load(Ordering::SeqCst), 0);
    // One more stuck thread than tolerated: the worker is asked to recycle.
    assert_eq!(with_deadline("/slow?s=3", 200).status, 504);
    assert_eq!(recycled.load(Ordering::SeqCst), 1);
}

/// This process's threads whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|n| n.starts_with(prefix))
        .count()
}

/// The pool that runs the blocking classes' requests with a deadline (`-k thread
/// --request-timeout`: up to `--worker-connections` threads) gives back the threads a burst
/// started once they are idle, what their `threading.local` held in reference cycles is freed,
/// and (Python before 3.12) `threading.active_count()` forgets them. Before, every thread stayed
/// for the worker's life (the soak of `-k thread` saw the worker's threads climb with each new
/// peak of concurrency, and this test counted 6 pool threads and 0 freed objects after the wait).
#[test]
fn idle_pool_threads_exit_and_free_their_locals() {
    const N: usize = 6;
    let mut cfg = config("probe:app");
    cfg.pool_thread_idle = Some(Duration::from_millis(300));
    let app = Arc::new(WsgiApp::boot(&cfg, &info(Wait::Block, 64)).unwrap());
    let with_deadline = |app: &WsgiApp, target: &str| {
        let ctx =
            Ctx::new(Wait::Block).with_deadline(Some(Instant::now() + Duration::from_secs(10)));
        body_text(pollster::block_on(app.call(get(target), ctx)))
    };
    // N requests inside the app at once: N pool threads, each keeping a cyclic local.
    let burst: Vec<_> = (0..N)
        .map(|_| {
            let app = app.clone();
            std::thread::spawn(move || {
                with_deadline(&app, &format!("/meet?n={N}&token=idle&keep=1&timeout=5"))
            })
        })
        .collect();
    for t in burst {
        assert_eq!(t.join().unwrap(), "met");
    }
    assert!(threads_named("c10k-python") >= N);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (threads, freed) = (threads_named("c10k-python"), with_deadline(&app, "/freed"));
        // Python's view: the main thread and the pool thread that answers.
        let active = with_deadline(&app, "/active_count");
        // The thread that answers is a new one (or one of the burst's): it may stay.
        if threads <= 1
            && freed.parse::<usize>().unwrap() >= N - 1
            && active.parse::<usize>().unwrap() <= 2
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "10 s after a burst of {N}: {threads} pool threads left, {freed} locals freed, \
             threading.active_count() {active}"
        );
        std::thread::sleep(Duration::from_millis(400));
    }
    // A thread starts again for the next request.
    assert_eq!(with_deadline(&app, "/"), "probe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_wait_runs_python_on_the_pool_and_streams_through_it() {
    let app = WsgiApp::boot(&config("probe:app"), &info(Wait::Yield, 2)).unwrap();
    let resp = app.call(get("/write"), Ctx::new(Wait::Yield)).await;
    assert_eq!(resp.status, 200);
    // A streamed body (the validator makes every answer one) keeps the pool thread that ran its
    // view until the body is dropped: one held here would take a thread from what follows.
    drop(resp);
    let resp = app
        .call(get("/stream?n=4&token=a1"), Ctx::new(Wait::Yield))
        .await;
    let Body::Stream(mut s) = resp.body else {
        panic!("expected a stream");
    };
    let mut got = Vec::new();
    while let Some(c) = poll_fn(|cx| s.as_mut().poll_next(cx)).await {
        got.push(c.unwrap());
    }
    assert_eq!(got.len(), 4);
    drop(s);
    let resp = app
        .call(get("/closed?token=a1"), Ctx::new(Wait::Yield))
        .await;
    assert_eq!(body_text(resp), "1");

    // Dropped mid-stream: close() still runs, on a Python thread.
    let resp = app
        .call(get("/stream?n=50&token=a2"), Ctx::new(Wait::Yield))
        .await;
    drop(resp);
    let mut closed = String::new();
    for _ in 0..100 {
        closed = body_text(
            app.call(get("/closed?token=a2"), Ctx::new(Wait::Yield))
                .await,
        );
        if closed == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(closed, "1");

    // Thread-locals live on the pool threads too: one thread, counting up.
    let app1 = WsgiApp::boot(&config("probe:app"), &info(Wait::Yield, 1)).unwrap();
    let mut last = 0;
    for _ in 0..3 {
        let t = body_text(app1.call(get("/local"), Ctx::new(Wait::Yield)).await);
        let n: u32 = t.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n > last, "{t}");
        last = n;
    }

    // A deadline: 504 on time.
    let ctx =
        Ctx::new(Wait::Yield).with_deadline(Some(Instant::now() + Duration::from_millis(200)));
    let start = Instant::now();
    assert_eq!(app.call(get("/slow?s=2"), ctx).await.status, 504);
    assert!(start.elapsed() < Duration::from_secs(1));
}

/// A burst of requests submitted on one event-loop thread, as the `async` class does for the
/// connections one wake-up accepts, runs at once on as many pool threads, also when a thread of
/// the pool is idle already: counting idle threads as they woke saw that one thread free for the
/// whole burst, which then queued behind it (a `time.sleep(0.1)` view answered in 0.2, 0.3 s...).
#[test]
fn a_burst_of_requests_runs_at_once_on_the_pool() {
    const N: usize = 8;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = WsgiApp::boot(&config("probe:app"), &info(Wait::Yield, N)).unwrap();
    rt.block_on(async {
        // One thread exists and waits for work.
        assert_eq!(
            body_text(app.call(get("/"), Ctx::new(Wait::Yield)).await),
            "probe"
        );
        let target = format!("/meet?n={N}&token=burst&timeout=5");
        // All submitted in one pass, before any pool thread gets to run.
        let mut burst: Vec<_> = (0..N)
            .map(|_| Some(Box::pin(app.call(get(&target), Ctx::new(Wait::Yield)))))
            .collect();
        let mut met = 0;
        let mut answered = 0;
        poll_fn(|cx| {
            for slot in burst.iter_mut() {
                if let Some(Poll::Ready(resp)) = slot.as_mut().map(|f| f.as_mut().poll(cx)) {
                    *slot = None;
                    answered += 1;
                    met += usize::from(body_text(resp) == "met");
                }
            }
            if answered == N {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        assert_eq!(met, N, "the burst did not run on {N} threads at once");
    });
}

fn body_text(resp: Response) -> String {
    match resp.body {
        Body::Full(b) => String::from_utf8_lossy(&b).into_owned(),
        Body::Stream(_) | Body::File(_) => panic!("expected a full body"),
    }
}

#[test]
fn a_list_subclass_with_close_is_closed() {
    // The unwrapped dispatcher: the validator would wrap the list in an iterator of its own.
    let app = boot("probe:raw", Wait::Block);
    assert_eq!(
        text(block(&app, get("/closing_list?token=cl1"))),
        (200, "list".into())
    );
    assert_eq!(text(block(&app, get("/closed?token=cl1"))).1, "1");
}

#[test]
fn response_headers_in_any_iterable_are_taken() {
    let app = boot("probe:raw", Wait::Block);
    let resp = block(&app, get("/tuple_headers"));
    let probe = resp.headers.iter().find(|(n, _)| n == "X-Probe");
    assert_eq!(probe.map(|(_, v)| v.as_ref()), Some(&b"tuple"[..]));
    assert_eq!(text(resp), (200, "tuple".into()));
}

#[test]
fn response_headers_given_as_two_item_lists_are_taken() {
    // gunicorn unpacks any pair; an app that builds its headers as lists works there.
    let app = boot("probe:raw", Wait::Block);
    let resp = block(&app, get("/list_headers"));
    let probe = resp.headers.iter().find(|(n, _)| n == "X-Probe");
    assert_eq!(probe.map(|(_, v)| v.as_ref()), Some(&b"list"[..]));
    assert_eq!(text(resp), (200, "list".into()));
    // Three items are not a (name, value) pair.
    assert_eq!(text(block(&app, get("/list_headers?n=3"))).0, 500);
}

#[test]
fn environ_without_a_peer_and_with_many_headers() {
    let app = boot("probe:app", Wait::Block);
    // No client address (a unix socket): REMOTE_ADDR empty and no REMOTE_PORT, as gunicorn sets
    // them (an app reading environ["REMOTE_ADDR"] must not get a KeyError).
    let mut req = Request::new(Method::Get, "/environ");
    req.headers.append("Host", "example.test:8080");
    for i in 0..40 {
        req.headers.append(format!("X-Many-{i}"), format!("v{i}"));
    }
    let e = json(&app, req);
    assert_eq!(e["REMOTE_ADDR"], "", "{e}");
    assert!(e.get("REMOTE_PORT").is_none(), "{e}");
    assert_eq!(e["SERVER_NAME"], "example.test");
    assert_eq!(e["SERVER_PORT"], "8080");
    assert_eq!(e["QUERY_STRING"], "");
    assert_eq!(e["REQUEST_METHOD"], "GET");
    for i in 0..40 {
        assert_eq!(e[format!("HTTP_X_MANY_{i}")], format!("v{i}"), "{e}");
    }
    // Host without a port: the scheme's default port (443 behind a proxy saying https), as gunicorn.
    let mut req = Request::new(Method::Get, "/environ");
    req.headers.append("Host", "example.test");
    assert_eq!(json(&app, req)["SERVER_PORT"], "80");
    let mut req = Request::new(Method::Get, "/environ");
    req.headers.append("Host", "example.test");
    req.scheme = Scheme::Https;
    let e = json(&app, req);
    assert_eq!(e["SERVER_PORT"], "443", "{e}");
    assert_eq!(e["wsgi.url_scheme"], "https", "{e}");
    // Then a request with a peer on the same thread: the template was not changed by the first.
    let e = json(&app, get("/environ"));
    assert_eq!(e["REMOTE_ADDR"], "10.1.2.3");
    assert!(e.get("HTTP_X_MANY_0").is_none());
}

#[test]
fn repeated_header_strings_keep_their_own_values() {
    // Request side: the same header name with the same, then other, values on one thread.
    let app = boot("probe:app", Wait::Block);
    let long = "x".repeat(300);
    for host in [
        "a.test", "a.test", "a.test", "b.test", &long, &long, "a.test",
    ] {
        let mut req = Request::new(Method::Get, "/environ");
        req.headers.append("Host", host.to_owned());
        req.local = Some("127.0.0.1:8000".parse().unwrap());
        let e = json(&app, req);
        assert_eq!(e["HTTP_HOST"], host);
    }
    // Response side: constant header strings (cached after a second sighting) and fresh ones.
    let raw = boot("probe:raw", Wait::Block);
    for v in ["one", "one", "one", "two", "three", "three", "one"] {
        let resp = block(&raw, get(&format!("/echo_header?v={v}")));
        let echo = resp.headers.iter().find(|(n, _)| n == "X-Echo");
        assert_eq!(echo.map(|(_, v)| v.as_ref()), Some(v.as_bytes()));
        let ctype = resp.headers.iter().find(|(n, _)| n == "Content-Type");
        assert_eq!(ctype.map(|(_, v)| v.as_ref()), Some(&b"text/plain"[..]));
    }
    for _ in 0..3 {
        let resp = block(&raw, get("/tuple_headers"));
        let probe = resp.headers.iter().find(|(n, _)| n == "X-Probe");
        assert_eq!(probe.map(|(_, v)| v.as_ref()), Some(&b"tuple"[..]));
    }
}

#[test]
fn a_start_response_the_app_keeps_is_never_handed_to_another_request() {
    let app = boot("probe:raw", Wait::Block);
    for _ in 0..3 {
        // Plain requests in between: each gets a working start_response and write.
        assert_eq!(
            text(block(&app, get("/write"))).1,
            "written1,written2,returned"
        );
        assert_eq!(text(block(&app, get("/keep_start_response"))).1, "kept");
        assert_eq!(text(block(&app, get("/kept_is_mine"))).1, "no");
    }
}

/// Requests submitted to the pool from many threads at once (`-k thread --request-timeout`: each
/// connection thread submits its own) each get a thread, up to the pool's size, whatever order
/// the submitting threads run in. Before, a submitter that counted its request and was then
/// overtaken by a later one (which started a thread for the larger count) started none when it
/// came back to the smaller count, so a burst of N could run on fewer than N threads: here the
/// N requests that must all be in the app at once answered "alone" (seen in a full-suite run).
#[test]
fn requests_submitted_from_many_threads_at_once_each_get_a_thread() {
    const N: usize = 12;
    const ROUNDS: usize = 15;
    let mut cfg = config("probe:app");
    // Threads retire quickly, so that every round starts from no thread at all.
    cfg.pool_thread_idle = Some(Duration::from_millis(50));
    let app = Arc::new(WsgiApp::boot(&cfg, &info(Wait::Block, 64)).unwrap());
    for round in 0..ROUNDS {
        let deadline = Instant::now() + Duration::from_secs(10);
        while threads_named("c10k-python") > 0 {
            assert!(
                Instant::now() < deadline,
                "round {round}: pool threads stay"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let start = Arc::new(std::sync::Barrier::new(N));
        let burst: Vec<_> = (0..N)
            .map(|_| {
                let (app, start) = (app.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let ctx = Ctx::new(Wait::Block)
                        .with_deadline(Some(Instant::now() + Duration::from_secs(10)));
                    let target = format!("/meet?n={N}&token=round{round}&timeout=3");
                    body_text(pollster::block_on(app.call(get(&target), ctx)))
                })
            })
            .collect();
        let met = burst
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|answer| answer == "met")
            .count();
        assert_eq!(met, N, "round {round}: {met} of {N} requests met");
    }
}
