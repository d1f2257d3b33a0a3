//! The admin listener's connections: accept, read a request through the project's HTTP codec
//! ([`crate::proto::Decoder`]), answer it once, close.
//!
//! The master serves these inside its single-threaded poll loop, so nothing here blocks: admin
//! connections are non-blocking and advance a step each time the loop wakes (accept, read what
//! has arrived, answer, write what the socket takes). A client that is slow to send its request
//! is dropped at a deadline, and at most [`MAX_PENDING`] are kept. The admin listener is never one
//! of the `--bind` listeners, so the public port answers these paths with the application's 404.
//!
//! With `--admin-token`, every route but the probes (`/livez`, `/readyz`, which tell nothing but
//! up or down) needs `Authorization: Bearer TOKEN`, compared in constant time; 401 otherwise.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use c10k_http::{Method, Request, Response};

use crate::config::BindAddr;
use crate::listener::Listener;
use crate::proto::{encode_response, Decoder, Limits, Persist};
use crate::stream::Stream;

/// Admin connections open at once; the oldest is dropped beyond this.
const MAX_PENDING: usize = 64;
/// Time an admin client has to send its request and take the answer.
const DEADLINE: Duration = Duration::from_secs(2);
/// Largest admin request head read.
const MAX_REQUEST: usize = 8192;

fn limits() -> Limits {
    Limits {
        max_request_line: MAX_REQUEST,
        max_head: MAX_REQUEST,
        max_headers: 64,
        max_field_size: 0,
        // The admin routes take no body.
        max_body: 0,
        body_buffer: 0,
        // No admin route looks at the scheme.
        forwarded_allow: Vec::new().into(),
        forwarder_headers: Vec::new().into(),
    }
}

enum Phase {
    Reading(Box<Decoder>, BytesMut),
    Writing(Vec<u8>, usize),
}

struct Pending {
    stream: Stream,
    phase: Phase,
    deadline: Instant,
}

pub(crate) struct Admin {
    listener: Listener,
    pending: Vec<Pending>,
    token: Option<String>,
}

impl Admin {
    pub fn bind(addr: &BindAddr, token: Option<String>) -> io::Result<Admin> {
        let listener = Listener::bind(addr, 64, false)?;
        listener.set_nonblocking(true)?;
        Ok(Admin {
            listener,
            pending: Vec::new(),
            token,
        })
    }

    pub fn local_addr(&self) -> io::Result<BindAddr> {
        self.listener.local_addr()
    }

    /// Descriptors the master's poll should watch: the listener, then each pending connection.
    pub fn pollfds(&self) -> Vec<libc::pollfd> {
        let mut fds = vec![libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for p in &self.pending {
            let events = match p.phase {
                Phase::Reading(..) => libc::POLLIN,
                Phase::Writing(..) => libc::POLLOUT,
            };
            fds.push(libc::pollfd {
                fd: p.stream.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        fds
    }

    /// The soonest deadline of a pending connection.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.deadline).min()
    }

    /// Moves every admin connection as far as it goes without blocking. `route` answers a
    /// complete `GET`/`HEAD` request.
    pub fn progress(&mut self, mut route: impl FnMut(&Request) -> Response) {
        for _ in 0..MAX_PENDING {
            let accepted = self
                .listener
                .accept()
                .map(|(s, _)| (s.set_nonblocking(true), s));
            match accepted {
                Ok((Ok(()), stream)) => {
                    if self.pending.len() >= MAX_PENDING {
                        self.pending.remove(0);
                    }
                    self.pending.push(Pending {
                        stream,
                        phase: Phase::Reading(
                            Box::new(Decoder::new(limits())),
                            BytesMut::with_capacity(1024),
                        ),
                        deadline: Instant::now() + DEADLINE,
                    });
                }
                Ok((Err(_), _)) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!("admin accept: {e}");
                    break;
                }
            }
        }
        let now = Instant::now();
        let token = self.token.as_deref();
        let mut route = |req: &Request| match token {
            Some(t) if !OPEN.contains(&req.path.as_str()) && !authorized(req, t) => {
                Response::error(401, "this admin listener needs Authorization: Bearer TOKEN")
                    .with_header("WWW-Authenticate", "Bearer realm=\"c10k-admin\"")
            }
            _ => route(req),
        };
        self.pending
            .retain_mut(|p| p.deadline > now && advance(p, &mut route));
    }
}

/// Routes answered without the token: they tell nothing but whether the server is up or ready,
/// and probes (kubelet, balancers) often cannot send a header.
const OPEN: [&str; 2] = ["/livez", "/readyz"];

/// Whether `req` carries `Authorization: Bearer TOKEN` for `token`.
fn authorized(req: &Request, token: &str) -> bool {
    let Some(value) = req.headers.get("authorization") else {
        return false;
    };
    let value: &[u8] = value;
    let Some(space) = value.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (scheme, given) = (&value[..space], value[space..].trim_ascii());
    scheme.eq_ignore_ascii_case(b"bearer") && same(given, token.as_bytes())
}

/// Equality whose time does not depend on where two byte strings first differ, so the token
/// cannot be guessed a byte at a time from answer times (only the lengths show).
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i).copied(), b.get(i).copied());
        diff |= usize::from(x.unwrap_or(0) ^ y.unwrap_or(0));
    }
    std::hint::black_box(diff) == 0
}

/// One step of one connection; false when it is done (answered or failed).
fn advance(p: &mut Pending, route: &mut impl FnMut(&Request) -> Response) -> bool {
    if let Phase::Reading(decoder, buf) = &mut p.phase {
        let mut chunk = [0u8; 2048];
        let mut eof = false;
        loop {
            match p.stream.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() > 2 * MAX_REQUEST {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        let mut out = Vec::new();
        match decoder.decode(buf) {
            Ok(Some(incoming)) => {
                let resp = match incoming.request.method {
                    Method::Get | Method::Head => route(&incoming.request),
                    _ => Response::error(405, "only GET and HEAD are served here")
                        .with_header("Allow", "GET, HEAD"),
                };
                let resp = resp.with_header("Cache-Control", "no-store");
                let meta = &incoming.meta;
                encode_response(
                    &mut out,
                    &resp,
                    meta.minor_version,
                    Persist::Close,
                    meta.head_only,
                );
            }
            Ok(None) if eof => return false,
            Ok(None) => return true,
            Err(e) => encode_response(&mut out, &e.response(), 1, Persist::Close, false),
        }
        p.phase = Phase::Writing(out, 0);
    }
    if let Phase::Writing(out, pos) = &mut p.phase {
        while *pos < out.len() {
            match p.stream.write(&out[*pos..]) {
                Ok(0) => return false,
                Ok(n) => *pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_checked_whole() {
        let with = |auth: Option<&str>| {
            let mut req = Request::new(Method::Get, "/status");
            if let Some(a) = auth {
                req.headers.append("Authorization", a.to_owned());
            }
            authorized(&req, "s3cret")
        };
        assert!(with(Some("Bearer s3cret")));
        assert!(with(Some("bearer  s3cret ")));
        for bad in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Basic s3cret"),
            Some("s3cret"),
            Some("Bearer"),
            Some(""),
        ] {
            assert!(!with(bad), "{bad:?}");
        }
        assert!(same(b"", b""));
        assert!(!same(b"a", b""));
    }
}
