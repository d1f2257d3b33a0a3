//! What every connection driver shares: per-connection settings, the answer to a request
//! (framed for the connection) and the timeout answer.

use std::time::Duration;

use c10k_http::{Body, BodyStream, Response};

use crate::config::ServeConfig;
use crate::proto::{encode_head, BodyFraming, HttpError, Limits, Persist, RequestMeta};

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
    /// Limits of a uwsgi listener's requests (the same body limit).
    pub uwsgi: crate::uwsgi::UwsgiLimits,
    /// `--uwsgi-allow-from`.
    pub uwsgi_allow_from: Vec<crate::config::AllowFrom>,
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
            uwsgi: crate::uwsgi::UwsgiLimits::from_http(&c.limits()),
            uwsgi_allow_from: c.uwsgi_allow_from.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lingering {
    Yes,
    No,
}

pub(crate) fn log_timeout(method: &str, path: &str, elapsed: Duration) {
    tracing::warn!(
        method = %method,
        path = %path,
        elapsed_ms = elapsed.as_millis() as u64,
        "request exceeded --request-timeout; answered 504"
    );
}

pub(crate) fn timeout_response() -> Response {
    Response::error(504, "request exceeded --request-timeout")
}

/// What is left to send of an answer after [`answer`] appended its head.
pub(crate) enum Answer {
    /// Everything is in the output buffer; `keep`: the connection stays open.
    Done { keep: bool },
    /// The body is a stream: write the buffer, then pull chunks through `framing`.
    Stream {
        stream: BodyStream,
        framing: BodyFraming,
        keep: bool,
    },
}

/// Appends the response to one request, framed for the connection: it stays open when the
/// client allows it and `may_keep` (keep-alive on, worker not stopping, class allows it).
pub(crate) fn answer(
    out: &mut Vec<u8>,
    meta: &RequestMeta,
    mut resp: Response,
    may_keep: bool,
) -> Answer {
    let keep = may_keep && meta.keep_alive;
    let persist = if keep {
        Persist::KeepAlive
    } else {
        Persist::Close
    };
    let framing = encode_head(out, &resp, meta.minor_version, persist, meta.head_only);
    let keep = keep && framing.keeps_alive();
    match std::mem::replace(&mut resp.body, Body::empty()) {
        Body::Stream(stream) if framing != BodyFraming::Empty => Answer::Stream {
            stream,
            framing,
            keep,
        },
        // A HEAD answer's stream is dropped unread (that is how a stream learns it is done).
        _ => Answer::Done { keep },
    }
}

/// Appends the answer to a request the codec refused; the connection closes after it.
pub(crate) fn refuse(out: &mut Vec<u8>, err: &HttpError) {
    tracing::debug!(status = err.status, reason = %err.reason, "refused request");
    crate::proto::encode_response(out, &err.response(), 1, Persist::Close, false);
}

/// The length a full body will have on the wire, for the access log (a stream's is counted as
/// it goes out).
pub(crate) fn full_len(resp: &Response) -> usize {
    resp.body.as_bytes().map_or(0, |b| b.len())
}
