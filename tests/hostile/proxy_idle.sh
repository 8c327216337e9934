#!/usr/bin/env bash
# The proxy cannot be locked out by idle connections (issue 11, defect 4):
# with 1,000 connections open, each having sent one byte of a request and
# then dripping, a new client is served within a second.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
mkdir -p "$tf_tmp/cache/cas"
H=$(printf 'hello\n' | sha256sum | cut -d' ' -f1)
mkdir -p "$tf_tmp/cache/cas/${H:0:2}"
printf 'hello\n' >"$tf_tmp/cache/cas/${H:0:2}/$H"
proxy_start proxy.log --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o"
python3 - "$PROXY_PORT" "$tf_tmp/idle.ready" >"$tf_tmp/idle.log" 2>&1 <<'PY' &
import os, socket, sys, time
port, ready = int(sys.argv[1]), sys.argv[2]
socks = []
for i in range(1000):
    s = socket.create_connection(("127.0.0.1", port))
    s.send(b"G")
    socks.append(s)
open(ready, "w").write("1000\n")
while True:  # one more byte now and then: never idle long enough to be closed
    time.sleep(5)
    for s in socks:
        try:
            s.send(b"E")
        except OSError:
            pass
PY
idle=$!
tf_track $idle
wait_file "$tf_tmp/idle.ready" 60
t0=$(date +%s%N)
set +e
code=$(curl -s -o "$tf_tmp/body" -w '%{http_code}' --max-time 10 "$PROXY_URL/cas/$H")
set -e
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$code" = 200 ] || fail "with 1000 idle connections a new client got HTTP $code (curl) after $ms ms"
[ "$(cat "$tf_tmp/body")" = hello ] || fail "body"
[ "$ms" -lt 1000 ] || fail "with 1000 idle connections a new client waited $ms ms"
kill "$idle"; wait "$idle" 2>/dev/null || true
proxy_stop
echo "proxy_idle: ok (served in $ms ms)"
