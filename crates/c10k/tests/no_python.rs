//! The build without the `python` feature (`cargo nextest run -p c10k --no-default-features
//! --test no_python`, a step of `.ci/run`): `c10k serve MODULE:APP` stops with a usage error that
//! says how to get Python support, instead of serving the built-in app or failing obscurely.

#![cfg(not(feature = "python"))]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn serving_a_python_app_says_how_to_get_python_support() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--admin",
            "off",
            "flask_app:app",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a build that started serving instead would never exit by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("c10k serve flask_app:app did not stop without Python support");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(2), "a usage error:\n{err}");
    assert!(err.contains("cannot serve flask_app:app"), "{err}");
    assert!(err.contains("without Python support"), "{err}");
    assert!(err.contains("cargo install --path crates/c10k"), "{err}");
}

/// A gunicorn config in Python needs Python: `-c FILE.py` stops with a usage error that says how
/// to get a build that reads it; a `./gunicorn.conf.py` that gunicorn would read is named in a
/// warning instead of stopping a server whose command line did not ask for it.
#[test]
fn a_python_config_says_how_to_get_python_support() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gunicorn.conf.py"), "workers = 3\n").unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_c10k"))
            .arg("serve")
            .args(args)
            .current_dir(dir.path())
            .env_remove("GUNICORN_CMD_ARGS")
            .env_remove("C10K_CONFIG")
            .env("C10K_ADMIN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&["-c", "gunicorn.conf.py", "--check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("config file gunicorn.conf.py: this c10k was built without Python support"),
        "{err}"
    );
    assert!(err.contains("cargo install --path crates/c10k"), "{err}");
    let out = run(&["--check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("./gunicorn.conf.py is not read: this c10k was built without Python"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("workers = 1"));
}
