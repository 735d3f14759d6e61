#!/bin/sh
# cache_test.sh - the router's Redis response cache through the whole fleet (redis-server
# started here on a loopback port; router, one worker on stories260K, the HTTPS gateway):
#   - a greedy request is a miss, the same again a hit with the same answer, streamed or
#     not (a streamed hit streams the same text), x-citadel-cache says which;
#   - an explicit seed is cached, temperature > 0 without a seed is not (bypass);
#   - Cache-Control: no-cache answers afresh and stores; no-store neither looks nor stores;
#   - the hit/miss/bypass counters match;
#   - Redis stopped (SIGSTOP: slow, lookups time out after 50 ms) and killed mid-run:
#     every request is still answered, as bypass, and the failures are counted; Redis
#     back: hits again.
# Usage: tests/integration/cache_test.sh [BUILD_DIR]   (run from the repository root)
set -u
BUILD=${1:-${BUILD:-build}}
BIN=$BUILD/bin
MODEL=tests/data/models/stories260K.gguf
NAME=stories260K

for f in "$BIN/citadel-router" "$BIN/citadel-worker" "$BIN/citadel-gateway" "$BIN/citadel-sanitizer"; do
    if [ ! -x "$f" ]; then echo "cache_test: $f missing (run make)"; echo "0 passed, 1 failed"; exit 1; fi
done
if ! command -v redis-server >/dev/null; then
    echo "SKIP: redis-server not installed (make deps)"; echo "0 passed, 0 failed"; exit 0
fi

. "$(dirname "$0")/lib.sh"
fleet_begin 4409
RADMIN=$((BASE + 2)); RPORT=$((BASE + 3)); GPORT=$((BASE + 4)); GADMIN=$((BASE + 5)); WADMIN=$((BASE + 6))
URL=https://127.0.0.1:$GPORT
export CITADEL_HOME=$TMP/home

start_redis() {
    redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --maxmemory 16mb \
        --maxmemory-policy allkeys-lru --loglevel warning >>"$TMP/redis.log" 2>&1 &
    REDIS=$!; PIDS="$PIDS $REDIS"
}
start_redis
CITADEL_ROUTER_FRONTEND=$FE CITADEL_ROUTER_BACKEND=$BE CITADEL_ROUTER_ADMIN_PORT=$RADMIN \
    CITADEL_ROUTER_CACHE_REDIS=127.0.0.1:$RPORT "$BIN/citadel-router" >"$TMP/router.log" 2>&1 &
PIDS="$PIDS $!"
CITADEL_WORKER_ID=cache-w0 CITADEL_WORKER_MODEL=$MODEL CITADEL_WORKER_ROUTER=$BE CITADEL_WORKER_THREADS=1 \
    CITADEL_WORKER_ADMIN_PORT=$WADMIN "$BIN/citadel-worker" >"$TMP/worker.log" 2>&1 &
PIDS="$PIDS $!"
start_sanitizer   # the gateway sends every prompt through it (and fails closed without it)
CITADEL_GATEWAY_LISTEN=127.0.0.1 CITADEL_GATEWAY_SANITIZER=$SAN CITADEL_GATEWAY_PORT=$GPORT CITADEL_GATEWAY_ADMIN_PORT=$GADMIN \
    CITADEL_ROUTER_ENDPOINT=$FE "$BIN/citadel-gateway" >"$TMP/gateway.log" 2>&1 &
PIDS="$PIDS $!"

json() { python3 -c 'import json,sys; d=json.load(sys.stdin); v=eval(sys.argv[1]); sys.stdout.write(v if isinstance(v,str) else json.dumps(v))' "$1" 2>/dev/null; }
metric() { curl -s --max-time 5 "http://127.0.0.1:$RADMIN/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
KEYFILE=$CITADEL_HOME/keys/admin.key
# chat BODY [curl args]: POST /v1/chat/completions; status on stdout, headers in $TMP/h,
# body in $TMP/body.
chat() {
    b=$1; shift
    curl -sk --max-time 30 -D "$TMP/h" -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $(cat "$KEYFILE")" \
        -H 'Content-Type: application/json' --data-binary "$b" "$@" "$URL/v1/chat/completions"
}
cache_header() { tr -d '\r' <"$TMP/h" | awk 'tolower($1) == "x-citadel-cache:" { print $2 }'; }
text() { json 'd["choices"][0]["message"]["content"]' <"$TMP/body"; }
# The text of an SSE stream in $TMP/body.
sse_text() {
    python3 -c '
import json,sys
out=""
for line in open(sys.argv[1]):
    line=line.strip()
    if line.startswith("data: {"):
        d=json.loads(line[6:])
        for c in d.get("choices",[]): out+=c.get("delta",{}).get("content") or ""
sys.stdout.write(out)' "$TMP/body"
}
body() {   # body PROMPT [extra JSON members]
    printf '{"model":"%s","messages":[{"role":"user","content":"%s"}],"max_tokens":24%s}' "$NAME" "$1" "${2:-}"
}

i=0
while [ $i -lt 150 ]; do
    [ -s "$KEYFILE" ] && [ "$(chat "$(body warmup ',"temperature":0.5')")" = 200 ] && grep -q "Redis .* connected" "$TMP/router.log" && break
    sleep 0.1; i=$((i + 1))
done
if [ $i -lt 150 ]; then ok "fleet and Redis up"; else fail "fleet and Redis up"; tail -n 5 "$TMP"/*.log; exit 1; fi

BYP0=$(metric 'citadel_router_cache_requests_total{result="bypass"}')

# 1. Miss, then hit with the same answer; streamed hit.
G=$(body "Once upon a time" ',"temperature":0')
S1=$(chat "$G"); H1=$(cache_header); T1=$(text)
S2=$(chat "$G"); H2=$(cache_header); T2=$(text)
if [ "$S1$S2" = 200200 ] && [ "$H1" = miss ] && [ "$H2" = hit ] && [ -n "$T1" ] && [ "$T1" = "$T2" ]; then
    ok "greedy: miss then hit, same answer ('$T1')"
else fail "greedy: $S1 $H1 '$T1' / $S2 $H2 '$T2'"; fi
GS=$(body "Once upon a time" ',"temperature":0,"stream":true')
S3=$(chat "$GS"); H3=$(cache_header); T3=$(sse_text)
if [ "$S3" = 200 ] && [ "$H3" = hit ] && [ "$T3" = "$T1" ] && grep -q '^data: \[DONE\]' "$TMP/body"; then
    ok "streamed hit streams the same text"
else fail "streamed hit: $S3 $H3 '$T3'"; fi

# 2. Seeds are cached; sampling without a seed is not.
SD=$(body "The cat" ',"temperature":0.9,"seed":7')
chat "$SD" >/dev/null; H4=$(cache_header); T4=$(text)
chat "$SD" >/dev/null; H5=$(cache_header); T5=$(text)
chat "$(body "The cat" ',"temperature":0.9')" >/dev/null; H6=$(cache_header)
if [ "$H4" = miss ] && [ "$H5" = hit ] && [ "$T4" = "$T5" ] && [ "$H6" = bypass ]; then ok "seed: miss then hit; no seed at 0.9: bypass"
else fail "seeds: $H4 $H5 '$T4' '$T5' nonseeded=$H6"; fi

# 3. Cache-Control.
NC=$(body "A dog" ',"temperature":0')
chat "$NC" -H 'Cache-Control: no-store' >/dev/null; H7=$(cache_header)
chat "$NC" -H 'Cache-Control: no-cache' >/dev/null; H8=$(cache_header)
sleep 0.2
chat "$NC" >/dev/null; H9=$(cache_header)
chat "$NC" -H 'Cache-Control: no-cache' >/dev/null; H10=$(cache_header)
if [ "$H7" = bypass ] && [ "$H8" = bypass ] && [ "$H9" = hit ] && [ "$H10" = bypass ]; then
    ok "no-store: bypass, not stored; no-cache: bypass but stored (next is a hit); no-cache skips a stored hit"
else fail "Cache-Control: no-store=$H7 no-cache=$H8 then=$H9 no-cache again=$H10"; fi

HITS=$(metric 'citadel_router_cache_requests_total{result="hit"}')
MISSES=$(metric 'citadel_router_cache_requests_total{result="miss"}')
BYP=$(metric 'citadel_router_cache_requests_total{result="bypass"}')
BYP=$((BYP - ${BYP0:-0}))
if [ "$HITS" = 4 ] && [ "$MISSES" = 2 ] && [ "$BYP" = 4 ]; then ok "metrics: 4 hits, 2 misses, 4 bypasses"
else fail "metrics: hits=$HITS misses=$MISSES bypass=$BYP (want 4 2 4)"; fi

# 4. Redis slow (stopped: connected but silent), then killed, mid-run: every request answered.
run_load() {   # run_load N OUT: N greedy requests, statuses and cache headers to OUT
    : >"$2"; n=0
    while [ $n -lt "$1" ]; do
        s=$(chat "$(body "Load $((n % 5))" ',"temperature":0')"); echo "$s $(cache_header)" >>"$2"; n=$((n + 1))
    done
}
kill -STOP "$REDIS"
T0=$(date +%s%N)
run_load 10 "$TMP/slow"
MS=$(( ($(date +%s%N) - T0) / 1000000 ))
kill -CONT "$REDIS"
TIMEOUTS=$(metric 'citadel_router_cache_errors_total{reason="timeout"}')
if [ "$(grep -c '^200 bypass' "$TMP/slow")" = 10 ] && [ "${TIMEOUTS:-0}" -ge 1 ]; then
    ok "Redis stopped (silent): 10 of 10 answered uncached in $MS ms, $TIMEOUTS lookups timed out at 50 ms"
else fail "Redis stopped: $(sort "$TMP/slow" | uniq -c | tr '\n' ' ') timeouts=$TIMEOUTS"; fi
i=0; while ! grep -q "Redis .* connected" "$TMP/router.log" || [ "$(tail -n 1 "$TMP/router.log" | grep -c disconnected)" = 1 ]; do sleep 0.1; i=$((i+1)); [ $i -gt 50 ] && break; done
sleep 1.5
run_load 5 "$TMP/warm" &
LOADPID=$!
sleep 0.3
kill -9 "$REDIS"; wait "$REDIS" 2>/dev/null
wait $LOADPID
run_load 10 "$TMP/down"
DOWN=$(metric 'citadel_router_cache_errors_total{reason="down"}')
if [ "$(grep -c '^200 ' "$TMP/warm" "$TMP/down" | awk -F: '{ s += $2 } END { print s }')" = 15 ] && \
   [ "$(grep -c '^200 bypass' "$TMP/down")" = 10 ] && [ "${DOWN:-0}" -ge 1 ]; then
    ok "Redis killed mid-run: 15 of 15 answered, those after uncached (down counted: $DOWN)"
else fail "Redis killed: $(cat "$TMP/warm" "$TMP/down" | sort | uniq -c | tr '\n' ' ') down=$DOWN"; tail -n 5 "$TMP/router.log"; fi
start_redis
i=0; H=""
while [ $i -lt 40 ]; do
    chat "$(body "After" ',"temperature":0')" >/dev/null; H=$(cache_header)
    [ "$H" = hit ] && break
    sleep 0.25; i=$((i + 1))
done
if [ "$H" = hit ]; then ok "Redis back: the router reconnects and hits again"; else fail "Redis back: last header '$H'"; fi

[ $failed -eq 0 ] || { echo "--- logs"; tail -n 15 "$TMP"/*.log; }
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
