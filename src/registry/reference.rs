//! Image references: `registry/repository[:tag][@digest]`, parsed once into types that cannot hold
//! an invalid value, so nothing past the edge has to re-check them.
//!
//! The grammar is the distribution project's reference grammar (the one docker, skopeo and crane
//! accept), restricted to what a registry can actually serve: lowercase repository components,
//! `[\w][\w.-]{0,127}` tags and `sha256`/`sha512` digests.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// Why a string is not a valid reference, digest or tag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// The reference string was empty.
    #[error("empty image reference")]
    Empty,
    /// A digest was not `sha256:<64 hex>` or `sha512:<128 hex>`.
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    Digest(String),
    /// A tag had characters a registry does not allow or was too long.
    #[error(
        "invalid tag {0:?}: tags are 1-128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'"
    )]
    Tag(String),
    /// A repository path component had characters a registry does not allow.
    #[error(
        "invalid repository {0:?}: components are lowercase letters, digits and separators (., _, __, -), joined by '/'"
    )]
    Repository(String),
    /// The registry host was not a valid `host[:port]`.
    #[error("invalid registry host {0:?}")]
    Registry(String),
    /// The reference has leading or trailing whitespace (a pasted newline, a padded value);
    /// skopeo and crane refuse it too, rather than guess which image was meant.
    #[error("image reference {0:?} has leading or trailing whitespace")]
    Whitespace(String),
    /// Both a tag and a digest were required to be absent (a repository was expected).
    #[error("{0:?} names a tag or digest where only a repository is expected")]
    UnexpectedVersion(String),
}

/// A content digest, `algorithm:hex`. Only the algorithms registries serve are accepted.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes` under sha256, the algorithm every registry uses for new content.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `sha256`, `sha512`.
    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map(|(a, _)| a).unwrap_or_default()
    }

    pub fn hex(&self) -> &str {
        self.0.split_once(':').map(|(_, h)| h).unwrap_or_default()
    }

    /// The tag under which tools that predate the OCI 1.1 referrers API look for things that
    /// refer to this digest: `sha256-<hex>` (the OCI distribution spec's referrers tag schema;
    /// cosign appends `.sig`, `.att` and `.sbom`).
    pub fn fallback_tag(&self) -> Tag {
        Tag(format!("{}-{}", self.algorithm(), self.hex()))
    }
}

impl TryFrom<&str> for Digest {
    type Error = ReferenceError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let valid = match value.split_once(':') {
            Some(("sha256", hex)) => hex.len() == 64 && is_lower_hex(hex),
            Some(("sha512", hex)) => hex.len() == 128 && is_lower_hex(hex),
            _ => false,
        };
        if valid {
            Ok(Digest(value.to_owned()))
        } else {
            Err(ReferenceError::Digest(value.to_owned()))
        }
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A tag: the version, which stays the same across stages.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Tag {
    type Error = ReferenceError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let mut bytes = value.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if first_ok && rest_ok && value.len() <= 128 {
            Ok(Tag(value.to_owned()))
        } else {
            Err(ReferenceError::Tag(value.to_owned()))
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.0)
    }
}

/// A registry host, `host[:port]`, lowercase as DNS is case-insensitive.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct RegistryHost(String);

impl RegistryHost {
    /// Docker Hub: what a reference without a registry component means, as in docker and skopeo.
    pub const DOCKER_HUB: &'static str = "docker.io";

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host without its port (IPv6 literals keep their brackets).
    pub fn hostname(&self) -> &str {
        if let Some(end) = self.0.find(']') {
            return &self.0[..=end];
        }
        self.0.split_once(':').map_or(&self.0[..], |(h, _)| h)
    }

    /// Loopback hosts speak plain HTTP, as every registry tool assumes for local test registries.
    pub fn is_loopback(&self) -> bool {
        let host = self.hostname();
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    }

    /// Google's registries, which take Application Default Credentials.
    pub fn is_google(&self) -> bool {
        let host = self.hostname();
        host.ends_with("-docker.pkg.dev") || host == "gcr.io" || host.ends_with(".gcr.io")
    }

    /// The host the Registry API is actually served from (Docker Hub's API host differs).
    pub fn api_host(&self) -> &str {
        if self.0 == Self::DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            &self.0
        }
    }
}

impl TryFrom<&str> for RegistryHost {
    type Error = ReferenceError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let lower = value.to_ascii_lowercase();
        let (host, port) = if lower.starts_with('[') {
            match lower.split_once(']') {
                Some((h, rest)) => (&lower[..h.len() + 1], rest.strip_prefix(':')),
                None => return Err(ReferenceError::Registry(value.to_owned())),
            }
        } else {
            match lower.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (&lower[..], None),
            }
        };
        let host_ok = !host.is_empty()
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':')
            });
        let port_ok = port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
        if host_ok && port_ok {
            Ok(RegistryHost(lower))
        } else {
            Err(ReferenceError::Registry(value.to_owned()))
        }
    }
}

impl fmt::Display for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A repository inside a registry: `host/path/name` with no tag or digest.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Repository {
    pub registry: RegistryHost,
    /// The path below the host, e.g. `dev-proj/tenant/acme/fast-feedback/my-app`.
    pub path: String,
}

impl Repository {
    pub fn new(registry: RegistryHost, path: &str) -> Result<Self, ReferenceError> {
        validate_repository_path(path)?;
        Ok(Repository {
            registry,
            path: path.to_owned(),
        })
    }

    /// The last path component: the image's name, which stays the same across stages.
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

impl TryFrom<&str> for Repository {
    type Error = ReferenceError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let image = ImageRef::try_from(value)?;
        if image.tag.is_some() || image.digest.is_some() {
            return Err(ReferenceError::UnexpectedVersion(value.to_owned()));
        }
        Ok(image.repository)
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.path)
    }
}

fn validate_repository_path(path: &str) -> Result<(), ReferenceError> {
    let component_ok = |c: &str| {
        let bytes = c.as_bytes();
        !c.is_empty()
            && bytes[0].is_ascii_lowercase() | bytes[0].is_ascii_digit()
            && bytes[bytes.len() - 1].is_ascii_lowercase() | bytes[bytes.len() - 1].is_ascii_digit()
            && bytes.iter().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && !c.contains("..")
            && !c.contains("___")
    };
    if !path.is_empty() && path.len() <= 255 && path.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(ReferenceError::Repository(path.to_owned()))
    }
}

/// A reference to an image: a repository plus a tag, a digest, or both.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ImageRef {
    pub repository: Repository,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// The same image name and version in another repository (stage).
    pub fn in_repository(&self, repository: Repository) -> ImageRef {
        ImageRef {
            repository,
            tag: self.tag.clone(),
            digest: self.digest.clone(),
        }
    }

    /// What the registry API is asked for: the digest when known (exact), else the tag.
    pub fn api_reference(&self) -> Option<String> {
        self.digest
            .as_ref()
            .map(|d| d.to_string())
            .or_else(|| self.tag.as_ref().map(|t| t.to_string()))
    }
}

/// Parses `[registry/]path[:tag][@digest]`. A first component with a `.` or `:`, or equal to
/// `localhost`, is a registry, as in docker's grammar; without one the image is on Docker Hub.
impl TryFrom<&str> for ImageRef {
    type Error = ReferenceError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        if value.trim().is_empty() {
            return Err(ReferenceError::Empty);
        }
        if value.trim() != value {
            return Err(ReferenceError::Whitespace(value.to_owned()));
        }
        let (rest, digest) = match value.split_once('@') {
            Some((rest, digest)) => (rest, Some(Digest::try_from(digest)?)),
            None => (value, None),
        };
        // A tag is after the last ':' that comes after the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].split_once(':') {
            Some((_, tag)) => (
                &rest[..rest.len() - tag.len() - 1],
                Some(Tag::try_from(tag)?),
            ),
            None => (rest, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.starts_with('[') =>
            {
                (RegistryHost::try_from(first)?, path.to_owned())
            }
            _ => {
                let path = if name.contains('/') {
                    name.to_owned()
                } else {
                    format!("library/{name}")
                };
                (RegistryHost(RegistryHost::DOCKER_HUB.to_owned()), path)
            }
        };
        validate_repository_path(&path)?;
        Ok(ImageRef {
            repository: Repository { registry, path },
            tag,
            digest,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for ImageRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_artifact_registry_reference_with_tag_and_digest() {
        let text = format!(
            "europe-west2-docker.pkg.dev/dev-proj/tenant/acme/fast-feedback/my-app:1.2.4@sha256:{HEX}"
        );
        let image = ImageRef::try_from(text.as_str()).expect("valid");
        assert_eq!(
            image.repository.registry.as_str(),
            "europe-west2-docker.pkg.dev"
        );
        assert_eq!(
            image.repository.path,
            "dev-proj/tenant/acme/fast-feedback/my-app"
        );
        assert_eq!(image.repository.name(), "my-app");
        assert_eq!(image.tag.as_ref().map(Tag::as_str), Some("1.2.4"));
        assert_eq!(image.digest.as_ref().map(Digest::hex), Some(HEX));
        assert!(image.repository.registry.is_google());
        assert_eq!(image.to_string(), text);
    }

    #[test]
    fn a_port_is_not_a_tag() {
        let image = ImageRef::try_from("127.0.0.1:5000/team/app").expect("valid");
        assert_eq!(image.repository.registry.as_str(), "127.0.0.1:5000");
        assert_eq!(image.repository.registry.hostname(), "127.0.0.1");
        assert!(image.repository.registry.is_loopback());
        assert_eq!(image.tag, None);
        let tagged = ImageRef::try_from("localhost:5000/app:v1").expect("valid");
        assert_eq!(tagged.tag.as_ref().map(Tag::as_str), Some("v1"));
    }

    #[test]
    fn bare_names_are_docker_hub_library_images() {
        let image = ImageRef::try_from("alpine:3.20").expect("valid");
        assert_eq!(image.repository.to_string(), "docker.io/library/alpine");
    }

    #[test]
    fn rejects_what_a_registry_would_reject() {
        for bad in [
            "",
            "Registry.example/UPPER/app:1",
            "r.example/app:-tag",
            "r.example/app@sha256:abc",
            "r.example/app@md5:0123",
            "r.example//app",
            "r.example/app:",
            "r.example/app:tag with space",
        ] {
            assert!(
                ImageRef::try_from(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn fallback_tag_follows_the_referrers_tag_schema() {
        let digest = Digest::try_from(format!("sha256:{HEX}").as_str()).expect("valid");
        assert_eq!(digest.fallback_tag().as_str(), format!("sha256-{HEX}"));
    }

    #[test]
    fn repository_rejects_versions() {
        assert!(Repository::try_from("r.example/extended-test/my-app").is_ok());
        assert!(matches!(
            Repository::try_from("r.example/extended-test/my-app:1"),
            Err(ReferenceError::UnexpectedVersion(_))
        ));
    }
}
