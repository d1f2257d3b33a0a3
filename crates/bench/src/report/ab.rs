//! The text report: ab's layout and formulas line for line (so tools that parse ab's output
//! parse ours), then siege's summary lines ([`super::siege`]), then what both lack. Extra sections use labels ab
//! never prints, so an ab parser skips them.

use std::io::{self, Write};

use super::{Report, TimesRow};

/// ab's display switches.
#[derive(Debug, Clone, Copy)]
pub struct TextOptions {
    /// Print the percentile table (ab's `-d` turns it off).
    pub percentiles: bool,
    /// Print sd/median and the sanity warnings (ab's `-S` turns them off).
    pub confidence: bool,
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions {
            percentiles: true,
            confidence: true,
        }
    }
}

/// The banner ab prints before running.
pub fn write_banner(out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "This is c10k bench {}, ApacheBench 2.3 compatible",
        env!("CARGO_PKG_VERSION")
    )?;
    writeln!(
        out,
        "Licensed MIT OR Apache-2.0; report layout after ApacheBench (Apache License 2.0)"
    )?;
    writeln!(out)
}

/// Everything from "Server Software:" on.
pub fn write_report(r: &Report, o: &TextOptions, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "Server Software:        {}", r.server_software)?;
    writeln!(out, "Server Hostname:        {}", r.server_hostname)?;
    writeln!(out, "Server Port:            {}", r.server_port)?;
    writeln!(out)?;
    writeln!(out, "Document Path:          {}", r.document_path)?;
    match r.document_length {
        Some(n) => writeln!(out, "Document Length:        {n} bytes")?,
        None => writeln!(out, "Document Length:        Variable")?,
    }
    writeln!(out)?;
    writeln!(out, "Concurrency Level:      {}", r.concurrency)?;
    writeln!(out, "Time taken for tests:   {:.3} seconds", r.time_taken_s)?;
    writeln!(out, "Complete requests:      {}", r.complete_requests)?;
    writeln!(out, "Failed requests:        {}", r.failed_requests)?;
    if r.failed_requests > 0 {
        let f = &r.failures;
        writeln!(
            out,
            "   (Connect: {}, Receive: {}, Length: {}, Exceptions: {})",
            f.connect, f.receive, f.length, f.exceptions
        )?;
    }
    if r.write_errors > 0 {
        writeln!(out, "Write errors:           {}", r.write_errors)?;
    }
    if r.non_2xx > 0 {
        writeln!(out, "Non-2xx responses:      {}", r.non_2xx)?;
    }
    if let Some(k) = r.keep_alive_requests {
        writeln!(out, "Keep-Alive requests:    {k}")?;
    }
    writeln!(out, "Total transferred:      {} bytes", r.total_transferred)?;
    if let Some(sent) = r.total_body_sent {
        writeln!(out, "Total body sent:        {sent}")?;
    }
    writeln!(out, "HTML transferred:       {} bytes", r.html_transferred)?;
    if r.time_taken_s > 0.0 && r.complete_requests > 0 {
        writeln!(
            out,
            "Requests per second:    {:.2} [#/sec] (mean)",
            r.requests_per_second
        )?;
        writeln!(
            out,
            "Time per request:       {:.3} [ms] (mean)",
            r.time_per_request_ms
        )?;
        writeln!(
            out,
            "Time per request:       {:.3} [ms] (mean, across all concurrent requests)",
            r.time_per_request_all_ms
        )?;
        writeln!(
            out,
            "Transfer rate:          {:.2} [Kbytes/sec] received",
            r.transfer_rate_kbps
        )?;
        if let Some(sent) = r.total_body_sent {
            let kb = |b: f64| b / 1024.0 / r.time_taken_s;
            writeln!(
                out,
                "                        {:.2} kb/s sent",
                kb(sent as f64)
            )?;
            writeln!(
                out,
                "                        {:.2} kb/s total",
                kb((r.total_transferred + sent) as f64)
            )?;
        }
    }
    if r.complete_requests > 0 && !r.percentiles.is_empty() {
        let t = &r.connection_times;
        writeln!(out)?;
        writeln!(out, "Connection Times (ms)")?;
        let rows = [
            ("Connect:    ", &t.connect),
            ("Processing: ", &t.processing),
            ("Waiting:    ", &t.waiting),
            ("Total:      ", &t.total),
        ];
        if o.confidence {
            writeln!(out, "              min  mean[+/-sd] median   max")?;
            for (label, x) in rows {
                writeln!(
                    out,
                    "{label}{:5} {:4} {:5.1} {:6} {:7}",
                    x.min, x.mean, x.sd, x.median, x.max
                )?;
            }
            sane(out, "the initial connection time", &t.connect)?;
            sane(out, "the processing time", &t.processing)?;
            sane(out, "the waiting time", &t.waiting)?;
            sane(out, "the total time", &t.total)?;
        } else {
            writeln!(out, "              min   avg   max")?;
            for (label, x) in rows {
                // ab's format has no space before the last column.
                writeln!(out, "{label}{:5} {:5}{:5}", x.min, x.mean, x.max)?;
            }
        }
        if o.percentiles && r.complete_requests > 1 {
            writeln!(out)?;
            writeln!(
                out,
                "Percentage of the requests served within a certain time (ms)"
            )?;
            for p in &r.percentiles {
                if p.percent >= 100 {
                    writeln!(out, " 100%  {:5} (longest request)", p.ms)?;
                } else {
                    writeln!(out, "  {}%  {:5}", p.percent, p.ms)?;
                }
            }
        }
    }
    super::siege::write_siege(r, out)?;
    write_extras(r, out)
}

/// ab's sanity check of mean against median.
fn sane(out: &mut impl Write, what: &str, x: &TimesRow) -> io::Result<()> {
    let d = (x.mean as f64 - x.median as f64).abs();
    if d > 2.0 * x.sd {
        writeln!(
            out,
            "ERROR: The median and mean for {what} are more than twice the standard\n       deviation apart. These results are NOT reliable."
        )
    } else if d > x.sd {
        writeln!(
            out,
            "WARNING: The median and mean for {what} are not within a normal deviation\n        These results are probably not that reliable."
        )
    } else {
        Ok(())
    }
}

/// Per-status and per-error counts, HDR percentiles, open-loop figures.
pub fn write_extras(r: &Report, out: &mut impl Write) -> io::Result<()> {
    writeln!(out)?;
    writeln!(out, "Status code distribution:")?;
    for (status, n) in &r.status_codes {
        writeln!(out, "  [{status}] {n} responses")?;
    }
    let errors: Vec<_> = r
        .errors
        .as_pairs()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    if !errors.is_empty() {
        writeln!(out)?;
        writeln!(out, "Error distribution:")?;
        for (kind, n) in errors {
            writeln!(out, "  [{kind}] {n}")?;
        }
    }
    let l = &r.latency_ms;
    writeln!(out)?;
    writeln!(out, "Latency distribution (ms, HdrHistogram):")?;
    for (label, v) in [
        ("min", l.min),
        ("mean", l.mean),
        ("stdev", l.stdev),
        ("p50", l.p50),
        ("p75", l.p75),
        ("p90", l.p90),
        ("p95", l.p95),
        ("p99", l.p99),
        ("p99.9", l.p99_9),
        ("p99.99", l.p99_99),
        ("max", l.max),
    ] {
        writeln!(out, "  {label:<7}{v:12.3}")?;
    }
    if let Some(rate) = &r.rate {
        writeln!(out)?;
        writeln!(out, "Open loop (latency from intended send time):")?;
        writeln!(out, "  target      {:12.2} req/s", rate.target)?;
        writeln!(out, "  achieved    {:12.2} req/s", rate.achieved)?;
        writeln!(
            out,
            "  send delay  mean {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            rate.send_delay_mean_ms, rate.send_delay_p99_ms, rate.send_delay_max_ms
        )?;
    }
    Ok(())
}
