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
