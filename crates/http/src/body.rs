//! Request and response bodies.
//!
//! A request body is in memory, or spooled to an unlinked temporary file once it is larger than
//! the server's body buffer (nginx's `client_body_buffer_size` model), so large uploads do not cost
//! memory. A response body is complete bytes, or a stream of chunks the server pulls one at a time
//! (a WSGI response iterable, a long download); dropping the stream is how the server says it will
//! pull no more, so a stream that owns a resource (WSGI's `close()`) releases it in `Drop`. Or it is
//! a range of an open regular file ([`FileBody`], WSGI's `wsgi.file_wrapper`), which the server
//! sends with `sendfile(2)`: the bytes go from the page cache to the socket without being copied
//! through the server, and its length is known, so it is framed like a complete body.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_core::Stream;

/// The error type a body stream may end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed response body: chunks in order; `None` ends it; an error ends it abnormally (the
/// server closes the connection instead of finishing the message).
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>;

/// A request body the server has fully received.
#[derive(Clone)]
pub enum RequestBody {
    Memory(Bytes),
    /// Spooled to a temporary file (already unlinked); read it with [`RequestBody::reader`].
    File {
        file: Arc<File>,
        len: u64,
    },
}

impl RequestBody {
    pub fn empty() -> RequestBody {
        RequestBody::Memory(Bytes::new())
    }

    pub fn len(&self) -> u64 {
        match self {
            RequestBody::Memory(b) => b.len() as u64,
            RequestBody::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body in memory, or `None` when it was spooled to a file.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            RequestBody::Memory(b) => Some(b),
            RequestBody::File { .. } => None,
        }
    }

    /// The whole body in memory (reads a spooled body back).
    pub fn to_bytes(&self) -> io::Result<Bytes> {
        match self {
            RequestBody::Memory(b) => Ok(b.clone()),
            RequestBody::File { .. } => {
                let mut v = Vec::with_capacity(self.len() as usize);
                self.reader().read_to_end(&mut v)?;
                Ok(Bytes::from(v))
            }
        }
    }

    /// A reader from the start of the body; readers are independent of each other.
    pub fn reader(&self) -> BodyReader {
        BodyReader {
            body: self.clone(),
            pos: 0,
        }
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestBody::Memory(b) => write!(f, "Memory({} bytes)", b.len()),
            RequestBody::File { len, .. } => write!(f, "File({len} bytes)"),
        }
    }
}

impl From<Bytes> for RequestBody {
    fn from(b: Bytes) -> RequestBody {
        RequestBody::Memory(b)
    }
}

/// Reads a [`RequestBody`] from its start.
#[derive(Debug)]
pub struct BodyReader {
    body: RequestBody,
    pos: u64,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.body.len().saturating_sub(self.pos);
        let want = (buf.len() as u64).min(left) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = match &self.body {
            RequestBody::Memory(b) => {
                let start = self.pos as usize;
                buf[..want].copy_from_slice(&b[start..start + want]);
                want
            }
            RequestBody::File { file, .. } => file.read_at(&mut buf[..want], self.pos)?,
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// A response body.
pub enum Body {
    Full(Bytes),
    Stream(BodyStream),
    File(FileBody),
}

/// `len` bytes of `file` from `offset`: a response body the server sends with `sendfile(2)`, with
/// a `Content-Length` of `len`. The file must be a regular file; if it ends before `len` bytes
/// (truncated meanwhile), the server closes the connection (the client sees a short body, never
/// a wrong one).
pub struct FileBody {
    pub file: File,
    pub offset: u64,
    pub len: u64,
}

impl Body {
    pub fn empty() -> Body {
        Body::Full(Bytes::new())
    }

    /// The complete body, or `None` for a stream.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Body::Full(b) => Some(b),
            Body::Stream(_) | Body::File(_) => None,
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Full(b) => write!(f, "Full({} bytes)", b.len()),
            Body::Stream(_) => f.write_str("Stream"),
            Body::File(b) => write!(f, "File({} bytes at {})", b.len, b.offset),
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        Body::Full(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    #[test]
    fn memory_and_file_bodies_read_the_same() {
        let data = b"hello, spooled world".to_vec();
        let mut f = tempfile_in_tmp();
        f.write_all(&data).unwrap();
        f.rewind().unwrap();
        let file = RequestBody::File {
            file: Arc::new(f),
            len: data.len() as u64,
        };
        let mem = RequestBody::Memory(Bytes::from(data.clone()));
        for body in [mem, file] {
            assert_eq!(body.len(), data.len() as u64);
            assert_eq!(&body.to_bytes().unwrap()[..], &data[..]);
            // Small reads reassemble the same bytes, and two readers don't disturb each other.
            let mut r1 = body.reader();
            let mut r2 = body.reader();
            let mut out = Vec::new();
            let mut buf = [0u8; 3];
            loop {
                let n = r1.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert_eq!(out, data);
            let mut all = Vec::new();
            r2.read_to_end(&mut all).unwrap();
            assert_eq!(all, data);
        }
    }

    fn tempfile_in_tmp() -> File {
        tempfile::tempfile().unwrap()
    }
}
