#!/usr/bin/env bash
# Configures and builds txbox into build/ (or $TXBOX_BUILD_DIR).
#   scripts/build.sh [extra cmake -D flags...]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${TXBOX_BUILD_DIR:-$root/build}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$build" -j"$(nproc)"
