//! The attestation key (`PROMOTER_ATTESTATION_KEY`, docs/attestations.md): a Cloud KMS key version,
//! `gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V`, whose
//! `EC_SIGN_P256_SHA256` signature promoter asks for over a SHA-256 digest computed here, or a
//! local ECDSA P-256 private key in a PKCS#8 PEM file, for laptops and CI.
//!
//! Every signature is ECDSA P-256 over SHA-256, ASN.1 DER encoded: what Cloud KMS returns for
//! that algorithm, what cosign, securesystemslib and Binary Authorization's PKIX attestors
//! verify. A key is named by a key id: the KMS key version's resource name, or `sha256:<hex>` of
//! a local key's public key as SPKI DER ([RFC 5280 §4.1.2.7]).
//!
//! [RFC 5280 §4.1.2.7]: https://www.rfc-editor.org/rfc/rfc5280#section-4.1.2.7

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePublicKey as _};
use sha2::{Digest as _, Sha256};

use super::AttestError;
use super::kms::Kms;

/// The `gcpkms://` scheme, as cosign names Cloud KMS keys.
pub const GCPKMS_SCHEME: &str = "gcpkms://";

/// A Cloud KMS key version's resource name:
/// `projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsKeyVersion(String);

impl KmsKeyVersion {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// How Binary Authorization attestors name a Cloud KMS key version by default
    /// (`//cloudkms.googleapis.com/v1/` + the resource name).
    pub fn attestor_key_id(&self) -> String {
        format!("//cloudkms.googleapis.com/v1/{}", self.0)
    }
}

impl FromStr for KmsKeyVersion {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        let parts: Vec<&str> = name.split('/').collect();
        let labels = [
            "projects",
            "locations",
            "keyRings",
            "cryptoKeys",
            "cryptoKeyVersions",
        ];
        let well_formed = parts.len() == 10
            && labels
                .iter()
                .enumerate()
                .all(|(i, label)| parts[2 * i] == *label && !parts[2 * i + 1].is_empty())
            && parts.iter().all(|p| {
                p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            });
        if well_formed {
            Ok(KmsKeyVersion(name.to_owned()))
        } else {
            Err(format!(
                "{name:?} is not a Cloud KMS key version (projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V)"
            ))
        }
    }
}

/// What `PROMOTER_ATTESTATION_KEY` (or `promoter verify --key`) names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySpec {
    Kms(KmsKeyVersion),
    /// A PEM file: a PKCS#8 private key (signing and verifying) or an SPKI public key
    /// (verifying only).
    Pem(PathBuf),
}

impl FromStr for KeySpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(name) = text.strip_prefix(GCPKMS_SCHEME) {
            return Ok(KeySpec::Kms(name.parse()?));
        }
        if text.contains("://") {
            return Err(format!(
                "{text:?}: only {GCPKMS_SCHEME}projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V or a PEM file path is a key"
            ));
        }
        if text.is_empty() {
            return Err("empty: give a gcpkms:// key version or a PEM file".into());
        }
        Ok(KeySpec::Pem(PathBuf::from(text)))
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::Kms(name) => write!(f, "{GCPKMS_SCHEME}{}", name.as_str()),
            KeySpec::Pem(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A public key that verifies attestations, with its key id.
#[derive(Clone)]
pub struct PublicKey {
    key: VerifyingKey,
    id: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey").field("id", &self.id).finish()
    }
}

impl PublicKey {
    /// A public key named by its SPKI digest (a local key's id).
    fn local(key: VerifyingKey) -> Result<PublicKey, String> {
        let der = key
            .to_public_key_der()
            .map_err(|e| format!("cannot encode the public key: {e}"))?;
        let id = format!("sha256:{}", hex::encode(Sha256::digest(der.as_bytes())));
        Ok(PublicKey { key, id })
    }

    /// The public key of a PEM text: an SPKI public key (`BEGIN PUBLIC KEY`) or a PKCS#8
    /// private key (`BEGIN PRIVATE KEY`), named by its SPKI digest.
    pub fn from_pem(text: &str) -> Result<PublicKey, String> {
        if text.contains("-----BEGIN PUBLIC KEY-----") {
            let key = VerifyingKey::from_public_key_pem(text)
                .map_err(|e| format!("not an ECDSA P-256 SPKI public key: {e}"))?;
            return PublicKey::local(key);
        }
        let signing = signing_key_from_pem(text)?;
        PublicKey::local(*signing.verifying_key())
    }

    /// A KMS key version's public key (`getPublicKey`'s PEM), named by the key version.
    pub fn kms(name: &KmsKeyVersion, pem: &str) -> Result<PublicKey, String> {
        let key = VerifyingKey::from_public_key_pem(pem).map_err(|e| {
            format!(
                "Cloud KMS public key of {} is not ECDSA P-256: {e}",
                name.as_str()
            )
        })?;
        Ok(PublicKey {
            key,
            id: name.as_str().to_owned(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key as SPKI PEM, for people and other verifiers.
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap_or_default()
    }

    /// Checks a DER ECDSA signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), String> {
        let signature = DerSignature::try_from(signature)
            .map_err(|e| format!("not a DER ECDSA signature: {e}"))?;
        self.key
            .verify(message, &signature)
            .map_err(|_| format!("the signature does not verify with key {}", self.id))
    }
}

fn signing_key_from_pem(text: &str) -> Result<SigningKey, String> {
    if text.contains("-----BEGIN EC PRIVATE KEY-----") {
        return Err(
            "a SEC1 EC private key; convert it to PKCS#8: openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.p8"
                .into(),
        );
    }
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err("an encrypted private key; promoter needs an unencrypted PKCS#8 key".into());
    }
    SigningKey::from_pkcs8_pem(text)
        .map_err(|e| format!("not a PKCS#8 ECDSA P-256 private key: {e}"))
}

/// Reads a PEM file, naming it in any error.
fn read_pem(path: &Path) -> Result<String, AttestError> {
    std::fs::read_to_string(path).map_err(|e| AttestError::Key {
        what: format!("key file {}", path.display()),
        cause: e.to_string(),
    })
}

/// A local private key. Its Debug names the key id only.
struct LocalKey {
    key: SigningKey,
    public: PublicKey,
}

/// A key that signs attestations.
pub enum AttestationKey {
    Local(Box<LocalKeyHolder>),
    Kms(Box<Kms>),
}

/// A local key, boxed: the secret scalar never leaves it, and Debug never shows it.
pub struct LocalKeyHolder(LocalKey);

impl fmt::Debug for AttestationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttestationKey::Local(holder) => f
                .debug_struct("LocalKey")
                .field("id", &holder.0.public.id)
                .finish_non_exhaustive(),
            AttestationKey::Kms(kms) => f
                .debug_struct("KmsKey")
                .field("name", &kms.name().as_str())
                .finish_non_exhaustive(),
        }
    }
}

impl AttestationKey {
    /// The key `spec` names, loaded now: a local file is read and parsed (a bad one stops
    /// start-up); a KMS key's public key is fetched on first use.
    pub fn load(spec: &KeySpec, kms_endpoint: &str) -> Result<AttestationKey, AttestError> {
        match spec {
            KeySpec::Kms(name) => Ok(AttestationKey::Kms(Box::new(Kms::new(
                name.clone(),
                kms_endpoint,
            )?))),
            KeySpec::Pem(path) => {
                let text = read_pem(path)?;
                let key = signing_key_from_pem(&text).map_err(|cause| AttestError::Key {
                    what: format!("key file {}", path.display()),
                    cause,
                })?;
                let public =
                    PublicKey::local(*key.verifying_key()).map_err(|cause| AttestError::Key {
                        what: format!("key file {}", path.display()),
                        cause,
                    })?;
                Ok(AttestationKey::Local(Box::new(LocalKeyHolder(LocalKey {
                    key,
                    public,
                }))))
            }
        }
    }

    /// The key id: the KMS key version's name, or `sha256:<hex>` of the local public key.
    pub fn id(&self) -> String {
        match self {
            AttestationKey::Local(holder) => holder.0.public.id.clone(),
            AttestationKey::Kms(kms) => kms.name().as_str().to_owned(),
        }
    }

    /// The KMS key version, when the key lives in Cloud KMS.
    pub fn kms_name(&self) -> Option<&KmsKeyVersion> {
        match self {
            AttestationKey::Kms(kms) => Some(kms.name()),
            AttestationKey::Local(_) => None,
        }
    }

    /// The public key (fetched once from Cloud KMS for a KMS key).
    pub async fn public_key(&self) -> Result<PublicKey, AttestError> {
        match self {
            AttestationKey::Local(holder) => Ok(holder.0.public.clone()),
            AttestationKey::Kms(kms) => kms.public_key().await,
        }
    }

    /// A DER ECDSA P-256 signature over SHA-256 of `message`. A KMS signature is checked with
    /// the key's public key before it is used, so a corrupted answer never becomes an
    /// attestation (Cloud KMS's own advice is to verify integrity end to end).
    pub async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AttestError> {
        match self {
            AttestationKey::Local(holder) => {
                // RFC 6979 deterministic ECDSA: no randomness needed.
                let signature: DerSignature = holder.0.key.sign(message);
                Ok(signature.as_bytes().to_vec())
            }
            AttestationKey::Kms(kms) => {
                let digest = Sha256::digest(message);
                let signature = kms.asymmetric_sign(&digest).await?;
                let public = kms.public_key().await?;
                public
                    .verify(message, &signature)
                    .map_err(|cause| AttestError::Google {
                        api: "Cloud KMS".into(),
                        what: format!("asymmetricSign with {}", kms.name().as_str()),
                        status: None,
                        cause: format!("the signature it returned does not verify: {cause}"),
                        transient: true,
                    })?;
                Ok(signature)
            }
        }
    }
}

/// The public key `spec` names, for verifying: from a PEM file (private or public), or
/// fetched from Cloud KMS.
pub async fn verifying_key(spec: &KeySpec, kms_endpoint: &str) -> Result<PublicKey, AttestError> {
    match spec {
        KeySpec::Pem(path) => {
            let text = read_pem(path)?;
            PublicKey::from_pem(&text).map_err(|cause| AttestError::Key {
                what: format!("key file {}", path.display()),
                cause,
            })
        }
        KeySpec::Kms(name) => Kms::new(name.clone(), kms_endpoint)?.public_key().await,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A PKCS#8 PEM of a test key made from fixed bytes (never a real key's).
    pub fn test_key_pem(seed: u8) -> String {
        use p256::pkcs8::EncodePrivateKey as _;
        let key = SigningKey::from_bytes(&[seed; 32].into()).expect("a valid scalar");
        key.to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .expect("encodes")
            .to_string()
    }

    #[test]
    fn key_specs_parse_as_the_design_names_them() {
        let kms: KeySpec =
            "gcpkms://projects/p/locations/europe-west2/keyRings/promoter/cryptoKeys/attest/cryptoKeyVersions/1"
                .parse()
                .expect("a KMS key version");
        assert_eq!(
            kms,
            KeySpec::Kms(KmsKeyVersion(
                "projects/p/locations/europe-west2/keyRings/promoter/cryptoKeys/attest/cryptoKeyVersions/1"
                    .into()
            ))
        );
        assert_eq!(
            "/keys/attest.pem".parse::<KeySpec>(),
            Ok(KeySpec::Pem("/keys/attest.pem".into()))
        );
        for bad in [
            "gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k",
            "gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k/versions/1",
            "gcpkms://projects//locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
            "awskms:///arn:aws:kms:eu-west-2:1:key/k",
            "",
        ] {
            assert!(bad.parse::<KeySpec>().is_err(), "{bad} parsed");
        }
    }

    #[tokio::test]
    async fn a_local_key_signs_what_its_public_key_verifies() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("key.pem");
        std::fs::write(&path, test_key_pem(7)).expect("write");
        let key = AttestationKey::load(&KeySpec::Pem(path.clone()), "unused").expect("loads");
        let signature = key.sign(b"message").await.expect("signs");
        let public = key.public_key().await.expect("public");
        assert!(public.id().starts_with("sha256:") && public.id().len() == 71);
        assert_eq!(public.id(), key.id());
        public.verify(b"message", &signature).expect("verifies");
        assert!(public.verify(b"other", &signature).is_err());
        // The same key from its SPKI PEM, as `promoter verify --key` reads a public key.
        let from_public = PublicKey::from_pem(&public.to_pem()).expect("SPKI");
        assert_eq!(from_public.id(), public.id());
        from_public
            .verify(b"message", &signature)
            .expect("verifies");
        // Debug never shows the secret.
        let debug = format!("{key:?}");
        assert!(
            debug.contains(public.id()) && !debug.contains("key: "),
            "{debug}"
        );
    }

    #[test]
    fn a_bad_key_file_is_named() {
        let error = AttestationKey::load(&KeySpec::Pem("/nonexistent/key.pem".into()), "x")
            .expect_err("no file");
        assert!(
            error.to_string().contains("/nonexistent/key.pem"),
            "{error}"
        );
        assert!(PublicKey::from_pem("-----BEGIN EC PRIVATE KEY-----\n").is_err());
    }
}
