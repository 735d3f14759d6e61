/* main.c - citadel-sanitizer: wires configuration, the ROUTER socket, the admin
 * listener, signals and the poll loop around sanitizer_service.h.
 *
 *   socket  ROUTER bound on --sanitizer-endpoint, CITADEL_SANITIZER_ENDPOINT (port 5557):
 *           gateways and trainers send SanitizeRequest, get SanitizeResponse or Error
 *   admin   HTTP on CITADEL_SANITIZER_ADMIN_PORT (9102): /metrics /healthz /readyz
 *   SIGHUP  re-reads the config file and the term list; a bad one keeps the old
 *   SIGTERM stops taking new texts and streams, lets open streams finish (up to
 *           CITADEL_SANITIZER_DRAIN_TIMEOUT), exits
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "admin.h"
#include "config.h"
#include "log.h"
#include "sanitizer_service.h"

static const config_setting settings[] = {
    {"sanitizer_endpoint", CONFIG_STRING, "tcp://*:5557", "ZeroMQ endpoint the ROUTER socket binds", 0, 0, false},
    {"sanitizer_admin_port", CONFIG_INT, "9102", "admin HTTP port (/metrics /healthz /readyz); 0: any free port", 0, 65535, false},
    {"sanitizer_terms_file", CONFIG_STRING, "", "blocked terms, UTF-8, one a line (empty: none)", 0, 0, false},
    {"sanitizer_policy_phone", CONFIG_STRING, "redact", "PHONE findings: redact, block or log", 0, 0, false},
    {"sanitizer_policy_id_card", CONFIG_STRING, "redact", "ID_CARD findings: redact, block or log", 0, 0, false},
    {"sanitizer_policy_email", CONFIG_STRING, "redact", "EMAIL findings: redact, block or log", 0, 0, false},
    {"sanitizer_policy_bank_card", CONFIG_STRING, "redact", "BANK_CARD findings: redact, block or log", 0, 0, false},
    {"sanitizer_policy_ip", CONFIG_STRING, "redact", "IP findings: redact, block or log", 0, 0, false},
    {"sanitizer_policy_secret", CONFIG_STRING, "redact", "SECRET findings: redact, block or log", 0, 0, false},
    {"sanitizer_max_message_bytes", CONFIG_INT, "16777216", "largest request accepted", 1024, 1 << 30, false},
    {"sanitizer_stream_idle_timeout", CONFIG_DURATION, "300s", "a stream silent this long is dropped", 0, 0, false},
    {"sanitizer_drain_timeout", CONFIG_DURATION, "30s", "time open streams get on SIGTERM", 0, 0, false},
};
#define N_SETTINGS (sizeof settings / sizeof settings[0])

static volatile sig_atomic_t reload_requested;
static void on_sighup(int sig) { (void)sig; reload_requested = 1; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Loads the settings (flags, environment, file); NULL with the reason printed. */
static config *load_config(int argc, char **argv, int *help)
{
    char err[512];
    config *c = config_new("citadel-sanitizer", "PII redaction and blocked terms for prompts and output", settings,
                           N_SETTINGS);
    int rc = c ? config_load(c, argc, argv, err, sizeof err) : CONFIG_ERROR;
    *help = rc == CONFIG_HELP;
    if (rc == CONFIG_OK || rc == CONFIG_HELP) return c;
    log_msg(LOG_ERROR, NULL, "%s", c ? err : "out of memory");
    config_free(c);
    return NULL;
}

/* The sanitizer a config describes; NULL with the reason logged. */
static sanitizer *build_sanitizer(const config *c)
{
    static const char *const names[PII_TYPE_COUNT] = {
        [PII_SECRET] = "sanitizer_policy_secret", [PII_ID_CARD] = "sanitizer_policy_id_card",
        [PII_BANK_CARD] = "sanitizer_policy_bank_card", [PII_PHONE] = "sanitizer_policy_phone",
        [PII_EMAIL] = "sanitizer_policy_email", [PII_IP] = "sanitizer_policy_ip"};
    pii_policy policy[PII_TYPE_COUNT];
    for (int t = 0; t < PII_TYPE_COUNT; t++)
        if (pii_policy_parse(config_string(c, names[t]), &policy[t])) {
            log_msg(LOG_ERROR, NULL, "%s must be redact, block or log", names[t]);
            return NULL;
        }
    char err[512];
    sanitizer *s = sanitizer_new(policy, config_string(c, "sanitizer_terms_file"), err, sizeof err);
    if (s == NULL) log_msg(LOG_ERROR, NULL, "%s", err);
    else log_msg(LOG_INFO, NULL, "policies and lists loaded: %zu blocked terms", ac_term_count(s->terms));
    return s;
}

/* SIGHUP: the new lists and policies, or the old ones if the new do not load. */
static void reload(sanitizer_service *svc, int argc, char **argv)
{
    int help;
    config *c = load_config(argc, argv, &help);
    sanitizer *s = c ? build_sanitizer(c) : NULL;
    if (s) sanitizer_service_swap(svc, s);
    else log_msg(LOG_ERROR, NULL, "reload failed: keeping the previous lists and policies");
    config_free(c);
}

static void *bind_socket(void *ctx, const config *c)
{
    void *s = zmq_socket(ctx, ZMQ_ROUTER);
    int zero = 0;
    int64_t max = config_int(c, "sanitizer_max_message_bytes");
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max, sizeof max);
    if (zmq_bind(s, config_string(c, "sanitizer_endpoint")) != 0) {
        log_msg(LOG_ERROR, NULL, "cannot bind %s: %s", config_string(c, "sanitizer_endpoint"), zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    return s;
}

/* Answers what is waiting, a bounded batch so that signals are looked at often. */
static void serve_ready(sanitizer_service *svc, void *sock)
{
    for (int k = 0; k < 256; k++) {
        envelope env;
        char err[256];
        int rc = envelope_recv(sock, 0, &env, err, sizeof err);
        if (rc != ENVELOPE_TIMEOUT) sanitizer_service_on_message(svc, sock, rc, &env, now_s());
        envelope_free(&env);
        if (rc == ENVELOPE_TIMEOUT || rc == ENVELOPE_ERR_IO) return;
    }
}

static void serve(sanitizer_service *svc, void *sock, admin_server *admin, shutdown_drain *drain, const config *c,
                  int argc, char **argv)
{
    zmq_pollitem_t items[] = {{sock, 0, ZMQ_POLLIN, 0}, {NULL, shutdown_fd(), ZMQ_POLLIN, 0}};
    double deadline = 0;
    for (;;) {
        if (reload_requested) {
            reload_requested = 0;
            reload(svc, argc, argv);
        }
        if (shutdown_requested() && deadline == 0) {
            deadline = now_s() + config_duration(c, "sanitizer_drain_timeout");
            admin_set_ready(admin, false);
            shutdown_drain_stop_accepting(drain);
            log_msg(LOG_INFO, NULL, "draining: %d stream(s) open", shutdown_drain_in_flight(drain));
        }
        if (deadline > 0 && (shutdown_drain_in_flight(drain) == 0 || now_s() > deadline)) return;
        if (zmq_poll(items, deadline > 0 ? 1 : 2, 100) < 0 && errno != EINTR) return;
        if (items[0].revents & ZMQ_POLLIN) serve_ready(svc, sock);
        sanitizer_service_expire(svc, now_s());
    }
}

int main(int argc, char **argv)
{
    log_init("sanitizer");
    int help;
    config *c = load_config(argc, argv, &help);
    if (c == NULL) return 2;
    if (help) {
        config_print_help(c, stdout);
        config_free(c);
        return 0;
    }
    config_log(c);
    struct sigaction sa = {0};
    sa.sa_handler = on_sighup;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    shutdown_install();
    shutdown_drain drain;
    shutdown_drain_init(&drain);
    metrics_registry *metrics = metrics_registry_new("sanitizer");
    sanitizer *s = build_sanitizer(c);
    sanitizer_service *svc = s ? sanitizer_service_new(s, metrics, &drain, config_duration(c, "sanitizer_stream_idle_timeout")) : NULL;
    void *ctx = zmq_ctx_new();
    void *sock = svc ? bind_socket(ctx, c) : NULL;
    admin_server *admin = sock ? admin_start((int)config_int(c, "sanitizer_admin_port"), metrics_write, metrics) : NULL;
    int rc = 1;
    if (admin) {
        admin_set_ready(admin, true);
        log_msg(LOG_INFO, NULL, "sanitizer up on %s, admin :%d", config_string(c, "sanitizer_endpoint"), admin_port(admin));
        serve(svc, sock, admin, &drain, c, argc, argv);
        log_msg(LOG_INFO, NULL, "sanitizer stopped");
        rc = 0;
    }
    admin_stop(admin);
    if (sock) zmq_close(sock);
    zmq_ctx_term(ctx);
    sanitizer_service_free(svc);
    metrics_registry_free(metrics);
    shutdown_drain_destroy(&drain);
    config_free(c);
    return rc;
}
