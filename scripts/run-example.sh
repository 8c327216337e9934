#!/usr/bin/env bash
# The main job on the embedded default: installs what is missing, builds, and
# fetches the bundled example (examples/manifest.txt) from the bundled disk
# cache (examples/disk-cache, Bazel's --disk_cache layout) into example-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh >/dev/null
rm -rf example-out
build/cli/topfetch fetch --remote_cache=examples/disk-cache --output_dir=example-out \
  --manifest=examples/manifest.txt
example-out/app/bin/hello.sh
