//! Parses `/v2/...` paths once. Repository names span several segments, so
//! a path is read from its end: the last one or two segments say what is
//! addressed, everything before them is the name.

use percent_encoding::percent_decode_str;

/// What a `/v2` path addresses. Names and references are raw (decoded)
/// strings; handlers validate them into `oci` types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Manifest { name: String, reference: String },
    Blob { name: String, digest: String },
    Uploads { name: String },
    Upload { name: String, id: String },
    Tags { name: String },
    Referrers { name: String, digest: String },
}

/// A route's label in metrics and logs; carried as a response extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteKind(pub &'static str);

impl Route {
    /// Parses the path of a request; `None` for paths outside the API.
    pub fn parse(path: &str) -> Option<Self> {
        let rest = path.strip_prefix("/v2")?;
        if rest.is_empty() || rest == "/" {
            return Some(Self::Base);
        }
        let rest = rest.strip_prefix('/')?;
        if rest == "_catalog" {
            return Some(Self::Catalog);
        }
        let segments = rest
            .split('/')
            .map(|s| {
                percent_decode_str(s)
                    .decode_utf8()
                    .ok()
                    .map(|s| s.into_owned())
            })
            .collect::<Option<Vec<String>>>()?;
        if segments.iter().any(|s| s.contains('/')) {
            return None;
        }
        Self::from_segments(&segments)
    }

    fn from_segments(segments: &[String]) -> Option<Self> {
        let name = |n: usize| -> Option<String> {
            let head = segments.get(..segments.len().checked_sub(n)?)?;
            (!head.is_empty()).then(|| head.join("/"))
        };
        let tail: Vec<&str> = segments.iter().rev().take(3).map(String::as_str).collect();
        match tail.as_slice() {
            ["", "uploads", "blobs", ..] => Some(Self::Uploads { name: name(3)? }),
            ["uploads", "blobs", ..] => Some(Self::Uploads { name: name(2)? }),
            [id, "uploads", "blobs", ..] => Some(Self::Upload {
                name: name(3)?,
                id: id.to_string(),
            }),
            ["list", "tags", ..] => Some(Self::Tags { name: name(2)? }),
            [reference, "manifests", ..] => Some(Self::Manifest {
                name: name(2)?,
                reference: reference.to_string(),
            }),
            [digest, "blobs", ..] => Some(Self::Blob {
                name: name(2)?,
                digest: digest.to_string(),
            }),
            [digest, "referrers", ..] => Some(Self::Referrers {
                name: name(2)?,
                digest: digest.to_string(),
            }),
            _ => None,
        }
    }

    /// The metrics label.
    pub fn kind(&self) -> RouteKind {
        RouteKind(match self {
            Self::Base => "base",
            Self::Catalog => "catalog",
            Self::Manifest { .. } => "manifest",
            Self::Blob { .. } => "blob",
            Self::Uploads { .. } | Self::Upload { .. } => "upload",
            Self::Tags { .. } => "tags",
            Self::Referrers { .. } => "referrers",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn parses_every_endpoint() {
        let d = "sha256:abc";
        let cases = [
            ("/v2/", Some(Route::Base)),
            ("/v2", Some(Route::Base)),
            ("/v2/_catalog", Some(Route::Catalog)),
            (
                "/v2/a/b/c/manifests/latest",
                Some(Route::Manifest {
                    name: s("a/b/c"),
                    reference: s("latest"),
                }),
            ),
            (
                "/v2/a/blobs/sha256:abc",
                Some(Route::Blob {
                    name: s("a"),
                    digest: s(d),
                }),
            ),
            (
                "/v2/a/blobs/sha256%3Aabc",
                Some(Route::Blob {
                    name: s("a"),
                    digest: s(d),
                }),
            ),
            (
                "/v2/a/b/blobs/uploads/",
                Some(Route::Uploads { name: s("a/b") }),
            ),
            (
                "/v2/a/b/blobs/uploads",
                Some(Route::Uploads { name: s("a/b") }),
            ),
            (
                "/v2/a/blobs/uploads/123",
                Some(Route::Upload {
                    name: s("a"),
                    id: s("123"),
                }),
            ),
            ("/v2/x/tags/list", Some(Route::Tags { name: s("x") })),
            (
                "/v2/x/referrers/sha256:abc",
                Some(Route::Referrers {
                    name: s("x"),
                    digest: s(d),
                }),
            ),
            // A repository may itself be called "blobs" or "manifests".
            (
                "/v2/blobs/manifests/blobs/blobs/v1",
                Some(Route::Blob {
                    name: s("blobs/manifests/blobs"),
                    digest: s("v1"),
                }),
            ),
            ("/v2/manifests/latest", None),
            ("/v2/a/unknown/thing", None),
            ("/v2/a/blobs/a%2Fb", None),
            ("/v3/a/tags/list", None),
        ];
        for (path, want) in cases {
            assert_eq!(Route::parse(path), want, "{path}");
        }
    }
}
