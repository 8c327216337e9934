#!/usr/bin/env bash
# No secret in any message (issue 11, defect 3): passwords in --remote_cache,
# --remote_header values, and whatever else a mistyped command line carries,
# through every command, on every error path we can reach without a server.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
H=$(printf 'hello\n' | sha256sum | cut -d' ' -f1)
printf '%s 6 a.txt\n' "$H" >"$tf_tmp/m.txt"
: >"$tf_tmp/empty.bep"
port=$(free_port) # nothing listens there
cd "$tf_tmp" # (a relative --remote_cache is a folder here)

# A command that unexpectedly starts serving is stopped (and fails the test).
run_tf() { set +e; out=$(timeout 20 "$TOPFETCH" "$@" 2>&1); rc=$?; set -e; [ $rc -ne 124 ] || fail "hung: $*"; }
no_secret() { # WHAT
  case "$out" in *S3cr3t*|*cret@*) fail "$1: the secret is in the output: $out" ;; esac
}
# Each command with its own required flags, so the remote is what fails.
cmd_args() {
  case $1 in
    fetch) echo "fetch --manifest=$tf_tmp/m.txt --output_dir=$tf_tmp/o" ;;
    collect) echo "collect --bep=$tf_tmp/empty.bep --output_dir=$tf_tmp/o" ;;
    proxy) echo "proxy --listen=127.0.0.1:0 --output_dir=$tf_tmp/o" ;;
    serve) echo "serve --listen=ipc://$tf_tmp/ipc/s.ipc --output_dir=$tf_tmp/o" ;;
  esac
}
for c in fetch collect proxy serve; do
  # shellcheck disable=SC2046
  set -- $(cmd_args $c)
  run_tf "$@" --remote_cach="http://u:S3cr3t@127.0.0.1:$port"
  [ "$rc" -eq 2 ] || fail "$c: misspelt flag: exit $rc"; no_secret "$c misspelt flag"
  assert_contains "$out" "unknown flag '--remote_cach'" "$c misspelt flag"
  run_tf "$@" --remote_cache="$tf_tmp" Authorization=S3cr3t
  [ "$rc" -eq 2 ] || fail "$c: stray argument: exit $rc"; no_secret "$c stray argument"
  assert_contains "$out" "unexpected argument number" "$c stray argument"
  [ $c != serve ] || continue # serve opens the cache when a build starts
  run_tf "$@" --remote_cache='htps://user:S3cr3t@host'
  [ "$rc" -ne 0 ] || fail "$c: bad scheme accepted"; no_secret "$c bad scheme"
  assert_contains "$out" "htps://...: unknown scheme" "$c bad scheme"
  # (the proxy opens a folder cache, creating it, when a build starts)
  if [ $c = fetch ] || [ $c = collect ]; then
    run_tf "$@" --remote_cache='htp:/user:S3cr3t@host'
    [ "$rc" -ne 0 ] || fail "$c: htp:/ accepted"; no_secret "$c htp:/"
    assert_contains "$out" "not an http(s) URL and not an existing directory" "$c htp:/"
    run_tf "$@" --remote_cache="http://alice:s3/cret@127.0.0.1:$port"
    [ "$rc" -ne 0 ] || fail "$c: '/' in the password accepted"; no_secret "$c '/' in the password"
  fi
  run_tf "$@" --remote_cache="http://127.0.0.1:$port" --remote_header='Token:S3cr3t'
  [ "$rc" -eq 2 ] || fail "$c: header without '=': exit $rc: $out"; no_secret "$c header without ="
  assert_contains "$out" "a --remote_header is not Name=Value (it has no '=')" "$c header without ="
  run_tf "$@" --remote_cache="http://127.0.0.1:$port" --remote_header='Authorization: Bearer S3cr3t=x'
  [ "$rc" -eq 2 ] || fail "$c: bad header name: exit $rc: $out"; no_secret "$c bad header name"
  assert_contains "$out" "a --remote_header name has the character ':' at position 14" "$c bad header name"
done

# An unreachable cache is named without its user:password (at start, exit 2).
run_tf fetch --manifest="$tf_tmp/m.txt" --output_dir="$tf_tmp/o" --remote_retries=0 \
  --remote_cache="http://alice:S3cr3t@127.0.0.1:$port/prefix"
[ "$rc" -eq 2 ] || fail "unreachable cache: exit $rc: $out"
assert_contains "$out" "cannot use the cache http://127.0.0.1:$port/prefix:"
no_secret "transfer error"
[ ! -e "$tf_tmp/o/a.txt" ] || fail "a file appeared from an unreachable cache"
echo "secrets: ok"
