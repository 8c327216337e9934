#!/usr/bin/env bash
# topfetch proxy --listen=grpc://: the REAPI cache services and ByteStream
# over the gRPC C core, in front of a real nginx cache, called by a client
# made with the gRPC C core (tests/gsrv/gsrv_call.c). HTTP is served on its
# own port at the same time.
#  1. Capabilities: SHA256, action cache updates enabled, 4 MiB batches.
#  2. ByteStream Write of 3 MiB in three messages reaches nginx intact; a
#     Write whose bytes do not hash to the name is refused (INVALID_ARGUMENT)
#     and not stored; one without finish_write stores nothing.
#  3. FindMissingBlobs names exactly the missing blob (not the empty one).
#  4. ByteStream Read, whole and with read_offset/read_limit; a missing blob
#     is NOT_FOUND; QueryWriteStatus says complete for a stored blob.
#  5. BatchUpdateBlobs and BatchReadBlobs: per-blob statuses.
#  6. UpdateActionResult stores the ActionResult's bytes as sent; the HTTP
#     side and GetActionResult read them back; an entry naming a blob the
#     cache does not have answers NOT_FOUND (validation).
#  7. Faults: a request that is not its message, an unknown method, a message
#     over the receive limit, a broken gRPC frame: each a clear status, and
#     the server keeps serving. SIGTERM: exit 0.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
. "$TF_SOURCE_ROOT/tests/gsrv/lib.sh"
nginx_start
gsrv_start p.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out"
grep -q "listening on http://127.0.0.1:$PROXY_PORT, forwarding to $NGINX_URL" "$PROXY_LOG" || fail "no HTTP listener"
grep -q "listening on grpc://127.0.0.1:$GRPC_PORT, forwarding to $NGINX_URL" "$PROXY_LOG" || fail "no gRPC listener"

# 1.
enc build.bazel.remote.execution.v2.GetCapabilitiesRequest <<<'instance_name: "x"' >"$tf_tmp/capreq"
gcall cap $REAPI.Capabilities/GetCapabilities "$tf_tmp/capreq"
want_status capabilities 0
caps=$(dec build.bazel.remote.execution.v2.ServerCapabilities "$tf_tmp/cap.0")
for want in "digest_functions: SHA256" "update_enabled: true" "max_batch_total_size_bytes: 4194304" "major: 2"; do
  assert_contains "$caps" "$want" "capabilities"
done
echo "1. capabilities: ok"

# 2. A Write in three messages of 1 MiB.
h=$(blob "$tf_tmp/big" $((3 << 20)))
size=$((3 << 20))
for i in 0 1 2; do
  { printf 'write_offset: %d\n' $((i << 20))
    [ "$i" = 0 ] && printf 'resource_name: "inst/uploads/6c1e2e1a-0000-4000-8000-000000000001/blobs/%s/%d"\n' "$h" "$size"
    [ "$i" = 2 ] && echo 'finish_write: true'
    printf 'data: "%s"\n' "$(dd if="$tf_tmp/big" bs=1M skip=$i count=1 status=none | od -An -v -tx1 | tr -d ' \n' | sed 's/../\\x&/g')"
  } | enc google.bytestream.WriteRequest >"$tf_tmp/w$i"
done
gcall w $BS/Write "$tf_tmp/w0" "$tf_tmp/w1" "$tf_tmp/w2"
want_status write 0
assert_contains "$(dec google.bytestream.WriteResponse "$tf_tmp/w.0")" "committed_size: $size" "WriteResponse"
cmp -s "$NGINX_CACHE/cas/$h" "$tf_tmp/big" || fail "the written blob is not in nginx intact"
# The same bytes under another name: refused, not stored.
bad=$(printf '%064d' 7)
{ printf 'resource_name: "uploads/u/blobs/%s/%d"\nwrite_offset: 0\nfinish_write: true\n' "$bad" 5; echo 'data: "hello"'; } \
  | enc google.bytestream.WriteRequest >"$tf_tmp/wbad"
gcall wbad $BS/Write "$tf_tmp/wbad"
want_status "write of wrong bytes" 3
[ ! -e "$NGINX_CACHE/cas/$bad" ] || fail "a blob that does not hash to its name was stored"
h5=$(printf 'hello' | sha256sum | cut -c1-64)
{ printf 'resource_name: "uploads/u/blobs/%s/5"\nwrite_offset: 0\n' "$h5"; echo 'data: "hel"'; } \
  | enc google.bytestream.WriteRequest >"$tf_tmp/wpart"
gcall wpart $BS/Write "$tf_tmp/wpart"
want_status "write without finish_write" 3
assert_contains "$gmsg" "finish_write" "unfinished write"
[ ! -e "$NGINX_CACHE/cas/$h5" ] || fail "an unfinished upload was stored"
echo "2. ByteStream Write: ok"

# 3.
empty=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
gtext fmb $REAPI.ContentAddressableStorage/FindMissingBlobs build.bazel.remote.execution.v2.FindMissingBlobsRequest \
  build.bazel.remote.execution.v2.FindMissingBlobsResponse <<EOT
blob_digests { hash: "$h" size_bytes: $size }
blob_digests { hash: "$h5" size_bytes: 5 }
blob_digests { hash: "$empty" size_bytes: 0 }
EOT
assert_contains "$resp" "$h5" "FindMissingBlobs"
[ "$(grep -c 'hash:' <<<"$resp")" = 1 ] || fail "FindMissingBlobs: $resp"
echo "3. FindMissingBlobs: ok"

# 4.
printf 'resource_name: "blobs/%s/%d"\n' "$h" "$size" | enc google.bytestream.ReadRequest >"$tf_tmp/r"
TF_GSRV_READ=1 gcall rd $BS/Read "$tf_tmp/r"
want_status read 0
cmp -s "$tf_tmp/rd" "$tf_tmp/big" || fail "ByteStream Read: other bytes"
[ "$gmsgs" -ge 12 ] || fail "ByteStream Read: $gmsgs messages for 3 MiB (want chunks of at most 256 KiB)"
printf 'resource_name: "i/blobs/%s/%d"\nread_offset: 1000\nread_limit: 300000\n' "$h" "$size" \
  | enc google.bytestream.ReadRequest >"$tf_tmp/rpart"
TF_GSRV_READ=1 gcall rdpart $BS/Read "$tf_tmp/rpart"
want_status "read with offset" 0
dd if="$tf_tmp/big" of="$tf_tmp/part" bs=1000 skip=1 count=300 status=none
cmp -s "$tf_tmp/part" "$tf_tmp/rdpart" || fail "read_offset/read_limit: other bytes"
printf 'resource_name: "blobs/%s/5"\n' "$h5" | enc google.bytestream.ReadRequest >"$tf_tmp/rmiss"
TF_GSRV_READ=1 gcall rdmiss $BS/Read "$tf_tmp/rmiss"
want_status "read of a missing blob" 5
printf 'resource_name: "uploads/x/blobs/%s/%d"\n' "$h" "$size" | enc google.bytestream.QueryWriteStatusRequest >"$tf_tmp/q"
gcall q $BS/QueryWriteStatus "$tf_tmp/q"
want_status QueryWriteStatus 0
assert_contains "$(dec google.bytestream.QueryWriteStatusResponse "$tf_tmp/q.0")" "complete: true" "QueryWriteStatus"
echo "4. ByteStream Read: ok"

# 5.
h6=$(printf 'world!' | sha256sum | cut -c1-64)
gtext bu $REAPI.ContentAddressableStorage/BatchUpdateBlobs build.bazel.remote.execution.v2.BatchUpdateBlobsRequest \
  build.bazel.remote.execution.v2.BatchUpdateBlobsResponse <<EOT
requests { digest { hash: "$h6" size_bytes: 6 } data: "world!" }
requests { digest { hash: "$h5" size_bytes: 5 } data: "hellO" }
EOT
[ "$(grep -c 'code: 3' <<<"$resp")" = 1 ] || fail "BatchUpdateBlobs: want one INVALID_ARGUMENT: $resp"
[ "$(cat "$NGINX_CACHE/cas/$h6")" = 'world!' ] || fail "BatchUpdateBlobs did not store world!"
[ ! -e "$NGINX_CACHE/cas/$h5" ] || fail "BatchUpdateBlobs stored bytes of another hash"
gtext br $REAPI.ContentAddressableStorage/BatchReadBlobs build.bazel.remote.execution.v2.BatchReadBlobsRequest \
  build.bazel.remote.execution.v2.BatchReadBlobsResponse <<EOT
digests { hash: "$h6" size_bytes: 6 }
digests { hash: "$h5" size_bytes: 5 }
EOT
assert_contains "$resp" 'data: "world!"' "BatchReadBlobs"
assert_contains "$resp" "code: 5" "BatchReadBlobs (the missing blob)"
echo "5. batch calls: ok"

# 6. An ActionResult naming the 3 MiB blob and world!.
key=$(printf 'an action' | sha256sum | cut -c1-64)
cat >"$tf_tmp/ar.txt" <<EOT
output_files { path: "bazel-out/k8-fastbuild/bin/pkg/big" digest { hash: "$h" size_bytes: $size } is_executable: true }
output_files { path: "bazel-out/k8-fastbuild/bin/pkg/w" digest { hash: "$h6" size_bytes: 6 } }
exit_code: 0
EOT
enc build.bazel.remote.execution.v2.ActionResult <"$tf_tmp/ar.txt" >"$tf_tmp/ar.bin"
{ printf 'action_digest { hash: "%s" size_bytes: 140 }\naction_result {\n' "$key"; cat "$tf_tmp/ar.txt"; echo '}'; } \
  | enc build.bazel.remote.execution.v2.UpdateActionResultRequest >"$tf_tmp/upd"
gcall upd $REAPI.ActionCache/UpdateActionResult "$tf_tmp/upd"
want_status UpdateActionResult 0
cmp -s "$NGINX_CACHE/ac/$key" "$tf_tmp/ar.bin" || fail "the stored ActionResult differs from the one sent"
req GET "$PROXY_URL/ac/$key"
[ "$code" = 200 ] && cmp -s "$tf_tmp/body" "$tf_tmp/ar.bin" || fail "the HTTP side: $code"
printf 'action_digest { hash: "%s" size_bytes: 140 }\n' "$key" | enc build.bazel.remote.execution.v2.GetActionResultRequest >"$tf_tmp/get"
gcall get $REAPI.ActionCache/GetActionResult "$tf_tmp/get"
want_status GetActionResult 0
cmp -s "$tf_tmp/get.0" "$tf_tmp/ar.bin" || fail "GetActionResult: other bytes"
# An entry naming a blob the cache does not have (h5 was never stored).
key2=$(printf 'another action' | sha256sum | cut -c1-64)
printf 'action_digest { hash: "%s" size_bytes: 140 }\naction_result { output_files { path: "o" digest { hash: "%s" size_bytes: 5 } } }\n' \
  "$key2" "$h5" | enc build.bazel.remote.execution.v2.UpdateActionResultRequest >"$tf_tmp/upd2"
gcall upd2 $REAPI.ActionCache/UpdateActionResult "$tf_tmp/upd2"
want_status "UpdateActionResult (2)" 0
printf 'action_digest { hash: "%s" size_bytes: 140 }\n' "$key2" | enc build.bazel.remote.execution.v2.GetActionResultRequest >"$tf_tmp/get2"
gcall get2 $REAPI.ActionCache/GetActionResult "$tf_tmp/get2"
want_status "GetActionResult naming a missing blob" 5
assert_contains "$gmsg" "$h5" "validation"
printf 'action_digest { hash: "%s" size_bytes: 1 }\n' "$(printf '%064d' 9)" | enc build.bazel.remote.execution.v2.GetActionResultRequest >"$tf_tmp/getmiss"
gcall getmiss $REAPI.ActionCache/GetActionResult "$tf_tmp/getmiss"
want_status "GetActionResult miss" 5
echo "6. action cache: ok"

# 7. Faults.
printf '\xff\xff\xff' >"$tf_tmp/junk"
gcall junk $REAPI.ActionCache/GetActionResult "$tf_tmp/junk"
want_status "a request that is not a GetActionResultRequest" 3
assert_contains "$gmsg" "GetActionResultRequest" "malformed request"
printf 'action_digest { hash: "ABC" size_bytes: 1 }\n' | enc build.bazel.remote.execution.v2.GetActionResultRequest >"$tf_tmp/getbad"
gcall getbad $REAPI.ActionCache/GetActionResult "$tf_tmp/getbad"
want_status "an upper-case digest" 3
gcall nosuch $REAPI.Execution/Execute "$tf_tmp/getbad"
want_status "an unknown method" 12
assert_contains "$gmsg" "Execution/Execute" "unknown method"
head -c $((66 << 20)) /dev/zero >"$tf_tmp/huge"
gcall huge $REAPI.ContentAddressableStorage/BatchUpdateBlobs "$tf_tmp/huge"
want_status "a 66 MiB message" 8
# A gRPC frame that promises 1000 bytes and ends after 3, over curl's own HTTP/2.
printf '\x00\x00\x00\x03\xe8abc' >"$tf_tmp/frame"
curl -sS --http2-prior-knowledge -o /dev/null -D "$tf_tmp/frame.h" -H 'content-type: application/grpc' -H 'te: trailers' \
  --data-binary @"$tf_tmp/frame" "http://$GRPC_ADDR$REAPI.ActionCache/GetActionResult" || true
grep -qi '^grpc-status: *[1-9]' "$tf_tmp/frame.h" || { cat "$tf_tmp/frame.h"; fail "a broken frame got no error status"; }
kill -0 "$PROXY_PID" || fail "the proxy died"
gcall cap2 $REAPI.Capabilities/GetCapabilities "$tf_tmp/capreq"
want_status "capabilities after the faults" 0
echo "7. faults: ok"

proxy_stop
[ "$proxy_rc" = 0 ] || { cat "$PROXY_LOG"; fail "exit $proxy_rc after SIGTERM"; }
echo "gsrv_proxy: ok"
