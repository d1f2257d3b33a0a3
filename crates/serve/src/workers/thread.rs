//! The `thread` worker class: a thread for every connection (Flask's `threaded=True`), at most
//! `--worker-connections` at once; beyond that, connections wait in the listen queue. A worker
//! runs as many requests at once as it has connections, at the price of a thread (stack,
//! scheduler entry) per connection — the C10K problem in its original form.
//!
//! Threads are kept, not made per connection: a thread that has closed its connection goes back
//! to accepting the next one itself (see [`SharedAcceptor`]), and a new thread is started only
//! when the last idle one takes a connection. So a connection costs no thread creation (`clone`,
//! stack set-up, an embedded interpreter's thread state) and no hand-off from an accepting thread
//! to a serving one, and per-thread state that an application keeps (a Python app's
//! `threading.local`, such as Django's database connection) lives on from one connection to the
//! next. A thread that has had nothing to do for [`IDLE_RETIRE`] exits while another idle one is
//! left to accept.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use c10k_http::Handler;

use super::blocking::{accept_error, SharedAcceptor};
use super::life::{Gauge, Life};
use crate::config::ServeConfig;
use crate::conn::ConnSettings;
use crate::conn_blocking::Mode;
use crate::listener::Listener;
use crate::shutdown::Phase;

/// Small stacks: the handler's frames are shallow, and thousands of threads must fit.
const STACK: usize = 256 * 1024;

/// How long a thread may wait for a connection before it exits (when another one is idle).
const IDLE_RETIRE: Duration = Duration::from_secs(30);

pub(super) fn run<H: Handler>(
    listeners: Vec<Listener>,
    config: &ServeConfig,
    handler: Arc<H>,
    life: Arc<Life>,
) -> anyhow::Result<()> {
    let crew = Arc::new(Crew {
        acceptor: SharedAcceptor::new(listeners, config, super::POLL)?,
        wait: super::POLL,
        retire_after: IDLE_RETIRE,
        settings: ConnSettings::from_config(config),
        handler,
        life: life.clone(),
        open: Gauge::default(),
        idle: AtomicUsize::new(0),
        live: AtomicUsize::new(0),
        cap: config.worker_connections.max(1),
        graceful: Duration::from_secs_f64(config.graceful_timeout),
    });
    life.ready();
    crew.spawn();
    while life.phase() == Phase::Running {
        life.beat();
        // A thread that could not be started (out of memory or threads) may have left nobody
        // accepting: try again (bounded by the cap like every start).
        if crew.idle.load(SeqCst) == 0 {
            crew.spawn();
        }
        std::thread::sleep(super::POLL);
    }
    // Every thread must be gone, not only every connection closed: a thread still waiting in
    // accept may take a connection until it sees the phase (within `POLL`), and it serves what
    // it took. Exiting before would drop that connection unanswered.
    let deadline = Instant::now() + Duration::from_secs_f64(config.graceful_timeout);
    while crew.live.load(SeqCst) > 0 {
        if Instant::now() >= deadline || life.phase() == Phase::Immediate {
            if crew.open.get() > 0 {
                tracing::warn!(open = crew.open.get(), "connections still open at exit");
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// A worker's threads and what they share.
struct Crew<H> {
    acceptor: SharedAcceptor,
    /// How long an idle thread waits in `accept` before it looks at the phase again.
    wait: Duration,
    /// [`IDLE_RETIRE`] (shorter in tests).
    retire_after: Duration,
    settings: ConnSettings,
    handler: Arc<H>,
    life: Arc<Life>,
    /// Connections being served.
    open: Gauge,
    /// Threads waiting for a connection.
    idle: AtomicUsize,
    /// Threads started and not exited.
    live: AtomicUsize,
    /// `--worker-connections`: at most this many threads, so at most this many connections.
    cap: usize,
    /// `--graceful-timeout`.
    graceful: Duration,
}

impl<H: Handler> Crew<H> {
    /// Starts one more thread unless the worker has `cap` of them.
    fn spawn(self: &Arc<Self>) {
        if self
            .live
            .fetch_update(SeqCst, SeqCst, |n| (n < self.cap).then_some(n + 1))
            .is_err()
        {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("c10k-conn".into())
            .stack_size(STACK)
            .spawn(move || me.serve_connections());
        if let Err(e) = spawned {
            self.live.fetch_sub(1, SeqCst);
            tracing::error!("cannot start a connection thread: {e}");
        }
    }

    /// A thread's life: accept a connection, serve it until it closes, again.
    fn serve_connections(self: Arc<Self>) {
        let running = || self.life.phase() == Phase::Running;
        let mut idle_since = Instant::now();
        while running() {
            self.idle.fetch_add(1, SeqCst);
            let accepted = self.acceptor.accept(self.wait, &running);
            let was_idle = self.idle.fetch_sub(1, SeqCst);
            match accepted {
                Ok(Some(accepted)) => {
                    if was_idle == 1 {
                        // The last thread waiting took this one: keep one waiting.
                        self.spawn();
                    }
                    self.serve(accepted);
                    idle_since = Instant::now();
                }
                Ok(None) => {
                    // Counted out of `idle` already: leave only if another thread still waits
                    // (it starts a new one when it takes a connection as the last idle thread).
                    if idle_since.elapsed() >= self.retire_after && self.idle.load(SeqCst) > 0 {
                        break;
                    }
                }
                Err(e) => accept_error(&e),
            }
        }
        // A graceful stop: the connections already queued (beyond `cap`) are served by the
        // threads as they free up, until the queue is empty or the deadline passes (see
        // `Shutdown::queue_drain_until`).
        while let Some(until) = self.life.shutdown.queue_drain_until(self.graceful) {
            if Instant::now() >= until {
                break;
            }
            match self.acceptor.take_queued() {
                Ok(Some(accepted)) => self.serve(accepted),
                Ok(None) => break,
                Err(e) => accept_error(&e),
            }
        }
        self.live.fetch_sub(1, SeqCst);
    }

    fn serve(&self, accepted: super::blocking::Accepted) {
        self.open.inc();
        self.life.slot().connections.fetch_add(1, Relaxed);
        let mut track = self.life.open(accepted.peer);
        let mut on_request = || self.life.on_request();
        let result = super::blocking::serve_accepted(
            accepted,
            &mut track,
            &*self.handler,
            &self.settings,
            &self.life.shutdown,
            Mode::UntilClosed,
            &mut on_request,
        );
        if let Err(e) = result {
            super::async_::log_io_error(&e);
        }
        drop(track);
        self.life.slot().connections.fetch_sub(1, Relaxed);
        self.open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    use c10k_http::{Ctx, Request, Response};

    use crate::config::BindAddr;
    use crate::scoreboard::Scoreboard;
    use crate::shutdown::Shutdown;
    use crate::track::Tracker;

    struct Hello;

    impl Handler for Hello {
        async fn call(&self, _req: Request, _ctx: Ctx) -> Response {
            Response::text(200, "hello\n")
        }
    }

    /// Polls `f` until it holds, for at most 10 s (no timing is asserted: only that it happens).
    fn eventually(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "never happened: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn idle_threads_retire_down_to_one_that_still_accepts() {
        let l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), 64, false).unwrap();
        let BindAddr::Tcp(addr) = l.local_addr().unwrap() else {
            panic!("a TCP listener has a TCP address")
        };
        let config = ServeConfig::default();
        let sb = Arc::new(Scoreboard::create().unwrap());
        sb.reset(0, 1);
        let tracker = Tracker::new(sb.clone(), 0, &config).unwrap();
        let life = Arc::new(Life::new(Shutdown::new(), sb, 0, 0, tracker));
        let wait = Duration::from_millis(20);
        let crew = Arc::new(Crew {
            acceptor: SharedAcceptor::new(vec![l], &config, wait).unwrap(),
            wait,
            retire_after: Duration::from_millis(200),
            settings: ConnSettings::from_config(&config),
            handler: Arc::new(Hello),
            life: life.clone(),
            open: Gauge::default(),
            idle: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            cap: 100,
            graceful: Duration::from_secs(1),
        });
        crew.spawn();
        let ask = |c: &mut std::net::TcpStream| {
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut got = [0u8; 512];
            let n = c.read(&mut got).unwrap();
            assert!(got[..n].starts_with(b"HTTP/1.1 200"));
        };
        // Five kept-alive connections hold five threads; a sixth waits for the next one.
        let mut clients: Vec<_> = (0..5)
            .map(|_| {
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                ask(&mut c);
                c
            })
            .collect();
        eventually("six threads", || crew.live.load(SeqCst) == 6);
        clients.clear();
        // Idle for longer than `retire_after`: all but one leave.
        eventually("one thread left", || crew.live.load(SeqCst) == 1);
        let mut late = std::net::TcpStream::connect(addr).unwrap();
        late.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        ask(&mut late);
        drop(late);
        life.shutdown.trigger(crate::shutdown::Phase::Graceful);
        eventually("every thread gone", || crew.live.load(SeqCst) == 0);
    }
}
