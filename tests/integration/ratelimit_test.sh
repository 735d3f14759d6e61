#!/bin/sh
# ratelimit_test.sh - rate limits shared by two gateway processes through one Redis
# (redis-server started here on a loopback port), in front of a router and a worker on
# stories260K:
#   - a key with rpm 6, requests alternating between the two gateways: 6 admitted in
#     all (not 6 each), the others 429 with Retry-After, x-ratelimit-* headers and an
#     OpenAI error body (code rate_limit_exceeded);
#   - a key with tpm 20: tokens used through one gateway refuse the next request on the
#     other (429, type "tokens");
#   - Redis killed mid-run: requests keep being served with no pause, limits go on
#     locally (each replica allows rpm / replicas), the gateways log the change;
#     Redis back: both reconnect and say so.
# The counting parts keep clear of the end of a minute (the window) by waiting for the
# next one when less than 10 s are left (each part takes a few seconds).
# Usage: tests/integration/ratelimit_test.sh [BUILD_DIR]   (run from the repository root)
set -u
BUILD=${1:-${BUILD:-build}}
BIN=$BUILD/bin
MODEL=tests/data/models/stories260K.gguf
NAME=stories260K

for f in "$BIN/citadel" "$BIN/citadel-router" "$BIN/citadel-worker" "$BIN/citadel-gateway" "$BIN/citadel-sanitizer"; do
    if [ ! -x "$f" ]; then echo "ratelimit_test: $f missing (run make)"; echo "0 passed, 1 failed"; exit 1; fi
done
if ! command -v redis-server >/dev/null; then
    echo "SKIP: redis-server not installed (make deps)"; echo "0 passed, 0 failed"; exit 0
fi

. "$(dirname "$0")/lib.sh"
fleet_begin 3371
RPORT=$((BASE + 2))
GA=$((BASE + 5)); GB=$((BASE + 6))
export CITADEL_HOME=$TMP/home

start_redis() {
    redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning >>"$TMP/redis.log" 2>&1 &
    REDIS=$!; PIDS="$PIDS $REDIS"
}
start_redis
CITADEL_ROUTER_FRONTEND=$FE CITADEL_ROUTER_BACKEND=$BE CITADEL_ROUTER_ADMIN_PORT=$((BASE + 3)) \
    "$BIN/citadel-router" >"$TMP/router.log" 2>&1 &
PIDS="$PIDS $!"
CITADEL_WORKER_ID=rl-w0 CITADEL_WORKER_MODEL=$MODEL CITADEL_WORKER_ROUTER=$BE CITADEL_WORKER_THREADS=1 \
    CITADEL_WORKER_ADMIN_PORT=$((BASE + 4)) "$BIN/citadel-worker" >"$TMP/worker.log" 2>&1 &
PIDS="$PIDS $!"
start_sanitizer
for g in A B; do
    eval "port=\$G$g"
    CITADEL_GATEWAY_LISTEN=127.0.0.1 CITADEL_GATEWAY_SANITIZER=$SAN CITADEL_GATEWAY_PORT=$port CITADEL_GATEWAY_ADMIN_PORT=0 \
        CITADEL_ROUTER_ENDPOINT=$FE CITADEL_GATEWAY_REDIS=127.0.0.1:$RPORT CITADEL_GATEWAY_REPLICAS=2 \
        "$BIN/citadel-gateway" >"$TMP/gateway$g.log" 2>&1 &
    PIDS="$PIDS $!"
done

json() { python3 -c 'import json,sys; d=json.load(sys.stdin); v=eval(sys.argv[1]); sys.stdout.write(v if isinstance(v,str) else json.dumps(v))' "$1" 2>/dev/null; }
BODY='{"model":"'$NAME'","prompt":"Once","max_tokens":1,"temperature":0}'
# gen PORT KEY [BODY]: POST /v1/completions; status on stdout, headers in $TMP/h, body in $TMP/body.
gen() {
    curl -sk --max-time 30 -D "$TMP/h" -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $2" \
        -H 'Content-Type: application/json' --data-binary "${3:-$BODY}" "https://127.0.0.1:$1/v1/completions"
}
header() { awk -v n="$1" 'BEGIN { IGNORECASE = 1 } tolower($1) == tolower(n) ":" { sub(/\r$/, "", $2); print $2 }' "$TMP/h"; }
# Waits for the next minute when fewer than 10 s of this one are left.
fresh_window() {
    s=$(date +%S); s=${s#0}
    [ "$s" -gt 50 ] && sleep $((61 - s))
    return 0
}

i=0; MODELS=""
while [ $i -lt 150 ]; do
    if [ -s "$CITADEL_HOME/keys/admin.key" ]; then
        ADMIN=$(cat "$CITADEL_HOME/keys/admin.key")
        MA=$(curl -sk --max-time 2 -H "Authorization: Bearer $ADMIN" "https://127.0.0.1:$GA/v1/models" | json '",".join(m["id"] for m in d["data"])')
        MB=$(curl -sk --max-time 2 -H "Authorization: Bearer $ADMIN" "https://127.0.0.1:$GB/v1/models" | json '",".join(m["id"] for m in d["data"])')
        [ "$MA" = "$NAME" ] && [ "$MB" = "$NAME" ] && grep -q 'rate limits are shared' "$TMP/gatewayA.log" &&
            grep -q 'rate limits are shared' "$TMP/gatewayB.log" && break
    fi
    sleep 0.1; i=$((i + 1))
done
if [ "$MA" != "$NAME" ] || [ "$MB" != "$NAME" ]; then fail "fleet up: models '$MA' '$MB'"; tail -n 20 "$TMP"/*.log; echo "$passed passed, $failed failed"; exit 1; fi
ok "two gateways on one Redis, both connected"

# rpm 6 shared: 12 requests alternating A, B.
K=$("$BIN/citadel" keys create --role user --rpm 6 | tail -n 1)
fresh_window
admitted=0; limited=0; badhdr=""; REM=""
for n in 1 2 3 4 5 6 7 8 9 10 11 12; do
    if [ $((n % 2)) = 1 ]; then port=$GA; else port=$GB; fi
    st=$(gen $port "$K")
    if [ "$st" = 200 ]; then
        admitted=$((admitted + 1)); REM="$REM$(header x-ratelimit-remaining-requests)"
        [ "$(header x-ratelimit-limit-requests)" = 6 ] || badhdr="$badhdr limit@$n"
    elif [ "$st" = 429 ]; then
        limited=$((limited + 1))
        RA=$(header retry-after)
        [ -n "$RA" ] && [ "$RA" -ge 1 ] && [ "$RA" -le 60 ] || badhdr="$badhdr retry-after@$n=$RA"
        [ "$(header x-ratelimit-remaining-requests)" = 0 ] || badhdr="$badhdr remaining@$n"
        [ "$(json 'd["error"]["code"]' <"$TMP/body")" = rate_limit_exceeded ] || badhdr="$badhdr body@$n"
    else badhdr="$badhdr status$st@$n"; fi
done
if [ $admitted = 6 ] && [ $limited = 6 ] && [ -z "$badhdr" ] && [ "$REM" = 543210 ]; then
    ok "rpm 6 over two gateways: 6 admitted in all (remaining 5..0), 6 refused with 429, Retry-After, x-ratelimit-*"
else fail "rpm shared: admitted $admitted, limited $limited, remaining '$REM', problems:$badhdr"; fi

# tpm 20: a generation of up to 24 tokens through A, then B refuses for tokens.
K=$("$BIN/citadel" keys create --role user --tpm 20 | tail -n 1)
LONG='{"model":"'$NAME'","prompt":"Once upon a time","max_tokens":24,"temperature":0}'
ST1=$(gen $GA "$K" "$LONG"); LT=$(header x-ratelimit-limit-tokens)
USED=$(json 'str(d["usage"]["total_tokens"])' <"$TMP/body")
sleep 0.3
ST2=$(gen $GB "$K")
TYPE=$(json 'd["error"]["type"]' <"$TMP/body")
if [ "$ST1" = 200 ] && [ "$LT" = 20 ] && [ "${USED:-0}" -ge 20 ] && [ "$ST2" = 429 ] && [ "$TYPE" = tokens ]; then
    ok "tpm 20: $USED tokens used through gateway A, gateway B answers 429 (type tokens)"
else fail "tpm shared: $ST1 limit '$LT' used '$USED', then $ST2 '$TYPE'"; fi

# Redis killed in the middle of a stream of requests: none fails, none waits long.
K=$("$BIN/citadel" keys create --role user --rpm 1000 | tail -n 1)
fails=0; slow=0
for n in $(seq 1 16); do
    [ $n = 6 ] && kill -9 "$REDIS"
    T0=$(date +%s%N)
    st=$(gen $GA "$K"); [ "$st" = 200 ] || fails=$((fails + 1))
    [ $(( ($(date +%s%N) - T0) / 1000000 )) -lt 3000 ] || slow=$((slow + 1))
done
sleep 0.5
if [ $fails = 0 ] && [ $slow = 0 ] && grep -q 'rate limits are local' "$TMP/gatewayA.log" && grep -q 'rate limits are local' "$TMP/gatewayB.log"; then
    ok "Redis killed mid-run: 16 of 16 requests served, none slower than 3 s; both gateways log 'rate limits are local'"
else fail "Redis killed: $fails failed, $slow slow"; fi

# Local limits while Redis is down: rpm 4 over 2 replicas is 2 per gateway.
K=$("$BIN/citadel" keys create --role user --rpm 4 | tail -n 1)
fresh_window
S="$(gen $GA "$K") $(gen $GA "$K") $(gen $GA "$K") $(gen $GB "$K") $(gen $GB "$K") $(gen $GB "$K")"
LIM=$(header x-ratelimit-limit-requests)
if [ "$S" = "200 200 429 200 200 429" ] && [ "$LIM" = 2 ]; then ok "Redis down: rpm 4 becomes 2 per gateway (statuses $S, limit header $LIM)"
else fail "local limits: $S (limit header '$LIM')"; fi

# Redis back: both gateways reconnect (retry every second).
start_redis
i=0
while [ $i -lt 50 ]; do
    [ "$(grep -c 'rate limits are shared' "$TMP/gatewayA.log")" -ge 2 ] &&
        [ "$(grep -c 'rate limits are shared' "$TMP/gatewayB.log")" -ge 2 ] && break
    sleep 0.1; i=$((i + 1))
done
K=$("$BIN/citadel" keys create --role user --rpm 3 | tail -n 1)
fresh_window
S="$(gen $GA "$K") $(gen $GB "$K") $(gen $GA "$K") $(gen $GB "$K")"
if [ $i -lt 50 ] && [ "$S" = "200 200 200 429" ]; then ok "Redis back: both gateways reconnect and share again (rpm 3 over both: $S)"
else fail "Redis back: reconnected after $i tries, statuses $S"; fi

[ $failed -eq 0 ] || { echo "--- logs"; tail -n 20 "$TMP"/*.log; }
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
