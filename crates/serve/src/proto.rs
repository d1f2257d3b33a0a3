//! A sans-I/O HTTP/1.1 server codec on `httparse`.
//!
//! [`Decoder`] takes the bytes a connection has buffered and yields complete requests (head and
//! whole body), in order, so pipelined requests fall out naturally; [`encode_response`] appends a
//! response to an output buffer. Neither touches a socket: the blocking and async connection
//! drivers share this code, and its behaviour on hostile input is tested without I/O.
//!
//! Framing follows RFC 9112 strictly where leniency enables request smuggling: a request with both
//! `Transfer-Encoding` and `Content-Length`, differing `Content-Length` values, or a
//! `Transfer-Encoding` other than a final `chunked` is refused and the connection closed; so is
//! a second `Host` or `Content-Type`, and a trailer that would frame, route or authenticate the
//! request (RFC 9110 §6.5.1), which gunicorn 27 refuses as well.
//!
//! One job per file:
//!
//! - `limits`: the request [`Limits`], the [`HttpError`] a refused request is answered with, and
//!   the sink a request body is taken into (memory, then a temporary file).
//! - `decode`: the [`Decoder`]: a request head parsed within the limits and interpreted into a
//!   request (target, framing, `Host`, `Expect`, a trusted proxy's headers, keep-alive), then
//!   its body; [`ConnInfo`], [`Incoming`], [`RequestMeta`].
//! - `chunked`: chunked request bodies: chunk sizes, extensions and the trailer section.
//! - `framing`: [`Persist`] and [`BodyFraming`], how a response body is delimited on the wire,
//!   and [`body_framing`], which picks it (and the `Content-Length`) for HTTP and uwsgi alike.
//! - `encode`: [`encode_head`] and [`encode_response`], with the per-thread `Date` cache, and
//!   [`end_head`], the end of a head and its complete body for HTTP and uwsgi alike.
//! - `decoded`: [`decode_chunks`], a byte stream decoded piece by piece into a comparable
//!   [`Decoded`], for the split-equivalence tests and the fuzz target.

mod chunked;
mod decode;
mod decoded;
mod encode;
mod framing;
mod limits;

pub(crate) use decode::secure_scheme_header;
pub use decode::{ConnInfo, Decoder, Incoming, LogFields, RequestMeta};
pub use decoded::{decode_chunks, Decoded, DecodedRequest};
pub use encode::{encode_head, encode_response, end_head, has_content, CONTINUE};
pub use framing::{body_framing, BodyFraming, LengthMismatch, Persist};
pub(crate) use limits::BodySink;
pub use limits::{forwarder_names, HttpError, Limits};
