//! `c10k status` and the admin listener end to end: a real server on 127.0.0.1:0 with its admin
//! listener on another free loopback port, read through the CLI and over HTTP.

#[macro_use]
mod util;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use util::admin::{admin_addr, admin_json, c10k, wait_until};
use util::{connect, get, threads, Reader, Server};

#[test]
fn processlist_shows_a_request_on_each_worker() {
    // sync: one request per worker at a time, so two concurrent requests land on both workers.
    let s = Server::start(&["-k", "sync", "-w", "2", "--admin", "127.0.0.1:0"]);
    let admin = admin_addr(&s);
    let admin_s = admin.to_string();
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let addr = s.addr;
            std::thread::spawn(move || get(addr, "/?delay=1").map(|r| r.status).unwrap_or(0))
        })
        .collect();
    let delayed = |v: &Value| -> Vec<Value> {
        v["processlist"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["path"] == "/?delay=1")
            .cloned()
            .collect()
    };
    let mut first = Vec::new();
    wait_until(Duration::from_secs(5), "two requests in flight", || {
        // The flag before the subcommand.
        let out = c10k(&["status", "--admin", &admin_s, "--json", "processlist"]);
        first = delayed(&serde_json::from_str(&out).unwrap());
        first.len() == 2
    });
    let workers: std::collections::HashSet<_> = first.iter().map(|p| p["pid"].clone()).collect();
    assert_eq!(workers.len(), 2, "one request on each worker: {first:?}");
    for p in &first {
        assert_eq!(p["state"], "handling");
        assert_eq!(p["method"], "GET");
        assert!(p["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    std::thread::sleep(Duration::from_millis(300));
    // The flag after the subcommand, and the table.
    let table = c10k(&["status", "processlist", "--admin", &admin_s]);
    assert!(table.contains("| Id "), "{table}");
    assert!(table.contains("/?delay=1"), "{table}");
    assert!(table.contains("handling"), "{table}");
    let later = delayed(&admin_json(admin, "/processlist"));
    assert_eq!(later.len(), 2, "{later:?}");
    for p in &later {
        let before = first
            .iter()
            .find(|f| f["id"] == p["id"])
            .expect("same entry");
        assert!(
            p["time"].as_f64().unwrap() > before["time"].as_f64().unwrap() + 0.2,
            "elapsed grows: {before} then {p}"
        );
    }
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    wait_until(Duration::from_secs(3), "finished requests to leave", || {
        delayed(&admin_json(admin, "/processlist")).is_empty()
    });
}

/// Parses Prometheus text with a real parser; returns (name + sorted labels) → value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let mut out = HashMap::new();
    for s in scrape.samples {
        let mut labels: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => {
                for b in &buckets {
                    out.insert(format!("{}{{le={}}}", s.metric, b.less_than), b.count);
                }
                buckets.last().map(|b| b.count).unwrap_or(0.0)
            }
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(key, value);
    }
    out
}

#[test]
fn counters_count_every_request_and_metrics_agree() {
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    let access_s = access.to_str().unwrap().to_owned();
    let s = Server::start(&[
        "-w",
        "2",
        "--admin",
        "127.0.0.1:0",
        "--access-log",
        &access_s,
    ]);
    let admin = admin_addr(&s);
    let before = admin_json(admin, "/status")["counters"].clone();
    let mut c = Reader::new(connect(s.addr));
    for _ in 0..1000 {
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\nUser-Agent: status-test\r\n\r\n")
            .unwrap();
        assert_eq!(c.response().unwrap().status, 200);
    }
    drop(c);
    let status = admin_json(admin, "/status");
    let after = &status["counters"];
    let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert_eq!(delta("requests"), 1000, "{after}");
    assert_eq!(delta("requests_2xx"), 1000, "{after}");
    assert_eq!(delta("connections_accepted"), 1);
    assert!(delta("bytes_in") >= 1000 * 40 && delta("bytes_out") >= 1000 * 100);
    // The write path's figures come from every worker through the scoreboard.
    assert_eq!(status["pool"]["workers"], 2, "{status}");
    assert!(status["journal"]["unflushed"].is_u64(), "{status}");
    assert_eq!(status["workers"].as_array().unwrap().len(), 2);
    let per_worker: u64 = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(per_worker, after["requests"].as_u64().unwrap());

    let r = get(admin, "/metrics").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let m = parse_metrics(&r.text());
    let n = |k: &str| after[k].as_u64().unwrap() as f64;
    assert_eq!(m["c10k_requests_total{code=2xx}"], n("requests_2xx"));
    assert_eq!(m["c10k_requests_total{code=4xx}"], n("requests_4xx"));
    assert_eq!(
        m["c10k_connections_accepted_total"],
        n("connections_accepted")
    );
    assert_eq!(m["c10k_received_bytes_total"], n("bytes_in"));
    assert_eq!(m["c10k_workers"], 2.0);
    let answered: u64 = (1..=5)
        .map(|c| after[format!("requests_{c}xx")].as_u64().unwrap())
        .sum();
    assert_eq!(m["c10k_request_duration_seconds_count"], answered as f64);
    assert_eq!(
        m["c10k_request_duration_seconds"], answered as f64,
        "+Inf bucket"
    );
    assert!(m["c10k_request_duration_seconds{le=0.001}"] <= answered as f64);
    let listener = format!("c10k_listen_queue_max{{listener={}}}", s.addr);
    assert_eq!(m[&listener], 2048.0, "{m:?}");

    // A message written shows in the journal figures (published about twice a second).
    let mut w = Reader::new(connect(s.addr));
    let body = r#"{"room":"status","user":"u","text":"hello"}"#;
    w.send(
        format!(
            "POST /messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(w.response().unwrap().status, 201);
    wait_until(Duration::from_secs(5), "the journal figures", || {
        admin_json(admin, "/status")["journal"]["appended"].as_u64() >= Some(1)
    });
    let m = parse_metrics(&get(admin, "/metrics").unwrap().text());
    assert!(m["c10k_journal_appended_total"] >= 1.0);
    assert!(m.contains_key("c10k_pool_connections"));

    // SHOW STATUS LIKE '%connect%'.
    let admin_s = admin.to_string();
    let out = c10k(&[
        "status",
        "counters",
        "--like",
        "%CONNECT%",
        "--admin",
        &admin_s,
    ]);
    assert!(out.contains("| connections_accepted "), "{out}");
    assert!(out.contains("| Variable_name"), "{out}");
    assert!(!out.contains("requests_2xx"), "{out}");
    let out = c10k(&[
        "status",
        "--json",
        "counters",
        "--like",
        "requests\\_2%",
        "--admin",
        &admin_s,
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    assert!(v["requests_2xx"].as_u64().unwrap() >= 1000);

    // The access log: combined format plus µs, one line per request.
    let log = std::fs::read_to_string(&access).unwrap();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("status-test"))
        .expect("logged");
    assert!(
        line.starts_with("127.0.0.1 - - [")
            && line.contains("] \"GET / HTTP/1.1\" 200 6 \"-\" \"status-test\" "),
        "{line}"
    );
    assert!(log.lines().filter(|l| l.contains("status-test")).count() == 1000);

    // watch, bounded.
    let out = c10k(&[
        "status",
        "watch",
        "--count",
        "2",
        "--interval",
        "0.1",
        "--admin",
        &admin_s,
    ]);
    assert_eq!(
        out.matches("rows in set").count()
            + out.matches("Empty set").count()
            + out.matches("1 row in set").count(),
        2,
        "{out}"
    );
    assert!(out.contains("queue 0/2048"), "{out}");
}

#[test]
fn admin_is_loopback_by_default_and_never_on_the_public_port() {
    let out = c10k(&["serve", "--check-config"]);
    assert!(out.contains("admin = \"127.0.0.1:9191\""), "{out}");
    let s = Server::start(&["--admin", "127.0.0.1:0"]);
    let admin = admin_addr(&s);
    assert!(admin.ip().is_loopback());
    for path in ["/status", "/processlist", "/metrics"] {
        assert_eq!(
            get(s.addr, path).unwrap().status,
            404,
            "{path} on the public port"
        );
        assert_eq!(
            get(admin, path).unwrap().status,
            200,
            "{path} on the admin port"
        );
    }
    assert_eq!(get(admin, "/nope").unwrap().status, 404);
    // --log-format json: every log line, master's and worker's, is a JSON object.
    let mut child = util::serve_command()
        .args(["--log-format", "json"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
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
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("Booting worker")) {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => lines.push(l),
            Err(_) => break,
        }
    }
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert!(
        lines.iter().any(|l| l.contains("Listening at")),
        "{lines:?}"
    );
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
    // A chosen admin address that is taken is an error naming the flag (a taken default only
    // turns the admin listener off, with a warning).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_s = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(["serve", "--bind", "127.0.0.1:0", "--admin", &taken_s])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--admin") && err.contains(&taken_s), "{err}");
    // --admin off: no admin line, and the CLI says what it could not reach.
    let off = Server::start(&["--admin", "off"]);
    assert!(!off.log().contains("Admin listening"));
    let out = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(["status", "counters", "--admin", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin"));
}

#[test]
fn full_listen_queue_shows_in_figures_and_log() {
    let s = Server::start(&[
        "-k",
        "sync",
        "-w",
        "1",
        "--backlog",
        "2",
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = admin_addr(&s);
    // Hold the only worker, then connect more clients than the queue holds.
    let addr = s.addr;
    std::thread::spawn(move || get(addr, "/?delay=3"));
    wait_until(Duration::from_secs(5), "the worker to be busy", || {
        let list = admin_json(admin, "/processlist");
        list["processlist"][0]["state"] == "handling"
    });
    for _ in 0..8 {
        std::thread::spawn(move || {
            let _ = get(addr, "/");
        });
    }
    let mut seen = Value::Null;
    wait_until(Duration::from_secs(3), "a full queue in /status", || {
        seen = admin_json(admin, "/status")["listeners"][0].clone();
        seen["queue_full"] == true
    });
    assert_eq!(seen["queue_max"], 2, "{seen}");
    assert!(seen["queue"].as_u64().unwrap() >= 2, "{seen}");
    let metrics = get(admin, "/metrics").unwrap().text();
    assert!(
        metrics.contains(&format!("c10k_listen_queue{{listener=\"{addr}\"}} ")),
        "{metrics}"
    );
    s.wait_log("listen queue of socket", Duration::from_secs(3));
    assert!(s.log().contains(&format!("{addr} full")), "{}", s.log());
}

per_class!(processlist_states, |class| {
    let s = Server::start(&[
        "-k",
        class,
        "--threads",
        threads(class),
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = admin_addr(&s);
    let find = |path: &str| -> Option<Value> {
        admin_json(admin, "/processlist")["processlist"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["path"] == path)
            .cloned()
    };
    // Compile the schema before the clock starts on the slow request.
    admin_json(admin, "/processlist");
    // An idle keep-alive connection (sync closes after each answer instead).
    let mut idle = Reader::new(connect(s.addr));
    idle.send(b"GET /?idle=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(idle.response().unwrap().status, 200);
    let mut slow = Reader::new(connect(s.addr));
    slow.send(b"GET /?delay=0.6 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut busy = None;
    wait_until(
        Duration::from_secs(5),
        "the slow request in the list",
        || {
            busy = find("/?delay=0.6");
            busy.is_some()
        },
    );
    let busy = busy.unwrap();
    assert_eq!(busy["state"], "handling", "{busy}");
    assert_eq!(busy["requests"], 1, "{busy}");
    if class == "sync" {
        assert!(find("/?idle=1").is_none(), "sync keeps no idle connection");
    } else {
        let idle_row = find("/?idle=1").expect("the idle connection is listed");
        assert_eq!(idle_row["state"], "keepalive", "{idle_row}");
    }
    assert_eq!(slow.response().unwrap().status, 200);
    wait_until(
        Duration::from_secs(3),
        "the slow request to finish",
        || match find("/?delay=0.6") {
            None => class == "sync",
            Some(p) => p["state"] == "keepalive",
        },
    );
    drop(idle);
    drop(slow);
    wait_until(
        Duration::from_secs(5),
        "closed connections to leave",
        || {
            admin_json(admin, "/processlist")["processlist"]
                .as_array()
                .unwrap()
                .is_empty()
        },
    );
    let c = admin_json(admin, "/status")["counters"].clone();
    assert!(c["requests_2xx"].as_u64().unwrap() >= 2, "{c}");
    assert_eq!(c["connections_active"], 0, "{c}");
});

#[test]
fn counters_survive_a_worker_respawn() {
    let s = Server::start(&["-w", "1", "--admin", "127.0.0.1:0"]);
    let admin = admin_addr(&s);
    for _ in 0..20 {
        assert_eq!(get(s.addr, "/").unwrap().status, 200);
    }
    let before = admin_json(admin, "/status");
    let served = before["counters"]["requests"].as_u64().unwrap();
    assert!(served >= 20);
    let pid = before["workers"][0]["pid"].as_u64().unwrap() as i32;
    // SAFETY: kill has no memory-safety preconditions; the pid is our server's worker.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    s.wait_for_workers(2);
    let after = admin_json(admin, "/status");
    assert_ne!(after["workers"][0]["pid"].as_u64().unwrap() as i32, pid);
    assert_eq!(after["workers"][0]["respawns"], 1, "{after}");
    assert_eq!(after["counters"]["worker_respawns"], 1, "{after}");
    let now = after["counters"]["requests"].as_u64().unwrap();
    assert!(
        now > served,
        "totals keep what the dead worker served: {served} then {now}"
    );
    assert!(after["counters"]["requests_2xx"].as_u64().unwrap() >= 20);
}

/// Issue 8 in CI: the async class holds 2,000 connections, each with a `delay=1` request in
/// flight, with no failure, and the server itself reports them open.
#[test]
fn two_thousand_connections_held_and_reported() {
    let s = Server::start(&[
        "-k",
        "async",
        "--worker-connections",
        "2100",
        "--backlog",
        "4096",
    ]);
    let admin = admin_addr(&s);
    let url = format!("http://{}/?delay=1", s.addr);
    let mut bench = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args([
            "bench",
            "-k",
            "-r",
            "-q",
            "-c",
            "2000",
            "--duration",
            "5s",
            "-s",
            "20",
        ])
        .args(["--threads", "1", "--json", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start c10k bench");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut peak = 0u64;
    loop {
        let status = admin_json(admin, "/status");
        let active = status["counters"]["connections_active"]
            .as_u64()
            .unwrap_or(0);
        peak = peak.max(active);
        if let Some(done) = bench.try_wait().expect("bench status") {
            assert!(done.success(), "bench failed");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bench did not finish; peak {peak}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = bench.wait_with_output().expect("bench output");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bench JSON: {e}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["failed_requests"], 0, "{report}");
    assert_eq!(report["non_2xx"], 0, "{report}");
    assert!(
        report["complete_requests"].as_u64().unwrap_or(0) >= 2000,
        "{report}"
    );
    assert!(
        peak >= 2000,
        "the server reported at most {peak} open connections"
    );
}

/// The answer to `GET path` at `addr`: (status, body).
fn probe(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = get(addr, path).expect("probe");
    (r.status, r.text())
}

#[test]
fn readiness_turns_503_for_the_drain_delay_while_requests_complete() {
    let mut s = Server::start(&[
        "-w",
        "2",
        "--admin",
        "127.0.0.1:0",
        "--drain-delay",
        "1.5",
        "--health-path",
        "/healthz",
    ]);
    let admin = admin_addr(&s);
    wait_until(Duration::from_secs(10), "readiness after boot", || {
        probe(admin, "/readyz").0 == 200
    });
    assert_eq!(probe(admin, "/livez"), (200, "alive\n".into()));
    assert_eq!(probe(s.addr, "/healthz"), (200, "ready\n".into()));
    // Without --health-path the application answers that path (404 from the built-in app).
    assert_eq!(get(s.addr, "/healthz/x").unwrap().status, 404);
    // A request that outlives the drain delay: it must complete through the graceful stop.
    let addr = s.addr;
    let slow = std::thread::spawn(move || get(addr, "/?delay=2.5").map(|r| r.status));
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    s.signal(libc::SIGTERM);
    wait_until(Duration::from_secs(1), "/readyz to turn 503", || {
        probe(admin, "/readyz").0 == 503
    });
    let (status, body) = probe(admin, "/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("draining"), "{body}");
    assert_eq!(probe(admin, "/livez").0, 200, "alive while draining");
    assert_eq!(
        probe(s.addr, "/healthz").0,
        503,
        "the public health path too"
    );
    // Still served while the balancer takes the server out.
    assert_eq!(get(s.addr, "/").unwrap().status, 200);
    assert!(
        sent.elapsed() < Duration::from_millis(1400),
        "the checks above ran inside the drain delay: {:?}",
        sent.elapsed()
    );
    assert_eq!(slow.join().unwrap().unwrap(), 200, "in-flight request done");
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(
        sent.elapsed() >= Duration::from_millis(1500),
        "listeners stayed open for the drain delay"
    );
    let log = s.log();
    // The whole sentence, one space between its words (a string continuation once left 30).
    assert!(
        log.contains(
            "draining for 1.5s (--drain-delay): readiness answers 503, requests are still \
             served; then a graceful stop"
        ),
        "{log}"
    );
    assert!(log.contains("--drain-delay over: graceful stop"), "{log}");
}

/// Starts `sh -c 'LISTEN_PID=$$ LISTEN_FDS=1 exec c10k serve ARGS'` with `listener` at fd 3, as
/// systemd does; returns the child and a handle on its log.
fn start_activated(
    listener: &std::net::TcpListener,
    args: &[&str],
) -> (
    std::process::Child,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    use std::io::BufRead;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" serve \"$@\"")
        .arg(env!("CARGO_BIN_EXE_c10k"))
        .args(args)
        .env("C10K_LOG", "info")
        .env_remove("C10K_BIND")
        .env_remove("LISTEN_FDNAMES")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl) on descriptors
    // open in the child.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start c10k under sh");
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let mut l = log2.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    (child, log)
}

fn stop(mut child: std::process::Child) {
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn systemd_socket_activation_serves_the_inherited_socket() {
    // No --bind: the inherited socket is served, whatever its address.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (child, log) = start_activated(&listener, &["-w", "2", "--admin", "off"]);
    // The test's copy stays open until the server answers, so connections queue meanwhile; it
    // never accepts, so every answer below comes from c10k.
    let mut answered = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while answered.is_none() && Instant::now() < deadline {
        answered = get(addr, "/").ok().map(|r| r.status);
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = log.lock().unwrap().clone();
    stop(child);
    assert_eq!(answered, Some(200), "{text}");
    assert!(
        text.contains("serving the sockets systemd passed"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Listening at: http://{addr}")),
        "{text}"
    );

    // With --bind: the inherited socket is matched by address, the other address bound.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let bind = addr.to_string();
    let (child, log) = start_activated(
        &listener,
        &["--bind", &bind, "--bind", "127.0.0.1:0", "--admin", "off"],
    );
    let mut answered = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while answered.is_none() && Instant::now() < deadline {
        answered = get(addr, "/").ok().map(|r| r.status);
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = log.lock().unwrap().clone();
    stop(child);
    assert_eq!(answered, Some(200), "{text}");
    assert!(
        text.contains(&format!("{bind}: using the socket systemd passed")),
        "{text}"
    );
    assert_eq!(text.matches("Listening at: http://").count(), 2, "{text}");
}

/// `GET path` on the admin listener with an `Authorization` header.
fn get_with_auth(addr: SocketAddr, path: &str, auth: &str) -> u16 {
    let mut c = Reader::new(connect(addr));
    c.send(
        format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    c.response().unwrap().status
}

#[test]
fn admin_beyond_loopback_refuses_to_start_without_a_token() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(["serve", "--bind", "127.0.0.1:0", "--admin", "0.0.0.0:0"])
        .env_remove("C10K_ADMIN_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = util::exit_within(&mut child, Duration::from_secs(10));
    let mut err = String::new();
    use std::io::Read;
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    let status = status.expect("refused at once, not started");
    assert!(!status.success());
    assert!(
        err.contains("--admin") && err.contains("--admin-token"),
        "{err}"
    );
}

#[test]
fn admin_token_is_required_except_on_the_probes() {
    let s = Server::start(&["--admin", "127.0.0.1:0", "--admin-token", "s3cret-t0ken"]);
    let admin = admin_addr(&s);
    assert!(
        !s.log().contains("s3cret-t0ken"),
        "the token is never logged"
    );
    for path in ["/status", "/processlist", "/metrics", "/"] {
        let r = get(admin, path).unwrap();
        assert_eq!(r.status, 401, "{path} without the token");
        assert!(r.header("www-authenticate").is_some(), "{path}");
        assert_eq!(get_with_auth(admin, path, "Bearer wrong"), 401);
        assert_eq!(get_with_auth(admin, path, "Bearer s3cret-t0ke"), 401);
        assert_eq!(get_with_auth(admin, path, "Basic s3cret-t0ken"), 401);
        assert_eq!(
            get_with_auth(admin, path, "Bearer s3cret-t0ken"),
            200,
            "{path}"
        );
    }
    assert_eq!(get(admin, "/livez").unwrap().status, 200);
    wait_until(Duration::from_secs(10), "readiness", || {
        get(admin, "/readyz").unwrap().status == 200
    });
    let admin_s = admin.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(["status", "counters", "--admin", &admin_s])
        .env_remove("C10K_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("401") && err.contains("--admin-token"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args([
            "status", "counters", "--like", "requests", "--admin", &admin_s,
        ])
        .env("C10K_ADMIN_TOKEN", "s3cret-t0ken")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("| requests "));
}

#[test]
fn secret_query_values_are_masked_in_processlist_and_access_log() {
    for reveal in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let access = dir.path().join("access.log");
        let access_s = access.to_str().unwrap().to_owned();
        let mut args = vec!["--admin", "127.0.0.1:0", "--access-log", &access_s];
        if reveal {
            args.push("--log-query-values");
        }
        let s = Server::start(&args);
        let admin = admin_addr(&s);
        admin_json(admin, "/processlist");
        let addr = s.addr;
        let target = "/?delay=0.8&token=SECRET123&api_key=k3y&page=2";
        let slow = std::thread::spawn(move || get(addr, target).map(|r| r.status));
        let mut row = None;
        wait_until(Duration::from_secs(5), "the request in the list", || {
            row = admin_json(admin, "/processlist")["processlist"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["path"].as_str().is_some_and(|p| p.contains("delay=0.8")))
                .cloned();
            row.is_some()
        });
        assert_eq!(slow.join().unwrap().unwrap(), 200);
        let path = row.unwrap()["path"].as_str().unwrap().to_owned();
        let log = std::fs::read_to_string(&access).unwrap();
        if reveal {
            assert_eq!(path, target);
            assert!(log.contains(target), "{log}");
        } else {
            assert_eq!(path, "/?delay=0.8&token=***&api_key=***&page=2");
            assert!(
                log.contains("\"GET /?delay=0.8&token=***&api_key=***&page=2 HTTP/1.1\""),
                "{log}"
            );
            assert!(!log.contains("SECRET123") && !log.contains("k3y"), "{log}");
        }
    }
}
