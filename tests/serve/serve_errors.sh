#!/usr/bin/env bash
# Requests no client should send, over tcp://127.0.0.1: each gets an error
# reply that says what is wrong and which field (never a crash, never a
# hang), and afterwards the service still runs a whole build. Also: flags
# and addresses the service refuses (exit 2, with what to do).
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/serve/lib.sh"
fx="${TF_FIXTURES:?}"
[ -f "$fx/cache.tar.gz" ] || fail "fixtures missing at $fx"
nginx_start
tar -xzf "$fx/cache.tar.gz" -C "$NGINX_CACHE"
chmod -R a+rX "$NGINX_CACHE"
bin=bazel-out/k8-fastbuild/bin/pkg
outdir="$tf_tmp/out"
port=$(free_port)
listen="tcp://127.0.0.1:$port"
key=4eef905a5fc5c4a60bbe4f07d91acd9aeec07b30cd82f2fd232b142113ec2cfb

# ---- refused at start --------------------------------------------------------------
serve_once --listen="tcp://0.0.0.0:$port" --remote_cache="$NGINX_URL" --output_dir="$outdir"
[ "$rc" -eq 2 ] || fail "non-loopback listen: exit $rc"
assert_contains "$out" "refusing --listen tcp://0.0.0.0:$port: '0.0.0.0' is not a loopback address"
assert_contains "$out" "--allow_non_loopback"
serve_once --listen="$listen" --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o2" --build_event_publish="tcp://0.0.0.0:$(free_port)"
[ "$rc" -eq 2 ] || fail "non-loopback publish: exit $rc"
assert_contains "$out" "refusing --build_event_publish"
serve_once --listen="ws://127.0.0.1:$port" --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o2"
[ "$rc" -eq 2 ] || fail "ws:// listen: exit $rc"
assert_contains "$out" "use ipc://PATH, tcp://127.0.0.1:PORT"
serve_once --listen="$listen" --output_dir="$tf_tmp/o2"
[ "$rc" -eq 2 ] || fail "missing --remote_cache: exit $rc"
assert_contains "$out" "--listen, --remote_cache and --output_dir are required"
serve_once --help
[ "$rc" -eq 0 ] || fail "--help: exit $rc"
for f in --listen= --remote_cache= --output_dir= --store= --build_event_publish= --build_event_binary_file= \
         --build_event_json_file= --max_request_size= "--[no]allow_non_loopback" --remote_header= --remote_timeout= \
         "exits 0 if no build was open, 8 if one was"; do
  assert_contains "$out" "$f" "serve --help"
done

# ---- the service ------------------------------------------------------------------------
serve_start "$tf_tmp/serve.log" --listen="$listen" --remote_cache="$NGINX_URL" --output_dir="$outdir" \
  --max_request_size=100000 --remote_retries=1

# expect WHAT ARGS...: the probe's reply must be an error containing WHAT,
# and the service must still be running.
expect() {
  local want=$1; shift
  probe "$listen" "$@"
  case "$probe" in "error: "*) ;; *) fail "reply to '$*' is not an error: $probe" ;; esac
  assert_contains "$probe" "$want" "reply to '$*'"
  kill -0 "$serve_pid" 2>/dev/null || fail "the service died on '$*'"
}

# Out of order.
expect "action_executed: no build is open; send BuildStarted first" action "$key" "$NGINX_CACHE/ac/$key"
expect "target_completed: no build is open; send BuildStarted first" target //pkg:big "$bin/big.dat"
expect "build_finished: no build is open; send BuildStarted first" finish
# Not a request at all.
expect "the request (26 bytes) is not a topfetch.service.Request: Request has the invalid field number 1107296255 at byte offset 0" garbage
expect "Request.target_completed.label (field 1) has wire type 0 (varint), but the schema says length-delimited at byte offset 2" wiretype
expect "Request.target_completed.label (field 1) is a string with a NUL byte in it" nul
expect "Request.target_completed.label (field 1) is a string that is not UTF-8 at byte offset 5" utf8
expect "empty or unknown request: it sets none of build_started (1)" empty
expect "empty or unknown request" unknown
expect "over the cap of 100000 bytes (--max_request_size)" oversized 150000
# Past twice the cap nanomsg drops the connection: no reply, no crash.
set +e
probe=$(TF_PROBE_TIMEOUT_MS=2000 "$TF_PROBE" "$listen" oversized 250000 2>&1)
prc=$?
set -e
[ "$prc" -eq 1 ] || fail "a request over twice the cap got a reply: $probe"
case "$probe" in "no reply: "*) ;; *) fail "serve_probe: $probe" ;; esac
kill -0 "$serve_pid" 2>/dev/null || fail "the service died on a request over twice the cap"
# A bad policy opens no build.
expect "build_started.download_mode: 'sometimes' is not one of toplevel, all, minimal" start sometimes
expect "build_started.regexes: --remote_download_regex='(' is not a valid regular expression" start toplevel '('

# Within a build.
probe "$listen" start
assert_contains "$probe" "ok build=1" "BuildStarted"
expect "build_started: build 1 is still open; send BuildFinished to end it first" start
expect "action_executed.action_key: 'abc' is not an action key" action abc "$NGINX_CACHE/ac/$key"
printf 'not an ActionResult \377\377' >"$tf_tmp/bad.ar"
expect "action_executed.action_result: the ActionResult of action $key" action "$key" "$tf_tmp/bad.ar"
expect "target_completed.output_groups[0].files[0].path: path '../escape' has a '..' component" target //pkg:x ../escape
expect "target_completed.output_groups[0].files[0].path: path '/etc/passwd' is absolute" target //pkg:x /etc/passwd
expect "target_completed.output_groups[0].files[0].path: 'a.txt' has no folder" target //pkg:x a.txt
expect "target_completed.label: empty" target "" "$bin/big.dat"
probe "$listen" status
assert_contains "$probe" "ok build=1" "Status"
probe "$listen" target //pkg:x "$bin/never_reported.txt"
assert_contains "$probe" "ok build=1" "TargetCompleted of an unknown file"
expect "target_completed: target //pkg:x was already reported complete in this build" target //pkg:x "$bin/never_reported.txt"
probe "$listen" finish 1
assert_contains "$probe" "ok build=1" "BuildFinished"
assert_contains "$probe" "stats: targets=1 targets_failed=1" "BuildFinished (the unknown file fails its target)"

# After all that, a whole build works.
client --connect="$listen" --actions="$NGINX_CACHE/ac" --target="//pkg:big=$bin/big.dat"
[ "$rc" -eq 0 ] || fail "client exit $rc after the bad requests"
assert_contains "$client" "build 2 finished: 1 targets complete (0 failed), 1 files fetched"
[ "$(sha256sum "$outdir/$bin/big.dat" | cut -c1-8)" = 01ab038e ] || fail "big.dat wrong"

# A second service on the same address is refused.
serve_once --listen="$listen" --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o3"
[ "$rc" -eq 2 ] || fail "second service on $listen: exit $rc"
assert_contains "$out" "cannot bind: Address already in use (is another topfetch serve running there?)"

serve_stop INT 0
cat "$tf_tmp/serve.log"
assert_contains "$(cat "$tf_tmp/serve.log")" "stopped (SIGINT)"

# A build whose session fails (its event file cannot be written): later
# requests say so and what to do, BuildFinished reports it, the service goes on.
listen="tcp://127.0.0.1:$(free_port)"
serve_start "$tf_tmp/serve2.log" --listen="$listen" --remote_cache="$NGINX_URL" --output_dir="$outdir" \
  --build_event_binary_file=/dev/full
probe "$listen" start
probe "$listen" action "$key" "$NGINX_CACHE/ac/$key"
probe "$listen" target //pkg:big "$bin/big.dat"
status_is_error() { probe "$listen" status; case "$probe" in "error: "*) return 0 ;; esac; return 1; }
poll_until 30 status_is_error || true # the assertions below say what it answered
assert_contains "$probe" "error: build 1 cannot go on: /dev/full: write failed" "Status after the sink failed"
assert_contains "$probe" "No space left on device; send BuildFinished to end it" "Status after the sink failed"
expect "build 1 cannot go on" target //pkg:other "$bin/other.txt"
expect "build_finished: the build ended with an error: /dev/full: write failed" finish
probe "$listen" status
assert_contains "$probe" "ok build=0" "Status after the failed build"
serve_stop TERM 0
assert_contains "$(cat "$tf_tmp/serve2.log")" "build 1 finished (exit code 0)"
assert_contains "$(grep -A3 "build 1 finished" "$tf_tmp/serve2.log")" "topfetch: 1 of 1 target complete"
assert_contains "$(cat "$tf_tmp/serve2.log")" "error: /dev/full: write failed"
echo "serve_errors: ok"
