#!/usr/bin/env bash
# One summary for every command: lines under 100 columns, counts that add
# up (empty and shared files counted), "1 file" not "1 files", and
# --summary_json with the same figures and every file not in place.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
need python3
nginx_start
put() { printf '%s' "$1" | cas_put_stdin; }
a=$(put "alpha")
b=$(put "bravo bravo")
c=$(put "charlie")
printf 'not charlie' >"$NGINX_CACHE/cas/$c" # corrupt: the bytes do not hash to the key
gone=$(printf 'gone' | sha256sum | cut -c1-64)
empty=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
cat >"$tf_tmp/m" <<M
$a 5 a.txt
$b 11 b1.txt
$b 11 b2.txt
$empty 0 empty.txt
$c 7 c.txt
$gone 4 gone.txt
M
mkdir -p "$tf_tmp/out"
printf 'alpha' >"$tf_tmp/out/a.txt" # already present
set +e
"$TOPFETCH" fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out" --manifest="$tf_tmp/m" \
  --summary_json="$tf_tmp/fetch.json" >"$tf_tmp/stdout" 2>"$tf_tmp/stderr"
rc=$?
set -e
[ "$rc" -eq 1 ] || fail "fetch: exit $rc, want 1"
s=$(cat "$tf_tmp/stdout")
assert_contains "$s" "topfetch: 4 of 6 files in place (1 fetched, 1 already present, 1 shared a blob, 1 empty)" "fetch summary"
assert_contains "$s" "topfetch: 1 lost, 1 corrupt, 0 failed, 0 local errors; " "fetch summary"
python3 - "$tf_tmp/fetch.json" <<'PY' || fail "fetch JSON: $(cat "$tf_tmp/fetch.json")"
import json, sys
j = json.load(open(sys.argv[1]))
f = j["files"]
assert j["command"] == "fetch" and j["exit_code"] == 1 and j["interrupted"] is False, j
assert f["in_place"] == f["fetched"] + f["already_present"] + f["shared"] + f["empty"] == 4, f
assert f["not_in_place"] == f["lost"] + f["corrupt"] + f["failed"] + f["local"] + f["without_digest"] == 2, f
assert f["wanted"] == f["in_place"] + f["not_in_place"] == 6, f
assert (f["fetched"], f["already_present"], f["shared"], f["empty"], f["lost"], f["corrupt"]) == (1, 1, 1, 1, 1, 1), f
assert j["bytes_fetched"] == 11, j
probs = sorted((p["result"], p["path"]) for p in j["problems"])
assert probs == [("corrupt", "c.txt"), ("lost", "gone.txt")], probs
for p in j["problems"]:
    assert p["digest"].endswith("/7" if p["path"] == "c.txt" else "/4") and "GET " in p["message"], p
PY

# One file: the singular.
echo "$a 5 only.txt" >"$tf_tmp/m1"
run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out1" --manifest="$tf_tmp/m1"
[ "$rc" -eq 0 ] || fail "one file: exit $rc: $out"
assert_contains "$out" "topfetch: 1 of 1 file in place (1 fetched, 0 already present)"
assert_contains "$out" "0 lost, 0 corrupt, 0 failed, 0 local errors"

# Many of everything: still no line of 100 columns or more.
python3 - "$tf_tmp/mbig" "$a" "$b" "$gone" <<'PY'
import sys
out, a, b, gone = sys.argv[1:5]
with open(out, "w") as m:
    for i in range(12000):
        h, n = (a, 5) if i % 3 == 0 else (b, 11) if i % 3 == 1 else (gone, 4)
        m.write("%s %d d%d/f%d\n" % (h, n, i % 50, i))
    m.write("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 0 e/empty\n")
PY
set +e
"$TOPFETCH" fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/outbig" --manifest="$tf_tmp/mbig" \
  --summary_json="$tf_tmp/big.json" >"$tf_tmp/big.out" 2>/dev/null
rc=$?
set -e
[ "$rc" -eq 1 ] || fail "many files: exit $rc, want 1"
awk 'length($0) >= 100 { print "line of " length($0) " columns: " $0; bad = 1 } END { exit bad }' "$tf_tmp/big.out" ||
  fail "summary wider than 99 columns: $(cat "$tf_tmp/big.out")"
assert_contains "$(cat "$tf_tmp/big.out")" "topfetch: 8001 of 12001 files in place" "many files"
python3 -c '
import json, sys
j = json.load(open(sys.argv[1])); f = j["files"]
assert f["wanted"] == 12001 and f["lost"] == 4000 and len(j["problems"]) == 4000, f
assert f["in_place"] == f["fetched"] + f["already_present"] + f["shared"] + f["empty"] == 8001, f
' "$tf_tmp/big.json" || fail "many files JSON"

# An unwritable JSON path: said, and exit 2 instead of 0.
run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out1" --manifest="$tf_tmp/m1" \
  --summary_json="$tf_tmp/no/such/dir/s.json"
[ "$rc" -eq 2 ] || fail "unwritable --summary_json: exit $rc, want 2"
assert_contains "$out" "cannot write the JSON summary"

# collect: the same lines and the same JSON, targets included (the real
# Bazel 4.2.3 fixture; the session driver fills the store as a proxy would).
fx="${TF_FIXTURES:?}"
tar -xzf "$fx/cache.tar.gz" -C "$NGINX_CACHE"
chmod -R a+rX "$NGINX_CACHE"
"$TF_DRIVER" --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/proxy-out" --store="$tf_tmp/store.db" \
  --mode=minimal --actions="$NGINX_CACHE/ac" >/dev/null
set +e
"$TOPFETCH" collect --bep="$fx/run2_minimal_hits/bep.bin" --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/co" \
  --store="$tf_tmp/store.db" --summary_json="$tf_tmp/collect.json" >"$tf_tmp/collect.out" 2>"$tf_tmp/collect.err"
rc=$?
set -e
[ "$rc" -eq 1 ] || fail "collect: exit $rc, want 1 (//pkg:tool has no digest)"
s=$(cat "$tf_tmp/collect.out")
assert_contains "$s" "topfetch: 11 of 12 files in place (11 fetched, 0 already present)" "collect summary"
assert_contains "$s" "topfetch: 0 lost, 0 failed, 1 without a digest; " "collect summary"
assert_contains "$s" "topfetch: 6 of 7 targets complete (1 failed, 0 conflicting paths)" "collect summary"
awk 'length($0) >= 100 { bad = 1 } END { exit bad }' "$tf_tmp/collect.out" || fail "collect summary too wide: $s"
python3 - "$tf_tmp/collect.json" <<'PY' || fail "collect JSON: $(cat "$tf_tmp/collect.json")"
import json, sys
j = json.load(open(sys.argv[1]))
f, t = j["files"], j["targets"]
assert j["command"] == "collect" and j["exit_code"] == 1, j
assert f["wanted"] == 12 and f["in_place"] == 11 and f["without_digest"] == 1 and f["not_in_place"] == 1, f
assert t == {"completed": 7, "successful": 6, "failed": 1, "conflicting_paths": 0, "actions_recorded": 0}, t
PY
echo "ok"
