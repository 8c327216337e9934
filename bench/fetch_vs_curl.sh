#!/usr/bin/env bash
# Benchmark: topfetch fetch against curl --parallel --parallel-max 100 on the
# same URLs from the same loopback nginx, in the same run.
#   (1) 20,000 blobs of 4 KiB     (2) one blob of 1 GiB
# each written to a tmpfs and to an ext4 folder, both in the same run.
# curl only writes; topfetch also verifies SHA-256 and renames atomically.
# Prints one table: median wall time of RUNS runs (topfetch and curl runs
# alternate), rate, peak RSS, requests nginx saw per run, and the ratio
# topfetch/curl.
# Usage: bench/fetch_vs_curl.sh [build-dir]
#   (env: RUNS=3 SMALL_N=20000 BIG_MIB=1024 OUT_BASES="/dev/shm <ext4 folder>"
#    SCENARIOS="small big")
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
export TOPFETCH=$build/cli/topfetch TF_SOURCE_ROOT=$here
[ -x "$TOPFETCH" ] || { echo "build first: scripts/build.sh" >&2; exit 2; }
RUNS=${RUNS:-3} SMALL_N=${SMALL_N:-20000} BIG_MIB=${BIG_MIB:-1024} SCENARIOS=${SCENARIOS:-small big}
# Both tools write to the same folders: a tmpfs (the tools, not the disk) and
# an ext4 folder (what build trees are on; the first of /tmp, /var/tmp and
# the source tree that is ext4). OUT_BASE=DIR keeps the old one-folder run.
fstype() { { df --output=fstype "$1" 2>/dev/null || echo unknown; } | tail -n1 | tr -d " "; }
if [ -z "${OUT_BASES:-}" ]; then
  OUT_BASES=${OUT_BASE:-/dev/shm}
  if [ -z "${OUT_BASE:-}" ]; then
    for c in /tmp /var/tmp "$here"; do
      if [ "$(fstype "$c")" = ext4 ] && [ -w "$c" ]; then OUT_BASES="$OUT_BASES $c"; break; fi
    done
  fi
fi
. "$here/tests/lib/harness.sh"
need curl
[ -x /usr/bin/time ] || fail "GNU time is missing: apt-get install time"
nginx_start

echo "preparing the blobs of: $SCENARIOS (small: $SMALL_N x 4 KiB, big: one of $BIG_MIB MiB)..." >&2
python3 "$here/bench/make_blobs.py" "$NGINX_CACHE/cas" "$tf_tmp/small" "$SMALL_N" 4096
sed -i "s|BASE/cas/|$NGINX_URL/cas/|" "$tf_tmp/small.curl"
if [[ " $SCENARIOS " == *" big "* ]]; then
  head -c $((BIG_MIB * 1024 * 1024)) /dev/urandom >"$tf_tmp/big"
  bigh=$(sha256sum "$tf_tmp/big" | cut -d' ' -f1)
  mv "$tf_tmp/big" "$NGINX_CACHE/cas/$bigh"
  echo "$bigh $((BIG_MIB * 1024 * 1024)) big.bin" >"$tf_tmp/big.manifest"
  printf 'url = "%s/cas/%s"\noutput = "OUT/big.bin"\n' "$NGINX_URL" "$bigh" >"$tf_tmp/big.curl"
fi
chmod -R a+r "$NGINX_CACHE"
# Warm the page cache so that both tools read nginx's files from memory.
find "$NGINX_CACHE/cas" -type f -exec cat {} + >/dev/null

# one TOOL SCENARIO OUT -> "wall rss requests" of one run
one() {
  local tool=$1 sc=$2 out=$3 before w r
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
  echo "$w $r $(( $(wc -l <"$NGINX_LOG") - before ))"
}

med() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }

# measure SCENARIO BASE -> "tf_wall tf_rss tf_reqs curl_wall curl_rss curl_reqs":
# RUNS rounds of both tools, alternating (and which goes first alternates),
# the median walls, the largest RSS, the requests of the last run. The many
# small files are removed only after all runs: ext4 scans past inodes freed
# in the last ~30 s when it allocates new ones, so a run right after
# deleting 20,000 files would measure that, not the tool.
measure() {
  local sc=$1 base=$2 i tool o w r q tw=() cw=() trss=0 crss=0 tq=0 cq=0 order outs=()
  for i in $(seq "$RUNS"); do
    order="topfetch curl"; [ $((i % 2)) -eq 0 ] && order="curl topfetch"
    for tool in $order; do
      o=$(mktemp -d "$base/tf-bench-out.XXXXXX")
      read -r w r q < <(one "$tool" "$sc" "$o")
      if [ "$sc" = small ]; then outs+=("$o"); else rm -rf "$o"; fi
      if [ "$tool" = topfetch ]; then
        tw+=("$w"); [ "$r" -gt "$trss" ] && trss=$r; tq=$q
      else
        cw+=("$w"); [ "$r" -gt "$crss" ] && crss=$r; cq=$q
      fi
    done
  done
  rm -rf "${outs[@]}"
  echo "$(med "${tw[@]}") $trss $tq $(med "${cw[@]}") $crss $cq"
}

names=""
for b in $OUT_BASES; do names="$names${names:+ and }$(fstype "$b") ($b)"; done
printf '\nnginx %s (1 worker, loopback), outputs in %s, %s cores, load average %s\n' \
  "$(nginx -v 2>&1 | sed 's/.*\///')" "$names" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '\n| scenario | tool | wall s (median of %d) | rate MiB/s | peak RSS MiB | nginx requests | topfetch/curl wall |\n' "$RUNS"
printf '|---|---|---|---|---|---|---|\n'
for sc in $SCENARIOS; do
  for base in $OUT_BASES; do
    if [ $sc = small ]; then label="$SMALL_N x 4 KiB"; mib=$(python3 -c "print($SMALL_N*4096/1048576)"); else label="1 x $BIG_MIB MiB"; mib=$BIG_MIB; fi
    label="$label, $(fstype "$base")"
    read -r tw tr tq cw cr cq < <(measure $sc "$base")
    python3 - "$label" "$mib" "$tw" "$tr" "$tq" "$cw" "$cr" "$cq" <<'PY'
import sys
label, mib, tw, tr, tq, cw, cr, cq = sys.argv[1:]
mib, tw, cw = float(mib), float(tw), float(cw)
rate = lambda w: mib / w if w > 0 else float("inf")
print(f"| {label} | topfetch fetch | {tw:.2f} | {rate(tw):.0f} | {int(tr)/1024:.1f} | {tq} | {tw/cw if cw else float('nan'):.2f} |")
print(f"| {label} | curl --parallel-max 100 | {cw:.2f} | {rate(cw):.0f} | {int(cr)/1024:.1f} | {cq} | |")
PY
  done
done
