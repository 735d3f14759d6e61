#!/bin/sh
# gateway_test.sh - the whole fleet on loopback (router, two workers, the HTTPS gateway)
# on the tiny stories260K model, driven with curl over TLS as an OpenAI client would:
#   - /health, GET /v1/models (the router's ModelList: stories260K), TLS 1.2 and 1.3
#     accepted, TLS 1.1 refused, the self-signed certificate verifies with --cacert;
#   - a greedy chat completion equals `citadel generate --chat --temperature 0`, a greedy
#     /v1/completions equals `citadel generate --prompt`;
#   - streamed (SSE) chunks concatenate to the non-streamed text, end with data: [DONE],
#     and stream_options.include_usage adds a usage chunk;
#   - errors in OpenAI's shape: 401 (no key, wrong key), 400 (malformed JSON, wrong type,
#     n=2), 404 (unknown model), 413 (oversize body);
#   - a client that disconnects mid-stream cancels its generation: the workers are free
#     at once (each worker runs a generation of ~40 s that the disconnect must stop);
#   - SIGTERM stops the gateway cleanly.
# Ports are picked from the pid so that parallel runs rarely collide. No timing assert is
# tight: each bound is many times what the operation needs.
# Usage: tests/integration/gateway_test.sh [BUILD_DIR]   (run from the repository root)
set -u
BUILD=${1:-${BUILD:-build}}
BIN=$BUILD/bin
MODEL=tests/data/models/stories260K.gguf
NAME=stories260K

for f in "$BIN/citadel" "$BIN/citadel-router" "$BIN/citadel-worker" "$BIN/citadel-gateway" "$BIN/citadel-sanitizer"; do
    if [ ! -x "$f" ]; then echo "gateway_test: $f missing (run make)"; echo "0 passed, 1 failed"; exit 1; fi
done

. "$(dirname "$0")/lib.sh"
fleet_begin 1733
RADMIN=$((BASE + 2))
GPORT=$((BASE + 5))
GADMIN=$((BASE + 6))
URL=https://127.0.0.1:$GPORT
export CITADEL_HOME=$TMP/home

# Long generations need a context longer than the default: 8192 positions let one
# request run for ~40 s on one thread, which only a working cancel cuts short.
CITADEL_ROUTER_FRONTEND=$FE CITADEL_ROUTER_BACKEND=$BE CITADEL_ROUTER_ADMIN_PORT=$RADMIN \
    CITADEL_ROUTER_DRAIN_SECONDS=5 "$BIN/citadel-router" >"$TMP/router.log" 2>&1 &
PIDS="$PIDS $!"
for n in 0 1; do
    CITADEL_WORKER_ID=gw-test-w$n CITADEL_WORKER_MODEL=$MODEL CITADEL_WORKER_ROUTER=$BE \
        CITADEL_WORKER_THREADS=1 CITADEL_WORKER_CTX=8192 CITADEL_WORKER_ADMIN_PORT=$((BASE + 3 + n)) \
        CITADEL_WORKER_DRAIN_SECONDS=5 "$BIN/citadel-worker" >"$TMP/worker$n.log" 2>&1 &
    PIDS="$PIDS $!"
done
start_sanitizer $((BASE + 7))
CITADEL_GATEWAY_LISTEN=127.0.0.1 CITADEL_GATEWAY_SANITIZER=$SAN CITADEL_GATEWAY_PORT=$GPORT CITADEL_GATEWAY_ADMIN_PORT=$GADMIN \
    CITADEL_ROUTER_ENDPOINT=$FE CITADEL_GATEWAY_DRAIN_TIMEOUT_MS=3000 \
    "$BIN/citadel-gateway" >"$TMP/gateway.log" 2>&1 &
GW=$!; PIDS="$PIDS $GW"

KEYFILE=$CITADEL_HOME/keys/admin.key
CERT=$CITADEL_HOME/tls/server.crt

# json EXPR < FILE: prints EXPR evaluated on the parsed JSON `d` (no newline added).
json() { python3 -c 'import json,sys; d=json.load(sys.stdin); v=eval(sys.argv[1]); sys.stdout.write(v if isinstance(v,str) else json.dumps(v))' "$1" 2>/dev/null; }

# call PATH [curl args...]: the HTTP status on stdout, the body in $TMP/body.
call() {
    p=$1; shift
    curl -sk --max-time 60 -o "$TMP/body" -w '%{http_code}' "$URL$p" "$@"
}
# post PATH JSON [curl args...]: an authenticated POST.
post() {
    p=$1; d=$2; shift 2
    call "$p" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' --data-binary "$d" "$@"
}
# An OpenAI error body: {"error": {"message": "...", "type": "...", "param", "code"}}.
error_shaped() {
    json 'str(isinstance(d["error"]["message"],str) and len(d["error"]["message"])>0 and isinstance(d["error"]["type"],str) and "param" in d["error"] and "code" in d["error"])' <"$TMP/body"
}
metric() {
    curl -s --max-time 5 "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'
}

# Ready: the key exists and /v1/models lists the model (the router has heard from the
# workers and answered the gateway's ModelsRequest): 15 s at most.
i=0; MODELS=""
while [ $i -lt 150 ]; do
    if [ -s "$KEYFILE" ]; then
        KEY=$(cat "$KEYFILE")
        MODELS=$(curl -sk --max-time 2 -H "Authorization: Bearer $KEY" "$URL/v1/models" | json '",".join(m["id"] for m in d["data"])')
        case ",$MODELS," in *",$NAME,"*) break ;; esac
    fi
    sleep 0.1; i=$((i + 1))
done
case ",$MODELS," in
    *",$NAME,"*) ok "GET /v1/models lists $NAME ($MODELS)" ;;
    *) fail "GET /v1/models lists $NAME: got '$MODELS'"; tail -n 20 "$TMP"/*.log; echo "$passed passed, $failed failed"; exit 1 ;;
esac
ST=$(call /v1/models -H "Authorization: Bearer $KEY")
if [ "$ST" = 200 ] && [ "$(json 'd["object"]+"/"+d["data"][0]["object"]' <"$TMP/body")" = "list/model" ]; then ok "/v1/models is an OpenAI list of model objects"
else fail "/v1/models shape: $ST $(cat "$TMP/body")"; fi
KEY=$(cat "$KEYFILE")
if [ "$(stat -c %a "$KEYFILE")" = 600 ]; then ok "admin key file is mode 0600"; else fail "admin key mode $(stat -c %a "$KEYFILE")"; fi

ST=$(call /health)
if [ "$ST" = 200 ] && [ "$(json 'd["status"]' <"$TMP/body")" = ok ]; then ok "/health ok ($(cat "$TMP/body"))"
else fail "/health: $ST $(cat "$TMP/body")"; fi

# TLS: the generated certificate verifies; 1.2 and 1.3 are served; 1.1 is refused.
ST=$(curl -s --max-time 30 --cacert "$CERT" -o "$TMP/body" -w '%{http_code}' "$URL/health")
if [ "$ST" = 200 ]; then ok "certificate under CITADEL_HOME/tls verifies (--cacert, 127.0.0.1)"; else fail "--cacert: status $ST"; fi
ST=$(curl -s --max-time 30 --cacert "$CERT" --resolve "localhost:$GPORT:127.0.0.1" -o /dev/null -w '%{http_code}' "https://localhost:$GPORT/health")
if [ "$ST" = 200 ]; then ok "certificate verifies for localhost too"; else fail "--cacert localhost: status $ST"; fi
V12=$(curl -sk --max-time 30 --tlsv1.2 --tls-max 1.2 -o /dev/null -w '%{http_code} %{ssl_verify_result}' "$URL/health")
V13=$(curl -sk --max-time 30 --tlsv1.3 -o /dev/null -w '%{http_code}' "$URL/health")
if [ "${V12%% *}" = 200 ] && [ "$V13" = 200 ]; then ok "TLS 1.2 and TLS 1.3 accepted"; else fail "TLS 1.2/1.3: $V12 / $V13"; fi
# The client side is told to allow old protocols (SECLEVEL=0), so a failure is the server's.
curl -sk --max-time 30 --tlsv1 --tls-max 1.1 --ciphers 'DEFAULT:@SECLEVEL=0' -o /dev/null "$URL/health" 2>"$TMP/tls11"; R11=$?
if [ $R11 -ne 0 ]; then ok "TLS 1.1 refused (curl exit $R11)"; else fail "TLS 1.1 accepted"; fi

# Greedy chat completion == citadel generate --chat.
PROMPT="Tell me a story about a cat"
"$BIN/citadel" generate --model "$MODEL" --chat --prompt "$PROMPT" --temperature 0 --max-tokens 40 --json >"$TMP/cli.json"
json 'd["text"]' <"$TMP/cli.json" >"$TMP/expected_chat"
CHAT='{"model":"'$NAME'","messages":[{"role":"user","content":"'$PROMPT'"}],"temperature":0,"max_tokens":40}'
ST=$(post /v1/chat/completions "$CHAT")
json 'd["choices"][0]["message"]["content"]' <"$TMP/body" >"$TMP/got_chat"
cp "$TMP/body" "$TMP/chat.json"
if [ "$ST" = 200 ] && [ -s "$TMP/expected_chat" ] && cmp -s "$TMP/expected_chat" "$TMP/got_chat"; then ok "greedy chat completion equals citadel generate --chat"
else fail "greedy chat: $ST got '$(cat "$TMP/got_chat")' want '$(cat "$TMP/expected_chat")'"; fi
if [ "$(json 'd["object"]+" "+d["choices"][0]["message"]["role"]+" "+str(d["usage"]["completion_tokens"])' <"$TMP/chat.json")" = \
     "chat.completion assistant $(json 'str(d["usage"]["completion_tokens"])' <"$TMP/cli.json")" ]; then
    ok "chat completion object, role and usage match"
else fail "chat completion fields: $(cat "$TMP/chat.json")"; fi

# Greedy /v1/completions == citadel generate --prompt.
RAW="Once upon a time"
"$BIN/citadel" generate --model "$MODEL" --prompt "$RAW" --temperature 0 --max-tokens 48 --json | json 'd["text"]' >"$TMP/expected_raw"
COMP='{"model":"'$NAME'","prompt":"'$RAW'","temperature":0,"max_tokens":48}'
ST=$(post /v1/completions "$COMP")
json 'd["choices"][0]["text"]' <"$TMP/body" >"$TMP/got_raw"
if [ "$ST" = 200 ] && [ -s "$TMP/expected_raw" ] && cmp -s "$TMP/expected_raw" "$TMP/got_raw" && [ "$(json 'd["object"]' <"$TMP/body")" = text_completion ]; then
    ok "greedy /v1/completions equals citadel generate --prompt"
else fail "greedy completion: $ST got '$(cat "$TMP/got_raw")' want '$(cat "$TMP/expected_raw")'"; fi

# sse FILE EXPR: concatenates EXPR over every data: chunk but [DONE] (Python).
sse_concat() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
out = []
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.rstrip("\r\n")
    if line.startswith("data: ") and line != "data: [DONE]":
        d = json.loads(line[6:])
        if d.get("choices"):
            v = eval(sys.argv[2])
            out.append(v or "")
sys.stdout.write("".join(out))
EOF
}
# Streamed chat: chunks concatenate to the non-streamed text, then data: [DONE]; with
# include_usage a final chunk carries usage and no choices.
SCHAT='{"model":"'$NAME'","messages":[{"role":"user","content":"'$PROMPT'"}],"temperature":0,"max_tokens":40,"stream":true,"stream_options":{"include_usage":true}}'
curl -sk -N --max-time 60 -D "$TMP/sse_head" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    --data-binary "$SCHAT" "$URL/v1/chat/completions" >"$TMP/sse_chat"
sse_concat "$TMP/sse_chat" 'd["choices"][0]["delta"].get("content")' >"$TMP/got_schat"
NCHUNKS=$(grep -c '^data: {' "$TMP/sse_chat")
if cmp -s "$TMP/expected_chat" "$TMP/got_schat" && [ "$NCHUNKS" -gt 2 ]; then ok "streamed chat chunks ($NCHUNKS) concatenate to the non-streamed text"
else fail "streamed chat: got '$(cat "$TMP/got_schat")' want '$(cat "$TMP/expected_chat")'"; fi
if [ "$(grep '^data: ' "$TMP/sse_chat" | tail -n 1 | tr -d '\r')" = "data: [DONE]" ] && grep -qi '^content-type: text/event-stream' "$TMP/sse_head"; then
    ok "stream is text/event-stream and ends with data: [DONE]"
else fail "stream end: $(tail -n 3 "$TMP/sse_chat")"; fi
USAGE=$(grep '^data: {' "$TMP/sse_chat" | tail -n 1 | sed 's/^data: //' | json 'str(d["choices"])+" "+str(d["usage"]["completion_tokens"])')
WANT_USAGE="[] $(json 'str(d["usage"]["completion_tokens"])' <"$TMP/chat.json")"
if [ "$USAGE" = "$WANT_USAGE" ]; then ok "include_usage adds a usage chunk ($USAGE)"; else fail "usage chunk: '$USAGE' want '$WANT_USAGE'"; fi
if grep -q '"object":"chat.completion.chunk"' "$TMP/sse_chat"; then ok "chunks are chat.completion.chunk objects"; else fail "chunk object: $(head -n 2 "$TMP/sse_chat")"; fi

# Streamed completion, without include_usage: no usage chunk.
SCOMP='{"model":"'$NAME'","prompt":"'$RAW'","temperature":0,"max_tokens":48,"stream":true}'
curl -sk -N --max-time 60 -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    --data-binary "$SCOMP" "$URL/v1/completions" >"$TMP/sse_comp"
sse_concat "$TMP/sse_comp" 'd["choices"][0].get("text")' >"$TMP/got_scomp"
if cmp -s "$TMP/expected_raw" "$TMP/got_scomp" && [ "$(grep '^data: ' "$TMP/sse_comp" | tail -n 1 | tr -d '\r')" = "data: [DONE]" ] \
   && ! grep '^data: {' "$TMP/sse_comp" | grep -q '"choices":\[\]'; then
    ok "streamed completion concatenates to the non-streamed text"
else fail "streamed completion: got '$(cat "$TMP/got_scomp")' want '$(cat "$TMP/expected_raw")'"; fi

# Keep-alive: two requests on one connection.
curl -sk --max-time 60 -H "Authorization: Bearer $KEY" -o /dev/null -o /dev/null -w '%{num_connects}\n' \
    "$URL/v1/models" "$URL/health" >"$TMP/ka"
if [ "$(tr '\n' ' ' <"$TMP/ka")" = "1 0 " ]; then ok "HTTP/1.1 keep-alive reuses the connection"; else fail "keep-alive: connects $(tr '\n' ' ' <"$TMP/ka")"; fi

# Errors, in OpenAI's shape.
ST=$(call /v1/chat/completions -H 'Content-Type: application/json' --data-binary "$CHAT")
if [ "$ST" = 401 ] && [ "$(error_shaped)" = True ]; then ok "401 without a key ($(json 'd["error"]["message"]' <"$TMP/body"))"; else fail "no key: $ST $(cat "$TMP/body")"; fi
ST=$(call /v1/chat/completions -H "Authorization: Bearer sk-wrong-key-0000" -H 'Content-Type: application/json' --data-binary "$CHAT")
if [ "$ST" = 401 ] && [ "$(error_shaped)" = True ]; then ok "401 with a wrong key"; else fail "wrong key: $ST $(cat "$TMP/body")"; fi
ST=$(call /v1/models)
if [ "$ST" = 401 ]; then ok "401 for /v1/models without a key"; else fail "/v1/models no key: $ST"; fi
ST=$(post /v1/chat/completions '{"model":"'$NAME'","messages":[{"role":"user","content":"hi"}')
if [ "$ST" = 400 ] && [ "$(error_shaped)" = True ] && [ "$(json 'd["error"]["type"]' <"$TMP/body")" = invalid_request_error ]; then
    ok "400 for malformed JSON ($(json 'd["error"]["message"]' <"$TMP/body"))"
else fail "malformed JSON: $ST $(cat "$TMP/body")"; fi
ST=$(post /v1/chat/completions '{"model":"'$NAME'","messages":[{"role":"user","content":"hi"}],"temperature":"hot"}')
if [ "$ST" = 400 ] && [ "$(error_shaped)" = True ] && [ "$(json 'd["error"]["param"]' <"$TMP/body")" = temperature ]; then
    ok "400 for a wrong type, param named ($(json 'd["error"]["message"]' <"$TMP/body"))"
else fail "wrong type: $ST $(cat "$TMP/body")"; fi
ST=$(post /v1/chat/completions '{"model":"'$NAME'","messages":"hi"}')
if [ "$ST" = 400 ] && [ "$(error_shaped)" = True ]; then ok "400 for messages of the wrong type"; else fail "messages type: $ST $(cat "$TMP/body")"; fi
ST=$(post /v1/chat/completions '{"model":"'$NAME'","messages":[{"role":"user","content":"hi"}],"n":2}')
if [ "$ST" = 400 ] && [ "$(error_shaped)" = True ] && [ "$(json 'd["error"]["param"]' <"$TMP/body")" = n ]; then
    ok "400 for n=2 ($(json 'd["error"]["message"]' <"$TMP/body"))"
else fail "n=2: $ST $(cat "$TMP/body")"; fi
ST=$(post /v1/chat/completions '{"model":"no-such-model","messages":[{"role":"user","content":"hi"}]}')
if [ "$ST" = 404 ] && [ "$(error_shaped)" = True ]; then ok "404 for an unknown model ($(json 'd["error"]["message"]' <"$TMP/body"))"
else fail "unknown model: $ST $(cat "$TMP/body")"; fi
ST=$(call /v1/nope -H "Authorization: Bearer $KEY")
if [ "$ST" = 404 ]; then ok "404 for an unknown path"; else fail "unknown path: $ST"; fi
python3 -c 'import sys; sys.stdout.write("{\"model\":\"'$NAME'\",\"prompt\":\"" + "a" * (2 << 20) + "\"}")' >"$TMP/big.json"
ST=$(call /v1/completions -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' --data-binary "@$TMP/big.json")
if [ "$ST" = 413 ]; then ok "413 for a 2 MiB body"; else fail "oversize body: $ST $(head -c 300 "$TMP/body")"; fi

# A client that disconnects mid-stream cancels its generation. Two long generations
# (8000 tokens, ~40 s each on one thread) land one on each worker; both clients give up
# after 1 s; then a short request on each worker must be answered within 15 s, which
# only happens if both long generations were cancelled.
LONG='{"model":"'$NAME'","prompt":"Once","temperature":0,"max_tokens":8000,"stream":true}'
CANCELS0=$(metric "$RADMIN" citadel_router_cancels_total)
for n in 1 2; do
    curl -sk -N --max-time 1.5 -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        --data-binary "$LONG" "$URL/v1/completions" >"$TMP/long$n" 2>/dev/null &
    eval "L$n=\$!"
done
wait "$L1" "$L2"
GOTLONG=$(grep -c '^data: {' "$TMP/long1")
# worker_state: "<busy0>,<busy1> <cancelled0+cancelled1>" from the workers' /metrics.
worker_state() {
    b0=$(metric $((BASE + 3)) citadel_worker_busy); b1=$(metric $((BASE + 4)) citadel_worker_busy)
    c0=$(metric $((BASE + 3)) 'citadel_worker_requests_total{outcome="cancelled"}')
    c1=$(metric $((BASE + 4)) 'citadel_worker_requests_total{outcome="cancelled"}')
    echo "$b0,$b1 $((${c0:-0} + ${c1:-0}))"
}
i=0
while [ "$(worker_state)" != "0,0 2" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
STATE=$(worker_state)
CANCELS=$(metric "$RADMIN" citadel_router_cancels_total)
if [ "$GOTLONG" -gt 0 ] && [ "$STATE" = "0,0 2" ]; then
    ok "disconnect mid-stream ($GOTLONG chunks received) cancels both generations: workers idle within $((i * 100)) ms (router cancels_total=$CANCELS)"
else fail "disconnect mid-stream: $GOTLONG chunks, workers busy0,busy1 cancelled = $STATE, router cancels $CANCELS0 -> $CANCELS"; fi
T0=$(date +%s%N)
SHORT='{"model":"'$NAME'","prompt":"Once upon a time","temperature":0,"max_tokens":16}'
for n in 1 2; do
    curl -sk --max-time 15 -o "$TMP/short$n" -w '%{http_code}' -H "Authorization: Bearer $KEY" \
        -H 'Content-Type: application/json' --data-binary "$SHORT" "$URL/v1/completions" >"$TMP/short$n.st" &
    eval "S$n=\$!"
done
wait "$S1" "$S2"
MS=$(( ($(date +%s%N) - T0) / 1000000 ))
if [ "$(cat "$TMP/short1.st")" = 200 ] && [ "$(cat "$TMP/short2.st")" = 200 ]; then ok "both workers free right after the disconnect (two requests in ${MS} ms)"
else fail "workers busy after the disconnect: $(cat "$TMP/short1.st") $(cat "$TMP/short2.st") in ${MS} ms"; fi

# SIGTERM: the gateway drains and exits 0.
kill -TERM "$GW"
i=0
while kill -0 "$GW" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
wait "$GW"; RG=$?
if [ $RG -eq 0 ]; then ok "SIGTERM stops the gateway cleanly"; else fail "gateway SIGTERM: rc $RG"; fi

[ $failed -eq 0 ] || { echo "--- logs"; tail -n 20 "$TMP"/*.log; }
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
