#!/usr/bin/env bash
# The main job on the embedded default: installs only what building and
# running it needs (scripts/install-deps.sh --build-only: compiler, meson,
# the libraries, help2man; no Bazel, Java or nginx), builds the library and
# CLI alone (-Dtests=false, in build-example/), and runs `topfetch collect` on
# the bundled example: the BEP of a small build (examples/bep.bin) whose
# outputs live in the bundled disk cache (examples/disk-cache, Bazel's
# --disk_cache layout). The completed targets' files land in example-out/, and
# example-out.json is the BEP again with each TargetComplete written only after
# its files were verified on disk.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --build-only
[ -f build-example/build.ninja ] ||
  meson setup build-example -Dtests=false -Dwerror=true --buildtype=debugoptimized >/dev/null
ninja -C build-example >/dev/null
rm -rf example-out example-out.json
build-example/cli/topfetch collect --bep=examples/bep.bin --remote_cache=examples/disk-cache \
  --output_dir=example-out --build_event_json_file=example-out.json
find example-out -type f | sort
sh example-out/app/bin/hello.sh
