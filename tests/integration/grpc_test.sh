#!/bin/sh
# grpc_test.sh - the gateway's gRPC endpoint (citadel.v1.Inference over TLS) on a real
# fleet (router, one worker on stories260K), driven by tests/integration/grpc_client.c
# (gRPC core, the certificate verified):
#   - Health without a key; Generate refused without a key or with a revoked key
#     (UNAUTHENTICATED), for a role without the permission (PERMISSION_DENIED) and for
#     a model the key does not allow;
#   - Generate streams the worker's GenerateChunks as they are (token ids, worker id)
#     whose text equals `citadel generate` (greedy) for a prompt and for a chat, ending
#     with finish_reason and usage;
#   - ListModels lists what the key may use;
#   - limits are shared with REST: a key with rpm 3 gets two gRPC calls and one REST
#     call, then RESOURCE_EXHAUSTED with retry-after and x-ratelimit-* metadata;
#   - a client that cancels mid-stream cancels the generation: the worker counts it
#     cancelled and is idle at once;
#   - every call but Health is an AuditEvent (citadel-kafka-dev and citadel-audit run
#     here): the key, roles, action, usage, status (499 for the cancelled one).
# Usage: tests/integration/grpc_test.sh [BUILD_DIR]   (run from the repository root)
set -u
BUILD=${1:-${BUILD:-build}}
BIN=$BUILD/bin
CLIENT=$BUILD/tests/integration/grpc_client
MODEL=tests/data/models/stories260K.gguf
NAME=stories260K

for f in "$BIN/citadel" "$BIN/citadel-router" "$BIN/citadel-worker" "$BIN/citadel-gateway" "$BIN/citadel-sanitizer" "$CLIENT" \
         "$BIN/citadel-audit" "$BIN/citadel-kafka-dev"; do
    if [ ! -x "$f" ]; then echo "grpc_test: $f missing (run make)"; echo "0 passed, 1 failed"; exit 1; fi
done

. "$(dirname "$0")/lib.sh"
fleet_begin 4129
GPORT=$((BASE + 5)); RPCPORT=$((BASE + 6))
export CITADEL_HOME=$TMP/home
AUDIT_DIR=$TMP/audit

CITADEL_KAFKA_DEV_ADMIN_PORT=$((BASE + 4)) "$BIN/citadel-kafka-dev" >"$TMP/kafka.log" 2>&1 &
PIDS="$PIDS $!"
i=0; while [ ! -s "$CITADEL_HOME/run/kafka.bootstrap" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
BROKERS=$(cat "$CITADEL_HOME/run/kafka.bootstrap" 2>/dev/null)
CITADEL_KAFKA_BROKERS=$BROKERS CITADEL_AUDIT_DIR=$AUDIT_DIR CITADEL_AUDIT_ADMIN_PORT=$((BASE + 7)) CITADEL_AUDIT_FSYNC_INTERVAL=200ms \
    "$BIN/citadel-audit" >"$TMP/audit.log" 2>&1 &
PIDS="$PIDS $!"

CITADEL_ROUTER_FRONTEND=$FE CITADEL_ROUTER_BACKEND=$BE CITADEL_ROUTER_ADMIN_PORT=$((BASE + 2)) \
    "$BIN/citadel-router" >"$TMP/router.log" 2>&1 &
PIDS="$PIDS $!"
CITADEL_WORKER_ID=grpc-w0 CITADEL_WORKER_MODEL=$MODEL CITADEL_WORKER_ROUTER=$BE CITADEL_WORKER_THREADS=1 \
    CITADEL_WORKER_CTX=8192 CITADEL_WORKER_ADMIN_PORT=$((BASE + 3)) "$BIN/citadel-worker" >"$TMP/worker.log" 2>&1 &
PIDS="$PIDS $!"
start_sanitizer
CITADEL_GATEWAY_LISTEN=127.0.0.1 CITADEL_GATEWAY_SANITIZER=$SAN CITADEL_GATEWAY_PORT=$GPORT CITADEL_GATEWAY_GRPC_PORT=$RPCPORT \
    CITADEL_GATEWAY_ADMIN_PORT=0 CITADEL_ROUTER_ENDPOINT=$FE CITADEL_KAFKA_BROKERS=$BROKERS \
    "$BIN/citadel-gateway" >"$TMP/gateway.log" 2>&1 &
GW=$!; PIDS="$PIDS $GW"
CERT=$CITADEL_HOME/tls/server.crt

json() { python3 -c 'import json,sys; d=json.load(sys.stdin); v=eval(sys.argv[1]); sys.stdout.write(v if isinstance(v,str) else json.dumps(v))' "$1" 2>/dev/null; }
# rpc METHOD [client args...]: runs the client, output in $TMP/out.
rpc() { m=$1; shift; "$CLIENT" "127.0.0.1:$RPCPORT" "$CERT" "$m" "$@" >"$TMP/out" 2>"$TMP/client.err"; }
field() { awk -v k="$1" '$1 == k { sub("^" k " ", ""); print; exit }' "$TMP/out"; }
newkey() { "$BIN/citadel" keys create "$@" | tail -n 1; }

i=0
while [ $i -lt 150 ]; do
    if [ -s "$CITADEL_HOME/keys/admin.key" ] && [ -s "$CERT" ]; then
        ADMIN=$(cat "$CITADEL_HOME/keys/admin.key")
        rpc ListModels --key "$ADMIN"
        [ "$(field models)" = "$NAME" ] && break
    fi
    sleep 0.1; i=$((i + 1))
done
if [ "$(field models)" != "$NAME" ]; then fail "fleet up over gRPC: $(cat "$TMP/out" "$TMP/client.err")"; tail -n 20 "$TMP"/*.log; echo "$passed passed, $failed failed"; exit 1; fi
ok "ListModels over TLS (certificate verified) lists $NAME"

rpc Health
if [ "$(field status)" = 0 ] && [ "$(field health)" = "ok 1 0" ]; then ok "Health without a key: ok, router connected, 0 in flight"
else fail "Health: $(cat "$TMP/out")"; fi

USER_KEY=$(newkey --role user --id grpc-user)
rpc Generate --model "$NAME"
S1=$(field status)
rpc Generate --model "$NAME" --key ck-0000000000000000000000000000000000000000000000000000000000000000
S2=$(field status)
if [ "$S1" = 16 ] && [ "$S2" = 16 ]; then ok "Generate without a key and with a wrong key: UNAUTHENTICATED"
else fail "no key: $S1, wrong key: $S2"; fi

# Greedy generations equal citadel generate.
"$BIN/citadel" generate --model "$MODEL" --prompt "Once upon a time" --temperature 0 --max-tokens 24 --json | json 'd["text"]' >"$TMP/want"
rpc Generate --key "$USER_KEY" --model "$NAME" --prompt "Once upon a time" --max-tokens 24 --text-out "$TMP/got"
if [ "$(field status)" = 0 ] && [ "$(field chunks)" -ge 2 ] && [ -n "$(field finish)" ] && [ "$(field tokens)" = 24 ] &&
   [ "$(field worker)" = grpc-w0 ] && [ "$(field usage | cut -d' ' -f2)" = 24 ] && cmp -s "$TMP/want" "$TMP/got"; then
    ok "Generate (prompt) streams $(field chunks) chunks (24 token ids, worker grpc-w0), finish $(field finish), text equals citadel generate"
else fail "Generate prompt: $(cat "$TMP/out") want '$(cat "$TMP/want")'"; fi
"$BIN/citadel" generate --model "$MODEL" --chat --prompt "Tell me a story" --temperature 0 --max-tokens 20 --json | json 'd["text"]' >"$TMP/want"
rpc Generate --key "$USER_KEY" --model "$NAME" --chat "Tell me a story" --max-tokens 20 --text-out "$TMP/got"
if [ "$(field status)" = 0 ] && cmp -s "$TMP/want" "$TMP/got"; then ok "Generate (chat messages) equals citadel generate --chat"
else fail "Generate chat: $(cat "$TMP/out") want '$(cat "$TMP/want")'"; fi

# Permissions and model lists.
AUD=$(newkey --role auditor)
rpc Generate --key "$AUD" --model "$NAME"; S1=$(field status)
rpc ListModels --key "$AUD"; S2=$(field status)
OTHER=$(newkey --role user --models other-model)
rpc Generate --key "$OTHER" --model "$NAME"; S3=$(field status); M3=$(field message)
rpc ListModels --key "$OTHER"; S4=$(field status); L4=$(field models)
if [ "$S1" = 7 ] && [ "$S2" = 7 ] && [ "$S3" = 7 ] && [ "$S4" = 0 ] && [ -z "$L4" ]; then
    ok "auditor: Generate and ListModels PERMISSION_DENIED; a key for other-model: Generate denied ($M3), ListModels empty"
else fail "permissions: auditor $S1/$S2, other-model $S3/$S4 '$L4'"; fi
DOOMED=$(newkey --role user --id grpc-doomed)
"$BIN/citadel" keys revoke grpc-doomed >/dev/null
rpc Generate --key "$DOOMED" --model "$NAME"
if [ "$(field status)" = 16 ] && [ "$(field message)" = "API key revoked" ]; then ok "a revoked key: UNAUTHENTICATED 'API key revoked'"
else fail "revoked: $(cat "$TMP/out")"; fi

# Limits shared with REST: rpm 3 -> gRPC, REST, gRPC admitted, the 4th refused.
K=$(newkey --role user --rpm 3)
s=$(date +%S); s=${s#0}; [ "$s" -gt 50 ] && sleep $((61 - s))
rpc Generate --key "$K" --model "$NAME" --max-tokens 2; A=$(field status); L=$(awk '$2 == "x-ratelimit-limit-requests" { print $3 }' "$TMP/out")
R=$(curl -sk -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $K" -H 'Content-Type: application/json' \
    --data-binary '{"model":"'$NAME'","prompt":"Once","max_tokens":2}' "https://127.0.0.1:$GPORT/v1/completions")
rpc Generate --key "$K" --model "$NAME" --max-tokens 2; B=$(field status)
rpc Generate --key "$K" --model "$NAME" --max-tokens 2; C=$(field status)
RA=$(awk '$2 == "retry-after" { print $3 }' "$TMP/out"); REM=$(awk '$2 == "x-ratelimit-remaining-requests" { print $3 }' "$TMP/out")
if [ "$A $R $B $C" = "0 200 0 8" ] && [ "$L" = 3 ] && [ -n "$RA" ] && [ "$RA" -ge 1 ] && [ "$REM" = 0 ]; then
    ok "rpm 3 shared by gRPC and REST: 3 admitted, then RESOURCE_EXHAUSTED with retry-after $RA and x-ratelimit-* metadata"
else fail "limits: statuses $A $R $B $C, limit md '$L', retry-after '$RA', remaining '$REM'"; fi

# Cancel mid-stream: the worker's generation (8000 tokens, ~40 s uncancelled) ends at
# once: the worker counts it cancelled and is idle again.
metric() { curl -s --max-time 5 "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
WADMIN=$((BASE + 3))
C0=$(metric $WADMIN 'citadel_worker_requests_total{outcome="cancelled"}')
rpc Generate --key "$USER_KEY" --model "$NAME" --prompt "Once" --max-tokens 8000 --cancel-after 3
GOT=$(field chunks)
i=0
while [ $i -lt 50 ]; do
    [ "$(metric $WADMIN citadel_worker_busy)" = 0 ] && [ "$(metric $WADMIN 'citadel_worker_requests_total{outcome="cancelled"}')" = $(( ${C0:-0} + 1 )) ] && break
    sleep 0.1; i=$((i + 1))
done
if [ "$GOT" -ge 3 ] && [ $i -lt 50 ] && grep -q 'gRPC client cancelled: generation cancelled' "$TMP/gateway.log"; then
    ok "a client cancelling after $GOT chunks cancels its generation: the worker counts it cancelled and is idle within $((i * 100)) ms"
else fail "cancel: $GOT chunks, worker busy $(metric $WADMIN citadel_worker_busy), cancelled ${C0:-0} -> $(metric $WADMIN 'citadel_worker_requests_total{outcome="cancelled"}')"; fi

# SIGTERM: the gateway drains and exits 0 with gRPC on.
kill -TERM "$GW"
i=0
while kill -0 "$GW" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
wait "$GW"; RG=$?
if [ $RG -eq 0 ]; then ok "SIGTERM stops the gateway cleanly (gRPC included)"; else fail "gateway SIGTERM: rc $RG"; fi

# The audit trail: grpc-user made three Generate calls (prompt, chat, cancelled).
i=0
while [ $i -lt 50 ]; do
    N=$("$BIN/citadel" audit query --dir "$AUDIT_DIR" --key grpc-user 2>/dev/null | wc -l)
    [ "$N" -ge 3 ] && break
    sleep 0.2; i=$((i + 1))
done
"$BIN/citadel" audit query --dir "$AUDIT_DIR" --key grpc-user >"$TMP/events" 2>/dev/null
SUMMARY=$(python3 -c '
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
print(" ".join("%s/%s/%s/%s/%s" % (e["action"], e["status"], e["prompt_tokens"], e["completion_tokens"], ",".join(e["roles"]))
               for e in sorted(ev, key=lambda e: e["ts"])), "client=" + ",".join(sorted({e["client"] for e in ev})))
' "$TMP/events" 2>&1)
case "$SUMMARY" in
    "completions/200/5/24/user chat.completions/200/"*"/20/user completions/499/"*"client=127.0.0.1")
        ok "gRPC calls audited: $SUMMARY" ;;
    *) fail "gRPC audit events: $SUMMARY" ;;
esac
UNAUTH=$("$BIN/citadel" audit query --dir "$AUDIT_DIR" --action completions 2>/dev/null | python3 -c '
import json, sys
print(sum(1 for l in sys.stdin if json.loads(l)["status"] == 401))')
if [ "$UNAUTH" = 3 ]; then ok "the refused Generate calls (no key, wrong key, revoked key) are audited as 401"; else fail "401 events: $UNAUTH, want 3"; fi

if grep -l "ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error" "$TMP"/*.log; then fail "sanitizer report in a log"; fi
[ $failed -eq 0 ] || { echo "--- logs"; tail -n 20 "$TMP"/*.log; ls -R "$TMP/audit" 2>/dev/null | head; }
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
