#!/usr/bin/env bash
# Installs every Debian package txbox needs to build, test and run its demo.
# Idempotent; skips apt entirely when everything is already installed.
set -euo pipefail
packages=(
  build-essential cmake pkg-config git ca-certificates
  postgresql postgresql-client
  libpqxx-dev librdkafka-dev librabbitmq-dev libnats-dev libhiredis-dev
  libfmt-dev libspdlog-dev nlohmann-json3-dev libcli11-dev libtomlplusplus-dev libcpp-httplib-dev
  catch2 kcat
  rabbitmq-server amqp-tools nats-server redis-server redis-tools
  iproute2 pgbouncer
  prometheus  # promtool: the tests check the metrics text with it
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
