//! `index.html`: the tables and the plots on one page.

use std::fmt::Write;

use super::RunInfo;
use crate::record::Row;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn index(rows: &[Row], info: &RunInfo, plots: &[String]) -> String {
    let m = &info.machine;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>c10k lab, {}</title>\n\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style></head><body>\n",
        esc(&info.started)
    );
    let _ = writeln!(out, "<h1>c10k lab, {}</h1>", esc(&info.started));
    let _ = writeln!(
        out,
        "<p><code>{}</code><br>{} CPUs ({}), kernel {}, somaxconn {}{}</p>",
        esc(&info.command),
        m.cpus,
        esc(&m.cpu_model),
        esc(&m.kernel),
        esc(&m.somaxconn),
        if m.pinned {
            "; server on CPU 0, load generator on the last CPU"
        } else {
            ""
        }
    );
    for workload in super::workloads(rows) {
        let _ = writeln!(out, "<h2>{}</h2>", esc(&workload));
        let _ = writeln!(
            out,
            "<table><tr><th>Mode</th><th>concurrency</th><th>transaction rate (trans/sec)</th>\
             <th>requests/s</th><th>siege concurrency</th><th>p50 ms</th><th>p99 ms</th>\
             <th>p99.9 ms</th><th>failures</th><th>server CPU s</th><th>peak RSS MiB</th></tr>"
        );
        for r in rows.iter().filter(|r| r.workload == workload) {
            if r.is_measured() {
                let cells: String = super::figures(r)
                    .iter()
                    .map(|f| format!("<td>{f}</td>"))
                    .collect();
                let _ = writeln!(
                    out,
                    "<tr><td>{}</td><td>{}</td>{cells}</tr>",
                    esc(&r.mode),
                    r.concurrency
                );
            } else {
                let _ = writeln!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td colspan=\"9\">skipped: {}</td></tr>",
                    esc(&r.mode),
                    r.concurrency,
                    esc(&r.skipped)
                );
            }
        }
        let _ = writeln!(out, "</table>");
        for p in plots
            .iter()
            .filter(|p| p.ends_with(&format!("-{}.svg", super::slug(&workload))))
        {
            let what = if p.starts_with("throughput") {
                "transaction rate"
            } else {
                "latency, p50 and p99"
            };
            let _ = writeln!(
                out,
                "<p><img src=\"{}\" alt=\"{what}, {}\"></p>",
                esc(p),
                esc(&workload)
            );
        }
    }
    let _ = writeln!(out, "<p>Raw figures: <a href=\"raw.csv\">raw.csv</a>; summary: <a href=\"summary.md\">summary.md</a>.</p>");
    out.push_str("</body></html>\n");
    out
}
