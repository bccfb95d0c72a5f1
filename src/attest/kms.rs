//! A Cloud KMS key version that signs: `asymmetricSign` over a digest computed here, and
//! `getPublicKey` for the key that verifies what it signed ([asymmetricSign], [getPublicKey]).
//! The service's identity needs `cloudkms.cryptoKeyVersions.useToSign` and
//! `cloudkms.cryptoKeyVersions.viewPublicKey` on the key.
//!
//! [asymmetricSign]: https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys.cryptoKeyVersions/asymmetricSign
//! [getPublicKey]: https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys.cryptoKeyVersions/getPublicKey

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

use super::AttestError;
use super::google::GoogleApi;
use super::key::{KmsKeyVersion, PublicKey};

/// The one algorithm promoter signs with (`CryptoKeyVersionAlgorithm`).
pub const ALGORITHM: &str = "EC_SIGN_P256_SHA256";

/// `asymmetricSign`'s answer (`AsymmetricSignResponse`): the fields promoter reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignResponse {
    signature: String,
    /// The key version that signed ("provided here for verification").
    #[serde(default)]
    name: Option<String>,
}

/// `getPublicKey`'s answer (`PublicKey`): `pem`, `algorithm`, `pemCrc32c`, `name`,
/// `protectionLevel`; promoter reads the PEM and checks the algorithm and name.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublicKeyResponse {
    pem: String,
    algorithm: String,
    #[serde(default)]
    name: Option<String>,
}

pub struct Kms {
    name: KmsKeyVersion,
    api: GoogleApi,
    public: tokio::sync::OnceCell<PublicKey>,
}

impl Kms {
    pub fn new(name: KmsKeyVersion, endpoint: &str) -> Result<Kms, AttestError> {
        Ok(Kms {
            name,
            api: GoogleApi::new("Cloud KMS", endpoint)?,
            public: tokio::sync::OnceCell::new(),
        })
    }

    pub fn name(&self) -> &KmsKeyVersion {
        &self.name
    }

    /// The DER signature of a SHA-256 `digest` by this key version.
    pub async fn asymmetric_sign(&self, digest: &[u8]) -> Result<Vec<u8>, AttestError> {
        let body = serde_json::json!({ "digest": { "sha256": BASE64.encode(digest) } });
        let answer: SignResponse = self
            .api
            .post(&format!("{}:asymmetricSign", self.name.as_str()), &body)
            .await?;
        let wrong = |cause: String| AttestError::Google {
            api: "Cloud KMS".into(),
            what: format!("asymmetricSign with {}", self.name.as_str()),
            status: None,
            cause,
            transient: false,
        };
        if let Some(name) = answer.name.as_deref().filter(|n| *n != self.name.as_str()) {
            return Err(wrong(format!("answered for another key version, {name}")));
        }
        BASE64
            .decode(&answer.signature)
            .map_err(|e| wrong(format!("signature is not base64: {e}")))
    }

    /// The key version's public key, fetched once.
    pub async fn public_key(&self) -> Result<PublicKey, AttestError> {
        self.public
            .get_or_try_init(|| async {
                let answer: PublicKeyResponse = self
                    .api
                    .get(&format!("{}/publicKey", self.name.as_str()))
                    .await?;
                let wrong = |cause: String| AttestError::Key {
                    what: format!("Cloud KMS key version {}", self.name.as_str()),
                    cause,
                };
                if answer.algorithm != ALGORITHM {
                    return Err(wrong(format!(
                        "its algorithm is {}; promoter signs with {ALGORITHM}",
                        answer.algorithm
                    )));
                }
                if let Some(name) = answer.name.as_deref().filter(|n| *n != self.name.as_str()) {
                    return Err(wrong(format!("getPublicKey answered for {name}")));
                }
                PublicKey::kms(&self.name, &answer.pem).map_err(wrong)
            })
            .await
            .cloned()
    }
}
