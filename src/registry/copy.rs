//! The exact-copy engine: the same top-level digest, every platform, every child manifest and
//! blob, raw bytes, plus what refers to the image (OCI 1.1 referrers, through the API or the
//! `sha256-<hex>` fallback tag, and cosign's `sha256-<hex>.sig|.att|.sbom` tags).
//!
//! Order of writes is what makes a copy safe to interrupt and repeat: blobs first, then child
//! manifests by digest, then what refers to the image, and the tagged top manifest last. A
//! destination tag is therefore never visible before everything it names and everything that
//! signs it is there, and a second run moves only what is missing (a manifest the destination
//! has implies its blobs).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::{StreamExt as _, TryStreamExt as _};
use serde::Serialize;

use super::client::{MountOutcome, PutManifestOutcome, RegistryClient};
use super::manifest::{Descriptor, PROMOTER_ARTIFACT_TYPE_PREFIX, RawManifest, referrers_index};
use super::{Digest, ImageRef, RegistryError, Repository};

/// How deep an index may nest (index → index → manifest) or referrers chain (signature of an
/// attestation of an image) before the copy refuses: real images nest two or three levels.
const MAX_DEPTH: usize = 8;

/// Cross-repository mounts in flight at once (they carry no bytes).
const MOUNT_CONCURRENCY: usize = 16;

/// Choices for one copy.
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Look and report, write nothing.
    pub dry_run: bool,
    /// Blobs moved at once.
    pub concurrency: usize,
    /// Copy referrers and cosign signature/attestation/SBOM tags.
    pub referrers: bool,
    /// The caller found the destination tag absent a moment ago (a promotion's plan): the copy
    /// does not look again. Looking again would not close the window either: a registry has no
    /// compare-and-swap for tags, so a push can land between any look and the final write.
    pub destination_tag_seen_absent: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            dry_run: false,
            concurrency: 6,
            referrers: true,
            destination_tag_seen_absent: false,
        }
    }
}

/// What a copy did: the JSON output of `copy`, `promote` and `p2p promote`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CopyReport {
    pub source: String,
    pub destination: String,
    pub digest: Digest,
    pub media_type: String,
    /// Manifests of the image (the top one and every child) written to the destination.
    pub manifests: u64,
    /// Distinct blobs of the image examined.
    pub blobs_total: u64,
    pub blobs_mounted: u64,
    pub blobs_copied: u64,
    pub blobs_skipped: u64,
    /// Layer and config bytes that travelled through promoter.
    pub bytes_copied: u64,
    /// Referrer manifests and cosign tags written to the destination.
    pub referrers_copied: u64,
    /// The destination already held this digest under the tag.
    pub already_present: bool,
    /// Not in the JSON contract; the text output says "would promote".
    #[serde(skip)]
    pub dry_run: bool,
    /// The size of the top manifest, to name it as a `subject` (not in the JSON contract).
    #[serde(skip)]
    pub manifest_size: u64,
    pub duration_ms: u64,
}

/// Live counters, readable while a copy runs (progress on a terminal).
#[derive(Debug, Default)]
pub struct Progress {
    pub blobs_done: AtomicU64,
    pub blobs_total: AtomicU64,
    pub bytes_copied: AtomicU64,
}

#[derive(Default)]
struct Counts {
    manifests: u64,
    blobs_total: u64,
    blobs_mounted: u64,
    blobs_copied: u64,
    blobs_skipped: u64,
    referrers_copied: u64,
}

enum BlobOutcome {
    Skipped,
    Mounted,
    Copied,
}

/// What is left of a manifest's copy once everything below it is in place.
struct Below {
    /// The destination lacks the manifest itself.
    top_missing: bool,
    /// The registry said it indexes pushed manifests' `subject` itself (`OCI-Subject`).
    registry_tracks_subject: bool,
}

/// What refers to one subject in the source, looked up by name.
struct Found {
    /// cosign's `sha256-<hex>.sig|.att|.sbom` tags that exist, with their manifests.
    cosign: Vec<(String, RawManifest)>,
    /// Referrers from the API and the fallback tag, promoter's own records left out.
    referrers: Vec<Descriptor>,
    /// The source's `sha256-<hex>` fallback tag, when it is a referrers index.
    source_index: Option<RawManifest>,
}

/// One copy job: a source and a destination registry client, each with its own identity.
pub struct Copier<'a> {
    pub source: &'a RegistryClient,
    pub destination: &'a RegistryClient,
    pub options: CopyOptions,
    pub progress: Arc<Progress>,
}

impl Copier<'_> {
    /// Copies `source` to `destination`. The destination's tag is the source's tag; without a
    /// tag, the image is copied by digest only.
    pub async fn copy(
        &self,
        source: &ImageRef,
        destination: &ImageRef,
    ) -> Result<CopyReport, RegistryError> {
        let started = Instant::now();
        // What the destination holds under the name the copy will write: looked up beside the
        // source when that name is known before the source manifest is.
        let early_reference = destination
            .tag
            .as_ref()
            .map(|t| t.to_string())
            .or_else(|| source.digest.as_ref().map(|d| d.to_string()));
        let (top, present) = match early_reference {
            Some(_) if self.options.destination_tag_seen_absent && destination.tag.is_some() => {
                (self.resolve_source(source).await?, None)
            }
            Some(reference) => {
                let (top, present) = tokio::join!(
                    self.resolve_source(source),
                    self.destination
                        .head_manifest(&destination.repository, &reference)
                );
                (top?, present?)
            }
            None => {
                let top = self.resolve_source(source).await?;
                let present = self
                    .destination
                    .head_manifest(&destination.repository, top.digest.as_str())
                    .await?;
                (top, present)
            }
        };
        let already_present = match present {
            Some(existing) if existing == top.digest => true,
            Some(existing) if destination.tag.is_some() => {
                return Err(RegistryError::TagConflict {
                    image: destination.to_string(),
                    existing,
                    wanted: top.digest.clone(),
                });
            }
            _ => false,
        };

        // Everything below the image's top manifest and what refers to it go up side by side;
        // the top goes up under its tag only once both are there. A signature may land a
        // moment before the tag it signs, never the tag before its manifests or signatures:
        // when the referrers cannot be listed, the tag is not written.
        let mut counts = Counts::default();
        let mut referrer_counts = Counts::default();
        let image = async {
            if already_present {
                return Ok(None);
            }
            self.copy_below(
                &source.repository,
                &destination.repository,
                &top,
                &mut counts,
            )
            .await
            .map(Some)
        };
        let referrers = async {
            if !self.options.referrers {
                return Ok(());
            }
            self.copy_referrers(
                &source.repository,
                &destination.repository,
                &top,
                &mut referrer_counts,
            )
            .await
        };
        let (image, referrers) = tokio::join!(image, referrers);
        let below = image?;
        referrers?;
        if let Some(below) = below {
            let tag = destination.tag.as_ref().map(|t| t.as_str());
            self.put_top(&destination.repository, &top, tag, &below)
                .await?;
        }
        counts.referrers_copied = referrer_counts.referrers_copied;
        Ok(CopyReport {
            source: source.to_string(),
            destination: destination.to_string(),
            digest: top.digest.clone(),
            media_type: top.media_type.clone(),
            manifests: counts.manifests,
            blobs_total: counts.blobs_total,
            blobs_mounted: counts.blobs_mounted,
            blobs_copied: counts.blobs_copied,
            blobs_skipped: counts.blobs_skipped,
            bytes_copied: self.progress.bytes_copied.load(Ordering::Relaxed),
            referrers_copied: counts.referrers_copied,
            already_present,
            dry_run: self.options.dry_run,
            manifest_size: top.bytes.len() as u64,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Fetches the source's top manifest: by digest when one is given (exact), checking that a
    /// tag given with it agrees.
    async fn resolve_source(&self, source: &ImageRef) -> Result<RawManifest, RegistryError> {
        let not_found = || RegistryError::NotFound {
            image: source.to_string(),
            registry: self.source.registry().to_string(),
        };
        let reference = source.api_reference().ok_or_else(not_found)?;
        let manifest = self
            .source
            .get_manifest(&source.repository, &reference)
            .await?
            .ok_or_else(not_found)?;
        if let Some(digest) = &source.digest {
            if &manifest.digest != digest {
                return Err(RegistryError::DigestMismatch {
                    image: source.to_string(),
                    registry: self.source.registry().to_string(),
                    expected: digest.clone(),
                    actual: manifest.digest,
                });
            }
            if let Some(tag) = &source.tag {
                let tagged = self
                    .source
                    .head_manifest(&source.repository, tag.as_str())
                    .await?;
                match tagged {
                    Some(tag_digest) if &tag_digest != digest => {
                        return Err(RegistryError::TagDigestMismatch {
                            image: source.to_string(),
                            tag: tag.to_string(),
                            tag_digest,
                        });
                    }
                    Some(_) => {}
                    None => return Err(not_found()),
                }
            }
        }
        Ok(manifest)
    }

    /// Copies a manifest and everything below it: blobs, then child manifests by digest, then the
    /// manifest itself under `reference` (a tag; its digest when `None`). Returns whether the
    /// registry said it indexes the pushed manifests' `subject` itself (OCI 1.1 `OCI-Subject`
    /// header).
    async fn copy_tree(
        &self,
        from: &Repository,
        to: &Repository,
        manifest: &RawManifest,
        reference: Option<&str>,
        counts: &mut Counts,
    ) -> Result<bool, RegistryError> {
        let below = self.copy_below(from, to, manifest, counts).await?;
        self.put_top(to, manifest, reference, &below).await
    }

    /// Copies everything below a manifest: blobs, then child manifests by digest. A manifest
    /// the destination already has is complete there (the registry checked its references when
    /// it was pushed), so its subtree is skipped.
    async fn copy_below(
        &self,
        from: &Repository,
        to: &Repository,
        manifest: &RawManifest,
        counts: &mut Counts,
    ) -> Result<Below, RegistryError> {
        let (manifests, blobs) = self.collect(from, to, manifest.clone(), 0).await?;
        counts.manifests += manifests.len() as u64;
        counts.blobs_total += blobs.len() as u64;
        self.progress
            .blobs_total
            .fetch_add(blobs.len() as u64, Ordering::Relaxed);

        // Mounts move no bytes: all of an image's go at once. Streams are bounded for memory.
        let concurrency = if from.registry == to.registry {
            MOUNT_CONCURRENCY
        } else {
            self.options.concurrency.max(1)
        };
        let outcomes: Vec<BlobOutcome> = futures::stream::iter(blobs.into_values())
            .map(|descriptor| self.copy_blob(from, to, descriptor))
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        for outcome in outcomes {
            match outcome {
                BlobOutcome::Skipped => counts.blobs_skipped += 1,
                BlobOutcome::Mounted => counts.blobs_mounted += 1,
                BlobOutcome::Copied => counts.blobs_copied += 1,
            }
        }
        let top_missing = manifests.iter().any(|m| m.digest == manifest.digest);
        if self.options.dry_run {
            return Ok(Below {
                top_missing,
                registry_tracks_subject: false,
            });
        }
        let below: Vec<&RawManifest> = manifests
            .iter()
            .filter(|m| m.digest != manifest.digest)
            .collect();
        // Image manifests depend on blobs only: they go up together. Indexes follow in the order
        // `collect` listed them (children first).
        let (images, indexes): (Vec<&RawManifest>, Vec<&RawManifest>) =
            below.into_iter().partition(|m| !m.is_index());
        let pushed: Vec<PutManifestOutcome> = futures::future::try_join_all(
            images
                .iter()
                .map(|m| self.destination.put_manifest(to, m.digest.as_str(), m)),
        )
        .await?;
        let mut registry_tracks_subject = pushed.iter().any(|o| o.registry_tracks_subject);
        for index in indexes {
            registry_tracks_subject |= self
                .destination
                .put_manifest(to, index.digest.as_str(), index)
                .await?
                .registry_tracks_subject;
        }
        Ok(Below {
            top_missing,
            registry_tracks_subject,
        })
    }

    /// Writes the manifest itself, last, under its tag when it has one (a tag PUT stores it by
    /// digest too). When the destination already had it by digest, only the tag is missing.
    async fn put_top(
        &self,
        to: &Repository,
        manifest: &RawManifest,
        reference: Option<&str>,
        below: &Below,
    ) -> Result<bool, RegistryError> {
        let mut registry_tracks_subject = below.registry_tracks_subject;
        if self.options.dry_run || !(below.top_missing || reference.is_some()) {
            return Ok(registry_tracks_subject);
        }
        let reference = reference.unwrap_or(manifest.digest.as_str());
        registry_tracks_subject |= self
            .destination
            .put_manifest(to, reference, manifest)
            .await?
            .registry_tracks_subject;
        Ok(registry_tracks_subject)
    }

    /// Walks the manifest tree, listing the manifests the destination lacks (children before
    /// their parents) and the distinct blobs they need. Children are fetched side by side.
    async fn collect(
        &self,
        from: &Repository,
        to: &Repository,
        manifest: RawManifest,
        depth: usize,
    ) -> Result<(Vec<RawManifest>, BTreeMap<String, Descriptor>), RegistryError> {
        if depth > MAX_DEPTH {
            return Err(RegistryError::BadManifest {
                image: format!("{from}@{}", manifest.digest),
                cause: format!("manifests nest deeper than {MAX_DEPTH} levels"),
            });
        }
        let mut manifests = Vec::new();
        let mut blobs = BTreeMap::new();
        // One HEAD per manifest: a half-done copy (or an image already there under another tag)
        // has whole subtrees in place, and they need no walk.
        if self
            .destination
            .head_manifest(to, manifest.digest.as_str())
            .await?
            .is_some()
        {
            return Ok((manifests, blobs));
        }
        let mut children = Vec::new();
        for child in manifest.children() {
            let digest = child.digest().map_err(|cause| RegistryError::BadManifest {
                image: format!("{from}@{}", manifest.digest),
                cause,
            })?;
            if !children.contains(&digest) {
                children.push(digest);
            }
        }
        let subtrees = futures::future::try_join_all(children.iter().map(|digest| async move {
            let child = self.fetch_by_digest(from, digest).await?;
            Box::pin(self.collect(from, to, child, depth + 1)).await
        }))
        .await?;
        for (child_manifests, child_blobs) in subtrees {
            for child in child_manifests {
                if !manifests
                    .iter()
                    .any(|m: &RawManifest| m.digest == child.digest)
                {
                    manifests.push(child);
                }
            }
            blobs.extend(child_blobs);
        }
        for blob in manifest.blobs() {
            blobs
                .entry(blob.digest.clone())
                .or_insert_with(|| blob.clone());
        }
        manifests.push(manifest);
        Ok((manifests, blobs))
    }

    async fn fetch_by_digest(
        &self,
        from: &Repository,
        digest: &Digest,
    ) -> Result<RawManifest, RegistryError> {
        let manifest = self
            .source
            .get_manifest(from, digest.as_str())
            .await?
            .ok_or_else(|| RegistryError::NotFound {
                image: format!("{from}@{digest}"),
                registry: self.source.registry().to_string(),
            })?;
        if &manifest.digest != digest {
            return Err(RegistryError::DigestMismatch {
                image: format!("{from}@{digest}"),
                registry: self.source.registry().to_string(),
                expected: digest.clone(),
                actual: manifest.digest,
            });
        }
        Ok(manifest)
    }

    /// Gets one blob into the destination the cheapest way: already there, mounted from the
    /// source repository on the same host, or streamed through (retrying the whole blob).
    async fn copy_blob(
        &self,
        from: &Repository,
        to: &Repository,
        descriptor: Descriptor,
    ) -> Result<BlobOutcome, RegistryError> {
        let digest = descriptor
            .digest()
            .map_err(|cause| RegistryError::BadManifest {
                image: format!("{from}"),
                cause,
            })?;
        let outcome = self.place_blob(from, to, &digest, descriptor.size).await;
        self.progress.blobs_done.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    async fn place_blob(
        &self,
        from: &Repository,
        to: &Repository,
        digest: &Digest,
        size: u64,
    ) -> Result<BlobOutcome, RegistryError> {
        // A mount answers 201 whether or not the blob was already there, so a mountable blob
        // needs no existence check first; any other one does.
        let mountable = from.registry == to.registry && from != to;
        if !mountable || self.options.dry_run {
            if self.destination.blob_exists(to, digest).await? {
                return Ok(BlobOutcome::Skipped);
            }
            if self.options.dry_run {
                // What a real run would do with it.
                return Ok(if mountable {
                    BlobOutcome::Mounted
                } else {
                    BlobOutcome::Copied
                });
            }
        }
        let mut upload_location = None;
        if mountable {
            // Any refusal (202 with a session, 401/403 without pull on the source, 404) falls
            // back to an upload (a 202 with a session is legal: the registry chose not to mount).
            match self.destination.mount_blob(to, digest, from).await {
                Ok(MountOutcome::Mounted) => return Ok(BlobOutcome::Mounted),
                Ok(MountOutcome::UploadAt(location)) => upload_location = Some(location),
                Err(error) if error.is_transient() => return Err(error),
                Err(error) => tracing::debug!(%error, %digest, "mount refused, uploading instead"),
            }
        }
        self.stream_blob(from, to, digest, size, upload_location)
            .await?;
        Ok(BlobOutcome::Copied)
    }

    /// Streams a blob from source to destination with bounded memory: the GET's body is the
    /// PUT's body, chunk by chunk. This is the blob's one retry loop: each attempt is a new
    /// upload session (or the one a refused mount opened, first), a new GET and one PUT, each
    /// sent once.
    async fn stream_blob(
        &self,
        from: &Repository,
        to: &Repository,
        digest: &Digest,
        size: u64,
        upload_location: Option<String>,
    ) -> Result<(), RegistryError> {
        let what = format!("copy blob {digest} from {from} to {to}");
        let upload_location = &upload_location;
        // The streamed PUT cannot answer an auth challenge (its body is gone), so a 401 there,
        // a token that expired during a long copy, gets one more attempt: that attempt's first
        // request meets the challenge and asks for a new token.
        let retryable = |error: &RegistryError, attempt: u32| {
            error.retry_now()
                || (attempt == 1 && matches!(error, RegistryError::Unauthorized { .. }))
        };
        self.destination
            .retry_policy()
            .run(&what, retryable, move |attempt| async move {
                let sent = Arc::new(AtomicU64::new(0));
                let result = async {
                    let location = match upload_location {
                        Some(location) if attempt == 1 => location.clone(),
                        _ => self.destination.start_upload(to).await?,
                    };
                    let response = self.source.get_blob(from, digest).await?;
                    let progress = self.progress.clone();
                    let sent_in_stream = sent.clone();
                    let stream = response.bytes_stream().inspect_ok(move |chunk| {
                        progress
                            .bytes_copied
                            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        sent_in_stream.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    });
                    self.destination
                        .put_blob(&location, digest, size, reqwest::Body::wrap_stream(stream))
                        .await
                }
                .await;
                if let Err(error) = &result {
                    // Bytes of a failed attempt did not land; the report counts what did.
                    self.progress
                        .bytes_copied
                        .fetch_sub(sent.load(Ordering::Relaxed), Ordering::Relaxed);
                    tracing::info!(%error, %digest, attempt, "blob copy attempt failed");
                }
                result
            })
            .await
    }

    /// Copies what refers to the image and its children: OCI 1.1 referrers (API or fallback
    /// tag) and cosign's `sha256-<hex>.sig|.att|.sbom` tags, then what refers to those, level
    /// by level. Each subject's names are looked up directly, never by listing the source's
    /// tags: a repository keeps every earlier version's tags, and listing them would cost more
    /// than the rest of a promotion.
    async fn copy_referrers(
        &self,
        from: &Repository,
        to: &Repository,
        top: &RawManifest,
        counts: &mut Counts,
    ) -> Result<(), RegistryError> {
        let mut level = vec![top.digest.clone()];
        for child in top.children() {
            if let Ok(digest) = child.digest() {
                level.push(digest);
            }
        }
        let mut seen = HashSet::new();
        for _ in 0..=MAX_DEPTH {
            level.retain(|subject| seen.insert(subject.clone()));
            if level.is_empty() {
                break;
            }
            // A level's subjects go side by side, lookups and then writes: the chain of requests
            // a copy waits for is as deep as the referrers nest, not as long as they are many.
            let copied = futures::future::try_join_all(level.iter().map(|subject| async move {
                let found = self.find_referrers(from, subject).await?;
                self.copy_found(from, to, subject, found).await
            }))
            .await?;
            let mut next = Vec::new();
            for (found, copied_count) in copied {
                next.extend(found);
                counts.referrers_copied += copied_count;
            }
            level = next;
        }
        Ok(())
    }

    /// Looks up, side by side, what refers to `subject` in the source: its cosign tags, the
    /// referrers API and the `sha256-<hex>` fallback tag.
    async fn find_referrers(
        &self,
        from: &Repository,
        subject: &Digest,
    ) -> Result<Found, RegistryError> {
        let fallback_tag = subject.fallback_tag();
        let cosign_tags = ["sig", "att", "sbom"].map(|suffix| format!("{fallback_tag}.{suffix}"));
        let (cosign, api, fallback) = tokio::join!(
            futures::future::try_join_all(
                cosign_tags
                    .iter()
                    .map(|tag| self.source.get_manifest(from, tag))
            ),
            self.source.referrers(from, subject),
            self.source.get_manifest(from, fallback_tag.as_str()),
        );
        let cosign: Vec<(String, RawManifest)> = cosign_tags
            .into_iter()
            .zip(cosign?)
            .filter_map(|(tag, manifest)| manifest.map(|m| (tag, m)))
            .collect();
        let mut referrers = api?.unwrap_or_default();
        // Only an index other than the subject is a referrers list: a registry that reads
        // `sha256-<hex>` as a digest (GitLab) answers with the subject itself.
        let source_index = fallback?.filter(|index| index.is_index() && index.digest != *subject);
        if let Some(index) = &source_index {
            for descriptor in index.children() {
                if !referrers.iter().any(|r| r.digest == descriptor.digest) {
                    referrers.push(descriptor.clone());
                }
            }
        }
        referrers.retain(|r| {
            !r.artifact_type
                .as_deref()
                .is_some_and(|t| t.starts_with(PROMOTER_ARTIFACT_TYPE_PREFIX))
        });
        Ok(Found {
            cosign,
            referrers,
            source_index,
        })
    }

    /// Copies what was found referring to `subject`: cosign's artifacts and the referrers, side
    /// by side (they are independent artifacts), then the subject's fallback tag. Returns the
    /// digests to look for referrers of next, and how many referrers were copied.
    async fn copy_found(
        &self,
        from: &Repository,
        to: &Repository,
        subject: &Digest,
        found: Found,
    ) -> Result<(Vec<Digest>, u64), RegistryError> {
        // cosign's tags: copied tag for tag; the source is the truth for what they hold
        // (cosign rewrites `.sig` when it adds a signature) — except that attestations are
        // only ever added to: a destination's `.att` that differs keeps its own layers
        // (promoter's attestation for the destination stage, written after the last copy).
        let cosign =
            futures::future::try_join_all(found.cosign.iter().map(|(tag, artifact)| async move {
                // Referrers are reported by count; the image's own counts stay the image's.
                let mut referrer_counts = Counts::default();
                let copied = if tag.ends_with(".att") {
                    self.copy_attestations(from, to, tag, artifact, &mut referrer_counts)
                        .await?
                } else if self.destination.head_manifest(to, tag).await?.as_ref()
                    != Some(&artifact.digest)
                {
                    self.copy_tree(from, to, artifact, Some(tag), &mut referrer_counts)
                        .await?;
                    true
                } else {
                    false
                };
                Ok::<_, RegistryError>((copied, artifact.digest.clone()))
            }));
        let referrers =
            futures::future::try_join_all(found.referrers.iter().map(|descriptor| async move {
                let digest = descriptor
                    .digest()
                    .map_err(|cause| RegistryError::BadManifest {
                        image: format!("referrers of {from}@{subject}"),
                        cause,
                    })?;
                let mut referrer_counts = Counts::default();
                let mut copied = None;
                if self
                    .destination
                    .head_manifest(to, digest.as_str())
                    .await?
                    .is_none()
                {
                    let referrer = self.fetch_by_digest(from, &digest).await?;
                    copied = Some(
                        self.copy_tree(from, to, &referrer, None, &mut referrer_counts)
                            .await?,
                    );
                }
                Ok::<_, RegistryError>((copied, digest))
            }));
        let (cosign, referrers) = futures::future::try_join(cosign, referrers).await?;
        let mut next = Vec::new();
        let mut copied_count = 0;
        for (copied, digest) in cosign {
            copied_count += u64::from(copied);
            next.push(digest);
        }
        let mut registry_tracks_subject = false;
        let mut copied_any = false;
        for (copied, digest) in referrers {
            if let Some(tracks) = copied {
                registry_tracks_subject |= tracks;
                copied_any = true;
                copied_count += 1;
            }
            next.push(digest);
        }
        if copied_any && !registry_tracks_subject && !self.options.dry_run {
            update_fallback_tag(
                self.destination,
                to,
                subject,
                &found.referrers,
                found.source_index.as_ref(),
            )
            .await?;
        }
        Ok((next, copied_count))
    }
}

impl Copier<'_> {
    /// Copies cosign's `sha256-<hex>.att` from the source without losing what the destination
    /// already lists there: absent, it is copied as it is; present and different, the
    /// destination gets the source's layers followed by every layer only it has
    /// (`attest::cosign::merge`); a destination that lists every source layer is left alone.
    /// Returns whether it wrote.
    ///
    /// Between this read and write another writer (promoter attesting the destination stage)
    /// may append; what it appended is then missing from what is written here. The attester
    /// reads its tag back after every write and appends again until its attestation is there,
    /// so the service never leaves a promotion unattested for long.
    async fn copy_attestations(
        &self,
        from: &Repository,
        to: &Repository,
        tag: &str,
        artifact: &RawManifest,
        counts: &mut Counts,
    ) -> Result<bool, RegistryError> {
        let Some(held) = self.destination.get_manifest(to, tag).await? else {
            self.copy_tree(from, to, artifact, Some(tag), counts)
                .await?;
            return Ok(true);
        };
        if held.digest == artifact.digest {
            return Ok(false);
        }
        let merged = match crate::attest::cosign::merge(&held, artifact) {
            Ok(None) => return Ok(false),
            Ok(Some(merged)) => merged,
            // Not an attestations manifest promoter can read: the source is the truth.
            Err(cause) => {
                tracing::warn!(%to, tag, cause, "destination attestations cannot be merged; copying the source's");
                self.copy_tree(from, to, artifact, Some(tag), counts)
                    .await?;
                return Ok(true);
            }
        };
        // The source's layers (and config) first, then the merged manifest's own config.
        self.copy_below(from, to, artifact, counts).await?;
        if self.options.dry_run {
            return Ok(true);
        }
        let config_digest = Digest::sha256_of(&merged.config);
        self.destination
            .push_blob_bytes(to, &config_digest, merged.config.clone())
            .await?;
        self.destination
            .put_manifest(to, tag, &merged.manifest)
            .await?;
        Ok(true)
    }
}

/// Keeps the destination's `sha256-<hex>` referrers tag listing every referrer, as the OCI
/// distribution spec asks clients to when a registry has no referrers API ([Pushing Manifests
/// with Subject]). The tag's existing entries are kept. Where the destination has no such tag
/// and the source's lists every referrer, the source's bytes are copied as they are.
///
/// [Pushing Manifests with Subject]: https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#pushing-manifests-with-subject
pub async fn update_fallback_tag(
    destination: &RegistryClient,
    to: &Repository,
    subject: &Digest,
    referrers: &[Descriptor],
    source_index: Option<&RawManifest>,
) -> Result<(), RegistryError> {
    let tag = subject.fallback_tag();
    let existing = destination.get_manifest(to, tag.as_str()).await?;
    if existing.is_none()
        && let Some(source_index) = source_index
        && source_index.children().len() == referrers.len()
    {
        destination
            .put_manifest(to, tag.as_str(), source_index)
            .await?;
        return Ok(());
    }
    let mut listed: Vec<Descriptor> = match existing {
        Some(existing) if existing.is_index() => existing.children().to_vec(),
        _ => Vec::new(),
    };
    let before = listed.len();
    for descriptor in referrers {
        if !listed.iter().any(|d| d.digest == descriptor.digest) {
            listed.push(descriptor.clone());
        }
    }
    if listed.len() == before && before > 0 {
        return Ok(());
    }
    let index = referrers_index(&listed).map_err(|cause| RegistryError::BadManifest {
        image: format!("{to}:{tag}"),
        cause,
    })?;
    destination.put_manifest(to, tag.as_str(), &index).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::client::stand_in::{self, answer};
    use super::*;

    /// A blob copy between two stand-ins: how many requests each saw.
    async fn stream_between(
        source: stand_in::Answer,
        destination: stand_in::Answer,
    ) -> (Result<(), RegistryError>, Vec<String>, Vec<String>) {
        let (source_host, source_seen) = stand_in::start(source).await;
        let (destination_host, destination_seen) = stand_in::start(destination).await;
        let (source_client, destination_client) = (
            stand_in::client(&source_host),
            stand_in::client(&destination_host),
        );
        let copier = Copier {
            source: &source_client,
            destination: &destination_client,
            options: CopyOptions::default(),
            progress: Arc::default(),
        };
        let from = Repository::new(source_host, "a/app").expect("a repository");
        let to = Repository::new(destination_host, "b/app").expect("a repository");
        let result = copier
            .stream_blob(&from, &to, &Digest::sha256_of(b"layer"), 5, None)
            .await;
        (result, source_seen.take(), destination_seen.take())
    }

    #[tokio::test]
    async fn a_streamed_blob_is_retried_whole_and_nowhere_else() {
        let attempts = stand_in::policy().attempts as usize;
        let opens = |asked: &stand_in::Asked<'_>| match asked.method {
            "POST" => answer(202, &[("location", "/v2/b/app/blobs/uploads/u")], ""),
            _ => answer(503, &[], "down"),
        };
        // The source fails every GET: one GET and one new session per attempt.
        let (result, source, destination) =
            stream_between(|_| answer(503, &[], "down"), opens).await;
        let error = result.expect_err("the source is down");
        assert!(error.to_string().contains("GET blob"), "{error}");
        assert_eq!(source.len(), attempts, "{source:?}");
        assert_eq!(destination.len(), attempts, "{destination:?}");

        // The destination refuses every session: the source is never asked.
        let (result, source, destination) =
            stream_between(|_| answer(200, &[], "layer"), |_| answer(503, &[], "down")).await;
        assert!(result.is_err());
        assert!(source.is_empty(), "{source:?}");
        assert_eq!(destination.len(), attempts, "{destination:?}");
    }
}
