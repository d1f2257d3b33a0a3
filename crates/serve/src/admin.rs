//! The admin listener: `/status`, `/processlist` and `/metrics`, served by the master.
//!
//! The master is the one process that sees every worker (it holds the scoreboard), so it answers
//! these itself, inside its single-threaded poll loop. Nothing here blocks: admin connections are
//! non-blocking and advance a step each time the loop wakes (accept, read what has arrived,
//! answer, write what the socket takes); a client that is slow to send its request is dropped at
//! a deadline, and at most [`MAX_PENDING`] are kept. The admin listener is never one of the
//! `--bind` listeners, so the public port answers these paths with the application's 404.
//!
//! [`Report`] is the one model of the figures: `/status` is its JSON, `/metrics` its Prometheus
//! text, so the two cannot disagree.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::BindAddr;
use crate::listener::Listener;
use crate::scoreboard::{ConnState, StatsSnapshot, BUCKETS_US};

/// Admin connections open at once; the oldest is dropped beyond this.
const MAX_PENDING: usize = 64;
/// Time an admin client has to send its request and take the answer.
const DEADLINE: Duration = Duration::from_secs(2);
/// Largest admin request head read.
const MAX_REQUEST: usize = 8192;

enum Phase {
    Reading(Vec<u8>),
    Writing(Vec<u8>, usize),
}

struct Pending {
    stream: Stream,
    phase: Phase,
    deadline: Instant,
}

enum Stream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An HTTP answer from a route.
pub(crate) struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

pub(crate) struct Admin {
    listener: Listener,
    pending: Vec<Pending>,
}

impl Admin {
    pub fn bind(addr: &BindAddr) -> io::Result<Admin> {
        let listener = Listener::bind(addr, 64, false)?;
        listener.set_nonblocking(true)?;
        Ok(Admin {
            listener,
            pending: Vec::new(),
        })
    }

    pub fn local_addr(&self) -> io::Result<BindAddr> {
        self.listener.local_addr()
    }

    /// Descriptors the master's poll should watch: the listener, then each pending connection.
    pub fn pollfds(&self) -> Vec<libc::pollfd> {
        let mut fds = vec![libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for p in &self.pending {
            use std::os::fd::AsRawFd;
            let fd = match &p.stream {
                Stream::Tcp(s) => s.as_raw_fd(),
                Stream::Unix(s) => s.as_raw_fd(),
            };
            let events = match p.phase {
                Phase::Reading(_) => libc::POLLIN,
                Phase::Writing(..) => libc::POLLOUT,
            };
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
        }
        fds
    }

    /// The soonest deadline of a pending connection.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.deadline).min()
    }

    /// Moves every admin connection as far as it goes without blocking. `route` answers a
    /// complete request (method, path).
    pub fn progress(&mut self, mut route: impl FnMut(&str, &str) -> Answer) {
        for _ in 0..MAX_PENDING {
            let accepted = match &self.listener {
                Listener::Tcp(l) => l
                    .accept()
                    .map(|(s, _)| (s.set_nonblocking(true), Stream::Tcp(s))),
                Listener::Unix(l) => l
                    .accept()
                    .map(|(s, _)| (s.set_nonblocking(true), Stream::Unix(s))),
            };
            match accepted {
                Ok((Ok(()), stream)) => {
                    if self.pending.len() >= MAX_PENDING {
                        self.pending.remove(0);
                    }
                    self.pending.push(Pending {
                        stream,
                        phase: Phase::Reading(Vec::new()),
                        deadline: Instant::now() + DEADLINE,
                    });
                }
                Ok((Err(_), _)) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!("admin accept: {e}");
                    break;
                }
            }
        }
        let now = Instant::now();
        self.pending
            .retain_mut(|p| p.deadline > now && advance(p, &mut route));
    }
}

/// One step of one connection; false when it is done (answered or failed).
fn advance(p: &mut Pending, route: &mut impl FnMut(&str, &str) -> Answer) -> bool {
    if let Phase::Reading(buf) = &mut p.phase {
        let mut chunk = [0u8; 2048];
        loop {
            match p.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() > MAX_REQUEST {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return true;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut parts = head.lines().next().unwrap_or("").split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        let answer = if method != "GET" && method != "HEAD" {
            text(405, "only GET is served here\n")
        } else {
            route(method, path)
        };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nServer: c10k-admin\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            answer.status,
            crate::proto::reason_phrase(answer.status),
            answer.content_type,
            answer.body.len()
        )
        .into_bytes();
        if method != "HEAD" {
            out.extend_from_slice(&answer.body);
        }
        p.phase = Phase::Writing(out, 0);
    }
    if let Phase::Writing(out, pos) = &mut p.phase {
        while *pos < out.len() {
            match p.stream.write(&out[*pos..]) {
                Ok(0) => return false,
                Ok(n) => *pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        return false;
    }
    true
}

pub(crate) fn text(status: u16, body: &str) -> Answer {
    Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.as_bytes().to_vec(),
    }
}

pub(crate) fn json(value: &impl Serialize) -> Answer {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            Answer {
                status: 200,
                content_type: "application/json",
                body,
            }
        }
        Err(e) => text(500, &format!("cannot render JSON: {e}\n")),
    }
}

/// Everything `/status` shows, gathered by the master at one moment.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub server: ServerInfo,
    pub listeners: Vec<ListenerInfo>,
    pub workers: Vec<WorkerInfo>,
    pub counters: Counters,
    /// Request durations, for `/metrics` (the JSON carries the counters only).
    #[serde(skip)]
    pub totals: StatsSnapshot,
    /// The write path's database pools; `null` when the workers have no write path.
    pub pool: Option<PoolReport>,
    /// The write path's journals and flushers; `null` when the workers have no write path.
    pub journal: Option<JournalReport>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ServerInfo {
    pub version: &'static str,
    pub pid: u32,
    /// Unix seconds.
    pub started_at: u64,
    pub uptime_seconds: f64,
    pub worker_class: String,
    pub workers: usize,
    pub threads: usize,
    pub worker_connections: usize,
    pub backlog: u32,
    /// False with `--no-request-tracking`: no processlist, status classes, bytes or durations.
    pub request_tracking: bool,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ListenerInfo {
    pub address: String,
    /// Connections waiting in the accept queue (TCP only: `tcpi_unacked` of the listener).
    pub queue: Option<u32>,
    /// The accept queue's length limit, after the kernel's somaxconn cap (`tcpi_sacked`).
    pub queue_max: Option<u32>,
    pub queue_full: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct WorkerInfo {
    pub slot: usize,
    pub pid: u32,
    /// Workers that have run in this slot before this one (respawns).
    pub respawns: u32,
    pub started_at: u64,
    pub uptime_seconds: f64,
    pub ready: bool,
    /// `busy` while it runs a request, else `idle`.
    pub state: &'static str,
    pub requests: u64,
    pub requests_active: usize,
    pub connections: u32,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub rss_bytes: Option<u64>,
    pub heartbeat_age_ms: u64,
}

/// `SHOW STATUS`: flat, so `c10k status counters --like` can filter by name.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Counters {
    pub uptime_seconds: u64,
    pub workers_running: usize,
    pub worker_respawns: u64,
    pub connections_accepted: u64,
    pub connections_active: u64,
    /// Connections the kernel dropped because a listen queue was full, since start
    /// (`TcpExt: ListenOverflows`; it counts the whole network namespace).
    pub connections_refused: Option<u64>,
    /// Connections served but not in the processlist (the entry table was full).
    pub connections_unlisted: u64,
    pub listen_queue: u64,
    pub listen_queue_max: u64,
    pub requests: u64,
    pub requests_active: u64,
    pub requests_1xx: u64,
    pub requests_2xx: u64,
    pub requests_3xx: u64,
    pub requests_4xx: u64,
    pub requests_5xx: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub request_seconds_total: f64,
    /// Write path, summed over workers; `null` without one.
    pub pool_size: Option<u64>,
    pub pool_idle: Option<u64>,
    pub journal_appended: Option<u64>,
    /// Rows written to the journal and not yet flushed to the database.
    pub journal_unflushed: Option<u64>,
    pub journal_flushed: Option<u64>,
    pub journal_flushes: Option<u64>,
    pub journal_db_errors: Option<u64>,
}

/// Pool figures, summed over workers (each worker has its own pool).
#[derive(Debug, Serialize)]
pub(crate) struct PoolReport {
    pub size: u64,
    pub idle: u64,
    pub max: u64,
    pub workers: usize,
}

/// Journal and flusher figures, summed over workers (each has its own journal).
#[derive(Debug, Serialize)]
pub(crate) struct JournalReport {
    pub appended: u64,
    pub unflushed: u64,
    pub flushed: u64,
    pub flushes: u64,
    pub fsyncs: u64,
    pub groups: u64,
    pub segments_deleted: u64,
    pub db_errors: u64,
    /// Every worker's last database attempt succeeded.
    pub db_up: bool,
}

impl JournalReport {
    pub fn from_stores(
        stores: &[crate::scoreboard::WritePathFigures],
    ) -> Option<(PoolReport, JournalReport)> {
        if stores.is_empty() {
            return None;
        }
        let sum =
            |f: fn(&crate::scoreboard::WritePathFigures) -> u64| stores.iter().map(f).sum::<u64>();
        Some((
            PoolReport {
                size: sum(|s| s.pool_size),
                idle: sum(|s| s.pool_idle),
                max: sum(|s| s.pool_max),
                workers: stores.len(),
            },
            JournalReport {
                appended: sum(|s| s.appended),
                unflushed: sum(|s| s.backlog),
                flushed: sum(|s| s.flushed),
                flushes: sum(|s| s.batches),
                fsyncs: sum(|s| s.fsyncs),
                groups: sum(|s| s.groups),
                segments_deleted: sum(|s| s.segments_deleted),
                db_errors: sum(|s| s.db_errors),
                db_up: stores.iter().all(|s| s.db_up),
            },
        ))
    }
}

/// One row of the processlist.
#[derive(Debug, Serialize)]
pub(crate) struct Process {
    /// Worker slot × entries-per-slot + entry: stable while the connection lives.
    pub id: usize,
    pub worker: usize,
    pub pid: u32,
    pub client: String,
    pub state: &'static str,
    /// Seconds in this request (handling, writing) or in this state (reading, keep-alive).
    pub time: f64,
    pub method: Option<String>,
    pub path: Option<String>,
    /// Requests begun on this connection.
    pub requests: u64,
}

impl Process {
    pub fn new(
        slot: usize,
        pid: u32,
        index: usize,
        e: &crate::scoreboard::EntrySnapshot,
        now_us: u64,
    ) -> Process {
        let in_request = matches!(e.state, ConnState::Handling | ConnState::Writing);
        let from = if in_request { e.started_us } else { e.since_us };
        let show = in_request || (e.requests > 0 && e.state != ConnState::Reading);
        Process {
            id: slot * crate::scoreboard::ENTRIES_PER_SLOT + index,
            worker: slot,
            pid,
            client: e
                .client
                .map(|c| c.to_string())
                .unwrap_or_else(|| "unix".into()),
            state: e.state.as_str(),
            time: now_us.saturating_sub(from) as f64 / 1e6,
            method: show.then(|| e.method.clone()),
            path: show.then(|| e.path.clone()),
            requests: e.requests,
        }
    }
}

/// The Prometheus text exposition (format 0.0.4) of `r`.
pub(crate) fn metrics(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut m = String::with_capacity(4096);
    let c = &r.counters;
    let family = |m: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut m,
        "c10k_info",
        "gauge",
        "Server version and worker class.",
    );
    let _ = writeln!(
        m,
        "c10k_info{{version=\"{}\",worker_class=\"{}\"}} 1",
        r.server.version, r.server.worker_class
    );
    family(
        &mut m,
        "c10k_uptime_seconds",
        "gauge",
        "Seconds since the master started.",
    );
    let _ = writeln!(m, "c10k_uptime_seconds {}", r.server.uptime_seconds);
    family(&mut m, "c10k_workers", "gauge", "Worker processes running.");
    let _ = writeln!(m, "c10k_workers {}", c.workers_running);
    family(
        &mut m,
        "c10k_worker_respawns_total",
        "counter",
        "Workers started to replace one that exited.",
    );
    let _ = writeln!(m, "c10k_worker_respawns_total {}", c.worker_respawns);
    family(
        &mut m,
        "c10k_connections_accepted_total",
        "counter",
        "Client connections accepted.",
    );
    let _ = writeln!(
        m,
        "c10k_connections_accepted_total {}",
        c.connections_accepted
    );
    family(
        &mut m,
        "c10k_connections_active",
        "gauge",
        "Client connections open.",
    );
    let _ = writeln!(m, "c10k_connections_active {}", c.connections_active);
    family(
        &mut m,
        "c10k_connections_unlisted_total",
        "counter",
        "Connections served but not listed (processlist full).",
    );
    let _ = writeln!(
        m,
        "c10k_connections_unlisted_total {}",
        c.connections_unlisted
    );
    if let Some(refused) = c.connections_refused {
        family(&mut m, "c10k_listen_overflows_total", "counter", "Connections dropped on a full listen queue since start (kernel TcpExt ListenOverflows, whole network namespace).");
        let _ = writeln!(m, "c10k_listen_overflows_total {refused}");
    }
    family(
        &mut m,
        "c10k_listen_queue",
        "gauge",
        "Connections waiting in a listener's accept queue.",
    );
    for l in &r.listeners {
        if let Some(q) = l.queue {
            let _ = writeln!(
                m,
                "c10k_listen_queue{{listener=\"{}\"}} {q}",
                escape(&l.address)
            );
        }
    }
    family(
        &mut m,
        "c10k_listen_queue_max",
        "gauge",
        "A listener's accept queue limit.",
    );
    for l in &r.listeners {
        if let Some(q) = l.queue_max {
            let _ = writeln!(
                m,
                "c10k_listen_queue_max{{listener=\"{}\"}} {q}",
                escape(&l.address)
            );
        }
    }
    family(
        &mut m,
        "c10k_requests_total",
        "counter",
        "Requests answered, by status class.",
    );
    for (i, n) in r.totals.status.iter().enumerate() {
        let _ = writeln!(m, "c10k_requests_total{{code=\"{}xx\"}} {n}", i + 1);
    }
    family(
        &mut m,
        "c10k_requests_active",
        "gauge",
        "Requests being handled or written now.",
    );
    let _ = writeln!(m, "c10k_requests_active {}", c.requests_active);
    family(
        &mut m,
        "c10k_received_bytes_total",
        "counter",
        "Bytes read from clients.",
    );
    let _ = writeln!(m, "c10k_received_bytes_total {}", c.bytes_in);
    family(
        &mut m,
        "c10k_sent_bytes_total",
        "counter",
        "Response bytes written to clients.",
    );
    let _ = writeln!(m, "c10k_sent_bytes_total {}", c.bytes_out);
    family(
        &mut m,
        "c10k_request_duration_seconds",
        "histogram",
        "Time from a complete request to its response.",
    );
    let mut cumulative = 0;
    for (i, n) in r.totals.buckets.iter().enumerate() {
        cumulative += n;
        let le = match BUCKETS_US.get(i) {
            Some(us) => format!("{}", *us as f64 / 1e6),
            None => "+Inf".into(),
        };
        let _ = writeln!(
            m,
            "c10k_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        m,
        "c10k_request_duration_seconds_sum {}",
        r.totals.duration_us as f64 / 1e6
    );
    let _ = writeln!(m, "c10k_request_duration_seconds_count {cumulative}");
    if let (Some(p), Some(j)) = (&r.pool, &r.journal) {
        for (name, kind, help, v) in [
            (
                "c10k_pool_connections",
                "gauge",
                "Database connections open, all workers' pools.",
                p.size,
            ),
            (
                "c10k_pool_idle_connections",
                "gauge",
                "Database connections idle.",
                p.idle,
            ),
            (
                "c10k_pool_max_connections",
                "gauge",
                "Pool size limit, summed over workers.",
                p.max,
            ),
            (
                "c10k_journal_appended_total",
                "counter",
                "Rows written to the journals.",
                j.appended,
            ),
            (
                "c10k_journal_unflushed_rows",
                "gauge",
                "Rows in the journals not yet in the database.",
                j.unflushed,
            ),
            (
                "c10k_journal_flushed_total",
                "counter",
                "Rows flushed to the database.",
                j.flushed,
            ),
            (
                "c10k_journal_flushes_total",
                "counter",
                "Batches flushed to the database.",
                j.flushes,
            ),
            (
                "c10k_journal_fsyncs_total",
                "counter",
                "Journal fsyncs.",
                j.fsyncs,
            ),
            (
                "c10k_journal_db_errors_total",
                "counter",
                "Failed database flushes.",
                j.db_errors,
            ),
            (
                "c10k_journal_db_up",
                "gauge",
                "1 while every worker's last database attempt succeeded.",
                u64::from(j.db_up),
            ),
        ] {
            family(&mut m, name, kind, help);
            let _ = writeln!(m, "{name} {v}");
        }
    }
    family(
        &mut m,
        "c10k_worker_requests_total",
        "counter",
        "Requests answered by each worker process (resets when it is replaced).",
    );
    for w in &r.workers {
        let _ = writeln!(
            m,
            "c10k_worker_requests_total{{slot=\"{}\",pid=\"{}\"}} {}",
            w.slot, w.pid, w.requests
        );
    }
    family(
        &mut m,
        "c10k_worker_connections",
        "gauge",
        "Connections open in each worker process.",
    );
    for w in &r.workers {
        let _ = writeln!(
            m,
            "c10k_worker_connections{{slot=\"{}\",pid=\"{}\"}} {}",
            w.slot, w.pid, w.connections
        );
    }
    family(
        &mut m,
        "c10k_worker_rss_bytes",
        "gauge",
        "Resident memory of each worker process.",
    );
    for w in &r.workers {
        if let Some(rss) = w.rss_bytes {
            let _ = writeln!(
                m,
                "c10k_worker_rss_bytes{{slot=\"{}\",pid=\"{}\"}} {rss}",
                w.slot, w.pid
            );
        }
    }
    m
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `TCP_LISTEN` of the kernel's tcp_states.h (libc does not export it).
const TCP_LISTEN: u8 = 10;

/// Accept-queue figures of a TCP listener: (waiting, limit), from `TCP_INFO`.
pub(crate) fn listen_queue(fd: std::os::fd::RawFd) -> Option<(u32, u32)> {
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: fd is a socket we own; the pointer and length describe `info`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    (rc == 0 && info.tcpi_state == TCP_LISTEN).then_some((info.tcpi_unacked, info.tcpi_sacked))
}

/// The kernel's count of connections dropped on a full listen queue (`TcpExt: ListenOverflows`).
pub(crate) fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    parse_netstat(&text, "TcpExt:", "ListenOverflows")
}

fn parse_netstat(text: &str, prefix: &str, field: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|n| n == field)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// Resident set size of `pid`, from `/proc/PID/statm`.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstat_field() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n\
                    TcpExt: 0 17 20\nIpExt: InNoRoutes\nIpExt: 3\n";
        assert_eq!(parse_netstat(text, "TcpExt:", "ListenOverflows"), Some(17));
        assert_eq!(parse_netstat(text, "TcpExt:", "Nope"), None);
        assert!(
            listen_overflows().is_some(),
            "/proc/net/netstat is readable on Linux"
        );
    }

    #[test]
    fn queue_of_a_real_listener() {
        let l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), 7, false).unwrap();
        let (queue, max) = listen_queue(l.as_raw_fd()).unwrap();
        assert_eq!((queue, max), (0, 7));
        let addr = match l.local_addr().unwrap() {
            BindAddr::Tcp(a) => a,
            BindAddr::Unix(_) => unreachable!(),
        };
        let _c = std::net::TcpStream::connect(addr).unwrap();
        assert_eq!(listen_queue(l.as_raw_fd()).unwrap().0, 1);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }
}
