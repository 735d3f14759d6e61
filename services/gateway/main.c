/* main.c - citadel-gateway: wires configuration, TLS, the key store, the router link,
 * the HTTPS server and the admin listener onto one libevent loop, and drains on
 * SIGTERM (stop accepting, let in-flight generations finish within a timeout, exit).
 *
 * Every setting has a default, an environment variable and a --name=value flag;
 * --help lists them. The modules: gw_tls (certificates), gw_auth and common/apikeys
 * (who is calling), gw_policy (what roles may do), gw_admin_keys (/admin/keys),
 * gw_jwt (bearer JWTs), gw_ratelimit (requests and tokens per minute, through Redis),
 * gw_upstream (ZeroMQ to the router), gw_sanitize (ZeroMQ to the sanitizer),
 * gw_server (HTTP), gw_grpc (gRPC), gw_openai (JSON), gw_log.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "apikeys.h"
#include "gw_grpc.h"
#include "gw_jwt.h"
#include "gw_audit.h"
#include "gw_log.h"
#include "gw_sanitize.h"
#include "gw_server.h"
#include "gw_tls.h"
#include "gw_upstream.h"

/* One setting: its flag name, environment variable, default and meaning. */
typedef struct setting {
    const char *name, *env, *def, *help;
    const char *value;
} setting;

static setting settings[] = {
    {"home", "CITADEL_HOME", "./var", "state directory (tls/, keys/)", NULL},
    {"listen", "CITADEL_GATEWAY_LISTEN", "0.0.0.0", "HTTPS listen address", NULL},
    {"port", "CITADEL_GATEWAY_PORT", "8443", "HTTPS port", NULL},
    {"grpc-port", "CITADEL_GATEWAY_GRPC_PORT", "8444", "gRPC (TLS) port for citadel.v1.Inference; 0: off", NULL},
    {"tls-cert", "CITADEL_GATEWAY_TLS_CERT", "", "certificate chain (PEM); empty: self-signed under $CITADEL_HOME/tls", NULL},
    {"tls-key", "CITADEL_GATEWAY_TLS_KEY", "", "private key (PEM) of tls-cert", NULL},
    {"router", "CITADEL_ROUTER_ENDPOINT", "tcp://127.0.0.1:5555", "router frontend (ZeroMQ)", NULL},
    {"router-timeout-ms", "CITADEL_GATEWAY_ROUTER_TIMEOUT_MS", "30000", "no answer from the router within this -> 503", NULL},
    {"sanitizer", "CITADEL_GATEWAY_SANITIZER", "tcp://127.0.0.1:5557", "citadel-sanitizer (ZeroMQ): every prompt and output goes through it", NULL},
    {"sanitizer-timeout-ms", "CITADEL_GATEWAY_SANITIZER_TIMEOUT_MS", "2000", "no answer from the sanitizer within this: it is unavailable", NULL},
    {"sanitizer-fail-open", "CITADEL_GATEWAY_SANITIZER_FAIL_OPEN", "false", "sanitizer unavailable: false -> 503 (fail closed); true -> pass text unsanitized, logged and counted", NULL},
    {"deadline-ms", "CITADEL_GATEWAY_DEADLINE_MS", "600000", "a whole generation's deadline -> 504 (X-Citadel-Deadline-Ms may shorten it)", NULL},
    {"retry-after-s", "CITADEL_GATEWAY_RETRY_AFTER_S", "1", "Retry-After of the 503 when every worker's queue is full", NULL},
    {"admin-listen", "CITADEL_GATEWAY_ADMIN_LISTEN", "127.0.0.1", "admin listener address (/metrics, /healthz, /readyz)", NULL},
    {"admin-port", "CITADEL_GATEWAY_ADMIN_PORT", "9100", "admin listener port", NULL},
    {"max-body-bytes", "CITADEL_GATEWAY_MAX_BODY_BYTES", "1048576", "largest request body (413 above)", NULL},
    {"max-header-bytes", "CITADEL_GATEWAY_MAX_HEADER_BYTES", "16384", "largest request head", NULL},
    {"header-timeout-ms", "CITADEL_GATEWAY_HEADER_TIMEOUT_MS", "10000", "a request head must arrive within this", NULL},
    {"io-timeout-ms", "CITADEL_GATEWAY_IO_TIMEOUT_MS", "60000", "a stalled read or write closes the connection", NULL},
    {"max-connections", "CITADEL_GATEWAY_MAX_CONNECTIONS", "1024", "open client connections at most", NULL},
    {"models", "CITADEL_GATEWAY_MODELS", "", "comma-separated models for /v1/models until the router reports some", NULL},
    {"drain-timeout-ms", "CITADEL_GATEWAY_DRAIN_TIMEOUT_MS", "30000", "on SIGTERM, wait this long for in-flight work", NULL},
    {"policy", "CITADEL_GATEWAY_POLICY", "", "role/route policy file (see README); empty: the built-in policy", NULL},
    {"default-rpm", "CITADEL_GATEWAY_DEFAULT_RPM", "0", "requests/min for keys that set none (0: unlimited)", NULL},
    {"default-tpm", "CITADEL_GATEWAY_DEFAULT_TPM", "0", "tokens/min for keys that set none (0: unlimited)", NULL},
    {"redis", "CITADEL_GATEWAY_REDIS", "", "Redis host:port shared by the replicas for rate limits; empty: local limits only", NULL},
    {"redis-timeout-ms", "CITADEL_GATEWAY_REDIS_TIMEOUT_MS", "100", "no answer from Redis within this -> decide locally", NULL},
    {"replicas", "CITADEL_GATEWAY_REPLICAS", "1", "gateway replicas; without Redis each allows limit/replicas", NULL},
    {"jwt-hs256-secret", "CITADEL_GATEWAY_JWT_HS256_SECRET", "", "accept HS256 JWTs signed with this secret (>= 32 bytes; never logged)", NULL},
    {"jwt-rs256-public-key", "CITADEL_GATEWAY_JWT_RS256_PUBLIC_KEY", "", "accept RS256 JWTs verified with this PEM public key file", NULL},
    {"jwt-issuer", "CITADEL_GATEWAY_JWT_ISSUER", "", "required iss of JWTs", NULL},
    {"jwt-audience", "CITADEL_GATEWAY_JWT_AUDIENCE", "", "required aud of JWTs", NULL},
    {"jwt-roles-claim", "CITADEL_GATEWAY_JWT_ROLES_CLAIM", "roles", "claim (dotted path) holding the caller's roles or groups", NULL},
    {"jwt-role-map", "CITADEL_GATEWAY_JWT_ROLE_MAP", "", "claim value=role,...; empty: claim values are roles", NULL},
    {"jwt-user-claim", "CITADEL_GATEWAY_JWT_USER_CLAIM", "sub", "claim naming the user", NULL},
    {"jwt-leeway-s", "CITADEL_GATEWAY_JWT_LEEWAY_S", "30", "clock slack for exp and nbf", NULL},
    {"log-level", "CITADEL_LOG_LEVEL", "info", "debug, info, warn or error", NULL},
    {"kafka-brokers", "CITADEL_KAFKA_BROKERS", "", "Kafka for audit events (empty: $CITADEL_HOME/run/kafka.bootstrap; none: audit off)", NULL},
    {"kafka-options", "CITADEL_KAFKA_OPTIONS", "", "more librdkafka settings, name=value,name=value", NULL},
    {"audit-queue-max", "CITADEL_GATEWAY_AUDIT_QUEUE_MAX", "100000", "audit events held during a broker outage (beyond: lost, counted)", NULL},
};
#define N_SETTINGS (sizeof settings / sizeof settings[0])

static const char *get(const char *name)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (strcmp(settings[i].name, name) == 0) return settings[i].value;
    return "";
}

/* Parses a setting as an integer in [lo, hi]; returns 0 or -1 with a message. */
static int get_int(const char *name, long lo, long hi, long *out)
{
    const char *s = get(name);
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "citadel-gateway: %s must be an integer in [%ld, %ld], got '%s'\n", name, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static void usage(void)
{
    printf("usage: citadel-gateway [--name=value ...]\n\n"
           "The Citadel gateway: HTTPS with the OpenAI-compatible API, in front of the router.\n\n");
    for (size_t i = 0; i < N_SETTINGS; i++)
        printf("  --%-20s %-36s %s (default: %s)\n", settings[i].name, settings[i].env,
               settings[i].help, settings[i].def[0] ? settings[i].def : "\"\"");
}

/* Defaults, then the environment, then flags. Returns 0, 1 for --help, -1 on error. */
static int load_settings(int argc, char **argv)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const char *e = getenv(settings[i].env);
        settings[i].value = e ? e : settings[i].def;
    }
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--help") == 0 || strcmp(argv[a], "-h") == 0) return 1;
        const char *eq = strchr(argv[a], '=');
        bool found = false;
        for (size_t i = 0; i < N_SETTINGS && eq && strncmp(argv[a], "--", 2) == 0; i++) {
            if (strlen(settings[i].name) == (size_t)(eq - argv[a] - 2) &&
                strncmp(argv[a] + 2, settings[i].name, strlen(settings[i].name)) == 0) {
                settings[i].value = eq + 1;
                found = true;
            }
        }
        if (!found) {
            fprintf(stderr, "citadel-gateway: unknown argument '%s' (see --help)\n", argv[a]);
            return -1;
        }
    }
    return 0;
}

/* ---- state and signals -------------------------------------------------------------- */

typedef struct gateway {
    struct event_base *base;
    gw_server *server;
    gw_grpc *grpc;
    gw_upstream *up;
    gw_sanitizer *sanitizer;
    struct event *drain_timer;
    struct timespec drain_started;
    long drain_timeout_ms;
    bool draining;
} gateway;

static bool is_ready(void *arg)
{
    gateway *g = arg;
    return !g->draining;
}

static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    gateway *g = arg;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double ms = (double)(now.tv_sec - g->drain_started.tv_sec) * 1e3 +
                (double)(now.tv_nsec - g->drain_started.tv_nsec) / 1e6;
    size_t left = gw_upstream_in_flight(g->up);
    if (left == 0 || ms >= (double)g->drain_timeout_ms) {
        gw_log(left ? GW_LOG_WARN : GW_LOG_INFO, NULL, "drained: %zu generations left, stopping", left);
        event_base_loopexit(g->base, NULL);
        return;
    }
    struct timeval tv = {0, 100000};
    evtimer_add(g->drain_timer, &tv);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    gateway *g = arg;
    if (g->draining) {
        gw_log(GW_LOG_WARN, NULL, "second signal %d: stopping now", (int)sig);
        event_base_loopexit(g->base, NULL);
        return;
    }
    g->draining = true;
    gw_log(GW_LOG_INFO, NULL, "signal %d: draining (%zu generations in flight)", (int)sig,
           gw_upstream_in_flight(g->up));
    gw_server_stop_accepting(g->server);
    gw_grpc_stop_accepting(g->grpc);
    clock_gettime(CLOCK_MONOTONIC, &g->drain_started);
    on_drain_tick(-1, 0, g);
}

/* ---- setup ---------------------------------------------------------------------------- */

/* The TLS context; the certificate and key paths (for gRPC) into cert and key. */
static SSL_CTX *setup_tls(const char *home, char cert[4096], char key[4096])
{
    char err[512], dir[4096];
    snprintf(cert, 4096, "%s", get("tls-cert"));
    snprintf(key, 4096, "%s", get("tls-key"));
    if (cert[0] == '\0' || key[0] == '\0') {
        bool created;
        snprintf(dir, sizeof dir, "%s/tls", home);
        if (gw_tls_ensure_self_signed(dir, cert, key, 4096, &created, err, sizeof err) != 0) {
            gw_log(GW_LOG_ERROR, NULL, "TLS: %s", err);
            return NULL;
        }
        if (created) gw_log(GW_LOG_INFO, NULL, "made a self-signed certificate: %s", cert);
    }
    SSL_CTX *ctx = gw_tls_server_context(cert, key, err, sizeof err);
    if (ctx == NULL) gw_log(GW_LOG_ERROR, NULL, "TLS: %s", err);
    return ctx;
}

static int setup_keys(const char *home, apikey_store *keys)
{
    char dir[4096], err[512];
    bool created;
    snprintf(dir, sizeof dir, "%s/keys", home);
    if (apikeys_bootstrap(keys, dir, &created, err, sizeof err) != 0) {
        gw_log(GW_LOG_ERROR, NULL, "keys: %s", err);
        return -1;
    }
    if (created) gw_log(GW_LOG_INFO, NULL, "made the first admin key: %s/admin.key", dir);
    gw_log(GW_LOG_INFO, NULL, "%zu API keys loaded", keys->n);
    return 0;
}

/* The JWT verifier when a JWT key is configured (*out NULL otherwise); 0 or -1. */
static int setup_jwt(gw_jwt **out)
{
    long leeway;
    *out = NULL;
    if (get_int("jwt-leeway-s", 0, 3600, &leeway)) return -1;
    if (!get("jwt-hs256-secret")[0] && !get("jwt-rs256-public-key")[0]) return 0;
    gw_jwt_config cfg = {get("jwt-hs256-secret"), get("jwt-rs256-public-key"), get("jwt-issuer"),
                         get("jwt-audience"), get("jwt-roles-claim"), get("jwt-role-map"),
                         get("jwt-user-claim"), (int)leeway};
    char err[512];
    *out = gw_jwt_new(&cfg, err, sizeof err);
    if (*out == NULL) {
        gw_log(GW_LOG_ERROR, NULL, "JWT: %s", err);
        return -1;
    }
    gw_log(GW_LOG_INFO, NULL, "JWT bearer tokens accepted (%s%s%s), issuer %s, audience %s",
           get("jwt-hs256-secret")[0] ? "HS256" : "", get("jwt-hs256-secret")[0] && get("jwt-rs256-public-key")[0] ? ", " : "",
           get("jwt-rs256-public-key")[0] ? "RS256" : "", get("jwt-issuer"), get("jwt-audience"));
    return 0;
}

/* Authentication and the role policy (see gw_server.h's gw_access). */
static int setup_access(const char *home, gw_access *access, apikey_store *keys, gw_jwt **jwt)
{
    long rpm, tpm;
    if (get_int("default-rpm", 0, 1000000000, &rpm) || get_int("default-tpm", 0, 1000000000000L, &tpm))
        return -1;
    if (setup_keys(home, keys) != 0 || setup_jwt(jwt) != 0) return -1;
    access->auth = (gw_auth){.keys = keys, .jwt = *jwt, .default_rpm = rpm, .default_tpm = tpm};
    char err[600];
    if (gw_policy_load(&access->policy, get("policy"), err, sizeof err) != 0) {
        gw_log(GW_LOG_ERROR, NULL, "%s", err);
        return -1;
    }
    gw_log(GW_LOG_INFO, NULL, "policy: %zu routes, %zu roles (%s)", access->policy.n_routes,
           access->policy.n_roles, get("policy")[0] ? get("policy") : "built-in");
    return 0;
}

/* The rate limiter, on base (it talks to Redis from the event loop). */
static int setup_limits(struct event_base *base, gw_access *access)
{
    long timeout_ms, replicas;
    if (get_int("redis-timeout-ms", 1, 60000, &timeout_ms) || get_int("replicas", 1, 10000, &replicas)) return -1;
    gw_ratelimit_config cfg = {get("redis"), (int)timeout_ms, (int)replicas};
    char err[512];
    access->limits = gw_ratelimit_new(base, &cfg, err, sizeof err);
    if (access->limits == NULL) {
        gw_log(GW_LOG_ERROR, NULL, "rate limits: %s", err);
        return -1;
    }
    if (!get("redis")[0]) gw_log(GW_LOG_INFO, NULL, "rate limits: local to this gateway (no Redis configured)");
    return 0;
}

/* Splits the comma-separated model list in place into at most cap names. */
static size_t split_models(char *s, const char **out, size_t cap)
{
    size_t n = 0;
    for (char *tok = strtok(s, ","); tok && n < cap; tok = strtok(NULL, ","))
        if (*tok) out[n++] = tok;
    return n;
}

static int run(void)
{
    long port, admin_port, max_body, max_header, header_ms, io_ms, max_conns, router_ms, deadline_ms, drain_ms,
        retry_after_s, grpc_port, audit_queue, sanitizer_ms;
    if (get_int("port", 1, 65535, &port) || get_int("admin-port", 0, 65535, &admin_port) ||
        get_int("grpc-port", 0, 65535, &grpc_port) ||
        get_int("max-body-bytes", 1024, 1L << 30, &max_body) ||
        get_int("max-header-bytes", 1024, 1L << 20, &max_header) ||
        get_int("header-timeout-ms", 100, 3600000, &header_ms) ||
        get_int("io-timeout-ms", 100, 86400000, &io_ms) ||
        get_int("max-connections", 1, 1000000, &max_conns) ||
        get_int("router-timeout-ms", 10, 86400000, &router_ms) ||
        get_int("deadline-ms", 10, 86400000, &deadline_ms) ||
        get_int("retry-after-s", 1, 86400, &retry_after_s) ||
        get_int("drain-timeout-ms", 0, 86400000, &drain_ms) ||
        get_int("audit-queue-max", 1, 10000000, &audit_queue) ||
        get_int("sanitizer-timeout-ms", 10, 600000, &sanitizer_ms))
        return 2;
    const char *fail_open = get("sanitizer-fail-open");
    if (strcmp(fail_open, "true") != 0 && strcmp(fail_open, "false") != 0) {
        fprintf(stderr, "citadel-gateway: sanitizer-fail-open must be true or false, got '%s'\n", fail_open);
        return 2;
    }
    enum gw_log_level level;
    if (gw_log_parse_level(get("log-level"), &level) != 0) {
        fprintf(stderr, "citadel-gateway: log-level must be debug, info, warn or error\n");
        return 2;
    }
    gw_log_set_level(level);
    signal(SIGPIPE, SIG_IGN);   /* a client gone mid-write must not kill the process */

    const char *home = get("home");
    if (mkdir(home, 0755) != 0 && errno != EEXIST) {
        gw_log(GW_LOG_ERROR, NULL, "cannot create %s: %s", home, strerror(errno));
        return 1;
    }
    int rc = 1;
    char err[512];
    char models_buf[4096];
    const char *models[64];
    snprintf(models_buf, sizeof models_buf, "%s", get("models"));
    size_t n_models = split_models(models_buf, models, 64);
    apikey_store keys = {0};
    gw_jwt *jwt = NULL;
    gw_access access = {0};
    gateway g = {.drain_timeout_ms = drain_ms};
    char cert_path[4096], key_path[4096];
    SSL_CTX *ctx = setup_tls(home, cert_path, key_path);
    if (ctx == NULL || setup_access(home, &access, &keys, &jwt) != 0) goto out;
    if (gw_audit_init(get("kafka-brokers"), get("kafka-options"), (int)audit_queue, err, sizeof err) != 0) {
        gw_log(GW_LOG_ERROR, NULL, "audit: %s", err);
        goto out;
    }
    g.base = event_base_new();
    if (g.base == NULL || setup_limits(g.base, &access) != 0) goto out;
    gw_upstream_config ucfg = {get("router"), (int)router_ms, (int)deadline_ms, (int)retry_after_s};
    g.up = gw_upstream_new(g.base, &ucfg, err, sizeof err);
    if (g.up == NULL) {
        gw_log(GW_LOG_ERROR, NULL, "%s", err);
        goto out;
    }
    gw_sanitize_config zcfg = {get("sanitizer"), (int)sanitizer_ms, strcmp(fail_open, "true") == 0};
    g.sanitizer = gw_sanitizer_new(g.base, &zcfg, err, sizeof err);
    if (g.sanitizer == NULL) {
        gw_log(GW_LOG_ERROR, NULL, "%s", err);
        goto out;
    }
    if (zcfg.fail_open)
        gw_log(GW_LOG_WARN, NULL, "sanitizer-fail-open is on: while the sanitizer is unavailable, prompts and "
                                  "output pass UNSANITIZED");
    gw_server_config scfg = {get("listen"), (int)port, (size_t)max_body, (size_t)max_header,
                             (int)header_ms, (int)io_ms, (int)max_conns, models, n_models};
    g.server = gw_server_start(g.base, &scfg, ctx, &access, g.up, err, sizeof err);
    if (g.server == NULL) {
        gw_log(GW_LOG_ERROR, NULL, "%s", err);
        goto out;
    }
    gw_server_set_sanitizer(g.server, g.sanitizer);
    if (grpc_port > 0) {
        gw_grpc_config gcfg = {get("listen"), (int)grpc_port, cert_path, key_path};
        g.grpc = gw_grpc_start(g.base, &gcfg, &access, g.up, err, sizeof err);
        if (g.grpc == NULL) {
            gw_log(GW_LOG_ERROR, NULL, "%s", err);
            goto out;
        }
        gw_grpc_set_sanitizer(g.grpc, g.sanitizer);
    }
    if (admin_port > 0 &&
        gw_admin_start(g.base, get("admin-listen"), (int)admin_port, is_ready, &g, err, sizeof err) != 0) {
        gw_log(GW_LOG_ERROR, NULL, "%s", err);
        goto out;
    }
    g.drain_timer = evtimer_new(g.base, on_drain_tick, &g);
    struct event *sigterm = evsignal_new(g.base, SIGTERM, on_signal, &g);
    struct event *sigint = evsignal_new(g.base, SIGINT, on_signal, &g);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    gw_log(GW_LOG_INFO, NULL, "serving https://%s:%ld, gRPC :%ld (router %s, sanitizer %s, admin :%ld)", get("listen"),
           port, grpc_port, get("router"), get("sanitizer"), admin_port);
    event_base_dispatch(g.base);
    event_free(sigterm);
    event_free(sigint);
    rc = 0;
out:
    gw_admin_stop();
    gw_server_free(g.server);
    gw_grpc_free(g.grpc);   /* before the upstream: it cancels its generations there */
    gw_upstream_free(g.up);
    gw_ratelimit_free(access.limits);
    gw_sanitizer_free(g.sanitizer);
    if (g.drain_timer) event_free(g.drain_timer);
    if (g.base) event_base_free(g.base);
    gw_policy_free(&access.policy);
    gw_jwt_free(jwt);
    apikeys_free(&keys);
    SSL_CTX_free(ctx);
    gw_audit_shutdown((int)drain_ms);
    gw_log(GW_LOG_INFO, NULL, "stopped");
    return rc;
}

int main(int argc, char **argv)
{
    int r = load_settings(argc, argv);
    if (r == 1) {
        usage();
        return 0;
    }
    if (r < 0) return 2;
    return run();
}
