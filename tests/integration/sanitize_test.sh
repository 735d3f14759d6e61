#!/bin/sh
# sanitize_test.sh - the sanitizer in the request path: router, one worker (stories260K),
# citadel-sanitizer and the HTTPS gateway on loopback, driven with curl over TLS:
#   - a phone number in a prompt is redacted before the model sees it: the greedy
#     completion and prompt_tokens are those of the prompt with [PHONE], not of the
#     original (the worker generated from the placeholder);
#   - a type whose policy is block (EMAIL) -> 400 pii_policy naming the type, never the
#     value; a blocked term in a prompt -> 400 content_policy;
#   - SIGHUP reloads the term list while a long stream is open: the stream finishes
#     whole on the list it started with, requests sent during repeated reloads all
#     succeed, and new requests get the new list;
#   - a blocked term the model is known to write (greedy output of the same prompt)
#     ends the output with finish_reason content_filter after exactly the text before
#     it, streamed and not;
#   - findings reach the gateway's request log as types and counts; no log holds a value;
#   - the sanitizer killed -> 503 (fail closed); the gateway with fail-open -> 200,
#     logged and counted; the sanitizer back -> redaction again.
# Usage: tests/integration/sanitize_test.sh [BUILD_DIR]   (run from the repository root)
set -u
BUILD=${1:-${BUILD:-build}}
BIN=$BUILD/bin
MODEL=tests/data/models/stories260K.gguf
NAME=stories260K

for f in "$BIN/citadel" "$BIN/citadel-router" "$BIN/citadel-worker" "$BIN/citadel-gateway" "$BIN/citadel-sanitizer"; do
    if [ ! -x "$f" ]; then echo "sanitize_test: $f missing (run make)"; echo "0 passed, 1 failed"; exit 1; fi
done

. "$(dirname "$0")/lib.sh"
fleet_begin 4409
GPORT=$((BASE + 4))
GADMIN=$((BASE + 5))
URL=https://127.0.0.1:$GPORT
export CITADEL_HOME=$TMP/home
TERMS=$TMP/terms.txt
printf '# blocked terms\nforbiddenword\n' >"$TERMS"

CITADEL_ROUTER_FRONTEND=$FE CITADEL_ROUTER_BACKEND=$BE CITADEL_ROUTER_ADMIN_PORT=$((BASE + 2)) \
    "$BIN/citadel-router" >"$TMP/router.log" 2>&1 &
PIDS="$PIDS $!"
CITADEL_WORKER_ID=san-test-w0 CITADEL_WORKER_MODEL=$MODEL CITADEL_WORKER_ROUTER=$BE CITADEL_WORKER_THREADS=1 \
    CITADEL_WORKER_CTX=4096 CITADEL_WORKER_ADMIN_PORT=$((BASE + 3)) "$BIN/citadel-worker" >"$TMP/worker.log" 2>&1 &
PIDS="$PIDS $!"
export CITADEL_SANITIZER_TERMS_FILE=$TERMS CITADEL_SANITIZER_POLICY_EMAIL=block
start_sanitizer $((BASE + 6))

# start_gateway [ENV=VALUE...]: the gateway on GPORT/GADMIN wired to the sanitizer.
start_gateway() {
    env "$@" CITADEL_GATEWAY_LISTEN=127.0.0.1 CITADEL_GATEWAY_PORT=$GPORT CITADEL_GATEWAY_ADMIN_PORT=$GADMIN \
        CITADEL_ROUTER_ENDPOINT=$FE CITADEL_GATEWAY_SANITIZER=$SAN CITADEL_GATEWAY_SANITIZER_TIMEOUT_MS=1000 \
        CITADEL_GATEWAY_DRAIN_TIMEOUT_MS=1000 "$BIN/citadel-gateway" >>"$TMP/gateway.log" 2>&1 &
    GW=$!
    PIDS="$PIDS $GW"
}
start_gateway

json() { python3 -c 'import json,sys; d=json.load(sys.stdin); v=eval(sys.argv[1]); sys.stdout.write(v if isinstance(v,str) else json.dumps(v))' "$1" 2>/dev/null; }
call() {
    p=$1; shift
    curl -sk --max-time 60 -o "$TMP/body" -w '%{http_code}' "$URL$p" "$@"
}
post() {
    p=$1; d=$2; shift 2
    call "$p" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' --data-binary "$d" "$@"
}
completion() {   # completion PROMPT MAX_TOKENS [extra JSON fields]
    printf '{"model":"%s","prompt":"%s","temperature":0,"max_tokens":%s%s}' "$NAME" "$1" "$2" "${3:-}"
}
greedy() {   # greedy PROMPT N: citadel generate's text; prompt token count in $TMP/ntok
    "$BIN/citadel" generate --model "$MODEL" --prompt "$1" --temperature 0 --max-tokens "$2" --json >"$TMP/cli.json"
    json 'len(d["prompt_ids"])' <"$TMP/cli.json" >"$TMP/ntok"
    json 'd["text"]' <"$TMP/cli.json"
}
metric() {
    curl -s --max-time 5 "http://127.0.0.1:$GADMIN/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}
# sse_text FILE: the streamed text deltas concatenated; sse_finish FILE: the last finish_reason.
sse_text() { sed -n 's/^data: //p' "$1" | grep -v '^\[DONE\]' | python3 -c 'import json,sys; print("".join(json.loads(l)["choices"][0]["text"] for l in sys.stdin if json.loads(l)["choices"]), end="")'; }
sse_finish() { sed -n 's/^data: //p' "$1" | grep -v '^\[DONE\]' | python3 -c 'import json,sys; r=[c["finish_reason"] for l in sys.stdin for c in json.loads(l)["choices"] if c["finish_reason"]]; print(r[-1] if r else "none", end="")'; }

# Ready: /v1/models lists the model (15 s at most).
i=0; KEY=""
while [ $i -lt 150 ]; do
    if [ -s "$CITADEL_HOME/keys/admin.key" ]; then
        KEY=$(cat "$CITADEL_HOME/keys/admin.key")
        curl -sk --max-time 2 -H "Authorization: Bearer $KEY" "$URL/v1/models" | grep -q "\"$NAME\"" && break
    fi
    sleep 0.1; i=$((i + 1))
done
[ $i -lt 150 ] && ok "fleet with the sanitizer is up" || { fail "fleet not ready"; tail -n 5 "$TMP"/*.log; echo "$passed passed, $failed failed"; exit 1; }

# 1. Redaction: the model generated from "[PHONE]", not from the number.
PHONE=13812345678
RAW="My phone is $PHONE and"
EXPECTED=$(greedy "My phone is [PHONE] and" 40); NTOK=$(cat "$TMP/ntok")
UNREDACTED=$(greedy "$RAW" 40); NTOK_RAW=$(cat "$TMP/ntok")
ST=$(post /v1/completions "$(completion "$RAW" 40)")
GOT=$(json 'd["choices"][0]["text"]' <"$TMP/body"); GOT_NTOK=$(json 'd["usage"]["prompt_tokens"]' <"$TMP/body")
if [ "$ST" = 200 ] && [ "$GOT" = "$EXPECTED" ] && [ "$GOT" != "$UNREDACTED" ] && [ "$GOT_NTOK" = "$NTOK" ] && [ "$NTOK" != "$NTOK_RAW" ]; then
    ok "phone number redacted before the model: greedy text and prompt_tokens ($GOT_NTOK) are those of [PHONE]"
else fail "redaction: $ST prompt_tokens $GOT_NTOK (redacted $NTOK, raw $NTOK_RAW) text '$GOT' expected '$EXPECTED'"; fi

# 2. Block policy: 400 naming the type, never the value.
ST=$(post /v1/chat/completions '{"model":"'$NAME'","messages":[{"role":"user","content":"write to bob.smith@example.com today"}]}')
if [ "$ST" = 400 ] && [ "$(json 'd["error"]["code"]' <"$TMP/body")" = pii_policy ] && json 'd["error"]["message"]' <"$TMP/body" | grep -q EMAIL &&
   ! grep -q 'bob.smith' "$TMP/body"; then ok "EMAIL under block policy -> 400 pii_policy naming EMAIL ($(json 'd["error"]["message"]' <"$TMP/body"))"
else fail "block policy: $ST $(cat "$TMP/body")"; fi

# 3. A blocked term in a prompt (any case): 400 content_policy, the term not echoed.
ST=$(post /v1/chat/completions '{"model":"'$NAME'","messages":[{"role":"system","content":"be nice"},{"role":"user","content":"tell me about the ForbiddenWord now"}]}')
if [ "$ST" = 400 ] && [ "$(json 'd["error"]["code"]' <"$TMP/body")" = content_policy ] && ! grep -qi forbiddenword "$TMP/body"; then
    ok "blocked term in a prompt -> 400 content_policy ($(json 'd["error"]["message"]' <"$TMP/body"))"
else fail "blocked term in prompt: $ST $(cat "$TMP/body")"; fi

# 4. SIGHUP while a long stream is open and while requests come and go. The term
# added, "park", is one the model writes for "Once upon a time" (checked below).
STORY="Once upon a time"
LONG_EXPECTED=$(greedy "$STORY" 1500)
curl -skN --max-time 120 -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    --data-binary "$(completion "$STORY" 1500 ',"stream":true')" "$URL/v1/completions" >"$TMP/long.sse" &
LONG=$!
i=0; while [ $i -lt 100 ] && ! grep -q '^data: ' "$TMP/long.sse" 2>/dev/null; do sleep 0.05; i=$((i + 1)); done
printf 'park\n' >>"$TERMS"
n=0; RELOAD_PIDS=""
while [ $n -lt 6 ]; do
    kill -HUP "$SAN_PID"
    curl -sk --max-time 60 -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        --data-binary "$(completion "$RAW" 8)" "$URL/v1/completions" >>"$TMP/reload_codes" &
    RELOAD_PIDS="$RELOAD_PIDS $!"
    sleep 0.1; n=$((n + 1))
done
kill -0 "$LONG" 2>/dev/null && STILL_OPEN=yes || STILL_OPEN=no
wait $RELOAD_PIDS
wait $LONG
LONG_TEXT=$(sse_text "$TMP/long.sse")
if [ "$STILL_OPEN" = yes ] && [ "$(sse_finish "$TMP/long.sse")" = length ] && [ "$LONG_TEXT" = "$LONG_EXPECTED" ] &&
   printf '%s' "$LONG_TEXT" | grep -q park; then
    ok "a stream open across 6 reloads finished whole on its own list (finish length, ${#LONG_TEXT} chars, 'park' included)"
else fail "stream across reloads: open at the last reload: $STILL_OPEN, finish $(sse_finish "$TMP/long.sse"), ${#LONG_TEXT} chars vs ${#LONG_EXPECTED}"; fi
if [ "$(sort -u "$TMP/reload_codes")" = 200 ] && [ "$(wc -l <"$TMP/reload_codes")" -eq 6 ]; then
    ok "6 requests sent during the reloads all answered 200"
else fail "requests during reloads: $(tr '\n' ' ' <"$TMP/reload_codes")"; fi
RELOADS=$(grep -c 'lists loaded' "$TMP/sanitizer.log")
[ "$RELOADS" -ge 7 ] && ok "the sanitizer reloaded its lists ($((RELOADS - 1)) reloads logged)" || fail "reloads logged: $RELOADS"

# 5. A blocked term in the output: the text before it, then content_filter.
SHORT=$(greedy "$STORY" 40)
PREFIX=$(printf '%s' "$SHORT" | sed 's/park.*//')
ST=$(post /v1/completions "$(completion "$STORY" 40)")
if [ "$ST" = 200 ] && [ "$(json 'd["choices"][0]["finish_reason"]' <"$TMP/body")" = content_filter ] &&
   [ "$(json 'd["choices"][0]["text"]' <"$TMP/body")" = "$PREFIX" ] && [ "$PREFIX" != "$SHORT" ]; then
    ok "blocked term in output (non-streamed): finish_reason content_filter after '...$(printf '%s' "$PREFIX" | tail -c 24)'"
else fail "output term, non-streamed: $ST $(cat "$TMP/body") expected prefix '$PREFIX'"; fi
curl -skN --max-time 60 -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    --data-binary "$(completion "$STORY" 40 ',"stream":true')" "$URL/v1/completions" >"$TMP/short.sse"
if [ "$(sse_finish "$TMP/short.sse")" = content_filter ] && [ "$(sse_text "$TMP/short.sse")" = "$PREFIX" ] &&
   tail -n 2 "$TMP/short.sse" | grep -q '^data: \[DONE\]'; then
    ok "blocked term in output (streamed): text before it, finish_reason content_filter, [DONE]"
else fail "output term, streamed: finish $(sse_finish "$TMP/short.sse") text '$(sse_text "$TMP/short.sse")'"; fi

# 6. What was found is logged as types and counts; no value in any log.
if grep -q 'findings prompt=PHONE:1 output=none' "$TMP/gateway.log" && grep -q 'output=BLOCKED_TERM:1' "$TMP/gateway.log"; then
    ok "request log lines carry findings as types and counts"
else fail "findings not in the request log"; grep 'request done' "$TMP/gateway.log" | tail -n 3; fi
if ! grep -qi -e "$PHONE" -e 'bob.smith' -e forbiddenword "$TMP/gateway.log" "$TMP/sanitizer.log" "$TMP/router.log"; then
    ok "no phone number, e-mail or blocked term in any log"
else fail "a value reached a log"; fi
BLOCKED=$(metric 'citadel_gateway_sanitize_requests_total{direction="prompt",outcome="blocked"}')
[ "${BLOCKED:-0}" -ge 2 ] && ok "prompt blocks counted ($BLOCKED)" || fail "blocked prompts metric: '$BLOCKED'"

# 7. The sanitizer killed: fail closed with 503.
kill -9 "$SAN_PID"; wait "$SAN_PID" 2>/dev/null
sleep 0.3
ST=$(post /v1/completions "$(completion "$RAW" 8)")
if [ "$ST" = 503 ] && [ "$(json 'd["error"]["code"]' <"$TMP/body")" = service_unavailable ]; then
    ok "sanitizer down -> 503 ($(json 'd["error"]["message"]' <"$TMP/body"))"
else fail "sanitizer down: $ST $(cat "$TMP/body")"; fi

# 8. The same gateway configured to fail open: 200, logged loudly and counted.
kill "$GW"; wait "$GW" 2>/dev/null
start_gateway CITADEL_GATEWAY_SANITIZER_FAIL_OPEN=true
i=0; while [ $i -lt 100 ] && [ "$(call /health)" != 200 ]; do sleep 0.1; i=$((i + 1)); done
ST=$(post /v1/completions "$(completion "$RAW" 8)")
if [ "$ST" = 200 ] && grep -q 'prompt passed UNSANITIZED' "$TMP/gateway.log" &&
   [ "$(metric 'citadel_gateway_sanitizer_bypassed_total{direction="prompt"}')" = 1 ]; then
    ok "fail-open: 200 while the sanitizer is down, logged (UNSANITIZED) and counted"
else fail "fail-open: $ST bypassed=$(metric 'citadel_gateway_sanitizer_bypassed_total{direction="prompt"}')"; fi

# 9. The sanitizer back: redaction again, without restarting the gateway.
start_sanitizer $((BASE + 6))
i=0; GOT_NTOK=""
while [ $i -lt 50 ]; do
    [ "$(post /v1/completions "$(completion "$RAW" 4)")" = 200 ] && GOT_NTOK=$(json 'd["usage"]["prompt_tokens"]' <"$TMP/body")
    [ "$GOT_NTOK" = "$NTOK" ] && break
    sleep 0.1; i=$((i + 1))
done
[ "$GOT_NTOK" = "$NTOK" ] && ok "sanitizer restarted: prompts are redacted again" || fail "after restart: prompt_tokens $GOT_NTOK"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
