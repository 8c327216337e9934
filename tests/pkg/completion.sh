#!/usr/bin/env bash
# The bash completion, sourced in a bash without any other completion loaded:
# it registers itself for `topfetch`, completes `topfetch col<TAB>` to collect,
# `topfetch collect --remote_c<TAB>` to --remote_cache= and --remote_cache_header=, --[no] flags both
# ways, FILE/DIR values as paths, choices (2|2-prior-knowledge|1.1) as words, and offers exactly the commands of
# `topfetch --help` and the flags of each `topfetch CMD --help`.
source "$TF_SOURCE_ROOT/tests/lib/harness.sh"
need bash

mkdir -p "$tf_tmp/bin" "$tf_tmp/files/subdir"
ln -s "$TOPFETCH" "$tf_tmp/bin/topfetch"
touch "$tf_tmp/files/bep.bin"

# complete_words WORD... : the candidates bash's completion function offers
# for the last word, one per line, as bash calls it (COMP_WORDS split at '='
# as bash's default COMP_WORDBREAKS does).
complete_words() {
  PATH="$tf_tmp/bin:$PATH" bash --norc --noprofile -c '
    source "$1"; shift
    complete -p topfetch
    COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}
    _topfetch || exit 1
    printf "%s\n" "${COMPREPLY[@]}"' _ "$TF_SOURCE_ROOT/completion/topfetch.bash" "$@"
}
expect() { # expected-lines WORD...
  local want=$1 got
  shift
  got=$(complete_words "$@" | tail -n +2 | sort)
  [ "$got" = "$(sort <<<"$want")" ] ||
    fail "completing '$*' offered [$(tr '\n' ' ' <<<"$got")], expected [$(tr '\n' ' ' <<<"$want")]"
}

reg=$(complete_words topfetch "" | sed -n 1p)
assert_contains "$reg" "-F _topfetch" "complete -p topfetch"
assert_contains "$reg" " topfetch" "complete -p topfetch"

expect "collect" topfetch col
expect "$(printf -- "--remote_cache=\n--remote_cache_header=")" topfetch collect --remote_c
expect "--remote_cache_header=" topfetch collect --remote_cache_
expect "--nokeep_path_prefix" topfetch collect --nokeep_p
expect "--keep_path_prefix" topfetch collect --keep_p
expect "--bep_follow=" topfetch proxy --bep_f
expect "$tf_tmp/files/bep.bin" topfetch collect --bep = "$tf_tmp/files/b"
expect "$tf_tmp/files/subdir" topfetch collect --output_dir = "$tf_tmp/files/s"
expect "" topfetch collect --remote_cache = htt
expect "$(printf -- "2\n2-prior-knowledge")" topfetch fetch --remote_http_version = 2
expect "1.1" topfetch fetch --remote_http_version = 1
expect "$(printf -- "auto\nyes\nno")" topfetch fetch --color = ""
expect "--version" topfetch --vers

# Commands: exactly those of `topfetch --help`.
run_tf --help
want=$(awk '/^Commands:/ {c = 1; next} c && /^$/ {exit} c && /^  [a-z]/ {print $1}' <<<"$out")
[ "$(wc -l <<<"$want")" -ge 4 ] || fail "found fewer than 4 commands in topfetch --help: $out"
expect "$want
--help
--version" topfetch ""

# Flags: for every command, exactly the flags its --help lists.
for c in $(grep -vx -e help -e version <<<"$want"); do
  run_tf "$c" --help
  # "  --name=VALUE  text", "  --[no]name  text", "  -o, --output=FILE  text"
  flags=$(grep -E '^  -' <<<"$out" | sed -E 's/^  //; s/  .*//; s/, /\n/g' | grep -oE -- '^--[^ ]*' |
    sed -e 's/^--\[no\]\(.*\)/--\1\n--no\1/' -e 's/=.*/=/')
  [ "$(wc -l <<<"$flags")" -ge 3 ] || fail "topfetch $c --help lists fewer than 3 flags: $out"
  expect "$flags" topfetch "$c" --
done
echo "pkg_completion: commands and flags of $(wc -l <<<"$want") commands complete as their --help lists them"
