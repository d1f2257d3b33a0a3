//! HdrHistogram interval logs (`--hdr-out`) and their exact merge (`c10k bench merge`).
//!
//! A run writes one interval per metric, tagged `total`, `connect`, `processing` and `waiting`,
//! values in µs (the log's `MaxValueDivisor` of 1000 shows maxima in ms), in the standard format
//! that HdrHistogram's tools read. Merging adds the histograms of equal tags: counts add bucket
//! by bucket, so the merge of several runs equals the histogram of all their samples.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::V2Serializer;
use hdrhistogram::Histogram;

use crate::stats::{decode_histogram, new_histogram, Measurement};

/// Histograms by tag.
pub type Tagged = BTreeMap<String, Histogram<u64>>;

/// The tagged histograms of a measurement.
pub fn tagged(m: &Measurement) -> Tagged {
    [
        ("total", &m.total),
        ("connect", &m.connect),
        ("processing", &m.processing),
        ("waiting", &m.waiting),
    ]
    .into_iter()
    .map(|(t, metric)| (t.to_string(), metric.hist.clone()))
    .collect()
}

/// Writes `hists` as an interval log covering `elapsed` from `start`.
pub fn write_log(
    out: &mut impl Write,
    hists: &Tagged,
    start: SystemTime,
    elapsed: Duration,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let mut ser = V2Serializer::new();
    {
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment(concat!(
                "c10k bench ",
                env!("CARGO_PKG_VERSION"),
                "; values in microseconds"
            ))
            .with_start_time(start)
            .with_base_time(start)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut buf, &mut ser)?;
        for (tag, h) in hists {
            w.write_histogram(h, Duration::ZERO, elapsed, Tag::new(tag))
                .map_err(|e| anyhow::anyhow!("writing the HDR log: {e:?}"))?;
        }
    }
    out.write_all(&buf)?;
    Ok(())
}

/// Reads a log, adding every interval into the histogram of its tag (untagged: `total`).
pub fn read_log(bytes: &[u8], into: &mut Tagged) -> anyhow::Result<()> {
    let mut intervals = 0;
    for entry in IntervalLogIterator::new(bytes) {
        let entry = entry.map_err(|e| anyhow::anyhow!("not an HdrHistogram log: {e:?}"))?;
        if let LogEntry::Interval(ih) = entry {
            let tag = ih.tag().map_or("total", |t| t.as_str()).to_string();
            let h = decode_histogram(ih.encoded_histogram())?;
            into.entry(tag)
                .or_insert_with(new_histogram)
                .add(&h)
                .map_err(|e| anyhow::anyhow!("histogram out of range: {e:?}"))?;
            intervals += 1;
        }
    }
    anyhow::ensure!(intervals > 0, "no histogram intervals found");
    Ok(())
}

/// Merges log files.
pub fn merge_files(paths: &[impl AsRef<Path>]) -> anyhow::Result<Tagged> {
    let mut out = Tagged::new();
    for p in paths {
        let p = p.as_ref();
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        read_log(&bytes, &mut out).with_context(|| format!("in {}", p.display()))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_round_trip_keeps_tags_and_counts() {
        let mut m = Measurement::default();
        for v in [10, 20, 30_000] {
            m.total.record(v);
            m.connect.record(v / 2);
        }
        let mut buf = Vec::new();
        write_log(
            &mut buf,
            &tagged(&m),
            SystemTime::now(),
            Duration::from_secs(1),
        )
        .unwrap();
        let mut back = Tagged::new();
        read_log(&buf, &mut back).unwrap();
        assert_eq!(back["total"], m.total.hist);
        assert_eq!(back["connect"], m.connect.hist);
        assert!(read_log(b"garbage\n", &mut Tagged::new()).is_err());
    }
}
