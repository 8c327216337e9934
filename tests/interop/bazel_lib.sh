# Real Bazel 4.2.3 for the interop tests. Source after tests/lib/harness.sh
# and tests/proxy/lib.sh.
#   bazel_ws NAME        copies tests/e2e/workspace to $tf_tmp/NAME (prints its path)
#   bz WS ARGS...        bazel in workspace WS under env -i, with the test's one
#                        --output_user_root (each workspace its own server)
#   bazel_cleanup        `bazel shutdown` of every server started, then by pid
#                        (tf_track) whatever is left; installed as the EXIT trap
need bazel
[ -d /usr/src/bazel-bootstrap/mock_repos ] || fail "bazel-bootstrap-source is not installed (run scripts/install-deps.sh)"
bazel_root="$tf_tmp/obase"
bazel_wss=()
mkdir -p "$tf_tmp/home"

bazel_ws() {
  local ws="$tf_tmp/$1"
  cp -r "$TF_SOURCE_ROOT/tests/e2e/workspace" "$ws"
  chmod -R u+w "$ws"
  echo "$ws"
}

bz() {
  local ws=$1
  shift
  case " ${bazel_wss[*]} " in *" $ws "*) ;; *) bazel_wss+=("$ws") ;; esac
  (cd "$ws" && env -i HOME="$tf_tmp/home" PATH=/usr/bin:/bin LANG=C.UTF-8 bazel --output_user_root="$bazel_root" "$@")
}

bazel_cleanup() {
  local ws f pid
  for ws in "${bazel_wss[@]}"; do bz "$ws" shutdown >/dev/null 2>&1 || true; done
  # Still a Bazel server (not a reused pid)? Then tf_cleanup ends it.
  for f in "$bazel_root"/*/server/server.pid.txt; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    grep -qa bazel "/proc/$pid/cmdline" 2>/dev/null && tf_track "$pid"
  done
  proxy_cleanup
}
trap bazel_cleanup EXIT
