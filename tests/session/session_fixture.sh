#!/usr/bin/env bash
# The session against a real nginx serving the real Bazel 4.2.3 cache from the
# fixtures: ActionResults from ac/ reported as executed actions, then run 2's
# BEP (a --remote_download_minimal build). Checks files on disk, requests at
# nginx, the gated BEP (decoded with Bazel's official schema), and a PUB
# subscriber that verifies every file the moment its TargetComplete arrives.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
need protoc
fx="${TF_FIXTURES:?}"
[ -f "$fx/cache.tar.gz" ] || fail "fixtures missing at $fx"
S=/usr/src/bazel-bootstrap
[ -f "$S/src/main/java/com/google/devtools/build/lib/buildeventstream/proto/build_event_stream.proto" ] \
  || fail "Bazel's official protos are missing: install bazel-bootstrap-source"
nginx_start
tar -xzf "$fx/cache.tar.gz" -C "$NGINX_CACHE"
chmod -R a+rX "$NGINX_CACHE"
bin=bazel-out/k8-fastbuild/bin/pkg
out="$tf_tmp/out"

# A subscriber on the PUB socket checks each TargetComplete's files.
sock="ipc://$tf_tmp/bep.ipc"
# The driver binds the socket and holds its first event until the
# subscriber says it is connected.
"$TF_SUBSCRIBER" "$sock" "$out" 60 >"$tf_tmp/sub.log" 2>&1 &
sub_pid=$!
"$TF_DRIVER" --remote_cache="$NGINX_URL" --output_dir="$out" --store="$tf_tmp/store.db" \
  --actions="$NGINX_CACHE/ac" --bep="$fx/run2_minimal_hits/bep.bin" \
  --bep_out="$tf_tmp/bep.bin" --json_out="$tf_tmp/bep.json" --publish="$sock" --wait_for="$tf_tmp/go" \
  >"$tf_tmp/run.log" 2>&1 &
driver_pid=$!
tf_track "$sub_pid" "$driver_pid"
wait_line "$tf_tmp/sub.log" '^connected$' 60
touch "$tf_tmp/go"
set +e
wait "$driver_pid"; rc=$?
wait "$sub_pid"; sub_rc=$?
set -e
cat "$tf_tmp/run.log"
cat "$tf_tmp/sub.log"
[ "$rc" -eq 0 ] || fail "driver exit $rc"
[ "$sub_rc" -eq 0 ] || fail "the subscriber found a TargetComplete before its files: $(cat "$tf_tmp/sub.log")"
assert_contains "$(cat "$tf_tmp/sub.log")" "subscriber: 6 targets, 11 files verified at TargetComplete"
stats=$(grep '^stats:' "$tf_tmp/run.log")
assert_contains "$stats" "actions=8 " "stats"
assert_contains "$stats" "targets=7 targets_failed=1 " "stats"
assert_contains "$stats" "lost=0 failed=0" "stats"
assert_contains "$(cat "$tf_tmp/run.log")" "callbacks: files=11 events=45"

# Exactly the top-level files, byte for byte, with their modes.
expected="$bin/big.dat $bin/combined.txt $bin/empty.txt $bin/hello.sh $bin/multi/one.txt $bin/multi/three.bin
$bin/multi/two.txt $bin/treeart_dir/a.txt $bin/treeart_dir/copy_of_input.txt $bin/treeart_dir/sub/b.txt
$bin/treeart_dir/sub/empty.txt"
got=$(cd "$out" && find . -type f | sed 's|^\./||' | sort | tr '\n' ' ')
want=$(echo $expected | tr ' ' '\n' | sort | tr '\n' ' ')
[ "$got" = "$want" ] || fail "files on disk: $got; want: $want"
[ "$(stat -c %a "$out/$bin/hello.sh")" = 755 ] || fail "hello.sh not executable"
[ "$(stat -c %a "$out/$bin/multi/one.txt")" = 755 ] || fail "one.txt not executable"
[ "$(stat -c %a "$out/$bin/multi/two.txt")" = 644 ] || fail "two.txt mode"
[ "$(sha256sum "$out/$bin/big.dat" | cut -c1-8)" = 01ab038e ] || fail "big.dat wrong"

# At nginx: the shared blob once (one.txt and copy_of_input.txt), no
# intermediate-only blob, no empty blob, at most one GET per blob.
[ "$(nginx_count "GET /cas/c7d9472e")" -eq 1 ] || fail "shared blob fetched $(nginx_count "GET /cas/c7d9472e") times"
[ "$(nginx_count "GET /cas/29f5b5b3")" -eq 0 ] || fail "intermediate2.txt was fetched"
[ "$(nginx_count "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")" -eq 0 ] || fail "empty blob requested"
nginx_sync
dups=$(grep 'GET /cas/' "$NGINX_LOG" | awk '{print $2}' | sort | uniq -d)
[ -z "$dups" ] || fail "blobs fetched twice: $dups"

# The gated BEP: every event, named sets with digest and length, decoding
# with Bazel's official schema; //pkg:tool failed naming its file.
python3 - "$tf_tmp/bep.bin" "$tf_tmp/bep.json" <<'PY' || fail "gated BEP check failed"
import json, sys
def records(path):
    data = open(path, "rb").read(); i = 0; out = []
    while i < len(data):
        n = shift = 0
        while True:
            b = data[i]; i += 1; n |= (b & 0x7f) << shift; shift += 7
            if not b & 0x80: break
        out.append(data[i:i+n]); i += n
    return out
recs = records(sys.argv[1])
events = [json.loads(l) for l in open(sys.argv[2])]
assert len(recs) == 45 == len(events), (len(recs), len(events))
assert events[-1].get("lastMessage") is True, "last_message is not last"
seen_sets, announced = set(), set()
for i, e in enumerate(events):
    key = json.dumps(e["id"], sort_keys=True)
    assert i == 0 or key in announced, f"event {i} {key} posted before it was announced"
    for c in e.get("children", []): announced.add(json.dumps(c, sort_keys=True))
    if "namedSetOfFiles" in e:
        seen_sets.add(e["id"]["namedSet"]["id"])
        for f in e["namedSetOfFiles"].get("files", []):
            if f.get("pathPrefix"):
                if f["name"] == "pkg/tool": continue
                assert "digest" in f and len(f["digest"]) == 64, f
    if "completed" in e:
        for g in e["completed"].get("outputGroup", []):
            for s in g.get("fileSets", []):
                assert s["id"] in seen_sets, f"target before its set {s['id']}"
        label = e["id"]["targetCompleted"]["label"]
        if label == "//pkg:tool":
            assert not e["completed"].get("success"), "//pkg:tool should fail"
            msg = e["completed"]["failureDetail"]["message"]
            assert "no digest known for bazel-out/k8-fastbuild/bin/pkg/tool" in msg, msg
        else:
            assert e["completed"].get("success") is True, label
print("gated BEP ok")
PY
# Each record decodes with the official build_event_stream.proto.
python3 - "$tf_tmp/bep.bin" "$tf_tmp/rec" <<'PY'
import sys
data = open(sys.argv[1], "rb").read(); i = k = 0
while i < len(data):
    n = shift = 0
    while True:
        b = data[i]; i += 1; n |= (b & 0x7f) << shift; shift += 7
        if not b & 0x80: break
    open(f"{sys.argv[2]}.{k}", "wb").write(data[i:i+n]); i += n; k += 1
PY
decoded=0
for f in "$tf_tmp"/rec.*; do
  protoc -I"$S" -I/usr/include --decode=build_event_stream.BuildEvent \
    src/main/java/com/google/devtools/build/lib/buildeventstream/proto/build_event_stream.proto <"$f" >"$f.txt" \
    || fail "official schema cannot decode $f"
  decoded=$((decoded + 1))
done
[ "$decoded" -eq 45 ] || fail "decoded $decoded records"
# Bazel 4.2.3's File has no digest/length: they show as fields 5 and 6.
grep -h '^ *5: "c7d9472e' "$tf_tmp"/rec.*.txt >/dev/null || fail "digest (field 5) not in the official decoding"
echo "session_fixture: ok"
