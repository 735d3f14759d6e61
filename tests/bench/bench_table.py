"""bench_table.py - the serving benchmark's table: medians over repeated runs of
bench_worker (the worker alone) and openai_load.py (the fleet, or any OpenAI server).

Each argument is LABEL=FILE, where FILE holds the key=value lines of one or more runs
appended together (c<N>_tokens_per_s=..., c<N>_ttft_p99_ms=..., ...). For every label
and every concurrency N found, the table shows the median of each figure over the
runs, the range of the aggregate tokens/s in brackets, and how many runs there were.

Usage: bench_table.py "worker alone=/tmp/w.txt" "fleet over TLS=/tmp/f.txt" ...
"""
import re
import statistics
import sys

FIGURES = ["tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms",
           "completion_tokens_per_request", "prompt_tokens_per_request", "errors"]


def read_runs(path):
    """{clients: {figure: [value per run]}}"""
    runs = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"c(\d+)_(\w+)=([-0-9.]+)\s*$", line.strip())
            if m and m.group(2) in FIGURES:
                runs.setdefault(int(m.group(1)), {}).setdefault(m.group(2), []).append(float(m.group(3)))
    return runs


def main():
    print("| system | streams | gen tok/s in all (range) | TTFT p50 / p99 ms | ITL p50 / p99 ms "
          "| tokens per request (prompt / generated) | runs | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for arg in sys.argv[1:]:
        label, _, path = arg.partition("=")
        for clients, figs in sorted(read_runs(path).items()):
            med = {k: statistics.median(v) for k, v in figs.items()}
            tps = figs.get("tokens_per_s", [0])
            print(f"| {label} | {clients} | {med.get('tokens_per_s', 0):.1f} ({min(tps):.1f}–{max(tps):.1f}) "
                  f"| {med.get('ttft_p50_ms', 0):.0f} / {med.get('ttft_p99_ms', 0):.0f} "
                  f"| {med.get('itl_p50_ms', 0):.1f} / {med.get('itl_p99_ms', 0):.1f} "
                  f"| {med.get('prompt_tokens_per_request', 0):.0f} / "
                  f"{med.get('completion_tokens_per_request', 0):.0f} "
                  f"| {len(tps)} | {sum(figs.get('errors', [0])):.0f} |")


if __name__ == "__main__":
    main()
