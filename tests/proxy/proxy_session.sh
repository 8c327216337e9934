#!/usr/bin/env bash
# The proxy during a build, replayed from the real Bazel 4.2.3 fixtures: the
# cache (nginx) holds run 1's uploads; the client looks up every action as
# Bazel does on cache hits (GET /ac/...), while the proxy follows run 2's BEP
# (a --remote_download_minimal build) that grows in pieces, cut mid-record.
# Exactly the top-level files arrive in --output_dir (bytes, modes), each blob
# once, no intermediate; topfetch's own BEP gates each TargetComplete and
# fills in digests; --exit_after_build stops the proxy at the build's end.
# Then a build cut short: SIGTERM before last_message is exit 3, with what
# arrived flushed.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
fx="${TF_FIXTURES:?}"
[ -f "$fx/cache.tar.gz" ] || fail "fixtures missing at $fx"
nginx_start
tar -xzf "$fx/cache.tar.gz" -C "$NGINX_CACHE"
chmod -R a+rX "$NGINX_CACHE"
src="$fx/run2_minimal_hits/bep.bin"
size=$(stat -c %s "$src")
bin=bazel-out/k8-fastbuild/bin/pkg
out="$tf_tmp/out"
bep="$tf_tmp/bep.bin"

proxy_start p1.log --remote_cache="$NGINX_URL" --output_dir="$out" --store="$tf_tmp/store.db" \
  --bep_follow="$bep" --exit_after_build \
  --build_event_binary_file="$tf_tmp/gated.bin" --build_event_json_file="$tf_tmp/gated.json"
# The build starts: the first events, cut in the middle of a record.
head -c 2999 "$src" >"$bep"
wait_for 30 "the proxy did not read the start of the BEP" read_upto "$PROXY_PID" "$bep" 2999
# Cache hits, in run 2's order.
for k in $(grep -o 'GET /ac/[0-9a-f]*' "$fx/run2_minimal_hits/access.log" | cut -d/ -f3); do
  code=$(curl -sS -o "$tf_tmp/ar" -w '%{http_code}' "$PROXY_URL/ac/$k")
  [ "$code" = 200 ] || fail "AC hit $k: HTTP $code"
  cmp -s "$tf_tmp/ar" "$NGINX_CACHE/ac/$k" || fail "AC $k: other bytes"
done
[ ! -e "$out/$bin" ] || fail "files were fetched before any target completed"
# The rest of the BEP, 1500 bytes at a time.
off=2999
while [ "$off" -lt "$size" ]; do
  dd if="$src" bs=64k iflag=skip_bytes,count_bytes skip=$off count=1500 status=none >>"$bep"
  off=$((off + 1500))
  sleep 0.05 # a build writes its BEP over time: the pacing is what is tested
done
proxy_wait
cat "$PROXY_LOG"

# //pkg:tool's only file is a symlink a local action makes; Bazel never
# caches it, so no digest is known: that target fails, naming the file.
[ "$proxy_rc" -eq 1 ] || fail "exit $proxy_rc, want 1"
summary=$(grep -A6 '^topfetch: .* files in place' "$PROXY_LOG")
assert_contains "$summary" "11 of 12 files in place (11 fetched, 0 already present)" "summary"
assert_contains "$summary" "topfetch: 0 lost, 0 failed, 1 without a digest" "summary"
assert_contains "$summary" "topfetch: 6 of 7 targets complete (1 failed, 0 conflicting paths); 8 actions recorded" "summary"
assert_contains "$summary" "8 AC hits" "summary"

expected="$bin/big.dat $bin/combined.txt $bin/empty.txt $bin/hello.sh $bin/multi/one.txt $bin/multi/three.bin
$bin/multi/two.txt $bin/treeart_dir/a.txt $bin/treeart_dir/copy_of_input.txt $bin/treeart_dir/sub/b.txt
$bin/treeart_dir/sub/empty.txt"
got=$(cd "$out" && find . -type f | sed 's|^\./||' | sort | tr '\n' ' ')
want=$(echo $expected | tr ' ' '\n' | sort | tr '\n' ' ')
[ "$got" = "$want" ] || fail "files on disk: $got; want: $want"
# Bytes: each file against the digest its ActionResult (or Tree) names.
while read -r hash path; do
  [ "$(sha256sum "$out/$bin/$path" | cut -d' ' -f1)" = "$hash" ] || fail "$path has other bytes"
done <<EOF
01ab038e04910e5e862d69473ac6c00048530e261c0d77bec7393e5138735dfe big.dat
d350ffe2c6c76790337640fe710364a4e3c2caaf81aae644003cd3ad6e458a31 combined.txt
313fc3e84c5107aa1534bbd82021a1e0ad163a26e4c468c11dec3c3802309f99 hello.sh
c7d9472ea6fe416d49cb7782637acda703204e16a09361e868201554cc50427d multi/one.txt
27dd8ed44a83ff94d557f9fd0412ed5a8cbca69ea04922d88c01184a07300a5a multi/two.txt
541b3e9daa09b20bf85fa273e5cbd3e80185aa4ec298e765db87742b70138a53 multi/three.bin
b6a98d9ce9a2d9149288fa3df42d377c3e42737afdcdaf714e33c0a100b51060 treeart_dir/a.txt
c7d9472ea6fe416d49cb7782637acda703204e16a09361e868201554cc50427d treeart_dir/copy_of_input.txt
f2c82decdd7181cf98945929a62598db7e6b477e11f6e0eb0ae97020eff151ad treeart_dir/sub/b.txt
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 empty.txt
EOF
[ "$(stat -c %a "$out/$bin/hello.sh")" = 755 ] || fail "hello.sh not executable"
[ "$(stat -c %a "$out/$bin/multi/one.txt")" = 755 ] || fail "multi/one.txt not executable"
[ "$(stat -c %a "$out/$bin/multi/two.txt")" = 644 ] || fail "multi/two.txt mode"

# At nginx: the intermediates' own blob never; the blob shared by an
# intermediate and two top-level files once; no blob twice; no empty blob.
[ "$(nginx_count "GET /cas/29f5b5b3")" -eq 0 ] || fail "intermediate2.txt was fetched"
[ "$(nginx_count "GET /cas/c7d9472e")" -eq 1 ] || fail "the shared blob was fetched $(nginx_count "GET /cas/c7d9472e") times"
nginx_sync
dups=$(grep 'GET /cas/' "$NGINX_LOG" | awk '{print $2}' | sort | uniq -d)
[ -z "$dups" ] || fail "blobs fetched twice: $dups"
[ "$(nginx_count e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855)" -eq 0 ] || fail "empty blob requested"

# topfetch's BEP: every event of the build, in an order that respects the
# announcements, named sets with digests, //pkg:tool failed naming its file.
python3 - "$tf_tmp/gated.json" <<'PY' || fail "gated BEP check failed"
import json, sys
events = [json.loads(l) for l in open(sys.argv[1])]
assert len(events) == 45, len(events)
assert events[-1].get("lastMessage") is True, "last_message is not last"
announced = set()
for i, e in enumerate(events):
    key = json.dumps(e["id"], sort_keys=True)
    assert i == 0 or key in announced, f"event {i} posted before it was announced"
    for c in e.get("children", []):
        announced.add(json.dumps(c, sort_keys=True))
    for f in e.get("namedSetOfFiles", {}).get("files", []):
        if f.get("pathPrefix") and f["name"] != "pkg/tool":
            assert len(f.get("digest", "")) == 64, f
    if "completed" in e:
        label = e["id"]["targetCompleted"]["label"]
        if label == "//pkg:tool":
            assert not e["completed"].get("success"), label
            assert "bazel-out/k8-fastbuild/bin/pkg/tool" in e["completed"]["failureDetail"]["message"]
        else:
            assert e["completed"].get("success") is True, label
print("gated BEP ok")
PY
[ "$(stat -c %s "$tf_tmp/gated.bin")" -gt "$size" ] || fail "the binary BEP is shorter than Bazel's (digests missing?)"

# A build cut short: the proxy is stopped before last_message. What arrived is
# flushed; the exit code says the input was incomplete.
# The stream cut 3 bytes into its 13th record: twelve whole events arrive.
cut=$(python3 - "$src" <<'PY'
import sys
data, off = open(sys.argv[1], "rb").read(), 0
for _ in range(12):  # skip twelve varint-length-prefixed records
    n = shift = 0
    while True:
        b = data[off]; off += 1; n |= (b & 0x7F) << shift; shift += 7
        if b < 0x80: break
    off += n
print(off + 3)
PY
)
# (Written after the proxy started: a file already there would be an earlier
# build's, never followed.)
proxy_start p2.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out2" --bep_follow="$tf_tmp/half.bin" \
  --build_event_json_file="$tf_tmp/half.json"
head -c "$cut" "$src" >"$tf_tmp/half.bin"
wait_for 30 "the proxy did not read the cut BEP" read_upto "$PROXY_PID" "$tf_tmp/half.bin" "$cut"
proxy_stop
cat "$PROXY_LOG"
[ "$proxy_rc" -eq 3 ] || fail "stopped mid-build: exit $proxy_rc, want 3"
assert_contains "$(cat "$PROXY_LOG")" "topfetch: " "summary"
n=$(grep -c . "$tf_tmp/half.json")
[ "$n" -eq 12 ] || fail "$n events flushed, want the 12 that arrived whole"
! grep -q lastMessage "$tf_tmp/half.json" || fail "a last_message was invented"

# A BEP that never appears: exit 3 too, saying so.
proxy_start p3.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out3" --bep_follow="$tf_tmp/never.bin"
proxy_stop
[ "$proxy_rc" -eq 3 ] || fail "BEP never created: exit $proxy_rc, want 3"
assert_contains "$(cat "$PROXY_LOG")" "never.bin was never created"
echo "proxy_session: ok"
