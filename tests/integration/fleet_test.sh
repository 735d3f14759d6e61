#!/bin/sh
# fleet_test.sh - the router and two workers on loopback, driven by fleet_client (a
# gateway stand-in speaking the wire protocol), on the tiny stories260K model:
#   - a greedy generation through the fleet equals `citadel generate --temperature 0`,
#     and again for the same prompt (a second request on a worker that has served one);
#   - a worker that has the request but never answers (SIGSTOPped, then kill -9) costs
#     nothing: the router retries on the other worker and the text is still right;
#   - multi-turn: the next turn (the last prompt, its answer and a new line) reuses the
#     KV blocks the worker's prefix cache kept from the last one (usage.cached_tokens),
#     and its text is still the one `citadel generate` gives for the whole prompt;
#   - Cancel stops a generation at once and the worker is free for the next request;
#   - an unknown model and an unknown message type get an Error, not a crash;
#   - SIGTERM drains and stops the router and the worker.
# Ports are picked from the pid so that parallel runs rarely collide.
# Usage: tests/integration/fleet_test.sh [BUILD_DIR]   (run from the repository root)
set -u
BUILD=${1:-${BUILD:-build}}
BIN=$BUILD/bin
CLIENT=$BUILD/tests/integration/fleet_client
MODEL=tests/data/models/stories260K.gguf
NAME=stories260K
PROMPT="Once upon a time"

for f in "$BIN/citadel" "$BIN/citadel-router" "$BIN/citadel-worker" "$CLIENT"; do
    if [ ! -x "$f" ]; then echo "fleet_test: $f missing (run make)"; echo "0 passed, 1 failed"; exit 1; fi
done

. "$(dirname "$0")/lib.sh"
fleet_begin 0
RADMIN=$((BASE + 2))

start_router() {
    CITADEL_ROUTER_FRONTEND=$FE CITADEL_ROUTER_BACKEND=$BE CITADEL_ROUTER_ADMIN_PORT=$RADMIN \
        CITADEL_ROUTER_DRAIN_SECONDS=5 "$BIN/citadel-router" >"$TMP/router.log" 2>&1 &
    ROUTER=$!; PIDS="$PIDS $ROUTER"
}

# start_worker N: worker test-wN with admin port BASE+3+N; its pid in W<N>.
start_worker() {
    CITADEL_WORKER_ID=test-w$1 CITADEL_WORKER_MODEL=$MODEL CITADEL_WORKER_ROUTER=$BE \
        CITADEL_WORKER_THREADS=1 CITADEL_WORKER_ADMIN_PORT=$((BASE + 3 + $1)) \
        CITADEL_WORKER_DRAIN_SECONDS=5 "$BIN/citadel-worker" >"$TMP/worker$1.log" 2>&1 &
    eval "W$1=$!"; PIDS="$PIDS $!"
}

metric() {
    curl -s "http://127.0.0.1:$RADMIN/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}

# wait_workers N: until the router counts N live workers (10 s at most).
wait_workers() {
    i=0
    while [ "$(metric citadel_router_workers_alive)" != "$1" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ "$(metric citadel_router_workers_alive)" = "$1" ]
}

client() { "$CLIENT" "$FE" "$@"; }

start_router
start_worker 0
start_worker 1
if wait_workers 2; then ok "router sees 2 workers"; else fail "router sees 2 workers"; cat "$TMP"/*.log; exit 1; fi

# 1. Greedy text through the fleet equals the CLI's, twice (the same prompt on a worker that has already served it).
"$BIN/citadel" generate --model "$MODEL" --prompt "$PROMPT" --temperature 0 --max-tokens 48 --json \
    | python3 -c 'import json,sys; sys.stdout.write(json.load(sys.stdin)["text"])' >"$TMP/expected"
for turn in 1 2; do
    client "$NAME" "$PROMPT" --max-tokens 48 >"$TMP/got" 2>"$TMP/summary"
    if [ $? -eq 0 ] && cmp -s "$TMP/expected" "$TMP/got"; then ok "greedy text equals citadel generate (turn $turn)"
    else fail "greedy text equals citadel generate (turn $turn): got '$(cat "$TMP/got")' want '$(cat "$TMP/expected")' ($(cat "$TMP/summary"))"; fi
done

# 2. A worker that holds the request but never answers, then dies: two requests at once
#    go one to each worker (in-flight counting), so one lands on the stopped worker.
kill -STOP "$W0"
client "$NAME" "$PROMPT" --max-tokens 48 --id retry-a --timeout 20 >"$TMP/ra" 2>"$TMP/sa" &
CA=$!
client "$NAME" "$PROMPT" --max-tokens 48 --id retry-b --timeout 20 >"$TMP/rb" 2>"$TMP/sb" &
CB=$!
sleep 0.5
kill -9 "$W0"
wait $CA; RA=$?
wait $CB; RB=$?
if [ $RA -eq 0 ] && [ $RB -eq 0 ] && cmp -s "$TMP/expected" "$TMP/ra" && cmp -s "$TMP/expected" "$TMP/rb"; then
    ok "requests survive kill -9 of a worker before the first token ($(cat "$TMP/sa" "$TMP/sb" | tr '\n' ' '))"
else fail "requests survive kill -9 of a worker: rc $RA $RB; $(cat "$TMP/sa" "$TMP/sb")"; fi
RETRIES=$(metric citadel_router_retries_total)
if [ "${RETRIES:-0}" -ge 1 ]; then ok "router counted the retry (retries_total=$RETRIES)"; else fail "router retries_total=$RETRIES"; fi
if wait_workers 1; then ok "dead worker expired from the registry"; else fail "dead worker expired"; fi

# 2b. Multi-turn on the one worker left: turn 2 extends turn 1's prompt with its answer,
#     so the prefix cache serves turn 1's blocks; the text is as if computed afresh.
TURN1="Once upon a time, there was a little girl named Lily. She loved to play outside in the sun."
client "$NAME" "$TURN1" --max-tokens 24 >"$TMP/t1" 2>"$TMP/st1"
TURN2="$TURN1$(cat "$TMP/t1") Then she said"
"$BIN/citadel" generate --model "$MODEL" --prompt "$TURN2" --temperature 0 --max-tokens 24 --json \
    | python3 -c 'import json,sys; sys.stdout.write(json.load(sys.stdin)["text"])' >"$TMP/expected2"
client "$NAME" "$TURN2" --max-tokens 24 >"$TMP/t2" 2>"$TMP/st2"
CACHED=$(sed -n 's/.*cached_tokens=\([0-9-]*\).*/\1/p' "$TMP/st2")
if [ "${CACHED:-0}" -ge 32 ] && cmp -s "$TMP/expected2" "$TMP/t2"; then
    ok "turn 2 reuses turn 1's KV ($CACHED prompt tokens cached) and equals citadel generate"
else fail "multi-turn reuse: cached_tokens=$CACHED, got '$(cat "$TMP/t2")' want '$(cat "$TMP/expected2")'"; fi

# 3. Cancel after two chunks: the last chunk says cancelled, well before max_tokens,
#    and the worker takes the next request at once.
client "$NAME" "$PROMPT" --max-tokens 400 --cancel-after 2 --id cancel-1 >/dev/null 2>"$TMP/sc"
SUM=$(cat "$TMP/sc")
case "$SUM" in
    *finish=cancelled*) ok "cancel stops the generation ($SUM)" ;;
    *) fail "cancel stops the generation: $SUM" ;;
esac
T0=$(date +%s%N)
client "$NAME" "$PROMPT" --max-tokens 8 --timeout 5 >/dev/null 2>"$TMP/sd"; RD=$?
MS=$(( ($(date +%s%N) - T0) / 1000000 ))
if [ $RD -eq 0 ] && [ $MS -lt 2000 ]; then ok "worker free right after the cancel (${MS} ms)"
else fail "worker free after cancel: rc $RD in ${MS} ms $(cat "$TMP/sd")"; fi

# 4. Errors, not crashes.
client no-such-model "$PROMPT" --timeout 5 >/dev/null 2>"$TMP/se"; RE=$?
if [ $RE -eq 3 ] && grep -q "no worker serves model no-such-model" "$TMP/se"; then ok "unknown model -> Error ($(cat "$TMP/se"))"
else fail "unknown model: rc $RE $(cat "$TMP/se")"; fi
client "$NAME" "$PROMPT" --type Bogus --timeout 5 >/dev/null 2>"$TMP/sf"; RF=$?
if [ $RF -eq 3 ] && grep -q "unknown message type" "$TMP/sf"; then ok "unknown type -> Error"
else fail "unknown type: rc $RF $(cat "$TMP/sf")"; fi
BAD=$(metric citadel_router_bad_messages_total)
if [ "${BAD:-0}" -ge 1 ]; then ok "bad message counted"; else fail "bad_messages_total=$BAD"; fi

# 5. SIGTERM drains and exits cleanly.
kill -TERM "$W1" "$ROUTER"
i=0
while { kill -0 "$W1" 2>/dev/null || kill -0 "$ROUTER" 2>/dev/null; } && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
wait "$W1"; RW=$?
wait "$ROUTER"; RR=$?
if [ $RW -eq 0 ] && [ $RR -eq 0 ]; then ok "SIGTERM stops router and worker cleanly"
else fail "SIGTERM: worker rc $RW, router rc $RR"; tail -5 "$TMP"/*.log; fi

[ $failed -eq 0 ] || { echo "--- logs"; tail -n 20 "$TMP"/*.log; }
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
