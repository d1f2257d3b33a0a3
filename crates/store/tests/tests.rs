//! Integration tests of the write path against real databases: SQLite always, MariaDB and
//! PostgreSQL when `C10K_TEST_MYSQL_URL` / `C10K_TEST_POSTGRES_URL` are set (CI sets them with
//! `scripts/ci-services.sh`).

mod util;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use c10k_store::{Store, StoreError};
use util::*;

fn post(store: &Store, room: &str, i: usize) -> Result<u64, StoreError> {
    pollster::block_on(store.post(room, "tester", &format!("message {i}"), None)).map(|m| m.id)
}

/// Many concurrent writers: every write acknowledged, fewer fsyncs than writes (group commit),
/// everything in the database exactly once after the flush, journal segments cleaned up.
#[test]
fn concurrent_writes_group_commit_and_flush() {
    for (k, backend) in backends().into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(&config(dir.path(), &backend, 900 + k as u16)));
        let room = unique("gc");
        let threads: Vec<_> = (0..32)
            .map(|t| {
                let store = store.clone();
                let room = room.clone();
                std::thread::spawn(move || {
                    (0..40)
                        .map(|i| post(&store, &room, t * 100 + i).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut ids: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let stats = store.stats();
        assert_eq!(stats.appended, 32 * 40, "{}", backend.name);
        assert!(
            stats.fsyncs < stats.appended,
            "{}: {} fsyncs for {} writes",
            backend.name,
            stats.fsyncs,
            stats.appended
        );
        eprintln!(
            "{}: {} writes, {} fsyncs",
            backend.name, stats.appended, stats.fsyncs
        );
        assert!(
            store.wait_flushed(Duration::from_secs(30)),
            "{}: not flushed",
            backend.name
        );
        assert_each_once(&store, &ids, backend.name);
        // Reads see them all, in id order.
        ids.sort_unstable();
        let got: Vec<u64> = pollster::block_on(store.list(&room, 0, 1000, None))
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect();
        assert!(got == ids[..1000], "{}: GET /messages order", backend.name);
    }
}

/// Read-your-writes: a row is visible before the flusher has written it.
#[test]
fn reads_merge_unflushed_rows() {
    for (k, backend) in backends().into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), &backend, 910 + k as u16);
        cfg.flush_interval = 60_000; // nothing gets flushed during the test
        cfg.flush_batch = 5000;
        let store = open(&cfg);
        let room = unique("ryw");
        let ids: Vec<u64> = (0..10).map(|i| post(&store, &room, i).unwrap()).collect();
        assert_eq!(store.stats().flushed, 0);
        let got = pollster::block_on(store.list(&room, ids[4], 3, None)).unwrap();
        assert_eq!(
            got.iter().map(|m| m.id).collect::<Vec<_>>(),
            ids[5..8],
            "{}",
            backend.name
        );
    }
}

/// The crash test's child: runs only when re-executed by `kill_9_mid_load_loses_nothing`,
/// prints `ACK <id>` for every acknowledged write until it is killed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("C10K_CRASH_DIR") else {
        return;
    };
    let backend = Backend {
        name: "child",
        url: std::env::var("C10K_CRASH_URL").ok(),
    };
    let instance: u16 = std::env::var("C10K_CRASH_INSTANCE")
        .unwrap()
        .parse()
        .unwrap();
    let mut cfg = config(std::path::Path::new(&dir), &backend, instance);
    if std::env::var("C10K_CRASH_NO_FLUSH").is_ok() {
        cfg.flush_interval = 600_000;
        cfg.flush_batch = 5000;
    } else {
        cfg.flush_batch = 50;
    }
    let store = Arc::new(open(&cfg));
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let (store, out) = (store.clone(), out.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    match post(&store, "crash", t * 1_000_000 + i) {
                        Ok(id) => {
                            let mut o = out.lock().unwrap();
                            let _ = writeln!(o, "ACK {id}");
                            let _ = o.flush();
                        }
                        Err(e) => {
                            eprintln!("child: {e}");
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// `kill -9` a process in the middle of writing, restart on the same journal: every id that was
/// acknowledged is in the database exactly once — whether or not the flusher had got to it.
#[test]
fn kill_9_mid_load_loses_nothing() {
    for (k, backend) in backends().into_iter().enumerate() {
        for no_flush in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let instance = 920 + 2 * k as u16 + u16::from(no_flush);
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
                .env("C10K_CRASH_DIR", dir.path())
                .env("C10K_CRASH_INSTANCE", instance.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            if let Some(url) = &backend.url {
                cmd.env("C10K_CRASH_URL", url);
            }
            if no_flush {
                cmd.env("C10K_CRASH_NO_FLUSH", "1");
            }
            let mut child = cmd.spawn().unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let mut acked = Vec::new();
            let start = Instant::now();
            while acked.len() < 3000 && start.elapsed() < Duration::from_secs(60) {
                match lines.next() {
                    Some(Ok(line)) => {
                        if let Some(id) = line.strip_prefix("ACK ") {
                            acked.push(id.parse::<u64>().unwrap());
                        }
                    }
                    _ => break,
                }
            }
            child.kill().unwrap(); // SIGKILL
                                   // Acknowledgements printed before the kill still count.
            for line in lines.map_while(Result::ok) {
                if let Some(id) = line.strip_prefix("ACK ") {
                    acked.push(id.parse::<u64>().unwrap());
                }
            }
            let _ = child.wait();
            assert!(
                acked.len() >= 100,
                "{}: child acknowledged only {}",
                backend.name,
                acked.len()
            );

            let store = open(&config(dir.path(), &backend, instance));
            assert!(
                store.wait_flushed(Duration::from_secs(60)),
                "{}: replay did not drain",
                backend.name
            );
            assert_each_once(&store, &acked, backend.name);
            // New ids after the restart are above every acknowledged one.
            let next = post(&store, "crash", 0).unwrap();
            assert!(next > *acked.iter().max().unwrap());
            eprintln!(
                "{} (no_flush={no_flush}): {} acknowledged before kill -9, all present once",
                backend.name,
                acked.len()
            );
        }
    }
}

/// Database unreachable: writes are still acknowledged from the journal until the backlog hits
/// --max-lag, then refused with 503 + Retry-After.
#[test]
fn database_down_acknowledges_until_max_lag() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend {
        name: "closed-port",
        url: Some(format!(
            "postgres://nobody:x@127.0.0.1:{}/none",
            closed_port()
        )),
    };
    let mut cfg = config(dir.path(), &backend, 940);
    cfg.max_lag = 50;
    let store = open(&cfg);
    for i in 0..50 {
        post(&store, "down", i).unwrap_or_else(|e| panic!("write {i} refused: {e}"));
    }
    let e = post(&store, "down", 50).unwrap_err();
    assert!(matches!(e, StoreError::Backlog { .. }), "{e}");
    assert!(e.is_transient());
    assert!(e.to_string().contains("--max-lag"), "{e}");
    assert!(wait_until(Duration::from_secs(5), || store
        .stats()
        .db_errors
        > 0));
}

/// A real database goes away mid-run and comes back: writes keep being acknowledged, and the
/// backlog drains to zero once it is back.
#[test]
fn database_outage_then_drain() {
    for (k, backend) in real_backends().into_iter().enumerate() {
        let url = backend.url.clone().unwrap();
        let (_, upstream) = via(&url, "127.0.0.1:1".parse().unwrap());
        let proxy = Proxy::start(upstream);
        let (proxied, _) = via(&url, proxy.addr);
        let b = Backend {
            name: backend.name,
            url: Some(proxied),
        };
        let dir = tempfile::tempdir().unwrap();
        let store = open(&config(dir.path(), &b, 950 + k as u16));
        let mut ids: Vec<u64> = (0..20)
            .map(|i| post(&store, "outage", i).unwrap())
            .collect();
        assert!(store.wait_flushed(Duration::from_secs(10)));

        proxy.set_up(false);
        ids.extend((20..220).map(|i| post(&store, "outage", i).unwrap()));
        assert!(
            wait_until(Duration::from_secs(10), || store.stats().db_errors > 0),
            "{}: flusher saw no error while the database was down",
            b.name
        );
        assert!(store.stats().backlog > 0);

        proxy.set_up(true);
        assert!(
            store.wait_flushed(Duration::from_secs(30)),
            "{}: backlog did not drain",
            b.name
        );
        assert_each_once(&store, &ids, b.name);
    }
}

/// Instance ids leased through the database: two live holders never share one; a released id
/// can be taken again.
#[test]
fn instance_leases_are_exclusive() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let shared_db = backend
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}/shared.db", dir.path().display()));
        let mk = |sub: &str| {
            let mut c = c10k_store::StoreConfig::in_dir(dir.path().join(sub));
            c.database = Some(shared_db.clone());
            c
        };
        let a = Store::open(&mk("a"), 0).unwrap();
        let b = Store::open(&mk("b"), 0).unwrap();
        assert_ne!(a.instance_id(), b.instance_id(), "{}", backend.name);

        // A second live holder cannot take `a`'s id, even asking for it directly.
        let db = a.db().clone();
        let a_id = a.instance_id();
        let stolen = a
            .block_on(async move {
                let now = c10k_store::Clock::now_ms(&c10k_store::SystemClock);
                db.lease("intruder", now, now + 60_000, a_id + 1).await
            })
            .unwrap()
            .unwrap();
        assert_ne!(stolen.map(|(id, _)| id), Some(a_id), "{}", backend.name);
        if let Some((id, _)) = stolen {
            // Give the intruder's id back so it does not linger in a shared database.
            let db = a.db().clone();
            a.block_on(async move { db.release(id, "intruder", 0).await })
                .unwrap()
                .unwrap();
        }

        // Once `a` closes, its id is free again.
        a.close();
        drop(a);
        let c = Store::open(&mk("c"), 0).unwrap();
        assert_eq!(c.instance_id(), a_id, "{}", backend.name);
        drop((b, c));
    }
}

#[test]
fn ids_from_the_store_are_unique_and_increasing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&config(
        dir.path(),
        &Backend {
            name: "sqlite",
            url: None,
        },
        960,
    ));
    let ids = store.ids(10_000).unwrap();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let more = store.ids(1).unwrap();
    assert!(more[0] > ids[9_999]);
}

/// `--write-mode direct`: one auto-increment INSERT per request, committed before the answer.
#[test]
fn direct_mode_inserts_before_answering() {
    for (k, backend) in backends().into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), &backend, 970 + k as u16);
        cfg.write_mode = c10k_store::WriteMode::Direct;
        let store = open(&cfg);
        let room = unique("direct");
        let ids: Vec<u64> = (0..5).map(|i| post(&store, &room, i).unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{}", backend.name);
        assert_eq!(store.stats().appended, 0, "no journal in direct mode");
        let got = pollster::block_on(store.list(&room, 0, 10, None)).unwrap();
        assert_eq!(
            got.iter().map(|m| m.id).collect::<Vec<_>>(),
            ids,
            "{}",
            backend.name
        );
    }
}

/// Several worker processes on one data dir: each slot has its own journal and instance id
/// (`--instance-id` + slot), and all of them flush into the one database (for SQLite, one file
/// with several writers).
#[test]
fn worker_slots_share_a_database_with_separate_journals() {
    for (k, backend) in backends().into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), &backend, 980 + 4 * k as u16);
        let stores: Vec<Arc<Store>> = (0..3)
            .map(|slot| Arc::new(Store::open(&cfg, slot).unwrap()))
            .collect();
        let ids_of: Vec<u16> = stores.iter().map(|s| s.instance_id()).collect();
        let base = 980 + 4 * k as u16;
        assert_eq!(ids_of, vec![base, base + 1, base + 2], "{}", backend.name);
        assert_ne!(stores[0].journal_dir(), stores[1].journal_dir());
        let threads: Vec<_> = stores
            .iter()
            .cloned()
            .map(|s| {
                std::thread::spawn(move || {
                    (0..200)
                        .map(|i| post(&s, "slots", i).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let ids: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        for s in &stores {
            assert!(s.wait_flushed(Duration::from_secs(30)), "{}", backend.name);
        }
        assert_each_once(&stores[0], &ids, backend.name);
    }
}

/// Ids are issued by the journal writer in journal order, so the unflushed rows are in id order
/// and `after=ID` paging over them misses nothing even with many concurrent writers.
#[test]
fn concurrent_unflushed_rows_page_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Backend {
        name: "sqlite",
        url: None,
    };
    let mut cfg = config(dir.path(), &sqlite, 965);
    cfg.flush_interval = 600_000;
    cfg.flush_batch = 5000;
    let store = Arc::new(open(&cfg));
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| post(&store, "order", t * 100 + i).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(store.stats().flushed, 0);
    for after in [0, ids[0], ids[100], ids[399], ids[798], ids[799]] {
        let got: Vec<u64> = pollster::block_on(store.list("order", after, 1000, None))
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect();
        let want: Vec<u64> = ids.iter().copied().filter(|&id| id > after).collect();
        assert!(
            got == want,
            "after={after}: {} rows, want {}",
            got.len(),
            want.len()
        );
    }
}

/// Non-ASCII text (4-byte UTF-8 included) survives the journal and every database.
#[test]
fn unicode_round_trips_through_every_database() {
    for (k, backend) in backends().into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&config(dir.path(), &backend, 995 + k as u16));
        let room = unique("ünï");
        let text = "héllo 👋 世界\n\ttab";
        let m = pollster::block_on(store.post(&room, "zoë", text, None)).unwrap();
        assert!(store.wait_flushed(Duration::from_secs(10)));
        let db = store.db().clone();
        let r2 = room.clone();
        let rows = store
            .block_on(async move { db.room_after("c10k_messages", &r2, 0, 10).await })
            .unwrap()
            .unwrap();
        assert_eq!(rows.len(), 1, "{}", backend.name);
        assert_eq!(rows[0], m, "{}", backend.name);
    }
}

/// A child that leases an instance id in a one-slot data dir, says which, and dies without
/// closing (as a crashed or `kill -9`ed worker does). Runs only when the parent test starts it.
#[test]
fn lease_crash_child() {
    let Ok(dir) = std::env::var("C10K_LEASE_CHILD_DIR") else {
        return;
    };
    let mut cfg = c10k_store::StoreConfig::in_dir(&dir);
    cfg.database = std::env::var("C10K_LEASE_CHILD_URL").ok();
    cfg.lease_ids = 3;
    let store = open(&cfg);
    // Its own line, after libtest's "test ... " prefix.
    println!("\nLEASED {}", store.instance_id());
    std::process::abort();
}

/// Workers that close, and workers that crash, give their instance id back: with a space of 3
/// ids, 12 crashes and 12 clean closes in one data dir never run out (before, each crash held its
/// id for the lease's 5 minutes, and the 4th start found every id taken). SQLite only: a shared
/// server database has other tests' leases in the same small id range.
#[test]
fn recycled_workers_never_exhaust_instance_ids() {
    let dir = tempfile::tempdir().unwrap();
    let shared_db = format!("sqlite://{}/shared.db", dir.path().display());
    let data = dir.path().join("data");
    let mut seen = Vec::new();
    for round in 0..12 {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lease_crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("C10K_LEASE_CHILD_DIR", &data)
            .env("C10K_LEASE_CHILD_URL", &shared_db)
            .stderr(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text
            .lines()
            .find_map(|l| l.split("LEASED ").nth(1))
            .unwrap_or_else(|| panic!("crash {round}: no lease: {text}"));
        seen.push(id.parse::<u16>().unwrap());
    }
    // The slot's successor takes over its crashed predecessor's id.
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");

    let mut cfg = c10k_store::StoreConfig::in_dir(&data);
    cfg.database = Some(shared_db);
    cfg.lease_ids = 3;
    for round in 0..12 {
        let store = Store::open(&cfg, round % 2).unwrap_or_else(|e| panic!("open {round}: {e}"));
        store.close();
    }
    let store = Store::open(&cfg, 0).unwrap();
    let db = store.db().clone();
    let live = store
        .block_on(async move {
            db.live_leases(c10k_store::Clock::now_ms(&c10k_store::SystemClock))
                .await
        })
        .unwrap()
        .unwrap();
    assert_eq!(live, vec![store.instance_id()]);
}

/// A second server on the same data dir is refused at once, naming the holder, instead of
/// waiting for a journal that will never be free.
#[test]
fn a_second_owner_of_a_data_dir_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &backends()[0], 930);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "hold_child", "--nocapture", "--test-threads=1"])
        .env("C10K_HOLD_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pid = loop {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(p) = l.split("HOLDING ").nth(1) {
                    break p.to_owned();
                }
            }
            _ => panic!("the holder did not start"),
        }
    };
    let start = Instant::now();
    let e = Store::open(&cfg, 0).unwrap_err().to_string();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(e.contains("--data-dir"), "{e}");
    assert!(e.contains(&format!("pid {pid}")), "{e}");
}

/// Holds a store open until killed, for the test above. Its parent is that test's process, not
/// the test's own parent, so to the test it is another server, not a worker being replaced.
#[test]
fn hold_child() {
    let Ok(dir) = std::env::var("C10K_HOLD_DIR") else {
        return;
    };
    let cfg = config(std::path::Path::new(&dir), &backends()[0], 931);
    let store = open(&cfg);
    println!("\nHOLDING {}", std::process::id());
    std::thread::sleep(Duration::from_secs(60));
    drop(store);
}

/// One flipped byte in the middle of a journal segment costs the damaged record, not the rest of
/// the segment: 2,000 unflushed rows, a byte flipped at the middle, restart → at least 1,998 come
/// back, the damaged segment is kept aside, and the figures count the damage (before: about
/// 1,000 came back and the segment was cut at the damage).
#[test]
fn a_flipped_byte_mid_segment_loses_only_the_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend {
        name: "closed-port",
        url: Some(format!(
            "postgres://nobody:x@127.0.0.1:{}/none",
            closed_port()
        )),
    };
    let mut cfg = config(dir.path(), &backend, 941);
    cfg.db_acquire_timeout = 0.2;
    let store = open(&cfg);
    for i in 0..2000 {
        post(&store, "flip", i).unwrap();
    }
    store.close();
    drop(store);
    let journal = dir.path().join("journal-0");
    let seg = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&seg, &bytes).unwrap();

    let store = open(&cfg);
    let stats = store.stats();
    eprintln!(
        "after a flipped byte: {} of 2000 rows recovered, {} damaged range(s), {} record(s) lost",
        stats.backlog, stats.journal_damaged, stats.journal_records_lost
    );
    assert!(
        stats.backlog >= 1998,
        "only {} of 2000 recovered",
        stats.backlog
    );
    assert_eq!(stats.journal_damaged, 1);
    assert!((1..=2).contains(&stats.journal_records_lost), "{stats:?}");
    let mut copy = seg.clone().into_os_string();
    copy.push(".damaged");
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        bytes,
        "the copy is the damaged segment as found"
    );
}

/// Runs one statement on `url` with a connection of its own (creating and dropping databases).
fn admin(url: &str, sql: &str) {
    use sqlx::{Connection, Executor};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if url.starts_with("postgres") {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            c.execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        } else {
            let mut c = sqlx::MySqlConnection::connect(url).await.unwrap();
            c.execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    });
}

/// Four workers starting at once on an empty PostgreSQL or MariaDB database all boot: the schema
/// is created once, under a database lock. Before, they raced on `CREATE TABLE IF NOT EXISTS`
/// (`duplicate key value violates unique constraint "pg_type_typname_nsp_index"`) and some boots
/// failed. Needs `scripts/ci-services.sh` (which lets the test user create `c10k_*` databases).
#[test]
fn four_workers_boot_together_on_an_empty_database() {
    for backend in real_backends() {
        let url = backend.url.clone().unwrap();
        let (base, _) = url.rsplit_once('/').unwrap();
        for round in 0..3 {
            let name = unique(&format!("c10k_fresh_{round}"));
            admin(&url, &format!("CREATE DATABASE {name}"));
            let fresh = format!("{base}/{name}");
            let dir = tempfile::tempdir().unwrap();
            let gate = Arc::new(std::sync::Barrier::new(4));
            let threads: Vec<_> = (0..4)
                .map(|slot| {
                    let mut cfg = c10k_store::StoreConfig::in_dir(dir.path());
                    cfg.database = Some(fresh.clone());
                    cfg.db_pool_size = Some(2);
                    let gate = gate.clone();
                    std::thread::spawn(move || {
                        gate.wait();
                        Store::open(&cfg, slot).map_err(|e| format!("{e:#}"))
                    })
                })
                .collect();
            let opened: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            let mut ids = Vec::new();
            let mut failed = Vec::new();
            for store in opened {
                match store {
                    Ok(s) => {
                        ids.push(s.instance_id());
                        s.close();
                    }
                    Err(e) => failed.push(e),
                }
            }
            let drop_sql = if backend.name == "postgres" {
                format!("DROP DATABASE {name} WITH (FORCE)")
            } else {
                format!("DROP DATABASE {name}")
            };
            admin(&url, &drop_sql);
            assert!(
                failed.is_empty(),
                "{} round {round}: {failed:?}",
                backend.name
            );
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), 4, "{}: instance ids {ids:?}", backend.name);
        }
    }
}

/// PostgreSQL: the workers of several hosts booting together on a fresh database all create the
/// schema at once. `CREATE TABLE IF NOT EXISTS` is not safe against itself there (the sessions
/// collide on the catalog's unique index and a worker fails to boot), so the migration takes an
/// advisory lock. Found by `scripts/cluster.sh 2 all --postgres`.
#[test]
fn simultaneous_first_boots_create_the_schema_once() {
    let Some(url) = util::real_backends()
        .into_iter()
        .find(|b| b.name == "postgres")
        .and_then(|b| b.url)
    else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for round in 0..3 {
        // A fresh, empty schema each round: the first boot on a new database.
        let schema = unique(&format!("c10k_boot_{round}"));
        let sep = if url.contains('?') { '&' } else { '?' };
        let fresh = format!("{url}{sep}options[search_path]={schema}");
        let errors: Vec<String> = rt.block_on(async {
            let admin = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&admin)
                .await
                .unwrap();
            let boots = (0..8).map(|_| {
                let db = c10k_store::Db::connect_lazy(&fresh, 1, Duration::from_secs(10)).unwrap();
                tokio::spawn(async move { db.migrate().await.map_err(|e| e.to_string()) })
            });
            let mut errors = Vec::new();
            for b in boots.collect::<Vec<_>>() {
                if let Err(e) = b.await.unwrap() {
                    errors.push(e);
                }
            }
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&admin)
                .await
                .unwrap();
            errors
        });
        assert!(errors.is_empty(), "round {round}: {errors:?}");
    }
}

/// A worker that finds its SQLite database locked at start for longer than
/// `--db-acquire-timeout` (another process's write transaction, a backup, or sibling workers
/// creating the file on a slow disk) waits for it and boots. The pool's connect runs SQLite's
/// pragmas, which wait out the lock (busy timeout) past the acquire timeout; the start-up retry
/// covered only a busy error, not the pool's time-out, so the worker failed to boot ("pool
/// timed out while waiting for an open connection"), and two such boots in a row stop the
/// server. Seen under a loaded test run with two workers opening a new database.
#[test]
fn a_sqlite_database_locked_at_start_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("locked.db");
    // python3's sqlite3 holds an exclusive lock on a new rollback-journal database (the store
    // switches it to WAL, which needs that lock) for 2.5 s, then releases it.
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('CREATE TABLE t (x)')\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep(2.5)\n\
             c.execute('COMMIT')\n",
        )
        .arg(&db_path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    let mut c = c10k_store::StoreConfig::in_dir(dir.path().join("journal"));
    c.database = Some(format!("sqlite://{}", db_path.display()));
    c.db_acquire_timeout = 0.5;
    let started = Instant::now();
    let opened = Store::open(&c, 0);
    let took = started.elapsed();
    assert!(holder.wait().unwrap().success());
    let store = opened.unwrap_or_else(|e| panic!("open after {took:?}: {e}"));
    assert!(
        took >= Duration::from_secs(1),
        "the lock was not waited for: {took:?}"
    );
    drop(store);
}
