#!/usr/bin/env bash
# Nothing in the repository may point outside it: no file names a folder
# beside the checkout that a fresh clone does not have. Scans every file git
# knows (tracked, plus new files not ignored) or, without .git, every file of
# the source tree except build folders, binary files included.
#
#   self_contained.sh [SOURCE_ROOT]      (default: $TF_SOURCE_ROOT)
#
# The forbidden spellings are built from pieces below, so this file does not
# match itself.
set -euo pipefail
root=${1:-${TF_SOURCE_ROOT:?set TF_SOURCE_ROOT or pass the source root}}
w=shared
patterns=(
  "\.\./$w"                                   # a relative path to the sibling folder
  "/work/$w"                                  # the absolute path on the machines this grew on
  "'\.\.'[[:space:]]*/[[:space:]]*'$w'"       # meson: '..' / 'NAME'
  "'$w'[[:space:]]*/[[:space:]]*'fixtures'"   # meson: 'NAME' / 'fixtures'
  "join_paths\([^)]*'$w'"                     # meson: join_paths(..., 'NAME', ...)
)

# list_files ROOT: NUL-separated paths relative to ROOT.
list_files() {
  if git -C "$1" rev-parse --is-inside-work-tree >/dev/null 2>&1 &&
    [ "$(cd "$1" && git rev-parse --show-toplevel)" = "$(cd "$1" && pwd -P)" ]; then
    git -C "$1" ls-files -z --cached --others --exclude-standard
  else
    local prune=(-path ./.git)
    while IFS= read -r -d '' d; do prune+=(-o -path "${d%/meson-private}"); done \
      < <(cd "$1" && find . -type d -name meson-private -print0)
    (cd "$1" && find . \( "${prune[@]}" \) -prune -o -type f -print0)
  fi
}

# scan ROOT: prints "file:line: text" for every forbidden spelling; 1 if any.
scan() {
  local args=() p
  for p in "${patterns[@]}"; do args+=(-e "$p"); done
  # -s: a file deleted but still in git's index is no error.
  local found
  found=$(list_files "$1" | (cd "$1" && xargs -0 -r grep -s -a -n -H -E "${args[@]}" --) | sed 's|^\./||' | cut -c1-300 || true)
  [ -z "$found" ] || { echo "$found"; return 1; }
}

# The scan must see a planted violation, or passing says nothing.
probe=$(mktemp -d /tmp/tf-selfcontained.XXXXXX)
trap 'rm -rf "$probe"' EXIT
mkdir -p "$probe/tests"
printf "fixtures = meson.project_source_root() / '..' / '%s' / 'fixtures'\n" "$w" >"$probe/tests/meson.build"
printf 'ok\n' >"$probe/clean.txt"
if scan "$probe" >/dev/null; then
  echo "FAIL: the scan did not notice a planted violation" >&2
  exit 1
fi

if ! scan "$root" >"$probe/found"; then
  cat "$probe/found" >&2
  echo "FAIL: $(wc -l <"$probe/found") line(s) above point outside the repository; a fresh clone has none of it." \
    "Put what they need into the repository (tests/fixtures/ for test data) and cite upstream sources by name." >&2
  exit 1
fi
echo "self_contained: $(list_files "$root" | tr -cd '\0' | wc -c) files, none points outside the repository"
