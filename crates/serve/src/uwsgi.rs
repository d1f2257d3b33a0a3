//! A sans-I/O codec for nginx's binary uwsgi protocol (`uwsgi_pass`), beside [`crate::proto`].
//!
//! A request packet is a 4-byte header — `modifier1`, the size of the vars block as a u16
//! little-endian, `modifier2` — then the vars block (key/value pairs, each length a u16 LE), then
//! the body, whose length is the `CONTENT_LENGTH` var. [`Decoder`] turns buffered bytes into the
//! same [`c10k_http::Request`] the HTTP decoder produces, so an application cannot tell which
//! protocol nginx spoke. [`encode_head`] writes the answer the way uWSGI does: an HTTP/1.1 status
//! line, the headers and the body, never chunked (nginx does not de-chunk a uwsgi upstream).
//!
//! Design choices where the protocol is loose (checked against uWSGI's `core/protocol.c` and
//! nginx's `ngx_http_uwsgi_module.c`):
//!
//! - One request per connection: nginx never keeps a uwsgi upstream connection alive, so the
//!   response ends when the connection closes, which lets a stream of unknown length go out
//!   close-delimited.
//! - The vars block may use the whole u16 range (65,535 bytes, nginx's own limit: it refuses to
//!   build a bigger packet). uWSGI's default `buffer-size` of 4,096 is the cause of the well-known
//!   "invalid request block size" 502s behind nginx with large cookies; we accept what nginx sends.
//! - A packet we cannot read (bad modifier1, a var running past the block, an empty key, no
//!   `REQUEST_METHOD`) is [`UwsgiError::Malformed`]: the driver closes without an answer (what
//!   uWSGI does; nginx answers its client 502). A readable request we refuse is answered with the
//!   status and reason the HTTP listener gives, then closed: a body over `--limit-request-body`
//!   (413), more header fields than `--limit-request-fields` (431), a header name that is not a
//!   token or a value with a line break (400; nginx passes such names on only with
//!   `ignore_invalid_headers off`). Closed unanswered, those were a 502 that blamed the server.
//! - The body is taken as it arrives: past `--body-buffer-size` into an unlinked temporary file,
//!   as over HTTP, so a large upload costs disk rather than the worker's memory. The app still
//!   runs once the whole body is in (uWSGI streams it into `wsgi.input` as the app reads); behind
//!   nginx's default `uwsgi_request_buffering on`, nginx has it all before it connects anyway.
//! - A CGI var sent twice: the last one wins, as in uWSGI (a config with `include uwsgi_params;`
//!   followed by its own `uwsgi_param HTTPS on;` sends the key twice), `CONTENT_LENGTH` too:
//!   nginx sends the body the last one describes (`uwsgi_pass_request_body off; uwsgi_param
//!   CONTENT_LENGTH "";` sends none), and one request per connection leaves no second request
//!   for a wrong length to smuggle. `HTTP_*` vars sent twice are kept in order as repeated header
//!   fields (a client's repeated header), but for `HTTP_HOST`, whose last one wins: Host is one
//!   field, and a second one comes from the config (`uwsgi_param HTTP_HOST` in Debian's
//!   `uwsgi_params` and in the site's own lines).
//! - Paths: `PATH_INFO` (nginx's `$document_uri`, decoded and after rewrites) is what uWSGI and
//!   WSGI route on, so the request's `path` is `PATH_INFO` percent-encoded again; the `target` is
//!   `REQUEST_URI` as the client sent it. Without `PATH_INFO`, the path is `REQUEST_URI`'s.
//!   Under modifier1 30, `SCRIPT_NAME` is cut off the front of `PATH_INFO` when it is a whole
//!   leading segment of it (uWSGI cuts its length blindly; `/application` under `/app`, or a
//!   path outside the mount point, is left whole rather than mangled).
//! - A chunked request body reaches us de-chunked by nginx, with `CONTENT_LENGTH`; the client's
//!   `Transfer-Encoding` (nginx passes it on as `HTTP_TRANSFER_ENCODING`) is dropped, so an app
//!   sees the environ it gets behind nginx's `proxy_pass` (`CONTENT_LENGTH`, no
//!   `HTTP_TRANSFER_ENCODING`). uWSGI passes it, and Flask behind uWSGI reads an empty body.
//! - The scheme: `UWSGI_SCHEME` (or `wsgi.url_scheme`), then the `X-Forwarded-Proto`/`-Protocol`/
//!   `-Ssl` headers nginx passes on from a TLS load balancer, when nginx is in
//!   `--forwarded-allow-ips` as over HTTP (uWSGI believes them from anyone; without them an app
//!   moved from uWSGI saw http and redirected to https forever), then `HTTPS`, then
//!   `REQUEST_SCHEME`. Two of those headers that disagree are a 400, as over HTTP.
//! - Every var that is not a header and not carried by the request's own fields (`SCRIPT_NAME`,
//!   `DOCUMENT_ROOT`, a custom `uwsgi_param`, ...) goes to `Request::cgi_vars` as sent, so a
//!   hosted WSGI app sees it in `environ` as under uWSGI.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use c10k_http::{is_tchar, Headers, Method, Request, RequestBody, Response, Scheme, Version};

use crate::allow::AllowFrom;
use crate::proto::{body_framing, end_head, BodySink};
pub use crate::proto::{BodyFraming, ConnInfo};

/// modifier1 of a plain WSGI/HTTP request (what `uwsgi_pass` sends by default).
pub const MODIFIER_WSGI: u8 = 0;
/// modifier1 30: as 0, but `PATH_INFO` still starts with `SCRIPT_NAME`, which is stripped.
pub const MODIFIER_STRIP_SCRIPT_NAME: u8 = 30;
/// The largest vars block the u16 size field can describe (nginx refuses to build a bigger one).
pub const MAX_VARS_BLOCK: usize = u16::MAX as usize;

/// Limits on one uwsgi request.
#[derive(Clone, Debug)]
pub struct UwsgiLimits {
    /// Largest vars block accepted; at most [`MAX_VARS_BLOCK`].
    pub max_vars_block: usize,
    /// Most key/value pairs in the vars block.
    pub max_vars: usize,
    /// Most header fields (`HTTP_*` vars, `CONTENT_TYPE`, `CONTENT_LENGTH`) → 431, as over HTTP
    /// (`--limit-request-fields`).
    pub max_headers: usize,
    /// Largest body (`CONTENT_LENGTH`) → 413.
    pub max_body: u64,
    /// Largest body kept in memory; a bigger one is spooled to an unlinked temporary file as it
    /// arrives, as over HTTP (`--body-buffer-size`).
    pub body_buffer: usize,
    /// Peers (nginx) whose passed-on `X-Forwarded-Proto`/`-Protocol`/`-Ssl` set the scheme, as
    /// over HTTP (`--forwarded-allow-ips`; a unix-socket peer always).
    pub forwarded_allow: Arc<[AllowFrom]>,
}

impl Default for UwsgiLimits {
    fn default() -> UwsgiLimits {
        UwsgiLimits::from_http(&crate::proto::Limits::default())
    }
}

impl UwsgiLimits {
    /// The uwsgi limits that match the HTTP listener's: the same body limit, and room for as
    /// many header vars as `--limit-request-fields` allows plus the CGI vars nginx adds
    /// (`uwsgi_params` has 15, custom `uwsgi_param` lines add more).
    pub fn from_http(l: &crate::proto::Limits) -> UwsgiLimits {
        UwsgiLimits {
            max_vars_block: MAX_VARS_BLOCK,
            max_vars: l.max_headers + 64,
            max_headers: l.max_headers,
            max_body: l.max_body,
            body_buffer: l.body_buffer,
            forwarded_allow: l.forwarded_allow.clone(),
        }
    }
}

/// Why a uwsgi request was not served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UwsgiError {
    /// Not a uwsgi request we can read: close the connection without an answer.
    #[error("malformed uwsgi packet: {0}")]
    Malformed(Cow<'static, str>),
    /// A readable request we refuse: answer with this status and reason, then close.
    #[error("{status} {reason}")]
    Refused {
        status: u16,
        reason: Cow<'static, str>,
    },
}

impl UwsgiError {
    fn malformed(reason: impl Into<Cow<'static, str>>) -> UwsgiError {
        UwsgiError::Malformed(reason.into())
    }

    /// The answer to send, if any.
    pub fn response(&self) -> Option<Response> {
        match self {
            UwsgiError::Malformed(_) => None,
            UwsgiError::Refused { status, reason } => Some(Response::error(*status, reason)),
        }
    }
}

#[derive(Debug)]
enum State {
    /// Waiting for the whole packet head: the 4-byte header and the vars block. Nothing is
    /// consumed until it is all there, so "idle" means what it means for HTTP: no request head
    /// yet (the connection machine times the head as a whole).
    Head,
    /// Head read; `left` body bytes still to come, the rest taken into `sink` (memory up to
    /// the body buffer, then a temporary file) as they arrive.
    Body {
        request: Box<Request>,
        left: usize,
        sink: BodySink,
    },
}

/// Turns buffered bytes into complete requests. One per connection.
#[derive(Debug)]
pub struct Decoder {
    limits: UwsgiLimits,
    conn: ConnInfo,
    state: State,
}

impl Decoder {
    pub fn new(limits: UwsgiLimits, conn: ConnInfo) -> Decoder {
        Decoder {
            limits,
            conn,
            state: State::Head,
        }
    }

    /// True until a request's head (header and vars) is complete: between requests, or while
    /// the head arrives.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head)
    }

    /// Consumes bytes from `buf` and returns the next complete request, `Ok(None)` when more
    /// bytes are needed, or why the request cannot be served. Any split of the input gives the
    /// same result as the whole input at once.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, UwsgiError> {
        loop {
            match &mut self.state {
                State::Head => {
                    let Some(&modifier1) = buf.first() else {
                        return Ok(None);
                    };
                    // Refuse a foreign modifier as soon as its byte arrives: a client speaking
                    // HTTP to a uwsgi port ('G' = 71) is told off at once, not after 4 bytes.
                    if modifier1 != MODIFIER_WSGI && modifier1 != MODIFIER_STRIP_SCRIPT_NAME {
                        return Err(UwsgiError::malformed(format!(
                            "modifier1 {modifier1} is not supported (only 0 and 30)"
                        )));
                    }
                    if buf.len() < 4 {
                        return Ok(None);
                    }
                    let size = usize::from(u16::from_le_bytes([buf[1], buf[2]]));
                    if size > self.limits.max_vars_block {
                        return Err(UwsgiError::malformed(format!(
                            "vars block of {size} bytes (limit {})",
                            self.limits.max_vars_block
                        )));
                    }
                    if buf.len() < 4 + size {
                        return Ok(None);
                    }
                    buf.advance(4);
                    let block = buf.split_to(size).freeze();
                    let (request, len) =
                        build_request(&block, modifier1, &self.limits, &self.conn)?;
                    self.state = State::Body {
                        request: Box::new(request),
                        left: len,
                        sink: BodySink::Memory(BytesMut::new()),
                    };
                }
                State::Body { left, sink, .. } => {
                    // Taken as it arrives, as over HTTP: a body bigger than the body buffer
                    // goes to a file, so a 50 MB upload does not hold 50 MB of the worker's
                    // memory (before, the whole body waited in the read buffer).
                    let take = (*left).min(buf.len());
                    if take > 0 {
                        sink.extend(&buf[..take], self.limits.body_buffer)
                            .map_err(|e| UwsgiError::Refused {
                                status: e.status,
                                reason: e.reason,
                            })?;
                        buf.advance(take);
                        *left -= take;
                    }
                    if *left > 0 {
                        return Ok(None);
                    }
                    let State::Body { request, sink, .. } =
                        std::mem::replace(&mut self.state, State::Head)
                    else {
                        unreachable!("matched State::Body above")
                    };
                    let mut request = *request;
                    request.body = sink.into_body();
                    return Ok(Some(request));
                }
            }
        }
    }

    /// Why a connection that ended with `buffered` bytes of this request unread was cut short,
    /// for the log: how much of the head or the body was missing.
    pub fn truncated(&self, buffered: usize) -> String {
        match &self.state {
            State::Body { left, .. } => format!(
                "the peer closed mid-packet ({} body bytes missing)",
                left.saturating_sub(buffered)
            ),
            State::Head => format!("the peer closed mid-packet ({buffered} bytes of the head)"),
        }
    }
}

/// What the connection needs to know about a request besides the request: no keep-alive (one
/// request per uwsgi connection), HEAD, and the access log's fields when it is on.
pub fn meta(req: &Request, log_fields: bool) -> crate::proto::RequestMeta {
    let header = |n: &str| {
        req.headers
            .get(n)
            .map(|v| c10k_http::cgi::latin1(v).into_owned())
    };
    crate::proto::RequestMeta {
        minor_version: match req.version {
            Version::Http10 => 0,
            Version::Http11 => 1,
        },
        keep_alive: false,
        head_only: req.method == Method::Head,
        log: log_fields.then(|| {
            Box::new(crate::proto::LogFields {
                method: req.method.as_str().to_owned(),
                target: req.target.clone(),
                referer: header("referer"),
                user_agent: header("user-agent"),
            })
        }),
    }
}

/// Iterates over the key/value pairs of a vars block.
struct Vars<'a> {
    block: &'a [u8],
}

impl<'a> Iterator for Vars<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), UwsgiError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.block.is_empty() {
            return None;
        }
        Some(self.pair())
    }
}

impl<'a> Vars<'a> {
    fn pair(&mut self) -> Result<(&'a [u8], &'a [u8]), UwsgiError> {
        let key = self.string()?;
        if key.is_empty() {
            // uWSGI: "uwsgi key cannot be null".
            return Err(UwsgiError::malformed("a var with an empty key"));
        }
        let value = self.string()?;
        Ok((key, value))
    }

    fn string(&mut self) -> Result<&'a [u8], UwsgiError> {
        let Some((len, rest)) = self.block.split_first_chunk::<2>() else {
            return Err(UwsgiError::malformed(
                "a var length runs past the vars block",
            ));
        };
        let len = usize::from(u16::from_le_bytes(*len));
        if rest.len() < len {
            return Err(UwsgiError::malformed("a var runs past the vars block"));
        }
        let (s, rest) = rest.split_at(len);
        self.block = rest;
        Ok(s)
    }
}

/// The vars the server interprets; the last of a repeated one wins (see the module docs).
#[derive(Default)]
struct Cgi<'a> {
    method: Option<&'a [u8]>,
    request_uri: Option<&'a [u8]>,
    path_info: Option<&'a [u8]>,
    query_string: Option<&'a [u8]>,
    script_name: Option<&'a [u8]>,
    protocol: Option<&'a [u8]>,
    content_length: Option<&'a [u8]>,
    remote_addr: Option<&'a [u8]>,
    remote_port: Option<&'a [u8]>,
    server_addr: Option<&'a [u8]>,
    server_name: Option<&'a [u8]>,
    server_port: Option<&'a [u8]>,
    https: Option<&'a [u8]>,
    request_scheme: Option<&'a [u8]>,
    url_scheme: Option<&'a [u8]>,
    /// What the client's (or a load balancer's) `X-Forwarded-Proto`/`-Protocol`/`-Ssl` say:
    /// https or not, and whether two of them disagree.
    forwarded_https: Option<bool>,
    forwarded_conflict: bool,
}

/// The vars a [`Request`] carries exactly in its own fields; every other var that is not a header
/// is kept in [`Request::cgi_vars`] as sent.
const CARRIED: [&[u8]; 7] = [
    b"REQUEST_METHOD",
    b"REQUEST_URI",
    b"PATH_INFO",
    b"QUERY_STRING",
    b"SERVER_PROTOCOL",
    b"CONTENT_LENGTH",
    b"CONTENT_TYPE",
];

/// Builds the request (without its body) and returns the body length to read.
fn build_request(
    block: &Bytes,
    modifier1: u8,
    limits: &UwsgiLimits,
    conn: &ConnInfo,
) -> Result<(Request, usize), UwsgiError> {
    let mut cgi = Cgi::default();
    let mut fields: Vec<(String, Bytes)> = Vec::new();
    // Where the Content-Type field sits, and whether it came from CONTENT_TYPE (which beats
    // the HTTP_CONTENT_TYPE nginx also sends, since uwsgi_params does not hide it).
    let mut content_type: Option<(usize, bool)> = None;
    let mut content_length_at: Option<usize> = None;
    let mut host_at: Option<usize> = None;
    let mut cgi_vars: Vec<(Bytes, Bytes)> = Vec::new();
    let mut count = 0usize;
    for pair in (Vars { block }) {
        let (key, value) = pair?;
        count += 1;
        if count > limits.max_vars {
            if fields.len() > limits.max_headers {
                return Err(too_many_headers(limits.max_headers));
            }
            return Err(UwsgiError::malformed(format!(
                "more than {} vars",
                limits.max_vars
            )));
        }
        if !key.starts_with(b"HTTP_") && !CARRIED.contains(&key) {
            if cgi_vars.capacity() == 0 {
                // uwsgi_params alone sends six of them.
                cgi_vars.reserve(8);
            }
            // Slices of the block: no copies.
            cgi_vars.push((block.slice_ref(key), block.slice_ref(value)));
        }
        let slot = match key {
            b"REQUEST_METHOD" => &mut cgi.method,
            b"REQUEST_URI" => &mut cgi.request_uri,
            b"PATH_INFO" => &mut cgi.path_info,
            b"QUERY_STRING" => &mut cgi.query_string,
            b"SCRIPT_NAME" => &mut cgi.script_name,
            b"SERVER_PROTOCOL" => &mut cgi.protocol,
            b"REMOTE_ADDR" => &mut cgi.remote_addr,
            b"REMOTE_PORT" => &mut cgi.remote_port,
            b"SERVER_ADDR" => &mut cgi.server_addr,
            b"SERVER_NAME" => &mut cgi.server_name,
            b"SERVER_PORT" => &mut cgi.server_port,
            b"HTTPS" => &mut cgi.https,
            b"REQUEST_SCHEME" => &mut cgi.request_scheme,
            b"UWSGI_SCHEME" | b"wsgi.url_scheme" => &mut cgi.url_scheme,
            // The last one wins, as in uWSGI: nginx sends the body it says it sends with the
            // last. `uwsgi_pass_request_body off; uwsgi_param CONTENT_LENGTH "";` (the
            // auth_request idiom, after `include uwsgi_params;`) sends the client's length, then
            // "", and no body; refused as ambiguous, every request with a body was nginx's 502.
            b"CONTENT_LENGTH" => {
                // Its field goes where the first one came (nginx: among the CGI vars).
                content_length_at.get_or_insert(fields.len());
                &mut cgi.content_length
            }
            // uwsgi_params sends CONTENT_TYPE even when the request has none: empty.
            b"CONTENT_TYPE" if value.is_empty() => continue,
            b"CONTENT_TYPE" | b"HTTP_CONTENT_TYPE" => {
                let from_cgi = key == b"CONTENT_TYPE";
                let value = field_value(value)?;
                match content_type {
                    // The CGI var wins over the header copy; a repeated CGI var's last wins.
                    Some((i, cgi_set)) if from_cgi || !cgi_set => {
                        fields[i].1 = value;
                        content_type = Some((i, cgi_set || from_cgi));
                    }
                    Some(_) => {}
                    None => {
                        content_type = Some((fields.len(), from_cgi));
                        fields.push(("Content-Type".to_owned(), value));
                    }
                }
                continue;
            }
            // The body's length comes from CONTENT_LENGTH only (the protocol's framing). The
            // client's Transfer-Encoding described its hop to nginx, which de-chunked the body
            // before sending it with CONTENT_LENGTH: kept, it told the app a complete body was
            // chunked (Werkzeug's content_length was None, Bottle parsed chunk sizes out of the
            // data and answered 400). nginx's proxy_pass drops it too.
            b"HTTP_CONTENT_LENGTH" | b"HTTP_TRANSFER_ENCODING" => continue,
            // Host is one field (RFC 9110 §7.2), and nginx refuses a client's second one, so a
            // second HTTP_HOST is the config's: Debian's uwsgi_params now sets
            // `uwsgi_param HTTP_HOST $host;`, and a site's own such line sent it again. The last
            // wins, as in uWSGI; joined, "example.com, example.com" was Django's DisallowedHost
            // (a 400) and an empty `request.host` in Flask.
            b"HTTP_HOST" => {
                let value = field_value(value)?;
                match host_at {
                    Some(i) => fields[i].1 = value,
                    None => {
                        host_at = Some(fields.len());
                        fields.push(("Host".to_owned(), value));
                    }
                }
                continue;
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"HTTP_") {
                    let name = header_name(name)?;
                    if let Some(https) = crate::proto::secure_scheme_header(&name, value) {
                        cgi.forwarded_conflict |= cgi.forwarded_https.is_some_and(|w| w != https);
                        cgi.forwarded_https = Some(https);
                    }
                    fields.push((name, field_value(value)?));
                }
                continue;
            }
        };
        *slot = Some(value);
    }

    if let Some(v) = cgi
        .content_length
        .map(<[u8]>::trim_ascii)
        .filter(|v| !v.is_empty())
    {
        // Checked to be a number below.
        let at = content_length_at.unwrap_or(fields.len());
        fields.insert(at, ("Content-Length".to_owned(), Bytes::copy_from_slice(v)));
    }
    if fields.len() > limits.max_headers {
        return Err(too_many_headers(limits.max_headers));
    }
    let method = cgi
        .method
        .filter(|m| !m.is_empty() && m.iter().all(|&b| is_tchar(b)))
        .ok_or_else(|| UwsgiError::malformed("no valid REQUEST_METHOD"))?;
    // Checked above: a token is ASCII.
    let method = Method::from_token(std::str::from_utf8(method).unwrap_or_default());

    let len = match cgi.content_length.map(<[u8]>::trim_ascii) {
        None | Some(b"") => 0,
        Some(v) => {
            if v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                return Err(UwsgiError::malformed("CONTENT_LENGTH is not a number"));
            }
            let n = v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            if n > limits.max_body {
                return Err(UwsgiError::Refused {
                    status: 413,
                    reason: format!(
                        "request body larger than {} bytes (--limit-request-body)",
                        limits.max_body
                    )
                    .into(),
                });
            }
            n as usize
        }
    };

    let (target, path, query) = target_path_query(&cgi, modifier1)?;
    let version = match cgi.protocol {
        Some(b"HTTP/1.0") => Version::Http10,
        // HTTP/1.1, and HTTP/2 or 3 spoken by nginx to its client: the response is the same.
        _ => Version::Http11,
    };
    let trusted = match conn.peer {
        None => true,
        Some(p) => limits.forwarded_allow.iter().any(|a| a.allows(p.ip())),
    };
    if trusted && cgi.forwarded_conflict && cgi.url_scheme.is_none() {
        // As over HTTP (gunicorn's InvalidSchemeHeaders): the app must not guess which is true.
        return Err(UwsgiError::Refused {
            status: 400,
            reason: "contradictory scheme headers (X-Forwarded-Proto, X-Forwarded-Protocol, X-Forwarded-Ssl)".into(),
        });
    }
    let scheme = scheme(&cgi, trusted);
    // nginx's REMOTE_ADDR is the client; the socket's peer is nginx. A client nginx took on a
    // unix socket has REMOTE_ADDR "unix:", which is no address: then the socket's peer stands.
    let peer = match parse_ip(cgi.remote_addr) {
        Some(ip) => Some(SocketAddr::new(ip, parse_port(cgi.remote_port))),
        None => conn.peer,
    };
    let local = local_addr(&cgi, conn);
    let mut headers = Headers::with_capacity(fields.len());
    for (name, value) in fields {
        headers.append(name, value);
    }
    let request = Request {
        method,
        target,
        path,
        query,
        version,
        headers,
        peer,
        local,
        transport: conn.transport,
        scheme,
        cgi_vars,
        body: RequestBody::empty(),
    };
    Ok((request, len))
}

/// `X_FORWARDED_FOR` → `X-Forwarded-For`; the name must be a token once `_` becomes `-`.
fn header_name(var: &[u8]) -> Result<String, UwsgiError> {
    if var.is_empty() || !var.iter().all(|&b| is_tchar(b)) {
        // As over HTTP. nginx sends such a name (`X@Y`, `X/Y`, non-ASCII) only under
        // `ignore_invalid_headers off`; uWSGI passes it to the app.
        return Err(bad_request("invalid header name"));
    }
    let mut name = String::with_capacity(var.len());
    let mut start = true;
    for &b in var {
        let c = if b == b'_' { b'-' } else { b };
        name.push(if start {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        } as char);
        start = c == b'-';
    }
    Ok(name)
}

/// A header value must not carry a line break or NUL (it may be re-serialised downstream).
fn field_value(v: &[u8]) -> Result<Bytes, UwsgiError> {
    if v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(bad_request("invalid header value"));
    }
    Ok(Bytes::copy_from_slice(v))
}

/// More header fields than `--limit-request-fields`: 431, as over HTTP (closed unanswered, it was
/// nginx's 502).
fn too_many_headers(max: usize) -> UwsgiError {
    UwsgiError::Refused {
        status: 431,
        reason: format!("more than {max} header fields").into(),
    }
}

/// A readable request refused as the HTTP listener refuses it: 400 with `reason`.
fn bad_request(reason: &'static str) -> UwsgiError {
    UwsgiError::Refused {
        status: 400,
        reason: reason.into(),
    }
}

fn target_path_query(
    cgi: &Cgi<'_>,
    modifier1: u8,
) -> Result<(String, String, Option<String>), UwsgiError> {
    let query = cgi
        .query_string
        .filter(|q| !q.is_empty())
        .map(|q| encode(q, Keep::Raw));
    let path_info = cgi.path_info.map(|p| {
        let script = cgi.script_name.unwrap_or_default();
        if modifier1 != MODIFIER_STRIP_SCRIPT_NAME || script.is_empty() {
            return p;
        }
        match p.strip_prefix(script) {
            // A whole segment only: /app mounts /app/x, not /application.
            Some(rest) if script.ends_with(b"/") || rest.is_empty() || rest[0] == b'/' => rest,
            _ => p,
        }
    });
    let uri = cgi.request_uri.filter(|u| !u.is_empty());
    let path = match (path_info, uri) {
        (Some(p), _) => encode(p, Keep::Decoded),
        (None, Some(u)) => {
            // A `#fragment` is in neither the path nor the query (as over HTTP).
            let p = u
                .split(|&b| b == b'?' || b == b'#')
                .next()
                .unwrap_or_default();
            encode(p, Keep::Raw)
        }
        (None, None) => {
            return Err(UwsgiError::malformed("neither PATH_INFO nor REQUEST_URI"));
        }
    };
    // Applications route on a path that starts with '/' (the HTTP decoder guarantees it).
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let target = match uri {
        Some(u) => encode(u, Keep::Raw),
        None => match &query {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        },
    };
    // The query as the target carries it when nginx sent no QUERY_STRING var at all.
    let query = match (query, cgi.query_string) {
        (Some(q), _) => Some(q),
        (None, None) => target
            .split('#')
            .next()
            .unwrap_or_default()
            .split_once('?')
            .map(|(_, q)| q.to_owned())
            .filter(|q| !q.is_empty()),
        (None, Some(_)) => None,
    };
    Ok((target, path, query))
}

/// What [`encode`] leaves as it is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Already percent-encoded text (`REQUEST_URI`, `QUERY_STRING`): only bytes that may not
    /// appear in a target (controls, space, non-ASCII) are encoded.
    Raw,
    /// Decoded text (`PATH_INFO`): `%`, `?` and `#` are encoded too, so decoding gives it back.
    Decoded,
}

fn encode(s: &[u8], keep: Keep) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s {
        let escape = !b.is_ascii_graphic()
            || b == b'"'
            || (keep == Keep::Decoded && matches!(b, b'%' | b'?' | b'#'));
        if escape {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        } else {
            out.push(b as char);
        }
    }
    out
}

/// The request's scheme. `forwarded_trusted`: nginx (the socket's peer) is in
/// `--forwarded-allow-ips`, so the `X-Forwarded-*` scheme headers it passed on count.
fn scheme(cgi: &Cgi<'_>, forwarded_trusted: bool) -> Scheme {
    // uWSGI: UWSGI_SCHEME (wsgi.url_scheme) first, then X-Forwarded-Proto and X-Forwarded-Ssl
    // (a TLS load balancer in front of nginx says https there, and uWSGI believes it from
    // anyone), then HTTPS; REQUEST_SCHEME last.
    let https = |v: &[u8]| v.eq_ignore_ascii_case(b"https");
    let of = |https: bool| if https { Scheme::Https } else { Scheme::Http };
    if let Some(s) = cgi.url_scheme {
        return of(https(s));
    }
    if let Some(forwarded) = cgi.forwarded_https.filter(|_| forwarded_trusted) {
        return of(forwarded);
    }
    if let Some(v) = cgi.https {
        if v.eq_ignore_ascii_case(b"on") || v == b"1" {
            return Scheme::Https;
        }
    }
    match cgi.request_scheme {
        Some(s) if https(s) => Scheme::Https,
        _ => Scheme::Http,
    }
}

fn parse_ip(v: Option<&[u8]>) -> Option<IpAddr> {
    std::str::from_utf8(v?).ok()?.trim().parse().ok()
}

fn parse_port(v: Option<&[u8]>) -> u16 {
    v.and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The address the client reached: `SERVER_ADDR` (or `SERVER_NAME` when it is an address
/// literal) and `SERVER_PORT`. A name is no address; then the connection's own IP stands in on
/// TCP, with nginx's `SERVER_PORT`; on a unix socket there is none.
fn local_addr(cgi: &Cgi<'_>, conn: &ConnInfo) -> Option<SocketAddr> {
    let ip = parse_ip(cgi.server_addr)
        .or_else(|| parse_ip(cgi.server_name))
        .or_else(|| conn.local.map(|a| a.ip()))?;
    let port = match cgi.server_port {
        Some(_) => parse_port(cgi.server_port),
        None => conn.local.map_or(0, |a| a.port()),
    };
    Some(SocketAddr::new(ip, port))
}

/// Appends the head of `resp` as uWSGI writes it — status line and the handler's headers, no
/// `Connection`, `Transfer-Encoding` or `Keep-Alive` (they mean nothing on a connection that
/// closes after one response) — and a complete body, and returns how a streamed body must be
/// framed by the caller. A complete body gets its `Content-Length`; a stream keeps the handler's
/// own one if it set one, and is otherwise close-delimited, never chunked (nginx passes a uwsgi
/// upstream's body through as it is). `head_only` (HEAD) drops the body but keeps its length.
/// The length and framing are [`body_framing`]'s, as over HTTP, with a stream's fallback `Close`.
pub fn encode_head(out: &mut Vec<u8>, resp: &Response, head_only: bool) -> BodyFraming {
    let announced: Option<u64> = resp
        .header("content-length")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok());
    // One request per connection: a stream of unknown length ends at the close, never chunked.
    let (length, framing) = body_framing(
        resp.status,
        &resp.body,
        announced,
        head_only,
        BodyFraming::Close,
    );
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(num.format(resp.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason_phrase());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &resp.headers {
        let framing_header = [
            "content-length",
            "connection",
            "transfer-encoding",
            "keep-alive",
        ]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h));
        if framing_header {
            continue;
        }
        // Names and values come from the application; never let one inject a line break.
        out.extend(name.bytes().filter(|&b| b != b'\r' && b != b'\n'));
        out.extend_from_slice(b": ");
        out.extend(value.iter().copied().filter(|&b| b != b'\r' && b != b'\n'));
        out.extend_from_slice(b"\r\n");
    }
    if let Some(len) = length {
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(num.format(len).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    end_head(out, resp, head_only, framing)
}

#[cfg(test)]
mod tests;
