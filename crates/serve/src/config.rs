//! Every setting of `c10k serve`, defined once.
//!
//! As gunicorn's `Setting` does, one definition serves three sources: the command line
//! (`--workers 4`), environment variables (`C10K_WORKERS=4`) and a TOML file (`workers = 4`, given
//! with `--config`). Precedence is command line, then environment, then file, then default. The
//! struct derives clap's `Args` for the first two and serde for the file, so a setting cannot exist
//! in one source and be missing from another.

use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches, ValueEnum};
use serde::{Deserialize, Serialize};

/// How a worker process runs requests; see `c10k serve --help` and the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerClass {
    /// One request at a time per worker; the connection closes after each response.
    Sync,
    /// A new OS thread per connection, capped by --worker-connections.
    Thread,
    /// A fixed pool of --threads threads per worker; idle keep-alive connections hold no thread.
    Gthread,
    /// An event loop per worker; waits yield, so one worker runs thousands of requests at once.
    Async,
    /// Python apps: the `async` event loop does the I/O; each request runs in a greenlet on the
    /// worker's gevent hub (monkey-patched), up to --worker-connections at once.
    Gevent,
}

/// The kernel scheduling policy of worker processes (`--scheduling`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduling {
    /// SCHED_BATCH: no preemption on wake-up between the worker's own threads.
    Batch,
    /// SCHED_OTHER, the kernel's default.
    Normal,
}

impl fmt::Display for WorkerClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default();
        f.write_str(&name)
    }
}

/// An address to listen on: `HOST:PORT`, `[::1]:PORT` or `unix:/path/to.sock`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindAddr {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl FromStr for BindAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<BindAddr, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path, e.g. unix:/run/c10k.sock".into());
            }
            return Ok(BindAddr::Unix(PathBuf::from(path)));
        }
        let bad = || {
            format!(
                "{s:?} is not HOST:PORT (e.g. 127.0.0.1:8000, localhost:8000, :8000 for every \
                 interface, [::1]:8000) or unix:/path"
            )
        };
        // gunicorn's spellings: an optional tcp:// prefix, ":PORT" for every interface, and a
        // host name (resolved once, here; the first IPv4 address wins, as a browser would try).
        let s = s.strip_prefix("tcp://").unwrap_or(s);
        if let Ok(addr) = s.parse() {
            return Ok(BindAddr::Tcp(addr));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() {
            return Ok(BindAddr::Tcp(SocketAddr::from(([0, 0, 0, 0], port))));
        }
        if host.contains([':', '[', ']', '/']) {
            return Err(bad());
        }
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("{s:?}: cannot resolve {host:?} ({e})"))?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .map(|a| BindAddr::Tcp(*a))
            .ok_or_else(|| format!("{s:?}: {host:?} has no address"))
    }
}

/// `bind = "127.0.0.1:8000"` (gunicorn's config files hold a string) or a list of them.
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: FromStr<Err = String> + Deserialize<'de>,
{
    struct Visitor<T>(std::marker::PhantomData<T>);
    impl<'de, T: FromStr<Err = String> + Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an address (\"127.0.0.1:8000\") or a list of them")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.parse().map(|a| vec![a]).map_err(E::custom)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(a) = seq.next_element()? {
                out.push(a);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Visitor(std::marker::PhantomData))
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Tcp(a) => write!(f, "{a}"),
            BindAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Serialize for BindAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BindAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BindAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The protocol a listener speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1 (and 1.0).
    #[default]
    Http,
    /// nginx's binary uwsgi protocol (`uwsgi_pass`): one request per connection.
    Uwsgi,
}

/// One `--bind` value: an address and the protocol spoken on it. `HOST:PORT` and
/// `unix:/path` speak HTTP; `uwsgi://HOST:PORT` and `uwsgi+unix:/path` speak uwsgi, so HTTP and
/// uwsgi listeners can sit side by side (`--bind 127.0.0.1:8000,uwsgi+unix:/run/c10k.sock`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    pub protocol: Protocol,
    pub addr: BindAddr,
}

impl Bind {
    pub fn http(addr: BindAddr) -> Bind {
        Bind {
            protocol: Protocol::Http,
            addr,
        }
    }

    pub fn uwsgi(addr: BindAddr) -> Bind {
        Bind {
            protocol: Protocol::Uwsgi,
            addr,
        }
    }
}

impl FromStr for Bind {
    type Err = String;

    fn from_str(s: &str) -> Result<Bind, String> {
        if let Some(rest) = s.strip_prefix("uwsgi+unix:") {
            if rest.is_empty() {
                return Err("uwsgi+unix: needs a path, e.g. uwsgi+unix:/run/c10k.sock".into());
            }
            return Ok(Bind::uwsgi(BindAddr::Unix(PathBuf::from(rest))));
        }
        if let Some(rest) = s.strip_prefix("uwsgi://") {
            // The same HOST:PORT spellings as an HTTP bind (names, ":PORT"); a unix socket is
            // spelled uwsgi+unix:.
            return match rest.parse() {
                Ok(BindAddr::Tcp(a)) if !rest.starts_with("tcp://") => {
                    Ok(Bind::uwsgi(BindAddr::Tcp(a)))
                }
                _ => Err(format!(
                    "{s:?}: uwsgi:// needs HOST:PORT (e.g. uwsgi://127.0.0.1:3031); a unix \
                     socket is uwsgi+unix:/path"
                )),
            };
        }
        let http = s.strip_prefix("http://").unwrap_or(s);
        http.parse().map(Bind::http).map_err(|e: String| {
            format!("{e}; or uwsgi://HOST:PORT, uwsgi+unix:/path for nginx's uwsgi_pass")
        })
    }
}

impl fmt::Display for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.protocol, &self.addr) {
            (Protocol::Http, a) => write!(f, "{a}"),
            (Protocol::Uwsgi, BindAddr::Tcp(a)) => write!(f, "uwsgi://{a}"),
            (Protocol::Uwsgi, BindAddr::Unix(p)) => write!(f, "uwsgi+unix:{}", p.display()),
        }
    }
}

impl Serialize for Bind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Bind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Bind, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One `--uwsgi-allow-from` entry: an address, a network (`10.0.0.0/8`), or `*` for any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowFrom {
    net: Option<(std::net::IpAddr, u8)>,
}

impl AllowFrom {
    /// Whether `ip` is allowed (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let Some((net, prefix)) = self.net else {
            return true;
        };
        match (net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for AllowFrom {
    type Err = String;

    fn from_str(s: &str) -> Result<AllowFrom, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(AllowFrom { net: None });
        }
        let bad = || format!("{s:?} is not an address, ADDRESS/PREFIX or *");
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let ip: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
        let ip = ip.to_canonical();
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(AllowFrom {
            net: Some((ip, prefix)),
        })
    }
}

impl fmt::Display for AllowFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.net {
            None => f.write_str("*"),
            Some((ip, p)) if p == if ip.is_ipv4() { 32 } else { 128 } => write!(f, "{ip}"),
            Some((ip, p)) => write!(f, "{ip}/{p}"),
        }
    }
}

impl Serialize for AllowFrom {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AllowFrom {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<AllowFrom, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where the admin (status) listener binds: an address, or `off`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminAddr(pub Option<BindAddr>);

impl FromStr for AdminAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<AdminAddr, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(AdminAddr(None));
        }
        s.parse().map(|a| AdminAddr(Some(a)))
    }
}

impl fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("off"),
        }
    }
}

impl Serialize for AdminAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AdminAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<AdminAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?} must be a number of seconds ≥ 0"));
    }
    Ok(v)
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number ≥ 1")),
    }
}

/// Settings of `c10k serve`. Durations are in seconds, fractions allowed.
#[derive(Clone, Debug, Args, Serialize, Deserialize)]
// Unknown file keys are refused in `resolve` against clap's argument list (serde's
// deny_unknown_fields cannot be combined with flattened groups of settings).
#[serde(rename_all = "kebab-case", default)]
pub struct ServeConfig {
    /// Address to listen on: HOST:PORT or unix:/path (HTTP), uwsgi://HOST:PORT or
    /// uwsgi+unix:/path (nginx's uwsgi_pass). Repeat for several.
    #[arg(
        short,
        long = "bind",
        env = "C10K_BIND",
        value_delimiter = ',',
        default_value = "127.0.0.1:8000",
        help_heading = "Listening"
    )]
    #[serde(deserialize_with = "one_or_many")]
    pub bind: Vec<Bind>,

    /// Peers allowed to connect to a uwsgi listener over TCP: addresses, ADDRESS/PREFIX
    /// networks, or * for any (like gunicorn's --forwarded-allow-ips). Unix sockets are always
    /// allowed. Others are closed and logged.
    #[arg(
        long,
        env = "C10K_UWSGI_ALLOW_FROM",
        value_delimiter = ',',
        default_value = "127.0.0.1,::1",
        help_heading = "Listening"
    )]
    pub uwsgi_allow_from: Vec<AllowFrom>,

    /// Listen queue length (capped by net.core.somaxconn; a warning says so).
    #[arg(
        allow_negative_numbers = true,
        long,
        env = "C10K_BACKLOG",
        default_value_t = 2048,
        help_heading = "Listening"
    )]
    pub backlog: u32,

    /// One listening socket per worker (SO_REUSEPORT) instead of one shared socket.
    #[arg(long, env = "C10K_REUSE_PORT", help_heading = "Listening")]
    pub reuse_port: bool,

    /// Concurrency model of each worker process.
    #[arg(short = 'k', long, env = "C10K_WORKER_CLASS", value_enum,
          default_value_t = WorkerClass::Async, help_heading = "Workers")]
    pub worker_class: WorkerClass,

    /// Worker processes under the master.
    #[arg(allow_negative_numbers = true, short, long, env = "C10K_WORKERS", default_value_t = 1,
          value_parser = at_least_one, help_heading = "Workers")]
    pub workers: usize,

    /// Threads per worker: the gthread pool size, or the async runtime's threads.
    #[arg(allow_negative_numbers = true, long, env = "C10K_THREADS", default_value_t = 1,
          value_parser = at_least_one, help_heading = "Workers")]
    pub threads: usize,

    /// Retire a worker after this many requests (0 = never); the master starts a fresh one.
    #[arg(
        allow_negative_numbers = true,
        long,
        env = "C10K_MAX_REQUESTS",
        default_value_t = 0,
        help_heading = "Workers"
    )]
    pub max_requests: u64,

    /// Add up to this many requests, at random per worker, to --max-requests.
    #[arg(
        allow_negative_numbers = true,
        long,
        env = "C10K_MAX_REQUESTS_JITTER",
        default_value_t = 0,
        help_heading = "Workers"
    )]
    pub max_requests_jitter: u64,

    /// Seconds a worker may go without a heartbeat before the master kills and replaces it.
    #[arg(allow_negative_numbers = true, short, long, env = "C10K_TIMEOUT", default_value_t = 30.0, value_parser = seconds,
          help_heading = "Timeouts")]
    pub timeout: f64,

    /// How the kernel schedules worker processes' threads. `batch` (Linux SCHED_BATCH): a
    /// thread woken by another (the event loop handing a request to a Python thread, the answer
    /// coming back) does not preempt the running one, so hand-offs are processed in batches
    /// instead of a context switch per request; an idle CPU still runs a woken thread at once.
    /// `normal`: the default policy (SCHED_OTHER). The master always runs `normal`.
    #[arg(long, env = "C10K_SCHEDULING", value_enum, default_value_t = Scheduling::Batch,
          help_heading = "Workers")]
    pub scheduling: Scheduling,

    /// Most open connections per worker; more wait in the kernel's listen queue.
    #[arg(allow_negative_numbers = true, long, env = "C10K_WORKER_CONNECTIONS", default_value_t = 10_000,
          value_parser = at_least_one, help_heading = "Workers")]
    pub worker_connections: usize,

    /// Seconds an idle keep-alive connection stays open; 0 disables keep-alive.
    #[arg(allow_negative_numbers = true, long, env = "C10K_KEEPALIVE", default_value_t = 5.0, value_parser = seconds,
          help_heading = "Timeouts")]
    pub keepalive: f64,

    /// Seconds a client has to send a complete request head before it gets 408.
    #[arg(allow_negative_numbers = true, long, env = "C10K_HEADER_TIMEOUT", default_value_t = 10.0, value_parser = seconds,
          help_heading = "Timeouts")]
    pub header_timeout: f64,

    /// Seconds a client has to send a whole request body, from the end of its head, before it
    /// gets 408 (a body trickled a byte at a time must not hold a connection forever); 0: no
    /// limit beyond each read's --header-timeout.
    #[arg(allow_negative_numbers = true, long, env = "C10K_BODY_TIMEOUT", default_value_t = 60.0, value_parser = seconds,
          help_heading = "Timeouts")]
    pub body_timeout: f64,

    /// Seconds one request may run before it is answered 504 (the same meaning under every
    /// worker class). Off by default.
    #[arg(allow_negative_numbers = true, long, env = "C10K_REQUEST_TIMEOUT", value_parser = seconds, help_heading = "Timeouts")]
    pub request_timeout: Option<f64>,

    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(allow_negative_numbers = true, long, env = "C10K_GRACEFUL_TIMEOUT", default_value_t = 30.0, value_parser = seconds,
          help_heading = "Timeouts")]
    pub graceful_timeout: f64,

    /// Seconds between SIGTERM and closing the listeners, during which readiness (/readyz,
    /// --health-path) answers 503 and requests are still served, so a load balancer stops
    /// sending first (Kubernetes' preStop convention). Then the graceful stop. 0 = none.
    #[arg(allow_negative_numbers = true, long, env = "C10K_DRAIN_DELAY", default_value_t = 0.0, value_parser = seconds,
          help_heading = "Timeouts")]
    pub drain_delay: f64,

    /// Largest request body in bytes (413 above it).
    #[arg(allow_negative_numbers = true, long, env = "C10K_LIMIT_REQUEST_BODY", default_value_t = 10 * 1024 * 1024,
          help_heading = "Limits")]
    pub limit_request_body: u64,

    /// Largest request body kept in memory, in bytes; a bigger one is spooled to an unlinked
    /// temporary file (in $TMPDIR) before the application runs (nginx's client_body_buffer_size).
    #[arg(allow_negative_numbers = true, long, env = "C10K_BODY_BUFFER_SIZE", default_value_t = 64 * 1024,
          help_heading = "Limits")]
    pub body_buffer_size: usize,

    /// Longest request line in bytes (414 above it).
    #[arg(allow_negative_numbers = true, long, env = "C10K_LIMIT_REQUEST_LINE", default_value_t = 8190,
          value_parser = at_least_one, help_heading = "Limits")]
    pub limit_request_line: usize,

    /// Most header fields in a request (431 above it).
    #[arg(allow_negative_numbers = true, long, env = "C10K_LIMIT_REQUEST_FIELDS", default_value_t = 100,
          value_parser = at_least_one, help_heading = "Limits")]
    pub limit_request_fields: usize,

    /// Largest request head (request line plus headers) in bytes (431 above it).
    #[arg(allow_negative_numbers = true, long, env = "C10K_LIMIT_REQUEST_HEAD", default_value_t = 32 * 1024,
          value_parser = at_least_one, help_heading = "Limits")]
    pub limit_request_head: usize,

    /// Admin listener for `c10k status` (/status, /processlist, /metrics): HOST:PORT,
    /// unix:/path, or off. Served by the master, never on a --bind address.
    #[arg(
        long,
        env = "C10K_ADMIN",
        default_value = "127.0.0.1:9191",
        help_heading = "Status"
    )]
    pub admin: AdminAddr,

    /// Bearer token the admin listener requires (`Authorization: Bearer TOKEN`; 401 without
    /// it), except on /livez and /readyz. Required when --admin is not a loopback address.
    /// Never written to the log or to --check-config; prefer the environment variable.
    #[arg(
        long,
        env = "C10K_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        help_heading = "Status"
    )]
    #[serde(skip_serializing)]
    pub admin_token: Option<String>,

    /// Show query values in /processlist and the access log as sent. By default the values of
    /// sensitive-looking keys (token, key, secret, password, auth, session, sig, ...) are
    /// shown as ***.
    #[arg(long, env = "C10K_LOG_QUERY_VALUES", help_heading = "Status")]
    pub log_query_values: bool,

    /// Write an access log (Apache combined format plus the request time in µs) to FILE, or
    /// to standard output with `-`. Off by default.
    #[arg(
        long,
        env = "C10K_ACCESS_LOG",
        value_name = "FILE|-",
        help_heading = "Status"
    )]
    pub access_log: Option<String>,

    /// Do not record per-request figures (processlist entries, status classes, bytes,
    /// durations); only requests and connections are counted. For measuring their cost.
    #[arg(long, env = "C10K_NO_REQUEST_TRACKING", help_heading = "Status")]
    pub no_request_tracking: bool,

    /// Answer readiness on the public port at PATH (e.g. /healthz), before the application is
    /// called: 200 `ready`, or 503 while booting, draining or at --max-lag. For load balancers
    /// that only reach that port; the admin listener has /readyz and /livez.
    #[arg(
        long,
        env = "C10K_HEALTH_PATH",
        value_name = "PATH",
        help_heading = "Status"
    )]
    pub health_path: Option<String>,

    /// Whether `--admin` was chosen (command line, environment or file) rather than defaulted:
    /// a taken default address only turns the admin listener off, with a warning, so a second
    /// server on the machine still starts; a chosen address that cannot be bound is an error.
    #[arg(skip)]
    #[serde(skip)]
    pub admin_chosen: bool,
    /// Whether `--bind` was chosen rather than defaulted: under systemd socket activation, the
    /// inherited sockets are matched to chosen addresses, or all used when none were chosen.
    #[arg(skip)]
    #[serde(skip)]
    pub bind_chosen: bool,
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        // The clap defaults are the single source of truth.
        let cmd = ServeConfig::augment_args(clap::Command::new("serve"));
        let matches = cmd
            .try_get_matches_from(["serve"])
            .unwrap_or_else(|e| panic!("clap defaults of ServeConfig must parse: {e}"));
        ServeConfig::from_arg_matches(&matches)
            .unwrap_or_else(|e| panic!("clap defaults of ServeConfig must build: {e}"))
    }
}

/// A setting that cannot be used, with the flag or key it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{flag}: {message}")]
    Invalid { flag: &'static str, message: String },
}

/// A `--config` TOML file, read once; its keys may belong to several settings structs (the
/// server's and the application's), each taking its own with [`layered`].
#[derive(Clone, Debug)]
pub struct ConfigFile {
    pub path: PathBuf,
    table: toml::Table,
    /// The line of each key (as written), so every error can name it.
    lines: HashMap<String, usize>,
}

impl ConfigFile {
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        // Values keep their byte spans: toml's own message names the line of a syntax error.
        let spanned: std::collections::BTreeMap<String, toml::Spanned<toml::Value>> =
            toml::from_str(&text).map_err(|e| ConfigError::File {
                path: path.to_owned(),
                message: e.to_string().trim_end().to_owned(),
            })?;
        let line_of = |at: usize| {
            1 + text.as_bytes()[..at.min(text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
        };
        let mut table = toml::Table::new();
        let mut lines = HashMap::new();
        for (key, value) in spanned {
            lines.insert(key.clone(), line_of(value.span().start));
            table.insert(key, value.into_inner());
        }
        Ok(ConfigFile {
            path: path.to_owned(),
            table,
            lines,
        })
    }

    /// "line 3, key `workers`": where a key of this file is.
    fn place(&self, key: &str) -> String {
        let shown = key.replace('_', "-");
        match self.lines.get(key) {
            Some(line) => format!("line {line}, key `{shown}`"),
            None => format!("key `{shown}`"),
        }
    }

    /// Names the file, line and key of a setting's error when the file set it (`flag` is
    /// `--name`; a value given on the command line or in the environment is not the file's).
    pub fn blame(&self, matches: &ArgMatches, err: ConfigError) -> ConfigError {
        let ConfigError::Invalid { flag, message } = err else {
            return err;
        };
        let id = key_id(flag.trim_start_matches('-'));
        match self.table.keys().find(|k| key_id(k) == id) {
            Some(key) if !given(matches, &id) => {
                self.error(format!("{}: {message}", self.place(key)))
            }
            _ => ConfigError::Invalid { flag, message },
        }
    }

    fn error(&self, message: String) -> ConfigError {
        ConfigError::File {
            path: self.path.clone(),
            message,
        }
    }

    /// Refuses a key that none of `known` (the settings structs' clap definitions) has, so a typo
    /// is not silently ignored.
    pub fn check_keys(&self, known: &[clap::Command]) -> Result<(), ConfigError> {
        let mut keys: Vec<&String> = self.table.keys().collect();
        keys.sort_by_key(|k| self.lines.get(*k));
        for key in keys {
            let id = key_id(key);
            if !known
                .iter()
                .any(|c| c.get_arguments().any(|a| a.get_id() == id.as_str()))
            {
                return Err(self.error(format!("{}: unknown key", self.place(key))));
            }
        }
        Ok(())
    }

    pub fn contains(&self, id: &str) -> bool {
        self.table.keys().any(|k| key_id(k) == id)
    }
}

/// gunicorn config files use snake_case; accept it beside kebab-case. The clap id is snake_case.
fn key_id(key: &str) -> String {
    key.replace('-', "_")
}

/// Builds settings struct `T` from command-line/env matches and an optional config file: a
/// value given on the command line or in the environment beats the file, which beats the
/// default. Keys of the file that are not `T`'s are left to other structs.
pub fn layered<T>(matches: &ArgMatches, file: Option<&ConfigFile>) -> Result<T, ConfigError>
where
    T: Args + FromArgMatches + Serialize + serde::de::DeserializeOwned,
{
    let cli = T::from_arg_matches(matches).map_err(|e| ConfigError::Invalid {
        flag: "serve",
        message: e.to_string(),
    })?;
    let Some(file) = file else {
        return Ok(cli);
    };
    let mut merged = toml::Table::try_from(&cli).map_err(|e| file.error(e.to_string()))?;
    let known = T::augment_args(clap::Command::new("serve"));
    let mut keys: Vec<&String> = file.table.keys().collect();
    keys.sort_by_key(|k| file.lines.get(*k));
    for key in keys {
        let value = &file.table[key];
        let id = key_id(key);
        if !known.get_arguments().any(|a| a.get_id() == id.as_str()) {
            continue;
        }
        if given(matches, &id) {
            continue;
        }
        // Try the key alone first, so a wrong type is blamed on its own key and line.
        let mut alone = merged.clone();
        alone.insert(key.replace('_', "-"), value.clone());
        if let Err(e) = toml::Value::Table(alone).try_into::<T>() {
            return Err(file.error(format!("{}: {value}: {}", file.place(key), e.message())));
        }
        merged.insert(key.replace('_', "-"), value.clone());
    }
    toml::Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| file.error(e.message().to_owned()))
}

/// Whether setting `id` was given on the command line or in the environment.
pub fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

impl ServeConfig {
    /// Builds the effective config from parsed command-line/env matches and an optional TOML
    /// file (whose keys must all be the server's: see [`ServeConfig::resolve_from`] for a file
    /// shared with an application's settings).
    pub fn resolve(matches: &ArgMatches, file: Option<&Path>) -> Result<ServeConfig, ConfigError> {
        let file = file.map(ConfigFile::read).transpose()?;
        if let Some(file) = &file {
            file.check_keys(&[ServeConfig::augment_args(clap::Command::new("serve"))])?;
        }
        ServeConfig::resolve_from(matches, file.as_ref())
    }

    /// As [`ServeConfig::resolve`], for a file already read and checked; keys that are not
    /// the server's are ignored.
    pub fn resolve_from(
        matches: &ArgMatches,
        file: Option<&ConfigFile>,
    ) -> Result<ServeConfig, ConfigError> {
        let mut config: ServeConfig = layered(matches, file)?;
        config.admin_chosen = given(matches, "admin") || file.is_some_and(|f| f.contains("admin"));
        config.bind_chosen = given(matches, "bind") || file.is_some_and(|f| f.contains("bind"));
        if given(matches, "admin_token") {
            // Not serialised, so the layering above lost it (a file's value came through).
            config.admin_token = matches.get_one::<String>("admin_token").cloned();
        }
        config.validate().map_err(|e| match file {
            Some(f) => f.blame(matches, e),
            None => e,
        })?;
        Ok(config)
    }

    /// Checks what the types alone cannot (values read from a file skip clap's parsers).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |flag, message: &str| {
            Err(ConfigError::Invalid {
                flag,
                message: message.to_owned(),
            })
        };
        if self.bind.is_empty() {
            return bad("--bind", "at least one address is needed");
        }
        for (flag, n) in [
            ("--workers", self.workers),
            ("--threads", self.threads),
            ("--worker-connections", self.worker_connections),
            ("--limit-request-line", self.limit_request_line),
            ("--limit-request-fields", self.limit_request_fields),
            ("--limit-request-head", self.limit_request_head),
        ] {
            if n == 0 {
                return bad(flag, "must be at least 1");
            }
        }
        for (flag, s) in [
            ("--keepalive", self.keepalive),
            ("--header-timeout", self.header_timeout),
            ("--body-timeout", self.body_timeout),
            ("--graceful-timeout", self.graceful_timeout),
            ("--timeout", self.timeout),
            ("--request-timeout", self.request_timeout.unwrap_or(0.0)),
            ("--drain-delay", self.drain_delay),
        ] {
            if !s.is_finite() || s < 0.0 {
                return bad(flag, "must be a number of seconds ≥ 0");
            }
        }
        if self.backlog == 0 {
            return bad("--backlog", "must be at least 1");
        }
        if let Some(p) = &self.health_path {
            if !p.starts_with('/') || p.contains(['?', '#', ' ']) {
                return bad(
                    "--health-path",
                    "must be a path starting with / (no query), e.g. /healthz",
                );
            }
        }
        if self
            .admin_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return bad("--admin-token", "must not be empty");
        }
        if let Some(BindAddr::Tcp(a)) = &self.admin.0 {
            if !a.ip().is_loopback() && self.admin_token.is_none() {
                return Err(ConfigError::Invalid {
                    flag: "--admin",
                    message: format!(
                        "{a} is reachable from other machines: give --admin-token TOKEN (or \
                         C10K_ADMIN_TOKEN) so only holders of the token can read it, or bind it \
                         to loopback (127.0.0.1, [::1]) or a unix: socket"
                    ),
                });
            }
        }
        if let Some(addr) = &self.admin.0 {
            // Port 0 means "any free port": two of those never collide.
            let any_port = matches!(addr, BindAddr::Tcp(a) if a.port() == 0);
            if !any_port && self.bind.iter().any(|b| &b.addr == addr) {
                return bad("--admin", "must not be one of the --bind addresses");
            }
        }
        if self.access_log.as_deref() == Some("") {
            return bad(
                "--access-log",
                "needs a file name, or - for standard output",
            );
        }
        Ok(())
    }

    /// The effective configuration as TOML, for `--check-config` and the start-up log.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// The protocol of the `i`th listener (listeners are bound, and inherited by workers, in
    /// `--bind` order).
    pub fn protocol_of(&self, i: usize) -> Protocol {
        self.bind.get(i).map(|b| b.protocol).unwrap_or_default()
    }

    /// Whether a uwsgi listener may serve a connection from `peer` (`None`: a unix socket).
    pub fn uwsgi_allows(&self, peer: Option<std::net::SocketAddr>) -> bool {
        match peer {
            None => true,
            Some(p) => self.uwsgi_allow_from.iter().any(|a| a.allows(p.ip())),
        }
    }

    pub fn limits(&self) -> crate::proto::Limits {
        crate::proto::Limits {
            max_request_line: self.limit_request_line,
            max_head: self.limit_request_head,
            max_headers: self.limit_request_fields,
            max_body: self.limit_request_body,
            body_buffer: self.body_buffer_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeConfig,
    }

    fn matches(args: &[&str]) -> ArgMatches {
        let mut argv = vec!["serve"];
        argv.extend_from_slice(args);
        Cli::command().try_get_matches_from(argv).unwrap()
    }

    #[test]
    fn defaults() {
        let c = ServeConfig::default();
        assert_eq!(c.worker_class, WorkerClass::Async);
        assert_eq!(c.backlog, 2048);
        assert_eq!(c.bind, vec!["127.0.0.1:8000".parse().unwrap()]);
        assert_eq!(c.bind[0].protocol, Protocol::Http);
        assert!(c.uwsgi_allows(Some("127.0.0.1:5".parse().unwrap())));
        assert!(c.uwsgi_allows(Some("[::1]:5".parse().unwrap())));
        assert!(c.uwsgi_allows(Some("[::ffff:127.0.0.1]:5".parse().unwrap())));
        assert!(!c.uwsgi_allows(Some("192.0.2.1:5".parse().unwrap())));
        assert!(c.uwsgi_allows(None), "unix sockets are always allowed");
        assert_eq!(
            c.admin.to_string(),
            "127.0.0.1:9191",
            "admin on loopback by default"
        );
        assert!(c.access_log.is_none());
    }

    #[test]
    fn admin_beyond_loopback_needs_a_token_that_is_never_shown() {
        let e = ServeConfig::resolve(&matches(&["--admin", "0.0.0.0:9191"]), None).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("--admin") && e.contains("--admin-token"), "{e}");
        let c = ServeConfig::resolve(
            &matches(&["--admin", "0.0.0.0:9191", "--admin-token", "s3cret-t0ken"]),
            None,
        )
        .unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("s3cret-t0ken"));
        assert!(!c.to_toml().contains("s3cret-t0ken"), "{}", c.to_toml());
        for loopback in ["127.0.0.1:0", "[::1]:0", "unix:/tmp/c10k-admin.sock"] {
            ServeConfig::resolve(&matches(&["--admin", loopback]), None).unwrap();
        }
        let e = ServeConfig::resolve(&matches(&["--admin-token", " "]), None).unwrap_err();
        assert!(e.to_string().contains("--admin-token"), "{e}");
        // From a file too, and the command line beats it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c10k.toml");
        std::fs::write(
            &path,
            "admin = \"0.0.0.0:9191\"\nadmin-token = \"from-file\"\n",
        )
        .unwrap();
        let c = ServeConfig::resolve(&matches(&[]), Some(&path)).unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("from-file"));
        let c = ServeConfig::resolve(&matches(&["--admin-token", "cli"]), Some(&path)).unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("cli"));
    }

    #[test]
    fn admin_off_and_not_on_the_public_bind() {
        let m = matches(&["--admin", "off"]);
        let c = ServeConfig::resolve(&m, None).unwrap();
        assert_eq!(c.admin, AdminAddr(None));
        assert!(c.admin_chosen);
        assert!(
            !ServeConfig::resolve(&matches(&[]), None)
                .unwrap()
                .admin_chosen
        );
        let m = matches(&["--bind", "127.0.0.1:8000", "--admin", "127.0.0.1:8000"]);
        let e = ServeConfig::resolve(&m, None).unwrap_err();
        assert!(e.to_string().contains("--admin"), "{e}");
        let back: ServeConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back.admin, AdminAddr(None));
    }

    #[test]
    fn file_fills_what_cli_left_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c10k.toml");
        std::fs::write(
            &path,
            "workers = 3\nworker_class = \"gthread\"\nbacklog = 64\n",
        )
        .unwrap();
        let c = ServeConfig::resolve(&matches(&["--backlog", "128"]), Some(&path)).unwrap();
        assert_eq!(c.workers, 3);
        assert_eq!(c.worker_class, WorkerClass::Gthread);
        assert_eq!(c.backlog, 128, "command line beats the file");
    }

    #[test]
    fn unknown_key_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c10k.toml");
        std::fs::write(&path, "wrokers = 3\n").unwrap();
        let e = ServeConfig::resolve(&matches(&[]), Some(&path)).unwrap_err();
        assert!(e.to_string().contains("wrokers"), "{e}");

        std::fs::write(&path, "workers = -1\n").unwrap();
        let e = ServeConfig::resolve(&matches(&[]), Some(&path)).unwrap_err();
        assert!(e.to_string().contains("c10k.toml"), "{e}");

        std::fs::write(&path, "worker-class = \"fork\"\n").unwrap();
        let e = ServeConfig::resolve(&matches(&[]), Some(&path)).unwrap_err();
        assert!(e.to_string().contains("fork"), "{e}");
    }

    #[test]
    fn uwsgi_binds_beside_http_ones_in_every_source() {
        let m = matches(&[
            "--bind",
            "127.0.0.1:8000,uwsgi://127.0.0.1:3031,uwsgi+unix:/run/c10k.sock,unix:/tmp/h.sock",
            "--uwsgi-allow-from",
            "10.0.0.0/8,2001:db8::/32",
        ]);
        let c = ServeConfig::resolve(&m, None).unwrap();
        let protocols: Vec<_> = c.bind.iter().map(|b| b.protocol).collect();
        use Protocol::{Http, Uwsgi};
        assert_eq!(protocols, [Http, Uwsgi, Uwsgi, Http]);
        assert_eq!(c.bind[2].addr, BindAddr::Unix("/run/c10k.sock".into()));
        assert_eq!(c.protocol_of(1), Uwsgi);
        assert_eq!(c.protocol_of(9), Http);
        assert!(c.uwsgi_allows(Some("10.1.2.3:1".parse().unwrap())));
        assert!(!c.uwsgi_allows(Some("11.0.0.1:1".parse().unwrap())));
        assert!(c.uwsgi_allows(Some("[2001:db8::5]:1".parse().unwrap())));
        assert!(!c.uwsgi_allows(Some("127.0.0.1:1".parse().unwrap())));
        // The same strings in a config file, and back through the worker's TOML.
        let back: ServeConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back.bind, c.bind);
        assert_eq!(back.uwsgi_allow_from, c.uwsgi_allow_from);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c10k.toml");
        std::fs::write(
            &path,
            "bind = [\"uwsgi://127.0.0.1:3031\"]\nuwsgi_allow_from = [\"*\"]\n",
        )
        .unwrap();
        let c = ServeConfig::resolve(&matches(&[]), Some(&path)).unwrap();
        assert_eq!(c.bind, vec![Bind::uwsgi("127.0.0.1:3031".parse().unwrap())]);
        assert!(c.uwsgi_allows(Some("192.0.2.1:5".parse().unwrap())));
        assert_eq!(
            "uwsgi://:3031".parse::<Bind>().unwrap(),
            Bind::uwsgi("0.0.0.0:3031".parse().unwrap())
        );
        for bad in [
            "uwsgi://",
            "uwsgi://nohost",
            "uwsgi+unix:",
            "uwsgi:/x",
            "uwsgi://unix:/x.sock",
        ] {
            let e = bad.parse::<Bind>().unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        for bad in ["10.0.0.0/33", "::/129", "host", ""] {
            assert!(bad.parse::<AllowFrom>().is_err(), "{bad}");
        }
    }

    #[test]
    fn gunicorn_bind_forms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gunicorn.conf.toml");
        std::fs::write(&path, "bind = \"127.0.0.1:8001\"\nworkers = 2\n").unwrap();
        let c = ServeConfig::resolve(&matches(&[]), Some(&path)).unwrap();
        assert_eq!(c.bind, vec!["127.0.0.1:8001".parse().unwrap()]);
        let c = ServeConfig::resolve(&matches(&["--bind", ":8000"]), None).unwrap();
        assert_eq!(c.bind, vec!["0.0.0.0:8000".parse().unwrap()]);
        let c = ServeConfig::resolve(&matches(&["--bind", "localhost:8000"]), None).unwrap();
        match &c.bind[..] {
            [Bind {
                addr: BindAddr::Tcp(a),
                ..
            }] => assert!(a.ip().is_loopback() && a.port() == 8000, "{a}"),
            other => panic!("{other:?}"),
        }
        let c = ServeConfig::resolve(&matches(&["--bind", "tcp://127.0.0.1:8002"]), None).unwrap();
        assert_eq!(c.bind, vec!["127.0.0.1:8002".parse().unwrap()]);
        let back: ServeConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back.bind, c.bind, "workers read the list form back");
        for bad in ["localhost", "host:port", ":99999", "[::1:8000"] {
            assert!(bad.parse::<BindAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn file_errors_name_key_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c10k.toml");
        for (text, line, key) in [
            ("backlog = 64\nworkers = \"four\"\n", 2, "workers"),
            ("# comment\n\nworkers = 0\n", 3, "workers"),
            ("bind = \"nowhere\"\n", 1, "bind"),
            ("threads = 2\nkeepalive = -1.0\n", 2, "keepalive"),
            ("graceful_timeout = \"x\"\n", 1, "graceful-timeout"),
            ("x = 1\nwrokers = 3\n", 1, "x"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = ServeConfig::resolve(&matches(&[]), Some(&path))
                .unwrap_err()
                .to_string();
            assert!(e.contains("c10k.toml"), "{text:?}: {e}");
            assert!(e.contains(&format!("line {line}")), "{text:?}: {e}");
            assert!(e.contains(&format!("`{key}`")), "{text:?}: {e}");
        }
        std::fs::write(&path, "workers = [\n").unwrap();
        let e = ServeConfig::resolve(&matches(&[]), Some(&path))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c10k.toml") && e.contains("line"), "{e}");
        // A value the command line overrides is not the file's to blame.
        std::fs::write(&path, "workers = 0\n").unwrap();
        let c = ServeConfig::resolve(&matches(&["--workers", "2"]), Some(&path)).unwrap();
        assert_eq!(c.workers, 2);
    }

    #[test]
    fn cli_rejects_bad_values() {
        for args in [
            &["--workers", "0"][..],
            &["--worker-class", "fork"],
            &["--keepalive", "-1"],
            &["--bind", "nonsense"],
            &["--bind", "uwsgi://nonsense"],
            &["--uwsgi-allow-from", "nonsense"],
        ] {
            let mut argv = vec!["serve"];
            argv.extend_from_slice(args);
            assert!(
                Cli::command().try_get_matches_from(argv).is_err(),
                "{args:?}"
            );
        }
    }
}
