//! Masking what looks secret in a query string before it is shown (`/processlist`) or written
//! (the access log): `/?token=abc&page=2` is shown as `/?token=***&page=2`.
//!
//! A key is sensitive when, lower-cased and percent-decoded, it contains one of [`SENSITIVE`]
//! (so `api_key`, `X-Auth-Token`, `sessionid` and `oauth_signature` all are). Masking a harmless
//! key by mistake costs a log reader a value; missing a secret leaks it, so the match is broad.
//! `--log-query-values` turns masking off for debugging.

use std::borrow::Cow;

/// Parts of query keys whose values are masked.
const SENSITIVE: &[&str] = &[
    "token",
    "key",
    "secret",
    "passw",
    "pwd",
    "auth",
    "session",
    "sid",
    "sig",
    "credential",
    "jwt",
    "code",
    "ticket",
    "nonce",
    "otp",
];

/// What a masked value becomes.
pub(crate) const MASK: &str = "***";

/// `query` (without the `?`) with the value of every sensitive-looking key replaced by
/// [`MASK`]; borrowed when nothing needed masking.
pub(crate) fn query(query: &str) -> Cow<'_, str> {
    if !query.split('&').any(masks) {
        return Cow::Borrowed(query);
    }
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        if masks(pair) {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            out.push_str(key);
            out.push('=');
            out.push_str(MASK);
        } else {
            out.push_str(pair);
        }
    }
    Cow::Owned(out)
}

/// A request target (`/path?query`) with its query masked as [`query`] does.
pub(crate) fn target(target: &str) -> Cow<'_, str> {
    match target.split_once('?') {
        Some((path, q)) => match query(q) {
            Cow::Borrowed(_) => Cow::Borrowed(target),
            Cow::Owned(q) => Cow::Owned(format!("{path}?{q}")),
        },
        None => Cow::Borrowed(target),
    }
}

/// Whether the value of `key=value` is masked: it has a value and a sensitive-looking key.
fn masks(pair: &str) -> bool {
    let Some((key, value)) = pair.split_once('=') else {
        return false;
    };
    if value.is_empty() {
        return false;
    }
    let key = decode_lower(key);
    SENSITIVE.iter().any(|s| key.contains(s))
}

/// `key` lower-cased with `%XX` escapes and `+` decoded (bytes that are not UTF-8 are dropped:
/// only the ASCII words matter).
fn decode_lower(key: &str) -> String {
    let b = key.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_values_are_masked_and_the_rest_kept() {
        assert_eq!(
            query("token=SECRET123&api_key=k&page=2"),
            "token=***&api_key=***&page=2"
        );
        for key in [
            "password",
            "passwd",
            "PASSWORD",
            "secret",
            "client_secret",
            "auth",
            "Authorization",
            "session",
            "PHPSESSID",
            "sig",
            "signature",
            "oauth_signature",
            "access_token",
            "api%5Fkey",
            "X-Amz-Signature",
        ] {
            let q = format!("{key}=v1&x=1");
            assert_eq!(query(&q), format!("{key}=***&x=1"), "{key}");
        }
        assert!(matches!(query("page=2&sort=name"), Cow::Borrowed(_)));
        assert_eq!(query("token=&token"), "token=&token", "nothing to hide");
        assert_eq!(query(""), "");
        assert_eq!(target("/a?delay=1"), "/a?delay=1");
        assert_eq!(target("/a?x=1&token=t"), "/a?x=1&token=***");
        assert_eq!(target("/token=t"), "/token=t", "paths are not queries");
        assert_eq!(query("k%="), "k%=", "a short escape does not panic");
        assert_eq!(
            query("%4b%45%59=v"),
            "%4b%45%59=***",
            "KEY, percent-encoded"
        );
    }
}
