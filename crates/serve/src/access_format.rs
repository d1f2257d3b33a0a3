//! `--access-log-format` (gunicorn's `--access-logformat`): an access log line built from
//! gunicorn's atoms, `%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"` and the rest.
//!
//! The format is parsed once, when a worker opens its access log, into pieces; a line is then
//! one pass over them. Request header atoms (`%({X-Forwarded-For}i)s`) are looked up when the
//! request is decoded (the request itself goes to the application by value), response header
//! atoms (`%({Content-Type}o)s`) among the application's own header fields when it answers (as
//! gunicorn's, which never sees the `Date`, `Server` or `Connection` it adds itself), and only
//! the names the format asks for are kept. WSGI environ atoms (`%({PATH_INFO}e)s`, the name in
//! any case, as gunicorn looks it up) are the variables the server derives from the request,
//! read when it is decoded by [`c10k_http::cgi`]'s rules, the same that build a hosted app's
//! environ, so the log prints what the app was given; the built-in app gets the same values. A
//! variable the environ has with an empty value prints nothing (gunicorn's `QUERY_STRING` of a
//! request without a query), one it has not prints `-`. Keys the application or a middleware adds
//! to its environ, and the environ's Python objects (`wsgi.input`, `wsgi.errors`, ...), live in
//! Python, out of the log's sight: `-`. As in gunicorn, other atoms c10k cannot fill (unknown
//! names) print `-`. As in gunicorn, `%(U)s` is `PATH_INFO` and `%(f)s`/`%(a)s` are header atoms,
//! and every header field, the app's or the client's, is latin-1 text like the environ's (each
//! byte one character), so bytes outside ASCII print as gunicorn writes them. Strings from the
//! client and the application are escaped as in the combined format, so no client can forge a
//! log line; query strings are masked as in `%(q)s`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use c10k_http::cgi::{self, QueryIn, Var};
use c10k_http::{Request, Response};

use crate::proto::RequestMeta;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Lit(String),
    /// A one-letter gunicorn atom.
    Atom(char),
    /// The request header at this index of [`AccessFormat::headers`].
    Header(usize),
    /// The response header at this index of [`AccessFormat::resp_headers`].
    RespHeader(usize),
    /// The environ variable at this index of [`AccessFormat::environ`].
    Environ(usize),
    /// An atom c10k cannot fill: `-`.
    Dash,
}

/// A parsed `--access-log-format`.
#[derive(Clone, Debug)]
pub(crate) struct AccessFormat {
    pieces: Vec<Piece>,
    /// The request headers the format prints, lower-case.
    headers: Vec<String>,
    /// The response headers the format prints, lower-case.
    resp_headers: Vec<String>,
    /// The environ variables the format prints.
    environ: Vec<Var>,
    /// Where `Authorization` is among them, for `%(u)s` (the Basic auth user).
    auth: Option<usize>,
}

/// Everything a line can print about one request.
pub(crate) struct Line<'a> {
    pub peer: Option<SocketAddr>,
    pub meta: &'a RequestMeta,
    pub status: u16,
    pub body_len: usize,
    pub now_us: u64,
    pub micros: u64,
    pub headers: &'a [Option<String>],
    /// The values of [`AccessFormat::resp_headers`], in order.
    pub resp_headers: &'a [Option<String>],
    /// The values of [`AccessFormat::environ`], in order.
    pub environ: &'a [Option<String>],
    pub mask_query: bool,
}

/// The one-letter atoms read here; `U`, `f` and `a` are environ and header atoms (see [`atom`]).
const ATOMS: &str = "hlutrmqHsBbTMDLp";

impl AccessFormat {
    pub fn parse(format: &str) -> AccessFormat {
        let mut pieces = Vec::new();
        let mut headers: Vec<String> = Vec::new();
        let mut resp_headers: Vec<String> = Vec::new();
        let mut environ: Vec<Var> = Vec::new();
        let mut lit = String::new();
        let mut rest = format;
        while let Some(at) = rest.find('%') {
            lit.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(r) = rest.strip_prefix("%%") {
                lit.push('%');
                rest = r;
                continue;
            }
            // %(name)s — any one conversion letter after the parenthesis, as Python's % takes.
            let parsed = rest.strip_prefix("%(").and_then(|r| {
                let close = r.find(')')?;
                let conv = r[close + 1..].chars().next()?;
                Some((&r[..close], &r[close + 1 + conv.len_utf8()..]))
            });
            let Some((name, after)) = parsed else {
                lit.push('%');
                rest = &rest[1..];
                continue;
            };
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(atom(name, &mut headers, &mut resp_headers, &mut environ));
            rest = after;
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        let auth = pieces
            .contains(&Piece::Atom('u'))
            .then(|| {
                match atom(
                    "{authorization}i",
                    &mut headers,
                    &mut resp_headers,
                    &mut environ,
                ) {
                    Piece::Header(i) => Some(i),
                    _ => None,
                }
            })
            .flatten();
        AccessFormat {
            pieces,
            headers,
            resp_headers,
            environ,
            auth,
        }
    }

    /// The format prints environ variables, for [`AccessFormat::environ_values`].
    pub fn wants_environ(&self) -> bool {
        !self.environ.is_empty()
    }

    /// The values of the environ variables the format prints, as the environ of `req` holds them
    /// for an application mounted at `script_name` (latin-1 text, as the environ's `str`);
    /// `mask_query`: sensitive-looking query values masked as in `%(q)s`.
    pub fn environ_values(
        &self,
        req: &Request,
        script_name: &str,
        mask_query: bool,
    ) -> Vec<Option<String>> {
        self.environ
            .iter()
            .map(|var| {
                let value = var.value(req, script_name)?;
                let text = cgi::latin1(&value);
                let text = match (mask_query, var.query_in()) {
                    (true, Some(QueryIn::Value)) => crate::status::redact::query(&text),
                    (true, Some(QueryIn::Target)) => crate::status::redact::target(&text),
                    _ => text,
                };
                Some(text.into_owned())
            })
            .collect()
    }

    /// The request headers the format prints, for [`AccessFormat::header_values`].
    pub fn wants_headers(&self) -> bool {
        !self.headers.is_empty()
    }

    /// The response headers the format prints, for [`AccessFormat::response_header_values`].
    pub fn wants_response_headers(&self) -> bool {
        !self.resp_headers.is_empty()
    }

    /// The values of the response headers the format prints, from the application's header
    /// fields (several fields of a name joined with `,`), latin-1 text as the app's `str`s were.
    pub fn response_header_values(&self, resp: &Response) -> Vec<Option<String>> {
        self.resp_headers
            .iter()
            .map(|name| {
                let joined: Vec<String> = resp
                    .headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| cgi::latin1(v).into_owned())
                    .collect();
                (!joined.is_empty()).then(|| joined.join(","))
            })
            .collect()
    }

    /// The values of the headers the format prints (several fields of a name joined with `,`),
    /// latin-1 text as gunicorn's header `str`s are.
    pub fn header_values(&self, req: &Request) -> Vec<Option<String>> {
        self.headers
            .iter()
            .map(|name| {
                let mut values = req.headers.get_all(name).peekable();
                values.peek()?;
                let joined: Vec<String> = values.map(|v| cgi::latin1(v).into_owned()).collect();
                Some(joined.join(","))
            })
            .collect()
    }

    pub fn render(&self, l: &Line<'_>) -> String {
        let mut out = String::with_capacity(160);
        let log = l.meta.log.as_deref();
        let target = log.map(|f| {
            if l.mask_query {
                crate::status::redact::target(&f.target).into_owned()
            } else {
                f.target.clone()
            }
        });
        let query = target
            .as_deref()
            .and_then(|t| t.split_once('?'))
            .map(|(_, q)| q);
        let or_dash = |out: &mut String, v: Option<&str>| match v {
            Some(v) if !v.is_empty() => crate::log_text::escape_into(out, v),
            _ => out.push('-'),
        };
        for piece in &self.pieces {
            match piece {
                Piece::Lit(s) => out.push_str(s),
                Piece::Dash => out.push('-'),
                Piece::Header(i) => {
                    or_dash(&mut out, l.headers.get(*i).and_then(|v| v.as_deref()));
                }
                Piece::RespHeader(i) => {
                    or_dash(&mut out, l.resp_headers.get(*i).and_then(|v| v.as_deref()));
                }
                // An empty value is printed as it is (gunicorn's), a missing one as `-`.
                Piece::Environ(i) => match l.environ.get(*i).and_then(|v| v.as_deref()) {
                    Some(v) => crate::log_text::escape_into(&mut out, v),
                    None => out.push('-'),
                },
                Piece::Atom(c) => match c {
                    'h' => match l.peer {
                        Some(p) => {
                            let _ = write!(out, "{}", p.ip());
                        }
                        None => out.push_str("unix"),
                    },
                    'l' => out.push('-'),
                    'u' => or_dash(
                        &mut out,
                        self.auth
                            .and_then(|i| l.headers.get(i)?.as_deref())
                            .and_then(basic_user)
                            .as_deref(),
                    ),
                    't' => {
                        out.push('[');
                        crate::log_text::clf_time(&mut out, l.now_us / 1_000_000);
                        out.push(']');
                    }
                    'r' => {
                        match log {
                            Some(f) => {
                                crate::log_text::escape_into(&mut out, &f.method);
                                out.push(' ');
                                crate::log_text::escape_into(
                                    &mut out,
                                    target.as_deref().unwrap_or(""),
                                );
                            }
                            None => out.push('-'),
                        }
                        let _ = write!(out, " HTTP/1.{}", l.meta.minor_version);
                    }
                    'm' => or_dash(&mut out, log.map(|f| f.method.as_str())),
                    'q' => {
                        if let Some(q) = query {
                            crate::log_text::escape_into(&mut out, q);
                        }
                    }
                    'H' => {
                        let _ = write!(out, "HTTP/1.{}", l.meta.minor_version);
                    }
                    's' => {
                        let _ = write!(out, "{}", l.status);
                    }
                    'B' => {
                        let _ = write!(out, "{}", l.body_len);
                    }
                    'b' => match l.body_len {
                        0 => out.push('-'),
                        n => {
                            let _ = write!(out, "{n}");
                        }
                    },
                    'T' => {
                        let _ = write!(out, "{}", l.micros / 1_000_000);
                    }
                    'M' => {
                        let _ = write!(out, "{}", l.micros / 1_000);
                    }
                    'D' => {
                        let _ = write!(out, "{}", l.micros);
                    }
                    'L' => {
                        let _ = write!(out, "{}.{:06}", l.micros / 1_000_000, l.micros % 1_000_000);
                    }
                    'p' => {
                        let _ = write!(out, "<{}>", std::process::id());
                    }
                    _ => out.push('-'),
                },
            }
        }
        out.push('\n');
        out
    }
}

/// The user name of a `Basic` `Authorization` value (gunicorn's `%(u)s`); never the password,
/// and none if it is not UTF-8, as in gunicorn.
fn basic_user(value: &str) -> Option<String> {
    let (scheme, b64) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in b64.trim().bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    // Split before decoding, and UTF-8 or nothing: gunicorn's `-` for a user that is not.
    let user = out.split(|&b| b == b':').next().unwrap_or_default();
    String::from_utf8(user.to_vec()).ok()
}

fn atom(
    name: &str,
    headers: &mut Vec<String>,
    resp_headers: &mut Vec<String>,
    environ: &mut Vec<Var>,
) -> Piece {
    /// The index of `name` (lower-cased) in `names`, added if new.
    fn index(names: &mut Vec<String>, name: &str) -> usize {
        let name = name.to_ascii_lowercase();
        match names.iter().position(|h| *h == name) {
            Some(i) => i,
            None => {
                names.push(name);
                names.len() - 1
            }
        }
    }
    if let Some(inner) = name.strip_prefix('{') {
        return match inner.rsplit_once('}') {
            Some((header, "i")) if !header.is_empty() => Piece::Header(index(headers, header)),
            Some((header, "o")) if !header.is_empty() => {
                Piece::RespHeader(index(resp_headers, header))
            }
            Some((key, "e")) if !key.is_empty() => {
                let var = Var::new(key);
                Piece::Environ(match environ.iter().position(|v| *v == var) {
                    Some(i) => i,
                    None => {
                        environ.push(var);
                        environ.len() - 1
                    }
                })
            }
            _ => Piece::Dash,
        };
    }
    // As gunicorn's: `U` is `PATH_INFO`, `f` and `a` the request's header fields (its
    // `HTTP_REFERER` and `HTTP_USER_AGENT`), text as the environ's `str`s are.
    match name {
        "U" => return atom("{path_info}e", headers, resp_headers, environ),
        "f" => return atom("{referer}i", headers, resp_headers, environ),
        "a" => return atom("{user-agent}i", headers, resp_headers, environ),
        _ => {}
    }
    let mut chars = name.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if ATOMS.contains(c) => Piece::Atom(c),
        _ => Piece::Dash,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Decoder, Limits};
    use bytes::BytesMut;

    /// A line of a request answered at the epoch in no time, from no peer, queries masked.
    fn plain<'a>(
        meta: &'a RequestMeta,
        status: u16,
        headers: &'a [Option<String>],
        resp_headers: &'a [Option<String>],
        environ: &'a [Option<String>],
    ) -> Line<'a> {
        Line {
            peer: None,
            meta,
            status,
            body_len: 0,
            now_us: 0,
            micros: 0,
            headers,
            resp_headers,
            environ,
            mask_query: true,
        }
    }

    fn decoded(raw: &[u8]) -> crate::proto::Incoming {
        let mut buf = BytesMut::from(raw);
        let mut d = Decoder::new(Limits::default()).capture_log_fields(true);
        d.decode(&mut buf).unwrap().unwrap()
    }

    #[test]
    fn gunicorns_default_format_and_its_atoms() {
        let inc = decoded(
            b"GET /a/b?x=1&token=s3cret HTTP/1.1\r\nHost: h\r\nUser-Agent: ab/2.3\r\n\
              X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
        );
        let f = AccessFormat::parse(
            "%(h)s %(l)s %(u)s %(t)s \"%(r)s\" %(s)s %(b)s \"%(f)s\" \"%(a)s\" %(m)s %(U)s \
             %(q)s %(H)s %(B)s %(T)s %(M)s %(D)s %(L)s %({x-forwarded-for}i)s \
             %({X-Missing}i)s %({Content-Type}o)s %({HOME}e)s %(zz)s 100%% %(bad",
        );
        assert!(f.wants_headers() && f.wants_response_headers());
        let headers = f.header_values(&inc.request);
        let resp_headers = f.response_header_values(&Response::text(200, "x"));
        let environ = f.environ_values(&inc.request, "", true);
        let line = f.render(&Line {
            peer: "192.0.2.7:5555".parse().ok(),
            meta: &inc.meta,
            status: 200,
            body_len: 0,
            now_us: 971_186_136_000_000,
            micros: 2_345_678,
            headers: &headers,
            resp_headers: &resp_headers,
            environ: &environ,
            mask_query: true,
        });
        assert_eq!(
            line,
            "192.0.2.7 - - [10/Oct/2000:13:55:36 +0000] \"GET /a/b?x=1&token=*** HTTP/1.1\" \
             200 - \"-\" \"ab/2.3\" GET /a/b x=1&token=*** HTTP/1.1 0 2 2345 2345678 2.345678 \
             203.0.113.9,10.0.0.1 - text/plain; charset=utf-8 - - 100% %(bad\n"
        );
    }

    #[test]
    fn response_header_atoms_are_the_applications_fields() {
        let inc = decoded(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let f = AccessFormat::parse("%({set-cookie}o)s|%({X-Request-Id}o)s|%({date}o)s");
        assert!(!f.wants_headers() && f.wants_response_headers());
        let resp = Response::new(302)
            .with_header("Set-Cookie", "a=1")
            .with_header("set-cookie", "b=\"2\"")
            .with_header("X-Request-Id", "r-7");
        let resp_headers = f.response_header_values(&resp);
        let line = f.render(&plain(&inc.meta, 302, &[], &resp_headers, &[]));
        // Escaped like every string; the server's own Date is not among the app's fields.
        assert_eq!(line, "a=1,b=\\\"2\\\"|r-7|-\n");
    }

    #[test]
    fn environ_atoms_are_the_servers_environ_in_any_case() {
        let mut inc = decoded(
            b"POST /api/caf%C3%A9?x=1&token=s3cret HTTP/1.0\r\nHost: example.com\r\n\
              Cookie: a=1\r\nX-A: \"q\"\r\nCookie: b=2\r\nX_Forwarded_For: spoofed\r\n\
              Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
        );
        inc.request.peer = "192.0.2.7:5555".parse().ok();
        inc.request.local = "127.0.0.1:8000".parse().ok();
        let f = AccessFormat::parse(
            "%({REQUEST_METHOD}e)s %({script_name}e)s %({Path_Info}e)s [%({query_string}e)s] \
             %({RAW_URI}e)s %({server_protocol}e)s %({server_name}e)s:%({server_port}e)s \
             %({remote_addr}e)s:%({remote_port}e)s %({content_type}e)s %({content_length}e)s \
             %({http_cookie}e)s %({HTTP_X_A}e)s %({http_x_forwarded_for}e)s \
             %({wsgi.url_scheme}e)s %({wsgi.input}e)s %({HOME}e)s %({path_info}e)s",
        );
        assert!(f.wants_environ() && !f.wants_headers() && !f.wants_response_headers());
        let line = |environ: &[Option<String>]| {
            f.render(&Line {
                peer: None,
                meta: &inc.meta,
                status: 200,
                body_len: 0,
                now_us: 0,
                micros: 0,
                headers: &[],
                resp_headers: &[],
                environ,
                mask_query: true,
            })
        };
        assert_eq!(
            line(&f.environ_values(&inc.request, "/api", true)),
            "POST /api /caf\u{c3}\u{a9} [x=1&token=***] /api/caf%C3%A9?x=1&token=*** HTTP/1.0 \
             127.0.0.1:8000 192.0.2.7:5555 text/plain 2 a=1; b=2 \\\"q\\\" - http - - \
             /caf\u{c3}\u{a9}\n"
        );
        let values = f.environ_values(&inc.request, "", false);
        assert_eq!(values[2].as_deref(), Some("/api/caf\u{c3}\u{a9}"));
        assert_eq!(values[3].as_deref(), Some("x=1&token=s3cret"));

        // No query, mounted at /: empty values print nothing (gunicorn's); a unix socket has
        // no REMOTE_PORT.
        let mut inc = decoded(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        inc.request.peer = None;
        let f = AccessFormat::parse(
            "[%({query_string}e)s][%({script_name}e)s][%({remote_addr}e)s][%({remote_port}e)s]\
             [%({server_name}e)s:%({server_port}e)s][%({content_length}e)s]",
        );
        let environ = f.environ_values(&inc.request, "", true);
        let line = f.render(&plain(&inc.meta, 200, &[], &[], &environ));
        assert_eq!(line, "[][][][-][h:80][-]\n");
    }

    /// Bytes outside ASCII print as gunicorn 27 prints them to an access log file: each byte of
    /// a header field, of a percent-decoded `PATH_INFO` and of the app's own header field one
    /// character (latin-1, as the environ's `str`s), written as UTF-8 (`%C3%A9` is `Ã©`, `%E9`
    /// is `é`); the `Basic` user is UTF-8 or `-`. Control characters stay escaped (gunicorn
    /// writes them raw). Before, header fields were decoded as UTF-8 with U+FFFD for the rest
    /// (`café \u{fffd}` for `caf\xc3\xa9 \xe9`), `%(U)s` was the raw target path with its
    /// mount (`/mnt/caf%C3%A9%E9`) and a user that is no UTF-8 printed with U+FFFD.
    #[test]
    fn non_ascii_bytes_print_as_gunicorns_latin1_text() {
        // "caf\xe9:pw" and "café:pw"
        let inc = decoded(
            b"GET /mnt/caf%C3%A9%E9%C2%85?v=%C3%A9 HTTP/1.1\r\nHost: h\r\n\
              X-Foo: caf\xc3\xa9 \xe9\r\nX-Foo: \x85\"\r\nReferer: http://x/caf\xc3\xa9\r\n\
              User-Agent: ag\xe9nt\r\nAuthorization: Basic Y2Fm6Tpwdw==\r\n\r\n",
        );
        let f = AccessFormat::parse(
            "%(U)s|%({PATH_INFO}e)s|%({x-foo}i)s|%({HTTP_X_FOO}e)s|%(f)s|%(a)s|%(u)s|\
             %({x-out}o)s|%(q)s|%(r)s",
        );
        let headers = f.header_values(&inc.request);
        let resp = Response::new(200).with_header("X-Out", b"caf\xe9 \xc3\xa9".to_vec());
        let resp_headers = f.response_header_values(&resp);
        let environ = f.environ_values(&inc.request, "/mnt", true);
        let line = |headers: &[Option<String>]| {
            f.render(&plain(&inc.meta, 200, headers, &resp_headers, &environ))
        };
        assert_eq!(
            line(&headers),
            "/caf\u{c3}\u{a9}\u{e9}\u{c2}\\x85|/caf\u{c3}\u{a9}\u{e9}\u{c2}\\x85|\
             caf\u{c3}\u{a9} \u{e9},\\x85\\\"|caf\u{c3}\u{a9} \u{e9}, \\x85\\\"|\
             http://x/caf\u{c3}\u{a9}|ag\u{e9}nt|-|caf\u{e9} \u{c3}\u{a9}|v=%C3%A9|\
             GET /mnt/caf%C3%A9%E9%C2%85?v=%C3%A9 HTTP/1.1\n"
        );
        let user = |b64: &str| {
            let auth = [Some(format!("Basic {b64}"))];
            let f = AccessFormat::parse("%(u)s");
            f.render(&plain(&inc.meta, 200, &auth, &[], &[]))
        };
        assert_eq!(user("Y2Fmw6k6cHc="), "caf\u{e9}\n");
        assert_eq!(user("Y2Fm6Tpwdw=="), "-\n");
    }

    #[test]
    fn basic_auth_user_without_its_password() {
        // "aladdin:opensesame"
        let inc = decoded(
            b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l\r\n\r\n",
        );
        let f = AccessFormat::parse("%(u)s");
        let headers = f.header_values(&inc.request);
        let line = |headers: &[Option<String>]| f.render(&plain(&inc.meta, 200, headers, &[], &[]));
        assert_eq!(line(&headers), "aladdin\n");
        assert_eq!(line(&[Some("Bearer abc".into())]), "-\n");
        assert_eq!(line(&[Some("Basic !!".into())]), "-\n");
        assert_eq!(line(&[]), "-\n");
        assert_eq!(basic_user("basic dXNlcg=="), Some("user".into()));
    }

    #[test]
    fn client_strings_cannot_forge_lines() {
        let inc = decoded(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\"b\xc2\x85c\r\n\r\n");
        let f = AccessFormat::parse("%({x-a}i)s %(p)s");
        let headers = f.header_values(&inc.request);
        let line = f.render(&Line {
            peer: None,
            meta: &inc.meta,
            status: 200,
            body_len: 3,
            now_us: 0,
            micros: 1,
            headers: &headers,
            resp_headers: &[],
            environ: &[],
            mask_query: false,
        });
        // Latin-1 text, as gunicorn's: U+0085 (NEL, a line break to some readers) is the 0x85.
        assert_eq!(
            line,
            format!("a\\\"b\u{c2}\\x85c <{}>\n", std::process::id())
        );
    }
}
