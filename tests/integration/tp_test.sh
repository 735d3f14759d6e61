#!/bin/sh
# tp_test.sh - tensor-parallel worker groups through the fleet: the router and ONE
# worker made of 2 citadel-worker processes (rank 0 talks to the router, rank 1 follows
# it), on the tiny stories260K model (8 heads, 4 KV heads), driven by fleet_client:
#   - the router sees one worker, not two (followers never talk to it);
#   - 4 greedy requests at once, next to one cancelled mid-batch, each return exactly
#     the text `citadel generate --temperature 0` gives with the whole model (TP=1),
#     over the shared-memory collective and again over the ZeroMQ one (tcp://);
#   - SIGTERM to rank 0 stops both ranks cleanly (rank 1 is told to stop);
#   - kill -9 of rank 1 makes rank 0 leave with an error naming the dead rank, instead
#     of hanging;
#   - a model whose heads do not divide by the group's size is refused by every rank
#     with a message saying so (SmolLM2, 9 heads; skipped, visibly, without it).
# Usage: tests/integration/tp_test.sh [BUILD_DIR]   (run from the repository root)
set -u
BUILD=${1:-${BUILD:-build}}
BIN=$BUILD/bin
CLIENT=$BUILD/tests/integration/fleet_client
MODEL=tests/data/models/stories260K.gguf
NAME=stories260K
SMOLLM2=var/models/SmolLM2-135M-Instruct.Q4_1.gguf
MAXTOK=40

for f in "$BIN/citadel" "$BIN/citadel-router" "$BIN/citadel-worker" "$CLIENT"; do
    if [ ! -x "$f" ]; then echo "tp_test: $f missing (run make)"; echo "0 passed, 1 failed"; exit 1; fi
done

. "$(dirname "$0")/lib.sh"
fleet_begin 2999
# a run killed while a group was still forming would leave its shared memory behind
trap 'fleet_cleanup; rm -f /dev/shm/citadel-tp-test-$$ /dev/shm/citadel-tp-test-odd-$$' EXIT INT TERM
RADMIN=$((BASE + 2))
A0=$((BASE + 3))
A1=$((BASE + 4))
TPPORT=$((BASE + 5))

CITADEL_ROUTER_FRONTEND=$FE CITADEL_ROUTER_BACKEND=$BE CITADEL_ROUTER_ADMIN_PORT=$RADMIN \
    CITADEL_ROUTER_DRAIN_SECONDS=5 "$BIN/citadel-router" >"$TMP/router.log" 2>&1 &
ROUTER=$!; PIDS="$PIDS $ROUTER"

# start_rank RANK ADMIN ADDR [MODEL]: one process of the group; its pid in R<RANK>.
start_rank() {
    CITADEL_WORKER_ID=tp-w0 CITADEL_WORKER_MODEL=${4:-$MODEL} CITADEL_WORKER_ROUTER=$BE \
        CITADEL_WORKER_THREADS=1 CITADEL_WORKER_ADMIN_PORT=$2 CITADEL_WORKER_DRAIN_SECONDS=5 \
        CITADEL_WORKER_TP_SIZE=2 CITADEL_WORKER_TP_RANK=$1 CITADEL_WORKER_TP_ADDR=$3 \
        CITADEL_WORKER_TP_TIMEOUT=10 "$BIN/citadel-worker" >>"$TMP/rank$1.log" 2>&1 &
    eval "R$1=$!"; PIDS="$PIDS $!"
}

rmetric() { curl -s "http://127.0.0.1:$RADMIN/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

# wait_workers N: until the router counts N live workers (20 s at most).
wait_workers() {
    i=0
    while [ "$(rmetric citadel_router_workers_alive)" != "$1" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
    [ "$(rmetric citadel_router_workers_alive)" = "$1" ]
}

# wait_exit PID SECONDS: sets RC to its exit status, or 137 when it had to be killed
# because it was still running then (a watchdog, since `wait` has no timeout).
wait_exit() {
    ( sleep "$2"; kill -9 "$1" 2>/dev/null ) &
    WD=$!
    wait "$1"; RC=$?
    kill "$WD" 2>/dev/null; wait "$WD" 2>/dev/null
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

# run_group_checks TAG: 4 requests at once and a cancelled one; texts as TP=1's.
run_group_checks() {
    CPIDS=""
    for k in 1 2 3 4; do
        client "$NAME" "$(cat "$TMP/prompt$k")" --max-tokens $MAXTOK --id "$1-$k" --timeout 30 \
            >"$TMP/$1.got$k" 2>"$TMP/$1.sum$k" &
        CPIDS="$CPIDS $!"
    done
    client "$NAME" "$(cat "$TMP/prompt1")" --max-tokens 400 --cancel-after 2 --id "$1-cancel" --timeout 30 \
        >/dev/null 2>"$TMP/$1.cancel" &
    CC=$!
    bad=""
    k=0
    for p in $CPIDS; do
        k=$((k + 1))
        wait "$p" || bad="$bad $k(rc $(cat "$TMP/$1.sum$k"))"
        cmp -s "$TMP/expected$k" "$TMP/$1.got$k" || bad="$bad $k(text: '$(cat "$TMP/$1.got$k")')"
    done
    wait $CC
    if [ -z "$bad" ]; then ok "$1: 4 greedy requests at once on TP=2 give TP=1's texts (citadel generate)"
    else fail "$1: TP=2 texts differ:$bad"; fi
    case "$(cat "$TMP/$1.cancel")" in
        *finish=cancelled*) ok "$1: a request cancelled inside the batch ends cancelled" ;;
        *) fail "$1: cancel inside the batch: $(cat "$TMP/$1.cancel")" ;;
    esac
    # after the cancel both ranks still agree: one more request
    client "$NAME" "$(cat "$TMP/prompt2")" --max-tokens $MAXTOK --id "$1-after" --timeout 30 >"$TMP/$1.after" 2>/dev/null
    if cmp -s "$TMP/expected2" "$TMP/$1.after"; then ok "$1: the group stays in step after the cancel"
    else fail "$1: after the cancel: '$(cat "$TMP/$1.after")'"; fi
}

# 1. Shared memory.
SHM=shm:citadel-tp-test-$$
start_rank 1 "$A1" "$SHM"
start_rank 0 "$A0" "$SHM"
if wait_workers 1; then ok "shm: the router sees the group as one worker"
else fail "shm: router never saw the group"; tail -n 5 "$TMP"/*.log; exit 1; fi
sleep 1.5   # a rank 1 that registered by mistake would show up within a heartbeat
if [ "$(rmetric citadel_router_workers_alive)" = "1" ]; then ok "shm: rank 1 does not talk to the router"
else fail "shm: the router counts $(rmetric citadel_router_workers_alive) workers"; fi
run_group_checks shm
kill -TERM "$R0"
wait_exit "$R0" 15; S0=$RC; wait_exit "$R1" 15; S1=$RC
if [ "$S0" = 0 ] && [ "$S1" = 0 ] && grep -q "rank 0 stopped the group" "$TMP/rank1.log"; then
    ok "shm: SIGTERM to rank 0 stops both ranks cleanly"
else fail "shm: SIGTERM: rank 0 rc $S0, rank 1 rc $S1"; fi
wait_workers 0 >/dev/null

# 2. ZeroMQ (rank 0 binds, rank 1 connects; rank 1 starts first and waits for it).
TCP=tcp://127.0.0.1:$TPPORT
start_rank 1 "$A1" "$TCP"
start_rank 0 "$A0" "$TCP"
if wait_workers 1; then ok "zmq: the router sees the group as one worker"
else fail "zmq: router never saw the group"; tail -n 5 "$TMP"/*.log; exit 1; fi
run_group_checks zmq

# 3. A follower dies: rank 0 notices and leaves with an error instead of hanging.
client "$NAME" "$(cat "$TMP/prompt1")" --max-tokens 400 --id dying --timeout 30 >/dev/null 2>"$TMP/dying.sum" &
CD=$!
sleep 0.3
kill -9 "$R1"
wait_exit "$R0" 20; S0=$RC
wait $CD
if [ "$S0" != 0 ] && [ "$S0" != 137 ] && grep -q "no answer from the other ranks\|rank 1" "$TMP/rank0.log"; then
    ok "zmq: kill -9 of rank 1 ends rank 0 with an error (rc $S0: $(grep -o '"msg":"[^"]*tensor-parallel[^"]*"' "$TMP/rank0.log" | tail -n 1))"
else fail "zmq: after kill -9 of rank 1, rank 0 rc $S0"; fi

# 4. Heads that do not divide: both ranks refuse the model, saying why.
if [ -r "$SMOLLM2" ]; then
    SHM2=shm:citadel-tp-test-odd-$$
    : >"$TMP/rank0.log"; : >"$TMP/rank1.log"
    start_rank 0 "$A0" "$SHM2" "$SMOLLM2"
    start_rank 1 "$A1" "$SHM2" "$SMOLLM2"
    wait_exit "$R0" 30; S0=$RC; wait_exit "$R1" 30; S1=$RC
    if [ "$S0" = 1 ] && [ "$S1" = 1 ] && grep -q "9 attention heads and 3 key/value heads" "$TMP/rank0.log" \
        && grep -q "9 attention heads and 3 key/value heads" "$TMP/rank1.log"; then
        ok "SmolLM2 (9 heads) over 2 ranks is refused by both with the reason"
    else fail "indivisible heads: rank 0 rc $S0, rank 1 rc $S1"; fi
else
    echo "SKIPPED: $SMOLLM2 absent (make model): indivisible heads through the worker"
fi

kill -TERM "$ROUTER"; wait "$ROUTER"
[ $failed -eq 0 ] || { echo "--- logs"; tail -n 20 "$TMP"/*.log; }
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
