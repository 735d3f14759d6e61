#!/bin/sh
# batching_test.sh - continuous batching through the fleet: the router and ONE worker on
# loopback, driven by fleet_client, on the tiny stories260K model:
#   - 4 greedy requests with different prompts, sent while the worker is SIGSTOPped so
#     that they reach it together, run in one batch (the worker's batch_size histogram
#     saw steps with more than 2 requests) and each returns exactly the text
#     `citadel generate --temperature 0` gives for its prompt (batch invariance);
#   - the same 4 sent at once on a running worker (they join whenever they arrive),
#     this time next to a 5th request cancelled after 2 chunks: same texts, and the
#     cancelled one says so;
#   - a 9th request beyond CITADEL_WORKER_MAX_SEQS=2 waits in the queue and still gets
#     its text;
#   - heartbeats keep flowing while the batch is busy (the worker is never expired);
#   - one greedy request in a batch of 16 others (17 at once on a worker with
#     CITADEL_WORKER_MAX_SEQS=17, a 2 MiB paged KV cache) gives citadel generate's text,
#     as do the 16; afterwards the KV metrics show every block given back, and a
#     repeated long prompt is served from the prefix cache (hit tokens counted).
# Ports are picked from the pid so that parallel runs rarely collide.
# Usage: tests/integration/batching_test.sh [BUILD_DIR]   (run from the repository root)
set -u
BUILD=${1:-${BUILD:-build}}
BIN=$BUILD/bin
CLIENT=$BUILD/tests/integration/fleet_client
MODEL=tests/data/models/stories260K.gguf
NAME=stories260K
MAXTOK=48

for f in "$BIN/citadel" "$BIN/citadel-router" "$BIN/citadel-worker" "$CLIENT"; do
    if [ ! -x "$f" ]; then echo "batching_test: $f missing (run make)"; echo "0 passed, 1 failed"; exit 1; fi
done

. "$(dirname "$0")/lib.sh"
fleet_begin 1777
RADMIN=$((BASE + 2))
WADMIN=$((BASE + 3))

CITADEL_ROUTER_FRONTEND=$FE CITADEL_ROUTER_BACKEND=$BE CITADEL_ROUTER_ADMIN_PORT=$RADMIN \
    CITADEL_ROUTER_DRAIN_SECONDS=5 "$BIN/citadel-router" >"$TMP/router.log" 2>&1 &
ROUTER=$!; PIDS="$PIDS $ROUTER"

# start_worker MAX_SEQS: the one worker, its pid in W.
start_worker() {
    CITADEL_WORKER_ID=batch-w0 CITADEL_WORKER_MODEL=$MODEL CITADEL_WORKER_ROUTER=$BE \
        CITADEL_WORKER_THREADS=1 CITADEL_WORKER_ADMIN_PORT=$WADMIN CITADEL_WORKER_MAX_SEQS=$1 \
        CITADEL_WORKER_DRAIN_SECONDS=5 "$BIN/citadel-worker" >>"$TMP/worker.log" 2>&1 &
    W=$!; PIDS="$PIDS $W"
}

rmetric() { curl -s "http://127.0.0.1:$RADMIN/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
wmetric() { curl -s "http://127.0.0.1:$WADMIN/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

# wait_workers N: until the router counts N live workers (10 s at most).
wait_workers() {
    i=0
    while [ "$(rmetric citadel_router_workers_alive)" != "$1" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ "$(rmetric citadel_router_workers_alive)" = "$1" ]
}

client() { "$CLIENT" "$FE" "$@"; }

set -- "Once upon a time" "Lily and Tom went to the park" "The little dog" "One day, a girl named Sue"
N=0
for p in "$@"; do
    N=$((N + 1))
    printf '%s' "$p" >"$TMP/prompt$N"
    "$BIN/citadel" generate --model "$MODEL" --prompt "$p" --temperature 0 --max-tokens $MAXTOK --json \
        | python3 -c 'import json,sys; sys.stdout.write(json.load(sys.stdin)["text"])' >"$TMP/expected$N"
done
if [ "$(cat "$TMP/expected1")" != "$(cat "$TMP/expected2")" ]; then ok "4 prompts, 4 reference texts from citadel generate"
else fail "the reference texts should differ"; fi

# run_four TAG: the 4 prompts at once, in the background; their pids in CPIDS.
run_four() {
    CPIDS=""
    for k in 1 2 3 4; do
        client "$NAME" "$(cat "$TMP/prompt$k")" --max-tokens $MAXTOK --id "$1-$k" --timeout 20 \
            >"$TMP/$1.got$k" 2>"$TMP/$1.sum$k" &
        CPIDS="$CPIDS $!"
    done
}

# check_four TAG: every client succeeded with its prompt's reference text.
check_four() {
    bad=""
    k=0
    for p in $CPIDS; do
        k=$((k + 1))
        wait "$p" || bad="$bad $k(rc)"
        cmp -s "$TMP/expected$k" "$TMP/$1.got$k" || bad="$bad $k(text: '$(cat "$TMP/$1.got$k")')"
    done
    [ -z "$bad" ]
}

start_worker 8
if wait_workers 1; then ok "router sees the worker"; else fail "router sees the worker"; cat "$TMP"/*.log; exit 1; fi

# 1. All 4 reach the worker together: one batch of 4, same texts as alone.
kill -STOP "$W"
run_four together
sleep 0.7
kill -CONT "$W"
if check_four together; then ok "4 greedy requests in one batch give citadel generate's texts"
else fail "4 in one batch:$bad"; fi
COUNT=$(wmetric citadel_worker_batch_size_count)
LE2=$(wmetric 'citadel_worker_batch_size_bucket{le="2"}')
LE4=$(wmetric 'citadel_worker_batch_size_bucket{le="4"}')
if [ "${COUNT:-0}" -gt 0 ] && [ "${LE2:-0}" -lt "$COUNT" ] && [ "${LE4:-0}" -eq "$COUNT" ]; then
    ok "the requests overlapped: $((COUNT - LE2)) of $COUNT steps ran 3 or 4 requests"
else fail "no overlap seen: batch_size count=$COUNT le2=$LE2 le4=$LE4"; fi

# 2. At once on a running worker, next to one that is cancelled mid-batch.
run_four live
client "$NAME" "$(cat "$TMP/prompt1")" --max-tokens 400 --cancel-after 2 --id live-cancel --timeout 20 \
    >/dev/null 2>"$TMP/live.cancel" &
CC=$!
if check_four live; then ok "4 concurrent greedy requests give citadel generate's texts"
else fail "4 concurrent:$bad"; fi
wait $CC
case "$(cat "$TMP/live.cancel")" in
    *finish=cancelled*) ok "a request cancelled inside the batch ends cancelled ($(cat "$TMP/live.cancel"))" ;;
    *) fail "cancel inside the batch: $(cat "$TMP/live.cancel")" ;;
esac
RUN=$(wmetric citadel_worker_running_requests)
if [ "${RUN:-x}" = "0" ]; then ok "batch empty afterwards"; else fail "running_requests=$RUN after all ended"; fi
if [ "$(rmetric citadel_router_workers_died_total)" = "0" ] || [ -z "$(rmetric citadel_router_workers_died_total)" ]; then
    ok "heartbeats kept the worker alive"
else fail "the router expired the worker: workers_died_total=$(rmetric citadel_router_workers_died_total)"; fi

# 3. Beyond max_seqs: a worker with 2 slots takes 4 at once, the rest wait in order.
kill -TERM "$W"; wait "$W"
wait_workers 0 >/dev/null
start_worker 2
wait_workers 1 >/dev/null
kill -STOP "$W"
run_four queued
sleep 0.7
kill -CONT "$W"
if check_four queued; then ok "with max_seqs 2, 4 requests (2 queued) give citadel generate's texts"
else fail "max_seqs 2:$bad"; fi
MAX=$(wmetric 'citadel_worker_batch_size_bucket{le="2"}')
COUNT=$(wmetric citadel_worker_batch_size_count)
if [ "${COUNT:-0}" -gt 0 ] && [ "$MAX" = "$COUNT" ]; then ok "no step ran more than max_seqs=2 requests ($COUNT steps)"
else fail "batch_size beyond max_seqs: le2=$MAX count=$COUNT"; fi

# 4. One greedy request among 16 others: 17 at once, the 4 prompts in turn.
kill -TERM "$W"; wait "$W"
wait_workers 0 >/dev/null
CITADEL_WORKER_KV_CACHE_MB=2 start_worker 17
wait_workers 1 >/dev/null
kill -STOP "$W"
CPIDS=""
for k in $(seq 1 17); do
    p=$(( (k - 1) % 4 + 1 ))
    client "$NAME" "$(cat "$TMP/prompt$p")" --max-tokens $MAXTOK --id "many-$k" --timeout 30 \
        >"$TMP/many.got$k" 2>"$TMP/many.sum$k" &
    CPIDS="$CPIDS $!"
done
sleep 1
kill -CONT "$W"
bad=""
k=0
for pid in $CPIDS; do
    k=$((k + 1))
    p=$(( (k - 1) % 4 + 1 ))
    wait "$pid" || bad="$bad $k(rc)"
    cmp -s "$TMP/expected$p" "$TMP/many.got$k" || bad="$bad $k(text)"
done
LE8=$(wmetric 'citadel_worker_batch_size_bucket{le="8"}')
COUNT=$(wmetric citadel_worker_batch_size_count)
if [ -z "$bad" ] && [ "${COUNT:-0}" -gt "${LE8:-0}" ]; then
    ok "17 greedy requests at once ($((COUNT - LE8)) steps ran more than 8) each give citadel generate's text"
else fail "17 at once:$bad (batch_size count=$COUNT le8=$LE8)"; fi
USED=$(wmetric citadel_worker_kv_blocks_used)
FREE=$(wmetric citadel_worker_kv_blocks_free)
if [ "$USED" = "0" ] && [ "${FREE:-0}" -gt 0 ]; then ok "every KV block given back (kv_blocks_used=0, kv_blocks_free=$FREE)"
else fail "KV blocks after the batch: used=$USED free=$FREE"; fi
LONG="Once upon a time, there was a little girl named Lily. She loved to play outside in the sun with her dog."
HIT0=$(wmetric citadel_worker_prefix_cache_hit_tokens_total)
client "$NAME" "$LONG" --max-tokens 4 >/dev/null 2>&1
client "$NAME" "$LONG" --max-tokens 4 >/dev/null 2>"$TMP/long.sum"
HIT1=$(wmetric citadel_worker_prefix_cache_hit_tokens_total)
LOOKUP=$(wmetric citadel_worker_prefix_cache_lookup_tokens_total)
if [ "$(( ${HIT1:-0} - ${HIT0:-0} ))" -ge 16 ] && [ "${LOOKUP:-0}" -gt "${HIT1:-0}" ]; then
    ok "a repeated prompt comes from the prefix cache (hit tokens $HIT0 -> $HIT1 of $LOOKUP looked up; $(cat "$TMP/long.sum"))"
else fail "prefix cache: hit tokens $HIT0 -> $HIT1, lookup $LOOKUP"; fi

kill -TERM "$W" "$ROUTER"
wait "$W"; RW=$?
wait "$ROUTER"; RR=$?
if [ $RW -eq 0 ] && [ $RR -eq 0 ]; then ok "SIGTERM stops router and worker cleanly"
else fail "SIGTERM: worker rc $RW, router rc $RR"; fi

[ $failed -eq 0 ] || { echo "--- logs"; tail -n 20 "$TMP"/*.log; }
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
