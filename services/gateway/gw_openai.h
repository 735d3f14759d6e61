/* gw_openai.h - the OpenAI-compatible API's JSON: request bodies in, response bodies,
 * SSE chunks and error bodies out. Uses jansson; knows nothing of sockets or protobuf.
 *
 * A request body is parsed and validated strictly into a gw_request (every parameter's
 * type and range; the first problem becomes a gw_error naming the parameter, which the
 * server sends as a 400). gw_proto.c turns a gw_request into the wire GenerateRequest.
 * The builders return malloc'd, NUL-terminated compact JSON (free with free()); they
 * return NULL only when memory runs out.
 */
#ifndef CITADEL_GW_OPENAI_H
#define CITADEL_GW_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_MAX_STOP 4             /* OpenAI allows up to 4 stop sequences */
#define GW_MAX_TOP_LOGPROBS 20    /* chat top_logprobs 0..20 */
#define GW_MAX_COMPLETION_LOGPROBS 5  /* completions' integer logprobs 0..5 */

enum gw_kind { GW_KIND_CHAT, GW_KIND_COMPLETION };

/* One chat message; content is the text (parts of type "text" joined). */
typedef struct gw_message {
    char *role;       /* "system", "user" or "assistant" ("developer" becomes "system") */
    char *content;
} gw_message;

/* A validated generation request. Optional parameters come with has_ flags: a
 * parameter the client left out (or sent as null) is unset and the worker uses its
 * own default. Strings are owned (free with gw_request_free). */
typedef struct gw_request {
    enum gw_kind kind;
    char *model;
    gw_message *messages;  size_t n_messages;   /* chat */
    char *prompt;                               /* completions */
    bool stream;
    bool include_usage;                         /* stream_options.include_usage */
    bool has_max_tokens;        int32_t max_tokens;
    bool has_temperature;       float temperature;
    bool has_top_p;             float top_p;
    bool has_top_k;             int32_t top_k;
    bool has_min_p;             float min_p;
    bool has_seed;              uint64_t seed;
    bool has_presence_penalty;  float presence_penalty;
    bool has_frequency_penalty; float frequency_penalty;
    bool has_repetition_penalty; float repetition_penalty;
    char *stop[GW_MAX_STOP];    size_t n_stop;
    bool logprobs;                              /* per-token log-probabilities wanted */
    int32_t top_logprobs;                       /* alternatives per token, 0..20 */
    char *user;
    int64_t deadline_ms;        /* from the X-Citadel-Deadline-Ms header, not the body; 0: the default */
    bool cache_skip_lookup;                     /* Cache-Control: no-cache or no-store */
    bool cache_skip_store;                      /* Cache-Control: no-store */
} gw_request;

/* A client-facing error: HTTP status and OpenAI's {"error": {...}} fields. param and
 * code may be NULL (sent as null). */
typedef struct gw_error {
    int status;
    const char *type;      /* "invalid_request_error", "authentication_error", ... */
    const char *param;
    const char *code;
    char message[512];
    int retry_after_s;     /* > 0: sent as Retry-After (503 overloaded); gw_error_set clears it */
} gw_error;

/* Fills e; message is printf-formatted. Returns e for convenience. */
gw_error *gw_error_set(gw_error *e, int status, const char *type, const char *param,
                       const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Parses body[0..len) as a request of this kind into req (zeroed first). Returns 0, or
 * -1 with e filled (status 400, param naming the offending parameter). On failure req
 * holds nothing that needs freeing. */
int gw_request_parse(enum gw_kind kind, const char *body, size_t len, gw_request *req,
                     gw_error *e);
void gw_request_free(gw_request *req);

/* ---- responses ---------------------------------------------------------------------- */

/* One generated token's log-probability and its best alternatives, for logprobs. */
typedef struct gw_top_logprob {
    const char *token;  size_t token_len;
    float logprob;
} gw_top_logprob;

typedef struct gw_token_logprob {
    const char *token;  size_t token_len;
    float logprob;
    const gw_top_logprob *top;  size_t n_top;
} gw_token_logprob;

typedef struct gw_usage {
    int64_t prompt_tokens, completion_tokens;
} gw_usage;

/* What a response carries besides text, the same for every chunk of one request. */
typedef struct gw_response_meta {
    enum gw_kind kind;
    const char *id;         /* "chatcmpl-…" or "cmpl-…" */
    int64_t created;        /* unix seconds */
    const char *model;
    bool include_usage;     /* streamed chunks carry "usage": null until the last */
} gw_response_meta;

/* Accumulates a non-streamed response's log-probabilities in the shape of its kind
 * (chat: {"content": [...]}; completions: tokens/token_logprobs/top_logprobs/
 * text_offset). Opaque; NULL-safe free. */
typedef struct gw_logprobs_acc gw_logprobs_acc;
gw_logprobs_acc *gw_logprobs_acc_new(enum gw_kind kind);
/* Appends one token; text_offset is its byte offset in the generated text. 0 or -1. */
int gw_logprobs_acc_add(gw_logprobs_acc *acc, const gw_token_logprob *t, int64_t text_offset);
void gw_logprobs_acc_free(gw_logprobs_acc *acc);

/* A streamed chunk: "data: {...}\n\n". For chat, first sets the delta's role to
 * "assistant"; text (may be empty) is the delta's content or the choice's text;
 * finish_reason is NULL until the last text chunk; lp (n_lp tokens, may be 0) are
 * the tokens this chunk covers. */
char *gw_sse_chunk(const gw_response_meta *m, bool first, const char *text, size_t text_len,
                   const char *finish_reason, const gw_token_logprob *lp, size_t n_lp,
                   size_t *out_len);
/* The final usage chunk of stream_options.include_usage (choices: []). */
char *gw_sse_usage_chunk(const gw_response_meta *m, const gw_usage *u, size_t *out_len);
/* "data: [DONE]\n\n" as a constant. */
#define GW_SSE_DONE "data: [DONE]\n\n"
/* An error inside a stream, after the headers went out: "data: {"error": ...}\n\n". */
char *gw_sse_error(const gw_error *e, size_t *out_len);

/* The whole non-streamed response. lp may be NULL (then "logprobs": null). */
char *gw_completion_response(const gw_response_meta *m, const char *text, size_t text_len,
                             const char *finish_reason, const gw_usage *u,
                             const gw_logprobs_acc *lp, size_t *out_len);

/* {"error": {"message", "type", "param", "code"}}. */
char *gw_error_body(const gw_error *e, size_t *out_len);

/* {"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}...]}. */
char *gw_models_body(const char *const *models, size_t n, int64_t created, size_t *out_len);

#endif
