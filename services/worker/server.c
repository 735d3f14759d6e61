/* server.c - the worker's serving loop (see server.h): queueing, cancelling, admitting
 * requests into the engine batch, stepping it and streaming chunks to the router
 * (messages through common/envelope, counts through common/metrics). */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "citadel.pb-c.h"
#include "envelope.h"
#include "log.h"
#include "request_map.h"

double server_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Wall-clock milliseconds, the unit of GenerateRequest.deadline_unix_ms. */
static int64_t unix_ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *server_refused_reason(enum server_refused r)
{
    static const char *const names[SERVER_REFUSED_N] = {
        [SERVER_REFUSED_PROMPT_TOO_LONG] = "prompt_too_long", [SERVER_REFUSED_QUEUE_REQUESTS] = "queue_full_requests",
        [SERVER_REFUSED_QUEUE_TOKENS] = "queue_full_tokens", [SERVER_REFUSED_DEADLINE] = "deadline_exceeded",
        [SERVER_REFUSED_INVALID] = "invalid_request", [SERVER_REFUSED_UNKNOWN_MODEL] = "unknown_model",
        [SERVER_REFUSED_SHUTTING_DOWN] = "shutting_down"};
    return (unsigned)r < SERVER_REFUSED_N ? names[r] : "unknown";
}

/* The admission metrics: refusals by reason, deadline endings, queue time and size. */
static void register_admission_metrics(server_metrics *m, metrics_registry *reg)
{
    for (int r = 0; r < SERVER_REFUSED_N; r++) {
        const char *labels[] = {"reason", server_refused_reason((enum server_refused)r), NULL};
        m->refused[r] = metrics_counter_new(reg, "requests_refused_total",
                                            "Requests answered with an Error without running, by reason.", labels);
    }
    static const char *const deadline[] = {"outcome", "deadline", NULL};
    m->requests_deadline = metrics_counter_new(reg, "requests_total", "Requests ended, by outcome.", deadline);
    m->waiting_tokens = metrics_gauge_new(reg, "queue_prompt_tokens", "Prompt tokens of the requests waiting.", NULL);
    m->queue_seconds = metrics_histogram_new(reg, "queue_seconds",
                                             "Time from a request's arrival to its admission into the batch.", NULL,
                                             NULL, 0);
}

/* The paged KV cache: blocks by state, the prefix cache's hit ratio
 * (prefix_cache_hit_tokens_total / prefix_cache_lookup_tokens_total) and preemptions. */
static void register_kv_metrics(server_metrics *m, metrics_registry *reg)
{
    m->kv_blocks_used = metrics_gauge_new(reg, "kv_blocks_used", "KV cache blocks held by running requests.", NULL);
    m->kv_blocks_free = metrics_gauge_new(reg, "kv_blocks_free",
                                          "KV cache blocks free to take (empty or cached prefixes).", NULL);
    m->kv_blocks_cached = metrics_gauge_new(reg, "kv_blocks_cached",
                                            "Free KV cache blocks that hold a reusable prefix.", NULL);
    m->prefix_lookup_tokens = metrics_counter_new(reg, "prefix_cache_lookup_tokens_total",
                                                  "Prompt tokens looked up in the prefix cache.", NULL);
    m->prefix_hit_tokens = metrics_counter_new(reg, "prefix_cache_hit_tokens_total",
                                               "Prompt tokens found in the prefix cache (not computed).", NULL);
    m->preemptions = metrics_counter_new(reg, "preemptions_total",
                                         "Requests that gave up their KV blocks to older ones, to be recomputed.",
                                         NULL);
}

static void update_kv_metrics(server *s)
{
    server_metrics *m = &s->metrics;
    if (s->batch == NULL)
        return;
    engine_batch_stats st = engine_batch_get_stats(s->batch);
    metrics_gauge_set(m->kv_blocks_used, st.kv_blocks_used);
    metrics_gauge_set(m->kv_blocks_free, st.kv_blocks_free);
    metrics_gauge_set(m->kv_blocks_cached, st.kv_blocks_cached);
    metrics_counter_add(m->prefix_lookup_tokens, (double)(st.prefix_lookup_tokens - m->kv_seen.prefix_lookup_tokens));
    metrics_counter_add(m->prefix_hit_tokens, (double)(st.prefix_hit_tokens - m->kv_seen.prefix_hit_tokens));
    metrics_counter_add(m->preemptions, (double)(st.preemptions - m->kv_seen.preemptions));
    m->kv_seen = st;
}

static void register_metrics(server_metrics *m, metrics_registry *reg)
{
    static const char *const done[] = {"outcome", "done", NULL}, *const failed[] = {"outcome", "failed", NULL},
                             *const cancelled[] = {"outcome", "cancelled", NULL};
    const char *requests_help = "Requests ended, by outcome.";
    m->requests_done = metrics_counter_new(reg, "requests_total", requests_help, done);
    m->requests_failed = metrics_counter_new(reg, "requests_total", requests_help, failed);
    m->requests_cancelled = metrics_counter_new(reg, "requests_total", requests_help, cancelled);
    m->tokens_generated = metrics_counter_new(reg, "tokens_generated_total", "Tokens generated.", NULL);
    m->prompt_tokens = metrics_counter_new(reg, "prompt_tokens_total", "Prompt tokens of finished requests.", NULL);
    m->prompt_tokens_cached = metrics_counter_new(reg, "prompt_tokens_cached_total",
                                                  "Prompt tokens taken from the prefix cache.", NULL);
    m->bad_messages = metrics_counter_new(reg, "bad_messages_total",
                                          "Badly framed, unknown or undecodable messages from the router.", NULL);
    m->busy_seconds = metrics_counter_new(reg, "busy_seconds_total", "Time spent in batch steps.", NULL);
    m->busy = metrics_gauge_new(reg, "busy", "1 while any request is generating.", NULL);
    m->running_requests = metrics_gauge_new(reg, "running_requests", "Requests in the batch.", NULL);
    m->queue_depth = metrics_gauge_new(reg, "queue_depth", "Requests waiting for a batch slot.", NULL);
    m->ttft_seconds = metrics_histogram_new(reg, "ttft_seconds",
                                            "Time from a request's arrival to its first token (queue time included).",
                                            NULL, NULL, 0);
    m->itl_seconds = metrics_histogram_new(reg, "itl_seconds", "Time between two tokens of one request.", NULL,
                                           NULL, 0);
    static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
    m->batch_size = metrics_histogram_new(reg, "batch_size", "Requests in the batch, observed at every step.",
                                          NULL, batch_bounds, sizeof batch_bounds / sizeof batch_bounds[0]);
    register_admission_metrics(m, reg);
    register_kv_metrics(m, reg);
}

int server_init(server *s, void *sock, engine_model *m, engine_batch *batch, int max_seqs,
                const char *model_name, const char *worker_id, metrics_registry *reg)
{
    memset(s, 0, sizeof *s);
    s->sock = sock;
    s->model = m;
    s->batch = batch;
    s->max_seqs = max_seqs;
    s->active = calloc((size_t)max_seqs, sizeof *s->active);
    s->model_name = model_name;
    s->worker_id = worker_id;
    s->heartbeat_interval = 1.0;
    job_queue_init(&s->queue);
    s->limits = (admission_limits){.max_queued_requests = JOB_QUEUE_MAX, .max_queued_tokens = 0, .n_ctx = 1 << 30};
    adapter_store_init(&s->adapters, m, "var/adapters");
    register_metrics(&s->metrics, reg);
    if (s->active == NULL || shutdown_drain_init(&s->drain)) {
        free(s->active);
        s->active = NULL;
        job_queue_free(&s->queue);
        return -1;
    }
    return 0;
}

void server_set_admission(server *s, const admission_limits *limits) { s->limits = *limits; }

void server_free(server *s)
{
    for (int i = 0; s->active && i < s->max_seqs; i++)
        free(s->active[i].prompt_ids);
    free(s->active);
    job_queue_free(&s->queue);
    adapter_store_free(&s->adapters);
    shutdown_drain_destroy(&s->drain);
}

void server_set_adapter_dir(server *s, const char *dir)
{
    adapter_store_free(&s->adapters);
    adapter_store_init(&s->adapters, s->model, dir);
}

/* The adapter a request names ("<model>:<adapter>"), held for it; *out NULL when it
 * names none. Returns 0, or -1 with the error code and message to answer with. */
static int acquire_adapter(server *s, const char *model, const engine_adapter **out, Citadel__ErrorCode *code,
                           char *err, size_t errsz)
{
    size_t base_len;
    const char *name;
    *out = NULL;
    adapter_split_model(model, &base_len, &name);
    if (base_len != strlen(s->model_name) || strncmp(model, s->model_name, base_len) != 0) {
        snprintf(err, errsz, "this worker serves %s, not %.128s", s->model_name, model);
        *code = CITADEL__ERROR_CODE__NOT_FOUND;
        return -1;
    }
    if (name == NULL)
        return 0;
    if (s->tp) {   /* adapters are whole-model matrices: not yet split over a group's ranks */
        snprintf(err, errsz, "LoRA adapters are not served by tensor-parallel workers (%.128s)", model);
        *code = CITADEL__ERROR_CODE__INVALID_ARGUMENT;
        return -1;
    }
    switch (adapter_store_acquire(&s->adapters, name, out, err, errsz)) {
    case ADAPTER_OK: return 0;
    case ADAPTER_NOT_FOUND: *code = CITADEL__ERROR_CODE__NOT_FOUND; return -1;
    case ADAPTER_FULL: *code = CITADEL__ERROR_CODE__RESOURCE_EXHAUSTED; return -1;
    default: *code = CITADEL__ERROR_CODE__INVALID_ARGUMENT; return -1;
    }
}

/* Sends a message to the router. A DEALER queues while the router is away, so this
 * only fails when the queue is full; the message is then dropped (the router's
 * heartbeat expiry handles a router that stays away). */
static void send_proto(server *s, const ProtobufCMessage *m)
{
    envelope_send(s->sock, NULL, m, NULL, 0);
}

static void send_error(server *s, const char *request_id, Citadel__ErrorCode code, const char *message)
{
    envelope_reply_error(s->sock, NULL, request_id, code, "worker", message, NULL, 0);
    log_msg(LOG_WARN, request_id, "error: %s", message);
}

/* A request accepted earlier has ended, whichever way. */
static void request_ended(server *s) { shutdown_drain_leave(&s->drain); }

static void update_gauges(server *s)
{
    metrics_gauge_set(s->metrics.busy, s->busy ? 1 : 0);
    metrics_gauge_set(s->metrics.running_requests, s->n_active);
    metrics_gauge_set(s->metrics.queue_depth, job_queue_len(&s->queue));
    metrics_gauge_set(s->metrics.waiting_tokens, (double)job_queue_tokens(&s->queue));
    update_kv_metrics(s);
}

/* Answers a request that will never run with an Error, logged and counted by reason. */
static void refuse(server *s, const char *request_id, enum server_refused why, Citadel__ErrorCode code,
                   const char *message)
{
    metrics_counter_inc(s->metrics.refused[why]);
    envelope_reply_error(s->sock, NULL, request_id, code, "worker", message, NULL, 0);
    log_msg(LOG_WARN, request_id, "refused (%s): %s", server_refused_reason(why), message);
}

/* The last chunk of a request that never ran (cancelled while queued). */
static void send_cancelled_final(server *s, const char *request_id)
{
    Citadel__GenerateChunk c = CITADEL__GENERATE_CHUNK__INIT;
    Citadel__Usage u = CITADEL__USAGE__INIT;
    c.request_id = (char *)request_id;
    c.finish_reason = "cancelled";
    c.usage = &u;
    c.worker_id = (char *)s->worker_id;
    send_proto(s, &c.base);
}

void server_heartbeat_if_due(server *s, double now)
{
    if (now < s->next_heartbeat)
        return;
    s->next_heartbeat = now + s->heartbeat_interval;
    Citadel__WorkerHeartbeat hb = CITADEL__WORKER_HEARTBEAT__INIT;
    char *models[1] = {(char *)s->model_name};
    hb.worker_id = (char *)s->worker_id;
    /* A draining worker announces no model, so the router sends it nothing new. */
    hb.n_models = s->draining ? 0 : 1;
    hb.models = models;
    hb.free_slots = s->draining ? 0 : (uint32_t)(s->max_seqs - s->n_active);
    hb.queue_depth = job_queue_len(&s->queue);
    hb.load = (float)s->n_active / (float)s->max_seqs;
    send_proto(s, &hb.base);
}

/* Checks a request at the door and fills *j for the queue: parameters, prompt tokens
 * against the context, deadline, queue bounds. Returns 0, or -1 after refusing it. */
static int prepare_job(server *s, const Citadel__GenerateRequest *req, job *j)
{
    char err[512];
    engine_gen_params params;
    if (strlen(req->request_id) >= sizeof j->request_id) {
        refuse(s, "", SERVER_REFUSED_INVALID, CITADEL__ERROR_CODE__INVALID_ARGUMENT, "request_id too long");
        return -1;
    }
    if (request_gen_params(req, 0, &params, err, sizeof err) ||
        (j->prompt_ids = request_prompt_ids(s->model, req, &j->n_prompt, err, sizeof err)) == NULL) {
        refuse(s, req->request_id, SERVER_REFUSED_INVALID, CITADEL__ERROR_CODE__INVALID_ARGUMENT, err);
        return -1;
    }
    int64_t now_ms = unix_ms_now();
    if (req->deadline_unix_ms > 0 && req->deadline_unix_ms <= now_ms) {
        snprintf(err, sizeof err, "the request's deadline passed %lld ms before it reached the worker",
                 (long long)(now_ms - req->deadline_unix_ms));
        refuse(s, req->request_id, SERVER_REFUSED_DEADLINE, CITADEL__ERROR_CODE__DEADLINE_EXCEEDED, err);
        return -1;
    }
    enum admission_verdict v = admission_check(&s->limits, &s->queue, s->max_seqs - s->n_active, j->n_prompt, err,
                                               sizeof err);
    if (v == ADMISSION_PROMPT_TOO_LONG) {
        refuse(s, req->request_id, SERVER_REFUSED_PROMPT_TOO_LONG, CITADEL__ERROR_CODE__INVALID_ARGUMENT, err);
        return -1;
    }
    if (v != ADMISSION_ACCEPT) {
        refuse(s, req->request_id, v == ADMISSION_QUEUE_TOKENS ? SERVER_REFUSED_QUEUE_TOKENS
                                                               : SERVER_REFUSED_QUEUE_REQUESTS,
               CITADEL__ERROR_CODE__OVERLOADED, err);
        return -1;
    }
    /* The queue keeps the packed request until its turn. */
    snprintf(j->request_id, sizeof j->request_id, "%s", req->request_id);
    j->payload_len = protobuf_c_message_get_packed_size(&req->base);
    j->payload = malloc(j->payload_len ? j->payload_len : 1);
    if (j->payload == NULL) {
        refuse(s, req->request_id, SERVER_REFUSED_QUEUE_REQUESTS, CITADEL__ERROR_CODE__OVERLOADED, "out of memory");
        return -1;
    }
    protobuf_c_message_pack(&req->base, j->payload);
    j->deadline_unix_ms = req->deadline_unix_ms;
    j->enqueued_at = server_now();
    return 0;
}

static void on_request(server *s, const Citadel__GenerateRequest *req)
{
    if (req->request_id[0] == '\0') {
        metrics_counter_inc(s->metrics.bad_messages);
        send_error(s, "", CITADEL__ERROR_CODE__INVALID_ARGUMENT, "undecodable GenerateRequest");
        return;
    }
    if (s->draining || !shutdown_drain_enter(&s->drain)) {
        refuse(s, req->request_id, SERVER_REFUSED_SHUTTING_DOWN, CITADEL__ERROR_CODE__UNAVAILABLE,
               "worker is shutting down");
        return;
    }
    /* the model and adapter are checked (and the adapter loaded) now, so that a bad
     * name is answered at once rather than after the queue */
    const engine_adapter *adapter;
    Citadel__ErrorCode code;
    char msg[512];
    if (acquire_adapter(s, req->model, &adapter, &code, msg, sizeof msg)) {
        refuse(s, req->request_id, code == CITADEL__ERROR_CODE__NOT_FOUND ? SERVER_REFUSED_UNKNOWN_MODEL
                                                                          : SERVER_REFUSED_INVALID, code, msg);
        request_ended(s);
        return;
    }
    adapter_store_release(&s->adapters, adapter);
    job j = {0};
    if (prepare_job(s, req, &j) == 0) {
        if (job_queue_push(&s->queue, &j) == 0) {
            log_msg(LOG_DEBUG, req->request_id, "queued (%d waiting, %d prompt tokens)", job_queue_len(&s->queue),
                    j.n_prompt);
            return;
        }
        refuse(s, req->request_id, SERVER_REFUSED_QUEUE_REQUESTS, CITADEL__ERROR_CODE__OVERLOADED,
               "worker overloaded: its queue is full");
    }
    job_free(&j);
    request_ended(s);
}

/* The tensor-parallel group broke (a follower died or timed out): the running requests
 * end at the next step, and the worker stops so that the whole group restarts. */
static void tp_fail(server *s)
{
    if (!s->tp_failed)
        log_msg(LOG_ERROR, "", "%s", s->tp->err);
    s->tp_failed = true;
}

static void tp_record_cancel(server *s, int slot)
{
    if (s->tp && tp_group_record_cancel(s->tp, (uint32_t)slot))
        tp_fail(s);
}

static void on_cancel(server *s, const Citadel__Cancel *c)
{
    int slot = -1;
    for (int i = 0; i < s->max_seqs && slot < 0; i++)
        if (s->active[i].used && strcmp(c->request_id, s->active[i].request_id) == 0)
            slot = i;
    if (slot >= 0) {
        engine_batch_cancel(s->batch, (uint64_t)slot);   /* ends at the next step */
        tp_record_cancel(s, slot);
    } else if (job_queue_remove(&s->queue, c->request_id)) {
        metrics_counter_inc(s->metrics.requests_cancelled);
        log_msg(LOG_INFO, c->request_id, "cancelled while queued");
        send_cancelled_final(s, c->request_id);
        request_ended(s);
    }
}

/* One message from the router, whatever envelope_recv made of it. */
static void handle_one(server *s, int rc, const envelope *env, const char *err)
{
    if (rc == ENVELOPE_OK && env->route.n != 0) {   /* a DEALER's messages carry no identity */
        rc = ENVELOPE_ERR_FRAMING;
        err = "bad framing: identity frames on a DEALER";
    }
    if (rc == ENVELOPE_ERR_FRAMING) {
        metrics_counter_inc(s->metrics.bad_messages);
        log_msg(LOG_WARN, "", "badly framed message from the router (%s), dropped", err);
    } else if (rc == ENVELOPE_OK && env->type == ENVELOPE_GENERATE_REQUEST) {
        on_request(s, (const Citadel__GenerateRequest *)env->msg);
    } else if (rc == ENVELOPE_OK && env->type == ENVELOPE_CANCEL) {
        on_cancel(s, (const Citadel__Cancel *)env->msg);
    } else if (rc == ENVELOPE_ERR_DECODE && env->type == ENVELOPE_GENERATE_REQUEST) {
        metrics_counter_inc(s->metrics.bad_messages);
        send_error(s, "", CITADEL__ERROR_CODE__INVALID_ARGUMENT, "undecodable GenerateRequest");
    } else if (rc == ENVELOPE_ERR_DECODE && env->type == ENVELOPE_CANCEL) {
        metrics_counter_inc(s->metrics.bad_messages);
    } else {
        metrics_counter_inc(s->metrics.bad_messages);
        send_error(s, "", CITADEL__ERROR_CODE__INVALID_ARGUMENT, "unknown message type");
    }
}

void server_drain_socket(server *s)
{
    for (;;) {
        envelope env;
        char err[256];
        int rc = envelope_recv(s->sock, 0, &env, err, sizeof err);
        if (rc != ENVELOPE_TIMEOUT && rc != ENVELOPE_ERR_IO)
            handle_one(s, rc, &env, err);
        envelope_free(&env);
        if (rc == ENVELOPE_TIMEOUT || rc == ENVELOPE_ERR_IO)
            break;
    }
    update_gauges(s);
}

void server_begin_drain(server *s, double deadline)
{
    s->draining = true;
    shutdown_drain_stop_accepting(&s->drain);
    s->drain_deadline = deadline;
    job j;
    while (job_queue_pop(&s->queue, &j)) {
        refuse(s, j.request_id, SERVER_REFUSED_SHUTTING_DOWN, CITADEL__ERROR_CODE__UNAVAILABLE,
               "worker is shutting down");
        job_free(&j);
        request_ended(s);
    }
    s->next_heartbeat = 0;   /* tell the router at once */
}

/* ---- the batch ------------------------------------------------------------------- */

/* Fills one TokenLogprob (and its alternatives) for the chunk of this token. */
static void fill_logprob(const engine_model *m, const engine_token_event *ev, Citadel__TokenLogprob *lp,
                         Citadel__TopLogprob *top, Citadel__TopLogprob **top_ptrs, char texts[][64], char *tok_text)
{
    const sample_result *sr = ev->sample;
    int len = engine_token_text(m, ev->id, tok_text, 63);
    tok_text[len > 0 && len < 63 ? len : (len >= 63 ? 63 : 0)] = '\0';
    lp->id = ev->id;
    lp->token = tok_text;
    lp->logprob = sr->logprob;
    lp->n_top = (size_t)sr->n_top;
    lp->top = top_ptrs;
    for (int i = 0; i < sr->n_top; i++) {
        Citadel__TopLogprob init = CITADEL__TOP_LOGPROB__INIT;
        top[i] = init;
        int tl = engine_token_text(m, sr->top_ids[i], texts[i], 63);
        texts[i][tl > 0 && tl < 63 ? tl : (tl >= 63 ? 63 : 0)] = '\0';
        top[i].id = sr->top_ids[i];
        top[i].token = texts[i];
        top[i].logprob = sr->top_logprobs[i];
        top_ptrs[i] = &top[i];
    }
}

static void send_token_chunk(active_request *a, const engine_token_event *ev)
{
    server *s = a->server;
    Citadel__GenerateChunk c = CITADEL__GENERATE_CHUNK__INIT;
    int32_t id = ev->id;
    char *text = malloc((size_t)ev->text_len + 1);
    if (text == NULL)
        return;
    memcpy(text, ev->text, (size_t)ev->text_len);
    text[ev->text_len] = '\0';
    c.request_id = a->request_id;
    c.text = text;
    c.n_token_ids = 1;
    c.token_ids = &id;
    c.worker_id = (char *)s->worker_id;
    Citadel__TokenLogprob lp = CITADEL__TOKEN_LOGPROB__INIT, *lp_ptr = &lp;
    Citadel__TopLogprob top[SAMPLE_MAX_TOP], *top_ptrs[SAMPLE_MAX_TOP];
    char texts[SAMPLE_MAX_TOP][64], tok_text[64];
    if (a->want_logprobs && ev->sample) {
        fill_logprob(s->model, ev, &lp, top, top_ptrs, texts, tok_text);
        c.n_logprobs = 1;
        c.logprobs = &lp_ptr;
    }
    send_proto(s, &c.base);
    free(text);
    a->text_sent += (size_t)ev->text_len;
}

static bool on_token(const engine_token_event *ev, void *user)
{
    active_request *a = user;
    if (ev->id < 0 && ev->text_len == 0)
        return true;
    send_token_chunk(a, ev);
    if (ev->id >= 0) {
        server_metrics *m = &a->server->metrics;
        double now = server_now();
        metrics_counter_inc(m->tokens_generated);
        if (a->last_token_at > 0)
            metrics_histogram_observe(m->itl_seconds, now - a->last_token_at);
        else
            metrics_histogram_observe(m->ttft_seconds, now - a->arrived_at);
        a->last_token_at = now;
    }
    return true;   /* cancels go through engine_batch_cancel */
}

/* The last chunk: whatever text the engine held back (a pending stop-string prefix
 * that turned out not to be one), finish_reason, usage and timings. */
static void send_final(active_request *a, const engine_gen_result *r)
{
    server *s = a->server;
    Citadel__GenerateChunk c = CITADEL__GENERATE_CHUNK__INIT;
    Citadel__Usage u = CITADEL__USAGE__INIT;
    Citadel__Timings t = CITADEL__TIMINGS__INIT;
    char *rest = NULL;
    if (r->text_len > a->text_sent) {
        rest = strndup(r->text + a->text_sent, r->text_len - a->text_sent);
        c.text = rest ? rest : "";
    }
    c.request_id = a->request_id;
    c.finish_reason = (char *)engine_finish_name(r->finish);
    u.prompt_tokens = r->n_prompt;
    u.completion_tokens = r->n_generated;
    u.total_tokens = r->n_prompt + r->n_generated;
    u.cached_tokens = r->n_cached;
    t.queue_seconds = a->queued_seconds;
    t.prefill_seconds = r->prefill_seconds;
    t.decode_seconds = r->decode_seconds;
    c.usage = &u;
    c.timings = &t;
    c.worker_id = (char *)s->worker_id;
    send_proto(s, &c.base);
    free(rest);
}

static void on_done(uint64_t slot, const engine_gen_result *r, void *user)
{
    active_request *a = user;
    server *s = a->server;
    (void)slot;
    if (a->deadline_passed) {
        char msg[160];
        snprintf(msg, sizeof msg, "the request's deadline passed while it was generating (after %d tokens)",
                 r->n_generated);
        send_error(s, a->request_id, CITADEL__ERROR_CODE__DEADLINE_EXCEEDED, msg);
    } else {
        send_final(a, r);
    }
    metrics_counter_add(s->metrics.prompt_tokens, r->n_prompt);
    metrics_counter_add(s->metrics.prompt_tokens_cached, r->n_cached);
    if (a->deadline_passed) {
        metrics_counter_inc(s->metrics.requests_deadline);
    } else if (r->finish == ENGINE_FINISH_CANCELLED) {
        metrics_counter_inc(s->metrics.requests_cancelled);
    } else {
        metrics_counter_inc(s->metrics.requests_done);
        s->n_done++;
    }
    log_msg(LOG_INFO, a->request_id, "done: %s, %d prompt + %d generated tokens", engine_finish_name(r->finish),
            r->n_prompt, r->n_generated);
    free(a->prompt_ids);
    adapter_store_release(&s->adapters, a->adapter);
    memset(a, 0, sizeof *a);
    s->n_active--;
    request_ended(s);
}

/* Moves one queued request into the batch (taking over its prompt ids); every failure
 * ends it with an Error. */
static void admit(server *s, job *j, int slot)
{
    char err[512];
    Citadel__GenerateRequest *req = citadel__generate_request__unpack(NULL, j->payload_len, j->payload);
    if (req == NULL) {   /* it parsed when queued; only memory can fail here */
        send_error(s, j->request_id, CITADEL__ERROR_CODE__INTERNAL, "cannot decode the queued request");
        request_ended(s);
        return;
    }
    double now = server_now();
    active_request *a = &s->active[slot];
    *a = (active_request){.used = true, .server = s, .want_logprobs = req->logprobs, .arrived_at = j->enqueued_at,
                          .admitted_at = now, .queued_seconds = now - j->enqueued_at,
                          .deadline_unix_ms = j->deadline_unix_ms, .prompt_ids = j->prompt_ids};
    j->prompt_ids = NULL;
    snprintf(a->request_id, sizeof a->request_id, "%s", j->request_id);
    metrics_histogram_observe(s->metrics.queue_seconds, a->queued_seconds);
    engine_gen_params params;
    int n = j->n_prompt;
    uint64_t seed = (uint64_t)time(NULL) ^ (s->n_done << 32) ^ (uint64_t)slot;
    Citadel__ErrorCode code = CITADEL__ERROR_CODE__INVALID_ARGUMENT;
    bool ok = acquire_adapter(s, req->model, &a->adapter, &code, err, sizeof err) == 0 &&
              request_gen_params(req, seed, &params, err, sizeof err) == 0;
    /* max_tokens beyond what the context leaves after the prompt is clamped to it: the
     * generation ends there with finish_reason "length". */
    if (ok && params.max_tokens > s->limits.n_ctx - n)
        params.max_tokens = s->limits.n_ctx - n;
    params.adapter = a->adapter;
    if (!ok || engine_batch_add(s->batch, (uint64_t)slot, a->prompt_ids, n, &params, on_token, on_done, a, err,
                                sizeof err)) {
        metrics_counter_inc(s->metrics.requests_failed);
        send_error(s, j->request_id, code, err);
        adapter_store_release(&s->adapters, a->adapter);
        free(a->prompt_ids);
        memset(a, 0, sizeof *a);
        request_ended(s);
    } else {
        s->n_active++;
        if (s->tp && tp_group_record_add(s->tp, (uint32_t)slot, seed, j->payload, j->payload_len))
            tp_fail(s);
    }
    citadel__generate_request__free_unpacked(req, NULL);
}

/* Answers every waiting request whose deadline has passed, and ends every running one
 * past its deadline (on_done then sends the Error). */
static void expire_deadlines(server *s)
{
    int64_t now_ms = unix_ms_now();
    job j;
    while (job_queue_pop_expired(&s->queue, now_ms, &j)) {
        char msg[160];
        snprintf(msg, sizeof msg, "the request's deadline passed while it waited in the worker's queue (%.2f s)",
                 server_now() - j.enqueued_at);
        refuse(s, j.request_id, SERVER_REFUSED_DEADLINE, CITADEL__ERROR_CODE__DEADLINE_EXCEEDED, msg);
        job_free(&j);
        request_ended(s);
    }
    for (int i = 0; i < s->max_seqs; i++) {
        active_request *a = &s->active[i];
        if (a->used && !a->deadline_passed && a->deadline_unix_ms > 0 && a->deadline_unix_ms <= now_ms) {
            a->deadline_passed = true;
            engine_batch_cancel(s->batch, (uint64_t)i);
            tp_record_cancel(s, i);
        }
    }
}

static int free_slot(const server *s)
{
    for (int i = 0; i < s->max_seqs; i++)
        if (!s->active[i].used)
            return i;
    return -1;
}

bool server_run_next(server *s)
{
    job j;
    int slot;
    bool admitted = false;
    expire_deadlines(s);
    while (!s->draining && (slot = free_slot(s)) >= 0 && job_queue_pop(&s->queue, &j)) {
        admit(s, &j, slot);
        job_free(&j);
        admitted = true;
    }
    if (s->draining && server_now() > s->drain_deadline)
        for (int i = 0; i < s->max_seqs; i++)
            if (s->active[i].used) {
                engine_batch_cancel(s->batch, (uint64_t)i);
                tp_record_cancel(s, i);
            }
    bool was_busy = s->busy;
    s->busy = s->n_active > 0;
    if (s->busy != was_busy || admitted)
        s->next_heartbeat = 0;   /* announce the new load at once */
    if (!s->busy) {
        if (s->tp && tp_group_keepalive(s->tp, engine_batch_active(s->batch)))
            tp_fail(s);
        update_gauges(s);
        return false;
    }
    double t0 = server_now();
    metrics_histogram_observe(s->metrics.batch_size, s->n_active);
    /* the followers step with us: they get this step's admissions and cancels first */
    if (s->tp && tp_group_publish(s->tp, true, false, engine_batch_active(s->batch)))
        tp_fail(s);
    engine_batch_step(s->batch);
    metrics_counter_add(s->metrics.busy_seconds, server_now() - t0);
    if (s->n_active == 0) {
        s->busy = false;
        s->next_heartbeat = 0;
    }
    update_gauges(s);
    return true;
}
