#!/usr/bin/env bash
# topfetch proxy with a gRPC upstream (HTTP front, Bazel's own remote worker
# behind it over grpc://, through a counting relay), serving real Bazel 4.2.3:
#  1. a build through the proxy fills the worker (ByteStream.Write,
#     UpdateActionResult; each ActionResult checked by FindMissingBlobs);
#  2. after bazel clean, the same build is served from the worker: every
#     action a remote cache hit, every output byte-identical to build 1's,
#     and the worker sent the bytes (GetActionResult, ByteStream.Read with
#     the sizes the proxy learnt from ActionResults, Trees and uploads);
#  3. a GET of a blob the proxy never saw named: a miss (404), saying why.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/lib/reapi_worker.sh"
. "$TF_SOURCE_ROOT/tests/grpc/relay.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
. "$TF_SOURCE_ROOT/tests/lib/bazel.sh"
reapi_worker_start
relay_start up
bazel_setup "${TF_FIXTURES:?}/workspace"
trap 'bazel_stop; proxy_cleanup' EXIT
targets=(//pkg:combined //pkg:multi //pkg:exe //pkg:big //pkg:treeart)
files=(combined.txt multi/one.txt multi/two.txt multi/three.bin hello.sh big.dat treeart_dir/a.txt
  treeart_dir/sub/b.txt treeart_dir/copy_of_input.txt treeart_dir/sub/empty.txt)
proxy_start proxy.log --remote_cache="$RELAY_URL" --output_dir="$tf_tmp/out"

# 1.
bazel_run build --color=no --curses=no --remote_cache="$PROXY_URL" "${targets[@]}" >"$tf_tmp/b1.log" 2>&1 ||
  { cat "$tf_tmp/b1.log" "$PROXY_LOG"; fail "bazel build 1 through the proxy failed"; }
bin=$(bazel_run info --color=no bazel-bin 2>/dev/null)
mkdir -p "$tf_tmp/ref"
for p in "${files[@]}"; do
  mkdir -p "$(dirname "$tf_tmp/ref/$p")"
  cp "$bin/pkg/$p" "$tf_tmp/ref/$p" || fail "build 1 made no pkg/$p"
done
big=$(sha256sum <"$tf_tmp/ref/big.dat" | cut -c1-64)
[ -f "$WORKER_CAS/cas/${big:0:2}/$big" ] || fail "big.dat did not reach the worker's CAS"
[ -n "$(find "$WORKER_CAS/ac" -type f 2>/dev/null | head -1)" ] || fail "no ActionResult reached the worker"
cmp -s "$tf_tmp/ref/big.dat" "$WORKER_CAS/cas/${big:0:2}/$big" || fail "the worker holds other bytes for big.dat"

# 2.
bazel_run clean >/dev/null 2>&1
before=$(relay_total up)
bazel_run build --color=no --curses=no --remote_cache="$PROXY_URL" "${targets[@]}" >"$tf_tmp/b2.log" 2>&1 ||
  { cat "$tf_tmp/b2.log" "$PROXY_LOG"; fail "bazel build 2 through the proxy failed"; }
grep 'processes:' "$tf_tmp/b2.log" || true
grep -q 'processes: .*remote cache hit' "$tf_tmp/b2.log" || fail "build 2 was not served from the cache"
! grep -q 'processes: .*[0-9] \(processwrapper-sandbox\|linux-sandbox\|local\)' "$tf_tmp/b2.log" ||
  fail "build 2 ran actions instead of taking them from the cache"
for p in "${files[@]}"; do
  cmp -s "$bin/pkg/$p" "$tf_tmp/ref/$p" || fail "pkg/$p of build 2 differs from build 1's"
done
[ -x "$bin/pkg/hello.sh" ] || fail "hello.sh is not executable after build 2"
read_bytes=$(( $(relay_total up) - before ))
[ "$read_bytes" -gt 5000000 ] || fail "the worker sent only $read_bytes bytes for build 2 (big.dat alone is 5 MB)"
echo "build 2: ${#files[@]} files identical, $read_bytes bytes from the worker"

# 3.
absent=$(echo "never named" | sha256sum | cut -c1-64)
req GET "$PROXY_URL/cas/$absent"
[ "$code" = 404 ] || fail "GET of a blob of unknown size: HTTP $code (want 404)"
proxy_stop
[ "$proxy_rc" -eq 0 ] || { cat "$PROXY_LOG"; fail "proxy exit $proxy_rc"; }
# The proxy's requests figures: from "topfetch: N requests (" to the ")" that
# ends them, however the summary wraps them.
summary=$(sed -n '/^topfetch: [0-9]* requests (/,/)/p' "$PROXY_LOG" | tr '\n' ' ' | tr -s ' ')
echo "$summary"
assert_contains "$summary" " 0 upstream errors" "the proxy's summary"
case "$summary" in *"(0 AC hits"*) fail "no AC hits: $summary" ;; esac
echo "grpc_proxy: ok"
