//! siege's summary lines, in siege's layout (tab-aligned labels, 12-wide figures), after ab's
//! report. Concurrency is siege's: the sum of response times over the elapsed time.

use std::io::{self, Write};

use super::Report;

/// siege's summary, in siege's layout.
pub fn write_siege(r: &Report, out: &mut impl Write) -> io::Result<()> {
    let s = &r.siege;
    writeln!(out)?;
    writeln!(out, "Transactions:\t\t{:12} hits", s.transactions)?;
    writeln!(out, "Availability:\t\t{:12.2} %", s.availability)?;
    writeln!(out, "Elapsed time:\t\t{:12.2} secs", s.elapsed_s)?;
    writeln!(out, "Data transferred:\t{:12.2} MB", s.data_transferred_mb)?;
    writeln!(out, "Response time:\t\t{:12.2} secs", s.response_time_s)?;
    writeln!(
        out,
        "Transaction rate:\t{:12.2} trans/sec",
        s.transaction_rate
    )?;
    writeln!(out, "Throughput:\t\t{:12.2} MB/sec", s.throughput_mb_s)?;
    writeln!(out, "Concurrency:\t\t{:12.2}", s.concurrency)?;
    writeln!(
        out,
        "Successful transactions:{:12}",
        s.successful_transactions
    )?;
    writeln!(out, "Failed transactions:\t{:12}", s.failed_transactions)?;
    writeln!(
        out,
        "Longest transaction:\t{:12.2}",
        s.longest_transaction_s
    )?;
    writeln!(
        out,
        "Shortest transaction:\t{:12.2}",
        s.shortest_transaction_s
    )
}
