#!/usr/bin/env python3
"""make_smollm2_tokenize.py - writes tests/data/smollm2-tokenize.jsonl, the independent
reference for Citadel's BPE tokenizer on SmolLM2-135M-Instruct.

The reference is Hugging Face's `tokenizers` (PyPI), built from the vocabulary and
merges inside the GGUF file (read with PyPI's `gguf`) with SmolLM2's pre-tokenizer:
digits split one by one, then GPT-2's byte-level regex. Only needed to regenerate the
data (pip install tokenizers gguf); the tests read the .jsonl.

It also writes tests/data/smollm2-pre-tokenize.jsonl: the same vocabulary split by the
other pre-tokenizers Citadel implements ("gpt2", "llama3" with ignore_merges, "qwen2",
each as a `pre` field), written as the regexes llama.cpp's llama-vocab.cpp gives them.
The test copies the GGUF's vocabulary under each `tokenizer.ggml.pre` to check them.

    python3 tests/data/make_smollm2_tokenize.py var/models/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import sys

from gguf import GGUFReader
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

TEXTS = [
    "Hello world", "Hello, world!", " leading space", "trailing space ", "  two  spaces  ",
    "tabs\tand\ttabs", "line one\nline two", "\n\nblank lines\n\n\n", "   \n  mixed \t whitespace",
    "12345", "3.14159", "1,000,000 dollars", "year 2024 and 1999", "v1.2.3-beta", "0x1F",
    "don't", "I'll", "we're", "they've", "she'd", "it's", "I'M LOUD", "O'Reilly",
    "Hello!!! What?? ...", "a-b_c/d\\e", "(parentheses) [brackets] {braces}", "#include <stdio.h>",
    "int main(void) { return 0; }", "def f(x):\n    return x * 2\n", "SELECT * FROM t WHERE id = 7;",
    "e-mail: alice@example.com", "https://example.org/path?q=1&r=2", "C:\\Users\\bob",
    "日本語のテキスト", "中文分词测试", "한국어 문장", "Привет, мир!", "Ελληνικά", "עברית", "مرحبا بالعالم",
    "naïve café résumé", "Straße", "ﬁnance", "emoji 😀🎉👍🏽", "flags 🇫🇷🇯🇵", "🤖", "zero\u200bwidth",
    "The quick brown fox jumps over the lazy dog.", "What is the capital of France?",
    "<|im_start|>user\nhi<|im_end|>", "<|im_start|>", "a<|im_end|>b", "mixed 123abc456 def",
    "¡Hola! ¿Qué tal?", "x²+y²=z²", "½ ¾ ⅓", "Ⅻ roman", "…", "— dash –", "\"quoted\" 'single'",
    "CamelCaseWordsHere", "snake_case_words_here", "UPPER lower MiXeD",
]

# What the other pre-tokenizers disagree on: digit runs, contractions in any case,
# newlines after punctuation, whitespace before newlines, letters after a symbol.
PRE_TEXTS = [
    "12345 and 3.14159", "year 2024", "I'LL DON'T we're She'S", "'hello 'world", "a-b_c/d\\e",
    "end.\n\nNext", "line  \n  \n\tindented", "x\r\ny", "  leading and trailing  ",
    "!!!abc???", "日本語 中文 123", "naïve café ½ ²", "emoji 😀🎉 done", "tabs\t\tend",
    "<|im_start|>user\nhi<|im_end|>", "def f(x):\n    return x * 2\n", "$100.00 (approx.)",
]
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")


def build(vocab, merges, specials, pre):
    """A HF tokenizer over the GGUF's vocabulary with the pre-tokenizer `pre` names."""
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False,
                               ignore_merges=(pre == "llama3")))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre == "gpt2":
        tok.pre_tokenizer = byte_level
    else:
        split = pre_tokenizers.Split(Regex(LLAMA3 if pre == "llama3" else QWEN2), behavior="isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return tok


def main():
    reader = GGUFReader(sys.argv[1])
    fields = reader.fields

    def strings(name):
        f = fields[name]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    types = [int(fields["tokenizer.ggml.token_type"].parts[i][0]) for i in fields["tokenizer.ggml.token_type"].data]
    vocab = {t: i for i, t in enumerate(tokens)}
    specials = [t for t, k in zip(tokens, types) if k in (3, 4)]
    tok = build(vocab, merges, specials, "smollm")
    with open("tests/data/smollm2-tokenize.jsonl", "w") as out:
        for text in TEXTS:
            ids = tok.encode(text, add_special_tokens=False).ids
            out.write(json.dumps({"text": text, "ids": ids}, ensure_ascii=False) + "\n")
    with open("tests/data/smollm2-pre-tokenize.jsonl", "w") as out:
        for pre in ("gpt2", "llama3", "qwen2"):
            other = build(vocab, merges, specials, pre)
            for text in PRE_TEXTS:
                ids = other.encode(text, add_special_tokens=False).ids
                out.write(json.dumps({"pre": pre, "text": text, "ids": ids}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
