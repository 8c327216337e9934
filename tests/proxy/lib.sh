# Helpers for the proxy tests. Source after tests/lib/harness.sh.
#   proxy_start LOG ARGS...  starts `topfetch proxy --listen=127.0.0.1:0 ARGS...` in the
#                            background: sets PROXY_PID, PROXY_URL, PROXY_LOG ($tf_tmp/LOG)
#   proxy_stop               SIGTERM, then proxy_wait
#   proxy_wait               waits (up to 120 s) for it to exit; sets proxy_rc
#   req METHOD URL [curl args...]   one request: sets code and body ($tf_tmp/body)
#   proxy_refuses            true once new connections are refused (a signal was handled)
#   vmhwm                    the proxy's peak resident set (/proc/PID/status VmHWM), in KiB
need curl
PROXY_PID=""

proxy_start() {
  local name=$1 i
  shift
  PROXY_LOG="$tf_tmp/$name"
  : >"$PROXY_LOG" # before the child opens it: the loop below reads it at once
  "$TOPFETCH" proxy --listen=127.0.0.1:0 "$@" >"$PROXY_LOG" 2>&1 &
  PROXY_PID=$!
  poll_until 60 proxy_listening && return 0
  cat "$PROXY_LOG" >&2
  fail "the proxy did not start listening"
}

# True once the proxy printed its port (sets PROXY_PORT, PROXY_URL); fails the
# test if it exited instead.
proxy_listening() {
  PROXY_PORT=$(sed -n 's|^topfetch proxy: listening on http://[^ ,]*:\([0-9]*\),.*|\1|p' "$PROXY_LOG")
  if [ -n "$PROXY_PORT" ]; then
    PROXY_URL="http://127.0.0.1:$PROXY_PORT"
    return 0
  fi
  if ! kill -0 "$PROXY_PID" 2>/dev/null; then
    cat "$PROXY_LOG" >&2
    fail "the proxy exited at start"
  fi
  return 1
}

proxy_exited() { ! kill -0 "$PROXY_PID" 2>/dev/null; }

proxy_wait() {
  if ! poll_until 120 proxy_exited; then
    kill -KILL "$PROXY_PID"
    cat "$PROXY_LOG" >&2
    fail "the proxy did not exit"
  fi
  set +e
  wait "$PROXY_PID"
  proxy_rc=$?
  set -e
  PROXY_PID=""
  # A leak report exits 1, like "some files failed": look for the report itself.
  if grep -q 'Sanitizer\|runtime error' "$PROXY_LOG"; then
    cat "$PROXY_LOG" >&2
    fail "a sanitizer reported an error in the proxy"
  fi
}

proxy_stop() {
  kill -TERM "$PROXY_PID"
  proxy_wait
}

proxy_cleanup() {
  if [ -n "$PROXY_PID" ]; then kill -KILL "$PROXY_PID" 2>/dev/null || true; fi
  tf_cleanup
}
trap proxy_cleanup EXIT

req() {
  local m=$1 u=$2
  shift 2
  if [ "$m" = HEAD ]; then
    code=$(curl -sS -o "$tf_tmp/body" -w '%{http_code}' -I "$@" "$u")
  else
    code=$(curl -sS -o "$tf_tmp/body" -w '%{http_code}' -X "$m" "$@" "$u")
  fi
  body=$(tr -d '\000' <"$tf_tmp/body")
}

# True once the proxy refuses new connections (it has begun to stop).
proxy_refuses() { ! port_open "$PROXY_PORT"; }

vmhwm() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$PROXY_PID/status"; }

# A blob of n random bytes in a file; prints its hash. blob FILE N
blob() {
  head -c "$2" /dev/urandom >"$1"
  sha256sum "$1" | cut -d' ' -f1
}
