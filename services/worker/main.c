/* main.c - citadel-worker: reads its settings (common/config), loads the model,
 * connects a DEALER to the router's backend with a stable identity, and runs the
 * serving loop (server.h) until SIGTERM (common/shutdown), then drains.
 *
 * Settings (`citadel-worker --help`; environment CITADEL_WORKER_*, flags --worker-*):
 *   worker_model       GGUF file (var/models/SmolLM2-135M-Instruct.Q4_1.gguf)
 *   worker_model_name  name announced to the router (file basename sans .gguf)
 *   worker_id          routing identity (worker-<hostname>-<admin port>)
 *   worker_router      router backend (tcp://127.0.0.1:5556)
 *   worker_threads     engine threads (0: every CPU)
 *   worker_ctx         context positions per request (0: min(2048, training context))
 *   worker_max_seqs    requests generated together, continuous batching (8)
 *   worker_step_tokens tokens per batch step: decodes, then prompt chunks (256)
 *   worker_max_queued_requests  requests that may wait for a batch slot (256); beyond:
 *                      Error OVERLOADED (the gateway's 503 with Retry-After)
 *   worker_max_queued_tokens    prompt tokens those may hold in all (0: no bound; 65536)
 *   worker_kv_cache_mb the paged KV cache shared by the batch, MiB (256; 0: max_seqs
 *                      full contexts); at least one full context
 *   worker_kv_dtype    KV storage: f16, f32 or q8_0 (f16)
 *   worker_admin_port  /metrics /healthz /readyz (9110)
 *   worker_drain_seconds  time the running requests get on SIGTERM (30)
 *   worker_adapters_dir   LoRA adapters served as "<model>:<name>" ($CITADEL_HOME/adapters)
 *   worker_tp_size     ranks of this worker's tensor-parallel group (1: no group)
 *   worker_tp_rank     this process's rank: 0 serves the router, others follow it
 *   worker_tp_addr     where the group meets: shm:NAME (one host) or tcp://HOST:PORT
 *   worker_tp_timeout  longest wait for the slowest rank inside one step (30)
 *
 * With worker_tp_size N > 1, N processes with ranks 0..N-1 and the same worker_tp_addr
 * form one worker (tp_group.h): each loads its share of the model, rank 0 connects to
 * the router, the others only follow rank 0 and have no router connection.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "admin.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "shutdown.h"

static const config_setting settings[] = {
    {"worker_model", CONFIG_STRING, "var/models/SmolLM2-135M-Instruct.Q4_1.gguf", "GGUF model file", .min = 0},
    {"worker_model_name", CONFIG_STRING, "", "model name announced (empty: file basename without .gguf)", .min = 0},
    {"worker_id", CONFIG_STRING, "", "stable routing identity (empty: worker-<host>-<admin port>)", .min = 0},
    {"worker_router", CONFIG_STRING, "tcp://127.0.0.1:5556", "router backend endpoint", .min = 0},
    {"worker_threads", CONFIG_INT, "0", "engine threads (0 = all CPUs)", .min = 0, .max = 4096},
    {"worker_ctx", CONFIG_INT, "0", "context positions per request (0 = min(2048, trained))", .min = 0, .max = 1 << 20},
    {"worker_max_seqs", CONFIG_INT, "8", "requests generated together (continuous batching)", .min = 1, .max = 256},
    {"worker_step_tokens", CONFIG_INT, "256", "tokens per batch step: decodes, then prompt chunks", .min = 1,
     .max = 8192},
    {"worker_max_queued_requests", CONFIG_INT, "256", "requests that may wait for a batch slot (beyond: overloaded)",
     .min = 1, .max = JOB_QUEUE_MAX},
    {"worker_max_queued_tokens", CONFIG_INT, "65536",
     "prompt tokens the waiting requests may hold (0 = no bound; beyond: overloaded)", .min = 0, .max = 1LL << 40},
    {"worker_kv_cache_mb", CONFIG_INT, "256", "paged KV cache shared by the batch, MiB (0 = max_seqs full contexts)",
     .min = 0, .max = 1 << 20},
    {"worker_kv_dtype", CONFIG_STRING, "f16", "KV cache storage: f16, f32 or q8_0", .min = 0},
    {"worker_admin_port", CONFIG_INT, "9110", "admin HTTP port: /metrics /healthz /readyz", .min = 1, .max = 65535},
    {"worker_drain_seconds", CONFIG_DURATION, "30", "time the running requests get on SIGTERM", .min = 0},
    {"worker_adapters_dir", CONFIG_STRING, "", "LoRA adapters <name>.gguf, served as \"<model>:<name>\" "
     "(empty: $CITADEL_HOME/adapters)", .min = 0},
    {"worker_tp_size", CONFIG_INT, "1", "tensor-parallel ranks of this worker (1 = the whole model here)", .min = 1,
     .max = COLLECTIVE_MAX_RANKS},
    {"worker_tp_rank", CONFIG_INT, "0", "this process's rank: 0 talks to the router, the others follow it", .min = 0,
     .max = COLLECTIVE_MAX_RANKS - 1},
    {"worker_tp_addr", CONFIG_STRING, "shm:citadel-tp",
     "where the group's ranks meet: shm:NAME (one host) or tcp://HOST:PORT (rank 0 binds)", .min = 0},
    {"worker_tp_timeout", CONFIG_DURATION, "30", "longest wait for the slowest rank inside one step", .min = 0.1},
};

/* The settings, derived values filled in. */
typedef struct worker_config {
    const char *model_path, *router;
    char model_name[256], worker_id[128], adapters_dir[512];
    int threads, n_ctx, admin_port, max_seqs, step_tokens, max_queued_requests;
    long long max_queued_tokens;
    size_t kv_cache_bytes;
    const char *kv_dtype;
    double drain_seconds;
    int tp_size, tp_rank;
    const char *tp_addr;
    double tp_timeout;
} worker_config;

/* "dir/name.gguf" -> "name". */
static void basename_no_ext(const char *path, char *out, size_t cap)
{
    const char *b = strrchr(path, '/');
    snprintf(out, cap, "%s", b ? b + 1 : path);
    size_t len = strlen(out);
    if (len > 5 && !strcmp(out + len - 5, ".gguf"))
        out[len - 5] = '\0';
}

static void read_config(const config *cfg, worker_config *c)
{
    c->model_path = config_string(cfg, "worker_model");
    c->router = config_string(cfg, "worker_router");
    c->threads = (int)config_int(cfg, "worker_threads");
    c->n_ctx = (int)config_int(cfg, "worker_ctx");
    c->max_seqs = (int)config_int(cfg, "worker_max_seqs");
    c->step_tokens = (int)config_int(cfg, "worker_step_tokens");
    c->max_queued_requests = (int)config_int(cfg, "worker_max_queued_requests");
    c->max_queued_tokens = config_int(cfg, "worker_max_queued_tokens");
    c->kv_cache_bytes = (size_t)config_int(cfg, "worker_kv_cache_mb") << 20;
    c->kv_dtype = config_string(cfg, "worker_kv_dtype");
    c->admin_port = (int)config_int(cfg, "worker_admin_port");
    c->drain_seconds = config_duration(cfg, "worker_drain_seconds");
    c->tp_size = (int)config_int(cfg, "worker_tp_size");
    c->tp_rank = (int)config_int(cfg, "worker_tp_rank");
    c->tp_addr = config_string(cfg, "worker_tp_addr");
    c->tp_timeout = config_duration(cfg, "worker_tp_timeout");
    const char *name = config_string(cfg, "worker_model_name");
    if (*name)
        snprintf(c->model_name, sizeof c->model_name, "%s", name);
    else
        basename_no_ext(c->model_path, c->model_name, sizeof c->model_name);
    const char *adapters = config_string(cfg, "worker_adapters_dir"), *home = getenv("CITADEL_HOME");
    if (*adapters)
        snprintf(c->adapters_dir, sizeof c->adapters_dir, "%s", adapters);
    else
        snprintf(c->adapters_dir, sizeof c->adapters_dir, "%s/adapters", home && *home ? home : "./var");
    const char *id = config_string(cfg, "worker_id");
    char host[64] = "local";
    gethostname(host, sizeof host - 1);
    if (*id)
        snprintf(c->worker_id, sizeof c->worker_id, "%s", id);
    else
        snprintf(c->worker_id, sizeof c->worker_id, "worker-%.60s-%d", host, c->admin_port);
}

static server the_server;

/* How long a rank waits for the rest of its group to start. */
#define TP_JOIN_TIMEOUT_S 120

static void *connect_dealer(void *ctx, const worker_config *c)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    /* A stable identity lets the router recognise a restarted worker as the same one. */
    zmq_setsockopt(s, ZMQ_ROUTING_ID, c->worker_id, strlen(c->worker_id));
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(s, c->router) != 0) {
        log_msg(LOG_ERROR, "", "cannot connect to %s: %s", c->router, zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    return s;
}

/* Serves until a signal, then drains: the running requests get drain_seconds. */
static void serve(server *s, const worker_config *c, admin_server *admin)
{
    zmq_pollitem_t items[] = {{s->sock, 0, ZMQ_POLLIN, 0}, {NULL, shutdown_fd(), ZMQ_POLLIN, 0}};
    for (;;) {
        if (shutdown_requested() && !s->draining) {
            log_msg(LOG_INFO, "", "draining");
            admin_set_ready(admin, false);
            server_begin_drain(s, server_now() + c->drain_seconds);
        }
        server_heartbeat_if_due(s, server_now());
        server_drain_socket(s);
        bool more = server_run_next(s);
        if (s->tp_failed)
            return;   /* the group is broken: exit so that it can be restarted whole */
        if (more)
            continue;
        if (s->draining) {
            if (shutdown_drain_in_flight(&s->drain) > 0)
                log_msg(LOG_WARN, "", "stopped with %d request(s) unaccounted for", shutdown_drain_in_flight(&s->drain));
            return;
        }
        double wait = s->next_heartbeat - server_now();
        long ms = wait > 0 ? (long)(wait * 1000) + 1 : 0;
        /* Not draining here, so the self-pipe wakes the poll at the first signal. */
        if (zmq_poll(items, 2, ms > 200 ? 200 : ms) < 0 && errno != EINTR)
            return;
    }
}

/* The batch over the model with its paged KV cache, or NULL after logging why. */
static engine_batch *create_batch(engine_model *m, const worker_config *c)
{
    char err[512];
    enum kv_dtype dtype;
    if (kv_dtype_parse(c->kv_dtype, &dtype)) {
        log_msg(LOG_ERROR, "", "worker_kv_dtype '%s' is none of f16, f32, q8_0", c->kv_dtype);
        return NULL;
    }
    engine_batch *b = engine_batch_create(m, &(engine_batch_options){
        .n_ctx = c->n_ctx, .max_seqs = c->max_seqs, .step_tokens = c->step_tokens, .n_threads = c->threads,
        .kv_cache_bytes = c->kv_cache_bytes, .kv_dtype = dtype}, err, sizeof err);
    if (b == NULL) {
        log_msg(LOG_ERROR, "", "cannot create the batch: %s (see worker_kv_cache_mb)", err);
        return NULL;
    }
    engine_batch_stats st = engine_batch_get_stats(b);
    log_msg(LOG_INFO, "", "KV cache: %d blocks of %d tokens (%s, %.1f MiB)", st.kv_blocks_total, st.kv_block_tokens,
            c->kv_dtype, (double)st.kv_blocks_total * st.kv_block_bytes / 1048576.0);
    return b;
}

/* Loads the model and settles the context each request gets (worker_ctx 0: the
 * engine's default, min(2048, the training context)), which admission checks
 * prompts against. */
static engine_model *open_model(worker_config *c, collective *comm)
{
    char err[512];
    engine_model *m;
    if (engine_model_open_shard(&m, c->model_path, comm, err, sizeof err)) {
        log_msg(LOG_ERROR, "", "cannot load model %s: %s", c->model_path, err);
        return NULL;
    }
    int train = engine_model_get_info(m).n_ctx_train;
    if (c->n_ctx == 0)
        c->n_ctx = train < 2048 ? train : 2048;
    return m;
}

/* Rank 0 (or a worker without a group): the router's worker. Returns the exit status. */
static int lead(const worker_config *c, engine_model *m, engine_batch *batch, tp_group *group,
                admin_server *admin, metrics_registry *reg)
{
    void *ctx = zmq_ctx_new();
    void *sock = connect_dealer(ctx, c);
    int rc = 1;
    if (sock && server_init(&the_server, sock, m, batch, c->max_seqs, c->model_name, c->worker_id, reg) == 0) {
        the_server.tp = group;
        server_set_admission(&the_server, &(admission_limits){.max_queued_requests = c->max_queued_requests,
                                                              .max_queued_tokens = c->max_queued_tokens,
                                                              .n_ctx = c->n_ctx});
        server_set_adapter_dir(&the_server, c->adapters_dir);
        admin_set_ready(admin, true);
        log_msg(LOG_INFO, "", "worker %s up: model %s (%s), router %s, admin :%d", c->worker_id, c->model_name,
                c->model_path, c->router, c->admin_port);
        serve(&the_server, c, admin);
        rc = the_server.tp_failed ? 1 : 0;
        if (group && !the_server.tp_failed && tp_group_publish(group, false, true, 0))
            log_msg(LOG_WARN, "", "could not tell the group to stop: %s", group->err);
        server_free(&the_server);
        log_msg(LOG_INFO, "", "worker stopped");
    }
    if (sock) zmq_close(sock);
    zmq_ctx_term(ctx);
    return rc;
}

/* Ranks 1..N-1: step with rank 0 until it stops the group (SIGTERM is left to rank 0,
 * which drains and then says stop). Returns the exit status. */
static int follow(tp_group *group, engine_model *m, engine_batch *batch, admin_server *admin, const worker_config *c)
{
    admin_set_ready(admin, true);
    log_msg(LOG_INFO, "", "rank %d of tensor-parallel group %s up: model %s, admin :%d, following rank 0",
            c->tp_rank, c->tp_addr, c->model_path, c->admin_port);
    if (tp_group_follow(group, m, batch, c->n_ctx)) {
        log_msg(LOG_ERROR, "", "%s", group->err);
        return 1;
    }
    log_msg(LOG_INFO, "", "rank 0 stopped the group");
    return 0;
}

int main(int argc, char **argv)
{
    int exit_status;
    config *cfg = config_for_main("citadel-worker", "serves generation requests from the router with the engine", settings,
                                  sizeof settings / sizeof settings[0], argc, argv, &exit_status);
    if (cfg == NULL)
        return exit_status;
    worker_config c;
    read_config(cfg, &c);
    log_init("worker");
    config_log(cfg);
    if (shutdown_install()) {
        log_msg(LOG_ERROR, "", "cannot install the signal handlers: %s", strerror(errno));
        config_free(cfg);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    metrics_registry *reg = metrics_registry_new("worker");
    /* The admin listener comes first so /healthz answers while the model loads. */
    admin_server *admin = admin_start(c.admin_port, metrics_write, reg);
    tp_group group;
    bool grouped = c.tp_size > 1, joined = false;
    if (admin && grouped) {
        joined = tp_group_open(&group, c.tp_addr, c.tp_rank, c.tp_size, TP_JOIN_TIMEOUT_S, c.tp_timeout) == 0;
        if (joined)
            log_msg(LOG_INFO, "", "rank %d of tensor-parallel group %s (%d ranks) joined", c.tp_rank, c.tp_addr,
                    c.tp_size);
        else
            log_msg(LOG_ERROR, "", "%s", group.err);
    }
    engine_model *m = admin && (joined || !grouped) ? open_model(&c, grouped ? group.comm : NULL) : NULL;
    engine_batch *batch = m ? create_batch(m, &c) : NULL;
    int rc = 1;
    if (batch && grouped && c.tp_rank > 0)
        rc = follow(&group, m, batch, admin, &c);
    else if (batch)
        rc = lead(&c, m, batch, grouped ? &group : NULL, admin, reg);
    admin_stop(admin);
    engine_batch_free(batch);
    engine_model_close(m);
    if (joined)
        tp_group_close(&group);
    metrics_registry_free(reg);
    config_free(cfg);
    return rc;
}
