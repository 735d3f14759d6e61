/* chat_template.h - turning a list of chat messages into the prompt text a model was
 * trained on.
 *
 * `tokenizer.chat_template` is a Jinja program. Rather than embedding a Jinja
 * interpreter, we recognise the common template families by marker strings in it and
 * render them with C code; an unknown template falls back to ChatML with a warning
 * (returned through `known`).
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

/* The family of a Jinja template (NULL or empty -> ChatML). *known is false when no
 * family matched and ChatML is the fallback. */
enum chat_family chat_template_detect(const char *jinja, bool *known);
const char *chat_family_name(enum chat_family family);

/* Renders msgs with the family's format; add_assistant appends the header that makes
 * the model answer. bos/eos are the vocabulary's BOS/EOS texts (used by the families
 * that write them, e.g. Llama 2's "<s>"); either may be NULL. Returns a malloc'd
 * NUL-terminated string, or NULL on allocation failure or a message with a NULL field. */
char *chat_template_render(enum chat_family family, const chat_message *msgs, size_t n,
                           bool add_assistant, const char *bos, const char *eos);

#endif
