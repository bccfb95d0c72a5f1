//! Every environment variable promoter reads (docs/configuration.md), by name, in one place:
//! the deployment files are checked against this list (`infra/checks`), so a rename on one side
//! breaks the build rather than production.

// Command line defaults, exactly as corectl's `p2p promote` read them.
pub const SOURCE_REGISTRY: &str = "SOURCE_REGISTRY";
pub const SOURCE_STAGE: &str = "SOURCE_STAGE";
pub const DEST_REGISTRY: &str = "DEST_REGISTRY";
pub const DEST_STAGE: &str = "DEST_STAGE";
pub const SOURCE_AUTH_OVERRIDE: &str = "SOURCE_AUTH_OVERRIDE";
pub const DEST_AUTH_OVERRIDE: &str = "DEST_AUTH_OVERRIDE";
pub const SOURCE_ACCESS_TOKEN: &str = "SOURCE_ACCESS_TOKEN";
pub const DEST_ACCESS_TOKEN: &str = "DEST_ACCESS_TOKEN";

// Registries and identity.
/// The registry of every stage (P2P sets it); the destination's fallback on the command line.
pub const REGISTRY: &str = "REGISTRY";
pub const PROD_REGISTRY: &str = "PROD_REGISTRY";
/// Comma-separated `host:port` reached over plain HTTP besides loopback.
pub const PROMOTER_INSECURE_REGISTRIES: &str = "PROMOTER_INSECURE_REGISTRIES";
/// Where docker's `config.json` lives.
pub const DOCKER_CONFIG: &str = "DOCKER_CONFIG";
/// Read by google-cloud-auth itself; listed so deployments may set them.
pub const GOOGLE_APPLICATION_CREDENTIALS: &str = "GOOGLE_APPLICATION_CREDENTIALS";
pub const GCE_METADATA_HOST: &str = "GCE_METADATA_HOST";

// The service (docs/configuration.md "The service").
pub const PORT: &str = "PORT";
pub const PROMOTER_CONFIG: &str = "PROMOTER_CONFIG";
pub const FAST_FEEDBACK_PATH: &str = "FAST_FEEDBACK_PATH";
pub const EXTENDED_TEST_PATH: &str = "EXTENDED_TEST_PATH";
pub const PROD_PATH: &str = "PROD_PATH";
pub const PROMOTER_EVENTS_TOPIC: &str = "PROMOTER_EVENTS_TOPIC";
pub const PUBSUB_EMULATOR_HOST: &str = "PUBSUB_EMULATOR_HOST";
pub const PROMOTER_PUSH_AUTH: &str = "PROMOTER_PUSH_AUTH";
pub const PROMOTER_PUSH_AUDIENCE: &str = "PROMOTER_PUSH_AUDIENCE";
pub const PROMOTER_PUSH_SERVICE_ACCOUNTS: &str = "PROMOTER_PUSH_SERVICE_ACCOUNTS";
pub const PROMOTER_JWKS_URL: &str = "PROMOTER_JWKS_URL";
/// Where promoter keeps its own indexes (alert state, waiting digests, promotions by stage):
/// `host/path`, a repository prefix it may write and delete under. Default: the first stage's
/// registry + `/promoter-state`.
pub const PROMOTER_STATE_REPOSITORY: &str = "PROMOTER_STATE_REPOSITORY";
/// How long `promoter serve` waits for a request's headers, and then for its body, before it
/// gives up on the connection (a duration: `10s`). Default 10 s.
pub const PROMOTER_READ_TIMEOUT: &str = "PROMOTER_READ_TIMEOUT";
/// The key that signs promotion attestations (docs/attestations.md): a Cloud KMS key version,
/// `gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V`, or the path of
/// a PEM PKCS#8 ECDSA P-256 private key. Unset: no attestations.
pub const PROMOTER_ATTESTATION_KEY: &str = "PROMOTER_ATTESTATION_KEY";
/// `projects/P/attestors/A`: also create a Binary Authorization attestation for that attestor,
/// signed with the same (Cloud KMS) key.
pub const PROMOTER_BINAUTHZ_ATTESTOR: &str = "PROMOTER_BINAUTHZ_ATTESTOR";
/// Test and emulator settings: where the Cloud KMS, Container Analysis and Binary Authorization
/// REST APIs are (default Google's `https://cloudkms.googleapis.com`,
/// `https://containeranalysis.googleapis.com`, `https://binaryauthorization.googleapis.com`).
pub const PROMOTER_KMS_ENDPOINT: &str = "PROMOTER_KMS_ENDPOINT";
pub const PROMOTER_CONTAINER_ANALYSIS_ENDPOINT: &str = "PROMOTER_CONTAINER_ANALYSIS_ENDPOINT";
pub const PROMOTER_BINAUTHZ_ENDPOINT: &str = "PROMOTER_BINAUTHZ_ENDPOINT";
/// An OIDC ID token for `promoter approve` to present (else Application Default Credentials).
pub const PROMOTER_ID_TOKEN: &str = "PROMOTER_ID_TOKEN";
/// Set by Cloud Run: the service's name, used as the source of outbound events.
pub const K_SERVICE: &str = "K_SERVICE";
/// The Google Cloud project, for trace correlation in logs.
pub const GOOGLE_CLOUD_PROJECT: &str = "GOOGLE_CLOUD_PROJECT";
/// Log filter (tracing's `EnvFilter` syntax).
pub const RUST_LOG: &str = "RUST_LOG";

/// A variable's value, with empty treated as unset (as shells and Terraform produce both).
pub fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// `PROMOTER_INSECURE_REGISTRIES` as a list.
pub fn insecure_registries() -> Vec<String> {
    var(PROMOTER_INSECURE_REGISTRIES)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The gRPC endpoint of the Pub/Sub emulator or fake named by `PUBSUB_EMULATOR_HOST`.
///
/// The variable holds `HOST:PORT` (the gcloud emulator convention); the Rust client wants a URL,
/// and `http://` is what makes it speak plaintext gRPC instead of TLS.
pub fn pubsub_emulator_endpoint() -> Option<String> {
    var(PUBSUB_EMULATOR_HOST).map(|host| endpoint_from_host(&host))
}

fn endpoint_from_host(host: &str) -> String {
    if host.starts_with("http://") || host.starts_with("https://") {
        host.to_owned()
    } else {
        format!("http://{host}")
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint_from_host;

    #[test]
    fn emulator_host_becomes_a_plaintext_url() {
        assert_eq!(
            endpoint_from_host("127.0.0.1:8085"),
            "http://127.0.0.1:8085"
        );
        assert_eq!(endpoint_from_host("http://h:1"), "http://h:1");
    }
}
