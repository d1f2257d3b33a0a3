//! What the codec refuses and how: the request [`Limits`] (each with its own status), the
//! [`HttpError`] a refused request is answered with, and the [`BodySink`] a request body is
//! taken into while it arrives (memory up to the body buffer, then an unlinked temporary file).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::BytesMut;
use c10k_http::{RequestBody, Response};

use crate::allow::AllowFrom;

/// Request limits, each answered with its own status (nginx's and gunicorn's defaults).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest request line (method, target, version) in bytes → 414.
    pub max_request_line: usize,
    /// Largest request head (request line and all headers) in bytes → 431.
    pub max_head: usize,
    /// Most header fields → 431.
    pub max_headers: usize,
    /// Longest header line (name, colon, value and CRLF) in bytes → 431; 0 for no limit of its
    /// own (`max_head` still bounds it). gunicorn's `--limit-request-field_size`.
    pub max_field_size: usize,
    /// Largest body in bytes → 413.
    pub max_body: u64,
    /// Largest body kept in memory; a bigger one is spooled to an unlinked temporary file
    /// (nginx's `client_body_buffer_size`), so many large uploads at once cost disk, not RAM.
    pub body_buffer: usize,
    /// Peers whose `X-Forwarded-Proto: https` (`X-Forwarded-Protocol: ssl`, `X-Forwarded-Ssl: on`)
    /// sets the request's scheme (gunicorn's `--forwarded-allow-ips`); a unix socket's peer is
    /// always trusted, as in gunicorn.
    pub forwarded_allow: Arc<[AllowFrom]>,
    /// Header names with `_` (upper-case, or `*` for any) that a `forwarded_allow` peer may send
    /// to the app (gunicorn's `--forwarder-headers`): see `decode::forwarder_vars`.
    pub forwarder_headers: Arc<[Box<str>]>,
}

/// `--forwarder-headers` as [`Limits::forwarder_headers`] holds them: trimmed, upper-case, no
/// empty ones.
pub fn forwarder_names<S: AsRef<str>>(names: &[S]) -> Arc<[Box<str>]> {
    names
        .iter()
        .map(|n| n.as_ref().trim().to_ascii_uppercase().into_boxed_str())
        .filter(|n| !n.is_empty())
        .collect()
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_request_line: 8190,
            max_head: 32 * 1024,
            max_headers: 100,
            max_field_size: 8190,
            max_body: 10 * 1024 * 1024,
            body_buffer: 64 * 1024,
            forwarded_allow: AllowFrom::loopback().into(),
            forwarder_headers: forwarder_names(&["SCRIPT_NAME", "PATH_INFO"]),
        }
    }
}

/// Where a request body goes while it arrives: memory up to the body buffer, then a file. The
/// uwsgi codec ([`crate::uwsgi`]) spools its bodies through the same sink.
#[derive(Debug)]
pub(crate) enum BodySink {
    Memory(BytesMut),
    File { file: std::fs::File, len: u64 },
}

impl BodySink {
    pub(crate) fn len(&self) -> u64 {
        match self {
            BodySink::Memory(b) => b.len() as u64,
            BodySink::File { len, .. } => *len,
        }
    }

    /// Appends body bytes, moving to a temporary file once past `buffer` bytes.
    pub(crate) fn extend(&mut self, data: &[u8], buffer: usize) -> Result<(), HttpError> {
        use std::io::Write;
        if let BodySink::Memory(mem) = self {
            if mem.len() + data.len() <= buffer {
                mem.extend_from_slice(data);
                return Ok(());
            }
            let mut file = tempfile::tempfile().map_err(spool_error)?;
            file.write_all(mem).map_err(spool_error)?;
            *self = BodySink::File {
                file,
                len: mem.len() as u64,
            };
        }
        if let BodySink::File { file, len } = self {
            file.write_all(data).map_err(spool_error)?;
            *len += data.len() as u64;
        }
        Ok(())
    }

    pub(crate) fn into_body(self) -> RequestBody {
        match self {
            BodySink::Memory(b) => RequestBody::Memory(b.freeze()),
            BodySink::File { file, len } => RequestBody::File {
                file: std::sync::Arc::new(file),
                len,
            },
        }
    }
}

fn spool_error(e: std::io::Error) -> HttpError {
    // The detail is for the operator (a full disk), not the client.
    tracing::error!("cannot spool a request body to a temporary file: {e}");
    HttpError::new(503, "cannot store the request body now; retry later")
}

/// A request the server refuses, with the status and the reason sent to the client. The
/// connection is closed after the answer: framing can no longer be trusted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status} {reason}")]
pub struct HttpError {
    pub status: u16,
    pub reason: Cow<'static, str>,
}

impl HttpError {
    pub(super) fn new(status: u16, reason: impl Into<Cow<'static, str>>) -> HttpError {
        HttpError {
            status,
            reason: reason.into(),
        }
    }

    pub(super) fn bad(reason: impl Into<Cow<'static, str>>) -> HttpError {
        HttpError::new(400, reason)
    }

    /// The response sent for this error.
    pub fn response(&self) -> Response {
        Response::error(self.status, &self.reason)
    }
}
