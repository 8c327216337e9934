#!/usr/bin/env bash
# `meson install --destdir` puts the binary, the man page, the bash completion,
# the header, the libraries and the pkg-config file where a distribution
# expects them; the installed binary runs; the man page renders without a
# warning and has a section for every command `topfetch --help` lists; the
# shared library exports tf_version and tf_version_commit.
source "$TF_SOURCE_ROOT/tests/lib/harness.sh"
need meson
need man
need groff
need nm

dest="$tf_tmp/dest"
meson install -C "$TF_BUILD_ROOT" --no-rebuild --quiet --destdir "$dest" >"$tf_tmp/install.log" 2>&1 ||
  fail "meson install --destdir failed: $(cat "$tf_tmp/install.log")"

# The install directories, as configured.
eval "$(meson introspect "$TF_BUILD_ROOT" --buildoptions | python3 -c '
import json, sys
o = {x["name"]: x["value"] for x in json.load(sys.stdin)}
for k in ("prefix", "bindir", "mandir", "datadir", "includedir", "libdir"):
    print(f"{k}={o[k]!r}")')"
root="$dest$prefix"
bin="$root/$bindir/topfetch"
man1="$root/$mandir/man1/topfetch.1"
compl="$root/$datadir/bash-completion/completions/topfetch"
for f in "$bin" "$man1" "$compl" "$root/$includedir/topfetch.h" "$root/$libdir/libtopfetch.a" \
  "$root/$libdir/pkgconfig/topfetch.pc"; do
  [ -f "$f" ] || fail "meson install did not install ${f#"$dest"}; it installed: $(cd "$dest" && find . -type f | sort)"
done
[ -x "$bin" ] || fail "the installed ${bin#"$dest"} is not executable"
so=$(find "$root/$libdir" -name 'libtopfetch.so.*' -type f | sed -n 1p)
[ -n "$so" ] || fail "no libtopfetch.so.* installed under ${root#"$dest"}/$libdir"
cmp -s "$compl" "$TF_SOURCE_ROOT/completion/topfetch.bash" ||
  fail "the installed completion differs from completion/topfetch.bash"

# The installed binary runs and is the one built.
run_tf --version
[ "$rc" -eq 0 ] || fail "topfetch --version exited $rc: $out"
inst=$("$bin" --version 2>&1) || fail "the installed topfetch --version failed: $inst"
[ "$inst" = "$out" ] || fail "the installed binary says '$inst', the built one '$out'"

# The shared library exports the version API (and only tf_ symbols).
syms=$(nm -D --defined-only "$so" | awk '$2 ~ /^[TDBR]$/ {print $3}')
for s in tf_version tf_version_commit; do
  grep -qx "$s" <<<"$syms" || fail "${so#"$dest"} does not export $s"
done
other=$(grep -v '^tf_' <<<"$syms" | grep -v '^_' || true)
[ -z "$other" ] || fail "${so#"$dest"} exports symbols outside tf_: $other"

# The man page renders cleanly, as man shows it and as groff checks it.
warn=$(groff -man -Tutf8 -ww -z "$man1" 2>&1)
[ -z "$warn" ] || fail "groff warns about topfetch.1: $warn"
page=$(MANWIDTH=100 MAN_KEEP_FORMATTING=0 man -l "$man1" 2>"$tf_tmp/man.err" | col -b) ||
  fail "man -l topfetch.1 failed: $(cat "$tf_tmp/man.err")"
[ ! -s "$tf_tmp/man.err" ] || fail "man -l topfetch.1 complained: $(cat "$tf_tmp/man.err")"
for h in NAME SYNOPSIS DESCRIPTION "SEE ALSO"; do
  grep -qx "$h" <<<"$page" || fail "topfetch.1 has no $h section: $page"
done
# Every command of `topfetch --help` has its section with its own flags.
run_tf --help
cmds=$(awk '/^Commands:/ {c = 1; next} c && /^$/ {exit} c && /^  [a-z]/ {print $1}' <<<"$out" |
  grep -vx -e help -e version)
[ "$(wc -l <<<"$cmds")" -ge 4 ] || fail "found fewer than 4 commands in topfetch --help: $out"
for c in $cmds; do
  C=$(tr '[:lower:]' '[:upper:]' <<<"$c")
  section=$(awk -v h="TOPFETCH $C" '$0 == h {on = 1; next} on && /^[A-Z]/ {exit} on' <<<"$page")
  [ -n "$section" ] || fail "topfetch.1 has no section 'TOPFETCH $C'"
  run_tf "$c" --help
  first_flag=$(sed -n 's/^  \(--[a-z_[\]]*\).*/\1/p' <<<"$out" | sed -n 1p)
  [ -n "$first_flag" ] || fail "topfetch $c --help lists no flag: $out"
  assert_contains "$section" "$first_flag" "the man page's section for $c"
done
# The page names the version and commit of the binary it was made from.
assert_contains "$(head -3 "$man1")" "$("$bin" --version | sed 's/^topfetch //')" "topfetch.1's title line"
echo "pkg_install: $(cd "$dest" && find . -type f | wc -l) files installed; man page with $(wc -w <<<"$cmds") command sections"
