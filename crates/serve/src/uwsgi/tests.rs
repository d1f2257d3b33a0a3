//! Unit tests of the uwsgi codec: packets as nginx builds them, every split, every refusal.

use super::*;
use c10k_http::Transport;
use std::net::Ipv4Addr;

/// A uwsgi packet: header, vars block, body.
pub(crate) fn packet(modifier1: u8, vars: &[(&[u8], &[u8])], body: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    for (k, v) in vars {
        block.extend_from_slice(&(k.len() as u16).to_le_bytes());
        block.extend_from_slice(k);
        block.extend_from_slice(&(v.len() as u16).to_le_bytes());
        block.extend_from_slice(v);
    }
    let mut p = vec![modifier1];
    p.extend_from_slice(&(block.len() as u16).to_le_bytes());
    p.push(0);
    p.extend_from_slice(&block);
    p.extend_from_slice(body);
    p
}

/// What nginx sends with `include uwsgi_params;` for `POST /a%20b/c?x=1&y=%2F` with a body.
fn nginx_vars() -> Vec<(&'static [u8], &'static [u8])> {
    vec![
        (b"QUERY_STRING", b"x=1&y=%2F"),
        (b"REQUEST_METHOD", b"POST"),
        (b"CONTENT_TYPE", b"text/plain"),
        (b"CONTENT_LENGTH", b"5"),
        (b"REQUEST_URI", b"/a%20b/c?x=1&y=%2F"),
        (b"PATH_INFO", b"/a b/c"),
        (b"DOCUMENT_ROOT", b"/usr/share/nginx/html"),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"REQUEST_SCHEME", b"http"),
        (b"REMOTE_ADDR", b"192.0.2.7"),
        (b"REMOTE_PORT", b"51234"),
        (b"SERVER_PORT", b"8080"),
        (b"SERVER_NAME", b"example.test"),
        (b"HTTP_HOST", b"example.test:8080"),
        (b"HTTP_USER_AGENT", b"curl/8.0"),
        (b"HTTP_CONTENT_TYPE", b"text/plain"),
        (b"HTTP_CONTENT_LENGTH", b"5"),
        (b"HTTP_X_FORWARDED_FOR", b"198.51.100.1"),
    ]
}

fn tcp_conn() -> ConnInfo {
    ConnInfo {
        transport: Transport::Tcp,
        peer: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 40000))),
        local: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 3031))),
    }
}

fn decoder() -> Decoder {
    Decoder::new(UwsgiLimits::default(), tcp_conn())
}

/// Everything a request carries, comparable (the body's bytes included).
fn summary(r: &Request) -> String {
    let headers: Vec<_> = r
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
        .collect();
    format!(
        "{} {} path={} query={:?} {:?} {:?} peer={:?} local={:?} {:?} {:?} body={:?}",
        r.method,
        r.target,
        r.path,
        r.query,
        r.version,
        headers,
        r.peer,
        r.local,
        r.transport,
        r.scheme,
        r.body.to_bytes().unwrap()
    )
}

/// Decodes `input` fed in the given pieces; returns what came out and what stayed buffered.
fn decode_pieces(pieces: &[&[u8]]) -> (Vec<String>, Option<UwsgiError>) {
    let mut d = decoder();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(r)) => out.push(summary(&r)),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn decode_one(input: &[u8]) -> Result<Request, UwsgiError> {
    let mut d = decoder();
    let mut buf = BytesMut::from(input);
    match d.decode(&mut buf) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => panic!("incomplete packet"),
        Err(e) => Err(e),
    }
}

/// Decodes a GET that must be served: `REQUEST_METHOD GET`, then `vars`, and no body.
#[track_caller]
fn get(modifier1: u8, vars: &[(&[u8], &[u8])]) -> Request {
    let mut all: Vec<(&[u8], &[u8])> = vec![(b"REQUEST_METHOD", b"GET")];
    all.extend_from_slice(vars);
    decode_one(&packet(modifier1, &all, b"")).unwrap()
}

#[test]
fn maps_nginx_vars_to_the_request() {
    let r = decode_one(&packet(0, &nginx_vars(), b"hello")).unwrap();
    assert_eq!(r.method, Method::Post);
    assert_eq!(r.target, "/a%20b/c?x=1&y=%2F");
    assert_eq!(r.path, "/a%20b/c");
    assert_eq!(r.query.as_deref(), Some("x=1&y=%2F"));
    assert_eq!(r.version, Version::Http11);
    assert_eq!(r.peer, Some("192.0.2.7:51234".parse().unwrap()));
    // SERVER_NAME is a name, not an address: the socket's IP with nginx's port.
    assert_eq!(r.local, Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(r.transport, Transport::Tcp);
    assert_eq!(r.scheme, Scheme::Http);
    assert_eq!(&r.body.to_bytes().unwrap()[..], b"hello");
    let names: Vec<_> = r.headers.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "Content-Type",
            "Content-Length",
            "Host",
            "User-Agent",
            "X-Forwarded-For"
        ]
    );
    assert_eq!(r.content_type(), Some("text/plain"));
    assert_eq!(r.host(), Some("example.test:8080"));
    assert_eq!(r.headers.get_str("content-length"), Some("5"));
    // Every other var, as sent and in order, for the application (WSGI's environ).
    let vars: Vec<(&[u8], &[u8])> = r
        .cgi_vars
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    assert_eq!(
        vars,
        [
            (&b"DOCUMENT_ROOT"[..], &b"/usr/share/nginx/html"[..]),
            (b"REQUEST_SCHEME", b"http"),
            (b"REMOTE_ADDR", b"192.0.2.7"),
            (b"REMOTE_PORT", b"51234"),
            (b"SERVER_PORT", b"8080"),
            (b"SERVER_NAME", b"example.test"),
        ]
    );

    // A GET through uwsgi_params: empty CONTENT_TYPE and CONTENT_LENGTH are no header fields.
    let r = get(
        0,
        &[
            (b"CONTENT_TYPE", b""),
            (b"CONTENT_LENGTH", b""),
            (b"PATH_INFO", b"/"),
        ],
    );
    assert!(r.headers.is_empty(), "{:?}", r.headers);
}

/// A client's chunked body, as nginx passes it on: de-chunked, with `CONTENT_LENGTH`, and the
/// client's `Transfer-Encoding` as a header var. The request says what the app gets: a body of
/// that length, not a chunked one. (Before: `Transfer-Encoding: chunked` was among the headers.)
#[test]
fn a_body_nginx_de_chunked_is_not_announced_as_chunked() {
    let mut vars = nginx_vars();
    vars.retain(|(k, _)| *k != b"HTTP_CONTENT_LENGTH");
    vars.push((b"HTTP_TRANSFER_ENCODING", b"chunked"));
    let r = decode_one(&packet(0, &vars, b"hello")).unwrap();
    assert_eq!(r.headers.get("transfer-encoding"), None);
    assert_eq!(
        r.headers.get("content-length").map(|v| &v[..]),
        Some(&b"5"[..])
    );
    assert_eq!(&r.body.to_bytes().unwrap()[..], b"hello");
}

#[test]
fn every_split_gives_the_one_shot_result() {
    // Two packets back to back, so a split can also fall across a packet boundary.
    let mut input = packet(0, &nginx_vars(), b"hello");
    input.extend_from_slice(&packet(
        30,
        &[
            (b"REQUEST_METHOD", b"GET"),
            (b"SCRIPT_NAME", b"/app"),
            (b"PATH_INFO", b"/app/x"),
        ],
        b"",
    ));
    let (whole, err) = decode_pieces(&[&input]);
    assert!(err.is_none());
    assert_eq!(whole.len(), 2);
    for i in 0..=input.len() {
        let (split, err) = decode_pieces(&[&input[..i], &input[i..]]);
        assert!(err.is_none(), "split at {i}: {err:?}");
        assert_eq!(split, whole, "split at {i}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(decode_pieces(&bytes), (whole, None), "byte at a time");
}

#[test]
fn every_split_of_a_refused_packet_is_refused_the_same() {
    let input = packet(0, &[(b"REQUEST_METHOD", b"GET"), (b"", b"x")], b"");
    let (_, whole) = decode_pieces(&[&input]);
    let whole = whole.expect("refused");
    for i in 0..=input.len() {
        let (out, err) = decode_pieces(&[&input[..i], &input[i..]]);
        assert!(out.is_empty());
        assert_eq!(err.as_ref(), Some(&whole), "split at {i}");
    }
}

#[test]
fn bad_modifier1_is_refused_at_its_first_byte() {
    for m in [1u8, 5, 17, 29, 31, 255] {
        let input = packet(m, &[(b"REQUEST_METHOD", b"GET")], b"");
        let err = decode_one(&input).unwrap_err();
        assert!(matches!(err, UwsgiError::Malformed(_)), "{m}: {err}");
        assert!(err.response().is_none(), "closed without an answer");
    }
    // Somebody speaking HTTP to the uwsgi port: refused on the 'G'.
    let mut d = decoder();
    let mut buf = BytesMut::from(&b"G"[..]);
    assert!(matches!(d.decode(&mut buf), Err(UwsgiError::Malformed(_))));
}

#[test]
fn oversize_vars_block_and_too_many_vars() {
    // A block bigger than the limit is refused from its header alone.
    let mut d = Decoder::new(
        UwsgiLimits {
            max_vars_block: 100,
            ..UwsgiLimits::default()
        },
        tcp_conn(),
    );
    let big = "x".repeat(200);
    let input = packet(0, &[(b"HTTP_X_BIG", big.as_bytes())], b"");
    let mut buf = BytesMut::from(&input[..4]);
    assert!(matches!(d.decode(&mut buf), Err(UwsgiError::Malformed(_))));

    // The whole u16 range is accepted by default (nginx builds packets up to 65,535 bytes).
    let cookie = "c".repeat(65_000);
    let vars: Vec<(&[u8], &[u8])> = vec![
        (b"REQUEST_METHOD", b"GET"),
        (b"PATH_INFO", b"/"),
        (b"HTTP_COOKIE", cookie.as_bytes()),
    ];
    let input = packet(0, &vars, b"");
    assert!(input.len() - 4 <= MAX_VARS_BLOCK);
    let r = decode_one(&input).unwrap();
    assert_eq!(r.headers.get("cookie").map(|v| v.len()), Some(65_000));

    // Too many vars (custom `uwsgi_param`s; header fields have their own limit, below).
    let names: Vec<String> = (0..200).map(|i| format!("X_{i}")).collect();
    let mut vars: Vec<(&[u8], &[u8])> = vec![(b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", b"/")];
    vars.extend(names.iter().map(|n| (n.as_bytes(), &b"1"[..])));
    let err = decode_one(&packet(0, &vars, b"")).unwrap_err();
    assert!(err.to_string().contains("vars"), "{err}");
    // At the limit is fine.
    let limit = UwsgiLimits::default().max_vars;
    vars.truncate(limit);
    decode_one(&packet(0, &vars, b"")).unwrap();
}

// What the HTTP listener answers 400 or 431 is answered the same over uwsgi: nginx passes the
// answer on to its client. Before, each was closed unanswered as a malformed packet, so the
// client got nginx's 502 and no reason: a header name nginx passes on under
// `ignore_invalid_headers off` (`X@Y`, `X/Y`, `X[0]`, non-ASCII; uWSGI serves them), or more
// header fields than --limit-request-fields (100 over HTTP, about 150 over uwsgi).
#[test]
fn header_fields_refused_as_over_http() {
    let with = |extra: &[(&[u8], &[u8])]| {
        let mut vars: Vec<(&[u8], &[u8])> = vec![
            (b"REQUEST_METHOD", b"GET"),
            (b"PATH_INFO", b"/"),
            (b"DOCUMENT_ROOT", b"/srv"),
        ];
        vars.extend_from_slice(extra);
        decode_one(&packet(0, &vars, b""))
    };
    for name in [
        &b"HTTP_X@AT"[..],
        b"HTTP_X/SLASH",
        b"HTTP_X[0]",
        b"HTTP_X\xc3\xa9",
        b"HTTP_",
    ] {
        let err = with(&[(name, b"1")]).unwrap_err();
        assert_eq!(
            err,
            UwsgiError::Refused {
                status: 400,
                reason: "invalid header name".into()
            },
            "{}",
            String::from_utf8_lossy(name)
        );
    }
    for value in [&b"1\r\nEvil: 1"[..], b"a\0b"] {
        let err = with(&[(b"HTTP_X", value)]).unwrap_err();
        assert_eq!(
            err,
            UwsgiError::Refused {
                status: 400,
                reason: "invalid header value".into()
            }
        );
    }
    // A dot is a token character: served.
    with(&[(b"HTTP_X.DOT", b"1")]).unwrap();

    // Header fields: at the limit is fine, one more is a 431.
    let max = UwsgiLimits::default().max_headers;
    let names: Vec<String> = (0..max).map(|i| format!("HTTP_X_{i}")).collect();
    let mut extra: Vec<(&[u8], &[u8])> = names.iter().map(|n| (n.as_bytes(), &b"1"[..])).collect();
    let r = with(&extra).unwrap();
    assert_eq!(r.headers.len(), max);
    extra.push((b"HTTP_ONE_MORE", b"1"));
    let too_many = UwsgiError::Refused {
        status: 431,
        reason: format!("more than {max} header fields").into(),
    };
    assert_eq!(with(&extra).unwrap_err(), too_many);
    // So many that the vars limit is reached first: still the header fields' 431.
    let names: Vec<String> = (0..2 * max).map(|i| format!("HTTP_X_{i}")).collect();
    let extra: Vec<(&[u8], &[u8])> = names.iter().map(|n| (n.as_bytes(), &b"1"[..])).collect();
    assert_eq!(with(&extra).unwrap_err(), too_many);
}

#[test]
fn truncated_body_waits_and_says_how_much_is_missing() {
    let input = packet(
        0,
        &[
            (b"REQUEST_METHOD", b"POST"),
            (b"PATH_INFO", b"/echo"),
            (b"CONTENT_LENGTH", b"10"),
        ],
        b"01234",
    );
    let mut d = decoder();
    let mut buf = BytesMut::from(&input[..]);
    assert!(matches!(d.decode(&mut buf), Ok(None)));
    assert!(d.truncated(buf.len()).contains("(5 body bytes missing)"));
    assert!(!d.is_idle());
    buf.extend_from_slice(b"56789");
    let r = d.decode(&mut buf).unwrap().unwrap();
    assert_eq!(&r.body.to_bytes().unwrap()[..], b"0123456789");
    assert!(d.is_idle());
}

#[test]
fn a_body_over_the_body_buffer_is_spooled_as_it_arrives() {
    // A 50 MB upload behind nginx was held whole in the worker's read buffer before the app
    // ran (four at once: the worker's RSS 37 -> 240 MB; uWSGI's stayed at 41 MB); over HTTP
    // such a body goes to a temporary file past --body-buffer-size. Now uwsgi does the same.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let input = packet(
        0,
        &[
            (b"REQUEST_METHOD", b"POST"),
            (b"PATH_INFO", b"/upload"),
            (b"CONTENT_LENGTH", b"300000"),
        ],
        &body,
    );
    let limits = UwsgiLimits {
        body_buffer: 64 * 1024,
        ..UwsgiLimits::default()
    };
    let mut d = Decoder::new(limits, tcp_conn());
    let mut buf = BytesMut::new();
    let mut request = None;
    for piece in input.chunks(50_000) {
        buf.extend_from_slice(piece);
        if let Some(r) = d.decode(&mut buf).unwrap() {
            request = Some(r);
        }
        // Nothing of the body waits in the read buffer: it is taken as it comes.
        assert!(
            buf.is_empty(),
            "{} bytes left in the read buffer",
            buf.len()
        );
    }
    let r = request.expect("the whole packet was fed");
    assert!(
        matches!(r.body, RequestBody::File { len: 300_000, .. }),
        "{:?}",
        r.body
    );
    assert_eq!(&r.body.to_bytes().unwrap()[..], &body[..]);
    assert!(d.is_idle());

    // Within the buffer it stays in memory.
    let r = decode_one(&packet(
        0,
        &[
            (b"REQUEST_METHOD", b"POST"),
            (b"PATH_INFO", b"/"),
            (b"CONTENT_LENGTH", b"3"),
        ],
        b"abc",
    ))
    .unwrap();
    assert!(matches!(r.body, RequestBody::Memory(_)));
    assert_eq!(&r.body.to_bytes().unwrap()[..], b"abc");
}

#[test]
fn duplicate_vars() {
    // Repeated header vars are repeated fields, in order.
    let r = get(
        0,
        &[
            (b"PATH_INFO", b"/"),
            (b"HTTP_COOKIE", b"a=1"),
            (b"HTTP_COOKIE", b"b=2"),
        ],
    );
    let cookies: Vec<_> = r.headers.get_all("cookie").collect();
    assert_eq!(cookies, [&Bytes::from("a=1"), &Bytes::from("b=2")]);

    // But Host is one field: a second HTTP_HOST comes from the config (Debian's uwsgi_params sets
    // `uwsgi_param HTTP_HOST $host;`, and so did many sites), and the last one wins, as in
    // uWSGI. Before, the app saw "a.test, a.test:8080" (Django: DisallowedHost, a 400).
    let r = get(
        0,
        &[
            (b"PATH_INFO", b"/"),
            (b"HTTP_HOST", b"a.test"),
            (b"HTTP_X_A", b"1"),
            (b"HTTP_HOST", b"a.test:8080"),
        ],
    );
    let hosts: Vec<_> = r.headers.get_all("host").collect();
    assert_eq!(hosts, [&Bytes::from("a.test:8080")]);
    let names: Vec<_> = r.headers.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["Host", "X-A"]);

    // A repeated CGI var: the last wins (uwsgi_params, then the site's own uwsgi_param).
    let r = get(
        0,
        &[
            (b"PATH_INFO", b"/"),
            (b"HTTPS", b""),
            (b"HTTPS", b"on"),
            (b"CONTENT_TYPE", b"a/b"),
            (b"CONTENT_TYPE", b"c/d"),
        ],
    );
    assert_eq!(r.scheme, Scheme::Https);
    assert_eq!(r.content_type(), Some("c/d"));
    assert_eq!(r.headers.get_all("content-type").count(), 1);

    // CONTENT_LENGTH twice: the last wins too, as in uWSGI. `uwsgi_pass_request_body off;
    // uwsgi_param CONTENT_LENGTH "";` after `include uwsgi_params;` (nginx's auth_request idiom)
    // sends the client's length, then "", and no body: before, refused as two different values,
    // every request with a body behind it was nginx's 502 (500 from auth_request).
    let cl = |a: &'static [u8], b: &'static [u8], body: &'static [u8]| {
        let r = decode_one(&packet(
            0,
            &[
                (b"REQUEST_METHOD", b"POST"),
                (b"PATH_INFO", b"/"),
                (b"CONTENT_LENGTH", a),
                (b"CONTENT_LENGTH", b),
            ],
            body,
        ))
        .unwrap_or_else(|e| panic!("CONTENT_LENGTH {a:?} then {b:?}: {e}"));
        let length: Vec<_> = r.headers.get_all("content-length").cloned().collect();
        (r.body.to_bytes().unwrap(), length)
    };
    assert_eq!(
        cl(b"2", b"2", b"ab"),
        (Bytes::from("ab"), vec![Bytes::from("2")])
    );
    assert_eq!(cl(b"5", b"", b""), (Bytes::new(), vec![]));
    assert_eq!(
        cl(b"", b"2", b"ab"),
        (Bytes::from("ab"), vec![Bytes::from("2")])
    );
    assert_eq!(
        cl(b"2", b"1", b"a"),
        (Bytes::from("a"), vec![Bytes::from("1")])
    );
}

#[test]
fn malformed_blocks() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty key", packet(0, &[(b"", b"x")], b"")),
        ("no method", packet(0, &[(b"PATH_INFO", b"/")], b"")),
        (
            "method not a token",
            packet(0, &[(b"REQUEST_METHOD", b"G T"), (b"PATH_INFO", b"/")], b""),
        ),
        ("no path", packet(0, &[(b"REQUEST_METHOD", b"GET")], b"")),
        (
            "bad content length",
            packet(
                0,
                &[
                    (b"REQUEST_METHOD", b"GET"),
                    (b"PATH_INFO", b"/"),
                    (b"CONTENT_LENGTH", b"-1"),
                ],
                b"",
            ),
        ),
        ("empty block", packet(0, &[], b"")),
    ];
    for (what, input) in cases {
        let err = decode_one(&input).unwrap_err();
        assert!(matches!(err, UwsgiError::Malformed(_)), "{what}: {err}");
    }
    // A var whose length runs past the block (the block says 5 bytes, the key says 9).
    let mut input = vec![0u8, 5, 0, 0, 9, 0, b'A', b'B', b'C'];
    let err = decode_one(&input).unwrap_err();
    assert!(err.to_string().contains("past"), "{err}");
    // A lone length byte at the end of the block.
    input = packet(0, &[(b"REQUEST_METHOD", b"GET")], b"");
    input.push(7);
    input[1] += 1;
    assert!(decode_one(&input).is_err());
}

#[test]
fn body_over_the_limit_is_answered_413() {
    let err = decode_one(&packet(
        0,
        &[
            (b"REQUEST_METHOD", b"POST"),
            (b"PATH_INFO", b"/"),
            (b"CONTENT_LENGTH", b"99999999999"),
        ],
        b"",
    ))
    .unwrap_err();
    let resp = err.response().expect("answered");
    assert_eq!(resp.status, 413);
}

#[test]
fn modifier_30_strips_script_name() {
    let vars: &[(&[u8], &[u8])] = &[
        (b"REQUEST_METHOD", b"GET"),
        (b"SCRIPT_NAME", b"/app"),
        (b"PATH_INFO", b"/app/x"),
        (b"QUERY_STRING", b"q=1"),
    ];
    let r = decode_one(&packet(30, vars, b"")).unwrap();
    assert_eq!(r.path, "/x");
    assert_eq!(r.target, "/x?q=1");
    assert_eq!(r.query.as_deref(), Some("q=1"));
    // The mount point goes to the application as sent.
    assert_eq!(r.cgi_var("SCRIPT_NAME").map(|v| &v[..]), Some(&b"/app"[..]));
    // modifier1 0 leaves PATH_INFO alone.
    let r = decode_one(&packet(0, vars, b"")).unwrap();
    assert_eq!(r.path, "/app/x");
    assert_eq!(r.cgi_var("SCRIPT_NAME").map(|v| &v[..]), Some(&b"/app"[..]));
    for (script_name, path_info, path) in [
        // Only a whole path segment is a mount point: /application is not under /app.
        ("/app", "/application", "/application"),
        // The whole path is the mount point: the application's root.
        ("/app", "/app", "/"),
        // What is left always starts with '/'.
        ("/app/", "/app/x", "/x"),
    ] {
        let r = get(
            30,
            &[
                (b"SCRIPT_NAME", script_name.as_bytes()),
                (b"PATH_INFO", path_info.as_bytes()),
            ],
        );
        assert_eq!(
            r.path, path,
            "SCRIPT_NAME {script_name}, PATH_INFO {path_info}"
        );
    }
}

#[test]
fn paths_without_request_uri_or_path_info() {
    // Only REQUEST_URI: path and query come from it.
    let r = get(0, &[(b"REQUEST_URI", b"/p%3F?a=1")]);
    assert_eq!(
        (r.path.as_str(), r.query.as_deref()),
        ("/p%3F", Some("a=1"))
    );
    // PATH_INFO is decoded text: '%', '?', '#' and non-ASCII come back encoded.
    let r = get(0, &[(b"PATH_INFO", "/50%?#é".as_bytes())]);
    assert_eq!(r.path, "/50%25%3F%23%C3%A9");
    assert_eq!(r.target, r.path);
    assert_eq!(r.query, None);
}

#[test]
fn a_fragment_in_request_uri_is_in_neither_path_nor_query() {
    // Without PATH_INFO the path comes from REQUEST_URI: its `#fragment` was part of it.
    let r = get(0, &[(b"REQUEST_URI", b"/p/q#frag")]);
    assert_eq!((r.path.as_str(), r.query.as_deref()), ("/p/q", None));
    assert_eq!(r.target, "/p/q#frag");
    // ... and without QUERY_STRING the query came from it with the fragment on its end.
    let r = get(0, &[(b"REQUEST_URI", b"/p?x=1#frag")]);
    assert_eq!((r.path.as_str(), r.query.as_deref()), ("/p", Some("x=1")));
    let r = get(0, &[(b"REQUEST_URI", b"/p#f?x=1")]);
    assert_eq!((r.path.as_str(), r.query.as_deref()), ("/p", None));
}

#[test]
fn addresses_scheme_and_version() {
    let unix = ConnInfo {
        transport: Transport::Unix,
        peer: None,
        local: None,
    };
    let decode = |vars: &[(&[u8], &[u8])], conn: ConnInfo| {
        let mut all: Vec<(&[u8], &[u8])> = vec![(b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", b"/")];
        all.extend_from_slice(vars);
        let mut d = Decoder::new(UwsgiLimits::default(), conn);
        d.decode(&mut BytesMut::from(&packet(0, &all, b"")[..]))
            .unwrap()
            .unwrap()
    };
    let r = decode(
        &[
            (b"REMOTE_ADDR", b"2001:db8::1"),
            (b"REMOTE_PORT", b"443"),
            (b"SERVER_ADDR", b"10.0.0.1"),
            (b"SERVER_PORT", b"80"),
            (b"SERVER_PROTOCOL", b"HTTP/1.0"),
        ],
        unix,
    );
    assert_eq!(r.peer, Some("[2001:db8::1]:443".parse().unwrap()));
    assert_eq!(r.local, Some("10.0.0.1:80".parse().unwrap()));
    assert_eq!(r.transport, Transport::Unix);
    assert_eq!(r.version, Version::Http10);
    // A unix-socket client of nginx ("unix:") and a name: nothing to report on a unix socket.
    let r = decode(
        &[(b"REMOTE_ADDR", b"unix:"), (b"SERVER_NAME", b"localhost")],
        unix,
    );
    assert_eq!((r.peer, r.local), (None, None));
    // Without vars, TCP reports the socket's own addresses.
    let r = decode(&[], tcp_conn());
    assert_eq!(r.peer, tcp_conn().peer);
    assert_eq!(r.local, tcp_conn().local);
    for (vars, want) in [
        (vec![(&b"HTTPS"[..], &b"on"[..])], Scheme::Https),
        (vec![(b"HTTPS", b"1")], Scheme::Https),
        (vec![(b"HTTPS", b"off")], Scheme::Http),
        (vec![(b"REQUEST_SCHEME", b"https")], Scheme::Https),
        (vec![(b"wsgi.url_scheme", b"https")], Scheme::Https),
        (
            vec![(b"UWSGI_SCHEME", b"http"), (b"HTTPS", b"on")],
            Scheme::Http,
        ),
        (vec![], Scheme::Http),
        // A load balancer's header, passed on by nginx, beats nginx's own view (uWSGI's order).
        (
            vec![
                (b"REQUEST_SCHEME", b"http"),
                (b"HTTP_X_FORWARDED_PROTO", b"https"),
            ],
            Scheme::Https,
        ),
        (vec![(b"HTTP_X_FORWARDED_SSL", b"on")], Scheme::Https),
        (vec![(b"HTTP_X_FORWARDED_PROTOCOL", b"ssl")], Scheme::Https),
        (
            vec![(b"HTTPS", b"on"), (b"HTTP_X_FORWARDED_PROTO", b"http")],
            Scheme::Http,
        ),
        (
            vec![
                (b"UWSGI_SCHEME", b"http"),
                (b"HTTP_X_FORWARDED_PROTO", b"https"),
            ],
            Scheme::Http,
        ),
    ] {
        assert_eq!(decode(&vars, tcp_conn()).scheme, want, "{vars:?}");
    }
    // From a peer not in --forwarded-allow-ips the headers do not count; a unix socket's do.
    let far = ConnInfo {
        peer: Some(SocketAddr::from(([192, 0, 2, 9], 40000))),
        ..tcp_conn()
    };
    let xfp: &[(&[u8], &[u8])] = &[(b"HTTP_X_FORWARDED_PROTO", b"https")];
    assert_eq!(decode(xfp, far).scheme, Scheme::Http);
    assert_eq!(decode(xfp, unix).scheme, Scheme::Https);
    // Two that disagree are refused with a 400, as over HTTP.
    let both: Vec<(&[u8], &[u8])> = vec![
        (b"REQUEST_METHOD", b"GET"),
        (b"PATH_INFO", b"/"),
        (b"HTTP_X_FORWARDED_PROTO", b"https"),
        (b"HTTP_X_FORWARDED_SSL", b"off"),
    ];
    let err = decode_one(&packet(0, &both, b"")).unwrap_err();
    assert!(
        matches!(err, UwsgiError::Refused { status: 400, .. }),
        "{err:?}"
    );
}

#[test]
fn header_names_come_back_title_case() {
    assert_eq!(header_name(b"X_FORWARDED_FOR").unwrap(), "X-Forwarded-For");
    assert_eq!(header_name(b"HOST").unwrap(), "Host");
    assert_eq!(header_name(b"X__A").unwrap(), "X--A");
    assert!(header_name(b"").is_err());
    assert!(header_name(b"A B").is_err());
}

fn encode(resp: Response, head_only: bool) -> (String, BodyFraming) {
    let mut out = Vec::new();
    let framing = encode_head(&mut out, &resp, head_only);
    (String::from_utf8(out).unwrap(), framing)
}

fn stream_of(chunks: &[&'static str]) -> c10k_http::BodyStream {
    struct Chunks(Vec<&'static str>);
    impl futures_core::Stream for Chunks {
        type Item = Result<Bytes, c10k_http::BoxError>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            let next = (!self.0.is_empty()).then(|| Ok(Bytes::from(self.0.remove(0))));
            std::task::Poll::Ready(next)
        }
    }
    Box::pin(Chunks(chunks.to_vec()))
}

#[test]
fn the_handlers_reason_phrase_goes_on_the_status_line() {
    let (s, _) = encode(Response::text(404, "no\n").with_reason("NOT FOUND"), false);
    assert!(s.starts_with("HTTP/1.1 404 NOT FOUND\r\n"), "{s}");
    // One that could end the line early, or none, gets the standard phrase.
    for bad in [&b"OK\r\nX-Evil: 1"[..], b"a\x00", b""] {
        let resp = Response::text(200, "x").with_reason(Bytes::copy_from_slice(bad));
        let (s, _) = encode(resp, false);
        assert!(s.starts_with("HTTP/1.1 200 OK\r\nContent-Type"), "{s}");
    }
}

#[test]
fn encodes_like_uwsgi() {
    let resp = Response::text(404, "no\n")
        .with_header("Connection", "keep-alive")
        .with_header("Content-Length", "99")
        .with_header("X-A", "1\r\nEvil: 2");
    let (s, framing) = encode(resp, false);
    assert_eq!(framing, BodyFraming::Empty, "the body is in the buffer");
    assert_eq!(
        s,
        "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n\
         X-A: 1Evil: 2\r\nContent-Length: 3\r\n\r\nno\n"
    );
    let (s, _) = encode(Response::text(200, "hello"), true);
    assert!(s.ends_with("Content-Length: 5\r\n\r\n"), "{s}");

    // A stream: no Content-Length, never chunked; the close ends it.
    let resp = Response::new(200)
        .with_header("Transfer-Encoding", "chunked")
        .with_stream(stream_of(&["a", "b"]));
    let (s, framing) = encode(resp, false);
    assert_eq!(framing, BodyFraming::Close);
    assert_eq!(s, "HTTP/1.1 200 OK\r\n\r\n");
    // The handler's own length is kept and enforced; HEAD sends no body at all.
    let resp = || {
        Response::new(200)
            .with_header("Content-Length", "2")
            .with_stream(stream_of(&["a", "b"]))
    };
    let (s, framing) = encode(resp(), false);
    assert_eq!(framing, BodyFraming::Length { left: 2 });
    assert_eq!(s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
    let (s, framing) = encode(resp(), true);
    assert_eq!(framing, BodyFraming::Empty);
    assert_eq!(s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
    // 204 and 304 carry no body and no length.
    let (s, framing) = encode(Response::new(204).with_stream(stream_of(&["x"])), false);
    assert_eq!(
        (s.as_str(), framing),
        ("HTTP/1.1 204 No Content\r\n\r\n", BodyFraming::Empty)
    );
    // A 205 carries no body, and a length of 0 (RFC 9110 §15.3.6).
    for resp in [
        Response::text(205, "abc"),
        Response::new(205).with_stream(stream_of(&["x"])),
    ] {
        let (s, framing) = encode(resp, false);
        assert!(s.starts_with("HTTP/1.1 205 Reset Content\r\n"), "{s:?}");
        assert!(s.ends_with("\r\nContent-Length: 0\r\n\r\n"), "{s:?}");
        assert_eq!(framing, BodyFraming::Empty);
    }
}

/// The HEAD rule over uwsgi as over HTTP: an app that answers HEAD with no body and the length
/// GET would have (Flask) gets that length through nginx; a GET keeps the body's own length.
#[test]
fn a_head_answer_keeps_the_handlers_length_without_its_body() {
    let resp = || Response::new(200).with_header("Content-Length", "12");
    let (s, framing) = encode(resp(), true);
    assert_eq!(framing, BodyFraming::Empty);
    assert_eq!(s, "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n");
    let (s, _) = encode(resp(), false);
    assert_eq!(s, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
}
