#!/bin/sh
# batch_test.sh - batch jobs over Kafka: citadel-kafka-dev, the router's batch bridge and
# one worker on stories260K:
#   - `citadel batch submit` sends 100 requests; the router is killed with -9 in the
#     middle of the batch and started again; `citadel batch results --wait` then gives
#     exactly 100 results, one per request id (a request the dead router had answered
#     but not committed may have run twice: its duplicate is skipped), none an error;
#   - a result's text is what `citadel generate --chat --temperature 0` gives;
#   - every batch request was audited (an AuditEvent per request id on citadel.audit,
#     written by citadel-audit).
# The consumer group's session is 6 s here (45 s by default) so the new router gets the
# partitions of the dead one soon.
# Usage: tests/integration/batch_test.sh [BUILD_DIR]   (run from the repository root)
set -u
BUILD=${1:-${BUILD:-build}}
BIN=$BUILD/bin
MODEL=tests/data/models/stories260K.gguf
NAME=stories260K

for f in "$BIN/citadel" "$BIN/citadel-router" "$BIN/citadel-worker" "$BIN/citadel-kafka-dev" "$BIN/citadel-audit"; do
    if [ ! -x "$f" ]; then echo "batch_test: $f missing (run make)"; echo "0 passed, 1 failed"; exit 1; fi
done

. "$(dirname "$0")/lib.sh"
fleet_begin 5521
RADMIN=$((BASE + 2)); WADMIN=$((BASE + 3)); KADMIN=$((BASE + 4)); AADMIN=$((BASE + 5))
export CITADEL_HOME=$TMP/home
OPTS="reconnect.backoff.max.ms=1000,session.timeout.ms=6000,heartbeat.interval.ms=1000"

metric() { curl -s --max-time 5 "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
CITADEL_KAFKA_DEV_ADMIN_PORT=$KADMIN "$BIN/citadel-kafka-dev" >"$TMP/kafka.log" 2>&1 &
PIDS="$PIDS $!"
i=0; while [ ! -s "$CITADEL_HOME/run/kafka.bootstrap" ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
BROKERS=$(cat "$CITADEL_HOME/run/kafka.bootstrap" 2>/dev/null)
[ -n "$BROKERS" ] && ok "citadel-kafka-dev up" || { fail "citadel-kafka-dev up"; exit 1; }
export CITADEL_KAFKA_BROKERS=$BROKERS
CITADEL_AUDIT_DIR=$TMP/audit CITADEL_AUDIT_ADMIN_PORT=$AADMIN CITADEL_AUDIT_FSYNC_INTERVAL=200ms \
    CITADEL_KAFKA_OPTIONS=$OPTS "$BIN/citadel-audit" >"$TMP/audit.log" 2>&1 &
PIDS="$PIDS $!"
start_router() {
    CITADEL_ROUTER_FRONTEND=$FE CITADEL_ROUTER_BACKEND=$BE CITADEL_ROUTER_ADMIN_PORT=$RADMIN \
        CITADEL_KAFKA_OPTIONS=$OPTS "$BIN/citadel-router" >>"$TMP/router.log" 2>&1 &
    ROUTER=$!; PIDS="$PIDS $ROUTER"
}
start_router
CITADEL_WORKER_ID=batch-w0 CITADEL_WORKER_MODEL=$MODEL CITADEL_WORKER_ROUTER=$BE CITADEL_WORKER_THREADS=1 \
    CITADEL_WORKER_ADMIN_PORT=$WADMIN "$BIN/citadel-worker" >"$TMP/worker.log" 2>&1 &
PIDS="$PIDS $!"

python3 -c '
import json
for i in range(100):
    print(json.dumps({"request_id": "job-%03d" % i, "model": "stories260K", "max_tokens": 32, "temperature": 0,
                      "messages": [{"role": "user", "content": "Tell me about number %d" % i}]}))' >"$TMP/batch.jsonl"
if OUT=$("$BIN/citadel" batch submit "$TMP/batch.jsonl" --batch-id b1 2>"$TMP/submit.err") && [ "$OUT" = "b1 100" ]; then
    ok "submit: 100 requests acknowledged ($(cat "$TMP/submit.err"))"
else fail "submit: '$OUT' $(cat "$TMP/submit.err")"; fi

# Kill the router once about a third of the results are out, then start it again.
i=0; DONE=0
while [ $i -lt 300 ]; do
    DONE=$(metric "$RADMIN" citadel_router_batch_results_total); DONE=${DONE:-0}
    [ "$DONE" -ge 30 ] && break
    sleep 0.1; i=$((i + 1))
done
kill -9 "$ROUTER"; wait "$ROUTER" 2>/dev/null
if [ "$DONE" -ge 30 ] && [ "$DONE" -lt 100 ]; then ok "router killed with -9 mid-batch ($DONE of 100 results produced)"
else fail "router killed mid-batch: $DONE results produced when killed"; fi
start_router

"$BIN/citadel" batch results --batch b1 --wait --timeout 90 >"$TMP/results" 2>"$TMP/results.err"; RC=$?
python3 - "$TMP/results" >"$TMP/check" 2>&1 <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ids = [r["request_id"] for r in rows]
assert len(ids) == 100, len(ids)
assert sorted(ids) == ["job-%03d" % i for i in range(100)], "ids differ"
bad = [r for r in rows if r["error"] or r["finish_reason"] not in ("stop", "length") or not r["text"]]
assert not bad, bad[:2]
print("ok")
EOF
if [ $RC -eq 0 ] && grep -q '^ok' "$TMP/check"; then
    ok "results --wait: exactly 100, one per request id, none failed ($(cat "$TMP/results.err"))"
else fail "results: rc $RC $(cat "$TMP/results.err") $(cat "$TMP/check")"; fi

WANT=$("$BIN/citadel" generate --model "$MODEL" --chat --prompt "Tell me about number 7" --temperature 0 --max-tokens 32 --json \
    | python3 -c 'import json,sys; sys.stdout.write(json.load(sys.stdin)["text"])')
GOT=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r=json.loads(l)
    if r["request_id"]=="job-007": sys.stdout.write(r["text"])' "$TMP/results")
if [ -n "$GOT" ] && [ "$GOT" = "$WANT" ]; then ok "job-007's text equals citadel generate --chat --temperature 0"
else fail "job-007: got '$GOT' want '$WANT'"; fi

i=0
while [ $i -lt 50 ]; do
    N=$(cat "$TMP"/audit/audit-*.jsonl 2>/dev/null | python3 -c 'import json,sys; print(len({json.loads(l)["request_id"] for l in sys.stdin if "\"action\":\"batch\"" in l}))')
    [ "$N" = 100 ] && break
    sleep 0.2; i=$((i + 1))
done
if [ "$N" = 100 ]; then ok "every batch request audited (100 request ids with action batch)"; else fail "batch audit: $N request ids"; fi

[ $failed -eq 0 ] || { echo "--- logs"; tail -n 15 "$TMP"/*.log; }
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
