#!/usr/bin/env bash
# Configuration mistakes end `fetch` and `collect` at start with exit 2 and
# one message, before any per-file work: an unreadable TLS file, a
# malformed URL, a bad port, a cache nobody answers on (http and grpc), a
# TLS cache whose certificate we cannot trust.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
H=$(printf 'hello\n' | sha256sum | cut -d' ' -f1)
printf '%s 6 a.txt\n' "$H" >"$tf_tmp/m.txt"
python3 - "$tf_tmp/bep.bin" "$H" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.environ["TF_SOURCE_ROOT"], "tests", "lib"))
from hostile import *
out, h = sys.argv[1:]
open(out, "wb").write(bep_build([("0", [bep_file("pkg/a.txt", h, 6)], [])], [("//pkg:a", ["0"])]))
PY
export HOME="$tf_tmp" # no ~/.netrc of the machine's
dead=$(free_port)

one_message() { # WHAT WANT...
  local what=$1; shift
  [ "$rc" -eq 2 ] || fail "$what: exit $rc, want 2: $out"
  [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] || fail "$what: not one line: $out"
  for w in "$@"; do assert_contains "$out" "$w" "$what"; done
  case "$out" in *S3cr3t*) fail "$what: the password is in the output: $out" ;; esac
  [ ! -e "$tf_tmp/o/a.txt" ] || fail "$what: a file arrived"
}
for c in fetch collect; do
  if [ $c = fetch ]; then set -- fetch --manifest="$tf_tmp/m.txt"; else set -- collect --bep="$tf_tmp/bep.bin"; fi
  run_tf "$@" --output_dir="$tf_tmp/o" --remote_cache="http://127.0.0.1:$dead" --tls_certificate="$tf_tmp/no-ca.pem"
  one_message "$c: unreadable --tls_certificate" "--tls_certificate=$tf_tmp/no-ca.pem: cannot read it: No such file"
  : >"$tf_tmp/empty.pem"
  run_tf "$@" --output_dir="$tf_tmp/o" --remote_cache="http://127.0.0.1:$dead" --tls_client_key="$tf_tmp/empty.pem" \
    --tls_client_certificate="$tf_tmp/empty.pem"
  one_message "$c: empty TLS client file" "$tf_tmp/empty.pem: not a PEM file"
  run_tf "$@" --output_dir="$tf_tmp/o" --remote_cache='http://u:S3cr3t@127.0.0.1:99999'
  one_message "$c: port 99999" "--remote_cache is not a valid http URL"
  run_tf "$@" --output_dir="$tf_tmp/o" --remote_cache='http://u:S3cr3t@127.0.0.1:0'
  one_message "$c: port 0" "port 0 is not a port a cache listens on"
  run_tf "$@" --output_dir="$tf_tmp/o" --remote_cache='http://u:S3cr3t@[::1'
  one_message "$c: malformed URL" "--remote_cache is not a valid http URL"
  run_tf "$@" --output_dir="$tf_tmp/o" --remote_cache="http://u:S3cr3t@127.0.0.1:$dead/p" --remote_retries=1
  one_message "$c: nobody listening" "cannot use the cache http://127.0.0.1:$dead/p:" "(2 attempts, --remote_retries=1)" \
    "check --remote_cache and that the cache is running"
  run_tf "$@" --output_dir="$tf_tmp/o" --remote_cache="grpc://127.0.0.1:$dead" --remote_retries=0
  one_message "$c: grpc, nobody listening" "cannot use the cache grpc://127.0.0.1:$dead"
done

# TLS with a CA that did not sign the server's certificate: at start, naming
# what to check.
make_pki
nginx_start "" "ssl" "ssl_certificate $pki/srv.pem; ssl_certificate_key $pki/srv.key;"
run_tf fetch --manifest="$tf_tmp/m.txt" --output_dir="$tf_tmp/o" --remote_cache="$NGINX_URL" --remote_retries=0
one_message "untrusted certificate" "cannot use the cache $NGINX_URL" "--tls_certificate"
# With the right CA it is reachable: the check passes and the file is just lost.
run_tf fetch --manifest="$tf_tmp/m.txt" --output_dir="$tf_tmp/o" --remote_cache="$NGINX_URL" \
  --tls_certificate="$pki/ca.pem"
[ "$rc" -eq 1 ] || fail "trusted TLS cache: exit $rc: $out"
assert_contains "$out" "lost: a.txt"
[ "$(nginx_count "HEAD /cas/0000000000000000000000000000000000000000000000000000000000000000 404")" -eq 1 ] ||
  fail "the start check was not one HEAD of a key nobody stores"
nginx_stop

# A cache that goes down in the middle of a run: one line for the first
# file it fails, then one line counting the others, not a line per file.
nginx_start 'limit_rate 20k;'
: >"$tf_tmp/m2.txt"
for i in $(seq 1 120); do
  # 64 KB each: past the first 20 KB nginx's limit_rate holds every file
  # for seconds, so the run is still going when nginx is stopped.
  h=$( (printf '%s\n' "$i"; head -c 64000 /dev/zero) | cas_put_stdin)
  printf '%s %s f/%s.bin\n' "$h" $((${#i} + 64001)) "$i" >>"$tf_tmp/m2.txt"
done
some_arrived() { [ "$(find "$tf_tmp/o6/f" -name '*.bin' 2>/dev/null | wc -l)" -ge 2 ]; }
( wait_for 60 "no file arrived" some_arrived; nginx_stop ) >"$tf_tmp/stop.log" 2>&1 &
stop_pid=$!
tf_track "$stop_pid"
run_tf fetch --manifest="$tf_tmp/m2.txt" --output_dir="$tf_tmp/o6" --remote_cache="$NGINX_URL" \
  --remote_max_connections=2 --remote_retries=1
wait "$stop_pid" || fail "nginx was not stopped mid-run: $(cat "$tf_tmp/stop.log")"
[ "$rc" -eq 1 ] || fail "cache down mid-run: exit $rc: $out"
n_down=$(printf '%s\n' "$out" | grep -c "$NGINX_URL/cas/.*the cache does not answer" || true)
[ "$n_down" -eq 1 ] || fail "cache down mid-run: $n_down per-file lines, want 1: $out"
assert_contains "$out" "more files failed because the cache does not answer (not listed one by one)"
[ "$(printf '%s\n' "$out" | wc -l)" -le 6 ] || fail "cache down mid-run: too many lines: $out"
echo "config_errors: ok"
