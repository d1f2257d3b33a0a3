//! One row per cell in `raw.csv`, and the machine the run was made on.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// A measured (or skipped) cell.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Row {
    /// The seed's "Mode" column: "nginx + sync + c10k sync (4 worker)".
    pub mode: String,
    /// The server without the front ("sync + c10k sync (4 worker)").
    pub server: String,
    /// `direct` or `nginx`.
    pub front: String,
    pub workload: String,
    pub concurrency: usize,
    pub duration_s: f64,
    pub requests: u64,
    pub failures: u64,
    pub requests_per_s: f64,
    /// siege's transaction rate: successful transactions per second.
    pub transaction_rate: f64,
    /// siege's concurrency: Σ response time / elapsed — how many requests were in flight on
    /// average (the seed's "concurrency" column).
    pub siege_concurrency: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub server_cpu_s: f64,
    pub server_peak_rss_mib: f64,
    /// Why the cell was not measured; empty when it was.
    pub skipped: String,
    /// The worker model's limit for this cell in transactions/s (`ServerSpec::model_limit`);
    /// 0 when there is none (runs made before this column read as 0).
    #[serde(default)]
    pub model_limit: f64,
}

impl Row {
    pub fn is_measured(&self) -> bool {
        self.skipped.is_empty()
    }
}

pub fn write_csv(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    for r in rows {
        w.serialize(r)?;
    }
    w.flush()?;
    Ok(())
}

pub fn read_csv(path: &Path) -> anyhow::Result<Vec<Row>> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, row) in r.deserialize().enumerate() {
        rows.push(row.with_context(|| format!("{} row {}", path.display(), i + 2))?);
    }
    Ok(rows)
}

/// What the figures depend on besides the code.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub somaxconn: String,
    pub pinned: bool,
}

impl Machine {
    pub fn probe(pinned: bool) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cpus: online_cpus(),
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            somaxconn: read("/proc/sys/net/core/somaxconn").trim().to_owned(),
            pinned,
        }
    }
}

/// CPUs online on the machine (not the ones this process may run on: the lab pins itself).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(1)
}
