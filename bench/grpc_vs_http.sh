#!/usr/bin/env bash
# Benchmark: topfetch fetch over grpc:// from a real REAPI server (Bazel's own
# remote worker, tests/lib/reapi_worker.sh) against topfetch fetch over HTTP
# from a loopback nginx, on the same blobs, in the same run.
#   (1) 20,000 blobs of 4 KiB     (2) one large blob (BIG_MIB, default 1024)
#   (3) a tree artifact of TREE_N (20,000) files of 4 KiB that real Bazel 4.2.3
#       built against the worker: Bazel's own --remote_download_toplevel
#       (after a clean; wall time of the build command, server warm) against
#       topfetch collect of the same files from its --remote_download_minimal
#       BEP (bytestream:// URIs), one run each.
#   The blobs are read from two workers over one storage: one as Bazel 4.2.3
#   has it (no BatchReadBlobs: each blob one ByteStream.Read, after one
#   UNIMPLEMENTED), one with BatchReadBlobs served (a test patch).
# Prints one table: median wall time of RUNS runs, rate, peak RSS of
# topfetch, requests per run at nginx or at the worker (its ByteStream.Read
# and BatchReadBlobs calls, logged by the test patch), and the ratio
# grpc/http (or topfetch/Bazel).
# Usage: bench/grpc_vs_http.sh [build-dir]
#   env: RUNS=3 SMALL_N=20000 BIG_MIB=1024 TREE_N=20000 SCENARIOS="small big tree"
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
export TOPFETCH=$build/cli/topfetch TF_SOURCE_ROOT=$here TF_BUILD_ROOT=$build
[ -x "$TOPFETCH" ] || { echo "build first: scripts/build.sh" >&2; exit 2; }
RUNS=${RUNS:-3} SMALL_N=${SMALL_N:-20000} BIG_MIB=${BIG_MIB:-1024} TREE_N=${TREE_N:-20000}
SCENARIOS=${SCENARIOS:-small big tree}
OUT_BASE=${OUT_BASE:-/dev/shm} # as bench/fetch_vs_curl.sh: measure the tools, not ext4
. "$here/tests/lib/harness.sh"
. "$here/tests/lib/reapi_worker.sh"
[ -x /usr/bin/time ] || fail "GNU time is missing: apt-get install time"
nginx_start
reapi_worker_start
PLAIN_URL=$WORKER_URL PLAIN_LOG=$WORKER_LOG PLAIN_CAS=$WORKER_CAS PLAIN_PORT=$WORKER_PORT
REAPI_JAVA_OPTS=-Dtf.worker.batch_read=true reapi_worker_start --cas_path="$PLAIN_CAS"
BATCH_URL=$WORKER_URL BATCH_LOG=$WORKER_LOG
WORKER_URL=$PLAIN_URL WORKER_LOG=$PLAIN_LOG WORKER_CAS=$PLAIN_CAS WORKER_PORT=$PLAIN_PORT

case " $SCENARIOS " in *" small "* | *" big "*) ;; *) SMALL_N=0 BIG_MIB=0 ;; esac
echo "preparing $SMALL_N x 4 KiB blobs and one $BIG_MIB MiB blob in both caches..." >&2
python3 - "$NGINX_CACHE/cas" "$WORKER_CAS/cas" "$tf_tmp" "$SMALL_N" <<'PY'
import hashlib, os, sys
ncas, wcas, tmp, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with open(f"{tmp}/small.manifest", "w") as m:
    for i in range(n):
        data = os.urandom(4096)
        h = hashlib.sha256(data).hexdigest()
        open(f"{ncas}/{h}", "wb").write(data)
        os.makedirs(f"{wcas}/{h[:2]}", exist_ok=True)
        open(f"{wcas}/{h[:2]}/{h}", "wb").write(data)
        m.write(f"{h} 4096 d{i % 100}/f{i}.bin\n")
PY
head -c $((BIG_MIB * 1024 * 1024)) /dev/urandom >"$tf_tmp/big"
bigh=$(sha256sum "$tf_tmp/big" | cut -d' ' -f1)
mkdir -p "$WORKER_CAS/cas/${bigh:0:2}"
cp "$tf_tmp/big" "$WORKER_CAS/cas/${bigh:0:2}/$bigh"
mv "$tf_tmp/big" "$NGINX_CACHE/cas/$bigh"
echo "$bigh $((BIG_MIB * 1024 * 1024)) big.bin" >"$tf_tmp/big.manifest"
chmod -R a+r "$NGINX_CACHE"
find "$NGINX_CACHE/cas" "$WORKER_CAS/cas" -type f -exec cat {} + >/dev/null

# measure URL SCENARIO -> "wall rss requests" (median wall of RUNS runs; one
# unmeasured run first warms the JVM).
measure() {
  local url=$1 sc=$2 log=${3:-} out walls=() rss=0 reqs=0 before
  out=$(mktemp -d "$OUT_BASE/tf-bench-out.XXXXXX")
  "$TOPFETCH" fetch --remote_cache="$url" --output_dir="$out" --manifest="$tf_tmp/$sc.manifest" >/dev/null 2>&1 || true
  rm -rf "$out"
  for _ in $(seq "$RUNS"); do
    out=$(mktemp -d "$OUT_BASE/tf-bench-out.XXXXXX")
    nginx_sync
    before=$(wc -l <"${log:-$NGINX_LOG}")
    /usr/bin/time -o "$tf_tmp/time" -f "%e %M" "$TOPFETCH" fetch --remote_cache="$url" \
      --output_dir="$out" --manifest="$tf_tmp/$sc.manifest" --remote_max_connections=100 >"$tf_tmp/fetch.log" 2>&1 ||
      { cat "$tf_tmp/fetch.log" >&2; fail "fetch from $url failed"; }
    read -r w r <"$tf_tmp/time"
    walls+=("$w"); [ "$r" -gt "$rss" ] && rss=$r
    nginx_sync
    if [ -n "$log" ]; then
      reqs=$(tail -n +"$((before + 1))" "$log" | grep -c 'tf-worker: \(ByteStream.Read\|BatchReadBlobs\)' || true)
    else
      reqs=$(( $(wc -l <"$NGINX_LOG") - before ))
    fi
    rm -rf "$out"
  done
  echo "$(printf '%s\n' "${walls[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p") $rss $reqs"
}

printf '\nBazel remote worker (Bazel 4.2.3 sources, %s) vs nginx %s, loopback, outputs in %s, %s cores\n' \
  "$(java -version 2>&1 | head -1)" "$(nginx -v 2>&1 | sed 's/.*\///')" "$OUT_BASE" "$(nproc)"
printf '\n| scenario | path | wall s (median of %d) | rate MiB/s | topfetch peak RSS MiB | requests (nginx or worker) | grpc/http wall |\n' "$RUNS"
printf '|---|---|---|---|---|---|---|\n'
for sc in small big; do
  case " $SCENARIOS " in *" $sc "*) ;; *) continue ;; esac
  if [ $sc = small ]; then label="$SMALL_N x 4 KiB"; mib=$(python3 -c "print($SMALL_N*4096/1048576)"); else label="1 x $BIG_MIB MiB"; mib=$BIG_MIB; fi
  read -r gw gr gq < <(measure "$WORKER_URL" $sc "$WORKER_LOG")
  read -r bw br bq < <(measure "$BATCH_URL" $sc "$BATCH_LOG")
  read -r hw hr hq < <(measure "$NGINX_URL" $sc)
  python3 - "$label" "$mib" "$gw" "$gr" "$gq" "$hw" "$hr" "$hq" "$bw" "$br" "$bq" <<'PY'
import sys
label, mib, gw, gr, gq, hw, hr, hq, bw, br, bq = sys.argv[1:]
mib, gw, hw, bw = float(mib), float(gw), float(hw), float(bw)
rate = lambda w: mib / w if w > 0 else float("inf")
ratio = lambda w: f"{w/hw:.2f}" if hw else "nan"
print(f"| {label} | grpc:// from the worker as 4.2.3 (ByteStream.Read each) | {gw:.2f} | {rate(gw):.0f} | {int(gr)/1024:.1f} | {gq} at the worker | {ratio(gw)} |")
print(f"| {label} | grpc:// from the worker with BatchReadBlobs | {bw:.2f} | {rate(bw):.0f} | {int(br)/1024:.1f} | {bq} at the worker | {ratio(bw)} |")
print(f"| {label} | http:// from nginx | {hw:.2f} | {rate(hw):.0f} | {int(hr)/1024:.1f} | {hq} at nginx | |")
PY
done

case " $SCENARIOS " in *" tree "*) ;; *) exit 0 ;; esac
# (3) Real Bazel against the worker.
. "$here/tests/lib/bazel.sh"
bazel_setup "$here/bench/grpc/workspace"
sed -i "s/n = 20000/n = $TREE_N/" "$BZ_WS/pkg/BUILD"
flags=(--color=no --curses=no --remote_cache="$WORKER_URL")
echo "Bazel builds the $TREE_N-file tree artifact against the worker (uploads)..." >&2
bazel_run build "${flags[@]}" //pkg:many >"$tf_tmp/b1.log" 2>&1 || { cat "$tf_tmp/b1.log" >&2; fail "bazel build failed"; }
bazel_run clean >/dev/null 2>&1
t0=$(date +%s.%N)
bazel_run build "${flags[@]}" --remote_download_toplevel //pkg:many >"$tf_tmp/b2.log" 2>&1 ||
  { cat "$tf_tmp/b2.log" >&2; fail "bazel build (toplevel) failed"; }
bw=$(python3 -c "import time; print(round(time.time() - $t0, 2))")
grep -q "remote cache hit" "$tf_tmp/b2.log" || fail "Bazel's toplevel build was not a cache hit"
bazel_run clean >/dev/null 2>&1
bazel_run build "${flags[@]}" --remote_download_minimal --build_event_binary_file="$tf_tmp/bep.bin" //pkg:many \
  >"$tf_tmp/b3.log" 2>&1 || { cat "$tf_tmp/b3.log" >&2; fail "bazel build (minimal) failed"; }
bmw=$(grep -o "Elapsed time: [0-9.]*s" "$tf_tmp/b3.log" | grep -o "[0-9.]*" | head -1)
out=$(mktemp -d "$OUT_BASE/tf-bench-out.XXXXXX")
logged=$(wc -l <"$WORKER_LOG")
/usr/bin/time -o "$tf_tmp/time" -f "%e %M" "$TOPFETCH" collect --bep="$tf_tmp/bep.bin" --remote_cache="$WORKER_URL" \
  --output_dir="$out" >"$tf_tmp/collect.log" 2>&1 || { cat "$tf_tmp/collect.log" >&2; fail "collect failed"; }
read -r cw cr <"$tf_tmp/time"
cq=$(tail -n +"$((logged + 1))" "$WORKER_LOG" | grep -c 'tf-worker: \(ByteStream.Read\|BatchReadBlobs\)' || true)
n=$(find "$out" -type f | wc -l)
rm -rf "$out"
[ "$n" -eq "$TREE_N" ] || fail "collect wrote $n files, want $TREE_N"
python3 - "$TREE_N" "$bw" "$cw" "$cr" "${bmw:-?}" "$cq" <<'PY'
import sys
n, bw, cw, cr, bmw, cq = sys.argv[1:]
n, bw, cw = int(n), float(bw), float(cw)
mib = n * 4096 / 1048576
print(f"| tree of {n} x 4 KiB (Bazel build) | Bazel --remote_download_toplevel (clean build, 1 run) | {bw:.2f} | {mib/bw:.0f} | JVM (not measured) | (Bazel's own) | |")
print(f"| tree of {n} x 4 KiB (Bazel build) | topfetch collect of its minimal BEP (1 run; the minimal build itself: {bmw} s) | {cw:.2f} | {mib/cw:.0f} | {int(cr)/1024:.1f} | {cq} at the worker | {cw/bw:.2f} |")
PY
