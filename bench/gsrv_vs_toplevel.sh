#!/usr/bin/env bash
# Benchmark: time until N targets x MB megabytes of top-level outputs are on
# disk, same workspace, same loopback nginx cache, same run, real Bazel 4.2.3
# offline, every action a cache hit (the cache is filled by one build first):
#   (a) bazel build --remote_download_minimal --remote_cache=grpc://<topfetch
#       proxy> --bes_backend=grpc://<the same port>: the proxy (gRPC front end)
#       forwards cache calls to nginx over HTTP, takes the build's events over
#       BES and writes the top-level files to --output_dir. Done when the proxy
#       logs the invocation's session ended (its gated BEP in --build_event_dir
#       has last_message, every file verified in place); then the files and
#       sizes are checked.
#   (b) bazel build --remote_download_toplevel --remote_cache=http://<nginx>:
#       Bazel downloads the top-level files itself. Done when Bazel exits.
# The proxy's upstream is nginx, not Bazel's own remote worker: this branch
# has no gRPC upstream in the proxy, so both sides read the same nginx, whose
# access log gives the requests and bytes served to each.
# RUNS rounds of (a) then (b), each after `bazel clean` and with an empty
# --output_dir, a fresh proxy per (a) run (started before the clock). Prints
# one table: median seconds, ratio (a)/(b), GETs and MiB served by nginx per
# run (median), the proxy's peak RSS (max over its runs).
# Usage: bench/gsrv_vs_toplevel.sh [build-dir]    env: N=20 MB=20 RUNS=5
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
export TOPFETCH=$build/cli/topfetch TF_SOURCE_ROOT=$here
[ -x "$TOPFETCH" ] || { echo "build first: scripts/build.sh" >&2; exit 2; }
. "$here/tests/lib/harness.sh"
need bazel
N=${N:-20} MB=${MB:-20} RUNS=${RUNS:-5}
nginx_start
ws="$tf_tmp/ws"
mkdir -p "$ws/pkg" "$tf_tmp/home"
cp "$here/bench/proxy/workspace/.bazelrc" "$here/bench/proxy/workspace/WORKSPACE" "$ws/"
for i in $(seq 0 $((N - 1))); do
  cat <<BUILD
genrule(
    name = "big$i",
    outs = ["big$i.dat"],
    cmd = "(yes \"target $i line of a large output\" || true) | head -c $((MB * 1000000)) > \$@",
)
BUILD
done >"$ws/pkg/BUILD"
root="$tf_tmp/obase"
bz() { (cd "$ws" && env -i HOME="$tf_tmp/home" PATH=/usr/bin:/bin LANG=C.UTF-8 bazel --output_user_root="$root" "$@"); }
proxy_pid=""
stop_proxy() {
  if [ -n "$proxy_pid" ]; then
    kill "$proxy_pid" 2>/dev/null || true
    wait "$proxy_pid" 2>/dev/null || true
  fi
  proxy_pid=""
}
trap 'stop_proxy; bz shutdown >/dev/null 2>&1 || true; tf_cleanup' EXIT
now() { date +%s.%N; }
log_lines() { nginx_sync; wc -l <"$NGINX_LOG"; }
# nginx's requests and bytes for log lines after $1: "requests bytes"; the
# requests by method and status go to $tf_tmp/methods.
served() {
  nginx_sync
  tail -n +"$(($1 + 1))" "$NGINX_LOG" | awk '{print $1, $3}' | sort | uniq -c | awk '{printf "%s %s:%s ", $2, $3, $1}' >"$tf_tmp/methods"
  tail -n +"$(($1 + 1))" "$NGINX_LOG" | awk '{n++; b += $4} END {printf "%d %d\n", n, b}'
}
median() { python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }
grpc_port() { sed -n 's|^topfetch proxy: listening on grpc://[^ ,]*:\([0-9]*\),.*|\1|p' "$tf_tmp/proxy.log"; }
have_port() { [ -n "$(grpc_port)" ]; }
ended() { grep -q '^topfetch proxy: build .* ended' "$tf_tmp/proxy.log"; }
# check_files DIR: N files of MB*1000000 bytes.
check_files() {
  local n
  n=$(find "$1" -name 'big*.dat' -type f -size "$((MB * 1000000))c" | wc -l)
  [ "$n" -eq "$N" ] || fail "$n of $N artifacts of $((MB * 1000000)) bytes in $1"
}

echo "populating the cache (every action runs once): $N x $MB MB..." >&2
bz build --color=no --curses=no --remote_cache="$NGINX_URL" //pkg:all >"$tf_tmp/populate.log" 2>&1 \
  || { cat "$tf_tmp/populate.log"; fail "populating build failed"; }

a_t=() b_t=() a_req=() a_bytes=() b_req=() b_bytes=() rss=0
for r in $(seq 1 "$RUNS"); do
  # (a)
  bz clean >/dev/null 2>&1
  out="$tf_tmp/out"
  rm -rf "$out" "$tf_tmp/events"
  : >"$tf_tmp/proxy.log"
  "$TOPFETCH" proxy --listen=grpc://127.0.0.1:0 --remote_cache="$NGINX_URL" --output_dir="$out" \
    --build_event_dir="$tf_tmp/events" >"$tf_tmp/proxy.log" 2>&1 &
  proxy_pid=$!
  wait_for 30 "the proxy's grpc:// line ($(cat "$tf_tmp/proxy.log"))" have_port
  url="grpc://127.0.0.1:$(grpc_port)"
  l0=$(log_lines)
  t0=$(now)
  bz build --color=no --curses=no --remote_cache="$url" --bes_backend="$url" --remote_download_minimal //pkg:all \
    >"$tf_tmp/a$r.log" 2>&1 || { cat "$tf_tmp/a$r.log" "$tf_tmp/proxy.log"; fail "run $r (a): bazel failed"; }
  wait_for 600 "run $r (a): the proxy's session to end ($(cat "$tf_tmp/proxy.log"))" ended
  t1=$(now)
  grep -q 'processes: .*remote cache hit' "$tf_tmp/a$r.log" || fail "run $r (a): not served from the cache"
  check_files "$out"
  grep -qs '"lastMessage":true' "$tf_tmp"/events/*.json || fail "run $r (a): the gated BEP has no last_message"
  h=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$proxy_pid/status")
  [ "$h" -gt "$rss" ] && rss=$h
  stop_proxy
  a_t+=("$(secs "$t0" "$t1")")
  read -r q b < <(served "$l0")
  a_req+=("$q") a_bytes+=("$b")
  a_methods=$(cat "$tf_tmp/methods")
  # (b)
  bz clean >/dev/null 2>&1
  l0=$(log_lines)
  t0=$(now)
  bz build --color=no --curses=no --remote_cache="$NGINX_URL" --remote_download_toplevel //pkg:all \
    >"$tf_tmp/b$r.log" 2>&1 || { cat "$tf_tmp/b$r.log"; fail "run $r (b): bazel failed"; }
  t1=$(now)
  grep -q 'processes: .*remote cache hit' "$tf_tmp/b$r.log" || fail "run $r (b): not served from the cache"
  check_files "$(readlink -f "$ws/bazel-bin")/pkg"
  b_t+=("$(secs "$t0" "$t1")")
  read -r q b < <(served "$l0")
  b_req+=("$q") b_bytes+=("$b")
  b_methods=$(cat "$tf_tmp/methods")
  echo "run $r: (a) ${a_t[-1]} s, (b) ${b_t[-1]} s" >&2
done

am=$(median "${a_t[@]}") bm=$(median "${b_t[@]}")
mib() { python3 -c "print(f'{$(median "$@") / 1048576:.1f}')"; }
printf '\n%d targets x %d MB, median of %d alternating runs, every action a cache hit\n' "$N" "$MB" "$RUNS"
printf '| run | median s until artifacts on disk | requests at nginx | MiB served by nginx | proxy peak RSS |\n|---|---|---|---|---|\n'
printf '| (a) bazel minimal -> topfetch proxy grpc:// (+BES) -> nginx | %.2f | %.0f | %s | %d MiB |\n' \
  "$am" "$(median "${a_req[@]}")" "$(mib "${a_bytes[@]}")" "$((rss / 1024))"
printf '| (b) bazel --remote_download_toplevel -> nginx | %.2f | %.0f | %s | - |\n' \
  "$bm" "$(median "${b_req[@]}")" "$(mib "${b_bytes[@]}")"
printf 'nginx requests of the last run, method status:count: (a) %s  (b) %s\n' "$a_methods" "$b_methods"
printf 'ratio (a)/(b): %s   (a) runs: %s   (b) runs: %s\n' "$(python3 -c "print(f'{$am / $bm:.2f}')")" "${a_t[*]}" "${b_t[*]}"
