//! Node base URLs and endpoint URLs built from them.
//!
//! Names may hold `%` and `|` (`%RETRY%group`, tag expressions `A||B`), so path
//! segments and query values are always percent-encoded by [`reqwest::Url`], never
//! pasted into a string.

use reqwest::Url;

use super::error::{ClientError, Result};

/// A node's base URL, normalised: `http` or `https` scheme, host, no query or fragment, and a
/// path without a trailing slash (so `http://a:1/` and `http://a:1` are one node).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeUrl(Url);

impl NodeUrl {
    /// Parses and normalises a base URL.
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`] for an unparsable URL, a scheme other than `http`
    /// or `https`, or one with a query or fragment.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: text.to_string(),
            reason: reason.to_string(),
        };
        let mut url = Url::parse(text.trim()).map_err(|e| invalid(&e.to_string()))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(invalid("only http:// and https:// are supported"));
        }
        if url.host_str().is_none() {
            return Err(invalid("no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a base URL has no query or fragment"));
        }
        let path = url.path().trim_end_matches('/').to_string();
        url.set_path(&path);
        Ok(Self(url))
    }

    /// The URL of an endpoint under this base: each segment percent-encoded as one
    /// path segment, the query pairs form-encoded.
    pub fn endpoint(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.0.clone();
        url.path_segments_mut()
            .expect("`parse` accepts only http(s) URLs with a host, which can be a base")
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (key, value) in query {
                pairs.append_pair(key, value);
            }
        }
        url
    }

    /// The normalised text, e.g. `http://127.0.0.1:18081`.
    pub fn as_str(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }
}

impl std::fmt::Display for NodeUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(text: &str) -> NodeUrl {
        NodeUrl::parse(text).expect("valid base URL")
    }

    #[test]
    fn base_urls_are_normalised() {
        assert_eq!(
            node("http://127.0.0.1:18081/").as_str(),
            "http://127.0.0.1:18081"
        );
        assert_eq!(
            node("http://127.0.0.1:18081"),
            node("http://127.0.0.1:18081/")
        );
        assert_eq!(node(" http://h:1/api/ ").as_str(), "http://h:1/api");
        assert_eq!(node("https://h:1/").as_str(), "https://h:1");
        for bad in [
            "127.0.0.1:18081",
            "ftp://h:1",
            "http://h:1/?a=b",
            "not a url",
        ] {
            let err = NodeUrl::parse(bad).expect_err(bad);
            assert!(
                matches!(err, ClientError::InvalidUrl { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn segments_and_query_values_are_encoded() {
        let base = node("http://h:1");
        let url = base.endpoint(
            &["v1", "topics", "%RETRY%g|x", "queues", "3", "messages"],
            &[("offset", "7".into()), ("tags", "A||B c".into())],
        );
        assert_eq!(
            url.as_str(),
            "http://h:1/v1/topics/%25RETRY%25g|x/queues/3/messages?offset=7&tags=A%7C%7CB+c"
        );
        let slash = base.endpoint(&["v1", "messages", "a/b?c#d"], &[]);
        assert_eq!(slash.as_str(), "http://h:1/v1/messages/a%2Fb%3Fc%23d");
        let prefixed = node("http://h:1/broker/").endpoint(&["health"], &[]);
        assert_eq!(prefixed.as_str(), "http://h:1/broker/health");
    }
}
