#!/usr/bin/env bash
# Runs test_read against a real nginx cache and checks what nginx saw.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
nginx_start
blob=$(head -c 5000 /dev/urandom | cas_put_stdin)
ac=$(echo ac-key | sha256sum | cut -d' ' -f1)
printf 'action-res\n' >"$NGINX_CACHE/ac/$ac"; chmod 644 "$NGINX_CACHE/ac/$ac"
missing=$(echo none | sha256sum | cut -d' ' -f1)
corrupt=$(head -c 700 /dev/urandom | cas_put_stdin)
head -c 700 /dev/urandom >"$NGINX_CACHE/cas/$corrupt"
"$TF_READ_TEST" "$NGINX_URL" "$tf_tmp/out" "$blob" 5000 "$ac" "$missing" "$corrupt" 700
[ "$(nginx_count "GET /cas/$blob 200")" -eq 1 ] || fail "blob not read once"
[ "$(nginx_count "GET /ac/$ac 200")" -eq 2 ] || fail "ac entry not read twice"
[ "$(nginx_count "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")" -eq 0 ] || fail "empty blob requested"
[ -z "$(ls -A "$tf_tmp/out")" ] || fail "a read wrote files"
echo "read: ok"
