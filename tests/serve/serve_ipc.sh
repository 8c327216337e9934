#!/usr/bin/env bash
# Who may talk to the service over ipc://: the socket's folder must be ours
# alone. A missing folder is created with mode 0700; an existing folder that
# others can read, write or enter, a symlink, or a folder whose parent is
# missing is refused with exit 2 and a message saying what to do, and no
# socket is created. A socket left by a killed service does not block the
# next start.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/serve/lib.sh"
outdir="$tf_tmp/out"
cache="$tf_tmp/cache" # a --disk_cache folder: no network needed here
mkdir -p "$cache/ac" "$cache/cas"

# start_serve DIR: starts the service on ipc://DIR/serve.sock.
start_serve() {
  serve_start "$tf_tmp/serve.log" --listen="ipc://$1/serve.sock" --remote_cache="$cache" --output_dir="$outdir"
}

# ---- a missing folder is created 0700, and the socket works --------------------------
umask 022
start_serve "$tf_tmp/private"
[ "$(stat -c %a "$tf_tmp/private")" = 700 ] || fail "created folder has mode $(stat -c %a "$tf_tmp/private")"
[ -S "$tf_tmp/private/serve.sock" ] || fail "no socket in the created folder"
probe "ipc://$tf_tmp/private/serve.sock" status
assert_contains "$probe" "ok build=0" "Status over ipc"
# A killed service leaves its socket file; the next one starts anyway.
serve_kill
[ -S "$tf_tmp/private/serve.sock" ] || fail "kill -9 removed the socket (the next check means nothing)"
start_serve "$tf_tmp/private"
probe "ipc://$tf_tmp/private/serve.sock" status
assert_contains "$probe" "ok build=0" "Status after a restart over a stale socket"
serve_stop TERM 0

# ---- existing folders others can use are refused ------------------------------------------
for mode in 777 755 750 710 701; do
  d="$tf_tmp/shared$mode"
  mkdir "$d"
  chmod "$mode" "$d"
  serve_once --listen="ipc://$d/serve.sock" --remote_cache="$cache" --output_dir="$outdir"
  [ "$rc" -eq 2 ] || fail "folder with mode $mode: exit $rc ($out)"
  assert_contains "$out" "refusing --listen ipc://$d/serve.sock: folder $d can be used by others (mode $(printf %04o 0$mode))"
  assert_contains "$out" "chmod 700 $d"
  [ ! -e "$d/serve.sock" ] || fail "a socket was created in the mode $mode folder"
done
# A shared folder like /tmp: the advice is a folder of its own, not chmod.
d="$tf_tmp/sticky"
mkdir "$d"
chmod 1777 "$d"
serve_once --listen="ipc://$d/serve.sock" --remote_cache="$cache" --output_dir="$outdir"
[ "$rc" -eq 2 ] || fail "sticky shared folder: exit $rc ($out)"
assert_contains "$out" "folder $d is shared (mode 1777)"
assert_contains "$out" "e.g. ipc://$d/topfetch-$(id -u)/serve.sock, which topfetch creates with mode 0700"
[ ! -e "$d/serve.sock" ] || fail "a socket was created in the shared folder"
# An existing private folder is fine.
mkdir -m 700 "$tf_tmp/mine"
start_serve "$tf_tmp/mine"
serve_stop INT 0

# ---- a symlink, a missing parent ------------------------------------------------------------
ln -s "$tf_tmp/mine" "$tf_tmp/link"
serve_once --listen="ipc://$tf_tmp/link/serve.sock" --remote_cache="$cache" --output_dir="$outdir"
[ "$rc" -eq 2 ] || fail "symlinked folder: exit $rc"
assert_contains "$out" "folder $tf_tmp/link is a symlink"
serve_once --listen="ipc://$tf_tmp/no/such/serve.sock" --remote_cache="$cache" --output_dir="$outdir"
[ "$rc" -eq 2 ] || fail "missing parent: exit $rc"
assert_contains "$out" "cannot create folder $tf_tmp/no/such: No such file or directory (its parent must exist)"

# ---- a folder of another user ---------------------------------------------------------------
if [ "$(id -u)" -eq 0 ]; then
  mkdir -m 700 "$tf_tmp/theirs"
  chown nobody "$tf_tmp/theirs"
  serve_once --listen="ipc://$tf_tmp/theirs/serve.sock" --remote_cache="$cache" --output_dir="$outdir"
  [ "$rc" -eq 2 ] || fail "folder of another user: exit $rc"
  assert_contains "$out" "folder $tf_tmp/theirs belongs to uid $(id -u nobody), not to this user (uid 0)"
fi
echo "serve_ipc: ok"
