#!/usr/bin/env bash
# The proxy's GET /status (JSON) and GET /metrics (Prometheus text) on its
# HTTP listener: version, upstream without credentials, builds served,
# counters that follow the cache requests (and not the status requests);
# each build's --summary_json.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
need python3
fx="${TF_FIXTURES:?}"
src="$fx/run2_minimal_hits/bep.bin"
old=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["started"]["uuid"])' \
  "$fx/run2_minimal_hits/bep.json")
nginx_start
tar -xzf "$fx/cache.tar.gz" -C "$NGINX_CACHE"
chmod -R a+rX "$NGINX_CACHE"
bep="$tf_tmp/bep.bin"
upstream="http://tfuser:s3cr3t-pw@127.0.0.1:$NGINX_PORT"
proxy_start p.log --remote_cache="$upstream" --output_dir="$tf_tmp/out" --bep_follow="$bep" \
  --summary_json="$tf_tmp/build.json" --noremote_validate_outputs

status() { # -> $tf_tmp/status.json, checked JSON
  req GET "$PROXY_URL/status"
  [ "$code" = 200 ] || fail "GET /status: HTTP $code: $body"
  cp "$tf_tmp/body" "$tf_tmp/status.json"
  python3 -m json.tool "$tf_tmp/status.json" >/dev/null || fail "/status is not JSON: $body"
}
field() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"j": j}))' "$tf_tmp/status.json" "$1"; }

status
[ "$(field 'j["builds_served"]')" = 0 ] || fail "builds served before any build: $body"
[ "$(field 'j["counters"]["requests"]')" = 0 ] || fail "requests before any: $body"
[ "$(field 'j["version"]')" = "$("$TOPFETCH" version | cut -d' ' -f2)" ] || fail "version: $body"
[ "$(field 'j["upstream"]')" = "http://127.0.0.1:$NGINX_PORT" ] || fail "upstream: $body"
case "$body" in *s3cr3t*|*tfuser*) fail "/status shows the upstream's credentials: $body" ;; esac

# Three cache requests: an AC miss, a CAS miss, a CAS hit.
miss=$(echo "no such thing" | sha256sum | cut -c1-64)
req GET "$PROXY_URL/ac/$miss"
[ "$code" = 404 ] || fail "AC miss: HTTP $code"
req GET "$PROXY_URL/cas/$miss"
[ "$code" = 404 ] || fail "CAS miss: HTTP $code"
some=$(basename "$(ls "$NGINX_CACHE/cas" | head -n 1)")
req GET "$PROXY_URL/cas/$some"
[ "$code" = 200 ] || fail "CAS hit: HTTP $code"

# One build of the followed BEP (the fixture under a new uuid).
u1=11111111-1111-4111-8111-111111111111
python3 -c 'import sys; open(sys.argv[4], "wb").write(open(sys.argv[1], "rb").read().replace(sys.argv[2].encode(), sys.argv[3].encode()))' \
  "$src" "$old" "$u1" "$tf_tmp/b1.bin"
mv "$tf_tmp/b1.bin" "$bep"
wait_line "$PROXY_LOG" "^topfetch proxy: build $u1 ended" 60

status
[ "$(field 'j["builds_served"]')" = 1 ] || fail "builds served after one build: $body"
[ "$(field 'j["counters"]["requests"]')" = 3 ] || fail "requests after three (status requests not counted): $body"
[ "$(field 'j["counters"]["ac_misses"]')" = 1 ] || fail "AC misses: $body"

req GET "$PROXY_URL/metrics"
[ "$code" = 200 ] || fail "GET /metrics: HTTP $code"
python3 - "$tf_tmp/body" "$tf_tmp/status.json" <<'PY' || fail "/metrics: $body"
import json, re, sys
text = open(sys.argv[1]).read()
status = json.load(open(sys.argv[2]))
samples, types, helps = {}, {}, set()
for line in text.splitlines():
    if not line:
        continue
    m = re.fullmatch(r'# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+', line)
    if m:
        helps.add(m.group(1)); continue
    m = re.fullmatch(r'# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge)', line)
    if m:
        types[m.group(1)] = m.group(2); continue
    m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-z_]+="[^"\\]*"(,[a-z_]+="[^"\\]*")*\})? ([0-9.eE+-]+)', line)
    assert m, 'not a sample line: %r' % line
    samples[m.group(1)] = float(m.group(4))
for name in samples:
    assert name in types and name in helps, 'no TYPE or HELP for ' + name
    assert types[name] != 'counter' or name.endswith('_total'), name
assert samples['topfetch_proxy_builds_served_total'] == 1, samples
assert samples['topfetch_proxy_requests_total'] == 3, samples
assert samples['topfetch_proxy_ac_misses_total'] == 1, samples
assert samples['topfetch_build_info'] == 1 and ('version="%s"' % status['version']) in text
assert samples['topfetch_proxy_uptime_seconds'] > 0
for k, v in status['counters'].items():
    assert any(v == s for n, s in samples.items() if n.startswith('topfetch_proxy_')), k
PY

# The build's summary as JSON: its figures and the proxy's counters.
wait_file "$tf_tmp/build.json" 10
python3 - "$tf_tmp/build.json" <<'PY' || fail "build JSON: $(cat "$tf_tmp/build.json")"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["command"] == "proxy" and j["proxy"]["requests"] == 3, j
assert j["files"]["wanted"] == j["files"]["in_place"] + j["files"]["not_in_place"], j
assert j["targets"]["completed"] == 7, j
PY
# Another method on /status is no status request.
req POST "$PROXY_URL/status"
[ "$code" = 400 ] || [ "$code" = 405 ] || fail "POST /status: HTTP $code"
proxy_stop
echo "ok"
