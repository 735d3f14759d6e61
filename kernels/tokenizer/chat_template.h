/* chat_template.h - turning a list of chat messages into the prompt text a model was
 * trained on.
 *
 * `tokenizer.chat_template` is a Jinja program. Rather than embedding a Jinja
 * interpreter, we recognise the common template families by marker strings in it and
 * render them with C code; an unknown template falls back to ChatML with a warning
 * (returned through `known`).
 *
 * BOS: the rendered text never starts with the BOS text (not even for Llama 3's
 * "<|begin_of_text|>" or Llama 2's "<s>"); the caller adds the BOS token when it
 * tokenizes (engine_adds_bos), so that it is not written twice. BOS texts that a family
 * writes in the middle of a conversation (Llama 2's "<s>" before each later [INST]) are
 * rendered, and must be tokenized with special tokens parsed.
 * Content is written as is, except where the official template trims it (Llama 2, Llama
 * 3, Gemma). Families without a system role (Llama 2, Mistral, Gemma) fold a leading
 * system message into the first user turn; later system messages are rendered as user
 * turns there.
 */
#ifndef CITADEL_CHAT_TEMPLATE_H
#define CITADEL_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

enum chat_family {
    CHAT_CHATML = 0,  /* <|im_start|>role\n...<|im_end|>\n  (SmolLM2, Qwen2) */
    CHAT_LLAMA2,      /* [INST] <<SYS>>...<</SYS>> ... [/INST] */
    CHAT_LLAMA3,      /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    CHAT_MISTRAL,     /* [INST] ... [/INST] without <<SYS>> */
    CHAT_ZEPHYR,      /* <|user|>\n...</s>\n */
    CHAT_GEMMA,       /* <start_of_turn>user\n...<end_of_turn>\n (assistant -> model) */
};

typedef struct chat_message {
    const char *role;     /* "system", "user", "assistant" */
    const char *content;
} chat_message;

/* The family of a Jinja template (NULL or empty -> ChatML). *known (may be NULL) is
 * false when no family matched and ChatML is the fallback. Can't fail. */
enum chat_family chat_template_detect(const char *jinja, bool *known);
/* A static lower-case name ("chatml", "llama2", ...); "unknown" for a bad value. */
const char *chat_family_name(enum chat_family family);

/* Renders msgs with the family's format; add_assistant appends the header that makes
 * the model answer. bos/eos are the vocabulary's BOS/EOS texts (used by the families
 * that write them, e.g. Llama 2's "<s>"); either may be NULL, which means the family's
 * usual "<s>" / "</s>". Llama 2 and Mistral prompts already end with "[/INST]", so there
 * add_assistant changes nothing. Roles are written as given ("tool" stays "tool") except
 * where a family renames them (Gemma's "model"). Returns a malloc'd
 * NUL-terminated string, or NULL on allocation failure or a message with a NULL field. */
char *chat_template_render(enum chat_family family, const chat_message *msgs, size_t n,
                           bool add_assistant, const char *bos, const char *eos);

/* The default system prompt that a ChatML template inserts when the conversation has
 * none (SmolLM2's "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
 * Qwen2's "You are a helpful assistant."): the literal text between "<|im_start|>system"
 * plus a newline and "<|im_end|>" inside the template, with Jinja string escapes undone.
 * Returns a malloc'd string, or NULL when jinja is NULL, has no such literal, or on
 * allocation failure. Render does not add it by itself: the caller prepends it as a
 * system message when the conversation has none (engine_render_chat does). */
char *chat_template_default_system(const char *jinja);

#endif
