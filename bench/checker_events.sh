#!/usr/bin/env bash
# The checker/events figures in one table, same run, same machine:
#  - the store alone: 1,000,000 outputs injected (bench/store)
#  - the session: 1,000,000 outputs through tf_session_action_executed, and
#    the gate's latency from a target's last file in place to its
#    TargetComplete at a PUB subscriber (bench/session)
#  - reading and expanding a BEP of 1,000,000 files in 10,000 targets whose
#    NamedSetOfFiles share deeply (bench/events)
# Usage: bench/checker_events.sh [build-dir]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
work=$(mktemp -d /tmp/tf-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
for b in store/bench_store session/bench_session events/bench_events; do
  [ -x "$build/bench/$b" ] || { echo "build first: $build/bench/$b is missing" >&2; exit 2; }
done

store=$("$build/bench/store/bench_store" 2>&1 | grep '^inject (new outputs)')
sess=$("$build/bench/session/bench_session" "$work" 1000000 1000 3)
events=$("$build/bench/events/bench_events" -r 3 --dir "$work" 2>&1 | grep '^ *1.00x')

printf '\n| what | figure | peak RSS | target |\n|---|---|---|---|\n'
echo "$store" | awk '{printf "| store: inject 1,000,000 outputs | %s outputs/s | %s MiB | >= 300,000/s, <= 256 MiB |\n", $6, $(NF-8)}'
echo "$sess" | awk -F'|' '/inject/ {gsub(/^ +| +$/, "", $3); gsub(/peak RSS /, "", $4); gsub(/^ +| +$/, "", $4);
  printf "| session: inject 1,000,000 outputs (tf_session_action_executed) | %s | %s | >= 300,000/s, <= 256 MiB |\n", $3, $4}'
echo "$events" | awk '{printf "| BEP: read + expand 1,000,000 files, 10,000 targets, shared sets | %s s (read %s s, expand %s s; CPU %s + %s s) | %s MiB | <= 2 s, linear; <= 128 MiB |\n", $8, $6, $7, $11, $12, $10}'
echo "$sess" | awk -F'|' '/gate latency/ {gsub(/^ +| +$/, "", $3); gsub(/^ +| +$/, "", $4);
  printf "| gate latency, 1,000 targets x 3 files: last file in place -> TargetComplete at a subscriber | %s (%s) | | median <= 5 ms |\n", $3, $4}'
