"""openai_load.py - a load client for any OpenAI-compatible endpoint (Python's standard
library only): CLIENTS concurrent streams, each sending ROUNDS streamed greedy chat
requests one after another on a keep-alive connection, and the figures a serving
system is judged by. bench_fleet.sh points it at Citadel's gateway over TLS; the same
command can point it at any other server (llama.cpp's llama-server, vLLM, ...) to
compare under the same load.

Each request: system "Session <n>. You are a helpful storyteller." (n differs for every
request, so no two prompts share their first tokens and no prefix cache helps), the
user text from --prompt-file, temperature 0, max_tokens --max-tokens, stream with
stream_options.include_usage.

Prints key=value lines prefixed with c<CLIENTS>_: requests, errors, completion and
prompt tokens per request (from usage; the count of content chunks where a server
sends no usage), tokens_per_s (completion tokens of all requests / wall time from the
first request to the last answer), ttft p50/p99 (request sent to first content chunk)
and itl p50/p99 (between content chunks of a request), in ms.

Usage: openai_load.py --url https://127.0.0.1:8443 [--key K] [--cacert F | --insecure]
                      --model M --prompt-file F [--clients 8] [--rounds 2] [--max-tokens 128]
"""
import argparse
import http.client
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="base URL, e.g. https://127.0.0.1:8443")
    p.add_argument("--key", default="", help="API key (Authorization: Bearer)")
    p.add_argument("--cacert", default=None, help="CA certificate to verify the server with")
    p.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")
    p.add_argument("--model", required=True)
    p.add_argument("--prompt-file", required=True)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=128)
    return p.parse_args()


def pct(xs, p):
    """The p-th percentile by nearest rank (as bench_worker.c takes it)."""
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * (len(xs) - 1) + 0.5))]


class Client:
    def __init__(self, args, text):
        self.args, self.text = args, text
        u = urllib.parse.urlsplit(args.url)
        self.https = u.scheme == "https"
        self.host, self.port = u.hostname, u.port or (443 if self.https else 80)
        self.path = (u.path.rstrip("/") or "") + "/v1/chat/completions"
        if self.https:
            self.ctx = ssl.create_default_context(cafile=args.cacert)
            if args.insecure:
                self.ctx.check_hostname = False
                self.ctx.verify_mode = ssl.CERT_NONE
        self.conn = None

    def connect(self):
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=600)
        return http.client.HTTPConnection(self.host, self.port, timeout=600)

    def body(self, session):
        return json.dumps({
            "model": self.args.model,
            "messages": [{"role": "system", "content": f"Session {session}. You are a helpful storyteller."},
                         {"role": "user", "content": self.text}],
            "temperature": 0, "max_tokens": self.args.max_tokens, "stream": True,
            "stream_options": {"include_usage": True}})

    def request(self, session):
        """One streamed request: dict with ttft, itls, completion and prompt tokens, or error."""
        headers = {"Content-Type": "application/json"}
        if self.args.key:
            headers["Authorization"] = "Bearer " + self.args.key
        for attempt in (0, 1):   # a keep-alive connection the server closed is replaced once
            if self.conn is None:
                self.conn = self.connect()
            t0 = time.perf_counter()
            try:
                self.conn.request("POST", self.path, body=self.body(session), headers=headers)
                r = self.conn.getresponse()
                break
            except (ConnectionError, ssl.SSLError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        if r.status != 200:
            return {"error": f"status {r.status}: {r.read()[:200]!r}"}
        ttft, last, itls, chunks, usage = None, None, [], 0, None
        while True:
            line = r.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            if line == b"data: [DONE]":
                r.read()
                break
            d = json.loads(line[6:])
            now = time.perf_counter()
            if d.get("usage"):
                usage = d["usage"]
            if "error" in d:
                return {"error": str(d["error"])[:200]}
            ch = d.get("choices") or []
            if ch and (ch[0].get("delta") or {}).get("content"):
                chunks += 1
                if ttft is None:
                    ttft = now - t0
                else:
                    itls.append(now - last)
                last = now
        return {"ttft": ttft, "itls": itls,
                "completion": usage["completion_tokens"] if usage else chunks,
                "prompt": usage["prompt_tokens"] if usage else 0}


def main():
    args = parse_args()
    with open(args.prompt_file, encoding="utf-8") as f:
        text = f.read().strip()
    base = (os.getpid() % 100000) * 1000 + 1   # sessions differ from run to run
    results, lock = [], threading.Lock()

    def stream(c):
        client = Client(args, text)
        for k in range(args.rounds):
            try:
                r = client.request(base + c * args.rounds + k)
            except Exception as e:   # noqa: BLE001 - a failed request is counted, not fatal
                r = {"error": repr(e)[:200]}
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=stream, args=(c,)) for c in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    for e in errors[:3]:
        print(f"openai_load: {e}", file=sys.stderr)
    n, p = len(results), f"c{args.clients}_"
    print(f"{p}requests={n}")
    print(f"{p}errors={len(errors)}")
    print(f"{p}prompt_tokens_per_request={sum(r['prompt'] for r in ok) / max(1, len(ok)):.1f}")
    print(f"{p}completion_tokens_per_request={sum(r['completion'] for r in ok) / max(1, len(ok)):.1f}")
    print(f"{p}tokens_per_s={sum(r['completion'] for r in ok) / wall:.1f}")
    ttfts = [r["ttft"] for r in ok if r["ttft"] is not None]
    itls = [x for r in ok for x in r["itls"]]
    print(f"{p}ttft_p50_ms={pct(ttfts, 50) * 1e3:.1f}")
    print(f"{p}ttft_p99_ms={pct(ttfts, 99) * 1e3:.1f}")
    print(f"{p}itl_p50_ms={pct(itls, 50) * 1e3:.1f}")
    print(f"{p}itl_p99_ms={pct(itls, 99) * 1e3:.1f}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
