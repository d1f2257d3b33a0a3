//! Every setting of `c10k serve`, defined once.
//!
//! As gunicorn's `Setting` does, one definition serves three sources: the command line
//! (`--workers 4`), environment variables (`C10K_WORKERS=4`) and a TOML file (`workers = 4`, given
//! with `--config`). Precedence is command line, then environment, then file, then default. The
//! struct derives serde for the file and, with the `cli` feature (which only the `c10k` binary
//! turns on), clap's `Args` for the first two, so a setting cannot exist in one source and be
//! missing from another while this library itself knows nothing of clap. The layering of the
//! sources is the binary's (`crates/c10k/src/settings.rs`).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::allow::AllowFrom;

/// `Serialize` as the `Display` text and `Deserialize` through `FromStr`, so that a config file
/// spells a value (`bind = "uwsgi://127.0.0.1:3031"`) exactly as the command line does.
macro_rules! serde_as_text {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// How a worker process runs requests; see `c10k serve --help` and the README. gunicorn's
/// spellings of its classes (`gunicorn.workers.gthread.ThreadWorker`, `egg:gunicorn#gevent`)
/// are accepted too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum WorkerClass {
    /// One request at a time per worker; the connection closes after each response.
    #[cfg_attr(
        feature = "cli",
        value(
            alias = "gunicorn.workers.sync.SyncWorker",
            alias = "egg:gunicorn#sync"
        )
    )]
    #[serde(
        alias = "gunicorn.workers.sync.SyncWorker",
        alias = "egg:gunicorn#sync"
    )]
    Sync,
    /// A new OS thread per connection, capped by --worker-connections.
    Thread,
    /// A fixed pool of --threads threads per worker; idle keep-alive connections hold no thread.
    #[cfg_attr(
        feature = "cli",
        value(
            alias = "gunicorn.workers.gthread.ThreadWorker",
            alias = "egg:gunicorn#gthread"
        )
    )]
    #[serde(
        alias = "gunicorn.workers.gthread.ThreadWorker",
        alias = "egg:gunicorn#gthread"
    )]
    Gthread,
    /// An event loop per worker; waits yield, so one worker runs thousands of requests at once.
    Async,
    /// Python apps: the `async` event loop does the I/O; each request runs in a greenlet on the
    /// worker's gevent hub (monkey-patched), up to --worker-connections at once.
    #[cfg_attr(
        feature = "cli",
        value(
            alias = "gunicorn.workers.ggevent.GeventWorker",
            alias = "egg:gunicorn#gevent"
        )
    )]
    #[serde(
        alias = "gunicorn.workers.ggevent.GeventWorker",
        alias = "egg:gunicorn#gevent"
    )]
    Gevent,
}

impl WorkerClass {
    /// Every class, in the order `--help` lists them.
    pub const ALL: [WorkerClass; 5] = [
        WorkerClass::Sync,
        WorkerClass::Thread,
        WorkerClass::Gthread,
        WorkerClass::Async,
        WorkerClass::Gevent,
    ];

    /// The name on the command line, in the config file and in the status report.
    pub fn name(self) -> &'static str {
        match self {
            WorkerClass::Sync => "sync",
            WorkerClass::Thread => "thread",
            WorkerClass::Gthread => "gthread",
            WorkerClass::Async => "async",
            WorkerClass::Gevent => "gevent",
        }
    }
}

/// The kernel scheduling policy of worker processes (`--scheduling`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Scheduling {
    /// SCHED_BATCH: no preemption on wake-up between the worker's own threads.
    Batch,
    /// SCHED_OTHER, the kernel's default.
    Normal,
}

impl fmt::Display for WorkerClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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

serde_as_text!(BindAddr);

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
    /// `http://` before an HTTP listener's TCP address in the log (a link to click), else
    /// nothing.
    pub fn scheme(&self) -> &'static str {
        match (self.protocol, &self.addr) {
            (Protocol::Http, BindAddr::Tcp(_)) => "http://",
            _ => "",
        }
    }

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

serde_as_text!(Bind);

/// `--umask`: permission bits taken away, as gunicorn's `umask` setting (`0o117`, `0117`,
/// `0x4f`, or decimal as Python's `int(value, 0)` reads it; a leading 0 is octal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Umask(pub u32);

impl FromStr for Umask {
    type Err = String;

    fn from_str(s: &str) -> Result<Umask, String> {
        let t = s.trim().replace('_', "");
        let parsed = if let Some(o) = t.strip_prefix("0o").or(t.strip_prefix("0O")) {
            u32::from_str_radix(o, 8)
        } else if let Some(x) = t.strip_prefix("0x").or(t.strip_prefix("0X")) {
            u32::from_str_radix(x, 16)
        } else if let Some(b) = t.strip_prefix("0b").or(t.strip_prefix("0B")) {
            u32::from_str_radix(b, 2)
        } else if t.len() > 1 && t.starts_with('0') {
            u32::from_str_radix(&t[1..], 8)
        } else {
            t.parse()
        };
        match parsed {
            Ok(m) if m <= 0o777 => Ok(Umask(m)),
            _ => Err(format!(
                "{s:?} is not a umask from 0 to 0o777 (e.g. 0o117, 0117 or 0x4f)"
            )),
        }
    }
}

impl fmt::Display for Umask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0o{:03o}", self.0)
    }
}

impl Serialize for Umask {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Umask {
    /// A string (`"0o117"`) or a TOML integer (`0o117`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Umask, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) if (0..=0o777).contains(&n) => Ok(Umask(n as u32)),
            Raw::Int(n) => Err(serde::de::Error::custom(format!(
                "{n} is not a umask from 0 to 0o777"
            ))),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
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

serde_as_text!(AdminAddr);

#[cfg(feature = "cli")]
fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !seconds_in_range(v) {
        return Err(format!("{s:?} {SECONDS_RANGE}"));
    }
    Ok(v)
}

/// The longest duration a setting takes, about 31 years. A `Duration` (and an `Instant` plus
/// one) overflows near 1.8e19 seconds and panics; `--graceful-timeout 1e20` stopped the master
/// with a panic at SIGTERM, `--keepalive 1e300` every worker at boot.
const MAX_SECONDS: f64 = 1e9;
const SECONDS_RANGE: &str = "must be a number of seconds from 0 to 1000000000 (about 31 years)";

fn seconds_in_range(v: f64) -> bool {
    (0.0..=MAX_SECONDS).contains(&v)
}

#[cfg(feature = "cli")]
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number ≥ 1")),
    }
}

/// What gunicorn takes `--limit-request-fields 0` (and any larger value) to mean.
const GUNICORN_MAX_HEADERS: usize = 32768;

/// Settings of `c10k serve`. Durations are in seconds, fractions allowed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
// Unknown file keys are refused by the binary against clap's argument list (serde's
// deny_unknown_fields cannot be combined with flattened groups of settings).
#[serde(rename_all = "kebab-case", default)]
pub struct ServeConfig {
    /// Address to listen on: HOST:PORT or unix:/path (HTTP), uwsgi://HOST:PORT or
    /// uwsgi+unix:/path (nginx's uwsgi_pass). Repeat for several.
    #[cfg_attr(
        feature = "cli",
        arg(
            short,
            long = "bind",
            env = "C10K_BIND",
            value_delimiter = ',',
            default_value = "127.0.0.1:8000",
            help_heading = "Listening"
        )
    )]
    #[serde(deserialize_with = "one_or_many")]
    pub bind: Vec<Bind>,

    /// Run the workers as this user (a name or uid), as gunicorn's -u/--user: the master binds
    /// as it was started (root, for a port below 1024) and each worker drops to the user, with
    /// the user's groups, before it runs; the access and error log files and unix sockets are
    /// given to the user. Needs c10k started as root.
    #[cfg_attr(
        feature = "cli",
        arg(
            short = 'u',
            long,
            env = "C10K_USER",
            value_name = "USER",
            help_heading = "Workers"
        )
    )]
    pub user: Option<String>,

    /// The workers' group (a name or gid), as gunicorn's -g/--group; default: --user's primary
    /// group.
    #[cfg_attr(
        feature = "cli",
        arg(
            short = 'g',
            long,
            env = "C10K_GROUP",
            value_name = "GROUP",
            help_heading = "Workers"
        )
    )]
    pub group: Option<String>,

    /// Accepted for gunicorn's --initgroups: with --user, c10k always gives the workers the
    /// user's supplementary groups.
    #[cfg_attr(feature = "cli", arg(long, hide = true))]
    pub initgroups: bool,

    /// Permission bits a unix-socket --bind is created without, as gunicorn's -m/--umask: the
    /// socket's mode is 0777 minus the mask (--umask 0o117: 0660, for a proxy in the socket's
    /// group). Default: the socket is 0666.
    #[cfg_attr(
        feature = "cli",
        arg(
            allow_negative_numbers = true,
            short = 'm',
            long,
            env = "C10K_UMASK",
            value_name = "MASK",
            help_heading = "Listening"
        )
    )]
    pub umask: Option<Umask>,

    /// Peers allowed to connect to a uwsgi listener over TCP: addresses, ADDRESS/PREFIX
    /// networks, or * for any (like gunicorn's --forwarded-allow-ips). Unix sockets are always
    /// allowed. Others are closed and logged.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            env = "C10K_UWSGI_ALLOW_FROM",
            value_delimiter = ',',
            default_value = "127.0.0.1,::1",
            help_heading = "Listening"
        )
    )]
    pub uwsgi_allow_from: Vec<AllowFrom>,

    /// Proxies whose scheme headers are believed (gunicorn's --forwarded-allow-ips): from these
    /// peers `X-Forwarded-Proto: https`, `X-Forwarded-Protocol: ssl` or `X-Forwarded-Ssl: on`
    /// makes the request https (`wsgi.url_scheme`), and two that disagree are a 400; over uwsgi
    /// the peer is nginx, passing on a load balancer's headers. Addresses, ADDRESS/PREFIX
    /// networks, or * for any. Unix sockets are always trusted.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            env = "C10K_FORWARDED_ALLOW_IPS",
            value_delimiter = ',',
            default_value = "127.0.0.1,::1",
            help_heading = "Listening"
        )
    )]
    pub forwarded_allow_ips: Vec<AllowFrom>,

    /// Header names with `_` that a peer in --forwarded-allow-ips may send to the app (gunicorn's
    /// --forwarder-headers): such a header, dropped from anyone else, becomes `HTTP_NAME` in the
    /// environ, and a `SCRIPT_NAME` one (nginx's `proxy_set_header SCRIPT_NAME /api`) is the
    /// request's `SCRIPT_NAME`, cut off the front of `PATH_INFO` (a path outside it is a WSGI app's
    /// 500; the built-in app has no mount point and ignores it).
    /// `*` for any name; an empty value for none.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            env = "C10K_FORWARDER_HEADERS",
            value_delimiter = ',',
            default_value = "SCRIPT_NAME,PATH_INFO",
            value_name = "NAMES",
            help_heading = "Listening"
        )
    )]
    pub forwarder_headers: Vec<String>,

    /// Listen queue length (capped by net.core.somaxconn; a warning says so).
    #[cfg_attr(
        feature = "cli",
        arg(
            allow_negative_numbers = true,
            long,
            env = "C10K_BACKLOG",
            default_value_t = 2048,
            help_heading = "Listening"
        )
    )]
    pub backlog: u32,

    /// Set SO_REUSEPORT on the listening sockets, as gunicorn's --reuse-port: the workers still
    /// share one socket per address, and another server started with the flag can bind the same
    /// address beside this one.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "C10K_REUSE_PORT", help_heading = "Listening")
    )]
    pub reuse_port: bool,

    /// Accept a TCP connection as soon as it is open, not once its first bytes arrive (uWSGI's
    /// --no-defer-accept). By default TCP listeners set TCP_DEFER_ACCEPT (1 s): a worker is
    /// woken for a connection when its request can be read.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "C10K_NO_DEFER_ACCEPT", help_heading = "Listening")
    )]
    pub no_defer_accept: bool,

    /// Concurrency model of each worker process.
    #[cfg_attr(feature = "cli", arg(short = 'k', long, env = "C10K_WORKER_CLASS", value_enum,
          default_value_t = WorkerClass::Async, help_heading = "Workers"))]
    pub worker_class: WorkerClass,

    /// Worker processes under the master.
    #[cfg_attr(feature = "cli", arg(allow_negative_numbers = true, short, long, env = "C10K_WORKERS", default_value_t = 1,
          value_parser = at_least_one, help_heading = "Workers"))]
    pub workers: usize,

    /// Threads per worker: the gthread pool size; for async, the runtime's threads (the Python
    /// thread pool's size when hosting a Python app, whose event loop then runs on one thread).
    #[cfg_attr(feature = "cli", arg(allow_negative_numbers = true, long, env = "C10K_THREADS", default_value_t = 1,
          value_parser = at_least_one, help_heading = "Workers"))]
    pub threads: usize,

    /// Retire a worker after this many requests (0 = never); the master starts a fresh one.
    #[cfg_attr(
        feature = "cli",
        arg(
            allow_negative_numbers = true,
            long,
            env = "C10K_MAX_REQUESTS",
            default_value_t = 0,
            help_heading = "Workers"
        )
    )]
    pub max_requests: u64,

    /// Add up to this many requests, at random per worker, to --max-requests.
    #[cfg_attr(
        feature = "cli",
        arg(
            allow_negative_numbers = true,
            long,
            env = "C10K_MAX_REQUESTS_JITTER",
            default_value_t = 0,
            help_heading = "Workers"
        )
    )]
    pub max_requests_jitter: u64,

    /// Seconds a worker may go without a heartbeat before the master kills and replaces it.
    #[cfg_attr(feature = "cli", arg(allow_negative_numbers = true, short, long, env = "C10K_TIMEOUT", default_value_t = 30.0, value_parser = seconds,
          help_heading = "Timeouts"))]
    pub timeout: f64,

    /// How the kernel schedules worker processes' threads. `batch` (Linux SCHED_BATCH): a
    /// thread woken by another (the event loop handing a request to a Python thread, the answer
    /// coming back) does not preempt the running one, so hand-offs are processed in batches
    /// instead of a context switch per request; an idle CPU still runs a woken thread at once.
    /// `normal`: the default policy (SCHED_OTHER). The master always runs `normal`.
    #[cfg_attr(feature = "cli", arg(long, env = "C10K_SCHEDULING", value_enum, default_value_t = Scheduling::Batch,
          help_heading = "Workers"))]
    pub scheduling: Scheduling,

    /// Most open connections per worker; more wait in the kernel's listen queue.
    #[cfg_attr(feature = "cli", arg(allow_negative_numbers = true, long, env = "C10K_WORKER_CONNECTIONS", default_value_t = 10_000,
          value_parser = at_least_one, help_heading = "Workers"))]
    pub worker_connections: usize,

    /// Seconds an idle keep-alive connection stays open; 0 disables keep-alive. gunicorn's
    /// --keep-alive is accepted too.
    #[cfg_attr(feature = "cli", arg(allow_negative_numbers = true, long, alias = "keep-alive", env = "C10K_KEEPALIVE", default_value_t = 5.0, value_parser = seconds,
          help_heading = "Timeouts"))]
    pub keepalive: f64,

    /// Seconds a client has to send a complete request head before it gets 408.
    #[cfg_attr(feature = "cli", arg(allow_negative_numbers = true, long, env = "C10K_HEADER_TIMEOUT", default_value_t = 10.0, value_parser = seconds,
          help_heading = "Timeouts"))]
    pub header_timeout: f64,

    /// Seconds a client has to send a whole request body, from the end of its head, before it
    /// gets 408 (a body trickled a byte at a time must not hold a connection forever); 0: no
    /// limit beyond each read's --header-timeout.
    #[cfg_attr(feature = "cli", arg(allow_negative_numbers = true, long, env = "C10K_BODY_TIMEOUT", default_value_t = 60.0, value_parser = seconds,
          help_heading = "Timeouts"))]
    pub body_timeout: f64,

    /// A request body earns one second beyond --body-timeout for every BYTES of it received,
    /// so a slow but steady upload is not cut and a trickle is (Apache mod_reqtimeout's MinRate,
    /// with its default for bodies). 0: no extension, the whole body within --body-timeout.
    #[cfg_attr(
        feature = "cli",
        arg(
            allow_negative_numbers = true,
            long,
            env = "C10K_BODY_MIN_RATE",
            default_value_t = 500,
            value_name = "BYTES",
            help_heading = "Timeouts"
        )
    )]
    pub body_min_rate: u64,

    /// Seconds a response may go without the client taking any of it before the connection is
    /// closed (and a streamed body's iterable closed): a client that stops reading must not hold
    /// a thread forever (nginx's send_timeout). Below --timeout's 30, so that a `sync` worker is
    /// freed rather than killed. 0: no limit.
    #[cfg_attr(feature = "cli", arg(allow_negative_numbers = true, long, env = "C10K_SEND_TIMEOUT", default_value_t = 20.0, value_parser = seconds,
          help_heading = "Timeouts"))]
    pub send_timeout: f64,

    /// Seconds one request may run before it is answered 504 (the same meaning under every
    /// worker class). Off by default.
    #[cfg_attr(feature = "cli", arg(allow_negative_numbers = true, long, env = "C10K_REQUEST_TIMEOUT", value_parser = seconds, help_heading = "Timeouts"))]
    pub request_timeout: Option<f64>,

    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[cfg_attr(feature = "cli", arg(allow_negative_numbers = true, long, env = "C10K_GRACEFUL_TIMEOUT", default_value_t = 30.0, value_parser = seconds,
          help_heading = "Timeouts"))]
    pub graceful_timeout: f64,

    /// Seconds between SIGTERM and closing the listeners, during which readiness (/readyz,
    /// --health-path) answers 503 and requests are still served, so a load balancer stops
    /// sending first (Kubernetes' preStop convention). Then the graceful stop. 0 = none.
    #[cfg_attr(feature = "cli", arg(allow_negative_numbers = true, long, env = "C10K_DRAIN_DELAY", default_value_t = 0.0, value_parser = seconds,
          help_heading = "Timeouts"))]
    pub drain_delay: f64,

    /// Largest request body in bytes (413 above it); 0 lifts the limit, as nginx's
    /// client_max_body_size 0 and uWSGI's limit-post 0 do.
    #[cfg_attr(feature = "cli", arg(allow_negative_numbers = true, long, env = "C10K_LIMIT_REQUEST_BODY", default_value_t = 10 * 1024 * 1024,
          help_heading = "Limits"))]
    pub limit_request_body: u64,

    /// Largest request body kept in memory, in bytes; a bigger one is spooled to an unlinked
    /// temporary file (in $TMPDIR) before the application runs (nginx's client_body_buffer_size).
    #[cfg_attr(feature = "cli", arg(allow_negative_numbers = true, long, env = "C10K_BODY_BUFFER_SIZE", default_value_t = 64 * 1024,
          help_heading = "Limits"))]
    pub body_buffer_size: usize,

    /// Longest request line in bytes (414 above it); 0 for no limit of its own, as in gunicorn
    /// (--limit-request-head still bounds it).
    #[cfg_attr(
        feature = "cli",
        arg(
            allow_negative_numbers = true,
            long,
            env = "C10K_LIMIT_REQUEST_LINE",
            default_value_t = 8190,
            help_heading = "Limits"
        )
    )]
    pub limit_request_line: usize,

    /// Most header fields in a request (431 above it); 0 for gunicorn's ceiling, 32768.
    #[cfg_attr(
        feature = "cli",
        arg(
            allow_negative_numbers = true,
            long,
            env = "C10K_LIMIT_REQUEST_FIELDS",
            default_value_t = 100,
            help_heading = "Limits"
        )
    )]
    pub limit_request_fields: usize,

    /// Longest header field line (name, value and CRLF) in bytes (431 above it); 0 for no
    /// limit of its own (--limit-request-head still bounds it). gunicorn's name, with its
    /// underscore; --limit-request-field-size is accepted too.
    #[cfg_attr(
        feature = "cli",
        arg(
            allow_negative_numbers = true,
            long = "limit-request-field_size",
            alias = "limit-request-field-size",
            env = "C10K_LIMIT_REQUEST_FIELD_SIZE",
            default_value_t = 8190,
            help_heading = "Limits"
        )
    )]
    #[serde(alias = "limit-request-field_size")]
    pub limit_request_field_size: usize,

    /// Largest request head (request line plus headers) in bytes (431 above it).
    #[cfg_attr(feature = "cli", arg(allow_negative_numbers = true, long, env = "C10K_LIMIT_REQUEST_HEAD", default_value_t = 32 * 1024,
          value_parser = at_least_one, help_heading = "Limits"))]
    pub limit_request_head: usize,

    /// Admin listener for `c10k status` (/status, /processlist, /metrics): HOST:PORT,
    /// unix:/path, or off. Served by the master, never on a --bind address.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            env = "C10K_ADMIN",
            default_value = "127.0.0.1:9191",
            help_heading = "Status"
        )
    )]
    pub admin: AdminAddr,

    /// Bearer token the admin listener requires (`Authorization: Bearer TOKEN`; 401 without
    /// it), except on /livez and /readyz. Required when --admin is not a loopback address.
    /// Never written to the log or to --check-config; prefer the environment variable.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            env = "C10K_ADMIN_TOKEN",
            value_name = "TOKEN",
            hide_env_values = true,
            help_heading = "Status"
        )
    )]
    #[serde(skip_serializing)]
    pub admin_token: Option<String>,

    /// Show query values in /processlist and the access log as sent. By default the values of
    /// sensitive-looking keys (token, key, secret, password, auth, session, sig, ...) are
    /// shown as ***.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "C10K_LOG_QUERY_VALUES", help_heading = "Status")
    )]
    pub log_query_values: bool,

    /// Write an access log (Apache combined format plus the request time in µs) to FILE, or
    /// to standard output with `-`. Off by default. gunicorn's --access-logfile is accepted too.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            alias = "access-logfile",
            env = "C10K_ACCESS_LOG",
            value_name = "FILE|-",
            help_heading = "Status"
        )
    )]
    pub access_log: Option<String>,

    /// The access log's line in gunicorn's atoms instead of the combined format, e.g.
    /// '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(L)s
    /// %({x-forwarded-for}i)s'. Atoms: h l u t r m U q H s B b f a T M D L p (u: the Basic auth
    /// user), {header}i, {header}o (the application's response header) and {NAME}e (a WSGI
    /// environ variable the server derives: PATH_INFO, REMOTE_ADDR, HTTP_*, ...; those the app
    /// adds print -); unknown atoms print -. gunicorn's --access-logformat is accepted too.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            alias = "access-logformat",
            env = "C10K_ACCESS_LOG_FORMAT",
            value_name = "FORMAT",
            help_heading = "Status"
        )
    )]
    pub access_log_format: Option<String>,

    /// Write the master's pid to FILE at start and remove it at exit (gunicorn's -p/--pid); a
    /// FILE naming a live process stops the start.
    #[cfg_attr(
        feature = "cli",
        arg(
            short,
            long,
            env = "C10K_PID",
            value_name = "FILE",
            help_heading = "Status"
        )
    )]
    pub pid: Option<PathBuf>,

    /// Do not record per-request figures (processlist entries, status classes, bytes,
    /// durations); only requests and connections are counted. For measuring their cost.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "C10K_NO_REQUEST_TRACKING", help_heading = "Status")
    )]
    pub no_request_tracking: bool,

    /// Answer readiness on the public port at PATH (e.g. /healthz), before the application is
    /// called: 200 `ready`, or 503 while booting, draining or at --max-lag. For load balancers
    /// that only reach that port; the admin listener has /readyz and /livez.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            env = "C10K_HEALTH_PATH",
            value_name = "PATH",
            help_heading = "Status"
        )
    )]
    pub health_path: Option<String>,

    /// Whether `--admin` was chosen (command line, environment or file) rather than defaulted:
    /// a taken default address only turns the admin listener off, with a warning, so a second
    /// server on the machine still starts; a chosen address that cannot be bound is an error.
    #[cfg_attr(feature = "cli", arg(skip))]
    #[serde(skip)]
    pub admin_chosen: bool,
    /// Whether `--bind` was chosen rather than defaulted: under systemd socket activation, the
    /// inherited sockets are matched to chosen addresses, or all used when none were chosen.
    #[cfg_attr(feature = "cli", arg(skip))]
    #[serde(skip)]
    pub bind_chosen: bool,
}

impl Default for ServeConfig {
    /// The defaults `--help` shows (a test of the binary holds the two to each other).
    fn default() -> ServeConfig {
        ServeConfig {
            bind: vec![Bind::http(BindAddr::Tcp(SocketAddr::from((
                [127, 0, 0, 1],
                8000,
            ))))],
            user: None,
            group: None,
            initgroups: false,
            umask: None,
            uwsgi_allow_from: AllowFrom::loopback(),
            forwarded_allow_ips: AllowFrom::loopback(),
            forwarder_headers: vec!["SCRIPT_NAME".into(), "PATH_INFO".into()],
            backlog: 2048,
            reuse_port: false,
            no_defer_accept: false,
            worker_class: WorkerClass::Async,
            workers: 1,
            threads: 1,
            max_requests: 0,
            max_requests_jitter: 0,
            timeout: 30.0,
            scheduling: Scheduling::Batch,
            worker_connections: 10_000,
            keepalive: 5.0,
            header_timeout: 10.0,
            body_timeout: 60.0,
            body_min_rate: 500,
            send_timeout: 20.0,
            request_timeout: None,
            graceful_timeout: 30.0,
            drain_delay: 0.0,
            limit_request_body: 10 * 1024 * 1024,
            body_buffer_size: 64 * 1024,
            limit_request_line: 8190,
            limit_request_fields: 100,
            limit_request_field_size: 8190,
            limit_request_head: 32 * 1024,
            admin: AdminAddr(Some(BindAddr::Tcp(SocketAddr::from((
                [127, 0, 0, 1],
                9191,
            ))))),
            admin_token: None,
            log_query_values: false,
            access_log: None,
            access_log_format: None,
            pid: None,
            no_request_tracking: false,
            health_path: None,
            admin_chosen: false,
            bind_chosen: false,
        }
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

impl ServeConfig {
    /// "gthread (4 workers × 50 threads)": what the banner says about the worker model.
    pub(crate) fn worker_summary(&self) -> String {
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let workers = plural(self.workers, "worker");
        match self.worker_class {
            WorkerClass::Gthread | WorkerClass::Async if self.threads > 1 => format!(
                "{} ({workers} × {})",
                self.worker_class,
                plural(self.threads, "thread")
            ),
            _ => format!("{} ({workers})", self.worker_class),
        }
    }

    /// gunicorn runs `sync` with more than one thread as `gthread`; so do we, and say so.
    pub(crate) fn effective_class(mut self) -> ServeConfig {
        if self.worker_class == WorkerClass::Sync && self.threads > 1 {
            tracing::warn!(
                threads = self.threads,
                "--worker-class sync runs one request at a time; with --threads > 1 using gthread"
            );
            self.worker_class = WorkerClass::Gthread;
        }
        self
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
            ("--limit-request-head", self.limit_request_head),
        ] {
            if n == 0 {
                return bad(flag, "must be at least 1");
            }
        }
        // The scoreboard has a slot per worker; above it the master could not start (exit 1,
        // after the banner had announced that many workers).
        if self.workers > crate::scoreboard::MAX_SLOTS {
            return Err(ConfigError::Invalid {
                flag: "--workers",
                message: format!(
                    "{} is above the maximum of {}",
                    self.workers,
                    crate::scoreboard::MAX_SLOTS
                ),
            });
        }
        for (flag, s) in [
            ("--keepalive", self.keepalive),
            ("--header-timeout", self.header_timeout),
            ("--body-timeout", self.body_timeout),
            ("--send-timeout", self.send_timeout),
            ("--graceful-timeout", self.graceful_timeout),
            ("--timeout", self.timeout),
            ("--request-timeout", self.request_timeout.unwrap_or(0.0)),
            ("--drain-delay", self.drain_delay),
        ] {
            if !seconds_in_range(s) {
                return bad(flag, SECONDS_RANGE);
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
        crate::owner::resolve(self.user.as_deref(), self.group.as_deref())
            .map_err(|(flag, message)| ConfigError::Invalid { flag, message })?;
        if self.access_log_format.is_some() && self.access_log.is_none() {
            return bad(
                "--access-log-format",
                "needs --access-log FILE (or - for standard output) to write to",
            );
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
            // gunicorn's 0s: a line as long as the head allows; its ceiling of fields.
            max_request_line: match self.limit_request_line {
                0 => self.limit_request_head,
                n => n,
            },
            max_head: self.limit_request_head,
            max_headers: match self.limit_request_fields {
                0 => GUNICORN_MAX_HEADERS,
                n => n,
            },
            max_field_size: self.limit_request_field_size,
            max_body: match self.limit_request_body {
                0 => u64::MAX,
                n => n,
            },
            body_buffer: self.body_buffer_size,
            forwarded_allow: self.forwarded_allow_ips.as_slice().into(),
            forwarder_headers: crate::proto::forwarder_names(&self.forwarder_headers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        c.validate().unwrap();
    }

    /// gunicorn's `--limit-request-line 0` and `--limit-request-fields 0` (documented, and
    /// common in gunicorn command lines) stopped c10k at start with "must be at least 1".
    #[test]
    fn zero_line_and_field_limits_mean_what_they_mean_to_gunicorn() {
        let c = ServeConfig {
            limit_request_line: 0,
            limit_request_fields: 0,
            limit_request_field_size: 0,
            ..ServeConfig::default()
        };
        c.validate().unwrap();
        let l = c.limits();
        assert_eq!(l.max_request_line, c.limit_request_head);
        assert_eq!(l.max_headers, 32768);
        assert_eq!(l.max_field_size, 0);
    }

    #[test]
    fn umask_spellings() {
        for (s, m) in [
            ("0o117", 0o117),
            ("0117", 0o117),
            ("0x4f", 0x4f),
            ("91", 91),
            ("0", 0),
        ] {
            assert_eq!(s.parse::<Umask>(), Ok(Umask(m)), "{s}");
        }
        for s in ["0o1000", "512", "x", "", "-1", "08"] {
            assert!(s.parse::<Umask>().is_err(), "{s}");
        }
        let c: ServeConfig = toml::from_str("umask = 0o117").unwrap();
        assert_eq!(c.umask, Some(Umask(0o117)));
        let c: ServeConfig = toml::from_str("umask = \"0o22\"").unwrap();
        assert_eq!(c.umask, Some(Umask(0o22)));
        let back: ServeConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back.umask, Some(Umask(0o22)));
        assert!(toml::from_str::<ServeConfig>("umask = 1000").is_err());
    }

    #[test]
    fn worker_class_names_are_serde_names() {
        for class in WorkerClass::ALL {
            let text = toml::Value::try_from(class).unwrap();
            assert_eq!(text.as_str(), Some(class.name()));
            assert_eq!(class.to_string(), class.name());
        }
    }
}
