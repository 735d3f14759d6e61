/* server.c - the worker's serving loop (see server.h): queueing, cancelling, admitting
 * requests into the engine batch, stepping it and streaming chunks to the router. */
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

int server_init(server *s, void *sock, engine_model *m, engine_batch *batch, int max_seqs,
                const char *model_name, const char *worker_id)
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
    return s->active ? 0 : -1;
}

void server_free(server *s)
{
    for (int i = 0; s->active && i < s->max_seqs; i++)
        free(s->active[i].prompt_ids);
    free(s->active);
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
    hb.free_slots = s->draining ? 0 : (uint32_t)(s->max_seqs - s->n_active);
    hb.queue_depth = job_queue_len(&s->queue);
    hb.load = (float)s->n_active / (float)s->max_seqs;
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
    int slot = -1;
    for (int i = 0; i < s->max_seqs && slot < 0; i++)
        if (s->active[i].used && strcmp(c->request_id, s->active[i].request_id) == 0)
            slot = i;
    if (slot >= 0) {
        engine_batch_cancel(s->batch, (uint64_t)slot);   /* ends at the next step */
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
    send_proto(s, TYPE_CHUNK, &c.base);
    free(text);
    a->text_sent += (size_t)ev->text_len;
}

static bool on_token(const engine_token_event *ev, void *user)
{
    active_request *a = user;
    if (ev->id < 0 && ev->text_len == 0)
        return true;
    send_token_chunk(a, ev);
    if (ev->id >= 0)
        a->server->stats.tokens_generated++;
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
    send_proto(s, TYPE_CHUNK, &c.base);
    free(rest);
}

static void on_done(uint64_t slot, const engine_gen_result *r, void *user)
{
    active_request *a = user;
    server *s = a->server;
    (void)slot;
    send_final(a, r);
    s->stats.prompt_tokens += (uint64_t)r->n_prompt;
    if (r->finish == ENGINE_FINISH_CANCELLED)
        s->stats.requests_cancelled++;
    else
        s->stats.requests_done++;
    log_msg(LOG_INFO, a->request_id, "done: %s, %d prompt + %d generated tokens", engine_finish_name(r->finish),
            r->n_prompt, r->n_generated);
    free(a->prompt_ids);
    memset(a, 0, sizeof *a);
    s->n_active--;
}

/* Moves one queued request into the batch; every failure ends it with an Error. */
static void admit(server *s, const job *j, int slot)
{
    char err[512];
    Citadel__GenerateRequest *req = citadel__generate_request__unpack(NULL, j->payload_len, j->payload);
    if (req == NULL) {   /* it parsed when queued; only memory can fail here */
        send_error(s, j->request_id, CITADEL__ERROR_CODE__INTERNAL, "cannot decode the queued request");
        return;
    }
    active_request *a = &s->active[slot];
    *a = (active_request){.used = true, .server = s, .want_logprobs = req->logprobs};
    snprintf(a->request_id, sizeof a->request_id, "%s", j->request_id);
    engine_gen_params params;
    int n = 0;
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)s->stats.requests_done << 32) ^ (uint64_t)slot;
    if (request_gen_params(req, seed, &params, err, sizeof err) ||
        (a->prompt_ids = request_prompt_ids(s->model, req, &n, err, sizeof err)) == NULL ||
        engine_batch_add(s->batch, (uint64_t)slot, a->prompt_ids, n, &params, on_token, on_done, a, err,
                         sizeof err)) {
        s->stats.requests_failed++;
        send_error(s, j->request_id, CITADEL__ERROR_CODE__INVALID_ARGUMENT, err);
        free(a->prompt_ids);
        memset(a, 0, sizeof *a);
    } else {
        s->n_active++;
    }
    citadel__generate_request__free_unpacked(req, NULL);
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
    while (!s->draining && (slot = free_slot(s)) >= 0 && job_queue_pop(&s->queue, &j)) {
        admit(s, &j, slot);
        free(j.payload);
        admitted = true;
    }
    if (s->draining && server_now() > s->drain_deadline)
        for (int i = 0; i < s->max_seqs; i++)
            if (s->active[i].used)
                engine_batch_cancel(s->batch, (uint64_t)i);
    bool was_busy = s->busy;
    s->busy = s->n_active > 0;
    if (s->busy != was_busy || admitted)
        s->next_heartbeat = 0;   /* announce the new load at once */
    if (!s->busy)
        return false;
    double t0 = server_now();
    engine_batch_step(s->batch);
    s->stats.busy_seconds += server_now() - t0;
    if (s->n_active == 0) {
        s->busy = false;
        s->next_heartbeat = 0;
    }
    return true;
}
