//! The admin listener as tests read it: its address from the log, its JSON checked against the
//! committed schema, and `c10k status` run as a user would.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{get, Server};

/// The admin address from the `Admin listening at: http://ADDR` log line.
pub fn admin_addr(s: &Server) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = s.log();
        if let Some(rest) = log.split("Admin listening at: http://").nth(1) {
            if let Some(addr) = rest.split_whitespace().next().and_then(|a| a.parse().ok()) {
                return addr;
            }
        }
        assert!(Instant::now() < deadline, "no admin line:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `c10k ARGS` and returns its standard output; panics on failure.
pub fn c10k(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(args)
        .env_remove("C10K_ADMIN")
        .output()
        .expect("run c10k");
    assert!(
        out.status.success(),
        "c10k {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// GETs an admin JSON route and checks the answer against the committed schema.
pub fn admin_json(admin: SocketAddr, path: &str) -> Value {
    let r = get(admin, path).expect("admin request");
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body).expect("admin JSON");
    // Compiled once: on a loaded machine a debug build takes long enough over it that a request
    // being watched could finish between two looks.
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| {
        let schema: Value =
            serde_json::from_str(include_str!("../../../serve/schema/status.schema.json")).unwrap();
        jsonschema::validator_for(&schema).expect("schema compiles")
    });
    let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{path} against the schema: {errors:?}\n{v}"
    );
    v
}

/// Polls `f` every 50 ms until it holds; panics naming `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
