//! promoter's own indexes, in its state repository (`PROMOTER_STATE_REPOSITORY`, default the
//! first stage's registry + `/promoter-state`):
//!
//! | repository | tags | one per | kept |
//! |---|---|---|---|
//! | `{state}/alerts/{stage}/{image}` | `<alert-firing\|alert-clear>.<time>.<event>` | alert event of the image in the stage | from the latest `alert-firing` on |
//! | `{state}/freezes/{stage}` | `<freeze\|unfreeze>.<time>.<event>` | freeze event of the stage | from the latest `freeze` on |
//! | `{state}/waiting` | `<stage and image hash>.<digest hex>` | digest waiting for an alert to clear or for time | while it waits |
//! | `{state}/promoted/{stage}/{image}` | `<arrival ms>.<digest hex>` | digest promoted into the stage, by when it entered the stage before | the newest |
//! | `{state}/arrivals/{stage}/{image}` | `<arrival ms>.<digest hex>` | digest that arrived in the stage (promoted there, or first seen there) | the newest 50 |
//! | `{state}/images` | `<image hash>` | image promoter has recorded or promoted | all |
//!
//! Each index is written one tag per fact, never by rewriting a shared object, and obsolete
//! tags are deleted afterwards; listing an index therefore costs what is live in it. Deleting is
//! safe under concurrency because what is deleted is decided from what it is older than: the
//! record that made it obsolete is never deleted by the same rule, so the newest record always
//! survives, whichever instances clean up and in whatever order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::registry::{Digest, RegistryClient, RegistryHost, Repository};
use crate::rules::StageName;

use super::{
    Artifact, EvidenceError, INDEX_ARTIFACT_TYPE, SIGNAL_ARTIFACT_TYPE, delete_entries,
    delete_tagged_entries, event_hash, format_time, parse_time, put_empty_blob, put_tags,
    read_record, record_manifest, short_hash,
};

/// Where promoter keeps its indexes: a registry host and a path below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateRepository {
    host: RegistryHost,
    path: String,
}

impl StateRepository {
    /// Reads `host/path` (the path may have several components).
    pub fn parse(text: &str) -> Result<StateRepository, String> {
        let trimmed = text.trim_end_matches('/');
        let (host, path) = trimmed
            .split_once('/')
            .ok_or_else(|| format!("{text:?} needs a registry host and a path (host/path)"))?;
        let host = RegistryHost::try_from(host).map_err(|e| format!("{text:?}: {e}"))?;
        Repository::new(host.clone(), path).map_err(|e| format!("{text:?}: {e}"))?;
        Ok(StateRepository {
            host,
            path: path.to_owned(),
        })
    }

    pub fn host(&self) -> &RegistryHost {
        &self.host
    }

    fn repository(&self, below: &str) -> Result<Repository, EvidenceError> {
        Repository::new(self.host.clone(), &format!("{}/{below}", self.path)).map_err(|e| {
            EvidenceError::Name {
                what: format!("{}/{}/{below}", self.host, self.path),
                cause: e.to_string(),
            }
        })
    }

    /// The alert records of `image` in `stage`.
    pub fn alerts(&self, stage: &StageName, image: &str) -> Result<Repository, EvidenceError> {
        self.repository(&format!("alerts/{stage}/{image}"))
    }

    /// The digests that arrived in `stage`, newest kept.
    pub fn arrivals(&self, stage: &StageName, image: &str) -> Result<Repository, EvidenceError> {
        self.repository(&format!("arrivals/{stage}/{image}"))
    }

    /// Every image promoter has recorded or promoted.
    pub fn images(&self) -> Result<Repository, EvidenceError> {
        self.repository("images")
    }

    /// The `freeze` and `unfreeze` records of `stage`.
    pub fn freezes(&self, stage: &StageName) -> Result<Repository, EvidenceError> {
        self.repository(&format!("freezes/{stage}"))
    }

    /// The digests waiting for an alert to clear or for time.
    pub fn waiting(&self) -> Result<Repository, EvidenceError> {
        self.repository("waiting")
    }

    /// The digests promoted into `stage`, by arrival in the stage before.
    pub fn promoted(&self, stage: &StageName, image: &str) -> Result<Repository, EvidenceError> {
        self.repository(&format!("promoted/{stage}/{image}"))
    }
}

impl std::fmt::Display for StateRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.path)
    }
}

/// Which two-state log: the alert state of an image in a stage, or the freeze state of a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toggle {
    /// `alert-firing` / `alert-clear`.
    Alert,
    /// `freeze` / `unfreeze`.
    Freeze,
}

impl Toggle {
    /// The tag words of the "on" and the "off" state.
    fn words(self) -> (&'static str, &'static str) {
        match self {
            Toggle::Alert => ("alert-firing", "alert-clear"),
            Toggle::Freeze => ("freeze", "unfreeze"),
        }
    }
}

/// One record of a two-state log as its tag describes it: decisions need no more than the
/// listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// `alert-firing` or `freeze` (as opposed to `alert-clear` or `unfreeze`).
    pub on: bool,
    pub time: DateTime<Utc>,
    /// The tag that holds the whole record ([`ToggleLog::read`]).
    pub tag: String,
}

/// A two-state log (an image's alerts in a stage, a stage's freezes): one tag per event, the
/// latest by time being the current state.
#[derive(Clone, Copy)]
pub struct ToggleLog<'a> {
    pub client: &'a RegistryClient,
    pub repository: &'a Repository,
    pub toggle: Toggle,
}

fn log_tag(toggle: Toggle, on: bool, time: DateTime<Utc>, source: &str, id: &str) -> String {
    let (on_word, off_word) = toggle.words();
    format!(
        "{}.{}.{}",
        if on { on_word } else { off_word },
        format_time(time),
        &event_hash(source, id)[..10]
    )
}

fn parse_log_tag(toggle: Toggle, tag: &str) -> Option<LogRecord> {
    let mut parts = tag.split('.');
    let (word, time, _hash) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (on_word, off_word) = toggle.words();
    let on = match word {
        w if w == on_word => true,
        w if w == off_word => false,
        _ => return None,
    };
    Some(LogRecord {
        on,
        time: parse_time(time)?,
        tag: tag.to_owned(),
    })
}

impl ToggleLog<'_> {
    /// Records an event under a tag of its own (redeliveries write the same tag again).
    pub async fn record<T: Serialize>(
        &self,
        on: bool,
        time: DateTime<Utc>,
        source: &str,
        id: &str,
        record: &T,
    ) -> Result<(), EvidenceError> {
        let tag = log_tag(self.toggle, on, time, source, id);
        let manifest = record_manifest(
            &format!("{}:{tag}", self.repository),
            Artifact {
                artifact_type: SIGNAL_ARTIFACT_TYPE,
                subject: None,
                annotations: serde_json::json!({
                    "org.opencontainers.image.created": time.to_rfc3339(),
                }),
            },
            record,
        )?;
        put_empty_blob(self.client, self.repository, None).await?;
        put_tags(self.client, self.repository, &manifest, &[&tag]).await?;
        Ok(())
    }

    /// Every record kept: one listing of a repository that holds only what is live.
    pub async fn list(&self) -> Result<Vec<LogRecord>, EvidenceError> {
        Ok(self
            .client
            .list_tags(self.repository)
            .await?
            .iter()
            .filter_map(|tag| parse_log_tag(self.toggle, tag))
            .collect())
    }

    /// The whole record under `tag` (event id and source, for evidence and status).
    pub async fn read<T: for<'de> Deserialize<'de>>(
        &self,
        tag: &str,
    ) -> Result<Option<T>, EvidenceError> {
        read_record(self.client, self.repository, tag).await
    }

    /// Deletes the records no decision can need any more: everything before the latest "on"
    /// record (the current state, and the clock since it last went off, are decided from it and
    /// what follows), and, with no "on" record at all, every "off" record but the latest.
    /// Best-effort: see [`super::delete_entries`].
    pub async fn compact(&self, records: &[LogRecord]) {
        let obsolete: Vec<&LogRecord> = obsolete(records);
        if obsolete.is_empty() {
            return;
        }
        // A record's content (event id, source) is not in its tag: its digest is read.
        delete_tagged_entries(
            self.client,
            self.repository,
            obsolete.iter().map(|r| r.tag.as_str()),
        )
        .await;
    }
}

/// The records of `records` that no decision needs (see [`ToggleLog::compact`]).
fn obsolete(records: &[LogRecord]) -> Vec<&LogRecord> {
    let keep_from = records
        .iter()
        .filter(|r| r.on)
        .map(|r| (r.time, &r.tag))
        .max()
        .or_else(|| records.iter().map(|r| (r.time, &r.tag)).max());
    match keep_from {
        None => Vec::new(),
        Some(keep_from) => records
            .iter()
            .filter(|r| (r.time, &r.tag) < keep_from)
            .collect(),
    }
}

/// A digest waiting in a stage: what the waiting index holds under its tag. Its content depends
/// only on what it names, so every instance writes the same bytes and can delete it by digest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WaitingEntry {
    pub stage: String,
    pub image: String,
    pub digest: String,
}

impl WaitingEntry {
    /// The key shared by every digest of `image` in `stage`.
    pub fn group(stage: &str, image: &str) -> String {
        short_hash(&[stage, image], 8)
    }

    fn tag(&self) -> Result<String, EvidenceError> {
        let digest = Digest::try_from(self.digest.as_str()).map_err(|e| EvidenceError::Encode {
            what: format!("waiting entry for {}", self.digest),
            cause: e.to_string(),
        })?;
        Ok(format!(
            "{}.{}",
            WaitingEntry::group(&self.stage, &self.image),
            digest.hex()
        ))
    }
}

/// One tag of the waiting index, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub group: String,
    pub digest: Digest,
    pub tag: String,
}

fn parse_waiting_tag(tag: &str) -> Option<Waiting> {
    let (group, hex) = tag.split_once('.')?;
    if group.len() != 16 || !group.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(Waiting {
        group: group.to_owned(),
        digest: Digest::try_from(format!("sha256:{hex}").as_str()).ok()?,
        tag: tag.to_owned(),
    })
}

/// The digests waiting for something other than a signal about themselves: an alert clearing
/// for their image, or time. `alert-clear` and `reconcile` decide what is listed here.
#[derive(Clone, Copy)]
pub struct WaitingIndex<'a> {
    pub client: &'a RegistryClient,
    pub repository: &'a Repository,
}

/// An index entry's manifest under `tag`: the same bytes for the same entry, whoever writes it.
fn index_manifest<T: Serialize>(
    repository: &Repository,
    tag: String,
    entry: &T,
) -> Result<(String, crate::registry::manifest::RawManifest), EvidenceError> {
    let manifest = record_manifest(
        &format!("{repository}:{tag}"),
        Artifact {
            artifact_type: INDEX_ARTIFACT_TYPE,
            subject: None,
            annotations: serde_json::json!({}),
        },
        entry,
    )?;
    Ok((tag, manifest))
}

fn waiting_manifest(
    repository: &Repository,
    entry: &WaitingEntry,
) -> Result<(String, crate::registry::manifest::RawManifest), EvidenceError> {
    index_manifest(repository, entry.tag()?, entry)
}

impl WaitingIndex<'_> {
    pub async fn add(&self, entry: &WaitingEntry) -> Result<(), EvidenceError> {
        let (tag, manifest) = waiting_manifest(self.repository, entry)?;
        put_empty_blob(self.client, self.repository, None).await?;
        put_tags(self.client, self.repository, &manifest, &[&tag]).await?;
        Ok(())
    }

    /// Removes entries (best-effort: a stale entry costs the next `reconcile` one decision).
    pub async fn remove(&self, entries: &[WaitingEntry]) {
        let digests: Vec<Digest> = entries
            .iter()
            .filter_map(|e| waiting_manifest(self.repository, e).ok())
            .map(|(_, manifest)| manifest.digest)
            .collect();
        delete_entries(self.client, self.repository, &digests).await;
    }

    /// Every entry, or only those of one image in one stage (`group`).
    pub async fn list(&self, group: Option<&str>) -> Result<Vec<Waiting>, EvidenceError> {
        Ok(self
            .client
            .list_tags(self.repository)
            .await?
            .iter()
            .filter_map(|tag| parse_waiting_tag(tag))
            .filter(|w| group.is_none_or(|g| w.group == g))
            .collect())
    }

    /// The whole entry under a listed tag.
    pub async fn read(&self, waiting: &Waiting) -> Result<Option<WaitingEntry>, EvidenceError> {
        read_record(self.client, self.repository, &waiting.tag).await
    }
}

/// A digest promoted into a stage, as the promoted index holds it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct PromotedEntry {
    digest: String,
    /// When it entered the stage it was promoted from, in milliseconds since the epoch.
    arrived_ms: i64,
}

/// The newest digest promoted into a stage (for `select: newest`).
#[derive(Clone, Copy)]
pub struct PromotedIndex<'a> {
    pub client: &'a RegistryClient,
    pub repository: &'a Repository,
}

fn promoted_manifest(
    repository: &Repository,
    digest: &Digest,
    arrived: DateTime<Utc>,
) -> Result<(String, crate::registry::manifest::RawManifest), EvidenceError> {
    let entry = PromotedEntry {
        digest: digest.to_string(),
        arrived_ms: arrived.timestamp_millis(),
    };
    let tag = format!("{:013}.{}", entry.arrived_ms.max(0), digest.hex());
    index_manifest(repository, tag, &entry)
}

fn parse_promoted_tag(tag: &str) -> Option<(DateTime<Utc>, Digest)> {
    let (ms, hex) = tag.split_once('.')?;
    let time = DateTime::<Utc>::from_timestamp_millis(ms.parse().ok()?)?;
    let digest = Digest::try_from(format!("sha256:{hex}").as_str()).ok()?;
    Some((time, digest))
}

impl PromotedIndex<'_> {
    /// Claims `digest`, which entered the from-stage at `arrived`, as promoted into the stage.
    pub async fn claim(
        &self,
        digest: &Digest,
        arrived: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        let (tag, manifest) = promoted_manifest(self.repository, digest, arrived)?;
        put_empty_blob(self.client, self.repository, None).await?;
        put_tags(self.client, self.repository, &manifest, &[&tag]).await?;
        Ok(())
    }

    /// Every claim, newest last.
    pub async fn list(&self) -> Result<Vec<(DateTime<Utc>, Digest)>, EvidenceError> {
        let mut claims: Vec<(DateTime<Utc>, Digest)> = self
            .client
            .list_tags(self.repository)
            .await?
            .iter()
            .filter_map(|tag| parse_promoted_tag(tag))
            .collect();
        claims.sort();
        Ok(claims)
    }

    /// Deletes every claim older than the newest of `claims` (best-effort).
    pub async fn compact(&self, claims: &[(DateTime<Utc>, Digest)]) {
        let Some(newest) = claims.iter().max() else {
            return;
        };
        let digests: Vec<Digest> = claims
            .iter()
            .filter(|claim| *claim < newest)
            .filter_map(|(time, digest)| promoted_manifest(self.repository, digest, *time).ok())
            .map(|(_, manifest)| manifest.digest)
            .collect();
        delete_entries(self.client, self.repository, &digests).await;
    }
}

/// A digest's arrival in a stage, as the arrivals index holds it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArrivalEntry {
    pub digest: String,
    /// The version tag it arrived under, when known.
    pub tag: Option<String>,
    pub arrived_ms: i64,
}

impl ArrivalEntry {
    pub fn arrived_at(&self) -> Option<DateTime<Utc>> {
        DateTime::<Utc>::from_timestamp_millis(self.arrived_ms)
    }
}

/// How many arrivals per image and stage the index keeps: the page shows the newest, `promoter
/// status NAME` the versions kept.
const ARRIVALS_KEPT: usize = 50;

/// The digests that arrived in one stage for one image, newest kept: the page's cells without a
/// listing of the stage repository.
#[derive(Clone, Copy)]
pub struct ArrivalsIndex<'a> {
    pub client: &'a RegistryClient,
    pub repository: &'a Repository,
}

impl ArrivalsIndex<'_> {
    /// Puts the entries' config blob in place ahead of [`ArrivalsIndex::add`], so that it can
    /// go up beside other work.
    pub async fn prepare(&self) -> Result<(), EvidenceError> {
        put_empty_blob(self.client, self.repository, None).await?;
        Ok(())
    }

    pub async fn add(&self, entry: &ArrivalEntry) -> Result<(), EvidenceError> {
        let digest =
            Digest::try_from(entry.digest.as_str()).map_err(|e| EvidenceError::Encode {
                what: format!("arrival of {}", entry.digest),
                cause: e.to_string(),
            })?;
        let tag = format!("{:013}.{}", entry.arrived_ms.max(0), digest.hex());
        let (tag, manifest) = index_manifest(self.repository, tag, entry)?;
        put_empty_blob(self.client, self.repository, None).await?;
        put_tags(self.client, self.repository, &manifest, &[&tag]).await?;
        Ok(())
    }

    /// The arrivals kept, newest first, as their tags say (time and digest).
    pub async fn list(&self) -> Result<Vec<(DateTime<Utc>, Digest, String)>, EvidenceError> {
        let mut listed: Vec<(DateTime<Utc>, Digest, String)> = self
            .client
            .list_tags(self.repository)
            .await?
            .into_iter()
            .filter_map(|tag| parse_promoted_tag(&tag).map(|(time, digest)| (time, digest, tag)))
            .collect();
        listed.sort();
        listed.reverse();
        Ok(listed)
    }

    /// The whole entry under a listed tag (its version tag).
    pub async fn read(&self, tag: &str) -> Result<Option<ArrivalEntry>, EvidenceError> {
        read_record(self.client, self.repository, tag).await
    }

    /// Deletes all but the newest [`ARRIVALS_KEPT`] (best-effort).
    pub async fn compact(&self) {
        let Ok(listed) = self.list().await else {
            return;
        };
        if listed.len() <= ARRIVALS_KEPT {
            return;
        }
        delete_tagged_entries(
            self.client,
            self.repository,
            listed[ARRIVALS_KEPT..]
                .iter()
                .map(|(_, _, tag)| tag.as_str()),
        )
        .await;
    }
}

/// An image promoter knows, as the images index holds it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageEntry {
    /// The name below the stages' prefixes (`my-app`, `team/app`).
    pub image: String,
}

/// Every image promoter has recorded or promoted: what the pipeline view lists.
#[derive(Clone, Copy)]
pub struct ImagesIndex<'a> {
    pub client: &'a RegistryClient,
    pub repository: &'a Repository,
}

impl ImagesIndex<'_> {
    pub async fn add(&self, image: &str) -> Result<(), EvidenceError> {
        let entry = ImageEntry {
            image: image.to_owned(),
        };
        let (tag, manifest) = index_manifest(self.repository, short_hash(&[image], 8), &entry)?;
        put_empty_blob(self.client, self.repository, None).await?;
        put_tags(self.client, self.repository, &manifest, &[&tag]).await?;
        Ok(())
    }

    /// Every image's name.
    pub async fn list(&self) -> Result<Vec<String>, EvidenceError> {
        let tags = self.client.list_tags(self.repository).await?;
        let entries = futures::future::try_join_all(
            tags.iter()
                .filter(|t| t.len() == 16 && t.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(|tag| read_record::<ImageEntry>(self.client, self.repository, tag)),
        )
        .await?;
        let mut images: Vec<String> = entries.into_iter().flatten().map(|e| e.image).collect();
        images.sort();
        images.dedup();
        Ok(images)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(1_790_000_000_000 + ms).unwrap_or_default()
    }

    fn alert(on: bool, ms: i64, id: &str) -> LogRecord {
        let tag = log_tag(Toggle::Alert, on, at(ms), "//m", id);
        parse_log_tag(Toggle::Alert, &tag).unwrap_or_else(|| panic!("{tag} does not parse"))
    }

    #[test]
    fn log_tags_round_trip_and_fit_the_tag_grammar() {
        for toggle in [Toggle::Alert, Toggle::Freeze] {
            for on in [true, false] {
                let tag = log_tag(toggle, on, at(123), "//m", "e");
                let record = parse_log_tag(toggle, &tag).expect("parses");
                assert_eq!((record.on, record.time), (on, at(123)));
                assert!(crate::registry::Tag::try_from(record.tag.as_str()).is_ok());
            }
        }
        assert_eq!(parse_log_tag(Toggle::Alert, "1.2.4"), None);
        assert_eq!(
            parse_log_tag(Toggle::Alert, "test-passed.20261201T000000000Z.abc"),
            None
        );
        let freeze = log_tag(Toggle::Freeze, true, at(1), "//m", "e");
        assert_eq!(parse_log_tag(Toggle::Alert, &freeze), None);
    }

    #[test]
    fn compaction_keeps_the_latest_firing_and_what_follows() {
        let records = vec![
            alert(false, 1, "a"),
            alert(true, 2, "b"),
            alert(false, 3, "c"),
            alert(true, 4, "d"),
            alert(false, 5, "e"),
            alert(false, 6, "f"),
        ];
        let gone: Vec<i64> = obsolete(&records)
            .iter()
            .map(|r| r.time.timestamp_millis() - at(0).timestamp_millis())
            .collect();
        assert_eq!(gone, vec![1, 2, 3]);
        // Only clears: the latest stands for them all.
        let clears = vec![alert(false, 1, "a"), alert(false, 2, "b")];
        assert_eq!(obsolete(&clears).len(), 1);
        assert!(obsolete(&[]).is_empty());
    }

    #[test]
    fn index_tags_round_trip() {
        let digest = Digest::sha256_of(b"image");
        let entry = WaitingEntry {
            stage: "extended-test".into(),
            image: "team/my-app".into(),
            digest: digest.to_string(),
        };
        let tag = entry.tag().expect("tag");
        assert!(
            crate::registry::Tag::try_from(tag.as_str()).is_ok(),
            "{tag}"
        );
        let listed = parse_waiting_tag(&tag).expect("parses");
        assert_eq!(listed.digest, digest);
        assert_eq!(
            listed.group,
            WaitingEntry::group("extended-test", "team/my-app")
        );

        let repository = Repository::new(
            RegistryHost::try_from("r.example").expect("host"),
            "promoter-state/promoted/prod/my-app",
        )
        .expect("repository");
        let (tag, _) = promoted_manifest(&repository, &digest, at(5)).expect("claim");
        assert!(
            crate::registry::Tag::try_from(tag.as_str()).is_ok(),
            "{tag}"
        );
        assert_eq!(parse_promoted_tag(&tag), Some((at(5), digest)));
    }

    #[test]
    fn index_entries_are_the_same_bytes_whoever_writes_them() {
        let repository = Repository::new(
            RegistryHost::try_from("r.example").expect("host"),
            "promoter-state/waiting",
        )
        .expect("repository");
        let entry = WaitingEntry {
            stage: "extended-test".into(),
            image: "my-app".into(),
            digest: Digest::sha256_of(b"x").to_string(),
        };
        let (_, a) = waiting_manifest(&repository, &entry).expect("manifest");
        let (_, b) = waiting_manifest(&repository, &entry.clone()).expect("manifest");
        assert_eq!(a.digest, b.digest);
    }

    #[test]
    fn state_repositories_are_parsed_and_named() {
        let state = StateRepository::parse("europe-west2-docker.pkg.dev/ops/promoter-state/")
            .expect("parses");
        let stage = StageName::try_from("extended-test").expect("stage");
        assert_eq!(
            state
                .alerts(&stage, "team/my-app")
                .expect("name")
                .to_string(),
            "europe-west2-docker.pkg.dev/ops/promoter-state/alerts/extended-test/team/my-app"
        );
        assert!(StateRepository::parse("no-path").is_err());
        assert!(StateRepository::parse("r.example/UPPER").is_err());
    }
}
