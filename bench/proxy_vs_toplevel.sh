#!/usr/bin/env bash
# Benchmark: wall time until 20 targets x 20 MB of top-level outputs are on
# disk, same workspace, same loopback nginx cache, same run:
#   (a) bazel build --remote_download_toplevel straight to nginx;
#   (b) bazel build --remote_download_minimal through `topfetch proxy`, until
#       topfetch's own BEP has its last event (every TargetComplete there is
#       written only after its files are verified in --output_dir).
# Both after `bazel clean`, with every action a cache hit. Prints one table:
# wall time, bytes and GET requests nginx served. Real Bazel 4.2.3, offline.
# Usage: bench/proxy_vs_toplevel.sh [build-dir]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
export TOPFETCH=$build/cli/topfetch TF_SOURCE_ROOT=$here
[ -x "$TOPFETCH" ] || { echo "build first: scripts/build.sh" >&2; exit 2; }
. "$here/tests/lib/harness.sh"
need bazel
nginx_start
ws="$tf_tmp/ws"
cp -r "$here/bench/proxy/workspace" "$ws"
root="$tf_tmp/obase"
mkdir -p "$tf_tmp/home"
bz() { (cd "$ws" && env -i HOME="$tf_tmp/home" PATH=/usr/bin:/bin LANG=C.UTF-8 bazel --output_user_root="$root" "$@"); }
proxy_pid=""
stop_all() {
  [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null || true
  bz shutdown >/dev/null 2>&1 || true
}
trap 'stop_all; tf_cleanup' EXIT
now() { date +%s.%N; }
log_lines() { wc -l <"$NGINX_LOG"; }
# nginx stats for log lines after $1: "GETs bytes"
served() { tail -n +"$(($1 + 1))" "$NGINX_LOG" | awk '$1 == "GET" && $3 == 200 {n++; b += $4} END {printf "%d %d\n", n, b}'; }

echo "populating the cache (every action runs once)..." >&2
bz build --color=no --curses=no --remote_cache="$NGINX_URL" //pkg:all >"$tf_tmp/populate.log" 2>&1 \
  || { cat "$tf_tmp/populate.log"; fail "populating build failed"; }

# (a) Bazel downloads the top-level outputs itself.
bz clean >/dev/null 2>&1
l0=$(log_lines); t0=$(now)
bz build --color=no --curses=no --remote_cache="$NGINX_URL" --remote_download_toplevel //pkg:all \
  >"$tf_tmp/a.log" 2>&1 || { cat "$tf_tmp/a.log"; fail "toplevel build failed"; }
t1=$(now)
read -r a_gets a_bytes < <(served "$l0")
a_wall=$(python3 -c "print(f'{$t1 - $t0:.2f}')")

# (b) minimal through topfetch proxy; done when topfetch's BEP is complete.
bz clean >/dev/null 2>&1
port=$(free_port)
out="$tf_tmp/artifacts"
rm -f "$tf_tmp/bep.bin" "$tf_tmp/tf.bin"
l0=$(log_lines); t0=$(now)
"$TOPFETCH" proxy --listen="127.0.0.1:$port" --remote_cache="$NGINX_URL" --output_dir="$out" \
  --store="$tf_tmp/store.db" --bep_follow="$tf_tmp/bep.bin" --build_event_json_file="$tf_tmp/tf.json" \
  >"$tf_tmp/proxy.log" 2>&1 &
proxy_pid=$!
poll_until 5 port_open "$port" || true
bz build --color=no --curses=no --remote_cache="http://127.0.0.1:$port" --remote_download_minimal \
  --build_event_binary_file="$tf_tmp/bep.bin" //pkg:all >"$tf_tmp/b.log" 2>&1 \
  || { cat "$tf_tmp/b.log" "$tf_tmp/proxy.log"; fail "minimal build through the proxy failed"; }
t_bazel=$(now)
poll_until 60 grep -qs '"lastMessage":true' "$tf_tmp/tf.json" || true
t1=$(now)
grep -q '"lastMessage":true' "$tf_tmp/tf.json" || { cat "$tf_tmp/proxy.log"; fail "topfetch never wrote its last event"; }
read -r b_gets b_bytes < <(served "$l0")
b_wall=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
b_bazel=$(python3 -c "print(f'{$t_bazel - $t0:.2f}')")
n_files=$(find "$out" -name 'big*.dat' -type f | wc -l)
[ "$n_files" -eq 20 ] || fail "expected 20 artifacts from the proxy, found $n_files"

printf '\n| run | wall s until artifacts on disk | GETs at nginx | MiB served | files |\n|---|---|---|---|---|\n'
printf '| (a) bazel --remote_download_toplevel -> nginx | %s | %s | %.1f | 20 |\n' "$a_wall" "$a_gets" "$(python3 -c "print($a_bytes/1048576)")"
printf '| (b) bazel --remote_download_minimal -> topfetch proxy -> nginx (bazel itself: %s s) | %s | %s | %.1f | %s |\n' \
  "$b_bazel" "$b_wall" "$b_gets" "$(python3 -c "print($b_bytes/1048576)")" "$n_files"
printf 'ratio (b)/(a) wall: %s\n' "$(python3 -c "print(f'{$b_wall / $a_wall:.2f}')")"
