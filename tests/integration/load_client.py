#!/usr/bin/env python3
"""load_client.py - sends N chat completions to the gateway over keep-alive TLS
connections (several threads) and writes one line per request to OUT:
"<request id> <HTTP status> <x-citadel-cache>". The request id is the gateway's
(response id chatcmpl-<hex> -> req-<hex>). Used by the data path tests (audit, cache).

usage: load_client.py URL KEYFILE MODEL N OUT [--threads T] [--per-second R]
       [--user-every K] [--max-tokens M] [--prompt TEXT] [--temperature X]
Every K-th request carries "user": "alice" (0: none). Exit 1 if any request failed to
get an HTTP answer at all.
"""
import argparse, http.client, json, ssl, sys, threading, time, urllib.parse

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url"); ap.add_argument("keyfile"); ap.add_argument("model")
    ap.add_argument("n", type=int); ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--per-second", type=float, default=0)
    ap.add_argument("--user-every", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=2)
    ap.add_argument("--prompt", default="Once upon a time")
    ap.add_argument("--temperature", type=float, default=0.0)
    a = ap.parse_args()
    key = open(a.keyfile).read().strip()
    u = urllib.parse.urlparse(a.url)
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    lock = threading.Lock(); results = []; nxt = [0]; errors = [0]
    t0 = time.monotonic()

    def worker():
        conn = None
        while True:
            with lock:
                i = nxt[0]
                if i >= a.n: return
                nxt[0] += 1
            if a.per_second > 0:
                delay = t0 + i / a.per_second - time.monotonic()
                if delay > 0: time.sleep(delay)
            body = {"model": a.model, "messages": [{"role": "user", "content": "%s %d" % (a.prompt, i)}],
                    "max_tokens": a.max_tokens, "temperature": a.temperature}
            if a.user_every and i % a.user_every == 0: body["user"] = "alice"
            for attempt in range(3):
                try:
                    if conn is None: conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=60)
                    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                                 {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
                    r = conn.getresponse(); data = r.read()
                    rid = "?"
                    try: rid = "req-" + json.loads(data)["id"].split("-", 1)[1]
                    except Exception: pass
                    with lock: results.append("%s %d %s" % (rid, r.status, r.getheader("x-citadel-cache") or "-"))
                    break
                except (OSError, http.client.HTTPException):
                    conn = None
                    if attempt == 2:
                        with lock: errors[0] += 1

    ts = [threading.Thread(target=worker) for _ in range(a.threads)]
    for t in ts: t.start()
    for t in ts: t.join()
    with open(a.out, "w") as f: f.write("\n".join(results) + ("\n" if results else ""))
    sys.exit(1 if errors[0] else 0)

main()
