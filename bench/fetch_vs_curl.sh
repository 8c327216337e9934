#!/usr/bin/env bash
# Benchmark: topfetch fetch against curl --parallel --parallel-max 100 on the
# same URLs from the same loopback nginx, in the same run.
#   (1) 20,000 blobs of 4 KiB     (2) one blob of 1 GiB
# curl only writes; topfetch also verifies SHA-256 and renames atomically.
# Prints one table: median wall time of RUNS runs, rate, peak RSS, requests
# nginx saw per run, and the ratio topfetch/curl.
# Usage: bench/fetch_vs_curl.sh [build-dir]   (env: RUNS=3 SMALL_N=20000 BIG_MIB=1024)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
export TOPFETCH=$build/cli/topfetch TF_SOURCE_ROOT=$here
[ -x "$TOPFETCH" ] || { echo "build first: scripts/build.sh" >&2; exit 2; }
RUNS=${RUNS:-3} SMALL_N=${SMALL_N:-20000} BIG_MIB=${BIG_MIB:-1024}
# Outputs go to tmpfs by default: on this VM's disk, ext4 inode allocation right
# after deleting 20,000 files makes the same command vary 1.8-6 s, which would
# measure the disk, not the tools. Both tools write to the same place.
OUT_BASE=${OUT_BASE:-/dev/shm}
. "$here/tests/lib/harness.sh"
need curl
[ -x /usr/bin/time ] || fail "GNU time is missing: apt-get install time"
nginx_start

echo "preparing $SMALL_N x 4 KiB blobs and one $BIG_MIB MiB blob..." >&2
python3 - "$NGINX_CACHE/cas" "$tf_tmp" "$NGINX_URL" "$SMALL_N" <<'PY'
import hashlib, os, sys
cas, tmp, url, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with open(f"{tmp}/small.manifest", "w") as m, open(f"{tmp}/small.curl", "w") as c:
    for i in range(n):
        data = os.urandom(4096)
        h = hashlib.sha256(data).hexdigest()
        with open(f"{cas}/{h}", "wb") as f:
            f.write(data)
        p = f"d{i % 100}/f{i}.bin"
        m.write(f"{h} 4096 {p}\n")
        c.write(f'url = "{url}/cas/{h}"\noutput = "OUT/{p}"\n')
PY
head -c $((BIG_MIB * 1024 * 1024)) /dev/urandom >"$tf_tmp/big"
bigh=$(sha256sum "$tf_tmp/big" | cut -d' ' -f1)
mv "$tf_tmp/big" "$NGINX_CACHE/cas/$bigh"
echo "$bigh $((BIG_MIB * 1024 * 1024)) big.bin" >"$tf_tmp/big.manifest"
printf 'url = "%s/cas/%s"\noutput = "OUT/big.bin"\n' "$NGINX_URL" "$bigh" >"$tf_tmp/big.curl"
chmod -R a+r "$NGINX_CACHE"
# Warm the page cache so that both tools read nginx's files from memory.
find "$NGINX_CACHE/cas" -type f -exec cat {} + >/dev/null

# measure TOOL SCENARIO -> "wall rss requests" (median wall of RUNS runs)
measure() {
  local tool=$1 sc=$2 out walls=() rss=0 reqs=0 before
  for _ in $(seq "$RUNS"); do
    out=$(mktemp -d "$OUT_BASE/tf-bench-out.XXXXXX")
    before=$(wc -l <"$NGINX_LOG")
    if [ "$tool" = topfetch ]; then
      /usr/bin/time -o "$tf_tmp/time" -f "%e %M" "$TOPFETCH" fetch --remote_cache="$NGINX_URL" \
        --output_dir="$out" --manifest="$tf_tmp/$sc.manifest" --remote_max_connections=100 >/dev/null
    else
      sed "s|OUT/|$out/|" "$tf_tmp/$sc.curl" >"$tf_tmp/curl.cfg"
      /usr/bin/time -o "$tf_tmp/time" -f "%e %M" curl --silent --no-progress-meter --fail --parallel --parallel-max 100 \
        --create-dirs -K "$tf_tmp/curl.cfg"
    fi
    read -r w r <"$tf_tmp/time"
    walls+=("$w"); [ "$r" -gt "$rss" ] && rss=$r
    reqs=$(( $(wc -l <"$NGINX_LOG") - before ))
    rm -rf "$out" &
  done
  wait
  echo "$(printf '%s\n' "${walls[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p") $rss $reqs"
}

printf '\nnginx %s (1 worker, loopback), outputs in %s, %s\n' "$(nginx -v 2>&1 | sed 's/.*\///')" "$OUT_BASE" "$(nproc) cores"
printf '\n| scenario | tool | wall s (median of %d) | rate MiB/s | peak RSS MiB | nginx requests | topfetch/curl wall |\n' "$RUNS"
printf '|---|---|---|---|---|---|---|\n'
for sc in small big; do
  if [ $sc = small ]; then label="$SMALL_N x 4 KiB"; mib=$(python3 -c "print($SMALL_N*4096/1048576)"); else label="1 x $BIG_MIB MiB"; mib=$BIG_MIB; fi
  read -r tw tr tq < <(measure topfetch $sc)
  read -r cw cr cq < <(measure curl $sc)
  python3 - "$label" "$mib" "$tw" "$tr" "$tq" "$cw" "$cr" "$cq" <<'PY'
import sys
label, mib, tw, tr, tq, cw, cr, cq = sys.argv[1:]
mib, tw, cw = float(mib), float(tw), float(cw)
rate = lambda w: mib / w if w > 0 else float("inf")
print(f"| {label} | topfetch fetch | {tw:.2f} | {rate(tw):.0f} | {int(tr)/1024:.1f} | {tq} | {tw/cw if cw else float('nan'):.2f} |")
print(f"| {label} | curl --parallel-max 100 | {cw:.2f} | {rate(cw):.0f} | {int(cr)/1024:.1f} | {cq} | |")
PY
done
