/* gw_openai.c - OpenAI-compatible request parsing/validation and response JSON (see
 * gw_openai.h). Validation is strict on types (a string where a number belongs is a
 * 400 naming the parameter) and lenient on unknown fields, which are ignored, because
 * SDKs add new optional fields faster than servers learn them. */
#include "gw_openai.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define MODEL_NAME_MAX 256

gw_error *gw_error_set(gw_error *e, int status, const char *type, const char *param,
                       const char *code, const char *fmt, ...)
{
    e->status = status;
    e->retry_after_s = 0;
    e->type = type;
    e->param = param;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return e;
}

static int bad_param(gw_error *e, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A 400 invalid_request_error about param. Always returns -1 so callers can return it. */
static int bad_param(gw_error *e, const char *param, const char *fmt, ...)
{
    e->status = 400;
    e->type = "invalid_request_error";
    e->param = param;
    e->code = "invalid_value";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

static int wrong_type(gw_error *e, const char *param, const char *want)
{
    bad_param(e, param, "'%s' must be %s", param, want);
    e->code = "invalid_type";
    return -1;
}

/* ---- typed getters: each treats a missing key or JSON null as "unset" (*has = false) */

static int get_float(json_t *o, const char *key, double lo, double hi, bool *has, float *out,
                     gw_error *e)
{
    json_t *v = json_object_get(o, key);
    *has = false;
    if (v == NULL || json_is_null(v)) return 0;
    if (!json_is_number(v)) return wrong_type(e, key, "a number");
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi)) return bad_param(e, key, "'%s' must be between %g and %g, got %g", key, lo, hi, d);
    *out = (float)d;
    *has = true;
    return 0;
}

/* Integers may arrive as 5 or 5.0 (some clients only have doubles); 5.5 is refused. */
static int get_int(json_t *o, const char *key, int64_t lo, int64_t hi, bool *has, int64_t *out,
                   gw_error *e)
{
    json_t *v = json_object_get(o, key);
    *has = false;
    if (v == NULL || json_is_null(v)) return 0;
    int64_t x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v) && floor(json_real_value(v)) == json_real_value(v) &&
               fabs(json_real_value(v)) < 9.0e18) {
        x = (int64_t)json_real_value(v);
    } else {
        return wrong_type(e, key, "an integer");
    }
    if (x < lo || x > hi)
        return bad_param(e, key, "'%s' must be between %lld and %lld, got %lld", key,
                         (long long)lo, (long long)hi, (long long)x);
    *out = x;
    *has = true;
    return 0;
}

static int get_bool(json_t *o, const char *key, bool *out, gw_error *e)
{
    json_t *v = json_object_get(o, key);
    if (v == NULL || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return wrong_type(e, key, "a boolean");
    *out = json_is_true(v);
    return 0;
}

/* A string parameter; *out is a malloc'd copy or stays NULL when unset. */
static int get_string(json_t *o, const char *key, size_t max_len, char **out, gw_error *e)
{
    json_t *v = json_object_get(o, key);
    if (v == NULL || json_is_null(v)) return 0;
    if (!json_is_string(v)) return wrong_type(e, key, "a string");
    if (json_string_length(v) > max_len)
        return bad_param(e, key, "'%s' is longer than %zu bytes", key, max_len);
    *out = strdup(json_string_value(v));
    if (*out == NULL) return bad_param(e, key, "out of memory");
    return 0;
}

/* ---- parameters ----------------------------------------------------------------------- */

static int parse_model(json_t *root, gw_request *r, gw_error *e)
{
    if (get_string(root, "model", MODEL_NAME_MAX, &r->model, e) != 0) return -1;
    if (r->model == NULL || r->model[0] == '\0') {
        bad_param(e, "model", "you must provide a model parameter");
        e->code = "missing_required_parameter";
        return -1;
    }
    return 0;
}

/* A message's content: a string, null (an assistant turn with no text), or an array of
 * content parts of which only {"type": "text", "text": ...} is supported. */
static int parse_content(json_t *c, char **out, gw_error *e)
{
    if (c == NULL || json_is_null(c)) {
        *out = strdup("");
    } else if (json_is_string(c)) {
        *out = strdup(json_string_value(c));
    } else if (json_is_array(c)) {
        size_t total = 0, i;
        json_t *part;
        json_array_foreach(c, i, part) {
            json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
            if (!json_is_object(part) || !json_is_string(type) ||
                strcmp(json_string_value(type), "text") != 0 || !json_is_string(text))
                return bad_param(e, "messages", "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
            total += json_string_length(text);
        }
        *out = malloc(total + 1);
        if (*out != NULL) {
            size_t off = 0;
            json_array_foreach(c, i, part) {
                json_t *text = json_object_get(part, "text");
                memcpy(*out + off, json_string_value(text), json_string_length(text));
                off += json_string_length(text);
            }
            (*out)[off] = '\0';
        }
    } else {
        return wrong_type(e, "messages", "an array of messages whose content is a string or an array of text parts");
    }
    if (*out == NULL) return bad_param(e, "messages", "out of memory");
    return 0;
}

static const char *canonical_role(const char *role)
{
    if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) return "system";
    if (strcmp(role, "user") == 0) return "user";
    if (strcmp(role, "assistant") == 0) return "assistant";
    return NULL;
}

static int parse_messages(json_t *root, gw_request *r, gw_error *e)
{
    json_t *msgs = json_object_get(root, "messages");
    if (msgs == NULL || json_is_null(msgs)) {
        bad_param(e, "messages", "you must provide a messages parameter");
        e->code = "missing_required_parameter";
        return -1;
    }
    if (!json_is_array(msgs)) return wrong_type(e, "messages", "an array");
    size_t n = json_array_size(msgs);
    if (n == 0) return bad_param(e, "messages", "'messages' must contain at least one message");
    r->messages = calloc(n, sizeof *r->messages);
    if (r->messages == NULL) return bad_param(e, "messages", "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        if (!json_is_object(m)) return wrong_type(e, "messages", "an array of objects");
        json_t *role = json_object_get(m, "role");
        if (!json_is_string(role)) return wrong_type(e, "messages", "an array of messages each with a string 'role'");
        const char *canon = canonical_role(json_string_value(role));
        if (canon == NULL)
            return bad_param(e, "messages", "unsupported role '%.40s' in messages[%zu] (system, developer, user, assistant)",
                             json_string_value(role), i);
        r->messages[i].role = strdup(canon);
        r->n_messages = i + 1;
        if (r->messages[i].role == NULL) return bad_param(e, "messages", "out of memory");
        if (parse_content(json_object_get(m, "content"), &r->messages[i].content, e) != 0) return -1;
    }
    return 0;
}

/* prompt: a string or an array holding exactly one string. */
static int parse_prompt(json_t *root, gw_request *r, gw_error *e)
{
    json_t *p = json_object_get(root, "prompt");
    if (p == NULL || json_is_null(p)) {
        bad_param(e, "prompt", "you must provide a prompt parameter");
        e->code = "missing_required_parameter";
        return -1;
    }
    if (json_is_array(p)) {
        if (json_array_size(p) != 1 || !json_is_string(json_array_get(p, 0)))
            return bad_param(e, "prompt", "'prompt' must be a string or an array of exactly one string (batches and token arrays are not supported)");
        p = json_array_get(p, 0);
    }
    if (!json_is_string(p)) return wrong_type(e, "prompt", "a string or an array of one string");
    r->prompt = strdup(json_string_value(p));
    return r->prompt ? 0 : bad_param(e, "prompt", "out of memory");
}

static int parse_stop(json_t *root, gw_request *r, gw_error *e)
{
    json_t *s = json_object_get(root, "stop");
    if (s == NULL || json_is_null(s)) return 0;
    size_t n = json_is_string(s) ? 1 : json_is_array(s) ? json_array_size(s) : (size_t)-1;
    if (n == (size_t)-1) return wrong_type(e, "stop", "a string or an array of strings");
    if (n > GW_MAX_STOP) return bad_param(e, "stop", "'stop' may hold at most %d sequences", GW_MAX_STOP);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_is_string(s) ? s : json_array_get(s, i);
        if (!json_is_string(v)) return wrong_type(e, "stop", "a string or an array of strings");
        if (json_string_length(v) == 0) return bad_param(e, "stop", "stop sequences must not be empty");
        r->stop[i] = strdup(json_string_value(v));
        r->n_stop = i + 1;
        if (r->stop[i] == NULL) return bad_param(e, "stop", "out of memory");
    }
    return 0;
}

static int parse_max_tokens(json_t *root, gw_request *r, gw_error *e)
{
    bool has_a = false, has_b = false;
    int64_t a = 0, b = 0;
    if (get_int(root, "max_tokens", 1, INT32_MAX, &has_a, &a, e) != 0) return -1;
    if (get_int(root, "max_completion_tokens", 1, INT32_MAX, &has_b, &b, e) != 0) return -1;
    /* max_completion_tokens is OpenAI's newer name; it wins when both are sent. */
    r->has_max_tokens = has_a || has_b;
    r->max_tokens = (int32_t)(has_b ? b : a);
    return 0;
}

static int parse_sampling(json_t *root, gw_request *r, gw_error *e)
{
    bool has;
    int64_t v;
    if (get_float(root, "temperature", 0, 2, &r->has_temperature, &r->temperature, e) ||
        get_float(root, "top_p", 0, 1, &r->has_top_p, &r->top_p, e) ||
        get_float(root, "min_p", 0, 1, &r->has_min_p, &r->min_p, e) ||
        get_float(root, "presence_penalty", -2, 2, &r->has_presence_penalty, &r->presence_penalty, e) ||
        get_float(root, "frequency_penalty", -2, 2, &r->has_frequency_penalty, &r->frequency_penalty, e) ||
        get_float(root, "repetition_penalty", 0.01, 10, &r->has_repetition_penalty, &r->repetition_penalty, e))
        return -1;
    if (get_int(root, "top_k", -1, 1 << 20, &r->has_top_k, &v, e) != 0) return -1;
    if (r->has_top_k) r->top_k = (int32_t)v;
    if (get_int(root, "seed", INT64_MIN, INT64_MAX, &r->has_seed, &v, e) != 0) return -1;
    if (r->has_seed) r->seed = (uint64_t)v;
    if (get_int(root, "n", 1, INT64_MAX, &has, &v, e) != 0) return -1;
    if (!has || v == 1) return 0;
    bad_param(e, "n", "n > 1 is not supported yet: send one request per completion");
    e->code = "unsupported_value";
    return -1;
}

/* Chat: logprobs is a boolean and top_logprobs (0..20) needs it. Completions: logprobs
 * is the legacy integer 0..5, the number of alternatives per token. */
static int parse_logprobs(json_t *root, gw_request *r, gw_error *e)
{
    bool has;
    int64_t v;
    if (r->kind == GW_KIND_CHAT) {
        if (get_bool(root, "logprobs", &r->logprobs, e) != 0) return -1;
        if (get_int(root, "top_logprobs", 0, GW_MAX_TOP_LOGPROBS, &has, &v, e) != 0) return -1;
        if (has && v > 0 && !r->logprobs)
            return bad_param(e, "top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
        r->top_logprobs = has ? (int32_t)v : 0;
        return 0;
    }
    if (get_int(root, "logprobs", 0, GW_MAX_COMPLETION_LOGPROBS, &has, &v, e) != 0) return -1;
    r->logprobs = has;
    r->top_logprobs = has ? (int32_t)v : 0;
    return 0;
}

static int parse_stream(json_t *root, gw_request *r, gw_error *e)
{
    if (get_bool(root, "stream", &r->stream, e) != 0) return -1;
    json_t *so = json_object_get(root, "stream_options");
    if (so == NULL || json_is_null(so)) return 0;
    if (!json_is_object(so)) return wrong_type(e, "stream_options", "an object");
    json_t *iu = json_object_get(so, "include_usage");
    if (iu != NULL && !json_is_null(iu) && !json_is_boolean(iu))
        return wrong_type(e, "stream_options.include_usage", "a boolean");
    r->include_usage = json_is_true(iu);
    return 0;
}

/* Completions-only options that would silently change the answer's meaning. */
static int parse_unsupported(json_t *root, gw_request *r, gw_error *e)
{
    if (r->kind != GW_KIND_COMPLETION) return 0;
    bool echo = false, has;
    int64_t best_of;
    if (get_bool(root, "echo", &echo, e) != 0) return -1;
    if (echo) {
        bad_param(e, "echo", "'echo' is not supported");
        e->code = "unsupported_value";
        return -1;
    }
    if (get_int(root, "best_of", 1, INT32_MAX, &has, &best_of, e) != 0) return -1;
    if (has && best_of > 1) {
        bad_param(e, "best_of", "best_of > 1 is not supported");
        e->code = "unsupported_value";
        return -1;
    }
    return 0;
}

static int parse_object(json_t *root, gw_request *r, gw_error *e)
{
    if (parse_model(root, r, e) != 0) return -1;
    if (r->kind == GW_KIND_CHAT ? parse_messages(root, r, e) : parse_prompt(root, r, e)) return -1;
    if (parse_stream(root, r, e) || parse_max_tokens(root, r, e) || parse_sampling(root, r, e) ||
        parse_stop(root, r, e) || parse_logprobs(root, r, e) || parse_unsupported(root, r, e))
        return -1;
    return get_string(root, "user", 256, &r->user, e);
}

int gw_request_parse(enum gw_kind kind, const char *body, size_t len, gw_request *req,
                     gw_error *e)
{
    memset(req, 0, sizeof *req);
    req->kind = kind;
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        gw_error_set(e, 400, "invalid_request_error", NULL, "invalid_json",
                     "the request body is not valid JSON: %s (at byte %d)", jerr.text, jerr.position);
        return -1;
    }
    int rc = 0;
    if (!json_is_object(root)) {
        gw_error_set(e, 400, "invalid_request_error", NULL, "invalid_json",
                     "the request body must be a JSON object");
        rc = -1;
    } else {
        rc = parse_object(root, req, e);
    }
    json_decref(root);
    if (rc != 0) gw_request_free(req);
    return rc;
}

void gw_request_free(gw_request *req)
{
    free(req->model);
    for (size_t i = 0; i < req->n_messages; i++) {
        free(req->messages[i].role);
        free(req->messages[i].content);
    }
    free(req->messages);
    free(req->prompt);
    for (size_t i = 0; i < req->n_stop; i++) free(req->stop[i]);
    free(req->user);
    enum gw_kind kind = req->kind;
    memset(req, 0, sizeof *req);
    req->kind = kind;
}

/* ---- responses ---------------------------------------------------------------------- */

/* Token texts are raw bytes and may be part of a UTF-8 character: jansson refuses
 * invalid UTF-8, so bad sequences become U+FFFD (the raw bytes are in "bytes"). */
static json_t *json_text(const char *s, size_t len)
{
    json_t *v = json_stringn(s, len);
    if (v != NULL) return v;
    char *buf = malloc(len * 3 + 1);
    if (buf == NULL) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        json_t *probe = (n > 0 && i + n <= len) ? json_stringn(s + i, n) : NULL;
        if (probe != NULL && c != 0) {
            memcpy(buf + o, s + i, n);
            o += n;
            i += n;
        } else {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += 1;
        }
        json_decref(probe);
    }
    v = json_stringn(buf, o);
    free(buf);
    return v;
}

/* -inf (an impossible token) is not JSON; OpenAI reports such tokens as -9999. */
static json_t *json_logprob(float lp)
{
    return json_real(isfinite(lp) ? (double)lp : -9999.0);
}

static json_t *json_bytes(const char *s, size_t len)
{
    json_t *a = json_array();
    for (size_t i = 0; i < len && a; i++) json_array_append_new(a, json_integer((unsigned char)s[i]));
    return a;
}

/* Chat's per-token entry: {"token", "logprob", "bytes", "top_logprobs": [...]}. */
static json_t *chat_token_logprob(const gw_token_logprob *t)
{
    json_t *top = json_array();
    for (size_t i = 0; i < t->n_top; i++)
        json_array_append_new(top, json_pack("{s:o, s:o, s:o}",
            "token", json_text(t->top[i].token, t->top[i].token_len),
            "logprob", json_logprob(t->top[i].logprob),
            "bytes", json_bytes(t->top[i].token, t->top[i].token_len)));
    return json_pack("{s:o, s:o, s:o, s:o}", "token", json_text(t->token, t->token_len),
                     "logprob", json_logprob(t->logprob),
                     "bytes", json_bytes(t->token, t->token_len), "top_logprobs", top);
}

/* What both kinds accumulate; the completions fields stay NULL for chat and so on. */
struct gw_logprobs_acc {
    enum gw_kind kind;
    json_t *content;        /* chat: array of chat_token_logprob */
    json_t *tokens, *token_logprobs, *top_logprobs, *text_offset;  /* completions */
};

gw_logprobs_acc *gw_logprobs_acc_new(enum gw_kind kind)
{
    gw_logprobs_acc *a = calloc(1, sizeof *a);
    if (a == NULL) return NULL;
    a->kind = kind;
    if (kind == GW_KIND_CHAT) {
        a->content = json_array();
        if (a->content) return a;
    } else {
        a->tokens = json_array();
        a->token_logprobs = json_array();
        a->top_logprobs = json_array();
        a->text_offset = json_array();
        if (a->tokens && a->token_logprobs && a->top_logprobs && a->text_offset) return a;
    }
    gw_logprobs_acc_free(a);
    return NULL;
}

/* Completions' legacy top_logprobs entry: {"<token>": logprob, ...}. */
static json_t *completion_top(const gw_token_logprob *t)
{
    json_t *o = json_object();
    for (size_t i = 0; i < t->n_top && o; i++) {
        json_t *k = json_text(t->top[i].token, t->top[i].token_len);
        if (k == NULL) continue;
        json_object_set_new(o, json_string_value(k), json_logprob(t->top[i].logprob));
        json_decref(k);
    }
    return o;
}

int gw_logprobs_acc_add(gw_logprobs_acc *acc, const gw_token_logprob *t, int64_t text_offset)
{
    if (acc->kind == GW_KIND_CHAT) return json_array_append_new(acc->content, chat_token_logprob(t));
    int rc = json_array_append_new(acc->tokens, json_text(t->token, t->token_len));
    rc |= json_array_append_new(acc->token_logprobs, json_logprob(t->logprob));
    rc |= json_array_append_new(acc->top_logprobs, completion_top(t));
    rc |= json_array_append_new(acc->text_offset, json_integer(text_offset));
    return rc;
}

void gw_logprobs_acc_free(gw_logprobs_acc *acc)
{
    if (acc == NULL) return;
    json_decref(acc->content);
    json_decref(acc->tokens);
    json_decref(acc->token_logprobs);
    json_decref(acc->top_logprobs);
    json_decref(acc->text_offset);
    free(acc);
}

/* The logprobs value of a choice: null, or the accumulated shape (a new reference). */
static json_t *acc_json(const gw_logprobs_acc *acc)
{
    if (acc == NULL) return json_null();
    if (acc->kind == GW_KIND_CHAT) return json_pack("{s:O}", "content", acc->content);
    return json_pack("{s:O, s:O, s:O, s:O}", "tokens", acc->tokens, "token_logprobs",
                     acc->token_logprobs, "top_logprobs", acc->top_logprobs,
                     "text_offset", acc->text_offset);
}

static json_t *usage_json(const gw_usage *u)
{
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)u->prompt_tokens,
                     "completion_tokens", (json_int_t)u->completion_tokens,
                     "total_tokens", (json_int_t)(u->prompt_tokens + u->completion_tokens));
}

static json_t *envelope(const gw_response_meta *m, const char *object)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:n}", "id", m->id, "object", object,
                     "created", (json_int_t)m->created, "model", m->model,
                     "system_fingerprint");
}

/* Serialises v (stealing the reference), optionally as an SSE event. */
static char *dump(json_t *v, bool sse, size_t *out_len)
{
    if (v == NULL) return NULL;
    char *s = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    if (s == NULL) return NULL;
    size_t n = strlen(s);
    if (!sse) {
        if (out_len) *out_len = n;
        return s;
    }
    char *ev = malloc(n + 9);
    if (ev != NULL) {
        memcpy(ev, "data: ", 6);
        memcpy(ev + 6, s, n);
        memcpy(ev + 6 + n, "\n\n", 3);
        if (out_len) *out_len = n + 8;
    }
    free(s);
    return ev;
}

/* A streamed chunk's logprobs: null, or this chunk's tokens in the kind's shape. */
static json_t *chunk_logprobs(enum gw_kind kind, const gw_token_logprob *lp, size_t n_lp)
{
    if (n_lp == 0) return json_null();
    gw_logprobs_acc *acc = gw_logprobs_acc_new(kind);
    if (acc == NULL) return NULL;
    for (size_t i = 0; i < n_lp; i++) gw_logprobs_acc_add(acc, &lp[i], -1);
    json_t *v = acc_json(acc);
    gw_logprobs_acc_free(acc);
    return v;
}

static json_t *json_reason(const char *finish_reason)
{
    return finish_reason ? json_string(finish_reason) : json_null();
}

char *gw_sse_chunk(const gw_response_meta *m, bool first, const char *text, size_t text_len,
                   const char *finish_reason, const gw_token_logprob *lp, size_t n_lp,
                   size_t *out_len)
{
    bool chat = m->kind == GW_KIND_CHAT;
    json_t *o = envelope(m, chat ? "chat.completion.chunk" : "text_completion");
    json_t *choice;
    if (chat) {
        json_t *delta = json_object();
        if (first) json_object_set_new(delta, "role", json_string("assistant"));
        if (text_len > 0 || first || finish_reason == NULL)
            json_object_set_new(delta, "content", json_text(text, text_len));
        choice = json_pack("{s:i, s:o, s:o, s:o}", "index", 0, "delta", delta,
                           "logprobs", chunk_logprobs(m->kind, lp, n_lp),
                           "finish_reason", json_reason(finish_reason));
    } else {
        choice = json_pack("{s:i, s:o, s:o, s:o}", "index", 0, "text", json_text(text, text_len),
                           "logprobs", chunk_logprobs(m->kind, lp, n_lp),
                           "finish_reason", json_reason(finish_reason));
    }
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    if (m->include_usage) json_object_set_new(o, "usage", json_null());
    return dump(o, true, out_len);
}

char *gw_sse_usage_chunk(const gw_response_meta *m, const gw_usage *u, size_t *out_len)
{
    json_t *o = envelope(m, m->kind == GW_KIND_CHAT ? "chat.completion.chunk" : "text_completion");
    json_object_set_new(o, "choices", json_array());
    json_object_set_new(o, "usage", usage_json(u));
    return dump(o, true, out_len);
}

static json_t *error_json(const gw_error *e)
{
    return json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", e->message, "type",
                     e->type ? e->type : "server_error", "param", e->param, "code", e->code);
}

char *gw_sse_error(const gw_error *e, size_t *out_len)
{
    return dump(error_json(e), true, out_len);
}

char *gw_error_body(const gw_error *e, size_t *out_len)
{
    return dump(error_json(e), false, out_len);
}

char *gw_completion_response(const gw_response_meta *m, const char *text, size_t text_len,
                             const char *finish_reason, const gw_usage *u,
                             const gw_logprobs_acc *lp, size_t *out_len)
{
    bool chat = m->kind == GW_KIND_CHAT;
    json_t *o = envelope(m, chat ? "chat.completion" : "text_completion");
    json_t *choice;
    if (chat)
        choice = json_pack("{s:i, s:{s:s, s:o, s:n}, s:o, s:o}", "index", 0, "message", "role",
                           "assistant", "content", json_text(text, text_len), "refusal",
                           "logprobs", acc_json(lp), "finish_reason", json_reason(finish_reason));
    else
        choice = json_pack("{s:i, s:o, s:o, s:o}", "index", 0, "text", json_text(text, text_len),
                           "logprobs", acc_json(lp), "finish_reason", json_reason(finish_reason));
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    json_object_set_new(o, "usage", usage_json(u));
    return dump(o, false, out_len);
}

char *gw_models_body(const char *const *models, size_t n, int64_t created, size_t *out_len)
{
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(data, json_pack("{s:s, s:s, s:I, s:s}", "id", models[i], "object",
                                              "model", "created", (json_int_t)created,
                                              "owned_by", "citadel"));
    return dump(json_pack("{s:s, s:o}", "object", "list", "data", data), false, out_len);
}
