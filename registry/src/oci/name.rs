//! Repository names, tags and manifest references, validated by the spec's
//! grammar. Validation here is what keeps `..` and other surprises out of
//! storage keys built from request paths.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use thiserror::Error;

use super::Digest;

/// Longest repository name accepted (as distribution does).
const MAX_NAME_LEN: usize = 255;

#[allow(clippy::expect_used)] // constant patterns, checked by the tests below
static NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$",
    )
    .expect("valid name regex")
});
#[allow(clippy::expect_used)] // constant pattern
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").expect("valid tag regex"));

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("invalid repository name {0:?}")]
    Name(String),
    #[error("invalid tag {0:?}")]
    Tag(String),
    #[error("invalid reference {0:?}: neither a tag nor a supported digest")]
    Reference(String),
}

/// A valid repository name such as `library/alpine`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(name: &str) -> Result<Self, NameError> {
        if name.len() > MAX_NAME_LEN || !NAME.is_match(name) {
            return Err(NameError::Name(name.to_string()));
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A valid tag such as `v1.2.3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(tag: &str) -> Result<Self, NameError> {
        if !TAG.is_match(tag) {
            return Err(NameError::Tag(tag.to_string()));
        }
        Ok(Self(tag.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    pub fn parse(reference: &str) -> Result<Self, NameError> {
        if reference.contains(':') {
            return reference
                .parse()
                .map(Self::Digest)
                .map_err(|_| NameError::Reference(reference.to_string()));
        }
        Tag::parse(reference)
            .map(Self::Tag)
            .map_err(|_| NameError::Reference(reference.to_string()))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(tag) => tag.fmt(f),
            Self::Digest(digest) => digest.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "library/alpine", "a.b_c__d--e/f", "0/1/2", "x-y"] {
            assert!(RepoName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "..",
            "a/../b",
            "a/.b",
            "-a",
            "a_",
            "a___b",
            &"a".repeat(256),
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_and_references() {
        assert!(Tag::parse("v1.0_RC-1").is_ok());
        assert!(Tag::parse(".hidden").is_err());
        assert!(Tag::parse(&"t".repeat(129)).is_err());
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        assert!(matches!(
            Reference::parse(
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            ),
            Ok(Reference::Digest(_))
        ));
        assert!(Reference::parse("sha256:nothex").is_err());
        assert!(Reference::parse("../x").is_err());
    }
}
