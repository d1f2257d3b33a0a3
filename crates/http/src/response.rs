//! What a handler answers.
//!
//! The server adds the framing headers (`Content-Length` or `Transfer-Encoding`, `Date`,
//! `Connection`, `Server`) and drops the body of a `HEAD` response. A complete body is always
//! sent with `Content-Length`, and so is a file body (its range's length; the bytes go out with
//! `sendfile(2)`); a streamed one with the handler's own `Content-Length` when it set one, chunked
//! to HTTP/1.1 clients otherwise, and close-delimited to HTTP/1.0 clients. A stream that ends
//! short of its `Content-Length` ends the connection after its last byte (the client then knows
//! the answer is incomplete); one that goes past it is an error too.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

use crate::body::{Body, BodyStream};

/// A response: status, owned header fields in order, and a body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The handler's own reason phrase (a WSGI app's `404 NOT FOUND`), sent after the code when
    /// it is non-empty and [`crate::is_reason_phrase`]; otherwise the code's standard phrase
    /// ([`crate::reason_phrase`]) is sent.
    pub reason: Option<Bytes>,
    pub headers: Vec<(Cow<'static, str>, Bytes)>,
    pub body: Body,
    /// The server closes the connection after this response (`Connection: close`), whatever
    /// the client asked: set by [`Response::closing`].
    pub close: bool,
}

impl Response {
    /// A response with no headers and an empty body.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            reason: None,
            headers: Vec::new(),
            body: Body::empty(),
            close: false,
        }
    }

    /// A complete body with its content type.
    pub fn with_body(
        status: u16,
        content_type: impl Into<Cow<'static, str>>,
        body: impl Into<Bytes>,
    ) -> Response {
        Response::new(status)
            .with_header("Content-Type", content_type_bytes(content_type.into()))
            .with_full_body(body)
    }

    pub fn text(status: u16, body: impl Into<Bytes>) -> Response {
        Response::with_body(status, "text/plain; charset=utf-8", body)
    }

    /// An error answer whose body says why, as one line of text.
    pub fn error(status: u16, reason: impl fmt::Display) -> Response {
        Response::text(status, format!("{reason}\n"))
    }

    /// Ends the connection after this response, as gunicorn does after an error it answers
    /// itself: the client's next request on it would meet the same fault. (A handler cannot
    /// ask for this with a `Connection` header: the server writes that field itself.)
    pub fn closing(mut self) -> Response {
        self.close = true;
        self
    }

    /// Sets the reason phrase sent after the status code (see [`Response::reason`]).
    pub fn with_reason(mut self, reason: impl Into<Bytes>) -> Response {
        self.reason = Some(reason.into());
        self
    }

    /// The reason phrase that goes on the status line: the handler's own when it has one that
    /// may be sent, else the code's standard one.
    pub fn reason_phrase(&self) -> &[u8] {
        match &self.reason {
            Some(r) if !r.is_empty() && crate::is_reason_phrase(r) => r,
            _ => crate::reason_phrase(self.status).as_bytes(),
        }
    }

    /// Appends a header field (an earlier one of the same name is kept).
    pub fn with_header(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Bytes>,
    ) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn with_full_body(mut self, body: impl Into<Bytes>) -> Response {
        self.body = Body::Full(body.into());
        self
    }

    pub fn with_stream(mut self, stream: BodyStream) -> Response {
        self.body = Body::Stream(stream);
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The `Content-Type` header as text.
    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

fn content_type_bytes(ct: Cow<'static, str>) -> Bytes {
    match ct {
        Cow::Borrowed(s) => Bytes::from_static(s.as_bytes()),
        Cow::Owned(s) => Bytes::from(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_set_headers_in_order() {
        let r = Response::error(405, "method not allowed").with_header("Allow", "GET");
        assert_eq!(r.status, 405);
        assert_eq!(r.content_type(), Some("text/plain; charset=utf-8"));
        assert_eq!(r.header("allow").map(|v| &v[..]), Some(&b"GET"[..]));
        assert_eq!(
            r.body.as_bytes().map(|b| &b[..]),
            Some(&b"method not allowed\n"[..])
        );
        let names: Vec<_> = r.headers.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names, ["Content-Type", "Allow"]);
    }
}
