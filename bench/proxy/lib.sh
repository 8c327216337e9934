# shellcheck shell=bash
# The shared part of bench/proxy_vs_toplevel.sh and bench/gsrv_vs_toplevel.sh:
# real Bazel 4.2.3 offline, a workspace of N targets x MB megabytes (each top
# -level file made from a small intermediate of its own, which no run wants),
# every action a cache hit (the cache is filled by one build first), RUNS
# alternating rounds of
#   (a) bazel --remote_download_toplevel straight to the upstream cache, done
#       when Bazel exits;
#   (b) bazel --remote_download_minimal through `topfetch proxy` (started
#       before the clock, as a daemon is), done when the proxy logs that the
#       build ended (the time its line came, taken by the reader of its
#       output, not when a poll found it; bench_main's DONE command, polled,
#       also wants its own BEP to have last_message), every top-level file
#       verified in its --output_dir or given up (the files in place are
#       counted);
# each after `bazel clean` and with an empty --output_dir. Then one table:
# median seconds until the artifacts are on disk, runs in which the proxy got
# every artifact, ratio (b)/(a), requests and
# MiB at the upstream per run (medians), the proxy's peak RSS (max over its
# runs), and what the proxy's GET /status said after its last run.
# Source after setting `here` and `build`; env: N=20 MB=20 RUNS=5, UPSTREAM
# (nginx or worker; the caller's default), PROFILE=strace|perf (attach to the
# proxy during each (b) run; the summaries are printed after the table),
# LOGS=DIR (keep each run's proxy log and, at the end, the upstream's log).
export TOPFETCH=${build:?}/cli/topfetch TF_SOURCE_ROOT=${here:?}
[ -x "$TOPFETCH" ] || { echo "build first: scripts/build.sh (a release build for figures)" >&2; exit 2; }
. "$here/tests/lib/harness.sh"
. "$here/tests/lib/reapi_worker.sh"
need bazel
N=${N:-20} MB=${MB:-20} RUNS=${RUNS:-5} PROFILE=${PROFILE:-} LOGS=${LOGS:-}
export TF_BUILD_ROOT=$build # the worker's classes are compiled once per build directory

case "$UPSTREAM" in
  nginx) UP_NAME=nginx ;;
  worker) UP_NAME="the worker" ;;
  *) fail "UPSTREAM=$UPSTREAM: say nginx or worker" ;;
esac
# up_start: starts the upstream; sets UP_URL.
up_start() {
  case "$UPSTREAM" in
    nginx) nginx_start; UP_URL=$NGINX_URL ;;
    worker) reapi_worker_start; UP_URL=$WORKER_URL ;;
  esac
}
up_log() { if [ "$UPSTREAM" = nginx ]; then nginx_sync; echo "$NGINX_LOG"; else echo "$WORKER_LOG"; fi; }
up_mark() { wc -l <"$(up_log)"; }
# up_served MARK: "requests bytes" the upstream logged after line MARK; its
# requests by kind go to $tf_tmp/kinds. nginx logs every request with the
# body bytes it sent; the worker (tests/lib/reapi_worker.sh) logs each
# ByteStream.Read (bytes: the size in its resource name) and BatchReadBlobs.
up_served() {
  tail -n +"$(($1 + 1))" "$(up_log)" >"$tf_tmp/served"
  if [ "$UPSTREAM" = nginx ]; then
    awk '{print $1 ":" $3}' "$tf_tmp/served" | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}' >"$tf_tmp/kinds"
    awk '{n++; b += $4} END {printf "%d %d\n", n, b}' "$tf_tmp/served"
  else
    awk '$1 == "tf-worker:" {print $2}' "$tf_tmp/served" | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}' >"$tf_tmp/kinds"
    awk '$1 == "tf-worker:" {n++; if ($2 == "ByteStream.Read" && match($3, /blobs\/[0-9a-f]+\/[0-9]+/)) {
           s = substr($3, RSTART, RLENGTH); sub(/.*\//, "", s); b += s } }
         END {printf "%d %d\n", n, b}' "$tf_tmp/served"
  fi
}

ws="$tf_tmp/ws"
mkdir -p "$ws/pkg" "$tf_tmp/home"
cp "$here/bench/proxy/workspace/.bazelrc" "$here/bench/proxy/workspace/WORKSPACE" "$ws/"
for i in $(seq 0 $((N - 1))); do
  cat <<BUILD
genrule(
    name = "mid$i",
    outs = ["mid$i.txt"],
    cmd = "echo intermediate $i > \$@",
)

genrule(
    name = "big$i",
    srcs = [":mid$i"],
    outs = ["big$i.dat"],
    cmd = "(yes \"\$\$(cat \$<) line of a large output\" || true) | head -c $((MB * 1000000)) > \$@",
)

BUILD
done >"$ws/pkg/BUILD"
root="$tf_tmp/obase"
bz() { (cd "$ws" && env -i HOME="$tf_tmp/home" PATH=/usr/bin:/bin LANG=C.UTF-8 bazel --output_user_root="$root" "$@"); }
proxy_pid="" prof_pid="" stamp_pid=""
stop_proxy() {
  if [ -n "$proxy_pid" ]; then
    kill "$proxy_pid" 2>/dev/null || true
    wait "$proxy_pid" 2>/dev/null || true
  fi
  proxy_pid=""
  if [ -n "$stamp_pid" ]; then
    wait "$stamp_pid" 2>/dev/null || true # ends at the proxy's last line
  fi
  stamp_pid=""
  if [ -n "$prof_pid" ]; then
    wait "$prof_pid" 2>/dev/null || true # strace and perf end with the process they follow
  fi
  prof_pid=""
}
trap 'stop_proxy; bz shutdown >/dev/null 2>&1 || true; tf_cleanup' EXIT
now() { date +%s.%N; }
# stamp_lines LOG STAMPS: the proxy's output, line by line, to LOG and, with
# the time each line came, to STAMPS (first: a poll of LOG finds a line
# whose time is there already).
stamp_lines() {
  local line t
  while IFS= read -r line || [ -n "$line" ]; do
    t=${EPOCHREALTIME/,/.}
    printf '%s %s\n' "$t" "$line" >>"$2"
    printf '%s\n' "$line" >>"$1"
  done
}
# said_at PATTERN: when the proxy said the first line matching PATTERN (ERE).
said_at() { sed -n -E "s/^([0-9.]+) $1.*/\1/p" "$tf_tmp/proxy.stamps" | head -1; }
median() { python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }
# check_files DIR: N files of MB*1000000 bytes.
count_files() { find "$1" -name 'big*.dat' -type f -size "$((MB * 1000000))c" | wc -l; }
check_files() {
  local n
  n=$(count_files "$1")
  [ "$n" -eq "$N" ] || fail "$n of $N artifacts of $((MB * 1000000)) bytes in $1"
}
# The proxy's HTTP port (its /status), from its "listening on" line.
http_port() { sed -n 's|^topfetch proxy: listening on http://[^ ,]*:\([0-9]*\).*|\1|p' "$tf_tmp/proxy.log" | head -1; }
grpc_port() { sed -n 's|^topfetch proxy: listening on grpc://[^ ,]*:\([0-9]*\).*|\1|p' "$tf_tmp/proxy.log" | head -1; }
have_ports() { [ -n "$(http_port)" ] && { [ "$1" = http ] || [ -n "$(grpc_port)" ]; }; }

# bench_main FRONT LABEL_B DONE_CMD PROXY_FLAGS... -- BAZEL_FLAGS...
# FRONT: http or grpc (which front end Bazel uses; the proxy always listens
# on HTTP too, for /status). In PROXY_FLAGS and BAZEL_FLAGS, @OUT@ is the
# run's --output_dir, @EV@ a scratch folder for the run's events, @PROXY@
# the proxy URL Bazel uses. DONE_CMD is polled after Bazel exits.
bench_main() {
  local front=$1 label_b=$2 done_cmd=$3
  shift 3
  local pflags=() bflags=()
  while [ "$1" != -- ]; do pflags+=("$1"); shift; done
  shift
  bflags=("$@")
  up_start
  echo "populating the cache (every action runs once): $N x $MB MB in $UP_NAME..." >&2
  bz build --color=no --curses=no --remote_cache="$UP_URL" //pkg:all >"$tf_tmp/populate.log" 2>&1 ||
    { cat "$tf_tmp/populate.log"; fail "populating build failed"; }
  local a_t=() b_t=() b_bz=() b_tail=() a_req=() a_bytes=() b_req=() b_bytes=() rss=0 b_full=0 r l0 t0 t1 tb q b h url listen log_fd
  for r in $(seq 1 "$RUNS"); do
    # (a)
    bz clean >/dev/null 2>&1
    l0=$(up_mark)
    t0=$(now)
    bz build --color=no --curses=no --remote_cache="$UP_URL" --remote_download_toplevel //pkg:all \
      >"$tf_tmp/a$r.log" 2>&1 || { cat "$tf_tmp/a$r.log"; fail "run $r (a): bazel failed"; }
    t1=$(now)
    grep -q 'processes: .*remote cache hit' "$tf_tmp/a$r.log" || fail "run $r (a): not served from the cache"
    check_files "$(readlink -f "$ws/bazel-bin")/pkg"
    a_t+=("$(secs "$t0" "$t1")")
    read -r q b < <(up_served "$l0")
    a_req+=("$q") a_bytes+=("$b")
    a_kinds=$(cat "$tf_tmp/kinds")
    # (b)
    bz clean >/dev/null 2>&1
    OUT="$tf_tmp/out" EV="$tf_tmp/events"
    rm -rf "$OUT" "$EV"
    mkdir -p "$EV"
    : >"$tf_tmp/proxy.log"
    : >"$tf_tmp/proxy.stamps"
    listen=(--listen=127.0.0.1:0)
    [ "$front" = grpc ] && listen+=(--listen=grpc://127.0.0.1:0)
    exec {log_fd}> >(stamp_lines "$tf_tmp/proxy.log" "$tf_tmp/proxy.stamps")
    stamp_pid=$!
    "$TOPFETCH" proxy "${listen[@]}" --remote_cache="$UP_URL" --output_dir="$OUT" \
      "${pflags[@]//@EV@/$EV}" >&"$log_fd" 2>&1 &
    proxy_pid=$!
    exec {log_fd}>&-
    wait_for 30 "the proxy's listening line ($(cat "$tf_tmp/proxy.log"))" have_ports "$front"
    if [ "$front" = grpc ]; then url="grpc://127.0.0.1:$(grpc_port)"; else url="http://127.0.0.1:$(http_port)"; fi
    case "$PROFILE" in
      strace) strace -c -f -p "$proxy_pid" -o "$tf_tmp/strace.$r" 2>/dev/null & prof_pid=$! ;;
      perf) perf record -q -g -p "$proxy_pid" -o "$tf_tmp/perf.$r" >/dev/null 2>&1 & prof_pid=$! ;;
      '') ;;
      *) fail "PROFILE=$PROFILE: say strace or perf" ;;
    esac
    l0=$(up_mark)
    t0=$(now)
    local bf=("${bflags[@]//@PROXY@/$url}")
    bz build --color=no --curses=no --remote_download_minimal "${bf[@]//@EV@/$EV}" //pkg:all \
      >"$tf_tmp/b$r.log" 2>&1 || { cat "$tf_tmp/b$r.log" "$tf_tmp/proxy.log"; fail "run $r (b): bazel failed"; }
    tb=$(now)
    wait_for 600 "run $r (b): the proxy to have every artifact ($(cat "$tf_tmp/proxy.log"))" $done_cmd
    t1=$(said_at 'topfetch proxy: build .* ended')
    [ -n "$t1" ] || fail "run $r (b): no time for the proxy's line saying the build ended"
    grep -q 'processes: .*remote cache hit' "$tf_tmp/b$r.log" || fail "run $r (b): not served from the cache"
    # A run whose proxy gave up on a file is counted, not hidden: its time
    # is until the session ended, and the table says how many runs had all.
    h=$(count_files "$OUT")
    if [ "$h" -eq "$N" ]; then
      b_full=$((b_full + 1))
    else
      echo "run $r (b): $h of $N artifacts of $((MB * 1000000)) bytes in place" >&2
      grep -a '^topfetch: [0-9]* of [0-9]* files in place\|^topfetch: failed' "$tf_tmp/proxy.log" | head -n 3 | cut -c1-400 >&2 || true
    fi
    curl -s "http://127.0.0.1:$(http_port)/status" >"$tf_tmp/status.json" || true
    h=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$proxy_pid/status")
    [ "$h" -gt "$rss" ] && rss=$h
    stop_proxy
    [ -z "$LOGS" ] || cp "$tf_tmp/proxy.log" "$LOGS/proxy.$r.log"
    b_t+=("$(secs "$t0" "$t1")") b_bz+=("$(secs "$t0" "$tb")") b_tail+=("$(secs "$tb" "$t1")")
    read -r q b < <(up_served "$l0")
    b_req+=("$q") b_bytes+=("$b")
    b_kinds=$(cat "$tf_tmp/kinds")
    echo "run $r: (a) ${a_t[-1]} s, (b) ${b_t[-1]} s (bazel exited at ${b_bz[-1]} s)" >&2
  done

  [ -z "$LOGS" ] || cp "$(up_log)" "$LOGS/upstream.log"
  local am bm
  am=$(median "${a_t[@]}") bm=$(median "${b_t[@]}")
  mib() { python3 -c "print(f'{$(median "$@") / 1048576:.1f}')"; }
  printf '\n%d targets x %d MB, median of %d alternating runs, every action a cache hit, upstream %s\n' \
    "$N" "$MB" "$RUNS" "$UP_NAME"
  printf '| run | median s until artifacts on disk | runs with all %d | requests at %s | MiB served by %s | proxy peak RSS |\n|---|---|---|---|---|---|\n' \
    "$N" "$UP_NAME" "$UP_NAME"
  printf '| (a) bazel --remote_download_toplevel -> %s | %.2f | %d/%d | %.0f | %s | - |\n' \
    "$UP_NAME" "$am" "$RUNS" "$RUNS" "$(median "${a_req[@]}")" "$(mib "${a_bytes[@]}")"
  printf '| (b) %s (bazel exits: %.2f) | %.2f | %d/%d | %.0f | %s | %d MiB |\n' \
    "$label_b" "$(median "${b_bz[@]}")" "$bm" "$b_full" "$RUNS" "$(median "${b_req[@]}")" "$(mib "${b_bytes[@]}")" "$((rss / 1024))"
  [ "$b_full" -eq "$RUNS" ] || printf 'NOTE: in %d of %d (b) runs the proxy did not get every artifact (its time is until it gave up)\n' \
    "$((RUNS - b_full))" "$RUNS"
  printf 'ratio (b)/(a): %s   (a) runs: %s   (b) runs: %s\n' "$(python3 -c "print(f'{$bm / $am:.2f}')")" "${a_t[*]}" "${b_t[*]}"
  printf '(b) after Bazel exited until the proxy said the build ended: median %.2f s, runs: %s\n' \
    "$(median "${b_tail[@]}")" "${b_tail[*]}"
  printf 'requests at %s in the last run, by kind: (a) %s  (b) %s\n' "$UP_NAME" "$a_kinds" "$b_kinds"
  printf "the proxy's /status after its last run: %s\n" "$(tr -d '\n' <"$tf_tmp/status.json")"
  if [ -n "$PROFILE" ]; then
    for r in $(seq 1 "$RUNS"); do
      echo "--- $PROFILE of the proxy, run $r (b)"
      case "$PROFILE" in
        strace) head -n 25 "$tf_tmp/strace.$r" ;;
        perf) perf report -q -i "$tf_tmp/perf.$r" --no-children --sort dso,symbol 2>/dev/null | head -n 30 ;;
      esac
    done
  fi
}
