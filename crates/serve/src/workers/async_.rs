//! The `async` worker class: one tokio event loop per worker process (current-thread with
//! `--threads 1` or for a handler with threads of its own, such as a Python app; multi-thread
//! otherwise). A connection is a task, a wait yields, so one worker
//! runs as many requests at once as it has connections (up to `--worker-connections`). With
//! sibling workers, one whose handler has every thread busy, counting the connections it has
//! just accepted, leaves new connections to them for a moment ([`DEFER_WHEN_BUSY`]).

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use c10k_http::Handler;
use tokio::sync::Semaphore;

use c10k_http::Transport;

use crate::config::{Protocol, ServeConfig};
use crate::conn::ConnSettings;
use crate::lazy_io::{LazyListener, LazyStream};
use crate::listener::Listener;
use crate::proto::ConnInfo;
use crate::shutdown::Phase;
use crate::stream::Stream;

use super::life::Life;
use std::sync::atomic::Ordering::Relaxed;

pub(super) fn run<H: Handler>(
    listeners: Vec<Listener>,
    config: &ServeConfig,
    handler: Arc<H>,
    life: Arc<Life>,
) -> anyhow::Result<()> {
    let shutdown = life.shutdown.clone();
    // A handler with threads of its own (a Python app) gets `--threads` for its pool; more
    // runtime threads would only contend with them for the GIL.
    let mut builder = if config.threads == 1 || handler.runs_own_threads() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.threads);
        b
    };
    let rt = builder
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let settings = Arc::new(ConnSettings::from_config(config));
    let protocols: Vec<Protocol> = (0..listeners.len())
        .map(|i| config.protocol_of(i))
        .collect();
    let max_conns = config.worker_connections;
    // Sibling workers accept from the same listeners: one whose threads are all busy can leave
    // a new connection to them (see `DEFER_WHEN_BUSY`).
    let defer_when_busy = config.workers > 1;
    let graceful = Duration::from_secs_f64(config.graceful_timeout);
    rt.block_on(async move {
        let permits = Arc::new(Semaphore::new(max_conns));
        let opening = Arc::new(AtomicUsize::new(0));
        let mut accepting = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            let acceptor = Acceptor::new(l)?;
            accepting.push(tokio::spawn(accept_loop(
                acceptor,
                protocols[i],
                handler.clone(),
                settings.clone(),
                permits.clone(),
                life.clone(),
                defer_when_busy.then(|| opening.clone()),
                graceful,
            )));
        }
        // The heartbeat runs on the event loop itself: a request that blocks the loop (CPU work,
        // a blocking call) stops it, and the master's --timeout catches the stuck worker.
        let beat_life = life.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(super::POLL);
            loop {
                tick.tick().await;
                beat_life.beat();
            }
        });
        life.ready();
        let mut stop = shutdown.subscribe();
        // An error means the sender is gone, which only happens at exit: stop either way.
        let _ = stop.wait_for(|p| *p != Phase::Running).await;
        let phase = *stop.borrow();
        if matches!(phase, Phase::Draining | Phase::Reloading | Phase::Graceful) {
            // The accept loops first (a graceful stop's drain of the listen queue takes permits
            // as connections end); then every open connection holds a permit, and all permits
            // back means all connections done.
            let all = u32::try_from(max_conns).unwrap_or(u32::MAX);
            let done = async {
                for l in accepting {
                    let _ = l.await;
                }
                permits.acquire_many(all).await
            };
            tokio::select! {
                _ = done => {}
                _ = tokio::time::sleep(graceful) => {
                    tracing::warn!(
                        open = max_conns - permits.available_permits(),
                        "--graceful-timeout passed; closing connections still open"
                    );
                }
                _ = stop.wait_for(|p| *p == Phase::Immediate) => {}
            }
        }
        anyhow::Ok(())
    })?;
    // Whatever is still running is cut off here.
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

/// A listener and what the worker knows of its connections before reading them.
struct Acceptor {
    listener: LazyListener,
    /// Every connection's local address when the listener has one specific address
    /// ([`Listener::fixed_local`]); `None`: asked per connection.
    local: Option<std::net::SocketAddr>,
}

impl Acceptor {
    fn new(l: Listener) -> anyhow::Result<Acceptor> {
        let local = l.fixed_local();
        Ok(Acceptor {
            listener: LazyListener::new(l)?,
            local,
        })
    }
}

/// How long a worker whose handler has no [thread free](Handler::capacity) leaves a new
/// connection to its siblings before taking it anyway. Every worker is woken for a new
/// connection; a busy one that took it would queue its request behind its own (a Python pool's
/// threads all inside views, say sleeping 0.1 s) while a sibling's threads sat idle — the request
/// would wait a whole view's time for nothing. An idle sibling accepts within microseconds; when
/// every worker is busy, one takes it at the latest after this (or as soon as it has a thread
/// free), so health probes and connections are still answered from the event loop.
///
/// When the app's requests hold their threads long ([`c10k_http::Capacity::slow`]: views that
/// sleep or wait on I/O), the connections a worker has just accepted whose first request has not
/// reached the handler yet ([`Opening`]) count as busy threads: a client's request arrives a
/// moment after its connection, and without them the worker that woke first for a burst of
/// connections took the whole burst — more than its threads — before any of their requests
/// counted, and the extra requests waited for a view to end. (For fast requests, taking a few
/// more than the free threads is better: they queue for microseconds, and the threads run them
/// back to back instead of idling until the next request arrives — 12 % more throughput under
/// overload.) A connection whose client stays silent stops counting after a few milliseconds
/// (`OPENING` in [`crate::conn_async`]), so idle connections never make a worker look busy for
/// long.
const DEFER_WHEN_BUSY: Duration = Duration::from_millis(20);

/// One accepted connection whose first request has not reached the handler yet, in the worker's
/// count of them; dropped when the request goes to the handler, when the client has been silent
/// for a few milliseconds, or when the connection ends.
struct Opening(Arc<AtomicUsize>);

impl Opening {
    fn new(count: &Arc<AtomicUsize>) -> Opening {
        count.fetch_add(1, Relaxed);
        Opening(count.clone())
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop<H: Handler>(
    acceptor: Acceptor,
    protocol: Protocol,
    handler: Arc<H>,
    settings: Arc<ConnSettings>,
    permits: Arc<Semaphore>,
    life: Arc<Life>,
    // Set when there are sibling workers: this worker's connections not yet past their first
    // request (see `DEFER_WHEN_BUSY`).
    opening: Option<Arc<AtomicUsize>>,
    // `--graceful-timeout`: how long a graceful stop serves the listen queue at most.
    graceful: Duration,
) {
    let mut stop = life.shutdown.subscribe();
    let local = acceptor.local;
    let serve = |accepted: crate::lazy_io::Accepted, permit| {
        let opened = opening.as_ref().map(Opening::new);
        tokio::spawn(serve_conn(
            accepted,
            permit,
            opened,
            local,
            protocol,
            handler.clone(),
            settings.clone(),
            life.clone(),
        ));
    };
    loop {
        // Checked here, so the selects below can try their work first: a stop branch polled
        // first registers a waiter (a lock, a list insert and removal) for every connection.
        if *stop.borrow() != Phase::Running {
            break;
        }
        // Take a connection slot before accepting: when all are taken, new connections wait in
        // the kernel's listen queue instead of costing memory here.
        let permit = tokio::select! {
            biased;
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.wait_for(|p| *p != Phase::Running) => break,
        };
        // Whether to leave it to a sibling is decided when a connection is there, not before
        // waiting for one: the requests in flight change meanwhile.
        let busy = || defer_if_busy(&*handler, opening.as_deref());
        let accepted = tokio::select! {
            biased;
            r = acceptor.listener.accept_after(busy) => r,
            _ = stop.wait_for(|p| *p != Phase::Running) => break,
        };
        match accepted {
            Ok(accepted) => serve(accepted, permit),
            Err(e) => accept_error(&e).await,
        }
        // With siblings, let the connection just taken read its request (already there with
        // deferred accepts) and take its thread before accepting again, so `defer_if_busy`
        // sees it: without this yield, a worker took a whole burst of ready connections
        // before any of them counted, more than its threads when the app's recent requests
        // were fast (see `DEFER_WHEN_BUSY`).
        if opening.is_some() {
            tokio::task::yield_now().await;
        }
    }
    // A graceful stop: the connections already queued (beyond `--worker-connections`) are
    // served as slots free up, until the queue is empty or the deadline passes (see
    // `Shutdown::queue_drain_until`).
    while let Some(until) = life.shutdown.queue_drain_until(graceful) {
        let until = tokio::time::Instant::from_std(until);
        let permit = tokio::select! {
            biased;
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = tokio::time::sleep_until(until) => return,
            _ = stop.wait_for(|p| *p == Phase::Immediate) => return,
        };
        if tokio::time::Instant::now() >= until {
            return;
        }
        match acceptor.listener.take_queued() {
            Ok(Some(accepted)) => serve(accepted, permit),
            Ok(None) => return,
            Err(e) => accept_error(&e).await,
        }
    }
}

/// Serves one accepted connection to its end, then gives its slot back.
#[allow(clippy::too_many_arguments)]
async fn serve_conn<H: Handler>(
    accepted: crate::lazy_io::Accepted,
    permit: tokio::sync::OwnedSemaphorePermit,
    opened: Option<Opening>,
    local: Option<std::net::SocketAddr>,
    protocol: Protocol,
    handler: Arc<H>,
    settings: Arc<ConnSettings>,
    life: Arc<Life>,
) {
    let stop = life.shutdown.subscribe();
    life.slot().connections.fetch_add(1, Relaxed);
    let (stream, peer) = accepted;
    let mut track = life.open(peer);
    let on_request = || life.on_request();
    let t = &mut track;
    let h = &*handler;
    // A uwsgi listener serves only the peers --uwsgi-allow-from names (unix: any).
    let admitted = protocol == Protocol::Http || super::uwsgi_admits(&settings, t, peer);
    let on = &on_request;
    let first = move || drop(opened);
    // Connections are served unregistered until they must wait (see lazy_io).
    let result = match stream {
        _ if !admitted => Ok(()),
        Stream::Tcp(s) => {
            let info = ConnInfo {
                peer,
                local: local.or_else(|| s.local_addr().ok()),
                transport: Transport::Tcp,
            };
            let s = LazyStream::new(s);
            crate::conn_async::serve(s, t, h, &settings, stop, on, first, info, protocol).await
        }
        Stream::Unix(s) => {
            let info = ConnInfo {
                peer: None,
                local: None,
                transport: Transport::Unix,
            };
            let s = LazyStream::new(s);
            crate::conn_async::serve(s, t, h, &settings, stop, on, first, info, protocol).await
        }
    };
    if let Err(e) = result {
        log_io_error(&e);
    }
    drop(track);
    life.slot().connections.fetch_sub(1, Relaxed);
    drop(permit);
}

/// Waits while `handler` has no thread free for one more request beyond the `opening`
/// connections', up to [`DEFER_WHEN_BUSY`]; at once when `opening` is `None` (no sibling workers
/// to leave the connection to).
async fn defer_if_busy<H: Handler>(handler: &H, opening: Option<&AtomicUsize>) {
    let Some(opening) = opening else {
        return;
    };
    // Connections still opening count against free threads only when requests hold their
    // thread long: a fast request queued behind others barely waits, and taking it keeps the
    // threads from idling until the next connection's request arrives.
    let busy = || {
        handler
            .capacity()
            .is_some_and(|c| c.free == 0 || (c.slow && c.free <= opening.load(Relaxed)))
    };
    if !busy() {
        return;
    }
    let until = tokio::time::Instant::now() + DEFER_WHEN_BUSY;
    while busy() {
        tokio::select! {
            biased;
            _ = handler.capacity_freed() => {}
            _ = tokio::time::sleep_until(until) => return,
        }
    }
}

/// Accept errors are the process's, not the client's: out of descriptors or memory. Log and
/// back off rather than spin.
async fn accept_error(e: &std::io::Error) {
    match e.raw_os_error() {
        Some(libc::ECONNABORTED) | Some(libc::EINTR) => {}
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            tracing::error!("accept: {e}; out of file descriptors, pausing accepts for 100 ms");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        _ => {
            tracing::error!("accept: {e}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A peer resetting or vanishing is normal traffic, not an error of ours.
pub(crate) fn log_io_error(e: &std::io::Error) {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | BrokenPipe | ConnectionAborted | UnexpectedEof => {
            tracing::debug!("connection: {e}")
        }
        _ => tracing::warn!("connection: {e}"),
    }
}
