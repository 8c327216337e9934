#!/usr/bin/env bash
# A directory in Bazel's --disk_cache layout as the upstream: uploads land
# sharded ({ac,cas}/ab/abcd...) through a temporary file and a rename, a flat
# tree ({ac,cas}/abcd..., an HTTP cache root copied to disk) is read too,
# wrong bytes are refused and leave nothing behind, large blobs stream. Then
# a whole build's worth: the Bazel fixture cache copied flat into the
# directory, its action results looked up through the proxy while it follows
# the BEP, and the top-level files fetched from the directory.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
fx="${TF_FIXTURES:?}"
disk="$tf_tmp/disk"
proxy_start p1.log --remote_cache="$disk" --output_dir="$tf_tmp/out1" --noremote_validate_outputs
P=$PROXY_URL
[ -d "$disk" ] || fail "the disk cache directory was not created"

h=$(blob "$tf_tmp/b" 123456)
req PUT "$P/cas/$h" -T "$tf_tmp/b"
[ "$code" = 200 ] || fail "disk CAS PUT: HTTP $code: $body"
cmp -s "$tf_tmp/b" "$disk/cas/${h:0:2}/$h" || fail "not stored sharded as cas/${h:0:2}/$h"
[ "$(stat -c %a "$disk/cas/${h:0:2}/$h")" = 644 ] || fail "stored with mode $(stat -c %a "$disk/cas/${h:0:2}/$h")"
req GET "$P/cas/$h"
[ "$code" = 200 ] && cmp -s "$tf_tmp/b" "$tf_tmp/body" || fail "disk CAS GET: HTTP $code"
req HEAD "$P/cas/$h"
[ "$code" = 200 ] || fail "disk CAS HEAD: HTTP $code"
assert_contains "$(tr -d '\r' <"$tf_tmp/body")" "Content-Length: 123456" "HEAD headers"

# Flat layout.
f=$(blob "$tf_tmp/flat" 999)
cp "$tf_tmp/flat" "$disk/cas/$f"
req GET "$P/cas/$f"
[ "$code" = 200 ] && cmp -s "$tf_tmp/flat" "$tf_tmp/body" || fail "flat CAS GET: HTTP $code"

# Action cache: a real ActionResult.
mkdir -p "$tf_tmp/fx"
tar -xzf "$fx/cache.tar.gz" -C "$tf_tmp/fx"
ars=("$tf_tmp/fx/ac"/*)
ar=$(basename "${ars[0]}")
k=$(echo "a disk action" | sha256sum | cut -d' ' -f1)
req PUT "$P/ac/$k" -T "$tf_tmp/fx/ac/$ar"
[ "$code" = 200 ] || fail "disk AC PUT: HTTP $code: $body"
cmp -s "$tf_tmp/fx/ac/$ar" "$disk/ac/${k:0:2}/$k" || fail "AC not stored sharded"
req GET "$P/ac/$k"
[ "$code" = 200 ] && cmp -s "$tf_tmp/fx/ac/$ar" "$tf_tmp/body" || fail "disk AC GET: HTTP $code"

# Misses.
miss=$(echo "absent" | sha256sum | cut -d' ' -f1)
for area in ac cas; do
  req GET "$P/$area/$miss"
  [ "$code" = 404 ] || fail "disk $area miss: HTTP $code"
  req HEAD "$P/$area/$miss"
  [ "$code" = 404 ] || fail "disk $area HEAD miss: HTTP $code"
done

# Wrong bytes: refused, nothing stored, no temporary file left.
for n in 10 3000000; do
  blob "$tf_tmp/wrong" $n >/dev/null
  req PUT "$P/cas/$miss" -T "$tf_tmp/wrong"
  [ "$code" = 400 ] || fail "disk wrong bytes ($n): HTTP $code"
done
[ ! -e "$disk/cas/${miss:0:2}/$miss" ] && [ ! -e "$disk/cas/$miss" ] || fail "a wrong blob was stored"
[ -z "$(find "$disk" -name '.tftmp*')" ] || fail "temporary files left: $(find "$disk" -name '.tftmp*')"

# A large blob streams through the disk backend too.
big=100000000
g=$(blob "$tf_tmp/big" $big)
req PUT "$P/cas/$g" -T "$tf_tmp/big"
[ "$code" = 200 ] || fail "disk 100 MB PUT: HTTP $code"
code=$(curl -sS -o "$tf_tmp/back" -w '%{http_code}' "$P/cas/$g")
[ "$code" = 200 ] && cmp -s "$tf_tmp/big" "$tf_tmp/back" || fail "disk 100 MB GET"
rm -f "$tf_tmp/big" "$tf_tmp/back"
peak=$(vmhwm)
[ "$peak" -lt $((64 * 1024)) ] || fail "peak RSS $peak KiB streaming 100 MB through the disk backend"
proxy_stop
[ "$proxy_rc" -eq 0 ] || fail "p1 exit $proxy_rc"

# A build through a disk upstream: the fixture cache laid out flat.
disk2="$tf_tmp/disk2"
mkdir -p "$disk2"
cp -r "$tf_tmp/fx/ac" "$tf_tmp/fx/cas" "$disk2/"
bep="$tf_tmp/bep.bin"
proxy_start p2.log --remote_cache="$disk2" --output_dir="$tf_tmp/out2" --bep_follow="$bep" --exit_after_build
for k in $(ls "$disk2/ac"); do
  code=$(curl -sS -o /dev/null -w '%{http_code}' "$PROXY_URL/ac/$k")
  [ "$code" = 200 ] || fail "fixture AC $k via disk: HTTP $code"
done
cp "$fx/run2_minimal_hits/bep.bin" "$bep"
proxy_wait
cat "$PROXY_LOG"
# //pkg:tool's file is a local symlink Bazel never caches: exit 1, everything else in place.
[ "$proxy_rc" -eq 1 ] || fail "build via disk: exit $proxy_rc, want 1 (//pkg:tool has no digest)"
assert_contains "$(cat "$PROXY_LOG")" "11 of 12 files in place (11 fetched, 0 already present)"
assert_contains "$(cat "$PROXY_LOG")" "1 without a digest"
b=bazel-out/k8-fastbuild/bin/pkg
[ "$(sha256sum "$tf_tmp/out2/$b/big.dat" | cut -c1-8)" = 01ab038e ] || fail "big.dat wrong"
[ "$(stat -c %a "$tf_tmp/out2/$b/hello.sh")" = 755 ] || fail "hello.sh not executable"
[ ! -e "$tf_tmp/out2/$b/intermediate.txt" ] || fail "an intermediate was fetched"
echo "proxy_disk: ok"
