#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds with -Werror, runs
# every suite (unit, integration with real nginx, interop with real Bazel),
# then builds again under AddressSanitizer + UndefinedBehaviorSanitizer and
# runs every suite again, compiles the release build (-O3) with -Werror, then
# runs every fuzz harness for 20 s. Ends with one line "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

status=0
run_suite() { # build-dir meson-setup-args...
  local dir=$1; shift
  [ -f "$dir/build.ninja" ] || meson setup "$dir" -Dwerror=true "$@" >/dev/null
  ninja -C "$dir"
  meson test -C "$dir" --print-errorlogs --num-processes 2 || status=1
}
run_suite build --buildtype=debugoptimized
run_suite build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false
# The release build (-O3, as packagers and bench/ build it) must compile
# without a warning too: GCC finds some only when it inlines.
[ -f build-release/build.ninja ] || meson setup build-release -Dwerror=true --buildtype=release >/dev/null
ninja -C build-release || status=1
scripts/fuzz.sh 20 || status=1 # every fuzz harness 20 s under ASan+UBSan (fuzz/README.md)

python3 - build/meson-logs/testlog.json build-asan/meson-logs/testlog.json <<'PY'
import json, sys
passed = failed = skipped = 0
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line).get("result")
        if r == "OK": passed += 1
        elif r == "SKIP": skipped += 1
        else: failed += 1
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
PY
exit $status
