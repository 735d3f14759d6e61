#!/bin/sh
# bench_fleet.sh [BUILD_DIR] - serving speed of the default model (var/models/
# SmolLM2-135M-Instruct.Q4_1.gguf; skipped when absent: run make model), run by
# run_bench.sh (make bench). Every request: a chat prompt of about 128 tokens
# (tests/bench/story_prompt.txt under a system line that differs per request, so no
# prefix is shared), greedy, 128 generated tokens at most, streamed.
#   1. the worker alone: citadel-worker driven over ZeroMQ by bench_worker (which binds
#      where the router would be), 1, 8 and 32 concurrent streams;
#   2. the whole fleet over TLS: router + the same kind of worker + HTTPS gateway,
#      driven by openai_load.py (an OpenAI client that can point at any server), 1, 8
#      and 32 concurrent clients;
#   3. bench_fleet.py: the latency the gateway + sanitizer + router add to one request,
#      and what the sanitizer adds (p50/p99 as the gateway times it, from its log).
# Each of 1 and 2 runs REPS times (default 3), interleaved; the table gives medians.
# The worker: THREADS (2) engine threads, MAX_SEQS (32) requests in the batch,
# CTX (1024) positions each. Override with THREADS=, REPS=, MAX_SEQS=, CTX=, CLIENTS=,
# ROUNDS= (requests per stream); OVERHEAD=0 skips part 3.
set -u
BUILD=${1:-${BUILD:-build}}
BIN=$BUILD/bin
MODEL=${MODEL:-var/models/SmolLM2-135M-Instruct.Q4_1.gguf}
THREADS=${THREADS:-2}
REPS=${REPS:-3}
MAX_SEQS=${MAX_SEQS:-32}
CTX=${CTX:-1024}
CLIENTS=${CLIENTS:-1 8 32}
HERE=$(dirname "$0")
PROMPT=$HERE/story_prompt.txt
if [ ! -f "$MODEL" ]; then echo "bench_fleet: skipped, $MODEL absent (run make model)"; exit 0; fi
for f in "$BIN/citadel" "$BIN/citadel-router" "$BIN/citadel-worker" "$BIN/citadel-gateway" "$BIN/citadel-sanitizer" "$BUILD/bench/bench_worker"; do
    [ -x "$f" ] || { echo "bench_fleet: $f missing (run make)"; exit 1; }
done
NAME=$(basename "$MODEL" .gguf)

. "$(dirname "$0")/../integration/lib.sh"
fleet_begin 3541
GPORT=$((BASE + 5))
ALONE=tcp://127.0.0.1:$((BASE + 7))
export CITADEL_HOME=$TMP/home

# start_worker ID ROUTER_ENDPOINT ADMIN_PORT
start_worker() {
    CITADEL_WORKER_ID=$1 CITADEL_WORKER_MODEL=$MODEL CITADEL_WORKER_ROUTER=$2 CITADEL_WORKER_THREADS=$THREADS \
        CITADEL_WORKER_MAX_SEQS=$MAX_SEQS CITADEL_WORKER_CTX=$CTX CITADEL_WORKER_ADMIN_PORT=$3 \
        CITADEL_LOG_LEVEL=warn "$BIN/citadel-worker" >"$TMP/$1.log" 2>&1 &
    PIDS="$PIDS $!"
}
CITADEL_ROUTER_FRONTEND=$FE CITADEL_ROUTER_BACKEND=$BE CITADEL_ROUTER_ADMIN_PORT=$((BASE + 2)) \
    CITADEL_LOG_LEVEL=warn "$BIN/citadel-router" >"$TMP/router.log" 2>&1 &
PIDS="$PIDS $!"
start_worker bench-w0 "$BE" $((BASE + 3))
start_worker bench-alone "$ALONE" $((BASE + 4))
start_sanitizer
CITADEL_GATEWAY_LISTEN=127.0.0.1 CITADEL_GATEWAY_SANITIZER=$SAN CITADEL_GATEWAY_PORT=$GPORT CITADEL_GATEWAY_ADMIN_PORT=$((BASE + 6)) \
    CITADEL_ROUTER_ENDPOINT=$FE CITADEL_LOG_LEVEL=info "$BIN/citadel-gateway" >"$TMP/gateway.log" 2>&1 &
PIDS="$PIDS $!"

i=0
while [ $i -lt 300 ]; do
    if [ -s "$CITADEL_HOME/keys/admin.key" ] &&
       curl -sk --max-time 2 -H "Authorization: Bearer $(cat "$CITADEL_HOME/keys/admin.key")" \
            "https://127.0.0.1:$GPORT/v1/models" | grep -q "\"$NAME\""; then break; fi
    sleep 0.1; i=$((i + 1))
done
[ $i -lt 300 ] || { echo "bench_fleet: the fleet did not come up"; tail -n 20 "$TMP"/*.log; exit 1; }
KEY=$(cat "$CITADEL_HOME/keys/admin.key")

# alone N ROUNDS MAX_TOKENS / fleet N ROUNDS MAX_TOKENS: one run, key=value lines out.
alone() { "$BUILD/bench/bench_worker" "$ALONE" "$NAME" "$PROMPT" "$1" "$2" "$3"; }
fleet() {
    python3 "$HERE/openai_load.py" --url "https://127.0.0.1:$GPORT" --key "$KEY" --cacert "$CITADEL_HOME/tls/server.crt" \
        --model "$NAME" --prompt-file "$PROMPT" --clients "$1" --rounds "$2" --max-tokens "$3"
}
# Requests per stream: 2 (a second request finds the others mid-generation), 1 at 32
# streams (32 x 128 tokens is already a long run on 2 threads).
rounds() { if [ -n "${ROUNDS:-}" ]; then echo "$ROUNDS"; elif [ "$1" -ge 32 ]; then echo 1; else echo 2; fi; }

echo "model=$NAME worker_threads=$THREADS max_seqs=$MAX_SEQS ctx=$CTX max_tokens=128 reps=$REPS"
alone 1 1 8 >/dev/null && fleet 1 1 8 >/dev/null || { echo "bench_fleet: warm-up failed"; tail -n 20 "$TMP"/*.log; exit 1; }
rep=1
while [ $rep -le "$REPS" ]; do
    for c in $CLIENTS; do
        echo "== rep $rep: worker alone, $c stream(s)"
        alone "$c" "$(rounds "$c")" 128 | tee -a "$TMP/alone.txt" | grep -E 'tokens_per_s|ttft_p99|errors=[1-9]'
        echo "== rep $rep: fleet over TLS, $c client(s)"
        fleet "$c" "$(rounds "$c")" 128 | tee -a "$TMP/fleet.txt" | grep -E 'tokens_per_s|ttft_p99|errors=[1-9]'
    done
    rep=$((rep + 1))
done
echo "== medians of $REPS runs (model $NAME, worker $THREADS threads, max_seqs $MAX_SEQS)"
python3 "$HERE/bench_table.py" "worker alone (ZeroMQ)=$TMP/alone.txt" "fleet (HTTPS gateway + router)=$TMP/fleet.txt"

# RESULTS=DIR keeps the raw runs (DIR/alone.txt, DIR/fleet.txt, appended) for bench_table.py.
if [ -n "${RESULTS:-}" ]; then mkdir -p "$RESULTS"; cat "$TMP/alone.txt" >>"$RESULTS/alone.txt"; cat "$TMP/fleet.txt" >>"$RESULTS/fleet.txt"; fi
[ "${OVERHEAD:-1}" = 1 ] || exit 0
echo "== latency the gateway + router add (bench_fleet.py)"
python3 "$HERE/bench_fleet.py" 127.0.0.1 "$GPORT" "$KEY" "$CITADEL_HOME/tls/server.crt" \
    "$NAME" "$MODEL" "$BIN/citadel" "$THREADS" $((BASE + 3)) || { tail -n 20 "$TMP"/*.log; exit 1; }
# What the sanitizer added to each request, as the gateway times it (the prompt's
# answers, and after the router's last chunk the output's end): p50 and p99.
sed -n 's/.*sanitizer wait \([0-9.]*\) ms.*/\1/p' "$TMP/gateway.log" | sort -n |
    awk '{v[NR] = $1} END {if (NR) printf "sanitizer_wait_ms_p50=%s\nsanitizer_wait_ms_p99=%s\nsanitizer_wait_requests=%d\n", v[int((NR + 1) / 2)], v[int(NR * 0.99 + 0.999)], NR}'

