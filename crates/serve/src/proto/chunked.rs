//! Chunked request bodies (RFC 9112 §7.1), decoded as they arrive: chunk-size lines and their
//! extensions (checked, then ignored), chunk data into the request's [`BodySink`], and the
//! trailer section (checked, bounded and dropped; a field that frames, routes or authenticates
//! the request is refused there).

use bytes::{Buf, BytesMut};
use c10k_http::is_tchar;

use super::limits::{BodySink, HttpError};

#[derive(Debug, Clone, Copy)]
pub(super) enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// `left` bytes of chunk data, then CRLF.
    Data { left: usize },
    /// Expecting trailer fields up to an empty line; `seen` bytes of them so far.
    Trailers { seen: usize },
}

/// Longest chunk-size line (size plus extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Longest trailer section accepted, all its lines together (gunicorn caps their number at
/// `--limit-request-fields`): trailers are dropped, so a longer section is only a way to keep a
/// request reading past `--limit-request-body`.
const MAX_TRAILERS: usize = 8192;

/// Decodes as much of a chunked body as `buf` holds. Returns true when the body is complete.
pub(super) fn decode_chunked(
    buf: &mut BytesMut,
    body: &mut BodySink,
    state: &mut ChunkState,
    max_body: u64,
    body_buffer: usize,
) -> Result<bool, HttpError> {
    loop {
        match *state {
            ChunkState::Size => {
                let Some(nl) = memchr::memchr(b'\n', buf) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(HttpError::bad("chunk size line too long"));
                    }
                    return Ok(false);
                };
                if nl > MAX_CHUNK_LINE {
                    return Err(HttpError::bad("chunk size line too long"));
                }
                let line = buf.split_to(nl + 1);
                let line = line
                    .strip_suffix(b"\r\n")
                    .ok_or_else(|| HttpError::bad("chunk size line must end in CRLF"))?;
                // Extensions after ';' are ignored, but must be well-formed: a bare CR or a
                // stray byte in one is where a proxy and this server could disagree on where
                // the line ends (gunicorn 27 refuses them too).
                let (size, ext) = match memchr::memchr(b';', line) {
                    // Whitespace is allowed before a ';' (BWS), never after the size alone.
                    Some(i) => (trim_bws_end(&line[..i]), Some(&line[i..])),
                    None => (line, None),
                };
                if size.is_empty() || !size.iter().all(u8::is_ascii_hexdigit) {
                    return Err(HttpError::bad("invalid chunk size"));
                }
                // Leading zeros are valid (RFC 9112 §7.1: 1*HEXDIG); beyond them, 15 digits
                // keep the sum with the body so far far from overflowing.
                let zeros = size.iter().take_while(|&&d| d == b'0').count();
                let size = &size[zeros.min(size.len() - 1)..];
                if size.len() > 15 {
                    return Err(HttpError::new(
                        413,
                        format!("request body larger than {max_body} bytes (--limit-request-body)"),
                    ));
                }
                if ext.is_some_and(|ext| !is_chunk_ext(ext)) {
                    return Err(HttpError::bad("invalid chunk extension"));
                }
                let size = size.iter().fold(0u64, |n, &d| {
                    n * 16 + u64::from((d as char).to_digit(16).unwrap_or(0))
                });
                if body.len() + size > max_body {
                    return Err(HttpError::new(
                        413,
                        format!("request body larger than {max_body} bytes (--limit-request-body)"),
                    ));
                }
                *state = if size == 0 {
                    ChunkState::Trailers { seen: 0 }
                } else {
                    ChunkState::Data {
                        left: size as usize,
                    }
                };
            }
            ChunkState::Data { left } => {
                if left > 0 {
                    let take = left.min(buf.len());
                    if take == 0 {
                        return Ok(false);
                    }
                    body.extend(&buf[..take], body_buffer)?;
                    buf.advance(take);
                    *state = ChunkState::Data { left: left - take };
                    continue;
                }
                if buf.len() < 2 {
                    return Ok(false);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(HttpError::bad("chunk data not followed by CRLF"));
                }
                buf.advance(2);
                *state = ChunkState::Size;
            }
            ChunkState::Trailers { seen } => {
                // Trailer fields are checked (a malformed line or a field RFC 9110 §6.5.1 keeps out of
                // trailers is a 400) and dropped; the section ends with an empty line.
                let too_large = || HttpError::new(431, "trailer section too large");
                let Some(nl) = memchr::memchr(b'\n', buf) else {
                    if seen + buf.len() > MAX_TRAILERS {
                        return Err(too_large());
                    }
                    return Ok(false);
                };
                let line = buf.split_to(nl + 1);
                if line.as_ref() == b"\r\n" {
                    return Ok(true);
                }
                let Some(name) = trailer_field_name(&line) else {
                    return Err(HttpError::bad("malformed trailer field"));
                };
                if FORBIDDEN_TRAILERS
                    .iter()
                    .any(|f| name.eq_ignore_ascii_case(f.as_bytes()))
                {
                    return Err(HttpError::bad(format!(
                        "{} is not allowed in a trailer",
                        String::from_utf8_lossy(name)
                    )));
                }
                let seen = seen + line.len();
                if seen > MAX_TRAILERS {
                    return Err(too_large());
                }
                *state = ChunkState::Trailers { seen };
            }
        }
    }
}

/// `s` without trailing spaces and tabs (RFC 9110 BWS). Not `trim_ascii_end`: a CR is no
/// whitespace here.
fn trim_bws_end(s: &[u8]) -> &[u8] {
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    &s[..end]
}

fn skip_bws(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    &s[start..]
}

fn split_token(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().take_while(|&&b| is_tchar(b)).count();
    s.split_at(n)
}

/// RFC 9112 §7.1.1, from the first `;` of a chunk-size line to its end:
/// `*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`.
fn is_chunk_ext(mut s: &[u8]) -> bool {
    loop {
        s = skip_bws(s);
        let Some(rest) = s.strip_prefix(b";") else {
            return s.is_empty();
        };
        let (name, rest) = split_token(skip_bws(rest));
        if name.is_empty() {
            return false;
        }
        s = rest;
        let Some(rest) = skip_bws(s).strip_prefix(b"=") else {
            continue;
        };
        let rest = skip_bws(rest);
        s = if let Some(quoted) = rest.strip_prefix(b"\"") {
            match quoted_string_rest(quoted) {
                Some(after) => after,
                None => return false,
            }
        } else {
            let (value, after) = split_token(rest);
            if value.is_empty() {
                return false;
            }
            after
        };
    }
}

/// The rest of a quoted-string after its opening quote (RFC 9110 §5.6.4): what follows the
/// closing quote, or `None` when it is malformed or unterminated.
fn quoted_string_rest(s: &[u8]) -> Option<&[u8]> {
    let text = |b: u8| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'"' => return Some(&s[i + 1..]),
            b'\\' => {
                if !s.get(i + 1).is_some_and(|&b| text(b)) {
                    return None;
                }
                i += 2;
            }
            b if text(b) => i += 1,
            _ => return None,
        }
    }
    None
}

/// Fields a trailer may not carry (RFC 9110 §6.5.1): they frame, route or authenticate the
/// message, which is settled before the body. gunicorn 27's list.
const FORBIDDEN_TRAILERS: [&str; 6] = [
    "Content-Length",
    "Transfer-Encoding",
    "Host",
    "Trailer",
    "TE",
    "Authorization",
];

/// The name of a trailer line, CRLF included: `token ":" value` with no control byte in the
/// value but HTAB (as in a header); `None` when the line is not one. Trailers are dropped, but a
/// line this server reads differently from a proxy (a bare CR, obsolete folding) is a framing
/// disagreement all the same.
fn trailer_field_name(line: &[u8]) -> Option<&[u8]> {
    let (name, rest) = split_token(line.strip_suffix(b"\r\n")?);
    let value = rest.strip_prefix(b":")?;
    let valid = !name.is_empty()
        && value
            .iter()
            .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::decode::Decoder;
    use crate::proto::decoded::{decode_all, decode_chunks};
    use crate::proto::limits::Limits;

    #[test]
    fn byte_at_a_time_chunked() {
        let input: &[u8] =
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n";
        let mut d = Decoder::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut got = None;
        for &b in input {
            buf.extend_from_slice(&[b]);
            if let Some(r) = d.decode(&mut buf).unwrap() {
                got = Some(r);
            }
        }
        let r = got.expect("request decoded");
        assert_eq!(&r.request.body.to_bytes().unwrap()[..], b"abcde");
        assert!(buf.is_empty());
        assert!(d.is_idle());
    }

    /// Compared with gunicorn 27: it refuses a malformed chunk extension (a bare CR in one
    /// was taken and dropped here, a line-end disagreement with any proxy that splits on CR),
    /// and takes leading zeros in a chunk size (refused here as "invalid chunk size").
    /// The trailer section is bounded as a whole, not only line by line: 200 short trailer
    /// fields (11 KB, no line near the bound) were read and dropped without end.
    #[test]
    fn a_long_trailer_section_of_short_lines_is_refused() {
        let raw = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../c10k/tests/requests/invalid/049.http"),
        )
        .unwrap();
        for step in [raw.len(), 1000, 7] {
            let d = decode_chunks(&Limits::default(), raw.chunks(step));
            assert!(d.requests.is_empty(), "{step}: {d:?}");
            assert_eq!(d.refused.map(|(s, _)| s), Some(431), "{step}");
        }
        // A few trailers are fine.
        let ok = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                   1\r\na\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\n";
        let d = decode_chunks(&Limits::default(), [&ok[..]]);
        assert!(d.refused.is_none(), "{d:?}");
        assert_eq!(d.requests.len(), 1);
    }

    /// gunicorn's corpus, invalid/rfc9110_trailer_forbidden_{cl,te,host}_01: a trailer that
    /// would change the message's framing, routing or authentication (RFC 9110 §6.5.1) is a
    /// 400, as gunicorn 27 refuses it (its app gets `InvalidHeaderName` from `wsgi.input`).
    /// c10k dropped trailers unread and ran the app: harmless here, but a proxy in front that
    /// merges trailers into the head would have seen another length or host than c10k did.
    #[test]
    fn framing_routing_and_credentials_in_a_trailer_are_refused() {
        for name in [
            "Content-Length",
            "transfer-encoding",
            "Host",
            "Trailer",
            "TE",
            "Authorization",
        ] {
            let raw = format!(
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n0\r\nX-Ok: 1\r\n{name}: 5\r\n\r\n"
            );
            for step in [raw.len(), 1] {
                let d = decode_chunks(&Limits::default(), raw.as_bytes().chunks(step));
                assert!(d.requests.is_empty(), "{name}: {d:?}");
                assert_eq!(
                    d.refused,
                    Some((400, format!("{name} is not allowed in a trailer"))),
                    "{name}"
                );
            }
        }
        // Other trailers are still read and dropped; a name that merely starts like a forbidden
        // one is not forbidden.
        let ok = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                   5\r\nhello\r\n0\r\nTEx: 1\r\nHosts: 2\r\nVary: *\r\n\r\n";
        let d = decode_chunks(&Limits::default(), [&ok[..]]);
        assert!(d.refused.is_none(), "{d:?}");
        assert_eq!(d.requests[0].body, b"hello");
    }

    #[test]
    fn chunk_extensions_are_checked_and_sizes_may_have_leading_zeros() {
        for ext in [
            ";a",
            ";a=b",
            " ; a = b ;c",
            ";a=\"\"",
            ";a=\"x \\\" y\"",
            "\t;a=\"\u{e9}\"",
        ] {
            assert!(is_chunk_ext(ext.as_bytes()), "{ext:?}");
        }
        for ext in [
            ";",
            ";=b",
            ";a=",
            ";a=b c",
            ";a\rb",
            ";a=\"open",
            ";a=\"x\x01\"",
            ";a=\"x\"y",
            "; a b",
        ] {
            assert!(!is_chunk_ext(ext.as_bytes()), "{ext:?}");
        }
        let chunked = |body: &[u8]| {
            let mut raw =
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            raw.extend_from_slice(body);
            decode_all(&raw)
        };
        let refusal = |body: &[u8]| {
            let e = chunked(body).1.unwrap_err();
            (e.status, e.reason.into_owned())
        };
        let bad_ext = (400, "invalid chunk extension".to_owned());
        assert_eq!(refusal(b"3;a\rb\r\nabc\r\n0\r\n\r\n"), bad_ext);
        assert_eq!(refusal(b"3;a=b c\r\nabc\r\n0\r\n\r\n"), bad_ext);
        assert_eq!(refusal(b"3\r\nabc\r\n0;\r\n\r\n"), bad_ext);
        // A CR is not whitespace before the ';'.
        assert_eq!(refusal(b"3\r;a\r\nabc\r\n0\r\n\r\n").0, 400);
        assert_eq!(refusal(b"3\r\nabc\r\n0\r\nX: a\rb\r\n\r\n").0, 400);
        assert_eq!(refusal(b"3\r\nabc\r\n0\r\n folded: x\r\n\r\n").0, 400);
        assert_eq!(refusal(b"10000000000000003\r\nabc\r\n0\r\n\r\n").0, 413);
        let (reqs, res, _) =
            chunked(b"0000000000000000000003;x=\"1\"\r\nabc\r\n000\r\nX-T: 1\r\n\r\n");
        res.unwrap();
        assert_eq!(&reqs[0].request.body.to_bytes().unwrap()[..], b"abc");
    }
}
