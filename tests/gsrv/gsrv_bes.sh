#!/usr/bin/env bash
# Bazel's Build Event Service pointed at topfetch proxy: real Bazel 4.2.3
# with --bes_backend=grpc://<topfetch> (no --bep_follow, no BEP file) and
# --remote_cache=grpc://<topfetch> (nginx upstream), two workspaces building
# at the same time. Each invocation is a session of its own: its gated BEP in
# --build_event_dir as <invocation id>.bin and .json, complete (last_message),
# every TargetComplete successful, every record decodable with Bazel's own
# schema, and both builds' top-level files in --output_dir. Both invocations
# publish on the proxy's one PUB socket: a subscriber per invocation,
# subscribed to "<invocation id> ", gets that build's events only, its
# TargetCompletes in the gated order, each with its files already in place.
# Each invocation's session records only its own build's ActionResults (the
# cache calls' RequestMetadata names the invocation). Then a build whose
# BES connection is cut mid-stream: Bazel retries, every event is taken once.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
. "$TF_SOURCE_ROOT/tests/gsrv/lib.sh"
. "$TF_SOURCE_ROOT/tests/interop/bazel_lib.sh"
S=/usr/src/bazel-bootstrap
nginx_start
ws1=$(bazel_ws ws1)
ws2=$(bazel_ws ws2)
t1=(//pkg:left //pkg:right //pkg:multi)
t2=(//pkg:exe //pkg:big //pkg:tree)
bin=bazel-out/k8-fastbuild/bin/pkg
top="left.txt right.txt multi/copy.txt multi/two.txt multi/zeros.bin hello.sh big.dat tree_dir/a.txt
tree_dir/copy.txt tree_dir/sub/b.txt tree_dir/sub/run.sh tree_dir/sub/empty.txt"
ev="$tf_tmp/events"

pub="ipc://$tf_tmp/bep.ipc"
gsrv_start bes.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out" --build_event_dir="$ev" \
  --build_event_publish="$pub"
id1=$(python3 -c 'import uuid; print(uuid.uuid4())')
id2=$(python3 -c 'import uuid; print(uuid.uuid4())')
for b in 1 2; do
  id=id$b
  "$TF_SUBSCRIBER" "$pub" "$tf_tmp/out" 300 "${!id}" >"$tf_tmp/sub$b.out" 2>&1 &
  eval "sub$b=\$!"
  tf_track $!
  wait_line "$tf_tmp/sub$b.out" "^connected" 30
done
bes() { # WS LOG ID TARGETS...
  local ws=$1 log=$2 id=$3
  shift 3
  bz "$ws" build --remote_cache="$GRPC_URL" --remote_download_minimal --bes_backend="$GRPC_URL" \
    --invocation_id="$id" "$@" >"$log" 2>&1
}
bes "$ws1" "$tf_tmp/b1.log" "$id1" "${t1[@]}" &
p1=$!
bes "$ws2" "$tf_tmp/b2.log" "$id2" "${t2[@]}" &
p2=$!
wait "$p1" || { cat "$tf_tmp/b1.log" "$PROXY_LOG"; fail "bazel build 1 failed"; }
wait "$p2" || { cat "$tf_tmp/b2.log" "$PROXY_LOG"; fail "bazel build 2 failed"; }
for b in 1 2; do
  ! grep -qi 'build event protocol upload failed\|bes.*\(error\|fail\)' "$tf_tmp/b$b.log" \
    || { cat "$tf_tmp/b$b.log"; fail "build $b: Bazel's BES upload failed"; }
done
two_ended() { [ "$(grep -c '^topfetch proxy: build .* ended' "$PROXY_LOG")" -ge 2 ]; }
wait_for 120 "both invocations' sessions to end ($(cat "$PROXY_LOG"))" two_ended
for b in 1 2; do
  sub=sub$b
  wait "${!sub}" || { cat "$tf_tmp/sub$b.out" "$PROXY_LOG"; fail "the subscriber of invocation $b failed"; }
done
proxy_stop
cat "$PROXY_LOG"
[ "$proxy_rc" -eq 0 ] || fail "proxy exit $proxy_rc"
for f in $top; do
  [ -f "$tf_tmp/out/$bin/$f" ] || fail "$f is not in --output_dir"
  cmp -s "$tf_tmp/out/$bin/$f" "$(readlink -f "$ws1/bazel-bin")/pkg/$f" 2>/dev/null \
    || cmp -s "$tf_tmp/out/$bin/$f" "$(readlink -f "$ws2/bazel-bin")/pkg/$f" 2>/dev/null \
    || [ ! -e "$(readlink -f "$ws1/bazel-bin")/pkg/$f" ] || fail "$f differs from what Bazel built"
done
n=$(ls "$ev"/*.bin | wc -l)
[ "$n" -eq 2 ] || fail "$n gated BEP files in --build_event_dir, want 2: $(ls "$ev")"
labels=""
for j in "$ev"/*.json; do
  id=$(basename "$j" .json)
  grep -q "^topfetch proxy: build $id ended" "$PROXY_LOG" || fail "no session ended for invocation $id"
  labels+=$(python3 - "$j" "$id" <<'PY'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
assert ev[-1].get("lastMessage"), "no last_message"
started = [e for e in ev if "started" in e]
assert started and started[0]["started"]["uuid"] == sys.argv[2], started
done = [e for e in ev if "completed" in e]
assert len(done) == 3 and all(e["completed"].get("success") for e in done), done
print(" ".join(sorted(e["id"]["targetCompleted"]["label"] for e in done)), end=";")
PY
  ) || fail "the gated BEP of $id"
  python3 "$TF_SOURCE_ROOT/tests/gsrv/msgs.py" split "$ev/$id.bin" "$tf_tmp/rec_$id"
  decoded=0
  for f in "$tf_tmp/rec_$id".*; do
    (cd "$S" && protoc -I. -I/usr/include --decode=build_event_stream.BuildEvent \
      src/main/java/com/google/devtools/build/lib/buildeventstream/proto/build_event_stream.proto <"$f" >/dev/null) \
      || fail "Bazel's schema cannot decode $f"
    decoded=$((decoded + 1))
  done
  [ "$decoded" -eq "$(wc -l <"$j")" ] || fail "$id: decoded $decoded records of $(wc -l <"$j")"
done
# Each subscriber: its own invocation's TargetCompletes, in the order of its
# gated BEP, each checked on disk when it came.
for b in 1 2; do
  id=id$b
  want=$(python3 -c 'import json, sys
print("\n".join("target " + e["id"]["targetCompleted"]["label"] for e in map(json.loads, open(sys.argv[1])) if "completed" in e))' \
    "$ev/${!id}.json")
  got=$(grep '^target ' "$tf_tmp/sub$b.out")
  [ "$got" = "$want" ] || fail "invocation $b's subscriber got: $got; its gated BEP: $want"
  grep -q "^subscriber: 3 targets, [1-9][0-9]* files verified at TargetComplete" "$tf_tmp/sub$b.out" \
    || fail "invocation $b's subscriber: $(cat "$tf_tmp/sub$b.out")"
done
# Each invocation's session recorded its own build's actions: as many as
# Bazel ran or found in the cache (every process but internal ones), not
# the other build's too.
for b in 1 2; do
  id=id$b
  procs=$(sed -n 's/^INFO: \([0-9]*\) processes\?: \([0-9]*\) internal.*/\1 \2/p' "$tf_tmp/b$b.log")
  [ -n "$procs" ] || { cat "$tf_tmp/b$b.log"; fail "build $b: no 'INFO: N processes: M internal' line"; }
  want=$(( ${procs% *} - ${procs#* } ))
  got=$(sed -n "/^topfetch proxy: build ${!id} ended/,/actions\? recorded/p" "$PROXY_LOG" |
    sed -n 's/.* \([0-9]*\) actions\? recorded.*/\1/p' | head -1)
  [ "$got" = "$want" ] || fail "invocation $b's session recorded ${got:-no} actions, want $want (its own)"
done
case "$labels" in
  "//pkg:left //pkg:multi //pkg:right;//pkg:big //pkg:exe //pkg:tree;" | "//pkg:big //pkg:exe //pkg:tree;//pkg:left //pkg:multi //pkg:right;") ;;
  *) fail "the invocations' targets: $labels" ;;
esac
echo "1. two builds at once, one session each, each published and recorded apart: ok"

# 2. The BES connection cut once mid-stream (a TCP relay between Bazel's
# BES client and the proxy; the cache calls go straight): Bazel retries and
# resends what was not acknowledged; the gated BEP has every event once.
gsrv_start bes2.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out2" --build_event_dir="$tf_tmp/events2"
python3 "$TF_SOURCE_ROOT/tests/grpc/relay.py" "$GRPC_PORT" "$tf_tmp/relay.port" "$tf_tmp/relay.stats" --cut 2500 \
  >"$tf_tmp/relay.log" 2>&1 &
tf_track $!
wait_file "$tf_tmp/relay.port"
bz "$ws1" clean >/dev/null 2>&1
bz "$ws1" build --remote_cache="$GRPC_URL" --remote_download_minimal --bes_backend="grpc://127.0.0.1:$(cat "$tf_tmp/relay.port")" \
  "${t1[@]}" >"$tf_tmp/b3.log" 2>&1 || { cat "$tf_tmp/b3.log" "$PROXY_LOG"; fail "bazel build 3 failed"; }
[ "$(awk '{print $4}' "$tf_tmp/relay.stats")" = 1 ] || fail "the relay did not cut the BES connection: $(cat "$tf_tmp/relay.stats")"
grep -q "its event stream broke after event" "$PROXY_LOG" ||
  { cat "$PROXY_LOG" "$tf_tmp/relay.stats"; grep -i 'bes\|build event\|retry' "$tf_tmp/b3.log"; fail "the cut did not break an event stream"; }
wait_line "$PROXY_LOG" "^topfetch proxy: build .* ended" 120
proxy_stop
[ "$proxy_rc" -eq 0 ] || { cat "$PROXY_LOG"; fail "proxy exit $proxy_rc after the cut stream"; }
j=$(ls "$tf_tmp/events2"/*.json)
python3 - "$j" <<'PY' || { cat "$tf_tmp/b3.log" "$PROXY_LOG"; fail "the gated BEP of the cut stream"; }
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
ids = [json.dumps(e["id"], sort_keys=True) for e in ev]
assert len(ids) == len(set(ids)), "an event twice"
assert ev[-1].get("lastMessage"), "no last_message"
done = [e for e in ev if "completed" in e]
assert len(done) == 3 and all(e["completed"].get("success") for e in done), done
print(f"{len(ev)} events, each once")
PY
echo "2. a cut BES stream: ok"
echo "gsrv_bes: ok"
