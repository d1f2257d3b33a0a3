//! The text pieces both access-log formats share ([`crate::track`]'s combined line and
//! [`crate::access_format`]'s gunicorn atoms): Apache's escaping of logged strings and the
//! Common Log Format's time.

/// Apache escapes quotes, backslashes and control characters in logged strings.
pub(crate) fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// `10/Oct/2000:13:55:36 +0000` for Unix seconds `secs`, rearranged from the IMF-fixdate the
/// `httpdate` crate formats (`Tue, 10 Oct 2000 13:55:36 GMT`) rather than from a calendar of our
/// own.
pub(crate) fn clf_time(out: &mut String, secs: u64) {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let imf = httpdate::fmt_http_date(at);
    match (
        imf.get(5..7),
        imf.get(8..11),
        imf.get(12..16),
        imf.get(17..25),
    ) {
        (Some(day), Some(month), Some(year), Some(time)) => {
            out.push_str(day);
            out.push('/');
            out.push_str(month);
            out.push('/');
            out.push_str(year);
            out.push(':');
            out.push_str(time);
            out.push_str(" +0000");
        }
        _ => out.push_str(&imf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clf_dates() {
        let clf = |secs| {
            let mut s = String::new();
            clf_time(&mut s, secs);
            s
        };
        assert_eq!(clf(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(clf(951_782_400), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(clf(1_796_083_199), "30/Nov/2026:23:59:59 +0000");
    }
}
