//! `GET /metrics`: the Prometheus text exposition (format 0.0.4) of a [`Report`].
//!
//! Every metric family is one row of [`FAMILIES`]: its name, type, help text and a function that
//! reads its samples out of the report. The renderer walks the table, so a family cannot have a
//! `# TYPE` line that disagrees with its samples, and `/metrics` cannot show a figure `/status`
//! does not have. A family with no samples (no write path, no TCP listener) is left out whole.

use std::fmt::{Display, Write as _};

use super::report::{JournalReport, ListenerInfo, PoolReport, Report, WorkerInfo};
use crate::scoreboard::BUCKETS_US;

/// Prometheus metric types used here.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family: what the `# HELP`/`# TYPE` lines say and where the samples come from.
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    samples: fn(&Report, &mut Samples),
}

/// The sample lines of one family, written under its name.
struct Samples {
    name: &'static str,
    out: String,
}

impl Samples {
    fn value(&mut self, v: impl Display) {
        let _ = writeln!(self.out, "{} {v}", self.name);
    }

    fn labeled(&mut self, labels: &[(&str, &str)], v: impl Display) {
        self.suffixed("", labels, v);
    }

    fn suffixed(&mut self, suffix: &str, labels: &[(&str, &str)], v: impl Display) {
        self.out.push_str(self.name);
        self.out.push_str(suffix);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {v}");
    }
}

/// Per-worker samples, labelled by slot and pid.
fn per_worker(r: &Report, s: &mut Samples, f: fn(&WorkerInfo) -> Option<u64>) {
    for w in &r.workers {
        if let Some(v) = f(w) {
            let (slot, pid) = (w.slot.to_string(), w.pid.to_string());
            s.labeled(&[("slot", &slot), ("pid", &pid)], v);
        }
    }
}

/// Per-listener samples, labelled by address; a listener without the figure (a unix socket) has
/// none.
fn per_listener(r: &Report, s: &mut Samples, f: fn(&ListenerInfo) -> Option<u32>) {
    for l in &r.listeners {
        if let Some(v) = f(l) {
            s.labeled(&[("listener", &l.address)], v);
        }
    }
}

/// A figure of the database pools; none without a write path.
fn pool(r: &Report, s: &mut Samples, f: fn(&PoolReport) -> u64) {
    if let Some(p) = &r.pool {
        s.value(f(p))
    }
}

/// A figure of the journals; none without a write path.
fn journal<T: Display>(r: &Report, s: &mut Samples, f: fn(&JournalReport) -> T) {
    if let Some(j) = &r.journal {
        s.value(f(j))
    }
}

/// Every family `/metrics` shows, in the order shown.
const FAMILIES: &[Family] = &[
    Family {
        name: "c10k_info",
        kind: Kind::Gauge,
        help: "Server version and worker class.",
        samples: |r, s| {
            let class = r.server.worker_class.to_string();
            s.labeled(
                &[("version", &r.server.version), ("worker_class", &class)],
                1,
            )
        },
    },
    Family {
        name: "c10k_uptime_seconds",
        kind: Kind::Gauge,
        help: "Seconds since the master started.",
        samples: |r, s| s.value(r.server.uptime_seconds),
    },
    Family {
        name: "c10k_workers",
        kind: Kind::Gauge,
        help: "Worker processes running.",
        samples: |r, s| s.value(r.counters.workers_running),
    },
    Family {
        name: "c10k_worker_respawns_total",
        kind: Kind::Counter,
        help: "Workers started to replace one that exited.",
        samples: |r, s| s.value(r.counters.worker_respawns),
    },
    Family {
        name: "c10k_connections_accepted_total",
        kind: Kind::Counter,
        help: "Client connections accepted.",
        samples: |r, s| s.value(r.counters.connections_accepted),
    },
    Family {
        name: "c10k_connections_active",
        kind: Kind::Gauge,
        help: "Client connections open.",
        samples: |r, s| s.value(r.counters.connections_active),
    },
    Family {
        name: "c10k_connections_unlisted_total",
        kind: Kind::Counter,
        help: "Connections served but not listed (processlist full).",
        samples: |r, s| s.value(r.counters.connections_unlisted),
    },
    Family {
        name: "c10k_uwsgi_refused_total",
        kind: Kind::Counter,
        help: "uwsgi connections closed unanswered (malformed packet, or peer not in \
               --uwsgi-allow-from).",
        samples: |r, s| s.value(r.counters.uwsgi_refused),
    },
    Family {
        name: "c10k_listen_overflows_total",
        kind: Kind::Counter,
        help: "Connections dropped on a full listen queue since start (kernel TcpExt \
               ListenOverflows, whole network namespace).",
        samples: |r, s| {
            if let Some(v) = r.counters.connections_refused {
                s.value(v)
            }
        },
    },
    Family {
        name: "c10k_listen_queue",
        kind: Kind::Gauge,
        help: "Connections waiting in a listener's accept queue.",
        samples: |r, s| per_listener(r, s, |l| l.queue),
    },
    Family {
        name: "c10k_listen_queue_max",
        kind: Kind::Gauge,
        help: "A listener's accept queue limit.",
        samples: |r, s| per_listener(r, s, |l| l.queue_max),
    },
    Family {
        name: "c10k_requests_total",
        kind: Kind::Counter,
        help: "Requests answered, by status class.",
        samples: |r, s| {
            for (code, n) in ["1xx", "2xx", "3xx", "4xx", "5xx"]
                .iter()
                .zip(r.totals.status)
            {
                s.labeled(&[("code", code)], n);
            }
        },
    },
    Family {
        name: "c10k_requests_active",
        kind: Kind::Gauge,
        help: "Requests being handled or written now.",
        samples: |r, s| s.value(r.counters.requests_active),
    },
    Family {
        name: "c10k_received_bytes_total",
        kind: Kind::Counter,
        help: "Bytes read from clients.",
        samples: |r, s| s.value(r.counters.bytes_in),
    },
    Family {
        name: "c10k_sent_bytes_total",
        kind: Kind::Counter,
        help: "Response bytes written to clients.",
        samples: |r, s| s.value(r.counters.bytes_out),
    },
    Family {
        name: "c10k_request_duration_seconds",
        kind: Kind::Histogram,
        help: "Time from a complete request to its response.",
        samples: |r, s| {
            let mut cumulative = 0;
            for (i, n) in r.totals.buckets.iter().enumerate() {
                cumulative += n;
                let le = match BUCKETS_US.get(i) {
                    Some(us) => format!("{}", *us as f64 / 1e6),
                    None => "+Inf".into(),
                };
                s.suffixed("_bucket", &[("le", &le)], cumulative);
            }
            s.suffixed("_sum", &[], r.totals.duration_us as f64 / 1e6);
            s.suffixed("_count", &[], cumulative);
        },
    },
    Family {
        name: "c10k_pool_connections",
        kind: Kind::Gauge,
        help: "Database connections open, all workers' pools.",
        samples: |r, s| pool(r, s, |p| p.size),
    },
    Family {
        name: "c10k_pool_idle_connections",
        kind: Kind::Gauge,
        help: "Database connections idle.",
        samples: |r, s| pool(r, s, |p| p.idle),
    },
    Family {
        name: "c10k_pool_max_connections",
        kind: Kind::Gauge,
        help: "Pool size limit, summed over workers.",
        samples: |r, s| pool(r, s, |p| p.max),
    },
    Family {
        name: "c10k_journal_appended_total",
        kind: Kind::Counter,
        help: "Rows written to the journals.",
        samples: |r, s| journal(r, s, |j| j.appended),
    },
    Family {
        name: "c10k_journal_unflushed_rows",
        kind: Kind::Gauge,
        help: "Rows in the journals not yet in the database.",
        samples: |r, s| journal(r, s, |j| j.unflushed),
    },
    Family {
        name: "c10k_journal_flushed_total",
        kind: Kind::Counter,
        help: "Rows flushed to the database.",
        samples: |r, s| journal(r, s, |j| j.flushed),
    },
    Family {
        name: "c10k_journal_flushes_total",
        kind: Kind::Counter,
        help: "Batches flushed to the database.",
        samples: |r, s| journal(r, s, |j| j.flushes),
    },
    Family {
        name: "c10k_journal_fsyncs_total",
        kind: Kind::Counter,
        help: "Journal fsyncs.",
        samples: |r, s| journal(r, s, |j| j.fsyncs),
    },
    Family {
        name: "c10k_journal_db_errors_total",
        kind: Kind::Counter,
        help: "Failed database flushes.",
        samples: |r, s| journal(r, s, |j| j.db_errors),
    },
    Family {
        name: "c10k_journal_damaged_ranges",
        kind: Kind::Gauge,
        help: "Damaged ranges the workers' journals had at start-up (skipped, later records replayed).",
        samples: |r, s| journal(r, s, |j| j.damaged),
    },
    Family {
        name: "c10k_journal_records_lost",
        kind: Kind::Gauge,
        help: "Journal records lost to damage found at start-up.",
        samples: |r, s| journal(r, s, |j| j.records_lost),
    },
    Family {
        name: "c10k_journal_db_up",
        kind: Kind::Gauge,
        help: "1 while every worker's last database attempt succeeded.",
        samples: |r, s| journal(r, s, |j| u8::from(j.db_up)),
    },
    Family {
        name: "c10k_worker_requests_total",
        kind: Kind::Counter,
        help: "Requests answered by each worker process (resets when it is replaced).",
        samples: |r, s| per_worker(r, s, |w| Some(w.requests)),
    },
    Family {
        name: "c10k_worker_connections",
        kind: Kind::Gauge,
        help: "Connections open in each worker process.",
        samples: |r, s| per_worker(r, s, |w| Some(u64::from(w.connections))),
    },
    Family {
        name: "c10k_worker_rss_bytes",
        kind: Kind::Gauge,
        help: "Resident memory of each worker process.",
        samples: |r, s| per_worker(r, s, |w| w.rss_bytes),
    },
];

/// The Prometheus text of `r`.
pub(crate) fn render(r: &Report) -> String {
    let mut m = String::with_capacity(4096);
    for f in FAMILIES {
        let mut s = Samples {
            name: f.name,
            out: String::new(),
        };
        (f.samples)(r, &mut s);
        if s.out.is_empty() {
            continue;
        }
        let _ = writeln!(m, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(m, "# TYPE {} {}", f.name, f.kind.as_str());
        m.push_str(&s.out);
    }
    m
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for f in FAMILIES {
            assert!(seen.insert(f.name), "{} twice", f.name);
            assert!(f.name.starts_with("c10k_"), "{}", f.name);
            assert!(
                f.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                f.name
            );
            let counter = matches!(f.kind, Kind::Counter);
            assert_eq!(counter, f.name.ends_with("_total"), "{}", f.name);
            assert!(f.help.ends_with('.'), "{}", f.name);
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
