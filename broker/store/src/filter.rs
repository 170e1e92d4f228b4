//! Server-side tag filtering: a pull skips messages by the tag hash stored in each
//! ConsumeQueue unit without reading the CommitLog, then checks the tag string of
//! the messages that pass (hashes can collide).

use super::types::TagHash;

/// A subscription expression: `*` (everything) or `TagA||TagB`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagFilter {
    All,
    Tags(Vec<(String, TagHash)>),
}

impl TagFilter {
    /// Parses `*`, an empty string (both: everything) or tags joined by `||`.
    ///
    /// # Errors
    /// An empty tag between separators (`A||||B`).
    pub fn parse(expression: &str) -> Result<Self, String> {
        let expression = expression.trim();
        if expression.is_empty() || expression == "*" {
            return Ok(Self::All);
        }
        let mut tags = Vec::new();
        let mut everything = false;
        // Every tag is checked, also after a `*` (`*||` is as malformed as `A||`).
        for tag in expression.split("||") {
            let tag = tag.trim();
            if tag.is_empty() {
                return Err(format!("empty tag in filter expression `{expression}`"));
            }
            everything |= tag == "*";
            tags.push((tag.to_string(), TagHash::of(tag)));
        }
        Ok(if everything {
            Self::All
        } else {
            Self::Tags(tags)
        })
    }

    /// Whether a unit with this tag hash may match (cheap, from the ConsumeQueue).
    pub fn may_match(&self, hash: TagHash) -> bool {
        match self {
            Self::All => true,
            Self::Tags(tags) => tags.iter().any(|(_, h)| *h == hash),
        }
    }

    /// Whether a message with these tags matches exactly.
    pub fn matches(&self, tags: &str) -> bool {
        match self {
            Self::All => true,
            Self::Tags(wanted) => wanted.iter().any(|(t, _)| t == tags),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_expressions() {
        assert_eq!(TagFilter::parse("*"), Ok(TagFilter::All));
        assert_eq!(TagFilter::parse(""), Ok(TagFilter::All));
        let filter = TagFilter::parse("TagA || TagB").expect("parses");
        assert!(filter.may_match(TagHash::of("TagA")));
        assert!(filter.matches("TagB"));
        assert!(!filter.matches("TagC"));
        assert!(!filter.may_match(TagHash::NONE));
        assert!(TagFilter::parse("A||||B").is_err());
        assert!(TagFilter::parse("*||").is_err(), "a blank tag after `*`");
        assert_eq!(TagFilter::parse("A||*"), Ok(TagFilter::All));
    }
}
