//! Request header fields in the order the client sent them, duplicates kept.
//!
//! Names keep the client's spelling (case is compared insensitively); values are raw bytes,
//! because HTTP allows obs-text (latin-1) and a WSGI environ must see it unchanged. A plain `Vec`
//! beats a map here: requests carry a handful of fields, and order and duplicates matter to
//! applications (WSGI joins repeated fields; `Cookie` with `; `).

use bytes::Bytes;

/// The header fields of one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    fields: Vec<(String, Bytes)>,
}

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    pub fn with_capacity(n: usize) -> Headers {
        Headers {
            fields: Vec::with_capacity(n),
        }
    }

    /// Appends a field; an earlier field of the same name is kept.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        self.fields.push((name.into(), value.into()));
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of `name` as text, if it is valid UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Bytes> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every field, in the order received.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

impl<N: Into<String>, V: Into<Bytes>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Headers {
        Headers {
            fields: iter
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_duplicates_and_ignores_case() {
        let h: Headers = [("Host", "a"), ("Cookie", "x=1"), ("cookie", "y=2")]
            .into_iter()
            .collect();
        assert_eq!(h.get_str("HOST"), Some("a"));
        let cookies: Vec<_> = h.get_all("COOKIE").collect();
        assert_eq!(cookies, [&Bytes::from("x=1"), &Bytes::from("y=2")]);
        let names: Vec<_> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Host", "Cookie", "cookie"]);
        assert_eq!(h.get("missing"), None);
    }
}
