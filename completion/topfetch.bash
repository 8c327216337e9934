# bash completion for topfetch                                  -*- shell-script -*-
#
# Completes the commands and each command's flags. Both are read from the
# binary being completed (`topfetch --help`, `topfetch COMMAND --help`), once
# per shell and command, so the lists are always the ones that binary accepts.
# Values of flags whose placeholder names a FILE or DIR complete as paths;
# a placeholder of words (2|2-prior-knowledge|1.1) completes as those words.

declare -gA _topfetch_help_cache 2>/dev/null || true

# _topfetch_help PROG [COMMAND]: the help text, cached.
_topfetch_help()
{
	local key="$1|${2-}" text
	if [[ -z ${_topfetch_help_cache[$key]+set} ]]; then
		if [[ -n ${2-} ]]; then
			text=$("$1" "$2" --help 2>/dev/null)
		else
			text=$("$1" --help 2>/dev/null)
		fi
		_topfetch_help_cache[$key]=$text
	fi
	printf '%s\n' "${_topfetch_help_cache[$key]}"
}

# The names listed under "Commands:" in `topfetch --help`.
_topfetch_commands()
{
	_topfetch_help "$1" | awk '/^Commands:/ { inside = 1; next }
		inside && /^[[:space:]]*$/ { exit }
		inside && /^  [a-z]/ { print $1 }'
}

# One line per flag of COMMAND: "--name=PLACEHOLDER" or "--name" ("--[no]name"
# becomes "--name" and "--noname").
_topfetch_flags()
{
	_topfetch_help "$1" "$2" | awk '/^  -/ {
		n = split($0, parts, ", ")
		for (i = 1; i <= n; i++) {
			f = parts[i]; sub(/^ +/, "", f); sub(/ .*/, "", f)
			if (f !~ /^-/) continue
			if (f ~ /^--\[no\]/) { sub(/^--\[no\]/, "", f); print "--" f; print "--no" f }
			else print f
		}
	}'
}

_topfetch()
{
	local prog=${COMP_WORDS[0]} cur=${COMP_WORDS[COMP_CWORD]-} cmd i w
	[[ $prog == "~/"* ]] && prog=$HOME/${prog#"~/"}
	# Bash splits "--flag=value" into "--flag" "=" "value" when '=' is in
	# COMP_WORDBREAKS (the default): put the word back together.
	if [[ $cur == "=" && COMP_CWORD -ge 1 ]]; then
		cur=${COMP_WORDS[COMP_CWORD - 1]}=
	elif [[ COMP_CWORD -ge 2 && ${COMP_WORDS[COMP_CWORD - 1]} == "=" ]]; then
		cur=${COMP_WORDS[COMP_CWORD - 2]}=$cur
	fi
	COMPREPLY=()

	cmd=""
	for ((i = 1; i < COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		if [[ $w != -* && $w != "=" && ${COMP_WORDS[i - 1]} != "=" ]]; then
			cmd=$w
			break
		fi
	done
	if [[ -z $cmd ]]; then
		mapfile -t COMPREPLY < <(compgen -W "$(_topfetch_commands "$prog") --help --version" -- "$cur")
		return 0
	fi

	local flags
	flags=$(_topfetch_flags "$prog" "$cmd")
	if [[ $cur == --*=* ]]; then
		local name=${cur%%=*} value=${cur#*=} f placeholder="" kind
		while IFS= read -r f; do
			[[ $f == "$name="* ]] && placeholder=${f#*=}
		done <<<"$flags"
		case $placeholder in
		*DIR*) kind=-d ;;
		*FILE*) kind=-f ;;
		*[a-z0-9]\|[a-z0-9]*) kind=-W ;; # a choice of words: auto|yes|no
		*) return 0 ;;
		esac
		if [[ $kind == -W ]]; then
			mapfile -t COMPREPLY < <(compgen -W "${placeholder//|/ }" -- "$value")
		else
			mapfile -t COMPREPLY < <(compgen "$kind" -- "$value")
			compopt -o filenames 2>/dev/null
		fi
		# Bash replaces only the text after '=' when '=' breaks words.
		[[ $COMP_WORDBREAKS == *=* ]] || COMPREPLY=("${COMPREPLY[@]/#/$name=}")
		return 0
	fi
	if [[ $cur == -* ]]; then
		local names
		names=$(sed 's/=.*/=/' <<<"$flags")
		mapfile -t COMPREPLY < <(compgen -W "$names" -- "$cur")
		[[ ${COMPREPLY[*]} == *= || ${COMPREPLY[*]} == *"= "* ]] && compopt -o nospace 2>/dev/null
	fi
	return 0
} &&
	complete -F _topfetch -o bashdefault -o default topfetch

# ex: filetype=sh
