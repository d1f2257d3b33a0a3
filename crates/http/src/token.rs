//! RFC 9110 `token` characters (`tchar`): what a method, a header name or a chunk extension's
//! name is made of. One definition for the HTTP and uwsgi decoders and the WSGI header checks.

/// Whether `b` is an RFC 9110 `tchar`. Inlined: the uwsgi decoder and `start_response` call it
/// for every byte of every header name.
#[inline]
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tchar_is_rfc_9110s() {
        let tchars: Vec<u8> = (0..=255u8).filter(|&b| is_tchar(b)).collect();
        assert_eq!(tchars.len(), 26 * 2 + 10 + 15);
        for b in b"()<>@,;:\\\"/[]?={} \t\x7f" {
            assert!(!is_tchar(*b), "{}", *b as char);
        }
    }
}
