#!/usr/bin/env bash
# Large blobs are hashed by the verifier threads (one per CPU, up to 4; one
# blob at a time each) from memory chunks while they arrive, and from the
# file when the chunk pool (8 MiB for all transfers) is empty: three 20 MiB
# blobs at once use both ways. Every file must be right; a large blob with
# the wrong bytes must be reported corrupt, never placed, also when it is
# hashed at the same time as right ones.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
nginx_start

manifest="$tf_tmp/manifest.txt"
: >"$manifest"
for i in 1 2 3; do
  h=$(head -c $((20 * 1024 * 1024 + i * 4099)) /dev/urandom | cas_put_stdin)
  echo "$h $(stat -c %s "$NGINX_CACHE/cas/$h") big$i.bin" >>"$manifest"
done
run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out" --manifest="$manifest"
[ "$rc" -eq 0 ] || fail "exit $rc: $out"
assert_contains "$out" "3 of 3 files in place (3 fetched" "summary"
while read -r h size path; do
  [ "$(sha256sum "$tf_tmp/out/$path" | cut -d' ' -f1)" = "$h" ] || fail "$path has the wrong bytes"
  [ "$(stat -c %s "$tf_tmp/out/$path")" -eq "$size" ] || fail "$path has the wrong size"
done <"$manifest"
[ -z "$(find "$tf_tmp/out" -name '.tftmp.*')" ] || fail "temporary files left behind"

# Wrong bytes under a large blob's name: corrupt after the retry, no file.
good=$(head -n1 "$manifest" | cut -d' ' -f1)
size=$(head -n1 "$manifest" | cut -d' ' -f2)
bad=$(printf 'not the bytes %s' "$good" | sha256sum | cut -d' ' -f1)
cp "$NGINX_CACHE/cas/$good" "$NGINX_CACHE/cas/$bad"
printf '\001' | dd of="$NGINX_CACHE/cas/$bad" bs=1 seek=$((size - 5)) conv=notrunc status=none
chmod 644 "$NGINX_CACHE/cas/$bad"
{ echo "$bad $size wrong.bin"; cat "$manifest"; } >"$tf_tmp/mbad"
run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out2" --manifest="$tf_tmp/mbad"
[ "$rc" -ne 0 ] || fail "a wrong large blob was accepted: $out"
assert_contains "$out" "3 of 4 files in place (3 fetched" "summary"
assert_contains "$out" "1 corrupt" "summary"
assert_contains "$out" "the body hashes to" "message"
[ ! -e "$tf_tmp/out2/wrong.bin" ] || fail "a wrong large blob reached its final path"
while read -r h size path; do
  [ "$(sha256sum "$tf_tmp/out2/$path" | cut -d' ' -f1)" = "$h" ] || fail "$path (next to a wrong blob) has the wrong bytes"
done <"$manifest"
[ -z "$(find "$tf_tmp/out2" -name '.tftmp.*')" ] || fail "temporary files left behind"
echo "ok"
