#!/usr/bin/env bash
# The network misbehaving: a server that goes away mid-transfer, one that
# answers 500 for a while, one that accepts and never answers.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"

# 1. 500s, then success: retried with backoff, and the file arrives.
nginx_start 'if (-f $document_root/fail500) { return 500; }'
blob=$(head -c 50000 /dev/urandom | cas_put_stdin)
echo "$blob 50000 f.bin" >"$tf_tmp/m"
touch "$NGINX_CACHE/fail500"
# The cache recovers once it has answered 500 twice.
two_500s() { [ "$(nginx_count "GET /cas/$blob 500")" -ge 2 ]; }
( wait_for 60 "two 500 answers" two_500s; rm -f "$NGINX_CACHE/fail500" ) >"$tf_tmp/recover.log" 2>&1 &
recover_pid=$!
tf_track "$recover_pid"
run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o1" --manifest="$tf_tmp/m" --remote_retries=8
wait "$recover_pid" || fail "the cache never answered 500 twice: $(cat "$tf_tmp/recover.log")"
[ "$rc" -eq 0 ] || fail "500s then ok: exit $rc: $out"
n500=$(nginx_count "GET /cas/$blob 500")
[ "$n500" -ge 2 ] || fail "expected several 500s before success, saw $n500"
[ "$(nginx_count "GET /cas/$blob 200")" -eq 1 ] || fail "expected one 200"
[ "$(sha256sum "$tf_tmp/o1/f.bin" | cut -d' ' -f1)" = "$blob" ] || fail "f.bin wrong"

# 2. Persistent 500s: failed after exactly 1 + retries attempts, naming the URL.
touch "$NGINX_CACHE/fail500"
run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o2" --manifest="$tf_tmp/m" --remote_retries=2
[ "$rc" -eq 1 ] || fail "persistent 500: exit $rc"
assert_contains "$out" "failed: f.bin ($blob/50000): GET $NGINX_URL/cas/$blob failed after 3 attempts (--remote_retries=2): HTTP 500"
[ "$(nginx_count "GET /cas/$blob 500")" -eq $((n500 + 3)) ] || fail "wrong number of attempts"
[ ! -e "$tf_tmp/o2/f.bin" ] || fail "file exists after failure"
rm -f "$NGINX_CACHE/fail500"
nginx_stop

# 3. Server stopped mid-transfer: a slow 8 MB body, nginx killed during it.
nginx_start 'limit_rate 1m;'
big=$(head -c 8000000 /dev/urandom | cas_put_stdin)
echo "$big 8000000 big.bin" >"$tf_tmp/mbig"
# nginx is stopped once the body is flowing (100 kB of it on disk).
flowing() { [ -n "$(find "$tf_tmp/o3" -name '.tftmp.*' -size +100k 2>/dev/null)" ]; }
( wait_for 60 "the transfer of big.bin did not start" flowing; nginx_stop ) >"$tf_tmp/stop.log" 2>&1 &
stop_pid=$!
tf_track "$stop_pid"
run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o3" --manifest="$tf_tmp/mbig" --remote_retries=2
wait "$stop_pid" || fail "nginx was not stopped mid-transfer: $(cat "$tf_tmp/stop.log")"
[ "$rc" -eq 1 ] || fail "server stopped: exit $rc: $out"
assert_contains "$out" "failed: big.bin"
assert_contains "$out" "GET $NGINX_URL/cas/$big failed after 3 attempts (--remote_retries=2)"
[ ! -e "$tf_tmp/o3/big.bin" ] || fail "partial file at the final path"
[ -z "$(find "$tf_tmp/o3" -name '.tftmp.*')" ] || fail "temporary file left"

# 4. A server that accepts the connection and never answers a GET:
#    --remote_timeout. (It answers the HEAD of topfetch's check at start.)
need python3
port=$(free_port)
python3 -c '
import socket, sys, threading
def serve(c):
    data = b""
    while True:
        d = c.recv(4096)
        if not d:
            return
        data += d
        while b"\r\n\r\n" in data:
            req, data = data.split(b"\r\n\r\n", 1)
            if req.startswith(b"HEAD "):
                c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
' "$port" >"$tf_tmp/silent.log" 2>&1 &
silent_pid=$!
tf_track "$silent_pid"
wait_port "$port"
start=$(date +%s%N)
run_tf fetch --remote_cache="http://127.0.0.1:$port" --output_dir="$tf_tmp/o4" --manifest="$tf_tmp/m" \
  --remote_timeout=1 --remote_retries=1
took=$(( ($(date +%s%N) - start) / 1000000 ))
kill "$silent_pid" 2>/dev/null || true
wait "$silent_pid" 2>/dev/null || true
[ "$rc" -eq 1 ] || fail "silent server: exit $rc: $out"
assert_contains "$out" "failed after 2 attempts (--remote_retries=1): timed out: no data for --remote_timeout=1s"
[ "$took" -gt 1500 ] && [ "$took" -lt 10000 ] || fail "the timeouts took $took ms, expected about 2 s"

# 5. Nothing listening: connection refused, retried, then one message at
#    start (exit 2), before any file.
run_tf fetch --remote_cache="http://127.0.0.1:$(free_port)" --output_dir="$tf_tmp/o5" --manifest="$tf_tmp/m" --remote_retries=1
[ "$rc" -eq 2 ] || fail "refused: exit $rc"
assert_contains "$out" "(2 attempts, --remote_retries=1); check --remote_cache and that the cache is running"
echo "fetch_network: ok"
