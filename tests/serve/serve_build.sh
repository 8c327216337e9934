#!/usr/bin/env bash
# A whole build through `topfetch serve` and the example client, against a
# real nginx serving the Bazel 4.2.3 fixture cache: the client reports the 8
# ActionResults of ac/ as executed actions and //pkg:multi, //pkg:big,
# //pkg:treeart as completed. Checks the files on disk (top-level ones only,
# with their modes), nginx's access log (no intermediate or unrequested
# output fetched, a shared blob once), a PUB subscriber that verifies every
# TargetComplete's files the moment it arrives, the BEP file (gated order,
# digests, decodable with Bazel's official schema), the summary line; then a
# second build on the same service and store: files in place are not fetched
# again, a --remote_download_regex match is fetched at ActionExecuted and the
# reply says so; then SIGTERM stops the idle service with exit code 0.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/serve/lib.sh"
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
listen="ipc://$tf_tmp/sock/serve.sock"
pub="ipc://$tf_tmp/bep.ipc"

serve_start "$tf_tmp/serve.log" --listen="$listen" --remote_cache="$NGINX_URL" --output_dir="$out" \
  --store="$tf_tmp/store.db" --build_event_publish="$pub" \
  --build_event_binary_file="$tf_tmp/bep.bin" --build_event_json_file="$tf_tmp/bep.json" --remote_retries=1
grep -q "listening on $listen; events on $pub" "$tf_tmp/serve.log" || fail "startup line: $(cat "$tf_tmp/serve.log")"

# subscribe: starts a subscriber on the PUB socket (bound since the service
# started) and waits until it is connected.
subscribe() {
  "$TF_SUBSCRIBER" "$pub" "$out" 60 >"$tf_tmp/sub$1.log" 2>&1 &
  sub_pid=$!
  tf_track "$sub_pid"
  wait_line "$tf_tmp/sub$1.log" '^connected$' 60
}

targets=(--target="//pkg:multi=$bin/multi/one.txt,$bin/multi/two.txt,$bin/multi/three.bin"
         --target="//pkg:big=$bin/big.dat"
         --target="//pkg:treeart=$bin/treeart_dir/a.txt,$bin/treeart_dir/copy_of_input.txt,$bin/treeart_dir/sub/b.txt,$bin/treeart_dir/sub/empty.txt")

# ---- build 1 -------------------------------------------------------------------
subscribe 1
client --connect="$listen" --actions="$NGINX_CACHE/ac" "${targets[@]}"
set +e; wait "$sub_pid"; sub_rc=$?; set -e
cat "$tf_tmp/sub1.log"
[ "$rc" -eq 0 ] || fail "client exit $rc"
[ "$sub_rc" -eq 0 ] || fail "the subscriber found a TargetComplete before its files: $(cat "$tf_tmp/sub1.log")"
assert_contains "$(cat "$tf_tmp/sub1.log")" "subscriber: 3 targets, 8 files verified at TargetComplete"
assert_contains "$client" "build 1 started" "client output"
assert_contains "$client" "target //pkg:multi: wanted, 3 files: 0 already present, 3 being fetched, 0 unknown" "client output"
assert_contains "$client" "target //pkg:treeart: wanted, 4 files:" "client output"
assert_contains "$client" "action 0cc1d576666e: 3 outputs" "client output"
assert_contains "$client" "build 1 finished: 3 targets complete (0 failed), 8 files fetched" "client output"
case "$client" in *"fetching now"*) fail "toplevel mode fetched at ActionExecuted: $client" ;; esac

# Exactly the top-level files, byte for byte, with their modes.
expected="$bin/big.dat $bin/multi/one.txt $bin/multi/three.bin $bin/multi/two.txt $bin/treeart_dir/a.txt
$bin/treeart_dir/copy_of_input.txt $bin/treeart_dir/sub/b.txt $bin/treeart_dir/sub/empty.txt"
got=$(cd "$out" && find . -type f | sed 's|^\./||' | sort | tr '\n' ' ')
want=$(echo $expected | tr ' ' '\n' | sort | tr '\n' ' ')
[ "$got" = "$want" ] || fail "files on disk: $got; want: $want"
[ "$(stat -c %a "$out/$bin/multi/one.txt")" = 755 ] || fail "one.txt lost its executable bit"
[ "$(stat -c %a "$out/$bin/multi/two.txt")" = 644 ] || fail "two.txt mode"
[ "$(sha256sum "$out/$bin/big.dat" | cut -c1-8)" = 01ab038e ] || fail "big.dat wrong"
[ ! -s "$out/$bin/treeart_dir/sub/empty.txt" ] || fail "empty.txt not empty"

# At nginx: no intermediate or unrequested output, the shared blob once, no
# empty blob, no action-cache lookup (the client reports ActionResults).
for h in 29f5b5b3 d350ffe2 313fc3e8; do # intermediate2.txt, combined.txt, hello.sh
  [ "$(nginx_count "GET /cas/$h")" -eq 0 ] || fail "blob $h (not top-level here) was fetched"
done
[ "$(nginx_count "GET /cas/c7d9472e")" -eq 1 ] || fail "shared blob fetched $(nginx_count "GET /cas/c7d9472e") times"
[ "$(nginx_count "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")" -eq 0 ] || fail "empty blob requested"
[ "$(nginx_count "GET /ac/")" -eq 0 ] || fail "the service read the action cache"
nginx_sync
dups=$(grep 'GET /cas/' "$NGINX_LOG" | awk '{print $2}' | sort | uniq -d)
[ -z "$dups" ] || fail "blobs fetched twice: $dups"
gets1=$(grep -c 'GET /cas/' "$NGINX_LOG")

summary=$(grep -A3 "build 1 " "$tf_tmp/serve.log")
assert_contains "$summary" "topfetch serve: build 1 finished (exit code 0)" "summary"
assert_contains "$summary" "topfetch: 8 of 8 files in place (8 fetched, 0 already present)" "summary"
assert_contains "$summary" "topfetch: 0 lost, 0 failed" "summary"
assert_contains "$summary" "topfetch: 3 of 3 targets complete" "summary"

# The BEP file: every event announced before it, named sets (with digest and
# length) before their target, BuildFinished after every TargetComplete,
# last_message last.
python3 - "$tf_tmp/bep.json" <<'PY' || fail "BEP check failed"
import json, sys
events = [json.loads(l) for l in open(sys.argv[1])]
announced, sets, targets, finished = set(), set(), [], False
for i, e in enumerate(events):
    key = json.dumps(e["id"], sort_keys=True)
    assert i == 0 or key in announced, f"event {i} {key} was not announced before"
    for c in e.get("children", []): announced.add(json.dumps(c, sort_keys=True))
    if "namedSetOfFiles" in e:
        sets.add(e["id"]["namedSet"]["id"])
        for f in e["namedSetOfFiles"]["files"]:
            assert f["pathPrefix"] == ["bazel-out", "k8-fastbuild", "bin"], f
            assert len(f["digest"]) == 64, f
            assert f["name"].endswith("empty.txt") or int(f["length"]) > 0, f
    if "completed" in e:
        assert not finished, "TargetComplete after BuildFinished"
        assert e["completed"]["success"] is True, e
        for g in e["completed"]["outputGroup"]:
            for s in g["fileSets"]: assert s["id"] in sets, "target before its named set"
        targets.append(e["id"]["targetCompleted"]["label"])
    if "finished" in e:
        finished = True
        assert e["finished"]["exitCode"]["name"] == "SUCCESS", e
    assert bool(e.get("lastMessage")) == (i == len(events) - 1), f"lastMessage at {i}"
assert events[0]["started"]["command"] == "build" and len(events[0]["started"]["uuid"]) == 36
assert sorted(targets) == ["//pkg:big", "//pkg:multi", "//pkg:treeart"], targets
assert finished and "buildToolLogs" in events[-1]
print(f"BEP ok: {len(events)} events")
PY
# Every record decodes with Bazel's own schema.
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
    || fail "Bazel's schema cannot decode $f"
  decoded=$((decoded + 1))
done
[ "$decoded" -eq "$(wc -l <"$tf_tmp/bep.json")" ] || fail "decoded $decoded records"

# ---- build 2: same service, same store --------------------------------------------
subscribe 2
client --connect="$listen" --actions="$NGINX_CACHE/ac" --regex='.*/intermediate2\.txt' "${targets[@]}"
set +e; wait "$sub_pid"; sub_rc=$?; set -e
cat "$tf_tmp/sub2.log"
[ "$rc" -eq 0 ] || fail "second client exit $rc"
[ "$sub_rc" -eq 0 ] || fail "second subscriber: $(cat "$tf_tmp/sub2.log")"
assert_contains "$(cat "$tf_tmp/sub2.log")" "subscriber: 3 targets, 8 files verified at TargetComplete"
assert_contains "$client" "build 2 started" "client output"
assert_contains "$client" "action 612146a48c67: 1 outputs; fetching now: $bin/intermediate2.txt" "client output"
assert_contains "$client" "target //pkg:multi: wanted, 3 files: 3 already present, 0 being fetched" "client output"
assert_contains "$client" "target //pkg:big: wanted, 1 files: 1 already present, 0 being fetched" "client output"
[ -f "$out/$bin/intermediate2.txt" ] || fail "the regex match was not fetched"
[ "$(nginx_count "GET /cas/29f5b5b3")" -eq 1 ] || fail "intermediate2.txt fetched $(nginx_count "GET /cas/29f5b5b3") times"
# Nothing else was fetched again (the Tree is read again: it is metadata).
nginx_sync
new=$(grep 'GET /cas/' "$NGINX_LOG" | tail -n +$((gets1 + 1)) | grep -v -e 29f5b5b3 -e bb2e91f9 || true)
[ -z "$new" ] || fail "files already in place were fetched again: $new"
assert_contains "$(grep -A1 "build 2 " "$tf_tmp/serve.log")" "9 of 9 files in place (1 fetched, 8 already present)" "summary"

# ---- SIGTERM with no build open: exit 0 -------------------------------------------
serve_stop TERM 0
cat "$tf_tmp/serve.log"
assert_contains "$(cat "$tf_tmp/serve.log")" "topfetch serve: stopped (SIGTERM)"
[ "$(grep -c '^topfetch serve: build' "$tf_tmp/serve.log")" -eq 2 ] || fail "not one summary line per build"
echo "serve_build: ok"
