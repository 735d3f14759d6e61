/* main.c - citadel-worker: loads the model, connects a DEALER to the router's backend
 * with a stable identity, and runs the serving loop (server.h) until SIGTERM.
 *
 * Configuration (environment, default):
 *   CITADEL_WORKER_MODEL       GGUF file (var/models/SmolLM2-135M-Instruct.Q4_1.gguf)
 *   CITADEL_WORKER_MODEL_NAME  name announced to the router (file basename sans .gguf)
 *   CITADEL_WORKER_ID          routing identity (worker-<hostname>-<admin port>)
 *   CITADEL_WORKER_ROUTER      router backend (tcp://127.0.0.1:5556)
 *   CITADEL_WORKER_THREADS     engine threads (0: every CPU)
 *   CITADEL_WORKER_CTX         context positions per request (0: min(2048, training context))
 *   CITADEL_WORKER_MAX_SEQS    requests generated together, continuous batching (8)
 *   CITADEL_WORKER_STEP_TOKENS tokens per batch step: decodes, then prompt chunks (256)
 *   CITADEL_WORKER_ADMIN_PORT  /metrics /healthz /readyz (9110)
 *   CITADEL_WORKER_DRAIN_SECONDS  time the running request gets on SIGTERM (30)
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "admin.h"
#include "log.h"
#include "server.h"

typedef struct worker_config {
    const char *model_path, *router;
    char model_name[256], worker_id[128];
    int threads, n_ctx, admin_port, max_seqs, step_tokens;
    double drain_seconds;
} worker_config;

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

static void print_help(void)
{
    printf("citadel-worker: serves generation requests from the router with the engine\n"
           "environment (default):\n"
           "  CITADEL_WORKER_MODEL          GGUF model (var/models/SmolLM2-135M-Instruct.Q4_1.gguf)\n"
           "  CITADEL_WORKER_MODEL_NAME     model name announced (file basename without .gguf)\n"
           "  CITADEL_WORKER_ID             stable routing identity (worker-<host>-<admin port>)\n"
           "  CITADEL_WORKER_ROUTER         router backend endpoint (tcp://127.0.0.1:5556)\n"
           "  CITADEL_WORKER_THREADS        engine threads (0 = all CPUs)\n"
           "  CITADEL_WORKER_CTX            context positions per request (0 = min(2048, trained))\n"
           "  CITADEL_WORKER_MAX_SEQS       requests generated together (continuous batching) (8)\n"
           "  CITADEL_WORKER_STEP_TOKENS    tokens per batch step: decodes, then prompt chunks (256)\n"
           "  CITADEL_WORKER_ADMIN_PORT     /metrics /healthz /readyz (9110)\n"
           "  CITADEL_WORKER_DRAIN_SECONDS  time the running request gets on SIGTERM (30)\n");
}

/* "dir/name.gguf" -> "name". */
static void basename_no_ext(const char *path, char *out, size_t cap)
{
    const char *b = strrchr(path, '/');
    snprintf(out, cap, "%s", b ? b + 1 : path);
    size_t len = strlen(out);
    if (len > 5 && !strcmp(out + len - 5, ".gguf"))
        out[len - 5] = '\0';
}

static int load_config(worker_config *c)
{
    c->model_path = env_or("CITADEL_WORKER_MODEL", "var/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    c->router = env_or("CITADEL_WORKER_ROUTER", "tcp://127.0.0.1:5556");
    c->threads = atoi(env_or("CITADEL_WORKER_THREADS", "0"));
    c->n_ctx = atoi(env_or("CITADEL_WORKER_CTX", "0"));
    c->max_seqs = atoi(env_or("CITADEL_WORKER_MAX_SEQS", "8"));
    c->step_tokens = atoi(env_or("CITADEL_WORKER_STEP_TOKENS", "256"));
    c->admin_port = atoi(env_or("CITADEL_WORKER_ADMIN_PORT", "9110"));
    c->drain_seconds = atof(env_or("CITADEL_WORKER_DRAIN_SECONDS", "30"));
    const char *name = getenv("CITADEL_WORKER_MODEL_NAME");
    if (name && *name)
        snprintf(c->model_name, sizeof c->model_name, "%s", name);
    else
        basename_no_ext(c->model_path, c->model_name, sizeof c->model_name);
    const char *id = getenv("CITADEL_WORKER_ID");
    char host[64] = "local";
    gethostname(host, sizeof host - 1);
    if (id && *id)
        snprintf(c->worker_id, sizeof c->worker_id, "%s", id);
    else
        snprintf(c->worker_id, sizeof c->worker_id, "worker-%.60s-%d", host, c->admin_port);
    if (c->threads < 0 || c->n_ctx < 0 || c->admin_port <= 0 || c->admin_port > 65535 || c->drain_seconds < 0 ||
        c->max_seqs < 1 || c->max_seqs > 256 || c->step_tokens < 1 || c->step_tokens > 8192) {
        fprintf(stderr, "citadel-worker: bad CITADEL_WORKER_THREADS, _CTX, _ADMIN_PORT, _DRAIN_SECONDS, "
                        "_MAX_SEQS (1..256) or _STEP_TOKENS (1..8192)\n");
        return -1;
    }
    return 0;
}

static volatile sig_atomic_t stop_signal;
static void on_signal(int sig) { stop_signal = sig; }

static server the_server;

static void write_metrics(FILE *out, void *user)
{
    const server *s = user;
    const server_stats *st = &s->stats;
    fprintf(out, "# TYPE citadel_worker_busy gauge\ncitadel_worker_busy %d\n", s->busy ? 1 : 0);
    fprintf(out, "# TYPE citadel_worker_running_requests gauge\ncitadel_worker_running_requests %d\n", s->n_active);
    fprintf(out, "# TYPE citadel_worker_queue_depth gauge\ncitadel_worker_queue_depth %d\n", job_queue_len(&s->queue));
    fprintf(out, "# TYPE citadel_worker_requests_total counter\n");
    fprintf(out, "citadel_worker_requests_total{outcome=\"done\"} %llu\n", (unsigned long long)st->requests_done);
    fprintf(out, "citadel_worker_requests_total{outcome=\"failed\"} %llu\n", (unsigned long long)st->requests_failed);
    fprintf(out, "citadel_worker_requests_total{outcome=\"cancelled\"} %llu\n", (unsigned long long)st->requests_cancelled);
    fprintf(out, "# TYPE citadel_worker_tokens_generated_total counter\ncitadel_worker_tokens_generated_total %llu\n",
            (unsigned long long)st->tokens_generated);
    fprintf(out, "# TYPE citadel_worker_prompt_tokens_total counter\ncitadel_worker_prompt_tokens_total %llu\n",
            (unsigned long long)st->prompt_tokens);
    fprintf(out, "# TYPE citadel_worker_prompt_tokens_cached_total counter\ncitadel_worker_prompt_tokens_cached_total %llu\n",
            (unsigned long long)st->prompt_tokens_cached);
    fprintf(out, "# TYPE citadel_worker_bad_messages_total counter\ncitadel_worker_bad_messages_total %llu\n",
            (unsigned long long)st->bad_messages);
    fprintf(out, "# TYPE citadel_worker_busy_seconds_total counter\ncitadel_worker_busy_seconds_total %.3f\n",
            st->busy_seconds);
}

static void *connect_dealer(void *ctx, const worker_config *c)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    /* A stable identity lets the router recognise a restarted worker as the same one. */
    zmq_setsockopt(s, ZMQ_ROUTING_ID, c->worker_id, strlen(c->worker_id));
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(s, c->router) != 0) {
        fprintf(stderr, "citadel-worker: cannot connect to %s: %s\n", c->router, zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    return s;
}

/* Serves until a signal, then drains: the running request gets drain_seconds. */
static void serve(server *s, const worker_config *c, admin_server *admin)
{
    zmq_pollitem_t item = {s->sock, 0, ZMQ_POLLIN, 0};
    for (;;) {
        if (stop_signal && !s->draining) {
            log_msg(LOG_INFO, "", "draining");
            admin_set_ready(admin, false);
            server_begin_drain(s, server_now() + c->drain_seconds);
        }
        server_heartbeat_if_due(s, server_now());
        server_drain_socket(s);
        if (server_run_next(s))
            continue;
        if (s->draining)
            return;
        double wait = s->next_heartbeat - server_now();
        long ms = wait > 0 ? (long)(wait * 1000) + 1 : 0;
        if (zmq_poll(&item, 1, ms > 200 ? 200 : ms) < 0 && errno != EINTR)
            return;
    }
}

static engine_model *open_model(const worker_config *c)
{
    char err[512];
    engine_model *m;
    if (engine_model_open(&m, c->model_path, err, sizeof err)) {
        log_msg(LOG_ERROR, "", "cannot load model %s: %s", c->model_path, err);
        return NULL;
    }
    return m;
}

int main(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        print_help();
        return 0;
    }
    worker_config c;
    if (load_config(&c))
        return 2;
    log_init("worker");
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* The admin listener comes first so /healthz answers while the model loads. */
    admin_server *admin = admin_start(c.admin_port, write_metrics, &the_server);
    engine_model *m = admin ? open_model(&c) : NULL;
    engine_batch *batch = m ? engine_batch_create(m, &(engine_batch_options){
        .n_ctx = c.n_ctx, .max_seqs = c.max_seqs, .step_tokens = c.step_tokens, .n_threads = c.threads}) : NULL;
    void *ctx = zmq_ctx_new();
    void *sock = batch ? connect_dealer(ctx, &c) : NULL;
    int rc = 1;
    if (sock && server_init(&the_server, sock, m, batch, c.max_seqs, c.model_name, c.worker_id) == 0) {
        admin_set_ready(admin, true);
        log_msg(LOG_INFO, "", "worker %s up: model %s (%s), router %s, admin :%d", c.worker_id, c.model_name,
                c.model_path, c.router, c.admin_port);
        serve(&the_server, &c, admin);
        server_free(&the_server);
        log_msg(LOG_INFO, "", "worker stopped");
        rc = 0;
    }
    if (sock) zmq_close(sock);
    zmq_ctx_term(ctx);
    admin_stop(admin);
    engine_batch_free(batch);
    engine_model_close(m);
    return rc;
}
