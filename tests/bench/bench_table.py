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
    """{clients: [{figure: value} per run]}; a run starts at its c<N>_requests line."""
    runs = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"c(\d+)_(\w+)=([-0-9.]+)\s*$", line.strip())
            if not m:
                continue
            clients, key, value = int(m.group(1)), m.group(2), float(m.group(3))
            if key == "requests" or not runs.get(clients):
                runs.setdefault(clients, []).append({})
            if key in FIGURES:
                runs[clients][-1][key] = value
    return runs


def main():
    print("| system | streams | gen tok/s in all (range) | TTFT p50 / p99 ms | ITL p50 / p99 ms "
          "| tokens per request (prompt / generated) | runs | runs with errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for arg in sys.argv[1:]:
        label, _, path = arg.rpartition("=")
        for clients, runs in sorted(read_runs(path).items()):
            good = [r for r in runs if r.get("errors", 0) == 0]
            failed = len(runs) - len(good)
            if not good:
                print(f"| {label} | {clients} | every run had errors | | | | 0 | {failed} |")
                continue
            med = {k: statistics.median(r.get(k, 0) for r in good) for k in FIGURES}
            tps = [r.get("tokens_per_s", 0) for r in good]
            print(f"| {label} | {clients} | {med['tokens_per_s']:.1f} ({min(tps):.1f}–{max(tps):.1f}) "
                  f"| {med['ttft_p50_ms']:.0f} / {med['ttft_p99_ms']:.0f} "
                  f"| {med['itl_p50_ms']:.1f} / {med['itl_p99_ms']:.1f} "
                  f"| {med['prompt_tokens_per_request']:.0f} / {med['completion_tokens_per_request']:.0f} "
                  f"| {len(good)} | {failed} |")

if __name__ == "__main__":
    main()
