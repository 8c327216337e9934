#!/usr/bin/env bash
# The fault matrix (issue 11): a cache that misbehaves (badcache.py: truncated
# bodies, lies about Content-Length, resets mid-body, slow drip, 5xx,
# redirects, huge bodies, wrong bytes) × {fetch, collect, proxy}. Each ends
# with its documented typed result (README.md, "Security"), no partial file
# at a final path, no temporary file left, the store intact (PRAGMA
# integrity_check), and the proxy still serving.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
. "$TF_SOURCE_ROOT/tests/faults/lib.sh"
faults=(truncated short long reset drip corrupt error500 redirect huge)
declare -A want=( [truncated]=failed [short]=corrupt [long]=failed [reset]=failed [drip]=ok [corrupt]=corrupt
                  [error500]=failed [redirect]=failed [huge]=corrupt )
[ $# -eq 0 ] || faults=("$@")

root="$tf_tmp/root"
mkdir -p "$root/cas" "$root/ac"
head -c 200000 /dev/urandom >"$tf_tmp/blob"
H=$(sha256sum "$tf_tmp/blob" | cut -d' ' -f1)
cp "$tf_tmp/blob" "$root/cas/$H"
printf 'good\n' >"$tf_tmp/good"
G=$(sha256sum "$tf_tmp/good" | cut -d' ' -f1)
cp "$tf_tmp/good" "$root/cas/$G"
echo "$G" >"$root/good" # always served right
printf '%s 200000 pkg/blob.bin\n%s 5 pkg/good.txt\n' "$H" "$G" >"$tf_tmp/m.txt"
python3 - "$tf_tmp/bep.bin" "$H" "$G" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.environ["TF_SOURCE_ROOT"], "tests", "lib"))
from hostile import *
out, h, g = sys.argv[1:]
open(out, "wb").write(bep_build([("0", [bep_file("pkg/blob.bin", h, 200000)], []),
                                 ("1", [bep_file("pkg/good.txt", g, 5)], [])],
                                [("//pkg:blob", ["0"]), ("//pkg:good", ["1"])]))
PY

no_temporaries() { # DIR WHAT
  local left; left=$(find "$1" -name '.tftmp*' 2>/dev/null)
  [ -z "$left" ] || fail "$2: temporary files left behind: $left"
}
store_ok() { # DB WHAT
  local r; r=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("PRAGMA integrity_check").fetchone()[0])' "$1")
  [ "$r" = ok ] || fail "$2: the store is damaged: $r"
}
# The blob is at its final path whole, or not at all.
final_path() { # FILE WANT WHAT
  if [ "$2" = ok ]; then
    cmp -s "$1" "$tf_tmp/blob" || fail "$3: $1 is not the blob"
  else
    [ ! -e "$1" ] || fail "$3: a file is at the final path $1 ($(stat -c %s "$1") bytes)"
  fi
}
result_line() { # WANT WHAT
  if [ "$1" = ok ]; then
    [ "$rc" -eq 0 ] || fail "$2: exit $rc, want 0: $out"
  else
    [ "$rc" -eq 1 ] || fail "$2: exit $rc, want 1: $out"
    assert_contains "$out" "topfetch: $1: " "$2"
  fi
}

for f in "${faults[@]}"; do
  w=${want[$f]}
  bad_start "$root" "$f"

  # fetch: the typed result, the good file in place, the bad one not.
  run_tf fetch --remote_cache="$BAD_URL" --output_dir="$tf_tmp/f-$f" --manifest="$tf_tmp/m.txt" \
    --remote_retries=1 --remote_timeout=5
  result_line "$w" "fetch/$f"
  [ "$w" = ok ] || assert_contains "$out" "pkg/blob.bin ($H/200000)" "fetch/$f"
  cmp -s "$tf_tmp/f-$f/pkg/good.txt" "$tf_tmp/good" || fail "fetch/$f: good.txt"
  final_path "$tf_tmp/f-$f/pkg/blob.bin" "$w" "fetch/$f"
  no_temporaries "$tf_tmp/f-$f" "fetch/$f"

  # collect: the same, the failed target named, the store intact.
  run_tf collect --bep="$tf_tmp/bep.bin" --remote_cache="$BAD_URL" --output_dir="$tf_tmp/c-$f" \
    --store="$tf_tmp/c-$f.db" --remote_retries=1 --remote_timeout=5
  result_line "$w" "collect/$f"
  if [ "$w" != ok ]; then
    assert_contains "$out" "topfetch collect: target //pkg:blob failed:" "collect/$f"
    assert_contains "$out" "1 of 2 targets complete" "collect/$f"
  fi
  cmp -s "$tf_tmp/c-$f/pkg/good.txt" "$tf_tmp/good" || fail "collect/$f: good.txt"
  final_path "$tf_tmp/c-$f/pkg/blob.bin" "$w" "collect/$f"
  no_temporaries "$tf_tmp/c-$f" "collect/$f"
  store_ok "$tf_tmp/c-$f.db" "collect/$f"

  # proxy: Bazel's GET of the blob gets an error status or a body that is
  # visibly cut short (never 200 with other bytes in full); the proxy goes on
  # serving, its store intact.
  proxy_start "proxy-$f.log" --remote_cache="$BAD_URL" --output_dir="$tf_tmp/p-$f" --store="$tf_tmp/p-$f.db" \
    --remote_retries=1 --remote_timeout=5
  set +e
  code=$(curl -s -o "$tf_tmp/p-body" -w '%{http_code}' --max-time 60 "$PROXY_URL/cas/$H")
  crc=$?
  set -e
  if [ "$w" = ok ]; then
    [ "$code" = 200 ] && cmp -s "$tf_tmp/p-body" "$tf_tmp/blob" || fail "proxy/$f: HTTP $code (curl $crc)"
  elif [ "$code" = 200 ] && [ "$crc" -eq 0 ] && cmp -s "$tf_tmp/p-body" "$tf_tmp/blob"; then
    : # a fault the proxy absorbed by retrying: the right bytes
  elif [ "$code" = 200 ] && [ "$crc" -eq 0 ]; then
    fail "proxy/$f: HTTP 200 with a whole body of other bytes ($(stat -c %s "$tf_tmp/p-body") bytes)"
  fi
  for i in 1 2; do
    set +e
    gcode=$(curl -s -o "$tf_tmp/p-good" -w '%{http_code}' --max-time 30 "$PROXY_URL/cas/$G")
    set -e
    [ "$gcode" = 200 ] && cmp -s "$tf_tmp/p-good" "$tf_tmp/good" || fail "proxy/$f: no longer serving (HTTP $gcode)"
  done
  kill -0 "$PROXY_PID" 2>/dev/null || fail "proxy/$f: the proxy died: $(cat "$PROXY_LOG")"
  proxy_stop
  [ "$proxy_rc" -eq 0 ] || fail "proxy/$f: exit $proxy_rc: $(cat "$PROXY_LOG")"
  no_temporaries "$tf_tmp/p-$f" "proxy/$f"
  store_ok "$tf_tmp/p-$f.db" "proxy/$f"
  echo "fault $f: fetch, collect, proxy: $w (proxy answered HTTP $code, curl exit $crc)"
  bad_stop
done
echo "matrix: ok"
