#!/usr/bin/env bash
# The gRPC front end's streams, with a client made with the gRPC C core
# (tests/gsrv/gsrv_call.c) and nginx upstream:
#  1. A 100 MB ByteStream Write in 1 MiB messages and its Read: the bytes
#     arrive intact both ways and the proxy's peak RSS stays far below the
#     blob's size (bodies stream through, one message at a time).
#  2. The Build Event Service: a stream of a real Bazel 4.2.3 BEP (45 events)
#     cut after event 20, then retried from event 11 (as Bazel resends what
#     may not have been acknowledged): every request is acknowledged with its
#     sequence number, in order, and the invocation's gated BEP in
#     --build_event_dir holds every event exactly once, ending with
#     last_message. A sequence gap and an invocation id that is no file name
#     are refused (INVALID_ARGUMENT) and the server keeps serving.
#  3. The upstream stopped: GetActionResult answers UNAVAILABLE; the proxy
#     keeps serving (Capabilities).
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
. "$TF_SOURCE_ROOT/tests/gsrv/lib.sh"
fx="${TF_FIXTURES:?}/run2_minimal_hits"
nginx_start
ev="$tf_tmp/events"
# (ASan keeps freed memory in quarantine, 256 MB by default: each message is
# a fresh allocation, so its peak would measure the quarantine, not us.)
# The proxy needs about 7 MiB more than at rest (a 4 MiB window per stream).
ASAN_OPTIONS="${ASAN_OPTIONS:-}:quarantine_size_mb=4" \
  gsrv_start p.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out" --build_event_dir="$ev" \
  --remote_download_outputs=minimal
enc build.bazel.remote.execution.v2.GetCapabilitiesRequest </dev/null >"$tf_tmp/capreq"
gcall cap0 $REAPI.Capabilities/GetCapabilities "$tf_tmp/capreq"
want_status "Capabilities" 0
base=$(vmhwm)

# 1.
size=$((100 << 20))
h=$(blob "$tf_tmp/big" "$size")
mkdir "$tf_tmp/w"
gcall w $BS/Write $(python3 "$msgs" write "$tf_tmp/big" "$h" $((1 << 20)) "$tf_tmp/w/m")
want_status "a 100 MB Write" 0
cmp -s "$NGINX_CACHE/cas/$h" "$tf_tmp/big" || fail "the 100 MB blob is not in nginx intact"
rm -r "$tf_tmp/w"
printf 'resource_name: "blobs/%s/%d"\n' "$h" "$size" | enc google.bytestream.ReadRequest >"$tf_tmp/r"
TF_GSRV_READ=1 gcall rd $BS/Read "$tf_tmp/r"
want_status "a 100 MB Read" 0
cmp -s "$tf_tmp/rd" "$tf_tmp/big" || fail "ByteStream Read of 100 MB: other bytes"
peak=$(vmhwm)
echo "1. 100 MB up and down; proxy peak RSS $((peak / 1024)) MiB, $((base / 1024)) MiB before"
[ $((peak - base)) -lt $((32 * 1024)) ] || fail "the proxy's peak RSS grew by $(((peak - base) / 1024)) MiB for a 100 MB blob"
rm "$tf_tmp/rd" "$tf_tmp/big"

# 2.
inv=$(bep_uuid "$fx/bep.json")
mkdir "$tf_tmp/b"
acks() { # NAME: the sequence numbers acknowledged, one line
  python3 - "$tf_tmp/$1" "$gmsgs" <<'PY'
import sys
out = []
for k in range(int(sys.argv[2])):
    d, i, seq = open(f"{sys.argv[1]}.{k}", "rb").read(), 0, None
    while i < len(d):
        tag = d[i]; i += 1
        if tag == 0x10:
            n = s = 0
            while True:
                b = d[i]; i += 1; n |= (b & 0x7F) << s; s += 7
                if not b & 0x80: break
            seq = n
        elif tag == 0x0a:
            n = d[i]; i += 1 + n
        else:
            raise SystemExit(f"tag {tag}")
    out.append(str(seq))
print(" ".join(out))
PY
}
gcall s1 $BES/PublishBuildToolEventStream $(python3 "$msgs" bes "$fx/bep.bin" "$inv" 1 20 "$tf_tmp/b/e")
want_status "the first stream" 0
[ "$(acks s1)" = "$(seq -s ' ' 1 20)" ] || fail "the first stream's acknowledgements: $(acks s1)"
wait_line "$PROXY_LOG" "invocation $inv: its event stream broke after event 20" 30
gcall s2 $BES/PublishBuildToolEventStream $(python3 "$msgs" bes "$fx/bep.bin" "$inv" 11 46 "$tf_tmp/b/e")
want_status "the retried stream" 0
[ "$(acks s2)" = "$(seq -s ' ' 11 46)" ] || fail "the retried stream's acknowledgements: $(acks s2)"
wait_line "$PROXY_LOG" "^topfetch proxy: build $inv ended" 60
python3 - "$ev/$inv.json" "$fx/bep.json" <<'PY' || fail "the gated BEP of the retried invocation"
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1])]
theirs = [json.loads(l) for l in open(sys.argv[2])]
ids = [json.dumps(e["id"], sort_keys=True) for e in ours]
assert len(ids) == len(set(ids)) == len(theirs) == 45, (len(ids), len(set(ids)), len(theirs))
assert sorted(ids) == sorted(json.dumps(e["id"], sort_keys=True) for e in theirs)
assert ours[-1].get("lastMessage")
PY
python3 "$msgs" bes "$fx/bep.bin" gap-test 1 1 "$tf_tmp/b/g" >/dev/null
python3 "$msgs" bes "$fx/bep.bin" gap-test 3 3 "$tf_tmp/b/g" >/dev/null
gcall gap $BES/PublishBuildToolEventStream "$tf_tmp/b/g.1" "$tf_tmp/b/g.3"
want_status "a sequence gap" 3
assert_contains "$gmsg" "sequence number 3 after 1" "gap"
python3 "$msgs" bes "$fx/bep.bin" "../x" 1 1 "$tf_tmp/b/x" >/dev/null
gcall badid $BES/PublishBuildToolEventStream "$tf_tmp/b/x.1"
want_status "an invocation id with a slash" 3
[ ! -e "$tf_tmp/x.bin" ] && [ ! -e "$ev/../x.bin" ] || fail "a file was made outside --build_event_dir"
echo "2. BES: a cut stream retried: 45 events once each; gap and bad id refused"

# 3.
nginx_stop
printf 'action_digest { hash: "%064d" size_bytes: 1 }\n' 1 | enc build.bazel.remote.execution.v2.GetActionResultRequest >"$tf_tmp/get"
gcall get $REAPI.ActionCache/GetActionResult "$tf_tmp/get"
want_status "GetActionResult with the upstream stopped" 14
assert_contains "$gmsg" "127.0.0.1:$NGINX_PORT" "upstream failure"
gcall cap $REAPI.Capabilities/GetCapabilities "$tf_tmp/capreq"
want_status "Capabilities with the upstream stopped" 0
echo "3. upstream stopped: UNAVAILABLE, still serving"
proxy_stop
[ "$proxy_rc" -eq 0 ] || { cat "$PROXY_LOG"; fail "exit $proxy_rc"; }
echo "gsrv_stream: ok"
