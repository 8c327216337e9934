#!/usr/bin/env bash
# Builds the libFuzzer harnesses of fuzz/ with clang under AddressSanitizer +
# UndefinedBehaviorSanitizer (in build-fuzz/) and runs each for SECONDS
# (default 20) from its seed corpus fuzz/corpus/<harness>/. New inputs go to
# build-fuzz/corpus/<harness>/, a crashing one to build-fuzz/crashes/ (add it
# to fuzz/corpus/<harness>/ with the fix). Prints executions and coverage
# (libFuzzer's cov: edges, ft: features) per harness; exits 1 if any crashed.
#   scripts/fuzz.sh [SECONDS] [HARNESS...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
shift || true
build=${TF_FUZZ_BUILD:-build-fuzz}
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(bep action tree manifest service proxy_path proxy_http grpc grpc_request credjson)

command -v clang >/dev/null || { echo "fuzz.sh: clang is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
[ -f "$build/build.ninja" ] || CC=clang meson setup "$build" --buildtype=debug -Dfuzz=true -Dtests=false \
  -Db_sanitize=address,undefined -Db_lundef=false -Dwerror=true >/dev/null
ninja -C "$build" $(printf 'fuzz/fuzz_%s ' "${harnesses[@]}") >"$build/ninja-fuzz.log" 2>&1 ||
  { cat "$build/ninja-fuzz.log" >&2; echo "fuzz.sh: the harnesses do not build" >&2; exit 1; }

export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
mkdir -p "$build/crashes"
status=0
printf '%-11s %10s %8s %8s %8s  %s\n' harness executions exec/s cov ft result
for h in "${harnesses[@]}"; do
  work="$build/corpus/$h"
  log="$build/fuzz_$h.log"
  mkdir -p "$work"
  rc=0
  "$build/fuzz/fuzz_$h" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$build/crashes/$h-" "$work" "fuzz/corpus/$h" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1 || true)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1 || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d" " -f2 || true)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d" " -f2 || true)
  result=ok
  if [ $rc -ne 0 ]; then
    result="CRASHED (exit $rc): see $log and $build/crashes/"
    status=1
    grep -m1 -E 'ERROR: |runtime error|SUMMARY' "$log" >&2 || tail -5 "$log" >&2
  fi
  printf '%-11s %10s %8s %8s %8s  %s\n' "$h" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "$result"
done
exit $status
