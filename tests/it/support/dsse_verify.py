#!/usr/bin/env python3
"""Verifies a DSSE envelope with securesystemslib and pyca/cryptography: a verifier promoter's
authors did not write (https://github.com/secure-systems-lab/securesystemslib).

    dsse_verify.py ENVELOPE_JSON PUBLIC_KEY_PEM KEYID

On success prints the envelope's payload (the in-toto statement) and exits 0; otherwise prints
why on stderr and exits 1.
"""
import json
import sys

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey


def main() -> int:
    envelope_path, key_path, keyid = sys.argv[1:4]
    with open(envelope_path, "rb") as f:
        envelope = Envelope.from_dict(json.load(f))
    with open(key_path, "rb") as f:
        public_key = load_pem_public_key(f.read())
    key = SSlibKey.from_crypto(public_key, keyid=keyid, scheme="ecdsa-sha2-nistp256")
    try:
        envelope.verify([key], 1)
    except Exception as error:  # securesystemslib raises VerificationError; say which
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if envelope.payload_type != "application/vnd.in-toto+json":
        print(f"payloadType is {envelope.payload_type}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(envelope.payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
