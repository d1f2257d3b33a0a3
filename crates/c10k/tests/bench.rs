//! `c10k bench` as users run it: the binary against the c10k server in-process on
//! 127.0.0.1:0, compared with real `ab` when it is installed.

use std::collections::BTreeSet;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_c10k");

// The in-process c10k server the bench crate's own tests use.
#[allow(dead_code)]
#[path = "../../bench/tests/util.rs"]
mod bench_util;
use bench_util::{Next, RawServer, Serve};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

fn bench(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("bench")
        .args(args)
        .output()
        .expect("run c10k")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The labels of ab's report lines ("Requests per second", "Connect", "50%", ...).
fn labels(text: &str) -> BTreeSet<String> {
    let start = text.find("Server Software:").expect("report start");
    text[start..]
        .lines()
        .take_while(|l| !l.starts_with("Transactions:"))
        .filter_map(|l| {
            let l = l.trim();
            // ab's mean-versus-median warnings come and go with the timings.
            let warning = [
                "ERROR: The median",
                "WARNING: The median",
                "deviation apart",
                "These results",
            ]
            .iter()
            .any(|p| l.starts_with(p));
            if l.is_empty() || warning {
                return None;
            }
            if let Some((label, _)) = l.split_once(':') {
                return Some(label.to_string());
            }
            l.split_whitespace().next().map(String::from)
        })
        .collect()
}

#[test]
fn report_has_every_line_ab_prints() {
    let srv = Serve::start();
    let url = srv.url("/");
    let ours = bench(&["-n", "300", "-c", "5", "-k", &url]);
    assert!(
        ours.status.success(),
        "{}",
        String::from_utf8_lossy(&ours.stderr)
    );
    let text = stdout(&ours);
    assert!(text.contains("Complete requests:      300\n"), "{text}");
    let ours_labels = labels(&text);
    let ab = Command::new("ab")
        .args(["-n", "300", "-c", "5", "-k", &url])
        .output();
    let want: BTreeSet<String> = match ab {
        Ok(o) if o.status.success() => labels(&stdout(&o)),
        _ => {
            eprintln!("ab is not installed: comparing with ab's known labels");
            [
                "Server Software",
                "Server Hostname",
                "Server Port",
                "Document Path",
                "Document Length",
                "Concurrency Level",
                "Time taken for tests",
                "Complete requests",
                "Failed requests",
                "Keep-Alive requests",
                "Total transferred",
                "HTML transferred",
                "Requests per second",
                "Time per request",
                "Transfer rate",
                "Connection Times (ms)",
                "min",
                "Connect",
                "Processing",
                "Waiting",
                "Total",
                "Percentage of the requests served within a certain time (ms)",
                "50%",
                "66%",
                "75%",
                "80%",
                "90%",
                "95%",
                "98%",
                "99%",
                "100%",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        }
    };
    let missing: Vec<_> = want.difference(&ours_labels).collect();
    assert!(
        missing.is_empty(),
        "labels ab prints that we do not: {missing:?}\n{text}"
    );
    // Lines ab never prints must not look like ab's (a parser keyed on them would misread).
    let extra: Vec<_> = ours_labels.difference(&want).collect();
    assert!(extra.is_empty(), "{extra:?}");
    // Then siege's lines and the extras.
    for label in [
        "Transactions:",
        "Availability:",
        "Concurrency:",
        "Longest transaction:",
        "Status code distribution:",
        "  [200] 300 responses",
        "p99.99",
    ] {
        assert!(text.contains(label), "missing {label}\n{text}");
    }
}

#[test]
fn bad_input_exits_2_naming_the_flag() {
    let an_hour_ago = (unix_now() - 3600.0).to_string();
    for (args, flag) in [
        (vec!["-n", "5", "-c", "10", "http://127.0.0.1:1/"], "-c"),
        (vec!["-n", "abc", "http://127.0.0.1:1/"], "-n"),
        (vec!["-n", "0", "http://127.0.0.1:1/"], "-n"),
        (
            vec!["--rate", "0", "-n", "5", "http://127.0.0.1:1/"],
            "--rate",
        ),
        (
            vec!["--duration", "soon", "http://127.0.0.1:1/"],
            "--duration",
        ),
        (vec!["-n", "5", "https://127.0.0.1:1/"], "https"),
        (
            vec!["--start-at", "soon", "-n", "5", "http://127.0.0.1:1/"],
            "--start-at \"soon\": expected a Unix time",
        ),
        (
            vec!["--start-at", &an_hour_ago, "-n", "5", "http://127.0.0.1:1/"],
            "s ago",
        ),
        (vec!["-n", "5"], "URL"),
        (vec!["-H", "nocolon", "http://127.0.0.1:1/"], "-H"),
        (
            vec!["--source-ips", "1.2.3", "http://127.0.0.1:1/"],
            "--source-ips",
        ),
        (vec!["--pipeline", "0", "http://127.0.0.1:1/"], "--pipeline"),
        (vec!["-Z", "http://127.0.0.1:1/"], "-Z"),
        (vec!["-t", "1e300", "http://127.0.0.1:1/"], "-t"),
        (vec!["-s", "NaN", "http://127.0.0.1:1/"], "-s"),
        (
            vec![
                "--rate",
                "1e-300",
                "--duration",
                "1s",
                "http://127.0.0.1:1/",
            ],
            "--rate",
        ),
        // Past the open-file limit or the port range, whichever binds on this machine.
        (
            vec![
                "-k",
                "-c",
                "5000000",
                "-n",
                "5000000",
                "http://127.0.0.1:1/",
            ],
            "the limit that binds",
        ),
    ] {
        let o = bench(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}

#[test]
fn help_and_version() {
    let o = bench(&["-h"]);
    assert!(o.status.success());
    let help = stdout(&o);
    assert!(
        help.contains("-n <requests>") && help.contains("--pipeline"),
        "{help}"
    );
    let o = bench(&["-V"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("ApacheBench 2.3 compatible"));
}

#[test]
fn json_output_validates_against_the_schema() {
    let srv = Serve::start();
    let o = bench(&["--json", "-n", "50", "-c", "2", "-k", &srv.url("/")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../bench/schema/report.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(v["complete_requests"], 50);
    assert_eq!(v["status_codes"]["200"], 50);
}

#[test]
fn csv_and_ab_files() {
    let srv = Serve::start();
    let dir = tempfile::tempdir().unwrap();
    let e = dir.path().join("p.csv");
    let g = dir.path().join("g.tsv");
    let o = bench(&[
        "--csv",
        "-n",
        "40",
        "-c",
        "2",
        "-e",
        e.to_str().unwrap(),
        "-g",
        g.to_str().unwrap(),
        &srv.url("/"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    let mut lines = out.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("complete_requests,failed_requests"));
    assert!(lines.next().unwrap().starts_with("40,0,0,"));
    let csv = std::fs::read_to_string(e).unwrap();
    assert_eq!(csv.lines().count(), 102);
    assert!(csv.starts_with("Percentage served,Time in ms\n0,"));
    let gp = std::fs::read_to_string(g).unwrap();
    assert_eq!(gp.lines().count(), 41);
    assert!(gp.starts_with("starttime\tseconds\tctime\tdtime\tttime\twait\n"));
    // apr_ctime's date, as ab writes it: "Sat Dec 05 21:44:42 2026" (day zero-padded).
    for line in gp.lines().skip(1) {
        let date = line.split('\t').next().unwrap();
        let words: Vec<&str> = date.split(' ').collect();
        assert_eq!(words.len(), 5, "{line:?}");
        assert_eq!(words[2].len(), 2, "{line:?}");
    }
}

#[test]
fn processes_and_merge_are_exact() {
    let srv = Serve::start();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.hdr");
    let b = dir.path().join("b.hdr");
    let o = bench(&[
        "--json",
        "--processes",
        "2",
        "-n",
        "301",
        "-c",
        "4",
        "-k",
        "--hdr-out",
        a.to_str().unwrap(),
        &srv.url("/"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["complete_requests"], 301);
    assert_eq!(v["status_codes"]["200"], 301);
    let o = bench(&[
        "-q",
        "-n",
        "99",
        "-c",
        "3",
        "--hdr-out",
        b.to_str().unwrap(),
        &srv.url("/"),
    ]);
    assert!(o.status.success());
    let o = bench(&["merge", "--json", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["count"], 400);
    assert_eq!(v["files"], 2);
    let o = bench(&["merge", dir.path().join("missing").to_str().unwrap()]);
    assert!(!o.status.success());
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Two engine processes wait for `--start-at`, then every 2xx body lands in `--save-bodies`
/// exactly once.
#[test]
fn start_at_and_save_bodies_across_processes() {
    let first = Arc::new(Mutex::new(None));
    let seen = first.clone();
    let srv = RawServer::start(move |i, _| {
        seen.lock().unwrap().get_or_insert_with(SystemTime::now);
        let body = format!("{{\"id\":{i}}}\n");
        let status = if i % 10 == 9 {
            "503 Busy"
        } else {
            "201 Created"
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        (resp.into_bytes(), Next::Keep)
    });
    let dir = tempfile::tempdir().unwrap();
    let bodies = dir.path().join("ids");
    std::fs::write(&bodies, "left from an earlier run\n").unwrap();
    let at = unix_now() + 2.0;
    let o = bench(&[
        "--json",
        "-l",
        "--processes",
        "2",
        "-n",
        "500",
        "-c",
        "4",
        "-k",
        "--start-at",
        &format!("{at:.3}"),
        "--save-bodies",
        bodies.to_str().unwrap(),
        &srv.url("/"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Waiting"));
    let first = first.lock().unwrap().expect("a request arrived");
    let first = first.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(
        first >= at,
        "first request {:.3} s before --start-at",
        at - first
    );
    assert!(first < at + 1.0, "first request {:.3} s late", first - at);
    let text = std::fs::read_to_string(&bodies).unwrap();
    let mut ids: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect(l)["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    ids.sort_unstable();
    let want: Vec<u64> = (0..500).filter(|i| i % 10 != 9).collect();
    assert_eq!(ids, want);
}

/// `bench merge` adds histograms: percentiles of the union, never averages of percentiles.
#[test]
fn merge_gives_percentiles_of_the_union_not_averages() {
    use c10k_bench::{hdrlog, Measurement};
    let dir = tempfile::tempdir().unwrap();
    // A fast load machine (1,500 responses at 1 ms) and a slow one (500 at 100 ms).
    let mut paths = Vec::new();
    for (name, n, us) in [("fast", 1500, 1_000), ("slow", 500, 100_000)] {
        let mut m = Measurement::default();
        for _ in 0..n {
            m.total.record(us);
        }
        let path = dir.path().join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        hdrlog::write_log(
            &mut f,
            &hdrlog::tagged(&m),
            SystemTime::now(),
            std::time::Duration::from_secs(1),
        )
        .unwrap();
        paths.push(path.to_str().unwrap().to_owned());
    }
    let o = bench(&["merge", "--json", &paths[0], &paths[1]]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ms = |k: &str| v[k].as_f64().unwrap();
    let near = |got: f64, want: f64| (got - want).abs() <= want * 0.01;
    assert_eq!(v["count"], 2000);
    // 75 % of all responses took 1 ms: the median is 1 ms, not (1 + 100) / 2 nor a weighted
    // 25.75; p90 is the slow machine's 100 ms.
    assert!(near(ms("p50_ms"), 1.0), "{v}");
    assert!(near(ms("p75_ms"), 1.0), "{v}");
    assert!(near(ms("p90_ms"), 100.0), "{v}");
    assert!(near(ms("mean_ms"), 25.75), "{v}");
    assert!(near(ms("min_ms"), 1.0) && near(ms("max_ms"), 100.0), "{v}");
}

#[test]
fn abs_tls_flags_are_refused_with_the_reason() {
    for (args, why) in [
        (
            vec!["-w", "--json"],
            "-w (or -x, -y, -z): the HTML report cannot be combined with --json or --csv",
        ),
        (vec!["-x", "border=1", "--csv"], "the HTML report cannot"),
        (vec!["-I"], "-I: TLS is not supported"),
        (vec!["-Z", "ALL"], "-Z: TLS is not supported"),
        (vec!["-f", "TLS1.2"], "-f: TLS is not supported"),
        (vec!["-E", "cert.pem"], "-E: TLS is not supported"),
    ] {
        let mut all = args.clone();
        all.extend(["-n", "1", "http://127.0.0.1:1/"]);
        let o = bench(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
}

#[test]
fn verbosity_prints_abs_request_response_and_status_lines() {
    let srv = Serve::start();
    let o = bench(&["-v", "3", "-i", "-n", "2", &srv.url("/")]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("INFO: HEAD header == \n---\nHEAD / HTTP/1.1\r\n"),
        "{err}"
    );
    assert_eq!(
        err.matches("LOG: header received:\nHTTP/1.1 200").count(),
        2,
        "{err}"
    );
    assert_eq!(
        err.matches("LOG: Response code = 200\n").count(),
        2,
        "{err}"
    );
    // -v 2 shows the exchange but not the status lines.
    let o = bench(&["-v", "2", "-n", "1", &srv.url("/")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("INFO: GET header == "), "{err}");
    assert!(err.contains("LOG: header received:"), "{err}");
    assert!(!err.contains("LOG: Response code"), "{err}");
}

#[test]
fn window_size_b_is_accepted_as_ab_does() {
    let srv = Serve::start();
    for b in ["65536", "0"] {
        let o = bench(&["-b", b, "-n", "20", "-c", "2", &srv.url("/")]);
        assert!(
            o.status.success(),
            "-b {b}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(stdout(&o).contains("Complete requests:      20\n"));
    }
}

#[test]
fn aborted_run_exits_1_with_abs_message() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = bench(&["-n", "3", &format!("http://127.0.0.1:{port}/")]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    // ab's words and errno format ("(111)", not Rust's "(os error 111)").
    assert!(
        err.contains("apr_socket_recv: Connection refused (111)\n"),
        "{err}"
    );
    // ab counts only requests that got an answer, and says nothing when none did.
    let all = format!("{}{err}", stdout(&o));
    assert!(!all.contains("Total of"), "{all}");
}

/// Not on a terminal, the progress text is ab's: "(be patient)" then a heartbeat line every
/// 10 % (at most every 100) on stderr, "Finished N requests"; small runs get "..done".
#[test]
fn progress_text_is_abs_when_not_a_terminal() {
    let srv = Serve::start();
    let url = srv.url("/");
    let ours = bench(&["-n", "300", "-c", "5", &url]);
    assert!(ours.status.success());
    let want_err = "Completed 100 requests\nCompleted 200 requests\nCompleted 300 requests\n\
                    Finished 300 requests\n";
    assert_eq!(String::from_utf8_lossy(&ours.stderr), want_err);
    let out = stdout(&ours);
    assert!(
        out.contains("\nBenchmarking 127.0.0.1 (be patient)\n\n\nServer Software:"),
        "{out}"
    );
    if let Ok(ab) = Command::new("ab")
        .args(["-n", "300", "-c", "5", &url])
        .output()
    {
        assert_eq!(String::from_utf8_lossy(&ab.stderr), want_err, "ab's own");
        assert!(stdout(&ab).contains("\nBenchmarking 127.0.0.1 (be patient)\n\n\nServer Software:"));
    }
    let small = stdout(&bench(&["-n", "100", &url]));
    assert!(
        small.contains("Benchmarking 127.0.0.1 (be patient).....done\n\n\nServer Software:"),
        "{small}"
    );
    let quiet = bench(&["-q", "-n", "300", &url]);
    assert!(quiet.stderr.is_empty(), "-q: no heartbeat");
    // Engine processes keep their counters: no heartbeat, and no "Finished" without one.
    let procs = bench(&["--processes", "2", "-n", "300", "-c", "4", &url]);
    assert!(procs.status.success());
    assert!(
        procs.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&procs.stderr)
    );
    assert!(
        stdout(&procs).contains("(be patient).....done"),
        "{}",
        stdout(&procs)
    );
}

/// On a terminal (a pty from `script`, 50 columns): the bar fits the width, is gone at the end,
/// and "..done" ends ab's "Benchmarking" line instead of standing on a line of its own.
#[test]
fn progress_bar_fits_the_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` to make a terminal (util-linux)");
        return;
    }
    let srv = Serve::start();
    let url = srv.url("/?delay=0.01");
    let line = format!("stty cols 50 rows 20; {BIN} bench -n 300 -c 3 '{url}'");
    let o = Command::new("timeout")
        .args(["60", "script", "-qec", &line, "/dev/null"])
        .output()
        .expect("run script");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let raw = String::from_utf8_lossy(&o.stdout);
    // What the terminal shows: each line keeps what follows its last \r or erase-line.
    let mut shown = Vec::new();
    let mut widest_bar = 0;
    for line in raw.split('\n') {
        let parts: Vec<&str> = line.split(['\r']).collect();
        for p in &parts {
            let p = p.replace("\x1b[2K", "");
            if p.contains("/300") {
                widest_bar = widest_bar.max(p.chars().count());
            }
        }
        let last = parts
            .iter()
            .rev()
            .map(|p| p.rsplit("\x1b[2K").next().unwrap_or(""))
            .find(|p| !p.is_empty())
            .unwrap_or("");
        shown.push(last.to_owned());
    }
    assert!(widest_bar > 0, "no bar drawn: {raw:?}");
    assert!(
        widest_bar <= 50,
        "a {widest_bar}-column bar on 50 columns: {raw:?}"
    );
    assert!(
        shown
            .iter()
            .any(|l| l == "Benchmarking 127.0.0.1 (be patient).....done"),
        "{shown:#?}"
    );
    assert!(
        !shown
            .iter()
            .any(|l| l.contains("/300") || l.trim() == "..done"),
        "a stale bar or a lone ..done: {shown:#?}"
    );
}

/// Numbers vary from run to run; the layout (labels, order, units) must not.
fn normalise(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        // ab's mean-versus-median warnings depend on the timings.
        let t = line.trim_start();
        if [
            "ERROR: The median",
            "WARNING: The median",
            "deviation apart",
            "These results",
        ]
        .iter()
        .any(|p| t.starts_with(p))
        {
            continue;
        }
        let mut l = String::new();
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_ascii_digit() {
                while chars
                    .peek()
                    .is_some_and(|c| c.is_ascii_digit() || *c == '.')
                {
                    chars.next();
                }
                while l.ends_with(' ') || l.ends_with('\t') {
                    l.pop();
                }
                l.push_str(" N");
            } else {
                l.push(c);
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

#[test]
fn golden_live_report_layout() {
    let srv = Serve::start();
    let o = bench(&[
        "-n",
        "100",
        "-c",
        "2",
        "-k",
        &srv.url("/"),
        &srv.url("/nope"),
    ]);
    assert!(o.status.success());
    let text = normalise(&stdout(&o));
    let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/bench-report.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden, &text).unwrap();
    }
    let want = std::fs::read_to_string(golden).unwrap();
    assert_eq!(
        text, want,
        "rerun with UPDATE_GOLDEN=1 after an intended change"
    );
}

#[test]
fn timelimit_and_urls_file() {
    let srv = Serve::start();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    std::fs::write(
        &list,
        format!("# targets\n{}\n\n{}\n", srv.url("/"), srv.url("/nope")),
    )
    .unwrap();
    let start = std::time::Instant::now();
    let o = bench(&[
        "--json",
        "-t",
        "0.3",
        "-c",
        "2",
        "-k",
        "--urls-file",
        list.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ok = v["status_codes"]["200"].as_u64().unwrap();
    let missing = v["status_codes"]["404"].as_u64().unwrap();
    assert!(ok > 10 && missing > 10, "{v}");
    assert!(v["time_taken_s"].as_f64().unwrap() >= 0.29);
}

/// `--help` works on every subcommand (bench too, where `-h` keeps ab's meaning).
#[test]
fn every_subcommand_answers_help() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["bench", "--help"],
        &["bench", "-h"],
        &["bench", "merge", "--help"],
        &["lab", "--help"],
        &["lab", "render", "--help"],
        &["status", "--help"],
        &["status", "processlist", "--help"],
        &["status", "counters", "--help"],
        &["status", "watch", "--help"],
        &["help", "bench"],
    ] {
        let o = Command::new(BIN).args(args).output().expect("run c10k");
        let out = stdout(&o);
        assert!(
            o.status.success() && out.contains("Usage:"),
            "{args:?}: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = bench(&["--help"]);
    assert!(stdout(&o).contains("-n <requests>"), "{}", stdout(&o));
}

// ---- Differential checks against the real `ab` (apache2-utils; .ci/run installs it). ----

/// Runs a program under coreutils' `timeout`, so no test waits on a hung peer forever.
fn bounded(prog: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(prog)
        .args(args)
        .output()
        .expect("run timeout")
}

/// True when `ab` runs here; otherwise says so (the test then checks c10k alone or skips).
fn have_ab() -> bool {
    let ok = Command::new("ab")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped the comparison: ab is not installed (apt-get install apache2-utils)");
    }
    ok
}

/// The report lines whose figures do not depend on timing, as "Label: value" (the failure
/// split as it stands).
fn counts(text: &str) -> Vec<String> {
    const LABELS: [&str; 9] = [
        "Document Length:",
        "Complete requests:",
        "Failed requests:",
        "   (Connect:",
        "Write errors:",
        "Non-2xx responses:",
        "Keep-Alive requests:",
        "Total transferred:",
        "HTML transferred:",
    ];
    text.lines()
        .filter(|l| LABELS.iter().any(|p| l.starts_with(p)))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// A raw server for the differential runs: ab and c10k ask for different connection
/// handling (ab: HTTP/1.0, `Connection: Keep-Alive` with -k; c10k: HTTP/1.1, `Connection:
/// close` without -k), so it keeps a connection when the request allows it and says so in the
/// same header bytes either way. `body(i)` is request i's body; `status` its status line.
fn diff_server(status: &'static str, body: fn(u64) -> Vec<u8>) -> RawServer {
    RawServer::start(move |i, req| {
        let head = String::from_utf8_lossy(req).to_ascii_lowercase();
        let http10 = head.lines().next().is_some_and(|l| l.ends_with("http/1.0"));
        let keep = if http10 {
            head.contains("connection: keep-alive")
        } else {
            !head.contains("connection: close")
        };
        let head_only = head.starts_with("head ");
        let b = body(i);
        let mut resp = format!(
            "HTTP/1.1 {status}\r\nServer: diff\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
            b.len(),
            if keep { "keep-alive" } else { "close" }
        )
        .into_bytes();
        if !head_only {
            resp.extend_from_slice(&b);
        }
        (resp, if keep { Next::Keep } else { Next::Close })
    })
}

/// The same runs through ab and c10k bench, each against a fresh server (so request numbers,
/// and with them the varying body lengths, start from 0 for both): the figures that do not
/// depend on timing must be equal, and so must the -e and -g files' shapes.
#[test]
fn counts_equal_abs_on_the_same_runs() {
    if !have_ab() {
        return;
    }
    fn fixed(_: u64) -> Vec<u8> {
        b"hello\n".to_vec()
    }
    // 5, 6, 7, 5, ... bytes: ab takes the first length as the document's and counts every
    // other one under Length, unless -l.
    fn varying(i: u64) -> Vec<u8> {
        vec![b'x'; 5 + (i % 3) as usize]
    }
    let dir = tempfile::tempdir().unwrap();
    let post = dir.path().join("post");
    std::fs::write(&post, "a=1&b=2").unwrap();
    let post = post.to_str().unwrap();
    // (status line, body of request i, flags, path)
    type Case<'a> = (&'static str, fn(u64) -> Vec<u8>, Vec<&'a str>, &'static str);
    let cases: Vec<Case<'_>> = vec![
        ("200 OK", fixed, vec!["-n", "20", "-c", "2"], "/"),
        ("200 OK", fixed, vec!["-n", "20", "-c", "2", "-k"], "/"),
        ("200 OK", varying, vec!["-n", "9"], "/vary"),
        ("200 OK", varying, vec!["-n", "9", "-l"], "/vary"),
        ("200 OK", varying, vec!["-n", "9", "-k"], "/vary"),
        ("404 Not Found", fixed, vec!["-n", "5", "-c", "1"], "/404"),
        ("500 Oops", fixed, vec!["-n", "6", "-c", "3", "-k"], "/500"),
        ("200 OK", fixed, vec!["-n", "4", "-i"], "/"),
        ("200 OK", fixed, vec!["-n", "4", "-m", "DELETE"], "/"),
        (
            "201 Created",
            fixed,
            vec!["-n", "4", "-p", post, "-T", "a/b"],
            "/",
        ),
        ("200 OK", fixed, vec!["-n", "4", "-u", post], "/"),
        (
            "200 OK",
            fixed,
            vec!["-n", "4", "-C", "a=1", "-H", "X-A: 1"],
            "/",
        ),
    ];
    for (status, body, args, path) in cases {
        let mut figures = Vec::new();
        for prog in ["ab", BIN] {
            let srv = diff_server(status, body);
            let mut all: Vec<&str> = if prog == BIN { vec!["bench"] } else { vec![] };
            all.extend(["-s", "10"]);
            all.extend(&args);
            let url = srv.url(path);
            all.push(&url);
            let o = bounded(prog, &all);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{prog} {args:?}: {err}");
            figures.push(counts(&stdout(&o)));
        }
        assert!(!figures[0].is_empty(), "{args:?}: no figures from ab");
        assert_eq!(
            figures[1], figures[0],
            "c10k (left) and ab (right), {args:?}"
        );
    }

    // -e and -g: the same header and one line per percentage / per request.
    let mut files = Vec::new();
    for prog in ["ab", BIN] {
        let srv = diff_server("200 OK", fixed);
        let (e, g) = (dir.path().join("e.csv"), dir.path().join("g.tsv"));
        let mut all: Vec<&str> = if prog == BIN { vec!["bench"] } else { vec![] };
        let url = srv.url("/");
        all.extend(["-q", "-s", "10", "-n", "7", "-e", e.to_str().unwrap()]);
        all.extend(["-g", g.to_str().unwrap(), &url]);
        assert!(bounded(prog, &all).status.success(), "{prog}");
        let shape = |text: String| {
            let first = text.lines().next().unwrap_or("").to_owned();
            (first, text.lines().count())
        };
        files.push((
            shape(std::fs::read_to_string(&e).unwrap()),
            shape(std::fs::read_to_string(&g).unwrap()),
        ));
    }
    assert_eq!(files[1], files[0], "c10k (left) and ab (right): -e and -g");
}

/// ab's `-v` lines: from 2, the exchange and, for a non-2xx answer, "WARNING: Response code not
/// 2xx"; from 3, "LOG: Response code = N" for a 2xx one — one or the other, never both (c10k
/// printed both for a 404). c10k prints them on stderr (README), ab on stdout.
#[test]
fn verbose_lines_are_abs() {
    let verbose_lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("LOG: ") || l.starts_with("WARNING: Response"))
            .map(|l| {
                l.trim_start_matches("Benchmarking 127.0.0.1 (be patient)...")
                    .to_owned()
            })
            .collect()
    };
    let srv = diff_server("404 Not Found", |_| b"nope\n".to_vec());
    let ok = diff_server("200 OK", |_| b"ok\n".to_vec());
    for (v, url, want) in [
        (
            "2",
            srv.url("/"),
            &[
                "LOG: header received:",
                "WARNING: Response code not 2xx (404)",
            ][..],
        ),
        (
            "3",
            srv.url("/"),
            &[
                "LOG: header received:",
                "WARNING: Response code not 2xx (404)",
            ][..],
        ),
        ("2", ok.url("/"), &["LOG: header received:"][..]),
        (
            "4",
            ok.url("/"),
            &["LOG: header received:", "LOG: Response code = 200"][..],
        ),
    ] {
        let args = ["-s", "10", "-n", "1", "-v", v, &url];
        let mut all = vec!["bench"];
        all.extend(args);
        let o = bounded(BIN, &all);
        assert!(o.status.success());
        let ours = verbose_lines(&String::from_utf8_lossy(&o.stderr));
        assert_eq!(ours, want, "-v {v} {url}");
        if Command::new("ab").arg("-V").output().is_ok() {
            let o = bounded("ab", &args);
            assert_eq!(verbose_lines(&stdout(&o)), want, "ab's own, -v {v} {url}");
        }
    }
}

/// What ab refuses before running, c10k refuses (exit 2, naming the flag); what ab accepts,
/// c10k accepts, but for the differences README lists.
#[test]
fn accepts_and_refuses_what_ab_does() {
    let srv = diff_server("200 OK", |_| b"ok\n".to_vec());
    let url = srv.url("/");
    // ab's `[http[s]://]hostname[:port]/path`: no scheme means http (c10k refused it).
    let bare = url.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("body");
    std::fs::write(&f, "x").unwrap();
    let f = f.to_str().unwrap();
    let missing = dir.path().join("missing");
    let missing = missing.to_str().unwrap();
    let refused: Vec<(Vec<&str>, &str)> = vec![
        (vec!["-n", "0", &url], "-n"),
        // c10k: clap's "unexpected argument '-1'" and its `-- -1` advice, naming no flag.
        (vec!["-n", "-1", &url], "-n"),
        (vec!["-c", "-2", &url], "-c"),
        (vec!["-n", "5", "-c", "10", &url], "-c"),
        (vec!["-n", &url], "-n"),
        (vec!["-n", "2", "-p", missing, &url], "-p"),
        (vec!["-n", "2", "-p", f, "-u", f, &url], "-p and -u"),
        (vec!["-n", "2", "-i", "-p", f, &url], "-i"),
        (vec!["-n", "2", "http://127.0.0.1:99999/"], "bad port"),
        (vec!["-n", "2", "ftp://127.0.0.1/"], "invalid URL"),
    ];
    let ab = have_ab();
    for (args, names) in refused {
        let mut all = vec!["bench", "-s", "10"];
        all.extend(&args);
        let o = bounded(BIN, &all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(names), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}: refused before the banner");
        if ab {
            let mut all = vec!["-s", "10"];
            all.extend(&args);
            let o = bounded("ab", &all);
            assert!(!o.status.success(), "ab accepted {args:?}");
            assert!(!stdout(&o).contains("Server Software:"), "ab ran {args:?}");
        }
    }
    let accepted: Vec<Vec<&str>> = vec![
        vec!["-n", "3", &bare],
        vec!["-n", "3", "-c", "3", "-b", "0", "-q", "-S", "-d", &url],
        vec![
            "-n", "2", "-C", "a=1", "-C", "b=2", "-H", "X-A: 1", "-H", "X-B: 2", &url,
        ],
        vec!["-n", "2", "-A", "u:p", "-P", "v:q", "-B", "127.0.0.1", &url],
        // ab's -B resolves a host name (c10k refused one: "not an IP address").
        vec!["-n", "2", "-B", "localhost", &url],
        vec!["-t", "1", "-n", "3", "-k", &url],
    ];
    for args in accepted {
        let mut all = vec!["bench", "-s", "10"];
        all.extend(&args);
        let o = bounded(BIN, &all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{args:?}: {err}");
        let n = args
            .iter()
            .position(|a| *a == "-n")
            .map_or("1", |i| args[i + 1]);
        let want = format!("Complete requests:      {n}\n");
        assert!(stdout(&o).contains(&want), "{args:?}: {}", stdout(&o));
        if ab {
            let mut all = vec!["-s", "10"];
            all.extend(&args);
            let o = bounded("ab", &all);
            assert!(o.status.success(), "ab refused {args:?}");
            assert!(stdout(&o).contains(&want), "ab {args:?}: {}", stdout(&o));
        }
    }
}

/// ab's `-w` report (and `-x`, `-y`, `-z`, which turn it on too in ab): the HTML table row for
/// row, attributes where ab puts them. c10k refused all four before ("-w: ab's HTML report is
/// not supported").
#[test]
fn html_report_is_abs() {
    let dir = tempfile::tempdir().unwrap();
    let post = dir.path().join("post");
    std::fs::write(&post, "a=1").unwrap();
    let post = post.to_str().unwrap();
    let after_banner = |o: &Output| -> String {
        let text = stdout(o);
        let from = text.find("</p>").map_or(0, |i| i);
        normalise(&text[from..])
    };
    let ab = have_ab();
    for (status, args) in [
        ("200 OK", vec!["-w", "-n", "4", "-c", "2"]),
        (
            "404 Not Found",
            vec![
                "-x", "border=1", "-y", "class=r", "-n", "3", "-k", "-p", post,
            ],
        ),
        ("200 OK", vec!["-z", "bgcolor=red", "-n", "3", "-l"]),
    ] {
        let srv = diff_server(status, |_| b"hello\n".to_vec());
        let url = srv.url("/");
        let mut all = vec!["bench", "-s", "10"];
        all.extend(&args);
        all.push(&url);
        let o = bounded(BIN, &all);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let ours = after_banner(&o);
        assert!(
            stdout(&o).starts_with("<p>\n This is c10k bench"),
            "{}",
            stdout(&o)
        );
        assert!(ours.contains("\n<table "), "{args:?}: {ours}");
        assert!(ours.trim_end().ends_with("</table>"), "{args:?}: {ours}");
        assert!(
            !ours.contains("Transactions:"),
            "{args:?}: no siege lines in HTML"
        );
        if ab {
            let srv = diff_server(status, |_| b"hello\n".to_vec());
            let url = srv.url("/");
            let mut all = vec!["-s", "10"];
            all.extend(&args);
            all.push(&url);
            let o = bounded("ab", &all);
            assert!(o.status.success(), "ab {args:?}");
            assert_eq!(
                ours,
                after_banner(&o),
                "c10k (left) and ab (right), {args:?}"
            );
        }
    }
}
