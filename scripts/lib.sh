# Shared by scripts/demo and scripts/test: install what promoter's tests and demo run against.
# Everything comes from Debian's packages and PyPI, installed only when missing.

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages: the distribution registry, skopeo (seeding and cross-checks), Go and Google's
# Pub/Sub fake (pstest), openssl (test keys), GNU time (peak memory in the benchmark), chromium
# and Node.js (the pipeline page is checked in a real browser, driven by playwright-core), Python
# and a C compiler.
ensure_debian_packages() {
  local missing=()
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v go >/dev/null || missing+=(golang-go)
  [ -d /usr/share/gocode/src/cloud.google.com/go/pubsub/pstest ] || missing+=(golang-google-cloud-dev)
  command -v openssl >/dev/null || missing+=(openssl)
  [ -x /usr/bin/time ] || missing+=(time)
  command -v curl >/dev/null || missing+=(curl)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  # Python 3 with venv: tools/make-image, the deployment checks and the attestation verifiers.
  command -v python3 >/dev/null || missing+=(python3)
  python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
  # A C compiler: some crates build C code.
  command -v cc >/dev/null || missing+=(build-essential)
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

# The browser test's driver, playwright-core, from npm at the version tests/browser's lock file
# names. It drives Debian's chromium: no browser is downloaded.
ensure_browser_driver() {
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    echo "installing playwright-core (npm ci in tests/browser)" >&2
    (cd tests/browser && npm ci --no-audit --no-fund --silent)
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
