# The counting TCP relay (relay.py) in front of the worker. Source after
# tests/lib/reapi_worker.sh, once the worker runs.
#   relay_start NAME [--cut BYTES] [--rate BYTES_PER_S]   sets RELAY_URL
#   relay_total NAME   bytes the worker sent through it so far
#   relay_cuts NAME    connections it cut
#   relay_past NAME BYTES   true once more than BYTES went through
relay_start() {
  local name=$1
  shift
  python3 "$TF_SOURCE_ROOT/tests/grpc/relay.py" "$WORKER_PORT" "$tf_tmp/$name.port" "$tf_tmp/$name.stats" "$@" \
    >"$tf_tmp/$name.log" 2>&1 &
  tf_track $!
  wait_file "$tf_tmp/$name.port"
  RELAY_URL="grpc://127.0.0.1:$(cat "$tf_tmp/$name.port")"
}
relay_total() { awk '{print $2}' "$tf_tmp/$1.stats"; }
relay_cuts() { awk '{print $4}' "$tf_tmp/$1.stats"; }
relay_past() { [ "$(relay_total "$1")" -gt "$2" ]; }
