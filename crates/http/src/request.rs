//! A complete request as every protocol delivers it to a handler.
//!
//! The HTTP/1.x decoder and the uwsgi decoder both produce this one type, so an application cannot
//! tell (and need not care) whether nginx spoke HTTP or uwsgi to the server.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::body::RequestBody;
use crate::headers::Headers;
use crate::method::Method;

/// The protocol version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    /// `HTTP/1.0` or `HTTP/1.1`, as CGI's `SERVER_PROTOCOL` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// The URL scheme the client used (`https` only when a proxy in front says so, e.g. uwsgi's
/// `HTTPS` var: c10k itself does not terminate TLS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The kind of socket the request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Unix,
}

/// A complete request: the server has read (or spooled) the whole body before the handler runs.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    /// The request target exactly as sent (`/a%20b?x=1`), a `#fragment` included.
    pub target: String,
    /// The path part of the target, still percent-encoded (`/a%20b`); never a `#fragment`.
    pub path: String,
    /// The raw query string without the `?` (and without a `#fragment`), if the target had one.
    pub query: Option<String>,
    pub version: Version,
    pub headers: Headers,
    /// The client's address; `None` on a unix socket with no proxy in front saying otherwise.
    pub peer: Option<SocketAddr>,
    /// The address the request arrived at; `None` on a unix socket.
    pub local: Option<SocketAddr>,
    pub transport: Transport,
    pub scheme: Scheme,
    /// CGI variables a front sent with the request beyond what the fields above carry, as
    /// `(name, value)` in the order sent: nginx's `uwsgi_param` lines (`SCRIPT_NAME`,
    /// `DOCUMENT_ROOT`, `HTTPS`, `REQUEST_SCHEME`, `SERVER_NAME`, `REMOTE_ADDR`, a custom
    /// `uwsgi_param FOO bar`, ...). The uwsgi decoder keeps every var here except the headers
    /// (`HTTP_*`, in [`Request::headers`]) and the ones the request line and framing carry
    /// exactly (`REQUEST_METHOD`, `REQUEST_URI`, `PATH_INFO`, `QUERY_STRING`, `SERVER_PROTOCOL`,
    /// `CONTENT_LENGTH`, `CONTENT_TYPE`). Vars it interprets (addresses, scheme) are also here
    /// verbatim, as the front wrote them. Empty for HTTP. Hosted WSGI apps find them in
    /// `environ`, as under uWSGI, which passes every var it receives.
    pub cgi_vars: Vec<(Bytes, Bytes)>,
    pub body: RequestBody,
}

impl Request {
    /// A body-less HTTP/1.1 request for `target` (`/path?query`), handy in tests and tools.
    pub fn new(method: Method, target: &str) -> Request {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        Request {
            method,
            target: target.to_owned(),
            path,
            query,
            version: Version::Http11,
            headers: Headers::new(),
            peer: None,
            local: None,
            transport: Transport::Tcp,
            scheme: Scheme::Http,
            cgi_vars: Vec::new(),
            body: RequestBody::empty(),
        }
    }

    /// Sets the body and its `Content-Type`.
    pub fn with_body(mut self, content_type: &str, body: impl Into<bytes::Bytes>) -> Request {
        self.headers.append(
            "Content-Type",
            bytes::Bytes::copy_from_slice(content_type.as_bytes()),
        );
        self.body = RequestBody::Memory(body.into());
        self
    }

    /// The `Content-Type` header, if present and valid UTF-8.
    pub fn content_type(&self) -> Option<&str> {
        self.headers.get_str("content-type")
    }

    /// The `Host` header, if present and valid UTF-8.
    pub fn host(&self) -> Option<&str> {
        self.headers.get_str("host")
    }

    /// The last value of the CGI variable `name` a front sent (see [`Request::cgi_vars`]).
    pub fn cgi_var(&self, name: &str) -> Option<&Bytes> {
        self.cgi_vars
            .iter()
            .rev()
            .find(|(n, _)| n.as_ref() == name.as_bytes())
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_splits_the_target() {
        let r = Request::new(Method::Get, "/a%20b?x=1&y");
        assert_eq!(r.path, "/a%20b");
        assert_eq!(r.query.as_deref(), Some("x=1&y"));
        assert_eq!(r.target, "/a%20b?x=1&y");
        let r = Request::new(Method::Post, "/echo").with_body("text/plain", "hi");
        assert_eq!(r.content_type(), Some("text/plain"));
        assert_eq!(r.body.len(), 2);
    }
}
