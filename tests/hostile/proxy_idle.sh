#!/usr/bin/env bash
# The proxy cannot be locked out by idle connections (issue 11, defect 4).
# 1,000 connections each send one byte of a request and then one more byte
# every 2 s (libmicrohttpd's idle timeout never fires): they stay open, a new
# client is served promptly, and each of them is closed once the header
# deadline (--header_timeout) passed since it connected — never before. So
# are 20 connections that sent a whole request line and then trickle a
# header. A client that sends its headers in pieces, in time, is served, and
# the proxy keeps serving after.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
DEADLINE=10
N=1000
# Room for N sockets in the client (the proxy raises its own limit).
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt $((N + 200)) ]; then
  fail "the hard limit of open files ($hard) is below the $((N + 200)) this test needs (ulimit -Hn)"
fi
want=$((N + 200))
[ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt "$want" ] && ulimit -Sn "$want"

mkdir -p "$tf_tmp/cache/cas"
H=$(printf 'hello\n' | sha256sum | cut -d' ' -f1)
mkdir -p "$tf_tmp/cache/cas/${H:0:2}"
printf 'hello\n' >"$tf_tmp/cache/cas/${H:0:2}/$H"
proxy_start proxy.log --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o" --header_timeout=$DEADLINE
python3 - "$PROXY_PORT" "$tf_tmp" "$N" "$H" >"$tf_tmp/idle.log" 2>&1 <<'PY' &
import os, selectors, socket, sys, time
port, tmp, n, key = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
sel = selectors.DefaultSelector()
born, ended = {}, {}

def connect(first):
    t = time.monotonic()  # before the proxy can have accepted it
    s = socket.create_connection(("127.0.0.1", port))
    s.send(first)
    s.setblocking(False)
    born[s] = t
    sel.register(s, selectors.EVENT_READ)
    return s

for i in range(n):  # one byte of a request line, never finished
    connect(b"G")
# a whole request line, then a header that never ends
lines = [connect(b"GET /cas/%s HTTP/1.1\r\nHost: x\r\nX-Slow: " % key.encode()) for i in range(20)]
with open(os.path.join(tmp, "idle.ready"), "w") as f:
    f.write("%d\n" % len(born))
next_drip = time.monotonic() + 2
stop = time.monotonic() + 90
while len(ended) < len(born) and time.monotonic() < stop:
    for k, _ in sel.select(timeout=max(0.0, next_drip - time.monotonic())):
        try:
            gone = k.fileobj.recv(4096) == b""
        except ConnectionError:
            gone = True
        if gone:
            ended[k.fileobj] = time.monotonic()
            sel.unregister(k.fileobj)
    if time.monotonic() >= next_drip:  # one more byte: never idle
        for s in born:
            if s not in ended:
                try:
                    s.send(b"E" if s not in lines else b"z")
                except OSError:
                    pass
        next_drip += 2
lived = sorted(ended[s] - born[s] for s in ended)
with open(os.path.join(tmp, "idle.result"), "w") as f:
    f.write("%d %d %.3f %.3f\n" % (len(born), len(ended), lived[0] if lived else -1, lived[-1] if lived else -1))
PY
idle=$!
tf_track $idle
wait_file "$tf_tmp/idle.ready" 60

# A new client while 1,020 connections drip: served at once.
t0=$(date +%s%N)
set +e
code=$(curl -s -o "$tf_tmp/body" -w '%{http_code}' --max-time 20 "$PROXY_URL/cas/$H")
set -e
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$code" = 200 ] || fail "with $N dripping connections a new client got HTTP $code (000: refused or reset) after $ms ms"
[ "$(cat "$tf_tmp/body")" = hello ] || fail "body: $(cat "$tf_tmp/body")"
[ "$ms" -lt 5000 ] || fail "with $N dripping connections a new client waited $ms ms"

# A client that sends its request in pieces, each in time: served.
python3 - "$PROXY_PORT" "$H" >"$tf_tmp/pieces.log" 2>&1 <<'PY' || fail "pieces: $(cat "$tf_tmp/pieces.log")"
import socket, sys, time
port, key = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port))
for piece in (b"GET /cas/", key.encode(), b" HTTP/1.1\r\nHost: x\r\n", b"Connection: close\r\n\r\n"):
    s.send(piece)
    time.sleep(0.5)  # pacing of the client under test, not a wait
answer = b""
while True:
    b = s.recv(4096)
    if not b:
        break
    answer += b
assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello\n"), answer
PY

# Every dripping connection is closed by the deadline, none before it.
wait_file "$tf_tmp/idle.result" 120
read -r opened closed first last <"$tf_tmp/idle.result"
[ "$opened" -eq $((N + 20)) ] || fail "opened $opened connections"
[ "$closed" -eq "$opened" ] || fail "only $closed of $opened dripping connections were closed within 90 s (header deadline ${DEADLINE}s)"
awk -v f="$first" -v d=$DEADLINE 'BEGIN { exit !(f >= d) }' ||
  fail "a dripping connection was closed after $first s, before the header deadline of $DEADLINE s"
code=$(curl -s -o "$tf_tmp/body" -w '%{http_code}' --max-time 20 "$PROXY_URL/cas/$H")
[ "$code" = 200 ] || fail "after the deadline a client got HTTP $code"
proxy_stop
echo "proxy_idle: ok (a new client served in $ms ms with $opened connections dripping; they were closed" \
  "after $first..$last s, header deadline ${DEADLINE}s)"
