//! The storage key newtype: the only way to name an object, so that no
//! caller can build a key that escapes the store (`..`, absolute paths).

use std::fmt;

use super::StorageError;

/// A validated object key: `/`-separated, non-empty components, none of them
/// `.` or `..`, no leading or trailing `/`, no NUL or backslash.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

impl Key {
    /// Validates `key`.
    pub fn new(key: impl Into<String>) -> Result<Self, StorageError> {
        let key = key.into();
        let bad_component = key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
        if key.is_empty() || bad_component || key.contains(['\0', '\\']) || key.len() > 1024 {
            return Err(StorageError::invalid(format!(
                "invalid storage key {key:?}"
            )));
        }
        Ok(Self(key))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        assert!(Key::new("blobs/sha256/abc").is_ok());
        assert!(Key::new("repositories/a/b/_tags/v1.0").is_ok());
    }

    #[test]
    fn rejects_traversal_and_odd_shapes() {
        for bad in [
            "",
            "/abs",
            "trailing/",
            "a//b",
            "a/../b",
            "..",
            "./a",
            "a\\b",
            "a\0b",
        ] {
            assert!(Key::new(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
