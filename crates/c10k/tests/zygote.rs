//! Python workers are forked by a zygote (`crates/serve/src/zygote.rs`): they are the master's
//! children, they share the interpreter's pages, they import the app themselves, and a zygote
//! that dies or outlives its configuration (`HUP`) or its log files (`USR1`) is replaced; none
//! outlives the master.

#![cfg(feature = "python")]

#[macro_use]
mod util;

use std::time::{Duration, Instant};

use util::admin::wait_until;
use util::python::apps;
use util::{children, get, running, Server};

/// `c10k serve -k CLASS -w 2 forked:app`.
fn forked(class: &str) -> Server {
    util::python::forked(class, &[])
}

/// The parent of `pid`, from `/proc/PID/stat` (the field after the parenthesised name).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The master's child that is no worker the log names: the zygote. Waits for it (5 s).
fn zygote(s: &Server) -> u32 {
    let master = s.child.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let workers = s.worker_pids();
        let others: Vec<u32> = children(master)
            .into_iter()
            .filter(|&c| running(c) && !workers.contains(&c))
            .collect();
        if let [one] = others[..] {
            return one;
        }
        assert!(
            Instant::now() < deadline,
            "no single zygote among the master's children ({others:?}):\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `field` of `/proc/PID/smaps_rollup`, in kB.
/// A signal mask of `/proc/PID/status` (`SigBlk:`, `SigIgn:`): bit N-1 is signal N.
fn signal_mask(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    u64::from_str_radix(line[field.len()..].trim(), 16).unwrap()
}

fn smaps_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {text}"))
}

fn answer(s: &Server) -> serde_json::Value {
    let r = get(s.addr, "/").unwrap();
    assert_eq!(r.status, 200, "{}", s.log());
    serde_json::from_slice(&r.body).unwrap()
}

/// Each worker is the master's child (so the master reaps it and its death signal names the
/// master), imported the app itself, and shares dirty pages with the zygote and its sibling:
/// the interpreter's heap as the zygote left it. A worker started by exec shares next to none
/// (a few kB); these share the better part of a megabyte and more.
#[test]
fn python_workers_are_forked_children_of_the_master_that_share_the_interpreter() {
    for class in ["sync", "gthread", "async"] {
        let s = forked(class);
        let master = s.child.id();
        let workers = s.worker_pids();
        assert_eq!(workers.len(), 2, "{class}: {}", s.log());
        for &w in &workers {
            assert_eq!(parent(w), Some(master), "{class}: worker {w}:\n{}", s.log());
            let shared = smaps_kb(w, "Shared_Dirty:");
            assert!(
                shared >= 512,
                "{class}: worker {w} shares {shared} kB of dirty pages:\n{}",
                s.log()
            );
        }
        let z = zygote(&s);
        assert!(!workers.contains(&z));
        // `ps` tells them apart: the workers take back the name the zygote changed, which is
        // the master's (not `exe`, after the `/proc/self/exe` the master starts the zygote by).
        let comm = |p: u32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap();
        assert_eq!(comm(z), "c10k-zygote\n", "{class}");
        // The zygote blocks HUP and TERM, and does not ignore them: a worker forked from it
        // inherits the mask, so a HUP (a rolling restart retiring it) sent before it has its
        // handlers waits for them. Ignored, such a HUP was lost and the rolling restart waited
        // for that worker forever. Each worker unblocks them once its handlers are in place.
        let hup_term = (1u64 << (libc::SIGHUP - 1)) | (1u64 << (libc::SIGTERM - 1));
        assert_eq!(signal_mask(z, "SigBlk:") & hup_term, hup_term, "{class}");
        assert_eq!(signal_mask(z, "SigIgn:") & hup_term, 0, "{class}");
        for &w in &workers {
            assert_eq!(
                signal_mask(w, "SigBlk:") & hup_term,
                0,
                "{class}: worker {w}"
            );
            assert_eq!(
                signal_mask(w, "SigIgn:") & hup_term,
                0,
                "{class}: worker {w}"
            );
        }
        assert_eq!(comm(master), "c10k\n", "{class}");
        for &w in &workers {
            assert_eq!(comm(w), "c10k\n", "{class}: worker {w}");
        }
        for _ in 0..6 {
            let a = answer(&s);
            let pid = a["pid"].as_u64().unwrap() as u32;
            assert!(workers.contains(&pid), "{class}: {a}");
            assert_eq!(a["ppid"].as_u64(), Some(u64::from(master)), "{class}: {a}");
            assert_eq!(a["imported_in"], a["pid"], "{class}: {a}");
            // Only --preload freezes (gevent's and the app's gc.get_referrers see everything).
            assert_eq!(a["frozen"], 0, "{class}: {a}");
        }
    }
}

/// A zygote killed is started again by the next worker that needs one, and `HUP` replaces the
/// zygote (it holds the configuration and listeners the rolling restart leaves behind); the
/// workers forked by either are the master's children and serve.
#[test]
fn a_killed_zygote_and_a_hup_start_a_new_zygote() {
    let s = forked("sync");
    let master = s.child.id();
    let first = zygote(&s);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    s.wait_log("the zygote exited", Duration::from_secs(10));
    let victim = s.worker_pids()[0];
    // SAFETY: as above.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    s.wait_for_workers(3);
    let second = zygote(&s);
    assert_ne!(second, first, "{}", s.log());
    let respawned = *s.worker_pids().last().unwrap();
    assert_eq!(parent(respawned), Some(master), "{}", s.log());

    s.signal(libc::SIGHUP);
    s.wait_for_workers(5);
    let third = zygote(&s);
    assert_ne!(third, second, "{}", s.log());
    for &w in &s.worker_pids()[3..] {
        assert_eq!(parent(w), Some(master), "worker {w}:\n{}", s.log());
    }
    for _ in 0..4 {
        let a = answer(&s);
        assert_eq!(a["ppid"].as_u64(), Some(u64::from(master)), "{a}");
    }
}

/// A graceful stop ends the zygote with the workers: it holds copies of the listeners, and a
/// copy left open would queue connections nobody serves.
#[test]
fn the_zygote_does_not_outlive_the_master() {
    let mut s = forked("gthread");
    let z = zygote(&s);
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(20)), Some(0), "{}", s.log());
    // Gone, not a zombie: the master reaps it before it exits.
    wait_until(Duration::from_secs(5), "the zygote to be gone", || {
        !std::path::Path::new(&format!("/proc/{z}")).exists()
    });
}

/// systemd's `KillMode=control-group` sends TERM to every process of the server at once, the
/// zygote's included (here to the zygote first, then to the process group): the zygote ignores
/// it and the master stops it with the workers. Before, the zygote died of it, and the master
/// logged a warning that it had exited before its own graceful stop.
#[test]
fn a_term_to_every_process_stops_the_server_without_a_warning() {
    let mut s = forked("sync");
    let z = zygote(&s);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(z as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(300));
    s.signal_group(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(20)), Some(0), "{}", s.log());
    assert!(!s.log().contains("the zygote exited"), "{}", s.log());
    wait_until(Duration::from_secs(5), "the zygote to be gone", || {
        !std::path::Path::new(&format!("/proc/{z}")).exists()
    });
}

/// `--error-logfile FILE` moved away and SIGUSR1 (logrotate's `postrotate`): a worker forked
/// afterwards logs to the new FILE. The zygote ignores SIGUSR1 and holds the file it opened at
/// start, so a worker it forked after the rotation wrote to the rotated file (to be compressed or
/// deleted) until the master replaced the zygote at the reopen.
#[test]
fn a_worker_forked_after_sigusr1_logs_to_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let errors = dir.path().join("error.log");
    let apps = apps();
    let (mut child, _group) = util::spawn_quiet(
        util::serve_command()
            .args(["-k", "sync", "-w", "1", "--pythonpath", &apps])
            .args(["--error-logfile", errors.to_str().unwrap()])
            .arg("forked:app")
            .env("C10K_LOG", "info"),
    );
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let wait_for = util::wait_for_count;
    // The worker's own line (the master logs "Booting worker").
    let loading = "loading forked:app slot=0";
    wait_for(&errors, "all workers booted", 1);
    wait_for(&errors, loading, 1);
    let rotated = dir.path().join("error.log.1");
    std::fs::rename(&errors, &rotated).unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    wait_for(&errors, "SIGUSR1: log files reopened", 1);
    let worker: i32 = read(&rotated)
        .split("Booting worker with pid: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(worker, libc::SIGKILL) };
    wait_for(&errors, loading, 1);
    assert_eq!(
        read(&rotated).matches(loading).count(),
        1,
        "{}",
        read(&rotated)
    );
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "{}", read(&errors));
        std::thread::sleep(Duration::from_millis(20));
    }
}
