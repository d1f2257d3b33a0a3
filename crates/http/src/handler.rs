//! The [`Handler`] trait and the per-request [`Ctx`].
//!
//! An application is written once. Every wait it makes (a `?delay=` sleep, a database or journal
//! wait) goes through the [`Ctx`], which decides what a wait means:
//!
//! - [`Wait::Block`]: the wait blocks the calling OS thread. The `sync`, `thread` and `gthread`
//!   worker classes drive [`Handler::call`] with a tiny executor on their own thread, so a sleeping
//!   request occupies that thread exactly as a Flask view does under gunicorn's `sync`.
//! - [`Wait::Yield`]: the wait yields to the event loop (a tokio timer), so other requests run
//!   meanwhile — what gevent's monkey patching gives a Python app.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::request::Request;
use crate::response::Response;

/// What a server calls for each request.
///
/// The returned future must honour [`Ctx::wait`]: under [`Wait::Block`] it is driven by a
/// `block_on` on a worker thread, so it must not need a tokio runtime context there; under
/// [`Wait::Yield`] it runs on a tokio runtime and must not block the thread for long (a handler
/// that must block — a Python call — hands the work to threads of its own and awaits the result).
pub trait Handler: Send + Sync + 'static {
    fn call(&self, req: Request, ctx: Ctx) -> impl Future<Output = Response> + Send;

    /// Whether the handler does its blocking work on threads of its own (a Python app's pool).
    /// An `async` worker then runs its event loop on one thread, and `--threads` sizes only the
    /// handler's pool ([`WorkerInfo::threads`]), instead of also starting that many runtime
    /// threads that would only contend for the same lock (the GIL).
    fn runs_own_threads(&self) -> bool {
        false
    }

    /// The threads the handler runs requests on, when it has a fixed number of them (a Python
    /// app's pool under the `async` class); `None`: it has no such limit. A worker that shares
    /// its listener with sibling workers leaves new connections to an idle sibling for a moment
    /// rather than queueing their requests here.
    fn capacity(&self) -> Option<Capacity> {
        None
    }

    /// Completes when a request has left the handler's threads, so [`Handler::capacity`]
    /// may show more free (it may also complete spuriously: check again). Never completes for a
    /// handler without a limit.
    fn capacity_freed(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// The URL prefix the application is mounted at, as its `SCRIPT_NAME` (a WSGI app's
    /// `--root-path`, see [`crate::cgi::script_name`]); empty for one mounted at `/`. The access
    /// log's `%({SCRIPT_NAME}e)s` and `%({PATH_INFO}e)s` print what the application was given.
    fn script_name(&self) -> &str {
        ""
    }
}

/// A handler's threads right now ([`Handler::capacity`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// How many more requests could start without waiting for a thread to free.
    pub free: usize,
    /// Whether requests keep their thread long (a view that sleeps or waits on a database), so
    /// that one queued behind them would wait long; short ones (CPU work) free threads so often
    /// that a request queued for one barely waits, and keeps the thread from idling meanwhile.
    pub slow: bool,
}

/// How a wait inside a handler behaves; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Block the OS thread (`sync`, `thread`, `gthread`).
    Block,
    /// Yield to the tokio event loop (`async`). Needs a tokio runtime with timers.
    Yield,
}

/// The request has run past its deadline (`--request-timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("request exceeded its time limit")]
pub struct DeadlineExceeded;

/// Per-request context: how to wait, and until when the request may run.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    pub wait: Wait,
    pub deadline: Option<Instant>,
}

impl Ctx {
    pub fn new(wait: Wait) -> Ctx {
        Ctx {
            wait,
            deadline: None,
        }
    }

    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Ctx {
        self.deadline = deadline;
        self
    }

    /// Sleeps for `d`, blocking or yielding per [`Wait`]. A sleep that would end past the deadline
    /// sleeps until the deadline and fails, so a blocked worker thread is freed on time under every
    /// worker class (the same `--request-timeout` meaning everywhere).
    pub async fn sleep(&self, d: Duration) -> Result<(), DeadlineExceeded> {
        let now = Instant::now();
        let (d, late) = match self.deadline {
            Some(deadline) if now + d > deadline => (deadline.saturating_duration_since(now), true),
            _ => (d, false),
        };
        match self.wait {
            Wait::Block => std::thread::sleep(d),
            Wait::Yield => tokio::time::sleep(d).await,
        }
        if late {
            Err(DeadlineExceeded)
        } else {
            Ok(())
        }
    }

    pub fn check_deadline(&self) -> Result<(), DeadlineExceeded> {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(DeadlineExceeded),
            _ => Ok(()),
        }
    }
}

/// What a worker process tells the application factory about itself, so an application can size
/// its own resources (a pool of Python threads) and report the model truthfully (WSGI's
/// `wsgi.multithread` / `wsgi.multiprocess`).
#[derive(Clone, Debug)]
pub struct WorkerInfo {
    /// The worker's stable index (0..workers); a replacement worker gets its predecessor's slot.
    pub slot: usize,
    /// The worker class's name as the command line spells it (`sync`, `gthread`, `async`, ...).
    pub class: &'static str,
    /// How waits behave under this class.
    pub wait: Wait,
    /// OS threads that may call the handler at once (1 for `sync`, `--threads` for `gthread`,
    /// `--worker-connections` for `thread`; for `async`, the size of the pool a blocking handler
    /// should use: `--threads`).
    pub threads: usize,
    /// Requests this worker may have in flight at once.
    pub max_in_flight: usize,
    /// Worker processes the server runs (`--workers`).
    pub workers: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_cuts_a_long_sleep() {
        let ctx =
            Ctx::new(Wait::Block).with_deadline(Some(Instant::now() + Duration::from_millis(20)));
        let start = Instant::now();
        assert_eq!(
            pollster::block_on(ctx.sleep(Duration::from_secs(5))),
            Err(DeadlineExceeded)
        );
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(ctx.check_deadline(), Err(DeadlineExceeded));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn yield_waits_overlap_on_one_thread() {
        let ctx = Ctx::new(Wait::Yield);
        let start = Instant::now();
        let (a, b) = tokio::join!(
            ctx.sleep(Duration::from_millis(200)),
            ctx.sleep(Duration::from_millis(200))
        );
        assert_eq!((a, b), (Ok(()), Ok(())));
        assert!(start.elapsed() < Duration::from_millis(390));
    }
}
