#!/bin/sh
# admission_test.sh - admission control, deadlines and context limits through the whole
# fleet (router, workers, HTTPS gateway) on the tiny stories260K model, with curl over
# TLS as an OpenAI client would:
#   - a worker whose queue is full refuses with OVERLOADED and the router sends the
#     request to another worker with room: every request of a burst succeeds;
#   - when no worker has room the client gets 503, an OpenAI error body (code
#     "overloaded") and Retry-After, and the refusal is counted on the worker (by
#     reason), the router and the gateway;
#   - a request whose X-Citadel-Deadline-Ms passes while it waits in a worker's queue
#     gets 504 from the worker (not the gateway's backstop); one whose deadline passes
#     while it streams ends with an error event; a malformed header is a 400;
#   - a prompt longer than the context is a 400 naming both sizes; max_tokens beyond
#     the context is clamped (finish_reason "length", prompt + completion = context);
#   - the request metrics (queue time, TTFT, inter-token latency, token counters,
#     running and waiting gauges, batch size) are present and moving.
# Bursts reach the workers together because the workers are SIGSTOPped until the router
# has routed them all (2.5 s at most: the router declares a worker dead after 3 s).
# Usage: tests/integration/admission_test.sh [BUILD_DIR]   (run from the repository root)
set -u
BUILD=${1:-${BUILD:-build}}
BIN=$BUILD/bin
MODEL=tests/data/models/stories260K.gguf
NAME=stories260K
SMALL=stories260K-ctx128

for f in "$BIN/citadel-router" "$BIN/citadel-worker" "$BIN/citadel-gateway" "$BIN/citadel-sanitizer"; do
    if [ ! -x "$f" ]; then echo "admission_test: $f missing (run make)"; echo "0 passed, 1 failed"; exit 1; fi
done

. "$(dirname "$0")/lib.sh"
fleet_begin 2711
RADMIN=$((BASE + 2))
W0ADMIN=$((BASE + 3))
W1ADMIN=$((BASE + 4))
GPORT=$((BASE + 5))
GADMIN=$((BASE + 6))
W2ADMIN=$((BASE + 7))
URL=https://127.0.0.1:$GPORT
export CITADEL_HOME=$TMP/home

CITADEL_ROUTER_FRONTEND=$FE CITADEL_ROUTER_BACKEND=$BE CITADEL_ROUTER_ADMIN_PORT=$RADMIN \
    "$BIN/citadel-router" >"$TMP/router.log" 2>&1 &
PIDS="$PIDS $!"
# start_worker ID ADMIN_PORT MAX_QUEUED_REQUESTS CTX [MODEL_NAME]: one batch slot each, so
# that queues fill with few requests; 8192 positions let a generation run for seconds.
start_worker() {
    CITADEL_WORKER_ID=$1 CITADEL_WORKER_MODEL=$MODEL CITADEL_WORKER_MODEL_NAME=${5:-$NAME} \
        CITADEL_WORKER_ROUTER=$BE CITADEL_WORKER_THREADS=1 CITADEL_WORKER_MAX_SEQS=1 \
        CITADEL_WORKER_MAX_QUEUED_REQUESTS=$3 CITADEL_WORKER_CTX=$4 CITADEL_WORKER_ADMIN_PORT=$2 \
        "$BIN/citadel-worker" >"$TMP/$1.log" 2>&1 &
    PIDS="$PIDS $!"
}
start_worker adm-w0 "$W0ADMIN" 1 8192; W0=$!
start_worker adm-w1 "$W1ADMIN" 5 8192; W1=$!
start_worker adm-w2 "$W2ADMIN" 4 128 "$SMALL"
start_sanitizer
CITADEL_GATEWAY_LISTEN=127.0.0.1 CITADEL_GATEWAY_SANITIZER=$SAN CITADEL_GATEWAY_PORT=$GPORT CITADEL_GATEWAY_ADMIN_PORT=$GADMIN \
    CITADEL_ROUTER_ENDPOINT=$FE CITADEL_GATEWAY_RETRY_AFTER_S=2 \
    "$BIN/citadel-gateway" >"$TMP/gateway.log" 2>&1 &
PIDS="$PIDS $!"

KEYFILE=$CITADEL_HOME/keys/admin.key
json() { python3 -c 'import json,sys; d=json.load(sys.stdin); v=eval(sys.argv[1]); sys.stdout.write(v if isinstance(v,str) else json.dumps(v))' "$1" 2>/dev/null; }
metric() { curl -s --max-time 5 "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
# post PATH JSON OUT [curl args...]: an authenticated POST; status in OUT.st, headers in
# OUT.head, body in OUT.
post() {
    p=$1; d=$2; o=$3; shift 3
    curl -sk -N --max-time 60 -D "$o.head" -o "$o" -w '%{http_code}' -H "Authorization: Bearer $KEY" \
        -H 'Content-Type: application/json' --data-binary "$d" "$@" "$URL$p" >"$o.st"
}
chat() { echo '{"model":"'"${3:-$NAME}"'","messages":[{"role":"user","content":"'"$1"'"}],"temperature":0,"max_tokens":'"$2"'}'; }

# Ready: /v1/models lists both model names and the router counts 3 workers.
i=0
while [ $i -lt 150 ]; do
    if [ -s "$KEYFILE" ]; then
        KEY=$(cat "$KEYFILE")
        M=$(curl -sk --max-time 2 -H "Authorization: Bearer $KEY" "$URL/v1/models" | json '",".join(sorted(m["id"] for m in d["data"]))')
        [ "$M" = "$NAME,$SMALL" ] && [ "$(metric $RADMIN citadel_router_workers_alive)" = 3 ] && break
    fi
    sleep 0.1; i=$((i + 1))
done
if [ $i -lt 150 ]; then ok "fleet up: 3 workers, models $M"
else fail "fleet not up: models '${M:-}'"; tail -n 20 "$TMP"/*.log; echo "$passed passed, $failed failed"; exit 1; fi

# burst N TAG MAX_TOKENS: N chat requests while both $NAME workers are stopped; the
# workers resume once the router has routed all N (2.5 s at most: it declares a worker
# dead after 3 s of silence), so the N reach them together.
burst() {
    routed0=$(metric $RADMIN citadel_router_requests_routed_total)
    kill -STOP "$W0" "$W1"
    BPIDS=""
    for k in $(seq 1 "$1"); do
        post /v1/chat/completions "$(chat "Tell me story number $k" "$3")" "$TMP/$2$k" &
        BPIDS="$BPIDS $!"
    done
    j=0
    while [ "$(metric $RADMIN citadel_router_requests_routed_total)" -lt $((routed0 + $1)) ] && [ $j -lt 25 ]; do
        sleep 0.1; j=$((j + 1))
    done
    kill -CONT "$W0" "$W1"
    wait $BPIDS
}
statuses() { for k in $(seq 1 "$1"); do printf '%s ' "$(cat "$TMP/$2$k.st")"; done; }

# 1. Six requests on two stopped workers: the router alternates, 3 each. adm-w0 (1 slot,
# 1 waiting) refuses its third; the router sends it to adm-w1 (1 slot, 5 waiting).
R0=$(metric $RADMIN citadel_router_overload_retries_total)
burst 6 b 24
R1=$(metric $RADMIN citadel_router_overload_retries_total)
W0FULL=$(metric $W0ADMIN 'citadel_worker_requests_refused_total{reason="queue_full_requests"}')
if [ "$(statuses 6 b)" = "200 200 200 200 200 200 " ] && [ "${R1:-0}" -ge $((${R0:-0} + 1)) ] && [ "${W0FULL:-0}" -ge 1 ]; then
    ok "a full worker's refusal goes to a worker with room: 6 of 6 answered (router overload_retries_total $R0 -> $R1, adm-w0 refused $W0FULL)"
else fail "retry on another worker: statuses $(statuses 6 b), retries $R0 -> $R1, adm-w0 refused ${W0FULL:-none}"; fi

# 2. Nine at once: 2 + 6 places in all, so at least one client gets 503 + Retry-After.
burst 9 c 24
N503=0; N200=0; SHAPED=""
for k in $(seq 1 9); do
    case "$(cat "$TMP/c$k.st")" in
        200) N200=$((N200 + 1)) ;;
        503) N503=$((N503 + 1)); SHAPED=$k ;;
    esac
done
if [ $N503 -ge 1 ] && [ $((N200 + N503)) = 9 ]; then ok "a burst beyond every queue: $N200 answered, $N503 refused with 503, none lost"
else fail "burst beyond the queues: statuses $(statuses 9 c)"; fi
if [ -n "$SHAPED" ]; then
    RA=$(awk 'tolower($1) == "retry-after:" { print $2 }' "$TMP/c$SHAPED.head" | tr -d '\r')
    ERR=$(json 'd["error"]["type"]+"/"+d["error"]["code"]+"/"+d["error"]["message"]' <"$TMP/c$SHAPED")
    case "$RA $ERR" in
        "2 server_error/overloaded/worker overloaded"*) ok "503 carries Retry-After: $RA and an OpenAI error ($ERR)" ;;
        *) fail "503 shape: Retry-After '$RA', body $(cat "$TMP/c$SHAPED")" ;;
    esac
fi
ROUTER_REFUSED=$(metric $RADMIN 'citadel_router_requests_refused_total{reason="overloaded"}')
GW_OVER=$(curl -s "http://127.0.0.1:$GADMIN/metrics" | grep -c 'overloaded')
if [ "${ROUTER_REFUSED:-0}" -ge $N503 ] && [ "$GW_OVER" -ge 1 ]; then
    ok "refusals counted: router requests_refused_total{reason=overloaded} $ROUTER_REFUSED, gateway lists overloaded"
else fail "refusal metrics: router ${ROUTER_REFUSED:-none}, gateway $GW_OVER"; fi

# 3. Deadlines that pass before a request can start: 504 from the worker (the gateway's
# own timer waits 1 s longer), whose message says where the time went.
deadline_refusals() {
    echo $(( $(metric $W0ADMIN 'citadel_worker_requests_refused_total{reason="deadline_exceeded"}') + \
             $(metric $W1ADMIN 'citadel_worker_requests_refused_total{reason="deadline_exceeded"}') ))
}
D0=$(deadline_refusals)
#  a) In the worker's queue, behind a long generation on each worker (~40 s of tokens;
#     their clients give up after 3 s, which cancels them).
LONG='{"model":"'$NAME'","prompt":"Once","temperature":0,"max_tokens":8000,"stream":true}'
for n in 1 2; do
    curl -sk -N --max-time 3 -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        --data-binary "$LONG" "$URL/v1/completions" >/dev/null 2>&1 &
    eval "L$n=\$!"
done
sleep 0.5
T0=$(date +%s%N)
post /v1/chat/completions "$(chat "A story" 24)" "$TMP/dlq" -H 'X-Citadel-Deadline-Ms: 500'
MS=$(( ($(date +%s%N) - T0) / 1000000 ))
MSG=$(json 'd["error"]["code"]+": "+d["error"]["message"]' <"$TMP/dlq")
case "$(cat "$TMP/dlq.st") $MSG" in
    "504 timeout: the request's deadline passed while it waited in the worker's queue"*)
        ok "deadline passed in the worker's queue: 504 after $MS ms ($MSG)" ;;
    *) fail "queued deadline: $(cat "$TMP/dlq.st") $(cat "$TMP/dlq") after $MS ms" ;;
esac
wait "$L1" "$L2"
#  b) Before it even reached a worker (both stopped for 0.7 s, deadline 300 ms).
kill -STOP "$W0" "$W1"
post /v1/chat/completions "$(chat "A story" 24)" "$TMP/dl" -H 'X-Citadel-Deadline-Ms: 300' &
DP=$!
sleep 0.7
kill -CONT "$W0" "$W1"
wait $DP
MSG=$(json 'd["error"]["code"]+": "+d["error"]["message"]' <"$TMP/dl")
case "$(cat "$TMP/dl.st") $MSG" in
    "504 timeout: the request's deadline passed"*"before it reached the worker") ok "deadline passed on the way: 504 ($MSG)" ;;
    *) fail "deadline on the way: $(cat "$TMP/dl.st") $(cat "$TMP/dl")" ;;
esac
D1=$(deadline_refusals)
if [ "$D1" = $((D0 + 2)) ]; then ok "both counted as requests_refused_total{reason=deadline_exceeded} ($D0 -> $D1)"
else fail "deadline refusals $D0 -> $D1"; fi

# 4. A deadline that passes mid-stream: the stream ends with an error event.
post /v1/completions "$LONG" "$TMP/dls" -H 'X-Citadel-Deadline-Ms: 600'
NCH=$(grep -c '^data: {"id"' "$TMP/dls")
if [ "$(cat "$TMP/dls.st")" = 200 ] && [ "$NCH" -gt 0 ] && grep -q "deadline passed while it was generating" "$TMP/dls" &&
   [ "$(grep '^data: ' "$TMP/dls" | tail -n 1 | tr -d '\r')" = "data: [DONE]" ]; then
    ok "deadline passed mid-stream: $NCH chunks, then an error event and [DONE]"
else fail "streamed deadline: $(cat "$TMP/dls.st") $(tail -c 400 "$TMP/dls")"; fi
post /v1/completions "$LONG" "$TMP/bad" -H 'X-Citadel-Deadline-Ms: soon'
if [ "$(cat "$TMP/bad.st")" = 400 ] && [ "$(json 'd["error"]["param"]' <"$TMP/bad")" = X-Citadel-Deadline-Ms ]; then
    ok "malformed X-Citadel-Deadline-Ms: 400 naming the header"
else fail "bad deadline header: $(cat "$TMP/bad.st") $(cat "$TMP/bad")"; fi

# 5. The context (adm-w2 serves $SMALL with 128 positions).
LONGTEXT=$(python3 -c "print('Once upon a time there was a little girl. ' * 20)")
post /v1/completions '{"model":"'$SMALL'","prompt":"'"$LONGTEXT"'","max_tokens":8}' "$TMP/ptl"
MSG=$(json 'd["error"]["type"]+": "+d["error"]["message"]' <"$TMP/ptl")
case "$(cat "$TMP/ptl.st") $MSG" in
    "400 invalid_request_error: prompt has "*" tokens, the model's context is 128") ok "prompt longer than the context: 400 ($MSG)" ;;
    *) fail "prompt too long: $(cat "$TMP/ptl.st") $(cat "$TMP/ptl")" ;;
esac
PTL=$(metric $W2ADMIN 'citadel_worker_requests_refused_total{reason="prompt_too_long"}')
if [ "${PTL:-0}" = 1 ]; then ok "counted as requests_refused_total{reason=prompt_too_long}"; else fail "prompt_too_long count ${PTL:-none}"; fi
post /v1/completions '{"model":"'$SMALL'","prompt":"Once","temperature":0,"max_tokens":100000}' "$TMP/clamp"
USAGE=$(json 'd["choices"][0]["finish_reason"]+" "+str(d["usage"]["prompt_tokens"]+d["usage"]["completion_tokens"])' <"$TMP/clamp")
if [ "$(cat "$TMP/clamp.st")" = 200 ] && [ "$USAGE" = "length 128" ]; then
    ok "max_tokens 100000 clamped to the context: finish_reason length, prompt + completion = 128"
else fail "max_tokens clamp: $(cat "$TMP/clamp.st") '$USAGE' $(head -c 300 "$TMP/clamp")"; fi

# 6. The request metrics, present and moving: summed over the two $NAME workers.
wsum() { echo "$(metric $W0ADMIN "$1") $(metric $W1ADMIN "$1")" | awk '{ print $1 + $2 }'; }
SERIES="citadel_worker_queue_seconds_count citadel_worker_ttft_seconds_count citadel_worker_itl_seconds_count
citadel_worker_tokens_generated_total citadel_worker_prompt_tokens_total citadel_worker_batch_size_count"
for m in $SERIES; do eval "before_$m=$(wsum $m)"; done
post /v1/chat/completions "$(chat "One more story" 16)" "$TMP/last"
sleep 0.2
MOVED=""; STUCK=""
for m in $SERIES; do
    eval "b=\$before_$m"
    a=$(wsum $m)
    if awk -v a="$a" -v b="$b" 'BEGIN { exit !(a > b) }'; then MOVED="$MOVED ${m#citadel_worker_}"; else STUCK="$STUCK $m:$b->$a"; fi
done
GAUGES=$(curl -s "http://127.0.0.1:$W1ADMIN/metrics" | grep -cE '^citadel_worker_(running_requests|queue_depth|queue_prompt_tokens) ')
if [ "$(cat "$TMP/last.st")" = 200 ] && [ -z "$STUCK" ] && [ "$GAUGES" = 3 ]; then
    ok "request metrics present and moving:$MOVED; running/waiting gauges present"
else fail "metrics: status $(cat "$TMP/last.st"), stuck$STUCK, gauges $GAUGES"; fi

[ $failed -eq 0 ] || { echo "--- logs"; tail -n 20 "$TMP"/*.log; }
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
