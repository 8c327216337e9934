#!/usr/bin/env bash
# The proxy in front of a real nginx cache, with curl as the client: CAS and
# AC round trips (bytes identical, requests forwarded as nginx's log shows),
# HEAD, misses, bazel-remote's path rules (400), other methods (405), a CAS
# upload with the wrong bytes refused and not stored, the empty blob,
# keep-alive on both sides, many transfers at once, and a clean stop.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
fx="${TF_FIXTURES:?}"
nginx_start
proxy_start proxy.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out" --noremote_validate_outputs
P=$PROXY_URL

# CAS: PUT through the proxy lands in nginx; GET through the proxy gives it back.
h=$(blob "$tf_tmp/b1" 300000)
req PUT "$P/cas/$h" -T "$tf_tmp/b1"
[ "$code" = 201 ] || fail "CAS PUT: HTTP $code: $body"
cmp -s "$tf_tmp/b1" "$NGINX_CACHE/cas/$h" || fail "nginx does not hold the uploaded bytes"
[ "$(nginx_count "PUT /cas/$h 201")" -eq 1 ] || fail "the PUT was not forwarded once"
req GET "$P/cas/$h"
[ "$code" = 200 ] || fail "CAS GET: HTTP $code"
cmp -s "$tf_tmp/b1" "$tf_tmp/body" || fail "CAS GET returned other bytes"
[ "$(nginx_count "GET /cas/$h 200 300000")" -eq 1 ] || fail "the GET was not forwarded once"
req HEAD "$P/cas/$h"
[ "$code" = 200 ] || fail "CAS HEAD: HTTP $code"
assert_contains "$(tr -d '\r' <"$tf_tmp/body")" "Content-Length: 300000" "HEAD headers"
[ "$(nginx_count "HEAD /cas/$h 200")" -eq 1 ] || fail "the HEAD was not forwarded"

# AC: a real ActionResult (from the Bazel fixtures) under a new key.
mkdir -p "$tf_tmp/fx"
tar -xzf "$fx/cache.tar.gz" -C "$tf_tmp/fx"
ars=("$tf_tmp/fx/ac"/*)
ar=$(basename "${ars[0]}")
cp "$tf_tmp/fx/ac/$ar" "$tf_tmp/ar"
k=$(echo "an action of this test" | sha256sum | cut -d' ' -f1)
req PUT "$P/ac/$k" -T "$tf_tmp/ar"
[ "$code" = 201 ] || fail "AC PUT: HTTP $code: $body"
cmp -s "$tf_tmp/ar" "$NGINX_CACHE/ac/$k" || fail "nginx does not hold the ActionResult"
req GET "$P/ac/$k"
[ "$code" = 200 ] || fail "AC GET: HTTP $code: $body"
cmp -s "$tf_tmp/ar" "$tf_tmp/body" || fail "AC GET returned other bytes"
[ "$(nginx_count "PUT /ac/$k 201")" -eq 1 ] && [ "$(nginx_count "GET /ac/$k 200")" -eq 1 ] || fail "AC requests not forwarded"
req HEAD "$P/ac/$k"
[ "$code" = 200 ] || fail "AC HEAD: HTTP $code"
assert_contains "$(tr -d '\r' <"$tf_tmp/body")" "Content-Length: $(stat -c %s "$tf_tmp/ar")" "AC HEAD headers"

# Misses: 404 from upstream is 404 here, for GET and HEAD, AC and CAS.
miss=$(echo "not in the cache" | sha256sum | cut -d' ' -f1)
for area in ac cas; do
  req GET "$P/$area/$miss"
  [ "$code" = 404 ] || fail "$area miss: HTTP $code"
  req HEAD "$P/$area/$miss"
  [ "$code" = 404 ] || fail "$area HEAD miss: HTTP $code"
  [ "$(nginx_count "GET /$area/$miss 404")" -eq 1 ] || fail "$area miss not asked upstream"
done

# An instance prefix is accepted and ignored, as bazel-remote does.
req GET "$P/some/instance/cas/$h"
[ "$code" = 200 ] && cmp -s "$tf_tmp/b1" "$tf_tmp/body" || fail "prefixed GET: HTTP $code"
[ "$(nginx_count "GET /cas/$h 200")" -eq 2 ] || fail "the prefixed GET was not forwarded to /cas/"

# bazel-remote's path rule: anything else is 400 with a short text body, and
# nothing reaches the upstream.
nginx_sync
before=$(grep -c . "$NGINX_LOG")
upper=$(echo "$h" | tr a-f A-F)
for path in / /stats /cas/ "/cas/${h:0:63}" "/cas/${h}0" "/cas/$upper" "/xcas/$h" "/ac$h" "/cas.v2/$h" \
  "/ac/$h/" "/cas/$h?x=1" "/blobs/$h"; do
  req GET "$P$path"
  if [ "$path" = "/cas/$h?x=1" ]; then
    [ "$code" = 200 ] || fail "a query string is not part of the path: HTTP $code"
    continue
  fi
  [ "$code" = 400 ] || fail "GET $path: HTTP $code, want 400"
  assert_contains "$body" "bad path" "400 body for $path"
done
nginx_sync
[ "$(grep -c . "$NGINX_LOG")" -eq $((before + 1)) ] || fail "bad paths reached nginx"

# Other methods: 405 with Allow.
for m in POST DELETE PATCH OPTIONS; do
  code=$(curl -sS -o /dev/null -D "$tf_tmp/hdr" -w '%{http_code}' -X "$m" "$P/cas/$h")
  [ "$code" = 405 ] || fail "$m: HTTP $code, want 405"
  grep -qi '^Allow: GET, HEAD, PUT' "$tf_tmp/hdr" || fail "$m: no Allow header"
done
[ -f "$NGINX_CACHE/cas/$h" ] || fail "DELETE reached nginx"

# A CAS PUT whose bytes do not hash to the key is refused and not stored,
# small or large (the upstream never gets the last byte).
for n in 1 5000000; do
  blob "$tf_tmp/wrong" $n >/dev/null
  req PUT "$P/cas/$miss" -T "$tf_tmp/wrong"
  [ "$code" = 400 ] || fail "wrong bytes ($n): HTTP $code"
  assert_contains "$body" "the body's SHA-256 is $(sha256sum "$tf_tmp/wrong" | cut -d' ' -f1); not stored"
  [ ! -e "$NGINX_CACHE/cas/$miss" ] || fail "nginx stored a blob with the wrong bytes ($n)"
done
[ "$(nginx_count "PUT /cas/$miss 201")" -eq 0 ] || fail "a wrong blob was accepted upstream"
# An empty body under a non-empty key, too.
: >"$tf_tmp/empty"
req PUT "$P/cas/$miss" -T "$tf_tmp/empty"
[ "$code" = 400 ] || fail "empty body, wrong key: HTTP $code"
# A PUT without Content-Length (chunked) is refused, as bazel-remote does.
req PUT "$P/cas/$h" -T "$tf_tmp/b1" -H 'Transfer-Encoding: chunked'
[ "$code" = 411 ] || fail "chunked PUT: HTTP $code, want 411"
# An action cache entry over the cap.
truncate -s $((65 * 1024 * 1024)) "$tf_tmp/huge"
code=$(curl -sS -o /dev/null -w '%{http_code}' -T "$tf_tmp/huge" "$P/ac/$miss" 2>/dev/null || true)
[ "$code" = 413 ] || fail "oversized AC PUT: HTTP $code, want 413"
[ ! -e "$NGINX_CACHE/ac/$miss" ] || fail "an oversized AC entry was stored"

# A blob the upstream holds with the wrong bytes (bit rot, a broken cache)
# never reaches the client complete: the last byte is held until the hash
# checks out, so the transfer is cut short and the client sees an error.
bad=$(blob "$tf_tmp/rot" 2000000)
head -c 2000000 /dev/urandom >"$NGINX_CACHE/cas/$bad"
chmod a+r "$NGINX_CACHE/cas/$bad"
set +e
curl -sS -o "$tf_tmp/rotten" "$P/cas/$bad" 2>"$tf_tmp/rot.err"
crc=$?
set -e
[ "$crc" -ne 0 ] || fail "a corrupt upstream blob was delivered as a success"
[ "$(stat -c %s "$tf_tmp/rotten")" -lt 2000000 ] || fail "a corrupt upstream blob was delivered whole"
assert_contains "$(cat "$PROXY_LOG")" "the upstream sent bytes of another hash" "proxy log"

# The empty blob always exists and is never asked upstream.
empty=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
req GET "$P/cas/$empty"
[ "$code" = 200 ] && [ ! -s "$tf_tmp/body" ] || fail "empty blob GET: HTTP $code"
req HEAD "$P/cas/$empty"
[ "$code" = 200 ] || fail "empty blob HEAD: HTTP $code"
req PUT "$P/cas/$empty" -T "$tf_tmp/empty"
[ "$code" = 200 ] || fail "empty blob PUT: HTTP $code"
[ "$(nginx_count "$empty")" -eq 0 ] || fail "the empty blob was asked upstream"

# Keep-alive: 60 requests on one client connection use one upstream connection.
urls=()
for i in $(seq 60); do urls+=(-o /dev/null "$P/cas/$h"); done
nginx_sync
first=$(grep -c . "$NGINX_LOG")
connects=$(curl -sS -w '%{num_connects}\n' "${urls[@]}" | awk '{ n += $1 } END { print n }')
[ "$connects" -eq 1 ] || fail "the client needed $connects connections for 60 requests"
nginx_sync
conns=$(tail -n +$((first + 1)) "$NGINX_LOG" | grep -o 'conn=[0-9]*' | sort -u | wc -l)
[ "$conns" -eq 1 ] || fail "60 sequential requests used $conns upstream connections"

# Many transfers at once, both ways: every byte right.
for i in $(seq 24); do
  blob "$tf_tmp/p$i" $((i * 50000 + 1)) >"$tf_tmp/p$i.h"
done
pids=()
for i in $(seq 24); do
  curl -sS -o /dev/null -w '%{http_code}\n' -T "$tf_tmp/p$i" "$P/cas/$(cat "$tf_tmp/p$i.h")" >"$tf_tmp/p$i.put" \
    2>"$tf_tmp/p$i.err" &
  pids+=($!)
done
tf_track "${pids[@]}"
wait "${pids[@]}"
pids=()
for i in $(seq 24); do
  [ "$(cat "$tf_tmp/p$i.put")" = 201 ] || fail "parallel PUT $i: HTTP $(cat "$tf_tmp/p$i.put")"
  curl -sS -o "$tf_tmp/g$i" "$P/cas/$(cat "$tf_tmp/p$i.h")" 2>"$tf_tmp/g$i.err" &
  pids+=($!)
done
tf_track "${pids[@]}"
wait "${pids[@]}"
for i in $(seq 24); do cmp -s "$tf_tmp/p$i" "$tf_tmp/g$i" || fail "parallel GET $i: other bytes"; done

# SIGTERM: a clean stop, exit 0 (nothing was wanted, nothing failed), one summary.
proxy_stop
cat "$PROXY_LOG"
[ "$proxy_rc" -eq 0 ] || fail "exit $proxy_rc after SIGTERM"
summary=$(grep -A4 '^topfetch: .* files in place' "$PROXY_LOG")
[ "$(grep -c '^topfetch: .* files in place' "$PROXY_LOG")" -eq 1 ] || fail "want one summary"
assert_contains "$summary" "2 actions recorded"  # the AC upload and the AC hit
assert_contains "$summary" "1 AC hits"
echo "proxy_http: ok"
