//! The legacy `write()` callable's edges, under every worker class and, where the venv has it,
//! against gunicorn 27 (`sync` and `gthread`) running the same probe app
//! (`crates/wsgi/tests/apps/write_probe.py`): the HEAD answer of an app that writes, `write()`
//! before a `wsgi.file_wrapper`, and `write()` from a thread the app started.

#![cfg(feature = "python")]

#[macro_use]
mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::held_reads::HeldReads;
use util::python::{apps, venv};
use util::{connect, get, threads, KillGroup, Server};

/// The probe's file: 200,000 bytes and a bit, no multiple of a buffer size.
fn probe_file(dir: &std::path::Path) -> (String, Vec<u8>) {
    let path = dir.join("data.bin");
    let data: Vec<u8> = (0..200_003u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    (path.display().to_string(), data)
}

/// `c10k serve -k CLASS EXTRA write_probe:app`, serving `file`.
fn c10k(class: &str, extra: &[&str], file: &str) -> Server {
    let apps = apps();
    let env = format!("WRITE_PROBE_FILE={file}");
    let mut args = vec![
        "-k",
        class,
        "--threads",
        threads(class),
        "--pythonpath",
        &apps,
        "-e",
        &env,
    ];
    args.extend_from_slice(extra);
    args.push("write_probe:app");
    Server::start(&args)
}

/// gunicorn 27 from the test venv, on 127.0.0.1:0, serving the same probe; killed (master and
/// workers) and reaped on drop.
struct Gunicorn {
    addr: SocketAddr,
    child: Child,
}

impl Drop for Gunicorn {
    fn drop(&mut self) {
        drop(KillGroup(self.child.id() as i32));
        let _ = self.child.wait();
    }
}

impl Gunicorn {
    fn start(venv: &str, class: &str, file: &str) -> Gunicorn {
        let mut child = Command::new(format!("{venv}/bin/gunicorn"))
            .args(["-b", "127.0.0.1:0", "--no-control-socket", "-k", class])
            .args(["--threads", threads(class), "--chdir", &apps()])
            .arg("write_probe:app")
            .env("WRITE_PROBE_FILE", file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("run gunicorn from the venv");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("gunicorn exited before listening")
                .unwrap();
            if let Some(rest) = line.split("Listening at: http://").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        // Drain the log so that gunicorn never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let g = Gunicorn { addr, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(g.addr, "/").ok().map(|r| r.status) != Some(200) {
            assert!(Instant::now() < deadline, "gunicorn {class} never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        g
    }
}

/// Sends `raw` on a fresh connection and reads until the close (or 20 s): the head, lower-cased,
/// and every byte after it.
fn exchange(addr: SocketAddr, raw: &str) -> (String, Vec<u8>) {
    let mut c = connect(addr);
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(raw.as_bytes()).unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    split_head(all)
}

fn split_head(mut all: Vec<u8>) -> (String, Vec<u8>) {
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&all)))
        + 4;
    let rest = all.split_off(end);
    (String::from_utf8_lossy(&all).to_lowercase(), rest)
}

/// The value of `name` (lower-case) in a lower-cased head.
fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim() == name)
        .map(|(_, v)| v.trim())
}

/// A chunked body's content, and whatever follows its last chunk.
fn dechunk(mut b: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut out = Vec::new();
    loop {
        let i = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let n = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap(), 16).unwrap();
        b = &b[i + 2..];
        if n == 0 {
            return (out, b.to_vec());
        }
        out.extend_from_slice(&b[..n]);
        assert_eq!(&b[n..n + 2], b"\r\n", "a chunk's CRLF");
        b = &b[n + 2..];
    }
}

/// The body of an answer read to the close: de-chunked when its head says chunked (nothing may
/// follow the last chunk).
fn content(head: &str, rest: &[u8]) -> Vec<u8> {
    if field(head, "transfer-encoding") == Some("chunked") {
        let (body, after) = dechunk(rest);
        assert_eq!(after, b"\r\n", "after the last chunk: {head}");
        body
    } else {
        rest.to_vec()
    }
}

fn req(method: &str, target: &str, version: &str) -> String {
    format!("{method} {target} {version}\r\nHost: t\r\nConnection: close\r\n\r\n")
}

// ---- 1. HEAD to an app that uses write() ----

/// What a HEAD answer to a writing app frames, read on a kept-alive connection with a GET behind
/// it: the head only, the app's Content-Length when it set one and none when it did not (no
/// Transfer-Encoding either), and the GET's answer right after the head. Returns the framing
/// fields of each case, for the comparison with gunicorn.
fn head_answers(addr: SocketAddr, what: &str) -> Vec<(String, Option<String>, Option<String>)> {
    let mut seen = Vec::new();
    for target in [
        "/write",
        "/write?cl=12",
        "/write?n=3&tail=1",
        "/write?n=3&cl=36",
        "/write_file",
    ] {
        let mut c = connect(addr);
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(
            format!(
                "HEAD {target} HTTP/1.1\r\nHost: t\r\n\r\n\
                 GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let mut all = Vec::new();
        c.read_to_end(&mut all).unwrap();
        let (head, rest) = split_head(all);
        assert!(head.starts_with("http/1.1 200"), "{what} {target}: {head}");
        let cl = field(&head, "content-length").map(str::to_owned);
        let te = field(&head, "transfer-encoding").map(str::to_owned);
        assert_eq!(te, None, "{what} {target}: {head}");
        if let Some(cl) = &cl {
            // Never a length other than the bytes GET gets.
            let (ghead, grest) = exchange(addr, &req("GET", target, "HTTP/1.1"));
            assert_eq!(
                cl.parse::<usize>().unwrap(),
                content(&ghead, &grest).len(),
                "{what} {target}: HEAD's length against GET's body"
            );
        }
        // sync closes after the HEAD answer (gunicorn's too); the others answer the GET next.
        if !rest.is_empty() {
            let text = String::from_utf8_lossy(&rest);
            assert!(
                text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("\r\n\r\nwrite_probe"),
                "{what} {target}: a body after the HEAD head? {text:?}"
            );
        }
        seen.push((target.to_owned(), cl, te));
    }
    seen
}

fn head_of_a_writing_app(class: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = probe_file(dir.path());
    let s = c10k(class, extra, &file);
    let ours = head_answers(s.addr, class);
    let expect = |t: &str, cl: Option<&str>| (t.to_owned(), cl.map(str::to_owned), None);
    assert_eq!(
        ours,
        vec![
            expect("/write", None),
            expect("/write?cl=12", Some("12")),
            expect("/write?n=3&tail=1", None),
            expect("/write?n=3&cl=36", Some("36")),
            expect("/write_file", None),
        ],
        "{class}"
    );
    // gunicorn 27 frames each the same way.
    let Some(venv) = venv() else { return };
    for gclass in ["sync", "gthread"] {
        let g = Gunicorn::start(&venv, gclass, &file);
        assert_eq!(
            head_answers(g.addr, &format!("gunicorn {gclass}")),
            ours,
            "{class} against gunicorn {gclass}"
        );
    }
}

per_class!(
    a_head_answer_of_a_writing_app_is_framed_as_gunicorns,
    |class| {
        head_of_a_writing_app(class, &[]);
    }
);

#[test]
fn a_head_answer_of_a_writing_app_is_framed_as_gunicorns_under_gevent() {
    let Some(venv) = venv() else { return };
    head_of_a_writing_app("gevent", &["--venv", &venv]);
}

// ---- 2. write() and then a wsgi.file_wrapper ----

/// `write(b"prefix:")`, then a wsgi.file_wrapper over the file from an offset: the bytes are the
/// prefix and the file's rest, cut at the app's Content-Length; chunked for HTTP/1.1 without one,
/// up to the close for HTTP/1.0, and a file shorter than the app's length goes out under it and
/// the connection closes. The file is read by Rust through its descriptor, without the GIL and
/// without calling its `read()`: before, the wrapper was iterated in Python after write() (the
/// probe counted its read() calls).
fn write_then_file(class: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = probe_file(dir.path());
    let s = c10k(class, extra, &file);
    let expected = |skip: usize, cl: Option<usize>| {
        let mut all = b"prefix:".to_vec();
        all.extend_from_slice(&data[skip..]);
        if let Some(n) = cl {
            all.truncate(n);
        }
        all
    };
    let cases = [
        ("/write_file?token=a", "HTTP/1.1", 0, None, None),
        (
            "/write_file?token=b&skip=1000",
            "HTTP/1.0",
            1000,
            None,
            None,
        ),
        (
            "/write_file?token=c&skip=5&cl=70000",
            "HTTP/1.1",
            5,
            Some(70000),
            Some("70000"),
        ),
        (
            "/write_file?token=d&cl=300000",
            "HTTP/1.1",
            0,
            None,
            Some("300000"),
        ),
    ];
    for (target, version, skip, cut, cl) in cases {
        let what = format!("{class} {target} {version}");
        let (head, rest) = exchange(s.addr, &req("GET", target, version));
        assert!(head.starts_with("http/1.1 200"), "{what}: {head}");
        assert_eq!(field(&head, "content-length"), cl, "{what}: {head}");
        let chunked = version == "HTTP/1.1" && cl.is_none();
        assert_eq!(
            field(&head, "transfer-encoding") == Some("chunked"),
            chunked,
            "{what}: {head}"
        );
        let body = content(&head, &rest);
        assert!(
            body == expected(skip, cut),
            "{what}: {} bytes, not the {} expected",
            body.len(),
            expected(skip, cut).len()
        );
        let token = &target[target.find("token=").unwrap() + 6..][..1];
        assert_eq!(
            get(s.addr, &format!("/reads?token={token}"))
                .unwrap()
                .text(),
            "0",
            "{what}: the file was read in Python"
        );
    }
    assert_eq!(get(s.addr, "/").unwrap().status, 200);
    // The same bytes as gunicorn 27 where its framing holds. (With the app's Content-Length it
    // sends the file with sendfile(2) counting that length from the file's offset, past what
    // write() already sent: 70,007 bytes under `Content-Length: 70000`.)
    let Some(venv) = venv() else { return };
    for gclass in ["sync", "gthread"] {
        let g = Gunicorn::start(&venv, gclass, &file);
        for (target, version) in [
            ("/write_file", "HTTP/1.1"),
            ("/write_file?skip=1000", "HTTP/1.0"),
        ] {
            let (h1, r1) = exchange(s.addr, &req("GET", target, version));
            let (h2, r2) = exchange(g.addr, &req("GET", target, version));
            assert!(
                content(&h1, &r1) == content(&h2, &r2),
                "{class} against gunicorn {gclass}: {target} {version}"
            );
        }
    }
}

per_class!(
    write_then_a_file_wrapper_sends_the_file_without_python,
    |class| {
        write_then_file(class, &[]);
        write_then_file(class, &["--request-timeout", "30"]);
    }
);

#[test]
fn write_then_a_file_wrapper_sends_the_file_without_python_under_gevent() {
    let Some(venv) = venv() else { return };
    write_then_file("gevent", &["--venv", &venv]);
}

/// Under `async` and `gevent`, the file behind a `wsgi.file_wrapper` that follows `write()` data
/// is read off the event loop (on tokio's blocking pool): while that read waits for the disk,
/// the worker's other clients are still answered. Before, the file was read on the event loop,
/// and one slow read stalled every connection of the worker.
fn write_then_a_slow_file(class: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = probe_file(dir.path());
    let Some(held) = HeldReads::watch(std::path::Path::new(&file)) else {
        return;
    };
    let env = format!("WRITE_PROBE_FILE={file}");
    let request = req("GET", "/write_file?token=slow", "HTTP/1.0");
    let (_s, mut slow) = util::held_reads::answered_while_a_read_waits(
        &held,
        class,
        extra,
        &env,
        "write_probe:app",
        request.as_bytes(),
    );
    let mut all = Vec::new();
    slow.read_to_end(&mut all).unwrap();
    let (head, rest) = split_head(all);
    let mut want = b"prefix:".to_vec();
    want.extend_from_slice(&data);
    assert!(
        content(&head, &rest) == want,
        "{class}: {head}: {} bytes, not {}",
        rest.len(),
        want.len()
    );
}

#[test]
fn a_write_then_file_tail_is_read_off_the_event_loop() {
    write_then_a_slow_file("async", &[]);
}

#[test]
fn a_write_then_file_tail_is_read_off_the_event_loop_under_gevent() {
    let Some(venv) = venv() else { return };
    write_then_a_slow_file("gevent", &["--venv", &venv]);
}

// ---- 3. write() from a thread the app started ----

/// What the app's thread recorded for `token` (20 s at most): `ok` or the exception.
fn thread_seen(addr: SocketAddr, token: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = get(addr, &format!("/thread_seen?token={token}"))
            .unwrap()
            .text();
        if !seen.is_empty() {
            return seen;
        }
        assert!(Instant::now() < deadline, "the thread never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Data a thread of the app writes while the app waits for it is the answer's, in order, with
/// what the app wrote first and what its iterable yields after. Once the app has returned and
/// its answer is complete, that thread's write() raises an OSError (gunicorn's closed socket
/// raises EBADF): before, the data was dropped and write() returned as if it had been sent.
/// `streams`: the class hands the thread's data to the client as it is written (the app runs on
/// a pool thread or a greenlet); on the connection's own thread it is held until the app
/// returns (see README).
fn thread_writes(class: &str, extra: &[&str], streams: bool) {
    let what = format!("{class} {extra:?}");
    let s = c10k(class, extra, "/nonexistent");
    for (i, (version, first)) in [("HTTP/1.1", false), ("HTTP/1.1", true), ("HTTP/1.0", true)]
        .into_iter()
        .enumerate()
    {
        let token = format!("j{i}");
        let target = format!(
            "/thread_join?token={token}&n=3{}",
            if first { "&first=1" } else { "" }
        );
        let (head, rest) = exchange(s.addr, &req("GET", &target, version));
        assert!(head.starts_with("http/1.1 200"), "{what}: {head}");
        let want = format!(
            "{}piece0,piece1,piece2,end",
            if first { "app," } else { "" }
        );
        assert_eq!(
            String::from_utf8_lossy(&content(&head, &rest)),
            want,
            "{what} {target} {version}"
        );
        assert_eq!(thread_seen(s.addr, &token), "ok", "{what}");
    }
    if streams {
        // The thread's first piece comes while the app still waits for it: the thread goes on
        // only once this side has it.
        let dir = tempfile::tempdir().unwrap();
        let signal = dir.path().join("got-piece0");
        let mut c = connect(s.addr);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(
            req(
                "GET",
                &format!("/thread_join?token=w&signal={}", signal.display()),
                "HTTP/1.1",
            )
            .as_bytes(),
        )
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("piece0,") {
            let n = c
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("{what}: no piece0 ({e}): held back?"));
            assert!(n > 0, "{what}: closed before piece0");
            got.extend_from_slice(&buf[..n]);
        }
        std::fs::write(&signal, b"").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.read_to_end(&mut got).unwrap();
        let (head, rest) = split_head(got);
        assert_eq!(
            String::from_utf8_lossy(&content(&head, &rest)),
            "piece0,signalled,end",
            "{what}"
        );
    }
    // After the answer: an OSError in the thread, and the worker serves on.
    let (head, rest) = exchange(s.addr, &req("GET", "/thread_after?token=late", "HTTP/1.1"));
    assert_eq!(
        String::from_utf8_lossy(&content(&head, &rest)),
        "done",
        "{what}"
    );
    let seen = thread_seen(s.addr, "late");
    assert!(
        seen.starts_with("OSError: write() came after the response was complete"),
        "{what}: the late write() gave {seen:?}"
    );
    assert_eq!(get(s.addr, "/").unwrap().status, 200, "{what}");
}

per_class!(write_from_a_thread_of_the_app, |class| {
    thread_writes(class, &[], class == "async");
    // The blocking classes' views run on the pool with a deadline: their threads' data streams.
    thread_writes(class, &["--request-timeout", "30"], true);
});

#[test]
fn write_from_a_thread_of_the_app_under_gevent() {
    let Some(venv) = venv() else { return };
    // The app's threads are greenlets (monkey-patched), as under gunicorn's gevent worker.
    thread_writes("gevent", &["--venv", &venv], true);
}

/// gunicorn 27 also raises an OSError in a thread that writes after the answer (its socket is
/// closed by then: EBADF).
#[test]
fn gunicorn_raises_in_a_thread_that_writes_after_the_answer() {
    let Some(venv) = venv() else { return };
    for gclass in ["sync", "gthread"] {
        let g = Gunicorn::start(&venv, gclass, "/nonexistent");
        let (_, rest) = exchange(g.addr, &req("GET", "/thread_after?token=late", "HTTP/1.1"));
        assert_eq!(dechunk(&rest).0, b"done", "gunicorn {gclass}");
        let seen = thread_seen(g.addr, "late");
        assert!(seen.starts_with("OSError"), "gunicorn {gclass}: {seen:?}");
    }
}
