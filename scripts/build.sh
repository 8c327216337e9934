#!/usr/bin/env bash
# Configures and builds topfetch in build/ (warnings are errors).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/build.ninja ] || meson setup build -Dwerror=true --buildtype=debugoptimized >/dev/null
ninja -C build
