#!/bin/sh
# run_bench.sh BUILD_DIR - the engine benchmarks behind `make bench`.
#
# citadel bench on the two reference shapes with random weights (written once into
# var/bench/), the same ones llama.cpp's reference figures use (shared/golden/README.md),
# then the same TinyLlama shape split over 2 processes (--tp 2), then the real default model when `make model` has fetched it, then the matmul
# micro-benchmark, API key verification, the sanitizer's throughput, LoRA training (bench_train.sh), then the fleet end to end (bench_fleet.sh). 2 threads, 128-token
# prompt, 64 generated tokens, median of 5 runs.
# Override with THREADS=, REPS=, PROMPT=, GEN=.
set -e
build=${1:-build}
bin=$build/bin/citadel
threads=${THREADS:-2}
reps=${REPS:-5}
prompt=${PROMPT:-128}
gen=${GEN:-64}
run() {
    echo "== citadel bench $*"
    "$bin" bench "$@" --threads "$threads" --reps "$reps" --prompt-tokens "$prompt" --gen-tokens "$gen"
}
run --shape smollm2-135m --type q8_0
echo "== citadel bench --parallel 8 (8 streams of 128 prompt + 128 generated tokens at once)"
"$bin" bench --shape smollm2-135m --type q8_0 --threads "$threads" --reps 1 --prompt-tokens 128 --gen-tokens 128 --parallel 8 | grep parallel
run --shape tinyllama-1.1b --type q4_0
echo "== tensor parallelism: the same TinyLlama shape split over 2 processes, 1 thread each (README: TP)"
"$bin" bench --shape tinyllama-1.1b --type q4_0 --tp 2 --threads 1 --reps "$reps" --prompt-tokens "$prompt" --gen-tokens "$gen"
if [ -f var/models/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
    run --model var/models/SmolLM2-135M-Instruct.Q4_1.gguf
else
    echo "== skipped the real SmolLM2 file (run make model)"
fi
if [ -x "$build/bench/bench_matmul" ]; then
    echo "== matmul micro-benchmark"
    "$build/bench/bench_matmul" "$threads"
fi
if [ -x "$build/bench/bench_apikeys" ]; then
    echo "== API key verification (the gateway's per-request key check, 1 to 10,000 keys)"
    "$build/bench/bench_apikeys"
fi
if [ -x "$build/bench/bench_sanitize" ]; then
    echo "== sanitizer throughput (one core, 10,000 blocked terms, every detector)"
    "$build/bench/bench_sanitize"
fi
"$(dirname "$0")/bench_train.sh" "$build"
echo "== serving: the worker alone and the fleet over TLS (tests/bench/bench_fleet.sh: 1 worker, $threads threads)"
"$(dirname "$0")/bench_fleet.sh" "$build"
