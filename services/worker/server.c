/* server.c - the worker's serving loop (see server.h): queueing, cancelling, running a
 * request through the engine and streaming its chunks to the router. */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "citadel.pb-c.h"
#include "log.h"
#include "request_map.h"

#define TYPE_REQUEST "GenerateRequest"
#define TYPE_CHUNK "GenerateChunk"
#define TYPE_CANCEL "Cancel"
#define TYPE_ERROR "Error"
#define TYPE_HEARTBEAT "WorkerHeartbeat"

double server_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void server_init(server *s, void *sock, engine_model *m, engine_session *session,
                 const char *model_name, const char *worker_id)
{
    memset(s, 0, sizeof *s);
    s->sock = sock;
    s->model = m;
    s->session = session;
    s->model_name = model_name;
    s->worker_id = worker_id;
    s->heartbeat_interval = 1.0;
    job_queue_init(&s->queue);
}

void server_free(server *s)
{
    job_queue_free(&s->queue);
}

/* Sends [empty][type][payload] to the router. A DEALER queues while the router is
 * away, so this only fails when the queue is full; the message is then dropped (the
 * router's heartbeat expiry handles a router that stays away). */
static void send_msg(server *s, const char *type, const void *buf, size_t len)
{
    if (zmq_send(s->sock, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return;
    zmq_send(s->sock, type, strlen(type), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(s->sock, buf, len, ZMQ_DONTWAIT);
}

/* Packs any protobuf-c message and sends it. */
static void send_proto(server *s, const char *type, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t stackbuf[1024], *buf = len <= sizeof stackbuf ? stackbuf : malloc(len);
    if (buf == NULL)
        return;
    protobuf_c_message_pack(m, buf);
    send_msg(s, type, buf, len);
    if (buf != stackbuf)
        free(buf);
}

static void send_error(server *s, const char *request_id, Citadel__ErrorCode code, const char *message)
{
    Citadel__Error e = CITADEL__ERROR__INIT;
    e.request_id = (char *)request_id;
    e.code = code;
    e.message = (char *)message;
    send_proto(s, TYPE_ERROR, &e.base);
    log_msg(LOG_WARN, request_id, "error: %s", message);
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
    send_proto(s, TYPE_CHUNK, &c.base);
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
    hb.free_slots = s->busy || s->draining ? 0 : 1;
    hb.queue_depth = job_queue_len(&s->queue);
    hb.load = s->busy ? 1.0f : 0.0f;
    send_proto(s, TYPE_HEARTBEAT, &hb.base);
}

static void on_request(server *s, const void *buf, size_t len)
{
    Citadel__GenerateRequest *req = citadel__generate_request__unpack(NULL, len, buf);
    if (req == NULL || req->request_id == NULL || req->request_id[0] == '\0') {
        s->stats.bad_messages++;
        send_error(s, req ? "" : "", CITADEL__ERROR_CODE__INVALID_ARGUMENT, "undecodable GenerateRequest");
    } else if (s->draining) {
        send_error(s, req->request_id, CITADEL__ERROR_CODE__UNAVAILABLE, "worker is shutting down");
    } else if (strcmp(req->model, s->model_name) != 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "this worker serves %s, not %.128s", s->model_name, req->model);
        send_error(s, req->request_id, CITADEL__ERROR_CODE__NOT_FOUND, msg);
    } else if (job_queue_push(&s->queue, req->request_id, buf, len)) {
        send_error(s, req->request_id, CITADEL__ERROR_CODE__RESOURCE_EXHAUSTED, "worker queue full");
    } else {
        log_msg(LOG_DEBUG, req->request_id, "queued (%d waiting)", job_queue_len(&s->queue));
    }
    if (req)
        citadel__generate_request__free_unpacked(req, NULL);
}

static void on_cancel(server *s, const void *buf, size_t len)
{
    Citadel__Cancel *c = citadel__cancel__unpack(NULL, len, buf);
    if (c == NULL || c->request_id == NULL) {
        s->stats.bad_messages++;
        if (c)
            citadel__cancel__free_unpacked(c, NULL);
        return;
    }
    if (s->busy && strcmp(c->request_id, s->current_id) == 0) {
        s->current_cancelled = true;
    } else if (job_queue_remove(&s->queue, c->request_id)) {
        s->stats.requests_cancelled++;
        log_msg(LOG_INFO, c->request_id, "cancelled while queued");
        send_cancelled_final(s, c->request_id);
    }
    citadel__cancel__free_unpacked(c, NULL);
}

/* Receives one whole multipart message into up to 3 frames; returns the frame count,
 * 0 when nothing is waiting. Extra frames are dropped and make the count 4. */
static int recv_frames(void *sock, zmq_msg_t part[3])
{
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t tmp, *m = n < 3 ? &part[n] : &tmp;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, sock, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(m);
            return n;
        }
        more = zmq_msg_more(m);
        if (m == &tmp)
            zmq_msg_close(m);
        n = n < 3 ? n + 1 : 4;
    }
    return n;
}

static bool frame_is(zmq_msg_t *m, const char *s)
{
    size_t len = strlen(s);
    return zmq_msg_size(m) == len && memcmp(zmq_msg_data(m), s, len) == 0;
}

static void handle_one(server *s, zmq_msg_t part[3], int n)
{
    if (n != 3 || zmq_msg_size(&part[0]) != 0) {
        s->stats.bad_messages++;
        log_msg(LOG_WARN, "", "badly framed message from the router (%d frames), dropped", n);
    } else if (frame_is(&part[1], TYPE_REQUEST)) {
        on_request(s, zmq_msg_data(&part[2]), zmq_msg_size(&part[2]));
    } else if (frame_is(&part[1], TYPE_CANCEL)) {
        on_cancel(s, zmq_msg_data(&part[2]), zmq_msg_size(&part[2]));
    } else {
        s->stats.bad_messages++;
        send_error(s, "", CITADEL__ERROR_CODE__INVALID_ARGUMENT, "unknown message type");
    }
}

void server_drain_socket(server *s)
{
    for (;;) {
        int events = 0;
        size_t sz = sizeof events;
        if (zmq_getsockopt(s->sock, ZMQ_EVENTS, &events, &sz) || !(events & ZMQ_POLLIN))
            return;
        zmq_msg_t part[3];
        int n = recv_frames(s->sock, part);
        if (n == 0)
            return;
        handle_one(s, part, n > 3 ? 3 : n);
        for (int i = 0; i < (n > 3 ? 3 : n); i++)
            zmq_msg_close(&part[i]);
    }
}

void server_begin_drain(server *s, double deadline)
{
    s->draining = true;
    s->drain_deadline = deadline;
    job j;
    while (job_queue_pop(&s->queue, &j)) {
        send_error(s, j.request_id, CITADEL__ERROR_CODE__UNAVAILABLE, "worker is shutting down");
        free(j.payload);
    }
    s->next_heartbeat = 0;   /* tell the router at once */
}

/* ---- one generation ------------------------------------------------------------- */

/* What the token callback needs besides the server. */
typedef struct gen_ctx {
    server *s;
    const Citadel__GenerateRequest *req;
    bool want_logprobs;
    size_t text_sent;   /* bytes of text streamed so far */
} gen_ctx;

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

static void send_token_chunk(gen_ctx *g, const engine_token_event *ev)
{
    server *s = g->s;
    Citadel__GenerateChunk c = CITADEL__GENERATE_CHUNK__INIT;
    int32_t id = ev->id;
    char *text = malloc((size_t)ev->text_len + 1);
    if (text == NULL)
        return;
    memcpy(text, ev->text, (size_t)ev->text_len);
    text[ev->text_len] = '\0';
    c.request_id = s->current_id;
    c.text = text;
    c.n_token_ids = 1;
    c.token_ids = &id;
    c.worker_id = (char *)s->worker_id;
    Citadel__TokenLogprob lp = CITADEL__TOKEN_LOGPROB__INIT, *lp_ptr = &lp;
    Citadel__TopLogprob top[SAMPLE_MAX_TOP], *top_ptrs[SAMPLE_MAX_TOP];
    char texts[SAMPLE_MAX_TOP][64], tok_text[64];
    if (g->want_logprobs && ev->sample) {
        fill_logprob(s->model, ev, &lp, top, top_ptrs, texts, tok_text);
        c.n_logprobs = 1;
        c.logprobs = &lp_ptr;
    }
    send_proto(s, TYPE_CHUNK, &c.base);
    free(text);
    g->text_sent += (size_t)ev->text_len;
}

static bool on_token(const engine_token_event *ev, void *user)
{
    gen_ctx *g = user;
    server *s = g->s;
    send_token_chunk(g, ev);
    s->stats.tokens_generated++;
    double now = server_now();
    server_heartbeat_if_due(s, now);
    server_drain_socket(s);
    if (s->draining && now > s->drain_deadline)
        s->current_cancelled = true;
    return !s->current_cancelled;
}

/* The last chunk: whatever text the engine held back (a pending stop-string prefix
 * that turned out not to be one), finish_reason, usage and timings. */
static void send_final(gen_ctx *g, const engine_gen_result *r, double queued_s)
{
    server *s = g->s;
    Citadel__GenerateChunk c = CITADEL__GENERATE_CHUNK__INIT;
    Citadel__Usage u = CITADEL__USAGE__INIT;
    Citadel__Timings t = CITADEL__TIMINGS__INIT;
    char *rest = NULL;
    if (r->text_len > g->text_sent) {
        rest = strndup(r->text + g->text_sent, r->text_len - g->text_sent);
        c.text = rest ? rest : "";
    }
    c.request_id = s->current_id;
    c.finish_reason = (char *)engine_finish_name(r->finish);
    u.prompt_tokens = r->n_prompt;
    u.completion_tokens = r->n_generated;
    u.total_tokens = r->n_prompt + r->n_generated;
    u.cached_tokens = r->n_cached;
    t.queue_seconds = queued_s;
    t.prefill_seconds = r->prefill_seconds;
    t.decode_seconds = r->decode_seconds;
    c.usage = &u;
    c.timings = &t;
    c.worker_id = (char *)s->worker_id;
    send_proto(s, TYPE_CHUNK, &c.base);
    free(rest);
}

/* Runs one decoded request; every path ends with one last message. */
static void run_request(server *s, const Citadel__GenerateRequest *req)
{
    char err[512];
    engine_gen_params params;
    int n = 0;
    int32_t *ids = NULL;
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)s->stats.requests_done << 32);
    if (request_gen_params(req, seed, &params, err, sizeof err) ||
        (ids = request_prompt_ids(s->model, req, &n, err, sizeof err)) == NULL) {
        s->stats.requests_failed++;
        send_error(s, req->request_id, CITADEL__ERROR_CODE__INVALID_ARGUMENT, err);
        return;
    }
    gen_ctx g = {s, req, req->logprobs, 0};
    engine_gen_result r;
    double t0 = server_now();
    if (engine_generate(s->session, ids, n, &params, on_token, &g, &r, err, sizeof err)) {
        s->stats.requests_failed++;
        send_error(s, req->request_id, CITADEL__ERROR_CODE__INVALID_ARGUMENT, err);
    } else {
        send_final(&g, &r, 0.0);
        s->stats.prompt_tokens += (uint64_t)r.n_prompt;
        s->stats.prompt_tokens_cached += (uint64_t)r.n_cached;
        if (r.finish == ENGINE_FINISH_CANCELLED)
            s->stats.requests_cancelled++;
        else
            s->stats.requests_done++;
        log_msg(LOG_INFO, req->request_id, "done: %s, %d prompt (%d cached) + %d generated tokens",
                engine_finish_name(r.finish), r.n_prompt, r.n_cached, r.n_generated);
        engine_gen_result_free(&r);
    }
    s->stats.busy_seconds += server_now() - t0;
    free(ids);
}

bool server_run_next(server *s)
{
    job j;
    if (!job_queue_pop(&s->queue, &j))
        return false;
    Citadel__GenerateRequest *req = citadel__generate_request__unpack(NULL, j.payload_len, j.payload);
    free(j.payload);
    if (req == NULL) {   /* it parsed when queued; only memory can fail here */
        send_error(s, j.request_id, CITADEL__ERROR_CODE__INTERNAL, "cannot decode the queued request");
        return true;
    }
    snprintf(s->current_id, sizeof s->current_id, "%s", j.request_id);
    s->busy = true;
    s->current_cancelled = false;
    s->next_heartbeat = 0;   /* announce busy at once */
    server_heartbeat_if_due(s, server_now());
    run_request(s, req);
    s->busy = false;
    s->current_id[0] = '\0';
    s->next_heartbeat = 0;   /* and free again */
    citadel__generate_request__free_unpacked(req, NULL);
    return true;
}
