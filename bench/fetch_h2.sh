#!/usr/bin/env bash
# Benchmark: topfetch fetch over HTTP/2 against curl --parallel over HTTP/2 and
# against topfetch's own HTTP/1.1, on the same blobs from one loopback nginx
# (1 worker) in the same run:
#   (1) 20,000 blobs of 4 KiB (SMALL_N)     (2) one blob of 1 GiB (BIG_MIB)
# over cleartext HTTP/2 with prior knowledge (h2c: topfetch
# --remote_http_version=2-prior-knowledge, curl --http2-prior-knowledge) and
# over TLS with ALPN h2 (topfetch's default, curl --http2 --cacert), and
# topfetch --remote_http_version=1.1 on a cleartext and on the TLS port.
# Every tool runs once per round, in turn (alternating); RUNS rounds. One
# table: median wall time, median CPU (user+sys), peak RSS, requests and
# connections nginx logged per run, and the ratios topfetch/curl (same
# transport) and HTTP/2 / HTTP/1.1 (topfetch, same transport). curl only
# writes; topfetch also verifies SHA-256 and renames atomically.
# Usage: bench/fetch_h2.sh [build-dir]   (env: RUNS=5 SMALL_N=20000 BIG_MIB=1024
#        OUT_BASE=/dev/shm SCENARIOS="small big")
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
export TOPFETCH=$build/cli/topfetch TF_SOURCE_ROOT=$here
[ -x "$TOPFETCH" ] || { echo "build first: scripts/build.sh" >&2; exit 2; }
RUNS=${RUNS:-5} SMALL_N=${SMALL_N:-20000} BIG_MIB=${BIG_MIB:-1024}
SCENARIOS=${SCENARIOS:-small big}
# tmpfs by default, as fetch_vs_curl.sh: the disk's inode allocation after
# deleting 20,000 files would be measured, not the tools.
OUT_BASE=${OUT_BASE:-/dev/shm}
. "$here/tests/lib/harness.sh"
need curl
need openssl
[ -x /usr/bin/time ] || fail "GNU time is missing: apt-get install time"
nginx -V 2>&1 | grep -q http_v2_module || fail "this nginx has no http_v2_module"
make_pki
# Three doors on one server and one cache: h2c (prior knowledge), TLS with
# ALPN h2, cleartext HTTP/1.1.
tls_port=$(free_port)
h1_port=$(free_port)
nginx_start "" "http2" "listen 127.0.0.1:$tls_port ssl http2; listen 127.0.0.1:$h1_port;
    ssl_certificate $pki/srv.pem; ssl_certificate_key $pki/srv.key;"
H2C_URL=$NGINX_URL TLS_URL=https://127.0.0.1:$tls_port H1_URL=http://127.0.0.1:$h1_port

echo "preparing $SMALL_N x 4 KiB blobs and one $BIG_MIB MiB blob..." >&2
python3 "$here/bench/make_blobs.py" "$NGINX_CACHE/cas" "$tf_tmp/small" "$SMALL_N" 4096
head -c $((BIG_MIB * 1024 * 1024)) /dev/urandom >"$tf_tmp/big"
bigh=$(sha256sum "$tf_tmp/big" | cut -d' ' -f1)
mv "$tf_tmp/big" "$NGINX_CACHE/cas/$bigh"
echo "$bigh $((BIG_MIB * 1024 * 1024)) big.bin" >"$tf_tmp/big.manifest"
printf 'url = "BASE/cas/%s"\noutput = "OUT/big.bin"\n' "$bigh" >"$tf_tmp/big.curl"
chmod -R a+r "$NGINX_CACHE"
# Warm the page cache so that every tool reads nginx's files from memory.
find "$NGINX_CACHE/cas" -type f -exec cat {} + >/dev/null

# The rows: name, transport, command kind.
tools=(tf_h2c curl_h2c tf_h1 tf_tls curl_tls tf_tls_h1)

# run1 TOOL SCENARIO: one run; appends "wall cpu rss requests connections exit"
# to $tf_tmp/res.TOOL.SCENARIO.
run1() {
  local tool=$1 sc=$2 out before rc=0 base tf=() cu=()
  out=$(mktemp -d "$OUT_BASE/tf-bench-out.XXXXXX")
  before=$(wc -l <"$NGINX_LOG")
  case $tool in
    tf_h2c) tf=(--remote_cache="$H2C_URL" --remote_http_version=2-prior-knowledge) ;;
    tf_h1) tf=(--remote_cache="$H1_URL" --remote_http_version=1.1) ;;
    tf_tls) tf=(--remote_cache="$TLS_URL" --tls_certificate="$pki/ca.pem") ;;
    tf_tls_h1) tf=(--remote_cache="$TLS_URL" --tls_certificate="$pki/ca.pem" --remote_http_version=1.1) ;;
    curl_h2c) base=$H2C_URL; cu=(--http2-prior-knowledge) ;;
    curl_tls) base=$TLS_URL; cu=(--http2 --cacert "$pki/ca.pem") ;;
  esac
  if [ ${#tf[@]} -gt 0 ]; then
    /usr/bin/time -o "$tf_tmp/time" -f "%e %U %S %M" "$TOPFETCH" fetch --quiet "${tf[@]}" \
      --output_dir="$out" --manifest="$tf_tmp/$sc.manifest" --remote_max_connections=100 >/dev/null 2>"$tf_tmp/err" || rc=$?
  else
    sed "s|BASE/|$base/|; s|OUT/|$out/|" "$tf_tmp/$sc.curl" >"$tf_tmp/curl.cfg"
    /usr/bin/time -o "$tf_tmp/time" -f "%e %U %S %M" curl --no-progress-meter --fail --parallel \
      --parallel-max 100 "${cu[@]}" --create-dirs -K "$tf_tmp/curl.cfg" 2>"$tf_tmp/err" || rc=$?
  fi
  [ "$rc" -eq 0 ] || echo "$tool $sc: exit $rc: $(grep -v '^ *$' "$tf_tmp/err" | sort | uniq -c | sort -rn | head -2)" >&2
  nginx_sync
  read -r w u s r < <(tail -1 "$tf_tmp/time")
  echo "$w $(python3 -c "print($u+$s)") $r $(tail -n +"$((before + 1))" "$NGINX_LOG" | grep -c '^GET ') \
$(tail -n +"$((before + 1))" "$NGINX_LOG" | grep '^GET ' | grep -o 'conn=[0-9]*' | sort -u | wc -l) $rc" \
    >>"$tf_tmp/res.$tool.$sc"
  rm -rf "$out"
}

printf '\nnginx %s (1 worker, loopback, keepalive_requests 100000), libcurl %s, outputs in %s, %s cores, load %s\n' \
  "$(nginx -v 2>&1 | sed 's/.*\///')" "$(curl --version | head -1 | cut -d' ' -f2)" "$OUT_BASE" "$(nproc)" \
  "$(cut -d' ' -f1-3 /proc/loadavg)"
for sc in $SCENARIOS; do
  for i in $(seq "$RUNS"); do
    echo "$sc: round $i of $RUNS" >&2
    for t in "${tools[@]}"; do run1 "$t" "$sc"; done
  done
done

printf '\n| scenario | transport | tool | wall s (median of %d) | CPU s | peak RSS MiB | requests | connections | vs curl | HTTP/2 vs own 1.1 |\n' "$RUNS"
printf '|---|---|---|---|---|---|---|---|---|---|\n'
python3 - "$tf_tmp" "$SMALL_N" "$BIG_MIB" $SCENARIOS <<'PY'
import statistics, sys
tmp, small_n, big_mib, scs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
rows = [("tf_h2c", "h2c", "topfetch 2-prior-knowledge"),
        ("curl_h2c", "h2c", "curl --http2-prior-knowledge"),
        ("tf_h1", "cleartext", "topfetch 1.1"),
        ("tf_tls", "TLS", "topfetch 2 (ALPN h2)"),
        ("curl_tls", "TLS", "curl --http2"),
        ("tf_tls_h1", "TLS", "topfetch 1.1")]
peer = {"tf_h2c": "curl_h2c", "tf_tls": "curl_tls"}
own11 = {"tf_h2c": "tf_h1", "tf_tls": "tf_tls_h1"}
for sc in scs:
    label = f"{small_n} x 4 KiB" if sc == "small" else f"1 x {big_mib} MiB"
    res = {}
    for key, _, _ in rows:
        runs = [l.split() for l in open(f"{tmp}/res.{key}.{sc}")]
        ok = [r for r in runs if r[5] == "0"]
        if not ok:
            res[key] = None
            continue
        res[key] = dict(wall=statistics.median(float(r[0]) for r in ok),
                        cpu=statistics.median(float(r[1]) for r in ok),
                        rss=max(int(r[2]) for r in ok) / 1024,
                        req=statistics.median(int(r[3]) for r in ok),
                        conn=statistics.median(int(r[4]) for r in ok),
                        failed=len(runs) - len(ok), n=len(runs),
                        exit=next((r[5] for r in runs if r[5] != "0"), "0"))
    for key, transport, name in rows:
        r = res[key]
        if r is None:
            runs = [l.split() for l in open(f"{tmp}/res.{key}.{sc}")]
            print(f"| {label} | {transport} | {name} | failed (exit {runs[0][5]}, every run) | | | | | | |")
            continue
        vs = lambda other: f"{r['wall'] / res[other]['wall']:.2f}" if other and res.get(other) else "n/a"
        note = f" ({r['failed']} of {r['n']} runs failed, exit {r['exit']})" if r["failed"] else ""
        print(f"| {label} | {transport} | {name} | {r['wall']:.2f}{note} | {r['cpu']:.2f} | {r['rss']:.1f} "
              f"| {r['req']:.0f} | {r['conn']:.0f} | {vs(peer.get(key)) if key in peer else ''} "
              f"| {vs(own11.get(key)) if key in own11 else ''} |")
PY
if grep -qv ' 0$' "$tf_tmp"/res.curl_h2c.* 2>/dev/null; then
  printf '\ncurl --parallel --http2-prior-knowledge failed: libcurl before 8.0.0 breaks a transfer that\n'
  printf 'reuses a cleartext HTTP/2 connection made with prior knowledge (curl pull request 10643).\n'
fi
printf '\nload after: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
