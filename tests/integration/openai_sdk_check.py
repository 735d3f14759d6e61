"""openai_sdk_check.py - drives a running Citadel gateway with the official `openai`
Python SDK (run by openai_sdk_test.sh, which starts the fleet): chat completion,
completion, streaming chat (with include_usage) and the model list, verifying TLS
against the gateway's self-signed certificate. Prints "ok - ..." / "FAIL - ..." lines
and exits non-zero on any failure.

Usage: openai_sdk_check.py BASE_URL API_KEY CA_CERT MODEL EXPECTED_CHAT_FILE EXPECTED_COMPLETION_FILE
"""
import ssl
import sys

import openai

base_url, key, cert, model, chat_file, comp_file = sys.argv[1:7]
expected_chat = open(chat_file, encoding="utf-8").read()
expected_comp = open(comp_file, encoding="utf-8").read()
PROMPT = "Tell me a story about a cat"
RAW = "Once upon a time"

ctx = ssl.create_default_context(cafile=cert)
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60,
                       http_client=openai.DefaultHttpxClient(verify=ctx))
failed = 0


def check(name, cond, detail=""):
    global failed
    if cond:
        print(f"ok - {name}")
    else:
        failed += 1
        print(f"FAIL - {name}: {detail}")


def run(name, fn):
    global failed
    try:
        fn()
    except Exception as e:  # one broken call must not hide the others
        failed += 1
        print(f"FAIL - {name}: {type(e).__name__}: {e}")


def models():
    ids = [m.id for m in client.models.list()]
    check("models.list() includes " + model, model in ids, repr(ids))


def chat():
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}],
                                       temperature=0, max_tokens=40)
    text = r.choices[0].message.content
    check("chat.completions.create (greedy) equals citadel generate --chat",
          text == expected_chat, f"got {text!r} want {expected_chat!r}")
    check("chat usage and finish_reason", r.usage.completion_tokens > 0 and
          r.choices[0].finish_reason in ("stop", "length"), repr(r))


def completion():
    r = client.completions.create(model=model, prompt=RAW, temperature=0, max_tokens=48)
    text = r.choices[0].text
    check("completions.create (greedy) equals citadel generate --prompt",
          text == expected_comp, f"got {text!r} want {expected_comp!r}")


def stream():
    parts, usage = [], None
    for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}],
                                                temperature=0, max_tokens=40, stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    text = "".join(parts)
    check(f"streamed chat ({len(parts)} chunks) equals the non-streamed text",
          text == expected_chat, f"got {text!r} want {expected_chat!r}")
    check("stream_options.include_usage gives usage", usage is not None and usage.completion_tokens > 0, repr(usage))


def errors():
    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
        check("unknown model raises NotFoundError", False, "no exception")
    except openai.NotFoundError as e:
        check("unknown model raises NotFoundError", e.status_code == 404, repr(e))
    bad = openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0, timeout=60,
                        http_client=openai.DefaultHttpxClient(verify=ctx))
    try:
        bad.models.list()
        check("wrong key raises AuthenticationError", False, "no exception")
    except openai.AuthenticationError as e:
        check("wrong key raises AuthenticationError", e.status_code == 401, repr(e))


for name, fn in [("models", models), ("chat", chat), ("completion", completion), ("stream", stream),
                 ("errors", errors)]:
    run(name, fn)
print(f"openai {openai.__version__}")
sys.exit(1 if failed else 0)
