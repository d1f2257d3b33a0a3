//! Engine and report tests against real servers on 127.0.0.1:0: the c10k server in-process and
//! a scripted raw TCP server. Every run is bounded by -n and a timeout.

mod util;

use std::time::{Duration, SystemTime};

use c10k_bench::report::ab::{write_report, TextOptions};
use c10k_bench::{hdrlog, Measurement, Report};
use util::{measure, plan, Next, RawServer, Serve, OK};

#[test]
fn exact_request_count_server_side() {
    let srv = RawServer::start(|_, _| (OK.to_vec(), Next::Keep));
    for (n, c, threads) in [(1, 1, 1), (997, 7, 1), (1000, 10, 2)] {
        srv.requests.store(0, std::sync::atomic::Ordering::Relaxed);
        srv.connections
            .store(0, std::sync::atomic::Ordering::Relaxed);
        let mut p = plan(&srv.url("/"), n, c);
        p.keep_alive = true;
        p.threads = threads;
        let m = measure(&p);
        assert_eq!(m.completed, n);
        assert_eq!(m.responses, n);
        assert_eq!(
            srv.requests.load(std::sync::atomic::Ordering::Relaxed),
            n,
            "server count"
        );
        assert_eq!(
            srv.connections.load(std::sync::atomic::Ordering::Relaxed),
            c as u64
        );
        assert_eq!(m.total.count, n);
        assert_eq!(m.errors.failed(), 0);
    }
}

#[test]
fn keep_alive_reuses_connections_and_ab_mode_does_not() {
    let srv = Serve::start();
    let mut p = plan(&srv.url("/"), 200, 4);
    let m = measure(&p);
    assert_eq!(m.statuses.get(&200), Some(&200));
    assert_eq!(
        m.connections_opened, 200,
        "one connection per request without -k"
    );
    assert_eq!(m.keep_alive_responses, 0);
    p.keep_alive = true;
    let m = measure(&p);
    assert_eq!(m.statuses.get(&200), Some(&200));
    assert_eq!(m.connections_opened, 4);
    assert_eq!(m.keep_alive_responses, 200);
    let r = Report::new(&p, &m);
    assert_eq!(r.document_length, Some(6));
    assert_eq!(r.html_transferred, 1200);
    p.http10 = true;
    let m = measure(&p);
    assert_eq!(m.statuses.get(&200), Some(&200));
    assert_eq!(m.connections_opened, 4, "HTTP/1.0 keep-alive");
}

#[test]
fn counts_per_status_with_round_robin_urls() {
    let srv = Serve::start();
    let mut p = plan(&srv.url("/"), 300, 3);
    p.urls.push(srv.url("/missing"));
    p.urls.push(srv.url("/missing"));
    p.keep_alive = true;
    let m = measure(&p);
    assert_eq!(m.statuses.get(&200), Some(&100));
    assert_eq!(m.statuses.get(&404), Some(&200));
    // Each URL's length is checked against its own first response.
    assert_eq!(m.errors.length, 0);
    let r = Report::new(&p, &m);
    assert_eq!(r.non_2xx, 200);
    assert_eq!(r.failed_requests, 0);
    assert_eq!(r.siege.failed_transactions, 200);
}

#[test]
fn pipelining_returns_every_response() {
    let srv = Serve::start();
    let mut p = plan(&srv.url("/"), 1000, 4);
    p.pipeline = 16;
    let m = measure(&p);
    assert_eq!(m.statuses.get(&200), Some(&1000));
    assert_eq!(m.connections_opened, 4);
    assert_eq!(m.body_bytes, 6000);
    // Against the raw server too: it answers pipelined requests from one buffer.
    let raw = RawServer::start(|_, _| (OK.to_vec(), Next::Keep));
    let mut p = plan(&raw.url("/"), 500, 2);
    p.pipeline = 8;
    let m = measure(&p);
    assert_eq!(m.responses, 500);
    assert_eq!(raw.requests.load(std::sync::atomic::Ordering::Relaxed), 500);
}

#[test]
fn chunked_and_close_delimited_responses() {
    let chunked = RawServer::start(|i, _| {
        let body = if i % 2 == 0 {
            "5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"
        } else {
            "b\r\nhello world\r\n0\r\nT: 1\r\n\r\n"
        };
        (
            format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{body}").into_bytes(),
            Next::Keep,
        )
    });
    let mut p = plan(&chunked.url("/"), 100, 2);
    p.keep_alive = true;
    let m = measure(&p);
    assert_eq!(m.responses, 100);
    assert_eq!(m.body_bytes, 1100);
    assert_eq!(m.errors.failed(), 0);
    assert_eq!(m.connections_opened, 2);

    let close =
        RawServer::start(|_, _| (b"HTTP/1.0 200 OK\r\n\r\nuntil close".to_vec(), Next::Close));
    let mut p = plan(&close.url("/"), 50, 2);
    p.keep_alive = true;
    let m = measure(&p);
    assert_eq!(m.responses, 50);
    assert_eq!(m.body_bytes, 50 * 11);
    assert_eq!(m.connections_opened, 50);
    assert_eq!(m.errors.failed(), 0);
}

#[test]
fn server_closing_early_is_a_truncated_response() {
    // Every third response promises 10 bytes and sends 3.
    let srv = RawServer::start(|i, _| {
        if i % 3 == 2 {
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
                Next::Close,
            )
        } else {
            (OK.to_vec(), Next::Keep)
        }
    });
    let mut p = plan(&srv.url("/"), 30, 1);
    p.keep_alive = true;
    let m = measure(&p);
    assert_eq!(m.completed, 30);
    assert_eq!(m.errors.truncated, 10);
    assert_eq!(m.responses, 20);
    let r = Report::new(&p, &m);
    assert_eq!(r.failed_requests, 10);
    assert_eq!(r.failures.length, 10, "ab counts a short body under Length");
}

#[test]
fn reset_mid_response_aborts_without_r_and_counts_with_r() {
    let srv = RawServer::start(|i, _| {
        if i == 5 {
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab".to_vec(),
                Next::Reset,
            )
        } else {
            (OK.to_vec(), Next::Keep)
        }
    });
    let mut p = plan(&srv.url("/"), 20, 1);
    p.keep_alive = true;
    let m = measure(&p);
    let why = m.aborted.expect("ab aborts on a receive error without -r");
    assert!(why.contains("apr_socket_recv"), "{why}");

    srv.requests.store(0, std::sync::atomic::Ordering::Relaxed);
    p.keep_going = true;
    let m = measure(&p);
    assert!(m.aborted.is_none());
    assert_eq!(m.completed, 20);
    assert_eq!(m.errors.receive + m.errors.truncated, 1, "{:?}", m.errors);
    assert_eq!(m.responses, 19);
}

#[test]
fn wrong_length_counts_unless_l() {
    let srv = RawServer::start(|i, _| {
        let body = if i % 2 == 0 { "short" } else { "longer body" };
        (
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
            Next::Keep,
        )
    });
    let mut p = plan(&srv.url("/"), 10, 1);
    p.keep_alive = true;
    let m = measure(&p);
    assert_eq!(m.responses, 10);
    assert_eq!(m.errors.length, 5);
    assert_eq!(Report::new(&p, &m).failures.length, 5);
    p.variable_length = true;
    let m = measure(&p);
    assert_eq!(m.errors.length, 0);
    assert_eq!(Report::new(&p, &m).document_length, None);
}

#[test]
fn refused_connect_counts_with_r_and_aborts_without() {
    // A port that was just free: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let mut p = plan(&url, 5, 1);
    let m = measure(&p);
    // ab's words on Linux, errno in parentheses as ab prints it.
    assert_eq!(
        m.aborted.as_deref(),
        Some("apr_socket_recv: Connection refused (111)")
    );
    p.keep_going = true;
    let m = measure(&p);
    assert_eq!(m.errors.connect, 5);
    assert!(m.elapsed_us > 0, "the run's time covers failures too");
    assert_eq!(m.completed, 5);
    let r = Report::new(&p, &m);
    assert_eq!(r.failures.connect, 5);
    // No response arrived: ab prints "Document Length: 0 bytes", "Variable" only with -l.
    assert_eq!(r.document_length, Some(0));
    let mut text = Vec::new();
    write_report(&r, &TextOptions::default(), &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("\nDocument Length:        0 bytes\n"),
        "{text}"
    );
}

#[test]
fn timeout_s_counts_with_r_and_aborts_without() {
    let srv = RawServer::start(|_, _| (Vec::new(), Next::Keep));
    let mut p = plan(&srv.url("/"), 2, 1);
    p.timeout = Duration::from_millis(200);
    let m = measure(&p);
    assert!(
        m.aborted.as_deref().unwrap_or("").contains("timeout"),
        "{:?}",
        m.aborted
    );
    p.keep_going = true;
    let m = measure(&p);
    assert_eq!(m.errors.timeout, 2);
    assert_eq!(Report::new(&p, &m).failures.exceptions, 2);
}

#[test]
fn non_2xx_is_reported_apart_from_failures() {
    let srv = RawServer::start(|i, _| {
        if i % 4 == 0 {
            (
                b"HTTP/1.1 503 Busy\r\nContent-Length: 6\r\n\r\nbusy!\n".to_vec(),
                Next::Keep,
            )
        } else {
            (OK.to_vec(), Next::Keep)
        }
    });
    let mut p = plan(&srv.url("/"), 40, 1);
    p.keep_alive = true;
    let m = measure(&p);
    let r = Report::new(&p, &m);
    assert_eq!(r.non_2xx, 10);
    assert_eq!(r.failed_requests, 0);
    assert_eq!(r.status_codes.get("503"), Some(&10));
}

#[test]
fn post_body_and_headers_arrive_as_sent() {
    let srv = Serve::start();
    let mut p = plan(&srv.url("/echo"), 20, 2);
    p.keep_alive = true;
    p.body = Some(b"{\"a\": 1}".to_vec());
    p.content_type = Some("application/json".into());
    let m = measure(&p);
    assert_eq!(m.statuses.get(&200), Some(&20));
    assert_eq!(m.body_bytes, 20 * 8, "the echo returns the body");
    // ab's "Total body sent" is every request byte written, head and body.
    let request = &c10k_bench::plan::Prepared::new(&p).unwrap().requests[0];
    assert!(request.ends_with(b"\r\n\r\n{\"a\": 1}"));
    assert_eq!(m.body_sent, 20 * request.len() as u64);

    let raw = RawServer::start(|_, _| (OK.to_vec(), Next::Keep));
    let mut p = plan(&raw.url("/x?y=1"), 1, 1);
    p.body = Some(b"payload".to_vec());
    p.headers = vec!["X-Test: yes".into()];
    p.cookies = vec!["a=1".into()];
    p.basic_auth = Some("user:pw".into());
    let m = measure(&p);
    let req = String::from_utf8(raw.first_request.lock().unwrap().clone().unwrap()).unwrap();
    assert_eq!(m.body_sent, req.len() as u64, "what arrived, head and body");
    assert!(req.starts_with("POST /x?y=1 HTTP/1.1\r\n"), "{req}");
    assert!(req.contains("\r\nX-Test: yes\r\n"));
    assert!(req.contains("\r\nCookie: a=1\r\n"));
    assert!(req.contains("\r\nAuthorization: Basic dXNlcjpwdw==\r\n"));
    assert!(req.contains("\r\nContent-Type: text/plain\r\n"));
    assert!(req.ends_with("\r\n\r\npayload"));
}

#[test]
fn head_requests_ignore_content_length() {
    let srv = RawServer::start(|_, _| {
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec(),
            Next::Keep,
        )
    });
    let mut p = plan(&srv.url("/"), 10, 1);
    p.keep_alive = true;
    p.head = true;
    let m = measure(&p);
    assert_eq!(m.responses, 10);
    assert_eq!(m.errors.failed(), 0);
    let req = String::from_utf8(srv.first_request.lock().unwrap().clone().unwrap()).unwrap();
    assert!(req.starts_with("HEAD / HTTP/1.1"));
}

#[test]
fn duration_mode_runs_until_time() {
    let srv = Serve::start();
    let mut p = plan(&srv.url("/"), 1, 2);
    p.requests = None;
    p.duration = Some(Duration::from_millis(300));
    p.keep_alive = true;
    let t = std::time::Instant::now();
    let m = measure(&p);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(m.responses > 10);
    assert!(m.elapsed_us >= 290_000);
}

#[test]
fn rate_mode_holds_its_rate() {
    let srv = Serve::start();
    let mut p = plan(&srv.url("/"), 1, 10);
    p.requests = None;
    p.duration = Some(Duration::from_secs(1));
    p.keep_alive = true;
    p.rate = Some(1000.0);
    let m = measure(&p);
    let r = Report::new(&p, &m);
    // The schedule is fixed: 1000 requests are due within the second.
    let got = m.completed as f64;
    assert!(
        (got - 1000.0).abs() <= 20.0,
        "{got} requests, want 1000 ± 2 %"
    );
    assert_eq!(m.errors.failed(), 0);
    assert!(r.rate.unwrap().send_delay_mean_ms < 5.0);
}

#[test]
fn rate_mode_reports_queueing_when_the_server_stalls() {
    let srv = Serve::start();
    // One connection, 50 requests/s, each taking 100 ms: requests queue behind each other.
    let mut p = plan(&srv.url("/?delay=0.1"), 10, 1);
    p.keep_alive = true;
    p.rate = Some(50.0);
    let m = measure(&p);
    let r = Report::new(&p, &m);
    let rate = r.rate.unwrap();
    assert_eq!(m.responses, 10);
    assert!(rate.send_delay_max_ms > 300.0, "{rate:?}");
    // Latency counts from the intended time, so it includes the queueing (wrk2's correction).
    assert!(r.latency_ms.max > 700.0, "{:?}", r.latency_ms);
}

#[test]
fn holds_2000_connections() {
    let srv = Serve::start();
    let mut p = plan(&srv.url("/"), 4000, 2000);
    p.keep_alive = true;
    p.threads = 2;
    let m = measure(&p);
    assert!(m.aborted.is_none(), "{:?}", m.aborted);
    assert_eq!(m.errors.failed(), 0);
    assert_eq!(m.statuses.get(&200), Some(&4000));
    assert_eq!(m.connections_opened, 2000);
}

#[test]
fn source_ips_spread_connections() {
    let srv = RawServer::start(|_, _| (OK.to_vec(), Next::Keep));
    let mut p = plan(&srv.url("/"), 40, 4);
    p.keep_alive = true;
    p.source_ips = c10k_bench::plan::parse_source_ips("127.0.0.1-127.0.0.4").unwrap();
    let m = measure(&p);
    assert_eq!(m.responses, 40);
    let peers: Vec<String> = srv
        .peers
        .lock()
        .unwrap()
        .iter()
        .map(|ip| ip.to_string())
        .collect();
    assert_eq!(peers, ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]);
}

#[test]
fn unix_socket_target() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                while let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    seen.drain(..i + 4);
                    let _ = s.write_all(OK);
                }
            }
        }
    });
    let mut p = plan("http://localhost/", 5, 1);
    p.keep_alive = true;
    p.unix = Some(path);
    let m = measure(&p);
    assert_eq!(m.responses, 5);
}

/// A measurement with known samples, for the layout tests.
fn fixed_measurement() -> Measurement {
    let mut m = Measurement {
        elapsed_us: 1_234_567,
        completed: 10,
        responses: 10,
        keep_alive_responses: 10,
        bytes_read: 1550,
        body_bytes: 60,
        connections_opened: 2,
        server_software: Some("nginx/1.22.1".into()),
        document_length: Some(6),
        ..Default::default()
    };
    m.statuses.insert(200, 10);
    for (i, t) in [
        900u64, 1200, 1500, 2100, 2500, 3000, 3600, 4100, 8000, 12000,
    ]
    .iter()
    .enumerate()
    {
        let c = if i < 2 { 300 } else { 0 };
        m.total.record(*t);
        m.connect.record(c);
        m.processing.record(t - c);
        m.waiting.record(t - c - 100);
    }
    m
}

fn fixed_plan() -> c10k_bench::Plan {
    let mut p = c10k_bench::Plan::new("http://127.0.0.1:8080/index.html");
    p.requests = Some(10);
    p.concurrency = 2;
    p.keep_alive = true;
    p
}

#[test]
fn golden_text_report() {
    let r = Report::new(&fixed_plan(), &fixed_measurement());
    let mut out = Vec::new();
    write_report(&r, &TextOptions::default(), &mut out).unwrap();
    assert_golden("report.txt", out);
}

/// `out` is the golden file `tests/golden/NAME`; `UPDATE_GOLDEN=1` writes it instead.
fn assert_golden(name: &str, out: Vec<u8>) {
    let text = String::from_utf8(out).unwrap();
    let golden = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(
        text, want,
        "rerun with UPDATE_GOLDEN=1 after an intended change"
    );
}

/// ab's `-w` table for the same figures; the server's name carries markup, which is escaped.
#[test]
fn golden_html_report() {
    let mut m = fixed_measurement();
    m.server_software = Some("<b>x</b> & co".into());
    let r = Report::new(&fixed_plan(), &m);
    let mut out = Vec::new();
    let attrs = c10k_bench::report::html::HtmlAttrs {
        table: "border=1".into(),
        ..Default::default()
    };
    c10k_bench::report::html::write_report(&r, &attrs, &mut out).unwrap();
    assert_golden("report.html", out);
}

#[test]
fn json_report_matches_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../schema/report.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    // A fixed report and a live one (with a rate section and errors).
    let fixed = serde_json::to_value(Report::new(&fixed_plan(), &fixed_measurement())).unwrap();
    let srv = Serve::start();
    let mut p = plan(&srv.url("/"), 20, 2);
    p.urls.push(srv.url("/nope"));
    p.rate = Some(1000.0);
    p.body = Some(b"x".to_vec());
    let live = serde_json::to_value(c10k_bench::run(&p).unwrap()).unwrap();
    for v in [fixed, live] {
        let errors: Vec<String> = validator
            .iter_errors(&v)
            .map(|e| format!("{e} at {}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}\n{v:#}");
    }
    // The schema is strict: an unknown field fails.
    let mut bad = serde_json::to_value(Report::new(&fixed_plan(), &fixed_measurement())).unwrap();
    bad["surprise"] = 1.into();
    assert!(!validator.is_valid(&bad));
}

#[test]
fn merged_hdr_logs_equal_the_histogram_of_the_union() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Measurement::default();
    let mut b = Measurement::default();
    let mut union = Measurement::default();
    let mut seed = 7u64;
    for i in 0..5000u64 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v = (seed >> 40) % 5_000_000 + 1;
        if i % 3 == 0 {
            a.total.record(v)
        } else {
            b.total.record(v)
        }
        union.total.record(v);
    }
    let paths = [dir.path().join("a.hdr"), dir.path().join("b.hdr")];
    for (m, path) in [(&a, &paths[0]), (&b, &paths[1])] {
        let mut f = std::fs::File::create(path).unwrap();
        hdrlog::write_log(
            &mut f,
            &hdrlog::tagged(m),
            SystemTime::now(),
            Duration::from_secs(1),
        )
        .unwrap();
    }
    let merged = hdrlog::merge_files(&paths).unwrap();
    assert_eq!(merged["total"], union.total.hist);
    assert_eq!(merged["total"].len(), 5000);
    for q in [0.5, 0.9, 0.99, 0.9999] {
        assert_eq!(
            merged["total"].value_at_quantile(q),
            union.total.hist.value_at_quantile(q)
        );
    }
    // Measurements merge the same way (threads and --processes).
    let mut m = a.clone();
    m.merge(&b);
    assert_eq!(m.total.hist, union.total.hist);
    assert_eq!(m.total.sum, union.total.sum);
}

#[test]
fn pipelined_requests_survive_servers_closing_connections() {
    // Every 5th response says Connection: close; every 7th connection-level answer is a bare
    // close after a response (an idle keep-alive close): the unanswered requests are resent.
    let srv = RawServer::start(|i, _| {
        if i % 5 == 4 {
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 6\r\n\r\nhello\n"
                    .to_vec(),
                Next::Close,
            )
        } else if i % 7 == 6 {
            (OK.to_vec(), Next::Close)
        } else {
            (OK.to_vec(), Next::Keep)
        }
    });
    let mut p = plan(&srv.url("/"), 200, 3);
    p.pipeline = 8;
    let m = measure(&p);
    assert!(m.aborted.is_none(), "{:?}", m.aborted);
    assert_eq!(m.completed, 200);
    assert_eq!(m.responses, 200, "{:?}", m.errors);
    assert_eq!(m.errors.failed(), 0);
    assert!(m.connections_opened > 40);
}

#[test]
fn proxy_gets_absolute_uris_and_proxy_auth() {
    let proxy = RawServer::start(|_, _| (OK.to_vec(), Next::Keep));
    let mut p = plan("http://example.invalid:8080/x?y=1", 3, 1);
    p.keep_alive = true;
    p.proxy = Some(proxy.addr.to_string());
    p.proxy_auth = Some("u:p".into());
    p.method = Some("DELETE".into());
    let m = measure(&p);
    assert_eq!(m.responses, 3);
    let req = String::from_utf8(proxy.first_request.lock().unwrap().clone().unwrap()).unwrap();
    assert!(
        req.starts_with("DELETE http://example.invalid:8080/x?y=1 HTTP/1.1\r\n"),
        "{req}"
    );
    assert!(req.contains("\r\nHost: example.invalid:8080\r\n"));
    assert!(req.contains("\r\nProxy-Authorization: Basic dTpw\r\n"));
}

/// `tests/responses/{valid,invalid}/NNN-name.http` hold raw responses (`\r\n` written out);
/// `.expect` lists the responses each must yield, one `STATUS BODY keep|close [eof]` a line.
#[test]
fn response_corpus_parses_at_every_split() {
    use c10k_bench::parse::{Eof, ResponseParser};
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/responses");
    let mut seen = 0;
    for (dir, valid) in [("valid", true), ("invalid", false)] {
        let mut files: Vec<_> = std::fs::read_dir(format!("{root}/{dir}"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "http"))
            .collect();
        files.sort();
        for path in files {
            seen += 1;
            let raw = std::fs::read_to_string(&path)
                .unwrap()
                .replace("\\r\\n", "\r\n");
            let bytes = raw.as_bytes();
            let expect = std::fs::read_to_string(path.with_extension("expect")).unwrap_or_default();
            for step in 1..=bytes.len() {
                let mut p = ResponseParser::new();
                let mut got = Vec::new();
                let mut error = false;
                let mut server = Some(String::new());
                'feed: for piece in bytes.chunks(step) {
                    let mut off = 0;
                    while off < piece.len() {
                        match p.feed(&piece[off..], false, &mut server) {
                            Ok((n, done)) => {
                                off += n;
                                if let Some(d) = done {
                                    let ka = if d.keep_alive { "keep" } else { "close" };
                                    got.push(format!("{} {} {ka}", d.status, d.body));
                                }
                            }
                            Err(_) => {
                                error = true;
                                break 'feed;
                            }
                        }
                    }
                }
                if !error {
                    if let Eof::Complete(d) = p.eof() {
                        got.push(format!("{} {} close eof", d.status, d.body));
                    }
                }
                let name = path.display();
                if valid {
                    assert!(!error, "{name} step {step}: parse error");
                    let want: Vec<&str> = expect.lines().collect();
                    assert_eq!(got, want, "{name} step {step}");
                } else {
                    assert!(error, "{name} step {step}: accepted {got:?}");
                }
            }
        }
    }
    assert!(seen >= 15);
}

#[test]
fn start_at_opens_no_connection_before_then() {
    let first = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = first.clone();
    let srv = RawServer::start(move |_, _| {
        seen.lock().unwrap().get_or_insert_with(SystemTime::now);
        (OK.to_vec(), Next::Keep)
    });
    let at = SystemTime::now() + Duration::from_millis(1500);
    let mut p = plan(&srv.url("/"), 20, 2);
    p.keep_alive = true;
    p.start_at = Some(at);
    let run = std::thread::spawn(move || measure(&p));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        srv.connections.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a connection opened before start_at"
    );
    let m = run.join().unwrap();
    assert_eq!(m.responses, 20);
    let first = first.lock().unwrap().expect("a request arrived");
    let late = first
        .duration_since(at)
        .expect("the first request came before start_at");
    assert!(late < Duration::from_secs(1), "started {late:?} late");
    // A moment already past starts at once.
    let mut p = plan(&srv.url("/"), 5, 1);
    p.start_at = Some(SystemTime::now() - Duration::from_secs(3));
    let t = std::time::Instant::now();
    assert_eq!(measure(&p).responses, 5);
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn save_bodies_keeps_each_2xx_body_once_whatever_its_framing() {
    let srv = RawServer::start(|i, _| {
        let body = format!("{{\"id\":{i},\n\"n\":1}}\n");
        match i % 4 {
            0 => (
                format!(
                    "HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
                Next::Keep,
            ),
            1 => (
                format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                    &body[..3],
                    body.len() - 3,
                    &body[3..]
                )
                .into_bytes(),
                Next::Keep,
            ),
            2 => (
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy\n".to_vec(),
                Next::Keep,
            ),
            _ => (
                format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{body}").into_bytes(),
                Next::Close,
            ),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bodies");
    let mut p = plan(&srv.url("/"), 400, 4);
    p.keep_alive = true;
    p.threads = 2;
    p.variable_length = true;
    p.save_bodies = Some(path.clone());
    let m = measure(&p);
    assert_eq!(m.responses, 400);
    assert_eq!(m.statuses.get(&503), Some(&100));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut ids: Vec<u64> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect(l);
            assert_eq!(v["n"], 1, "{l}");
            v["id"].as_u64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    let want: Vec<u64> = (0..400).filter(|i| i % 4 != 2).collect();
    assert_eq!(ids, want, "one line per 2xx response, in any order");
}
