//! What every connection driver shares: per-connection settings and the timeout answer.

use std::time::Duration;

use c10k_app::{Request, Response};

use crate::config::ServeConfig;
use crate::proto::Limits;

/// Settings a connection driver needs, derived once from [`ServeConfig`].
#[derive(Clone, Debug)]
pub(crate) struct ConnSettings {
    pub limits: Limits,
    /// Idle time allowed between requests; `None` disables keep-alive.
    pub keepalive: Option<Duration>,
    pub header_timeout: Duration,
    pub request_timeout: Option<Duration>,
    /// Initial read buffer; it grows on demand up to the head and body limits.
    pub read_buffer: usize,
    /// How long and how much to read after refusing a request, before closing.
    pub linger: Duration,
    pub linger_bytes: usize,
    /// Keep the headers the access log prints.
    pub log_fields: bool,
}

impl ConnSettings {
    pub fn from_config(c: &ServeConfig) -> ConnSettings {
        ConnSettings {
            limits: c.limits(),
            keepalive: (c.keepalive > 0.0).then(|| Duration::from_secs_f64(c.keepalive)),
            header_timeout: Duration::from_secs_f64(c.header_timeout),
            request_timeout: c.request_timeout.map(Duration::from_secs_f64),
            read_buffer: 2048,
            linger: Duration::from_secs(1),
            linger_bytes: 256 * 1024,
            log_fields: c.access_log.is_some(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lingering {
    Yes,
    No,
}

pub(crate) fn log_timeout(req: &Request, elapsed: Duration) {
    tracing::warn!(
        method = %req.method,
        path = %req.path,
        elapsed_ms = elapsed.as_millis() as u64,
        "request exceeded --request-timeout; answered 504"
    );
}

pub(crate) fn timeout_response() -> Response {
    Response::error(504, "request exceeded --request-timeout")
}

/// Appends the response to one request, framed for the connection: it stays open when the
/// client allows it and `may_keep` (keep-alive on, worker not stopping, class allows it).
/// Returns whether it stays open.
pub(crate) fn answer(
    out: &mut Vec<u8>,
    incoming: &crate::proto::Incoming,
    resp: &Response,
    may_keep: bool,
) -> bool {
    use crate::proto::{encode_response, Persist};
    let keep = may_keep && incoming.keep_alive;
    let persist = if keep {
        Persist::KeepAlive
    } else {
        Persist::Close
    };
    let head_only = incoming.request.method == c10k_app::Method::Head;
    encode_response(out, resp, incoming.minor_version, persist, head_only);
    keep
}

/// Appends the answer to a request the codec refused; the connection closes after it.
pub(crate) fn refuse(out: &mut Vec<u8>, err: &crate::proto::HttpError) {
    tracing::debug!(status = err.status, reason = %err.reason, "refused request");
    crate::proto::encode_response(out, &err.response(), 1, crate::proto::Persist::Close, false);
}
