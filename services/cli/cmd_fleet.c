/* cmd_fleet.c - `citadel up`, `citadel down`, `citadel status`: the local fleet on one
 * machine, each service its own process (fleet.h does the process plumbing).
 *
 *   up      starts citadel-kafka-dev (the in-memory Kafka; the others start once it has
 *           written its brokers' addresses to $CITADEL_HOME/run/kafka.bootstrap, where
 *           they read them), citadel-audit, citadel-router, N citadel-workers (worker-<i>, admin port 9110+i)
 *           citadel-sanitizer (:5557, admin 9102) and citadel-gateway (wired to that
 *           sanitizer: every prompt and output goes through it); with --tp T each worker is a tensor-parallel group
 *           of T processes (rank 0 is worker-<i>, ranks r > 0 are worker-<i>-r<r>,
 *           admin ports after the rank-0 ones, meeting in shared memory), waits until each answers 200 on /readyz, prints how
 *           to call it; then stays in the foreground and stops the fleet on Ctrl-C,
 *           or returns at once with --detach (the services keep running).
 *   down    SIGTERMs every service with a pid file (gateway first, so that no new
 *           request comes in while the router and workers drain) and waits.
 *   status  each service alive or dead, and its /healthz.
 * Services are configured through their CITADEL_* environment variables.
 */
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "fleet.h"

#define FLEET_MAX_WORKERS 16
#define FLEET_MAX_SERVICES (FLEET_MAX_WORKERS + 7)
#define ROUTER_ADMIN_PORT 9101
#define AUDIT_ADMIN_PORT 9103
#define KAFKA_DEV_ADMIN_PORT 9105
#define REDIS_PORT 6380
#define GATEWAY_ADMIN_PORT 9100
#define SANITIZER_ADMIN_PORT 9102
#define SANITIZER_ENDPOINT "tcp://127.0.0.1:5557"
#define WORKER_ADMIN_BASE 9110
#define GATEWAY_URL "https://localhost:8443"
#define STOP_TIMEOUT_S 30.0
#define DEFAULT_MODEL_FILE "SmolLM2-135M-Instruct.Q4_1.gguf"

typedef struct up_args {
    char model[FLEET_PATH_MAX];
    int workers;
    int tp;             /* ranks per worker (tensor parallelism) */
    bool detach;
    double timeout_s;   /* how long to wait for every /readyz */
} up_args;

/* Per-service environment strings live here so that putenv in the child can point at
 * them; a fleet is started once per process. */
typedef struct fleet_plan {
    fleet_service svc[FLEET_MAX_SERVICES];
    int n;
    char env[FLEET_MAX_SERVICES][8][FLEET_PATH_MAX + 64];
} fleet_plan;

/* snprintf that may truncate on purpose (paths past FLEET_PATH_MAX are cut, and then
 * fail to open with a clear message). */
static void set_text(char *dst, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_text(char *dst, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
}

static void up_help(void)
{
    printf("usage: citadel up [--model FILE] [--workers N] [--tp T] [--detach] [--timeout S]\n"
           "  --model FILE   GGUF model for the workers (default $CITADEL_HOME/models/%s)\n"
           "  --workers N    workers (default 1; workers x tp at most %d processes)\n"
           "  --tp T         tensor parallelism: each worker is T processes sharing the model\n"
           "                 (its heads and FFN width must divide by T; default 1)\n"
           "  --detach       return once the fleet is ready and leave it running\n"
           "  --timeout S    seconds to wait for every service to be ready (default 120)\n"
           "State (pids, logs) goes to $CITADEL_HOME/run; CITADEL_HOME defaults to ./var.\n",
           DEFAULT_MODEL_FILE, FLEET_MAX_WORKERS);
}

static int parse_up(up_args *a, int argc, char **argv)
{
    static const struct option options[] = {
        {"model", required_argument, 0, 'm'}, {"workers", required_argument, 0, 'w'},
        {"detach", no_argument, 0, 'd'}, {"timeout", required_argument, 0, 't'}, {"tp", required_argument, 0, 'p'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    set_text(a->model, sizeof a->model, "%s/models/%s", fleet_home(), DEFAULT_MODEL_FILE);
    a->workers = 1;
    a->tp = 1;
    a->timeout_s = 120;
    int opt;
    long n;
    double x;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'h': up_help(); return 1;
        case 'd': a->detach = true; break;
        case 'm': set_text(a->model, sizeof a->model, "%s", optarg); break;
        case 'w':
            if (!cli_parse_int(optarg, 1, FLEET_MAX_WORKERS, &n))
                return cli_usage_error("up", "bad --workers '%s' (1..%d)", optarg, FLEET_MAX_WORKERS);
            a->workers = (int)n;
            break;
        case 'p':
            if (!cli_parse_int(optarg, 1, FLEET_MAX_WORKERS, &n))
                return cli_usage_error("up", "bad --tp '%s' (1..%d)", optarg, FLEET_MAX_WORKERS);
            a->tp = (int)n;
            break;
        case 't':
            if (!cli_parse_float(optarg, 1, 3600, &x))
                return cli_usage_error("up", "bad --timeout '%s'", optarg);
            a->timeout_s = x;
            break;
        default:
            return cli_usage_error("up", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("up", "unexpected argument '%s'", argv[optind]);
    if (a->workers * a->tp > FLEET_MAX_WORKERS)
        return cli_usage_error("up", "--workers %d x --tp %d is more than %d worker processes", a->workers, a->tp,
                               FLEET_MAX_WORKERS);
    return 0;
}

/* The model name the workers announce and clients ask for: the file's basename
 * without ".gguf" (the worker's own default). */
static void model_name(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    set_text(out, cap, "%s", base);
    size_t len = strlen(out);
    if (len > 5 && !strcmp(out + len - 5, ".gguf"))
        out[len - 5] = '\0';
}

static fleet_service *plan_add(fleet_plan *p, const char *bin_dir, const char *binary,
                               const char *name, int admin_port)
{
    fleet_service *s = &p->svc[p->n++];
    memset(s, 0, sizeof *s);
    set_text(s->name, sizeof s->name, "%s", name);
    set_text(s->binary, sizeof s->binary, "%s/%s", bin_dir, binary);
    s->admin_port = admin_port;
    return s;
}

/* Sets s->env[k] to NAME=value, stored in the plan. */
static void plan_env(fleet_plan *p, fleet_service *s, int k, const char *name, const char *value)
{
    char *slot = p->env[s - p->svc][k];
    set_text(slot, sizeof p->env[0][0], "%s=%s", name, value);
    s->env[k] = slot;
}

/* One worker process: rank `rank` of worker i's group (rank 0 is the one the router
 * knows; a group of one is a plain worker). */
static void plan_worker(fleet_plan *p, const up_args *a, const char *bin_dir, int i, int rank, long threads)
{
    char name[64], buf[FLEET_PATH_MAX];
    int port = rank == 0 ? WORKER_ADMIN_BASE + i : WORKER_ADMIN_BASE + a->workers + i * (a->tp - 1) + rank - 1;
    if (rank == 0) snprintf(name, sizeof name, "worker-%d", i);
    else snprintf(name, sizeof name, "worker-%d-r%d", i, rank);
    fleet_service *w = plan_add(p, bin_dir, "citadel-worker", name, port);
    plan_env(p, w, 0, "CITADEL_HOME", fleet_home());
    snprintf(name, sizeof name, "worker-%d", i);
    plan_env(p, w, 1, "CITADEL_WORKER_ID", name);
    plan_env(p, w, 2, "CITADEL_WORKER_MODEL", a->model);
    snprintf(buf, sizeof buf, "%d", port);
    plan_env(p, w, 3, "CITADEL_WORKER_ADMIN_PORT", buf);
    snprintf(buf, sizeof buf, "%ld", threads);
    plan_env(p, w, 4, "CITADEL_WORKER_THREADS", buf);
    if (a->tp == 1)
        return;
    snprintf(buf, sizeof buf, "%d", a->tp);
    plan_env(p, w, 5, "CITADEL_WORKER_TP_SIZE", buf);
    snprintf(buf, sizeof buf, "%d", rank);
    plan_env(p, w, 6, "CITADEL_WORKER_TP_RANK", buf);
    /* the group meets in shared memory named after this `citadel up` and the worker */
    snprintf(buf, sizeof buf, "shm:citadel-%d-worker-%d", (int)getpid(), i);
    plan_env(p, w, 7, "CITADEL_WORKER_TP_ADDR", buf);
}

/* Finds an executable in $PATH. */
static bool find_in_path(const char *name, char *out, size_t cap)
{
    const char *path = getenv("PATH");
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path ? path : "/usr/bin:/bin");
    for (char *save = NULL, *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        set_text(out, cap, "%s/%s", dir, name);
        if (access(out, X_OK) == 0)
            return true;
    }
    return false;
}

/* Debian's redis-server on 127.0.0.1:6380 for the router's response cache: memory only
 * (no snapshots), at most 64 MiB, least recently used keys evicted beyond that. */
static void plan_redis(fleet_plan *p, const char *binary)
{
    static char dir[FLEET_PATH_MAX], port[16];
    fleet_service *s = &p->svc[p->n++];
    memset(s, 0, sizeof s[0]);
    set_text(s->name, sizeof s->name, "redis");
    set_text(s->binary, sizeof s->binary, "%s", binary);
    s->admin_port = REDIS_PORT;
    set_text(dir, sizeof dir, "%s/redis", fleet_home());
    mkdir(dir, 0700);
    snprintf(port, sizeof port, "%d", REDIS_PORT);
    static const char *args[] = {"--port", NULL, "--bind", "127.0.0.1", "--dir", NULL, "--save", "",
                                 "--appendonly", "no", "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru", NULL};
    args[1] = port;
    args[5] = dir;
    memcpy(s->args, args, sizeof args);
}

/* A service's readiness probe: /readyz, or PING for Redis. */
static int probe(const fleet_service *s, const char *path, int timeout_ms, char *body, size_t cap)
{
    if (!strcmp(s->name, "redis")) {
        int code = fleet_redis_ping(s->admin_port, timeout_ms);
        if (body && cap) snprintf(body, cap, "%s", code == 200 ? "PONG" : "");
        return code;
    }
    return fleet_http_get(s->admin_port, path, timeout_ms, body, cap);
}

static void make_plan(fleet_plan *p, const up_args *a, const char *bin_dir)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN), procs = (long)a->workers * a->tp;
    long threads = cpus > procs ? cpus / procs : 1;
    p->n = 0;
    fleet_service *k = plan_add(p, bin_dir, "citadel-kafka-dev", "kafka-dev", KAFKA_DEV_ADMIN_PORT);
    plan_env(p, k, 0, "CITADEL_HOME", fleet_home());
    fleet_service *au = plan_add(p, bin_dir, "citadel-audit", "audit", AUDIT_ADMIN_PORT);
    plan_env(p, au, 0, "CITADEL_HOME", fleet_home());
    char redis_bin[FLEET_PATH_MAX];
    bool redis = find_in_path("redis-server", redis_bin, sizeof redis_bin);
    if (redis)
        plan_redis(p, redis_bin);
    else
        fprintf(stderr, "citadel up: redis-server not found (make deps): the response cache is off, "
                        "rate limits are the gateway's own\n");
    fleet_service *r = plan_add(p, bin_dir, "citadel-router", "router", ROUTER_ADMIN_PORT);
    plan_env(p, r, 0, "CITADEL_HOME", fleet_home());
    char redis_addr[32];
    snprintf(redis_addr, sizeof redis_addr, "127.0.0.1:%d", REDIS_PORT);
    if (redis)
        plan_env(p, r, 1, "CITADEL_ROUTER_CACHE_REDIS", redis_addr);
    for (int i = 0; i < a->workers; i++)
        for (int rank = 0; rank < a->tp; rank++)
            plan_worker(p, a, bin_dir, i, rank, threads);
    fleet_service *z = plan_add(p, bin_dir, "citadel-sanitizer", "sanitizer", SANITIZER_ADMIN_PORT);
    plan_env(p, z, 0, "CITADEL_HOME", fleet_home());
    fleet_service *g = plan_add(p, bin_dir, "citadel-gateway", "gateway", GATEWAY_ADMIN_PORT);
    plan_env(p, g, 0, "CITADEL_HOME", fleet_home());
    plan_env(p, g, 1, "CITADEL_GATEWAY_SANITIZER", SANITIZER_ENDPOINT);
    if (redis)   /* the rate limits, shared with any gateway started on the same Redis */
        plan_env(p, g, 2, "CITADEL_GATEWAY_REDIS", redis_addr);
}

/* Refuses to start over a fleet that is already running (its ports are taken). */
static bool fleet_running(const char *run_dir)
{
    char names[FLEET_MAX_SERVICES + 8][FLEET_NAME_MAX];
    int n = fleet_list(run_dir, names, FLEET_MAX_SERVICES + 8);
    for (int i = 0; i < n; i++) {
        pid_t pid;
        int port;
        if (fleet_read_pid(run_dir, names[i], &pid, &port) == 0 && fleet_pid_alive(pid)) {
            fprintf(stderr, "citadel up: %s is already running (pid %d); run `citadel down` first\n",
                    names[i], (int)pid);
            return true;
        }
    }
    return false;
}

static void remove_pid_files(const char *run_dir, const fleet_plan *p)
{
    char path[FLEET_PATH_MAX + FLEET_NAME_MAX + 8];
    for (int i = 0; i < p->n; i++) {
        set_text(path, sizeof path, "%s/%s.pid", run_dir, p->svc[i].name);
        unlink(path);
    }
}

/* Which stop phase a service belongs to: the request path first (0), then the audit
 * writer (1, once the gateway has handed it its last events), then Kafka and Redis (2,
 * last: the in-memory Kafka takes what it holds with it). */
static int stop_phase(const char *name)
{
    if (!strcmp(name, "audit")) return 1;
    if (!strcmp(name, "kafka-dev") || !strcmp(name, "redis")) return 2;
    return 0;
}

/* Stops the services phase by phase (stop_phase); returns how many were killed. */
static int stop_in_phases(char names[][FLEET_NAME_MAX], const pid_t *pids, int n, bool own_children)
{
    int killed = 0;
    for (int phase = 0; phase <= 2; phase++) {
        pid_t batch[FLEET_MAX_SERVICES + 8];
        int k = 0;
        for (int i = 0; i < n; i++)
            if (stop_phase(names[i]) == phase && pids[i] > 0)
                batch[k++] = pids[i];
        if (k)
            killed += fleet_stop_pids(batch, k, STOP_TIMEOUT_S, own_children);
    }
    return killed;
}

/* Stops the services in reverse start order, in phases: gateway, workers, router, then
 * the audit writer, then Kafka. */
static void stop_plan(const char *run_dir, fleet_plan *p)
{
    pid_t pids[FLEET_MAX_SERVICES];
    char names[FLEET_MAX_SERVICES][FLEET_NAME_MAX];
    int n = 0;
    for (int i = p->n - 1; i >= 0; i--) {
        memcpy(names[n], p->svc[i].name, FLEET_NAME_MAX);
        pids[n++] = p->svc[i].pid;
    }
    int killed = stop_in_phases(names, pids, n, true);
    if (killed)
        fprintf(stderr, "citadel: %d service(s) did not stop within %.0f s and were killed\n",
                killed, STOP_TIMEOUT_S);
    remove_pid_files(run_dir, p);
}

/* Waits until citadel-kafka-dev has written the brokers' addresses that the other
 * services read at start. Returns 0, or -1 after saying why. */
static int wait_kafka_bootstrap(const char *run_dir, const fleet_service *kafka, double timeout_s)
{
    char path[FLEET_PATH_MAX + 32];
    set_text(path, sizeof path, "%s/kafka.bootstrap", run_dir);
    for (double deadline = fleet_now() + timeout_s; fleet_now() < deadline; usleep(100 * 1000)) {
        if (access(path, R_OK) == 0)
            return 0;
        if (!fleet_pid_running(kafka->pid))
            break;
    }
    fprintf(stderr, "citadel up: kafka-dev did not write %s\n", path);
    fleet_print_log_tail(run_dir, kafka->name, 10);
    return -1;
}

/* Waits until every service answers 200 on /readyz. Returns 0, or -1 after telling
 * which one died or was not ready in time. */
static int wait_ready(const char *run_dir, fleet_plan *p, double timeout_s)
{
    bool ready[FLEET_MAX_SERVICES] = {0};
    double deadline = fleet_now() + timeout_s;
    for (int left = p->n; left > 0;) {
        for (int i = 0; i < p->n; i++) {
            fleet_service *s = &p->svc[i];
            if (ready[i])
                continue;
            if (!fleet_pid_running(s->pid)) {
                fprintf(stderr, "citadel up: %s exited during start-up\n", s->name);
                fleet_print_log_tail(run_dir, s->name, 10);
                return -1;
            }
            if (probe(s, "/readyz", 500, NULL, 0) == 200) {
                ready[i] = true;
                left--;
                printf("  %-12s ready (pid %d, admin http://127.0.0.1:%d)\n", s->name, (int)s->pid,
                       s->admin_port);
                fflush(stdout);
            }
        }
        if (left == 0)
            break;
        if (fleet_now() > deadline) {
            for (int i = 0; i < p->n; i++)
                if (!ready[i])
                    fprintf(stderr, "citadel up: %s not ready after %.0f s (see %s/%s.log)\n",
                            p->svc[i].name, timeout_s, run_dir, p->svc[i].name);
            return -1;
        }
        usleep(200 * 1000);
    }
    return 0;
}

static void print_usage_hint(const up_args *a)
{
    char name[256];
    model_name(a->model, name, sizeof name);
    printf("\nCitadel is up at %s (gRPC: citadel.v1.Inference on localhost:8444)\n", GATEWAY_URL);
    printf("Admin API key: %s/keys/admin.key; more keys: citadel keys create --role user\n", fleet_home());
    printf("Try it (the certificate is self-signed, hence -k):\n\n");
    printf("  curl -k %s/v1/chat/completions \\\n"
           "    -H \"Authorization: Bearer $(cat %s/keys/admin.key)\" \\\n"
           "    -H 'Content-Type: application/json' \\\n"
           "    -d '{\"model\": \"%s\", \"messages\": [{\"role\": \"user\", \"content\": \"What is the capital of France?\"}]}'\n\n",
           GATEWAY_URL, fleet_home(), name);
    printf("Every request is audited to %s/audit (`citadel audit verify`, `citadel audit query`).\n", fleet_home());
    printf("Stop it with `citadel down`; state and logs are in %s/run.\n", fleet_home());
}

static volatile sig_atomic_t stop_requested;
static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* The foreground: report services that exit on their own, stop all on Ctrl-C. */
static void stay_in_foreground(fleet_plan *p)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_stop_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    printf("Running in the foreground; Ctrl-C stops the fleet.\n");
    fflush(stdout);
    while (!stop_requested) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        for (int i = 0; pid > 0 && i < p->n; i++) {
            if (p->svc[i].pid != pid)
                continue;
            fprintf(stderr, "citadel: %s (pid %d) exited with status %d\n", p->svc[i].name, (int)pid,
                    WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
            p->svc[i].pid = 0;
        }
        usleep(200 * 1000);
    }
    printf("\nstopping the fleet...\n");
}

static fleet_plan plan;   /* static: large, and its env strings must outlive fork */

int cmd_up(int argc, char **argv)
{
    up_args a = {0};
    int rc = parse_up(&a, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    char run_dir[FLEET_PATH_MAX], bin_dir[FLEET_PATH_MAX], err[FLEET_PATH_MAX + 256];
    struct stat st;
    if (stat(a.model, &st) != 0) {
        fprintf(stderr, "citadel up: model %s not found (make model fetches the default one)\n", a.model);
        return 1;
    }
    if (fleet_run_dir(run_dir, sizeof run_dir) || fleet_bin_dir(bin_dir, sizeof bin_dir)) {
        fprintf(stderr, "citadel up: cannot prepare %s/run or find the service binaries\n", fleet_home());
        return 1;
    }
    if (fleet_running(run_dir))
        return 1;
    make_plan(&plan, &a, bin_dir);
    for (int i = 0; i < plan.n; i++) {
        if (access(plan.svc[i].binary, X_OK) != 0) {
            fprintf(stderr, "citadel up: %s is missing: %s not found (run make)\n", plan.svc[i].name,
                    plan.svc[i].binary);
            return 1;
        }
    }
    printf("starting the fleet (%d worker%s", a.workers, a.workers > 1 ? "s" : "");
    if (a.tp > 1) printf(" of %d tensor-parallel processes each", a.tp);
    printf(", model %s)\n", a.model);
    char bootstrap[FLEET_PATH_MAX + 32];
    set_text(bootstrap, sizeof bootstrap, "%s/kafka.bootstrap", run_dir);
    unlink(bootstrap);   /* a stale one from a kafka-dev that was killed */
    for (int i = 0; i < plan.n; i++) {
        if (fleet_start(&plan.svc[i], run_dir, err, sizeof err)) {
            fprintf(stderr, "citadel up: %s\n", err);
            stop_plan(run_dir, &plan);
            return 1;
        }
        if (!strcmp(plan.svc[i].name, "kafka-dev") && wait_kafka_bootstrap(run_dir, &plan.svc[i], a.timeout_s)) {
            stop_plan(run_dir, &plan);
            return 1;
        }
    }
    if (wait_ready(run_dir, &plan, a.timeout_s)) {
        stop_plan(run_dir, &plan);
        return 1;
    }
    print_usage_hint(&a);
    if (a.detach)
        return 0;
    stay_in_foreground(&plan);
    stop_plan(run_dir, &plan);
    return 0;
}

/* The pids of every service with a pid file, gateway first and router last. */
static int collect_pids(const char *run_dir, char names[][FLEET_NAME_MAX], int n, pid_t *pids,
                        char pid_names[][FLEET_NAME_MAX])
{
    int k = 0;
    for (int i = n - 1; i >= 0; i--) {
        int port;
        if (fleet_read_pid(run_dir, names[i], &pids[k], &port) == 0)
            memcpy(pid_names[k++], names[i], FLEET_NAME_MAX);
    }
    return k;
}

int cmd_down(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: citadel down\n  stops the local fleet started by `citadel up` ($CITADEL_HOME/run)\n");
        return 0;
    }
    if (argc > 1) return cli_usage_error("down", "unexpected argument '%s'", argv[1]);
    char run_dir[FLEET_PATH_MAX], names[64][FLEET_NAME_MAX];
    if (fleet_run_dir(run_dir, sizeof run_dir)) {
        fprintf(stderr, "citadel down: cannot open %s/run\n", fleet_home());
        return 1;
    }
    int n = fleet_list(run_dir, names, 64);
    pid_t pids[64];
    char pid_names[64][FLEET_NAME_MAX];
    int k = collect_pids(run_dir, names, n, pids, pid_names);
    int alive = 0;
    for (int i = 0; i < k; i++)
        alive += fleet_pid_alive(pids[i]);
    if (alive == 0)
        printf("no fleet running\n");
    else {
        printf("stopping %d service(s)...\n", alive);
        int killed = stop_in_phases(pid_names, pids, k, false);
        if (killed) printf("%d did not stop within %.0f s and were killed\n", killed, STOP_TIMEOUT_S);
        printf("stopped\n");
    }
    char path[FLEET_PATH_MAX + FLEET_NAME_MAX + 8];
    for (int i = 0; i < n; i++) {
        set_text(path, sizeof path, "%s/%s.pid", run_dir, names[i]);
        unlink(path);
    }
    return 0;
}

int cmd_status(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: citadel status\n  each service of the local fleet: alive or dead, and its /healthz\n");
        return 0;
    }
    if (argc > 1) return cli_usage_error("status", "unexpected argument '%s'", argv[1]);
    char run_dir[FLEET_PATH_MAX], names[64][FLEET_NAME_MAX];
    if (fleet_run_dir(run_dir, sizeof run_dir)) {
        fprintf(stderr, "citadel status: cannot open %s/run\n", fleet_home());
        return 1;
    }
    int n = fleet_list(run_dir, names, 64), dead = 0;
    if (n == 0) {
        printf("no fleet (nothing in %s)\n", run_dir);
        return 3;
    }
    printf("%-12s %-6s %-8s %-6s %s\n", "service", "state", "pid", "admin", "healthz");
    for (int i = 0; i < n; i++) {
        pid_t pid = 0;
        int port = 0;
        fleet_read_pid(run_dir, names[i], &pid, &port);
        bool alive = fleet_pid_alive(pid);
        char body[256] = "-";
        fleet_service probed = {.admin_port = port};
        set_text(probed.name, sizeof probed.name, "%s", names[i]);
        int code = alive ? probe(&probed, "/healthz", 1000, body, sizeof body) : -1;
        char health[300];
        if (code > 0) set_text(health, sizeof health, "%d %s", code, body);
        else snprintf(health, sizeof health, "%s", alive ? "no answer" : "-");
        printf("%-12s %-6s %-8d %-6d %s\n", names[i], alive ? "alive" : "dead", (int)pid, port, health);
        dead += !alive || code != 200;
    }
    return dead ? 1 : 0;
}
