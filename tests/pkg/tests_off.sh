#!/usr/bin/env bash
# `meson setup -Dtests=false` builds only the library and the CLI: ninja's
# targets hold one executable, cli/topfetch, the libraries it needs, the man
# page, and nothing of tests/, bench/, fuzz/ or examples/. The same check on
# this (tests=true) build finds the tests, so it can tell the two apart.
source "$TF_SOURCE_ROOT/tests/lib/harness.sh"
need meson
need ninja

# targets BUILDDIR: "path rule" for every ninja target that is built.
targets() {
  ninja -C "$1" -t targets all | sed -n 's/^\(.*\): \([A-Za-z_]*\)$/\1 \2/p' |
    grep -v -e ' phony$' -e ' REGENERATE_BUILD$' -e '^meson-'
}
# executables BUILDDIR: the programs linked (no shared objects).
executables() { targets "$1" | awk '$2 == "c_LINKER" && $1 !~ /\.so(\.[0-9]+)*$/ {print $1}' | sort; }
test_paths() { targets "$1" | awk '$1 ~ /^(tests|bench|fuzz|examples)\// {print $1}'; }

# This build has tests: the filters see them.
[ -n "$(test_paths "$TF_BUILD_ROOT")" ] || fail "found no tests/ target in the test build; the check below would prove nothing"
[ "$(executables "$TF_BUILD_ROOT" | wc -l)" -gt 10 ] || fail "found 10 or fewer executables in the test build"

off="$tf_tmp/build-off"
meson setup "$off" "$TF_SOURCE_ROOT" -Dtests=false --buildtype=plain >"$tf_tmp/setup.log" 2>&1 ||
  fail "meson setup -Dtests=false failed: $(tail -20 "$tf_tmp/setup.log")"
t=$(test_paths "$off")
[ -z "$t" ] || fail "-Dtests=false still builds: $t"
exe=$(executables "$off")
[ "$exe" = "cli/topfetch" ] || fail "-Dtests=false links these programs, not only cli/topfetch: $exe"
all=$(targets "$off")
grep -q '^libtopfetch\.so\.[0-9.]* c_LINKER$' <<<"$all" || fail "-Dtests=false builds no libtopfetch.so: $all"
grep -Eq '^libtopfetch\.a (c_)?STATIC_LINKER$' <<<"$all" || fail "-Dtests=false builds no libtopfetch.a: $all"
grep -q '^man/topfetch\.1 CUSTOM_COMMAND$' <<<"$all" || fail "-Dtests=false makes no man page: $all"

# What `ninja` would run there: compile and link steps for the library and the CLI only.
plan=$(ninja -C "$off" -n 2>&1)
assert_contains "$plan" "Linking target cli/topfetch" "ninja -n with -Dtests=false"
steps=$(grep -c '^\[' <<<"$plan")
bad=$(grep -E '(tests|bench|fuzz|examples)/' <<<"$plan" || true)
[ -z "$bad" ] || fail "ninja -n with -Dtests=false plans: $bad"
echo "pkg_tests_off: -Dtests=false plans $steps steps, one program (cli/topfetch), no tests, benchmarks, fuzz harnesses or examples"
