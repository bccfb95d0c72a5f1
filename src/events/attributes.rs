//! Message attributes: a Pub/Sub message's `attributes` map, or the HTTP headers that carry the
//! same key/value pairs (CloudEvents HTTP binary mode; unwrapped Pub/Sub push with write
//! metadata, which writes each attribute as a `KEY: VALUE` header).

use std::collections::BTreeMap;

use http::HeaderMap;

/// Key/value attributes looked up case-insensitively: the CloudEvents Pub/Sub binding says
/// attribute names are case-insensitive, and HTTP header names are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Attributes(BTreeMap<String, String>);

impl Attributes {
    /// From a Pub/Sub message's attributes. Should two keys differ only in case, the first in
    /// key order wins; Pub/Sub itself allows both, but no sender promoter knows uses that.
    pub(crate) fn from_pubsub(map: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut lowered = BTreeMap::new();
        for (key, value) in map {
            lowered.entry(key.to_ascii_lowercase()).or_insert(value);
        }
        Attributes(lowered)
    }

    /// From HTTP headers. `percent_decode_ce` applies the CloudEvents HTTP binding's
    /// percent-decoding to `ce-*` values; Pub/Sub's unwrapped push writes attribute values as they
    /// are, so it must not be applied there. A `ce-*` header whose value is not UTF-8 is an error
    /// (it would be an attribute promoter cannot read); other such headers are skipped.
    pub(crate) fn from_headers(
        headers: &HeaderMap,
        percent_decode_ce: bool,
    ) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for (name, value) in headers {
            let key = name.as_str(); // http lowercases header names
            let is_ce = key.starts_with("ce-");
            let text = match std::str::from_utf8(value.as_bytes()) {
                Ok(text) => text,
                Err(_) if is_ce => return Err(format!("header {key} is not valid UTF-8")),
                Err(_) => continue,
            };
            let text = if is_ce && percent_decode_ce {
                // A malformed escape is kept as sent: the binding only asks receivers to decode
                // what senders encoded, and a literal '%' is harmless downstream.
                percent_encoding::percent_decode_str(text)
                    .decode_utf8()
                    .map(|decoded| decoded.into_owned())
                    .unwrap_or_else(|_| text.to_owned())
            } else {
                text.to_owned()
            };
            // The first occurrence of a repeated header wins, as for any single-valued field.
            map.entry(key.to_owned()).or_insert(text);
        }
        Ok(Attributes(map))
    }

    /// The value of `name` (any case).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// True when any `ce-*` attribute is present.
    pub(crate) fn has_ce(&self) -> bool {
        self.ce().next().is_some()
    }

    /// The `ce-*` attributes, as (attribute name without the prefix, value).
    pub(crate) fn ce(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .filter_map(|(key, value)| Some((key.strip_prefix("ce-")?, value.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn pubsub_attributes_are_case_insensitive() {
        let attrs = Attributes::from_pubsub([
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("CE-Type".to_owned(), "test-passed".to_owned()),
        ]);
        assert_eq!(attrs.get("content-type"), Some("application/json"));
        assert_eq!(attrs.get("ce-type"), Some("test-passed"));
        assert_eq!(
            attrs.ce().collect::<Vec<_>>(),
            vec![("type", "test-passed")]
        );
    }

    #[test]
    fn ce_headers_are_percent_decoded_only_when_asked() {
        let mut headers = HeaderMap::new();
        headers.insert("ce-subject", HeaderValue::from_static("a%20b"));
        headers.insert("x-other", HeaderValue::from_static("a%20b"));
        let decoded = Attributes::from_headers(&headers, true).unwrap_or_default();
        assert_eq!(decoded.get("ce-subject"), Some("a b"));
        assert_eq!(decoded.get("x-other"), Some("a%20b"));
        let raw = Attributes::from_headers(&headers, false).unwrap_or_default();
        assert_eq!(raw.get("ce-subject"), Some("a%20b"));
    }

    #[test]
    fn non_utf8_ce_header_is_an_error_and_other_headers_are_skipped() {
        let mut headers = HeaderMap::new();
        let bad = HeaderValue::from_bytes(b"\xff\xfe").unwrap_or(HeaderValue::from_static("x"));
        headers.insert("x-binary", bad.clone());
        assert_eq!(
            Attributes::from_headers(&headers, true).map(|a| a.get("x-binary").is_none()),
            Ok(true)
        );
        headers.insert("ce-id", bad);
        assert!(Attributes::from_headers(&headers, true).is_err());
    }
}
