/* gw_grpc.c - citadel.v1.Inference over gRPC core (see gw_grpc.h).
 *
 * One `rpc` is one call, from grpc_server_request_call handing it to us until gRPC has
 * completed every operation we started on it. Operations are batches started with
 * grpc_call_start_batch; each kind of batch is outstanding at most once at a time, so
 * each has a tag embedded in the rpc:
 *   accept   the call arrived (request_call)     recv     the request message
 *   send     one response message                status   the final status
 *   close    the call ended (client cancel included; always armed)
 * ops_pending counts the started batches; the rpc is freed when the call is closed, no
 * batch is pending, no generation runs and no rate-limit answer is awaited.
 *
 * The poller thread only links finished tags into a list and writes a byte to a pipe;
 * on_wake (on the libevent loop) takes the list and runs the handlers.
 */
#include "gw_grpc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <openssl/rand.h>

#include "citadel.pb-c.h"
#include "gw_audit.h"
#include "gw_log.h"
#include "inference.pb-c.h"

#define SERVICE "/citadel.v1.Inference/"
#define MAX_AUTH_BYTES 16384

typedef struct rpc rpc;

enum tag_kind { TAG_ACCEPT, TAG_RECV, TAG_SEND, TAG_STATUS, TAG_CLOSE, TAG_SHUTDOWN };

/* A completion-queue tag, linked into the loop's inbox by the poller when it fires. */
typedef struct op_tag {
    rpc *r;                    /* NULL for the server's shutdown tag */
    enum tag_kind kind;
    int ok;
    struct op_tag *next;
} op_tag;

/* A response message waiting for its turn (one send at a time per call). */
typedef struct out_msg {
    grpc_byte_buffer *bb;
    struct out_msg *next;
} out_msg;

enum rpc_method { M_UNKNOWN, M_GENERATE, M_LIST_MODELS, M_HEALTH };

struct rpc {
    gw_grpc *g;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array request_md;
    grpc_byte_buffer *request;
    int cancelled;                       /* set by the close op */
    op_tag tag_accept, tag_recv, tag_send, tag_status, tag_close;
    int ops_pending;
    bool closed, status_started, md_sent;
    enum rpc_method method;
    char request_id[40];
    gw_principal who;
    gw_request body;
    bool generating;                     /* submitted to the router, not finished */
    bool sanitizing;                     /* the prompt is with the sanitizer */
    gw_output_filter *out;               /* the router's chunks go through it */
    gw_findings findings;                /* what the sanitizer found (types, counts) */
    gw_ratelimit_ticket *ticket;         /* waiting for the rate limiter */
    out_msg *out_head, *out_tail;
    grpc_byte_buffer *in_flight_bb;      /* the message being sent */
    bool finish_wanted;                  /* send the status once the queue is empty */
    grpc_status_code final_code;
    char final_msg[300];
    int http_status;                     /* the REST equivalent, for metrics */
    gw_header md[6];                     /* x-ratelimit-* (initial) or with retry-after (trailing) */
    size_t n_md;
    char md_buf[256];
    bool md_trailing;
    grpc_metadata md_grpc[6];
    grpc_slice status_slice;
    struct timespec started;
    gw_audit_record audit;               /* the call's AuditEvent (Health is not audited) */
    rpc *prev, *next;
};

struct gw_grpc {
    struct event_base *base;
    gw_access *access;
    gw_upstream *up;
    gw_sanitizer *sanitizer;             /* every prompt and output goes through it */
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t poller;
    bool poller_started;
    int pipe_r, pipe_w;
    struct event *wake_ev;
    pthread_mutex_t lock;
    op_tag *inbox_head, *inbox_tail;     /* guarded by lock */
    rpc *accepting;                      /* the slot waiting in request_call */
    rpc *rpcs;                           /* accepted calls */
    size_t live;
    op_tag shutdown_tag;
    bool shutting_down, shutdown_done;
};

static void start_accept(gw_grpc *g);

/* ---- the poller thread and the inbox ------------------------------------------------ */

static void *poll_loop(void *arg)
{
    gw_grpc *g = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        op_tag *t = ev.tag;
        t->ok = ev.success;
        t->next = NULL;
        pthread_mutex_lock(&g->lock);
        if (g->inbox_tail) g->inbox_tail->next = t;
        else g->inbox_head = t;
        g->inbox_tail = t;
        pthread_mutex_unlock(&g->lock);
        /* A full pipe already holds a wake-up: EAGAIN is fine. */
        if (write(g->pipe_w, "x", 1) < 0 && errno != EAGAIN) gw_log(GW_LOG_ERROR, NULL, "gRPC wake-up pipe failed");
    }
    return NULL;
}

/* ---- per-call helpers --------------------------------------------------------------- */

static double seconds_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static grpc_status_code status_for_http(int status)
{
    switch (status) {
    case 200: return GRPC_STATUS_OK;
    case 400: case 413: return GRPC_STATUS_INVALID_ARGUMENT;
    case 401: return GRPC_STATUS_UNAUTHENTICATED;
    case 403: return GRPC_STATUS_PERMISSION_DENIED;
    case 404: return GRPC_STATUS_NOT_FOUND;
    case 429: return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case 499: return GRPC_STATUS_CANCELLED;
    case 501: return GRPC_STATUS_UNIMPLEMENTED;
    case 503: case 529: return GRPC_STATUS_UNAVAILABLE;
    case 504: return GRPC_STATUS_DEADLINE_EXCEEDED;
    default: return GRPC_STATUS_INTERNAL;
    }
}

/* Starts a batch; counts it when gRPC took it. Returns whether it did. */
static bool start_batch(rpc *r, const grpc_op *ops, size_t n, op_tag *tag)
{
    grpc_call_error e = grpc_call_start_batch(r->call, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) {
        gw_log(GW_LOG_WARN, r->request_id[0] ? r->request_id : NULL, "gRPC batch refused: %d", (int)e);
        return false;
    }
    r->ops_pending++;
    return true;
}

/* Adds SEND_INITIAL_METADATA (with the rate-limit headers unless they go in the
 * trailers) the first time; returns the number of ops written (0 or 1). */
static size_t initial_md_op(rpc *r, grpc_op *op)
{
    if (r->md_sent) return 0;
    r->md_sent = true;
    memset(op, 0, sizeof *op);
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    if (!r->md_trailing) {
        for (size_t i = 0; i < r->n_md; i++) {
            r->md_grpc[i].key = grpc_slice_from_static_string(r->md[i].name);
            r->md_grpc[i].value = grpc_slice_from_static_string(r->md[i].value);
        }
        op->data.send_initial_metadata.count = r->n_md;
        op->data.send_initial_metadata.metadata = r->md_grpc;
    }
    return 1;
}

static void drop_queue(rpc *r)
{
    for (out_msg *m = r->out_head, *next; m; m = next) {
        next = m->next;
        grpc_byte_buffer_destroy(m->bb);
        free(m);
    }
    r->out_head = r->out_tail = NULL;
}

/* Sends what can be sent now: the next queued message, or the status when the queue
 * is empty and the call is to end. */
static void pump(rpc *r)
{
    if (r->in_flight_bb || r->status_started || r->closed) return;
    grpc_op ops[2];
    size_t n = initial_md_op(r, &ops[0]);
    if (r->out_head) {
        out_msg *m = r->out_head;
        r->out_head = m->next;
        if (r->out_head == NULL) r->out_tail = NULL;
        memset(&ops[n], 0, sizeof ops[n]);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = m->bb;
        r->in_flight_bb = m->bb;
        free(m);
        if (!start_batch(r, ops, n, &r->tag_send)) {
            grpc_byte_buffer_destroy(r->in_flight_bb);
            r->in_flight_bb = NULL;
        }
        return;
    }
    if (!r->finish_wanted) {
        if (n) r->md_sent = false;   /* nothing to send yet: keep the metadata for later */
        return;
    }
    memset(&ops[n], 0, sizeof ops[n]);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = r->final_code;
    r->status_slice = grpc_slice_from_static_string(r->final_msg);
    ops[n].data.send_status_from_server.status_details = &r->status_slice;
    if (r->md_trailing) {
        for (size_t i = 0; i < r->n_md; i++) {
            r->md_grpc[i].key = grpc_slice_from_static_string(r->md[i].name);
            r->md_grpc[i].value = grpc_slice_from_static_string(r->md[i].value);
        }
        ops[n].data.send_status_from_server.trailing_metadata_count = r->n_md;
        ops[n].data.send_status_from_server.trailing_metadata = r->md_grpc;
    }
    n++;
    r->status_started = true;
    start_batch(r, ops, n, &r->tag_status);
}

/* Queues one protobuf message (already packed into buf[0..len)). */
static void enqueue(rpc *r, const uint8_t *buf, size_t len)
{
    if (r->closed || r->status_started) return;
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)buf, len);
    out_msg *m = malloc(sizeof *m);
    if (m == NULL) {
        grpc_slice_unref(s);
        return;
    }
    m->bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    m->next = NULL;
    if (r->out_tail) r->out_tail->next = m;
    else r->out_head = m;
    r->out_tail = m;
    pump(r);
}

/* Ends the call (after the queued messages) with http_status's gRPC status. */
static void finish(rpc *r, int http_status, const char *msg)
{
    if (r->finish_wanted) return;
    r->finish_wanted = true;
    r->http_status = http_status;
    r->final_code = status_for_http(http_status);
    snprintf(r->final_msg, sizeof r->final_msg, "%s", msg ? msg : "");
    gw_metric_request(http_status, seconds_since(&r->started));
    for (int k = 0; k < SANITIZE_FINDING_COUNT; k++)   /* the sanitizer's findings: types and counts */
        if (r->findings.prompt[k] + r->findings.output[k])
            gw_audit_add_finding(&r->audit, sanitize_finding_name(k), r->findings.prompt[k] + r->findings.output[k]);
    gw_audit_emit(&r->audit, http_status);
    if (http_status != 200)
        gw_log(http_status >= 500 ? GW_LOG_WARN : GW_LOG_INFO, r->request_id[0] ? r->request_id : NULL,
               "gRPC call failed: %d %s", http_status, r->final_msg);
    pump(r);
}

static void finish_error(rpc *r, const gw_error *e)
{
    finish(r, e->status, e->message);
}

static void rpc_free(rpc *r)
{
    gw_grpc *g = r->g;
    if (r->prev) r->prev->next = r->next;
    else if (g->rpcs == r) g->rpcs = r->next;
    if (r->next) r->next->prev = r->prev;
    drop_queue(r);
    if (r->request) grpc_byte_buffer_destroy(r->request);
    if (r->call) grpc_call_unref(r->call);
    grpc_call_details_destroy(&r->details);
    grpc_metadata_array_destroy(&r->request_md);
    if (r->sanitizing) gw_sanitize_prompt_cancel(g->sanitizer, r->request_id);
    gw_output_filter_free(r->out);
    gw_request_free(&r->body);
    free(r);
    g->live--;
}

static void maybe_free(rpc *r)
{
    if (r->closed && r->ops_pending == 0 && !r->generating && !r->sanitizing && r->ticket == NULL) rpc_free(r);
}

/* ---- methods ------------------------------------------------------------------------ */

/* The request message's bytes into a malloc'd buffer (*len may be 0); NULL on OOM. */
static uint8_t *request_bytes(rpc *r, size_t *len)
{
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, r->request)) return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    *len = GRPC_SLICE_LENGTH(s);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf && *len) memcpy(buf, GRPC_SLICE_START_PTR(s), *len);
    grpc_slice_unref(s);
    return buf;
}

/* Authenticates the call's `authorization` metadata and checks permission. 0, or -1
 * with the call finished. */
static int authorize(rpc *r, const char *permission)
{
    char auth[MAX_AUTH_BYTES];
    const char *value = NULL;
    for (size_t i = 0; i < r->request_md.count; i++) {
        const grpc_metadata *m = &r->request_md.metadata[i];
        if (grpc_slice_str_cmp(m->key, "authorization") != 0) continue;
        size_t n = GRPC_SLICE_LENGTH(m->value);
        if (n >= sizeof auth) n = sizeof auth - 1;
        memcpy(auth, GRPC_SLICE_START_PTR(m->value), n);
        auth[n] = '\0';
        value = auth;
        break;
    }
    gw_error e;
    if (gw_auth_bearer(&r->g->access->auth, value, &r->who, &e) != 0) {
        finish_error(r, &e);
        return -1;
    }
    gw_audit_set_principal(&r->audit, &r->who);
    if (!gw_policy_allows(&r->g->access->policy, r->who.roles, permission)) {
        gw_error_set(&e, 403, "invalid_request_error", NULL, "permission_denied",
                     "your role (%s) does not grant '%s'", r->who.roles, permission);
        finish_error(r, &e);
        return -1;
    }
    return 0;
}

static void handle_health(rpc *r)
{
    Citadel__V1__HealthResponse m = CITADEL__V1__HEALTH_RESPONSE__INIT;
    m.status = r->g->shutting_down ? "draining" : "ok";
    m.router_connected = gw_upstream_router_seen(r->g->up);
    m.in_flight = gw_upstream_in_flight(r->g->up);
    uint8_t buf[128];
    size_t len = citadel__v1__health_response__pack(&m, buf);
    enqueue(r, buf, len);
    finish(r, 200, "");
}

static void handle_list_models(rpc *r)
{
    if (authorize(r, "models") != 0) return;
    size_t n = 0;
    const char *const *models = gw_upstream_models(r->g->up, &n);
    char **allowed = calloc(n + 1, sizeof *allowed);
    Citadel__ModelList m = CITADEL__MODEL_LIST__INIT;
    for (size_t i = 0; allowed && i < n; i++)
        if (gw_principal_may_use_model(&r->who, models[i])) allowed[m.n_models++] = (char *)models[i];
    m.models = allowed;
    size_t len = citadel__model_list__get_packed_size(&m);
    uint8_t *buf = allowed ? malloc(len ? len : 1) : NULL;
    if (buf == NULL) {
        free(allowed);
        finish(r, 500, "out of memory");
        return;
    }
    citadel__model_list__pack(&m, buf);
    enqueue(r, buf, len);
    free(buf);
    free(allowed);
    finish(r, 200, "");
}

/* A strdup that leaves NULL for NULL. */
static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* The wire GenerateRequest into r->body, checked. Field semantics stay the wire's:
 * every sampling field is passed through as sent (0 = the worker's default or off,
 * temperature 0 = greedy). 0, or -1 with e (400). */
static int request_from_wire(const Citadel__GenerateRequest *m, gw_request *req, gw_error *e)
{
    memset(req, 0, sizeof *req);
    req->kind = m->n_messages ? GW_KIND_CHAT : GW_KIND_COMPLETION;
    if (m->model == NULL || m->model[0] == '\0') {
        gw_error_set(e, 400, "invalid_request_error", "model", NULL, "model is required");
        return -1;
    }
    if (m->n_messages == 0 && (m->prompt == NULL || m->prompt[0] == '\0')) {
        gw_error_set(e, 400, "invalid_request_error", "messages", NULL, "messages or prompt is required");
        return -1;
    }
    if (m->max_tokens < 0 || m->n_stop > GW_MAX_STOP || m->top_logprobs < 0 || m->top_logprobs > GW_MAX_TOP_LOGPROBS) {
        gw_error_set(e, 400, "invalid_request_error", NULL, NULL,
                     "max_tokens must be >= 0, stop at most %d strings, top_logprobs 0..%d", GW_MAX_STOP,
                     GW_MAX_TOP_LOGPROBS);
        return -1;
    }
    req->model = strdup(m->model);
    req->prompt = req->kind == GW_KIND_COMPLETION ? dup_or_null(m->prompt) : NULL;
    req->messages = m->n_messages ? calloc(m->n_messages, sizeof *req->messages) : NULL;
    for (size_t i = 0; req->messages && i < m->n_messages; i++) {
        const char *role = m->messages[i]->role ? m->messages[i]->role : "";
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant")) {
            gw_request_free(req);
            gw_error_set(e, 400, "invalid_request_error", "messages", NULL,
                         "message %zu: role must be system, user or assistant", i);
            return -1;
        }
        req->messages[i].role = strdup(role);
        req->messages[i].content = strdup(m->messages[i]->content ? m->messages[i]->content : "");
        req->n_messages++;
    }
    for (size_t i = 0; i < m->n_stop; i++) req->stop[req->n_stop++] = strdup(m->stop[i] ? m->stop[i] : "");
    req->user = dup_or_null(m->user);
    req->stream = true;
    req->has_max_tokens = true, req->max_tokens = m->max_tokens;
    req->has_temperature = true, req->temperature = m->temperature;
    req->has_top_p = true, req->top_p = m->top_p;
    req->has_top_k = true, req->top_k = m->top_k;
    req->has_min_p = true, req->min_p = m->min_p;
    req->has_seed = m->has_seed || m->seed != 0, req->seed = m->seed;
    req->has_presence_penalty = true, req->presence_penalty = m->presence_penalty;
    req->has_frequency_penalty = true, req->frequency_penalty = m->frequency_penalty;
    req->has_repetition_penalty = true, req->repetition_penalty = m->repetition_penalty;
    req->logprobs = m->logprobs;
    req->top_logprobs = m->top_logprobs;
    bool oom = req->model == NULL || (m->n_messages && req->n_messages != m->n_messages);
    for (size_t i = 0; i < req->n_messages; i++) oom |= !req->messages[i].role || !req->messages[i].content;
    if (oom) {
        gw_request_free(req);
        gw_error_set(e, 503, "server_error", NULL, NULL, "out of memory");
        return -1;
    }
    return 0;
}

/* A sanitized event as a GenerateChunk: its text, the token ids and log-probabilities
 * of released text without findings (gw_sanitize withholds the others: they would
 * spell out what was redacted), end and usage. */
static void enqueue_sanitized(rpc *r, const gw_upstream_event *ev)
{
    Citadel__GenerateChunk m = CITADEL__GENERATE_CHUNK__INIT;
    Citadel__Usage usage = CITADEL__USAGE__INIT;
    char *text = malloc(ev->text_len + 1);
    Citadel__TokenLogprob *lp = calloc(ev->n_logprobs + 1, sizeof *lp), **lpp = calloc(ev->n_logprobs + 1, sizeof *lpp);
    if (text == NULL || lp == NULL || lpp == NULL) goto out;
    memcpy(text, ev->text, ev->text_len);
    text[ev->text_len] = '\0';
    m.request_id = r->request_id;
    m.text = text;
    for (size_t i = 0; i < ev->n_logprobs; i++) {
        citadel__token_logprob__init(&lp[i]);
        lp[i].token = (char *)ev->logprobs[i].token;   /* NUL-terminated: gw_sanitize's copies */
        lp[i].logprob = ev->logprobs[i].logprob;
        lpp[i] = &lp[i];
    }
    m.n_logprobs = ev->n_logprobs;
    m.logprobs = lpp;
    m.n_token_ids = ev->n_token_ids;
    m.token_ids = (int32_t *)ev->token_ids;
    m.worker_id = (char *)(ev->worker_id ? ev->worker_id : "");
    m.finish_reason = (char *)(ev->finish_reason ? ev->finish_reason : "");
    if (ev->has_usage) {
        usage.prompt_tokens = (int32_t)ev->usage.prompt_tokens;
        usage.completion_tokens = (int32_t)ev->usage.completion_tokens;
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
        m.usage = &usage;
    }
    size_t len = citadel__generate_chunk__get_packed_size(&m);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf) {
        citadel__generate_chunk__pack(&m, buf);
        enqueue(r, buf, len);
        free(buf);
    }
out:
    free(text);
    free(lp);
    free(lpp);
}

/* The router's answers for a Generate call, sanitized: each chunk relayed as the
 * sanitizer released it. A stream the sanitizer ended or failed stops at the router. */
static void on_generate_event(const gw_upstream_event *ev, void *arg)
{
    rpc *r = arg;
    if (ev->kind == GW_UP_ERROR || (ev->finish_reason && !strcmp(ev->finish_reason, "content_filter")))
        gw_upstream_cancel(r->g->up, r->request_id);
    if (ev->kind == GW_UP_ERROR) {
        r->generating = false;
        finish_error(r, &ev->error);
        maybe_free(r);
        return;
    }
    if (ev->wire == NULL && (ev->text_len || ev->n_logprobs || ev->finish_reason)) {
        enqueue_sanitized(r, ev);
    } else if (ev->wire) {
        size_t len = citadel__generate_chunk__get_packed_size(ev->wire);
        uint8_t *buf = malloc(len ? len : 1);
        if (buf) {
            citadel__generate_chunk__pack(ev->wire, buf);
            enqueue(r, buf, len);
            free(buf);
        }
    }
    if (ev->finish_reason != NULL) {
        r->generating = false;
        if (ev->has_usage) {
            gw_ratelimit_charge(r->g->access->limits, &r->who, ev->usage.prompt_tokens + ev->usage.completion_tokens);
            r->audit.prompt_tokens = ev->usage.prompt_tokens;
            r->audit.completion_tokens = ev->usage.completion_tokens;
        }
        gw_log(GW_LOG_INFO, r->request_id, "gRPC generation done: %s, %.3f s", ev->finish_reason,
               seconds_since(&r->started));
        finish(r, 200, "");
        maybe_free(r);
    }
}

static void on_admission(const gw_rate_decision *d, void *arg);
static void on_prompt_checked(const gw_error *refusal, void *arg);

static void admitted(rpc *r, const gw_rate_decision *d)
{
    r->n_md = gw_ratelimit_headers(d, r->md, r->md_buf, sizeof r->md_buf);
    r->md_trailing = !d->allowed;
    gw_error e;
    if (!d->allowed) {
        gw_metric_error("rate_limited");
        gw_error_set(&e, 429, d->exceeded, NULL, "rate_limit_exceeded",
                     "rate limit reached for %s per minute; retry after %d s", d->exceeded, d->reset_seconds);
        finish_error(r, &e);
        return;
    }
    if (gw_sanitize_prompt(r->g->sanitizer, &r->body, r->request_id, &r->findings, on_prompt_checked, r, &e) != 0) {
        finish_error(r, &e);
        return;
    }
    r->sanitizing = true;
}

/* The router's chunks go through the output filter, which calls on_generate_event. */
static void on_router_event(const gw_upstream_event *ev, void *arg)
{
    rpc *r = arg;
    gw_output_filter_push(r->out, ev);
}

/* The sanitizer's verdict on the prompt (gw_sanitize.h): refused, or redacted and sent. */
static void on_prompt_checked(const gw_error *refusal, void *arg)
{
    rpc *r = arg;
    gw_error e;
    r->sanitizing = false;
    if (refusal == NULL) {
        r->out = gw_output_filter_new(r->g->sanitizer, r->request_id, &r->findings, on_generate_event, r);
        if (r->out == NULL) refusal = gw_error_set(&e, 503, "server_error", NULL, NULL, "out of memory");
        else if (gw_upstream_submit(r->g->up, &r->body, r->request_id, r->who.key_id, on_router_event, r, &e) != 0)
            refusal = &e;
    }
    if (refusal != NULL) {
        finish_error(r, refusal);
        maybe_free(r);
        return;
    }
    r->generating = true;
    gw_log(GW_LOG_INFO, r->request_id, "gRPC generation submitted: key_id=%s model=%s", r->who.key_id, r->body.model);
}

static void on_admission(const gw_rate_decision *d, void *arg)
{
    rpc *r = arg;
    r->ticket = NULL;
    admitted(r, d);
    maybe_free(r);
}

static void new_request_id(char *out, size_t n)
{
    unsigned char raw[12];
    if (RAND_bytes(raw, sizeof raw) != 1) memset(raw, 0, sizeof raw);
    int o = snprintf(out, n, "req-");
    for (size_t i = 0; i < sizeof raw && (size_t)o + 2 < n; i++) o += snprintf(out + o, n - (size_t)o, "%02x", raw[i]);
}

static void handle_generate(rpc *r, const uint8_t *buf, size_t len)
{
    gw_error e;
    Citadel__GenerateRequest *m = citadel__generate_request__unpack(NULL, len, buf);
    if (m == NULL) {
        finish(r, 400, "cannot decode the GenerateRequest");
        return;
    }
    const char *permission = m->n_messages ? "chat" : "completions";
    snprintf(r->audit.action, sizeof r->audit.action, "%s", m->n_messages ? "chat.completions" : "completions");
    snprintf(r->audit.model, sizeof r->audit.model, "%s", m->model ? m->model : "");
    snprintf(r->audit.end_user, sizeof r->audit.end_user, "%s", m->user ? m->user : "");
    gw_audit_set_input(&r->audit, buf, len);
    int rc = authorize(r, permission) == 0 ? request_from_wire(m, &r->body, &e) : 1;
    citadel__generate_request__free_unpacked(m, NULL);
    if (rc != 0) {
        if (rc < 0) finish_error(r, &e);
        return;
    }
    if (!gw_principal_may_use_model(&r->who, r->body.model)) {
        gw_error_set(&e, 403, "invalid_request_error", "model", "model_not_allowed",
                     "this key may not use model '%.200s'", r->body.model);
        finish_error(r, &e);
        return;
    }
    gw_rate_decision d;
    if (gw_ratelimit_admit(r->g->access->limits, &r->who, &d, on_admission, r, &r->ticket) == 1) admitted(r, &d);
}

static void dispatch(rpc *r)
{
    size_t len = 0;
    uint8_t *buf = request_bytes(r, &len);
    if (buf == NULL) {
        finish(r, 500, "out of memory");
        return;
    }
    switch (r->method) {
    case M_HEALTH: handle_health(r); break;
    case M_LIST_MODELS: handle_list_models(r); break;
    case M_GENERATE: handle_generate(r, buf, len); break;
    case M_UNKNOWN: finish(r, 501, "unknown method"); break;
    }
    free(buf);
}

/* ---- completion handlers ---------------------------------------------------------------- */

static enum rpc_method method_of(grpc_slice method)
{
    if (grpc_slice_str_cmp(method, SERVICE "Generate") == 0) return M_GENERATE;
    if (grpc_slice_str_cmp(method, SERVICE "ListModels") == 0) return M_LIST_MODELS;
    if (grpc_slice_str_cmp(method, SERVICE "Health") == 0) return M_HEALTH;
    return M_UNKNOWN;
}

/* Begins the call's audit record: what a REST request's has, the peer from gRPC.
 * Health, like REST's /health, is a probe and is not audited. */
static void audit_begin(rpc *r)
{
    char path[64];
    size_t n = GRPC_SLICE_LENGTH(r->details.method);
    snprintf(path, sizeof path, "%.*s", (int)(n < sizeof path ? n : sizeof path - 1),
             (const char *)GRPC_SLICE_START_PTR(r->details.method));
    gw_audit_begin(&r->audit, NULL, r->request_id, path);
    if (r->method == M_LIST_MODELS) snprintf(r->audit.action, sizeof r->audit.action, "models");
    char *peer = grpc_call_get_peer(r->call);   /* "ipv4:127.0.0.1:5000" */
    if (peer) {
        const char *addr = strchr(peer, ':') ? strchr(peer, ':') + 1 : peer;
        const char *port = strrchr(addr, ':');
        snprintf(r->audit.client, sizeof r->audit.client, "%.*s", (int)(port ? port - addr : (long)strlen(addr)), addr);
        gpr_free(peer);
    }
    if (r->method == M_HEALTH) r->audit.emitted = true;
}

static void on_accept(rpc *r, int ok)
{
    gw_grpc *g = r->g;
    g->accepting = NULL;
    if (!ok) {   /* the server is shutting down */
        grpc_call_details_destroy(&r->details);
        grpc_metadata_array_destroy(&r->request_md);
        if (r->call) grpc_call_unref(r->call);
        free(r);
        return;
    }
    g->live++;
    r->next = g->rpcs;
    if (g->rpcs) g->rpcs->prev = r;
    g->rpcs = r;
    if (!g->shutting_down) start_accept(g);
    clock_gettime(CLOCK_MONOTONIC, &r->started);
    r->method = method_of(r->details.method);
    new_request_id(r->request_id, sizeof r->request_id);
    audit_begin(r);
    grpc_op close_op = {.op = GRPC_OP_RECV_CLOSE_ON_SERVER};
    close_op.data.recv_close_on_server.cancelled = &r->cancelled;
    if (!start_batch(r, &close_op, 1, &r->tag_close)) r->closed = true;
    grpc_op recv_op = {.op = GRPC_OP_RECV_MESSAGE};
    recv_op.data.recv_message.recv_message = &r->request;
    if (!start_batch(r, &recv_op, 1, &r->tag_recv)) finish(r, 500, "cannot read the request");
    maybe_free(r);
}

static void on_recv(rpc *r, int ok)
{
    r->ops_pending--;
    if (!ok || r->request == NULL) finish(r, 400, "no request message");
    else dispatch(r);
    maybe_free(r);
}

static void on_send(rpc *r, int ok)
{
    r->ops_pending--;
    grpc_byte_buffer_destroy(r->in_flight_bb);
    r->in_flight_bb = NULL;
    if (!ok) drop_queue(r);   /* the client is gone; the close op tells the rest */
    else pump(r);
    maybe_free(r);
}

/* The call is over: cleanly after our status, or cancelled by the client (or by a
 * deadline, or the connection dropping). */
static void on_close(rpc *r)
{
    r->ops_pending--;
    r->closed = true;
    if (r->cancelled) {
        if (!r->finish_wanted) gw_audit_emit(&r->audit, 499);
        if (r->generating) {
            gw_upstream_cancel(r->g->up, r->request_id);
            r->generating = false;
            gw_log(GW_LOG_INFO, r->request_id, "gRPC client cancelled: generation cancelled");
            gw_metric_error("client_disconnect");
        }
        if (r->ticket) {
            gw_ratelimit_cancel(r->ticket);
            r->ticket = NULL;
        }
        if (r->sanitizing) {
            gw_sanitize_prompt_cancel(r->g->sanitizer, r->request_id);
            r->sanitizing = false;
        }
        if (!r->finish_wanted) gw_metric_request(499, seconds_since(&r->started));
        drop_queue(r);
    }
    maybe_free(r);
}

static void handle_tag(gw_grpc *g, op_tag *t)
{
    if (t->kind == TAG_SHUTDOWN) {
        g->shutdown_done = true;
        return;
    }
    rpc *r = t->r;
    switch (t->kind) {
    case TAG_ACCEPT: on_accept(r, t->ok); break;
    case TAG_RECV: on_recv(r, t->ok); break;
    case TAG_SEND: on_send(r, t->ok); break;
    case TAG_STATUS: r->ops_pending--; maybe_free(r); break;
    case TAG_CLOSE: on_close(r); break;
    case TAG_SHUTDOWN: break;
    }
}

/* Runs every tag the poller has handed over. */
static void drain_inbox(gw_grpc *g)
{
    char junk[64];
    while (read(g->pipe_r, junk, sizeof junk) > 0) {
    }
    pthread_mutex_lock(&g->lock);
    op_tag *t = g->inbox_head;
    g->inbox_head = g->inbox_tail = NULL;
    pthread_mutex_unlock(&g->lock);
    while (t) {
        op_tag *next = t->next;
        handle_tag(g, t);
        t = next;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    drain_inbox(arg);
}

static void start_accept(gw_grpc *g)
{
    rpc *r = calloc(1, sizeof *r);
    if (r == NULL) {
        gw_log(GW_LOG_ERROR, NULL, "out of memory: gRPC stops accepting calls");
        return;
    }
    r->g = g;
    r->tag_accept = (op_tag){r, TAG_ACCEPT, 0, NULL};
    r->tag_recv = (op_tag){r, TAG_RECV, 0, NULL};
    r->tag_send = (op_tag){r, TAG_SEND, 0, NULL};
    r->tag_status = (op_tag){r, TAG_STATUS, 0, NULL};
    r->tag_close = (op_tag){r, TAG_CLOSE, 0, NULL};
    grpc_call_details_init(&r->details);
    grpc_metadata_array_init(&r->request_md);
    if (grpc_server_request_call(g->server, &r->call, &r->details, &r->request_md, g->cq, g->cq, &r->tag_accept) !=
        GRPC_CALL_OK) {
        grpc_call_details_destroy(&r->details);
        grpc_metadata_array_destroy(&r->request_md);
        free(r);
        gw_log(GW_LOG_ERROR, NULL, "gRPC request_call failed: not accepting calls");
        return;
    }
    g->accepting = r;
}

/* ---- lifecycle ---------------------------------------------------------------------- */

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (buf == NULL || n == 0) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

static int bind_tls(gw_grpc *g, const gw_grpc_config *cfg, char *err, size_t errsz)
{
    char *cert = read_text(cfg->cert_path), *key = read_text(cfg->key_path);
    int rc = -1;
    if (cert == NULL || key == NULL) {
        snprintf(err, errsz, "gRPC: cannot read %s or %s", cfg->cert_path, cfg->key_path);
        goto out;
    }
    grpc_ssl_pem_key_cert_pair pair = {key, cert};
    grpc_server_credentials *creds =
        grpc_ssl_server_credentials_create_ex(NULL, &pair, 1, GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE, NULL);
    char addr[300];
    snprintf(addr, sizeof addr, "%s:%d", cfg->listen_addr, cfg->port);
    int port = creds ? grpc_server_add_http2_port(g->server, addr, creds) : 0;
    if (creds) grpc_server_credentials_release(creds);
    if (port == 0) snprintf(err, errsz, "gRPC: cannot listen on %s (in use, or a bad certificate)", addr);
    else rc = 0;
out:
    if (key) {
        memset(key, 0, strlen(key));
        free(key);
    }
    free(cert);
    return rc;
}

gw_grpc *gw_grpc_start(struct event_base *base, const gw_grpc_config *cfg, gw_access *access, gw_upstream *up,
                       char *err, size_t errsz)
{
    gw_grpc *g = calloc(1, sizeof *g);
    if (g == NULL) {
        snprintf(err, errsz, "out of memory");
        return NULL;
    }
    *g = (gw_grpc){.base = base, .access = access, .up = up, .pipe_r = -1, .pipe_w = -1};
    g->shutdown_tag = (op_tag){NULL, TAG_SHUTDOWN, 0, NULL};
    pthread_mutex_init(&g->lock, NULL);
    grpc_init();
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        snprintf(err, errsz, "pipe: %s", strerror(errno));
        goto fail;
    }
    g->pipe_r = fds[0];
    g->pipe_w = fds[1];
    g->wake_ev = event_new(base, g->pipe_r, EV_READ | EV_PERSIST, on_wake, g);
    g->cq = grpc_completion_queue_create_for_next(NULL);
    g->server = grpc_server_create(NULL, NULL);
    if (g->wake_ev == NULL || g->cq == NULL || g->server == NULL) {
        snprintf(err, errsz, "gRPC: out of memory");
        goto fail;
    }
    event_add(g->wake_ev, NULL);
    grpc_server_register_completion_queue(g->server, g->cq, NULL);
    if (bind_tls(g, cfg, err, errsz) != 0) goto fail;
    grpc_server_start(g->server);
    if (pthread_create(&g->poller, NULL, poll_loop, g) != 0) {
        snprintf(err, errsz, "gRPC: cannot start its thread");
        goto fail;
    }
    g->poller_started = true;
    start_accept(g);
    return g;
fail:
    gw_grpc_free(g);
    return NULL;
}

void gw_grpc_set_sanitizer(gw_grpc *g, gw_sanitizer *z) { g->sanitizer = z; }

void gw_grpc_stop_accepting(gw_grpc *g)
{
    if (g == NULL || g->shutting_down || g->server == NULL) return;
    g->shutting_down = true;
    grpc_server_shutdown_and_notify(g->server, g->cq, &g->shutdown_tag);
}

void gw_grpc_free(gw_grpc *g)
{
    if (g == NULL) return;
    if (g->server && g->poller_started) {
        gw_grpc_stop_accepting(g);
        grpc_server_cancel_all_calls(g->server);
        /* The loop has stopped: run the remaining completions here until gRPC has
         * handed back every call (5 s at most). */
        for (int i = 0; i < 500 && !(g->shutdown_done && g->live == 0 && g->accepting == NULL); i++) {
            struct pollfd p = {g->pipe_r, POLLIN, 0};
            poll(&p, 1, 10);
            drain_inbox(g);
        }
        if (g->live) gw_log(GW_LOG_WARN, NULL, "gRPC: %zu calls still open at exit", g->live);
    }
    if (g->server) grpc_server_destroy(g->server);
    if (g->cq) {
        grpc_completion_queue_shutdown(g->cq);
        if (g->poller_started) pthread_join(g->poller, NULL);
        else
            while (grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN) {
            }
        grpc_completion_queue_destroy(g->cq);
    }
    if (g->wake_ev) event_free(g->wake_ev);
    if (g->pipe_r >= 0) close(g->pipe_r);
    if (g->pipe_w >= 0) close(g->pipe_w);
    pthread_mutex_destroy(&g->lock);
    grpc_shutdown();
    free(g);
}
