# Helpers for the credential tests. Source after tests/lib/harness.sh.
#   nginx_start_auth USER PASSWORD [LISTEN_EXTRA] [SERVER_EXTRA]
#       nginx_start with HTTP Basic auth (auth_basic) on the cache, the
#       htpasswd line made by `openssl passwd -apr1`
#   make_blobs N   N small blobs in the cache and a manifest of them in $tf_tmp/m.txt
#   b64 STRING     base64 of STRING on one line
need openssl

nginx_start_auth() { # USER PASSWORD [LISTEN_EXTRA] [SERVER_EXTRA]
  local hash
  hash=$(openssl passwd -apr1 "$2")
  printf '%s:%s\n' "$1" "$hash" >"$tf_tmp/htpasswd"
  chmod 644 "$tf_tmp/htpasswd"
  nginx_start "auth_basic \"topfetch test cache\"; auth_basic_user_file $tf_tmp/htpasswd;" "${3:-}" "${4:-}"
}

make_blobs() { # N
  local i h
  : >"$tf_tmp/m.txt"
  for i in $(seq 1 "$1"); do
    h=$(printf 'blob number %s\n' "$i" | cas_put_stdin)
    printf '%s %s f/%s.txt\n' "$h" "$(printf 'blob number %s\n' "$i" | wc -c)" "$i" >>"$tf_tmp/m.txt"
  done
}

b64() { printf '%s' "$1" | base64 -w0; }
