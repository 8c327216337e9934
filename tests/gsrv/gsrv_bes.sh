#!/usr/bin/env bash
# Bazel's Build Event Service pointed at topfetch proxy: real Bazel 4.2.3
# with --bes_backend=grpc://<topfetch> (no --bep_follow, no BEP file) and
# --remote_cache=grpc://<topfetch> (nginx upstream), two workspaces building
# at the same time. Each invocation is a session of its own: its gated BEP in
# --build_event_dir as <invocation id>.bin and .json, complete (last_message),
# every TargetComplete successful, every record decodable with Bazel's own
# schema, and both builds' top-level files in --output_dir.
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

gsrv_start bes.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out" --build_event_dir="$ev"
bes() { # WS LOG TARGETS...
  local ws=$1 log=$2
  shift 2
  bz "$ws" build --remote_cache="$GRPC_URL" --remote_download_minimal --bes_backend="$GRPC_URL" "$@" >"$log" 2>&1
}
bes "$ws1" "$tf_tmp/b1.log" "${t1[@]}" &
p1=$!
bes "$ws2" "$tf_tmp/b2.log" "${t2[@]}" &
p2=$!
wait "$p1" || { cat "$tf_tmp/b1.log" "$PROXY_LOG"; fail "bazel build 1 failed"; }
wait "$p2" || { cat "$tf_tmp/b2.log" "$PROXY_LOG"; fail "bazel build 2 failed"; }
for b in 1 2; do
  ! grep -qi 'build event protocol upload failed\|bes.*\(error\|fail\)' "$tf_tmp/b$b.log" \
    || { cat "$tf_tmp/b$b.log"; fail "build $b: Bazel's BES upload failed"; }
done
two_ended() { [ "$(grep -c '^topfetch proxy: build .* ended' "$PROXY_LOG")" -ge 2 ]; }
wait_for 120 "both invocations' sessions to end ($(cat "$PROXY_LOG"))" two_ended
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
case "$labels" in
  "//pkg:left //pkg:multi //pkg:right;//pkg:big //pkg:exe //pkg:tree;" | "//pkg:big //pkg:exe //pkg:tree;//pkg:left //pkg:multi //pkg:right;") ;;
  *) fail "the invocations' targets: $labels" ;;
esac
echo "gsrv_bes: ok"
