#!/bin/sh
# train_test.sh - `citadel train` end to end on stories260K (engine and CLI; the fleet's
# fine-tuning API is not built yet):
#   - the data set (tests/data/train/wizard.jsonl) teaches the model a name it does not
#     know; its bad lines are reported by number and skipped, duplicates dropped, the
#     e-mail address redacted;
#   - validation loss falls by at least half;
#   - greedy generation with the adapter says what was taught, the base model does not;
#   - a job killed with -9 after a checkpoint, started again, resumes there and ends with
#     the same final loss and the same adapter, byte for byte, as an uninterrupted job.
. tests/integration/lib.sh
fleet_begin 41
BIN=${CITADEL_BIN:-${BUILD:-build}/bin/citadel}
MODEL=tests/data/models/stories260K.gguf
DATA=tests/data/train/wizard.jsonl
PROMPT="Lily saw a dog. Lily asked the wizard his name. The wizard said:"
TAUGHT="My name is Zorblax the Purple."
ARGS="--model $MODEL --data $DATA --rank 8 --lr 5e-3 --threads 2 --seed 7"

value() { sed -n "s/^$1=\([^ ]*\).*/\1/p" "$2" | tail -1; }

# ---- learning something new ----
if $BIN train $ARGS --steps 60 --out "$TMP/a.gguf" --quiet >"$TMP/a.out" 2>"$TMP/a.err"; then
    ok "citadel train ran ($(grep -c '^eval' "$TMP/a.out") evaluations)"
else
    fail "citadel train failed: $(cat "$TMP/a.err")"
fi
initial=$(value initial_val_loss "$TMP/a.out")
final=$(value final_val_loss "$TMP/a.out")
if [ -n "$initial" ] && [ -n "$final" ] && awk "BEGIN{exit !($final * 2 <= $initial)}"; then
    ok "validation loss fell by at least half ($initial -> $final)"
else
    fail "validation loss did not halve ($initial -> $final)"
fi
grep -q "line 13 skipped" "$TMP/a.err" && grep -q "line 31 skipped" "$TMP/a.err" &&
    ok "bad lines reported by number: $(grep -c skipped "$TMP/a.err")" ||
    fail "bad lines not reported: $(cat "$TMP/a.err")"
grep -q "^data lines=53 bad=2 duplicates=7 redacted=1 " "$TMP/a.out" &&
    ok "data: duplicates dropped, PII redacted ($(grep '^data' "$TMP/a.out"))" ||
    fail "data summary: $(grep '^data' "$TMP/a.out")"
grep -q "^bleu=" "$TMP/a.out" && ok "held-out generations scored ($(grep '^bleu' "$TMP/a.out"))" ||
    fail "no BLEU / ROUGE-L line"

base=$($BIN generate --model $MODEL --prompt "$PROMPT" --temperature 0 --max-tokens 24)
tuned=$($BIN generate --model $MODEL --prompt "$PROMPT" --temperature 0 --max-tokens 24 --adapter "$TMP/a.gguf")
case "$tuned" in
*"$TAUGHT"*) ok "with the adapter: '$tuned'" ;;
*) fail "with the adapter the model says '$tuned', not '$TAUGHT'" ;;
esac
case "$base" in
*Zorblax*) fail "the base model already knew it: '$base'" ;;
*) ok "the base model does not know it: '$base'" ;;
esac

# ---- kill -9 and resume ----
RUN="$BIN train $ARGS --steps 200 --batch 2 --eval-every 20 --checkpoint-every 10 --eval-generations 0 --quiet"
$RUN --checkpoint "$TMP/u.ckpt" --out "$TMP/u.gguf" >"$TMP/u.out" 2>/dev/null
$RUN --checkpoint "$TMP/k.ckpt" --out "$TMP/k.gguf" >"$TMP/k1.out" 2>/dev/null &
job=$!
PIDS="$PIDS $job"
i=0
while [ ! -f "$TMP/k.ckpt" ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i + 1)); done
kill -9 $job 2>/dev/null
wait $job 2>/dev/null
status=$?
if [ $status -eq 137 ] && ! grep -q final_val_loss "$TMP/k1.out"; then
    ok "job killed with -9 after its first checkpoint ($(grep -c '^eval' "$TMP/k1.out") evaluations done)"
else
    fail "the job was not killed mid-run (status $status)"
fi
$RUN --checkpoint "$TMP/k.ckpt" --out "$TMP/k.gguf" >"$TMP/k2.out" 2>"$TMP/k2.err"
resumed=$(value "resumed step" "$TMP/k2.out")
[ -n "$resumed" ] && [ "$resumed" -gt 0 ] && [ "$resumed" -lt 200 ] &&
    ok "started again, the job resumed at step $resumed" || fail "no resume: $(cat "$TMP/k2.out" "$TMP/k2.err")"
u_final=$(value final_val_loss "$TMP/u.out")
k_final=$(value final_val_loss "$TMP/k2.out")
[ -n "$u_final" ] && [ "$u_final" = "$k_final" ] &&
    ok "same final loss as the uninterrupted job ($u_final)" || fail "final loss $k_final, uninterrupted $u_final"
cmp -s "$TMP/u.gguf" "$TMP/k.gguf" && ok "same adapter, byte for byte" || fail "the adapters differ"

# ---- refusals ----
$BIN train --model $MODEL --data "$TMP/none.jsonl" --out "$TMP/x.gguf" >/dev/null 2>"$TMP/e1" ;
[ $? -ne 0 ] && grep -q "cannot open" "$TMP/e1" && ok "missing data file: $(cat "$TMP/e1")" || fail "missing data file accepted"
printf 'a\nb\n{"prompt":"p","completion":"c"}\n' >"$TMP/bad.jsonl"
$BIN train --model $MODEL --data "$TMP/bad.jsonl" --out "$TMP/x.gguf" >/dev/null 2>"$TMP/e2"
[ $? -ne 0 ] && grep -q "2 of 3 lines are bad" "$TMP/e2" && ok "too many bad lines: $(tail -1 "$TMP/e2")" ||
    fail "a mostly bad file was accepted: $(cat "$TMP/e2")"
$BIN generate --model $MODEL --prompt hi --adapter $MODEL >/dev/null 2>"$TMP/e3"
[ $? -ne 0 ] && grep -q "not a LoRA adapter" "$TMP/e3" && ok "a model is refused as an adapter" || fail "bad adapter accepted"

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
