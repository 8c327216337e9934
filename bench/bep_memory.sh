#!/usr/bin/env bash
# Issue 13, target 4: reading and expanding a BEP of 1,000,000 files in
# 10,000 targets with deeply shared named sets (bench/events/bench_events),
# the old build against the new one in the same run, alternating
# (old, new, old, new, ...), RUNS times each. One table: medians of the 1x
# row's read, expand and read + expand wall times (and CPU times, when both
# builds' bench_events print them), the peak RSS, and the CPU time (user +
# sys) of the whole bench process, with new/old. The verdict on time uses
# CPU seconds when both print them (wall time on a busy machine is mostly
# waiting for a CPU), else wall time.
# Usage: bench/bep_memory.sh OLD_BUILD_DIR NEW_BUILD_DIR [RUNS]   (RUNS: 5)
#   env: FILES, TARGETS (default 1000000, 10000)
set -euo pipefail
old=${1:?usage: bench/bep_memory.sh OLD_BUILD_DIR NEW_BUILD_DIR [RUNS]}
new=${2:?usage: bench/bep_memory.sh OLD_BUILD_DIR NEW_BUILD_DIR [RUNS]}
runs=${3:-5}
files=${FILES:-1000000}
targets=${TARGETS:-10000}
for b in "$old" "$new"; do
  [ -x "$b/bench/events/bench_events" ] || { echo "build first: $b/bench/events/bench_events is missing" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "GNU time (/usr/bin/time) is needed for the process's CPU time" >&2; exit 2; }
work=$(mktemp -d /tmp/tf-bep-memory.XXXXXX)
trap 'rm -rf "$work"' EXIT

for r in $(seq "$runs"); do
  for which in old new; do
    dir=$old; [ "$which" = new ] && dir=$new
    echo "== run $r/$runs: the $which build" >&2
    # One timing per run (-r 1): the runs themselves are the repetitions.
    /usr/bin/time -f 'cpu %U %S maxrss %M' -o "$work/$which.$r.time" \
      "$dir/bench/events/bench_events" -r 1 -f "$files" -t "$targets" --dir "$work" >"$work/$which.$r.out"
  done
done

echo
echo "BEP read + expand: $files files in $targets targets, shared named sets; $runs alternating runs each, medians"
echo "old: $old"
echo "new: $new"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$work" "$runs" <<'PY'
import statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])
def row(which, r):
    for line in open(f"{work}/{which}.{r}.out"):
        f = line.split()
        if f and f[0] == "1.00x":
            r = {"read": float(f[5]), "expand": float(f[6]), "total": float(f[7]), "peak": float(f[9])}
            if len(f) >= 12:  # builds whose bench prints CPU seconds per phase
                r.update({"read_cpu": float(f[10]), "expand_cpu": float(f[11]),
                          "total_cpu": float(f[10]) + float(f[11])})
            return r
    raise SystemExit(f"no 1.00x row in {which} run {r}")
def proc(which, r):
    f = open(f"{work}/{which}.{r}.time").read().split()
    return {"cpu": float(f[1]) + float(f[2]), "rss": float(f[4]) / 1024.0}
med = {}
for which in ("old", "new"):
    rows = [dict(row(which, r), **proc(which, r)) for r in range(1, runs + 1)]
    med[which] = {k: statistics.median(x[k] for x in rows) for k in rows[0]}
both_cpu = "total_cpu" in med["old"] and "total_cpu" in med["new"]
labels = [("read s (wall)", "read"), ("expand s (wall)", "expand"), ("read + expand s (wall)", "total"),
          ("peak RSS MiB (getrusage, after the 1x size)", "peak"), ("peak RSS MiB (GNU time)", "rss"),
          ("CPU s of the whole bench (user + sys; all 3 sizes and generating them)", "cpu")]
if both_cpu:
    labels[3:3] = [("read CPU s", "read_cpu"), ("expand CPU s", "expand_cpu"), ("read + expand CPU s", "total_cpu")]
print("\n| figure | old (median) | new (median) | new/old |\n|---|---|---|---|")
for label, k in labels:
    o, n = med["old"][k], med["new"][k]
    print(f"| {label} | {o:.3f} | {n:.3f} | {n / o:.2f} |" if o else f"| {label} | {o} | {n} | n/a |")
ok_mem = med["new"]["rss"] <= 128
# Wall time on a busy machine is mostly waiting for a CPU: judge by CPU
# seconds of the two phases when both builds print them.
key, what = ("total_cpu", "CPU") if both_cpu else ("total", "wall")
ok_time = med["new"][key] <= med["old"][key]
print(f"\ntarget: peak RSS <= 128 MiB: {'ok' if ok_mem else 'NOT MET'} ({med['new']['rss']:.1f} MiB); "
      f"read + expand new/old <= 1.0 ({what} time): {'ok' if ok_time else 'NOT MET'} "
      f"({med['new'][key] / med['old'][key]:.2f})")
PY
