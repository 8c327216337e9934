# Real Bazel 4.2.3 in a test's own folders. Source after harness.sh.
#   bazel_setup WORKSPACE_DIR   copies the workspace to $tf_tmp/ws (BZ_WS), keeps
#       Bazel's state in $tf_tmp/obase and its home in $tf_tmp/home, and makes
#       the exit trap shut the Bazel server down (then end it by its pid)
#   bazel_run ARGS...           bazel in that workspace, offline, with a clean
#       environment (no machine details in what it records)
bazel_setup() {
  need bazel
  BZ_WS="$tf_tmp/ws"
  BZ_ROOT="$tf_tmp/obase"
  cp -r "$1" "$BZ_WS"
  chmod -R u+w "$BZ_WS"
  mkdir -p "$tf_tmp/home"
  trap 'bazel_stop; tf_cleanup' EXIT
}
bazel_run() {
  (cd "$BZ_WS" && env -i HOME="$tf_tmp/home" PATH=/usr/bin:/bin LANG=C.UTF-8 \
    bazel --output_user_root="$BZ_ROOT" "$@")
}
# The Bazel server (a JVM that outlives the client): `bazel shutdown`, then
# by its pid (tf_cleanup) whatever is left.
bazel_stop() {
  local pid
  pid=$(cat "$BZ_ROOT"/*/server/server.pid.txt 2>/dev/null || true)
  bazel_run shutdown >/dev/null 2>&1 || true
  [ -n "$pid" ] && grep -qa bazel "/proc/$pid/cmdline" 2>/dev/null && tf_track "$pid"
  true
}
