# Helpers for the serve tests; source after tests/lib/harness.sh.
#   serve_start LOG ARGS...   starts `topfetch serve ARGS` in the background
#                             (stderr to LOG), waits for its "listening on" line
#   serve_stop SIG RC         stops it by its pid; its exit code must be RC and
#                             no sanitizer may have spoken
#   probe ARGS...             runs serve_probe (URL first) into $probe; a reply
#                             must come and no sanitizer may speak
#   client ARGS...            runs the example client into $client, exit code in $rc
#   serve_once ARGS...        runs `topfetch serve ARGS` expecting it to refuse and
#                             exit: output in $out, exit code in $rc (124 if it ran on)
serve_pid=""
serve_log=""

sanitizer_check() { # FILE...
  if grep -E "ERROR: (Address|Leak)Sanitizer|runtime error:" "$@" >&2; then
    fail "sanitizer report in $*"
  fi
}

serve_start() {
  serve_log=$1
  shift
  "$TOPFETCH" serve "$@" >"$serve_log.stdout" 2>"$serve_log" &
  serve_pid=$!
  tf_track "$serve_pid"
  poll_until 60 serve_listening && grep -q "listening on" "$serve_log" && return 0
  cat "$serve_log" >&2
  fail "topfetch serve did not start"
}

# True once the service said it listens, or exited (serve_start tells which).
serve_listening() { grep -q "listening on" "$serve_log" || ! kill -0 "$serve_pid" 2>/dev/null; }

serve_stop() {
  local sig=$1 want=$2 code
  kill -"$sig" "$serve_pid"
  set +e
  wait "$serve_pid"
  code=$?
  set -e
  serve_pid=""
  sanitizer_check "$serve_log"
  if [ "$code" -ne "$want" ]; then
    cat "$serve_log" >&2
    fail "topfetch serve exited $code after SIG$sig (want $want)"
  fi
}

serve_kill() {
  if [ -n "$serve_pid" ]; then
    kill -9 "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
  fi
  serve_pid=""
}

probe() {
  local code
  set +e
  probe=$("$TF_PROBE" "$@" 2>&1)
  code=$?
  set -e
  echo "$probe" >"$tf_tmp/probe.out"
  sanitizer_check "$tf_tmp/probe.out"
  [ "$code" -eq 0 ] || fail "no reply to serve_probe $* (exit $code): $probe"
}

client() {
  set +e
  "$TF_CLIENT" "$@" >"$tf_tmp/client.out" 2>&1
  rc=$?
  set -e
  client=$(cat "$tf_tmp/client.out")
  echo "$client"
  sanitizer_check "$tf_tmp/client.out"
}

serve_once() {
  set +e
  out=$(timeout 20 "$TOPFETCH" serve "$@" 2>&1)
  rc=$?
  set -e
  echo "$out" >"$tf_tmp/once.out"
  sanitizer_check "$tf_tmp/once.out"
}

trap 'serve_kill; tf_cleanup' EXIT
