//! The write path's promise, end to end through the real binary: drive `POST /messages` at
//! `c10k serve`, `kill -9` it (its whole process group) in the middle of the load, start it again on
//! the same data dir, and check that every message that got a 201 is readable — exactly once —
//! through `GET /messages`. SQLite always; MariaDB and PostgreSQL when `C10K_TEST_MYSQL_URL` /
//! `C10K_TEST_POSTGRES_URL` are set (`eval "$(scripts/ci-services.sh)"`).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod util;

use util::ports::free_addr;

/// A server started in its own process group, which goes down with it when dropped (a test that
/// failed half-way, a server that never came up), so no test leaves a server behind.
struct Group {
    child: Child,
    _kill: util::KillGroup,
}

impl std::ops::Deref for Group {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for Group {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

fn start(data: &Path, addr: SocketAddr, database: Option<&str>, instance: u16) -> Group {
    start_with(
        data,
        addr,
        database,
        &["--instance-id", &instance.to_string()],
    )
}

fn start_with(data: &Path, addr: SocketAddr, database: Option<&str>, extra: &[&str]) -> Group {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_c10k"));
    cmd.args(["serve", "--bind", &addr.to_string()])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .env("C10K_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so `kill -9` reaches every process of the server.
        .process_group(0);
    if let Some(url) = database {
        cmd.args(["--database", url]);
    }
    // Before the wait: one that never comes up (its database down) is stopped by the panic.
    let child = cmd.spawn().unwrap();
    let child = Group {
        _kill: util::KillGroup(child.id() as i32),
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while request(addr, "GET", "/ids", "").is_err() {
        assert!(
            Instant::now() < deadline,
            "server did not come up on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn kill_group(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-9", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = child.wait();
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {out:?}")))?;
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

fn field_u64(json: &str, key: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.get(key)?.as_u64()
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_message() {
    let mut backends: Vec<(&str, Option<String>)> = vec![("sqlite", None)];
    for (name, var) in [
        ("mysql", "C10K_TEST_MYSQL_URL"),
        ("postgres", "C10K_TEST_POSTGRES_URL"),
    ] {
        match std::env::var(var) {
            Ok(url) if !url.is_empty() => backends.push((name, Some(url))),
            _ => eprintln!("skipped {name}: {var} not set"),
        }
    }
    for (k, (name, url)) in backends.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let instance = 1000 + k as u16;
        let room = format!("crash-{}-{name}", std::process::id());
        let addr = free_addr();
        let mut server = start(dir.path(), addr, url.as_deref(), instance);

        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..16)
            .map(|c| {
                let (acked, stop, room) = (acked.clone(), stop.clone(), room.clone());
                std::thread::spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let body = format!(r#"{{"room":"{room}","user":"c{c}","text":"m{i}"}}"#);
                        i += 1;
                        if let Ok((201, resp)) = request(addr, "POST", "/messages", &body) {
                            acked.lock().unwrap().push(field_u64(&resp, "id").unwrap());
                        }
                    }
                })
            })
            .collect();
        let t0 = Instant::now();
        while acked.lock().unwrap().len() < 1500 && t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        kill_group(&mut server);
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            c.join().unwrap();
        }
        let acked: Vec<u64> = acked.lock().unwrap().clone();
        assert!(
            acked.len() >= 100,
            "{name}: only {} writes acknowledged",
            acked.len()
        );

        let addr = free_addr();
        let mut server = start(dir.path(), addr, url.as_deref(), instance);
        // Page through the room: every acknowledged id, none twice.
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let (status, body) = request(
                addr,
                "GET",
                &format!("/messages?room={room}&after={after}&limit=1000"),
                "",
            )
            .unwrap();
            assert_eq!(status, 200, "{name}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let page: Vec<u64> = v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_u64().unwrap())
                .collect();
            let Some(&last) = page.last() else { break };
            seen.extend(page);
            after = last;
        }
        let unique: HashSet<u64> = seen.iter().copied().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{name}: a message came back twice"
        );
        let missing: Vec<u64> = acked
            .iter()
            .filter(|id| !unique.contains(id))
            .copied()
            .collect();
        assert!(
            missing.is_empty(),
            "{name}: {} of {} acknowledged messages lost, e.g. {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)]
        );
        eprintln!(
            "{name}: {} acknowledged before kill -9, all back after restart",
            acked.len()
        );
        kill_group(&mut server);
    }
}

/// Every worker class, two worker processes each with an instance id leased from the (SQLite)
/// database: writes are acknowledged with unique ids and all of them are readable once flushed.
#[test]
fn write_path_under_every_worker_class() {
    for class in ["sync", "thread", "gthread", "async"] {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let mut server = start_with(
            dir.path(),
            addr,
            None,
            &["-k", class, "-w", "2", "--threads", "4"],
        );
        let ids: Arc<Mutex<Vec<u64>>> = Arc::default();
        let clients: Vec<_> = (0..8)
            .map(|c| {
                let ids = ids.clone();
                std::thread::spawn(move || {
                    for i in 0..10 {
                        let body = format!(r#"{{"room":"classes","user":"c{c}","text":"{i}"}}"#);
                        let (status, resp) = request(addr, "POST", "/messages", &body).unwrap();
                        assert_eq!(status, 201, "{resp}");
                        ids.lock().unwrap().push(field_u64(&resp, "id").unwrap());
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let mut ids = ids.lock().unwrap().clone();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 80, "{class}: duplicate ids");
        let (status, body) = request(addr, "GET", "/ids?count=5", "").unwrap();
        assert_eq!(status, 200, "{class}: {body}");
        // Rows taken by the other worker process show up once flushed.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) =
                request(addr, "GET", "/messages?room=classes&limit=1000", "").unwrap();
            assert_eq!(status, 200, "{class}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let got: Vec<u64> = v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_u64().unwrap())
                .collect();
            if got == ids {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{class}: {} of 80 messages readable",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        kill_group(&mut server);
    }
}

/// The instance id bits of a message id (see `c10k_store::ids`).
fn instance_of(id: u64) -> u64 {
    (id >> 12) & 1023
}

/// Workers that retire (`--max-requests 1`) and servers that stop give their instance id leases
/// back: two worker slots keep using ids 0 and 1 however often they are replaced, and a server
/// started after a graceful stop gets them again. Before, every replaced worker leaked its lease
/// (the store figures thread kept the store alive), ids climbed with each recycle, and after
/// ~1,024 recycles no worker could boot.
#[test]
fn recycled_and_stopped_workers_give_their_instance_ids_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/shared.db", dir.path().display());
    let addr = free_addr();
    let mut server = start_with(
        &dir.path().join("a"),
        addr,
        Some(&db),
        &["-w", "2", "--max-requests", "1"],
    );
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..12 {
        let body = format!(r#"{{"room":"recycle","user":"u","text":"{i}"}}"#);
        let deadline = Instant::now() + Duration::from_secs(30);
        let resp = loop {
            match request(addr, "POST", "/messages", &body) {
                Ok((201, resp)) => break resp,
                other => {
                    assert!(Instant::now() < deadline, "write {i}: {other:?}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        seen.insert(instance_of(field_u64(&resp, "id").unwrap()));
    }
    if seen.iter().any(|&i| i >= 2) {
        kill_group(&mut server);
    }
    assert!(
        seen.iter().all(|&i| i < 2),
        "instance ids climb as workers recycle: {seen:?}"
    );
    // A graceful stop: every worker releases its lease on the way out.
    let pid = server.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let addr = free_addr();
    let mut server = start_with(&dir.path().join("b"), addr, Some(&db), &["-w", "1"]);
    let (status, resp) = request(
        addr,
        "POST",
        "/messages",
        r#"{"room":"recycle","user":"u","text":"after"}"#,
    )
    .unwrap();
    kill_group(&mut server);
    assert_eq!(status, 201, "{resp}");
    let id = instance_of(field_u64(&resp, "id").unwrap());
    assert_eq!(id, 0, "the stopped server's leases are still held");
}

/// A second server on a data dir in use is refused at once — exit 1, naming `--data-dir` and the
/// server holding it — instead of accepting connections its workers never answer while they wait
/// for the first server's journal locks.
#[test]
fn a_second_server_on_the_same_data_dir_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut first = start(dir.path(), addr, None, 700);
    let start_at = Instant::now();
    let mut second = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args([
            "serve",
            "--bind",
            &free_addr().to_string(),
            "--instance-id",
            "710",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("C10K_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if start_at.elapsed() > Duration::from_secs(10) {
            kill_group(&mut second);
            kill_group(&mut first);
            panic!("the second server is still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    kill_group(&mut first);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("--data-dir"), "{err}");
    assert!(
        err.contains(&format!("pid {}", first.id())),
        "names the first server: {err}"
    );
}

/// The built-in app owns its store and opens it on the first write-path request: a server that
/// only answers `/` creates no `./c10k-data` (issue 11.2). Before the fix every `c10k serve`
/// created it at start.
#[test]
fn serving_hello_creates_no_file_until_the_first_write() {
    let cwd = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut child = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(["serve", "--bind", &addr.to_string(), "--workers", "2"])
        .args(["--instance-id", "900"])
        .current_dir(cwd.path())
        .env_remove("C10K_DATA_DIR")
        .env_remove("C10K_DATABASE")
        .env("C10K_ADMIN", "127.0.0.1:0")
        .env("C10K_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while request(addr, "GET", "/", "").map(|r| r.0).ok() != Some(200) {
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..20 {
        assert_eq!(request(addr, "GET", "/", "").unwrap().0, 200);
    }
    let listed: Vec<_> = std::fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(listed.is_empty(), "serving / created {listed:?}");

    let (status, body) = request(
        addr,
        "POST",
        "/messages",
        r#"{"room":"lazy","user":"u","text":"t"}"#,
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let data = cwd.path().join("c10k-data");
    let journals = std::fs::read_dir(&data)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("journal-"))
        })
        .count();
    assert!(
        journals >= 1,
        "the first write opened a journal in {data:?}"
    );
    kill_group(&mut child);
}

/// The database password appears nowhere: not in the start-up lines (effective config), not in
/// `--check-config`, not in the errors of a database that cannot be reached.
#[test]
fn the_database_password_is_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_addr().port(); // nobody listens
    let url = format!("mysql://c10k:S3cretPW@127.0.0.1:{port}/c10k");
    let out = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(["serve", "--check-config", "--database", &url])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(!shown.contains("S3cretPW"), "{shown}");
    assert!(shown.contains("c10k:***@"), "{shown}");

    let addr = free_addr();
    let mut server = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(["serve", "--bind", &addr.to_string(), "--instance-id", "720"])
        .args(["--database", &url, "--db-acquire-timeout", "0.2"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("C10K_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while request(addr, "GET", "/", "").is_err() {
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A read goes to the (unreachable) database: its error is logged, the answer is generic.
    let (status, body) = request(addr, "GET", "/messages?room=r", "").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        !body.contains("S3cretPW") && !body.contains(&port.to_string()),
        "{body}"
    );
    std::thread::sleep(Duration::from_millis(500));
    kill_group(&mut server);
    let mut log = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    server
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains("c10k:***@"),
        "the log names the database: {log}"
    );
    assert!(!log.contains("S3cretPW"), "{log}");
}
