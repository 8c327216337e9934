# Shared helpers for topfetch's shell tests. Source it; it sets `set -euo pipefail`.
#   TOPFETCH     the binary under test (set by meson)
#   tf_tmp       a fresh folder removed at exit
#   nginx_start  starts a real nginx WebDAV cache on a free loopback port:
#                sets NGINX_ROOT, NGINX_PORT, NGINX_URL, NGINX_CACHE, NGINX_LOG
#   nginx_stop   stops it by its pid (also done at exit)
#   nginx_count PATTERN   requests in nginx's log matching PATTERN, once the log
#                caught up with what clients saw (nginx_sync)
#   tf_track PID...            background helpers that tf_cleanup kills (TERM, then KILL) on every exit
#   wait_for SECONDS WHAT CMD...   polls CMD until it succeeds; fails naming WHAT after SECONDS
#   wait_port PORT [SECONDS]   until something accepts on 127.0.0.1:PORT
#   wait_file FILE [SECONDS]   until FILE exists and is not empty
#   wait_line FILE PATTERN [SECONDS]   until a line of FILE matches PATTERN (grep -E)
#   read_upto PID FILE BYTES   true once PID has read FILE that far (for wait_for)
# Background helpers write to files under $tf_tmp, never to the test's own
# stdout/stderr: meson reads those until every holder has closed them.
# Readiness is polled, never assumed because time passed.
set -euo pipefail

: "${TOPFETCH:?TOPFETCH must point at the topfetch binary}"
tf_tmp=$(mktemp -d /tmp/tf-test.XXXXXX)
chmod 755 "$tf_tmp"
NGINX_PID_FILE=""
tf_bg_pids=()

# A process's start time (clock ticks since boot), empty once it is gone:
# with the pid it names the process, so a pid the kernel gave to another
# process since (pids wrap at 32768 here, fast under Bazel) is never signalled.
tf_start_time() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0; s=${s##*) }; set -- $s; echo "${20}"; }
tf_track() { local p; for p; do tf_bg_pids+=("$p:$(tf_start_time "$p")"); done; }
# Is the tracked process (PID:START) still that process?
tf_same() { [ -n "${1#*:}" ] && [ "$(tf_start_time "${1%%:*}")" = "${1#*:}" ]; }

# Stops every tracked helper still running: SIGTERM, up to 5 s, then SIGKILL.
tf_stop_tracked() {
  local e alive=()
  for e in "${tf_bg_pids[@]}"; do
    if tf_same "$e"; then
      kill -TERM "${e%%:*}" 2>/dev/null || true
      alive+=("$e")
    fi
  done
  for e in "${alive[@]}"; do
    poll_until 5 tf_gone "$e" || true
    ! tf_same "$e" || kill -KILL "${e%%:*}" 2>/dev/null || true
    wait "${e%%:*}" 2>/dev/null || true
  done
  tf_bg_pids=()
}

tf_cleanup() {
  tf_stop_tracked
  nginx_stop
  rm -rf "$tf_tmp"
}
trap tf_cleanup EXIT
# A signal (meson's timeout sends SIGTERM) ends the test through the EXIT
# trap too, which bash would otherwise skip.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

fail() {
  echo "FAIL: $*" >&2
  # A failure that follows from the test's own folder vanishing is not the
  # product's: say so (something outside the test removed /tmp/tf-test.*).
  [ -d "$tf_tmp" ] || echo "FAIL: note: this test's folder $tf_tmp no longer exists" >&2
  exit 1
}
need() { command -v "$1" >/dev/null 2>&1 || fail "'$1' is not installed; run scripts/install-deps.sh"; }

assert_contains() { # haystack needle [what]
  case "$1" in *"$2"*) ;; *) fail "${3:-output} does not contain '$2'; it was: $1" ;; esac
}

# Runs topfetch with args, capturing stdout+stderr in $out and the exit code in $rc.
run_tf() {
  set +e
  out=$("$TOPFETCH" "$@" 2>&1)
  rc=$?
  set -e
}

# The one readiness loop of the suite: runs CMD until it succeeds, at most
# SECONDS. Between two checks it blocks on a pipe nobody writes to, for at most
# 20 ms: the poll interval, never a wait that stands in for readiness.
mkfifo "$tf_tmp/.poll"
exec {tf_poll_fd}<>"$tf_tmp/.poll"
poll_until() { # SECONDS CMD...  -> 0 once CMD succeeded, 1 when the time ran out
  local end=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$end" ] || return 1
    read -r -t 0.02 -u "$tf_poll_fd" _ || true
  done
}
pid_gone() { ! kill -0 "$1" 2>/dev/null; }
tf_gone() { ! tf_same "$1"; }
wait_for() { # SECONDS WHAT CMD...
  local limit=$1 what=$2
  shift 2
  poll_until "$limit" "$@" || fail "$what: not within $limit s"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { wait_for "${2:-30}" "nothing accepts connections on 127.0.0.1:$1" port_open "$1"; }
wait_file() { wait_for "${2:-30}" "$1 did not appear" test -s "$1"; }
wait_line() { wait_for "${3:-30}" "no line matching '$2' in $1" grep -qsE -- "$2" "$1"; }

# True once process PID has read FILE up to BYTES: the offset of a descriptor
# it holds on FILE (a reader that follows a growing file).
read_upto() { # PID FILE BYTES
  local fd pos
  for fd in /proc/"$1"/fd/*; do
    [ "$(readlink "$fd" 2>/dev/null)" = "$2" ] || continue
    pos=$(sed -n 's/^pos:[[:space:]]*//p' "/proc/$1/fdinfo/${fd##*/}" 2>/dev/null)
    [ "${pos:-0}" -ge "$3" ] && return 0
  done
  return 1
}

# A loopback TCP port no socket uses now (none in /proc/net/tcp{,6} has it),
# below the kernel's range for outgoing connections. Whoever binds it may
# still lose a race: nginx_start retries.
free_port() {
  local p hex _
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 12000))
    printf -v hex ':%04X ' "$p"
    grep -qs -- "$hex" /proc/net/tcp /proc/net/tcp6 || { echo "$p"; return 0; }
  done
  fail "no free loopback port found"
}

# nginx_start [extra directives for the location block] [extra for the listen line] [extra server directives]
nginx_start() {
  need nginx
  need curl
  local extra="${1:-}" listen_extra="${2:-}" server_extra="${3:-}" user_line="" tries scheme=http
  NGINX_ROOT="$tf_tmp/nginx"
  NGINX_CACHE="$NGINX_ROOT/cache"
  NGINX_LOG="$NGINX_ROOT/access.log"
  mkdir -p "$NGINX_CACHE/ac" "$NGINX_CACHE/cas" "$NGINX_ROOT/tmp"
  if [ "$(id -u)" -eq 0 ]; then
    # The default worker user cannot create the cache folders (PUT -> 500).
    user_line="user www-data www-data;"
    chown -R www-data:www-data "$NGINX_CACHE" "$NGINX_ROOT/tmp"
  fi
  for tries in 1 2 3 4 5; do
    NGINX_PORT=$(free_port)
    cat >"$NGINX_ROOT/nginx.conf" <<CONF
$user_line
worker_processes 1;
daemon on;
pid $NGINX_ROOT/nginx.pid;
error_log $NGINX_ROOT/error.log;
events { worker_connections 1024; }
http {
  log_format tf '\$request_method \$uri \$status \$body_bytes_sent \$server_protocol conn=\$connection user=\$remote_user';
  access_log $NGINX_LOG tf;
  client_body_temp_path $NGINX_ROOT/tmp/body;
  proxy_temp_path $NGINX_ROOT/tmp/proxy;
  fastcgi_temp_path $NGINX_ROOT/tmp/fastcgi;
  uwsgi_temp_path $NGINX_ROOT/tmp/uwsgi;
  scgi_temp_path $NGINX_ROOT/tmp/scgi;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$NGINX_PORT $listen_extra;
    $server_extra
    location / {
      root $NGINX_CACHE;
      dav_methods PUT;
      create_full_put_path on;
      client_max_body_size 0;
      $extra
    }
  }
  # nginx_sync's own door, logged apart (see nginx_sync).
  server {
    listen unix:$NGINX_ROOT/sync.sock;
    access_log $NGINX_ROOT/sync.log tf;
    location / { return 204; }
  }
}
CONF
    rm -f "$NGINX_ROOT/sync.sock"
    if nginx -c "$NGINX_ROOT/nginx.conf" -p "$NGINX_ROOT" -e "$NGINX_ROOT/error.log" 2>>"$NGINX_ROOT/start.log"; then
      NGINX_PID_FILE="$NGINX_ROOT/nginx.pid"
      case "$listen_extra" in *ssl*) scheme=https ;; esac
      NGINX_URL="$scheme://127.0.0.1:$NGINX_PORT"
      # The daemon writes its pid once its sockets listen.
      wait_file "$NGINX_PID_FILE" 30
      return 0
    fi
  done
  cat "$NGINX_ROOT/start.log" "$NGINX_ROOT/error.log" >&2 || true
  fail "nginx did not start"
}

nginx_stop() {
  if [ -n "$NGINX_PID_FILE" ] && [ -s "$NGINX_PID_FILE" ]; then
    local pid w workers=()
    pid=$(cat "$NGINX_PID_FILE")
    # The workers too: one left behind would keep the listening socket open,
    # and a client would connect and wait for an answer that never comes.
    for w in $(pgrep -P "$pid" 2>/dev/null); do workers+=("$w:$(tf_start_time "$w")"); done
    kill "$pid" 2>/dev/null || true
    poll_until 10 pid_gone "$pid" || true
    kill -KILL "$pid" 2>/dev/null || true
    for w in "${workers[@]}"; do
      poll_until 10 tf_gone "$w" || true
      ! tf_same "$w" || kill -KILL "${w%%:*}" 2>/dev/null || true
    done
  fi
  NGINX_PID_FILE=""
}

# A test CA, a server certificate for 127.0.0.1 and a client certificate
# (P-256 keys: made in milliseconds, unlike RSA),
# all in $pki (ca.pem, srv.pem/srv.key, cli.pem/cli.key), readable by nginx.
make_pki() {
  need openssl
  pki="$tf_tmp/pki"; mkdir -p "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=topfetch test CA" \
    -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" -keyout "$pki/srv.key" -out "$pki/srv.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' >"$pki/san.ext"
  openssl x509 -req -in "$pki/srv.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial -days 2 \
    -extfile "$pki/san.ext" -out "$pki/srv.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=topfetch client" -keyout "$pki/cli.key" -out "$pki/cli.csr" 2>/dev/null
  openssl x509 -req -in "$pki/cli.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial -days 2 \
    -out "$pki/cli.pem" 2>/dev/null
  chmod -R a+r "$pki"
}

# Puts bytes from stdin into the nginx cache as a CAS blob; prints its hash.
cas_put_stdin() {
  local f="$tf_tmp/blob.$$.$RANDOM" h
  cat >"$f"
  h=$(sha256sum "$f" | cut -d' ' -f1)
  mv "$f" "$NGINX_CACHE/cas/$h"
  chmod 644 "$NGINX_CACHE/cas/$h"
  echo "$h"
}

# Number of requests in nginx's log matching a pattern (e.g. "GET /cas/HASH 200").
# Returns once nginx's log holds every request whose answer a client has
# seen. nginx logs a request when its answer is sent, so a client can be a
# moment ahead of the log; but its one worker does that in the same step as
# the sending, before it turns to anything else, so once a request of ours
# that came later shows in its log, the earlier ones do too.
nginx_sync() {
  local tag="tf-sync-$RANDOM$RANDOM"
  # Not answering: nginx has stopped, and wrote all it had to.
  curl -s -o /dev/null --unix-socket "$NGINX_ROOT/sync.sock" "http://sync/$tag" 2>/dev/null || return 0
  wait_line "$NGINX_ROOT/sync.log" "/$tag " 30
}
nginx_count() { nginx_sync; grep -c -- "$1" "$NGINX_LOG" || true; }
