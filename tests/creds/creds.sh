#!/usr/bin/env bash
# Credentials as Bazel users keep them, against a real nginx with HTTP Basic
# auth: none (a clear 401 at start, exit 2, naming the URL without secrets),
# ~/.netrc and $NETRC, a credential helper (run once for many files while
# its answer holds; again when it expired), helper scopes, a failing and a
# hanging helper, and --remote_cache/--remote_header from a file or the
# environment, invisible to `ps` of a running proxy.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
. "$TF_SOURCE_ROOT/tests/creds/lib.sh"
PASS='pw-S3cr3t-42'
nginx_start_auth alice "$PASS"
make_blobs 40
empty_home="$tf_tmp/home0"; mkdir -p "$empty_home"
# Every run below has a HOME of the test's own (no ~/.netrc of the machine's).
tf() { HOME="${T_HOME:-$empty_home}" run_tf "$@"; }
no_secret() { # WHAT
  case "$out" in *"$PASS"*|*"$(b64 "alice:$PASS")"*) fail "$1: a secret is in the output: $out" ;; esac
}

# 1. No credentials: one message at start, exit 2, naming the URL; no file
#    is asked for.
tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o1" --manifest="$tf_tmp/m.txt"
[ "$rc" -eq 2 ] || fail "no credentials: exit $rc, want 2: $out"
assert_contains "$out" "the cache $NGINX_URL refused the credentials (HTTP 401) before any transfer" "no credentials"
[ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] || fail "no credentials: more than one line: $out"
[ "$(nginx_count "GET /cas/")" -eq 0 ] || fail "files were asked for without credentials"
[ ! -e "$tf_tmp/o1/f/1.txt" ] || fail "a file arrived without credentials"
# The wrong password in the URL: the same, and the password is not repeated.
tf fetch --remote_cache="http://alice:wrong-Pw@127.0.0.1:$NGINX_PORT" --output_dir="$tf_tmp/o1" --manifest="$tf_tmp/m.txt"
[ "$rc" -eq 2 ] || fail "wrong password: exit $rc: $out"
case "$out" in *wrong-Pw*) fail "the password is in the output: $out" ;; esac
assert_contains "$out" "refused the credentials (HTTP 401)" "wrong password"

# 2. ~/.netrc, as Bazel reads it (a comment line, a machine, a default).
mkdir -p "$tf_tmp/home"
printf '# the test cache\nmachine example.com login bob password nope\nmachine 127.0.0.1\n  login alice\n  password %s\ndefault login nobody password none\n' \
  "$PASS" >"$tf_tmp/home/.netrc"
chmod 600 "$tf_tmp/home/.netrc"
T_HOME="$tf_tmp/home" tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o2" --manifest="$tf_tmp/m.txt"
[ "$rc" -eq 0 ] || fail "~/.netrc: exit $rc: $out"
assert_contains "$out" "40 of 40 files in place"
no_secret "~/.netrc"
[ "$(nginx_count "GET /cas/[0-9a-f]* 200 .* user=alice")" -eq 40 ] || fail "~/.netrc: not 40 authenticated GETs"
cmp -s "$tf_tmp/o2/f/7.txt" <(printf 'blob number 7\n') || fail "~/.netrc: f/7.txt is wrong"
# $NETRC wins over ~/.netrc (here: a wrong password, so the cache refuses).
printf 'machine 127.0.0.1 login alice password wrong\n' >"$tf_tmp/other.netrc"
NETRC="$tf_tmp/other.netrc" T_HOME="$tf_tmp/home" tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o2b" \
  --manifest="$tf_tmp/m.txt"
[ "$rc" -eq 2 ] || fail "\$NETRC: exit $rc: $out"
assert_contains "$out" "refused the credentials (HTTP 401)" "\$NETRC"
# A malformed netrc is a configuration mistake naming the file and line, not the word.
printf 'machine 127.0.0.1 login alice\npassword %s extra\n' "$PASS" >"$tf_tmp/bad.netrc"
NETRC="$tf_tmp/bad.netrc" tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o2c" --manifest="$tf_tmp/m.txt"
[ "$rc" -eq 2 ] || fail "malformed netrc: exit $rc: $out"
assert_contains "$out" "netrc file $tf_tmp/bad.netrc, line 2: a word where 'login', 'password' or 'account' belongs"
no_secret "malformed netrc"

# 3. A credential helper (Bazel's protocol): its runs counted, its request kept.
helper="$tf_tmp/helper.sh"
cat >"$helper" <<SH
#!/usr/bin/env bash
[ "\$1" = get ] || exit 9
echo run >>"$tf_tmp/helper.runs"
cat >"$tf_tmp/helper.request"
printf '{"headers": {"Authorization": ["Basic %s"]}, "expires": "%s", "x-future-key": [1]}\n' \
  "$(b64 "alice:$PASS")" "\${HELPER_EXPIRES:-2099-01-01T00:00:00Z}"
SH
chmod 755 "$helper"
runs() { if [ -e "$tf_tmp/helper.runs" ]; then wc -l <"$tf_tmp/helper.runs"; else echo 0; fi; }
tf fetch --remote_cache="$NGINX_URL/" --output_dir="$tf_tmp/o3" --manifest="$tf_tmp/m.txt" --credential_helper="$helper"
[ "$rc" -eq 0 ] || fail "credential helper: exit $rc: $out"
assert_contains "$out" "40 of 40 files in place"
no_secret "credential helper"
[ "$(runs)" -eq 1 ] || fail "the helper ran $(runs) times for 40 files; its answer holds until 2099"
assert_contains "$(cat "$tf_tmp/helper.request")" "{\"uri\":\"$NGINX_URL/\"}" "the helper's request"
# An answer that has expired already is not kept: the helper runs again.
rm -f "$tf_tmp/helper.runs"
HELPER_EXPIRES=2001-01-01T00:00:00Z tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o3b" \
  --manifest="$tf_tmp/m.txt" --credential_helper="$helper" --remote_max_connections=4
[ "$rc" -eq 0 ] || fail "expired answers: exit $rc: $out"
[ "$(runs)" -gt 1 ] || fail "an expired answer was kept: the helper ran $(runs) time(s)"
# Scopes as Bazel's: the exact host wins over a wildcard and over no scope;
# a helper whose scope does not cover the host is not asked.
rm -f "$tf_tmp/helper.runs"
tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o3c" --manifest="$tf_tmp/m.txt" \
  --credential_helper=/bin/false --credential_helper='*.example.com=/bin/false' \
  --credential_helper="127.0.0.1=$helper"
[ "$rc" -eq 0 ] || fail "exact scope: exit $rc: $out"
[ "$(runs)" -eq 1 ] || fail "exact scope: the helper ran $(runs) times"
tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o3d" --manifest="$tf_tmp/m.txt" \
  --credential_helper="*.example.com=$helper"
[ "$rc" -eq 2 ] || fail "a helper for another domain was used: exit $rc: $out"
[ "$(runs)" -eq 1 ] || fail "a helper for another domain ran"
# The helper wins over ~/.netrc (here it answers a wrong password).
cat >"$tf_tmp/wrong-helper.sh" <<SH
#!/bin/sh
printf '{"headers": {"Authorization": ["Basic %s"]}}' "$(b64 alice:wrong)"
SH
chmod 755 "$tf_tmp/wrong-helper.sh"
T_HOME="$tf_tmp/home" tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o3e" --manifest="$tf_tmp/m.txt" \
  --credential_helper="$tf_tmp/wrong-helper.sh"
[ "$rc" -eq 2 ] || fail "the helper did not win over ~/.netrc: exit $rc: $out"

# 4. Helpers that fail: exit 2 at start, naming the helper and the URI, no secret.
cat >"$tf_tmp/failing.sh" <<'SH'
#!/bin/sh
echo "helper: token service unreachable" >&2
exit 3
SH
printf '#!/bin/sh\nprintf %s\n' "'{\"headers\": {\"Authorization\": \"Basic not-a-list\"}}'" >"$tf_tmp/garbled.sh"
printf '#!/bin/sh\nexec tail -f /dev/null\n' >"$tf_tmp/hangs.sh"
chmod 755 "$tf_tmp/failing.sh" "$tf_tmp/garbled.sh" "$tf_tmp/hangs.sh"
tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o4" --manifest="$tf_tmp/m.txt" \
  --credential_helper="$tf_tmp/failing.sh"
[ "$rc" -eq 2 ] || fail "failing helper: exit $rc: $out"
assert_contains "$out" "credential helper $tf_tmp/failing.sh for $NGINX_URL/: it exited with code 3"
assert_contains "$out" "helper: token service unreachable" "the helper's own words"
tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o4" --manifest="$tf_tmp/m.txt" \
  --credential_helper="$tf_tmp/garbled.sh"
[ "$rc" -eq 2 ] || fail "garbled helper: exit $rc: $out"
assert_contains "$out" "its answer is not the JSON of Bazel's protocol: a header's value is not an array of strings at byte"
case "$out" in *not-a-list*) fail "the helper's answer was repeated: $out" ;; esac
start=$(date +%s%N)
tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o4" --manifest="$tf_tmp/m.txt" \
  --credential_helper="$tf_tmp/hangs.sh" --credential_helper_timeout=1
took=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$rc" -eq 2 ] || fail "hanging helper: exit $rc: $out"
assert_contains "$out" "it did not answer within --credential_helper_timeout=1s and was stopped"
[ "$took" -lt 30000 ] || fail "the helper timeout took $took ms"
tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o4" --manifest="$tf_tmp/m.txt" \
  --credential_helper="$tf_tmp/no-such-helper"
[ "$rc" -eq 2 ] || fail "missing helper: exit $rc: $out"
assert_contains "$out" "--credential_helper=$tf_tmp/no-such-helper: No such file or directory"
tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o4" --manifest="$tf_tmp/m.txt" \
  --credential_helper="localhost=$helper"
[ "$rc" -eq 2 ] || fail "bad scope: exit $rc: $out"
assert_contains "$out" "the scope 'localhost' is not a host name"

# 5. The URL and headers from a file or the environment: nothing secret in
#    the command line of a running proxy, and the proxy gets in with them.
printf 'http://alice:%s@127.0.0.1:%s\n' "$PASS" "$NGINX_PORT" >"$tf_tmp/cache.url"
printf '# headers\nX-Team-Token=tt-%s\n\n' "$PASS" >"$tf_tmp/headers.txt"
proxy_start p.log --remote_cache="@$tf_tmp/cache.url" --remote_header="@$tf_tmp/headers.txt" \
  --output_dir="$tf_tmp/o5"
args=$(ps -o args= -p "$PROXY_PID")
assert_contains "$args" "--remote_cache=@$tf_tmp/cache.url" "ps of the proxy"
case "$args" in *"$PASS"*) fail "ps shows the secret: $args" ;; esac
h1=$(head -1 "$tf_tmp/m.txt" | cut -d' ' -f1)
req GET "$PROXY_URL/cas/$h1"
[ "$code" = 200 ] || fail "proxy with the URL from a file: HTTP $code"
[ "$(nginx_count "GET /cas/$h1 200 .* user=alice")" -ge 1 ] || fail "the proxy's upstream GET was not authenticated"
proxy_stop
case "$(cat "$PROXY_LOG")" in *"$PASS"*) fail "the proxy printed the secret" ;; esac
# The proxy's upstream requests carry a helper's headers too (one run).
rm -f "$tf_tmp/helper.runs"
HOME="$empty_home" proxy_start p2.log --remote_cache="$NGINX_URL" --credential_helper="$helper" --output_dir="$tf_tmp/o5p"
h2=$(sed -n 2p "$tf_tmp/m.txt" | cut -d' ' -f1)
for h in "$h1" "$h2"; do
  req GET "$PROXY_URL/cas/$h"
  [ "$code" = 200 ] || fail "proxy with a credential helper: HTTP $code for $h"
done
proxy_stop
[ "$(runs)" -eq 1 ] || fail "proxy: the helper ran $(runs) times"
TF_TEST_CACHE="http://alice:$PASS@127.0.0.1:$NGINX_PORT" tf fetch --remote_cache=env:TF_TEST_CACHE \
  --output_dir="$tf_tmp/o5b" --manifest="$tf_tmp/m.txt"
[ "$rc" -eq 0 ] || fail "--remote_cache=env:NAME: exit $rc: $out"
tf fetch --remote_cache=env:TF_TEST_UNSET --output_dir="$tf_tmp/o5c" --manifest="$tf_tmp/m.txt"
[ "$rc" -eq 2 ] || fail "unset variable: exit $rc: $out"
assert_contains "$out" "the environment variable TF_TEST_UNSET is not set or empty"
tf fetch --remote_cache="$NGINX_URL" --remote_header="@$tf_tmp/nonexistent" --output_dir="$tf_tmp/o5c" \
  --manifest="$tf_tmp/m.txt"
[ "$rc" -eq 2 ] || fail "missing header file: exit $rc: $out"
assert_contains "$out" "--remote_header=@$tf_tmp/nonexistent: cannot read it"
# A header line from the environment reaches nginx (it logs this one).
nginx_stop
nginx_start 'if ($http_x_team_token != "tt-right") { return 401; }'
make_blobs 3
HDRS='X-Team-Token=tt-right' tf fetch --remote_cache="$NGINX_URL" --remote_header=env:HDRS \
  --output_dir="$tf_tmp/o5d" --manifest="$tf_tmp/m.txt"
[ "$rc" -eq 0 ] || fail "--remote_header=env:NAME: exit $rc: $out"
echo "creds: ok"
