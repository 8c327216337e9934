# Helpers for the hostile tests. Source after tests/lib/harness.sh.
#   run_tf_rss ARGS...  as run_tf, and sets rss to topfetch's peak resident set (KiB)
#   sanitized           true when topfetch is built with AddressSanitizer (its memory is not comparable)
need /usr/bin/time
run_tf_rss() {
  set +e
  out=$( { /usr/bin/time -f 'maxrss=%M' "$TOPFETCH" "$@"; } 2>&1)
  rc=$?
  set -e
  rss=$(sed -n 's/.*maxrss=\([0-9]*\).*/\1/p' <<<"$out")
  [ -n "$rss" ] || fail "no peak RSS measured: $out"
}
sanitized() { ldd "$TOPFETCH" | grep -c libasan >/dev/null; }
