#!/bin/sh
# openai_sdk_test.sh - the official `openai` Python SDK (from PyPI) against the fleet on
# loopback (router, one worker, the HTTPS gateway) on the tiny stories260K model: chat,
# completions, streaming with include_usage, the model list and SDK error classes
# (openai_sdk_check.py does the calls). The SDK comes from the system python, or is
# installed once into BUILD/venv-openai; where it cannot be installed (no network) the
# test prints "SKIPPED: ..." and passes.
# Usage: tests/integration/openai_sdk_test.sh [BUILD_DIR]   (run from the repository root)
set -u
BUILD=${1:-${BUILD:-build}}
BIN=$BUILD/bin
MODEL=tests/data/models/stories260K.gguf
NAME=stories260K
HERE=$(dirname "$0")

for f in "$BIN/citadel" "$BIN/citadel-router" "$BIN/citadel-worker" "$BIN/citadel-gateway" "$BIN/citadel-sanitizer"; do
    if [ ! -x "$f" ]; then echo "openai_sdk_test: $f missing (run make)"; echo "0 passed, 1 failed"; exit 1; fi
done

# A python with the SDK: the system one, the venv from an earlier run, or a new venv.
VENV=$BUILD/venv-openai
PY=""
if python3 -c 'import openai' 2>/dev/null; then PY=python3
elif [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import openai' 2>/dev/null; then PY=$VENV/bin/python
else
    echo "installing the openai SDK into $VENV (pip)"
    if python3 -m venv "$VENV" >/dev/null 2>&1 &&
       timeout 300 "$VENV/bin/pip" install -q --timeout 20 --retries 1 openai >"$BUILD/venv-openai.log" 2>&1 &&
       "$VENV/bin/python" -c 'import openai' 2>/dev/null; then
        PY=$VENV/bin/python
    fi
fi
if [ -z "$PY" ]; then
    echo "SKIPPED: openai SDK not installable (no network to PyPI?); see $BUILD/venv-openai.log"
    echo "0 passed, 0 failed"
    exit 0
fi

. "$(dirname "$0")/lib.sh"
fleet_begin 2917
GPORT=$((BASE + 5))
export CITADEL_HOME=$TMP/home

CITADEL_ROUTER_FRONTEND=$FE CITADEL_ROUTER_BACKEND=$BE CITADEL_ROUTER_ADMIN_PORT=$((BASE + 2)) \
    "$BIN/citadel-router" >"$TMP/router.log" 2>&1 &
PIDS="$PIDS $!"
CITADEL_WORKER_ID=sdk-test-w0 CITADEL_WORKER_MODEL=$MODEL CITADEL_WORKER_ROUTER=$BE \
    CITADEL_WORKER_THREADS=1 CITADEL_WORKER_ADMIN_PORT=$((BASE + 3)) "$BIN/citadel-worker" >"$TMP/worker.log" 2>&1 &
PIDS="$PIDS $!"
start_sanitizer $((BASE + 7))
CITADEL_GATEWAY_LISTEN=127.0.0.1 CITADEL_GATEWAY_SANITIZER=$SAN CITADEL_GATEWAY_PORT=$GPORT CITADEL_GATEWAY_ADMIN_PORT=$((BASE + 6)) \
    CITADEL_ROUTER_ENDPOINT=$FE "$BIN/citadel-gateway" >"$TMP/gateway.log" 2>&1 &
PIDS="$PIDS $!"

# Ready when /v1/models lists the model (15 s at most).
i=0
while [ $i -lt 150 ]; do
    if [ -s "$CITADEL_HOME/keys/admin.key" ] &&
       curl -sk --max-time 2 -H "Authorization: Bearer $(cat "$CITADEL_HOME/keys/admin.key")" \
            "https://127.0.0.1:$GPORT/v1/models" | grep -q "\"$NAME\""; then break; fi
    sleep 0.1; i=$((i + 1))
done

text() { python3 -c 'import json,sys; sys.stdout.write(json.load(sys.stdin)["text"])'; }
"$BIN/citadel" generate --model "$MODEL" --chat --prompt "Tell me a story about a cat" --temperature 0 \
    --max-tokens 40 --json | text >"$TMP/expected_chat"
"$BIN/citadel" generate --model "$MODEL" --prompt "Once upon a time" --temperature 0 \
    --max-tokens 48 --json | text >"$TMP/expected_comp"

"$PY" "$HERE/openai_sdk_check.py" "https://127.0.0.1:$GPORT/v1" "$(cat "$CITADEL_HOME/keys/admin.key" 2>/dev/null)" \
    "$CITADEL_HOME/tls/server.crt" "$NAME" "$TMP/expected_chat" "$TMP/expected_comp" >"$TMP/out" 2>&1
RC=$?
cat "$TMP/out"
passed=$(grep -c '^ok - ' "$TMP/out")
failed=$(grep -c '^FAIL - ' "$TMP/out")
[ $RC -eq 0 ] || [ "$failed" -gt 0 ] || failed=1   # a crash before any check is a failure
[ "$failed" -eq 0 ] || { echo "--- logs"; tail -n 20 "$TMP"/*.log; }
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
