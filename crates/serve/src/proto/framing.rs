//! How a response body goes out on a connection: whether the connection persists after it
//! ([`Persist`]), and how a streamed body is delimited ([`BodyFraming`]: nothing, a
//! `Content-Length`, chunked or close-delimited), which frames each chunk the driver sends.

/// Whether the connection stays open after this response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persist {
    KeepAlive,
    Close,
}

/// How a streamed response body is delimited on the wire, decided by
/// [`encode_head`](super::encode_head); it frames each chunk the driver pulls from the stream.
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
