# Shared by scripts/demo and scripts/test: install what promoter's tests and demo run against.
# Everything comes from Debian's packages and PyPI, installed only when missing.

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages: the distribution registry, skopeo (seeding and cross-checks), Go and Google's
# Pub/Sub fake (pstest), openssl (test keys), GNU time (peak memory in the benchmark), chromium
# and Node.js (the pipeline page is checked in a real browser, driven by playwright-core).
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
