//! Status codes on the wire: the standard reason phrase of each code, and what an application's
//! own phrase may contain (RFC 9112 §4: `reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )`).

/// The reason phrase of `status`: every code in IANA's HTTP status code registry (RFC 9110's
/// wording), plus 418; `Unknown` for any other code. Sent when the handler gave no phrase of its
/// own ([`crate::Response::reason`]).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "Unknown",
    }
}

/// Whether `reason` may follow the status code on a status line: HTAB, SP, visible ASCII and
/// obs-text (0x80-0xFF) only, so no CR, LF, NUL or other control byte can end the line early or
/// smuggle a header (gunicorn's `STATUS_RE` allows the same set).
pub fn is_reason_phrase(reason: &[u8]) -> bool {
    reason
        .iter()
        .all(|&b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_phrases_refuse_control_bytes() {
        assert!(is_reason_phrase(b"NOT FOUND"));
        assert!(is_reason_phrase(b"\tcaf\xe9  ~"));
        assert!(is_reason_phrase(b""));
        for bad in [
            &b"OK\r\nX: 1"[..],
            b"a\nb",
            b"a\rb",
            b"a\x00",
            b"a\x01",
            b"a\x7f",
            b"\x1b[31m",
        ] {
            assert!(!is_reason_phrase(bad), "{bad:?}");
        }
        assert_eq!(reason_phrase(404), "Not Found");
        assert_eq!(reason_phrase(299), "Unknown");
    }
}
