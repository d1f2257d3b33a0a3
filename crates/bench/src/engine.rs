//! The engine: one `mio` event loop per thread, each owning a share of the connections.
//!
//! Design choices, all for the hot path: threads share nothing but a request budget claimed in
//! batches from one atomic counter (exact `-n` without a lock per request) and a few flags read
//! once per loop turn. Request bytes are built once ([`Prepared`]) and copied into a reused
//! per-connection buffer; responses are read into one per-thread buffer and parsed
//! incrementally without being stored; timings go into per-thread HDR histograms merged at the
//! end. After warm-up nothing on the per-request path allocates, and memory does not depend on
//! `-n`.

use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::parse::{Done, Eof, ResponseParser};
use crate::plan::{Plan, Prepared, Target};
use crate::stats::{Errors, Measurement};
use crate::timer::PreciseTimer;

/// The token of the rate-mode timer (connection tokens are their indices).
const TIMER: Token = Token(usize::MAX);

/// One request record for ab's `-g` file.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Start, µs since the Unix epoch.
    pub start_unix_us: u64,
    pub ctime_us: u64,
    pub total_us: u64,
    pub wait_us: u64,
}

/// State shared by the threads of one run.
pub struct Shared {
    /// Requests not yet claimed; `u64::MAX` means unlimited (time mode).
    budget: AtomicU64,
    stop: AtomicBool,
    abort: Mutex<Option<String>>,
    /// Expected body length per URL (ab's first-response rule); `u64::MAX` until known.
    doclen: Vec<AtomicU64>,
    /// Per-thread counters for the progress display: completed, failed.
    pub progress: Vec<Padded>,
    /// External stop request (Ctrl-C).
    pub interrupt: Arc<AtomicBool>,
}

#[repr(align(64))]
#[derive(Default)]
pub struct Padded {
    pub done: AtomicU64,
    pub failed: AtomicU64,
}

impl Shared {
    pub fn new(plan: &Plan, threads: usize, urls: usize, interrupt: Arc<AtomicBool>) -> Shared {
        Shared {
            budget: AtomicU64::new(plan.requests.unwrap_or(u64::MAX)),
            stop: AtomicBool::new(false),
            abort: Mutex::new(None),
            doclen: (0..urls).map(|_| AtomicU64::new(u64::MAX)).collect(),
            progress: (0..threads).map(|_| Padded::default()).collect(),
            interrupt,
        }
    }

    fn abort(&self, why: String) {
        let mut a = self.abort.lock().unwrap_or_else(|e| e.into_inner());
        if a.is_none() {
            *a = Some(why);
        }
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The first response's body length for the first URL (ab's "Document Length").
    pub fn document_length(&self) -> Option<u64> {
        match self.doclen[0].load(Ordering::Relaxed) {
            u64::MAX => None,
            v => Some(v),
        }
    }

    pub fn take_abort(&self) -> Option<String> {
        self.abort.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// What one thread runs: its connections (global indices `first..first+count`).
pub struct ThreadPlan {
    pub index: usize,
    pub first_conn: usize,
    pub conns: usize,
}

/// Run parameters derived once from the plan.
pub struct Params {
    pub prepared: Prepared,
    pub pipeline: usize,
    pub keep_alive: bool,
    pub rate_interval_ns: Option<u64>,
    pub concurrency: usize,
    pub timeout_ns: u64,
    pub deadline_ns: Option<u64>,
    pub keep_going: bool,
    pub variable_length: bool,
    pub source_ips: Vec<std::net::IpAddr>,
    /// `-b`: SO_SNDBUF and SO_RCVBUF of each TCP connection.
    pub window_size: Option<usize>,
    pub record_samples: bool,
    pub verbosity: u32,
    pub threads: usize,
    /// `--save-bodies`: opened for appending; each thread writes whole lines.
    pub save_bodies: Option<std::fs::File>,
}

enum Sock {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Sock::Tcp(s) => s.take_error(),
            Sock::Unix(s) => s.take_error(),
        }
    }
    fn is_connected(&self) -> io::Result<bool> {
        let r = match self {
            Sock::Tcp(s) => s.peer_addr().map(|_| ()),
            Sock::Unix(s) => s.peer_addr().map(|_| ()),
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[derive(Clone, Copy)]
struct Inflight {
    url: u16,
    start: u64,
    ctime: u64,
    endwrite: u64,
    beginread: u64,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum St {
    Closed,
    Connecting,
    Open,
}

struct Conn {
    st: St,
    sock: Option<Sock>,
    parser: ResponseParser,
    out: Vec<u8>,
    out_pos: usize,
    inflight: VecDeque<Inflight>,
    /// When the first request on this connection was due (its latency counts from here).
    conn_start: u64,
    /// When the connect actually began (the Connect time counts from here).
    conn_began: u64,
    served: u64,
    /// Rate mode: when the next request is meant to go.
    next_intended: u64,
    timer_armed: bool,
    /// Last time this connection made progress (for `-s`).
    last_progress: u64,
    /// Counted in `Worker::active` (connecting, or requests in flight).
    busy: bool,
    src: usize,
}

/// Runs one thread's share of the plan to completion.
pub fn run_thread(
    params: &Params,
    shared: &Shared,
    tp: &ThreadPlan,
    t0: Instant,
    unix_t0_us: u64,
) -> (Measurement, Vec<Sample>) {
    let mut w = match Worker::new(params, shared, tp, t0, unix_t0_us) {
        Ok(w) => w,
        Err(e) => {
            shared.abort(format!("event loop: {e}"));
            return (Measurement::default(), Vec::new());
        }
    };
    w.run();
    w.finish()
}

struct Worker<'a> {
    p: &'a Params,
    shared: &'a Shared,
    tp: &'a ThreadPlan,
    t0: Instant,
    unix_t0_us: u64,
    poll: Poll,
    /// Rate mode: wakes the loop at the next intended send time, to the microsecond.
    precise: Option<PreciseTimer>,
    conns: Vec<Conn>,
    buf: Vec<u8>,
    local_budget: u64,
    /// Connections holding budget (connecting or with requests in flight).
    active: usize,
    timers: BinaryHeap<std::cmp::Reverse<(u64, usize)>>,
    m: Measurement,
    statuses: Vec<u64>,
    url_rr: usize,
    server: Option<String>,
    samples: Vec<Sample>,
    connect_failures: u64,
    last_end: u64,
    /// `--save-bodies` lines not yet written.
    bodies: Vec<u8>,
}

const BATCH: u64 = 64;

impl<'a> Worker<'a> {
    fn new(
        p: &'a Params,
        shared: &'a Shared,
        tp: &'a ThreadPlan,
        t0: Instant,
        unix_t0_us: u64,
    ) -> io::Result<Worker<'a>> {
        let conns = (0..tp.conns)
            .map(|i| {
                let g = tp.first_conn + i;
                let mut parser = ResponseParser::new();
                if p.save_bodies.is_some() {
                    parser.capture_bodies();
                }
                Conn {
                    st: St::Closed,
                    sock: None,
                    parser,
                    out: Vec::with_capacity(p.prepared.requests[0].len() * p.pipeline),
                    out_pos: 0,
                    inflight: VecDeque::with_capacity(p.pipeline),
                    conn_start: 0,
                    conn_began: 0,
                    served: 0,
                    next_intended: p
                        .rate_interval_ns
                        .map_or(0, |iv| iv * g as u64 / p.concurrency.max(1) as u64),
                    timer_armed: false,
                    last_progress: 0,
                    busy: false,
                    src: g,
                }
            })
            .collect();
        let poll = Poll::new()?;
        let precise = match p.rate_interval_ns {
            Some(_) => Some(PreciseTimer::new(poll.registry(), TIMER)?),
            None => None,
        };
        Ok(Worker {
            p,
            shared,
            tp,
            t0,
            unix_t0_us,
            precise,
            poll,
            conns,
            buf: vec![0; 256 * 1024],
            local_budget: 0,
            active: 0,
            timers: BinaryHeap::with_capacity(tp.conns + 1),
            m: Measurement::default(),
            statuses: vec![0; 1000],
            url_rr: tp.index,
            server: Some(String::new()),
            samples: Vec::new(),
            connect_failures: 0,
            last_end: 0,
            bodies: Vec::new(),
        })
    }

    #[inline]
    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn take_budget(&mut self) -> bool {
        if self.local_budget > 0 {
            self.local_budget -= 1;
            return true;
        }
        let mut cur = self.shared.budget.load(Ordering::Relaxed);
        loop {
            if cur == 0 {
                return false;
            }
            if cur == u64::MAX {
                return true;
            }
            let want = cur.min(BATCH.min((cur / (self.p.threads as u64 * 4)).max(1)));
            match self.shared.budget.compare_exchange_weak(
                cur,
                cur - want,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.local_budget = want - 1;
                    return true;
                }
                Err(c) => cur = c,
            }
        }
    }

    fn give_back(&mut self, n: u64) {
        if self.shared.budget.load(Ordering::Relaxed) != u64::MAX {
            self.local_budget += n;
        }
    }

    fn out_of_work(&self) -> bool {
        self.local_budget == 0 && self.shared.budget.load(Ordering::Relaxed) == 0
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        for i in 0..self.conns.len() {
            self.kick(i);
        }
        let mut last_scan = 0u64;
        let mut last_publish = 0u64;
        loop {
            if self.shared.stop.load(Ordering::Relaxed)
                || self.shared.interrupt.load(Ordering::Relaxed)
            {
                break;
            }
            let now = self.now();
            if let Some(d) = self.p.deadline_ns {
                if now >= d {
                    break;
                }
            }
            if self.active == 0 && self.timers.is_empty() && self.out_of_work() {
                break;
            }
            let mut wait = 100_000_000u64;
            if let Some(&std::cmp::Reverse((t, _))) = self.timers.peek() {
                match self.precise.as_mut().map(|p| p.arm(t, now)) {
                    // The timerfd wakes us; poll's millisecond timeout only backs it up.
                    Some(Ok(())) => wait = wait.min(t.saturating_sub(now) + 1_000_000),
                    _ => wait = wait.min(t.saturating_sub(now)),
                }
            }
            if let Some(d) = self.p.deadline_ns {
                wait = wait.min(d.saturating_sub(now));
            }
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(Duration::from_nanos(wait)))
            {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.shared.abort(format!("poll: {e}"));
                    break;
                }
            }
            for ev in events.iter() {
                if ev.token() == TIMER {
                    if let Some(p) = self.precise.as_mut() {
                        p.fired();
                    }
                    continue;
                }
                let i = ev.token().0;
                self.on_event(
                    i,
                    ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    ev.is_writable(),
                    ev.is_read_closed() || ev.is_error(),
                );
            }
            let now = self.now();
            while let Some(&std::cmp::Reverse((t, i))) = self.timers.peek() {
                if t > now {
                    break;
                }
                self.timers.pop();
                self.conns[i].timer_armed = false;
                self.kick(i);
            }
            if now.saturating_sub(last_scan) >= 50_000_000 {
                last_scan = now;
                self.check_timeouts(now);
            }
            if now.saturating_sub(last_publish) >= 20_000_000 {
                last_publish = now;
                self.publish();
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let pr = &self.shared.progress[self.tp.index];
        pr.done.store(self.m.completed, Ordering::Relaxed);
        pr.failed.store(
            self.m.errors.failed() + self.m.errors.write,
            Ordering::Relaxed,
        );
    }

    fn finish(mut self) -> (Measurement, Vec<Sample>) {
        self.write_bodies();
        for (status, &n) in self.statuses.iter().enumerate() {
            if n > 0 {
                self.m.statuses.insert(status as u16, n);
            }
        }
        self.m.elapsed_us = self.last_end / 1000;
        if let Some(s) = self.server.take() {
            if !s.is_empty() {
                self.m.server_software = Some(s);
            }
        }
        (self.m, self.samples)
    }

    /// The connection is ready for more work: connect, or queue requests.
    fn kick(&mut self, i: usize) {
        let now = self.now();
        if self.conns[i].st == St::Closed {
            if self.p.rate_interval_ns.is_some() && self.conns[i].next_intended > now {
                let t = self.conns[i].next_intended;
                self.arm(i, t);
                return;
            }
            if !self.take_budget() {
                return;
            }
            self.connect(i, now);
            return;
        }
        if self.conns[i].st != St::Open {
            return;
        }
        while self.conns[i].inflight.len() < self.p.pipeline {
            let start = match self.p.rate_interval_ns {
                Some(iv) => {
                    if self.conns[i].next_intended > now {
                        let t = self.conns[i].next_intended;
                        self.arm(i, t);
                        break;
                    }
                    if !self.take_budget() {
                        break;
                    }
                    let c = &mut self.conns[i];
                    let intended = c.next_intended;
                    c.next_intended = c.next_intended.saturating_add(iv);
                    self.m
                        .send_delay
                        .record(now.saturating_sub(intended) / 1000);
                    intended
                }
                None => {
                    if !self.take_budget() {
                        break;
                    }
                    now
                }
            };
            self.queue_request(i, start, 0);
        }
        self.flush(i);
        if self.conns[i].inflight.is_empty() && self.out_of_work() {
            self.drop_socket(i);
        }
    }

    fn arm(&mut self, i: usize, at: u64) {
        let c = &mut self.conns[i];
        if !c.timer_armed {
            c.timer_armed = true;
            self.timers.push(std::cmp::Reverse((at, i)));
        }
    }

    /// Keeps `active` equal to the number of busy connections.
    fn sync_busy(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let busy = c.st == St::Connecting || !c.inflight.is_empty();
        if busy != c.busy {
            c.busy = busy;
            if busy {
                self.active += 1;
            } else {
                self.active -= 1;
            }
        }
    }

    fn queue_request(&mut self, i: usize, start: u64, ctime: u64) {
        let n = self.p.prepared.requests.len();
        let url = if n == 1 {
            0
        } else {
            self.url_rr = (self.url_rr + 1) % n;
            self.url_rr
        };
        let req = &self.p.prepared.requests[url];
        let c = &mut self.conns[i];
        if c.out_pos == c.out.len() {
            c.out.clear();
            c.out_pos = 0;
        }
        c.out.extend_from_slice(req);
        c.inflight.push_back(Inflight {
            url: url as u16,
            start,
            ctime,
            endwrite: 0,
            beginread: 0,
        });
        // The -s clock starts when the request goes out (not when it was due).
        c.last_progress = c.last_progress.max(self.t0.elapsed().as_nanos() as u64);
        self.sync_busy(i);
    }

    fn connect(&mut self, i: usize, now: u64) {
        let start = match self.p.rate_interval_ns {
            Some(iv) => {
                let c = &mut self.conns[i];
                let intended = c.next_intended;
                c.next_intended = c.next_intended.saturating_add(iv);
                self.m
                    .send_delay
                    .record(now.saturating_sub(intended) / 1000);
                intended
            }
            None => now,
        };
        let sock = match self.open_socket(i) {
            Ok(s) => s,
            Err(e) => {
                self.connect_failed(i, &e);
                return;
            }
        };
        let c = &mut self.conns[i];
        c.sock = Some(sock);
        c.st = St::Connecting;
        c.conn_start = start;
        c.conn_began = now;
        c.last_progress = now;
        c.served = 0;
        self.sync_busy(i);
        self.m.connections_opened += 1;
        let token = Token(i);
        let res = match self.conns[i].sock.as_mut() {
            Some(Sock::Tcp(s)) => {
                self.poll
                    .registry()
                    .register(s, token, Interest::READABLE | Interest::WRITABLE)
            }
            Some(Sock::Unix(s)) => {
                self.poll
                    .registry()
                    .register(s, token, Interest::READABLE | Interest::WRITABLE)
            }
            None => Ok(()),
        };
        if let Err(e) = res {
            self.shared.abort(format!("registering a socket: {e}"));
        }
    }

    fn open_socket(&self, i: usize) -> io::Result<Sock> {
        match &self.p.prepared.target {
            Target::Unix(path) => Ok(Sock::Unix(mio::net::UnixStream::connect(path)?)),
            Target::Tcp(addr) => {
                let src = if self.p.source_ips.is_empty() {
                    None
                } else {
                    Some(self.p.source_ips[self.conns[i].src % self.p.source_ips.len()])
                };
                tcp_connect(*addr, src, self.p.window_size).map(Sock::Tcp)
            }
        }
    }

    fn connect_failed(&mut self, i: usize, e: &io::Error) {
        self.m.errors.connect += 1;
        self.m.completed += 1;
        self.last_end = self.now();
        self.connect_failures += 1;
        if !self.p.keep_going && self.connect_failures > 10 {
            self.shared.abort(format!(
                "Test aborted after 10 failures\n\napr_socket_connect(): {}{}",
                apr_error(e),
                limit_hint(e)
            ));
            return;
        }
        if !self.p.keep_going && is_refused(e) {
            // ab gives up at once on a refused connection; on Linux its non-blocking connect
            // reports the refusal from the first read, hence ab's well-known words.
            self.shared
                .abort(format!("apr_socket_recv: {}", apr_error(e)));
            return;
        }
        self.reopen_later(i);
    }

    fn on_event(&mut self, i: usize, readable: bool, writable: bool, closed: bool) {
        if i >= self.conns.len() {
            return;
        }
        match self.conns[i].st {
            St::Closed => {}
            St::Connecting => {
                let res = match self.conns[i].sock.as_ref() {
                    Some(s) => match s.take_error() {
                        Ok(Some(e)) | Err(e) => Err(e),
                        Ok(None) => s.is_connected(),
                    },
                    None => return,
                };
                match res {
                    Ok(true) => {
                        let now = self.now();
                        let c = &mut self.conns[i];
                        c.st = St::Open;
                        let start = c.conn_start;
                        let ctime = now.saturating_sub(c.conn_began);
                        self.queue_request(i, start, ctime);
                        // More pipelined requests, if any.
                        self.fill_more(i);
                        self.flush(i);
                        if readable && self.conns[i].st == St::Open {
                            self.read(i, closed);
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        self.drop_socket(i);
                        self.connect_failed(i, &e);
                    }
                }
            }
            St::Open => {
                if writable {
                    self.flush(i);
                }
                if readable && self.conns[i].st == St::Open {
                    self.read(i, closed);
                }
            }
        }
    }

    /// Queues further pipelined requests after the first on a fresh connection.
    fn fill_more(&mut self, i: usize) {
        if self.p.pipeline <= 1 {
            return;
        }
        let now = self.now();
        while self.conns[i].inflight.len() < self.p.pipeline && self.take_budget() {
            self.queue_request(i, now, 0);
        }
    }

    fn flush(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.out_pos >= c.out.len() {
            return;
        }
        let Some(sock) = c.sock.as_mut() else { return };
        while c.out_pos < c.out.len() {
            match sock.write(&c.out[c.out_pos..]) {
                // A socket never accepts zero bytes of a non-empty buffer; wait for writable.
                Ok(0) => return,
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.write_failed(i, &e);
                    return;
                }
            }
        }
        let now = self.t0.elapsed().as_nanos() as u64;
        let c = &mut self.conns[i];
        c.out.clear();
        c.out_pos = 0;
        for f in c.inflight.iter_mut().rev() {
            if f.endwrite != 0 {
                break;
            }
            f.endwrite = now;
        }
    }

    fn write_failed(&mut self, i: usize, e: &io::Error) {
        if self.p.verbosity >= 2 {
            eprintln!("Send request failed! ({e})");
        }
        let c = &mut self.conns[i];
        if c.served > 0 && !c.parser.in_progress() {
            // A reused connection the server had already closed: retry elsewhere.
            let n = c.inflight.len() as u64;
            self.give_back(n);
        } else {
            self.m.errors.write += 1;
            self.last_end = self.t0.elapsed().as_nanos() as u64;
            self.m.completed += 1;
            let n = c.inflight.len().saturating_sub(1) as u64;
            self.give_back(n);
        }
        self.reopen_later(i);
    }

    /// Reads until the socket is drained. A short read means drained (edge-triggered epoll
    /// signals again when more arrives), which saves a read per response, unless the event
    /// said the peer closed: then read on to see the end of the stream.
    fn read(&mut self, i: usize, closed: bool) {
        loop {
            let Some(sock) = self.conns[i].sock.as_mut() else {
                return;
            };
            match sock.read(&mut self.buf) {
                Ok(0) => {
                    self.on_eof(i);
                    return;
                }
                Ok(n) => {
                    let now = self.now();
                    self.m.bytes_read += n as u64;
                    self.conns[i].last_progress = now;
                    if !self.feed(i, n, now) {
                        return;
                    }
                    // Refill a pipeline once half of it has drained (with -k alone: when
                    // the response arrived), so the server's queue for this connection
                    // never runs dry while the next batch travels.
                    if self.conns[i].inflight.len() <= self.p.pipeline / 2 {
                        self.kick(i);
                    }
                    if n < self.buf.len() && !closed {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.on_recv_error(i, &e);
                    return;
                }
            }
        }
    }

    /// Parses `n` bytes from the thread buffer. Returns false when the connection was closed.
    fn feed(&mut self, i: usize, n: usize, now: u64) -> bool {
        let mut off = 0;
        while off < n {
            let c = &mut self.conns[i];
            let Some(front) = c.inflight.front_mut() else {
                // Bytes nobody asked for.
                self.m.errors.protocol += 1;
                self.reopen_later(i);
                return false;
            };
            if front.beginread == 0 {
                front.beginread = now;
                if self.p.verbosity >= 2 {
                    // ab's -v 2: what the first read of a response brought (head, and the
                    // body as far as it came).
                    eprintln!(
                        "LOG: header received:\n{}",
                        String::from_utf8_lossy(&self.buf[off..n])
                    );
                }
            }
            let mut server = if self.server.as_ref().is_some_and(|s| s.is_empty()) {
                self.server.take()
            } else {
                None
            };
            let res = c
                .parser
                .feed(&self.buf[off..n], self.p.prepared.head, &mut server);
            if server.is_some() {
                self.server = server;
            }
            match res {
                Ok((used, done)) => {
                    off += used;
                    if let Some(d) = done {
                        if !self.complete(i, d, now) {
                            return false;
                        }
                    }
                }
                Err(e) => {
                    if self.p.verbosity >= 2 {
                        eprintln!("protocol error: {e}");
                    }
                    self.fail_front(i, |e| &mut e.protocol);
                    return false;
                }
            }
        }
        true
    }

    /// Records a finished response; returns false when the connection was closed.
    fn complete(&mut self, i: usize, d: Done, now: u64) -> bool {
        let c = &mut self.conns[i];
        let Some(f) = c.inflight.pop_front() else {
            return false;
        };
        c.served += 1;
        self.record(f, d, now);
        if self.p.save_bodies.is_some() && (200..300).contains(&d.status) {
            self.save_body(i);
        }
        self.sync_busy(i);
        if d.keep_alive && self.p.keep_alive {
            self.m.keep_alive_responses += 1;
            true
        } else {
            let left = self.conns[i].inflight.len() as u64;
            self.give_back(left);
            self.reopen(i);
            false
        }
    }

    fn record(&mut self, f: Inflight, d: Done, now: u64) {
        let total = now.saturating_sub(f.start) / 1000;
        let ctime = f.ctime / 1000;
        let endwrite = if f.endwrite == 0 { now } else { f.endwrite };
        let wait = f.beginread.max(endwrite).saturating_sub(endwrite) / 1000;
        self.m.total.record(total);
        self.m.connect.record(ctime);
        self.m.processing.record(total.saturating_sub(ctime));
        self.m.waiting.record(wait);
        self.m.responses += 1;
        self.m.completed += 1;
        self.m.body_bytes += d.body;
        // ab's "Total body sent" counts every byte of the request, head included.
        self.m.body_sent += self.p.prepared.requests[f.url as usize].len() as u64;
        self.last_end = self.last_end.max(now);
        let slot = (d.status as usize).min(self.statuses.len() - 1);
        self.statuses[slot] += 1;
        // ab prints one of the two: the warning for a non-2xx answer (from -v 2), else the
        // code (from -v 3).
        if !(200..300).contains(&d.status) {
            if self.p.verbosity >= 2 {
                eprintln!("WARNING: Response code not 2xx ({})", d.status);
            }
        } else if self.p.verbosity >= 3 {
            eprintln!("LOG: Response code = {}", d.status);
        }
        let expect = &self.shared.doclen[f.url as usize];
        let mut known = expect.load(Ordering::Relaxed);
        if known == u64::MAX {
            known = match expect.compare_exchange(
                u64::MAX,
                d.body,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => d.body,
                Err(v) => v,
            };
        }
        if known != d.body && !self.p.variable_length {
            self.m.errors.length += 1;
        }
        if self.p.record_samples {
            self.samples.push(Sample {
                start_unix_us: self.unix_t0_us + f.start / 1000,
                ctime_us: ctime,
                total_us: total,
                wait_us: wait,
            });
        }
    }

    /// Queues the body just completed on connection `i` as one line of `--save-bodies`.
    fn save_body(&mut self, i: usize) {
        let body = self.conns[i].parser.captured();
        let body = body.trim_ascii_end();
        self.bodies.extend(
            body.iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        );
        self.bodies.push(b'\n');
        if self.bodies.len() >= 64 * 1024 {
            self.write_bodies();
        }
    }

    /// Writes the queued lines in one `write` to the append-mode file, so lines from other
    /// threads and processes never interleave within a line.
    fn write_bodies(&mut self) {
        if self.bodies.is_empty() {
            return;
        }
        if let Some(mut f) = self.p.save_bodies.as_ref() {
            if let Err(e) = f.write_all(&self.bodies) {
                self.shared.abort(format!("--save-bodies: {e}"));
            }
        }
        self.bodies.clear();
    }

    fn on_eof(&mut self, i: usize) {
        let now = self.now();
        let outcome = self.conns[i].parser.eof();
        match outcome {
            Eof::Complete(d) => {
                let c = &mut self.conns[i];
                // complete() closes and reopens: a close-delimited body ends the connection.
                if let Some(f) = c.inflight.front_mut() {
                    if f.beginread == 0 {
                        f.beginread = now;
                    }
                }
                self.complete(
                    i,
                    Done {
                        keep_alive: false,
                        ..d
                    },
                    now,
                );
            }
            Eof::Idle => {
                let c = &self.conns[i];
                if c.inflight.is_empty() {
                    self.reopen(i);
                } else if c.served > 0 {
                    // ab's rule: the server closed an idle keep-alive connection; the
                    // requests in flight never reached it, so they are sent again.
                    let n = c.inflight.len() as u64;
                    self.give_back(n);
                    self.reopen_later(i);
                } else {
                    self.fail_front(i, |e| &mut e.truncated);
                }
            }
            Eof::Truncated { .. } => self.fail_front(i, |e| &mut e.truncated),
        }
    }

    fn on_recv_error(&mut self, i: usize, e: &io::Error) {
        let c = &self.conns[i];
        if c.served > 0
            && !c.parser.in_progress()
            && c.inflight.front().is_some_and(|f| f.beginread == 0)
        {
            // Reset on a reused idle connection: retry the requests.
            let n = c.inflight.len() as u64;
            self.give_back(n);
            self.reopen_later(i);
            return;
        }
        if !self.p.keep_going {
            self.shared
                .abort(format!("apr_socket_recv: {}", apr_error(e)));
        }
        self.fail_front(i, |e| &mut e.receive);
    }

    /// The front request failed; the others in flight are retried; the connection reopens.
    fn fail_front(&mut self, i: usize, kind: fn(&mut Errors) -> &mut u64) {
        let c = &mut self.conns[i];
        let n = c.inflight.len() as u64;
        if n > 0 {
            *kind(&mut self.m.errors) += 1;
            self.m.completed += 1;
            self.last_end = self.now();
            self.give_back(n - 1);
        }
        self.reopen_later(i);
    }

    fn check_timeouts(&mut self, now: u64) {
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            let busy = c.st == St::Connecting || !c.inflight.is_empty();
            if busy && now.saturating_sub(c.last_progress) > self.p.timeout_ns {
                if !self.p.keep_going {
                    self.shared.abort(
                        "apr_pollset_poll: The timeout specified has expired (70007)".into(),
                    );
                    return;
                }
                if c.st == St::Connecting {
                    self.m.errors.timeout += 1;
                    self.m.completed += 1;
                    self.last_end = now;
                    self.reopen_later(i);
                } else {
                    self.fail_front(i, |e| &mut e.timeout);
                }
            }
        }
    }

    fn drop_socket(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if let Some(mut s) = c.sock.take() {
            let _ = match &mut s {
                Sock::Tcp(t) => self.poll.registry().deregister(t),
                Sock::Unix(u) => self.poll.registry().deregister(u),
            };
        }
        c.st = St::Closed;
        c.parser.reset();
        c.out.clear();
        c.out_pos = 0;
        c.inflight.clear();
        self.sync_busy(i);
    }

    /// Closes the connection and starts a new one if there is work left.
    fn reopen(&mut self, i: usize) {
        self.drop_socket(i);
        if !self.shared.stop.load(Ordering::Relaxed) {
            self.kick(i);
        }
    }

    /// After a failure: reopen from the main loop, so repeated failures never recurse.
    fn reopen_later(&mut self, i: usize) {
        self.drop_socket(i);
        let now = self.now();
        let at = if self.p.rate_interval_ns.is_some() {
            self.conns[i].next_intended.max(now)
        } else {
            now
        };
        self.arm(i, at);
    }
}

/// Names the limit behind a connect error, when one is.
fn limit_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EADDRNOTAVAIL) => {
            "\n(the local ephemeral ports are used up, the limit that binds: use -k, widen \
             net.ipv4.ip_local_port_range, or spread connections with --source-ips)"
        }
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            "\n(the open-file limit binds: raise RLIMIT_NOFILE or use --processes)"
        }
        _ => "",
    }
}

/// An error as ab's `apr_err` prints it: "Connection refused (111)", not Rust's
/// "Connection refused (os error 111)", so what people grep for in ab's output matches.
fn apr_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let text = e.to_string();
            let suffix = format!(" (os error {code})");
            format!("{} ({code})", text.strip_suffix(&suffix).unwrap_or(&text))
        }
        None => e.to_string(),
    }
}

fn is_refused(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ConnectionRefused
}

/// A non-blocking connect, optionally from a chosen local address. The port is picked at
/// connect time (`IP_BIND_ADDRESS_NO_PORT`), so each local address offers the whole
/// ephemeral range per destination instead of per address. `window`: ab's `-b`, set before
/// connecting as ab does, so the receive window is announced in the handshake.
fn tcp_connect(
    addr: SocketAddr,
    src: Option<std::net::IpAddr>,
    window: Option<usize>,
) -> io::Result<mio::net::TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_nodelay(true)?;
    if let Some(w) = window {
        sock.set_send_buffer_size(w)?;
        sock.set_recv_buffer_size(w)?;
    }
    if let Some(ip) = src {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let one: libc::c_int = 1;
            // SAFETY: setsockopt reads an int we own, on a socket we own.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    &one as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        sock.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(sock.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_size_sets_both_socket_buffers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let buffers = |window| {
            let s = tcp_connect(addr, None, window).unwrap();
            let r = socket2::SockRef::from(&s);
            (r.recv_buffer_size().unwrap(), r.send_buffer_size().unwrap())
        };
        let (recv_default, send_default) = buffers(None);
        let (recv, send) = buffers(Some(4096));
        // Linux doubles the value asked for (bookkeeping overhead); other kernels keep it.
        assert!((4096..=8192).contains(&recv), "{recv}");
        assert!((4096..=8192).contains(&send), "{send}");
        assert!(recv < recv_default && send < send_default);
        assert_eq!(
            apr_error(&io::Error::from_raw_os_error(libc::ECONNREFUSED)),
            "Connection refused (111)"
        );
    }
}
