//! Liveness and readiness, as load balancers and orchestrators ask for them.
//!
//! Readiness is read from the scoreboard alone, so the master (`/readyz` on the admin listener)
//! and every worker (`--health-path` on the public port) give the same answer without asking
//! each other: the server is ready once every worker of the first generation has booted (a
//! rolling restart does not flap it), while at least one worker is ready, while no worker's write
//! backlog has reached the application's limit (`--max-lag`, published with its figures), and
//! until SIGTERM starts `--drain-delay`. Liveness is the master's loop answering at all.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use c10k_http::{Ctx, Handler, Request, Response};

use crate::scoreboard::{Scoreboard, MAX_SLOTS};

/// Why the server is not ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotReady {
    Booting,
    Draining,
    NoWorker,
    Backlog,
}

impl NotReady {
    fn reason(self) -> &'static str {
        match self {
            NotReady::Booting => "workers are booting",
            NotReady::Draining => "draining (SIGTERM received; --drain-delay running)",
            NotReady::NoWorker => "no worker is ready",
            NotReady::Backlog => "a worker's write backlog is at --max-lag",
        }
    }
}

/// Whether the server should get traffic now.
pub(crate) fn readiness(sb: &Scoreboard) -> Result<(), NotReady> {
    let h = sb.header();
    if h.draining.load(Relaxed) == 1 {
        return Err(NotReady::Draining);
    }
    if h.booted.load(Relaxed) != 1 {
        return Err(NotReady::Booting);
    }
    let target = (h.target.load(Relaxed) as usize).clamp(1, MAX_SLOTS);
    if !(0..target).any(|i| sb.slot(i).ready.load(Relaxed) == 1) {
        return Err(NotReady::NoWorker);
    }
    let at_limit = (0..target).any(|i| {
        sb.store(i)
            .snapshot()
            .is_some_and(|f| f.max_backlog > 0 && f.backlog >= f.max_backlog)
    });
    if at_limit {
        return Err(NotReady::Backlog);
    }
    Ok(())
}

/// The answer to a readiness probe: 200 `ready`, or 503 with the reason.
pub(crate) fn readiness_response(sb: &Scoreboard) -> Response {
    match readiness(sb) {
        Ok(()) => Response::text(200, "ready\n"),
        Err(why) => Response::error(503, format_args!("not ready: {}", why.reason())),
    }
}

/// The answer to a liveness probe.
pub(crate) fn liveness_response() -> Response {
    Response::text(200, "alive\n")
}

/// The application behind `--health-path`: requests for that path get the readiness answer
/// before the application is called; every other request goes to the application unchanged.
pub(crate) struct HealthPath<H> {
    inner: Arc<H>,
    path: Option<String>,
    scoreboard: Arc<Scoreboard>,
}

impl<H> HealthPath<H> {
    pub fn new(inner: Arc<H>, path: Option<String>, scoreboard: Arc<Scoreboard>) -> Self {
        HealthPath {
            inner,
            path,
            scoreboard,
        }
    }
}

impl<H: Handler> Handler for HealthPath<H> {
    fn call(&self, req: Request, ctx: Ctx) -> impl Future<Output = Response> + Send {
        let (probe, app) = match &self.path {
            Some(p) if *p == req.path => (Some(readiness_response(&self.scoreboard)), None),
            _ => (None, Some(self.inner.call(req, ctx))),
        };
        async move {
            match (probe, app) {
                (_, Some(app)) => app.await,
                (Some(probe), None) => probe,
                (None, None) => Response::error(500, "no answer"),
            }
        }
    }

    fn runs_own_threads(&self) -> bool {
        self.inner.runs_own_threads()
    }

    fn capacity(&self) -> Option<c10k_http::Capacity> {
        self.inner.capacity()
    }

    fn capacity_freed(&self) -> impl std::future::Future<Output = ()> + Send {
        self.inner.capacity_freed()
    }

    fn script_name(&self) -> &str {
        self.inner.script_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoreboard::WritePathFigures;

    #[test]
    fn ready_after_boot_until_drain_or_backlog() {
        let sb = Scoreboard::create().unwrap();
        sb.header().target.store(2, Relaxed);
        assert_eq!(readiness(&sb), Err(NotReady::Booting));
        sb.reset(0, 1);
        sb.slot(0).ready.store(1, Relaxed);
        sb.header().booted.store(1, Relaxed);
        assert_eq!(readiness(&sb), Ok(()));
        let mut f = WritePathFigures {
            backlog: 9,
            max_backlog: 10,
            ..WritePathFigures::default()
        };
        sb.store(1).publish(&f);
        assert_eq!(readiness(&sb), Ok(()));
        f.backlog = 10;
        sb.store(1).publish(&f);
        assert_eq!(readiness(&sb), Err(NotReady::Backlog));
        f.max_backlog = 0;
        sb.store(1).publish(&f);
        assert_eq!(readiness(&sb), Ok(()), "no limit, never at it");
        sb.header().draining.store(1, Relaxed);
        assert_eq!(readiness(&sb), Err(NotReady::Draining));
        assert_eq!(readiness_response(&sb).status, 503);
    }
}
