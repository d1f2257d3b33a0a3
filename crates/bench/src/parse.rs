//! An incremental HTTP/1.x response parser: bytes go in as they arrive, completed responses
//! come out. The key design choice is that the parser never holds the bytes it has consumed:
//! the engine reads into one buffer per thread, and only a head split across reads is copied
//! into the connection's own (reused) buffer. Bodies are counted, not stored, whatever their
//! framing (Content-Length, chunked, or delimited by the connection closing) — unless the
//! caller asks for them with [`ResponseParser::capture_bodies`] (`--save-bodies`).

/// Largest response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;

/// A response that finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub status: u16,
    /// Body bytes after removing chunked framing.
    pub body: u64,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
}

/// Why a response could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed response head")]
    Head,
    #[error("response head larger than 64 KiB")]
    HeadTooLarge,
    #[error("malformed chunked body")]
    Chunked,
    #[error("invalid Content-Length")]
    ContentLength,
}

/// What the end of the stream meant for the response in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eof {
    /// No byte of a response had arrived.
    Idle,
    /// The body was delimited by the close: the response is complete.
    Complete(Done),
    /// The framing promised more bytes than arrived.
    Truncated { status: Option<u16>, body: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { val: u64, digits: u8 },
    Ext { val: u64 },
    SizeLf { val: u64 },
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerEndLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    Chunked(Chunk),
    Close,
}

/// Parser state for one connection; reset itself after each response.
#[derive(Debug)]
pub struct ResponseParser {
    state: State,
    status: u16,
    keep_alive: bool,
    body: u64,
    /// Head bytes carried over from a previous read (empty in the common case).
    partial: Vec<u8>,
    /// The body of the response in progress, when bodies are captured (framing removed).
    capture: Option<Vec<u8>>,
}

/// Most body bytes kept per captured response; the rest is counted, not kept.
pub const MAX_CAPTURE: usize = 64 * 1024;

impl Default for ResponseParser {
    fn default() -> Self {
        ResponseParser::new()
    }
}

impl ResponseParser {
    pub fn new() -> ResponseParser {
        ResponseParser {
            state: State::Head,
            status: 0,
            keep_alive: false,
            body: 0,
            partial: Vec::new(),
            capture: None,
        }
    }

    /// Keeps the body of each response (up to [`MAX_CAPTURE`] bytes) for
    /// [`ResponseParser::captured`].
    pub fn capture_bodies(&mut self) {
        self.capture = Some(Vec::new());
    }

    /// The body of the response just completed (empty unless bodies are captured). Valid until
    /// the next response begins.
    pub fn captured(&self) -> &[u8] {
        self.capture.as_deref().unwrap_or_default()
    }

    fn keep(&mut self, data: &[u8]) {
        if let Some(c) = self.capture.as_mut() {
            let room = MAX_CAPTURE.saturating_sub(c.len());
            c.extend_from_slice(&data[..data.len().min(room)]);
        }
    }

    /// Whether any byte of a response is held.
    pub fn in_progress(&self) -> bool {
        self.state != State::Head || !self.partial.is_empty()
    }

    /// Forgets any response in progress (the connection was closed).
    pub fn reset(&mut self) {
        self.state = State::Head;
        self.partial.clear();
        self.body = 0;
    }

    /// Consumes bytes from `data`. Returns how many were consumed and the response they
    /// completed, if any; call again with the rest (pipelined responses).
    /// `no_body` marks a response to HEAD. `server` receives the Server header when it is
    /// `Some(empty)` (the caller asks once, so the hot path never allocates).
    pub fn feed(
        &mut self,
        data: &[u8],
        no_body: bool,
        server: &mut Option<String>,
    ) -> Result<(usize, Option<Done>), ParseError> {
        match self.state {
            State::Head => self.feed_head(data, no_body, server),
            State::Length(rem) => {
                let take = rem.min(data.len() as u64);
                self.keep(&data[..take as usize]);
                self.body += take;
                if take == rem {
                    Ok((take as usize, Some(self.finish())))
                } else {
                    self.state = State::Length(rem - take);
                    Ok((take as usize, None))
                }
            }
            State::Close => {
                self.keep(data);
                self.body += data.len() as u64;
                Ok((data.len(), None))
            }
            State::Chunked(c) => self.feed_chunked(c, data),
        }
    }

    /// The peer closed the connection.
    pub fn eof(&mut self) -> Eof {
        let out = match self.state {
            State::Head if self.partial.is_empty() => Eof::Idle,
            State::Head => Eof::Truncated {
                status: None,
                body: 0,
            },
            State::Close => Eof::Complete(Done {
                status: self.status,
                body: self.body,
                keep_alive: false,
            }),
            State::Length(_) | State::Chunked(_) => Eof::Truncated {
                status: Some(self.status),
                body: self.body,
            },
        };
        self.reset();
        out
    }

    fn finish(&mut self) -> Done {
        let done = Done {
            status: self.status,
            body: self.body,
            keep_alive: self.keep_alive,
        };
        self.state = State::Head;
        self.body = 0;
        done
    }

    fn feed_head(
        &mut self,
        data: &[u8],
        no_body: bool,
        server: &mut Option<String>,
    ) -> Result<(usize, Option<Done>), ParseError> {
        let carried = self.partial.len();
        if carried > 0 {
            let room = MAX_HEAD + 1 - carried.min(MAX_HEAD + 1);
            self.partial
                .extend_from_slice(&data[..data.len().min(room)]);
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let buf: &[u8] = if carried > 0 { &self.partial } else { data };
        let head_len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if carried == 0 {
                    self.partial
                        .extend_from_slice(&data[..data.len().min(MAX_HEAD + 1)]);
                }
                if self.partial.len() > MAX_HEAD {
                    return Err(ParseError::HeadTooLarge);
                }
                return Ok((data.len(), None));
            }
            Err(_) => return Err(ParseError::Head),
        };
        let status = resp.code.unwrap_or(0);
        let http11 = resp.version == Some(1);
        let mut close = false;
        let mut keep = false;
        let mut chunked = false;
        let mut length: Option<u64> = None;
        for h in resp.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                let v = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or(ParseError::ContentLength)?;
                if length.is_some_and(|l| l != v) {
                    return Err(ParseError::ContentLength);
                }
                length = Some(v);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = h
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in h.value.split(|&b| b == b',') {
                    let t = token.trim_ascii();
                    close |= t.eq_ignore_ascii_case(b"close");
                    keep |= t.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case(b"server") {
                if let Some(s) = server.as_mut() {
                    if s.is_empty() {
                        s.push_str(&String::from_utf8_lossy(h.value));
                    }
                }
            }
        }
        let consumed = head_len - carried;
        self.partial.clear();
        if (100..200).contains(&status) && status != 101 {
            // Interim response (100 Continue): the real one follows.
            return Ok((consumed, None));
        }
        self.status = status;
        self.body = 0;
        if let Some(c) = self.capture.as_mut() {
            c.clear();
        }
        self.keep_alive = if http11 { !close } else { keep && !close };
        if no_body || status == 204 || status == 304 || status == 101 {
            return Ok((consumed, Some(self.finish())));
        }
        if chunked {
            self.state = State::Chunked(Chunk::Size { val: 0, digits: 0 });
        } else if let Some(len) = length {
            if len == 0 {
                return Ok((consumed, Some(self.finish())));
            }
            self.state = State::Length(len);
        } else {
            self.keep_alive = false;
            self.state = State::Close;
        }
        Ok((consumed, None))
    }

    fn feed_chunked(
        &mut self,
        mut c: Chunk,
        data: &[u8],
    ) -> Result<(usize, Option<Done>), ParseError> {
        let mut i = 0;
        while i < data.len() {
            if let Chunk::Data(rem) = c {
                let take = rem.min((data.len() - i) as u64);
                self.keep(&data[i..i + take as usize]);
                self.body += take;
                i += take as usize;
                c = if take == rem {
                    Chunk::DataCr
                } else {
                    Chunk::Data(rem - take)
                };
                continue;
            }
            let b = data[i];
            i += 1;
            c = match c {
                Chunk::Size { val, digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= 15 {
                            return Err(ParseError::Chunked);
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        Chunk::Size {
                            val: val * 16 + d,
                            digits: digits + 1,
                        }
                    }
                    b';' | b' ' | b'\t' if digits > 0 => Chunk::Ext { val },
                    b'\r' if digits > 0 => Chunk::SizeLf { val },
                    b'\n' if digits > 0 => size_done(val),
                    _ => return Err(ParseError::Chunked),
                },
                Chunk::Ext { val } => match b {
                    b'\n' => size_done(val),
                    _ => Chunk::Ext { val },
                },
                Chunk::SizeLf { val } => match b {
                    b'\n' => size_done(val),
                    _ => return Err(ParseError::Chunked),
                },
                Chunk::Data(_) => unreachable!("handled above"),
                Chunk::DataCr => match b {
                    b'\r' => Chunk::DataLf,
                    b'\n' => Chunk::Size { val: 0, digits: 0 },
                    _ => return Err(ParseError::Chunked),
                },
                Chunk::DataLf => match b {
                    b'\n' => Chunk::Size { val: 0, digits: 0 },
                    _ => return Err(ParseError::Chunked),
                },
                Chunk::TrailerStart => match b {
                    b'\r' => Chunk::TrailerEndLf,
                    b'\n' => return Ok((i, Some(self.finish()))),
                    _ => Chunk::TrailerLine,
                },
                Chunk::TrailerLine => match b {
                    b'\n' => Chunk::TrailerStart,
                    _ => Chunk::TrailerLine,
                },
                Chunk::TrailerEndLf => match b {
                    b'\n' => return Ok((i, Some(self.finish()))),
                    _ => return Err(ParseError::Chunked),
                },
            };
        }
        self.state = State::Chunked(c);
        Ok((i, None))
    }
}

fn size_done(val: u64) -> Chunk {
    if val == 0 {
        Chunk::TrailerStart
    } else {
        Chunk::Data(val)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split into pieces of `step` bytes; returns the responses.
    fn run(input: &[u8], step: usize, head: bool) -> (Vec<Done>, ResponseParser) {
        let mut p = ResponseParser::new();
        let mut out = Vec::new();
        let mut server = None;
        for piece in input.chunks(step) {
            let mut off = 0;
            while off < piece.len() {
                let (n, done) = p.feed(&piece[off..], head, &mut server).unwrap();
                off += n;
                out.extend(done);
                assert!(n > 0 || off == piece.len() || done.is_some());
            }
        }
        (out, p)
    }

    const PIPELINED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nServer: x\r\n\r\nhello\n\
HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\n\
HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok";

    #[test]
    fn parses_every_framing_at_every_split() {
        for step in 1..PIPELINED.len() {
            let (out, p) = run(PIPELINED, step, false);
            assert_eq!(
                out,
                vec![
                    Done {
                        status: 200,
                        body: 6,
                        keep_alive: true
                    },
                    Done {
                        status: 404,
                        body: 19,
                        keep_alive: true
                    },
                    Done {
                        status: 204,
                        body: 0,
                        keep_alive: true
                    },
                    Done {
                        status: 200,
                        body: 2,
                        keep_alive: true
                    },
                ],
                "step {step}"
            );
            assert!(!p.in_progress());
        }
    }

    #[test]
    fn captured_bodies_lose_their_framing_at_every_split() {
        for step in 1..PIPELINED.len() {
            let mut p = ResponseParser::new();
            p.capture_bodies();
            let mut bodies = Vec::new();
            for piece in PIPELINED.chunks(step) {
                let mut off = 0;
                while off < piece.len() {
                    let (n, done) = p.feed(&piece[off..], false, &mut None).unwrap();
                    off += n;
                    if done.is_some() {
                        bodies.push(String::from_utf8(p.captured().to_vec()).unwrap());
                    }
                }
            }
            assert_eq!(
                bodies,
                ["hello\n", "abc0123456789abcdef", "", "ok"],
                "step {step}"
            );
        }
        let mut p = ResponseParser::new();
        p.capture_bodies();
        p.feed(b"HTTP/1.0 200 OK\r\n\r\n", false, &mut None)
            .unwrap();
        p.feed(b"{\"id\":7}", false, &mut None).unwrap();
        assert!(matches!(p.eof(), Eof::Complete(_)));
        assert_eq!(p.captured(), b"{\"id\":7}");
        // Without capture nothing is kept.
        let (_, p) = run(PIPELINED, 7, false);
        assert!(p.captured().is_empty());
    }

    #[test]
    fn close_delimited_completes_at_eof() {
        let (out, mut p) = run(b"HTTP/1.0 200 OK\r\n\r\nabcdef", 4, false);
        assert!(out.is_empty());
        assert_eq!(
            p.eof(),
            Eof::Complete(Done {
                status: 200,
                body: 6,
                keep_alive: false
            })
        );
    }

    #[test]
    fn truncated_and_idle_eof() {
        let (_, mut p) = run(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
            5,
            false,
        );
        assert_eq!(
            p.eof(),
            Eof::Truncated {
                status: Some(200),
                body: 3
            }
        );
        let (_, mut p) = run(b"HTTP/1.1 200", 5, false);
        assert_eq!(
            p.eof(),
            Eof::Truncated {
                status: None,
                body: 0
            }
        );
        assert_eq!(p.eof(), Eof::Idle);
    }

    #[test]
    fn head_responses_have_no_body() {
        let (out, _) = run(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 7, true);
        assert_eq!(
            out,
            vec![Done {
                status: 200,
                body: 0,
                keep_alive: true
            }]
        );
    }

    #[test]
    fn connection_close_and_http10_defaults() {
        let (out, _) = run(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            3,
            false,
        );
        assert!(!out[0].keep_alive);
        let (out, _) = run(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 3, false);
        assert!(!out[0].keep_alive);
    }

    #[test]
    fn rejects_garbage() {
        let mut p = ResponseParser::new();
        let mut s = None;
        assert_eq!(
            p.feed(b"garbage\r\n\r\n", false, &mut s),
            Err(ParseError::Head)
        );
        let mut p = ResponseParser::new();
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        let (n, _) = p.feed(bad, false, &mut s).unwrap();
        assert_eq!(p.feed(&bad[n..], false, &mut s), Err(ParseError::Chunked));
        let mut p = ResponseParser::new();
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(p.feed(two, false, &mut s), Err(ParseError::ContentLength));
    }

    #[test]
    fn captures_server_once() {
        let mut p = ResponseParser::new();
        let mut s = Some(String::new());
        p.feed(
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 0\r\n\r\n",
            false,
            &mut s,
        )
        .unwrap();
        assert_eq!(s.as_deref(), Some("nginx"));
    }
}
