"""bench_fleet.py - the latency Citadel's gateway + router add to a request, run by
bench_fleet.sh against a running fleet (Python's standard library only): the same greedy
chat request through the fleet over TLS (not streamed) and through `citadel generate`,
alternately; the added latency is the request's wall time through the fleet minus the
engine's own prompt + generate time from `citadel generate --json` (same prompt, same
threads; median over the reps). Throughput and latency under load are measured by
bench_worker.c and openai_load.py.

The engine time of a fresh `citadel generate` process includes cold-start costs (first
touches of the mapped weights, thread pool start), so the fleet can look *faster* than
it; the worker's own busy time (citadel_worker_busy_seconds_total on its admin port)
gives the cleaner figure: fleet wall time minus the worker's busy time for the request.

Usage: bench_fleet.py HOST PORT KEY CA_CERT MODEL_NAME MODEL_FILE CITADEL_BIN THREADS WORKER_ADMIN_PORT
"""
import http.client
import json
import ssl
import statistics
import subprocess
import sys
import threading
import time

host, port, key, cert, name, model_file, citadel, threads = sys.argv[1:9]
port, threads = int(port), int(threads)
worker_admin = int(sys.argv[9])
MAX_TOKENS = 128
OVERHEAD_REPS = 5
ctx = ssl.create_default_context(cafile=cert)
local = threading.local()


# A system message that differs from the first tokens on keeps the worker's prefix
# cache from skipping the prompt (as for unrelated real traffic); the user message asks
# for a long text, so that the 128 tokens are all produced.
def system(i):
    return f"Session {i}. You are a helpful storyteller."


PROMPT = ("Write a long, detailed story about a dragon and a knight who become friends. "
          "Describe every place they visit.")


def conn():
    c = getattr(local, "conn", None)
    if c is None:
        c = local.conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=600)
    return c


def body(i, max_tokens):
    return json.dumps({"model": name, "messages": [{"role": "system", "content": system(i)},
                                                    {"role": "user", "content": PROMPT}],
                       "temperature": 0, "max_tokens": max_tokens})


def request(i, max_tokens):
    """One chat request (not streamed) on this thread's keep-alive connection: (wall s,
    completion tokens). A connection the gateway closed while idle is replaced once."""
    for attempt in (0, 1):
        c = conn()
        t0 = time.perf_counter()
        try:
            c.request("POST", "/v1/chat/completions", body=body(i, max_tokens),
                      headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
            r = c.getresponse()
            break
        except (ConnectionError, ssl.SSLError, http.client.HTTPException):
            c.close()
            local.conn = None
            if attempt:
                raise
    if r.status != 200:
        raise RuntimeError(f"status {r.status}: {r.read()[:300]!r}")
    d = json.loads(r.read())
    return time.perf_counter() - t0, d["usage"]["completion_tokens"]


def worker_busy_s():
    c = http.client.HTTPConnection("127.0.0.1", worker_admin, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    for line in text.splitlines():
        if line.startswith("citadel_worker_busy_seconds_total "):
            return float(line.split()[1])
    raise RuntimeError("no citadel_worker_busy_seconds_total on the worker")


def overhead(label, max_tokens, reps, first_id):
    """The same request through the fleet (not streamed) and through citadel generate,
    alternately; overhead = fleet wall time - the engine's own prompt + generate time."""
    over, fleet_walls, engine_times, cli_walls, over_busy = [], [], [], [], []
    for k in range(reps):
        i = first_id + k
        t0 = time.perf_counter()
        out = subprocess.run([citadel, "generate", "--model", model_file, "--chat", "--system", system(i),
                              "--prompt", PROMPT, "--temperature", "0", "--max-tokens", str(max_tokens),
                              "--threads", str(threads), "--json"], check=True, capture_output=True).stdout
        cli_walls.append(time.perf_counter() - t0)
        g = json.loads(out)
        engine = g["timings"]["prompt_seconds"] + g["timings"]["generate_seconds"]
        busy0 = worker_busy_s()
        wall, tokens = request(i, max_tokens)
        time.sleep(0.05)   # the worker's busy counter is updated as the request ends
        over_busy.append(wall - (worker_busy_s() - busy0))
        if tokens != g["usage"]["completion_tokens"]:
            print(f"warning: fleet produced {tokens} tokens, citadel generate {g['usage']['completion_tokens']}")
        over.append(wall - engine)
        fleet_walls.append(wall)
        engine_times.append(engine)
    print(f"{label}_generate_engine_s_p50={statistics.median(engine_times):.3f}")
    print(f"{label}_generate_cli_wall_s_p50={statistics.median(cli_walls):.3f}")
    print(f"{label}_fleet_request_wall_s_p50={statistics.median(fleet_walls):.3f}")
    print(f"{label}_fleet_overhead_vs_generate_ms_p50={statistics.median(over) * 1e3:.1f}")
    print(f"{label}_fleet_overhead_vs_worker_busy_ms_p50={statistics.median(over_busy) * 1e3:.1f}")
    sys.stdout.flush()


# 128 tokens: what a client sees; 1 token: the fixed cost per request (TLS, HTTP, JSON,
# two ZeroMQ hops each way) without a long generation's noise around it.
overhead("t128", MAX_TOKENS, OVERHEAD_REPS, 300)
overhead("t1", 1, 15, 400)
