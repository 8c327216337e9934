#!/usr/bin/env bash
# Benchmark: seconds until N targets x MB megabytes (20 x 20) of top-level
# outputs are on disk, real Bazel 4.2.3 offline, the same workspace and the
# same loopback nginx cache in the same run, every action a cache hit, RUNS
# (5) alternating rounds of
#   (a) bazel --remote_download_toplevel --remote_cache=http://<nginx>; done
#       when Bazel exits;
#   (b) bazel --remote_download_minimal --remote_cache=http://<topfetch
#       proxy> --build_event_binary_file=F, the proxy following F
#       (--bep_follow) and writing the top-level files to --output_dir; done
#       when the proxy logs that build ended (its own BEP has last_message,
#       every file verified in place).
# Prints one table (bench/proxy/lib.sh): medians, ratio (b)/(a), requests and
# MiB at nginx, the proxy's peak RSS. Use a release build for figures.
# Usage: bench/proxy_vs_toplevel.sh [build-dir]   env: N=20 MB=20 RUNS=5 PROFILE=strace|perf
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
UPSTREAM=${UPSTREAM:-nginx}
. "$here/bench/proxy/lib.sh"
ended() {
  grep -q '^topfetch proxy: build .* ended' "$tf_tmp/proxy.log" && grep -qs '"lastMessage":true' "$EV/tf.json"
}
bench_main http "bazel --remote_download_minimal -> topfetch proxy http:// -> $UP_NAME" ended \
  --bep_follow=@EV@/bep.bin --build_event_json_file=@EV@/tf.json --store=@EV@/store.db -- \
  --remote_cache=@PROXY@ --build_event_binary_file=@EV@/bep.bin
