//! Test fixtures: a real `c10k serve` process on 127.0.0.1:0 and a minimal HTTP/1.1 client
//! that speaks raw bytes, so tests see exactly what went over the wire.

#![allow(dead_code)]

pub mod admin;
pub mod held_reads;
pub mod load;
pub mod ports;
pub mod python;
pub mod reload;

/// Kills a process group (a master and its workers, started with `process_group(0)`) when
/// dropped, so a test whose assertion fails first leaves no server behind.
pub struct KillGroup(pub i32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}

/// Waits (10 s at most) for a line of the file at `path` that `pick` accepts, as an access log
/// written by another process fills in; returns that line (with its `\n`) and the whole file.
/// Panics naming `what` if none comes.
pub fn wait_for_line(
    path: &std::path::Path,
    what: &str,
    pick: impl Fn(&str) -> bool,
) -> (String, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.split_inclusive('\n').find(|l| pick(l)) {
            return (line.to_owned(), text);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: no such line in {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The pids of `pid`'s children, from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether `pid` still runs (a zombie left to an init that does not reap counts as gone).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        == Some(false)
}

/// Starts `cmd` in a process group of its own with no standard streams (its log goes to a
/// file), and the guard that kills that group when dropped.
pub fn spawn_quiet(cmd: &mut Command) -> (Child, KillGroup) {
    let child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let group = KillGroup(child.id() as i32);
    (child, group)
}

/// Waits (10 s at most) until the file at `path`, a log another process writes, holds `needle`
/// at least `n` times; panics showing the file if it does not.
pub fn wait_for_count(path: &std::path::Path, needle: &str, n: usize) {
    let read = || std::fs::read_to_string(path).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while read().matches(needle).count() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{needle:?} x{n} not in {path:?}: {}",
            read()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `--threads` for a class: gthread gets a pool of 4; sync must keep 1 (more would make it
/// gthread, as in gunicorn).
pub fn threads(class: &str) -> &'static str {
    if class == "gthread" {
        "4"
    } else {
        "1"
    }
}

/// Waits up to `limit` for `child` to exit; kills and reaps it and returns `None` if it does not.
pub fn exit_within(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// What a worker told to stop (SIGTERM to it) does with its connections: an idle kept-alive one
/// (`keep_alive`: the class keeps connections) closes at once, its client retries on a new one;
/// one that has not sent its first request yet may still send it for a short grace from its
/// accept (1 s, as nginx lets such a connection deliver its request), and it is answered with
/// `Connection: close`; the worker exits. Then on the worker the master starts next: a silent new
/// connection is closed quietly after the grace, and that worker exits too. `s` runs one worker
/// whose `GET /` answers 200, with a `--keepalive` of several seconds and `--no-defer-accept`
/// (by default the kernel holds a silent connection for its first second: no worker sees it).
pub fn stop_lets_a_new_connection_send_its_first_request(s: &Server, keep_alive: bool) {
    let worker = *s.worker_pids().last().expect("a worker");
    let mut kept = keep_alive.then(|| {
        let mut k = Reader::new(connect(s.addr));
        k.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let r = k.response().unwrap();
        assert_eq!(r.status, 200);
        assert_ne!(r.header("connection"), Some("close"), "kept alive");
        k
    });
    let mut fresh = Reader::new(connect(s.addr));
    // Time for the worker to accept it (it is accepting: it just answered); the grace counts
    // from the accept.
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(worker as i32, libc::SIGTERM) };
    if let Some(k) = kept.as_mut() {
        assert!(k.closed(), "the idle kept-alive connection closes at once");
    }
    // Past the blocking drivers' poll interval (200 ms), so that every thread has seen the stop
    // before the request comes: it must be the grace that lets it in.
    std::thread::sleep(Duration::from_millis(300));
    fresh
        .send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("the new connection is still open");
    let r = fresh.response().unwrap_or_else(|e| {
        panic!(
            "the new connection's first request is answered, got {e}:\n{}",
            s.log()
        )
    });
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    assert!(fresh.closed());
    exited(worker, s);

    s.wait_for_workers(2);
    let worker = *s.worker_pids().last().expect("a worker");
    let mut silent = Reader::new(connect(s.addr));
    std::thread::sleep(Duration::from_millis(100));
    let stopped = Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(worker as i32, libc::SIGTERM) };
    assert!(silent.closed(), "closed quietly, unanswered");
    assert!(
        stopped.elapsed() >= Duration::from_millis(500),
        "held through the grace: {:?}",
        stopped.elapsed()
    );
    exited(worker, s);
}

/// Waits (10 s at most) until process `pid` (a worker of `s`) has exited and been reaped.
pub fn exited(pid: u32, s: &Server) {
    let deadline = Instant::now() + Duration::from_secs(10);
    // SAFETY: kill with signal 0 only checks that the process exists.
    while unsafe { libc::kill(pid as i32, 0) } == 0 {
        assert!(
            Instant::now() < deadline,
            "worker {pid} did not exit:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the server has answered on `c` (bytes are waiting to be read), without reading them.
pub fn answered(c: &std::net::TcpStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let mut peek = [0u8; 64];
    let got = matches!(c.peek(&mut peek), Ok(n) if n > 0);
    c.set_nonblocking(false).unwrap();
    got
}

/// Runs a test body once per worker class, each in its own test (needs `#[macro_use] mod util`).
#[allow(unused_macros)]
macro_rules! per_class {
    ($name:ident, |$class:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn run($class: &str) $body
            #[test] fn sync() { run("sync") }
            #[test] fn thread() { run("thread") }
            #[test] fn gthread() { run("gthread") }
            #[test] fn r#async() { run("async") }
        }
    };
}

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether a test server is given its `--data-dir` (as `C10K_DATA_DIR`), or runs in that
/// directory without one, where the default `./c10k-data` is.
#[derive(Clone, Copy)]
enum DataDir {
    Chosen,
    Default,
}

/// A running `c10k serve` (master and workers). Killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    /// The write path's `--data-dir` (journals, SQLite), one per server so tests never share a
    /// journal; removed after the server is killed.
    pub data: tempfile::TempDir,
    /// What [`Server::wait_for_workers`] GETs: `/`, or the mount point (`--root-path`, or
    /// `SCRIPT_NAME`; a path outside it is a 500).
    ready: String,
}

/// How long [`Server::start`] waits for the workers to answer.
pub const BOOT_WAIT: Duration = Duration::from_secs(15);

impl Server {
    /// Starts `c10k serve --bind 127.0.0.1:0 ARGS` and waits until every worker answers.
    pub fn start(args: &[&str]) -> Server {
        Server::start_env(args, &[])
    }

    /// [`Server::start`] for an app whose workers take up to `boot` to answer.
    pub fn start_booting_within(args: &[&str], boot: Duration) -> Server {
        let mut all = vec!["--bind", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let exe = Path::new(env!("CARGO_BIN_EXE_c10k"));
        Server::start_args(exe, None, &all, &[], DataDir::Chosen, boot)
    }

    /// [`Server::start`] with more environment variables; `-w` in `args`, else a
    /// `WEB_CONCURRENCY` among them, is the number of workers waited for.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_exe(Path::new(env!("CARGO_BIN_EXE_c10k")), args, env)
    }

    /// [`Server::start_env`] from another copy of the c10k binary (`exe`).
    pub fn start_exe(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut all = vec!["--bind", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Server::start_args(exe, None, &all, env, DataDir::Chosen, BOOT_WAIT)
    }

    /// `c10k serve ARGS` with no `--bind` of the test's: a `--config` file's `bind` counts (a
    /// command line's would win over it), and its first address must be an HTTP one on TCP.
    pub fn start_unbound(args: &[&str]) -> Server {
        let exe = Path::new(env!("CARGO_BIN_EXE_c10k"));
        Server::start_args(exe, None, args, &[], DataDir::Chosen, BOOT_WAIT)
    }

    /// [`Server::start_env`] in the working directory `dir` (where `./gunicorn.conf.py` is).
    pub fn start_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut all = vec!["--bind", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let exe = Path::new(env!("CARGO_BIN_EXE_c10k"));
        Server::start_args(exe, Some(dir), &all, env, DataDir::Chosen, BOOT_WAIT)
    }

    /// [`Server::start`] with no `--data-dir` chosen, as a user who gives neither it nor
    /// `--database`: the built-in app opens its write path at the first `/messages` or `/ids`
    /// request instead of at boot. The server runs in its own temporary directory, where the
    /// default `./c10k-data` then is.
    pub fn start_default_data_dir(args: &[&str]) -> Server {
        let mut all = vec!["--bind", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let exe = Path::new(env!("CARGO_BIN_EXE_c10k"));
        Server::start_args(exe, None, &all, &[], DataDir::Default, BOOT_WAIT)
    }

    fn start_args(
        exe: &Path,
        dir: Option<&Path>,
        args: &[&str],
        env: &[(&str, &str)],
        data_dir: DataDir,
        boot: Duration,
    ) -> Server {
        let data = tempfile::tempdir().expect("data dir");
        let mut cmd = Command::new(exe);
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        cmd.envs(env.iter().copied());
        match data_dir {
            DataDir::Chosen => cmd.env("C10K_DATA_DIR", data.path()),
            DataDir::Default => cmd.current_dir(data.path()),
        };
        cmd.arg("serve")
            .args(args)
            .env("C10K_LOG", "info")
            // Parallel tests must not race for the default admin port; --admin still wins.
            .env("C10K_ADMIN", "127.0.0.1:0")
            // Its own process group, as a shell gives a job: `signal_group` plays Ctrl-C.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start c10k serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log2.lock().unwrap();
                l.push_str(&strip_ansi(&line));
                l.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(15);
        let addr = loop {
            if let Some(addr) = find_addr(&log.lock().unwrap()) {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("server exited early ({status}):\n{}", log.lock().unwrap());
            }
            assert!(
                Instant::now() < deadline,
                "no Listening line:\n{}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The mount point: `--root-path`, else `SCRIPT_NAME` from `-e` or the environment, as
        // c10k takes it for a Python app.
        let script_name = args
            .windows(2)
            .filter(|w| w[0] == "-e" || w[0] == "--env")
            .filter_map(|w| w[1].strip_prefix("SCRIPT_NAME="))
            .next_back()
            .or_else(|| env.iter().find(|(k, _)| *k == "SCRIPT_NAME").map(|kv| kv.1));
        let ready = args
            .windows(2)
            .find(|w| w[0] == "--root-path")
            .map(|w| w[1])
            .or(script_name)
            .map_or_else(
                || "/".to_owned(),
                |root| format!("{}/", root.trim_end_matches('/')),
            );
        let server = Server {
            child,
            addr,
            log,
            data,
            ready,
        };
        let workers = arg_value(args, &["-w", "--workers"])
            .or_else(|| {
                env.iter()
                    .find(|(k, _)| *k == "WEB_CONCURRENCY")
                    .and_then(|(_, v)| v.parse().ok())
            })
            .unwrap_or(1);
        server.wait_for_workers_within(workers, boot);
        server
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `HUP`s the master while `load` runs: waits for the rolling restart to end and for `workers`
    /// workers to have booted in all (the old ones included), lets the new ones serve for a
    /// moment, then stops the load and checks that none of its requests failed.
    pub fn hup_under_load(
        &self,
        workers: usize,
        stop: &std::sync::atomic::AtomicBool,
        load: Vec<std::thread::JoinHandle<(u32, u32)>>,
    ) {
        self.signal(libc::SIGHUP);
        self.wait_log("rolling restart done", Duration::from_secs(20));
        self.wait_for_workers(workers);
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, failed) = load::finish_load(load);
        assert_eq!(failed, 0, "{ok} ok, {failed} failed\n{}", self.log());
        assert!(ok > 10, "{ok}");
    }

    /// Waits until `n` workers have reported ready (each logs its boot), then until a request
    /// succeeds.
    pub fn wait_for_workers(&self, n: usize) {
        self.wait_for_workers_within(n, BOOT_WAIT);
    }

    /// [`Server::wait_for_workers`] for an app whose boot takes longer than [`BOOT_WAIT`].
    pub fn wait_for_workers_within(&self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.worker_pids().len() < n {
            assert!(
                Instant::now() < deadline,
                "workers did not boot:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        loop {
            if let Ok(r) = get(self.addr, &self.ready) {
                if r.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server never answered:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pids of every worker ever booted, in boot order.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.log()
            .lines()
            .filter_map(|l| l.split("Booting worker with pid: ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Sends `sig` to the whole process group (master and workers), as Ctrl-C at a terminal
    /// does.
    pub fn signal_group(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(-(self.child.id() as i32), sig) };
    }

    /// Waits for the master to exit; returns its exit code (None if killed by a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "log never said {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Workers follow the master (PR_SET_PDEATHSIG).
            self.signal(libc::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn arg_value(args: &[&str], names: &[&str]) -> Option<usize> {
    args.windows(2)
        .find(|w| names.contains(&w[0]))
        .and_then(|w| w[1].parse().ok())
}

fn find_addr(log: &str) -> Option<SocketAddr> {
    let rest = log.split("Listening at: http://").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// One GET on a fresh connection.
pub fn get(addr: SocketAddr, target: &str) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )?;
    let mut r = Reader::new(s);
    r.response()
}

/// Reads responses off a connection, one at a time.
pub struct Reader {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    pub fn new(stream: TcpStream) -> Reader {
        Reader {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one complete response (Content-Length framed, or chunked).
    pub fn response(&mut self) -> std::io::Result<Resp> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status_line = lines.next().unwrap_or("");
                let status: u16 = status_line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                if status == 100 {
                    self.buf.drain(..end + 4);
                    continue;
                }
                if headers.iter().any(|(n, v)| {
                    n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
                }) {
                    self.buf.drain(..end + 4);
                    let body = self.chunked_body()?;
                    return Ok(Resp {
                        status,
                        headers,
                        body,
                    });
                }
                let len: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .ok_or_else(|| bad("no Content-Length".into()))?;
                while self.buf.len() < end + 4 + len {
                    self.fill()?;
                }
                let body = self.buf[end + 4..end + 4 + len].to_vec();
                self.buf.drain(..end + 4 + len);
                return Ok(Resp {
                    status,
                    headers,
                    body,
                });
            }
            self.fill()?;
        }
    }

    /// A chunked body (streamed responses to HTTP/1.1 clients), trailers skipped.
    fn chunked_body(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                self.fill()?;
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad(format!("bad chunk size {size_text:?}")))?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers (none from c10k), then the blank line.
                loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        self.buf.drain(..i + 2);
                        if i == 0 {
                            return Ok(body);
                        }
                        continue;
                    }
                    self.fill()?;
                }
            }
            while self.buf.len() < size + 2 {
                self.fill()?;
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }

    /// True if the server closed the connection (EOF) with nothing more to read.
    pub fn closed(&mut self) -> bool {
        use std::io::ErrorKind::{ConnectionReset, UnexpectedEof};
        self.buf.is_empty()
            && matches!(self.fill(), Err(e) if matches!(e.kind(), UnexpectedEof | ConnectionReset))
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Runs `n` GETs of `target` at once on fresh connections; returns (statuses, elapsed).
pub fn concurrent_gets(addr: SocketAddr, target: &str, n: usize) -> (Vec<u16>, Duration) {
    let start = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let target = target.to_owned();
            std::thread::spawn(move || get(addr, &target).map(|r| r.status).unwrap_or(0))
        })
        .collect();
    let statuses = handles.into_iter().map(|h| h.join().unwrap_or(0)).collect();
    (statuses, start.elapsed())
}

/// `c10k serve --bind 127.0.0.1:0 --admin off`, for a test that runs the process itself (its
/// output, its exit) instead of through [`Server`]; add the rest of the command line.
pub fn serve_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_c10k"));
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--admin", "off"]);
    cmd
}
