/* gw_sanitize.c - the gateway's DEALER to citadel-sanitizer, prompt jobs and output
 * filters (see gw_sanitize.h for the contract and why output is a streaming session).
 *
 * Every SanitizeRequest on the wire is an `op` in one list, found again by the id it
 * carries as request_id ("<request id>/p<n>" for a prompt's n-th text, "<request
 * id>/o<n>" for an output stream's n-th request); each op has a timer, and a timer
 * that fires, a send that fails or an Error answer all end in the same failure path
 * (fail closed or fail open). Failures found while sending are handed to the loop
 * (the op's timer armed at 0) so that no callback runs inside its caller.
 */
#include "gw_sanitize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <zmq.h>

#include "citadel.pb-c.h"

#include "envelope.h"
#include "gw_log.h"

#define WIRE_ID_MAX 96

typedef struct prompt_job prompt_job;
typedef struct op op;

/* One SanitizeRequest waiting for its answer: part `part` of a prompt job, or the
 * in-flight request of an output filter. */
struct op {
    gw_sanitizer *z;
    char wire_id[WIRE_ID_MAX];
    prompt_job *job;
    size_t part;
    gw_output_filter *filter;
    struct event *timer;
    bool unsent;            /* the send failed (no sanitizer connected): fails at once */
    op *prev, *next;
};

/* A prompt's texts on their way through the sanitizer. */
struct prompt_job {
    gw_sanitizer *z;
    char request_id[64];
    gw_request *req;
    gw_findings *f;
    gw_prompt_fn fn;
    void *arg;
    char ***fields;         /* the request's text fields (their strings are req's) */
    char **redacted;        /* answers, malloc'd; NULL until answered */
    size_t n, waiting;
    bool blocked_term, failed;
    unsigned blocked_types; /* bit t: PII type t blocked by policy */
    struct timespec started;
    struct event *finish;   /* the verdict, delivered from the loop */
    prompt_job *prev, *next;
};

/* One token's log-probabilities, owned, with the raw output offset where its text ends. */
typedef struct held_logprob {
    gw_token_logprob lp;
    uint64_t end;
} held_logprob;

struct gw_output_filter {
    gw_sanitizer *z;
    char request_id[64];
    gw_findings *f;
    gw_upstream_fn fn;
    void *arg;
    struct evbuffer *unsent;      /* raw text from the router not sent yet */
    struct evbuffer *unreleased;  /* raw text sent and still held by the sanitizer */
    uint64_t received, sent, released;   /* raw bytes */
    held_logprob *lps;
    size_t n_lps, cap_lps;
    int32_t *ids;                 /* token ids waiting with their text (gRPC relays them) */
    uint64_t *ids_end;            /* raw offset where each one's chunk ends */
    size_t n_ids, cap_ids;
    char worker_id[64];
    bool final_seen, final_sent, has_usage;
    char finish_reason[32];
    gw_usage usage;
    int64_t tokens;               /* completion tokens so far (usage of a cut stream) */
    struct timespec final_at;     /* when the router's last chunk came */
    op *inflight;
    unsigned seq;
    bool passthrough;             /* fail-open: the sanitizer failed, text goes out raw */
    bool done;                    /* the final event went out */
    int busy;                     /* inside fn: freeing is deferred */
    bool free_requested;
};

enum { OUTCOME_OK, OUTCOME_BLOCKED, OUTCOME_FAILED, N_OUTCOMES };
static const char *const outcome_names[N_OUTCOMES] = {"ok", "blocked", "unavailable"};

/* Fine buckets: the sanitizer adds microseconds to milliseconds to a request. */
static const double wait_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1};
#define N_WAIT_BUCKETS (sizeof wait_buckets / sizeof wait_buckets[0])

struct gw_sanitizer {
    struct event_base *base;
    gw_sanitize_config cfg;
    char endpoint[256];
    void *zctx, *sock;
    struct event *readable;
    op *ops;
    prompt_job *jobs;
    struct timespec last_heard;
    /* metrics */
    unsigned long requests[2][N_OUTCOMES];    /* [prompt, output] */
    unsigned long bypassed[2];
    unsigned long wait_counts[N_WAIT_BUCKETS + 1], wait_n;
    double wait_sum;
};

static gw_sanitizer *metrics_source;   /* the one the metrics renderer reads */

static double seconds_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static void observe_wait(gw_sanitizer *z, double s)
{
    size_t i = 0;
    while (i < N_WAIT_BUCKETS && s > wait_buckets[i]) i++;
    z->wait_counts[i]++;
    z->wait_n++;
    z->wait_sum += s;
}

/* /metrics (a gw_log metric source). */
static void write_metrics(FILE *b, void *arg)
{
    (void)arg;
    gw_sanitizer *z = metrics_source;
    if (z == NULL) return;
    static const char *const dirs[2] = {"prompt", "output"};
    fprintf(b, "# HELP citadel_gateway_sanitize_requests_total Texts sent to the sanitizer, by direction "
                           "and outcome.\n"
                           "# TYPE citadel_gateway_sanitize_requests_total counter\n");
    for (int d = 0; d < 2; d++)
        for (int o = 0; o < N_OUTCOMES; o++)
            fprintf(b, "citadel_gateway_sanitize_requests_total{direction=\"%s\",outcome=\"%s\"} %lu\n",
                                dirs[d], outcome_names[o], z->requests[d][o]);
    fprintf(b, "# HELP citadel_gateway_sanitizer_bypassed_total Requests whose text passed unsanitized "
                           "(fail-open while the sanitizer was unavailable).\n"
                           "# TYPE citadel_gateway_sanitizer_bypassed_total counter\n");
    for (int d = 0; d < 2; d++)
        fprintf(b, "citadel_gateway_sanitizer_bypassed_total{direction=\"%s\"} %lu\n", dirs[d],
                            z->bypassed[d]);
    const char *name = "citadel_gateway_sanitize_wait_seconds";
    fprintf(b, "# HELP citadel_gateway_sanitize_wait_seconds Time a request waited on the sanitizer "
                           "(prompt, and the output's end).\n"
                           "# TYPE citadel_gateway_sanitize_wait_seconds histogram\n");
    unsigned long cum = 0;
    for (size_t i = 0; i < N_WAIT_BUCKETS; i++) {
        cum += z->wait_counts[i];
        fprintf(b, "%s_bucket{le=\"%g\"} %lu\n", name, wait_buckets[i], cum);
    }
    fprintf(b, "%s_bucket{le=\"+Inf\"} %lu\n%s_sum %.6f\n%s_count %lu\n", name, z->wait_n, name,
                        z->wait_sum, name, z->wait_n);
}

void gw_findings_format(const gw_findings *f, char *out, size_t cap)
{
    size_t n = 0;
    for (int side = 0; side < 2; side++) {
        const unsigned *c = side ? f->output : f->prompt;
        n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s%s=", side ? " " : "", side ? "output" : "prompt");
        const char *sep = "";
        for (int k = 0; k < SANITIZE_FINDING_COUNT; k++) {
            if (c[k] == 0) continue;
            n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s%s:%u", sep, sanitize_finding_name(k), c[k]);
            sep = ",";
        }
        if (*sep == '\0') n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "none");
    }
    if (f->bypassed) snprintf(out + n, n < cap ? cap - n : 0, " bypassed");
}

/* ---- ops and the socket ------------------------------------------------------------ */

static void op_failed(op *o, const char *why);

static void op_free(op *o)
{
    gw_sanitizer *z = o->z;
    if (o->prev) o->prev->next = o->next;
    else z->ops = o->next;
    if (o->next) o->next->prev = o->prev;
    if (o->timer) event_free(o->timer);
    free(o);
}

static void on_op_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    op *o = arg;
    op_failed(o, o->unsent ? "not connected" : "no answer in time");
}

/* Sends one SanitizeRequest as a new op; a failed send is reported from the loop. */
static op *op_send(gw_sanitizer *z, const char *wire_id, Citadel__SanitizeDirection dir, const char *text,
                   const char *stream_id, bool final)
{
    op *o = calloc(1, sizeof *o);
    if (o == NULL) return NULL;
    o->z = z;
    snprintf(o->wire_id, sizeof o->wire_id, "%s", wire_id);
    o->timer = evtimer_new(z->base, on_op_timer, o);
    if (o->timer == NULL) {
        free(o);
        return NULL;
    }
    o->next = z->ops;
    if (z->ops) z->ops->prev = o;
    z->ops = o;
    Citadel__SanitizeRequest m = CITADEL__SANITIZE_REQUEST__INIT;
    m.request_id = o->wire_id;
    m.direction = dir;
    m.text = (char *)text;
    m.stream_id = (char *)(stream_id ? stream_id : "");
    m.final = final;
    char err[256];
    bool sent = envelope_send(z->sock, NULL, &m.base, err, sizeof err) == ENVELOPE_OK;
    /* Edge-triggered ZMQ_FD: a send may consume the edge of an arrived answer. */
    event_active(z->readable, EV_READ, 0);
    o->unsent = !sent;
    int ms = sent ? z->cfg.timeout_ms : 0;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(o->timer, &tv);
    return o;
}

static op *find_op(gw_sanitizer *z, const char *wire_id)
{
    for (op *o = z->ops; o; o = o->next)
        if (!strcmp(o->wire_id, wire_id)) return o;
    return NULL;
}

static void prompt_answer(op *o, const Citadel__SanitizeResponse *r);
static void output_answer(op *o, const Citadel__SanitizeResponse *r);

static void dispatch(gw_sanitizer *z, const envelope *env)
{
    clock_gettime(CLOCK_MONOTONIC, &z->last_heard);
    const char *id = NULL;
    if (env->type == ENVELOPE_SANITIZE_RESPONSE) id = ((Citadel__SanitizeResponse *)env->msg)->request_id;
    else if (env->type == ENVELOPE_ERROR) id = ((Citadel__Error *)env->msg)->request_id;
    op *o = id ? find_op(z, id) : NULL;
    if (o == NULL) {
        if (id == NULL) {
            gw_log(GW_LOG_WARN, NULL, "unexpected %s from the sanitizer", env->type_name);
            gw_metric_error("bad_message");
        }
        return;   /* an answer that came after its timeout */
    }
    if (env->type == ENVELOPE_ERROR) {
        const Citadel__Error *e = (const Citadel__Error *)env->msg;
        op_failed(o, e->message && *e->message ? e->message : "error");
    } else if (o->job) {
        prompt_answer(o, (const Citadel__SanitizeResponse *)env->msg);
    } else {
        output_answer(o, (const Citadel__SanitizeResponse *)env->msg);
    }
}

/* ZMQ_FD signals edges: read until ZMQ_EVENTS has no POLLIN left. */
static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    gw_sanitizer *z = arg;
    for (;;) {
        int events = 0;
        size_t sz = sizeof events;
        if (zmq_getsockopt(z->sock, ZMQ_EVENTS, &events, &sz) != 0 || !(events & ZMQ_POLLIN)) return;
        envelope env;
        char err[256];
        int rc = envelope_recv(z->sock, 0, &env, err, sizeof err);
        if (rc == ENVELOPE_OK) dispatch(z, &env);
        else if (rc != ENVELOPE_TIMEOUT) {
            gw_log(GW_LOG_WARN, NULL, "bad message from the sanitizer: %s", err);
            gw_metric_error("bad_message");
        }
        envelope_free(&env);
        if (rc == ENVELOPE_TIMEOUT || rc == ENVELOPE_ERR_IO) return;
    }
}

/* ---- prompts ----------------------------------------------------------------------- */

static void job_free(prompt_job *j)
{
    gw_sanitizer *z = j->z;
    for (op *o = z->ops, *next; o; o = next) {
        next = o->next;
        if (o->job == j) op_free(o);
    }
    if (j->prev) j->prev->next = j->next;
    else z->jobs = j->next;
    if (j->next) j->next->prev = j->prev;
    for (size_t i = 0; i < j->n; i++) free(j->redacted[i]);
    free(j->redacted);
    free(j->fields);
    if (j->finish) event_free(j->finish);
    free(j);
}

/* The verdict: 400 for a blocked prompt, 503 when the sanitizer failed and fails
 * closed; otherwise the redacted texts replace the originals. */
static void on_job_finish(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    prompt_job *j = arg;
    gw_sanitizer *z = j->z;
    gw_error e, *refusal = NULL;
    int outcome = OUTCOME_OK;
    const char *param = j->req->kind == GW_KIND_CHAT ? "messages" : "prompt";
    if (j->blocked_term) {
        refusal = gw_error_set(&e, 400, "invalid_request_error", param, "content_policy",
                               "the prompt contains a blocked term and was refused by content policy");
        outcome = OUTCOME_BLOCKED;
    } else if (j->blocked_types) {
        char types[128] = "";
        size_t n = 0;
        for (int t = 0; t < PII_TYPE_COUNT; t++)
            if (j->blocked_types & (1u << t))
                n += (size_t)snprintf(types + n, sizeof types - n, "%s%s", n ? ", " : "", pii_type_name((pii_type)t));
        refusal = gw_error_set(&e, 400, "invalid_request_error", param, "pii_policy",
                               "the prompt contains data that policy does not allow to be sent: %s", types);
        outcome = OUTCOME_BLOCKED;
    } else if (j->failed && !z->cfg.fail_open) {
        refusal = gw_error_set(&e, 503, "server_error", NULL, "service_unavailable",
                               "the sanitizer is unavailable: the prompt was not sent to the model");
        outcome = OUTCOME_FAILED;
    } else {
        if (j->failed) outcome = OUTCOME_FAILED;
        for (size_t i = 0; i < j->n; i++) {
            if (j->redacted[i] == NULL) continue;   /* unanswered: fail-open keeps the original */
            free(*j->fields[i]);
            *j->fields[i] = j->redacted[i];
            j->redacted[i] = NULL;
        }
    }
    z->requests[0][outcome]++;
    double wait = seconds_since(&j->started);
    j->f->wait_s += wait;
    observe_wait(z, wait);
    gw_prompt_fn fn = j->fn;
    void *arg2 = j->arg;
    job_free(j);
    fn(refusal, arg2);
}

static void job_finish_later(prompt_job *j)
{
    event_active(j->finish, EV_TIMEOUT, 0);
}

/* Counts one answer's findings into counts[]. */
static void add_findings(unsigned counts[SANITIZE_FINDING_COUNT], const Citadel__SanitizeResponse *r, bool *any)
{
    for (size_t i = 0; i < r->n_findings; i++)
        for (int k = 0; k < SANITIZE_FINDING_COUNT; k++)
            if (r->findings[i]->type && !strcmp(r->findings[i]->type, sanitize_finding_name(k))) {
                counts[k] += r->findings[i]->count;
                if (any && r->findings[i]->count) *any = true;
            }
}

/* "pii_policy:PHONE,EMAIL" -> the types' bits. */
static unsigned pii_reason_types(const char *reason)
{
    unsigned bits = 0;
    const char *list = strchr(reason, ':');
    for (int t = 0; list && t < PII_TYPE_COUNT; t++) {
        const char *name = pii_type_name((pii_type)t), *at = list;
        size_t len = strlen(name);
        while ((at = strstr(at, name)) != NULL) {
            if ((at[-1] == ':' || at[-1] == ',') && (at[len] == ',' || at[len] == '\0')) bits |= 1u << t;
            at += len;
        }
    }
    return bits;
}

static void prompt_answer(op *o, const Citadel__SanitizeResponse *r)
{
    prompt_job *j = o->job;
    size_t part = o->part;
    op_free(o);
    add_findings(j->f->prompt, r, NULL);
    if (r->blocked) {
        if (!strncmp(r->reason, "pii_policy", 10)) j->blocked_types |= pii_reason_types(r->reason);
        else j->blocked_term = true;
    } else {
        j->redacted[part] = strdup(r->text ? r->text : "");
        if (j->redacted[part] == NULL) j->failed = true;
    }
    if (--j->waiting == 0) job_finish_later(j);
}

int gw_sanitize_prompt(gw_sanitizer *z, gw_request *req, const char *request_id, gw_findings *f, gw_prompt_fn fn,
                       void *arg, gw_error *e)
{
    prompt_job *j = calloc(1, sizeof *j);
    size_t n = req->kind == GW_KIND_CHAT ? req->n_messages : 1;
    if (j) {
        j->fields = calloc(n ? n : 1, sizeof *j->fields);
        j->redacted = calloc(n ? n : 1, sizeof *j->redacted);
        j->finish = event_new(z->base, -1, 0, on_job_finish, j);
    }
    if (!j || !j->fields || !j->redacted || !j->finish) {
        if (j) {
            free(j->fields);
            free(j->redacted);
            if (j->finish) event_free(j->finish);
            free(j);
        }
        gw_error_set(e, 503, "server_error", NULL, "service_unavailable", "out of memory");
        return -1;
    }
    *j = (prompt_job){.z = z, .req = req, .f = f, .fn = fn, .arg = arg, .fields = j->fields,
                      .redacted = j->redacted, .n = n, .finish = j->finish};
    snprintf(j->request_id, sizeof j->request_id, "%s", request_id);
    clock_gettime(CLOCK_MONOTONIC, &j->started);
    j->next = z->jobs;
    if (z->jobs) z->jobs->prev = j;
    z->jobs = j;
    for (size_t i = 0; i < n; i++) j->fields[i] = req->kind == GW_KIND_CHAT ? &req->messages[i].content : &req->prompt;
    for (size_t i = 0; i < n; i++) {
        if (*j->fields[i] == NULL || **j->fields[i] == '\0') continue;   /* nothing to scan */
        char wire_id[WIRE_ID_MAX];
        snprintf(wire_id, sizeof wire_id, "%s/p%zu", request_id, i);
        op *o = op_send(z, wire_id, CITADEL__SANITIZE_DIRECTION__INPUT, *j->fields[i], NULL, false);
        if (o == NULL) {
            j->failed = true;
            continue;
        }
        o->job = j;
        o->part = i;
        j->waiting++;
    }
    if (j->waiting == 0) job_finish_later(j);
    return 0;
}

void gw_sanitize_prompt_cancel(gw_sanitizer *z, const char *request_id)
{
    for (prompt_job *j = z->jobs; j; j = j->next)
        if (!strcmp(j->request_id, request_id)) {
            job_free(j);
            return;
        }
}

/* ---- output ------------------------------------------------------------------------ */

static void lp_release(gw_token_logprob *lp)
{
    free((char *)lp->token);
    for (size_t i = 0; i < lp->n_top; i++) free((char *)lp->top[i].token);
    free((gw_top_logprob *)lp->top);
}

/* A deep copy of one token's log-probabilities (the event's are borrowed). */
static bool lp_copy(gw_token_logprob *dst, const gw_token_logprob *src)
{
    *dst = (gw_token_logprob){NULL, src->token_len, src->logprob, NULL, 0};
    gw_top_logprob *top = src->n_top ? calloc(src->n_top, sizeof *top) : NULL;
    dst->token = malloc(src->token_len + 1);
    if ((src->n_top && top == NULL) || dst->token == NULL) {
        free(top);
        free((char *)dst->token);
        return false;
    }
    memcpy((char *)dst->token, src->token, src->token_len);
    ((char *)dst->token)[src->token_len] = '\0';
    dst->top = top;
    for (size_t i = 0; i < src->n_top; i++) {
        char *t = malloc(src->top[i].token_len + 1);
        if (t == NULL) {
            lp_release(dst);
            return false;
        }
        memcpy(t, src->top[i].token, src->top[i].token_len);
        t[src->top[i].token_len] = '\0';
        top[i] = (gw_top_logprob){t, src->top[i].token_len, src->top[i].logprob};
        dst->n_top = i + 1;
    }
    return true;
}

static void hold_logprobs(gw_output_filter *o, const gw_upstream_event *ev)
{
    for (size_t i = 0; i < ev->n_logprobs; i++) {
        if (o->n_lps == o->cap_lps) {
            size_t cap = o->cap_lps ? o->cap_lps * 2 : 16;
            held_logprob *p = realloc(o->lps, cap * sizeof *p);
            if (p == NULL) return;   /* out of memory: these tokens go without logprobs */
            o->lps = p;
            o->cap_lps = cap;
        }
        if (lp_copy(&o->lps[o->n_lps].lp, &ev->logprobs[i])) o->lps[o->n_lps++].end = o->received;
    }
}

/* The held tokens whose text ends at or before raw offset `upto` leave the queue: into
 * out (n_out of them) when keep, freed otherwise. out must have room for n_lps. */
static size_t take_logprobs(gw_output_filter *o, uint64_t upto, bool keep, gw_token_logprob *out)
{
    size_t k = 0, n_out = 0;
    while (k < o->n_lps && o->lps[k].end <= upto) {
        if (keep) out[n_out++] = o->lps[k].lp;
        else lp_release(&o->lps[k].lp);
        k++;
    }
    if (k > 0) memmove(o->lps, o->lps + k, (o->n_lps - k) * sizeof *o->lps);
    o->n_lps -= k;
    return n_out;
}

/* The router's token ids for a chunk, held like its log-probabilities. */
static void hold_ids(gw_output_filter *o, const gw_upstream_event *ev)
{
    if (ev->wire == NULL) return;
    if (ev->wire->worker_id) snprintf(o->worker_id, sizeof o->worker_id, "%s", ev->wire->worker_id);
    for (size_t i = 0; i < ev->wire->n_token_ids; i++) {
        if (o->n_ids == o->cap_ids) {
            size_t cap = o->cap_ids ? o->cap_ids * 2 : 64;
            int32_t *ids = realloc(o->ids, cap * sizeof *ids);
            if (ids) o->ids = ids;
            uint64_t *ends = ids ? realloc(o->ids_end, cap * sizeof *ends) : NULL;
            if (ends == NULL) return;
            o->ids_end = ends;
            o->cap_ids = cap;
        }
        o->ids[o->n_ids] = ev->wire->token_ids[i];
        o->ids_end[o->n_ids++] = o->received;
    }
}

/* The held ids up to raw offset `upto` leave the queue: copied to out when keep. */
static size_t take_ids(gw_output_filter *o, uint64_t upto, bool keep, int32_t *out)
{
    size_t k = 0, n_out = 0;
    for (; k < o->n_ids && o->ids_end[k] <= upto; k++)
        if (keep) out[n_out++] = o->ids[k];
    if (k > 0) {
        memmove(o->ids, o->ids + k, (o->n_ids - k) * sizeof *o->ids);
        memmove(o->ids_end, o->ids_end + k, (o->n_ids - k) * sizeof *o->ids_end);
    }
    o->n_ids -= k;
    return n_out;
}

static void filter_destroy(gw_output_filter *o)
{
    free(o->ids);
    free(o->ids_end);
    if (o->inflight) op_free(o->inflight);
    for (size_t i = 0; i < o->n_lps; i++) lp_release(&o->lps[i].lp);
    free(o->lps);
    if (o->unsent) evbuffer_free(o->unsent);
    if (o->unreleased) evbuffer_free(o->unreleased);
    free(o);
}

/* Hands one event to the caller, who may free the filter meanwhile: then it goes
 * once fn returns. A final event is the last. Returns false when the filter is gone. */
static bool emit(gw_output_filter *o, const gw_upstream_event *ev)
{
    bool final = ev->kind == GW_UP_ERROR || ev->finish_reason != NULL;
    if (final) {
        o->done = true;
        if (o->final_seen) {
            double wait = seconds_since(&o->final_at);
            o->f->wait_s += wait;
            observe_wait(o->z, wait);
        }
    }
    o->busy++;
    o->fn(ev, o->arg);
    o->busy--;
    if (o->free_requested && o->busy == 0) {
        filter_destroy(o);
        return false;
    }
    return true;
}

/* Emits text with the logprobs it completes; with final, the finish and usage too. */
static bool emit_text(gw_output_filter *o, const char *text, size_t len, uint64_t upto, bool keep_lps,
                      const char *finish_reason)
{
    gw_token_logprob *lps = o->n_lps ? malloc(o->n_lps * sizeof *lps) : NULL;
    size_t n_lps = take_logprobs(o, upto, keep_lps && lps != NULL, lps);
    int32_t *ids = o->n_ids ? malloc(o->n_ids * sizeof *ids) : NULL;
    size_t n_ids = take_ids(o, upto, keep_lps && ids != NULL, ids);
    gw_upstream_event ev = {.kind = GW_UP_CHUNK, .text = text, .text_len = len, .logprobs = lps, .n_logprobs = n_lps,
                            .finish_reason = finish_reason, .token_ids = ids, .n_token_ids = n_ids,
                            .worker_id = o->worker_id};
    if (finish_reason) {
        ev.has_usage = true;
        ev.usage = o->has_usage ? o->usage : (gw_usage){0, o->tokens};
        ev.n_tokens = 0;
    }
    bool alive = len > 0 || n_lps > 0 || finish_reason ? emit(o, &ev) : true;
    for (size_t i = 0; i < n_lps; i++) lp_release(&lps[i]);
    free(lps);
    free(ids);
    return alive;
}

/* Sends what the router gave since the last request (and the end, once it came). */
static void send_next(gw_output_filter *o)
{
    size_t len = evbuffer_get_length(o->unsent);
    if (o->inflight || o->done || o->passthrough || (len == 0 && (!o->final_seen || o->final_sent))) return;
    evbuffer_add(o->unsent, "", 1);   /* the wire's text is a C string */
    const char *text = (const char *)evbuffer_pullup(o->unsent, -1);
    char wire_id[WIRE_ID_MAX];
    snprintf(wire_id, sizeof wire_id, "%s/o%u", o->request_id, o->seq++);
    o->inflight = text ? op_send(o->z, wire_id, CITADEL__SANITIZE_DIRECTION__OUTPUT, text, o->request_id,
                                 o->final_seen)
                       : NULL;
    if (o->inflight == NULL) {
        /* Out of memory: the stream ends as if the sanitizer had failed. */
        evbuffer_drain(o->unsent, 1);
        gw_upstream_event ev = {.kind = GW_UP_ERROR};
        gw_error_set(&ev.error, 503, "server_error", NULL, "service_unavailable", "out of memory sanitizing output");
        emit(o, &ev);
        return;
    }
    o->inflight->filter = o;
    evbuffer_remove_buffer(o->unsent, o->unreleased, len);
    evbuffer_drain(o->unsent, 1);
    o->sent += len;
    o->final_sent = o->final_seen;
}

static void output_answer(op *op_, const Citadel__SanitizeResponse *r)
{
    gw_output_filter *o = op_->filter;
    op_free(op_);
    o->inflight = NULL;
    bool any = false;
    add_findings(o->f->output, r, &any);
    uint64_t held = r->held_bytes <= o->sent - o->released ? r->held_bytes : o->sent - o->released;
    uint64_t released = o->sent - held;
    evbuffer_drain(o->unreleased, released - o->released);
    o->released = released;
    const char *text = r->text ? r->text : "";
    if (r->blocked) {
        o->z->requests[1][OUTCOME_BLOCKED]++;
        gw_log(GW_LOG_INFO, o->request_id, "output stopped by the sanitizer: %s", r->reason);
        emit_text(o, text, strlen(text), released, !any, "content_filter");
        return;
    }
    o->z->requests[1][OUTCOME_OK]++;
    bool last = o->final_sent && evbuffer_get_length(o->unsent) == 0;
    if (!emit_text(o, text, strlen(text), released, !any, last ? o->finish_reason : NULL)) return;
    if (!last) send_next(o);
}

/* The sanitizer failed this filter: fail closed (an error event), or open (everything
 * held and waiting goes out raw, and so does the rest of the stream). */
static void output_failed(gw_output_filter *o, const char *why)
{
    o->z->requests[1][OUTCOME_FAILED]++;
    if (!o->z->cfg.fail_open) {
        gw_log(GW_LOG_WARN, o->request_id, "sanitizer unavailable (%s): output withheld, stream ended", why);
        gw_metric_error("sanitizer_unavailable");
        gw_upstream_event ev = {.kind = GW_UP_ERROR};
        gw_error_set(&ev.error, 503, "server_error", NULL, "service_unavailable",
                     "the sanitizer is unavailable: the output could not be checked");
        emit(o, &ev);
        return;
    }
    gw_log(GW_LOG_ERROR, o->request_id, "SANITIZER UNAVAILABLE (%s): output passed UNSANITIZED (fail-open)", why);
    o->z->bypassed[1]++;
    o->f->bypassed = true;
    o->passthrough = true;
    evbuffer_add_buffer(o->unreleased, o->unsent);
    size_t len = evbuffer_get_length(o->unreleased);
    const char *text = len ? (const char *)evbuffer_pullup(o->unreleased, -1) : "";
    char *copy = malloc(len + 1);
    if (copy) {
        memcpy(copy, text, len);
        copy[len] = '\0';
    }
    evbuffer_drain(o->unreleased, len);
    o->released = o->sent = o->received;
    emit_text(o, copy ? copy : "", copy ? len : 0, o->received, true, o->final_seen ? o->finish_reason : NULL);
    free(copy);
}

static void op_failed(op *o, const char *why)
{
    if (o->job) {
        prompt_job *j = o->job;
        op_free(o);
        if (!j->failed) {
            if (j->z->cfg.fail_open) {
                gw_log(GW_LOG_ERROR, j->request_id, "SANITIZER UNAVAILABLE (%s): prompt passed UNSANITIZED (fail-open)",
                       why);
                j->z->bypassed[0]++;
                j->f->bypassed = true;
            } else {
                gw_log(GW_LOG_WARN, j->request_id, "sanitizer unavailable (%s): prompt refused", why);
                gw_metric_error("sanitizer_unavailable");
            }
        }
        j->failed = true;
        if (--j->waiting == 0) job_finish_later(j);
        return;
    }
    gw_output_filter *f = o->filter;
    op_free(o);
    f->inflight = NULL;
    output_failed(f, why);
}

gw_output_filter *gw_output_filter_new(gw_sanitizer *z, const char *request_id, gw_findings *f, gw_upstream_fn fn,
                                       void *arg)
{
    gw_output_filter *o = calloc(1, sizeof *o);
    if (o == NULL) return NULL;
    *o = (gw_output_filter){.z = z, .f = f, .fn = fn, .arg = arg, .unsent = evbuffer_new(),
                            .unreleased = evbuffer_new()};
    snprintf(o->request_id, sizeof o->request_id, "%s", request_id);
    if (o->unsent == NULL || o->unreleased == NULL) {
        filter_destroy(o);
        return NULL;
    }
    return o;
}

void gw_output_filter_push(gw_output_filter *o, const gw_upstream_event *ev)
{
    if (o->done) return;
    if (ev->kind == GW_UP_ERROR || o->passthrough) {   /* errors, and fail-open after a failure, go straight on */
        if (o->passthrough) o->received += ev->text_len;
        emit(o, ev);
        return;
    }
    evbuffer_add(o->unsent, ev->text, ev->text_len);
    o->received += ev->text_len;
    o->tokens += (int64_t)ev->n_tokens;
    hold_logprobs(o, ev);
    hold_ids(o, ev);
    if (ev->finish_reason) {
        o->final_seen = true;
        clock_gettime(CLOCK_MONOTONIC, &o->final_at);
        snprintf(o->finish_reason, sizeof o->finish_reason, "%s", ev->finish_reason);
        o->has_usage = ev->has_usage;
        o->usage = ev->usage;
    }
    send_next(o);
}

void gw_output_filter_free(gw_output_filter *o)
{
    if (o == NULL) return;
    if (o->busy) o->free_requested = true;
    else filter_destroy(o);
}

/* ---- lifecycle ------------------------------------------------------------------- */

gw_sanitizer *gw_sanitizer_new(struct event_base *base, const gw_sanitize_config *cfg, char *err, size_t errsz)
{
    gw_sanitizer *z = calloc(1, sizeof *z);
    if (z == NULL) {
        snprintf(err, errsz, "out of memory");
        return NULL;
    }
    z->base = base;
    z->cfg = *cfg;
    snprintf(z->endpoint, sizeof z->endpoint, "%s", cfg->endpoint);
    z->cfg.endpoint = z->endpoint;
    z->zctx = zmq_ctx_new();
    z->sock = z->zctx ? zmq_socket(z->zctx, ZMQ_DEALER) : NULL;
    int zero = 0, one = 1, hwm = 100000, fd = -1;
    size_t fdsz = sizeof fd;
    if (z->sock == NULL || zmq_setsockopt(z->sock, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        /* Without a connected sanitizer, sends fail at once (fail closed now, not at the timeout). */
        zmq_setsockopt(z->sock, ZMQ_IMMEDIATE, &one, sizeof one) != 0 ||
        zmq_setsockopt(z->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 || zmq_connect(z->sock, cfg->endpoint) != 0 ||
        zmq_getsockopt(z->sock, ZMQ_FD, &fd, &fdsz) != 0) {
        snprintf(err, errsz, "cannot connect to the sanitizer at %s: %s", cfg->endpoint, zmq_strerror(zmq_errno()));
        gw_sanitizer_free(z);
        return NULL;
    }
    z->readable = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, z);
    if (z->readable == NULL || event_add(z->readable, NULL) != 0) {
        snprintf(err, errsz, "cannot watch the sanitizer socket");
        gw_sanitizer_free(z);
        return NULL;
    }
    static bool registered;   /* gw_log keeps sources for the process's life */
    if (!registered) registered = gw_metrics_add_source(write_metrics, NULL) == 0;
    metrics_source = z;
    return z;
}

void gw_sanitizer_free(gw_sanitizer *z)
{
    if (z == NULL) return;
    if (metrics_source == z) metrics_source = NULL;
    while (z->jobs) job_free(z->jobs);
    while (z->ops) {
        if (z->ops->filter) z->ops->filter->inflight = NULL;
        op_free(z->ops);
    }
    if (z->readable) event_free(z->readable);
    if (z->sock) zmq_close(z->sock);
    if (z->zctx) zmq_ctx_term(z->zctx);
    free(z);
}

bool gw_sanitizer_seen(const gw_sanitizer *z)
{
    return z->last_heard.tv_sec != 0 && seconds_since(&z->last_heard) < 10;
}
