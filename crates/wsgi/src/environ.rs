//! The WSGI `environ` of a request (PEP 3333 and the CGI variables it requires).
//!
//! Built for speed under the GIL: every key is an interned string made once per process, the
//! entries that never change for a worker (`wsgi.version`, `wsgi.errors`, `wsgi.multithread`,
//! `SCRIPT_NAME`, ...) live in a template dict that each request copies in one call (a dict copy
//! moves the whole hash table), and header names are turned into `HTTP_*` keys once per thread.
//!
//! What each variable holds, and the decisions where PEP 3333 leaves room (header names with `_`
//! dropped, repeated fields joined, `PATH_INFO` percent-decoded with `--root-path` stripped into
//! `SCRIPT_NAME`, ...), are [`c10k_http::cgi`]'s rules, shared with the access log's
//! `%({name}e)s`; this module makes Python strings of them (bytes decoded as latin-1). A path
//! outside `--root-path`, or outside a trusted front's `SCRIPT_NAME` header, is not the app's:
//! see [`Template::mount_fault`].
//!
//! Behind nginx's `uwsgi_pass`, the CGI vars nginx sent beyond what the request carries
//! (`Request::cgi_vars`: `SCRIPT_NAME`, `DOCUMENT_ROOT`, `uwsgi_param FOO bar`, ...) are set last
//! and as sent, so they win over what the server derived (`SERVER_NAME`, and `SCRIPT_NAME` from
//! `--root-path`): the environ an app sees is the one uWSGI would give it. Names starting with
//! `wsgi.` are not taken from a front.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;

use c10k_http::cgi::{self, HeaderVar};
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

/// Why a request must not reach the app (see [`Template::mount_fault`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MountFault {
    /// Not under `--root-path`.
    OutsideRoot,
    /// Not under the trusted front's `SCRIPT_NAME` header.
    OutsideFront,
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
        d.set_item(&k.server_software, cgi::SERVER_SOFTWARE)?;
        let root_path = cgi::script_name(root_path).to_owned();
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

    /// The environ's `SCRIPT_NAME`: `--root-path` without its trailing `/`.
    pub(crate) fn script_name(&self) -> &str {
        &self.root_path
    }

    /// Why `req` must not reach the app, if it must not: its path is outside the app's mount
    /// point. That is a trusted front's `SCRIPT_NAME` header when it sent one
    /// ([`cgi::front_mount`]), else `--root-path` ([`cgi::under_root`]). gunicorn raises
    /// `ConfigurationProblem` for a path that does not start with its `SCRIPT_NAME` and answers
    /// 500, as uWSGI does under `--manage-script-name --no-default-app` for a path under none of
    /// its `--mount` points (without `--no-default-app` it calls its only app with `SCRIPT_NAME`
    /// empty). A uwsgi front that sent its own `SCRIPT_NAME` var (nginx's `uwsgi_param
    /// SCRIPT_NAME`) has made the split itself: its word stands, as under uWSGI, where that var
    /// picks the mount point.
    pub(crate) fn mount_fault(&self, req: &Request) -> Option<MountFault> {
        match cgi::front_mount(req) {
            Some(Ok(_)) => return None,
            Some(Err(cgi::NotUnderFront)) => return Some(MountFault::OutsideFront),
            None => {}
        }
        if self.root_path.is_empty() || req.cgi_var("SCRIPT_NAME").is_some() {
            return None;
        }
        (!cgi::under_root(&req.path, &self.root_path)).then_some(MountFault::OutsideRoot)
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

        let path = cgi::path_info(&req.path, &self.root_path);
        let target = PyString::new(py, &req.target);
        if path.is_ascii() && *path == *req.target.as_bytes() {
            // No query, no escapes, no root path: PATH_INFO is the target's text, one string.
            env.set_item(&k.path_info, &target)?;
        } else {
            env.set_item(&k.path_info, latin1(py, &path)?)?;
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
                // A unix socket: from the Host header (the defaults as interned strings).
                let (name, port) = cgi::server_from_host(req.host(), req.scheme);
                match name {
                    "localhost" => env.set_item(&k.server_name, &k.localhost)?,
                    name => env.set_item(&k.server_name, name)?,
                }
                match port {
                    "80" => env.set_item(&k.server_port, &k.port80)?,
                    "443" => env.set_item(&k.server_port, &k.port443)?,
                    port => env.set_item(&k.server_port, port)?,
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

        if let Some(n) = cgi::content_length(req) {
            env.set_item(&k.content_length, itoa::Buffer::new().format(n))?;
        }
        let body = std::mem::replace(&mut req.body, c10k_http::RequestBody::empty());
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
        // A trusted front's SCRIPT_NAME header mounts the app for this request, over
        // --root-path (a path outside it never gets here: see `Template::mount_fault`).
        if let Some(Ok(mount)) = cgi::front_mount(req) {
            env.set_item(&k.script_name, latin1(py, mount.script_name)?)?;
            env.set_item(&k.path_info, latin1(py, &mount.path_info)?)?;
        }
        Ok(env)
    }

    fn headers(&self, py: Python<'_>, env: &Bound<'_, PyDict>, req: &Request) -> PyResult<()> {
        let k = keys(py);
        for (i, (name, value)) in req.headers.iter().enumerate() {
            let var = cgi::header_var(name);
            // CONTENT_LENGTH was set from the body actually received (above).
            if matches!(var, HeaderVar::Dropped | HeaderVar::ContentLength) {
                continue;
            }
            let same = |(n, _): &(&str, &bytes::Bytes)| n.eq_ignore_ascii_case(name);
            // A repeated field was joined when its first occurrence was met.
            if req.headers.iter().take(i).any(|f| same(&f)) {
                continue;
            }
            let val = if req.headers.iter().skip(i + 1).any(|f| same(&f)) {
                latin1(py, &cgi::joined(&req.headers, name).unwrap_or_default())?
            } else if var == HeaderVar::ContentType {
                latin1(py, value)?
            } else {
                let (key, val) = header_entry(py, name, value)?;
                env.set_item(key, val)?;
                continue;
            };
            if var == HeaderVar::ContentType {
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
    PyString::intern(py, &cgi::http_key(name))
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
