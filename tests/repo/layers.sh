#!/usr/bin/env bash
# The product folders keep their layers: every #include names a folder the
# including folder may use (its README's Layer line) and only that folder's
# contract header. First proves the check catches a planted violation in a
# copy of the tree, then checks the tree itself.
source "$TF_SOURCE_ROOT/tests/lib/harness.sh"
need python3
check="$TF_SOURCE_ROOT/scripts/check-layers.py"

copy="$tf_tmp/src"
mkdir -p "$copy"
(cd "$TF_SOURCE_ROOT" && find . -maxdepth 2 \( -name '*.c' -o -name '*.h' -o -name README.md \) \
   -not -path './tests/*' -not -path './bench/*' -not -path './build*' -print0 |
   xargs -0 cp --parents -t "$copy")
echo '#include "events/events_int.h"' >>"$copy/service/listen.c"
echo '#include "session/session.h"' >>"$copy/events/pub.c"
set +e
out=$(python3 "$check" "$copy" 2>&1)
rc=$?
set -e
[ "$rc" -ne 0 ] || fail "the layer check passed a tree with planted violations: $out"
assert_contains "$out" "service/ may not include events/"
assert_contains "$out" "events/ may not include session/"

python3 "$check" "$TF_SOURCE_ROOT"
