//! nginx's uwsgi protocol end to end: real nginx with `include uwsgi_params; uwsgi_pass` in front
//! of `c10k serve --bind uwsgi://... --bind uwsgi+unix:...`, under every worker class, over TCP
//! and over a unix socket; and raw packets straight to the uwsgi listener for what nginx never
//! sends (malformed, truncated, a peer not in `--uwsgi-allow-from`).

#[macro_use]
mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::{children, running, Server};

/// nginx's stock `uwsgi_params` (distributions patch theirs; this is upstream's).
const UWSGI_PARAMS: &str = "\
uwsgi_param  QUERY_STRING       $query_string;
uwsgi_param  REQUEST_METHOD     $request_method;
uwsgi_param  CONTENT_TYPE       $content_type;
uwsgi_param  CONTENT_LENGTH     $content_length;
uwsgi_param  REQUEST_URI        $request_uri;
uwsgi_param  PATH_INFO          $document_uri;
uwsgi_param  DOCUMENT_ROOT      $document_root;
uwsgi_param  SERVER_PROTOCOL    $server_protocol;
uwsgi_param  REQUEST_SCHEME     $scheme;
uwsgi_param  HTTPS              $https if_not_empty;
uwsgi_param  REMOTE_ADDR        $remote_addr;
uwsgi_param  REMOTE_PORT        $remote_port;
uwsgi_param  SERVER_PORT        $server_port;
uwsgi_param  SERVER_NAME        $server_name;
";

fn free_port() -> u16 {
    util::ports::free_addr().port()
}

/// The port of the `uwsgi://` listener, from the server's log.
fn uwsgi_addr(s: &Server) -> SocketAddr {
    let log = s.log();
    let rest = log
        .split("Listening at: uwsgi://")
        .nth(1)
        .unwrap_or_else(|| panic!("no uwsgi listener in the log:\n{log}"));
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// nginx in a temp dir: one server block passing to c10k over TCP, one over the unix socket.
struct Nginx {
    child: Child,
    tcp: SocketAddr,
    unix: SocketAddr,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// `location` adds directives to both `location /` blocks (after `include uwsgi_params;`).
    fn start(upstream_tcp: SocketAddr, upstream_unix: &Path, location: &str) -> Option<Nginx> {
        let Some(nginx) = c10k_lab::servers::nginx_binary() else {
            // .ci/run installs nginx; a developer machine without it skips, saying so.
            eprintln!("nginx is not installed: skipping (apt-get install nginx-light)");
            return None;
        };
        // The ports are free when picked, but another test's server may take one before nginx
        // binds it: nginx then exits, and the port answers for that other server. Try anew.
        for _ in 0..5 {
            if let Some(n) = Nginx::try_start(&nginx, upstream_tcp, upstream_unix, location) {
                return Some(n);
            }
        }
        panic!("nginx did not start on free ports in 5 tries");
    }

    /// One start on two freshly picked ports; `None` when nginx exited (a port was taken).
    fn try_start(
        nginx: &Path,
        upstream_tcp: SocketAddr,
        upstream_unix: &Path,
        location: &str,
    ) -> Option<Nginx> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::write(dir.path().join("uwsgi_params"), UWSGI_PARAMS).unwrap();
        // nginx's workers drop to `nobody` when started as root, and could not connect to a unix
        // socket in a private temp dir; run them as the user we are.
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;"
        } else {
            ""
        };
        let (tcp, unix) = (free_port(), free_port());
        let conf = format!(
            r#"{user}
worker_processes 1;
daemon off;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  client_max_body_size 20m;
  server {{
    listen 127.0.0.1:{tcp};
    location / {{ include uwsgi_params; {location} uwsgi_pass {upstream_tcp}; }}
  }}
  server {{
    listen 127.0.0.1:{unix};
    location / {{ include uwsgi_params; {location} uwsgi_pass unix:{sock}; }}
  }}
}}
"#,
            sock = upstream_unix.display()
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(nginx)
            // Its own process group, so that dropping it can stop the workers too.
            .process_group(0)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut n = Nginx {
            child,
            tcp: SocketAddr::from(([127, 0, 0, 1], tcp)),
            unix: SocketAddr::from(([127, 0, 0, 1], unix)),
            dir,
        };
        // nginx writes its pid file once it holds its ports; a port it could not bind makes it
        // exit before.
        let pid_file = n.dir.path().join("nginx.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pid_file.exists()
            || TcpStream::connect(n.tcp).is_err()
            || TcpStream::connect(n.unix).is_err()
        {
            if n.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not start:\n{}",
                n.errors()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(n)
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    /// SIGTERM (nginx's fast shutdown: the master stops and reaps its workers), bounded; then
    /// SIGKILL to the whole group. A SIGKILL to the master alone leaves its workers running,
    /// adopted by init.
    fn drop(&mut self) {
        let group = -(self.child.id() as i32);
        // SAFETY: kill has no memory-safety preconditions; the group is nginx's own.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; whatever of the group is left (nothing, normally).
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

#[test]
fn stopping_nginx_stops_its_workers() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let Some(nginx) = Nginx::start(upstream, &dir.path().join("none.sock"), "") else {
        return;
    };
    let master = nginx.child.id();
    // nginx listens (which is what `start` waits for) before its master has forked the workers.
    let deadline = Instant::now() + Duration::from_secs(10);
    let workers = loop {
        let workers = children(master);
        if !workers.is_empty() {
            break workers;
        }
        assert!(Instant::now() < deadline, "nginx {master} has no worker");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(nginx);
    let deadline = Instant::now() + Duration::from_secs(10);
    while workers.iter().any(|&w| running(w)) {
        assert!(
            Instant::now() < deadline,
            "nginx workers {workers:?} outlived their master"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A response read to the end of the connection (HTTP/1.0 requests: nginx closes after it).
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
    /// The client side of the connection, to compare with what the application saw.
    local: SocketAddr,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends `method target` as HTTP/1.0 with `headers` and `body`, reads the answer to EOF.
fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {target} HTTP/1.0\r\nHost: test.local\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&all)));
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        head,
        body: all[end + 4..].to_vec(),
        local: s.local_addr().unwrap(),
    }
}

/// Starts c10k with an HTTP, a uwsgi TCP and a uwsgi unix listener, and nginx in front.
fn start(class: &str, extra: &[&str]) -> Option<(Server, Nginx, tempfile::TempDir)> {
    start_with(class, extra, "")
}

/// [`start`], with `location` directives for nginx (see [`Nginx::start`]).
fn start_with(
    class: &str,
    extra: &[&str],
    location: &str,
) -> Option<(Server, Nginx, tempfile::TempDir)> {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock: PathBuf = sock_dir.path().join("c10k.sock");
    let unix_bind = format!("uwsgi+unix:{}", sock.display());
    let mut args = vec![
        "--worker-class",
        class,
        "--threads",
        util::threads(class),
        "--bind",
        "uwsgi://127.0.0.1:0",
        "--bind",
        &unix_bind,
    ];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    let nginx = Nginx::start(uwsgi_addr(&server), &sock, location)?;
    Some((server, nginx, sock_dir))
}

per_class!(behind_nginx, |class| {
    let Some((server, nginx, _sock)) = start(class, &["--request-timeout", "0.5"]) else {
        return;
    };
    for (front, transport) in [(nginx.tcp, "tcp"), (nginx.unix, "unix")] {
        // GET with a query and large headers (3 × 6 KiB: nginx's 8 KiB line buffers hold each).
        let big = "b".repeat(6 * 1024);
        let a = request(
            front,
            "GET",
            "/whoami?x=1&y=%2F",
            &[("X-One", &big), ("X-Two", &big), ("X-Three", &big)],
            b"",
        );
        assert_eq!(a.status, 200, "{transport}: {a:?}\n{}", nginx.errors());
        let w = a.json();
        // Failure messages show the JSON without the 18 KiB of header values.
        let short = {
            let mut v = w.clone();
            v["headers"] = serde_json::json!("…");
            v
        };
        assert_eq!(w["method"], "GET", "{short}");
        assert_eq!(w["target"], "/whoami?x=1&y=%2F", "{short}");
        assert_eq!(w["path"], "/whoami", "{short}");
        assert_eq!(w["query"], "x=1&y=%2F", "{short}");
        assert_eq!(w["transport"], transport, "{short}");
        assert_eq!(w["version"], "HTTP/1.0", "{short}");
        // REMOTE_ADDR:REMOTE_PORT is our own client socket, not nginx's upstream connection.
        assert_eq!(w["peer"], a.local.to_string(), "{short}");
        // nginx's SERVER_PORT; SERVER_NAME is no address, so the IP is the socket's, and a unix
        // socket has none.
        let local = match transport {
            "tcp" => serde_json::json!(format!("127.0.0.1:{}", front.port())),
            _ => serde_json::Value::Null,
        };
        assert_eq!(w["local"], local, "{short}");
        let headers = w["headers"].as_array().unwrap();
        let get = |n: &str| {
            headers
                .iter()
                .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(n))
                .map(|h| h[1].as_str().unwrap().to_owned())
        };
        assert_eq!(get("X-One").map(|v| v.len()), Some(6 * 1024), "{short}");
        assert_eq!(get("X-Three").map(|v| v.len()), Some(6 * 1024), "{short}");
        assert_eq!(get("Host").as_deref(), Some("test.local"), "{short}");
        assert_eq!(get("Content-Type"), None, "no body, no type: {short}");

        // POST with a body (nginx buffers it and sends CONTENT_LENGTH).
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let a = request(
            front,
            "POST",
            "/echo",
            &[("Content-Type", "application/x-test")],
            &body,
        );
        assert_eq!(a.status, 200, "{transport}: {}", a.head);
        assert_eq!(a.header("content-type"), Some("application/x-test"));
        assert!(a.body == body, "{transport}: echoed body differs");

        // A streamed response of unknown length: close-delimited from c10k, whole at the client.
        let a = request(front, "GET", "/stream?n=2000", &[], b"");
        assert_eq!(a.status, 200, "{transport}: {}", a.head);
        let text = String::from_utf8(a.body.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2000, "{transport}");
        assert_eq!(lines[1999], "line 2000");

        // HEAD: the length, no body.
        let a = request(front, "HEAD", "/", &[], b"");
        assert_eq!(a.status, 200);
        assert_eq!(a.header("content-length"), Some("6"), "{}", a.head);
        assert!(a.body.is_empty());

        // 4xx and 5xx pass through with c10k's reasons.
        let a = request(front, "GET", "/nope", &[], b"");
        assert_eq!(a.status, 404);
        assert!(String::from_utf8_lossy(&a.body).contains("no route for /nope"));
        let a = request(front, "DELETE", "/", &[], b"");
        assert_eq!(a.status, 405);
        assert_eq!(a.header("allow"), Some("GET, HEAD"));
        let a = request(front, "GET", "/?delay=5", &[], b"");
        assert_eq!(a.status, 504);
        assert!(
            String::from_utf8_lossy(&a.body).contains("--request-timeout"),
            "c10k's 504, not nginx's: {a:?}"
        );
    }
    assert!(
        !server.log().contains("closing uwsgi connection"),
        "nginx's packets are all well-formed:\n{}",
        server.log()
    );
});

// A TLS load balancer in front of nginx says `X-Forwarded-Proto: https`; nginx passes it on as
// HTTP_X_FORWARDED_PROTO. uWSGI makes that the scheme, so an app moved from uWSGI must see https
// too (or Django's SECURE_SSL_REDIRECT redirects forever, and url_for(_external=True) says
// http). It counts when nginx is in --forwarded-allow-ips (a unix socket always), as over HTTP.
per_class!(forwarded_proto_behind_uwsgi_pass_sets_the_scheme, |class| {
    let Some((_server, nginx, _sock)) = start(class, &[]) else {
        return;
    };
    let scheme = |front, headers: &[(&str, &str)]| {
        let a = request(front, "GET", "/whoami", headers, b"");
        assert_eq!(a.status, 200, "{headers:?}: {a:?}\n{}", nginx.errors());
        a.json()["scheme"].as_str().unwrap().to_owned()
    };
    for (front, transport) in [(nginx.tcp, "tcp"), (nginx.unix, "unix")] {
        assert_eq!(scheme(front, &[]), "http", "{transport}");
        // Before: http.
        let https = [("X-Forwarded-Proto", "https")];
        assert_eq!(scheme(front, &https), "https", "{transport}");
        assert_eq!(
            scheme(front, &[("X-Forwarded-Ssl", "on")]),
            "https",
            "{transport}"
        );
        assert_eq!(
            scheme(front, &[("X-Forwarded-Proto", "http")]),
            "http",
            "{transport}"
        );
        // Two that disagree: 400, as over HTTP (gunicorn's InvalidSchemeHeaders).
        let both = [("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "off")];
        let a = request(front, "GET", "/whoami", &both, b"");
        assert_eq!(a.status, 400, "{transport}: {a:?}");
        assert!(
            String::from_utf8_lossy(&a.body).contains("contradictory scheme headers"),
            "{transport}: {a:?}"
        );
    }
    // nginx not in --forwarded-allow-ips: its TCP connections' headers do not count.
    let Some((_server, nginx, _sock)) = start(class, &["--forwarded-allow-ips", "192.0.2.1"])
    else {
        return;
    };
    let https = [("X-Forwarded-Proto", "https")];
    assert_eq!(scheme(nginx.tcp, &https), "http");
    assert_eq!(
        scheme(nginx.unix, &https),
        "https",
        "a unix socket is trusted"
    );
});

/// A uwsgi packet (modifier1 0).
fn packet(vars: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    for (k, v) in vars {
        block.extend_from_slice(&(k.len() as u16).to_le_bytes());
        block.extend_from_slice(k.as_bytes());
        block.extend_from_slice(&(v.len() as u16).to_le_bytes());
        block.extend_from_slice(v.as_bytes());
    }
    let mut p = vec![0u8];
    p.extend_from_slice(&(block.len() as u16).to_le_bytes());
    p.push(0);
    p.extend_from_slice(&block);
    p.extend_from_slice(body);
    p
}

/// Sends `bytes` to the uwsgi listener (then half-closes) and returns all it answered.
fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn wait_log(server: &Server, needle: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.log().matches(needle).count() < times {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged {times} times:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

per_class!(bad_packets_are_closed_logged_and_counted, |class| {
    let server = Server::start(&[
        "--worker-class",
        class,
        "--threads",
        util::threads(class),
        "--bind",
        "uwsgi://127.0.0.1:0",
    ]);
    let addr = uwsgi_addr(&server);
    // A well-formed packet is answered, with uWSGI's framing (no chunking, closed after).
    let ok = packet(
        &[
            ("REQUEST_METHOD", "GET"),
            ("PATH_INFO", "/stream"),
            ("QUERY_STRING", "n=2"),
        ],
        b"",
    );
    let answer = String::from_utf8(raw(addr, &ok)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("transfer-encoding"),
        "{answer}"
    );
    assert!(answer.ends_with("\r\n\r\nline 1\nline 2\n"), "{answer}");

    // HTTP spoken to a uwsgi port, a bad modifier1, a truncated body: closed unanswered.
    assert!(raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_empty());
    let mut bad = ok.clone();
    bad[0] = 7;
    assert!(raw(addr, &bad).is_empty());
    let truncated = packet(
        &[
            ("REQUEST_METHOD", "POST"),
            ("PATH_INFO", "/echo"),
            ("CONTENT_LENGTH", "10"),
        ],
        b"01234",
    );
    assert!(raw(addr, &truncated).is_empty());
    // A connect with nothing sent (a health check) is not an error.
    drop(TcpStream::connect(addr).unwrap());
    wait_log(&server, "closing uwsgi connection unanswered", 3);
    assert!(
        server.log().contains("5 body bytes missing"),
        "{}",
        server.log()
    );

    // A body over --limit-request-body is answered 413 (nginx passes that on).
    let big = packet(
        &[
            ("REQUEST_METHOD", "POST"),
            ("PATH_INFO", "/echo"),
            ("CONTENT_LENGTH", "999999999"),
        ],
        b"",
    );
    let answer = String::from_utf8(raw(addr, &big)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");

    // Counted for /metrics.
    let metrics = admin_metrics(&server);
    assert!(metrics.contains("c10k_uwsgi_refused_total 3"), "{metrics}");
});

per_class!(
    disallowed_peer_is_closed_and_unix_is_always_allowed,
    |class| {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("c10k.sock");
        let unix_bind = format!("uwsgi+unix:{}", sock.display());
        let server = Server::start(&[
            "--worker-class",
            class,
            "--threads",
            util::threads(class),
            "--bind",
            "uwsgi://127.0.0.1:0",
            "--bind",
            &unix_bind,
            "--uwsgi-allow-from",
            "192.0.2.0/24",
        ]);
        let ok = packet(&[("REQUEST_METHOD", "GET"), ("PATH_INFO", "/")], b"");
        assert!(
            raw(uwsgi_addr(&server), &ok).is_empty(),
            "127.0.0.1 is not allowed"
        );
        wait_log(&server, "peer not in --uwsgi-allow-from", 1);
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&ok).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("hello\n"),
            "{out}"
        );
        // The HTTP listener is not subject to the uwsgi allow list.
        assert_eq!(util::get(server.addr, "/").unwrap().status, 200);
    }
);

fn admin_metrics(server: &Server) -> String {
    let log = server.log();
    let rest = log
        .split("Admin listening at: http://")
        .nth(1)
        .unwrap_or_else(|| panic!("no admin listener:\n{log}"));
    let addr: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
    // Workers publish their counters to the scoreboard as they go; the master reads them.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = util::get(addr, "/metrics").unwrap().text();
        if text.contains("c10k_uwsgi_refused_total 3") || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// A hosted WSGI app behind nginx sees every var nginx sends, as under uWSGI: a custom
// `uwsgi_param`, `SCRIPT_NAME` (and `PATH_INFO` without it under `uwsgi_modifier1 30`),
// `DOCUMENT_ROOT`; and a front cannot replace the server's `wsgi.*` objects. `HTTP_HOST` set
// twice (Debian's `uwsgi_params` sets it, and so did many sites' own lines) is the last one, as
// under uWSGI; before, the app saw "test.local, test.local" (Django: DisallowedHost).
#[cfg(feature = "python")]
per_class!(wsgi_environ_has_the_vars_nginx_sends, |class| {
    let apps = util::python::apps();
    let location = "uwsgi_param FOO 'bar baz'; uwsgi_param SCRIPT_NAME /mnt; \
                    uwsgi_param wsgi.input spoofed; uwsgi_modifier1 30; \
                    uwsgi_param HTTP_HOST $host; uwsgi_param HTTP_HOST $host;";
    let Some((_server, nginx, _sock)) =
        start_with(class, &["--pythonpath", &apps, "probe:app"], location)
    else {
        return;
    };
    for (front, transport) in [(nginx.tcp, "tcp"), (nginx.unix, "unix")] {
        let a = request(
            front,
            "GET",
            "/mnt/environ?q=1",
            &[("X-Custom", "yes")],
            b"",
        );
        assert_eq!(a.status, 200, "{transport}: {a:?}\n{}", nginx.errors());
        let e = a.json();
        assert_eq!(e["FOO"], "bar baz", "{transport}: {e}");
        assert_eq!(e["SCRIPT_NAME"], "/mnt", "{transport}: {e}");
        assert_eq!(e["PATH_INFO"], "/environ", "{transport}: {e}");
        assert_eq!(e["QUERY_STRING"], "q=1", "{transport}: {e}");
        assert_eq!(e["REQUEST_URI"], "/mnt/environ?q=1", "{transport}: {e}");
        assert_eq!(e["REQUEST_SCHEME"], "http", "{transport}: {e}");
        assert!(e["DOCUMENT_ROOT"].is_string(), "{transport}: {e}");
        assert_eq!(
            e["REMOTE_ADDR"],
            a.local.ip().to_string(),
            "{transport}: {e}"
        );
        assert_eq!(e["HTTP_X_CUSTOM"], "yes", "{transport}: {e}");
        assert_eq!(e["HTTP_HOST"], "test.local", "{transport}: {e}");
        assert_ne!(e["__input__"], "str", "{transport}: {e}");
        assert_eq!(e["wsgi.url_scheme"], "http", "{transport}: {e}");
    }
});

// --root-path over uwsgi: without a SCRIPT_NAME var (stock `uwsgi_params` sends none) c10k
// splits PATH_INFO itself, and a path outside the root is a 500, as over HTTP (gunicorn's
// ConfigurationProblem; uWSGI's "no python application found" for a path under no `--mount`).
// With `uwsgi_param SCRIPT_NAME`, nginx made the split: its vars stand, whatever the path.
#[cfg(feature = "python")]
per_class!(root_path_over_uwsgi, |class| {
    let apps = util::python::apps();
    let server = Server::start(&[
        "--worker-class",
        class,
        "--threads",
        util::threads(class),
        "--bind",
        "uwsgi://127.0.0.1:0",
        "--root-path",
        "/app",
        "--pythonpath",
        &apps,
        "probe:app",
    ]);
    let addr = uwsgi_addr(&server);
    let answer = |vars: &[(&str, &str)]| {
        let mut all = vec![("REQUEST_METHOD", "GET")];
        all.extend_from_slice(vars);
        let out = String::from_utf8(raw(addr, &packet(&all, b""))).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        (head.to_owned(), body.to_owned())
    };
    // Before: 404 "not found: /other" (the app was called).
    let (head, body) = answer(&[("PATH_INFO", "/other"), ("REQUEST_URI", "/other")]);
    assert!(head.starts_with("HTTP/1.1 500 "), "{head}");
    assert_eq!(
        body,
        "request path is not under this server's --root-path\n"
    );
    server.wait_log(
        "request path is not under --root-path",
        Duration::from_secs(5),
    );
    let (head, body) = answer(&[("PATH_INFO", "/app/environ")]);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&e["SCRIPT_NAME"], &e["PATH_INFO"]),
        (&"/app".into(), &"/environ".into())
    );
    // The front's split (modifier1 0, PATH_INFO already without SCRIPT_NAME) is served as sent.
    let (head, body) = answer(&[("SCRIPT_NAME", "/mnt"), ("PATH_INFO", "/environ")]);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&e["SCRIPT_NAME"], &e["PATH_INFO"]),
        (&"/mnt".into(), &"/environ".into())
    );
});

/// A process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM for {pid}:\n{status}"))
}

// A large body behind `uwsgi_pass` is spooled past --body-buffer-size as it arrives, as over
// HTTP. Before, the whole body waited in the worker's read buffer until it was all in: this
// 48 MiB upload raised the workers' peak RSS by about as much (the peak after start-up is
// 12-24 MiB), and four 50 MB Django uploads at once took a worker from 37 to 240 MB (uWSGI's
// stayed at 41 MB).
per_class!(a_large_body_is_spooled_not_held_in_memory, |class| {
    let Some((server, nginx, _sock)) = start_with(
        class,
        &["--limit-request-body", "0"],
        "client_max_body_size 64m;",
    ) else {
        return;
    };
    // A first request, so the worker's runtime and buffers are at their working size.
    let a = request(nginx.tcp, "POST", "/echo", &[], b"warm");
    assert_eq!((a.status, &a.body[..]), (200, &b"warm"[..]), "{a:?}");
    let workers = children(server.child.id());
    assert!(!workers.is_empty(), "no worker under {}", server.child.id());
    let peak = || workers.iter().map(|&p| peak_rss_kib(p)).sum::<u64>();
    let before = peak();
    let body = vec![b'u'; 48 * 1024 * 1024];
    let a = request(nginx.tcp, "POST", "/whoami", &[], &body);
    assert_eq!(a.status, 200, "{a:?}\n{}", nginx.errors());
    let grown = peak() - before;
    assert!(
        grown < 16 * 1024,
        "{class}: a 48 MiB body raised the workers' peak RSS by {grown} KiB"
    );
});

// A client's chunked body behind `uwsgi_pass`: nginx de-chunks it and sends CONTENT_LENGTH, and
// passes the client's `Transfer-Encoding: chunked` on as HTTP_TRANSFER_ENCODING. Flask reads the
// body either way (c10k sets wsgi.input_terminated; uWSGI does not, and Flask behind it reads
// nothing), but with that var Werkzeug's content_length was None, and Bottle parsed chunk sizes
// out of the data (a 400). It is dropped: the app sees what it sees behind `proxy_pass`.
#[cfg(feature = "python")]
#[test]
fn a_chunked_body_behind_uwsgi_pass_has_its_length_and_no_chunked_header() {
    let Some(venv) = util::python::venv() else {
        return;
    };
    let apps = util::python::apps();
    let Some((_server, nginx, _sock)) = start_with(
        "gthread",
        &["--venv", &venv, "--chdir", &apps, "flask_app:app"],
        "",
    ) else {
        return;
    };
    let json = r#"{"a": [1, 2, 3], "b": "chunked"}"#;
    for (front, transport) in [(nginx.tcp, "tcp"), (nginx.unix, "unix")] {
        let mut s = TcpStream::connect_timeout(&front, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let (one, two) = json.split_at(10);
        write!(
            s,
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             {:x}\r\n{one}\r\n{:x}\r\n{two}\r\n0\r\n\r\n",
            one.len(),
            two.len()
        )
        .unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).unwrap();
        let (head, body) = all.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{transport}: {all}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v["got"],
            serde_json::json!({"a": [1, 2, 3], "b": "chunked"}),
            "{transport}: {v}"
        );
        // Before: null (Werkzeug: HTTP_TRANSFER_ENCODING chunked → no length).
        assert_eq!(v["length"], json.len(), "{transport}: {v}");
    }
}

/// The stock Django site's admin login (cookies, CSRF, redirects) and a browser's uploads to Flask
/// (3 MiB multipart, chunked, `Expect: 100-continue`: nginx answers the 100 and buffers the body)
/// through nginx's `uwsgi_pass`, the deployment the seed's users run; see
/// `wsgi::django_admin_login_works_under_every_class` for the checks.
#[cfg(feature = "python")]
#[test]
fn django_admin_and_flask_uploads_work_behind_uwsgi_pass() {
    let Some(venv) = util::python::venv() else {
        return;
    };
    let apps = util::python::apps();
    let db = tempfile::tempdir().unwrap();
    let sqlite = format!(
        "DJANGO_SQLITE={}",
        db.path().join("admin.sqlite3").display()
    );
    let django = format!("{apps}/djangoproj");
    let sites = [
        (
            "django-admin",
            vec![
                "--venv",
                &venv,
                "--chdir",
                &django,
                "--env",
                &sqlite,
                "--env",
                "DJANGO_MIGRATE=1",
                "--env",
                "DJANGO_SETTINGS_MODULE=djangoproj.settings_admin",
                "--env",
                "DJANGO_ADMIN_PASSWORD=pw",
                "djangoproj.wsgi:application",
            ],
        ),
        (
            "flask-upload",
            vec!["--venv", &venv, "--chdir", &apps, "flask_app:app"],
        ),
    ];
    for (kind, args) in sites {
        let Some((server, nginx, _sock)) = start_with("async", &args, "") else {
            return;
        };
        for (front, transport) in [(nginx.tcp, "tcp"), (nginx.unix, "unix")] {
            let what = format!("{kind} over uwsgi {transport}");
            util::python::browser(&venv, kind, front, &server, &what);
        }
    }
}

// A streamed answer of unknown length goes to nginx close-delimited (as uWSGI sends it): when
// the app fails mid-stream, a plain close (FIN) made the cut body look whole, and nginx ended the
// client's chunked answer with its last chunk, so the client took a truncated export for a
// complete one. c10k now closes such a connection with a RST, which nginx reports as an upstream
// error, dropping the client's connection without the last chunk. Over TCP only: a unix socket
// has no RST, so nginx behind one still sees a clean end (as with uWSGI).
per_class!(
    a_stream_that_fails_midway_is_cut_behind_uwsgi_pass,
    |class| {
        let Some(venv) = util::python::venv() else {
            return;
        };
        let apps = util::python::apps();
        let Some((_server, nginx, _sock)) =
            start_with(class, &["--venv", &venv, "--chdir", &apps, "probe:app"], "")
        else {
            return;
        };
        let mut s = TcpStream::connect_timeout(&nginx.tcp, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // The probe yields `first`, then calls start_response with exc_info after the head went
        // out, which re-raises: the stream fails.
        s.write_all(b"GET /exc_info_late HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut all = Vec::new();
        // nginx may end the cut answer with a reset of its own.
        let _ = s.read_to_end(&mut all);
        let text = String::from_utf8_lossy(&all);
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "{text}\n{}",
            nginx.errors()
        );
        assert!(
            text.contains("Transfer-Encoding: chunked"),
            "{text}\n{}",
            nginx.errors()
        );
        // Before: the answer ended with nginx's last chunk (`0\r\n\r\n`), complete to the client.
        assert!(
            !text.ends_with("0\r\n\r\n"),
            "a failed stream must not look complete: {text:?}\n{}",
            nginx.errors()
        );
    }
);

// nginx's auth_request idiom behind `uwsgi_pass`: `uwsgi_pass_request_body off; uwsgi_param
// CONTENT_LENGTH "";` after `include uwsgi_params;` sends the client's CONTENT_LENGTH, then an
// empty one, and no body. The last var wins, as in uWSGI. Before, the two values were refused as
// ambiguous and the connection closed unanswered: every request with a body was nginx's 502
// (and a 500 from the auth_request location), where uWSGI served it.
#[test]
fn a_location_that_passes_no_body_empties_content_length() {
    let location = r#"uwsgi_pass_request_body off; uwsgi_param CONTENT_LENGTH "";"#;
    let Some((_server, nginx, _sock)) = start_with("sync", &[], location) else {
        return;
    };
    for (front, transport) in [(nginx.tcp, "tcp"), (nginx.unix, "unix")] {
        let a = request(front, "POST", "/echo", &[], b"hello");
        assert_eq!(
            (a.status, &a.body[..]),
            (200, &b""[..]),
            "{transport}: {a:?}\n{}",
            nginx.errors()
        );
    }
}
