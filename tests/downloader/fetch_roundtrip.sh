#!/usr/bin/env bash
# Many blobs through a real nginx cache: bytes, modes, one GET per blob,
# no GET for the empty blob, nothing fetched twice, a clear summary line.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
nginx_start

out_dir="$tf_tmp/out"
manifest="$tf_tmp/manifest.txt"
: >"$manifest"
# 300 random blobs of 1..5000 bytes (one process, not one per blob).
python3 - "$NGINX_CACHE/cas" "$manifest" <<'PY'
import hashlib, os, sys
cas, manifest = sys.argv[1:3]
with open(manifest, "a") as m:
    for i in range(1, 301):
        data = os.urandom(i * 37 % 5000 + 1)
        h = hashlib.sha256(data).hexdigest()
        with open(os.path.join(cas, h), "wb") as f:
            f.write(data)
        os.chmod(os.path.join(cas, h), 0o644)
        m.write("%s %d dir%d/sub/file%d.bin\n" % (h, len(data), i % 7, i))
PY
# An executable, and one blob wanted at three paths (two with another mode).
exe=$(printf '#!/bin/sh\necho hi\n' | cas_put_stdin)
echo "$exe $(stat -c %s "$NGINX_CACHE/cas/$exe") x bin/hello.sh" >>"$manifest"
shared=$(head -c 100000 /dev/urandom | cas_put_stdin)
echo "$shared 100000 a/shared.dat" >>"$manifest"
echo "$shared 100000 b/shared.dat" >>"$manifest"
echo "$shared 100000 x c/shared-exec.dat" >>"$manifest"
echo "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 0 empty.txt" >>"$manifest"
echo "# a comment, then a blank line" >>"$manifest"
echo >>"$manifest"

run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$out_dir" --manifest="$manifest" --remote_max_connections=16
[ "$rc" -eq 0 ] || fail "exit $rc: $out"
assert_contains "$out" "305 of 305 files in place" "summary"
assert_contains "$out" "0 lost, 0 corrupt, 0 failed, 0 local errors" "summary"

# Every file has the right bytes and mode.
python3 - "$out_dir" "$manifest" <<'PY' || fail "files differ from the manifest"
import hashlib, os, stat, sys
out, bad = sys.argv[1], 0
for line in open(sys.argv[2]):
    f = line.split()
    if not f or f[0].startswith("#"):
        continue
    path, mode = (f[3], 0o755) if f[2] == "x" else (f[2], 0o644)
    p = os.path.join(out, path)
    if not os.path.isfile(p):
        print("missing " + path); bad += 1; continue
    if hashlib.sha256(open(p, "rb").read()).hexdigest() != f[0]:
        print("wrong bytes in " + path); bad += 1
    if stat.S_IMODE(os.stat(p).st_mode) != mode:
        print("%s has mode %o, want %o" % (path, stat.S_IMODE(os.stat(p).st_mode), mode)); bad += 1
sys.exit(1 if bad else 0)
PY
[ ! -s "$out_dir/empty.txt" ] || fail "empty.txt is not empty"

# Dedup: one GET for the shared blob; none for the empty blob; one per blob overall.
[ "$(nginx_count "GET /cas/$shared 200")" -eq 1 ] || fail "shared blob fetched $(nginx_count "GET /cas/$shared") times"
[ "$(nginx_count "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")" -eq 0 ] || fail "the empty blob was requested"
[ "$(nginx_count "GET /cas/")" -eq 302 ] || fail "expected 302 GETs, saw $(nginx_count "GET /cas/")"
# Connections are kept alive and reused: 302 requests over at most 16 connections.
conns=$(grep -o 'conn=[0-9]*' "$NGINX_LOG" | sort -u | wc -l)
[ "$conns" -le 16 ] || fail "302 requests used $conns connections with --remote_max_connections=16"
# No temporary file is left anywhere.
[ -z "$(find "$out_dir" -name '.tftmp.*')" ] || fail "temporary files left: $(find "$out_dir" -name '.tftmp.*')"

# Second run: everything is already there; nothing goes over the wire.
before=$(nginx_count "GET ")
run_tf fetch --remote_cache="$NGINX_URL/" --output_dir="$out_dir" --manifest="$manifest"
[ "$rc" -eq 0 ] || fail "second run exit $rc: $out"
assert_contains "$out" "0 fetched, 304 already present" "second summary"
[ "$(nginx_count "GET ")" -eq "$before" ] || fail "second run made requests"

# A file modified behind our back is fetched again and repaired.
echo tampered >"$out_dir/a/shared.dat"
run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$out_dir" --manifest="$manifest"
[ "$rc" -eq 0 ] || fail "third run exit $rc: $out"
[ "$(sha256sum "$out_dir/a/shared.dat" | cut -d' ' -f1)" = "$shared" ] || fail "tampered file not repaired"

# A path prefix goes in the URL; the instance name is not used on HTTP caches
# (as Bazel); headers are sent (nginx ignores them) and never printed.
mkdir -p "$NGINX_CACHE/inst/cas"
cp "$NGINX_CACHE/cas/$exe" "$NGINX_CACHE/inst/cas/$exe"
echo "$exe $(stat -c %s "$NGINX_CACHE/cas/$exe") x only.sh" >"$tf_tmp/m2"
run_tf fetch --remote_cache="$NGINX_URL/inst" --remote_instance_name=other --remote_header=Authorization=Bearer-s3cr3t \
  --output_dir="$tf_tmp/out2" --manifest="$tf_tmp/m2"
[ "$rc" -eq 0 ] || fail "prefix run exit $rc: $out"
[ "$(nginx_count "GET /inst/cas/$exe 200")" -eq 1 ] || fail "the URL's path prefix was not used"
[ "$(nginx_count "/other/")" -eq 0 ] || fail "the instance name went into an HTTP URL"
case "$out" in *s3cr3t*) fail "a header value was printed" ;; esac

# Malformed manifests fetch nothing and exit 3, naming the line.
printf 'zzz 3 a.txt\n' >"$tf_tmp/bad1"
run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out3" --manifest="$tf_tmp/bad1"
[ "$rc" -eq 3 ] || fail "bad hash: exit $rc"
assert_contains "$out" "bad1:1: 'zzz' is not a SHA-256 digest"
printf '%s -5 a.txt\n%s 10\n' "$exe" "$exe" >"$tf_tmp/bad2"
run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out3" --manifest="$tf_tmp/bad2"
[ "$rc" -eq 3 ] || fail "bad size: exit $rc"
assert_contains "$out" "bad2:1: size '-5' is not a whole number"
assert_contains "$out" "bad2:2: expected 'HASH SIZE [x] PATH'"
printf '%s 1 same.txt\n%s 100000 same.txt\n' "$exe" "$shared" >"$tf_tmp/bad3"
run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out3" --manifest="$tf_tmp/bad3"
[ "$rc" -eq 3 ] || fail "conflicting paths: exit $rc"
assert_contains "$out" "both write 'same.txt' with different contents"
[ ! -e "$tf_tmp/out3" ] || [ -z "$(ls -A "$tf_tmp/out3")" ] || fail "a malformed manifest wrote files"

# Usage errors exit 2 and say what to do.
run_tf fetch --output_dir="$tf_tmp/o" --manifest="$manifest"
[ "$rc" -eq 2 ] || fail "missing --remote_cache: exit $rc"
assert_contains "$out" "are required"
run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o" --manifest="$manifest" --bogus
[ "$rc" -eq 2 ] || fail "unknown flag: exit $rc"
assert_contains "$out" "unknown flag '--bogus'"
run_tf fetch --help
[ "$rc" -eq 0 ] || fail "--help exit $rc"
for f in remote_cache remote_header remote_instance_name remote_max_connections remote_timeout remote_retries \
         tls_certificate tls_client_certificate tls_client_key output_dir manifest "Exit codes"; do
  assert_contains "$out" "$f" "--help"
done
echo "fetch_roundtrip: ok"
