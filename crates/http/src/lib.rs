//! The seam between the c10k server and the applications it hosts.
//!
//! Everything a handler needs and nothing else: a [`Request`] as any protocol delivers it (HTTP/1.x
//! or nginx's uwsgi), a [`Response`] with owned headers and a complete or streamed [`Body`], the
//! [`Handler`] trait, and the per-request [`Ctx`] that decides what a wait means under the worker
//! class that runs the handler.
//!
//! The server (`c10k-serve`) depends on this crate and is generic over [`Handler`]; applications
//! (the built-in one, hosted Python WSGI apps) depend on this crate and never on the server. A key
//! design decision is that handlers take the [`Request`] **by value**: a handler may move it to
//! another thread (a pool of Python threads) without copying the body.
//!
//! [`cgi`] holds the rules by which a request becomes the CGI variables of a WSGI `environ`, for
//! the hosted apps and for the server's access log alike.

mod body;
pub mod cgi;
pub mod early;
mod handler;
mod headers;
mod method;
mod request;
mod response;
mod status;
mod token;

pub use body::{Body, BodyStream, BoxError, FileBody, RequestBody};
pub use handler::{Capacity, Ctx, DeadlineExceeded, Handler, Wait, WorkerInfo};
pub use headers::Headers;
pub use method::Method;
pub use request::{Request, Scheme, Transport, Version};
pub use response::Response;
pub use status::{is_reason_phrase, reason_phrase};
pub use token::is_tchar;
