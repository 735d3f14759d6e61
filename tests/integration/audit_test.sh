#!/bin/sh
# audit_test.sh - the audit trail end to end: citadel-kafka-dev (librdkafka's in-memory
# Kafka cluster), the fleet (router, one worker on stories260K, the HTTPS gateway) and
# citadel-audit writing the hash-chained log:
#   - 500 requests -> exactly 500 records, one per request id the clients got back,
#     and `citadel audit verify` passes;
#   - a broker outage in the middle of a second run (every broker down, then up again,
#     with the data kept, as a stopped and restarted broker) -> no event lost or doubled:
#     the events wait in the gateway's queue (seen there during the outage) and arrive;
#     citadel-audit killed with -9 and restarted writes nothing twice;
#   - an edited, a removed and a swapped record are each caught by verify, which names it;
#   - query by user, model and time;
#   - a gateway whose queue (5 events) is too small for an outage counts and logs each
#     event it cannot keep, with its request id.
# The outage lasts OUTAGE_S (12 s, not the 30 s of the issue): it only has to outlast
# every timeout that could drop or double an event, and the test shortens those: the
# consumer's session (6 s, so the group really expires and rebalances) and the clients'
# reconnect backoff (1 s, so the run ends soon after the broker is back). The producer
# keeps its events for as long as an outage lasts (message.timeout.ms 0), so a longer
# outage changes nothing but the queue's length.
# Usage: tests/integration/audit_test.sh [BUILD_DIR]   (run from the repository root)
set -u
BUILD=${1:-${BUILD:-build}}
BIN=$BUILD/bin
MODEL=tests/data/models/stories260K.gguf
NAME=stories260K
OUTAGE_S=${OUTAGE_S:-12}

for f in "$BIN/citadel" "$BIN/citadel-router" "$BIN/citadel-worker" "$BIN/citadel-gateway" "$BIN/citadel-sanitizer" "$BIN/citadel-audit" \
         "$BIN/citadel-kafka-dev"; do
    if [ ! -x "$f" ]; then echo "audit_test: $f missing (run make)"; echo "0 passed, 1 failed"; exit 1; fi
done

. "$(dirname "$0")/lib.sh"
fleet_begin 2711
RADMIN=$((BASE + 2)); WADMIN=$((BASE + 3)); GPORT=$((BASE + 4)); GADMIN=$((BASE + 5))
KADMIN=$((BASE + 6)); AADMIN=$((BASE + 7))
URL=https://127.0.0.1:$GPORT
export CITADEL_HOME=$TMP/home
AUDIT_DIR=$TMP/audit
LOAD="python3 $(dirname "$0")/load_client.py"
CLIENT_OPTS="reconnect.backoff.max.ms=1000"

metric() { curl -s --max-time 5 "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
# wait_for SECONDS CMD...: until CMD succeeds (polled every 0.2 s).
wait_for() {
    t=$(($1 * 5)); shift
    while [ $t -gt 0 ]; do "$@" && return 0; sleep 0.2; t=$((t - 1)); done
    return 1
}

CITADEL_KAFKA_DEV_ADMIN_PORT=$KADMIN "$BIN/citadel-kafka-dev" >"$TMP/kafka.log" 2>&1 &
KAFKA=$!; PIDS="$PIDS $KAFKA"
wait_for 10 test -s "$CITADEL_HOME/run/kafka.bootstrap" || { fail "citadel-kafka-dev wrote its bootstrap file"; cat "$TMP/kafka.log"; exit 1; }
BROKERS=$(cat "$CITADEL_HOME/run/kafka.bootstrap")
ok "citadel-kafka-dev up at $BROKERS"

start_audit() {
    CITADEL_KAFKA_BROKERS=$BROKERS CITADEL_AUDIT_DIR=$AUDIT_DIR CITADEL_AUDIT_ADMIN_PORT=$AADMIN \
        CITADEL_AUDIT_FSYNC_INTERVAL=200ms \
        CITADEL_KAFKA_OPTIONS="$CLIENT_OPTS,session.timeout.ms=6000,heartbeat.interval.ms=1000" \
        "$BIN/citadel-audit" >>"$TMP/audit.log" 2>&1 &
    AUDIT=$!; PIDS="$PIDS $AUDIT"
}
start_audit
CITADEL_ROUTER_FRONTEND=$FE CITADEL_ROUTER_BACKEND=$BE CITADEL_ROUTER_ADMIN_PORT=$RADMIN \
    "$BIN/citadel-router" >"$TMP/router.log" 2>&1 &
PIDS="$PIDS $!"
CITADEL_WORKER_ID=audit-w0 CITADEL_WORKER_MODEL=$MODEL CITADEL_WORKER_ROUTER=$BE CITADEL_WORKER_THREADS=1 \
    CITADEL_WORKER_ADMIN_PORT=$WADMIN "$BIN/citadel-worker" >"$TMP/worker.log" 2>&1 &
PIDS="$PIDS $!"
start_sanitizer
CITADEL_GATEWAY_LISTEN=127.0.0.1 CITADEL_GATEWAY_SANITIZER=$SAN CITADEL_GATEWAY_PORT=$GPORT CITADEL_GATEWAY_ADMIN_PORT=$GADMIN \
    CITADEL_ROUTER_ENDPOINT=$FE CITADEL_KAFKA_BROKERS=$BROKERS CITADEL_KAFKA_OPTIONS=$CLIENT_OPTS \
    "$BIN/citadel-gateway" >"$TMP/gateway.log" 2>&1 &
GW=$!; PIDS="$PIDS $GW"

KEYFILE=$CITADEL_HOME/keys/admin.key
model_listed() {
    [ -s "$KEYFILE" ] && curl -sk --max-time 2 -H "Authorization: Bearer $(cat "$KEYFILE")" "$URL/v1/models" | grep -q "\"$NAME\""
}
if wait_for 20 model_listed; then ok "fleet ready"; else fail "fleet ready"; tail -n 5 "$TMP"/*.log; exit 1; fi

records() { cat "$AUDIT_DIR"/audit-*.jsonl 2>/dev/null | wc -l; }
# ids_in_log: the request ids of every record, sorted (duplicates kept).
ids_in_log() { cat "$AUDIT_DIR"/audit-*.jsonl | python3 -c 'import json,sys; [print(json.loads(l)["request_id"]) for l in sys.stdin]' | sort; }
log_has() { [ "$(records)" -ge "$1" ]; }

# The /v1/models probes above were audited too: they are requests. Count them first.
BEFORE_FILE=$TMP/before; wait_for 10 log_has 1; sleep 1; ids_in_log >"$BEFORE_FILE"
BEFORE=$(wc -l <"$BEFORE_FILE")

# 1. 500 requests -> exactly 500 more records, one per request id.
$LOAD "$URL" "$KEYFILE" "$NAME" 500 "$TMP/run1" --threads 4 --user-every 10 || fail "load run 1 completed"
GOOD=$(awk '$2 == 200' "$TMP/run1" | wc -l)
WANT=$((BEFORE + 500))
wait_for 20 log_has $WANT
ids_in_log >"$TMP/ids1"
{ cat "$BEFORE_FILE"; awk '{print $1}' "$TMP/run1"; } | sort >"$TMP/want1"
if [ "$GOOD" -eq 500 ] && cmp -s "$TMP/want1" "$TMP/ids1"; then ok "500 requests -> exactly 500 audit records, one per request id"
else fail "500 requests: $GOOD answered 200, log holds $(records) records for $WANT requests ($(comm -3 "$TMP/want1" "$TMP/ids1" | head -3 | tr '\n' ' '))"; fi
if "$BIN/citadel" audit verify --dir "$AUDIT_DIR" >"$TMP/verify" 2>&1; then ok "verify passes: $(cat "$TMP/verify")"
else fail "verify after run 1: $(cat "$TMP/verify")"; fi

# 2. A broker outage in the middle of 300 requests paced over ~10 s + the outage.
$LOAD "$URL" "$KEYFILE" "$NAME" 300 "$TMP/run2" --threads 4 --per-second 15 --user-every 10 &
LOADPID=$!
sleep 3
kill -USR1 "$KAFKA"
sleep 2
QUEUED=$(metric "$GADMIN" citadel_gateway_audit_kafka_queue_messages)
sleep $((OUTAGE_S - 2))
QUEUED_LATE=$(metric "$GADMIN" citadel_gateway_audit_kafka_queue_messages)
kill -USR2 "$KAFKA"
# ... and citadel-audit killed -9 while it catches up, then restarted.
sleep 1
kill -9 "$AUDIT"; wait "$AUDIT" 2>/dev/null
start_audit
wait "$LOADPID" || fail "load run 2 completed"
if [ "${QUEUED:-0}" -gt 0 ] && [ "${QUEUED_LATE:-0}" -gt "${QUEUED:-0}" ]; then
    ok "during the outage events waited in the gateway's queue ($QUEUED, then $QUEUED_LATE)"
else fail "the outage held events in the queue: $QUEUED then $QUEUED_LATE"; fi
WANT=$((WANT + 300))
wait_for 60 log_has $WANT
sleep 1
ids_in_log >"$TMP/ids2"
{ cat "$TMP/want1"; awk '{print $1}' "$TMP/run2"; } | sort >"$TMP/want2"
LOST=$(curl -s "http://127.0.0.1:$GADMIN/metrics" | awk '/_kafka_messages_total\{outcome="lost"/ { s += $2 } END { print s + 0 }')
if cmp -s "$TMP/want2" "$TMP/ids2" && [ "$LOST" = 0 ]; then
    ok "outage of ${OUTAGE_S} s and kill -9 of citadel-audit: all $WANT events in the log once each, none lost"
else fail "outage: log holds $(records) records for $WANT requests, lost=$LOST ($(comm -3 "$TMP/want2" "$TMP/ids2" | head -3 | tr '\n' ' '))"; fi
if "$BIN/citadel" audit verify --dir "$AUDIT_DIR" >"$TMP/verify" 2>&1; then ok "verify passes after the outage: $(cat "$TMP/verify")"
else fail "verify after the outage: $(cat "$TMP/verify")"; fi

# 3. Tampering, each on its own copy of the log.
SEG=$(ls "$AUDIT_DIR"/audit-*.jsonl | tail -n 1)
tamper() {   # tamper NAME SCRIPT: copies the log, runs SCRIPT on the segment copy, verifies
    rm -rf "$TMP/t-$1"; cp -r "$AUDIT_DIR" "$TMP/t-$1"
    python3 -c "$2" "$TMP/t-$1/$(basename "$SEG")"
    "$BIN/citadel" audit verify --dir "$TMP/t-$1" >"$TMP/v-$1" 2>&1
}
EDIT='import sys; p=sys.argv[1]; L=open(p).readlines(); L[99]=L[99].replace("\"status\":200","\"status\":201"); open(p,"w").writelines(L)'
if ! tamper edited "$EDIT" && grep -q "line 100: record seq .* was edited" "$TMP/v-edited"; then ok "edited record caught: $(head -1 "$TMP/v-edited")"
else fail "edited record: $(cat "$TMP/v-edited")"; fi
DELETE='import sys; p=sys.argv[1]; L=open(p).readlines(); del L[199]; open(p,"w").writelines(L)'
if ! tamper deleted "$DELETE" && grep -q "line 200: .*removed or reordered" "$TMP/v-deleted"; then ok "deleted record caught: $(head -1 "$TMP/v-deleted")"
else fail "deleted record: $(cat "$TMP/v-deleted")"; fi
SWAP='import sys; p=sys.argv[1]; L=open(p).readlines(); L[299],L[300]=L[300],L[299]; open(p,"w").writelines(L)'
if ! tamper swapped "$SWAP" && grep -q "line 300: .*removed or reordered" "$TMP/v-swapped"; then ok "swapped records caught: $(head -1 "$TMP/v-swapped")"
else fail "swapped records: $(cat "$TMP/v-swapped")"; fi

# 4. Queries.
ALICE=$("$BIN/citadel" audit query --dir "$AUDIT_DIR" --user alice 2>/dev/null | wc -l)
if [ "$ALICE" -eq 80 ]; then ok "query --user alice: 80 records (every 10th of 800)"; else fail "query --user alice: $ALICE, want 80"; fi
N=$("$BIN/citadel" audit query --dir "$AUDIT_DIR" --model "$NAME" --from "$(date -u +%Y-%m-%d)" --to "$(date -u +%s)" 2>/dev/null | wc -l)
if [ "$N" -eq 800 ]; then ok "query --model --from --to: 800 records"; else fail "query --model --from --to: $N, want 800"; fi
N=$("$BIN/citadel" audit query --dir "$AUDIT_DIR" --to 2000-01-01 2>/dev/null | wc -l)
if [ "$N" -eq 0 ]; then ok "query --to 2000-01-01: none"; else fail "query --to 2000-01-01: $N"; fi
python3 -c '
import json,sys
r=[json.loads(l) for l in open(sys.argv[1])][-1]
need={"request_id","ts","key_id","user","roles","action","model","adapter","input_sha256","prompt_tokens","completion_tokens","output_bytes","latency_seconds","status","client","cache","findings"}
miss=need-set(r)
assert not miss, miss
assert r["key_id"]=="admin" and r["roles"]==["admin"] and r["status"]==200 and r["client"]=="127.0.0.1" and len(r["input_sha256"])==64 and r["completion_tokens"]>0, r
' "$SEG" 2>"$TMP/fields" && ok "a record carries every field (key, roles, hashes, tokens, status, client...)" || fail "record fields: $(cat "$TMP/fields")"

# 5. A queue too small for an outage: what does not fit is counted and logged with its
#    request id, never dropped silently.
kill -TERM "$GW"; wait "$GW"
kill -USR1 "$KAFKA"
CITADEL_GATEWAY_LISTEN=127.0.0.1 CITADEL_GATEWAY_SANITIZER=$SAN CITADEL_GATEWAY_PORT=$GPORT CITADEL_GATEWAY_ADMIN_PORT=$GADMIN \
    CITADEL_ROUTER_ENDPOINT=$FE CITADEL_KAFKA_BROKERS=$BROKERS CITADEL_KAFKA_OPTIONS=$CLIENT_OPTS \
    CITADEL_GATEWAY_AUDIT_QUEUE_MAX=5 CITADEL_GATEWAY_DRAIN_TIMEOUT_MS=1000 \
    "$BIN/citadel-gateway" >"$TMP/gateway2.log" 2>&1 &
GW=$!; PIDS="$PIDS $GW"
PROBES=0
until model_listed; do PROBES=$((PROBES + 1)); sleep 0.1; [ $PROBES -gt 100 ] && break; done
$LOAD "$URL" "$KEYFILE" "$NAME" 12 "$TMP/run3" --threads 2 >/dev/null 2>&1
SENT=$((PROBES + 1 + 12))   # every probe that reached the gateway, the one that passed, 12 chats
FULL=$(metric "$GADMIN" 'citadel_gateway_audit_kafka_messages_total{outcome="lost",reason="queue_full"}')
sleep 1.2   # a burst's summary line comes once its second is over
LINES=$(grep -c '"msg":"kafka: message lost".*"reason":"queue full"' "$TMP/gateway2.log")
SUMMED=$(sed -n 's/.*kafka: \([0-9]*\) more message(s) lost.*/\1/p' "$TMP/gateway2.log" | awk '{ s += $1 } END { print s + 0 }')
# The queue holds 5: of the 12 chats alone at least 7 overflow; never more than all but 5.
if [ "${FULL:-0}" -ge 7 ] && [ "${FULL:-0}" -le $((SENT - 5)) ] && [ $((LINES + SUMMED)) -eq "$FULL" ] && \
   grep -q '"request_id":"req-[0-9a-f]*","msg":"kafka: message lost"' "$TMP/gateway2.log"; then
    ok "queue of 5 during an outage: $FULL events over it counted as lost and logged by request id ($LINES lines one by one, $SUMMED in per-second summaries)"
else fail "small queue: lost=$FULL of $SENT sent, $LINES log lines + $SUMMED summed"; fi
kill -USR2 "$KAFKA"

[ $failed -eq 0 ] || { echo "--- logs"; tail -n 15 "$TMP"/*.log; }
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
