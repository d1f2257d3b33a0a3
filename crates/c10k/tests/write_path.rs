//! The write path's promise, end to end through the real binary: drive `POST /messages` at
//! `c10k serve`, `kill -9` it (its whole process group) in the middle of the load, start it again on
//! the same data dir, and check that every message that got a 201 is readable — exactly once —
//! through `GET /messages`. SQLite always; MariaDB and PostgreSQL when `C10K_TEST_MYSQL_URL` /
//! `C10K_TEST_POSTGRES_URL` are set (`eval "$(scripts/ci-services.sh)"`).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn start(data: &Path, addr: SocketAddr, database: Option<&str>, instance: u16) -> Child {
    start_with(
        data,
        addr,
        database,
        &["--instance-id", &instance.to_string()],
    )
}

fn start_with(data: &Path, addr: SocketAddr, database: Option<&str>, extra: &[&str]) -> Child {
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
    let child = cmd.spawn().unwrap();
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
