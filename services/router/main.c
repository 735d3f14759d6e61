/* main.c - citadel-router: wires the settings (common/config), the two ROUTER sockets,
 * the metrics registry and admin listener, and the poll loop around the broker
 * (broker.h).
 *
 *   frontend  ROUTER bound on router_frontend (default tcp port 5555, all interfaces): gateways
 *   backend   ROUTER bound on router_backend  (default tcp port 5556): workers
 *   admin     HTTP on router_admin_port (9101): /metrics /healthz /readyz
 * SIGTERM or SIGINT (common/shutdown): drain (new requests refused, those in flight
 * finish) for up to router_drain_seconds, then exit. `citadel-router --help` lists the
 * settings with their CITADEL_ROUTER_* environment variables.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "admin.h"
#include "broker.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "shutdown.h"

static const config_setting settings[] = {
    {"router_frontend", CONFIG_STRING, "tcp://*:5555", "gateways' endpoint (ZeroMQ bind address)", .min = 0},
    {"router_backend", CONFIG_STRING, "tcp://*:5556", "workers' endpoint (ZeroMQ bind address)", .min = 0},
    {"router_admin_port", CONFIG_INT, "9101", "admin HTTP port: /metrics /healthz /readyz", .min = 1, .max = 65535},
    {"router_drain_seconds", CONFIG_DURATION, "30", "time requests in flight get to finish on SIGTERM", .min = 0},
    {"router_cache_redis", CONFIG_STRING, "", "response cache: Redis host:port (empty: no cache)", .min = 0},
    {"router_cache_timeout", CONFIG_DURATION, "50ms", "a cache lookup slower than this goes on uncached", .min = 0},
    {"router_cache_ttl", CONFIG_DURATION, "1h", "cached answers expire after this", .min = 0},
    {"kafka_brokers", CONFIG_STRING, "", "Kafka for batch jobs (empty: $CITADEL_HOME/run/kafka.bootstrap; none: off)", .min = 0},
    {"kafka_options", CONFIG_STRING, "", "more librdkafka settings, name=value,name=value", .min = 0},
    {"router_batch_group", CONFIG_STRING, "citadel-router-batch", "Kafka consumer group of the batch bridge", .min = 0},
    {"router_batch_max_in_flight", CONFIG_INT, "2", "batch requests running at once (only while no interactive one is)", .min = 1, .max = 64},
    {"router_cache_max_entry_bytes", CONFIG_INT, "1048576", "larger answers are not cached", .min = 1024, .max = 536870912},
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static broker the_broker;   /* static: the registry and tables are large */

static void *bind_router(void *ctx, const char *endpoint)
{
    void *s = zmq_socket(ctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    /* Sending to a vanished peer must fail rather than vanish silently: that is how
     * the broker notices a worker it cannot reach and tries another. */
    zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(s, endpoint) != 0) {
        log_msg(LOG_ERROR, "", "cannot bind %s: %s", endpoint, zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    return s;
}

/* The poll loop; returns when drained or the drain time is up. */
static void serve(broker *b, double drain_seconds, admin_server *admin)
{
    zmq_pollitem_t items[] = {{b->frontend, 0, ZMQ_POLLIN, 0},
                              {b->backend, 0, ZMQ_POLLIN, 0},
                              {NULL, shutdown_fd(), ZMQ_POLLIN, 0},
                              {NULL, -1, 0, 0}};   /* the cache's Redis connection, when it has one */
    bool draining = false;
    double drain_deadline = 0;
    for (;;) {
        if (shutdown_requested() && !draining) {
            draining = true;
            broker_begin_drain(b);
            drain_deadline = now_s() + drain_seconds;
            admin_set_ready(admin, false);
            log_msg(LOG_INFO, "", "draining: %d request(s) in flight", broker_in_flight(b));
        }
        if (draining && (broker_in_flight(b) == 0 || now_s() > drain_deadline))
            return;
        /* Once draining, the self-pipe stays readable: poll it as nothing. The cache's
         * lookups time out in ~50 ms: the poll wakes up for them. */
        int wait_ms = router_cache_tick(b->cache, now_s());
        items[2].events = draining ? 0 : ZMQ_POLLIN;
        items[3].fd = router_cache_poll_fd(b->cache, &items[3].events);
        int n_items = items[3].fd >= 0 ? 4 : 3;
        if (zmq_poll(items, n_items, wait_ms >= 0 && wait_ms < 100 ? wait_ms : 100) < 0 && errno != EINTR)
            return;
        double now = now_s();
        if (n_items == 4 && items[3].revents)
            router_cache_on_io(b->cache, items[3].revents);
        /* Workers first: replies free capacity. */
        for (int k = 0; k < 64 && (items[1].revents & ZMQ_POLLIN) && broker_on_backend(b, now); k++)
            ;
        if (items[0].revents & ZMQ_POLLIN)
            broker_on_frontend(b, now);
        broker_tick(b, now);
        if (!draining)
            router_batch_tick(b->batch, now, b->requests.n, broker_submit_batch, b);
    }
}

int main(int argc, char **argv)
{
    int exit_status;
    config *cfg = config_for_main("citadel-router", "routes GenerateRequests from gateways to the least-loaded worker", settings,
                                  sizeof settings / sizeof settings[0], argc, argv, &exit_status);
    if (cfg == NULL)
        return exit_status;
    log_init("router");
    config_log(cfg);
    const char *frontend = config_string(cfg, "router_frontend"), *backend = config_string(cfg, "router_backend");
    int admin_port = (int)config_int(cfg, "router_admin_port");
    if (shutdown_install()) {
        log_msg(LOG_ERROR, "", "cannot install the signal handlers: %s", strerror(errno));
        config_free(cfg);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    metrics_registry *reg = metrics_registry_new("router");
    void *ctx = zmq_ctx_new();
    void *fe = bind_router(ctx, frontend), *be = fe ? bind_router(ctx, backend) : NULL;
    int rc = 1;
    router_cache_config cache_cfg = {
        .redis = config_string(cfg, "router_cache_redis"),
        .timeout_ms = (int)(config_duration(cfg, "router_cache_timeout") * 1000),
        .ttl_s = (int)config_duration(cfg, "router_cache_ttl"),
        .max_entry_bytes = (size_t)config_int(cfg, "router_cache_max_entry_bytes"),
    };
    router_cache *cache = router_cache_new(&cache_cfg, reg);
    if (cache && broker_init(&the_broker, fe, be, reg) == 0) {
        the_broker.cache = cache;
        router_batch_config batch_cfg = {
            .brokers = config_string(cfg, "kafka_brokers"),
            .options = config_string(cfg, "kafka_options"),
            .group = config_string(cfg, "router_batch_group"),
            .max_in_flight = (int)config_int(cfg, "router_batch_max_in_flight"),
        };
        the_broker.batch = router_batch_new(&batch_cfg, reg);
        admin_server *admin = be ? admin_start(admin_port, metrics_write, reg) : NULL;
        if (admin) {
            admin_set_ready(admin, true);
            log_msg(LOG_INFO, "", "router up: frontend %s, backend %s, admin :%d", frontend, backend, admin_port);
            serve(&the_broker, config_duration(cfg, "router_drain_seconds"), admin);
            log_msg(LOG_INFO, "", "router stopped");
            rc = 0;
        }
        admin_stop(admin);
        router_batch_free(the_broker.batch, 5000);
        broker_free(&the_broker);
    }
    router_cache_free(cache);
    if (fe) zmq_close(fe);
    if (be) zmq_close(be);
    zmq_ctx_term(ctx);
    metrics_registry_free(reg);
    config_free(cfg);
    return rc;
}
