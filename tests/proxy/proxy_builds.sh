#!/usr/bin/env bash
# Builds one after another in one followed BEP file, replayed from the Bazel
# 4.2.3 fixture with new uuids (no Bazel needed; tests/interop has the real
# thing):
#  1. A service proxy: a build whose BEP breaks off in garbage ends that
#     build with an error naming it, and the proxy goes on; the next build
#     (the file replaced, another uuid) is a session of its own with its
#     DIR/<uuid>.bin and .json and its summary.
#  2. --exit_after_build next to a file holding an earlier build (started
#     before the proxy): not taken; the proxy waits, takes the build that
#     replaces the file and exits at its end with that build's BEP.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
fx="${TF_FIXTURES:?}"
src="$fx/run2_minimal_hits/bep.bin"
old=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["started"]["uuid"])' \
  "$fx/run2_minimal_hits/bep.json")
nginx_start
bep="$tf_tmp/bep.bin"
# with_uuid UUID OUT [N]: the fixture's BEP as another build (same length
# uuid); with N, its first N records and then bytes that are no record.
with_uuid() {
  python3 - "$src" "$old" "$1" "$2" "${3:-0}" <<'PY'
import sys
data = open(sys.argv[1], "rb").read().replace(sys.argv[2].encode(), sys.argv[3].encode())
if int(sys.argv[5]):
    off = 0
    for _ in range(int(sys.argv[5])):  # varint length prefix, then the record
        n = shift = 0
        while True:
            b = data[off]; off += 1; n |= (b & 0x7F) << shift; shift += 7
            if b < 0x80: break
        off += n
    data = data[:off] + b"\xff" * 6
open(sys.argv[4], "wb").write(data)
PY
}
u1=11111111-1111-4111-8111-111111111111
u2=22222222-2222-4222-8222-222222222222
u3=33333333-3333-4333-8333-333333333333

# 1.
proxy_start p1.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out1" --bep_follow="$bep" \
  --build_event_dir="$tf_tmp/events"
with_uuid "$u1" "$tf_tmp/b1.bin" 12
mv "$tf_tmp/b1.bin" "$bep"
wait_line "$PROXY_LOG" "^topfetch proxy: build $u1 ended" 30
wait_line "$PROXY_LOG" "the BEP of build $u1 cannot be read further" 10
kill -0 "$PROXY_PID" || fail "the proxy exited after a broken build"
with_uuid "$u2" "$tf_tmp/b2.bin"
mv "$tf_tmp/b2.bin" "$bep"
wait_line "$PROXY_LOG" "^topfetch proxy: build $u2 ended" 30
[ -s "$tf_tmp/events/$u2.bin" ] && [ -s "$tf_tmp/events/$u2.json" ] || fail "no events/$u2.bin and .json"
tail -n 1 "$tf_tmp/events/$u2.json" | grep -q '"lastMessage":true' || fail "build 2's BEP has no last message"
head -n 1 "$tf_tmp/events/$u2.json" | grep -q "$u2" || fail "build 2's BEP is not build 2's"
[ "$(grep -c '^topfetch: .* files in place' "$PROXY_LOG")" -eq 2 ] || fail "not one summary per build: $(cat "$PROXY_LOG")"
proxy_stop
[ "$proxy_rc" -ne 0 ] || fail "a service whose builds failed exited 0"
echo "1. builds one after another: ok"

# 2. The file holds build 2 (an earlier build, by its start time).
proxy_start p2.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out2" --bep_follow="$bep" \
  --exit_after_build --build_event_json_file="$tf_tmp/gated3.json"
wait_line "$PROXY_LOG" "holds build $u2, which started before we did: not followed; waiting for the next build" 10
kill -0 "$PROXY_PID" 2>/dev/null || { cat "$PROXY_LOG"; fail "the proxy took the earlier build and exited"; }
! grep -q "$u2" "$tf_tmp/gated3.json" || fail "the earlier build was taken"
[ "$(grep -c 'not followed' "$PROXY_LOG")" -eq 1 ] || fail "the note was not said once: $(cat "$PROXY_LOG")"
with_uuid "$u3" "$tf_tmp/b3.bin"
mv "$tf_tmp/b3.bin" "$bep"
proxy_wait
[ "$proxy_rc" -eq 1 ] || { cat "$PROXY_LOG"; fail "exit $proxy_rc, want 1 (the fixture's //pkg:tool has no digest)"; }
head -n 1 "$tf_tmp/gated3.json" | grep -q "$u3" || fail "the gated BEP is not the new build's"
echo "2. a stale BEP file: ok"
echo "proxy_builds: ok"
