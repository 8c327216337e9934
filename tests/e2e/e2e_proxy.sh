#!/usr/bin/env bash
# Real Bazel 4.2.3 through `topfetch proxy` in front of a real nginx cache,
# on a workspace of our own (tests/e2e/workspace: intermediates, two targets
# sharing one, several outputs, an executable, a tree artifact, a 9 MB file):
#  1. Empty cache, --remote_download_minimal through the proxy: every action
#     runs and uploads through the proxy; the proxy fetches the top-level files
#     back from the cache while the build runs and stops at its end.
#  2. bazel clean, the same build: every action a cache hit. The proxy puts
#     exactly the top-level files in --output_dir, never asking nginx for an
#     intermediate's blob and asking at most once per top-level blob.
#  3. bazel clean, --remote_download_toplevel straight to nginx: what Bazel
#     itself writes. Build 2's files are byte-identical, executable bits too.
#  4. The cache loses left.txt's blob; bazel clean; build through the proxy
#     with its default --remote_validate_outputs: the lookup of that action is
#     a miss at once, Bazel runs exactly it again (its processes line, its
#     execution log) and uploads it, the proxy fetches the new left.txt:
#     Bazel and the proxy exit 0, no bazel shutdown, no failed build first.
# Runs under env -i with its own --output_user_root; `bazel shutdown` at exit.
# A missing bazel fails the test.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
need bazel
[ -d /usr/src/bazel-bootstrap/mock_repos ] || fail "bazel-bootstrap-source is not installed (run scripts/install-deps.sh)"
nginx_start
ws="$tf_tmp/ws"
cp -r "$TF_SOURCE_ROOT/tests/e2e/workspace" "$ws"
chmod -R u+w "$ws"
root="$tf_tmp/obase"
mkdir -p "$tf_tmp/home"
bz() { (cd "$ws" && env -i HOME="$tf_tmp/home" PATH=/usr/bin:/bin LANG=C.UTF-8 bazel --output_user_root="$root" "$@"); }
# The Bazel server (a JVM that outlives the client): `bazel shutdown`, then
# by its pid whatever is left.
e2e_cleanup() {
  local pid
  pid=$(cat "$root"/*/server/server.pid.txt 2>/dev/null || true)
  bz shutdown >/dev/null 2>&1 || true
  # Still a Bazel server (not a reused pid)? Then tf_cleanup ends it.
  [ -n "$pid" ] && grep -qa bazel "/proc/$pid/cmdline" 2>/dev/null && tf_track "$pid"
  true
  proxy_cleanup
}
trap e2e_cleanup EXIT
targets=(//pkg:left //pkg:right //pkg:multi //pkg:exe //pkg:big //pkg:tree)
bin=bazel-out/k8-fastbuild/bin/pkg
top="left.txt right.txt multi/copy.txt multi/two.txt multi/zeros.bin hello.sh big.dat tree_dir/a.txt
tree_dir/copy.txt tree_dir/sub/b.txt tree_dir/sub/run.sh tree_dir/sub/empty.txt"
lines() { nginx_sync; wc -l <"$NGINX_LOG"; }
since() { nginx_sync; tail -n +"$(($1 + 1))" "$NGINX_LOG"; } # nginx log lines after line $1
files_in() { (cd "$1" && find . -type f | sed 's|^\./||' | sort | tr '\n' ' '); }
want_files=$(for f in $top; do echo "$bin/$f"; done | sort | tr '\n' ' ')

# build N PROXY-ARGS... -- BAZEL-ARGS...: one Bazel build through a new proxy
# that follows its BEP and exits at its end. Sets proxy_rc.
build() {
  local n=$1 pargs=() start
  shift
  while [ "$1" != -- ]; do pargs+=("$1"); shift; done
  shift
  start=$(date +%s)
  proxy_start "proxy$n.log" --remote_cache="$NGINX_URL" --store="$tf_tmp/store.db" --bep_follow="$tf_tmp/bep$n.bin" \
    --exit_after_build --build_event_json_file="$tf_tmp/tf$n.json" "${pargs[@]}"
  bz build --remote_cache="$PROXY_URL" --remote_download_minimal --build_event_binary_file="$tf_tmp/bep$n.bin" \
    "$@" "${targets[@]}" >"$tf_tmp/bazel$n.log" 2>&1 || { cat "$tf_tmp/bazel$n.log" "$PROXY_LOG"; fail "bazel build $n failed"; }
  proxy_wait
  echo "build $n: $(( $(date +%s) - start )) s; $(grep 'processes:' "$tf_tmp/bazel$n.log")"
  grep '^topfetch' "$PROXY_LOG"
}

# 1.
l1=$(lines)
build 1 --output_dir="$tf_tmp/out1" --
[ "$proxy_rc" -eq 0 ] || { cat "$PROXY_LOG"; fail "build 1: proxy exit $proxy_rc"; }
grep -q 'processes: .*[0-9] processwrapper-sandbox' "$tf_tmp/bazel1.log" || fail "build 1 did not run its actions"
[ "$(files_in "$tf_tmp/out1")" = "$want_files" ] || fail "build 1 files: $(files_in "$tf_tmp/out1")"
[ "$(since "$l1" | grep -c '^PUT /ac/.* 201')" -ge 7 ] || fail "the results were not uploaded through the proxy"
bb=$(readlink -f "$ws/bazel-bin")
for f in $top; do
  cmp -s "$tf_tmp/out1/$bin/$f" "$bb/pkg/$f" || fail "build 1: $f differs from the file Bazel built"
done
# The intermediates' blobs (built locally in build 1, so on disk now).
h_shared=$(sha256sum "$bb/pkg/shared.txt" | cut -d' ' -f1)
h_stage=$(sha256sum "$bb/pkg/stage.txt" | cut -d' ' -f1)

# 2.
bz clean >/dev/null 2>&1
l2=$(lines)
build 2 --output_dir="$tf_tmp/out2" --
[ "$proxy_rc" -eq 0 ] || { cat "$PROXY_LOG"; fail "build 2: proxy exit $proxy_rc"; }
grep -q 'processes: .*remote cache hit' "$tf_tmp/bazel2.log" || fail "build 2 was not served from the cache"
! grep -q 'processwrapper-sandbox' "$tf_tmp/bazel2.log" || fail "build 2 ran actions"
[ "$(files_in "$tf_tmp/out2")" = "$want_files" ] || fail "build 2 files: $(files_in "$tf_tmp/out2"); want $want_files"
since "$l2" >"$tf_tmp/log2"
! grep -q "GET /cas/$h_shared" "$tf_tmp/log2" || fail "the blob of the intermediate shared.txt was fetched"
! grep -q "GET /cas/$h_stage" "$tf_tmp/log2" || fail "the blob of the intermediate stage.txt was fetched"
for f in $top; do
  h=$(sha256sum "$tf_tmp/out2/$bin/$f" | cut -d' ' -f1)
  n=$(grep -c "GET /cas/$h 200" "$tf_tmp/log2" || true)
  [ "$n" -le 1 ] || fail "the blob of $f was fetched $n times"
done
! grep -q 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' "$tf_tmp/log2" || fail "the empty blob was asked for"
python3 - "$tf_tmp/tf2.json" <<'PY' || fail "topfetch's BEP of build 2"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
assert ev[-1].get("lastMessage"), "no last_message"
done = [e for e in ev if "completed" in e]
assert len(done) == 6 and all(e["completed"].get("success") for e in done), done
PY

# 3. What Bazel itself writes.
bz clean >/dev/null 2>&1
l3=$(lines)
bz build --remote_cache="$NGINX_URL" --remote_download_toplevel "${targets[@]}" >"$tf_tmp/bazel3.log" 2>&1 \
  || { cat "$tf_tmp/bazel3.log"; fail "bazel build 3 failed"; }
echo "build 3: $(grep 'processes:' "$tf_tmp/bazel3.log")"
bb=$(readlink -f "$ws/bazel-bin")
# Bazel 4.2.3 makes every file of its output tree 0555, downloaded or built,
# so its modes say nothing; what it records in the cache does: is_executable
# in the ActionResult (and the Tree), set where the action made the file
# executable. Ours follow that, and Bazel's files agree with it where it counts.
executable="hello.sh multi/copy.txt tree_dir/sub/run.sh"
for f in $top; do
  [ -f "$bb/pkg/$f" ] || fail "Bazel did not download $f with --remote_download_toplevel"
  cmp -s "$tf_tmp/out2/$bin/$f" "$bb/pkg/$f" || fail "$f differs from what Bazel downloads"
  case " $executable " in
    *" $f "*) [ -x "$tf_tmp/out2/$bin/$f" ] && [ -x "$bb/pkg/$f" ] || fail "$f should be executable" ;;
    *) [ ! -x "$tf_tmp/out2/$bin/$f" ] || fail "$f is executable; its action did not make it so" ;;
  esac
done
[ ! -e "$bb/pkg/shared.txt" ] && [ ! -e "$bb/pkg/stage.txt" ] || fail "Bazel downloaded intermediates itself"

# 4. The cache loses left.txt's blob; bazel clean (a CI job's fresh build);
# a build through the proxy with its default validation: the lookup of
# left's action answers a miss at once, Bazel runs exactly that action again
# and uploads it, the file arrives, everything exits 0.
h_left=$(sha256sum "$tf_tmp/out2/$bin/left.txt" | cut -d' ' -f1)
rm "$NGINX_CACHE/cas/$h_left"
bz clean >/dev/null 2>&1
l4=$(lines)
build 4 --output_dir="$tf_tmp/out4" -- --execution_log_json_file="$tf_tmp/exec4.json"
[ "$proxy_rc" -eq 0 ] || { cat "$PROXY_LOG"; fail "build 4: proxy exit $proxy_rc"; }
grep -q 'processes: .*1 processwrapper-sandbox' "$tf_tmp/bazel4.log" || fail "build 4 did not run exactly one action"
grep -q "1 failed validation" "$PROXY_LOG" || fail "build 4: the lookup of left's action was not answered as a miss"
python3 - "$tf_tmp/exec4.json" <<'PY' || fail "build 4: the execution log does not show left's action, alone, run again"
import json, sys
text, dec, pos, ran = open(sys.argv[1]).read(), json.JSONDecoder(), 0, []
while True:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text):
        break
    e, pos = dec.raw_decode(text, pos)
    if not e.get("remoteCacheHit"):
        ran.append(e.get("listedOutputs", []))
assert ran == [["bazel-out/k8-fastbuild/bin/pkg/left.txt"]], ran
PY
since "$l4" | grep -q "PUT /cas/$h_left 201" || fail "build 4: left.txt was not uploaded again"
[ "$(files_in "$tf_tmp/out4")" = "$want_files" ] || fail "build 4 files: $(files_in "$tf_tmp/out4")"
cmp -s "$tf_tmp/out4/$bin/left.txt" "$tf_tmp/out2/$bin/left.txt" || fail "build 4: left.txt differs"
echo "e2e_proxy: ok"
