//! What to run: a [`Plan`] is plain data (buildable from code, serializable so `--processes`
//! can hand it to child processes), and [`Prepared`] is the plan turned into socket addresses and
//! request bytes, built once before any connection opens so the hot path only copies bytes.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::usage::UsageError;

/// One load-generation run. Build it with [`Plan::new`] and set the public fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Plan {
    /// `http://host[:port]/path?query` targets, used round robin. All must name the same
    /// host and port (one connection serves any of them).
    pub urls: Vec<String>,
    /// Total requests (`-n`). `None`: run until `duration`.
    pub requests: Option<u64>,
    /// Stop after this long (`-t`, `--duration`).
    pub duration: Option<Duration>,
    /// Connections open at once (`-c`).
    pub concurrency: usize,
    /// Event-loop threads; connections are spread over them.
    pub threads: usize,
    /// Reuse connections (`-k`); without it every request opens a connection, as ab does.
    pub keep_alive: bool,
    /// Speak HTTP/1.0 instead of HTTP/1.1.
    pub http10: bool,
    /// Requests in flight per connection (HTTP/1.1 pipelining); implies keep-alive when > 1.
    pub pipeline: usize,
    /// Open loop: requests per second over all connections, latency measured from the
    /// intended send time (coordinated omission corrected, wrk2's method).
    pub rate: Option<f64>,
    /// Request method; default GET, or POST/PUT when a body is given, HEAD with `head`.
    pub method: Option<String>,
    /// HEAD requests (`-i`).
    pub head: bool,
    /// Request body (`-p`/`-u`).
    pub body: Option<Vec<u8>>,
    /// Content-Type of the body (`-T`, default `text/plain`).
    pub content_type: Option<String>,
    /// Extra header lines `Name: value` (`-H`); replace the default of the same name.
    pub headers: Vec<String>,
    /// Cookies `name=value` (`-C`), joined into one Cookie header.
    pub cookies: Vec<String>,
    /// `user:password` for Basic auth (`-A`).
    pub basic_auth: Option<String>,
    /// `user:password` for proxy Basic auth (`-P`).
    pub proxy_auth: Option<String>,
    /// `host:port` of an HTTP proxy (`-X`): connect there, send absolute URIs.
    pub proxy: Option<String>,
    /// A request that sees no progress for this long fails (`-s`, default 30 s).
    pub timeout: Duration,
    /// Keep going on receive errors and timeouts instead of aborting (`-r`).
    pub keep_going: bool,
    /// Accept bodies of varying length (`-l`).
    pub variable_length: bool,
    /// Connect over this unix socket instead of TCP (the URL still gives Host and path).
    pub unix: Option<PathBuf>,
    /// Local addresses to bind before connecting, round robin over connections (`-B`,
    /// `--source-ips`).
    pub source_ips: Vec<IpAddr>,
    /// Keep one record per request for `-g` (the only option whose memory grows with `-n`).
    pub record_samples: bool,
    /// ab's `-v`: 2 prints the request and warnings about non-2xx responses.
    pub verbosity: u32,
    /// Open no connection before this moment (`--start-at`), so that load from several
    /// machines starts together; a moment already past starts at once.
    #[serde(default)]
    pub start_at: Option<SystemTime>,
    /// Append the body of every 2xx response to this file, one line each (`--save-bodies`):
    /// e.g. the ids `POST /messages` acknowledged. Whole lines per write, so the processes of
    /// `--processes` can share the file.
    #[serde(default)]
    pub save_bodies: Option<PathBuf>,
    /// ab's `-b`: the TCP send and receive buffer size of each connection, bytes; `None`:
    /// the OS default.
    #[serde(default)]
    pub window_size: Option<usize>,
    /// ab's `-B` given as a host name: resolved with the target, to its first address of the
    /// target's IP family, and bound before [`Plan::source_ips`].
    #[serde(default)]
    pub local_host: Option<String>,
}

impl Plan {
    /// A plan for `url` with ab's defaults: one connection, one request, no keep-alive.
    pub fn new(url: impl Into<String>) -> Plan {
        Plan {
            urls: vec![url.into()],
            requests: Some(1),
            duration: None,
            concurrency: 1,
            threads: 1,
            keep_alive: false,
            http10: false,
            pipeline: 1,
            rate: None,
            method: None,
            head: false,
            body: None,
            content_type: None,
            headers: Vec::new(),
            cookies: Vec::new(),
            basic_auth: None,
            proxy_auth: None,
            proxy: None,
            timeout: Duration::from_secs(30),
            keep_going: false,
            variable_length: false,
            unix: None,
            source_ips: Vec::new(),
            record_samples: false,
            verbosity: 0,
            start_at: None,
            save_bodies: None,
            window_size: None,
            local_host: None,
        }
    }

    /// Checks the plan's own consistency (the CLI checks flags before building it).
    pub fn validate(&self) -> Result<(), UsageError> {
        if self.urls.is_empty() {
            return Err(UsageError::new("a URL is required"));
        }
        if self.concurrency == 0 {
            return Err(UsageError::new("-c: concurrency must be at least 1"));
        }
        if self.requests == Some(0) {
            return Err(UsageError::new(
                "-n: the number of requests must be at least 1",
            ));
        }
        if self.requests.is_none() && self.duration.is_none() {
            return Err(UsageError::new("-n or -t/--duration is required"));
        }
        if let Some(n) = self.requests {
            if (self.concurrency as u64) > n {
                return Err(UsageError::new(
                    "-c: Cannot use concurrency level greater than total number of requests",
                ));
            }
        }
        if self.threads == 0 {
            return Err(UsageError::new("--threads: must be at least 1"));
        }
        if self.pipeline == 0 || self.pipeline > 1024 {
            return Err(UsageError::new("--pipeline: must be between 1 and 1024"));
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r >= 0.001) {
                return Err(UsageError::new(
                    "--rate: must be at least 0.001 requests per second",
                ));
            }
            if self.pipeline > 1 {
                return Err(UsageError::new(
                    "--rate: cannot be combined with --pipeline",
                ));
            }
        }
        if self.timeout.is_zero() {
            return Err(UsageError::new("-s: timeout must be positive"));
        }
        Ok(())
    }

    /// Whether connections are reused.
    pub fn reuses_connections(&self) -> bool {
        self.keep_alive || self.pipeline > 1
    }
}

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, UsageError> {
        let bad = |why: &str| UsageError::new(format!("invalid URL {s:?}: {why}"));
        // ab's usage line is `[http[s]://]hostname[:port]/path`: without a scheme, http.
        let rest = if let Some(r) = s.strip_prefix("http://") {
            r
        } else if s.starts_with("https://") {
            return Err(bad("https is not supported"));
        } else if s.contains("://") || !s.contains('/') {
            // A stray word is not taken for a host: without a scheme, a path is required, as
            // ab requires one.
            return Err(bad("expected http://host[:port]/path"));
        } else {
            s
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => match rest.find('?') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            },
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad("the path contains spaces or control characters"));
        }
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| bad("unclosed '['"))?;
            let host = &r[..end];
            let port = match &r[end + 1..] {
                "" => 80,
                p => p
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| bad("bad port"))?,
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("bad port"))?),
                None => (authority.to_string(), 80),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Url { host, port, path })
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Where connections go.
#[derive(Debug, Clone)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A plan resolved to an address and request bytes, ready for the engine.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub target: Target,
    pub url: Url,
    /// The complete request (head and body) for each URL, round robin.
    pub requests: Vec<Vec<u8>>,
    /// HEAD requests: responses carry no body whatever their headers say.
    pub head: bool,
    /// The local addresses to bind, round robin over connections: [`Plan::local_host`]
    /// resolved, then [`Plan::source_ips`].
    pub source_ips: Vec<IpAddr>,
}

impl Prepared {
    pub fn new(plan: &Plan) -> Result<Prepared, UsageError> {
        plan.validate()?;
        let urls = plan
            .urls
            .iter()
            .map(|u| Url::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        let first = urls[0].clone();
        if let Some(other) = urls
            .iter()
            .find(|u| u.host != first.host || u.port != first.port)
        {
            return Err(UsageError::new(format!(
                "all URLs must name the same host and port ({}:{} differs from {}:{})",
                other.host, other.port, first.host, first.port
            )));
        }
        let target = if let Some(p) = &plan.unix {
            Target::Unix(p.clone())
        } else {
            let (host, port) = match &plan.proxy {
                Some(p) => {
                    let (h, port) = p
                        .rsplit_once(':')
                        .ok_or_else(|| UsageError::new(format!("-X {p:?}: expected proxy:port")))?;
                    let port: u16 = port
                        .parse()
                        .map_err(|_| UsageError::new(format!("-X {p:?}: bad port")))?;
                    (
                        h.trim_start_matches('[').trim_end_matches(']').to_string(),
                        port,
                    )
                }
                None => (first.host.clone(), first.port),
            };
            let addr = (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| UsageError::new(format!("cannot resolve {host}: {e}")))?
                .next()
                .ok_or_else(|| UsageError::new(format!("cannot resolve {host}")))?;
            Target::Tcp(addr)
        };
        let mut source_ips = Vec::with_capacity(plan.source_ips.len() + 1);
        if let Some(host) = &plan.local_host {
            source_ips.push(resolve_local(host, &target)?);
        }
        source_ips.extend_from_slice(&plan.source_ips);
        if !source_ips.is_empty() {
            if let Target::Tcp(addr) = &target {
                if source_ips.iter().any(|ip| ip.is_ipv4() != addr.is_ipv4()) {
                    return Err(UsageError::new(
                        "-B/--source-ips: local addresses must be of the target's IP family",
                    ));
                }
            }
        }
        let requests = urls.iter().map(|u| build_request(plan, u)).collect();
        Ok(Prepared {
            target,
            url: first,
            requests,
            head: plan.head,
            source_ips,
        })
    }
}

/// `-B NAME`: the first address `NAME` resolves to of the target's IP family (ab binds the
/// resolver's first address, whatever its family, and fails to connect when they differ:
/// `-B localhost` gives `::1` before `127.0.0.1` on most systems).
fn resolve_local(host: &str, target: &Target) -> Result<IpAddr, UsageError> {
    let mut ips = (host, 0)
        .to_socket_addrs()
        .map_err(|e| UsageError::new(format!("-B {host}: cannot resolve: {e}")))?
        .map(|a| a.ip())
        .peekable();
    let first = ips
        .peek()
        .copied()
        .ok_or_else(|| UsageError::new(format!("-B {host}: cannot resolve")))?;
    match target {
        Target::Tcp(addr) => ips
            .find(|ip| ip.is_ipv4() == addr.is_ipv4())
            .ok_or_else(|| {
                UsageError::new(format!(
                    "-B {host}: no address of the target's IP family ({} only)",
                    first
                ))
            }),
        Target::Unix(_) => Ok(first),
    }
}

fn has_header(headers: &[String], name: &str) -> bool {
    headers.iter().any(|h| {
        h.split_once(':')
            .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
    })
}

/// The request bytes for one URL, built once: what ab sends, with HTTP/1.1 by default.
pub fn build_request(plan: &Plan, url: &Url) -> Vec<u8> {
    let method = match (&plan.method, plan.head, &plan.body) {
        (Some(m), _, _) => m.clone(),
        (None, true, _) => "HEAD".to_string(),
        (None, false, Some(_)) => "POST".to_string(),
        (None, false, None) => "GET".to_string(),
    };
    let target = if plan.proxy.is_some() {
        format!("http://{}{}", url.host_header(), url.path)
    } else {
        url.path.clone()
    };
    let version = if plan.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
    let mut r = format!("{method} {target} {version}\r\n");
    let mut push = |name: &str, value: &str| {
        if !has_header(&plan.headers, name) {
            r.push_str(name);
            r.push_str(": ");
            r.push_str(value);
            r.push_str("\r\n");
        }
    };
    push("Host", &url.host_header());
    push(
        "User-Agent",
        concat!("c10k-bench/", env!("CARGO_PKG_VERSION")),
    );
    push("Accept", "*/*");
    match (plan.reuses_connections(), plan.http10) {
        (true, true) => push("Connection", "Keep-Alive"),
        (false, false) => push("Connection", "close"),
        _ => {}
    }
    if !plan.cookies.is_empty() {
        push("Cookie", &plan.cookies.join("; "));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(a) = &plan.basic_auth {
        push("Authorization", &format!("Basic {}", b64.encode(a)));
    }
    if let Some(a) = &plan.proxy_auth {
        push("Proxy-Authorization", &format!("Basic {}", b64.encode(a)));
    }
    if let Some(body) = &plan.body {
        push("Content-Length", &body.len().to_string());
        push(
            "Content-Type",
            plan.content_type.as_deref().unwrap_or("text/plain"),
        );
    }
    for h in &plan.headers {
        r.push_str(h.trim_end_matches(['\r', '\n']));
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    if let Some(body) = &plan.body {
        bytes.extend_from_slice(body);
    }
    bytes
}

/// Parses `--source-ips`: `a-b` ranges of IPv4 addresses and comma lists of addresses.
pub fn parse_source_ips(s: &str) -> Option<Vec<std::net::IpAddr>> {
    use std::net::{IpAddr, Ipv4Addr};
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a.trim().parse().ok()?;
            let b: Ipv4Addr = b.trim().parse().ok()?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 65_535 {
                return None;
            }
            out.extend((a..=b).map(|x| IpAddr::V4(Ipv4Addr::from(x))));
        } else {
            out.push(part.parse().ok()?);
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_host_name_resolves_to_the_targets_family() {
        let v4 = Target::Tcp("127.0.0.1:80".parse().unwrap());
        let v6 = Target::Tcp("[::1]:80".parse().unwrap());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(resolve_local("127.0.0.2", &v4).unwrap(), ip("127.0.0.2"));
        let err = resolve_local("127.0.0.2", &v6).unwrap_err().to_string();
        assert!(
            err.contains("-B 127.0.0.2") && err.contains("IP family"),
            "{err}"
        );
        // `localhost` gives 127.0.0.1, often `::1` too, in either order: never the other family.
        assert_eq!(resolve_local("localhost", &v4).unwrap(), ip("127.0.0.1"));
        if let Ok(got) = resolve_local("localhost", &v6) {
            assert_eq!(got, ip("::1"));
        }
    }

    #[test]
    fn parses_urls() {
        let u = Url::parse("http://127.0.0.1:3000/?delay=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 3000, "/?delay=1")
        );
        let u = Url::parse("http://example.com").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = Url::parse("http://[::1]:81/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 81));
        assert_eq!(Url::parse("http://h?q=1").unwrap().path, "/?q=1");
        assert!(Url::parse("https://h/").is_err());
        assert!(Url::parse("ftp://h/").is_err());
        // ab's `[http[s]://]hostname[:port]/path`: the scheme may be left out (refused before
        // with "expected http://host[:port]/path"), the path may not (a stray word is no host).
        let u = Url::parse("127.0.0.1:8000/x?y=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8000, "/x?y=1")
        );
        let u = Url::parse("localhost/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("localhost", 80, "/")
        );
        assert!(Url::parse("[::1]:81/").is_ok());
        assert!(Url::parse("extra").is_err());
        assert!(Url::parse("/x").is_err());
        assert!(Url::parse("http://h:99999/").is_err());
        assert!(Url::parse("http://:80/").is_err());
    }

    #[test]
    fn builds_ab_like_requests() {
        let mut p = Plan::new("http://h:8080/p");
        let url = Url::parse("http://h:8080/p").unwrap();
        let r = String::from_utf8(build_request(&p, &url)).unwrap();
        assert!(r.starts_with("GET /p HTTP/1.1\r\nHost: h:8080\r\n"), "{r}");
        assert!(r.contains("Connection: close\r\n"));
        p.keep_alive = true;
        p.http10 = true;
        p.body = Some(b"abc".to_vec());
        p.headers = vec!["Host: other".into(), "X-A: 1".into()];
        p.basic_auth = Some("u:p".into());
        p.cookies = vec!["a=1".into(), "b=2".into()];
        let r = String::from_utf8(build_request(&p, &url)).unwrap();
        assert!(r.starts_with("POST /p HTTP/1.0\r\n"), "{r}");
        assert!(!r.contains("Host: h:8080"));
        assert!(r.contains("Host: other\r\n"));
        assert!(r.contains("Connection: Keep-Alive\r\n"));
        assert!(r.contains("Authorization: Basic dTpw\r\n"));
        assert!(r.contains("Cookie: a=1; b=2\r\n"));
        assert!(r.contains("Content-Length: 3\r\nContent-Type: text/plain\r\n"));
        assert!(r.ends_with("\r\n\r\nabc"));
    }

    #[test]
    fn validates_like_ab() {
        let mut p = Plan::new("http://h/");
        p.requests = Some(5);
        p.concurrency = 10;
        assert!(p.validate().unwrap_err().to_string().contains("-c"));
        p.requests = None;
        assert!(p.validate().is_err());
        p.duration = Some(Duration::from_secs(1));
        assert!(p.validate().is_ok());
    }
}
