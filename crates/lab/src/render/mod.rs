//! Turns `raw.csv` (+ `machine.json`) into `summary.md`, SVG plots and `index.html`. Rendering
//! reads only those two files, so `c10k lab render DIR` can redo it after the fact.

pub mod html;
pub mod plot;
pub mod table;

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::record::{self, Machine, Row};

/// Everything about a run that is not a row.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    pub machine: Machine,
    /// The command that produced the run.
    pub command: String,
    /// UTC start time, `YYYY-MM-DD HH:MM`.
    pub started: String,
}

/// Writes every rendered file of `dir` from its `raw.csv` and `machine.json`.
pub fn render_dir(dir: &Path) -> anyhow::Result<Vec<String>> {
    let rows = record::read_csv(&dir.join("raw.csv"))?;
    let info: RunInfo = serde_json::from_str(
        &std::fs::read_to_string(dir.join("machine.json"))
            .with_context(|| format!("cannot read {}/machine.json", dir.display()))?,
    )
    .context("machine.json")?;
    render(dir, &rows, &info)
}

pub fn render(dir: &Path, rows: &[Row], info: &RunInfo) -> anyhow::Result<Vec<String>> {
    let mut written = Vec::new();
    std::fs::write(dir.join("summary.md"), table::summary(rows, info))?;
    written.push("summary.md".to_owned());
    let mut plots = Vec::new();
    for workload in workloads(rows) {
        for (kind, svg) in [
            ("throughput", plot::throughput(rows, &workload)?),
            ("latency", plot::latency(rows, &workload)?),
        ] {
            let name = format!("{kind}-{}.svg", slug(&workload));
            std::fs::write(dir.join(&name), svg)?;
            plots.push(name.clone());
            written.push(name);
        }
    }
    std::fs::write(dir.join("index.html"), html::index(rows, info, &plots))?;
    written.push("index.html".to_owned());
    Ok(written)
}

/// The figures of a measured row, formatted as every table shows them, after mode and
/// concurrency: transaction rate, requests/s, siege concurrency, p50, p99, p99.9, failures,
/// server CPU, peak RSS.
pub fn figures(r: &Row) -> [String; 9] {
    [
        format!("{:.1}", r.transaction_rate),
        format!("{:.1}", r.requests_per_s),
        format!("{:.1}", r.siege_concurrency),
        format!("{:.1}", r.p50_ms),
        format!("{:.1}", r.p99_ms),
        format!("{:.1}", r.p99_9_ms),
        r.failures.to_string(),
        format!("{:.2}", r.server_cpu_s),
        format!("{:.1}", r.server_peak_rss_mib),
    ]
}

/// Workloads in first-seen order.
pub fn workloads(rows: &[Row]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for r in rows {
        if !seen.contains(&r.workload) {
            seen.push(r.workload.clone());
        }
    }
    seen
}

/// Modes in first-seen order.
pub fn modes(rows: &[Row]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for r in rows {
        if !seen.contains(&r.mode) {
            seen.push(r.mode.clone());
        }
    }
    seen
}

pub fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .to_owned()
}
