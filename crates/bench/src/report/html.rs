//! ab's `-w` report: its HTML table, row for row (ab's `output_html_results`), with the
//! attributes of `-x` (table), `-y` (tr) and `-z` (td and th). Like ab's, it holds ab's figures
//! only: no percentile table, no siege lines, no extras.

use std::io::{self, Write};

use super::Report;

/// ab's `-x`, `-y`, `-z`: attribute strings pasted into the tags as given.
#[derive(Debug, Clone)]
pub struct HtmlAttrs {
    pub table: String,
    pub tr: String,
    pub td: String,
}

impl Default for HtmlAttrs {
    /// ab's defaults.
    fn default() -> Self {
        HtmlAttrs {
            table: String::new(),
            tr: String::new(),
            td: "bgcolor=white".into(),
        }
    }
}

/// The banner ab prints before running with `-w`.
pub fn write_banner(out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "<p>")?;
    writeln!(
        out,
        " This is c10k bench {}, ApacheBench 2.3 compatible<br>",
        env!("CARGO_PKG_VERSION")
    )?;
    writeln!(
        out,
        " Licensed MIT OR Apache-2.0; report layout after ApacheBench (Apache License 2.0)<br>"
    )?;
    writeln!(out, "</p>\n<p>")
}

/// `<`, `>`, `&` and `"` as entities. ab pastes the server's name and the path in raw; a
/// `Server:` header holding markup would then become part of the page.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The table, from `<table>` to `</table>`.
pub fn write_report(r: &Report, a: &HtmlAttrs, out: &mut impl Write) -> io::Result<()> {
    let (tr, td) = (&a.tr, &a.td);
    writeln!(out, "<table {}>", a.table)?;
    let row = |out: &mut dyn Write, label: &str, value: &str| -> io::Result<()> {
        writeln!(
            out,
            "<tr {tr}><th colspan=2 {td}>{label}:</th><td colspan=2 {td}>{value}</td></tr>"
        )
    };
    row(out, "Server Software", &escape(&r.server_software))?;
    row(out, "Server Hostname", &escape(&r.server_hostname))?;
    row(out, "Server Port", &r.server_port.to_string())?;
    row(out, "Document Path", &escape(&r.document_path))?;
    match r.document_length {
        Some(n) => row(out, "Document Length", &format!("{n} bytes"))?,
        None => row(out, "Document Length", "Variable")?,
    }
    row(out, "Concurrency Level", &r.concurrency.to_string())?;
    row(
        out,
        "Time taken for tests",
        &format!("{:.3} seconds", r.time_taken_s),
    )?;
    row(out, "Complete requests", &r.complete_requests.to_string())?;
    row(out, "Failed requests", &r.failed_requests.to_string())?;
    if r.failed_requests > 0 {
        // ab's HTML split has no Receive.
        let f = &r.failures;
        writeln!(
            out,
            "<tr {tr}><td colspan=4 {td} >   (Connect: {}, Length: {}, Exceptions: {})</td></tr>",
            f.connect, f.length, f.exceptions
        )?;
    }
    if r.non_2xx > 0 {
        row(out, "Non-2xx responses", &r.non_2xx.to_string())?;
    }
    if let Some(k) = r.keep_alive_requests {
        row(out, "Keep-Alive requests", &k.to_string())?;
    }
    row(
        out,
        "Total transferred",
        &format!("{} bytes", r.total_transferred),
    )?;
    if let Some(sent) = r.total_body_sent {
        row(out, "Total body sent", &sent.to_string())?;
    }
    row(
        out,
        "HTML transferred",
        &format!("{} bytes", r.html_transferred),
    )?;
    if r.time_taken_s > 0.0 {
        row(
            out,
            "Requests per second",
            &format!("{:.2}", r.requests_per_second),
        )?;
        row(
            out,
            "Transfer rate",
            &format!("{:.2} kb/s received", r.transfer_rate_kbps),
        )?;
        if let Some(sent) = r.total_body_sent {
            let kb = |b: f64| b / 1024.0 / r.time_taken_s;
            for (v, what) in [
                (kb(sent as f64), "sent"),
                (kb((r.total_transferred + sent) as f64), "total"),
            ] {
                writeln!(
                    out,
                    "<tr {tr}><td colspan=2 {td}>&nbsp;</td><td colspan=2 {td}>{v:.2} kb/s {what}</td></tr>"
                )?;
            }
        }
    }
    if r.complete_requests > 0 && !r.percentiles.is_empty() {
        let t = &r.connection_times;
        writeln!(
            out,
            "<tr {tr}><th {td} colspan=4>Connection Times (ms)</th></tr>"
        )?;
        writeln!(
            out,
            "<tr {tr}><th {td}>&nbsp;</th> <th {td}>min</th>   <th {td}>avg</th>   <th {td}>max</th></tr>"
        )?;
        // ab's Processing row is Total less Connect, column by column.
        let rows = [
            ("Connect", t.connect.min, t.connect.mean, t.connect.max),
            (
                "Processing",
                t.total.min.saturating_sub(t.connect.min),
                t.total.mean.saturating_sub(t.connect.mean),
                t.total.max.saturating_sub(t.connect.max),
            ),
            ("Total", t.total.min, t.total.mean, t.total.max),
        ];
        for (label, min, avg, max) in rows {
            writeln!(
                out,
                "<tr {tr}><th {td}>{label}:</th><td {td}>{min:5}</td><td {td}>{avg:5}</td><td {td}>{max:5}</td></tr>"
            )?;
        }
    }
    writeln!(out, "</table>")
}
