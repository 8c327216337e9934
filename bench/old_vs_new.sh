#!/usr/bin/env bash
# Runs the benchmarks for two builds of topfetch in the same run, alternating
# (old, new, old, new, ...), so a change can be judged against the binary it
# replaces on the same machine state. Prints each table labelled, then one
# table of the headline figures with their ratio new/old.
# Usage: bench/old_vs_new.sh OLD_BUILD_DIR NEW_BUILD_DIR [ROUNDS]
#   (env: BENCHES="fetch_vs_curl checker_events proxy_vs_toplevel"; each
#    script's own env, e.g. RUNS, SMALL_N, BIG_MIB, applies)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
old=${1:?usage: bench/old_vs_new.sh OLD_BUILD_DIR NEW_BUILD_DIR [ROUNDS]}
new=${2:?usage: bench/old_vs_new.sh OLD_BUILD_DIR NEW_BUILD_DIR [ROUNDS]}
rounds=${3:-1}
benches=${BENCHES:-fetch_vs_curl checker_events proxy_vs_toplevel}
out=$(mktemp -d /tmp/tf-old-vs-new.XXXXXX)
trap 'rm -rf "$out"' EXIT

for r in $(seq "$rounds"); do
  for b in $benches; do
    for which in old new; do
      dir=$old; [ "$which" = new ] && dir=$new
      echo "== round $r: $b with the $which build ($dir)" >&2
      "$here/bench/$b.sh" "$dir" >"$out/$b.$which.$r" 2>"$out/$b.$which.$r.err" ||
        { cat "$out/$b.$which.$r.err" >&2; echo "$b failed with the $which build" >&2; exit 1; }
    done
  done
done

for b in $benches; do
  for which in old new; do
    for r in $(seq "$rounds"); do
      echo
      echo "### $b — $which build, round $r"
      cat "$out/$b.$which.$r"
    done
  done
done

# Headline figures: the first number after the label in each table row.
python3 - "$out" "$rounds" $benches <<'PY'
import re, statistics, sys
out, rounds, benches = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = {
    "fetch_vs_curl": [("small blobs: topfetch wall s", r"^\|\s*\d+ x 4 KiB(?:, tmpfs)? \| topfetch fetch \|\s*([0-9.]+)"),
                      ("small blobs: topfetch/curl", r"^\|\s*\d+ x 4 KiB(?:, tmpfs)? \| topfetch fetch .*\|\s*([0-9.]+) \|\s*$"),
                      ("large blob: topfetch wall s", r"^\|\s*1 x \d+ MiB(?:, tmpfs)? \| topfetch fetch \|\s*([0-9.]+)"),
                      ("large blob: topfetch/curl", r"^\|\s*1 x \d+ MiB(?:, tmpfs)? \| topfetch fetch .*\|\s*([0-9.]+) \|\s*$")],
    "checker_events": [("store inject outputs/s", r"store: inject[^|]*\|\s*([0-9.,]+)"),
                       ("session inject outputs/s", r"session: inject[^|]*\|\s*([0-9.,]+)"),
                       ("BEP read+expand s", r"BEP: read[^|]*\|\s*([0-9.]+)"),
                       ("BEP peak RSS MiB", r"BEP: read[^|]*\|[^|]*\|\s*([0-9.]+) MiB"),
                       ("gate latency median ms", r"gate latency[^|]*\|\s*(?:median\s*)?([0-9.]+)")],
    "proxy_vs_toplevel": [("bazel toplevel wall s", r"^\|\s*\(a\)[^|]*\|\s*([0-9.]+)"),
                          ("minimal via proxy wall s", r"^\|\s*\(b\)[^|]*\|\s*([0-9.]+)")],
}
def figure(path, rx):
    for line in open(path):
        m = re.search(rx, line, re.I)
        if m:
            return float(m.group(1).replace(",", ""))
    return None
print("\n| figure | old (median) | new (median) | new/old |\n|---|---|---|---|")
for b in benches:
    for label, rx in rows.get(b, []):
        v = {}
        for which in ("old", "new"):
            xs = [x for x in (figure(f"{out}/{b}.{which}.{r}", rx) for r in range(1, rounds + 1)) if x is not None]
            v[which] = statistics.median(xs) if xs else None
        ratio = f"{v['new'] / v['old']:.2f}" if v["old"] and v["new"] else "n/a"
        print(f"| {label} | {v['old']} | {v['new']} | {ratio} |")
PY
