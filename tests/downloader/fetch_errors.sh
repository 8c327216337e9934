#!/usr/bin/env bash
# What the cache can do wrong, and what a manifest can ask that it may not:
# each gets a typed result, a clear message, and leaves no file behind.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
nginx_start

good=$(head -c 3000 /dev/urandom | cas_put_stdin)
missing=$(head -c 64 /dev/urandom | sha256sum | cut -d' ' -f1)
# Corrupt: the cache file's bytes do not hash to its name.
corrupt=$(head -c 2000 /dev/urandom | cas_put_stdin)
head -c 2000 /dev/urandom >"$NGINX_CACHE/cas/$corrupt"
# Truncated: the cache holds only the first half of the blob.
trunc=$(head -c 4000 /dev/urandom | cas_put_stdin)
truncate -s 2000 "$NGINX_CACHE/cas/$trunc"
# Longer: the cache holds more bytes than the digest's size.
long=$(head -c 1000 /dev/urandom | cas_put_stdin)
head -c 500 /dev/urandom >>"$NGINX_CACHE/cas/$long"

out_dir="$tf_tmp/out"
mkdir -p "$out_dir" "$tf_tmp/outside"
ln -s "$tf_tmp/outside" "$out_dir/link"
cat >"$tf_tmp/m" <<M
$good 3000 ok.bin
$missing 10 lost.bin
$corrupt 2000 corrupt.bin
$trunc 4000 trunc.bin
$long 1000 long.bin
$good 3000 ../escape.bin
$good 3000 /etc/topfetch-escape.bin
$good 3000 a//b.bin
$good 3000 link/through-symlink.bin
M
run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$out_dir" --manifest="$tf_tmp/m" --remote_retries=2
[ "$rc" -eq 1 ] || fail "exit $rc, want 1: $out"
assert_contains "$out" "1 of 9 files in place"
assert_contains "$out" "1 lost, 3 corrupt, 0 failed, 4 local errors"
assert_contains "$out" "lost: lost.bin ($missing/10): GET $NGINX_URL/cas/$missing: HTTP 404; the blob is not in the cache"
assert_contains "$out" "corrupt: corrupt.bin ($corrupt/2000): GET $NGINX_URL/cas/$corrupt: the body hashes to"
assert_contains "$out" "wrong on 2 attempts"
assert_contains "$out" "corrupt: trunc.bin ($trunc/4000): GET $NGINX_URL/cas/$trunc: got 2000 bytes, expected 4000"
assert_contains "$out" "corrupt: long.bin ($long/1000): GET $NGINX_URL/cas/$long: the body is longer than the expected 1000 bytes"
assert_contains "$out" "local: ../escape.bin"
assert_contains "$out" "has a '..' component and could escape the output directory"
assert_contains "$out" "path '/etc/topfetch-escape.bin' is absolute"
assert_contains "$out" "path 'a//b.bin' has an empty component"
assert_contains "$out" "refusing 'link/through-symlink.bin': 'link' is a symlink"

# Corrupt blobs were tried exactly twice; lost ones once; good one once.
[ "$(nginx_count "GET /cas/$corrupt 200")" -eq 2 ] || fail "corrupt blob tried $(nginx_count "GET /cas/$corrupt") times"
[ "$(nginx_count "GET /cas/$missing 404")" -eq 1 ] || fail "lost blob retried"
[ "$(nginx_count "GET /cas/$good 200")" -eq 1 ] || fail "good blob fetched $(nginx_count "GET /cas/$good") times"

# Nothing at the final paths of failed files, no temporary files, nothing outside.
for f in lost.bin corrupt.bin trunc.bin long.bin a; do
  [ ! -e "$out_dir/$f" ] || fail "$f exists after a failure"
done
[ "$(sha256sum "$out_dir/ok.bin" | cut -d' ' -f1)" = "$good" ] || fail "ok.bin wrong"
[ -z "$(find "$out_dir" -name '.tftmp.*')" ] || fail "temporary files left"
[ -z "$(ls -A "$tf_tmp/outside")" ] || fail "something was written through the symlink"
[ ! -e "$tf_tmp/escape.bin" ] || fail "../ escaped"
[ ! -e /etc/topfetch-escape.bin ] || fail "absolute path written"

# A 401 is a configuration mistake found at start (exit 2), not retried, and
# says what to check.
echo "$good 3000 auth.bin" >"$tf_tmp/m401"
nginx_stop
nginx_start 'if ($http_authorization != "Bearer right") { return 401; }'
run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o401" --manifest="$tf_tmp/m401" --remote_header=Authorization="Bearer wrong"
[ "$rc" -eq 2 ] || fail "401: exit $rc"
assert_contains "$out" "refused the credentials (HTTP 401) before any transfer; check --remote_header"
[ "$(nginx_count "HEAD /cas/0\{64\} 401")" -eq 1 ] || fail "401 was retried"
[ "$(nginx_count "GET /cas/$good 401")" -eq 0 ] || fail "a file was asked for after a 401"
echo "fetch_errors: ok"
