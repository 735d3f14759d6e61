/* bench_worker.c - one citadel-worker alone, driven over ZeroMQ exactly as the router
 * drives it, to measure the serving loop without the gateway, TLS and the router.
 *
 * It binds a ROUTER where the worker is told to connect (CITADEL_WORKER_ROUTER), waits
 * for the worker's first heartbeat, then keeps CLIENTS streams busy: each stream sends
 * a greedy chat GenerateRequest (system "Session <n>. ..." so that no two prompts share
 * their first tokens, user text from PROMPT_FILE, max_tokens MAX_TOKENS), waits for its
 * last chunk and sends the next, ROUNDS requests per stream. Every GenerateChunk holds
 * one token, so chunk arrival times give time to first token and inter-token latency.
 *
 *   bench_worker ENDPOINT MODEL PROMPT_FILE CLIENTS ROUNDS MAX_TOKENS
 *
 * Prints key=value lines prefixed with c<CLIENTS>_: requests, errors, completion and
 * prompt tokens per request, tokens_per_s (completion tokens of all requests / wall
 * time from the first send to the last chunk), ttft and itl p50/p99 in ms. Exit status
 * 0, or 1 when the worker never showed up or a request failed.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "envelope.h"

#define SYSTEM_FMT "Session %d. You are a helpful storyteller."

typedef struct stream_state {
    char request_id[64];
    bool busy;
    double sent_at, last_token_at;
    int done;   /* requests finished on this stream */
} stream_state;

typedef struct samples {
    double *v;
    size_t n, cap;
} samples;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void samples_add(samples *s, double x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (s->v == NULL) {
            fprintf(stderr, "bench_worker: out of memory\n");
            exit(1);
        }
    }
    s->v[s->n++] = x;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The p-th percentile by nearest rank, as bench_fleet.py and openai_load.py take it. */
static double percentile(samples *s, double p)
{
    if (s->n == 0)
        return 0;
    qsort(s->v, s->n, sizeof *s->v, cmp_double);
    size_t i = (size_t)(p / 100.0 * (double)(s->n - 1) + 0.5);
    return s->v[i < s->n ? i : s->n - 1];
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    return buf;
}

/* Waits for a heartbeat; returns the worker's route, or n == 0 after timeout_s. */
static envelope_route await_worker(void *sock, double timeout_s)
{
    envelope_route none = {0};
    double end = now_s() + timeout_s;
    while (now_s() < end) {
        envelope env;
        int rc = envelope_recv(sock, 200, &env, NULL, 0);
        bool beat = rc == ENVELOPE_OK && env.type == ENVELOPE_WORKER_HEARTBEAT && env.route.n == 1;
        envelope_route r = env.route;
        envelope_free(&env);
        if (beat)
            return r;
    }
    return none;
}

static int send_request(void *sock, const envelope_route *to, const char *model, const char *user_text, int id,
                        int max_tokens, stream_state *st)
{
    char system[128];
    snprintf(system, sizeof system, SYSTEM_FMT, id);
    snprintf(st->request_id, sizeof st->request_id, "bench-%d", id);
    Citadel__ChatMessage sys = CITADEL__CHAT_MESSAGE__INIT, usr = CITADEL__CHAT_MESSAGE__INIT;
    sys.role = "system";
    sys.content = system;
    usr.role = "user";
    usr.content = (char *)user_text;
    Citadel__ChatMessage *msgs[2] = {&sys, &usr};
    Citadel__GenerateRequest req = CITADEL__GENERATE_REQUEST__INIT;
    req.request_id = st->request_id;
    req.model = (char *)model;
    req.messages = msgs;
    req.n_messages = 2;
    req.max_tokens = max_tokens;
    req.temperature = 0;
    req.stream = true;
    req.has_seed = true;
    st->busy = true;
    st->sent_at = now_s();
    st->last_token_at = 0;
    return envelope_send(sock, to, &req.base, NULL, 0);
}

static stream_state *find_stream(stream_state *streams, int n, const char *request_id)
{
    for (int i = 0; i < n; i++)
        if (streams[i].busy && strcmp(streams[i].request_id, request_id) == 0)
            return &streams[i];
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: bench_worker ENDPOINT MODEL PROMPT_FILE CLIENTS ROUNDS MAX_TOKENS\n");
        return 2;
    }
    const char *endpoint = argv[1], *model = argv[2];
    const char *user_text = read_file(argv[3]);
    int clients = atoi(argv[4]), rounds = atoi(argv[5]), max_tokens = atoi(argv[6]);
    if (user_text == NULL || clients < 1 || rounds < 1 || max_tokens < 1) {
        fprintf(stderr, "bench_worker: bad arguments (prompt file %s)\n", argv[3]);
        return 2;
    }
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(sock, endpoint) != 0) {
        fprintf(stderr, "bench_worker: cannot bind %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
        return 1;
    }
    envelope_route worker = await_worker(sock, 300);
    if (worker.n == 0) {
        fprintf(stderr, "bench_worker: no heartbeat from a worker on %s\n", endpoint);
        return 1;
    }
    stream_state *streams = calloc((size_t)clients, sizeof *streams);
    samples ttft = {0}, itl = {0};
    long completion = 0, prompt = 0;
    /* Session numbers differ from run to run, so no run reuses another's cached prefix. */
    int finished = 0, errors = 0, next_id = (int)(getpid() % 100000) * 1000 + 1;
    int total = clients * rounds;
    double t0 = now_s(), t_end = t0;
    for (int i = 0; i < clients; i++)
        send_request(sock, &worker, model, user_text, next_id++, max_tokens, &streams[i]);
    while (finished < total) {
        envelope env;
        int rc = envelope_recv(sock, 120000, &env, NULL, 0);
        if (rc == ENVELOPE_TIMEOUT) {
            fprintf(stderr, "bench_worker: the worker went silent for 120 s\n");
            envelope_free(&env);
            return 1;
        }
        double t = now_s();
        const char *rid = NULL;
        bool last = false;
        if (rc == ENVELOPE_OK && env.type == ENVELOPE_GENERATE_CHUNK) {
            const Citadel__GenerateChunk *c = (const Citadel__GenerateChunk *)env.msg;
            rid = c->request_id;
            stream_state *st = find_stream(streams, clients, rid);
            if (st && c->n_token_ids > 0) {
                if (st->last_token_at == 0)
                    samples_add(&ttft, t - st->sent_at);
                else
                    samples_add(&itl, t - st->last_token_at);
                st->last_token_at = t;
            }
            last = c->finish_reason && c->finish_reason[0];
            if (last && c->usage) {
                completion += c->usage->completion_tokens;
                prompt += c->usage->prompt_tokens;
            }
        } else if (rc == ENVELOPE_OK && env.type == ENVELOPE_ERROR) {
            const Citadel__Error *e = (const Citadel__Error *)env.msg;
            fprintf(stderr, "bench_worker: error %d for %s: %s\n", e->code, e->request_id, e->message);
            rid = e->request_id;
            last = true;
            errors++;
        }
        if (last && rid) {
            stream_state *st = find_stream(streams, clients, rid);
            if (st) {
                st->busy = false;
                st->done++;
                finished++;
                t_end = t;
                if (st->done < rounds)
                    send_request(sock, &worker, model, user_text, next_id++, max_tokens, st);
            }
        }
        envelope_free(&env);
    }
    double wall = t_end - t0;
    printf("c%d_requests=%d\n", clients, total);
    printf("c%d_errors=%d\n", clients, errors);
    printf("c%d_prompt_tokens_per_request=%.1f\n", clients, (double)prompt / total);
    printf("c%d_completion_tokens_per_request=%.1f\n", clients, (double)completion / total);
    printf("c%d_tokens_per_s=%.1f\n", clients, (double)completion / wall);
    printf("c%d_ttft_p50_ms=%.1f\n", clients, percentile(&ttft, 50) * 1e3);
    printf("c%d_ttft_p99_ms=%.1f\n", clients, percentile(&ttft, 99) * 1e3);
    printf("c%d_itl_p50_ms=%.1f\n", clients, percentile(&itl, 50) * 1e3);
    printf("c%d_itl_p99_ms=%.1f\n", clients, percentile(&itl, 99) * 1e3);
    free(ttft.v);
    free(itl.v);
    free(streams);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return errors ? 1 : 0;
}
