//! `c10k bench`: an HTTP load generator that takes ApacheBench's flags, prints ApacheBench's
//! report (then siege's summary and tail percentiles), and runs one event loop per thread.
//!
//! The key design choice is that nothing is kept per request: each thread owns its connections
//! and records timings into HDR histograms with exact sums ([`stats::Measurement`]), which merge
//! exactly across threads, processes (`--processes`) and machines (`c10k bench merge`). ab's
//! formulas are then applied to the merged histograms (see [`stats`] for what that costs in
//! precision: nothing below 2 ms, at most 0.1 % above).
//!
//! # As a library
//!
//! ```no_run
//! let mut plan = c10k_bench::Plan::new("http://127.0.0.1:8000/");
//! plan.requests = Some(10_000);
//! plan.concurrency = 50;
//! plan.keep_alive = true;
//! let report = c10k_bench::run(&plan)?; // blocks; spawns and joins its own threads
//! println!("{:.0} requests/s", report.requests_per_second);
//! println!("{}", serde_json::to_string_pretty(&report)?);
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! [`run`] returns a [`Report`] (what `--json` prints, schema in `schema/report.schema.json`);
//! [`measure`] returns the mergeable [`Measurement`] behind it. Both raise the soft
//! `RLIMIT_NOFILE` to the hard limit, and refuse a plan the limits cannot hold with a
//! [`UsageError`] that names the limit.

/// The `c10k bench` command line (clap): only with the `cli` feature, which the binary turns on.
#[cfg(feature = "cli")]
pub mod cli;
pub mod engine;
pub mod hdrlog;
pub mod parse;
pub mod plan;
pub mod report;
pub mod stats;
pub mod sys;

#[cfg(feature = "cli")]
mod procs;
mod progress;
mod timer;
mod usage;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use engine::Sample;
pub use plan::Plan;
pub use progress::Progress;
pub use report::Report;
pub use stats::Measurement;
pub use usage::UsageError;

/// Sleeps until `start_at` (`--start-at`), waking every 100 ms to see Ctrl-C.
fn wait_until_start(start_at: Option<SystemTime>, interrupt: &AtomicBool) {
    let Some(at) = start_at else { return };
    while let Ok(left) = at.duration_since(SystemTime::now()) {
        if left.is_zero() || interrupt.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Runs the plan and returns ab's and siege's figures. Blocks until done.
pub fn run(plan: &Plan) -> anyhow::Result<Report> {
    let m = measure(plan, &Options::default())?.measurement;
    Ok(Report::new(plan, &m))
}

/// How to run besides the plan itself (things a library caller rarely sets).
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Progress on stderr while the run lasts.
    pub progress: Progress,
    /// Set to stop early (Ctrl-C); the report covers what finished.
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// What [`measure`] returns.
#[derive(Debug)]
pub struct Outcome {
    pub measurement: Measurement,
    /// One record per response when `plan.record_samples` (ab's `-g`).
    pub samples: Vec<Sample>,
}

/// Runs the plan and returns the raw, mergeable measurement.
pub fn measure(plan: &Plan, opts: &Options) -> anyhow::Result<Outcome> {
    let prepared = plan::Prepared::new(plan)?;
    sys::check_limits(plan)?;
    let threads = plan.threads.clamp(1, plan.concurrency);
    let params = engine::Params {
        pipeline: plan.pipeline,
        keep_alive: plan.reuses_connections(),
        rate_interval_ns: plan
            .rate
            .map(|r| ((plan.concurrency as f64 / r) * 1e9).clamp(1.0, 1e18) as u64),
        concurrency: plan.concurrency,
        timeout_ns: plan.timeout.as_nanos().min(u64::MAX as u128) as u64,
        deadline_ns: plan
            .duration
            .map(|d| d.as_nanos().min(u64::MAX as u128) as u64),
        keep_going: plan.keep_going,
        variable_length: plan.variable_length,
        source_ips: prepared.source_ips.clone(),
        window_size: plan.window_size,
        record_samples: plan.record_samples,
        verbosity: plan.verbosity,
        threads,
        prepared,
        save_bodies: match &plan.save_bodies {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        UsageError::new(format!("--save-bodies {}: {e}", path.display()))
                    })?,
            ),
            None => None,
        },
    };
    if plan.verbosity >= 2 {
        // ab's words, with the method the request line carries (HEAD for -i, POST for -p).
        let request = &params.prepared.requests[0];
        let method = request.split(|&b| b == b' ').next().unwrap_or(b"GET");
        eprintln!(
            "INFO: {} header == \n---\n{}\n---",
            String::from_utf8_lossy(method),
            String::from_utf8_lossy(request)
        );
    }
    let interrupt = opts
        .interrupt
        .clone()
        .unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
    let shared = engine::Shared::new(plan, threads, params.prepared.requests.len(), interrupt);
    let per = plan.concurrency / threads;
    let extra = plan.concurrency % threads;
    let mut tplans = Vec::new();
    let mut first = 0;
    for t in 0..threads {
        let n = per + usize::from(t < extra);
        tplans.push(engine::ThreadPlan {
            index: t,
            first_conn: first,
            conns: n,
        });
        first += n;
    }
    wait_until_start(plan.start_at, &shared.interrupt);
    let unix_t0_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let t0 = Instant::now();
    let finished = AtomicBool::new(false);
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = tplans
            .iter()
            .map(|tp| {
                let (params, shared) = (&params, &shared);
                std::thread::Builder::new()
                    .name(format!("bench-{}", tp.index))
                    .spawn_scoped(s, move || {
                        engine::run_thread(params, shared, tp, t0, unix_t0_us)
                    })
            })
            .collect();
        let progress = (opts.progress != Progress::Off).then(|| {
            let (shared, finished, how) = (&shared, &finished, opts.progress);
            s.spawn(move || progress::show(plan, shared, finished, t0, how))
        });
        let mut out = Vec::new();
        let mut err = None;
        for h in handles {
            match h {
                Ok(h) => match h.join() {
                    Ok(r) => out.push(r),
                    Err(_) => err = Some(anyhow::anyhow!("an engine thread panicked")),
                },
                Err(e) => err = Some(anyhow::anyhow!("spawning an engine thread: {e}")),
            }
        }
        finished.store(true, Ordering::Release);
        if let Some(p) = progress {
            let _ = p.join();
        }
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    })?;
    let mut m = Measurement::default();
    let mut samples = Vec::new();
    for (part, s) in results {
        m.merge(&part);
        samples.extend(s);
    }
    if plan.duration.is_some() && plan.requests.is_none() {
        // ab -t: the run lasts the time limit (or less when interrupted).
        let ran = t0.elapsed().min(plan.duration.unwrap_or(Duration::MAX));
        m.elapsed_us = m.elapsed_us.max(ran.as_micros() as u64);
    }
    m.document_length = shared.document_length();
    m.aborted = shared.take_abort();
    Ok(Outcome {
        measurement: m,
        samples,
    })
}
