//! Pure OCI types: digests and hashing, repository names and references,
//! manifest parsing. No I/O here; everything is unit-tested in place.

mod digest;
mod manifest;
pub mod media;
mod name;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use manifest::{Descriptor, Manifest, ManifestError, ManifestKind};
pub use name::{NameError, Reference, RepoName, Tag};
