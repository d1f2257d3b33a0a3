//! The live progress bar (indicatif) on stderr: requests done, current rate, errors. Shown only
//! on a terminal and without `-q`; it reads per-thread counters the engine publishes every
//! 20 ms, so it costs the hot path nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::Shared;
use crate::Plan;

pub fn show(plan: &Plan, shared: &Shared, finished: &AtomicBool, t0: Instant) {
    let (bar, by_time) = match (plan.requests, plan.duration) {
        (Some(n), _) => (ProgressBar::new(n), false),
        (None, Some(d)) => (ProgressBar::new(d.as_millis() as u64), true),
        (None, None) => return,
    };
    let template = if by_time {
        "{elapsed_precise} [{bar:40}] {msg}"
    } else {
        "{elapsed_precise} [{bar:40}] {pos}/{len} {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut last = (Instant::now(), 0u64);
    while !finished.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let done: u64 = shared
            .progress
            .iter()
            .map(|p| p.done.load(Ordering::Relaxed))
            .sum();
        let failed: u64 = shared
            .progress
            .iter()
            .map(|p| p.failed.load(Ordering::Relaxed))
            .sum();
        let now = Instant::now();
        let dt = now.duration_since(last.0).as_secs_f64();
        let rate = if dt > 0.0 {
            (done - last.1.min(done)) as f64 / dt
        } else {
            0.0
        };
        last = (now, done);
        bar.set_position(if by_time {
            t0.elapsed().as_millis() as u64
        } else {
            done
        });
        bar.set_message(if by_time {
            format!("{done} done, {rate:.0} req/s, {failed} errors")
        } else {
            format!("{rate:.0} req/s, {failed} errors")
        });
    }
    bar.finish_and_clear();
}
