//! The WSGI `environ` of a request (PEP 3333 and the CGI variables it requires).
//!
//! Built for speed under the GIL: every key is an interned string made once per process, the
//! entries that never change for a worker (`wsgi.version`, `wsgi.errors`, `wsgi.multithread`,
//! `SCRIPT_NAME`, ...) live in a template dict that each request copies in one call (a dict copy
//! moves the whole hash table), and header names are turned into `HTTP_*` keys once per thread.
//!
//! Decisions where PEP 3333 leaves room (gunicorn's, unless said): repeated header fields are joined
//! with `, ` (`Cookie` with `; `, RFC 6265); a header name containing `_` is dropped, so a client
//! cannot spoof `X-Forwarded-For` as `X_Forwarded_For`; `PATH_INFO` is percent-decoded and then
//! decoded as latin-1, with `--root-path` stripped into `SCRIPT_NAME`; `CONTENT_LENGTH` is the
//! length of the body the server received (also for chunked requests, whose body is complete);
//! on a unix socket `REMOTE_ADDR` is empty and `REMOTE_PORT` absent.
//!
//! Behind nginx's `uwsgi_pass`, the CGI vars nginx sent beyond what the request carries
//! (`Request::cgi_vars`: `SCRIPT_NAME`, `DOCUMENT_ROOT`, `uwsgi_param FOO bar`, ...) are set last
//! and as sent, so they win over what the server derived (`SERVER_NAME`, and `SCRIPT_NAME` from
//! `--root-path`): the environ an app sees is the one uWSGI would give it. Names starting with
//! `wsgi.` are not taken from a front.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;

use c10k_http::{Method, Request, Scheme, Version};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyString, PyTuple};

use crate::errors::Errors;
use crate::file_wrapper::FileWrapper;
use crate::input::{EmptyInput, Input};

macro_rules! keys {
    ($($field:ident = $text:literal,)*) => {
        /// Interned environ keys and shared constant values.
        pub(crate) struct Keys { $(pub $field: Py<PyString>,)* }
        impl Keys {
            fn new(py: Python<'_>) -> Keys {
                Keys { $($field: PyString::intern(py, $text).unbind(),)* }
            }
        }
    };
}

keys! {
    request_method = "REQUEST_METHOD",
    script_name = "SCRIPT_NAME",
    path_info = "PATH_INFO",
    query_string = "QUERY_STRING",
    content_type = "CONTENT_TYPE",
    content_length = "CONTENT_LENGTH",
    server_name = "SERVER_NAME",
    server_port = "SERVER_PORT",
    server_protocol = "SERVER_PROTOCOL",
    server_software = "SERVER_SOFTWARE",
    remote_addr = "REMOTE_ADDR",
    remote_port = "REMOTE_PORT",
    raw_uri = "RAW_URI",
    request_uri = "REQUEST_URI",
    wsgi_version = "wsgi.version",
    wsgi_url_scheme = "wsgi.url_scheme",
    wsgi_input = "wsgi.input",
    wsgi_errors = "wsgi.errors",
    wsgi_multithread = "wsgi.multithread",
    wsgi_multiprocess = "wsgi.multiprocess",
    wsgi_run_once = "wsgi.run_once",
    wsgi_input_terminated = "wsgi.input_terminated",
    wsgi_file_wrapper = "wsgi.file_wrapper",
    http = "http",
    https = "https",
    http10 = "HTTP/1.0",
    http11 = "HTTP/1.1",
    empty = "",
    get = "GET",
    head = "HEAD",
    post = "POST",
    put = "PUT",
    delete = "DELETE",
    options = "OPTIONS",
    patch = "PATCH",
    localhost = "localhost",
    port80 = "80",
    port443 = "443",
}

impl Keys {
    /// The environ keys set per request (see [`Template::new`]).
    fn per_request(&self) -> [&Py<PyString>; 12] {
        [
            &self.request_method,
            &self.server_protocol,
            &self.wsgi_url_scheme,
            &self.path_info,
            &self.query_string,
            &self.raw_uri,
            &self.request_uri,
            &self.server_name,
            &self.server_port,
            &self.wsgi_input,
            &self.remote_addr,
            &self.remote_port,
        ]
    }
}

/// Keys inserted into (and removed from) the template so that its table has room for a
/// request's headers (see [`Template::new`]).
const ROOM_FILLERS: usize = 4;

static KEYS: PyOnceLock<Keys> = PyOnceLock::new();

pub(crate) fn keys(py: Python<'_>) -> &Keys {
    KEYS.get_or_init(py, || Keys::new(py))
}

/// What is the same in every environ of this worker.
pub(crate) struct Template {
    dict: Py<PyDict>,
    root_path: String,
}

/// The shared, read-only `wsgi.input` of body-less requests.
static EMPTY_INPUT: PyOnceLock<Py<EmptyInput>> = PyOnceLock::new();

impl Template {
    pub(crate) fn new(
        py: Python<'_>,
        root_path: &str,
        multithread: bool,
        multiprocess: bool,
    ) -> PyResult<Template> {
        let k = keys(py);
        let d = PyDict::new(py);
        d.set_item(&k.wsgi_version, PyTuple::new(py, [1, 0])?)?;
        d.set_item(&k.wsgi_errors, Py::new(py, Errors::default())?)?;
        d.set_item(&k.wsgi_multithread, PyBool::new(py, multithread))?;
        d.set_item(&k.wsgi_multiprocess, PyBool::new(py, multiprocess))?;
        d.set_item(&k.wsgi_run_once, false)?;
        d.set_item(&k.wsgi_input_terminated, true)?;
        d.set_item(&k.wsgi_file_wrapper, py.get_type::<FileWrapper>())?;
        d.set_item(
            &k.server_software,
            concat!("c10k/", env!("CARGO_PKG_VERSION")),
        )?;
        let root_path = root_path.trim_end_matches('/').to_owned();
        d.set_item(&k.script_name, &root_path)?;
        // The keys every request sets (or, for REMOTE_PORT, removes), with placeholder
        // values: in the copy, setting them replaces a value instead of inserting a key.
        for key in k.per_request() {
            d.set_item(key, &k.empty)?;
        }
        // Room for the request's headers: a few keys inserted and removed again make the table
        // grow once here, and a dict copy keeps its table's size. Without it, every environ
        // copy was exactly full and grew (a rehash into a new table) on its first header.
        let fillers: Vec<_> = (0..ROOM_FILLERS)
            .map(|i| PyString::new(py, &format!("c10k.filler.{i}")))
            .collect();
        for f in &fillers {
            d.set_item(f, &k.empty)?;
        }
        for f in &fillers {
            d.del_item(f)?;
        }
        Ok(Template {
            dict: d.unbind(),
            root_path,
        })
    }

    /// The environ of `req`. `body` is moved into `wsgi.input`.
    pub(crate) fn environ<'py>(
        &self,
        py: Python<'py>,
        req: &mut Request,
    ) -> PyResult<Bound<'py, PyDict>> {
        let k = keys(py);
        let env = self.dict.bind(py).copy()?;
        let method = match &req.method {
            Method::Get => k.get.bind(py).clone(),
            Method::Head => k.head.bind(py).clone(),
            Method::Post => k.post.bind(py).clone(),
            Method::Put => k.put.bind(py).clone(),
            Method::Delete => k.delete.bind(py).clone(),
            Method::Options => k.options.bind(py).clone(),
            Method::Patch => k.patch.bind(py).clone(),
            Method::Other(m) => PyString::new(py, m),
        };
        env.set_item(&k.request_method, method)?;
        env.set_item(
            &k.server_protocol,
            match req.version {
                Version::Http10 => &k.http10,
                Version::Http11 => &k.http11,
            },
        )?;
        env.set_item(
            &k.wsgi_url_scheme,
            match req.scheme {
                Scheme::Http => &k.http,
                Scheme::Https => &k.https,
            },
        )?;

        let decoded = percent_decode(req.path.as_bytes());
        let mut path: &[u8] = &decoded;
        if !self.root_path.is_empty() {
            let root = self.root_path.as_bytes();
            if path.starts_with(root) && matches!(path.get(root.len()), None | Some(b'/')) {
                path = &path[root.len()..];
            }
        }
        let target = PyString::new(py, &req.target);
        if path.is_ascii() && path == req.target.as_bytes() {
            // No query, no escapes, no root path: PATH_INFO is the target's text, one string.
            env.set_item(&k.path_info, &target)?;
        } else {
            env.set_item(&k.path_info, latin1(py, path)?)?;
        }
        match &req.query {
            Some(q) => env.set_item(&k.query_string, PyString::new(py, q))?,
            None => env.set_item(&k.query_string, &k.empty)?,
        }
        env.set_item(&k.raw_uri, &target)?;
        env.set_item(&k.request_uri, &target)?;

        match req.local {
            Some(local) => {
                let (name, port) = server_name_port(py, local);
                env.set_item(&k.server_name, name)?;
                env.set_item(&k.server_port, port)?;
            }
            None => {
                // A unix socket: the Host header names the server, as a proxy in front saw it.
                let host = req.host().unwrap_or("");
                let (name, port) = split_host(host);
                if name.is_empty() {
                    env.set_item(&k.server_name, &k.localhost)?;
                } else {
                    env.set_item(&k.server_name, name)?;
                }
                // Without a port in Host, the scheme's default (as gunicorn): 443 behind a
                // proxy that says X-Forwarded-Proto: https, so Django's get_host() without a
                // Host header does not build https://name:80.
                match (port, req.scheme) {
                    (Some(p), _) => env.set_item(&k.server_port, p)?,
                    (None, Scheme::Https) => env.set_item(&k.server_port, &k.port443)?,
                    (None, Scheme::Http) => env.set_item(&k.server_port, &k.port80)?,
                }
            }
        }
        if let Some(peer) = req.peer {
            env.set_item(&k.remote_addr, remote_ip(py, peer.ip()))?;
            env.set_item(&k.remote_port, itoa::Buffer::new().format(peer.port()))?;
        } else {
            // No address is known (a unix socket): `REMOTE_ADDR` is empty and `REMOTE_PORT`
            // absent, as gunicorn sets them (CGI requires `REMOTE_ADDR`; Django code reading
            // `request.META["REMOTE_ADDR"]` behind nginx's `proxy_pass http://unix:...` raised
            // KeyError). The template's placeholder for `REMOTE_ADDR` is that empty string.
            env.set_item(&k.remote_addr, &k.empty)?;
            env.del_item(&k.remote_port)?;
        }

        let body = std::mem::replace(&mut req.body, c10k_http::RequestBody::empty());
        let has_length_header = req.headers.get("content-length").is_some();
        if !body.is_empty() || has_length_header {
            env.set_item(&k.content_length, itoa::Buffer::new().format(body.len()))?;
        }
        if body.is_empty() {
            let empty = EMPTY_INPUT.get_or_init(py, || {
                Py::new(py, EmptyInput).expect("allocating the empty wsgi.input")
            });
            env.set_item(&k.wsgi_input, empty)?;
        } else {
            env.set_item(&k.wsgi_input, Py::new(py, Input::new(body))?)?;
        }

        self.headers(py, &env, req)?;
        // Last: the front's own word on SERVER_NAME, SCRIPT_NAME, ... wins over what the server
        // derived (uWSGI's environ is exactly these vars).
        for (name, value) in &req.cgi_vars {
            if name.starts_with(b"wsgi.") {
                // Server-provided objects (wsgi.input, ...) are not a front's to replace.
                continue;
            }
            env.set_item(cgi_key(py, name)?, latin1(py, value)?)?;
        }
        Ok(env)
    }

    fn headers(&self, py: Python<'_>, env: &Bound<'_, PyDict>, req: &Request) -> PyResult<()> {
        let k = keys(py);
        for (i, (name, value)) in req.headers.iter().enumerate() {
            if name.contains('_') {
                continue;
            }
            let same = |(n, _): &(&str, &bytes::Bytes)| n.eq_ignore_ascii_case(name);
            // A repeated field was joined when its first occurrence was met.
            if req.headers.iter().take(i).any(|f| same(&f)) {
                continue;
            }
            if name.eq_ignore_ascii_case("content-length") {
                // Set from the body actually received (above).
                continue;
            }
            let mut rest = req.headers.iter().skip(i + 1).filter(same).peekable();
            let val = if rest.peek().is_some() {
                let sep: &[u8] = if name.eq_ignore_ascii_case("cookie") {
                    b"; "
                } else {
                    b", "
                };
                let mut joined = value.to_vec();
                for (_, v) in rest {
                    joined.extend_from_slice(sep);
                    joined.extend_from_slice(v);
                }
                latin1(py, &joined)?
            } else if name.eq_ignore_ascii_case("content-type") {
                latin1(py, value)?
            } else {
                let (key, val) = header_entry(py, name, value)?;
                env.set_item(key, val)?;
                continue;
            };
            if name.eq_ignore_ascii_case("content-type") {
                env.set_item(&k.content_type, val)?;
            } else {
                env.set_item(header_key(py, name), val)?;
            }
        }
        Ok(())
    }
}

/// A header name's environ key, and the value it had last time as a string: a client sends the
/// same `Host`, `User-Agent`, `Accept` ... with every request, and a repeated value reuses its
/// (immutable) string instead of making a new one.
struct HeaderKey {
    key: Py<PyString>,
    /// The last value's bytes (up to [`LAST_VALUE_MAX`]) and its string.
    last: Option<(Vec<u8>, Py<PyString>)>,
}

thread_local! {
    /// Header name as sent → interned `HTTP_*` key; bounded so hostile names cannot grow it.
    static HEADER_KEYS: RefCell<HashMap<Box<str>, HeaderKey>> = RefCell::new(HashMap::new());
}
const HEADER_KEYS_MAX: usize = 256;
/// Longer values are not remembered (bounds the cache's memory to 64 KiB per thread).
const LAST_VALUE_MAX: usize = 256;

fn make_header_key<'py>(py: Python<'py>, name: &str) -> Bound<'py, PyString> {
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    key.extend(name.chars().map(|c| match c {
        '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    PyString::intern(py, &key)
}

fn header_key<'py>(py: Python<'py>, name: &str) -> Bound<'py, PyString> {
    HEADER_KEYS.with(|cache| {
        if let Some(k) = cache.borrow().get(name) {
            return k.key.bind(py).clone();
        }
        let s = make_header_key(py, name);
        let mut cache = cache.borrow_mut();
        if cache.len() < HEADER_KEYS_MAX {
            let entry = HeaderKey {
                key: s.clone().unbind(),
                last: None,
            };
            cache.insert(name.into(), entry);
        }
        s
    })
}

/// The environ key of header `name` and its `value` as a string (see [`HeaderKey`]).
fn header_entry<'py>(
    py: Python<'py>,
    name: &str,
    value: &[u8],
) -> PyResult<(Bound<'py, PyString>, Bound<'py, PyString>)> {
    HEADER_KEYS.with(|cache| {
        let mut cache = cache.borrow_mut();
        let Some(entry) = cache.get_mut(name) else {
            drop(cache);
            return Ok((header_key(py, name), latin1(py, value)?));
        };
        let key = entry.key.bind(py).clone();
        if let Some((bytes, s)) = &entry.last {
            if bytes.as_slice() == value {
                return Ok((key, s.bind(py).clone()));
            }
        }
        let s = latin1(py, value)?;
        if value.len() <= LAST_VALUE_MAX {
            match &mut entry.last {
                Some((bytes, last)) => {
                    bytes.clear();
                    bytes.extend_from_slice(value);
                    *last = s.clone().unbind();
                }
                None => entry.last = Some((value.to_vec(), s.clone().unbind())),
            }
        }
        Ok((key, s))
    })
}

thread_local! {
    /// CGI var name from a front → interned key; bounded like [`HEADER_KEYS`].
    static CGI_KEYS: RefCell<HashMap<Box<[u8]>, Py<PyString>>> = RefCell::new(HashMap::new());
}

/// A CGI var's name as an environ key (latin-1, as uWSGI decodes it), interned: a front sends
/// the same few names with every request.
fn cgi_key<'py>(py: Python<'py>, name: &[u8]) -> PyResult<Bound<'py, PyString>> {
    CGI_KEYS.with(|cache| {
        if let Some(k) = cache.borrow().get(name) {
            return Ok(k.bind(py).clone());
        }
        let s = match std::str::from_utf8(name) {
            Ok(ascii) if name.is_ascii() => PyString::intern(py, ascii),
            _ => latin1(py, name)?,
        };
        let mut cache = cache.borrow_mut();
        if cache.len() < HEADER_KEYS_MAX {
            cache.insert(name.into(), s.clone().unbind());
        }
        Ok(s)
    })
}

type ServerStrings = (SocketAddr, Py<PyString>, Py<PyString>);

thread_local! {
    /// The last local address seen and its SERVER_NAME/SERVER_PORT strings: a worker listens on
    /// one or two addresses, so this almost always hits.
    static SERVER: RefCell<Option<ServerStrings>> = const { RefCell::new(None) };
}

fn server_name_port(
    py: Python<'_>,
    local: SocketAddr,
) -> (Bound<'_, PyString>, Bound<'_, PyString>) {
    SERVER.with(|cell| {
        if let Some((addr, name, port)) = cell.borrow().as_ref() {
            if *addr == local {
                return (name.bind(py).clone(), port.bind(py).clone());
            }
        }
        let name = PyString::new(py, &local.ip().to_string());
        let port = PyString::new(py, itoa::Buffer::new().format(local.port()));
        *cell.borrow_mut() = Some((local, name.clone().unbind(), port.clone().unbind()));
        (name, port)
    })
}

thread_local! {
    /// The last client address seen as a string: clients come back, and proxies in front are few.
    static REMOTE: RefCell<Option<(std::net::IpAddr, Py<PyString>)>> = const { RefCell::new(None) };
}

fn remote_ip(py: Python<'_>, ip: std::net::IpAddr) -> Bound<'_, PyString> {
    REMOTE.with(|cell| {
        if let Some((last, s)) = cell.borrow().as_ref() {
            if *last == ip {
                return s.bind(py).clone();
            }
        }
        let s = PyString::new(py, &ip.to_string());
        *cell.borrow_mut() = Some((ip, s.clone().unbind()));
        s
    })
}

/// `host:port` → (`host`, `Some(port)`); `[::1]:80` → (`::1`, `Some(80)`).
fn split_host(host: &str) -> (&str, Option<&str>) {
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

/// Bytes as a `str` the way WSGI wants them: each byte one code point (latin-1).
pub(crate) fn latin1<'py>(py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyString>> {
    if b.is_ascii() {
        return Ok(PyString::new(
            py,
            std::str::from_utf8(b).unwrap_or_default(),
        ));
    }
    // SAFETY: the pointer and length describe `b`; the result is a new reference or NULL with an
    // exception set, which from_owned_ptr_or_err turns into an error.
    unsafe {
        let ptr = pyo3::ffi::PyUnicode_DecodeLatin1(
            b.as_ptr().cast(),
            b.len() as pyo3::ffi::Py_ssize_t,
            std::ptr::null(),
        );
        Bound::from_owned_ptr_or_err(py, ptr).map(|o| o.cast_into_unchecked())
    }
}

/// `%XX` sequences decoded; a `%` not followed by two hex digits is kept as it is.
pub(crate) fn percent_decode(s: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return std::borrow::Cow::Borrowed(s);
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
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(&*percent_decode(b"/a%20b"), b"/a b");
        assert_eq!(&*percent_decode(b"/%e9t%C3%A9"), b"/\xe9t\xc3\xa9");
        assert_eq!(&*percent_decode(b"/100%"), b"/100%");
        assert_eq!(&*percent_decode(b"/%zz%4"), b"/%zz%4");
        assert_eq!(&*percent_decode(b"%41"), b"A");
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
    }
}
