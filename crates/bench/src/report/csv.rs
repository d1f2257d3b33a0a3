//! `--csv`: the headline figures as one header line and one row, for spreadsheets and scripts.

use std::io::{self, Write};

use super::Report;

pub const HEADER: &str =
    "complete_requests,failed_requests,non_2xx,time_taken_s,requests_per_second,\
transfer_rate_kbps,mean_ms,p50_ms,p90_ms,p99_ms,p99_9_ms,p99_99_ms,max_ms";

pub fn write_csv(r: &Report, out: &mut impl Write) -> io::Result<()> {
    let l = &r.latency_ms;
    writeln!(out, "{HEADER}")?;
    writeln!(
        out,
        "{},{},{},{:.6},{:.2},{:.2},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3}",
        r.complete_requests,
        r.failed_requests,
        r.non_2xx,
        r.time_taken_s,
        r.requests_per_second,
        r.transfer_rate_kbps,
        l.mean,
        l.p50,
        l.p90,
        l.p99,
        l.p99_9,
        l.p99_99,
        l.max
    )
}
