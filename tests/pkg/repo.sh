#!/usr/bin/env bash
# Static checks of what the packaging promises:
#  - scripts/run-example.sh installs only the build set (no Bazel, Java,
#    nginx or clang), scripts/test.sh the full set, which does have them;
#  - the systemd units pass `systemd-analyze verify`, are hardened, and use
#    only flags their command's --help lists;
#  - LICENSE is the Apache License 2.0, and every .proto of proto/ is named
#    in proto/NOTICE, each derived one with its upstream copyright line.
source "$TF_SOURCE_ROOT/tests/lib/harness.sh"
need systemd-analyze
src=$TF_SOURCE_ROOT

# --- the example's packages
build=$("$src/scripts/install-deps.sh" --build-only --list)
full=$("$src/scripts/install-deps.sh" --list)
heavy='bazel|java|jdk|jre|nginx|clang'
bad=$(grep -E "$heavy" <<<"$build" || true)
[ -z "$bad" ] || fail "install-deps.sh --build-only (run-example.sh's set) installs: $bad"
for p in bazel-bootstrap openjdk-17-jdk-headless nginx clang; do
  grep -qx "$p" <<<"$full" || fail "install-deps.sh (the test set) does not install $p"
done
for p in $build; do grep -qx "$p" <<<"$full" || fail "the build package $p is missing from the test set"; done
grep -qx help2man <<<"$build" || fail "install-deps.sh --build-only does not install help2man (the man page needs it)"
calls=$(grep -E 'install-deps\.sh' "$src/scripts/run-example.sh" | grep -v '^[[:space:]]*#')
[ -n "$calls" ] || fail "scripts/run-example.sh does not call install-deps.sh"
while IFS= read -r l; do
  assert_contains "$l" "install-deps.sh --build-only" "run-example.sh's call of install-deps.sh"
done <<<"$calls"
grep -q -- '-Dtests=false' "$src/scripts/run-example.sh" || fail "scripts/run-example.sh does not build with -Dtests=false"
grep -Eq '^scripts/install-deps\.sh$' "$src/scripts/test.sh" || fail "scripts/test.sh does not install the full set"

# --- systemd units
units=("$src"/contrib/systemd/*.service)
[ "${#units[@]}" -eq 2 ] || fail "expected the proxy and serve units in contrib/systemd, found: ${units[*]}"
for u in "${units[@]}"; do
  name=${u##*/}
  cmd=${name#topfetch-}; cmd=${cmd%.service}
  # verify needs the ExecStart binary to exist: point it at the one built.
  sed "s|/usr/local/bin/topfetch|$TOPFETCH|" "$u" >"$tf_tmp/$name"
  out=$(systemd-analyze verify --man=no "$tf_tmp/$name" 2>&1) || fail "systemd-analyze verify $name failed: $out"
  [ -z "$out" ] || fail "systemd-analyze verify $name complains: $out"
  for d in DynamicUser=yes ProtectSystem=strict "StateDirectory=topfetch-$cmd" NoNewPrivileges=yes \
    PrivateTmp=yes CapabilityBoundingSet= "ExecStart=/usr/local/bin/topfetch $cmd "; do
    grep -q "^$d" "$u" || fail "$name has no '$d'"
  done
  run_tf "$cmd" --help
  help=$out
  for f in $(sed -n '/^ExecStart=/,/[^\\]$/p' "$u" | grep -o -- '--[a-z_]*'); do
    grep -Eq "^  --(\[no\])?${f#--}[= ]" <<<"$help" || fail "$name uses $f, which 'topfetch $cmd --help' does not list"
  done
done

# --- license and notices
head -4 "$src/LICENSE" | grep -q 'Apache License' || fail "LICENSE is not the Apache License"
grep -q 'Version 2.0, January 2004' "$src/LICENSE" || fail "LICENSE is not the Apache License 2.0"
grep -q "license : 'Apache-2.0'" "$src/meson.build" || fail "meson.build's project() does not say license : 'Apache-2.0'"
[ -f "$src/NOTICE" ] || fail "no NOTICE"
for p in "$src"/proto/*.proto; do
  f=${p##*/}
  grep -q "^$f " "$src/proto/NOTICE" || grep -q "^$f is" "$src/proto/NOTICE" ||
    fail "proto/NOTICE does not name $f"
  line=$(grep -E "^$f .* [0-9]{4} (The Bazel Authors|Google Inc\.)$" "$src/proto/NOTICE" || true)
  [ -n "$line" ] || continue # ours or the BSD-licensed well-known types, said in prose
  holder=$(sed -E 's/.* ([0-9]{4} (The Bazel Authors|Google Inc\.))$/\1/' <<<"$line")
  grep -q "^// Copyright $holder" "$p" || fail "$f does not start with its upstream copyright line ($holder)"
done
echo "pkg_repo: example installs $(wc -l <<<"$build") packages; ${#units[@]} units verified; proto notices complete"
