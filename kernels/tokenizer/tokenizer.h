/* tokenizer.h - text to token ids and back, from the vocabulary a GGUF file carries.
 *
 * Two families, chosen by `tokenizer.ggml.model`:
 *   "llama"  SentencePiece style: pieces with scores, merged greedily by score; spaces
 *            become U+2581; unknown bytes fall back to <0xNN> tokens; a space is added
 *            in front of the text (as llama.cpp does for this family).
 *   "gpt2"   byte-level BPE: text split by a pre-tokenizer regex chosen by
 *            `tokenizer.ggml.pre` (llama3, smollm, qwen2, gpt2, ... ), bytes mapped to
 *            printable unicode, pieces merged by `tokenizer.ggml.merges` rank.
 * Special tokens (control tokens such as <|im_start|>) are matched as whole strings
 * before normal tokenization when parse_special is set.
 *
 * Decoding is per token to raw bytes; detok_stream turns a stream of ids into text
 * that is always valid UTF-8, holding back the bytes of an incomplete character.
 */
#ifndef CITADEL_TOKENIZER_H
#define CITADEL_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf/gguf.h"

typedef struct tokenizer tokenizer;

/* Builds the tokenizer from f's metadata (f may be closed afterwards: everything is
 * copied). Returns 0, or -1 with a message in err naming the missing/bad key. */
int tokenizer_load(tokenizer **out, const gguf_file *f, char *err, size_t errsz);
void tokenizer_free(tokenizer *t);

/* Tokenizes text[0..len). Writes up to cap ids into ids and returns the number of ids
 * the full tokenization has (which may exceed cap: call again with a larger buffer),
 * or -1 on error. add_bos prepends BOS (when the vocabulary has one). */
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, bool add_bos,
                     bool parse_special, int32_t *ids, int cap);

/* The bytes token `id` stands for in text (byte tokens give their byte; SentencePiece
 * U+2581 gives a space; GPT-2 byte symbols give their bytes). Control tokens give ""
 * unless render_special. Returns the byte count (may exceed cap: nothing past cap is
 * written), or -1 for an id out of range. */
int tokenizer_token_bytes(const tokenizer *t, int32_t id, bool render_special, char *buf, int cap);

/* The raw vocabulary string of id (e.g. "▁the", "<|im_end|>"), or NULL. */
const char *tokenizer_piece(const tokenizer *t, int32_t id);
int32_t tokenizer_find_piece(const tokenizer *t, const char *piece);  /* -1 if absent */

int tokenizer_n_vocab(const tokenizer *t);
int32_t tokenizer_bos(const tokenizer *t);   /* -1 when none */
int32_t tokenizer_eos(const tokenizer *t);   /* -1 when none */
/* add_bos_token from the metadata (default: true for "llama", false for "gpt2"). */
bool tokenizer_adds_bos(const tokenizer *t);
/* End of generation: EOS, EOT (tokenizer.ggml.eot_token_id) and tokens such as
 * <|im_end|>, <|eot_id|>, <end_of_turn>. */
bool tokenizer_is_eog(const tokenizer *t, int32_t id);
bool tokenizer_is_control(const tokenizer *t, int32_t id);

/* Streams valid UTF-8 out of a sequence of ids. Zero-initialise before use. */
typedef struct detok_stream {
    char pending[8];  /* bytes of an incomplete UTF-8 sequence */
    int n_pending;
    int n_tokens;     /* tokens seen so far */
} detok_stream;

/* Appends the text of `id` to the stream and writes the bytes that now form complete
 * characters into out (cap bytes; 64 is always enough for one token plus held bytes,
 * longer pieces are truncated at cap). Returns the number of bytes written. Invalid
 * sequences are written as U+FFFD rather than held forever. */
int detok_stream_push(detok_stream *s, const tokenizer *t, int32_t id, char *out, int cap);
/* At the end of a stream: whatever is held, as U+FFFD. Returns bytes written. */
int detok_stream_flush(detok_stream *s, char *out, int cap);

#endif
