#!/usr/bin/env bash
# Runs test_stream_http against a real nginx cache, then checks what nginx saw.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
nginx_start
# Under AddressSanitizer freed blocks wait in a quarantine and stay resident;
# keep it small so that VmHWM shows what the streams hold.
export ASAN_OPTIONS="${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}quarantine_size_mb=4"
TF_NGINX_URL="$NGINX_URL" TF_NGINX_CACHE="$NGINX_CACHE" "$TF_STREAM_HTTP_TEST" || fail "test_stream_http failed"
wrong=$(printf 'not these bytes' | sha256sum | cut -d' ' -f1)
[ "$(nginx_count "PUT /cas/$wrong 201")" -eq 0 ] || fail "nginx stored a wrong upload"
[ "$(nginx_count "GET /cas/")" -ge 2 ] || fail "the downloads did not reach nginx"
echo "stream_http: ok"
