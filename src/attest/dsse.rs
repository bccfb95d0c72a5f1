//! DSSE, the Dead Simple Signing Envelope ([protocol], [envelope]): a payload, its type, and
//! signatures over the payload's pre-authentication encoding (PAE) — never over the JSON of the
//! envelope, so how the envelope is serialized does not matter to a verifier.
//!
//! [protocol]: https://github.com/secure-systems-lab/dsse/blob/v1.0.2/protocol.md
//! [envelope]: https://github.com/secure-systems-lab/dsse/blob/v1.0.2/envelope.md

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

/// The payload type of an in-toto Statement ([in-toto Statement v1], "Parsing rules").
///
/// [in-toto Statement v1]: https://github.com/in-toto/attestation/blob/v1.0/spec/v1/statement.md
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// The media type of a DSSE envelope, as cosign stores each attestation in an OCI layer.
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";

/// `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths as ASCII
/// decimal byte counts ([protocol], "Signature definition").
///
/// [protocol]: https://github.com/secure-systems-lab/dsse/blob/v1.0.2/protocol.md
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + body.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(body);
    out
}

/// A DSSE envelope in its JSON form: payload and signatures base64 (standard alphabet, padded).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub payload_type: String,
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature: the key's id (a hint for the verifier; the key is the verifier's choice) and
/// the signature bytes, base64.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EnvelopeSignature {
    #[serde(default)]
    pub keyid: String,
    pub sig: String,
}

impl Envelope {
    /// An envelope of `body` with one signature.
    pub fn new(payload_type: &str, body: &[u8], keyid: &str, signature: &[u8]) -> Envelope {
        Envelope {
            payload_type: payload_type.to_owned(),
            payload: BASE64.encode(body),
            signatures: vec![EnvelopeSignature {
                keyid: keyid.to_owned(),
                sig: BASE64.encode(signature),
            }],
        }
    }

    /// Reads an envelope from its JSON.
    pub fn parse(bytes: &[u8]) -> Result<Envelope, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a DSSE envelope: {e}"))
    }

    /// The payload's bytes.
    pub fn body(&self) -> Result<Vec<u8>, String> {
        BASE64
            .decode(&self.payload)
            .map_err(|e| format!("DSSE payload is not base64: {e}"))
    }

    /// What the signatures sign.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, String> {
        Ok(pae(&self.payload_type, &self.body()?))
    }

    /// Each signature's bytes, with its key id.
    pub fn signatures(&self) -> Vec<(String, Result<Vec<u8>, String>)> {
        self.signatures
            .iter()
            .map(|s| {
                (
                    s.keyid.clone(),
                    BASE64
                        .decode(&s.sig)
                        .map_err(|e| format!("DSSE signature is not base64: {e}")),
                )
            })
            .collect()
    }

    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_the_specs_encoding() {
        // The test vector of the DSSE protocol ("Test Vectors"): type
        // "http://example.com/HelloWorld", body "hello world".
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn an_envelope_reads_back_what_was_written() {
        let envelope = Envelope::new(IN_TOTO_PAYLOAD_TYPE, b"{\"a\":1}", "k", b"sig");
        let json = envelope.to_json();
        let text = String::from_utf8(json.clone()).expect("utf-8");
        assert!(
            text.contains("\"payloadType\":\"application/vnd.in-toto+json\""),
            "{text}"
        );
        let back = Envelope::parse(&json).expect("parses");
        assert_eq!(back, envelope);
        assert_eq!(back.body().expect("base64"), b"{\"a\":1}");
        assert_eq!(
            back.signed_bytes().expect("base64"),
            pae(IN_TOTO_PAYLOAD_TYPE, b"{\"a\":1}")
        );
        assert!(Envelope::parse(b"{}").is_err());
    }
}
