# The misbehaving cache for tests. Source after tests/lib/harness.sh.
#   bad_start ROOT FAULT  starts badcache.py (see it for the faults) on a free port: sets BAD_PID, BAD_URL
#   bad_stop              stops it
need python3
bad_start() {
  rm -f "$tf_tmp/badcache.port"
  python3 "$TF_SOURCE_ROOT/tests/faults/badcache.py" "$1" "$2" "$tf_tmp/badcache.port" >>"$tf_tmp/badcache.log" 2>&1 &
  BAD_PID=$!
  tf_track $BAD_PID
  wait_file "$tf_tmp/badcache.port" 30
  BAD_URL="http://127.0.0.1:$(cat "$tf_tmp/badcache.port")"
}
bad_stop() { kill "$BAD_PID" 2>/dev/null || true; wait "$BAD_PID" 2>/dev/null || true; }
