//! `c10k lab` end to end on a tiny matrix: real servers, real nginx (when installed), real bench.

use std::process::Command;

#[test]
fn tiny_matrix_yields_every_row_with_a_rate() {
    let dir = tempfile::tempdir().unwrap();
    let matrix = dir.path().join("tiny.toml");
    std::fs::write(
        &matrix,
        r#"
        workloads = ["delay=0.05"]
        concurrency = [1, 8]
        behind-nginx = true
        behind-nginx-uwsgi = true
        duration = 1.0
        warmup = 0.2
        [[server]]
        worker-class = "sync"
        workers = 2
        [[server]]
        worker-class = "async"
        workers = 1
        "#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(["lab", "--matrix"])
        .arg(&matrix)
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let run = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .expect("a run directory");
    assert!(
        run.to_string_lossy().ends_with("-lab"),
        "--help says DIR/<date-time>-lab/: {}",
        run.display()
    );
    assert!(
        stderr.contains(&format!("writing {}/", run.display())),
        "the run directory is named before the first cell: {stderr}"
    );
    for f in [
        "raw.csv",
        "machine.json",
        "summary.md",
        "index.html",
        "throughput-delay-0-05.svg",
    ] {
        assert!(run.join(f).is_file(), "{f} missing; {stderr}");
    }
    let rows = c10k_lab::record::read_csv(&run.join("raw.csv")).unwrap();
    let nginx = c10k_lab::servers::nginx_binary().is_some();
    assert_eq!(
        rows.len(),
        12,
        "2 servers × 3 fronts × 2 concurrency levels"
    );
    for r in &rows {
        if r.front != "direct" && !nginx {
            assert!(r.skipped.contains("nginx is not installed"), "{r:?}");
            continue;
        }
        assert!(r.is_measured(), "{r:?}");
        assert!(r.transaction_rate > 0.0, "{r:?}");
        assert_eq!(r.failures, 0, "{r:?}");
    }
    // async at concurrency 8 overlaps its waits; sync with 2 workers cannot.
    let rate = |mode: &str, c: usize| {
        rows.iter()
            .find(|r| r.mode == mode && r.concurrency == c)
            .map(|r| r.transaction_rate)
            .unwrap()
    };
    assert!(
        rate("async + c10k async (1 worker)", 8) > 2.0 * rate("sync + c10k sync (2 worker)", 8),
        "{rows:?}"
    );
    let summary = std::fs::read_to_string(run.join("summary.md")).unwrap();
    assert!(summary.contains("| Mode | concurrency | transaction rate (trans/sec)"));
    assert!(summary.contains("nginx + HTTP proxy + async + c10k async (1 worker)"));
    assert!(summary.contains("nginx + uwsgi protocol + async + c10k async (1 worker)"));
}

#[test]
fn bad_matrix_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let matrix = dir.path().join("bad.toml");
    std::fs::write(&matrix, "workloads = [\"sleep\"]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(["lab", "--matrix"])
        .arg(&matrix)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--matrix") && err.contains("sleep"), "{err}");
}

/// `--help` names the directory a run writes, and the run writes exactly that name.
#[test]
fn help_names_the_run_directory() {
    let out = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(["lab", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("DIR/<date-time>-lab/"), "{help}");
    let dir = c10k_lab::run_dir(std::path::Path::new("runs"), "2026-12-03-094500");
    assert_eq!(dir, std::path::Path::new("runs/2026-12-03-094500-lab"));
}
