#!/usr/bin/env bash
# `topfetch --version` and `topfetch version` print the version and the git
# commit the binary was built from: the source tree's HEAD.
source "$TF_SOURCE_ROOT/tests/lib/harness.sh"

run_tf --version
[ "$rc" -eq 0 ] || fail "topfetch --version exited $rc: $out"
[[ $out =~ ^topfetch\ ([0-9]+\.[0-9]+\.[0-9]+)\ \(commit\ ([0-9a-f]{12}(-dirty)?|unknown)\)$ ]] ||
  fail "topfetch --version printed '$out', not 'topfetch X.Y.Z (commit HASH)'"
version=${BASH_REMATCH[1]} commit=${BASH_REMATCH[2]}
project=$(meson introspect "$TF_BUILD_ROOT" --projectinfo | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
[ "$version" = "$project" ] || fail "topfetch --version says $version, meson.build's project() $project"

if head=$(git -C "$TF_SOURCE_ROOT" rev-parse HEAD 2>/dev/null); then
  [ "${commit:0:12}" = "${head:0:12}" ] ||
    fail "topfetch --version names commit $commit; the source tree is at ${head:0:12}"
else
  [ "$commit" = unknown ] || fail "built outside git, yet --version names commit $commit"
fi

run_tf version
[ "$rc" -eq 0 ] || fail "topfetch version exited $rc: $out"
assert_contains "$out" "(commit $commit)" "topfetch version"
echo "pkg_version: $out"
