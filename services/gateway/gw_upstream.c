/* gw_upstream.c - the gateway's ZeroMQ DEALER to the router, on the libevent loop
 * (see gw_upstream.h). Frames are [empty][type][payload] as DESIGN.md says; the
 * protobuf conversions (gw_request -> GenerateRequest, GenerateChunk/Error ->
 * gw_upstream_event) live in the "wire" section below and nowhere else. */
#include "gw_upstream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <zmq.h>

#include "citadel.pb-c.h"
#include "gw_log.h"

#define TYPE_REQUEST "GenerateRequest"
#define TYPE_CHUNK "GenerateChunk"
#define TYPE_CANCEL "Cancel"
#define TYPE_ERROR "Error"
#define TYPE_HEARTBEAT "WorkerHeartbeat"
#define TYPE_MODELS_REQUEST "ModelsRequest"
#define TYPE_MODEL_LIST "ModelList"
#define MODELS_POLL_MS 1000
#define MAX_FRAMES 8
#define MAX_MODELS 64
#define MODEL_NAME_MAX 256

/* One generation waiting for answers. The timer first guards the router's first
 * answer, then the whole deadline. */
typedef struct pending {
    char request_id[64];
    gw_upstream_fn fn;
    void *arg;
    struct event *timer;
    bool answered;
    int deadline_ms;               /* the request's deadline, ms after submitted */
    struct timespec submitted;
    gw_upstream *up;
    struct pending *prev, *next;
} pending;

struct gw_upstream {
    struct event_base *base;
    gw_upstream_config cfg;
    void *zctx, *sock;
    struct event *readable;     /* ZMQ_FD, EV_READ|EV_PERSIST */
    pending *pending;           /* in-flight generations (a few hundred at most) */
    size_t n_pending;
    struct timespec last_heard; /* any message from the router */
    char *models[MAX_MODELS];   /* the router's last model list */
    size_t n_models;
    struct event *models_timer; /* asks the router for its ModelList every MODELS_POLL_MS */
};

static double elapsed_ms(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) * 1e3 + (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

/* ---- wire: protobuf in and out ---------------------------------------------------- */

/* Packs req as a GenerateRequest; malloc'd bytes, NULL when out of memory. The wire's
 * proto3 scalars carry no presence, so an unset parameter is sent as its default: the
 * sampling ones as llama.cpp's server sets them (temperature 0.8, top_k 40, top_p 0.95,
 * min_p 0.05: small models ramble at OpenAI's temperature 1 with nothing cut off), the
 * others neutral (no penalties, repetition 1). */
static uint8_t *pack_request(const gw_request *req, const char *request_id, const char *key_id,
                             int64_t deadline_unix_ms, size_t *len)
{
    Citadel__GenerateRequest m = CITADEL__GENERATE_REQUEST__INIT;
    Citadel__ChatMessage *msgs = calloc(req->n_messages ? req->n_messages : 1, sizeof *msgs);
    Citadel__ChatMessage **ptrs = calloc(req->n_messages ? req->n_messages : 1, sizeof *ptrs);
    uint8_t *buf = NULL;
    if (msgs == NULL || ptrs == NULL) goto out;
    for (size_t i = 0; i < req->n_messages; i++) {
        citadel__chat_message__init(&msgs[i]);
        msgs[i].role = req->messages[i].role;
        msgs[i].content = req->messages[i].content;
        ptrs[i] = &msgs[i];
    }
    m.request_id = (char *)request_id;
    m.key_id = (char *)key_id;
    m.model = req->model;
    m.n_messages = req->n_messages;
    m.messages = ptrs;
    m.prompt = req->prompt ? req->prompt : "";
    m.max_tokens = req->has_max_tokens ? req->max_tokens : 0;
    m.temperature = req->has_temperature ? req->temperature : 0.8f;
    m.top_p = req->has_top_p ? req->top_p : 0.95f;
    m.top_k = req->has_top_k ? req->top_k : 40;
    m.min_p = req->has_min_p ? req->min_p : 0.05f;
    m.seed = req->has_seed ? req->seed : 0;
    m.has_seed = req->has_seed;   /* seed 0 is a seed too */
    m.n_stop = req->n_stop;
    m.stop = (char **)req->stop;
    m.presence_penalty = req->has_presence_penalty ? req->presence_penalty : 0.0f;
    m.frequency_penalty = req->has_frequency_penalty ? req->frequency_penalty : 0.0f;
    m.repetition_penalty = req->has_repetition_penalty ? req->repetition_penalty : 1.0f;
    m.logprobs = req->logprobs;
    m.top_logprobs = req->top_logprobs;
    m.stream = req->stream;
    m.deadline_unix_ms = deadline_unix_ms;
    m.cache_skip_lookup = req->cache_skip_lookup;
    m.cache_skip_store = req->cache_skip_store;
    *len = citadel__generate_request__get_packed_size(&m);
    buf = malloc(*len ? *len : 1);
    if (buf) citadel__generate_request__pack(&m, buf);
out:
    free(msgs);
    free(ptrs);
    return buf;
}

static uint8_t *pack_cancel(const char *request_id, const char *reason, size_t *len)
{
    Citadel__Cancel m = CITADEL__CANCEL__INIT;
    m.request_id = (char *)request_id;
    m.reason = (char *)reason;
    *len = citadel__cancel__get_packed_size(&m);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf) citadel__cancel__pack(&m, buf);
    return buf;
}

/* The router's error codes as HTTP statuses and OpenAI error types. */
static void map_error(const gw_upstream *up, int code, const char *message, gw_error *e)
{
    const char *msg = message && message[0] ? message : "the router reported an error";
    switch (code) {
    case CITADEL__ERROR_CODE__INVALID_ARGUMENT:
        gw_error_set(e, 400, "invalid_request_error", NULL, "invalid_value", "%s", msg);
        break;
    case CITADEL__ERROR_CODE__NOT_FOUND:
        gw_error_set(e, 404, "invalid_request_error", "model", "model_not_found", "%s", msg);
        break;
    case CITADEL__ERROR_CODE__RESOURCE_EXHAUSTED:
        gw_error_set(e, 429, "rate_limit_error", NULL, "rate_limit_exceeded", "%s", msg);
        break;
    case CITADEL__ERROR_CODE__DEADLINE_EXCEEDED:
        gw_error_set(e, 504, "server_error", NULL, "timeout", "%s", msg);
        break;
    case CITADEL__ERROR_CODE__UNAVAILABLE:
        gw_error_set(e, 503, "server_error", NULL, "service_unavailable", "%s", msg);
        break;
    case CITADEL__ERROR_CODE__OVERLOADED:   /* every worker tried has a full queue */
        gw_error_set(e, 503, "server_error", NULL, "overloaded", "%s", msg);
        e->retry_after_s = up->cfg.retry_after_s;
        break;
    default:
        gw_error_set(e, 500, "server_error", NULL, "internal_error", "%s", msg);
        break;
    }
}

/* ---- the pending table ------------------------------------------------------------ */

static pending *find_pending(gw_upstream *up, const char *request_id)
{
    for (pending *p = up->pending; p != NULL; p = p->next)
        if (strcmp(p->request_id, request_id) == 0) return p;
    return NULL;
}

static void remove_pending(gw_upstream *up, pending *p)
{
    if (p->prev) p->prev->next = p->next;
    else up->pending = p->next;
    if (p->next) p->next->prev = p->prev;
    up->n_pending--;
    if (p->timer) event_free(p->timer);
    free(p);
}

static void arm_timer(pending *p, double ms)
{
    if (ms < 1) ms = 1;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((long)ms % 1000) * 1000};
    evtimer_add(p->timer, &tv);
}

/* Delivers one final error to the caller and forgets the request. */
static void fail_pending(gw_upstream *up, pending *p, const gw_error *e)
{
    gw_upstream_event ev = {.kind = GW_UP_ERROR, .error = *e};
    gw_upstream_fn fn = p->fn;
    void *arg = p->arg;
    remove_pending(up, p);
    fn(&ev, arg);
}

/* ---- sending ---------------------------------------------------------------------- */

static void drain(gw_upstream *up);

/* Sends [empty][type][payload] without blocking. Returns 0, or -1 (errno from ZeroMQ:
 * EAGAIN when the router is not connected or its queue is full). */
static int send_frames(gw_upstream *up, const char *type, const uint8_t *payload, size_t len)
{
    int rc = 0;
    if (zmq_send(up->sock, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(up->sock, type, strlen(type), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(up->sock, payload, len, ZMQ_DONTWAIT) < 0)
        rc = -1;
    /* Edge-triggered ZMQ_FD: a send may have consumed the readiness edge for messages
     * that already arrived, so look again now. Deferred, as the caller may be inside a
     * callback that is about to free things. */
    event_active(up->readable, EV_READ, 0);
    return rc;
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pending *p = arg;
    gw_upstream *up = p->up;
    gw_error e;
    if (elapsed_ms(&p->submitted) < p->deadline_ms) {
        gw_error_set(&e, 503, "server_error", NULL, "service_unavailable",
                     "the router did not answer within %d ms", up->cfg.first_answer_timeout_ms);
        gw_metric_error("router_timeout");
    } else {
        gw_error_set(&e, 504, "server_error", NULL, "timeout",
                     "the generation did not finish within its deadline of %d ms", p->deadline_ms);
        gw_metric_error("deadline");
    }
    size_t len;
    uint8_t *c = pack_cancel(p->request_id, "deadline", &len);
    if (c) send_frames(up, TYPE_CANCEL, c, len);
    free(c);
    gw_log(GW_LOG_WARN, p->request_id, "%s", e.message);
    fail_pending(up, p, &e);
}

int gw_upstream_submit(gw_upstream *up, const gw_request *req, const char *request_id,
                       const char *key_id, gw_upstream_fn fn, void *arg, gw_error *e)
{
    pending *p = calloc(1, sizeof *p);
    if (p == NULL || strlen(request_id) >= sizeof p->request_id) {
        free(p);
        gw_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        return -1;
    }
    struct timeval now;
    gettimeofday(&now, NULL);
    int deadline_ms = up->cfg.request_deadline_ms;
    if (req->deadline_ms > 0 && req->deadline_ms < deadline_ms)
        deadline_ms = (int)req->deadline_ms;
    int64_t deadline = (int64_t)now.tv_sec * 1000 + now.tv_usec / 1000 + deadline_ms;
    size_t len;
    uint8_t *buf = pack_request(req, request_id, key_id, deadline, &len);
    if (buf == NULL) {
        free(p);
        gw_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        return -1;
    }
    int rc = send_frames(up, TYPE_REQUEST, buf, len);
    free(buf);
    if (rc != 0) {
        free(p);
        gw_error_set(e, 503, "server_error", NULL, "service_unavailable",
                     "the router is unavailable (%s)", errno == EAGAIN ? "not connected or busy" : zmq_strerror(errno));
        gw_metric_error("router_unavailable");
        return -1;
    }
    snprintf(p->request_id, sizeof p->request_id, "%s", request_id);
    p->fn = fn;
    p->arg = arg;
    p->up = up;
    p->deadline_ms = deadline_ms;
    clock_gettime(CLOCK_MONOTONIC, &p->submitted);
    p->timer = evtimer_new(up->base, on_timeout, p);
    p->next = up->pending;
    if (up->pending) up->pending->prev = p;
    up->pending = p;
    up->n_pending++;
    int first_ms = deadline_ms + GW_DEADLINE_GRACE_MS;
    if (up->cfg.first_answer_timeout_ms < first_ms) first_ms = up->cfg.first_answer_timeout_ms;
    if (p->timer) arm_timer(p, first_ms);
    return 0;
}

void gw_upstream_cancel(gw_upstream *up, const char *request_id)
{
    pending *p = find_pending(up, request_id);
    if (p == NULL) return;
    remove_pending(up, p);
    size_t len;
    uint8_t *c = pack_cancel(request_id, "client disconnected", &len);
    if (c && send_frames(up, TYPE_CANCEL, c, len) != 0)
        gw_log(GW_LOG_WARN, request_id, "could not send Cancel to the router");
    free(c);
}

/* ---- receiving -------------------------------------------------------------------- */

/* Translates a GenerateChunk into an event for its caller. */
static void deliver_chunk(gw_upstream *up, const uint8_t *buf, size_t len)
{
    Citadel__GenerateChunk *m = citadel__generate_chunk__unpack(NULL, len, buf);
    if (m == NULL || m->request_id == NULL) {
        gw_log(GW_LOG_WARN, NULL, "undecodable GenerateChunk from the router (%zu bytes)", len);
        gw_metric_error("bad_message");
        if (m) citadel__generate_chunk__free_unpacked(m, NULL);
        return;
    }
    pending *p = find_pending(up, m->request_id);
    if (p == NULL) {   /* cancelled or timed out already */
        citadel__generate_chunk__free_unpacked(m, NULL);
        return;
    }
    size_t n_lp = m->n_logprobs;
    gw_token_logprob *lp = n_lp ? calloc(n_lp, sizeof *lp) : NULL;
    gw_top_logprob *tops = NULL;
    size_t n_tops = 0;
    for (size_t i = 0; lp && i < n_lp; i++) n_tops += m->logprobs[i]->n_top;
    if (n_tops) tops = calloc(n_tops, sizeof *tops);
    size_t t = 0;
    for (size_t i = 0; lp && i < n_lp; i++) {
        const Citadel__TokenLogprob *src = m->logprobs[i];
        lp[i] = (gw_token_logprob){src->token ? src->token : "", src->token ? strlen(src->token) : 0,
                                   src->logprob, tops ? &tops[t] : NULL, tops ? src->n_top : 0};
        for (size_t j = 0; tops && j < src->n_top; j++, t++) {
            const char *tok = src->top[j]->token ? src->top[j]->token : "";
            tops[t] = (gw_top_logprob){tok, strlen(tok), src->top[j]->logprob};
        }
    }
    bool last = m->finish_reason != NULL && m->finish_reason[0] != '\0';
    gw_upstream_event ev = {
        .kind = GW_UP_CHUNK,
        .text = m->text ? m->text : "",
        .text_len = m->text ? strlen(m->text) : 0,
        .n_tokens = m->n_token_ids,
        .logprobs = lp,
        .n_logprobs = lp ? n_lp : 0,
        .finish_reason = last ? m->finish_reason : NULL,
        .has_usage = m->usage != NULL,
        .usage = {m->usage ? m->usage->prompt_tokens : 0, m->usage ? m->usage->completion_tokens : 0},
        .wire = m,
        .cache = m->cache ? m->cache : "",
    };
    gw_upstream_fn fn = p->fn;
    void *arg = p->arg;
    if (last) {
        remove_pending(up, p);
    } else if (!p->answered) {
        p->answered = true;
        arm_timer(p, p->deadline_ms + GW_DEADLINE_GRACE_MS - elapsed_ms(&p->submitted));
    }
    fn(&ev, arg);
    free(lp);
    free(tops);
    citadel__generate_chunk__free_unpacked(m, NULL);
}

static void deliver_error(gw_upstream *up, const uint8_t *buf, size_t len)
{
    Citadel__Error *m = citadel__error__unpack(NULL, len, buf);
    if (m == NULL) {
        gw_log(GW_LOG_WARN, NULL, "undecodable Error from the router (%zu bytes)", len);
        gw_metric_error("bad_message");
        return;
    }
    pending *p = m->request_id ? find_pending(up, m->request_id) : NULL;
    if (p != NULL) {
        gw_error e;
        map_error(up, m->code, m->message, &e);
        if (m->code == CITADEL__ERROR_CODE__OVERLOADED) gw_metric_error("overloaded");
        else if (m->code == CITADEL__ERROR_CODE__DEADLINE_EXCEEDED) gw_metric_error("deadline");
        gw_log(GW_LOG_INFO, p->request_id, "router error %d: %s", m->code, m->message ? m->message : "");
        fail_pending(up, p, &e);
    } else {
        gw_log(GW_LOG_WARN, m->request_id, "router error for no pending request: %s",
               m->message ? m->message : "");
    }
    citadel__error__free_unpacked(m, NULL);
}

/* A heartbeat relayed by the router (if it does so) refreshes the model list. */
static void note_models(gw_upstream *up, const uint8_t *buf, size_t len)
{
    Citadel__WorkerHeartbeat *m = citadel__worker_heartbeat__unpack(NULL, len, buf);
    if (m == NULL) return;
    for (size_t i = 0; i < m->n_models && up->n_models < MAX_MODELS; i++) {
        bool known = false;
        for (size_t j = 0; j < up->n_models && !known; j++) known = strcmp(up->models[j], m->models[i]) == 0;
        if (!known && strlen(m->models[i]) < MODEL_NAME_MAX) up->models[up->n_models++] = strdup(m->models[i]);
    }
    citadel__worker_heartbeat__free_unpacked(m, NULL);
}

/* The router's ModelList replaces the model list. */
static void note_model_list(gw_upstream *up, const uint8_t *buf, size_t len)
{
    Citadel__ModelList *m = citadel__model_list__unpack(NULL, len, buf);
    if (m == NULL) {
        gw_log(GW_LOG_WARN, NULL, "undecodable ModelList from the router (%zu bytes)", len);
        gw_metric_error("bad_message");
        return;
    }
    for (size_t i = 0; i < up->n_models; i++) free(up->models[i]);
    up->n_models = 0;
    for (size_t i = 0; i < m->n_models && up->n_models < MAX_MODELS; i++) {
        if (strlen(m->models[i]) >= MODEL_NAME_MAX) continue;
        char *copy = strdup(m->models[i]);
        if (copy) up->models[up->n_models++] = copy;
    }
    citadel__model_list__free_unpacked(m, NULL);
}

/* Reads one whole multipart message. Returns the frame count, 0 when none is waiting,
 * -1 on error. Frames beyond MAX_FRAMES are read and dropped. */
static int recv_message(gw_upstream *up, zmq_msg_t *frames)
{
    int n = 0;
    for (;;) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, up->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            if (n == 0 && errno == EAGAIN) return 0;
            for (int i = 0; i < n && i < MAX_FRAMES; i++) zmq_msg_close(&frames[i]);
            return -1;
        }
        int more = zmq_msg_more(&part);
        if (n < MAX_FRAMES) frames[n] = part;
        else zmq_msg_close(&part);
        n++;
        if (!more) return n;
    }
}

static void dispatch(gw_upstream *up, zmq_msg_t *frames, int n)
{
    int i = 0;
    if (n > 0 && zmq_msg_size(&frames[0]) == 0) i = 1;   /* the envelope delimiter */
    if (n - i != 2 || n > MAX_FRAMES) {
        gw_log(GW_LOG_WARN, NULL, "malformed message from the router (%d frames)", n);
        gw_metric_error("bad_message");
        return;
    }
    const char *type = zmq_msg_data(&frames[i]);
    size_t tlen = zmq_msg_size(&frames[i]);
    const uint8_t *payload = zmq_msg_data(&frames[i + 1]);
    size_t plen = zmq_msg_size(&frames[i + 1]);
    clock_gettime(CLOCK_MONOTONIC, &up->last_heard);
#define IS(t) (tlen == strlen(t) && memcmp(type, t, tlen) == 0)
    if (IS(TYPE_CHUNK)) deliver_chunk(up, payload, plen);
    else if (IS(TYPE_ERROR)) deliver_error(up, payload, plen);
    else if (IS(TYPE_MODEL_LIST)) note_model_list(up, payload, plen);
    else if (IS(TYPE_HEARTBEAT)) note_models(up, payload, plen);
    else {
        gw_log(GW_LOG_WARN, NULL, "unknown message type '%.*s' from the router", (int)(tlen < 40 ? tlen : 40), type);
        gw_metric_error("bad_message");
    }
#undef IS
}

/* ZMQ_FD signals edges, not levels: read until ZMQ_EVENTS has no POLLIN left. */
static void drain(gw_upstream *up)
{
    for (;;) {
        int events = 0;
        size_t sz = sizeof events;
        if (zmq_getsockopt(up->sock, ZMQ_EVENTS, &events, &sz) != 0 || !(events & ZMQ_POLLIN)) return;
        zmq_msg_t frames[MAX_FRAMES];
        int n = recv_message(up, frames);
        if (n <= 0) return;
        dispatch(up, frames, n);
        for (int i = 0; i < n && i < MAX_FRAMES; i++) zmq_msg_close(&frames[i]);
    }
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    drain(arg);
}

/* Asks the router for its model list (the answer arrives as a ModelList); a send that
 * fails (no router connected yet) is simply tried again on the next tick. */
static void on_models_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    send_frames(arg, TYPE_MODELS_REQUEST, (const uint8_t *)"", 0);
}

/* ---- lifecycle ---------------------------------------------------------------------- */

gw_upstream *gw_upstream_new(struct event_base *base, const gw_upstream_config *cfg,
                             char *err, size_t errsz)
{
    gw_upstream *up = calloc(1, sizeof *up);
    if (up == NULL) {
        snprintf(err, errsz, "out of memory");
        return NULL;
    }
    up->base = base;
    up->cfg = *cfg;
    up->zctx = zmq_ctx_new();
    up->sock = up->zctx ? zmq_socket(up->zctx, ZMQ_DEALER) : NULL;
    int zero = 0, one = 1, hwm = 10000;
    int fd = -1;
    size_t fdsz = sizeof fd;
    if (up->sock == NULL ||
        zmq_setsockopt(up->sock, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        /* Without a connected router, sends fail at once (503) instead of queueing. */
        zmq_setsockopt(up->sock, ZMQ_IMMEDIATE, &one, sizeof one) != 0 ||
        zmq_setsockopt(up->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_connect(up->sock, cfg->router_endpoint) != 0 ||
        zmq_getsockopt(up->sock, ZMQ_FD, &fd, &fdsz) != 0) {
        snprintf(err, errsz, "cannot connect to the router at %s: %s", cfg->router_endpoint,
                 zmq_strerror(zmq_errno()));
        gw_upstream_free(up);
        return NULL;
    }
    up->readable = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, up);
    if (up->readable == NULL || event_add(up->readable, NULL) != 0) {
        snprintf(err, errsz, "cannot watch the router socket");
        gw_upstream_free(up);
        return NULL;
    }
    struct timeval every = {MODELS_POLL_MS / 1000, (MODELS_POLL_MS % 1000) * 1000};
    up->models_timer = event_new(base, -1, EV_PERSIST, on_models_timer, up);
    if (up->models_timer == NULL || event_add(up->models_timer, &every) != 0) {
        snprintf(err, errsz, "cannot start the model list timer");
        gw_upstream_free(up);
        return NULL;
    }
    event_active(up->models_timer, EV_TIMEOUT, 0);   /* ask once right away */
    return up;
}

void gw_upstream_free(gw_upstream *up)
{
    if (up == NULL) return;
    while (up->pending) {
        pending *p = up->pending;
        size_t len;
        uint8_t *c = pack_cancel(p->request_id, "gateway shutting down", &len);
        if (c) send_frames(up, TYPE_CANCEL, c, len);
        free(c);
        remove_pending(up, p);
    }
    if (up->models_timer) event_free(up->models_timer);
    if (up->readable) event_free(up->readable);
    if (up->sock) zmq_close(up->sock);
    if (up->zctx) zmq_ctx_term(up->zctx);
    for (size_t i = 0; i < up->n_models; i++) free(up->models[i]);
    free(up);
}

size_t gw_upstream_in_flight(const gw_upstream *up)
{
    return up->n_pending;
}

bool gw_upstream_router_seen(const gw_upstream *up)
{
    return up->last_heard.tv_sec != 0 && elapsed_ms(&up->last_heard) < 10000;
}

const char *const *gw_upstream_models(const gw_upstream *up, size_t *n)
{
    *n = up->n_models;
    return (const char *const *)up->models;
}
