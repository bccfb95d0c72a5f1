//! Manifests as bytes: what a copy moves is the exact bytes a registry served, so the digest is
//! the same everywhere. Parsing only reads what they point at (children, config, layers,
//! subject); it never re-serializes.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// promoter's own records (evidence, promotion records) are artifacts of these types. They belong
/// to the stage they were written in, so the copy engine never carries them to the next stage.
pub const PROMOTER_ARTIFACT_TYPE_PREFIX: &str = "application/vnd.promoter.";

/// A content descriptor (OCI image spec §descriptor), with the fields promoter reads or keeps.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
    /// Foreign (non-distributable) layers live elsewhere and are not copied, as skopeo does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

impl Descriptor {
    pub fn digest(&self) -> Result<Digest, String> {
        Digest::try_from(self.digest.as_str()).map_err(|e| e.to_string())
    }

    fn is_foreign(&self) -> bool {
        self.urls.as_ref().is_some_and(|u| !u.is_empty())
            || self.media_type.contains("nondistributable")
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Shape {
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    artifact_type: Option<String>,
}

/// A manifest exactly as served, with what it points at.
#[derive(Clone, Debug)]
pub struct RawManifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
    children: Vec<Descriptor>,
    blobs: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
}

impl RawManifest {
    /// Reads the manifest. The media type is the registry's Content-Type when it sent one, else
    /// the `mediaType` field (oci-client 0.18's raw pull loses the header).
    pub fn new(bytes: Bytes, content_type: Option<String>) -> Result<Self, String> {
        let shape: Shape = serde_json::from_slice(&bytes)
            .map_err(|e| format!("manifest is not valid JSON: {e}"))?;
        let media_type = content_type
            .filter(|t| t.starts_with("application/vnd."))
            .or(shape.media_type.clone())
            .or_else(|| {
                // An OCI manifest may omit mediaType; its shape says what it is.
                if shape.manifests.is_some() {
                    Some(OCI_INDEX.to_owned())
                } else if shape.config.is_some() {
                    Some(OCI_MANIFEST.to_owned())
                } else {
                    None
                }
            })
            .ok_or("manifest has no media type and is neither an index nor an image manifest")?;
        let is_index = media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST;
        let is_image = media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST;
        if !is_index && !is_image {
            return Err(format!("unsupported manifest media type {media_type:?}"));
        }
        let children = if is_index {
            shape.manifests.unwrap_or_default()
        } else {
            Vec::new()
        };
        let blobs: Vec<Descriptor> = shape
            .config
            .into_iter()
            .chain(shape.layers.unwrap_or_default())
            .filter(|d| !d.is_foreign())
            .collect();
        for descriptor in children.iter().chain(&blobs).chain(&shape.subject) {
            descriptor.digest()?;
        }
        Ok(RawManifest {
            digest: Digest::sha256_of(&bytes),
            bytes,
            media_type,
            children,
            blobs,
            subject: shape.subject,
            artifact_type: shape.artifact_type,
        })
    }

    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_MANIFEST_LIST
    }

    /// The manifests an index lists (platforms, attestations). Empty for an image manifest.
    pub fn children(&self) -> &[Descriptor] {
        &self.children
    }

    /// The config and layers of an image manifest (foreign layers left out). Empty for an index.
    pub fn blobs(&self) -> &[Descriptor] {
        &self.blobs
    }

    /// A descriptor of this manifest, as a referrers index lists it.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.to_string(),
            size: self.bytes.len() as u64,
            artifact_type: self.artifact_type.clone(),
            annotations: None,
            platform: None,
            urls: None,
        }
    }
}

/// The body of a referrers fallback tag: an OCI index listing the referrers.
pub fn referrers_index(descriptors: &[Descriptor]) -> Result<RawManifest, String> {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": descriptors,
    });
    let bytes = serde_json::to_vec(&index).map_err(|e| e.to_string())?;
    RawManifest::new(Bytes::from(bytes), Some(OCI_INDEX.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_bytes_and_reads_children() {
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"sha256:{}","size":7,"platform":{{"os":"linux","architecture":"arm64"}}}}]}}"#,
            "a".repeat(64)
        );
        let manifest = RawManifest::new(Bytes::from(text.clone()), None).expect("valid");
        assert_eq!(manifest.bytes, text.as_bytes());
        assert_eq!(manifest.digest, Digest::sha256_of(text.as_bytes()));
        assert!(manifest.is_index());
        assert_eq!(manifest.children().len(), 1);
    }

    #[test]
    fn foreign_layers_are_not_blobs_to_copy() {
        let hex = "b".repeat(64);
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{hex}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"sha256:{hex}","size":3,"urls":["https://example.invalid/l"]}}]}}"#
        );
        let manifest = RawManifest::new(Bytes::from(text), None).expect("valid");
        assert_eq!(manifest.blobs().len(), 1);
    }

    #[test]
    fn rejects_what_cannot_be_copied() {
        assert!(RawManifest::new(Bytes::from_static(b"not json"), None).is_err());
        assert!(
            RawManifest::new(
                Bytes::from_static(br#"{"schemaVersion":1,"name":"x"}"#),
                None
            )
            .is_err()
        );
        let bad_digest = format!(
            r#"{{"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:xyz","size":1}}]}}"#
        );
        assert!(RawManifest::new(Bytes::from(bad_digest), None).is_err());
    }
}
