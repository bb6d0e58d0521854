#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs packages,
# builds, starts throwaway servers on loopback, runs ctest, stops them.
#   scripts/test.sh [ctest args...]     e.g. scripts/test.sh -L unit
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${TXBOX_BUILD_DIR:-$root/build}
"$root/scripts/install-deps.sh"
TXBOX_BUILD_DIR=$build "$root/scripts/build.sh"
dir=$(mktemp -d /tmp/txbox-test.XXXXXX)
chmod 755 "$dir"
trap '"$root/scripts/test-env.sh" stop "$dir"' EXIT
eval "$(TXBOX_KAFKA_MOCK_BIN=$build/scripts/txbox-kafka-mock "$root/scripts/test-env.sh" start "$dir")"
cd "$build"
ctest --output-on-failure --timeout 900 "$@"
