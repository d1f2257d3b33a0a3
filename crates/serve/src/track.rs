//! A worker's record of its connections and requests: the scoreboard entry and counters the
//! master's `/status`, `/processlist` and `/metrics` read, and the opt-in access log.
//!
//! Every connection driver calls the same few methods of [`ConnTrack`] as a connection moves
//! between reading, handling, writing and keep-alive idle. Each is a handful of relaxed atomic
//! stores into this worker's own scoreboard slot — no lock, no allocation. The clock is read
//! twice per request (when it is decoded and when it is answered); the writing and keep-alive
//! states reuse the second reading rather than pay for more (a clock read is ~40 ns in a VM, a
//! keep-alive hello request ~7 µs of CPU). `scripts/scoreboard-cost.sh` measures the total.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use anyhow::Context;
use c10k_http::{Request, Response};

use crate::access_format::{AccessFormat, Line};
use crate::config::ServeConfig;
use crate::log_text::{clf_time, escape_into};
use crate::proto::RequestMeta;
use crate::scoreboard::{mono_us, now_us, ConnState, Scoreboard, Stats};

/// One worker's tracking: its scoreboard slot, whether per-request figures are kept, and the
/// access log.
#[derive(Debug)]
pub(crate) struct Tracker {
    scoreboard: Arc<Scoreboard>,
    slot: usize,
    on: bool,
    /// Mask the values of sensitive-looking query keys (not `--log-query-values`).
    mask_query: bool,
    access_log: Option<AccessLog>,
    /// The application's `SCRIPT_NAME`, for the access log's environ atoms.
    script_name: String,
}

impl Tracker {
    pub fn new(
        scoreboard: Arc<Scoreboard>,
        slot: usize,
        config: &ServeConfig,
    ) -> anyhow::Result<Tracker> {
        let access_log = match config.access_log.as_deref() {
            None => None,
            Some(target) => Some(AccessLog::open(
                target,
                !config.log_query_values,
                config.access_log_format.as_deref().map(AccessFormat::parse),
            )?),
        };
        Ok(Tracker {
            scoreboard,
            slot,
            on: !config.no_request_tracking,
            mask_query: !config.log_query_values,
            access_log,
            script_name: String::new(),
        })
    }

    /// The application is mounted at `script_name` ([`c10k_http::Handler::script_name`]).
    pub fn with_script_name(mut self, script_name: &str) -> Tracker {
        self.script_name = script_name.to_owned();
        self
    }

    fn stats(&self) -> &Stats {
        self.scoreboard.stats(self.slot)
    }

    /// A connection was accepted from `peer` (`None`: a unix socket).
    pub fn open(self: &Arc<Tracker>, peer: Option<SocketAddr>) -> ConnTrack {
        self.stats().accepted.fetch_add(1, Relaxed);
        let entry = if self.on {
            self.scoreboard.claim(self.slot, peer, mono_us())
        } else {
            None
        };
        ConnTrack {
            tracker: self.clone(),
            entry,
            peer,
            state: ConnState::Reading,
            started_us: 0,
            last_us: 0,
            headers: Vec::new(),
            resp_headers: Vec::new(),
            environ: Vec::new(),
        }
    }
}

/// One connection's link to its scoreboard entry; frees the entry when dropped.
#[derive(Debug)]
pub(crate) struct ConnTrack {
    tracker: Arc<Tracker>,
    /// The processlist entry, when tracking is on and the table had room.
    entry: Option<usize>,
    peer: Option<SocketAddr>,
    state: ConnState,
    /// [`mono_us`] when the current request was decoded.
    started_us: u64,
    /// [`mono_us`] when the last request was answered.
    last_us: u64,
    /// The current request's headers that `--access-log-format` prints.
    headers: Vec<Option<String>>,
    /// The current answer's headers that `--access-log-format` prints.
    resp_headers: Vec<Option<String>>,
    /// The current request's environ variables that `--access-log-format` prints.
    environ: Vec<Option<String>>,
}

impl ConnTrack {
    fn set_state(&mut self, state: ConnState, now: u64) {
        if self.state == state {
            return;
        }
        self.state = state;
        if let Some(i) = self.entry {
            let t = &self.tracker;
            t.scoreboard.entry(t.slot, i).set_state(state, now);
        }
    }

    /// The client behind a proxy, as the proxy reported it (uwsgi's `REMOTE_ADDR`): the access
    /// log prints it instead of the proxy's address.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    pub fn set_client(&mut self, peer: Option<SocketAddr>) {
        if peer.is_some() {
            self.peer = peer;
        }
    }

    /// A uwsgi connection was closed unanswered (malformed packet, or a peer not allowed).
    pub fn uwsgi_refused(&self) {
        self.tracker.stats().uwsgi_refused.fetch_add(1, Relaxed);
    }

    /// `n` bytes arrived.
    pub fn read(&mut self, n: usize) {
        if self.tracker.on {
            self.tracker.stats().bytes_in.fetch_add(n as u64, Relaxed);
        }
    }

    /// Part of a request has arrived and the rest is awaited. (A request that arrives whole goes
    /// from keep-alive straight to handling, without this clock read.)
    pub fn partial(&mut self) {
        if self.entry.is_some() && self.state == ConnState::KeepAlive {
            self.set_state(ConnState::Reading, mono_us());
        }
    }

    /// A complete request was decoded and goes to the application.
    pub fn begin(&mut self, req: &Request) {
        let t = &self.tracker;
        if !t.on && t.access_log.is_none() {
            return;
        }
        let now = mono_us();
        self.started_us = now;
        if let Some(format) = t.access_log.as_ref().and_then(|l| l.format.as_ref()) {
            if format.wants_headers() {
                self.headers = format.header_values(req);
            }
            if format.wants_environ() {
                self.environ = format.environ_values(req, &t.script_name, t.mask_query);
            }
        }
        if let Some(i) = self.entry {
            let e = t.scoreboard.entry(t.slot, i);
            let query = req.query.as_deref().map(|q| {
                if t.mask_query {
                    crate::status::redact::query(q)
                } else {
                    q.into()
                }
            });
            e.begin_request(req.method.as_str(), &req.path, query.as_deref(), now);
        }
        self.state = ConnState::Handling;
    }

    /// The application's answer is about to be encoded: keeps the header fields the access log
    /// format prints (the answer's head is gone by the time a streamed body ends).
    pub fn responding(&mut self, resp: &Response) {
        if let Some(format) = self
            .tracker
            .access_log
            .as_ref()
            .and_then(|l| l.format.as_ref())
        {
            if format.wants_response_headers() {
                self.resp_headers = format.response_header_values(resp);
            }
        }
    }

    /// The application answered `status` with a body of `body_len` bytes.
    pub fn end(&mut self, meta: &RequestMeta, status: u16, body_len: usize) {
        let t = &self.tracker;
        if !t.on && t.access_log.is_none() {
            return;
        }
        let now = mono_us();
        self.last_us = now;
        let micros = now.saturating_sub(self.started_us);
        if t.on {
            t.stats().record(status, micros);
        }
        if let Some(log) = &t.access_log {
            log.write(Line {
                peer: self.peer,
                meta,
                status,
                body_len,
                now_us: now_us(),
                micros,
                headers: &self.headers,
                resp_headers: &self.resp_headers,
                environ: &self.environ,
                mask_query: log.mask_query,
            });
        }
    }

    /// A request was refused by the codec (400, 408, 413, 414, 431, ...): the access log shows
    /// it with the reason, so attack traffic is visible there.
    pub fn refused(&mut self, status: u16, reason: &str) {
        if let Some(log) = &self.tracker.access_log {
            log.write_line(&refused_line(self.peer, status, reason, now_us()));
        }
    }

    /// `n` response bytes are about to be written.
    pub fn writing(&mut self, n: usize) {
        if !self.tracker.on {
            return;
        }
        self.tracker.stats().bytes_out.fetch_add(n as u64, Relaxed);
        self.set_state(ConnState::Writing, self.last_us);
    }

    /// The responses are written; the connection waits for more (`partial`: some of the next
    /// request is already buffered). Idle time counts from the last answer.
    pub fn waiting(&mut self, partial: bool) {
        if self.entry.is_none() {
            return;
        }
        let state = if partial {
            ConnState::Reading
        } else {
            ConnState::KeepAlive
        };
        self.set_state(state, self.last_us);
    }
}

impl Drop for ConnTrack {
    fn drop(&mut self) {
        if let Some(i) = self.entry {
            self.tracker.scoreboard.release(self.tracker.slot, i);
        }
    }
}

/// The access log: one line per request in Apache's combined format plus `%D` (the request time
/// in microseconds). Every line goes out in one `write(2)` on an `O_APPEND` file, so the lines
/// of all threads and worker processes interleave whole without a lock.
#[derive(Debug)]
struct AccessLog {
    /// The `--access-log` file, or (for `-`) descriptor 1 itself, never closed.
    file: std::mem::ManuallyDrop<File>,
    /// `file` is descriptor 1, which the process keeps open.
    stdout: bool,
    /// Mask the values of sensitive-looking query keys.
    mask_query: bool,
    /// `--access-log-format`, else the combined format.
    format: Option<AccessFormat>,
}

impl AccessLog {
    fn open(
        target: &str,
        mask_query: bool,
        format: Option<AccessFormat>,
    ) -> anyhow::Result<AccessLog> {
        let stdout = target == "-";
        let file = if stdout {
            // Standard output, shared with the other workers: descriptor 1 itself, not a
            // duplicate, so that SIGUSR1's dup2 over it (the error log file under
            // --capture-output, reopened after logrotate moved it) moves these lines too.
            use std::os::fd::FromRawFd;
            // SAFETY: descriptor 1 is open for the process's life (the standard output it was
            // started with, or what --capture-output put there); `file` is never dropped for it
            // (ManuallyDrop, see Drop below), so it is not closed.
            unsafe { File::from_raw_fd(libc::STDOUT_FILENO) }
        } else {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(target)
                .with_context(|| format!("cannot open --access-log {target}"))?;
            {
                use std::os::fd::AsRawFd;
                crate::reopen::register(target.as_ref(), file.as_raw_fd());
            }
            file
        };
        Ok(AccessLog {
            file: std::mem::ManuallyDrop::new(file),
            stdout,
            mask_query,
            format,
        })
    }

    fn write(&self, l: Line<'_>) {
        let line = match &self.format {
            Some(format) => format.render(&l),
            None => combined_line(
                l.peer,
                l.meta,
                l.status,
                l.body_len,
                l.now_us,
                l.micros,
                self.mask_query,
            ),
        };
        self.write_line(&line);
    }

    fn write_line(&self, line: &str) {
        // A full disk or a closed pipe must not fail requests.
        let _ = (&*self.file).write_all(line.as_bytes());
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        if !self.stdout {
            // SAFETY: dropped once, here, and not used again.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.file) };
        }
    }
}

/// `%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i" %D`, times in UTC.
fn combined_line(
    peer: Option<SocketAddr>,
    meta: &RequestMeta,
    status: u16,
    body_len: usize,
    now_us: u64,
    micros: u64,
    mask_query: bool,
) -> String {
    use std::fmt::Write as _;
    let log = meta.log.as_deref();
    let mut line = String::with_capacity(160);
    match peer {
        Some(p) => {
            let _ = write!(line, "{}", p.ip());
        }
        None => line.push_str("unix"),
    }
    line.push_str(" - - [");
    clf_time(&mut line, now_us / 1_000_000);
    line.push_str("] \"");
    match log {
        Some(l) => {
            escape_into(&mut line, &l.method);
            line.push(' ');
            if mask_query {
                escape_into(&mut line, &crate::status::redact::target(&l.target));
            } else {
                escape_into(&mut line, &l.target);
            }
        }
        None => line.push('-'),
    }
    let _ = write!(line, " HTTP/1.{}\" {status} ", meta.minor_version);
    if body_len == 0 {
        line.push('-');
    } else {
        let _ = write!(line, "{body_len}");
    }
    for value in [
        log.and_then(|l| l.referer.as_deref()),
        log.and_then(|l| l.user_agent.as_deref()),
    ] {
        line.push_str(" \"");
        match value {
            Some(v) => escape_into(&mut line, v),
            None => line.push('-'),
        }
        line.push('"');
    }
    let _ = writeln!(line, " {micros}");
    line
}

/// A refused request in the combined format (the request line is `-`: it was not accepted),
/// with the reason as one more quoted field.
fn refused_line(peer: Option<SocketAddr>, status: u16, reason: &str, now_us: u64) -> String {
    use std::fmt::Write as _;
    let mut line = String::with_capacity(120);
    match peer {
        Some(p) => {
            let _ = write!(line, "{}", p.ip());
        }
        None => line.push_str("unix"),
    }
    line.push_str(" - - [");
    clf_time(&mut line, now_us / 1_000_000);
    let _ = write!(line, "] \"-\" {status} - \"-\" \"-\" 0 \"refused: ");
    escape_into(&mut line, reason);
    line.push_str("\"\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Decoder, Limits};
    use bytes::BytesMut;

    #[test]
    fn combined_format() {
        let mut buf = BytesMut::from(
            &b"GET /a%20b?x=\"1\" HTTP/1.1\r\nHost: h\r\nUser-Agent: ab/2.3\r\n\r\n"[..],
        );
        let mut d = Decoder::new(Limits::default()).capture_log_fields(true);
        let inc = d.decode(&mut buf).unwrap().unwrap();
        let peer = "192.0.2.7:5555".parse().ok();
        // 2000-10-10T13:55:36Z
        let line = combined_line(peer, &inc.meta, 200, 6, 971_186_136_000_000, 1234, true);
        assert_eq!(
            line,
            "192.0.2.7 - - [10/Oct/2000:13:55:36 +0000] \"GET /a%20b?x=\\\"1\\\" HTTP/1.1\" \
             200 6 \"-\" \"ab/2.3\" 1234\n"
        );
        let line = combined_line(None, &inc.meta, 404, 0, 0, 1, true);
        assert!(
            line.starts_with("unix - - [01/Jan/1970:00:00:00 +0000]"),
            "{line}"
        );
        assert!(line.contains(" 404 - "), "{line}");
    }

    /// The default line's `Referer` and `User-Agent` are latin-1 text, each byte one
    /// character, as in `%(f)s`/`%(a)s` and gunicorn's log (before: UTF-8 with U+FFFD for
    /// the rest, `ag\u{fffd}nt`).
    #[test]
    fn combined_format_prints_header_bytes_as_latin1() {
        let mut buf = BytesMut::from(
            &b"GET / HTTP/1.1\r\nHost: h\r\nReferer: http://x/caf\xc3\xa9\r\n\
               User-Agent: ag\xe9nt\r\n\r\n"[..],
        );
        let mut d = Decoder::new(Limits::default()).capture_log_fields(true);
        let inc = d.decode(&mut buf).unwrap().unwrap();
        let line = combined_line(None, &inc.meta, 200, 1, 0, 1, true);
        assert!(
            line.ends_with(" \"http://x/caf\u{c3}\u{a9}\" \"ag\u{e9}nt\" 1\n"),
            "{line}"
        );
    }

    #[test]
    fn secrets_in_the_query_are_masked_unless_asked_for() {
        let mut buf = BytesMut::from(
            &b"GET /?token=SECRET123&api_key=k&page=2 HTTP/1.1\r\nHost: h\r\n\r\n"[..],
        );
        let mut d = Decoder::new(Limits::default()).capture_log_fields(true);
        let inc = d.decode(&mut buf).unwrap().unwrap();
        let line = combined_line(None, &inc.meta, 200, 1, 0, 1, true);
        assert!(
            line.contains("\"GET /?token=***&api_key=***&page=2 HTTP/1.1\""),
            "{line}"
        );
        assert!(!line.contains("SECRET123"), "{line}");
        let line = combined_line(None, &inc.meta, 200, 1, 0, 1, false);
        assert!(line.contains("token=SECRET123&api_key=k"), "{line}");
    }

    /// Prints the time the tracking calls of one keep-alive request take, on and off; run by
    /// `scripts/scoreboard-cost.sh`, which sets it against the CPU time of a whole request.
    #[test]
    #[ignore = "a timing figure for scripts/scoreboard-cost.sh, not a check"]
    fn tracking_cost_per_request() {
        let sb = Arc::new(Scoreboard::create().unwrap());
        sb.reset(0, 1);
        let mut buf = BytesMut::from(&b"GET /?delay=0 HTTP/1.1\r\nHost: h\r\n\r\n"[..]);
        let inc = Decoder::new(Limits::default())
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        let on = ServeConfig::default();
        let off = ServeConfig {
            no_request_tracking: true,
            ..ServeConfig::default()
        };
        let n = 5_000_000u32;
        for _round in 0..2 {
            for (name, config) in [("on", &on), ("off", &off)] {
                let t = Arc::new(Tracker::new(sb.clone(), 0, config).unwrap());
                let mut c = t.open("127.0.0.1:40000".parse().ok());
                let start = std::time::Instant::now();
                for _ in 0..n {
                    c.read(40);
                    c.begin(&inc.request);
                    c.end(&inc.meta, 200, 6);
                    c.writing(120);
                    c.waiting(false);
                }
                let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
                println!("tracking {name}: {ns:.1} ns per request");
            }
        }
    }

    #[test]
    fn refusals_have_their_reason() {
        let peer = "192.0.2.7:5555".parse().ok();
        let line = refused_line(
            peer,
            431,
            "more than 100 header fields",
            971_186_136_000_000,
        );
        assert_eq!(
            line,
            "192.0.2.7 - - [10/Oct/2000:13:55:36 +0000] \"-\" 431 - \"-\" \"-\" 0 \
             \"refused: more than 100 header fields\"\n"
        );
    }
}
