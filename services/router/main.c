/* main.c - citadel-router: wires configuration, the two ROUTER sockets, the admin
 * listener and the poll loop around the broker (broker.h).
 *
 *   frontend  ROUTER bound on CITADEL_ROUTER_FRONTEND (default tcp port 5555, all interfaces): gateways
 *   backend   ROUTER bound on CITADEL_ROUTER_BACKEND  (default tcp port 5556): workers
 *   admin     HTTP on CITADEL_ROUTER_ADMIN_PORT (9101): /metrics /healthz /readyz
 * SIGTERM or SIGINT: drain (new requests refused, those in flight finish) for up to
 * CITADEL_ROUTER_DRAIN_SECONDS, then exit.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "admin.h"
#include "broker.h"
#include "log.h"

typedef struct router_config {
    const char *frontend, *backend;
    int admin_port;
    double drain_seconds;
} router_config;

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

static void print_help(void)
{
    printf("citadel-router: routes GenerateRequests from gateways to the least-loaded worker\n"
           "environment (default):\n"
           "  CITADEL_ROUTER_FRONTEND       gateways' endpoint (tcp://*:5555)\n"
           "  CITADEL_ROUTER_BACKEND        workers' endpoint (tcp://*:5556)\n"
           "  CITADEL_ROUTER_ADMIN_PORT     /metrics /healthz /readyz (9101)\n"
           "  CITADEL_ROUTER_DRAIN_SECONDS  time to finish requests on SIGTERM (30)\n");
}

static int load_config(router_config *c)
{
    c->frontend = env_or("CITADEL_ROUTER_FRONTEND", "tcp://*:5555");
    c->backend = env_or("CITADEL_ROUTER_BACKEND", "tcp://*:5556");
    c->admin_port = atoi(env_or("CITADEL_ROUTER_ADMIN_PORT", "9101"));
    c->drain_seconds = atof(env_or("CITADEL_ROUTER_DRAIN_SECONDS", "30"));
    if (c->admin_port <= 0 || c->admin_port > 65535 || c->drain_seconds < 0) {
        fprintf(stderr, "citadel-router: bad CITADEL_ROUTER_ADMIN_PORT or CITADEL_ROUTER_DRAIN_SECONDS\n");
        return -1;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static volatile sig_atomic_t stop_signal;
static void on_signal(int sig) { stop_signal = sig; }

static broker the_broker;   /* static: the registry and tables are large */

/* Prometheus text for the admin listener's /metrics. */
static void write_metrics(FILE *out, void *user)
{
    const broker *b = user;
    fprintf(out, "# TYPE citadel_router_workers_alive gauge\ncitadel_router_workers_alive %d\n", b->workers.n_workers);
    fprintf(out, "# TYPE citadel_router_requests_in_flight gauge\ncitadel_router_requests_in_flight %d\n", b->requests.n);
    fprintf(out, "# TYPE citadel_router_requests_routed_total counter\ncitadel_router_requests_routed_total %llu\n",
            (unsigned long long)b->stats.requests_routed);
    fprintf(out, "# TYPE citadel_router_retries_total counter\ncitadel_router_retries_total %llu\n",
            (unsigned long long)b->stats.retries);
    fprintf(out, "# TYPE citadel_router_errors_total counter\ncitadel_router_errors_total %llu\n",
            (unsigned long long)b->stats.errors);
    fprintf(out, "# TYPE citadel_router_bad_messages_total counter\ncitadel_router_bad_messages_total %llu\n",
            (unsigned long long)b->stats.bad_messages);
    fprintf(out, "# TYPE citadel_router_cancels_total counter\ncitadel_router_cancels_total %llu\n",
            (unsigned long long)b->stats.cancels);
    fprintf(out, "# TYPE citadel_router_workers_died_total counter\ncitadel_router_workers_died_total %llu\n",
            (unsigned long long)b->stats.workers_died);
}

static void *bind_router(void *ctx, const char *endpoint)
{
    void *s = zmq_socket(ctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    /* Sending to a vanished peer must fail rather than vanish silently: that is how
     * the broker notices a worker it cannot reach and tries another. */
    zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(s, endpoint) != 0) {
        fprintf(stderr, "citadel-router: cannot bind %s: %s\n", endpoint, zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    return s;
}

/* The poll loop; returns when drained or the drain time is up. */
static void serve(broker *b, const router_config *c, admin_server *admin)
{
    zmq_pollitem_t items[] = {{b->frontend, 0, ZMQ_POLLIN, 0}, {b->backend, 0, ZMQ_POLLIN, 0}};
    double drain_deadline = 0;
    for (;;) {
        if (stop_signal && !b->draining) {
            b->draining = true;
            drain_deadline = now_s() + c->drain_seconds;
            admin_set_ready(admin, false);
            log_msg(LOG_INFO, "", "draining: %d request(s) in flight", b->requests.n);
        }
        if (b->draining && (b->requests.n == 0 || now_s() > drain_deadline))
            return;
        if (zmq_poll(items, 2, 100) < 0 && errno != EINTR)
            return;
        double now = now_s();
        for (int k = 0; k < 64 && (items[1].revents & ZMQ_POLLIN); k++) {
            broker_on_backend(b, now);   /* workers first: replies free capacity */
            int ev = 0;
            size_t sz = sizeof ev;
            zmq_getsockopt(b->backend, ZMQ_EVENTS, &ev, &sz);
            if (!(ev & ZMQ_POLLIN)) break;
        }
        if (items[0].revents & ZMQ_POLLIN)
            broker_on_frontend(b, now);
        broker_tick(b, now);
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        print_help();
        return 0;
    }
    router_config c;
    if (load_config(&c))
        return 2;
    log_init("router");
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    void *ctx = zmq_ctx_new();
    void *fe = bind_router(ctx, c.frontend), *be = fe ? bind_router(ctx, c.backend) : NULL;
    broker_init(&the_broker, fe, be);
    admin_server *admin = be ? admin_start(c.admin_port, write_metrics, &the_broker) : NULL;
    int rc = 1;
    if (admin) {
        admin_set_ready(admin, true);
        log_msg(LOG_INFO, "", "router up: frontend %s, backend %s, admin :%d", c.frontend, c.backend, c.admin_port);
        serve(&the_broker, &c, admin);
        log_msg(LOG_INFO, "", "router stopped");
        rc = 0;
    }
    admin_stop(admin);
    broker_free(&the_broker);
    if (fe) zmq_close(fe);
    if (be) zmq_close(be);
    zmq_ctx_term(ctx);
    return rc;
}
