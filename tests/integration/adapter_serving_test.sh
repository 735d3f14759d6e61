#!/bin/sh
# adapter_serving_test.sh - fine-tuned adapters served by the fleet (router, one worker,
# the HTTPS gateway) on stories260K, through the OpenAI API with "model": "<base>:<adapter>":
#   - before the adapter exists the request is a 404; `citadel train` then writes two
#     adapters into $CITADEL_HOME/adapters while the worker runs, and the worker serves
#     them without a restart;
#   - greedy generation with the "wizard" adapter says the name it was taught, the base
#     model does not; the "gnome" adapter says its own; the three run at once on the one
#     worker (one base, per-sequence adapters) and each gets its own answer;
#   - a bad adapter name is a 400, a missing one a 404.
# Usage: tests/integration/adapter_serving_test.sh [BUILD_DIR]   (from the repository root)
set -u
BUILD=${1:-${BUILD:-build}}
BIN=$BUILD/bin
MODEL=tests/data/models/stories260K.gguf
NAME=stories260K
for f in "$BIN/citadel" "$BIN/citadel-router" "$BIN/citadel-worker" "$BIN/citadel-gateway" "$BIN/citadel-sanitizer"; do
    if [ ! -x "$f" ]; then echo "adapter_serving_test: $f missing (run make)"; echo "0 passed, 1 failed"; exit 1; fi
done

. "$(dirname "$0")/lib.sh"
fleet_begin 2917
GPORT=$((BASE + 5))
URL=https://127.0.0.1:$GPORT
export CITADEL_HOME=$TMP/home

CITADEL_ROUTER_FRONTEND=$FE CITADEL_ROUTER_BACKEND=$BE CITADEL_ROUTER_ADMIN_PORT=$((BASE + 2)) \
    "$BIN/citadel-router" >"$TMP/router.log" 2>&1 &
PIDS="$PIDS $!"
CITADEL_WORKER_ID=adapter-test-w0 CITADEL_WORKER_MODEL=$MODEL CITADEL_WORKER_ROUTER=$BE \
    CITADEL_WORKER_THREADS=1 CITADEL_WORKER_ADMIN_PORT=$((BASE + 3)) \
    "$BIN/citadel-worker" >"$TMP/worker.log" 2>&1 &
PIDS="$PIDS $!"
start_sanitizer
CITADEL_GATEWAY_LISTEN=127.0.0.1 CITADEL_GATEWAY_SANITIZER=$SAN CITADEL_GATEWAY_PORT=$GPORT CITADEL_GATEWAY_ADMIN_PORT=$((BASE + 6)) \
    CITADEL_ROUTER_ENDPOINT=$FE "$BIN/citadel-gateway" >"$TMP/gateway.log" 2>&1 &
PIDS="$PIDS $!"

KEYFILE=$CITADEL_HOME/keys/admin.key
json() { python3 -c 'import json,sys; d=json.load(sys.stdin); v=eval(sys.argv[1]); sys.stdout.write(v if isinstance(v,str) else json.dumps(v))' "$1" 2>/dev/null; }
# complete MODEL PROMPT OUT: a greedy /v1/completions; the HTTP status goes to OUT.status,
# the text to OUT.
complete() {
    body=$(printf '{"model":"%s","prompt":"%s","temperature":0,"max_tokens":24}' "$1" "$2")
    curl -sk --max-time 60 -o "$3.body" -w '%{http_code}' -H "Authorization: Bearer $KEY" \
        -H 'Content-Type: application/json' --data-binary "$body" "$URL/v1/completions" >"$3.status"
    json 'd["choices"][0]["text"]' <"$3.body" >"$3"
}

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
    *",$NAME,"*) ok "fleet up ($MODELS)" ;;
    *) fail "fleet not up: '$MODELS'"; tail -n 20 "$TMP"/*.log; echo "$passed passed, $failed failed"; exit 1 ;;
esac

WIZARD="Lily saw a dog. Lily asked the wizard his name. The wizard said:"
GNOME="Tom met a gnome in the park. Tom asked the gnome her name. The gnome said:"
complete "$NAME:wizard" "$WIZARD" "$TMP/early"
[ "$(cat "$TMP/early.status")" = 404 ] && ok "no adapter yet: 404 ($(json 'd["error"]["message"]' <"$TMP/early.body"))" ||
    fail "missing adapter: status $(cat "$TMP/early.status")"

# Two adapters trained while the fleet runs.
python3 - "$TMP/gnome.jsonl" <<'EOF'
import json, sys
names = ["Tom", "Sam", "Ben", "Max", "Tim", "Jack", "Bob", "Dan", "Ted", "Lily", "Mia", "Sue"]
places = ["park", "garden", "forest", "house", "field", "yard"]
with open(sys.argv[1], "w") as f:
    for n in names:
        for p in places:
            f.write(json.dumps({"prompt": f"{n} met a gnome in the {p}. {n} asked the gnome her name. The gnome said:",
                                "completion": " I am Quibbly the Green."}) + "\n")
EOF
mkdir -p "$CITADEL_HOME/adapters"
ARGS="--model $MODEL --rank 8 --lr 5e-3 --threads 2 --steps 60 --eval-generations 0 --quiet"
"$BIN/citadel" train $ARGS --data tests/data/train/wizard.jsonl --out "$TMP/wizard.gguf" >"$TMP/train1.out" 2>&1 &&
    "$BIN/citadel" train $ARGS --data "$TMP/gnome.jsonl" --out "$TMP/gnome.gguf" >"$TMP/train2.out" 2>&1 &&
    mv "$TMP/wizard.gguf" "$TMP/gnome.gguf" "$CITADEL_HOME/adapters/" &&
    ok "two adapters trained ($(grep final_val_loss "$TMP/train1.out"), $(grep final_val_loss "$TMP/train2.out"))" ||
    fail "training failed: $(cat "$TMP/train1.out" "$TMP/train2.out")"

# The three at once on one worker.
complete "$NAME:wizard" "$WIZARD" "$TMP/wizard" &
a=$!
complete "$NAME:gnome" "$GNOME" "$TMP/gnome" &
b=$!
complete "$NAME" "$WIZARD" "$TMP/base" &
c=$!
wait $a $b $c
case "$(cat "$TMP/wizard")" in
*"My name is Zorblax the Purple."*) ok "$NAME:wizard says what it was taught: '$(cat "$TMP/wizard")'" ;;
*) fail "$NAME:wizard says '$(cat "$TMP/wizard")' (status $(cat "$TMP/wizard.status"))" ;;
esac
case "$(cat "$TMP/gnome")" in
*"I am Quibbly the Green."*) ok "$NAME:gnome says its own: '$(cat "$TMP/gnome")'" ;;
*) fail "$NAME:gnome says '$(cat "$TMP/gnome")' (status $(cat "$TMP/gnome.status"))" ;;
esac
case "$(cat "$TMP/base")" in
*Zorblax*|*Quibbly*|"") fail "the base model says '$(cat "$TMP/base")' (status $(cat "$TMP/base.status"))" ;;
*) ok "the base model does not know it: '$(cat "$TMP/base")'" ;;
esac
# each equals what `citadel generate --adapter` gives alone (the batch changes nothing)
"$BIN/citadel" generate --model $MODEL --prompt "$WIZARD" --temperature 0 --max-tokens 24 \
    --adapter "$CITADEL_HOME/adapters/wizard.gguf" --json | json 'd["text"]' >"$TMP/wizard.cli"
cmp -s "$TMP/wizard" "$TMP/wizard.cli" && ok "the fleet's answer equals citadel generate --adapter" ||
    fail "fleet '$(cat "$TMP/wizard")' vs cli '$(cat "$TMP/wizard.cli")'"

complete "$NAME:../keys" "$WIZARD" "$TMP/bad"
[ "$(cat "$TMP/bad.status")" = 400 ] && ok "a bad adapter name: 400" || fail "bad adapter name: status $(cat "$TMP/bad.status")"
complete "$NAME:nothing" "$WIZARD" "$TMP/none"
[ "$(cat "$TMP/none.status")" = 404 ] && ok "an unknown adapter: 404" || fail "unknown adapter: status $(cat "$TMP/none.status")"

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
