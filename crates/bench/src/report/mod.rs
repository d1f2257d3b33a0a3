//! A [`Report`] is a [`Measurement`] turned into the figures people read: ab's, siege's, and
//! what both lack (per-status and per-error counts, HDR percentiles to p99.99). It is what
//! `--json` prints (schema: `schema/report.schema.json`); [`ab`] renders it as text, [`html`] as
//! ab's `-w` table and [`csv`] as one CSV row.

pub mod ab;
pub mod csv;
pub mod html;
pub mod siege;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::{Plan, Url};
use crate::stats::{ab_percentile, round_ms, Errors, Measurement, Metric, Sorted};

/// ab's percentile table rows.
pub const AB_PERCENTS: [u64; 9] = [50, 66, 75, 80, 90, 95, 98, 99, 100];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    pub server_software: String,
    pub server_hostname: String,
    pub server_port: u16,
    pub document_path: String,
    /// `None`: ab's "Variable" (`-l`); 0 when no response arrived, as ab prints it.
    pub document_length: Option<u64>,
    pub concurrency: usize,
    pub time_taken_s: f64,
    pub complete_requests: u64,
    pub failed_requests: u64,
    pub failures: AbFailures,
    pub write_errors: u64,
    pub non_2xx: u64,
    /// Present when connections were kept alive (`-k`).
    pub keep_alive_requests: Option<u64>,
    pub total_transferred: u64,
    /// Present when a body was sent (`-p`/`-u`): every request byte, head and body, as ab
    /// counts its "Total body sent".
    pub total_body_sent: Option<u64>,
    pub html_transferred: u64,
    pub requests_per_second: f64,
    pub time_per_request_ms: f64,
    pub time_per_request_all_ms: f64,
    pub transfer_rate_kbps: f64,
    pub connection_times: ConnectionTimes,
    /// ab's "Percentage of the requests served within a certain time (ms)".
    pub percentiles: Vec<AbPercentile>,
    pub latency_ms: Latency,
    pub siege: Siege,
    pub status_codes: BTreeMap<String, u64>,
    pub errors: Errors,
    pub connections_opened: u64,
    pub rate: Option<RateFigures>,
    /// Why the run stopped early (ab's abort message), if it did.
    pub aborted: Option<String>,
}

/// ab's "(Connect: …, Receive: …, Length: …, Exceptions: …)".
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct AbFailures {
    pub connect: u64,
    pub receive: u64,
    pub length: u64,
    pub exceptions: u64,
}

/// One row of ab's "Connection Times (ms)": ms rounded as ab rounds, sd in ms.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct TimesRow {
    pub min: u64,
    pub mean: u64,
    pub sd: f64,
    pub median: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ConnectionTimes {
    pub connect: TimesRow,
    pub processing: TimesRow,
    pub waiting: TimesRow,
    pub total: TimesRow,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct AbPercentile {
    pub percent: u64,
    pub ms: u64,
}

/// Total time per response from the HDR histogram, ms with µs resolution.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: f64,
    pub p75: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
}

/// siege's summary lines.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Siege {
    pub transactions: u64,
    pub availability: f64,
    pub elapsed_s: f64,
    pub data_transferred_mb: f64,
    pub response_time_s: f64,
    pub transaction_rate: f64,
    pub throughput_mb_s: f64,
    /// Σ response times / elapsed time.
    pub concurrency: f64,
    pub successful_transactions: u64,
    pub failed_transactions: u64,
    pub longest_transaction_s: f64,
    pub shortest_transaction_s: f64,
}

/// Open-loop figures (`--rate`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RateFigures {
    pub target: f64,
    pub achieved: f64,
    /// How late requests left after their intended time: queueing in the generator because
    /// the server (or the connection) was not ready.
    pub send_delay_mean_ms: f64,
    pub send_delay_p99_ms: f64,
    pub send_delay_max_ms: f64,
}

fn row(m: &Metric) -> TimesRow {
    let s = m.ab();
    TimesRow {
        min: round_ms(s.min),
        mean: round_ms(s.mean),
        sd: s.sd / 1000.0,
        median: round_ms(s.median),
        max: round_ms(s.max),
    }
}

fn q_ms(m: &Metric, q: f64) -> f64 {
    if m.count == 0 {
        return 0.0;
    }
    let v = if q >= 1.0 {
        m.max
    } else {
        m.hist.value_at_quantile(q).clamp(m.min, m.max)
    };
    v as f64 / 1000.0
}

impl Report {
    pub fn new(plan: &Plan, m: &Measurement) -> Report {
        let url = plan
            .urls
            .first()
            .and_then(|u| Url::parse(u).ok())
            .unwrap_or(Url {
                host: String::new(),
                port: 80,
                path: "/".into(),
            });
        let secs = m.elapsed_us as f64 / 1e6;
        let done = m.completed;
        let per_sec = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
        let non_2xx = m
            .statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum();
        let client_errors: u64 = m
            .statuses
            .iter()
            .filter(|(s, _)| **s >= 400)
            .map(|(_, n)| n)
            .sum();
        let t = &m.total;
        let mean_us = if t.count > 0 {
            t.sum as f64 / t.count as f64
        } else {
            0.0
        };
        let sd_us = if t.count > 1 {
            let n = t.count as f64;
            ((t.sum_sq as f64 - (t.sum as f64).powi(2) / n).max(0.0) / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        let socket_failures = m.errors.without_response();
        let mb = m.body_bytes as f64 / (1024.0 * 1024.0);
        Report {
            tool: "c10k-bench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            server_software: m.server_software.clone().unwrap_or_default(),
            server_hostname: url.host.clone(),
            server_port: url.port,
            document_path: url.path.clone(),
            // ab prints "0 bytes" when no response arrived (its length starts at 0).
            document_length: if plan.variable_length {
                None
            } else {
                Some(m.document_length.unwrap_or(0))
            },
            concurrency: plan.concurrency,
            time_taken_s: secs,
            complete_requests: done,
            failed_requests: m.errors.failed(),
            failures: AbFailures {
                connect: m.errors.connect,
                receive: m.errors.receive,
                length: m.errors.length + m.errors.truncated,
                exceptions: m.errors.timeout + m.errors.protocol,
            },
            write_errors: m.errors.write,
            non_2xx,
            keep_alive_requests: plan.reuses_connections().then_some(m.keep_alive_responses),
            total_transferred: m.bytes_read,
            total_body_sent: plan.body.as_ref().map(|_| m.body_sent),
            html_transferred: m.body_bytes,
            requests_per_second: per_sec(done as f64),
            time_per_request_ms: if done > 0 {
                plan.concurrency as f64 * secs * 1000.0 / done as f64
            } else {
                0.0
            },
            time_per_request_all_ms: if done > 0 {
                secs * 1000.0 / done as f64
            } else {
                0.0
            },
            transfer_rate_kbps: per_sec(m.bytes_read as f64 / 1024.0),
            connection_times: ConnectionTimes {
                connect: row(&m.connect),
                processing: row(&m.processing),
                waiting: row(&m.waiting),
                total: row(&m.total),
            },
            percentiles: if t.count > 0 {
                AB_PERCENTS
                    .iter()
                    .map(|&p| AbPercentile {
                        percent: p,
                        ms: round_ms(ab_percentile(t, p)),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            latency_ms: Latency {
                min: Sorted::min(t) as f64 / 1000.0,
                mean: mean_us / 1000.0,
                stdev: sd_us / 1000.0,
                p50: q_ms(t, 0.5),
                p75: q_ms(t, 0.75),
                p90: q_ms(t, 0.9),
                p95: q_ms(t, 0.95),
                p99: q_ms(t, 0.99),
                p99_9: q_ms(t, 0.999),
                p99_99: q_ms(t, 0.9999),
                max: t.max as f64 / 1000.0,
            },
            siege: Siege {
                transactions: m.responses,
                availability: if m.responses + socket_failures > 0 {
                    100.0 * m.responses as f64 / (m.responses + socket_failures) as f64
                } else {
                    0.0
                },
                elapsed_s: secs,
                data_transferred_mb: mb,
                response_time_s: mean_us / 1e6,
                transaction_rate: per_sec(m.responses as f64),
                throughput_mb_s: per_sec(mb),
                concurrency: per_sec(t.sum as f64 / 1e6),
                successful_transactions: m.responses - client_errors,
                failed_transactions: client_errors + socket_failures,
                longest_transaction_s: t.max as f64 / 1e6,
                shortest_transaction_s: Sorted::min(t) as f64 / 1e6,
            },
            status_codes: m
                .statuses
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            errors: m.errors,
            connections_opened: m.connections_opened,
            rate: plan.rate.map(|target| RateFigures {
                target,
                achieved: per_sec(done as f64),
                send_delay_mean_ms: if m.send_delay.count > 0 {
                    m.send_delay.sum as f64 / m.send_delay.count as f64 / 1000.0
                } else {
                    0.0
                },
                send_delay_p99_ms: q_ms(&m.send_delay, 0.99),
                send_delay_max_ms: m.send_delay.max as f64 / 1000.0,
            }),
            aborted: m.aborted.clone(),
        }
    }
}
