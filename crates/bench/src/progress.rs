//! Progress while a run lasts, on stderr, read from per-thread counters the engine publishes
//! every 20 ms (so it costs the hot path nothing).
//!
//! Two shapes: on a terminal, a bar (indicatif, which knows the terminal's width, so a line
//! never wraps and nothing stale stays on screen); elsewhere, ApacheBench's own heartbeat lines
//! ("Completed 100 requests" ... "Finished 1000 requests"), so logs and scripts see ab's text.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::Shared;
use crate::plan::Plan;

/// How progress is shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// Nothing (`-q`, a library caller).
    #[default]
    Off,
    /// A bar on stderr sized to the terminal; cleared when the run ends.
    Bar,
    /// ab's "Completed N requests" line on stderr each time another N requests are done.
    Heartbeat(u64),
}

/// ab's heartbeat interval: a line every 10 % of the requests but at most every 100, and
/// none for 150 requests or fewer. A time limit without `-n` counts against ab's 50,000.
#[cfg(feature = "cli")]
pub fn ab_heartbeat(requests: Option<u64>) -> u64 {
    let n = requests.unwrap_or(50_000);
    if n > 150 {
        (n / 10).max(100)
    } else {
        0
    }
}

fn totals(shared: &Shared) -> (u64, u64) {
    shared.progress.iter().fold((0, 0), |(d, f), p| {
        (
            d + p.done.load(Ordering::Relaxed),
            f + p.failed.load(Ordering::Relaxed),
        )
    })
}

pub fn show(plan: &Plan, shared: &Shared, finished: &AtomicBool, t0: Instant, how: Progress) {
    match how {
        Progress::Off => {}
        Progress::Bar => bar(plan, shared, finished, t0),
        Progress::Heartbeat(every) => heartbeat(every, shared, finished),
    }
}

fn heartbeat(every: u64, shared: &Shared, finished: &AtomicBool) {
    if every == 0 {
        return;
    }
    let mut next = every;
    loop {
        // Read the flag first: the counters read after it include the engine's last publish.
        let last = finished.load(Ordering::Acquire);
        let (done, _) = totals(shared);
        while done >= next {
            eprintln!("Completed {next} requests");
            next += every;
        }
        if last {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn bar(plan: &Plan, shared: &Shared, finished: &AtomicBool, t0: Instant) {
    let (bar, by_time) = match (plan.requests, plan.duration) {
        (Some(n), _) => (ProgressBar::new(n), false),
        (None, Some(d)) => (ProgressBar::new(d.as_millis() as u64), true),
        (None, None) => return,
    };
    bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
    // `wide_bar` takes what the terminal's width leaves, so the line never wraps.
    let template = if by_time {
        "{elapsed_precise} [{wide_bar}] {msg}"
    } else {
        "{elapsed_precise} [{wide_bar}] {pos}/{len} {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut last = (Instant::now(), 0u64);
    while !finished.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let (done, failed) = totals(shared);
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
            format!("{done} done, {rate:.0}/s, {failed} err")
        } else {
            format!("{rate:.0}/s, {failed} err")
        });
    }
    bar.finish_and_clear();
}

#[cfg(all(test, feature = "cli"))]
mod tests {
    use super::ab_heartbeat;

    #[test]
    fn heartbeat_like_ab() {
        assert_eq!(ab_heartbeat(Some(100)), 0);
        assert_eq!(ab_heartbeat(Some(150)), 0);
        assert_eq!(ab_heartbeat(Some(151)), 100);
        assert_eq!(ab_heartbeat(Some(300)), 100);
        assert_eq!(ab_heartbeat(Some(10_000)), 1000);
        assert_eq!(ab_heartbeat(None), 5000, "-t: ab sizes for 50,000");
    }
}
