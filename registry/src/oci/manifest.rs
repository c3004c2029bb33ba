//! Manifest parsing and validation: what a manifest is, what it refers to,
//! and what it says about itself for the referrers API.
//!
//! Accepted: OCI image manifests and indexes (with `artifactType` and
//! `subject`), Docker schema2 manifests and manifest lists. The body is kept
//! byte-for-byte by the caller; this only reads it.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use super::Digest;
use super::media;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// Layers that live outside registries (Windows base layers and the
    /// like): a manifest may name them without the registry holding them.
    pub fn is_foreign(&self) -> bool {
        self.media_type == media::DOCKER_FOREIGN_LAYER
            || self
                .media_type
                .starts_with(media::OCI_NONDISTRIBUTABLE_PREFIX)
    }
}

/// Image manifests point at blobs; indexes point at other manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    Image,
    Index,
}

/// What the registry needs to know about a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The media type it is served with.
    pub media_type: String,
    pub kind: ManifestKind,
    /// Config and layers that must be present in the repository.
    pub blobs: Vec<Descriptor>,
    /// Index children that must be present in the repository.
    pub children: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    /// `artifactType`, or for an image manifest without one, the config's
    /// media type (as the referrers API reports it).
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Object<Descriptor>>,
    layers: Option<Vec<Object<Descriptor>>>,
    manifests: Option<Vec<Object<Descriptor>>>,
    subject: Option<Object<Descriptor>>,
    annotations: Option<BTreeMap<String, String>>,
}

/// A value that must be a JSON object. serde's derived structs also accept
/// an array of their fields in order, which no client can read back as a
/// manifest: `[2, "application/vnd.oci.image.manifest.v1+json", ...]` would
/// be stored and served (DESIGN invariant 7).
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Only<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Only(PhantomData)).map(Object)
    }
}

fn objects<T>(list: Option<Vec<Object<T>>>) -> Option<Vec<T>> {
    list.map(|list| list.into_iter().map(|o| o.0).collect())
}

impl Manifest {
    /// Parses `body` sent with `content_type` (the request's Content-Type).
    pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Self, ManifestError> {
        let Object(raw): Object<Raw> = serde_json::from_slice(body)
            .map_err(|e| ManifestError(format!("manifest is not valid: {e}")))?;
        if raw.schema_version != Some(2) {
            return Err(ManifestError("schemaVersion must be 2".into()));
        }
        let media_type = media_type_of(&raw, content_type)?;
        let kind = match media_type.as_str() {
            media::OCI_MANIFEST | media::DOCKER_MANIFEST => ManifestKind::Image,
            media::OCI_INDEX | media::DOCKER_MANIFEST_LIST => ManifestKind::Index,
            other => {
                return Err(ManifestError(format!(
                    "unsupported manifest media type {other:?}"
                )));
            }
        };
        match kind {
            ManifestKind::Image => image(raw, media_type),
            ManifestKind::Index => index(raw, media_type),
        }
    }
}

fn image(raw: Raw, media_type: String) -> Result<Manifest, ManifestError> {
    let config = raw
        .config
        .ok_or_else(|| ManifestError("image manifest has no config".into()))?
        .0;
    if raw.manifests.is_some() {
        return Err(ManifestError(
            "image manifest must not list manifests".into(),
        ));
    }
    let artifact_type = raw
        .artifact_type
        .or_else(|| Some(config.media_type.clone()));
    let mut blobs = vec![config];
    blobs.extend(
        objects(raw.layers)
            .unwrap_or_default()
            .into_iter()
            .filter(|l| !l.is_foreign()),
    );
    Ok(Manifest {
        media_type,
        kind: ManifestKind::Image,
        blobs,
        children: Vec::new(),
        subject: raw.subject.map(|s| s.0),
        artifact_type,
        annotations: raw.annotations,
    })
}

fn index(raw: Raw, media_type: String) -> Result<Manifest, ManifestError> {
    let children =
        objects(raw.manifests).ok_or_else(|| ManifestError("index has no manifests".into()))?;
    if raw.config.is_some() || raw.layers.is_some() {
        return Err(ManifestError("index must not have config or layers".into()));
    }
    Ok(Manifest {
        media_type,
        kind: ManifestKind::Index,
        blobs: Vec::new(),
        children,
        subject: raw.subject.map(|s| s.0),
        artifact_type: raw.artifact_type,
        annotations: raw.annotations,
    })
}

/// The declared `mediaType` must agree with the Content-Type; when the body
/// does not declare one, the Content-Type decides.
fn media_type_of(raw: &Raw, content_type: Option<&str>) -> Result<String, ManifestError> {
    let header = content_type
        .map(|ct| ct.split(';').next().unwrap_or(ct).trim())
        .filter(|ct| !ct.is_empty());
    match (raw.media_type.as_deref(), header) {
        (Some(declared), Some(header)) if declared != header => Err(ManifestError(format!(
            "Content-Type {header:?} does not match the manifest's mediaType {declared:?}"
        ))),
        (Some(declared), _) => Ok(declared.to_string()),
        (None, Some(header)) => Ok(header.to_string()),
        (None, None) => Err(ManifestError(
            "manifest has no mediaType and no Content-Type".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const D2: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn image_json(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":0}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D2}","size":2}}]{extra}}}"#,
            media::OCI_MANIFEST
        )
    }

    #[test]
    fn image_manifest_lists_its_blobs() -> Result<(), ManifestError> {
        let m = Manifest::parse(image_json("").as_bytes(), Some(media::OCI_MANIFEST))?;
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        Ok(())
    }

    #[test]
    fn subject_and_artifact_type() -> Result<(), ManifestError> {
        let extra = format!(
            r#","artifactType":"application/x-sig","subject":{{"mediaType":"{}","digest":"{D2}","size":9}}"#,
            media::OCI_MANIFEST
        );
        let m = Manifest::parse(image_json(&extra).as_bytes(), None)?;
        assert_eq!(m.artifact_type.as_deref(), Some("application/x-sig"));
        assert_eq!(m.subject.map(|s| s.digest.to_string()).as_deref(), Some(D2));
        Ok(())
    }

    #[test]
    fn rejects_mismatch_and_garbage() {
        let body = image_json("");
        assert!(Manifest::parse(body.as_bytes(), Some(media::OCI_INDEX)).is_err());
        assert!(Manifest::parse(b"not json", Some(media::OCI_MANIFEST)).is_err());
        assert!(Manifest::parse(b"{}", Some(media::OCI_MANIFEST)).is_err());
        let bad_digest = body.replace(D2, "sha256:1234");
        assert!(Manifest::parse(bad_digest.as_bytes(), None).is_err());
        assert!(
            Manifest::parse(br#"{"schemaVersion":2,"manifests":[]}"#, Some("text/plain")).is_err()
        );
    }

    /// serde's derived structs take an array of their fields in order; a
    /// manifest (or a descriptor in one) written as an array is not one.
    #[test]
    fn rejects_arrays_in_place_of_objects() -> Result<(), ManifestError> {
        let config = format!(
            r#"{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":0}}"#
        );
        let layer = format!(r#"{{"mediaType":"application/x","digest":"{D2}","size":2}}"#);
        let whole = format!(
            r#"[2,"{}",null,{config},[{layer}],null,null,null]"#,
            media::OCI_MANIFEST
        );
        let layer_as_array = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{config},"layers":[["application/x","{D2}",2]]}}"#,
            media::OCI_MANIFEST
        );
        let config_as_array = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":["application/x","{D1}",0],"layers":[]}}"#,
            media::OCI_MANIFEST
        );
        let child_as_array = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[["{}","{D1}",1]]}}"#,
            media::OCI_INDEX,
            media::OCI_MANIFEST
        );
        for body in [&whole, &layer_as_array, &config_as_array, &child_as_array] {
            let err = Manifest::parse(body.as_bytes(), None).err();
            assert!(
                err.as_ref().is_some_and(|e| e.0.contains("a JSON object")),
                "{body}: {err:?}"
            );
        }
        let fine = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{config},"layers":[{layer}]}}"#,
            media::OCI_MANIFEST
        );
        assert_eq!(Manifest::parse(fine.as_bytes(), None)?.blobs.len(), 2);
        Ok(())
    }

    #[test]
    fn index_from_content_type() -> Result<(), ManifestError> {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{D1}","size":1}}]}}"#,
            media::OCI_MANIFEST
        );
        let m = Manifest::parse(body.as_bytes(), Some(media::OCI_INDEX))?;
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.children.len(), 1);
        assert_eq!(m.media_type, media::OCI_INDEX);
        Ok(())
    }
}
