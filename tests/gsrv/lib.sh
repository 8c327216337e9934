# Helpers for the gRPC front end's tests. Source after tests/lib/harness.sh
# and tests/proxy/lib.sh.
#   gsrv_start LOG ARGS...   proxy_start with --listen=grpc://127.0.0.1:0 as well:
#                            sets GRPC_PORT, GRPC_ADDR (127.0.0.1:PORT), GRPC_URL
#   gcall NAME METHOD [MSGFILE...]  one call with tests/gsrv/gsrv_call: sets
#                            gstatus (the code), gmsg (the status message),
#                            gmsgs (response messages: $tf_tmp/NAME.0, ...)
#   gtext NAME METHOD REQTYPE RESPTYPE  one unary call of the request written
#                            as protobuf text on stdin; status 0 wanted; sets resp
#                            (the response as protobuf text)
#   enc TYPE                 stdin (protobuf text) -> binary, with our proto/ schemas
#   dec TYPE FILE            binary -> protobuf text
#   REAPI, BS, BES           the method prefixes
#   msgs                     tests/gsrv/msgs.py (request messages)
#   bep_uuid JSON            the BuildStarted uuid of a BEP JSON file
need protoc
: "${TF_GSRV_CALL:?}"
REAPI=/build.bazel.remote.execution.v2
BS=/google.bytestream.ByteStream
BES=/google.devtools.build.v1.PublishBuildEvent
msgs="$TF_SOURCE_ROOT/tests/gsrv/msgs.py"
bep_uuid() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["started"]["uuid"])' "$1"; }

gsrv_listening() {
  GRPC_PORT=$(sed -n 's|^topfetch proxy: listening on grpc://[^ ,]*:\([0-9]*\),.*|\1|p' "$PROXY_LOG")
  [ -n "$GRPC_PORT" ]
}

gsrv_start() {
  local log=$1
  shift
  proxy_start "$log" --listen=grpc://127.0.0.1:0 "$@"
  wait_for 30 "the proxy's grpc:// line in $PROXY_LOG" gsrv_listening
  GRPC_ADDR="127.0.0.1:$GRPC_PORT"
  GRPC_URL="grpc://$GRPC_ADDR"
}

gcall() {
  local name=$1 method=$2 out
  shift 2
  out=$("$TF_GSRV_CALL" "$GRPC_ADDR" "$method" "$tf_tmp/$name" "$@") || fail "gsrv_call $method did not run: $out"
  gmsgs=$(sed -n 's/^messages //p' <<<"$out")
  gstatus=$(sed -n 's/^status \([0-9]*\).*/\1/p' <<<"$out")
  gmsg=$(sed -n 's/^status [0-9]* \?//p' <<<"$out")
}

enc() { protoc --proto_path="$TF_SOURCE_ROOT/proto" --encode="$1" remote_execution.proto bytestream.proto; }
dec() { protoc --proto_path="$TF_SOURCE_ROOT/proto" --decode="$1" remote_execution.proto bytestream.proto <"$2"; }

# want_status NAME CODE: the last call ended with CODE.
want_status() {
  [ "$gstatus" = "$2" ] || fail "$1: gRPC status $gstatus ($gmsg), want $2"
}

gtext() {
  enc "$3" >"$tf_tmp/$1.req"
  gcall "$1" "$2" "$tf_tmp/$1.req"
  want_status "$2" 0
  resp=$(dec "$4" "$tf_tmp/$1.0")
}
