//! logrotate and `--access-log -`: under `--capture-output` standard output is the error log
//! file, and SIGUSR1 (logrotate's `postrotate`) must move the access lines to the new file with
//! the rest of that output, as gunicorn's access log on `sys.stdout` does.

mod util;

use std::time::{Duration, Instant};

use util::get;

/// `--access-log - --error-log FILE --capture-output`, FILE moved away, SIGUSR1: the access
/// lines written afterwards are in the new FILE. The access log held its own duplicate of
/// standard output, which the reopen (`dup2` over descriptors 1 and 2) did not reach, so its
/// lines kept going to the rotated file (to be compressed or deleted) for the worker's life.
#[test]
fn access_log_on_captured_stdout_follows_sigusr1() {
    let dir = tempfile::tempdir().unwrap();
    let errors = dir.path().join("error.log");
    let (mut child, _group) = util::spawn_quiet(
        util::serve_command()
            .args(["-w", "1"])
            .args(["--access-logfile", "-"])
            .args(["--access-logformat", "%(p)s %(r)s"])
            .args(["--error-logfile", errors.to_str().unwrap()])
            .arg("--capture-output")
            .env("C10K_LOG", "info")
            .env("C10K_DATA_DIR", dir.path()),
    );
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let wait_for = |p: &std::path::Path, needle: &str| util::wait_for_count(p, needle, 1);
    wait_for(&errors, "all workers booted");
    let addr: std::net::SocketAddr = read(&errors)
        .split("Listening at: http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert_eq!(get(addr, "/before").unwrap().status, 404);
    wait_for(&errors, "GET /before");
    std::fs::rename(&errors, dir.path().join("error.log.1")).unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    wait_for(&errors, "SIGUSR1: log files reopened");
    // The master logs the reopen before its worker has had the signal: ask until an access
    // line reaches the new file.
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0.. {
        assert_eq!(get(addr, &format!("/after{i}")).unwrap().status, 404);
        std::thread::sleep(Duration::from_millis(50));
        if read(&errors).contains("/after") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no access line in the new file after SIGUSR1: {}\n(rotated file: {})",
            read(&errors),
            read(&dir.path().join("error.log.1"))
        );
    }
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}
