#!/usr/bin/env bash
# --bes_idle_timeout: a BES invocation whose client stops mid-stream (its
# stream closes after event 20 of a real Bazel 4.2.3 BEP, never finished, no
# retry) is ended once it was idle that long: a log line says so, its session
# ends with what came (the gated BEP in --build_event_dir holds those 20
# events once, no last_message), a later event of it is refused
# (FAILED_PRECONDITION), and another invocation streamed meanwhile ends
# normally. The proxy's exit code says an input was incomplete (3). Every
# gated event of both invocations went to the PUB socket too, each message
# named by its invocation: a subscriber of the complete one gets its stream
# from BuildStarted to last_message. So does a subscriber of a build the
# proxy follows as a BEP file (--bep_follow), named by its BuildStarted uuid.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
. "$TF_SOURCE_ROOT/tests/gsrv/lib.sh"
fx="${TF_FIXTURES:?}/run2_minimal_hits"
nginx_start
ev="$tf_tmp/events"
pub="ipc://$tf_tmp/bep.ipc"
bep="$tf_tmp/bep.bin"
gsrv_start p.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out" --build_event_dir="$ev" \
  --bes_idle_timeout=2s --build_event_publish="$pub" --bep_follow="$bep"
cut=0f0e0d0c-idle-4d1e-8c0b-000000000001
whole=$(bep_uuid "$fx/bep.json")
followed=44444444-4444-4444-8444-444444444444
"$TF_SUBSCRIBER" "$pub" "$tf_tmp/out" 120 "$whole" >"$tf_tmp/sub.out" 2>&1 &
sub=$!
tf_track "$sub"
"$TF_SUBSCRIBER" "$pub" "$tf_tmp/out" 120 "$followed" >"$tf_tmp/subf.out" 2>&1 &
subf=$!
tf_track "$subf"
wait_line "$tf_tmp/sub.out" "^connected" 30
wait_line "$tf_tmp/subf.out" "^connected" 30
# The followed build: the fixture's BEP under another uuid, written at once.
python3 - "$fx/bep.bin" "$whole" "$followed" "$tf_tmp/f.bin" <<'PY'
import sys
open(sys.argv[4], "wb").write(open(sys.argv[1], "rb").read().replace(sys.argv[2].encode(), sys.argv[3].encode()))
PY
mv "$tf_tmp/f.bin" "$bep"
wait_line "$PROXY_LOG" "^topfetch proxy: build $followed ended" 60
mkdir "$tf_tmp/b"

# The client stops after event 20: the stream ends without component_stream_finished.
gcall s1 $BES/PublishBuildToolEventStream $(python3 "$msgs" bes "$fx/bep.bin" "$cut" 1 20 "$tf_tmp/b/c")
want_status "the stream that stops" 0
wait_line "$PROXY_LOG" "invocation $cut: its event stream broke after event 20" 30
# Meanwhile another invocation streams all of its events.
gcall s2 $BES/PublishBuildToolEventStream $(python3 "$msgs" bes "$fx/bep.bin" "$whole" 1 46 "$tf_tmp/b/w")
want_status "the whole stream" 0
wait_line "$PROXY_LOG" "^topfetch proxy: invocation $cut: no event for 2 s \(--bes_idle_timeout\) and its stream never finished: ending its session with what completed" 60
wait_line "$PROXY_LOG" "^topfetch proxy: build $cut ended" 60
wait_line "$PROXY_LOG" "^topfetch proxy: build $whole ended" 60
python3 - "$ev/$cut.json" "$fx/bep.json" <<'PY' || { cat "$PROXY_LOG"; fail "the gated BEP of the idle invocation"; }
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1])]
theirs = [json.loads(l) for l in open(sys.argv[2])][:20]
ids = [json.dumps(e["id"], sort_keys=True) for e in ours]
assert len(ids) == len(set(ids)) == 20, (len(ids), len(set(ids)))
assert sorted(ids) == sorted(json.dumps(e["id"], sort_keys=True) for e in theirs)
assert not any(e.get("lastMessage") for e in ours), "last_message in a stream that never finished"
PY
python3 - "$ev/$whole.json" <<'PY' || fail "the gated BEP of the whole invocation"
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1])]
assert len(ours) == 45 and ours[-1].get("lastMessage"), len(ours)
PY
# The client comes back: its invocation's session is over.
gcall s3 $BES/PublishBuildToolEventStream $(python3 "$msgs" bes "$fx/bep.bin" "$cut" 21 46 "$tf_tmp/b/c")
want_status "an event after the idle cut" 9
assert_contains "$gmsg" "--bes_idle_timeout" "the refusal"
wait "$sub" || { cat "$tf_tmp/sub.out"; fail "the subscriber of the whole invocation"; }
grep -q "^subscriber: " "$tf_tmp/sub.out" || fail "subscriber: $(cat "$tf_tmp/sub.out")"
wait "$subf" || { cat "$tf_tmp/subf.out"; fail "the subscriber of the followed build"; }
grep -q "^subscriber: " "$tf_tmp/subf.out" || fail "subscriber: $(cat "$tf_tmp/subf.out")"
proxy_stop
[ "$proxy_rc" -eq 3 ] || { cat "$PROXY_LOG"; fail "proxy exit $proxy_rc, want 3 (an invocation ended incomplete)"; }
cat "$PROXY_LOG"
echo "gsrv_bes_idle: ok"
