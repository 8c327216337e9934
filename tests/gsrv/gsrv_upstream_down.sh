#!/usr/bin/env bash
# Real Bazel 4.2.3 with --remote_cache=grpc://<topfetch proxy> and
# --remote_download_minimal, the proxy forwarding to a loopback nginx that is
# stopped in the middle of the build:
#  1. A chain of three actions: first -> held -> last. `held` writes a marker
#     and waits for "go" on a fifo. The test waits for the marker (first's result is
#     up in nginx by then), stops nginx, then writes go: held's
#     upload and last's lookup and upload go through the proxy to a stopped
#     upstream. The proxy answers UNAVAILABLE; Bazel 4.2.3 warns about the
#     remote cache, runs the rest locally and the build succeeds.
#  2. The proxy keeps serving: it still runs, answers a gRPC Capabilities call
#     and GET /status.
#  3. nginx started again on the same port; bazel clean; the same build through
#     the same proxy: first is a remote cache hit served from nginx again, and
#     the results the stopped nginx missed are uploaded now.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
. "$TF_SOURCE_ROOT/tests/gsrv/lib.sh"
. "$TF_SOURCE_ROOT/tests/interop/bazel_lib.sh"
nginx_start
ws=$(bazel_ws ws)
mkdir -p "$ws/down"
cat >"$ws/down/BUILD" <<BUILD
genrule(name = "first", outs = ["first.txt"], cmd = "echo first > \$@")
genrule(
    name = "held",
    srcs = [":first"],
    outs = ["held.txt"],
    cmd = "touch $tf_tmp/held.started; g=\$\$(timeout 600 cat $tf_tmp/go); " +
          "[ \"\$\$g\" = go ] && cat \$< > \$@ && echo held >> \$@",
)
genrule(name = "last", srcs = [":held"], outs = ["last.txt"], cmd = "cat \$< > \$@; echo last >> \$@")
BUILD

# held reads the fifo go: its open waits for the test's writer. Ended on every
# exit path, so that no action waits on it (an open for writing that does not
# block; its close is the reader's end of file).
mkfifo "$tf_tmp/go"
release() { if [ -p "$tf_tmp/go" ]; then : 1<>"$tf_tmp/go"; fi; bazel_cleanup; }
trap release EXIT
gsrv_start proxy.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out"

# 1. Bazel in the background; stop nginx while `held` runs.
bz "$ws" build --remote_cache="$GRPC_URL" --remote_download_minimal //down:last >"$tf_tmp/bazel1.log" 2>&1 &
bazel_pid=$!
tf_track "$bazel_pid"
wait_for 300 "the action 'held' did not start (bazel: $(tail -n 5 "$tf_tmp/bazel1.log"))" test -e "$tf_tmp/held.started"
nginx_sync
grep -q '^PUT /ac/' "$NGINX_LOG" || fail "first's result was not uploaded before nginx stopped"
nginx_stop
echo go >"$tf_tmp/go"
set +e
wait "$bazel_pid"
rc=$?
set -e
cat "$tf_tmp/bazel1.log"
[ "$rc" -eq 0 ] || { cat "$PROXY_LOG"; fail "build 1 exit $rc: Bazel 4.2.3 should build locally when the cache is unavailable"; }
# Bazel 4.2.3 prints each failed cache call as a warning, the gRPC status on
# the next line: last's lookup and held's and last's uploads.
for w in Reading Writing; do
  grep -A1 "^WARNING: $w from Remote Cache:\|^WARNING: $w to Remote Cache:" "$tf_tmp/bazel1.log" | grep -q '^UNAVAILABLE: ' \
    || fail "build 1: Bazel did not report '$w' the remote cache as UNAVAILABLE"
done
grep -q 'processes: .*3 processwrapper-sandbox' "$tf_tmp/bazel1.log" || fail "build 1: want its three actions run locally"
[ "$(cat "$ws/bazel-bin/down/last.txt")" = "$(printf 'first\nheld\nlast')" ] || fail "build 1: last.txt is wrong"

# 2.
kill -0 "$PROXY_PID" 2>/dev/null || { cat "$PROXY_LOG"; fail "the proxy exited when its upstream stopped"; }
enc build.bazel.remote.execution.v2.GetCapabilitiesRequest <<<'instance_name: ""' >"$tf_tmp/capreq"
gcall cap $REAPI.Capabilities/GetCapabilities "$tf_tmp/capreq"
want_status "Capabilities with the upstream down" 0
req GET "$PROXY_URL/status"
[ "$code" = 200 ] || fail "GET /status with the upstream down: $code $body"
echo "2. the proxy serves with its upstream down: ok"

# 3. The same port again (nginx binds with SO_REUSEADDR).
nginx_restart() {
  rm -f "$NGINX_ROOT/sync.sock" "$NGINX_ROOT/nginx.pid"
  nginx -c "$NGINX_ROOT/nginx.conf" -p "$NGINX_ROOT" -e "$NGINX_ROOT/error.log" 2>>"$NGINX_ROOT/start.log" \
    || { cat "$NGINX_ROOT/start.log" "$NGINX_ROOT/error.log"; fail "nginx did not start again on port $NGINX_PORT"; }
  NGINX_PID_FILE="$NGINX_ROOT/nginx.pid"
  wait_file "$NGINX_PID_FILE" 30
}
nginx_restart
rm "$tf_tmp/go"
echo go >"$tf_tmp/go" # a plain file now: held runs again in build 2 (never uploaded)
l0=$(wc -l <"$NGINX_LOG")
bz "$ws" clean >/dev/null 2>&1
bz "$ws" build --remote_cache="$GRPC_URL" --remote_download_minimal //down:last >"$tf_tmp/bazel2.log" 2>&1 \
  || { cat "$tf_tmp/bazel2.log" "$PROXY_LOG"; fail "build 2 failed"; }
cat "$tf_tmp/bazel2.log"
! grep -q 'UNAVAILABLE' "$tf_tmp/bazel2.log" || fail "build 2: the cache is still unavailable to Bazel"
grep -q 'processes: 1 remote cache hit, 1 internal, 2 processwrapper-sandbox' "$tf_tmp/bazel2.log" \
  || fail "build 2: want first a cache hit, held and last (never uploaded) run again"
nginx_sync
tail -n +"$((l0 + 1))" "$NGINX_LOG" >"$tf_tmp/log2"
h_first=$(printf 'first\n' | sha256sum | cut -d' ' -f1)
h_last=$(printf 'first\nheld\nlast\n' | sha256sum | cut -d' ' -f1)
grep -q "^GET /ac/[0-9a-f]* 200 " "$tf_tmp/log2" || fail "build 2: no action result read from nginx"
grep -q "^PUT /cas/$h_last " "$tf_tmp/log2" || fail "build 2: last.txt was not uploaded to nginx"
[ -f "$NGINX_CACHE/cas/$h_first" ] || fail "first.txt is not in nginx"
proxy_stop
[ "$proxy_rc" -eq 0 ] || { cat "$PROXY_LOG"; fail "the proxy exited $proxy_rc on SIGTERM"; }
echo "gsrv_upstream_down: ok"
