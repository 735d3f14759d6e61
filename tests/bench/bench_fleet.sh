#!/bin/sh
# bench_fleet.sh [BUILD_DIR] - end-to-end speed of the fleet, run by run_bench.sh (make
# bench): router + 1 worker (THREADS, default 2) + HTTPS gateway on loopback with the
# default model (var/models/SmolLM2-135M-Instruct.Q4_1.gguf; skipped when absent: run
# make model). bench_fleet.py sends greedy chat requests of max_tokens 128 over TLS and
# prints key=value lines: tokens/s with 1 and 8 concurrent clients, time to first token
# p50/p99, and the latency the gateway + router add over `citadel generate`.
set -u
BUILD=${1:-${BUILD:-build}}
BIN=$BUILD/bin
MODEL=${MODEL:-var/models/SmolLM2-135M-Instruct.Q4_1.gguf}
THREADS=${THREADS:-2}
HERE=$(dirname "$0")
if [ ! -f "$MODEL" ]; then echo "bench_fleet: skipped, $MODEL absent (run make model)"; exit 0; fi
for f in "$BIN/citadel" "$BIN/citadel-router" "$BIN/citadel-worker" "$BIN/citadel-gateway"; do
    [ -x "$f" ] || { echo "bench_fleet: $f missing (run make)"; exit 1; }
done
NAME=$(basename "$MODEL" .gguf)

. "$(dirname "$0")/../integration/lib.sh"
fleet_begin 3541
GPORT=$((BASE + 5))
export CITADEL_HOME=$TMP/home

CITADEL_ROUTER_FRONTEND=$FE CITADEL_ROUTER_BACKEND=$BE CITADEL_ROUTER_ADMIN_PORT=$((BASE + 2)) \
    "$BIN/citadel-router" >"$TMP/router.log" 2>&1 &
PIDS="$PIDS $!"
CITADEL_WORKER_ID=bench-w0 CITADEL_WORKER_MODEL=$MODEL CITADEL_WORKER_ROUTER=$BE CITADEL_WORKER_THREADS=$THREADS \
    CITADEL_WORKER_ADMIN_PORT=$((BASE + 3)) "$BIN/citadel-worker" >"$TMP/worker.log" 2>&1 &
PIDS="$PIDS $!"
CITADEL_GATEWAY_LISTEN=127.0.0.1 CITADEL_GATEWAY_PORT=$GPORT CITADEL_GATEWAY_ADMIN_PORT=$((BASE + 6)) \
    CITADEL_ROUTER_ENDPOINT=$FE CITADEL_LOG_LEVEL=warn "$BIN/citadel-gateway" >"$TMP/gateway.log" 2>&1 &
PIDS="$PIDS $!"

i=0
while [ $i -lt 300 ]; do
    if [ -s "$CITADEL_HOME/keys/admin.key" ] &&
       curl -sk --max-time 2 -H "Authorization: Bearer $(cat "$CITADEL_HOME/keys/admin.key")" \
            "https://127.0.0.1:$GPORT/v1/models" | grep -q "\"$NAME\""; then break; fi
    sleep 0.1; i=$((i + 1))
done
[ $i -lt 300 ] || { echo "bench_fleet: the fleet did not come up"; tail -n 20 "$TMP"/*.log; exit 1; }

echo "model=$NAME"
echo "worker_threads=$THREADS"
echo "max_tokens=128"
python3 "$HERE/bench_fleet.py" 127.0.0.1 "$GPORT" "$(cat "$CITADEL_HOME/keys/admin.key")" "$CITADEL_HOME/tls/server.crt" \
    "$NAME" "$MODEL" "$BIN/citadel" "$THREADS" $((BASE + 3)) || { tail -n 20 "$TMP"/*.log; exit 1; }
