#!/usr/bin/env bash
# Benchmark: seconds until N targets x MB megabytes (20 x 20) of top-level
# outputs are on disk, real Bazel 4.2.3 offline, the same workspace and the
# same upstream cache in the same run, every action a cache hit, RUNS (5)
# alternating rounds of
#   (a) bazel --remote_download_toplevel straight to the upstream; done when
#       Bazel exits;
#   (b) bazel --remote_download_minimal --remote_cache=grpc://<topfetch proxy>
#       --bes_backend=<the same port>: the proxy's gRPC front end forwards the
#       cache calls upstream, takes the build's events over BES and writes the
#       top-level files to --output_dir; done when the proxy logs that the
#       invocation's session ended (its gated BEP in --build_event_dir has
#       last_message, every file verified in place).
# The upstream (UPSTREAM): `worker` (default), Bazel's own remote worker over
# grpc:// (tests/lib/reapi_worker.sh; requests: the ByteStream.Read and
# BatchReadBlobs calls it logs, bytes: the sizes those reads name), or
# `nginx` over HTTP (requests and body bytes from its access log).
# Prints one table (bench/proxy/lib.sh): medians, ratio (b)/(a), requests and
# MiB at the upstream, the proxy's peak RSS. Use a release build for figures.
# Usage: bench/gsrv_vs_toplevel.sh [build-dir]   env: N=20 MB=20 RUNS=5 UPSTREAM=worker PROFILE=strace|perf
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
UPSTREAM=${UPSTREAM:-worker}
. "$here/bench/proxy/lib.sh"
ended() {
  grep -q '^topfetch proxy: build .* ended' "$tf_tmp/proxy.log" && grep -qs '"lastMessage":true' "$EV"/*.json
}
bench_main grpc "bazel --remote_download_minimal -> topfetch proxy grpc:// (+BES) -> $UP_NAME" ended \
  --build_event_dir=@EV@ -- \
  --remote_cache=@PROXY@ --bes_backend=@PROXY@
