#!/usr/bin/env bash
# The progress line on a terminal (a pty made by util-linux's script): during
# one slow large blob (nginx limit_rate) its byte count moves before the file
# is done, with percent, elapsed time and ETA; without a terminal, plain lines
# with no carriage return; --quiet; --color with NO_COLOR.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
need script
need python3
nginx_start "limit_rate 2m;"
size=$((16 * 1024 * 1024))
h=$(head -c "$size" /dev/urandom | cas_put_stdin)
echo "$h $size big.bin" >"$tf_tmp/m"

# In a pty. script -e passes the exit code on; -f flushes as output comes.
pty() { # TYPESCRIPT CMD...
  local ts=$1; shift
  TERM=xterm script -qfec "$(printf '%q ' "$@")" "$ts" >/dev/null </dev/null
}

# Without a terminal, at the same time (its own connection, its own limit).
"$TOPFETCH" fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/plain" --manifest="$tf_tmp/m" \
  >"$tf_tmp/plain.out" 2>"$tf_tmp/plain.err" &
plain_pid=$!
tf_track "$plain_pid"

set +e
pty "$tf_tmp/tty.log" "$TOPFETCH" fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out" \
  --manifest="$tf_tmp/m"
rc=$?
set -e
[ "$rc" -eq 0 ] || fail "fetch in a pty: exit $rc: $(cat -v "$tf_tmp/tty.log")"
cmp -s "$tf_tmp/out/big.bin" "$NGINX_CACHE/cas/$h" || fail "big.bin differs"
python3 - "$tf_tmp/tty.log" "$size" <<'PY' || fail "progress line: $(cat -v "$tf_tmp/tty.log" | tail -c 2000)"
import re, sys
text = open(sys.argv[1], 'rb').read().decode('utf-8', 'replace')
size = int(sys.argv[2])
unit = {'B': 1, 'KiB': 1024, 'MiB': 1024 ** 2, 'GiB': 1024 ** 3}
frames = re.findall(r'\r\x1b\[K\[(\d+) / 1 file\] ([\d.]+) (B|KiB|MiB) of 16\.0 MiB \((\d+)%\)([^\r]*)', text)
if not frames:
    sys.exit('no progress frame redrawn with \\r\\x1b[K')
moving = sorted({float(b) * unit[u] for done, b, u, pct, rest in frames if done == '0' and 0 < float(b) * unit[u] < size})
if len(moving) < 3:
    sys.exit('the byte count did not move while the one file was in flight: %r' % (frames,))
pcts = [int(p) for done, b, u, p, rest in frames if done == '0']
if pcts != sorted(pcts) or max(pcts) == 0:
    sys.exit('percent not rising: %r' % pcts)
if not any('elapsed' in rest and 'ETA' in rest for done, b, u, p, rest in frames if done == '0'):
    sys.exit('no elapsed time and ETA while in flight')
if '1 of 1 file in place (1 fetched, 0 already present)' not in text:
    sys.exit('no summary')
print('frames with the file in flight: %d, distinct byte counts: %d' % (len([f for f in frames if f[0] == '0']), len(moving)))
PY

wait "$plain_pid" || fail "fetch without a terminal: exit $?"
grep -q $'\r' "$tf_tmp/plain.err" && fail "carriage return without a terminal: $(cat -v "$tf_tmp/plain.err")"
# Its 5 s line came while the blob was still in flight (16 MiB at 2 MiB/s: 8 s).
grep -Eq '^topfetch fetch: \[0 / 1 file\] [0-9.]+ (KiB|MiB) of 16\.0 MiB \([0-9]+%\)' "$tf_tmp/plain.err" ||
  fail "no plain progress line: $(cat "$tf_tmp/plain.err")"
assert_contains "$(cat "$tf_tmp/plain.out")" "1 of 1 file in place (1 fetched" "plain summary"
nginx_stop

# --quiet, --color: a disk cache with one blob missing.
disk="$tf_tmp/disk"
mkdir -p "$disk/cas"
printf 'abc' >"$tf_tmp/abc"
ha=$(sha256sum "$tf_tmp/abc" | cut -c1-64)
cp "$tf_tmp/abc" "$disk/cas/$ha"
gone=$(printf 'gone' | sha256sum | cut -c1-64)
printf '%s 3 a.txt\n%s 4 gone.txt\n' "$ha" "$gone" >"$tf_tmp/m2"
set +e
pty "$tf_tmp/quiet.log" "$TOPFETCH" fetch --quiet --remote_cache="$disk" --output_dir="$tf_tmp/q" --manifest="$tf_tmp/m2"
rc=$?
set -e
[ "$rc" -eq 1 ] || fail "--quiet: exit $rc, want 1"
q=$(cat -v "$tf_tmp/quiet.log")
assert_contains "$q" "lost^[[0m: gone.txt (" "--quiet still names the lost file"
case "$q" in *"in place"* | *"/ 2 files]"*) fail "--quiet printed progress or a summary: $q" ;; esac

set +e
pty "$tf_tmp/color.log" "$TOPFETCH" fetch --color=yes --remote_cache="$disk" --output_dir="$tf_tmp/c1" --manifest="$tf_tmp/m2"
set -e
grep -q $'topfetch: \e\\[33mlost\e\\[0m: gone.txt' "$tf_tmp/color.log" || fail "--color=yes: $(cat -v "$tf_tmp/color.log")"
set +e
NO_COLOR=1 pty "$tf_tmp/nocolor.log" "$TOPFETCH" fetch --remote_cache="$disk" --output_dir="$tf_tmp/c2" --manifest="$tf_tmp/m2"
set -e
grep -q 'lost: gone.txt' "$tf_tmp/nocolor.log" || fail "NO_COLOR run: $(cat -v "$tf_tmp/nocolor.log")"
grep -q $'\e\\[3' "$tf_tmp/nocolor.log" && fail "NO_COLOR: colour codes: $(cat -v "$tf_tmp/nocolor.log")"
set +e
pty "$tf_tmp/auto.log" "$TOPFETCH" fetch --remote_cache="$disk" --output_dir="$tf_tmp/c3" --manifest="$tf_tmp/m2"
set -e
grep -q $'\e\\[33mlost' "$tf_tmp/auto.log" || fail "--color=auto on a terminal: no colour: $(cat -v "$tf_tmp/auto.log")"
# Not a terminal: no colour with auto.
run_tf fetch --remote_cache="$disk" --output_dir="$tf_tmp/c4" --manifest="$tf_tmp/m2"
case "$out" in *$'\e'*) fail "colour without a terminal: $(echo "$out" | cat -v)" ;; esac
run_tf fetch --color=sometimes --remote_cache="$disk" --output_dir="$tf_tmp/c5" --manifest="$tf_tmp/m2"
[ "$rc" -eq 2 ] || fail "--color=sometimes: exit $rc, want 2"
assert_contains "$out" "--color takes auto, yes or no"
echo "ok"
