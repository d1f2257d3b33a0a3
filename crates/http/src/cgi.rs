//! The CGI variables a server derives from a [`Request`] for a WSGI `environ` (PEP 3333), as
//! plain Rust values: the one place their rules live, for the environ a hosted Python app gets
//! (`c10k-wsgi`, which turns them into Python strings, with caches of its own) and for the access
//! log's `%({name}e)s` atom (`c10k-serve`), which must print what the app was given.
//!
//! Values are bytes, as the environ's latin-1 strings hold them (one byte, one code point;
//! [`latin1`] makes text of them). Decisions where PEP 3333 leaves room (gunicorn's, unless said):
//! a header name containing `_` is dropped, so a client cannot spoof `X-Forwarded-For` as
//! `X_Forwarded_For` (the names a trusted front may send, `--forwarder-headers`, come as
//! [`Request::cgi_vars`]); repeated header fields are joined with `, ` (`Cookie` with `; `, RFC 6265;
//! gunicorn joins with `,`); `Content-Type` is `CONTENT_TYPE` and never an `HTTP_` key;
//! `CONTENT_LENGTH` is the length of the body the server received (also for chunked requests,
//! whose body is complete), present when there is a body or a `Content-Length` header;
//! `PATH_INFO` is percent-decoded, with the mount prefix (`--root-path`, the environ's
//! `SCRIPT_NAME`) stripped; on a unix socket `REMOTE_ADDR` is empty, `REMOTE_PORT` absent, and
//! `SERVER_NAME`/`SERVER_PORT` come from `Host` (the scheme's default port without one).
//!
//! Behind nginx's `uwsgi_pass`, the CGI vars nginx sent ([`Request::cgi_vars`]) are set last and
//! win over what the server derived, except names starting with `wsgi.`.

use std::borrow::Cow;

use crate::headers::Headers;
use crate::request::{Request, Scheme};

/// `SERVER_SOFTWARE`.
pub const SERVER_SOFTWARE: &str = concat!("c10k/", env!("CARGO_PKG_VERSION"));

/// `SCRIPT_NAME` of an application mounted at `root_path` (`--root-path /api/`): `/api`.
pub fn script_name(root_path: &str) -> &str {
    root_path.trim_end_matches('/')
}

/// `PATH_INFO`: `path` (still percent-encoded, as [`Request::path`]) decoded, with `script_name`
/// stripped when the path is under it (`/api/x` → `/x`; `/apix` keeps its prefix).
pub fn path_info<'a>(path: &'a str, script_name: &str) -> Cow<'a, [u8]> {
    match strip_root(percent_decode(path.as_bytes()), script_name.as_bytes()) {
        Ok(below) | Err(below) => below,
    }
}

/// `PATH_INFO` of `path` (still percent-encoded) below mount point `script_name` (as bytes: a
/// front's `SCRIPT_NAME` header), or `None` when the path is not under it (see [`under_root`]).
pub fn path_below<'a>(path: &'a str, script_name: &[u8]) -> Option<Cow<'a, [u8]>> {
    strip_root(percent_decode(path.as_bytes()), script_name).ok()
}

/// The environ key under which the server passes on a trusted front's `SCRIPT_NAME` header (see
/// [`front_mount`]).
const FRONT_SCRIPT_NAME: &[u8] = b"HTTP_SCRIPT_NAME";

/// Where a trusted front mounted the app for this request (see [`front_mount`]).
#[derive(Debug, PartialEq, Eq)]
pub struct FrontMount<'a> {
    /// The front's `SCRIPT_NAME` without its trailing `/`.
    pub script_name: &'a [u8],
    /// The decoded path below it.
    pub path_info: Cow<'a, [u8]>,
}

/// The request path is not under the front's `SCRIPT_NAME` (see [`front_mount`]).
#[derive(Debug, PartialEq, Eq)]
pub struct NotUnderFront;

/// A trusted front's `SCRIPT_NAME` header (nginx's `proxy_set_header SCRIPT_NAME /api`), which the
/// server passed on as `HTTP_SCRIPT_NAME` among [`Request::cgi_vars`] (it came from a
/// `--forwarded-allow-ips` peer and `--forwarder-headers` lists it), as gunicorn reads it: the
/// app's `SCRIPT_NAME` for this request (its last such field, without a trailing `/`), over
/// `--root-path`, and `PATH_INFO` the path below it. `None` without one (and at once when the
/// request has no CGI vars, as almost every request). `Err` when the path is not under it:
/// gunicorn's `ConfigurationProblem`, a 500 from a WSGI app whose front is set up for another
/// mount point; an app without a mount point (c10k's built-in one) ignores it.
pub fn front_mount(req: &Request) -> Option<Result<FrontMount<'_>, NotUnderFront>> {
    if req.cgi_vars.is_empty()
        || !req
            .cgi_vars
            .iter()
            .any(|(k, _)| k[..] == *FRONT_SCRIPT_NAME)
    {
        return None;
    }
    // The fields themselves: `HTTP_SCRIPT_NAME` joins repeated ones, gunicorn takes the last.
    let (_, script) = req
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("script_name"))
        .last()?;
    let end = script.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    let script_name = &script[..end];
    Some(
        path_below(&req.path, script_name)
            .map(|path_info| FrontMount {
                script_name,
                path_info,
            })
            .ok_or(NotUnderFront),
    )
}

/// `decoded` without its leading `root` segments; `Err(decoded)` unchanged when it is not
/// under `root` (an empty root holds every path).
fn strip_root<'a>(decoded: Cow<'a, [u8]>, root: &[u8]) -> Result<Cow<'a, [u8]>, Cow<'a, [u8]>> {
    if root.is_empty() {
        return Ok(decoded);
    }
    if !segment_prefix(&decoded, root) {
        return Err(decoded);
    }
    Ok(match decoded {
        Cow::Borrowed(b) => Cow::Borrowed(&b[root.len()..]),
        Cow::Owned(mut v) => {
            v.drain(..root.len());
            Cow::Owned(v)
        }
    })
}

/// Whether `path` (still percent-encoded, as [`Request::path`]) is, decoded, the mount point
/// `script_name` or below it: `/app`, `/app/` and `/app/x` are under `/app`, `/application` is
/// not (gunicorn compares bare prefixes and serves it with `PATH_INFO` `lication`; uWSGI's
/// `--manage-script-name` wants a whole segment, as here). Every path is under an empty one.
pub fn under_root(path: &str, script_name: &str) -> bool {
    let root = script_name.as_bytes();
    root.is_empty() || segment_prefix(&percent_decode(path.as_bytes()), root)
}

/// `root` is `path` or a leading run of its segments.
fn segment_prefix(path: &[u8], root: &[u8]) -> bool {
    path.starts_with(root) && matches!(path.get(root.len()), None | Some(b'/'))
}

/// `%XX` sequences decoded; a `%` not followed by two hex digits is kept as it is.
pub fn percent_decode(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// `SERVER_NAME` and `SERVER_PORT` of a request that came in on a unix socket (no local
/// address): the `Host` header names the server, as a proxy in front saw it; `localhost`
/// without one, and without a port in it the scheme's default (as gunicorn), so that behind a
/// proxy that says `X-Forwarded-Proto: https` Django's `get_host()` does not build
/// `https://name:80`.
pub fn server_from_host(host: Option<&str>, scheme: Scheme) -> (&str, &str) {
    let (name, port) = split_host(host.unwrap_or(""));
    let name = if name.is_empty() { "localhost" } else { name };
    let port = port.unwrap_or(match scheme {
        Scheme::Http => "80",
        Scheme::Https => "443",
    });
    (name, port)
}

/// `host:port` → (`host`, `Some(port)`); `[::1]:80` → (`::1`, `Some(80)`).
pub fn split_host(host: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (host, None),
    }
}

/// `CONTENT_LENGTH`: the length of the body received, when there is one or the client sent a
/// `Content-Length` (`0` for an empty body announced as such); absent otherwise.
pub fn content_length(req: &Request) -> Option<u64> {
    let announced = req.headers.get("content-length").is_some();
    (!req.body.is_empty() || announced).then(|| req.body.len())
}

/// Where a request header field goes in the environ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderVar {
    /// Nowhere: the name has a `_` (see the module documentation).
    Dropped,
    /// Into `CONTENT_LENGTH`, from the body received ([`content_length`]).
    ContentLength,
    /// Into `CONTENT_TYPE`.
    ContentType,
    /// Into its [`http_key`].
    Http,
}

/// Where header field `name` goes in the environ.
pub fn header_var(name: &str) -> HeaderVar {
    if name.contains('_') {
        HeaderVar::Dropped
    } else if name.eq_ignore_ascii_case("content-length") {
        HeaderVar::ContentLength
    } else if name.eq_ignore_ascii_case("content-type") {
        HeaderVar::ContentType
    } else {
        HeaderVar::Http
    }
}

/// The environ key of header `name` (for a [`HeaderVar::Http`] name): `X-Forwarded-For` →
/// `HTTP_X_FORWARDED_FOR`.
pub fn http_key(name: &str) -> String {
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    key.extend(name.chars().map(|c| match c {
        '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    key
}

/// The header name (lower-case) behind environ key `key` (any case: `http_x_forwarded_for` →
/// `x-forwarded-for`), the inverse of [`http_key`] (a header's `_` is dropped, so each `_` of a
/// key was a `-`); `None` for a key no header is put under (`HTTP_CONTENT_TYPE`, not `HTTP_`).
pub fn header_of_key(key: &str) -> Option<String> {
    let prefix = key.get(..5)?;
    if !prefix.eq_ignore_ascii_case("http_") || key.len() == 5 {
        return None;
    }
    let name: String = key[5..]
        .chars()
        .map(|c| match c {
            '_' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    (header_var(&name) == HeaderVar::Http).then_some(name)
}

/// The value of the fields named `name` as the environ holds it: one field's value as sent,
/// several joined with `, ` (`Cookie` with `; `); `None` without a field of that name.
pub fn joined<'a>(headers: &'a Headers, name: &str) -> Option<Cow<'a, [u8]>> {
    let mut values = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v);
    let first = values.next()?;
    let mut rest = values.peekable();
    if rest.peek().is_none() {
        return Some(Cow::Borrowed(first));
    }
    let sep: &[u8] = if name.eq_ignore_ascii_case("cookie") {
        b"; "
    } else {
        b", "
    };
    let mut out = first.to_vec();
    for v in rest {
        out.extend_from_slice(sep);
        out.extend_from_slice(v);
    }
    Some(Cow::Owned(out))
}

/// Environ bytes as text, as the environ's `str` holds them: each byte one code point
/// (latin-1).
pub fn latin1(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) if b.is_ascii() => Cow::Borrowed(s),
        _ => Cow::Owned(b.iter().map(|&c| char::from(c)).collect()),
    }
}

/// One environ variable, named once (case-insensitively, as gunicorn's access log looks up
/// `%({name}e)s`) and then read from each request: the value the server puts under that key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Var {
    /// The name, lower-case.
    key: Box<str>,
    kind: Kind,
}

/// Where a [`Var`]'s value holds the query string ([`Var::query_in`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryIn {
    /// The value is the query string (`QUERY_STRING`).
    Value,
    /// The value is a request target, the query after its `?` (`RAW_URI`, `REQUEST_URI`).
    Target,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    RequestMethod,
    ScriptName,
    PathInfo,
    QueryString,
    RawUri,
    RequestUri,
    ServerProtocol,
    ServerName,
    ServerPort,
    ServerSoftware,
    RemoteAddr,
    RemotePort,
    ContentType,
    ContentLength,
    UrlScheme,
    /// `HTTP_*`: the fields of this header name (lower-case).
    Header(Box<str>),
    /// Nothing the server derives: only a front's CGI var can set it (`wsgi.input` and the
    /// other Python objects are not text a server can give).
    Other,
}

impl Var {
    /// The variable named `key` (`PATH_INFO`, `path_info`, `HTTP_USER_AGENT`, `wsgi.url_scheme`).
    pub fn new(key: &str) -> Var {
        let key = key.to_ascii_lowercase();
        let kind = match key.as_str() {
            "request_method" => Kind::RequestMethod,
            "script_name" => Kind::ScriptName,
            "path_info" => Kind::PathInfo,
            "query_string" => Kind::QueryString,
            "raw_uri" => Kind::RawUri,
            "request_uri" => Kind::RequestUri,
            "server_protocol" => Kind::ServerProtocol,
            "server_name" => Kind::ServerName,
            "server_port" => Kind::ServerPort,
            "server_software" => Kind::ServerSoftware,
            "remote_addr" => Kind::RemoteAddr,
            "remote_port" => Kind::RemotePort,
            "content_type" => Kind::ContentType,
            "content_length" => Kind::ContentLength,
            "wsgi.url_scheme" => Kind::UrlScheme,
            k => match header_of_key(k) {
                Some(name) => Kind::Header(name.into()),
                None => Kind::Other,
            },
        };
        Var {
            key: key.into(),
            kind,
        }
    }

    /// Where the value holds the request's query string, which a log may want to mask.
    pub fn query_in(&self) -> Option<QueryIn> {
        match self.kind {
            Kind::QueryString => Some(QueryIn::Value),
            Kind::RawUri | Kind::RequestUri => Some(QueryIn::Target),
            _ => None,
        }
    }

    /// The value of this variable in the environ of `req` for an application whose
    /// `SCRIPT_NAME` is `script_name`; `None` where that environ has no such key.
    pub fn value<'a>(&self, req: &'a Request, script_name: &str) -> Option<Cow<'a, [u8]>> {
        if !self.key.starts_with("wsgi.") {
            // A front's own word wins (set last in the environ, so its last one).
            let front = req
                .cgi_vars
                .iter()
                .rev()
                .find(|(n, _)| n.eq_ignore_ascii_case(self.key.as_bytes()));
            if let Some((_, v)) = front {
                return Some(Cow::Borrowed(v));
            }
        }
        let text = |s: &'a str| Some(Cow::Borrowed(s.as_bytes()));
        let owned = |s: String| Some(Cow::Owned(s.into_bytes()));
        match &self.kind {
            Kind::RequestMethod => text(req.method.as_str()),
            Kind::ScriptName => match front_mount(req) {
                Some(Ok(m)) => Some(Cow::Borrowed(m.script_name)),
                _ => Some(Cow::Owned(script_name.as_bytes().to_vec())),
            },
            Kind::PathInfo => match front_mount(req) {
                Some(Ok(m)) => Some(m.path_info),
                _ => Some(path_info(&req.path, script_name)),
            },
            Kind::QueryString => text(req.query.as_deref().unwrap_or("")),
            Kind::RawUri | Kind::RequestUri => text(&req.target),
            Kind::ServerProtocol => text(req.version.as_str()),
            Kind::ServerName => match req.local {
                Some(local) => owned(local.ip().to_string()),
                None => text(server_from_host(req.host(), req.scheme).0),
            },
            Kind::ServerPort => match req.local {
                Some(local) => owned(local.port().to_string()),
                None => text(server_from_host(req.host(), req.scheme).1),
            },
            Kind::ServerSoftware => text(SERVER_SOFTWARE),
            Kind::RemoteAddr => match req.peer {
                Some(peer) => owned(peer.ip().to_string()),
                None => text(""),
            },
            Kind::RemotePort => req.peer.and_then(|p| owned(p.port().to_string())),
            Kind::ContentType => joined(&req.headers, "content-type"),
            Kind::ContentLength => content_length(req).and_then(|n| owned(n.to_string())),
            Kind::UrlScheme => text(req.scheme.as_str()),
            Kind::Header(name) => joined(&req.headers, name),
            Kind::Other => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::Method;

    #[test]
    fn root_path_holds_whole_segments_only() {
        for path in ["/app", "/app/", "/app/x", "/app/x/y", "/%61pp/x"] {
            assert!(under_root(path, "/app"), "{path}");
        }
        for path in ["/application", "/ap", "/", "/other", "/x/app", "*"] {
            assert!(!under_root(path, "/app"), "{path}");
        }
        assert!(under_root("*", ""));
    }

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(&*percent_decode(b"/a%20b"), b"/a b");
        assert_eq!(&*percent_decode(b"/%e9t%C3%A9"), b"/\xe9t\xc3\xa9");
        assert_eq!(&*percent_decode(b"/100%"), b"/100%");
        assert_eq!(&*percent_decode(b"/%zz%4"), b"/%zz%4");
        assert_eq!(&*percent_decode(b"%41"), b"A");
    }

    #[test]
    fn path_info_loses_the_mount_prefix() {
        assert_eq!(&*path_info("/api/a%20b", "/api"), b"/a b");
        assert_eq!(&*path_info("/api/x", "/api"), b"/x");
        assert_eq!(&*path_info("/api", "/api"), b"");
        assert_eq!(&*path_info("/apix", "/api"), b"/apix");
        assert_eq!(&*path_info("/x", ""), b"/x");
        assert_eq!(script_name("/api/"), "/api");
    }

    #[test]
    fn host_splitting() {
        assert_eq!(
            split_host("example.com:8080"),
            ("example.com", Some("8080"))
        );
        assert_eq!(split_host("example.com"), ("example.com", None));
        assert_eq!(split_host("[::1]:80"), ("::1", Some("80")));
        assert_eq!(split_host("[::1]"), ("::1", None));
        assert_eq!(server_from_host(None, Scheme::Https), ("localhost", "443"));
        assert_eq!(server_from_host(Some("h:81"), Scheme::Https), ("h", "81"));
        assert_eq!(server_from_host(Some("h"), Scheme::Http), ("h", "80"));
    }

    #[test]
    fn header_keys_and_back() {
        assert_eq!(http_key("X-Forwarded-For"), "HTTP_X_FORWARDED_FOR");
        assert_eq!(
            header_of_key("http_x_forwarded_for").as_deref(),
            Some("x-forwarded-for")
        );
        assert_eq!(header_of_key("HTTP_COOKIE").as_deref(), Some("cookie"));
        for key in [
            "HTTP_CONTENT_TYPE",
            "http_content_length",
            "HTTP_",
            "PATH_INFO",
            "h",
        ] {
            assert_eq!(header_of_key(key), None, "{key}");
        }
        assert_eq!(header_var("X_Forwarded_For"), HeaderVar::Dropped);
        assert_eq!(header_var("Content-Type"), HeaderVar::ContentType);
    }

    #[test]
    fn repeated_fields_are_joined() {
        let h: Headers = [
            ("Cookie", "a=1"),
            ("X-A", "1"),
            ("cookie", "b=2"),
            ("x-a", "2"),
        ]
        .into_iter()
        .collect();
        assert_eq!(joined(&h, "cookie").as_deref(), Some(&b"a=1; b=2"[..]));
        assert_eq!(joined(&h, "X-A").as_deref(), Some(&b"1, 2"[..]));
        assert_eq!(joined(&h, "x-b"), None);
    }

    #[test]
    fn vars_by_name_in_any_case() {
        let mut req = Request::new(Method::Post, "/api/caf%C3%A9?x=1").with_body("text/x", "hi");
        req.headers.append("X_Forwarded_For", "spoofed");
        req.headers.append("Host", "example.com");
        req.peer = "192.0.2.7:5555".parse().ok();
        req.local = "127.0.0.1:8000".parse().ok();
        fn value(req: &Request, key: &str) -> Option<String> {
            Var::new(key)
                .value(req, "/api")
                .map(|v| latin1(&v).into_owned())
        }
        let v = |key: &str| value(&req, key);
        assert_eq!(v("request_method").as_deref(), Some("POST"));
        assert_eq!(v("PATH_INFO").as_deref(), Some("/caf\u{c3}\u{a9}"));
        assert_eq!(v("script_name").as_deref(), Some("/api"));
        assert_eq!(v("Query_String").as_deref(), Some("x=1"));
        assert_eq!(v("raw_uri").as_deref(), Some("/api/caf%C3%A9?x=1"));
        assert_eq!(v("server_protocol").as_deref(), Some("HTTP/1.1"));
        assert_eq!(v("server_name").as_deref(), Some("127.0.0.1"));
        assert_eq!(v("server_port").as_deref(), Some("8000"));
        assert_eq!(v("remote_addr").as_deref(), Some("192.0.2.7"));
        assert_eq!(v("remote_port").as_deref(), Some("5555"));
        assert_eq!(v("content_type").as_deref(), Some("text/x"));
        assert_eq!(v("content_length").as_deref(), Some("2"));
        assert_eq!(v("http_host").as_deref(), Some("example.com"));
        assert_eq!(v("wsgi.url_scheme").as_deref(), Some("http"));
        assert_eq!(v("server_software").as_deref(), Some(SERVER_SOFTWARE));
        for key in [
            "http_x_forwarded_for",
            "http_content_type",
            "HOME",
            "wsgi.input",
        ] {
            assert_eq!(v(key), None, "{key}");
        }
        assert_eq!(Var::new("RAW_URI").query_in(), Some(QueryIn::Target));
        assert_eq!(Var::new("query_string").query_in(), Some(QueryIn::Value));
        assert_eq!(Var::new("path_info").query_in(), None);

        // A unix socket, behind a front that sent its own vars.
        let mut req = req;
        req.peer = None;
        req.local = None;
        req.scheme = Scheme::Https;
        req.cgi_vars.push(("SCRIPT_NAME".into(), "/front".into()));
        req.cgi_vars
            .push(("wsgi.url_scheme".into(), "gopher".into()));
        let v = |key: &str| value(&req, key);
        assert_eq!(v("remote_addr").as_deref(), Some(""));
        assert_eq!(v("remote_port"), None);
        assert_eq!(v("server_name").as_deref(), Some("example.com"));
        assert_eq!(v("server_port").as_deref(), Some("443"));
        assert_eq!(v("SCRIPT_NAME").as_deref(), Some("/front"));
        assert_eq!(v("wsgi.url_scheme").as_deref(), Some("https"));
    }

    #[test]
    fn a_trusted_fronts_script_name_mounts_the_app() {
        // As the server hands it over: the field, and HTTP_SCRIPT_NAME once it trusted it.
        let req = |target: &str, fields: &[&str], trusted: bool| {
            let mut r = Request::new(Method::Get, target);
            for f in fields {
                r.headers.append("Script_Name", f.to_string());
            }
            if trusted {
                let joined = fields.join(", ");
                r.cgi_vars.push((FRONT_SCRIPT_NAME.into(), joined.into()));
            }
            r
        };
        let mount = |script_name: &'static str, path_info: &'static str| {
            Some(Ok(FrontMount {
                script_name: script_name.as_bytes(),
                path_info: Cow::Borrowed(path_info.as_bytes()),
            }))
        };
        assert_eq!(
            front_mount(&req("/api/x", &["/api/"], true)),
            mount("/api", "/x")
        );
        assert_eq!(
            front_mount(&req("/api", &["/api"], true)),
            mount("/api", "")
        );
        assert_eq!(
            front_mount(&req("/api/a%20b", &["/api"], true)).map(|m| m.map(|m| m.path_info)),
            Some(Ok(Cow::Owned(b"/a b".to_vec())))
        );
        // The last field counts, as in gunicorn.
        assert_eq!(
            front_mount(&req("/b/x", &["/a", "/b"], true)),
            mount("/b", "/x")
        );
        for outside in ["/other", "/apix"] {
            assert_eq!(
                front_mount(&req(outside, &["/api"], true)),
                Some(Err(NotUnderFront))
            );
        }
        // The field alone (an untrusted peer, or not listed) is no mount point.
        assert_eq!(front_mount(&req("/other", &["/api"], false)), None);
        assert_eq!(front_mount(&req("/", &[], false)), None);
        // What the access log prints is what the app gets.
        let r = req("/api/x", &["/api"], true);
        let v = |key: &str| Var::new(key).value(&r, "/root").map(|v| v.into_owned());
        assert_eq!(v("SCRIPT_NAME").as_deref(), Some(&b"/api"[..]));
        assert_eq!(v("PATH_INFO").as_deref(), Some(&b"/x"[..]));
    }

    #[test]
    fn latin1_is_one_byte_one_char() {
        assert_eq!(latin1(b"abc"), "abc");
        assert_eq!(latin1(b"caf\xe9"), "caf\u{e9}");
    }
}
