#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs packages,
# builds, starts throwaway servers on loopback, runs ctest, stops them.
#   scripts/test.sh [ctest args...]     e.g. scripts/test.sh -L unit
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../scripts/lib.sh
source "$root/scripts/lib.sh"
build=${TXBOX_BUILD_DIR:-$root/build}
"$root/scripts/install-deps.sh"
# The suite builds with -Werror (a developer option; users build without it).
TXBOX_BUILD_DIR=$build "$root/scripts/build.sh" -DTXBOX_WERROR=ON
dir=$(make_run_dir txbox-test)
trap '"$root/scripts/test-env.sh" stop "$dir"' EXIT
# Captured first: a server that does not start stops the run here, with its
# error, rather than leaving its variable empty for the tests.
vars=$(TXBOX_KAFKA_MOCK_BIN=$build/scripts/txbox-kafka-mock "$root/scripts/test-env.sh" start "$dir")
eval "$vars"
cd "$build"
ctest --output-on-failure --timeout 900 "$@"
