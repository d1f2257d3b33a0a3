//! `summary.md`: the seed's table shape (Mode | concurrency | transaction rate), one table per
//! workload, with the extra columns the seed lacked, and the seed's own figures for reference.

use std::fmt::Write;

use super::RunInfo;
use crate::record::Row;

/// The seed's table, quoted as it was (Flask on gunicorn/uWSGI, its author's machine).
pub const SEED_TABLE: &str = "\
| Mode | concurrency | transaction rate (trans/sec) |
|---|---|---|
| sync + gunicorn (4 worker + 50 thread) | 921 | 192 |
| sync + uWSGI (4 worker + 50 thread) | 236 | 136.07 |
| async + gunicorn (4 worker + gevent) | 842 | 616 |
| async + uWSGI (4 worker + gevent) | 759 | 575 |
| nginx + sync + uWSGI | | |
| nginx + async + uWSGI | | |
";

pub fn summary(rows: &[Row], info: &RunInfo) -> String {
    let m = &info.machine;
    let mut out = String::new();
    let _ = writeln!(out, "# c10k lab, {}\n", info.started);
    let _ = writeln!(out, "Command: `{}`  ", info.command);
    let _ = writeln!(
        out,
        "Machine: {} CPUs ({}), kernel {}, net.core.somaxconn {}; {}.\n",
        m.cpus,
        m.cpu_model,
        m.kernel,
        m.somaxconn,
        if m.pinned {
            "servers pinned to CPU 0, load generator to the last CPU"
        } else {
            "not pinned (one CPU)"
        }
    );
    let _ = writeln!(
        out,
        "Each cell: keep-alive clients at the given concurrency for the cell's duration, after a \
         warm-up. Transaction rate and concurrency are siege's (successful transactions per \
         second; Σ response time / elapsed). CPU is the server's user+system seconds during the \
         cell; RSS is the server's peak resident memory (all processes).\n"
    );
    for workload in super::workloads(rows) {
        let _ = writeln!(out, "## {workload}\n");
        let _ = writeln!(
            out,
            "| Mode | concurrency | transaction rate (trans/sec) | requests/s | siege concurrency | p50 ms | p99 ms | p99.9 ms | failures | server CPU s | peak RSS MiB |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in rows.iter().filter(|r| r.workload == workload) {
            if r.is_measured() {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} |",
                    r.mode,
                    r.concurrency,
                    super::figures(r).join(" | ")
                );
            } else {
                let _ = writeln!(
                    out,
                    "| {} | {} | skipped: {} | | | | | | | | |",
                    r.mode, r.concurrency, r.skipped
                );
            }
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "## The seed's table, for reference\n\nFlask under gunicorn/uWSGI, `ab -r -n 10 -c 5 \
         '/?delay=1'`-style runs on the seed author's machine; its two nginx rows were never \
         filled in (the `nginx + uwsgi protocol` rows above fill them in the shape the seed meant, \
         for c10k and, when `--python` has it, for uWSGI; `nginx + HTTP proxy` rows put nginx \
         in front as an HTTP proxy instead).\n"
    );
    out.push_str(SEED_TABLE);
    out
}
