#!/usr/bin/env bash
# Lost outputs become cache misses (DESIGN semantics 5):
#  1. The cache has lost multi/three.bin's blob. The build's lookups hit; when
#     //pkg:multi completes, the fetch finds the blob gone, the action that made
#     it is reported lost, and from then on the proxy answers its lookup with
#     404 without asking the cache. SIGTERM: exit 1, BEP flushed, //pkg:multi
#     failed naming the file, the digest and the action.
#  2. A new proxy on the same --store still answers 404 for it (the mark is
#     durable); Bazel runs the action again and uploads its result: the mark is
#     cleared and lookups hit again, in this run and the next.
#  3. --remote_validate_outputs: an AC entry naming a blob the cache lost (an
#     output file, a directory's Tree) is a miss, checked with HEAD; complete
#     ones hit; empty blobs are not asked for.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
fx="${TF_FIXTURES:?}"
nginx_start
tar -xzf "$fx/cache.tar.gz" -C "$NGINX_CACHE"
chmod -R a+rX "$NGINX_CACHE"
# nginx's workers write as www-data when the test runs as root (see harness.sh).
if [ "$(id -u)" -eq 0 ]; then chown -R www-data:www-data "$NGINX_CACHE"; fi
store="$tf_tmp/store.db"
multi=0cc1d576666eef2a0492436be0e7441ec7b0bb240d8cd933ef26056fb8cce5a1
three=541b3e9daa09b20bf85fa273e5cbd3e80185aa4ec298e765db87742b70138a53
inter=92490467f0c9175b09e4b20a932c1f40f8955a70dba68e3f35e215ed8a2a1cda
mv "$NGINX_CACHE/cas/$three" "$tf_tmp/three.blob"

# 1.
proxy_start p1.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out1" --store="$store" --noremote_validate_outputs \
  --bep_follow="$tf_tmp/bep.bin" --build_event_json_file="$tf_tmp/gated.json" --remote_retries=0
for k in $(ls "$NGINX_CACHE/ac"); do
  code=$(curl -sS -o /dev/null -w '%{http_code}' "$PROXY_URL/ac/$k")
  [ "$code" = 200 ] || fail "lookup $k before the loss was known: HTTP $code"
done
cp "$fx/run2_minimal_hits/bep.bin" "$tf_tmp/bep.bin"
wait_line "$PROXY_LOG" "lost: bazel-out/k8-fastbuild/bin/pkg/multi/three.bin" 60
grep -q "lost: bazel-out/k8-fastbuild/bin/pkg/multi/three.bin ($three/1000), produced by action $multi" "$PROXY_LOG" \
  || { cat "$PROXY_LOG"; fail "no lost report naming the file, digest and action"; }
assert_contains "$(cat "$PROXY_LOG")" "lookups of that action now answer a cache miss"
grep -q "produced by action $multi of //pkg:multi: .*run \`bazel shutdown\` first" "$PROXY_LOG" \
  || { cat "$PROXY_LOG"; fail "the lost report does not name the target and what to do"; }
before=$(nginx_count "GET /ac/$multi")
req GET "$PROXY_URL/ac/$multi"
[ "$code" = 404 ] || fail "lookup of the lost action: HTTP $code, want 404"
assert_contains "$body" "lost" "404 body"
req HEAD "$PROXY_URL/ac/$multi"
[ "$code" = 404 ] || fail "HEAD of the lost action: HTTP $code, want 404"
[ "$(nginx_count "GET /ac/$multi")" -eq "$before" ] || fail "the lost action's lookup went to the cache"
req GET "$PROXY_URL/ac/$inter"
[ "$code" = 200 ] || fail "another action: HTTP $code"
wait_line "$tf_tmp/gated.json" lastMessage 60
proxy_stop
cat "$PROXY_LOG"
[ "$proxy_rc" -eq 1 ] || fail "exit $proxy_rc with a lost output, want 1"
assert_contains "$(grep -A3 '^topfetch: .* files in place' "$PROXY_LOG")" "topfetch: 1 lost" "summary"
# (The summary is the build's, printed when it ended: the two lookups above
# came later; their 404s are checked above.)
python3 - "$tf_tmp/gated.json" "$three" "$multi" <<'PY' || fail "gated BEP check failed"
import json, sys
events = [json.loads(l) for l in open(sys.argv[1])]
assert len(events) == 45 and events[-1].get("lastMessage"), len(events)
multi = [e for e in events if e.get("id", {}).get("targetCompleted", {}).get("label") == "//pkg:multi"][0]
assert not multi["completed"].get("success")
msg = multi["completed"]["failureDetail"]["message"]
assert "multi/three.bin" in msg and sys.argv[2] in msg and sys.argv[3] in msg, msg
PY
[ ! -e "$tf_tmp/out1/bazel-out/k8-fastbuild/bin/pkg/multi/three.bin" ] || fail "a lost file is in place"

# 2. The mark is in the store.
proxy_start p2.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out2" --store="$store" --noremote_validate_outputs
req GET "$PROXY_URL/ac/$multi"
[ "$code" = 404 ] || fail "lost action in a new run: HTTP $code, want 404"
req GET "$PROXY_URL/ac/$inter"
[ "$code" = 200 ] || fail "another action in a new run: HTTP $code"
# Bazel runs it again: its outputs, then its result, are uploaded.
req PUT "$PROXY_URL/cas/$three" -T "$tf_tmp/three.blob"
[ "$code" = 201 ] || fail "re-upload of three.bin: HTTP $code: $body"
cp "$NGINX_CACHE/ac/$multi" "$tf_tmp/multi.ar"
req PUT "$PROXY_URL/ac/$multi" -T "$tf_tmp/multi.ar"
[ "$code" = 204 ] || [ "$code" = 201 ] || fail "re-upload of the result: HTTP $code"
req GET "$PROXY_URL/ac/$multi"
[ "$code" = 200 ] || fail "lookup after the new result: HTTP $code, want 200"
cmp -s "$tf_tmp/multi.ar" "$tf_tmp/body" || fail "other bytes after the new result"
proxy_stop
[ "$proxy_rc" -eq 0 ] || fail "p2 exit $proxy_rc"
proxy_start p3.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out3" --store="$store"
req GET "$PROXY_URL/ac/$multi"
[ "$code" = 200 ] || fail "the cleared mark came back in the next run: HTTP $code"
proxy_stop

# 3. Eager validation.
tree=bb2e91f968ef792fb32dd8a42477b0341e0db61d7b999cd94b401d710f7e7420
treeart=1a2b24205f7af474b9c2b818a997383d41ab379f4704a1220a77948bf31693e4
big=4eef905a5fc5c4a60bbe4f07d91acd9aeec07b30cd82f2fd232b142113ec2cfb
empty=b5a52a3991c8bd638ae2ec71519c6d3c0becd269cea41981b63a285664fc744c
mv "$NGINX_CACHE/cas/$three" "$tf_tmp/three.blob"
mv "$NGINX_CACHE/cas/$tree" "$tf_tmp/tree.blob"
proxy_start p4.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out4" --remote_validate_outputs
heads=$(nginx_count "HEAD ")
req GET "$PROXY_URL/ac/$multi"
[ "$code" = 404 ] || fail "validation: an output file's blob is gone: HTTP $code, want 404"
assert_contains "$body" "output blob $three/1000 is missing upstream" "404 body"
[ "$(nginx_count "HEAD /cas/$three 404")" -eq 1 ] || fail "the missing blob was not checked with HEAD"
req GET "$PROXY_URL/ac/$treeart"
[ "$code" = 404 ] || fail "validation: a Tree blob is gone: HTTP $code, want 404"
assert_contains "$body" "$tree" "404 body"
req GET "$PROXY_URL/ac/$big"
[ "$code" = 200 ] || fail "validation: a complete result (output, stdout, stderr): HTTP $code"
for b in 01ab038e f3cd0e6f e67b6775; do
  [ "$(nginx_count "HEAD /cas/$b[0-9a-f]* 200")" -eq 1 ] || fail "blob $b... not checked"
done
# Checked once per digest and build: the same result again asks nothing; a
# missing blob is asked about again (it may have been uploaded since).
req GET "$PROXY_URL/ac/$big"
[ "$code" = 200 ] || fail "validation, second lookup: HTTP $code"
for b in 01ab038e f3cd0e6f e67b6775; do
  [ "$(nginx_count "HEAD /cas/$b[0-9a-f]* 200")" -eq 1 ] || fail "blob $b... checked again in the same build"
done
req GET "$PROXY_URL/ac/$multi"
[ "$code" = 404 ] || fail "validation, the missing blob again: HTTP $code, want 404"
[ "$(nginx_count "HEAD /cas/$three 404")" -eq 2 ] || fail "a missing blob was remembered as missing"
req GET "$PROXY_URL/ac/$empty"
[ "$code" = 200 ] || fail "validation: an empty output: HTTP $code"
[ "$(nginx_count e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855)" -eq 0 ] || fail "the empty blob was checked"
proxy_stop
assert_contains "$(grep -A4 '^topfetch: .* files in place' "$PROXY_LOG")" "3 failed validation" "summary"
[ "$(nginx_count "HEAD ")" -gt "$heads" ] || fail "no HEAD requests seen"
echo "proxy_lost: ok"
