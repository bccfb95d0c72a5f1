//! cosign's attestation layout ([cosign spec], "Attestations"): the attestations of an image
//! `sha256:<hex>` are the layers of one OCI image manifest tagged `sha256-<hex>.att` in the
//! image's repository, one `application/vnd.dsse.envelope.v1+json` layer per attestation (the
//! layer's blob is the DSSE envelope's JSON), so `cosign verify-attestation` and `cosign tree`
//! find promoter's beside everyone else's.
//!
//! Several writers share that one tag — cosign, other tools, and promoter once per stage — so a
//! write always keeps every layer it found: layers are kept as the JSON the manifest lists them
//! in (another tool's annotations, its certificate or transparency-log bundle, survive byte for
//! byte), and only appended to. promoter's own layers carry the stage and the key id in
//! annotations, so it can find its attestation for a stage without reading the others.
//!
//! The manifest promoter writes also names the image as its OCI 1.1 `subject` ([image spec],
//! "subject"), so registries with the referrers API list it as a referrer of the image.
//!
//! [cosign spec]: https://github.com/sigstore/cosign/blob/main/specs/SIGNATURE_SPEC.md
//! [image spec]: https://github.com/opencontainers/image-spec/blob/v1.1.0/manifest.md

use bytes::Bytes;
use serde_json::{Value, json};

use crate::registry::manifest::{Descriptor, OCI_MANIFEST, RawManifest};
use crate::registry::{Digest, Tag};

use super::dsse::ENVELOPE_MEDIA_TYPE;

/// cosign's layer annotation for a signature; empty for an attestation, whose signature is
/// inside the envelope.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The annotation cosign writes with the statement's predicate type.
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";
/// promoter's annotations on its own layers: the stage promoted into, and the key id.
pub const STAGE_ANNOTATION: &str = "dev.promoter.attestation.stage";
pub const KEY_ANNOTATION: &str = "dev.promoter.attestation.key";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// `sha256-<hex>.att`.
pub fn tag(digest: &Digest) -> Tag {
    // A fallback tag plus four characters stays within the tag grammar's 128.
    Tag::try_from(format!("{}.att", digest.fallback_tag()).as_str())
        .unwrap_or_else(|_| digest.fallback_tag())
}

/// The layers of an attestations manifest, as JSON. Anything but an image manifest with a
/// `layers` list is not one.
pub fn layers(manifest: &RawManifest) -> Result<Vec<Value>, String> {
    if manifest.is_index() {
        return Err(format!(
            "{} is an index, not cosign's attestations manifest",
            manifest.digest
        ));
    }
    let parsed: Value = serde_json::from_slice(&manifest.bytes)
        .map_err(|e| format!("attestations manifest is not JSON: {e}"))?;
    Ok(parsed["layers"].as_array().cloned().unwrap_or_default())
}

/// A layer of one of promoter's attestations.
#[derive(Clone, Debug, PartialEq)]
pub struct PromoterLayer {
    pub digest: Digest,
    pub size: u64,
    pub stage: String,
    pub key: String,
}

/// The DSSE layers among `layers`, with promoter's stage and key annotations when present.
pub fn envelope_layers(layers: &[Value]) -> Vec<(Digest, u64, Option<String>, Option<String>)> {
    layers
        .iter()
        .filter(|l| l["mediaType"] == ENVELOPE_MEDIA_TYPE)
        .filter_map(|l| {
            let digest = Digest::try_from(l["digest"].as_str()?).ok()?;
            let size = l["size"].as_u64()?;
            let annotation = |name: &str| l["annotations"][name].as_str().map(str::to_owned);
            Some((
                digest,
                size,
                annotation(STAGE_ANNOTATION),
                annotation(KEY_ANNOTATION),
            ))
        })
        .collect()
}

/// promoter's layers among `layers`.
pub fn promoter_layers(layers: &[Value]) -> Vec<PromoterLayer> {
    envelope_layers(layers)
        .into_iter()
        .filter_map(|(digest, size, stage, key)| {
            Some(PromoterLayer {
                digest,
                size,
                stage: stage?,
                key: key?,
            })
        })
        .collect()
}

/// The layer that lists one of promoter's envelopes.
pub fn layer(envelope: &[u8], predicate_type: &str, stage: &str, key: &str) -> Value {
    json!({
        "mediaType": ENVELOPE_MEDIA_TYPE,
        "digest": Digest::sha256_of(envelope).as_str(),
        "size": envelope.len(),
        "annotations": {
            SIGNATURE_ANNOTATION: "",
            PREDICATE_TYPE_ANNOTATION: predicate_type,
            STAGE_ANNOTATION: stage,
            KEY_ANNOTATION: key,
        },
    })
}

/// An attestations manifest to write, and its config blob (which must be in the repository
/// first).
pub struct Written {
    pub manifest: RawManifest,
    pub config: Bytes,
}

/// The manifest of `layers`, naming `subject`. Its config is what go-containerregistry (and so
/// cosign) writes for an image of these layers: empty platform fields and each layer's digest
/// as its diff id (the layers are not compressed).
pub fn manifest(layers: &[Value], subject: Option<&Value>) -> Result<Written, String> {
    let diff_ids: Vec<&str> = layers.iter().filter_map(|l| l["digest"].as_str()).collect();
    let history: Vec<Value> = layers
        .iter()
        .map(|_| json!({"created": "0001-01-01T00:00:00Z"}))
        .collect();
    let config = json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": history,
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    });
    let config = Bytes::from(serde_json::to_vec(&config).map_err(|e| e.to_string())?);
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ENVELOPE_MEDIA_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": Digest::sha256_of(&config).as_str(),
            "size": config.len(),
        },
        "layers": layers,
    });
    if let Some(subject) = subject {
        manifest["subject"] = subject.clone();
    }
    let bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    Ok(Written {
        manifest: RawManifest::new(Bytes::from(bytes), Some(OCI_MANIFEST.to_owned()))?,
        config,
    })
}

fn subject_json(subject: &Descriptor) -> Value {
    json!({"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size})
}

/// `existing` (if any) with `layer` appended, naming `subject`.
pub fn append(
    existing: Option<&RawManifest>,
    layer: Value,
    subject: &Descriptor,
) -> Result<Written, String> {
    let mut all = match existing {
        Some(existing) => layers(existing)?,
        None => Vec::new(),
    };
    if !all.iter().any(|l| l["digest"] == layer["digest"]) {
        all.push(layer);
    }
    manifest(&all, Some(&subject_json(subject)))
}

/// What the copy engine writes over a destination's attestations when the source's differ:
/// the source's layers, then every layer only the destination has (promoter's attestation for
/// the destination stage, or one another tool made there). `None` when the destination
/// already lists every layer of the source: nothing to write.
pub fn merge(destination: &RawManifest, source: &RawManifest) -> Result<Option<Written>, String> {
    let held = layers(destination)?;
    let incoming = layers(source)?;
    let missing = incoming
        .iter()
        .any(|l| !held.iter().any(|h| h["digest"] == l["digest"]));
    if !missing {
        return Ok(None);
    }
    let mut all = incoming.clone();
    for layer in held {
        if !all.iter().any(|l| l["digest"] == layer["digest"]) {
            all.push(layer);
        }
    }
    let subject = destination
        .subject
        .as_ref()
        .or(source.subject.as_ref())
        .map(subject_json);
    manifest(&all, subject.as_ref()).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Descriptor {
        Descriptor {
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            digest: Digest::sha256_of(b"image").to_string(),
            size: 5,
            artifact_type: None,
            annotations: None,
            platform: None,
            urls: None,
        }
    }

    /// Another tool's attestation, as cosign writes it: no promoter annotations, a bundle.
    fn foreign() -> RawManifest {
        let layer = json!({
            "mediaType": ENVELOPE_MEDIA_TYPE, "digest": Digest::sha256_of(b"theirs").as_str(), "size": 6,
            "annotations": {SIGNATURE_ANNOTATION: "", "dev.sigstore.cosign/bundle": "{\"SignedEntryTimestamp\":\"x\"}"},
        });
        manifest(&[layer], None).expect("a manifest").manifest
    }

    #[test]
    fn appending_keeps_every_layer_and_names_the_subject() {
        let theirs = foreign();
        let ours = layer(
            b"envelope",
            "https://slsa.dev/verification_summary/v1",
            "prod",
            "sha256:k",
        );
        let written = append(Some(&theirs), ours.clone(), &subject()).expect("appends");
        let all = layers(&written.manifest).expect("layers");
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[0],
            layers(&theirs).expect("layers")[0],
            "kept byte for byte"
        );
        assert_eq!(all[1], ours);
        assert_eq!(
            written.manifest.subject.as_ref().map(|s| s.digest.clone()),
            Some(subject().digest)
        );
        let config: Value = serde_json::from_slice(&written.config).expect("config");
        assert_eq!(
            config["rootfs"]["diff_ids"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(
            promoter_layers(&all),
            vec![PromoterLayer {
                digest: Digest::sha256_of(b"envelope"),
                size: 8,
                stage: "prod".into(),
                key: "sha256:k".into()
            }]
        );
        // Appending the same envelope again changes nothing.
        let again = append(Some(&written.manifest), ours, &subject()).expect("appends");
        assert_eq!(again.manifest.digest, written.manifest.digest);
    }

    #[test]
    fn a_merge_keeps_the_destinations_own_layers() {
        let source = foreign();
        let ours = layer(b"prod", "t", "prod", "k");
        let destination = append(Some(&source), ours.clone(), &subject())
            .expect("appends")
            .manifest;
        // The destination lists everything the source has: nothing to write.
        assert!(merge(&destination, &source).expect("merges").is_none());
        // The source gained a layer (cosign attested it again there): both survive.
        let newer = layer(b"new", "t", "", "");
        let source = append(Some(&source), newer.clone(), &subject())
            .expect("appends")
            .manifest;
        let merged = merge(&destination, &source)
            .expect("merges")
            .expect("something to write");
        let all = layers(&merged.manifest).expect("layers");
        let digests: Vec<&Value> = all.iter().map(|l| &l["digest"]).collect();
        assert_eq!(digests.len(), 3);
        assert!(digests.contains(&&ours["digest"]) && digests.contains(&&newer["digest"]));
    }

    #[test]
    fn the_tag_is_cosigns() {
        let digest = Digest::sha256_of(b"image");
        assert_eq!(
            tag(&digest).as_str(),
            format!("sha256-{}.att", digest.hex())
        );
    }
}
