//! Shared fixtures: the databases to run against, a TCP proxy that can take a database "down",
//! and helpers to open stores.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use c10k_store::{Store, StoreConfig};

/// A database to test against: SQLite always, MariaDB/PostgreSQL when CI started them
/// (`scripts/ci-services.sh` prints the variables).
#[derive(Clone, Debug)]
pub struct Backend {
    pub name: &'static str,
    /// `None` for SQLite: the store's default file under its data dir.
    pub url: Option<String>,
}

pub fn backends() -> Vec<Backend> {
    let mut out = vec![Backend {
        name: "sqlite",
        url: None,
    }];
    out.extend(real_backends());
    out
}

/// The server databases whose URLs are set; prints a skip line for each one that is not.
pub fn real_backends() -> Vec<Backend> {
    let mut out = Vec::new();
    for (name, var) in [
        ("mysql", "C10K_TEST_MYSQL_URL"),
        ("postgres", "C10K_TEST_POSTGRES_URL"),
    ] {
        match std::env::var(var) {
            Ok(url) if !url.is_empty() => out.push(Backend {
                name,
                url: Some(url),
            }),
            _ => eprintln!("skipped {name}: {var} not set (eval \"$(scripts/ci-services.sh)\")"),
        }
    }
    out
}

/// A room, database or schema name that no earlier run used: `PREFIX_PID_NANOS`. The process id
/// alone repeats (pids wrap at 32,768 on the CI machine) and the server databases keep earlier
/// runs' rows: a room named by pid once listed an earlier run's 1,280 rows ahead of this run's.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// A store config under `dir` for `backend`, with a fixed instance id (tests sharing one server
/// database use distinct ids so their rows never collide).
pub fn config(dir: &Path, backend: &Backend, instance: u16) -> StoreConfig {
    let mut c = StoreConfig::in_dir(dir);
    c.database = backend.url.clone();
    c.instance_id = Some(instance);
    c.flush_interval = 5;
    c.db_acquire_timeout = 1.0;
    c.db_pool_size = Some(4);
    c
}

pub fn open(config: &StoreConfig) -> Store {
    Store::open(config, 0).unwrap_or_else(|e| panic!("open store: {e}"))
}

/// Every id in `ids` is in the database exactly once.
pub fn assert_each_once(store: &Store, ids: &[u64], what: &str) {
    let db = store.db().clone();
    let ids = ids.to_vec();
    let bad: Vec<(u64, i64)> = store
        .block_on(async move {
            let mut bad = Vec::new();
            for id in ids {
                let n = db.count_id(id).await.expect("count");
                if n != 1 {
                    bad.push((id, n));
                }
            }
            bad
        })
        .expect("runtime");
    assert!(
        bad.is_empty(),
        "{what}: {} ids not exactly once, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A TCP proxy in front of a database; `set_up(false)` cuts every connection and refuses new
/// ones, as a database that went away does.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (up2, conns2) = (up.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let mut list = conns2.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Proxy { addr, up, conns }
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            for c in self.conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// `url` with its host:port replaced by `addr`, and the original host:port.
pub fn via(url: &str, addr: SocketAddr) -> (String, SocketAddr) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (auth, rest) = rest.rsplit_once('@').map_or(("", rest), |(a, r)| (a, r));
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let upstream: SocketAddr = hostport
        .parse()
        .unwrap_or_else(|_| panic!("test URLs use IP:PORT, got {hostport}"));
    let at = if auth.is_empty() { "" } else { "@" };
    (format!("{scheme}://{auth}{at}{addr}/{path}"), upstream)
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}
