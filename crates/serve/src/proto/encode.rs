//! Response encoding: [`encode_head`] writes the status line and headers (the handler's framing
//! headers replaced by the server's own, line breaks dropped, `Server` and a cached `Date`
//! added) and decides the body's [`BodyFraming`]; [`encode_response`] for a complete body; the
//! `100 Continue` interim response.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use c10k_http::{Body, Response};

use super::framing::{body_framing, BodyFraming, Persist};

/// Header fields the server writes itself: a handler's own copy is dropped, so a response never
/// carries two framings (or an application-chosen `Connection`).
fn is_framing_header(name: &str) -> bool {
    [
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Appends the status line and header fields of `resp`, framed for this connection, and
/// returns how its body must be framed. A full body is appended too (unless `head_only`);
/// a stream is left to the caller, chunk by chunk through the returned framing.
///
/// `persist` is what the connection wants; a close-delimited stream forces `Connection: close`
/// — [`BodyFraming::keeps_alive`] says so afterwards.
pub fn encode_head(
    out: &mut Vec<u8>,
    resp: &Response,
    minor_version: u8,
    persist: Persist,
    head_only: bool,
) -> BodyFraming {
    let mut announced: Option<u64> = None;
    let mut has_date = false;
    let mut has_server = false;
    for (name, value) in &resp.headers {
        if name.eq_ignore_ascii_case("content-length") {
            announced = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if name.eq_ignore_ascii_case("date") {
            has_date = true;
        } else if name.eq_ignore_ascii_case("server") {
            has_server = true;
        }
    }
    // An HTTP/1.0 client cannot read chunks: a stream of unknown length ends at the close.
    let unsized_stream = if minor_version >= 1 {
        BodyFraming::Chunked
    } else {
        BodyFraming::Close
    };
    let (length, framing) = body_framing(
        resp.status,
        &resp.body,
        announced,
        head_only,
        unsized_stream,
    );
    let persist = if framing == BodyFraming::Close && !head_only {
        Persist::Close
    } else {
        persist
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(num.format(resp.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason_phrase());
    out.extend_from_slice(b"\r\n");
    if !has_server {
        out.extend_from_slice(b"Server: c10k\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"Date: ");
        with_date(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &resp.headers {
        if is_framing_header(name) {
            continue;
        }
        // Names and values come from the application; never let one inject a line break. The
        // usual header has nothing to drop and is copied whole.
        let name = name.as_bytes();
        if memchr::memchr3(b'\r', b'\n', b':', name).is_none() {
            out.extend_from_slice(name);
        } else {
            out.extend(name.iter().filter(|&&b| !matches!(b, b'\r' | b'\n' | b':')));
        }
        out.extend_from_slice(b": ");
        if memchr::memchr2(b'\r', b'\n', value).is_none() {
            out.extend_from_slice(value);
        } else {
            out.extend(value.iter().filter(|&&b| b != b'\r' && b != b'\n'));
        }
        out.extend_from_slice(b"\r\n");
    }
    match length {
        Some(n) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(num.format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None if framing == BodyFraming::Chunked && !head_only => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        None => {}
    }
    match (persist, minor_version) {
        (Persist::Close, _) => out.extend_from_slice(b"Connection: close\r\n"),
        (Persist::KeepAlive, 0) => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        (Persist::KeepAlive, _) => {}
    }
    end_head(out, resp, head_only, framing)
}

/// Ends a head with its blank line, then appends a complete body unless the answer has none
/// (HEAD, or a status without content); returns how the driver frames what is left to send:
/// `framing` for a file or a stream, [`BodyFraming::Empty`] when everything is in `out`. For
/// HTTP's head and uwsgi's alike.
pub fn end_head(
    out: &mut Vec<u8>,
    resp: &Response,
    head_only: bool,
    framing: BodyFraming,
) -> BodyFraming {
    out.extend_from_slice(b"\r\n");
    if head_only || !has_content(resp.status) {
        return BodyFraming::Empty;
    }
    if let Body::Full(b) = &resp.body {
        out.extend_from_slice(b);
        return BodyFraming::Empty;
    }
    framing
}

/// Whether an answer with this status carries content: a 1xx, 204 or 304 has none whatever the
/// handler returned (RFC 9112 §6.3), nor has a 205 (RFC 9110 §15.3.6).
pub fn has_content(status: u16) -> bool {
    !(status < 200 || status == 204 || status == 205 || status == 304)
}

/// Appends a response whose body is complete (a stream's body is left out: use [`encode_head`]).
pub fn encode_response(
    out: &mut Vec<u8>,
    resp: &Response,
    minor_version: u8,
    persist: Persist,
    head_only: bool,
) {
    encode_head(out, resp, minor_version, persist, head_only);
}

/// `100 Continue` interim response.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

thread_local! {
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Calls `f` with the current IMF-fixdate, formatted at most once per second per thread.
fn with_date(f: impl FnOnce(&[u8])) {
    let secs = unix_secs_coarse();
    DATE.with(|cell| {
        let mut cache = cell.borrow_mut();
        if cache.0 != secs {
            let s = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
            if s.len() == 29 {
                cache.1.copy_from_slice(s.as_bytes());
                cache.0 = secs;
            }
        }
        f(&cache.1);
    });
}

/// Seconds since the Unix epoch from the kernel's coarse clock: the last tick's time, read
/// without the timestamp counter (a fraction of a precise read, once per response), which is
/// all a date with one-second resolution needs.
fn unix_secs_coarse() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0 {
        return SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
    }
    ts.tv_sec.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn stream_of(chunks: &[&'static str]) -> Response {
        struct Chunks(std::collections::VecDeque<Bytes>);
        impl futures_core::Stream for Chunks {
            type Item = Result<Bytes, c10k_http::BoxError>;
            fn poll_next(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Self::Item>> {
                std::task::Poll::Ready(self.0.pop_front().map(Ok))
            }
        }
        let chunks = chunks.iter().map(|c| Bytes::from_static(c.as_bytes()));
        Response::new(200).with_stream(Box::pin(Chunks(chunks.collect())))
    }

    /// Encodes a streamed response the way a driver does: head, then every chunk, then the end.
    fn encode_stream(resp: Response, minor: u8, head_only: bool) -> (String, BodyFraming) {
        let mut out = Vec::new();
        let mut framing = encode_head(&mut out, &resp, minor, Persist::KeepAlive, head_only);
        let after_head = framing;
        if let Body::Stream(mut s) = resp.body {
            while let Some(Ok(c)) =
                pollster::block_on(std::future::poll_fn(|cx| s.as_mut().poll_next(cx)))
            {
                framing.chunk(&mut out, &c).unwrap();
            }
            framing.end(&mut out).unwrap();
        }
        (String::from_utf8(out).unwrap(), after_head)
    }

    #[test]
    fn streams_are_chunked_to_1_1_close_delimited_to_1_0_sized_when_known() {
        let (s, f) = encode_stream(stream_of(&["hel", "", "lo"]), 1, false);
        assert_eq!(f, BodyFraming::Chunked);
        assert!(s.contains("Transfer-Encoding: chunked\r\n"), "{s}");
        assert!(!s.contains("Content-Length"), "{s}");
        assert!(
            s.ends_with("\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"),
            "{s:?}"
        );

        let (s, f) = encode_stream(stream_of(&["hel", "lo"]), 0, false);
        assert_eq!(f, BodyFraming::Close);
        assert!(!f.keeps_alive());
        assert!(s.contains("Connection: close\r\n"), "{s}");
        assert!(s.ends_with("\r\n\r\nhello"), "{s:?}");

        let sized = stream_of(&["hel", "lo"]).with_header("Content-Length", "5");
        let (s, f) = encode_stream(sized, 1, false);
        assert_eq!(f, BodyFraming::Length { left: 5 });
        assert_eq!(s.matches("Content-Length").count(), 1, "{s}");
        assert!(
            s.contains("Content-Length: 5\r\n") && s.ends_with("\r\n\r\nhello"),
            "{s}"
        );

        // HEAD: the head only, and the connection stays open even for HTTP/1.0 keep-alive.
        let (s, f) = encode_stream(stream_of(&["hello"]), 1, true);
        assert_eq!(f, BodyFraming::Empty);
        assert!(s.ends_with("\r\n\r\n") && !s.contains("hello"), "{s}");
    }

    #[test]
    fn handler_framing_headers_are_replaced_and_line_breaks_dropped() {
        let resp = Response::text(200, "hi")
            .with_header("Content-Length", "99")
            .with_header("Transfer-Encoding", "chunked")
            .with_header("Connection", "upgrade")
            .with_header("X-Evil", "a\r\nSet-Cookie: x=1")
            .with_header("X-Bad:\r\nName", "v")
            .with_header("X-Plain", "just text");
        let mut out = Vec::new();
        encode_response(&mut out, &resp, 1, Persist::KeepAlive, false);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("Content-Length: 2\r\n"), "{s}");
        assert!(
            !s.contains("99") && !s.contains("chunked") && !s.contains("upgrade"),
            "{s}"
        );
        assert!(s.contains("X-Evil: aSet-Cookie: x=1\r\n"), "{s}");
        assert!(s.contains("\r\nX-BadName: v\r\n"), "{s}");
        assert!(s.contains("\r\nX-Plain: just text\r\n"), "{s}");
        assert!(s.ends_with("\r\n\r\nhi"));
    }

    #[test]
    fn no_body_statuses_send_no_body_and_no_length() {
        // A handler's body (or its own Content-Length) on a 1xx, 204 or 304 must not reach the
        // wire: the client reads the next response from the bytes after the head.
        for status in [100, 204, 304] {
            for streamed in [false, true] {
                for minor in [0, 1] {
                    let mut resp = if streamed {
                        stream_of(&["abc"])
                    } else {
                        Response::text(200, "abc")
                    };
                    resp.status = status;
                    resp.headers.push(("Content-Length".into(), "3".into()));
                    let (s, framing) = encode_stream(resp, minor, false);
                    assert!(s.ends_with("\r\n\r\n"), "{status}: a body was sent: {s:?}");
                    assert!(!s.contains("abc"), "{status}: {s:?}");
                    assert!(!s.contains("Content-Length"), "{status}: {s:?}");
                    assert!(!s.contains("Transfer-Encoding"), "{status}: {s:?}");
                    assert_eq!(framing, BodyFraming::Empty);
                }
            }
        }
    }

    #[test]
    fn reset_content_says_it_has_no_content_and_sends_none() {
        // RFC 9110 §15.3.6: a server MUST NOT generate content in a 205 and must indicate a
        // zero-length one. A handler's body (a WSGI app answering 205 with the page it would
        // have shown) used to go out with its length.
        for streamed in [false, true] {
            for (minor, head_only) in [(0, false), (1, false), (1, true)] {
                let mut resp = if streamed {
                    stream_of(&["abc"])
                } else {
                    Response::text(200, "abc")
                };
                resp.status = 205;
                resp.headers.push(("Content-Length".into(), "3".into()));
                let (s, framing) = encode_stream(resp, minor, head_only);
                assert!(s.ends_with("\r\n\r\n"), "a body was sent: {s:?}");
                assert!(!s.contains("abc"), "{s:?}");
                assert!(s.contains("\r\nContent-Length: 0\r\n"), "{s:?}");
                assert!(!s.contains("Transfer-Encoding"), "{s:?}");
                assert_eq!(framing, BodyFraming::Empty);
            }
        }
    }

    #[test]
    fn registered_statuses_have_their_reason_phrase() {
        for (status, reason) in [
            (206, "Partial Content"),
            (303, "See Other"),
            (307, "Temporary Redirect"),
            (308, "Permanent Redirect"),
            (401, "Unauthorized"),
            (410, "Gone"),
            (412, "Precondition Failed"),
            (416, "Range Not Satisfiable"),
            (418, "I'm a teapot"),
        ] {
            let mut out = Vec::new();
            encode_response(
                &mut out,
                &Response::new(status),
                1,
                Persist::KeepAlive,
                false,
            );
            let line = format!("HTTP/1.1 {status} {reason}\r\n");
            assert!(
                out.starts_with(line.as_bytes()),
                "{}",
                String::from_utf8_lossy(&out)
            );
        }
    }

    /// A WSGI app's own phrase (`200 Fine`, Werkzeug's `404 NOT FOUND`) went out as the IANA
    /// one; gunicorn sends the app's. A phrase that could end the line (CR, LF, other controls)
    /// never reaches the wire: the standard one goes instead.
    #[test]
    fn the_handlers_reason_phrase_goes_on_the_status_line() {
        let line = |resp: Response| {
            let mut out = Vec::new();
            encode_response(&mut out, &resp, 1, Persist::KeepAlive, false);
            let end = out.windows(2).position(|w| w == b"\r\n").unwrap();
            out.truncate(end);
            out
        };
        assert_eq!(
            line(Response::new(200).with_reason("Fine")),
            b"HTTP/1.1 200 Fine"
        );
        assert_eq!(
            line(Response::new(404).with_reason(&b"NOT\tFOUND caf\xe9"[..])),
            b"HTTP/1.1 404 NOT\tFOUND caf\xe9"
        );
        for bad in [&b"OK\r\nX-Evil: 1"[..], b"OK\n", b"a\x00b", b"\x7f", b""] {
            let resp = Response::new(200).with_reason(Bytes::copy_from_slice(bad));
            assert_eq!(line(resp), b"HTTP/1.1 200 OK", "{bad:?}");
        }
    }

    /// The rule [`body_framing`] keeps for HEAD: an app that answers HEAD with no body and the
    /// length GET would have (Flask) gets that length out; a GET keeps the body's own length.
    #[test]
    fn a_head_answer_keeps_the_handlers_length_without_its_body() {
        let resp = Response::new(200).with_header("Content-Length", "12");
        for (head_only, length) in [
            (true, "Content-Length: 12\r\n"),
            (false, "Content-Length: 0\r\n"),
        ] {
            let mut out = Vec::new();
            let framing = encode_head(&mut out, &resp, 1, Persist::KeepAlive, head_only);
            let s = String::from_utf8(out).unwrap();
            assert_eq!(framing, BodyFraming::Empty);
            assert!(s.contains(length), "{head_only}: {s}");
            assert!(
                s.ends_with("\r\n\r\n"),
                "{head_only}: a body was sent: {s:?}"
            );
        }
    }

    #[test]
    fn encodes_head_without_body() {
        let mut out = Vec::new();
        let resp = Response::text(200, "hello\n");
        encode_response(&mut out, &resp, 1, Persist::KeepAlive, true);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(s.contains("Content-Length: 6\r\n"));
        assert!(s.ends_with("\r\n\r\n"));
    }
}
