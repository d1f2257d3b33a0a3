//! The request decoder: [`Decoder`] turns a connection's buffered bytes into complete requests
//! ([`Incoming`]), in order. It parses the head with `httparse` within the limits, interprets it
//! (target, framing headers, `Host`, `Expect`, a trusted proxy's scheme and forwarder headers,
//! keep-alive) into a [`Request`], then takes the body: sized (in memory or spooled), or chunked
//! through [`super::chunked`].

use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use c10k_http::{is_tchar, Headers, Method, Request, RequestBody, Scheme, Transport, Version};

use super::chunked::{decode_chunked, ChunkState};
use super::limits::{BodySink, HttpError, Limits};

/// Where a connection's requests come from; stamped on every request decoded from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub transport: Transport,
}

impl Default for ConnInfo {
    fn default() -> ConnInfo {
        ConnInfo {
            peer: None,
            local: None,
            transport: Transport::Tcp,
        }
    }
}

/// A complete request plus what the connection needs to know about it.
#[derive(Debug)]
pub struct Incoming {
    pub request: Request,
    pub meta: RequestMeta,
}

/// What the connection keeps of a request once the request itself has gone to the application
/// (by value): how to answer it and what to log.
#[derive(Debug)]
pub struct RequestMeta {
    /// Minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Whether the client allows the connection to stay open after this request.
    pub keep_alive: bool,
    /// A `HEAD` request: the response is sent without its body.
    pub head_only: bool,
    /// What an access log prints, when the decoder was asked to keep it.
    pub log: Option<Box<LogFields>>,
}

/// What the access log prints (Apache's combined format), kept apart from the request because
/// the request goes to the application by value.
#[derive(Debug, Default, Clone)]
pub struct LogFields {
    pub method: String,
    /// The path and query as sent.
    pub target: String,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug)]
struct Head {
    request: Request,
    minor_version: u8,
    keep_alive: bool,
    expect_continue: bool,
    log: Option<Box<LogFields>>,
}

#[derive(Debug)]
enum State {
    /// Waiting for a complete request head.
    Head,
    /// Head parsed; `len` body bytes expected after it.
    Sized { head: Box<Head>, len: usize },
    /// Head parsed; a body larger than the body buffer, taken as it arrives into `sink`.
    Spooling {
        head: Box<Head>,
        left: usize,
        sink: BodySink,
    },
    /// Head parsed; decoding a chunked body into `body`.
    Chunked {
        head: Box<Head>,
        body: BodySink,
        chunk: ChunkState,
    },
}

/// Turns buffered bytes into complete requests. One per connection.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    state: State,
    continue_sent: bool,
    capture_log: bool,
    conn: ConnInfo,
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            state: State::Head,
            continue_sent: false,
            capture_log: false,
            conn: ConnInfo::default(),
        }
    }

    /// The connection's addresses and transport, copied into every request.
    pub fn with_conn(mut self, conn: ConnInfo) -> Decoder {
        self.conn = conn;
        self
    }

    /// Also keep the `Referer` and `User-Agent` headers, for an access log.
    pub fn capture_log_fields(mut self, on: bool) -> Decoder {
        self.capture_log = on;
        self
    }

    /// True when nothing of a request has been consumed: between requests.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head)
    }

    /// The answer to a client that closed its sending side after a request head whose body had
    /// not all come (`None` between requests or in a head: a client that stops there gets no
    /// answer, as in gunicorn). gunicorn ran the application with the short body, which it
    /// could only tell from `CONTENT_LENGTH`; here the application is not called.
    pub fn incomplete(&self, buffered: usize) -> Option<HttpError> {
        let reason = match &self.state {
            State::Head => return None,
            State::Sized { len, .. } => {
                format!(
                    "request body incomplete: the client closed after {buffered} of {len} bytes"
                )
            }
            State::Spooling { left, sink, .. } => format!(
                "request body incomplete: the client closed after {} of {} bytes",
                sink.len() + buffered as u64,
                sink.len() + *left as u64
            ),
            State::Chunked { .. } => {
                "chunked request body incomplete: the client closed before its last chunk"
                    .to_owned()
            }
        };
        Some(HttpError::bad(reason))
    }

    /// True once, when a head with `Expect: 100-continue` was parsed and its body has not fully
    /// arrived: the driver should send `100 Continue` before reading more.
    pub fn take_continue(&mut self) -> bool {
        let expects = match &self.state {
            State::Sized { head, .. }
            | State::Spooling { head, .. }
            | State::Chunked { head, .. } => head.expect_continue,
            State::Head => false,
        };
        if expects && !self.continue_sent {
            self.continue_sent = true;
            true
        } else {
            false
        }
    }

    /// Consumes bytes from `buf` and returns the next complete request, `Ok(None)` when more
    /// bytes are needed, or the error to answer with.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, HttpError> {
        loop {
            match &mut self.state {
                State::Head => {
                    let Some(head) = self.parse_head(buf)? else {
                        return Ok(None);
                    };
                    self.continue_sent = false;
                    let (head, framing) = head;
                    self.state = match framing {
                        Framing::Sized(len) if len > self.limits.body_buffer => State::Spooling {
                            head,
                            left: len,
                            sink: BodySink::Memory(BytesMut::new()),
                        },
                        Framing::Sized(len) => State::Sized { head, len },
                        Framing::Chunked => State::Chunked {
                            head,
                            body: BodySink::Memory(BytesMut::new()),
                            chunk: ChunkState::Size,
                        },
                    };
                }
                State::Sized { len, .. } => {
                    if buf.len() < *len {
                        return Ok(None);
                    }
                    let body = buf.split_to(*len).freeze();
                    return Ok(Some(self.finish(RequestBody::Memory(body))));
                }
                State::Spooling { left, sink, .. } => {
                    let take = (*left).min(buf.len());
                    if take > 0 {
                        sink.extend(&buf[..take], self.limits.body_buffer)?;
                        buf.advance(take);
                        *left -= take;
                    }
                    if *left > 0 {
                        return Ok(None);
                    }
                    let sink = std::mem::replace(sink, BodySink::Memory(BytesMut::new()));
                    return Ok(Some(self.finish(sink.into_body())));
                }
                State::Chunked { body, chunk, .. } => {
                    let limits = &self.limits;
                    if !decode_chunked(buf, body, chunk, limits.max_body, limits.body_buffer)? {
                        return Ok(None);
                    }
                    let body = std::mem::replace(body, BodySink::Memory(BytesMut::new()));
                    return Ok(Some(self.finish(body.into_body())));
                }
            }
        }
    }

    fn finish(&mut self, body: RequestBody) -> Incoming {
        let (State::Sized { head, .. }
        | State::Spooling { head, .. }
        | State::Chunked { head, .. }) = std::mem::replace(&mut self.state, State::Head)
        else {
            unreachable!("finish is only called with a parsed head")
        };
        let Head {
            mut request,
            minor_version,
            keep_alive,
            log,
            ..
        } = *head;
        request.body = body;
        let head_only = request.method == Method::Head;
        Incoming {
            request,
            meta: RequestMeta {
                minor_version,
                keep_alive,
                head_only,
                log,
            },
        }
    }

    fn parse_head(&self, buf: &mut BytesMut) -> Result<Option<(Box<Head>, Framing)>, HttpError> {
        let limits = &self.limits;
        // Skip stray CRLFs between requests (RFC 9112 §2.2) before measuring anything.
        let blank = buf
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        if blank > 0 {
            buf.advance(blank);
        }
        if buf.is_empty() {
            return Ok(None);
        }
        // Only as many bytes as the limits let a head have are parsed: an error beyond them is
        // never looked at, so a too-long line or head gets its 414/431 however the bytes were
        // split (the verdict once depended on whether a bad byte had arrived in an earlier read).
        // The line's length without its CRLF, as gunicorn counts `--limit-request-line`: a line
        // of exactly the limit is taken (the CR was counted, which refused it).
        let line_end = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
        let line_len = line_end - usize::from(line_end > 0 && buf[line_end - 1] == b'\r');
        let line_too_long = line_len > limits.max_request_line;
        let too_large = || {
            if line_too_long {
                HttpError::new(
                    414,
                    format!("request line longer than {} bytes", limits.max_request_line),
                )
            } else {
                head_too_large(limits)
            }
        };
        let window_len = if line_too_long {
            limits.max_request_line
        } else {
            limits.max_head
        };
        let over = buf.len() > window_len;
        let window = &buf[..buf.len().min(window_len)];
        // The usual limit fits on the stack; a raised one (gunicorn's 32768 for
        // `--limit-request-fields 0`) allocates only for a head with more fields than that.
        let mut stack = [httparse::EMPTY_HEADER; 128];
        let mut heap;
        let on_stack = limits.max_headers.min(stack.len());
        let mut req = httparse::Request::new(&mut stack[..on_stack]);
        let mut parsed = req.parse(window);
        if parsed == Err(httparse::Error::TooManyHeaders) && limits.max_headers > on_stack {
            heap = vec![httparse::EMPTY_HEADER; limits.max_headers];
            req = httparse::Request::new(&mut heap);
            parsed = req.parse(window);
        }
        if parsed == Err(httparse::Error::Version) && version_may_complete(window) {
            // "HTTP/2" of "HTTP/2.0" has arrived: the verdict (505 or 400) needs the rest.
            return if over { Err(too_large()) } else { Ok(None) };
        }
        let status = parsed.map_err(|e| match e {
            httparse::Error::TooManyHeaders => HttpError::new(
                431,
                format!("more than {} header fields", limits.max_headers),
            ),
            httparse::Error::Version => version_error(window),
            httparse::Error::Token => token_error(window),
            httparse::Error::HeaderName => HttpError::bad("invalid header name"),
            httparse::Error::HeaderValue => HttpError::bad("invalid header value"),
            httparse::Error::NewLine => HttpError::bad("invalid line ending"),
            httparse::Error::Status => HttpError::bad("malformed request"),
        })?;
        let head_len = match status {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial if over => return Err(too_large()),
            httparse::Status::Partial => return Ok(None),
        };
        // One copy of the head holds every header value; the values are slices of it.
        let raw = Bytes::copy_from_slice(&buf[..head_len]);
        let (head, framing) = interpret(&req, window, &raw, limits, self.capture_log, self.conn)?;
        buf.advance(head_len);
        Ok(Some((Box::new(head), framing)))
    }
}

/// httparse says `Token` for a bad method and for a bad target alike; tell them apart.
fn token_error(buf: &[u8]) -> HttpError {
    let method_len = buf.iter().take_while(|&&b| is_tchar(b)).count();
    if method_len > 0 && buf.get(method_len) == Some(&b' ') {
        HttpError::bad("invalid request target")
    } else {
        HttpError::bad("invalid method")
    }
}

fn head_too_large(limits: &Limits) -> HttpError {
    HttpError::new(
        431,
        format!("request head larger than {} bytes", limits.max_head),
    )
}

/// Whether the request line is unfinished and its version so far is a prefix of `HTTP/d.d\r`:
/// the verdict (505 for a well-formed other version, 400 for garbage) waits for the line's end,
/// because `HTTP/3.4` followed by a stray byte is garbage.
fn version_may_complete(buf: &[u8]) -> bool {
    if memchr::memchr(b'\n', buf).is_some() {
        return false;
    }
    let version = version_of(buf);
    let pattern = b"HTTP/0.0\r";
    version.len() <= pattern.len()
        && version.iter().zip(pattern).all(|(&b, &p)| {
            if p == b'0' {
                b.is_ascii_digit()
            } else {
                b == p
            }
        })
}

/// The version part of a request line: everything after the second space (`METHOD SP TARGET SP
/// VERSION`; a method or target never holds a space). Not the part after the *last* space: in
/// `F / \xaf ` that is empty, a prefix of anything, though the version is already wrong.
fn version_of(line: &[u8]) -> &[u8] {
    line.splitn(3, |&b| b == b' ').nth(2).unwrap_or(b"")
}

/// httparse only knows HTTP/1.0 and 1.1; tell a well-formed other version (505) from garbage.
fn version_error(buf: &[u8]) -> HttpError {
    let line_end = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
    let line = &buf[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let version = version_of(line);
    let looks_like = version.len() == 8
        && version.starts_with(b"HTTP/")
        && version[5].is_ascii_digit()
        && version[6] == b'.'
        && version[7].is_ascii_digit();
    if looks_like {
        HttpError::new(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    } else {
        HttpError::bad("invalid HTTP version")
    }
}

enum Framing {
    Sized(usize),
    Chunked,
}

/// Builds the request from a parsed head. `buf` is what httparse parsed (its slices point into
/// it) and `raw` a copy of the head, from which header values are sliced without another copy.
fn interpret(
    req: &httparse::Request<'_, '_>,
    buf: &[u8],
    raw: &Bytes,
    limits: &Limits,
    capture_log: bool,
    conn: ConnInfo,
) -> Result<(Head, Framing), HttpError> {
    let method = Method::from_token(req.method.unwrap_or(""));
    let minor_version = req.version.unwrap_or(1);
    let target = req.path.unwrap_or("");
    let (path, query) = split_target(target, &method)?;
    let base = buf.as_ptr() as usize;
    let value_of = |v: &[u8]| -> Bytes {
        let start = (v.as_ptr() as usize).wrapping_sub(base);
        match raw.get(start..start + v.len()) {
            Some(_) => raw.slice(start..start + v.len()),
            None => Bytes::copy_from_slice(v),
        }
    };
    let mut headers = Headers::with_capacity(req.headers.len());
    // No line is longer than the whole head: a head within the field-size limit (the usual
    // case) needs no per-field measure.
    let check_field_size = limits.max_field_size > 0 && raw.len() > limits.max_field_size;

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    let mut hosts = 0;
    let mut content_types = 0;
    // What the proxy's scheme headers say (https or not), and whether two of them disagree.
    let mut forwarded_https: Option<bool> = None;
    let mut forwarded_conflict = false;
    // A field whose name has a `_`, which only a trusted front may send to the app.
    let mut underscored = false;
    let mut log = capture_log.then(|| {
        Box::new(LogFields {
            method: method.as_str().to_owned(),
            target: target.to_owned(),
            ..LogFields::default()
        })
    });
    for h in req.headers.iter() {
        let name = h.name;
        if check_field_size && field_line_len(buf, name, h.value) > limits.max_field_size {
            return Err(HttpError::new(
                431,
                format!(
                    "header field {name} longer than {} bytes",
                    limits.max_field_size
                ),
            ));
        }
        headers.append(name, value_of(h.value));
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value, limits)?;
            if content_length.is_some_and(|m| m != n) {
                return Err(HttpError::bad("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            // Only a final "chunked" is understood; anything else cannot be framed.
            let value = std::str::from_utf8(h.value)
                .map_err(|_| HttpError::bad("invalid Transfer-Encoding"))?;
            for coding in value.split(',').map(str::trim) {
                if chunked {
                    return Err(HttpError::bad("chunked must be the last transfer coding"));
                }
                if coding.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                } else {
                    return Err(HttpError::new(
                        501,
                        format!("transfer coding {coding:?} is not implemented"),
                    ));
                }
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    conn_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    conn_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                expect_continue = minor_version == 1;
            } else {
                return Err(HttpError::new(
                    417,
                    "only Expect: 100-continue is supported",
                ));
            }
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            // A host is a name or address and an optional port: whitespace or userinfo in it
            // is an attempt to make this server and a proxy disagree on the target.
            if h.value
                .iter()
                .any(|&b| b == b' ' || b == b'\t' || b == b'@')
            {
                return Err(HttpError::bad("invalid Host header"));
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            // RFC 9110 §5.3: a field whose grammar has one member cannot be combined into a
            // list, so two leave the body's type to whoever reads which (gunicorn refuses too).
            content_types += 1;
            if content_types > 1 {
                return Err(HttpError::bad("more than one Content-Type header"));
            }
        } else if let Some(https) = secure_scheme_header(name, h.value) {
            forwarded_conflict |= forwarded_https.is_some_and(|was| was != https);
            forwarded_https = Some(https);
        } else if name.as_bytes().contains(&b'_') {
            underscored = !limits.forwarder_headers.is_empty();
        } else if let Some(log) = log.as_mut() {
            if name.eq_ignore_ascii_case("referer") {
                log.referer = Some(c10k_http::cgi::latin1(h.value).into_owned());
            } else if name.eq_ignore_ascii_case("user-agent") {
                log.user_agent = Some(c10k_http::cgi::latin1(h.value).into_owned());
            }
        }
    }
    if minor_version == 1 && hosts != 1 {
        return Err(HttpError::bad(if hosts == 0 {
            "HTTP/1.1 request without Host header"
        } else {
            "more than one Host header"
        }));
    }
    if transfer_encoding {
        if content_length.is_some() {
            return Err(HttpError::bad(
                "both Transfer-Encoding and Content-Length (possible request smuggling)",
            ));
        }
        if minor_version == 0 {
            return Err(HttpError::bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if !chunked {
            return Err(HttpError::bad("Transfer-Encoding without chunked"));
        }
    }
    let framing = if chunked {
        Framing::Chunked
    } else {
        let len = content_length.unwrap_or(0);
        if len > limits.max_body {
            return Err(body_too_large(limits));
        }
        Framing::Sized(len as usize)
    };
    let trusted = || match conn.peer {
        None => true,
        Some(p) => limits.forwarded_allow.iter().any(|a| a.allows(p.ip())),
    };
    let mut scheme = Scheme::Http;
    if let Some(https) = forwarded_https {
        if trusted() {
            if forwarded_conflict {
                // gunicorn's InvalidSchemeHeaders: the app must not guess which one is true.
                return Err(HttpError::bad(
                    "contradictory scheme headers (X-Forwarded-Proto, X-Forwarded-Protocol, X-Forwarded-Ssl)",
                ));
            }
            if https {
                scheme = Scheme::Https;
            }
        }
    }
    let cgi_vars = if underscored && trusted() {
        forwarder_vars(&headers, limits)
    } else {
        Vec::new()
    };
    let keep_alive = if minor_version == 1 {
        !conn_close
    } else {
        conn_keep_alive && !conn_close
    };
    let request = Request {
        method,
        target: target.to_owned(),
        path,
        query,
        version: if minor_version == 0 {
            Version::Http10
        } else {
            Version::Http11
        },
        headers,
        peer: conn.peer,
        local: conn.local,
        transport: conn.transport,
        scheme,
        cgi_vars,
        body: RequestBody::empty(),
    };
    Ok((
        Head {
            request,
            minor_version,
            keep_alive,
            expect_continue,
            log,
        },
        framing,
    ))
}

/// The environ vars of the fields with a `_` in their name that a trusted front sent and
/// `--forwarder-headers` names, as gunicorn sets them: each as `HTTP_NAME` (repeated fields joined
/// with `, `), in [`Request::cgi_vars`], which the environ sets last. What a `SCRIPT_NAME` one
/// means (nginx's `proxy_set_header SCRIPT_NAME /api`: the app's mount point, and a 500 for a path
/// outside it) is the WSGI side's to say ([`c10k_http::cgi::front_mount`]): the server only
/// decides whom to believe, and an app without a mount point (the built-in one) is not refused.
fn forwarder_vars(headers: &Headers, limits: &Limits) -> Vec<(Bytes, Bytes)> {
    let any = limits.forwarder_headers.iter().any(|n| &**n == "*");
    let mut vars: Vec<(Bytes, Bytes)> = Vec::new();
    for (name, value) in headers.iter() {
        if !name.contains('_')
            || !(any
                || limits
                    .forwarder_headers
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(name)))
        {
            continue;
        }
        let key = c10k_http::cgi::http_key(name);
        match vars.iter_mut().find(|(k, _)| k[..] == *key.as_bytes()) {
            Some((_, joined)) => {
                let mut both = Vec::with_capacity(joined.len() + 2 + value.len());
                both.extend_from_slice(joined);
                both.extend_from_slice(b", ");
                both.extend_from_slice(value);
                *joined = both.into();
            }
            None => vars.push((key.into(), value.clone())),
        }
    }
    vars
}

/// The length of a header's line in `buf`, from its name through the CRLF, as gunicorn counts
/// it for `--limit-request-field_size` (whitespace around the value included).
fn field_line_len(buf: &[u8], name: &str, value: &[u8]) -> usize {
    let base = buf.as_ptr() as usize;
    let start = (name.as_ptr() as usize).wrapping_sub(base);
    let value_end = (value.as_ptr() as usize)
        .wrapping_sub(base)
        .wrapping_add(value.len());
    match buf.get(value_end..).map(|rest| memchr::memchr(b'\n', rest)) {
        Some(Some(nl)) if start <= value_end => value_end + nl + 1 - start,
        // Not a slice of `buf` (never with httparse): the parts are a lower bound.
        _ => name.len() + 1 + value.len() + 2,
    }
}

/// A proxy's scheme header (gunicorn's default `secure_scheme_headers`): `Some(true)` when it
/// says https, `Some(false)` when it says something else, `None` when it is no such header.
pub(crate) fn secure_scheme_header(name: &str, value: &[u8]) -> Option<bool> {
    let rest = name
        .get(..12)
        .filter(|p| p.eq_ignore_ascii_case("x-forwarded-"))
        .map(|_| &name[12..])?;
    let secure: &[u8] = if rest.eq_ignore_ascii_case("proto") {
        b"https"
    } else if rest.eq_ignore_ascii_case("protocol") {
        b"ssl"
    } else if rest.eq_ignore_ascii_case("ssl") {
        b"on"
    } else {
        return None;
    };
    Some(value.trim_ascii().eq_ignore_ascii_case(secure))
}

fn body_too_large(limits: &Limits) -> HttpError {
    HttpError::new(
        413,
        format!(
            "request body larger than {} bytes (--limit-request-body)",
            limits.max_body
        ),
    )
}

/// Splits a request target into path and query. Origin form (`/a?b`), absolute form
/// (`http://host/a?b`, RFC 9112 §3.2.2: servers must accept it) and asterisk form (`OPTIONS *`).
/// A `#fragment` (no client should send one, RFC 9112 §3.2) is cut off first, as gunicorn's
/// `urlsplit` does: it is in neither the path nor the query (`/a#f?x` has no query). The target
/// itself keeps it (`RAW_URI`). A byte outside ASCII is refused (RFC 9112 §3.2 and gunicorn: the
/// target is printable ASCII, anything else percent-encoded); httparse let UTF-8 through, which
/// a WSGI app then saw decoded as UTF-8 in `RAW_URI` and as latin-1 in `PATH_INFO`.
fn split_target(target: &str, method: &Method) -> Result<(String, Option<String>), HttpError> {
    if !target.is_ascii() {
        return Err(HttpError::bad(
            "invalid request target (bytes outside ASCII must be percent-encoded)",
        ));
    }
    let target = match target.split_once('#') {
        Some((before, _fragment)) => before,
        None => target,
    };
    let origin = if target.starts_with('/') {
        target
    } else if target == "*" {
        if *method != Method::Options {
            return Err(HttpError::bad("asterisk target is only valid for OPTIONS"));
        }
        "*"
    } else if let Some(rest) = strip_prefix_ignore_case(target, "http://")
        .or_else(|| strip_prefix_ignore_case(target, "https://"))
    {
        match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
            Some(_) | None => "/",
        }
    } else if *method == Method::Other("CONNECT".into()) {
        return Err(HttpError::new(405, "CONNECT is not supported"));
    } else {
        return Err(HttpError::bad("request target must start with /"));
    };
    // Absolute form with a query but no path ("http://h?x") keeps its query.
    let query_src = if origin == "/" && !target.starts_with('/') {
        target.split_once('?').map(|(_, q)| q)
    } else {
        None
    };
    Ok(match origin.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (origin.to_owned(), query_src.map(str::to_owned)),
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `Content-Length` must be 1*DIGIT; signs, spaces inside and lists are refused. A number too
/// large for a u64 is a valid length larger than any body limit: 413, as a smaller one is.
fn parse_content_length(value: &[u8], limits: &Limits) -> Result<u64, HttpError> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::bad("invalid Content-Length"));
    }
    let zeros = value.iter().take_while(|&&d| d == b'0').count();
    let value = &value[zeros.min(value.len() - 1)..];
    if value.len() > 19 {
        return Err(body_too_large(limits));
    }
    let mut n = 0u64;
    for &d in value {
        n = n * 10 + u64::from(d - b'0');
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allow::AllowFrom;
    use crate::proto::decoded::{decode_all, decode_chunks};
    use crate::proto::limits::forwarder_names;

    /// Found by the `http_decoder` fuzz target: a request line whose version begins with a bad
    /// byte was refused when the bytes stopped there, but waited for more when a space followed
    /// (the version was read after the last space, which was then empty), so the verdict
    /// depended on how the bytes were split.
    #[test]
    fn a_bad_version_is_refused_however_the_bytes_arrive() {
        let stream: &[u8] = b"F zF \xaf ";
        let whole = decode_chunks(&Limits::default(), [stream]);
        for at in 0..=stream.len() {
            let split = decode_chunks(&Limits::default(), [&stream[..at], &stream[at..]]);
            assert_eq!(whole, split, "split at {at}");
        }
        assert_eq!(whole.refused, Some((400, "invalid HTTP version".into())));
        // Still waiting while what has come could become a version.
        for partial in [&b"GET / "[..], b"GET / HT", b"GET / HTTP/1."] {
            assert_eq!(decode_chunks(&Limits::default(), [partial]).refused, None);
        }
        let late = decode_chunks(&Limits::default(), [&b"GET / HTTP/1.1 x\r\n\r\n"[..]]);
        assert_eq!(late.refused.map(|r| r.0), Some(400));
        // Found by the fuzzer too: byte by byte, `HTTP/3.4` got 505 before the stray byte after
        // it arrived, which made it 400 when all came at once.
        for (stream, want) in [
            (&b"F j HTTP/3.4\x00\xff"[..], 400),
            (b"GET / HTTP/3.4\rX", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"GET / HTTP/2.0\n\n", 505),
        ] {
            let whole = decode_chunks(&Limits::default(), [stream]);
            assert_eq!(whole.refused.as_ref().map(|r| r.0), Some(want), "{whole:?}");
            let bytes = decode_chunks(&Limits::default(), stream.chunks(1));
            assert_eq!(whole, bytes, "{:?}", String::from_utf8_lossy(stream));
        }
    }

    /// Found by the `http_decoder` fuzz target: a request line longer than the limit with a bad
    /// byte early in it got 414 when it arrived at once but 400 when the bad byte came in an
    /// earlier read; a head over the limit with a bad byte past it, 400 or 431 the same way.
    /// Now only what the limits allow is parsed: an error within it is the verdict, else the
    /// limit's status, however the bytes arrive.
    #[test]
    fn a_too_long_head_gets_one_verdict_however_the_bytes_arrive() {
        let limits = Limits {
            max_request_line: 512,
            max_head: 2048,
            ..Limits::default()
        };
        let long = "a".repeat(600);
        let header = "b".repeat(3000);
        let cases: [(Vec<u8>, u16); 4] = [
            // A bad target byte within the line's limit: 400, not 414.
            (
                format!("GET /\u{1}{long} HTTP/1.1\r\n\r\n").into_bytes(),
                400,
            ),
            // A bad target byte past it: 414.
            (
                format!("GET /{long}\u{1} HTTP/1.1\r\n\r\n").into_bytes(),
                414,
            ),
            // A bad header byte within the head's limit: 400; past it: 431.
            (
                format!("GET / HTTP/1.1\r\nX: \u{1}{header}\r\n\r\n").into_bytes(),
                400,
            ),
            (
                format!("GET / HTTP/1.1\r\nX: {header}\u{1}\r\n\r\n").into_bytes(),
                431,
            ),
        ];
        for (stream, want) in cases {
            let whole = decode_chunks(&limits, [&stream[..]]);
            assert_eq!(whole.refused.as_ref().map(|r| r.0), Some(want), "{whole:?}");
            for at in [1, 7, 300, 513, 600, 2049, 2500] {
                let at = at.min(stream.len());
                let split = decode_chunks(&limits, [&stream[..at], &stream[at..]]);
                assert_eq!(whole, split, "want {want}, split at {at}");
            }
        }
    }

    #[test]
    fn pipelined_requests_come_out_in_order() {
        let (reqs, res, rest) = decode_all(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /c HT",
        );
        res.unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].request.path, "/a");
        assert_eq!(reqs[1].request.path, "/b");
        assert_eq!(reqs[1].request.query.as_deref(), Some("q=1"));
        assert_eq!(&reqs[1].request.body.to_bytes().unwrap()[..], b"abc");
        assert_eq!(&rest[..], b"GET /c HT");
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |raw: &[u8]| decode_all(raw).0.remove(0).meta.keep_alive;
        assert!(ka(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn statuses_for_bad_input() {
        let status = |raw: &[u8]| decode_all(raw).1.unwrap_err().status;
        assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(status(b"GET / FOO\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400); // no Host
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(9000));
        assert_eq!(status(long.as_bytes()), 414);
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n"),
            413
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
            501
        );
    }

    #[test]
    fn absolute_form() {
        let (reqs, res, _) =
            decode_all(b"GET http://example.com/p?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n");
        res.unwrap();
        assert_eq!(reqs[0].request.path, "/p");
        assert_eq!(reqs[0].request.query.as_deref(), Some("x=1"));
    }

    /// Compared with gunicorn 27 by hand: a `#fragment` reached the path (`PATH_INFO` `/a/b#f`)
    /// or the query (`x=1#f`); gunicorn's `urlsplit` cuts it off both, and so does c10k now.
    #[test]
    fn a_fragment_is_in_neither_path_nor_query() {
        for (target, path, query) in [
            ("/a/b#frag", "/a/b", None),
            ("/a?x=1#frag", "/a", Some("x=1")),
            ("/a#fr?x=1", "/a", None),
            ("/a#", "/a", None),
            ("/#", "/", None),
            ("/p?#f", "/p", Some("")),
            ("https://host:8/p/q#f", "/p/q", None),
            ("http://host?q=1#f", "/", Some("q=1")),
            ("http://host#f?q=1", "/", None),
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let (reqs, res, _) = decode_all(raw.as_bytes());
            res.unwrap();
            let r = &reqs[0].request;
            assert_eq!(
                (r.path.as_str(), r.query.as_deref()),
                (path, query),
                "{target}"
            );
            assert_eq!(r.target, target, "the target keeps it (RAW_URI)");
        }
    }

    /// Compared with gunicorn 27 by hand: a target with raw UTF-8 bytes (`GET /caf\xc3\xa9`) was
    /// taken (other non-ASCII bytes got 400), and a WSGI app saw it decoded as UTF-8 in `RAW_URI`
    /// but as latin-1 in `PATH_INFO`. gunicorn refuses any byte outside printable ASCII (RFC
    /// 9112 §3.2); so does c10k now, whatever the bytes.
    #[test]
    fn a_target_outside_ascii_is_refused() {
        for raw in [
            &b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            b"GET /caf\xe9 HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /?q=\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            let err = decode_all(raw).1.unwrap_err();
            assert_eq!(err.status, 400, "{}", String::from_utf8_lossy(raw));
            assert!(err.reason.contains("request target"), "{}", err.reason);
        }
        let (reqs, res, _) = decode_all(b"GET /caf%C3%A9 HTTP/1.1\r\nHost: h\r\n\r\n");
        res.unwrap();
        assert_eq!(reqs[0].request.path, "/caf%C3%A9");
    }

    /// Compared with gunicorn 27 by hand (`--limit-request-line 4094`): a line of exactly the limit
    /// got 414 because its CR was counted; gunicorn counts the line without CRLF and takes it.
    #[test]
    fn a_request_line_of_exactly_the_limit_is_taken() {
        let limits = Limits {
            max_request_line: 100,
            ..Limits::default()
        };
        let line = |len: usize| format!("GET /{} HTTP/1.1", "a".repeat(len - 14));
        for (len, ending, want) in [
            (100, "\r\n", None),
            (100, "\n", None),
            (101, "\r\n", Some(414)),
            (101, "\n", Some(414)),
        ] {
            let raw = format!("{}{ending}Host: h\r\n\r\n", line(len));
            assert_eq!(raw.find(ending), Some(len));
            // At once, and byte by byte (a CR waiting for its LF is not counted either).
            let whole = decode_chunks(&limits, [raw.as_bytes()]);
            let split = decode_chunks(&limits, raw.as_bytes().chunks(1));
            assert_eq!(whole, split, "{len}{ending:?}");
            match want {
                None => assert_eq!((whole.requests.len(), whole.refused), (1, None)),
                Some(status) => assert_eq!(whole.refused.map(|r| r.0), Some(status)),
            }
        }
    }

    #[test]
    fn the_request_carries_every_header_version_and_addresses() {
        let info = ConnInfo {
            peer: "192.0.2.1:4000".parse().ok(),
            local: "127.0.0.1:8000".parse().ok(),
            transport: Transport::Tcp,
        };
        let mut d = Decoder::new(Limits::default()).with_conn(info);
        let mut buf = BytesMut::from(
            &b"GET /a%20b?x=1 HTTP/1.0\r\nHost: h\r\nCookie: a=1\r\nX-Latin: caf\xe9\r\ncookie: b=2\r\n\r\n"[..],
        );
        let r = d.decode(&mut buf).unwrap().unwrap().request;
        assert_eq!(r.target, "/a%20b?x=1");
        assert_eq!(r.path, "/a%20b");
        assert_eq!(r.version, Version::Http10);
        assert_eq!(r.peer, info.peer);
        assert_eq!(r.local, info.local);
        let names: Vec<_> = r.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Host", "Cookie", "X-Latin", "cookie"]);
        let cookies: Vec<_> = r.headers.get_all("cookie").map(|v| &v[..]).collect();
        assert_eq!(cookies, [&b"a=1"[..], &b"b=2"[..]]);
        assert_eq!(&r.headers.get("x-latin").unwrap()[..], b"caf\xe9");
    }

    /// gunicorn 27, checked by hand: from a `--forwarded-allow-ips` peer, the `_` names listed in
    /// its `--forwarder-headers` (default `SCRIPT_NAME,PATH_INFO`) reach the environ as
    /// `HTTP_NAME` (and a `SCRIPT_NAME` one mounts the app there: `cgi::front_mount`); from anyone
    /// else they are dropped, as every `_` name. c10k dropped them from everyone.
    #[test]
    fn a_trusted_fronts_forwarder_headers_reach_the_environ() {
        type Vars = Vec<(String, String)>;
        let vars = |peer: &str, names: &[&str], target: &str, headers: &str| {
            let info = ConnInfo {
                peer: Some(peer.parse().unwrap()),
                ..ConnInfo::default()
            };
            let limits = Limits {
                forwarder_headers: forwarder_names(names),
                ..Limits::default()
            };
            let mut d = Decoder::new(limits).with_conn(info);
            let raw = format!("GET {target} HTTP/1.1\r\nHost: h\r\n{headers}\r\n");
            d.decode(&mut BytesMut::from(raw.as_bytes()))
                .map(|r| {
                    let r = r.unwrap().request;
                    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
                    r.cgi_vars
                        .iter()
                        .map(|(k, v)| (text(k), text(v)))
                        .collect::<Vars>()
                })
                .map_err(|e| (e.status, e.reason.into_owned()))
        };
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let default = ["script_name", " PATH_INFO "];
        let (local, far) = ("127.0.0.1:5000", "192.0.2.1:5000");
        assert_eq!(
            vars(local, &default, "/api/a%20b?q=1", "SCRIPT_NAME: /api/\r\n"),
            Ok(vec![pair("HTTP_SCRIPT_NAME", "/api/")])
        );
        // Repeats joined; a name not listed (and one without `_`) is not a forwarder header.
        assert_eq!(
            vars(
                local,
                &default,
                "/",
                "PATH_INFO: /a\r\nRemote_User: x\r\nPath-Info: /c\r\nPATH_INFO: /b\r\n"
            ),
            Ok(vec![pair("HTTP_PATH_INFO", "/a, /b")])
        );
        assert_eq!(
            vars(local, &["*"], "/", "Remote_User: x\r\n"),
            Ok(vec![pair("HTTP_REMOTE_USER", "x")])
        );
        // Not from a peer outside --forwarded-allow-ips, and not when the list is empty.
        assert_eq!(
            vars(far, &default, "/api/x", "SCRIPT_NAME: /api\r\n"),
            Ok(vec![])
        );
        assert_eq!(
            vars(local, &[""], "/api/x", "SCRIPT_NAME: /api\r\n"),
            Ok(vec![])
        );
        // A path outside the front's mount point is not the server's to refuse (the WSGI
        // handler answers 500; the built-in app has no mount point): passed on as sent.
        for target in ["/other", "/apix"] {
            assert_eq!(
                vars(local, &default, target, "SCRIPT_NAME: /api\r\n"),
                Ok(vec![pair("HTTP_SCRIPT_NAME", "/api")]),
                "{target}"
            );
        }
    }

    #[test]
    fn a_trusted_proxys_scheme_headers_make_the_request_https() {
        let scheme = |peer: Option<&str>, allow: &str, headers: &str| {
            let info = ConnInfo {
                peer: peer.map(|p| p.parse().unwrap()),
                ..ConnInfo::default()
            };
            let allow: Vec<AllowFrom> = allow.split(',').map(|a| a.parse().unwrap()).collect();
            let limits = Limits {
                forwarded_allow: allow.into(),
                ..Limits::default()
            };
            let mut d = Decoder::new(limits).with_conn(info);
            let raw = format!("GET / HTTP/1.1\r\nHost: h\r\n{headers}\r\n");
            d.decode(&mut BytesMut::from(raw.as_bytes()))
                .map(|r| r.unwrap().request.scheme)
                .map_err(|e| e.status)
        };
        let (local, far) = (Some("127.0.0.1:5000"), Some("192.0.2.1:5000"));
        let loopback = "127.0.0.1,::1";
        assert_eq!(
            scheme(local, loopback, "X-Forwarded-Proto: https\r\n"),
            Ok(Scheme::Https)
        );
        assert_eq!(
            scheme(local, loopback, "x-forwarded-ssl: on\r\n"),
            Ok(Scheme::Https)
        );
        assert_eq!(
            scheme(local, loopback, "X-Forwarded-Protocol: ssl\r\n"),
            Ok(Scheme::Https)
        );
        assert_eq!(
            scheme(local, loopback, "X-Forwarded-Proto: http\r\n"),
            Ok(Scheme::Http)
        );
        assert_eq!(scheme(local, loopback, ""), Ok(Scheme::Http));
        // Anyone else could claim it: not believed, unless the list says so.
        assert_eq!(
            scheme(far, loopback, "X-Forwarded-Proto: https\r\n"),
            Ok(Scheme::Http)
        );
        assert_eq!(
            scheme(far, "192.0.2.0/24", "X-Forwarded-Proto: https\r\n"),
            Ok(Scheme::Https)
        );
        assert_eq!(
            scheme(far, "*", "X-Forwarded-Proto: https\r\n"),
            Ok(Scheme::Https)
        );
        // A unix socket's peer is the proxy on this machine (gunicorn trusts it too).
        assert_eq!(
            scheme(None, loopback, "X-Forwarded-Proto: https\r\n"),
            Ok(Scheme::Https)
        );
        // Two that disagree: the app must not pick one.
        let both = "X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n";
        assert_eq!(scheme(local, loopback, both), Err(400));
        // ... unless they come from a peer nobody believes anyway.
        assert_eq!(scheme(far, loopback, both), Ok(Scheme::Http));
    }

    #[test]
    fn smuggling_shaped_hosts_chunk_sizes_and_targets_are_named() {
        let err = |raw: &[u8]| decode_all(raw).1.unwrap_err();
        for host in ["a b", "user@evil", "a\tb"] {
            let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            let e = err(raw.as_bytes());
            assert_eq!(
                (e.status, e.reason.as_ref()),
                (400, "invalid Host header"),
                "{host}"
            );
        }
        let chunked = |size: &str| {
            format!(
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nabc\r\n0\r\n\r\n"
            )
        };
        let e = err(chunked("3 ").as_bytes());
        assert_eq!((e.status, e.reason.as_ref()), (400, "invalid chunk size"));
        let (reqs, res, _) = decode_all(chunked("3 ;ext=1").as_bytes());
        res.unwrap();
        assert_eq!(&reqs[0].request.body.to_bytes().unwrap()[..], b"abc");
        let e = err(b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(e.reason, "invalid request target");
        let e = err(b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(e.reason, "invalid method");
    }

    /// gunicorn's corpus, invalid/041: a second `Content-Type` is a 400 (RFC 9110 §5.3: its
    /// grammar has one member, so two cannot be combined). c10k handed the app both, joined
    /// (`application/json, text/html`), so a filter in front that read one and the app could
    /// disagree on what the body is.
    #[test]
    fn a_second_content_type_is_refused() {
        for second in ["text/html", "application/json"] {
            let raw = format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 content-type: {second}\r\nContent-Length: 2\r\n\r\n{{}}"
            );
            let d = decode_chunks(&Limits::default(), [raw.as_bytes()]);
            assert!(d.requests.is_empty(), "{second}: {d:?}");
            assert_eq!(
                d.refused,
                Some((400, "more than one Content-Type header".to_owned()))
            );
        }
        let one = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi";
        let d = decode_chunks(&Limits::default(), [&one[..]]);
        assert!(d.refused.is_none(), "{d:?}");
        assert_eq!(d.requests.len(), 1);
    }

    /// gunicorn's --limit-request-field_size: a header line (CRLF included) over it is a 431;
    /// c10k had no such limit, and refused the flag.
    #[test]
    fn a_header_line_over_the_field_size_limit_is_a_431() {
        let limits = Limits {
            max_field_size: 100,
            ..Limits::default()
        };
        let with_field = |len: usize| {
            // "X-A: " + value + CRLF is `len` bytes.
            let raw = format!(
                "GET / HTTP/1.1\r\nHost: x\r\nX-A: {}\r\n\r\n",
                "v".repeat(len - 7)
            );
            decode_chunks(&limits, [raw.as_bytes()]).refused
        };
        assert_eq!(with_field(100), None);
        let (status, reason) = with_field(101).unwrap();
        assert_eq!(
            (status, reason.as_str()),
            (431, "header field X-A longer than 100 bytes")
        );
        let unlimited = Limits {
            max_field_size: 0,
            ..Limits::default()
        };
        let raw = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: {}\r\n\r\n",
            "v".repeat(20_000)
        );
        assert_eq!(decode_chunks(&unlimited, [raw.as_bytes()]).refused, None);
        assert_eq!(
            decode_chunks(&Limits::default(), [raw.as_bytes()])
                .refused
                .map(|r| r.0),
            Some(431)
        );
        // A number too large for 64 bits is still a length: too large, not malformed.
        let huge = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_eq!(decode_all(huge).1.unwrap_err().status, 413);
        let zeros =
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 000000000000000000000002\r\n\r\nhi";
        let (reqs, res, _) = decode_all(zeros);
        res.unwrap();
        assert_eq!(&reqs[0].request.body.to_bytes().unwrap()[..], b"hi");
    }

    /// A limit of fields above the 128 parsed on the stack: heads up to it are taken (parsed
    /// again with room for all), one more field is a 431.
    #[test]
    fn more_fields_than_the_stack_holds_are_parsed_up_to_the_limit() {
        let limits = Limits {
            max_headers: 300,
            ..Limits::default()
        };
        let head = |fields: usize| {
            let many: String = (1..fields).map(|i| format!("X-{i}: v\r\n")).collect();
            format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")
        };
        let ok = decode_chunks(&limits, [head(300).as_bytes()]);
        assert_eq!(ok.refused, None);
        assert_eq!(ok.requests[0].headers.len(), 300);
        let over = decode_chunks(&limits, [head(301).as_bytes()]);
        assert_eq!(over.refused.map(|r| r.0), Some(431));
    }

    fn small_buffer() -> Limits {
        Limits {
            body_buffer: 16,
            ..Limits::default()
        }
    }

    #[test]
    fn bodies_above_the_buffer_are_spooled_to_a_file() {
        let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut sized = format!(
            "POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        sized.extend_from_slice(&body);
        let mut chunked =
            b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for part in body.chunks(300) {
            chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            chunked.extend_from_slice(part);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        for raw in [&sized, &chunked] {
            for piece in [1, 7, 4096] {
                let mut d = Decoder::new(small_buffer());
                let mut buf = BytesMut::new();
                let mut got = None;
                for c in raw.chunks(piece) {
                    buf.extend_from_slice(c);
                    if let Some(inc) = d.decode(&mut buf).unwrap() {
                        got = Some(inc.request.body);
                    }
                    // The read buffer never holds more than a piece of the body.
                    assert!(buf.len() <= piece + 100, "{}", buf.len());
                }
                let got = got.expect("a request");
                assert!(matches!(got, RequestBody::File { .. }), "{got:?}");
                assert_eq!(got.to_bytes().unwrap().to_vec(), body);
            }
        }
        // At or under the buffer: memory.
        let (reqs, res, _) =
            decode_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
        res.unwrap();
        assert!(reqs[0].request.body.as_bytes().is_some());
    }

    /// The request corpus of the integration tests, run against the decoder directly: every
    /// valid case decodes to a request, every invalid one the codec refuses gets its status.
    /// Cases the codec accepts but the application refuses (a bad `?delay=`) are left to the
    /// integration test.
    #[test]
    fn corpus_against_the_decoder_and_any_split_gives_the_same_result() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../c10k/tests/requests");
        let limits = Limits {
            max_body: 1_000_000,
            ..Limits::default()
        };
        let mut checked = 0;
        for kind in ["valid", "invalid"] {
            let mut files: Vec<_> = std::fs::read_dir(dir.join(kind))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "http"))
                .collect();
            files.sort();
            for path in files {
                let raw = std::fs::read(&path).unwrap();
                let expect = std::fs::read_to_string(path.with_extension("expect")).unwrap();
                let want: u16 = expect
                    .lines()
                    .find_map(|l| l.strip_prefix("status = "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap();
                let whole = decode_chunks(&limits, [&raw[..]]);
                let name = path.display();
                if kind == "valid" {
                    assert!(whole.refused.is_none(), "{name}: {whole:?}");
                    assert!(!whole.requests.is_empty(), "{name}: no request");
                } else if let Some((status, _)) = &whole.refused {
                    assert_eq!(*status, want, "{name}: {whole:?}");
                } else {
                    assert!(
                        !whole.requests.is_empty(),
                        "{name}: neither request nor refusal"
                    );
                }
                // Every split point of a small case; about 200 of a large one (the 40 KB head
                // would make this quadratic).
                let step = (raw.len() / 200).max(1);
                for i in (0..=raw.len()).step_by(step) {
                    let split = decode_chunks(&limits, [&raw[..i], &raw[i..]]);
                    assert_eq!(split, whole, "{name} split at {i}");
                }
                let bytes = decode_chunks(&limits, raw.chunks(step));
                assert_eq!(bytes, whole, "{name} {step} byte(s) at a time");
                let small = decode_chunks(
                    &Limits {
                        body_buffer: 4,
                        ..limits.clone()
                    },
                    raw.chunks(3 * step),
                );
                assert_eq!(small, whole, "{name} spooled, {} bytes at a time", 3 * step);
                checked += 1;
            }
        }
        assert!(checked >= 40, "only {checked} corpus cases");
    }
}
