//! The `gthread` worker class: a fixed pool of `--threads` threads runs requests; one reactor
//! thread (this worker's main thread) accepts connections and watches idle ones.
//!
//! A connection only occupies a pool thread while it has a request to serve. Between requests it
//! goes back to the reactor's poller, so a thousand idle keep-alive clients cost a thousand
//! sockets, not a thousand threads (the complaint in gunicorn #908/#2917 is that its gthread ties
//! a thread to a keep-alive connection). One worker runs at most `--threads` requests at once.
//!
//! The reactor accepts only while a pool thread is free (see `Reactor::has_room`), and a thread
//! that frees up wakes it (see [`Seats`]), so a worker that was full takes new connections again
//! the moment it can serve them, never a heartbeat tick later. The connections left waiting in
//! the listen queue meanwhile are served in a graceful stop too (see `Reactor::stop`).
//!
//! Hand-offs cost context switches, and a worker's threads often share one CPU with its siblings,
//! so each connection is handed over as few times as possible: a freshly accepted connection is
//! read at once (a client usually sends its request right after connecting), and only one that
//! has sent nothing yet goes to the poller; ready work reaches a pool thread through [`Work`]'s
//! queue, where an idle thread sleeps without spinning or yielding first.
//! A pool thread that has just finished a connection takes the next one straight from the
//! listener when one is already queued and no work waits (see [`hot_accept`]): no reactor and no
//! queue in between.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use c10k_http::Handler;
use c10k_queue::WorkQueue;
use crossbeam_channel as chan;

use super::poller::Poller;

use super::blocking::accept_error;
use super::life::{Gauge, Life};
use crate::config::{Protocol, ServeConfig};
use crate::conn::{ConnSettings, Machine};
use crate::conn_blocking::{self, Mode, Outcome};
use crate::listener::Listener;
use crate::shutdown::Phase;
use crate::stream::Stream;
use crate::track::ConnTrack;

/// A connection and its state machine (which owns the processlist entry), which travel
/// together between reactor and pool: the reactor reads for it, a pool thread runs what is
/// ready. HTTP and uwsgi connections alike (the machine knows the protocol).
struct Tracked {
    conn: Stream,
    machine: Box<Machine<Arc<ConnSettings>, ConnTrack>>,
}

/// A connection for a pool thread, with the request the reactor already read, if any.
struct Work {
    tracked: Tracked,
    first: Option<c10k_http::Request>,
}

/// A listener as the pool threads see it: a duplicate of the reactor's (the same open socket,
/// non-blocking), with what a connection accepted from it needs.
struct Door {
    listener: Listener,
    protocol: Protocol,
    local: Option<std::net::SocketAddr>,
}

/// What [`hot_accept`] found: a connection for this thread (with the request already read, if
/// any), or one whose client has not sent its request yet (with the deadline to wait until).
type Hot = std::io::Result<Result<(Tracked, Option<c10k_http::Request>), (Tracked, Instant)>>;

/// Takes a connection already queued on one of `doors`, without waiting, for a pool thread that
/// has just finished one, and reads what its client sent. `None`: nothing queued.
///
/// Under load, a connection usually arrives while the pool threads are busy: through the reactor
/// it costs a wake-up of the reactor (accept, read, queue) and one of a pool thread, two hops on
/// a CPU that a worker often shares with its siblings. A thread that takes it itself costs none.
fn hot_accept(
    doors: &[Door],
    life: &Life,
    settings: &Arc<ConnSettings>,
    open: &Gauge,
) -> Option<Hot> {
    for door in doors {
        let (conn, peer) =
            match super::blocking::accept_blocking(&door.listener, settings.send_timeout) {
                Ok(accepted) => accepted,
                // Nothing queued, or an error the reactor meets and reports on its next accept.
                Err(_) => continue,
            };
        let track = life.open(peer);
        if door.protocol == Protocol::Uwsgi && !super::uwsgi_admits(settings, &track, peer) {
            continue;
        }
        open.inc();
        life.slot().connections.fetch_add(1, Relaxed);
        let info = conn.info_known(peer, door.local);
        let machine = Box::new(Machine::new(
            settings.clone(),
            track,
            info,
            door.protocol,
            true,
            Instant::now(),
        ));
        let mut tracked = Tracked { conn, machine };
        return Some(
            match conn_blocking::read_ready(&tracked.conn, &mut *tracked.machine, false) {
                Ok(Ok(first)) => Ok(Ok((tracked, first))),
                Ok(Err(deadline)) => Ok(Err((tracked, deadline))),
                Err(e) => Err(e),
            },
        );
    }
    None
}

pub(super) fn run<H: Handler>(
    listeners: Vec<Listener>,
    config: &ServeConfig,
    handler: Arc<H>,
    life: Arc<Life>,
) -> anyhow::Result<()> {
    let settings = Arc::new(ConnSettings::from_config(config));
    let poller = Arc::new(Poller::new().context("cannot create the gthread poller")?);
    let open = Arc::new(Gauge::default());
    // Ready connections wait here for a pool thread; the reactor never blocks on it (at most the
    // connection cap are ever queued).
    let work = Arc::new(WorkQueue::<Work>::default());
    // Connections handed back by the pool, waiting for the client until a deadline.
    let (idle_tx, idle_rx) = chan::unbounded::<(Tracked, Instant)>();

    let seats = Arc::new(Seats::default());
    // Non-blocking before any pool thread may accept from them (see `hot_accept`).
    for l in &listeners {
        l.set_nonblocking(true)?;
    }
    let doors = Arc::new(
        listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                Ok(Door {
                    listener: l.try_clone()?,
                    protocol: config.protocol_of(i),
                    local: l.fixed_local(),
                })
            })
            .collect::<std::io::Result<Vec<Door>>>()
            .context("cannot share the listeners with the gthread pool")?,
    );
    let max_conns = config.worker_connections;
    let mut pool = Vec::with_capacity(config.threads);
    for i in 0..config.threads {
        let (work, idle_tx, seats) = (work.clone(), idle_tx.clone(), seats.clone());
        let (handler, life, open, poller) =
            (handler.clone(), life.clone(), open.clone(), poller.clone());
        let (doors, settings) = (doors.clone(), settings.clone());
        let t = std::thread::Builder::new()
            .name(format!("c10k-gthread-{i}"))
            .spawn(move || {
                // A connection this thread took from a listener itself, served before it asks
                // the queue again.
                let mut next: Option<Work> = None;
                loop {
                    let Work {
                        tracked: Tracked { conn, mut machine },
                        first,
                    } = match next.take() {
                        Some(hot) => hot,
                        None => match work.pop() {
                            Some(queued) => {
                                seats.serving.fetch_add(1, SeqCst);
                                queued
                            }
                            None => break,
                        },
                    };
                    life.slot().busy.fetch_add(1, Relaxed);
                    let mut on_request = || life.on_request();
                    let result = conn_blocking::drive(
                        conn,
                        &mut *machine,
                        first,
                        &*handler,
                        &life.shutdown,
                        Mode::Pool,
                        &mut on_request,
                    )
                    .map(|outcome| match outcome {
                        Outcome::Wait(conn, deadline) => {
                            Some((Tracked { conn, machine }, deadline))
                        }
                        Outcome::Closed => None,
                    });
                    life.slot().busy.fetch_sub(1, Relaxed);
                    match result {
                        Ok(Some(back)) => {
                            if idle_tx.send(back).is_ok() {
                                let _ = poller.notify();
                            } else {
                                closed(&life, &open);
                            }
                        }
                        Ok(None) => closed(&life, &open),
                        Err(e) => {
                            super::async_::log_io_error(&e);
                            closed(&life, &open);
                        }
                    }
                    // Free now: take the next connection from the listener without the reactor's
                    // and the queue's hand-offs (two wake-ups), if one is already waiting and no
                    // work is queued (queued work goes first; this thread still counts as
                    // serving, so its own seat is not seen as queued).
                    let room = life.phase() == Phase::Running
                        && open.get() < max_conns
                        && seats.queued() == 0;
                    if room {
                        match hot_accept(&doors, &life, &settings, &open) {
                            Some(Ok(Ok(first))) => {
                                next = Some(Work {
                                    tracked: first.0,
                                    first: first.1,
                                })
                            }
                            Some(Ok(Err((tracked, deadline)))) => {
                                // Connected but silent so far: the reactor watches it.
                                if idle_tx.send((tracked, deadline)).is_ok() {
                                    let _ = poller.notify();
                                } else {
                                    closed(&life, &open);
                                }
                            }
                            Some(Err(e)) => {
                                super::async_::log_io_error(&e);
                                closed(&life, &open);
                            }
                            None => {}
                        }
                    }
                    if next.is_none() {
                        seats.serving.fetch_sub(1, SeqCst);
                        // Last, so a reactor woken here sees the connection closed too.
                        seats.free(&poller);
                    }
                }
            })
            .context("cannot start a gthread pool thread")?;
        pool.push(t);
    }
    drop(idle_tx);

    let mut reactor = Reactor {
        poller: &poller,
        protocols: (0..listeners.len())
            .map(|i| config.protocol_of(i))
            .collect(),
        locals: listeners.iter().map(Listener::fixed_local).collect(),
        listeners,
        listening: false,
        parked: HashMap::new(),
        next_key: 0,
        settings: &settings,
        life: &life,
        open: &open,
        max_conns: config.worker_connections,
        threads: config.threads,
        seats: &seats,
        fresh: 0,
        fresh_queue: std::collections::VecDeque::new(),
    };
    let served = reactor.run(&work, &idle_rx);

    // Stop: in-flight requests get until the graceful deadline. Parked connections close now,
    // except those whose client has not sent its first request yet (they get the machine's
    // short grace) or is sending a head. A graceful stop also serves the connections waiting in
    // the listen queue (see `Shutdown::queue_drain_until`).
    let graceful = Duration::from_secs_f64(config.graceful_timeout);
    let deadline = Instant::now() + graceful;
    let drain_until = life.shutdown.queue_drain_until(graceful);
    let served = served.and_then(|()| reactor.stop(&work, &idle_rx, deadline, drain_until));
    reactor.close_parked();
    // Pool threads finish what is queued, then exit.
    work.close();
    served?;
    loop {
        // Connections the pool hands back idle during shutdown are closed.
        while let Ok(back) = idle_rx.try_recv() {
            drop(back);
            closed(&life, &open);
        }
        if open.get() == 0 || Instant::now() >= deadline || life.phase() == Phase::Immediate {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if open.get() > 0 {
        tracing::warn!(open = open.get(), "connections still open at exit");
    } else {
        for t in pool {
            let _ = t.join();
        }
    }
    Ok(())
}

/// The pool's threads as seats: a connection takes one when the reactor hands it to the pool
/// (queued or being served) and gives it back when its request is done.
#[derive(Default)]
struct Seats {
    taken: AtomicUsize,
    /// Seats whose connection a pool thread is serving now (the others are queued).
    serving: AtomicUsize,
    /// Set by the reactor before it decides whether it has room to accept; a thread that gives
    /// a seat back then wakes the reactor's poller. Without this wake-up a worker whose threads
    /// were all taken stopped watching the listener until its next heartbeat tick (`POLL`,
    /// 200 ms) although its threads were free again: with short requests and no keep-alive,
    /// new connections waited for the tick (issue 12: 494 req/s instead of ~900 at 4×50, c=100).
    reactor_waits: AtomicBool,
}

impl Seats {
    fn take(&self) {
        self.taken.fetch_add(1, SeqCst);
    }

    /// Gives a seat back and wakes the reactor if it may be waiting for one.
    fn free(&self, poller: &Poller) {
        self.taken.fetch_sub(1, SeqCst);
        // Both sides are SeqCst: either the reactor's count already saw this seat free, or this
        // swap sees the reactor's flag and wakes it.
        if self.reactor_waits.swap(false, SeqCst) {
            let _ = poller.notify();
        }
    }

    /// Called by the reactor with `true` just before it reads `taken` to decide whether to
    /// accept, with `false` when it accepts anyway (new connections wake it then).
    fn reactor_may_wait(&self, waits: bool) {
        self.reactor_waits.store(waits, SeqCst);
    }

    fn taken(&self) -> usize {
        self.taken.load(SeqCst)
    }

    /// Connections handed to the pool and not picked up by a thread yet (about: the two counts
    /// are read one after the other).
    fn queued(&self) -> usize {
        self.taken().saturating_sub(self.serving.load(SeqCst))
    }
}

fn closed(life: &Life, open: &Gauge) {
    life.slot().connections.fetch_sub(1, Relaxed);
    open.dec();
}

struct Reactor<'a> {
    poller: &'a Poller,
    listeners: Vec<Listener>,
    /// The protocol of each listener, by index.
    protocols: Vec<Protocol>,
    /// The local address of each listener's connections, when fixed (see
    /// [`Listener::fixed_local`]).
    locals: Vec<Option<std::net::SocketAddr>>,
    listening: bool,
    /// Idle or new connections waiting to become readable, with the time they may wait.
    parked: HashMap<usize, (Tracked, Instant, bool)>,
    next_key: usize,
    settings: &'a Arc<ConnSettings>,
    life: &'a Life,
    open: &'a Gauge,
    max_conns: usize,
    threads: usize,
    seats: &'a Seats,
    /// Accepted connections that have not sent their first request yet, counted against the
    /// threads for `FRESH_GRACE` only (so clients that connect and stay silent cannot stop the
    /// worker from accepting).
    fresh: usize,
    /// (key, accepted at) of fresh connections, oldest first.
    fresh_queue: std::collections::VecDeque<(usize, Instant)>,
}

/// How long a just-accepted connection counts as about to need a thread.
const FRESH_GRACE: Duration = Duration::from_millis(100);

impl Reactor<'_> {
    fn run(
        &mut self,
        work: &WorkQueue<Work>,
        idle: &chan::Receiver<(Tracked, Instant)>,
    ) -> anyhow::Result<()> {
        for l in &self.listeners {
            l.set_nonblocking(true)?;
            super::blocking::prepare_listener(l, self.settings.send_timeout)?;
        }
        let n_listeners = self.listeners.len();
        let mut ready = Vec::new();
        self.life.ready();
        loop {
            self.life.beat();
            let phase = self.life.phase();
            // A stop, or a reload: `stop` closes the idle connections (a plain retirement,
            // `Draining`, keeps them until their next answer).
            if phase.closes_idle() {
                return Ok(());
            }
            // A pool thread that frees up from here on wakes the poller (see `Seats`), unless
            // the listener is watched anyway.
            self.seats.reactor_may_wait(true);
            let want_listen = phase == Phase::Running && self.has_room();
            if want_listen {
                self.seats.reactor_may_wait(false);
            }
            self.set_listening(want_listen)?;
            if phase == Phase::Draining && self.open.get() == 0 {
                return Ok(());
            }
            while let Ok((conn, deadline)) = idle.try_recv() {
                self.park(conn, deadline, false)?;
            }
            let now = Instant::now();
            let mut next_deadline = self.parked.values().map(|(_, d, _)| *d).min();
            if !want_listen {
                // A fresh connection that stays silent stops counting against the threads after
                // `FRESH_GRACE`, which may give room to accept again.
                if let Some(&(_, at)) = self.fresh_queue.front() {
                    let grace_end = at + FRESH_GRACE;
                    next_deadline = Some(next_deadline.map_or(grace_end, |d| d.min(grace_end)));
                }
            }
            // `POLL` only bounds the wait for the heartbeat and the stop phase; everything that
            // lets this worker make progress wakes the poller itself.
            let wait = next_deadline
                .map(|d| d.saturating_duration_since(now))
                .unwrap_or(super::POLL)
                .min(super::POLL);
            self.poller
                .wait(&mut ready, wait)
                .context("gthread poller")?;
            for &key in &ready {
                if key < n_listeners {
                    self.accept_from(key, work, false);
                } else if let Some((mut conn, _, fresh)) = self.parked.remove(&key) {
                    let _ = self.poller.delete(&conn.conn);
                    if fresh {
                        self.fresh -= 1;
                    }
                    // Read for the connection here: only a complete request (head and body,
                    // spooled if large) or an answer to write takes a pool thread, so clients
                    // that send slowly cannot occupy the pool (slowloris).
                    let first =
                        match conn_blocking::read_ready(&conn.conn, &mut *conn.machine, false) {
                            Ok(Ok(first)) => first,
                            Ok(Err(deadline)) => {
                                self.park(conn, deadline, false)?;
                                continue;
                            }
                            Err(e) => {
                                super::async_::log_io_error(&e);
                                drop(conn);
                                closed(self.life, self.open);
                                continue;
                            }
                        };
                    self.dispatch(work, conn, first);
                }
            }
            self.expire(Instant::now(), work);
        }
    }

    /// The worker stops (the phase is past `Running`): closes the parked connections that wait
    /// between requests (at once, or in stages on the pool: see `settle`), and watches the
    /// others — a client that has not sent its first request yet, within its grace (see
    /// [`crate::conn::FIRST_REQUEST_GRACE`]), or one sending a head — until each has a request for the pool or its wait ends, or until `deadline`
    /// (`--graceful-timeout`) or an immediate stop, while the pool finishes the requests under
    /// way (which may hand a connection back). Until `drain_until` (a graceful stop, see
    /// `Shutdown::queue_drain_until`) it also accepts the connections already waiting in the
    /// listen queue, as threads free up, until the queue is empty; it accepts nothing else.
    /// With no connection open and the queue empty this returns at once.
    fn stop(
        &mut self,
        work: &WorkQueue<Work>,
        idle: &chan::Receiver<(Tracked, Instant)>,
        deadline: Instant,
        mut drain_until: Option<Instant>,
    ) -> anyhow::Result<()> {
        self.set_listening(false)?;
        self.fresh = 0;
        self.fresh_queue.clear();
        let keys: Vec<usize> = self.parked.keys().copied().collect();
        for key in keys {
            if let Some((conn, _, _)) = self.parked.remove(&key) {
                let _ = self.poller.delete(&conn.conn);
                self.settle(conn, work)?;
            }
        }
        let mut ready = Vec::new();
        loop {
            // Handed back by the pool, or accepted by a pool thread just before the stop.
            while let Ok((conn, _)) = idle.try_recv() {
                self.settle(conn, work)?;
            }
            // A pool thread that finishes a connection wakes the poller (see `Seats`).
            self.seats.reactor_may_wait(true);
            if let Some(until) = drain_until {
                if Instant::now() >= until || self.life.phase() != Phase::Graceful {
                    drain_until = None;
                } else if self.has_room() {
                    let mut emptied = true;
                    for index in 0..self.listeners.len() {
                        emptied &= self.accept_from(index, work, true);
                    }
                    if emptied {
                        drain_until = None;
                    }
                }
            }
            let now = Instant::now();
            if (self.open.get() == 0 && drain_until.is_none())
                || now >= deadline
                || self.life.phase() == Phase::Immediate
            {
                return Ok(());
            }
            self.life.beat();
            let next = self.parked.values().map(|(_, d, _)| *d).min();
            let wait = next
                .map_or(super::POLL, |d| d.saturating_duration_since(now))
                .min(deadline.saturating_duration_since(now))
                .min(super::POLL);
            self.poller
                .wait(&mut ready, wait)
                .context("gthread poller")?;
            for &key in &ready {
                let Some((mut conn, _, fresh)) = self.parked.remove(&key) else {
                    continue;
                };
                if fresh {
                    self.fresh -= 1;
                }
                let _ = self.poller.delete(&conn.conn);
                match conn_blocking::read_ready(&conn.conn, &mut *conn.machine, true) {
                    Ok(Ok(first)) => self.dispatch(work, conn, first),
                    Ok(Err(until)) => self.park(conn, until, false)?,
                    Err(e) => {
                        super::async_::log_io_error(&e);
                        drop(conn);
                        closed(self.life, self.open);
                    }
                }
            }
            for conn in self.take_expired(Instant::now()) {
                self.settle(conn, work)?;
            }
        }
    }

    /// Asks a stopping connection's machine what becomes of it: closed here at once (idle
    /// between requests, or silent past its grace — no pool thread needed for that, unless the
    /// close must be staged), watched until its deadline, or handed to the pool (a 408 to write,
    /// say).
    fn settle(&mut self, mut conn: Tracked, work: &WorkQueue<Work>) -> anyhow::Result<()> {
        match conn.machine.next(Instant::now(), true) {
            // A connection idle after an answer closes as under the other classes: in stages
            // when closing at once could destroy that answer (its tail still queued unsent, or
            // the client's next request unread, which makes the kernel send a RST). A staged
            // close may wait up to a second, so a pool thread makes it, never the reactor; the
            // machine gives it the same close.
            crate::conn::Action::Close(lingering) if lingering.wanted(&conn.conn) => {
                self.dispatch(work, conn, None);
                Ok(())
            }
            crate::conn::Action::Close(lingering) => {
                if lingering == crate::conn::Lingering::Reset {
                    crate::conn::StagedClose::reset_on_close(&conn.conn);
                }
                drop(conn);
                closed(self.life, self.open);
                Ok(())
            }
            crate::conn::Action::Read { deadline, .. } => self.park(conn, deadline, false),
            crate::conn::Action::Handle(request) => {
                self.dispatch(work, conn, Some(request));
                Ok(())
            }
            // Something to write: the pool's work. The machine gives the same action again when
            // the pool asks.
            _ => {
                self.dispatch(work, conn, None);
                Ok(())
            }
        }
    }

    /// Hands a connection to the pool; never blocks.
    fn dispatch(
        &mut self,
        work: &WorkQueue<Work>,
        conn: Tracked,
        first: Option<c10k_http::Request>,
    ) {
        self.seats.take();
        let job = Work {
            tracked: conn,
            first,
        };
        if let Err(job) = work.push(job) {
            self.seats.free(self.poller);
            drop(job);
            closed(self.life, self.open);
        }
    }

    fn set_listening(&mut self, on: bool) -> anyhow::Result<()> {
        if on == self.listening {
            return Ok(());
        }
        // Interest is level-triggered: a listener stays armed across rounds until switched off.
        // Exclusive: the workers' reactors all watch the one listener, and a connection wakes
        // one of them (each of the others would wake, fail its accept and wait again: three
        // wasted wake-ups per connection with 4 workers). An exclusive watch cannot be
        // modified, so it is switched off by deleting it.
        for (key, l) in self.listeners.iter().enumerate() {
            if on {
                // SAFETY: listeners outlive the poller's use of them (see `close_parked`).
                match unsafe { self.poller.add_exclusive(l, key) } {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e.into()),
                }
            } else {
                match self.poller.delete(l) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.listening = on;
        Ok(())
    }

    /// Accepts what is queued on listener `index` while this worker has room (see `has_room`),
    /// 64 connections at most; `stopping`: a graceful stop's drain of the queue. `true`: the
    /// queue was found empty.
    fn accept_from(&mut self, index: usize, work: &WorkQueue<Work>, stopping: bool) -> bool {
        for _ in 0..64 {
            if !self.has_room() {
                return false;
            }
            match super::blocking::accept_blocking(
                &self.listeners[index],
                self.settings.send_timeout,
            ) {
                Ok((conn, peer)) => {
                    let track = self.life.open(peer);
                    let protocol = self.protocols[index];
                    if protocol == Protocol::Uwsgi
                        && !super::uwsgi_admits(self.settings, &track, peer)
                    {
                        continue;
                    }
                    self.open.inc();
                    self.life.slot().connections.fetch_add(1, Relaxed);
                    let machine = Box::new(Machine::new(
                        self.settings.clone(),
                        track,
                        conn.info_known(peer, self.locals[index]),
                        protocol,
                        true,
                        Instant::now(),
                    ));
                    let mut conn = Tracked { conn, machine };
                    // nginx writes a whole uwsgi request before we accept its connection (and
                    // HTTP clients often have theirs there too): read it now, and a connection
                    // with its request complete goes to the pool without ever joining the
                    // poller — no watch added and removed, no poller round.
                    let first =
                        match conn_blocking::read_ready(&conn.conn, &mut *conn.machine, stopping) {
                            Ok(Ok(first)) => first,
                            // The machine's deadline: --keepalive for a client that has sent
                            // nothing yet (as under the other classes; this waited
                            // --header-timeout), --header-timeout from a head's first byte;
                            // stopping, the first request's grace.
                            Ok(Err(deadline)) => {
                                if let Err(e) = self.park(conn, deadline, true) {
                                    tracing::error!("cannot watch a new connection: {e:#}");
                                }
                                continue;
                            }
                            Err(e) => {
                                super::async_::log_io_error(&e);
                                drop(conn);
                                closed(self.life, self.open);
                                continue;
                            }
                        };
                    self.dispatch(work, conn, first);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) => {
                    accept_error(&e);
                    return false;
                }
            }
        }
        false
    }

    /// Whether to accept another connection. Besides the connection cap, a worker whose threads
    /// all have (or are about to have) a request leaves new connections in the shared listen
    /// queue for a sibling with a free thread. Without this, whichever worker wakes first takes
    /// a whole burst of connections and queues them behind its busy threads while other workers
    /// idle (gunicorn's gthread does that).
    fn has_room(&mut self) -> bool {
        let now = Instant::now();
        while let Some(&(key, at)) = self.fresh_queue.front() {
            if now.duration_since(at) < FRESH_GRACE {
                break;
            }
            self.fresh_queue.pop_front();
            if let Some(entry) = self.parked.get_mut(&key) {
                if entry.2 {
                    entry.2 = false;
                    self.fresh -= 1;
                }
            }
        }
        self.open.get() < self.max_conns && self.seats.taken() + self.fresh < self.threads
    }

    fn park(&mut self, conn: Tracked, deadline: Instant, fresh: bool) -> anyhow::Result<()> {
        let key = self.listeners.len() + self.next_key;
        self.next_key = self.next_key.wrapping_add(1) % (usize::MAX / 2);
        // SAFETY: the connection is deleted from the poller before it is dropped (in the event
        // loop, `expire` and `close_parked`).
        if let Err(e) = unsafe { self.poller.add(&conn.conn, key) } {
            drop(conn);
            closed(self.life, self.open);
            return Err(e.into());
        }
        if fresh {
            self.fresh += 1;
            self.fresh_queue.push_back((key, Instant::now()));
        }
        self.parked.insert(key, (conn, deadline, fresh));
        Ok(())
    }

    /// Connections whose wait ended go to the pool, where their state machine answers 408 (a
    /// request under way) or closes them quietly (idle).
    fn expire(&mut self, now: Instant, work: &WorkQueue<Work>) {
        for conn in self.take_expired(now) {
            self.dispatch(work, conn, None);
        }
    }

    /// The parked connections whose wait has ended by `now`, out of the poller.
    fn take_expired(&mut self, now: Instant) -> Vec<Tracked> {
        let expired: Vec<usize> = self
            .parked
            .iter()
            .filter(|(_, (_, d, _))| *d <= now)
            .map(|(k, _)| *k)
            .collect();
        let mut conns = Vec::with_capacity(expired.len());
        for key in expired {
            if let Some((conn, _, fresh)) = self.parked.remove(&key) {
                if fresh {
                    self.fresh -= 1;
                }
                let _ = self.poller.delete(&conn.conn);
                conns.push(conn);
            }
        }
        conns
    }

    fn close_parked(&mut self) {
        self.fresh = 0;
        self.fresh_queue.clear();
        for (_, (conn, _, _)) in self.parked.drain() {
            let _ = self.poller.delete(&conn.conn);
            drop(conn);
            closed(self.life, self.open);
        }
        for l in &self.listeners {
            let _ = self.poller.delete(l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BindAddr;
    use crate::scoreboard::Scoreboard;
    use crate::shutdown::Shutdown;
    use crate::track::Tracker;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    /// A uwsgi packet (modifier1 0) for `GET /`.
    fn uwsgi_get() -> Vec<u8> {
        let mut vars = Vec::new();
        for (k, v) in [("REQUEST_METHOD", "GET"), ("PATH_INFO", "/")] {
            for s in [k, v] {
                vars.extend_from_slice(&(s.len() as u16).to_le_bytes());
                vars.extend_from_slice(s.as_bytes());
            }
        }
        let mut packet = vec![0];
        packet.extend_from_slice(&(vars.len() as u16).to_le_bytes());
        packet.push(0);
        packet.extend_from_slice(&vars);
        packet
    }

    /// What a reactor test plays against: worker 0 of 1 (default settings, a fresh scoreboard)
    /// with its poller, counters and work queue, and a unix-socket listener in a temporary dir
    /// for the test's clients.
    struct Rig {
        path: std::path::PathBuf,
        /// Bound at once, so clients can connect; handed to the reactor or door a test builds.
        listener: std::cell::Cell<Option<Listener>>,
        poller: Poller,
        life: Life,
        settings: Arc<ConnSettings>,
        open: Gauge,
        seats: Seats,
        work: WorkQueue<Work>,
        /// Last: removed after the listener is closed.
        _dir: tempfile::TempDir,
    }

    impl Rig {
        fn new() -> Rig {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.sock");
            let l = Listener::bind(&BindAddr::Unix(path.clone()), 8, false).unwrap();
            l.set_nonblocking(true).unwrap();
            let config = ServeConfig::default();
            let sb = Arc::new(Scoreboard::create().unwrap());
            sb.reset(0, 1);
            let tracker = Tracker::new(sb.clone(), 0, &config).unwrap();
            Rig {
                path,
                listener: std::cell::Cell::new(Some(l)),
                poller: Poller::new().unwrap(),
                life: Life::new(Shutdown::new(), sb, 0, 0, tracker),
                settings: Arc::new(ConnSettings::from_config(&config)),
                open: Gauge::default(),
                seats: Seats::default(),
                work: WorkQueue::default(),
                _dir: dir,
            }
        }

        /// A new client of the listener.
        fn connect(&self) -> UnixStream {
            UnixStream::connect(&self.path).unwrap()
        }

        fn take_listener(&self) -> Listener {
            self.listener
                .take()
                .expect("one reactor or door per rig takes the listener")
        }

        /// A reactor for a worker of 4 threads on the listener, speaking `protocol`.
        fn reactor(&self, protocol: Protocol) -> Reactor<'_> {
            Reactor {
                poller: &self.poller,
                listeners: vec![self.take_listener()],
                protocols: vec![protocol],
                locals: vec![None],
                listening: false,
                parked: HashMap::new(),
                next_key: 0,
                settings: &self.settings,
                life: &self.life,
                open: &self.open,
                max_conns: 10,
                threads: 4,
                seats: &self.seats,
                fresh: 0,
                fresh_queue: std::collections::VecDeque::new(),
            }
        }

        /// The listener as the one door of a worker, speaking HTTP.
        fn door(&self) -> Door {
            Door {
                listener: self.take_listener(),
                protocol: Protocol::Http,
                local: None,
            }
        }
    }

    #[test]
    fn a_connection_with_its_request_there_goes_to_the_pool_unwatched() {
        let rig = Rig::new();
        let mut reactor = rig.reactor(Protocol::Uwsgi);
        let work = &rig.work;
        // nginx's way: the whole packet is written before the connection is accepted.
        let mut ready = rig.connect();
        ready.write_all(&uwsgi_get()).unwrap();
        let _silent = rig.connect();
        assert!(reactor.accept_from(0, work, false), "the queue was emptied");
        let got = work
            .try_pop()
            .expect("the connection with its request went to the pool");
        assert_eq!(got.first.as_ref().map(|r| r.path.as_str()), Some("/"));
        assert!(work.try_pop().is_none(), "the silent one did not");
        assert_eq!(reactor.parked.len(), 1, "only the silent one is watched");
        assert_eq!(rig.seats.taken(), 1);
        reactor.close_parked();
    }

    /// Answers every request with `hello`.
    struct Hello;

    impl Handler for Hello {
        async fn call(&self, _: c10k_http::Request, _: c10k_http::Ctx) -> c10k_http::Response {
            c10k_http::Response::text(200, "hello\n")
        }
    }

    /// Runs `job` as a pool thread does (see `run`): the connection handed back to wait for
    /// its client, or `None` once closed.
    fn pool_turn(job: Work, life: &Life) -> Option<Tracked> {
        let Work {
            tracked: Tracked { conn, mut machine },
            first,
        } = job;
        let shutdown = &life.shutdown;
        match conn_blocking::drive(
            conn,
            &mut *machine,
            first,
            &Hello,
            shutdown,
            Mode::Pool,
            &mut || {},
        ) {
            Ok(Outcome::Wait(conn, _)) => Some(Tracked { conn, machine }),
            Ok(Outcome::Closed) => None,
            Err(e) => panic!("the pool's turn failed: {e}"),
        }
    }

    /// A graceful stop finds a keep-alive connection idle after its answer, with the client's
    /// next request already in the socket, unread (sent just as the worker stopped). Dropped
    /// there at once, the kernel reset the connection: the client's read failed after the
    /// answer (and a tail of the answer still queued would have been lost). Now the close is
    /// staged on a pool thread, as under the other classes: the answer, then the end.
    #[test]
    fn a_stop_closes_an_idle_connection_with_a_request_unread_in_stages() {
        let rig = Rig::new();
        let mut reactor = rig.reactor(Protocol::Http);
        let (work, life) = (&rig.work, &rig.life);
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut client = rig.connect();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client.write_all(request).unwrap();
        reactor.accept_from(0, work, false);
        let job = work.try_pop().expect("the request went to the pool");
        let idle = pool_turn(job, life).expect("answered and handed back idle");
        client.write_all(request).unwrap();
        reactor.settle(idle, work).unwrap();
        std::thread::scope(|s| {
            // The pool's turn, if the stop gave it one; meanwhile the client reads to the end
            // and closes, which ends a staged close's wait.
            if let Some(job) = work.try_pop() {
                s.spawn(move || assert!(pool_turn(job, life).is_none(), "closed"));
            }
            let mut got = Vec::new();
            let read = std::io::Read::read_to_end(&mut client, &mut got);
            let text = String::from_utf8_lossy(&got);
            assert!(read.is_ok(), "{read:?} after {text:?}");
            assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
            assert!(text.ends_with("hello\n"), "{text:?}");
            drop(client);
        });
    }

    #[test]
    fn a_free_pool_thread_takes_a_queued_connection_itself() {
        let rig = Rig::new();
        let doors = [rig.door()];
        let (life, settings, open) = (&rig.life, &rig.settings, &rig.open);
        assert!(
            hot_accept(&doors, life, settings, open).is_none(),
            "nothing queued: no wait"
        );
        // A client whose request is there: the thread gets it to run.
        let mut ready = rig.connect();
        ready
            .write_all(b"GET /hot HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let Some(Ok(Ok((_conn, Some(first))))) = hot_accept(&doors, life, settings, open) else {
            panic!("the queued connection with its request")
        };
        assert_eq!(first.path, "/hot");
        assert_eq!(open.get(), 1, "counted as open");
        // A client that has sent nothing yet goes to the reactor, with its deadline.
        let _silent = rig.connect();
        let Some(Ok(Err((_conn, deadline)))) = hot_accept(&doors, life, settings, open) else {
            panic!("the silent connection, to be watched")
        };
        assert!(deadline > Instant::now());
        assert_eq!(open.get(), 2);
        assert!(hot_accept(&doors, life, settings, open).is_none());
    }
}
