#!/usr/bin/env bash
# topfetch get: one verified blob to standard output or a file, an
# ActionResult as JSON, against a --disk_cache directory, nginx (HTTP) and
# Bazel's own remote worker (gRPC); exit codes; nothing written unverified.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/lib/reapi_worker.sh"
need python3

head -c 3000 /dev/urandom >"$tf_tmp/blob"
blob=$(sha256sum "$tf_tmp/blob" | cut -c1-64)
ac=$(echo "action $RANDOM$RANDOM" | sha256sum | cut -c1-64)
bad_ac=$(echo "bad action $RANDOM$RANDOM" | sha256sum | cut -c1-64)
missing=$(echo "nothing $RANDOM" | sha256sum | cut -c1-64)
# ActionResult {output_files {path: pkg/out.bin, digest {blob, 3000}, is_executable: true}, exit_code: 0}
# and one whose output path leaves the output folder.
python3 - "$blob" "$tf_tmp/ac.bin" "$tf_tmp/bad_ac.bin" <<'PY'
import sys
h, good, bad = sys.argv[1:4]
def ld(field, b): return bytes([field << 3 | 2, len(b)]) + b
digest = ld(1, h.encode()) + bytes([0x10, 3000 & 0x7f | 0x80, 3000 >> 7])
open(good, "wb").write(ld(2, ld(1, b"pkg/out.bin") + ld(2, digest) + bytes([0x20, 1])))
open(bad, "wb").write(ld(2, ld(1, b"../escape.bin") + ld(2, digest)))
PY

check_json() { # FILE
  python3 - "$1" "$blob" <<'PY' || fail "ActionResult JSON: $(cat "$1")"
import json, sys
j = json.load(open(sys.argv[1]))
f = j["outputFiles"][0]
assert f["path"] == "pkg/out.bin", f
assert f["digest"] == {"hash": sys.argv[2], "sizeBytes": "3000"}, f
assert f["isExecutable"] is True, f
PY
}

# One backend: URL, then how to put a file into its CAS and AC.
check_backend() { # NAME URL
  local name=$1 url=$2
  run_get() { set +e; "$TOPFETCH" get --remote_cache="$url" "$@" >"$tf_tmp/stdout" 2>"$tf_tmp/stderr"; rc=$?; set -e; }
  run_get "$blob/3000"
  [ "$rc" -eq 0 ] || fail "$name: get to stdout: exit $rc: $(cat "$tf_tmp/stderr")"
  cmp -s "$tf_tmp/stdout" "$tf_tmp/blob" || fail "$name: stdout is not the blob"
  assert_contains "$(cat "$tf_tmp/stderr")" "topfetch: 1 of 1 file in place (1 fetched, 0 already present)" "$name summary"
  run_get "$blob/3000" -o "$tf_tmp/$name/sub/out.bin"
  [ "$rc" -eq 0 ] || fail "$name: get -o: exit $rc: $(cat "$tf_tmp/stderr")"
  cmp -s "$tf_tmp/$name/sub/out.bin" "$tf_tmp/blob" || fail "$name: -o file is not the blob"
  [ ! -s "$tf_tmp/stdout" ] || fail "$name: -o also wrote to stdout"
  # Missing: lost, exit 1, nothing on stdout or at the file.
  run_get "$missing/12" -o "$tf_tmp/$name/missing.bin"
  [ "$rc" -eq 1 ] || fail "$name: missing blob: exit $rc, want 1"
  assert_contains "$(cat "$tf_tmp/stderr")" "lost: " "$name missing"
  [ ! -e "$tf_tmp/$name/missing.bin" ] || fail "$name: a file for a missing blob"
  # The wrong size: the bytes do not verify, nothing reaches stdout.
  run_get "$blob/2999"
  [ "$rc" -eq 1 ] || fail "$name: wrong size: exit $rc, want 1"
  [ ! -s "$tf_tmp/stdout" ] || fail "$name: unverified bytes on stdout"
  # The ActionResult as JSON, to stdout and to a file.
  run_get --action="$ac"
  [ "$rc" -eq 0 ] || fail "$name: --action: exit $rc: $(cat "$tf_tmp/stderr")"
  check_json "$tf_tmp/stdout"
  run_get --action="$ac" -o "$tf_tmp/$name/ac.json" --summary_json="$tf_tmp/$name/summary.json"
  [ "$rc" -eq 0 ] || fail "$name: --action -o: exit $rc"
  check_json "$tf_tmp/$name/ac.json"
  python3 -m json.tool "$tf_tmp/$name/summary.json" >/dev/null || fail "$name: summary JSON"
  run_get --action="$missing"
  [ "$rc" -eq 1 ] || fail "$name: missing action: exit $rc, want 1"
  run_get --action="$bad_ac"
  [ "$rc" -eq 3 ] || fail "$name: an ActionResult with ../: exit $rc, want 3"
  assert_contains "$(cat "$tf_tmp/stderr")" "escape.bin" "$name bad ActionResult"
  [ ! -s "$tf_tmp/stdout" ] || fail "$name: JSON of a refused ActionResult"
}

# --disk_cache layout.
disk="$tf_tmp/disk"
mkdir -p "$disk/cas/${blob:0:2}" "$disk/ac/${ac:0:2}" "$disk/ac/${bad_ac:0:2}"
cp "$tf_tmp/blob" "$disk/cas/${blob:0:2}/$blob"
cp "$tf_tmp/ac.bin" "$disk/ac/${ac:0:2}/$ac"
cp "$tf_tmp/bad_ac.bin" "$disk/ac/${bad_ac:0:2}/$bad_ac"
check_backend disk "$disk"
# A blob larger than what is read into memory goes through a temporary folder.
head -c $((66 << 20)) /dev/urandom >"$tf_tmp/large"
large=$(sha256sum "$tf_tmp/large" | cut -c1-64)
mkdir -p "$disk/cas/${large:0:2}"
cp "$tf_tmp/large" "$disk/cas/${large:0:2}/$large"
set +e
"$TOPFETCH" get --remote_cache="$disk" "$large/$((66 << 20))" >"$tf_tmp/large.out" 2>"$tf_tmp/large.err"
rc=$?
set -e
[ "$rc" -eq 0 ] || fail "large blob: exit $rc: $(cat "$tf_tmp/large.err")"
cmp -s "$tf_tmp/large.out" "$tf_tmp/large" || fail "large blob: stdout differs"
rm -f "$tf_tmp/large" "$tf_tmp/large.out" "$disk/cas/${large:0:2}/$large"

# nginx (HTTP): {ac,cas}/<hash>.
nginx_start
cp "$tf_tmp/blob" "$NGINX_CACHE/cas/$blob"
cp "$tf_tmp/ac.bin" "$NGINX_CACHE/ac/$ac"
cp "$tf_tmp/bad_ac.bin" "$NGINX_CACHE/ac/$bad_ac"
chmod 644 "$NGINX_CACHE"/cas/* "$NGINX_CACHE"/ac/*
check_backend http "$NGINX_URL"
nginx_stop

# Bazel's remote worker (gRPC): ByteStream.Read and GetActionResult.
reapi_worker_start
mkdir -p "$WORKER_CAS/cas/${blob:0:2}" "$WORKER_CAS/ac/${ac:0:2}" "$WORKER_CAS/ac/${bad_ac:0:2}"
cp "$tf_tmp/blob" "$WORKER_CAS/cas/${blob:0:2}/$blob"
cp "$tf_tmp/ac.bin" "$WORKER_CAS/ac/${ac:0:2}/$ac"
cp "$tf_tmp/bad_ac.bin" "$WORKER_CAS/ac/${bad_ac:0:2}/$bad_ac"
check_backend grpc "$WORKER_URL"
reapi_worker_stop

# Flags.
run_tf get --remote_cache="$disk" "$blob"
[ "$rc" -eq 2 ] || fail "HASH without a size: exit $rc, want 2"
assert_contains "$out" "HASH/SIZE"
run_tf get --remote_cache="$disk"
[ "$rc" -eq 2 ] || fail "nothing named: exit $rc, want 2"
run_tf get --remote_cache="$disk" --action="$ac" "$blob/3000"
[ "$rc" -eq 2 ] || fail "both a blob and --action: exit $rc, want 2"
run_tf get "$blob/3000"
[ "$rc" -eq 2 ] || fail "no --remote_cache: exit $rc, want 2"
# No secret in any message: an unreachable cache with user:password, a
# second word that is not a blob name.
port=$(free_port)
run_tf get --remote_retries=0 --remote_cache="http://alice:S3cr3t@127.0.0.1:$port/prefix" "$blob/3000"
[ "$rc" -eq 1 ] || fail "unreachable cache: exit $rc: $out"
assert_contains "$out" "http://127.0.0.1:$port/prefix/cas/$blob"
case "$out" in *S3cr3t*) fail "the password is in the output: $out" ;; esac
run_tf get --remote_cache="$disk" "$blob/3000" "Authorization=S3cr3t"
[ "$rc" -eq 2 ] || fail "two blob names: exit $rc"
case "$out" in *S3cr3t*) fail "a stray argument is repeated: $out" ;; esac
echo "ok"
