/* engine.c - the engine's public face (engine.h): ties the GGUF file, the llama model,
 * the tokenizer, the chat template and the sampler into models, sessions and a
 * generation loop with streaming text and stop conditions.
 */
#include "engine.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine_model.h"
#include "generation.h"
#include "model/llama.h"
#include "model/lora.h"
#include "tokenizer/tokenizer.h"


struct engine_session {
    engine_model *model;
    llama_state *state;
    int32_t *history;           /* the tokens in the KV cache, n_ctx entries */
    float *logits;              /* V: logits after the last evaluated token */
};

int engine_fail(char *err, size_t errsz, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
    return -1;
}

double engine_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char *gguf_strdup(gguf_str s)
{
    char *out = malloc(s.len + 1);
    if (out) {
        memcpy(out, s.ptr, s.len);
        out[s.len] = '\0';
    }
    return out;
}

/* ---- models ----------------------------------------------------------------------- */

static void load_chat_template(engine_model *m)
{
    gguf_str tmpl;
    if (gguf_get_str(m->file, "tokenizer.chat_template", &tmpl))
        m->chat_template = gguf_strdup(tmpl);
    m->chat_family = chat_template_detect(m->chat_template, &m->chat_template_known);
    m->default_system = chat_template_default_system(m->chat_template);
}

int engine_model_open(engine_model **out, const char *path, char *err, size_t errsz)
{
    return engine_model_open_shard(out, path, NULL, err, errsz);
}

int engine_model_open_shard(engine_model **out, const char *path, struct collective *comm, char *err,
                            size_t errsz)
{
    *out = NULL;
    engine_model *m = calloc(1, sizeof *m);
    if (m == NULL)
        return engine_fail(err, errsz, "out of memory");
    char sub[512];
    if (gguf_open(&m->file, path, sub, sizeof sub)) {
        engine_fail(err, errsz, "%s: %s", path, sub);
        goto error;
    }
    if (llama_model_load_shard(&m->llama, m->file, comm, sub, sizeof sub) ||
        tokenizer_load(&m->tok, m->file, sub, sizeof sub)) {
        engine_fail(err, errsz, "%s: %s", path, sub);
        goto error;
    }
    if (tokenizer_n_vocab(m->tok) > m->llama->hp.n_vocab) {
        engine_fail(err, errsz, "%s: vocabulary of %d tokens but embeddings for %d", path,
             tokenizer_n_vocab(m->tok), m->llama->hp.n_vocab);
        goto error;
    }
    gguf_str name;
    if (gguf_get_str(m->file, "general.name", &name))
        snprintf(m->name, sizeof m->name, "%.*s", (int)name.len, name.ptr);
    load_chat_template(m);
    *out = m;
    return 0;
error:
    engine_model_close(m);
    return -1;
}

void engine_model_close(engine_model *m)
{
    if (m == NULL)
        return;
    tokenizer_free(m->tok);
    llama_model_free(m->llama);
    gguf_close(m->file);
    free(m->chat_template);
    free(m->default_system);
    free(m);
}

engine_model_info engine_model_get_info(const engine_model *m)
{
    const llama_hparams *hp = &m->llama->hp;
    const struct tensor_type_info *wt = tensor_type_info(m->llama->layers[0].w_gate.type);
    return (engine_model_info){
        .arch = hp->arch,
        .name = m->name,
        .n_vocab = hp->n_vocab,
        .n_ctx_train = hp->n_ctx_train,
        .dim = hp->dim,
        .n_layers = hp->n_layers,
        .n_heads = hp->n_heads,
        .n_kv_heads = hp->n_kv_heads,
        .ffn_dim = hp->ffn_dim,
        .weight_type = wt ? wt->name : "?",
        .file_bytes = m->file->size,
        .weight_bytes_per_token = llama_model_weight_bytes(m->llama),
        .chat_family = m->chat_family,
        .chat_template_known = m->chat_template_known,
    };
}

/* ---- text ------------------------------------------------------------------------- */

int engine_tokenize(const engine_model *m, const char *text, size_t len, bool add_bos,
                    bool parse_special, int32_t *ids, int cap)
{
    return tokenizer_encode(m->tok, text, len, add_bos, parse_special, ids, cap);
}

bool engine_adds_bos(const engine_model *m) { return tokenizer_adds_bos(m->tok); }
int engine_n_vocab(const engine_model *m) { return m->llama->hp.n_vocab; }
bool engine_is_eog(const engine_model *m, int32_t id) { return tokenizer_is_eog(m->tok, id); }

int engine_token_text(const engine_model *m, int32_t id, char *buf, int cap)
{
    return tokenizer_token_bytes(m->tok, id, false, buf, cap);
}

char *engine_render_chat(const engine_model *m, const chat_message *msgs, size_t n, bool add_assistant)
{
    const char *bos = tokenizer_piece(m->tok, tokenizer_bos(m->tok));
    const char *eos = tokenizer_piece(m->tok, tokenizer_eos(m->tok));
    bool has_system = false;
    for (size_t i = 0; i < n; i++)
        if (msgs[i].role && !strcmp(msgs[i].role, "system"))
            has_system = true;
    if (has_system || m->default_system == NULL)
        return chat_template_render(m->chat_family, msgs, n, add_assistant, bos, eos);
    chat_message *with_system = malloc((n + 1) * sizeof *with_system);
    if (with_system == NULL)
        return NULL;
    with_system[0] = (chat_message){"system", m->default_system};
    memcpy(with_system + 1, msgs, n * sizeof *msgs);
    char *out = chat_template_render(m->chat_family, with_system, n + 1, add_assistant, bos, eos);
    free(with_system);
    return out;
}

/* ---- adapters --------------------------------------------------------------------- */

int engine_adapter_open(engine_adapter **out, const engine_model *m, const char *path, char *err, size_t errsz)
{
    *out = calloc(1, sizeof **out);
    if (*out == NULL)
        return engine_fail(err, errsz, "out of memory");
    if (lora_load(&(*out)->lora, m->llama, path, err, errsz)) {
        free(*out);
        *out = NULL;
        return -1;
    }
    (*out)->model = m;
    (*out)->id = engine_adapter_new_id();
    return 0;
}

uint64_t engine_adapter_new_id(void)
{
    static _Atomic uint64_t last_id;
    return ++last_id;
}

void engine_adapter_close(engine_adapter *a)
{
    if (a == NULL)
        return;
    lora_free(a->lora);
    free(a);
}

/* ---- sessions --------------------------------------------------------------------- */

engine_session *engine_session_create(engine_model *m, const engine_session_options *opt)
{
    engine_session_options o = opt ? *opt : (engine_session_options){0};
    if (o.n_ctx <= 0)
        o.n_ctx = m->llama->hp.n_ctx_train < 2048 ? m->llama->hp.n_ctx_train : 2048;
    if (o.n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o.n_threads = n > 0 ? (int)n : 1;
    }
    if (o.n_batch <= 0)
        o.n_batch = 256;
    engine_session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->model = m;
    s->state = llama_state_create_kv(m->llama, o.n_ctx, o.n_batch, o.n_threads, o.kv_dtype);
    s->history = malloc(sizeof(int32_t) * (size_t)o.n_ctx);
    s->logits = malloc(sizeof(float) * (size_t)m->llama->hp.n_vocab);
    if (!s->state || !s->history || !s->logits) {
        engine_session_free(s);
        return NULL;
    }
    return s;
}

void engine_session_free(engine_session *s)
{
    if (s == NULL)
        return;
    llama_state_free(s->state);
    free(s->history);
    free(s->logits);
    free(s);
}

int engine_session_n_ctx(const engine_session *s) { return llama_state_n_ctx(s->state); }

void engine_session_reset(engine_session *s) { llama_state_truncate(s->state, 0); }

int engine_session_eval(engine_session *s, const int32_t *ids, int n, float *logits,
                        bool all_logits, char *err, size_t errsz)
{
    int n_past = llama_state_n_past(s->state), n_ctx = llama_state_n_ctx(s->state);
    int V = s->model->llama->hp.n_vocab;
    if (n <= 0)
        return engine_fail(err, errsz, "nothing to evaluate");
    if (n > n_ctx - n_past)
        return engine_fail(err, errsz, "%d tokens do not fit: %d of the context's %d positions are used",
                    n, n_past, n_ctx);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return engine_fail(err, errsz, "token id %d is out of range (vocabulary %d)", ids[i], V);
    if (llama_forward(s->state, ids, n, logits, all_logits))
        return engine_fail(err, errsz, "forward pass failed");
    memcpy(s->history + n_past, ids, sizeof(int32_t) * (size_t)n);
    return 0;
}

/* ---- generation ------------------------------------------------------------------- */

engine_gen_params engine_default_gen_params(void)
{
    engine_gen_params p;
    memset(&p, 0, sizeof p);
    p.sampling = sampler_default_params();
    p.max_tokens = 256;
    return p;
}

const char *engine_finish_name(enum engine_finish f)
{
    switch (f) {
    case ENGINE_FINISH_STOP: return "stop";
    case ENGINE_FINISH_LENGTH: return "length";
    case ENGINE_FINISH_CANCELLED: return "cancelled";
    }
    return "?";
}

static int eval_next(engine_session *s, int32_t id, char *err, size_t errsz)
{
    return engine_session_eval(s, &id, 1, s->logits, false, err, errsz);
}

/* Evaluates the part of the prompt that is not already cached. */
static int prefill(engine_session *s, const int32_t *prompt, int n_prompt, int *n_cached,
                   char *err, size_t errsz)
{
    int n_past = llama_state_n_past(s->state), common = 0;
    while (common < n_past && common < n_prompt && s->history[common] == prompt[common])
        common++;
    if (common == n_prompt)
        common--;  /* the last prompt token must be run again to get its logits */
    llama_state_truncate(s->state, common);
    *n_cached = common;
    return engine_session_eval(s, prompt + common, n_prompt - common, s->logits, false, err, errsz);
}

int engine_generate(engine_session *s, const int32_t *prompt, int n_prompt,
                    const engine_gen_params *params, engine_token_fn on_token, void *user,
                    engine_gen_result *r, char *err, size_t errsz)
{
    memset(r, 0, sizeof *r);
    int n_ctx = llama_state_n_ctx(s->state);
    if (n_prompt <= 0)
        return engine_fail(err, errsz, "the prompt is empty");
    if (n_prompt >= n_ctx)
        return engine_fail(err, errsz, "the prompt has %d tokens; the context holds %d", n_prompt, n_ctx);
    generation g;
    if (generation_begin(&g, s->model->tok, s->model->llama->hp.n_vocab, params, n_ctx, on_token, user))
        return engine_fail(err, errsz, "out of memory");
    const llama_lora *lora = params->adapter ? params->adapter->lora : NULL;
    if (llama_state_lora(s->state) != lora) {
        llama_state_truncate(s->state, 0);  /* the cache was computed with another adapter */
        llama_state_set_lora(s->state, lora);
    }
    double t0 = engine_now();
    int n_cached;
    if (prefill(s, prompt, n_prompt, &n_cached, err, errsz)) {
        generation_abort(&g);
        return -1;
    }
    double t1 = engine_now();
    int32_t next;
    while (generation_step(&g, s->logits, s->history, llama_state_n_past(s->state), n_ctx, &next))
        if (eval_next(s, next, err, errsz)) {
            g.r.finish = ENGINE_FINISH_CANCELLED;
            break;
        }
    generation_end(&g, r);
    r->n_prompt = n_prompt;
    r->n_cached = n_cached;
    r->prefill_seconds = t1 - t0;
    r->decode_seconds = engine_now() - t1;
    return 0;
}

void engine_gen_result_free(engine_gen_result *r)
{
    free(r->ids);
    free(r->text);
    r->ids = NULL;
    r->text = NULL;
}
