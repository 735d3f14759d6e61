/* engine_model.h - what an engine_model holds, for the files of the engine that need
 * its parts (engine.c, engine_batch.c). Internal to kernels/: services see only the
 * opaque type in engine.h.
 */
#ifndef CITADEL_ENGINE_MODEL_H
#define CITADEL_ENGINE_MODEL_H

#include "engine.h"
#include "model/llama.h"
#include "tokenizer/tokenizer.h"

struct engine_model {
    gguf_file *file;
    llama_model *llama;
    tokenizer *tok;
    char *chat_template;        /* the Jinja text, or NULL */
    char *default_system;       /* the template's default system prompt, or NULL */
    enum chat_family chat_family;
    bool chat_template_known;
    char name[128];
};

/* An adapter: the LoRA matrices (owned unless a trainer lends its own). */
struct engine_adapter {
    struct llama_lora *lora;
    const engine_model *model;
    uint64_t id;    /* unique per open, never 0: the prefix cache's namespace for its sequences */
};

/* A fresh engine_adapter id (engine.c); thread-safe. */
uint64_t engine_adapter_new_id(void);

/* Writes the message into err and returns -1 (engine.c). */
int engine_fail(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Monotonic seconds (engine.c). */
double engine_now(void);

#endif
