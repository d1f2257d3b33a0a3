//! How a response body goes out on a connection: whether the connection persists after it
//! ([`Persist`]), and how a streamed body is delimited ([`BodyFraming`]: nothing, a
//! `Content-Length`, chunked or close-delimited), which frames each chunk the driver sends.
//! [`body_framing`] decides the length a head announces and the framing from the response's
//! status and body, once for both heads that need it: HTTP's and uwsgi's `encode_head`.

use c10k_http::Body;

/// Whether the connection stays open after this response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persist {
    KeepAlive,
    Close,
}

/// How a streamed response body is delimited on the wire, decided by [`body_framing`]; it
/// frames each chunk the driver pulls from the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body bytes are sent (`HEAD`, 204, 304).
    Empty,
    /// `Content-Length` as the handler set it: exactly `left` more bytes.
    Length { left: u64 },
    /// `Transfer-Encoding: chunked` (HTTP/1.1 clients).
    Chunked,
    /// Delimited by closing the connection (HTTP/1.0 clients).
    Close,
}

/// The `Content-Length` a response's head announces (`None`: no such header) and how its body
/// goes out, from its `status` and `body`; `announced` is the handler's own `Content-Length`,
/// if it set a valid one. A stream of unknown length goes out as `unsized_stream`: chunked or
/// close-delimited is the caller's choice, as an HTTP/1.0 client cannot read chunks and nginx's
/// uwsgi module does not de-chunk.
///
/// A 1xx, 204 or 304 has no body whatever the handler returned (RFC 9112 §6.3): its bytes would
/// be read as the next response on a keep-alive connection. It gets no `Content-Length` either
/// (RFC 9110 §8.6: never in a 1xx or 204; in a 304 only the 200's length, which is not known
/// here). A 205 has no content either, but unlike a 204 it says so: `Content-Length: 0` (RFC
/// 9110 §15.3.6), else the client would read to the close.
///
/// `head_only` (HEAD) changes one thing: an empty complete body may announce the length the
/// handler gave, the one of the body it would have sent (Flask answers HEAD so). Leaving a
/// complete body's bytes out (HEAD, and a status without content: see
/// [`has_content`](super::has_content)) is the caller's part.
pub fn body_framing(
    status: u16,
    body: &Body,
    announced: Option<u64>,
    head_only: bool,
    unsized_stream: BodyFraming,
) -> (Option<u64>, BodyFraming) {
    let no_body = status < 200 || status == 204 || status == 304;
    match body {
        _ if no_body => (None, BodyFraming::Empty),
        _ if status == 205 => (Some(0), BodyFraming::Empty),
        Body::Full(b) => {
            let len = match announced {
                Some(n) if head_only && b.is_empty() => n,
                _ => b.len() as u64,
            };
            (Some(len), BodyFraming::Length { left: len })
        }
        // A file's length is known: framed like a complete body, its bytes sent by the driver.
        Body::File(f) => (Some(f.len), BodyFraming::Length { left: f.len }),
        Body::Stream(_) => match announced {
            Some(n) => (Some(n), BodyFraming::Length { left: n }),
            None => (None, unsized_stream),
        },
    }
}

/// A streamed body did not match the `Content-Length` its handler announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the response body does not match its Content-Length")]
pub struct LengthMismatch;

impl BodyFraming {
    /// Appends one chunk of body, framed. Empty chunks are skipped (in chunked coding an empty
    /// chunk would end the body).
    pub fn chunk(&mut self, out: &mut Vec<u8>, data: &[u8]) -> Result<(), LengthMismatch> {
        if data.is_empty() {
            return Ok(());
        }
        match self {
            BodyFraming::Empty => {}
            BodyFraming::Length { left } => {
                if data.len() as u64 > *left {
                    return Err(LengthMismatch);
                }
                *left -= data.len() as u64;
                out.extend_from_slice(data);
            }
            BodyFraming::Chunked => {
                out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            BodyFraming::Close => out.extend_from_slice(data),
        }
        Ok(())
    }

    /// Ends the body: the last chunk in chunked coding; an error if fewer bytes came than
    /// announced (the connection must then be closed).
    pub fn end(&mut self, out: &mut Vec<u8>) -> Result<(), LengthMismatch> {
        match self {
            BodyFraming::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
            BodyFraming::Length { left } if *left > 0 => return Err(LengthMismatch),
            _ => {}
        }
        Ok(())
    }

    /// Whether the connection can carry another response after this body.
    pub fn keeps_alive(&self) -> bool {
        *self != BodyFraming::Close
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_that_breaks_its_length_is_an_error() {
        let mut out = Vec::new();
        let mut f = BodyFraming::Length { left: 3 };
        assert_eq!(f.chunk(&mut out, b"abcd"), Err(LengthMismatch));
        let mut f = BodyFraming::Length { left: 3 };
        f.chunk(&mut out, b"ab").unwrap();
        assert_eq!(f.end(&mut out), Err(LengthMismatch));
    }
}
