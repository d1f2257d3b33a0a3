//! `--processes N`: N engine processes, each with its share of the connections and requests,
//! whose measurements merge exactly. Needed past the per-process open-file limit. Each child
//! is this same binary re-executed (`c10k bench --internal-worker`), reading its plan as JSON
//! on stdin and writing its [`Measurement`] as JSON on stdout: no fork of a threaded process.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;

use crate::plan::Plan;
use crate::stats::Measurement;

/// Splits `total` into `n` near-equal shares.
pub fn split(total: u64, n: u64) -> Vec<u64> {
    (0..n)
        .map(|i| total / n + u64::from(i < total % n))
        .collect()
}

pub fn run(plan: &Plan, processes: usize, exe: &Path) -> anyhow::Result<Measurement> {
    let n = processes as u64;
    let conns = split(plan.concurrency as u64, n);
    let reqs = plan.requests.map(|r| split(r, n));
    let mut children = Vec::new();
    for i in 0..processes {
        let mut p = plan.clone();
        p.concurrency = conns[i] as usize;
        p.requests = reqs.as_ref().map(|r| r[i]);
        p.threads = plan.threads.div_ceil(processes).max(1);
        // Each process sends its connections' share of the rate.
        p.rate = plan
            .rate
            .map(|r| r * conns[i] as f64 / plan.concurrency as f64);
        let mut child = Command::new(exe)
            .args(["bench", "--internal-worker"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting engine process {}", exe.display()))?;
        let json = serde_json::to_vec(&p)?;
        child
            .stdin
            .take()
            .context("child stdin")?
            .write_all(&json)?;
        children.push(child);
    }
    let mut total = Measurement::default();
    for child in children {
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "an engine process failed: {}",
            out.status
        );
        let m: Measurement =
            serde_json::from_slice(&out.stdout).context("reading an engine process's result")?;
        total.merge(&m);
    }
    Ok(total)
}
