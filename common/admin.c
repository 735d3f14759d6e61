/* admin.c - the admin HTTP listener: evhttp on a private event base and thread
 * (see admin.h). */
#include "admin.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>

#include "log.h"

/* A metrics callback and its argument. */
typedef struct metrics_source {
    admin_metrics_fn fn;
    void *user;
} metrics_source;

struct admin_server {
    struct event_base *base;       /* owned by the admin thread while it runs */
    struct evhttp *http;
    pthread_t thread;
    int port;                      /* bound port */
    atomic_bool ready;             /* what /readyz says */
    pthread_mutex_t sources_lock;  /* admin_add_metrics may race a scrape */
    metrics_source sources[ADMIN_MAX_SOURCES];
    int n_sources;
};

static void set_err(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errsz, const char *fmt, ...)
{
    if (err == NULL || errsz == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

/* ---- handlers ----------------------------------------------------------------------- */

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *content_type,
                       const char *body, size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", content_type);
    evhttp_add_header(h, "Cache-Control", "no-store");
    struct evbuffer *buf = evbuffer_new();
    if (buf == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add(buf, body, len);
    evhttp_send_reply(req, code, reason, buf);
    evbuffer_free(buf);
}

static void reply_plain(struct evhttp_request *req, int code, const char *reason, const char *body)
{
    reply_text(req, code, reason, "text/plain; charset=utf-8", body, strlen(body));
}

/* Every source's text, concatenated; a source that fails to write just adds less. */
static void serve_metrics(admin_server *a, struct evhttp_request *req)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL) {
        reply_plain(req, 500, "Internal Server Error", "out of memory\n");
        return;
    }
    pthread_mutex_lock(&a->sources_lock);
    for (int i = 0; i < a->n_sources; i++)
        a->sources[i].fn(f, a->sources[i].user);
    pthread_mutex_unlock(&a->sources_lock);
    fclose(f);
    reply_text(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

static void handle(struct evhttp_request *req, void *arg)
{
    admin_server *a = arg;
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (path == NULL)
        path = "";
    bool known = !strcmp(path, "/metrics") || !strcmp(path, "/healthz") || !strcmp(path, "/readyz");
    if (!known) {
        reply_plain(req, 404, "Not Found", "not found: try /metrics, /healthz or /readyz\n");
    } else if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply_plain(req, 405, "Method Not Allowed", "method not allowed\n");
    } else if (!strcmp(path, "/healthz")) {
        reply_plain(req, 200, "OK", "ok\n");
    } else if (!strcmp(path, "/readyz")) {
        if (atomic_load(&a->ready))
            reply_plain(req, 200, "OK", "ready\n");
        else
            reply_plain(req, 503, "Service Unavailable", "not ready\n");
    } else {
        serve_metrics(a, req);
    }
}

/* ---- lifecycle ---------------------------------------------------------------------- */

static void *run(void *arg)
{
    admin_server *a = arg;
    event_base_dispatch(a->base);
    return NULL;
}

/* evthread_use_pthreads must precede the first event_base: it makes
 * event_base_loopbreak from another thread wake the loop. */
static pthread_once_t threads_once = PTHREAD_ONCE_INIT;
static int threads_rc;
static void use_pthreads(void) { threads_rc = evthread_use_pthreads(); }

static void destroy(admin_server *a)
{
    if (a->http) evhttp_free(a->http);
    if (a->base) event_base_free(a->base);
    pthread_mutex_destroy(&a->sources_lock);
    free(a);
}

/* Binds the listener; the bound port into a->port. */
static int bind_listener(admin_server *a, const char *host, int port, char *err, size_t errsz)
{
    struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(a->http, host, (ev_uint16_t)port);
    if (bound == NULL) {
        set_err(err, errsz, "admin listener: cannot bind %s:%d (in use, or not an address here)", host, port);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    evutil_socket_t fd = evhttp_bound_socket_get_fd(bound);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        set_err(err, errsz, "admin listener: getsockname failed");
        return -1;
    }
    a->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

/* Starts the thread with every signal blocked (see admin.h for why). */
static int start_thread(admin_server *a)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&a->thread, NULL, run, a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

admin_server *admin_start_at(const char *host, int port, admin_metrics_fn write_metrics, void *user,
                             char *err, size_t errsz)
{
    if (port < 0 || port > 65535) {
        set_err(err, errsz, "admin listener: port %d out of range", port);
        return NULL;
    }
    pthread_once(&threads_once, use_pthreads);
    admin_server *a = calloc(1, sizeof *a);
    if (threads_rc != 0 || a == NULL) {
        set_err(err, errsz, "admin listener: cannot set up libevent threads");
        free(a);
        return NULL;
    }
    pthread_mutex_init(&a->sources_lock, NULL);
    if (write_metrics)
        a->sources[a->n_sources++] = (metrics_source){write_metrics, user};
    a->base = event_base_new();
    a->http = a->base ? evhttp_new(a->base) : NULL;
    if (a->http == NULL) {
        set_err(err, errsz, "admin listener: cannot create the event base");
        destroy(a);
        return NULL;
    }
    /* A slow or stuck client must not hold the listener; nothing here needs a body. */
    evhttp_set_timeout(a->http, 10);
    evhttp_set_max_headers_size(a->http, 16384);
    evhttp_set_max_body_size(a->http, 4096);
    evhttp_set_gencb(a->http, handle, a);
    if (bind_listener(a, host ? host : "0.0.0.0", port, err, errsz) != 0) {
        destroy(a);
        return NULL;
    }
    if (start_thread(a) != 0) {
        set_err(err, errsz, "admin listener: cannot start its thread");
        destroy(a);
        return NULL;
    }
    return a;
}

admin_server *admin_start(int port, admin_metrics_fn write_metrics, void *user)
{
    char err[256];
    admin_server *a = admin_start_at("0.0.0.0", port, write_metrics, user, err, sizeof err);
    if (a == NULL)
        log_msg(LOG_ERROR, NULL, "%s", err);
    return a;
}

int admin_add_metrics(admin_server *a, admin_metrics_fn write_metrics, void *user)
{
    if (a == NULL || write_metrics == NULL)
        return -1;
    pthread_mutex_lock(&a->sources_lock);
    int rc = -1;
    if (a->n_sources < ADMIN_MAX_SOURCES) {
        a->sources[a->n_sources++] = (metrics_source){write_metrics, user};
        rc = 0;
    }
    pthread_mutex_unlock(&a->sources_lock);
    return rc;
}

void admin_set_ready(admin_server *a, bool ready)
{
    if (a)
        atomic_store(&a->ready, ready);
}

bool admin_is_ready(const admin_server *a)
{
    return a ? atomic_load(&((admin_server *)a)->ready) : false;
}

int admin_port(const admin_server *a) { return a ? a->port : 0; }

void admin_stop(admin_server *a)
{
    if (a == NULL)
        return;
    event_base_loopbreak(a->base);
    pthread_join(a->thread, NULL);
    destroy(a);
}
