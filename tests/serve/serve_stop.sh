#!/usr/bin/env bash
# Stopping the service with a build open, against an nginx that sends
# big.dat (5 MB) slowly. SIGTERM: the build is finished first (its fetch
# completes, the event stream ends with BuildFinished INTERRUPTED and
# last_message), then exit 8. A BuildFinished waiting for its fetches when
# SIGINT comes still gets its reply. A second signal stops at once and
# leaves no partial file at a final path.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/serve/lib.sh"
fx="${TF_FIXTURES:?}"
[ -f "$fx/cache.tar.gz" ] || fail "fixtures missing at $fx"
nginx_start "limit_rate 2m;"
tar -xzf "$fx/cache.tar.gz" -C "$NGINX_CACHE"
chmod -R a+rX "$NGINX_CACHE"
bin=bazel-out/k8-fastbuild/bin/pkg
big=01ab038e04910e5e862d69473ac6c00048530e261c0d77bec7393e5138735dfe
key=4eef905a5fc5c4a60bbe4f07d91acd9aeec07b30cd82f2fd232b142113ec2cfb
listen="ipc://$tf_tmp/sock/serve.sock"

# start_build N: a service writing to out$N, with build 1 open and big.dat
# being fetched.
start_build() {
  serve_start "$tf_tmp/serve$1.log" --listen="$listen" --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out$1" \
    --build_event_json_file="$tf_tmp/bep$1.json"
  for req in "start" "action $key $NGINX_CACHE/ac/$key" "target //pkg:big $bin/big.dat"; do
    probe "$listen" $req
    assert_contains "$probe" "ok build=1" "reply to $req"
  done
}

# ---- SIGTERM with a build open ------------------------------------------------------------
start_build 1
t0=$(date +%s%N)
serve_stop TERM 8
cat "$tf_tmp/serve1.log"
[ $(( ($(date +%s%N) - t0) / 1000000 )) -ge 500 ] || fail "stopped too fast to have waited for the slow fetch"
log=$(cat "$tf_tmp/serve1.log")
assert_contains "$log" "stopping; finishing the open build first"
assert_contains "$log" "build 1 ended because the service stopped (exit code 8)"
assert_contains "$log" "topfetch: INTERRUPTED: 1 of 1 file in place (1 fetched"
assert_contains "$log" "topfetch: 1 of 1 target complete"
assert_contains "$log" "stopped (SIGTERM)"
[ "$(sha256sum "$tf_tmp/out1/$bin/big.dat" | cut -d' ' -f1)" = "$big" ] || fail "big.dat incomplete after the stop"
python3 - "$tf_tmp/bep1.json" <<'PY' || fail "BEP check failed"
import json, sys
events = [json.loads(l) for l in open(sys.argv[1])]
kinds = [k for e in events for k in e if k not in ("id", "children", "lastMessage")]
assert kinds[-1] == "buildToolLogs" and events[-1].get("lastMessage") is True, kinds
fin = [e["finished"] for e in events if "finished" in e]
assert fin and fin[0]["exitCode"] == {"name": "INTERRUPTED", "code": 8}, fin
done = [e["completed"] for e in events if "completed" in e]
assert len(done) == 1 and done[0]["success"] is True, done
assert kinds.index("completed") < kinds.index("finished"), kinds
print("BEP ok")
PY

# ---- SIGINT while a BuildFinished waits: it still gets its reply ------------------------------
start_build 2
"$TF_PROBE" "$listen" finish 0 >"$tf_tmp/finish.log" 2>&1 &
probe_pid=$!
tf_track "$probe_pid"
# While a BuildFinished waits for its fetches the service takes no other
# request: once a Status goes unanswered, the BuildFinished has arrived
# (big.dat takes about 2.5 s at 2 MB/s).
finishing() {
  local r
  r=$(TF_PROBE_TIMEOUT_MS=1000 "$TF_PROBE" "$listen" status 2>&1) && return 1
  case "$r" in "no reply: "*) return 0 ;; *) fail "serve_probe status: $r" ;; esac
}
wait_for 30 "the service never began to wait for the BuildFinished" finishing
serve_stop INT 8
set +e; wait "$probe_pid"; prc=$?; set -e
cat "$tf_tmp/serve2.log" "$tf_tmp/finish.log"
sanitizer_check "$tf_tmp/finish.log"
[ "$prc" -eq 0 ] || fail "the waiting BuildFinished got no reply"
assert_contains "$(cat "$tf_tmp/finish.log")" "ok build=1" "BuildFinished reply"
assert_contains "$(cat "$tf_tmp/finish.log")" "stats: targets=1 targets_failed=0 fetched=1 lost=0" "BuildFinished reply"
assert_contains "$(cat "$tf_tmp/serve2.log")" "build 1 finished (exit code 0)"
grep -q '"name":"SUCCESS"' "$tf_tmp/bep2.json" || fail "the client's exit code is not in the stream"

# ---- a second signal stops at once ---------------------------------------------------------------
start_build 3
kill -TERM "$serve_pid"
wait_line "$tf_tmp/serve3.log" "finishing the open build" 30
kill -TERM "$serve_pid"
set +e; wait "$serve_pid"; rc=$?; set -e
serve_pid=""
[ "$rc" -eq 143 ] || fail "serve exit $rc after a second SIGTERM (want 143: killed by it)"
f="$tf_tmp/out3/$bin/big.dat"
[ ! -e "$f" ] || [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$big" ] || fail "a partial big.dat at its final path"
echo "serve_stop: ok"
