# Shared by scripts/demo and scripts/test: install what promoter's tests and demo run against.
# Everything comes from Debian's packages and PyPI, installed only when missing.

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages: the distribution registry, skopeo (seeding and cross-checks), Go and Google's
# Pub/Sub fake (pstest), openssl (test keys), GNU time (peak memory in the benchmark).
ensure_debian_packages() {
  local missing=()
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v go >/dev/null || missing+=(golang-go)
  [ -d /usr/share/gocode/src/cloud.google.com/go/pubsub/pstest ] || missing+=(golang-google-cloud-dev)
  command -v openssl >/dev/null || missing+=(openssl)
  [ -x /usr/bin/time ] || missing+=(time)
  command -v curl >/dev/null || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}" >&2
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # skopeo needs a signature policy; a fresh machine may not have one.
  if [ ! -f /etc/containers/policy.json ]; then
    as_root mkdir -p /etc/containers
    echo '{"default":[{"type":"insecureAcceptAnything"}]}' | as_root tee /etc/containers/policy.json >/dev/null
  fi
}

# Python verifiers written by others, for the attestation tests: securesystemslib's DSSE
# verification with pyca/cryptography, in a virtual environment of their own (reused while it
# holds exactly these versions), as infra/checks/run installs its tools. Exports
# PROMOTER_DSSE_PYTHON, the interpreter the tests run the verifier with.
verifier_requirements="securesystemslib==1.6.0 cryptography==50.0.2"
ensure_python_verifiers() {
  local dir="${PROMOTER_TEST_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/promoter-test-tools}/verifiers"
  if [[ ! -x "$dir/bin/python" || ! -f "$dir/.requirements" || "$(cat "$dir/.requirements")" != "$verifier_requirements" ]]; then
    echo "installing $verifier_requirements into $dir" >&2
    rm -rf "$dir"
    python3 -m venv "$dir"
    # shellcheck disable=SC2086
    "$dir/bin/pip" install --quiet --disable-pip-version-check $verifier_requirements >&2
    echo "$verifier_requirements" > "$dir/.requirements"
  fi
  export PROMOTER_DSSE_PYTHON="$dir/bin/python"
}
