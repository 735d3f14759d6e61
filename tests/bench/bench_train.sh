#!/bin/sh
# bench_train.sh BUILD_DIR - LoRA training speed (make bench): `citadel train` on the
# default model (SmolLM2-135M-Instruct Q4_1), LoRA rank 8 on q/k/v/o, one example of
# 256 tokens per step (chat: a ~60-token question, the rest the answer), 2 threads.
# Prints tokens/s of each run (every token through forward and backward, validation
# excluded) and their median, and tokens per CPU-second of the process (all threads):
# on a shared machine the wall-clock figure falls with the load, the CPU one much less.
# Override with THREADS=, REPS=, STEPS=.
set -e
build=${1:-build}
model=var/models/SmolLM2-135M-Instruct.Q4_1.gguf
threads=${THREADS:-2}
reps=${REPS:-3}
steps=${STEPS:-4}
if [ ! -f "$model" ]; then echo "== skipped the training benchmark (run make model)"; exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/data.jsonl" <<'PY'
import json, random, sys
random.seed(5)
words = ("the a cat dog ran over hill under tree happy sad little big girl boy saw went to park "
         "with ball red blue green and then said hello because it was sunny day").split()
with open(sys.argv[1], "w") as f:
    for i in range(20):
        q = " ".join(random.choice(words) for _ in range(50))
        a = " ".join(random.choice(words) for _ in range(300))
        f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                         {"role": "assistant", "content": a}]}) + "\n")
PY
echo "== LoRA training: $model, rank 8, 256-token sequences, $threads threads, $steps steps x $reps runs"
for r in $(seq "$reps"); do
    line=$("$build/bin/citadel" train --model "$model" --data "$tmp/data.jsonl" --out "$tmp/a.gguf" \
        --rank 8 --seq-len 256 --batch 1 --steps "$steps" --threads "$threads" --eval-every 0 \
        --eval-generations 0 --val-share 0.05 --quiet | grep '^train_tokens_per_s=')
    echo "run $r: $line"
    echo "$line" >>"$tmp/rates"
done
median() { tr ' ' '\n' <"$tmp/rates" | sed -n "s/^$1=//p" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
echo "median train_tokens_per_s=$(median train_tokens_per_s) train_tokens_per_cpu_s=$(median train_tokens_per_cpu_s)"
