//! Query-string access without allocating a map: requests carry one or two parameters, so a
//! linear scan of the raw string beats building a `HashMap` per request.

use std::borrow::Cow;

/// A borrowed `application/x-www-form-urlencoded` query string.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    raw: &'a str,
}

impl<'a> Query<'a> {
    pub fn new(raw: &'a str) -> Query<'a> {
        Query { raw }
    }

    /// The first value of `name`, percent-decoded (`+` is a space).
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        form_urlencoded::parse(self.raw.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_decodes() {
        let q = Query::new("a=1&room=caf%C3%A9+bar&a=2");
        assert_eq!(q.get("a").as_deref(), Some("1"));
        assert_eq!(q.get("room").as_deref(), Some("café bar"));
        assert_eq!(q.get("b"), None);
    }
}
