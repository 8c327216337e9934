#!/usr/bin/env bash
# `topfetch proxy` as a long-running service, with real Bazel 4.2.3 and nginx:
#  1. One proxy, two builds one after another writing the same
#     --build_event_binary_file. The second builds //pkg:shared, whose action
#     Bazel ran in the first build and holds in memory (no cache request):
#     its file arrives from the metadata the first build recorded. Each build
#     has its own DIR/<uuid>.bin and .json.
#  2. A proxy started with --exit_after_build next to that stale BEP file
#     waits for the next build: Bazel succeeds through it, the proxy exits 0
#     and its gated BEP carries the new build's uuid.
#  3. Two builds at the same time from two copies of the workspace through
#     one proxy: both succeed; the followed one's artifacts arrive; the proxy
#     says once that the other's are not collected.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
. "$TF_SOURCE_ROOT/tests/interop/bazel_lib.sh"
nginx_start
ws=$(bazel_ws ws)
bin=bazel-out/k8-fastbuild/bin/pkg
bep="$tf_tmp/bep.bin"
lines() { nginx_sync; wc -l <"$NGINX_LOG"; }
since() { nginx_sync; tail -n +"$(($1 + 1))" "$NGINX_LOG"; }
uuid_of() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["started"]["uuid"])' "$1"; }
build() { # WS LOG ARGS...: bazel build through the proxy in minimal mode
  local w=$1 log=$2
  shift 2
  bz "$w" build --remote_cache="$PROXY_URL" --remote_download_minimal "$@" >"$tf_tmp/$log" 2>&1 \
    || { cat "$tf_tmp/$log" "$PROXY_LOG"; fail "bazel build ($log) failed"; }
}

# 1. The service: start once, build twice.
proxy_start service.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out" --bep_follow="$bep" \
  --build_event_dir="$tf_tmp/events"
build "$ws" bazel1.log --build_event_binary_file="$bep" --build_event_json_file="$tf_tmp/bep1.json" //pkg:left
u1=$(uuid_of "$tf_tmp/bep1.json")
wait_line "$PROXY_LOG" "^topfetch proxy: build $u1 ended" 60
wait_line "$PROXY_LOG" "^topfetch: 1 of 1 file in place" 5
[ -f "$tf_tmp/out/$bin/left.txt" ] || fail "build 1: left.txt did not arrive"
[ -s "$tf_tmp/events/$u1.bin" ] && [ -s "$tf_tmp/events/$u1.json" ] || fail "build 1: no events/$u1.bin/.json"
tail -n 1 "$tf_tmp/events/$u1.json" | grep -q '"lastMessage":true' || fail "build 1: its gated BEP has no last message"
l2=$(lines)
build "$ws" bazel2.log --build_event_binary_file="$bep" --build_event_json_file="$tf_tmp/bep2.json" //pkg:shared
u2=$(uuid_of "$tf_tmp/bep2.json")
[ "$u1" != "$u2" ] || fail "both builds have uuid $u1"
wait_line "$PROXY_LOG" "^topfetch proxy: build $u2 ended" 60
! since "$l2" | grep -q '/ac/' || fail "build 2 asked the action cache: $(since "$l2" | grep /ac/)"
! grep -qE 'process(es)?:.*(remote cache hit|sandbox)' "$tf_tmp/bazel2.log" || fail "build 2 ran an action: $(grep process "$tf_tmp/bazel2.log")"
[ -f "$tf_tmp/out/$bin/shared.txt" ] || { cat "$PROXY_LOG"; fail "build 2: shared.txt did not arrive"; }
cmp -s "$tf_tmp/out/$bin/shared.txt" "$(bz "$ws" info bazel-bin 2>/dev/null)/pkg/shared.txt" \
  || fail "build 2: shared.txt differs from Bazel's"
[ -s "$tf_tmp/events/$u2.bin" ] && [ -s "$tf_tmp/events/$u2.json" ] || fail "build 2: no events/$u2.bin/.json"
grep -q '"success":true' "$tf_tmp/events/$u2.json" || fail "build 2: no successful target in its gated BEP"
! grep -q 'another build' "$PROXY_LOG" || fail "a followed build was taken for another one: $(cat "$PROXY_LOG")"
proxy_stop
[ "$proxy_rc" -eq 0 ] || { cat "$PROXY_LOG"; fail "service proxy: exit $proxy_rc"; }
echo "1. two builds through one proxy: ok"

# 2. --exit_after_build next to a stale BEP file (build 2's).
proxy_start oneshot.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out3" --bep_follow="$bep" \
  --exit_after_build --build_event_json_file="$tf_tmp/gated3.json"
bz "$ws" clean >/dev/null 2>&1
build "$ws" bazel3.log --build_event_binary_file="$bep" --build_event_json_file="$tf_tmp/bep3.json" //pkg:right
proxy_wait
[ "$proxy_rc" -eq 0 ] || { cat "$PROXY_LOG"; fail "one-shot proxy: exit $proxy_rc"; }
u3=$(uuid_of "$tf_tmp/bep3.json")
[ "$(uuid_of "$tf_tmp/gated3.json")" = "$u3" ] || fail "the gated BEP is not build 3's ($u3)"
[ -f "$tf_tmp/out3/$bin/right.txt" ] || fail "build 3: right.txt did not arrive"
echo "2. --exit_after_build next to a stale BEP: ok"

# 3. Two builds at the same time: ws2 (not followed, with a slow action so
# that it is still running) starts first, then ws (followed).
ws2=$(bazel_ws ws2)
cat >>"$ws2/pkg/BUILD" <<'B'
genrule(
    name = "slow",
    outs = ["slow.txt"],
    cmd = "sleep 8; echo slow > $@",
)
B
proxy_start concurrent.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out4" --bep_follow="$bep"
bz "$ws2" build --remote_cache="$PROXY_URL" --remote_download_minimal --build_event_binary_file="$tf_tmp/other.bin" \
  //pkg:slow //pkg:big >"$tf_tmp/bazel_other.log" 2>&1 &
other=$!
tf_track "$other"
wait_line "$PROXY_LOG" "another build uses this proxy" 120
bz "$ws" clean >/dev/null 2>&1
build "$ws" bazel4.log --build_event_binary_file="$bep" --build_event_json_file="$tf_tmp/bep4.json" //pkg:multi
set +e
wait "$other"
other_rc=$?
set -e
[ "$other_rc" -eq 0 ] || { cat "$tf_tmp/bazel_other.log"; fail "the other build failed (exit $other_rc)"; }
u4=$(uuid_of "$tf_tmp/bep4.json")
wait_line "$PROXY_LOG" "^topfetch proxy: build $u4 ended" 60
for f in multi/copy.txt multi/two.txt multi/zeros.bin; do
  [ -f "$tf_tmp/out4/$bin/$f" ] || fail "build 4: $f did not arrive"
done
[ ! -e "$tf_tmp/out4/$bin/slow.txt" ] && [ ! -e "$tf_tmp/out4/$bin/big.dat" ] || fail "the other build's files were collected"
[ "$(grep -c 'another build uses this proxy' "$PROXY_LOG")" -eq 1 ] || fail "not said exactly once: $(cat "$PROXY_LOG")"
grep -q 'artifacts are not collected' "$PROXY_LOG" || fail "the proxy did not say the artifacts are not collected"
proxy_stop
[ "$proxy_rc" -eq 0 ] || { cat "$PROXY_LOG"; fail "concurrent proxy: exit $proxy_rc"; }
echo "3. two builds at the same time: ok"
echo "proxy_service: ok"
