/* gw_server.c - the gateway's HTTPS server (see gw_server.h for its contract).
 *
 * Three lifetimes meet here:
 *   gw_conn  one TLS connection. Made in make_bev (evhttp's bufferevent callback) and
 *            freed by OpenSSL's ex_data free hook when the connection's SSL is freed,
 *            so the connection count and the header deadline can never outlive or
 *            miss a connection, whichever way evhttp closes it.
 *   gw_call  one generation, from a POST to the last byte of its response. It owns
 *            the parsed request and the text gathered so far, and it ends either
 *            with the router's final answer or when the client goes away (then a
 *            Cancel goes to the router).
 *   evhttp_request  libevent's; valid while evhttp has it. When the connection fails
 *            while we still answer, evhttp detaches the request and leaves it to us.
 */
#include "gw_server.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <openssl/rand.h>

#include "gw_admin_keys.h"
#include "gw_audit.h"
#include "gw_log.h"
#include "gw_sanitize.h"

typedef struct gw_conn gw_conn;
typedef struct gw_waiting gw_waiting;

struct gw_server {
    struct event_base *base;
    gw_server_config cfg;
    SSL_CTX *ssl_ctx;
    gw_access *access;
    gw_upstream *up;
    gw_sanitizer *sanitizer;   /* every prompt and every output goes through it */
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    bool accepting;            /* false once draining: never re-enable the listener */
    bool listener_paused;      /* paused by the connection cap */
    gw_conn *conns;            /* every live connection, to detach them on free */
    gw_waiting *waiting;       /* generations waiting for the rate limiter (Redis) */
    gw_server_stats stats;
};

/* One TLS connection; see the file comment for who frees it. */
struct gw_conn {
    gw_server *srv;            /* NULL after the server is gone */
    struct bufferevent *bev;
    struct event *header_timer;
    gw_conn *prev, *next;
};

/* One generation in progress. */
typedef struct gw_call {
    gw_server *srv;
    struct evhttp_request *req;        /* NULL once the client is gone */
    struct evhttp_connection *evcon;
    struct event *closed_ev;           /* peer hung up (EV_CLOSED), if the backend can tell */
    gw_request body;
    char request_id[40];
    char response_id[64];
    gw_principal who;                  /* the caller: key id, user, roles (for audit) */
    gw_response_meta meta;
    bool headers_sent;                 /* streaming: the 200 and SSE headers went out */
    struct evbuffer *text;             /* non-streamed: the answer so far */
    gw_logprobs_acc *logprobs;         /* non-streamed with logprobs */
    gw_usage usage;
    struct timespec started;
    bool first_token_seen;
    gw_audit_record audit;             /* emitted by call_end */
    gw_output_filter *out;             /* the router's answers go through it to the client */
    gw_findings findings;              /* what the sanitizer found (types, counts) */
} gw_call;

/* The audit record of the request being admitted (NULL outside handle_request and
 * on_admission): every reject() on the way emits it with its status, and a call takes
 * it over. Single-threaded loop, so one at a time. */
static gw_audit_record *admitting;

/* A generation whose rate-limit answer is still to come from Redis (a few ms at most:
 * the limiter answers locally after its timeout). evhttp does not read a connection
 * while its request is being answered, so the request stays valid until we reply. */
struct gw_waiting {
    gw_server *srv;
    struct evhttp_request *req;
    enum gw_kind kind;
    gw_principal who;
    char request_id[40];
    gw_ratelimit_ticket *ticket;
    gw_waiting *prev, *next;
    gw_audit_record audit;
};

static int ssl_conn_index = -1;

static double seconds_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

/* ---- responses ---------------------------------------------------------------------- */

static void add_common_headers(struct evhttp_request *req, const char *content_type)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", content_type);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "Strict-Transport-Security", "max-age=63072000");
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status >= 500 ? "Internal Server Error" : "Error";
    }
}

/* Sends body (JSON) with status; close asks for the connection to end afterwards. */
static void send_json(struct evhttp_request *req, int status, const char *body, size_t len,
                      bool close)
{
    add_common_headers(req, "application/json");
    if (close) evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    struct evbuffer *b = evbuffer_new();
    if (b != NULL && body != NULL) evbuffer_add(b, body, len);
    evhttp_send_reply(req, status, reason_phrase(status), b);
    if (b != NULL) evbuffer_free(b);
}

/* Sends e as OpenAI's error body; logs and counts it. */
static void send_error(struct evhttp_request *req, const gw_error *e, const char *request_id,
                       bool close)
{
    size_t len = 0;
    char *body = gw_error_body(e, &len);
    gw_log(e->status >= 500 ? GW_LOG_WARN : GW_LOG_INFO, request_id, "request failed: %d %s",
           e->status, e->message);
    if (e->status == 401) evhttp_add_header(evhttp_request_get_output_headers(req),
                                            "WWW-Authenticate", "Bearer");
    if (e->retry_after_s > 0) {
        char secs[16];
        snprintf(secs, sizeof secs, "%d", e->retry_after_s);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", secs);
    }
    send_json(req, e->status, body, len, close);
    free(body);
}

/* An error before any call exists: sent, logged and counted. */
static void reject(struct evhttp_request *req, const gw_error *e, const char *request_id, bool close)
{
    send_error(req, e, request_id, close);
    gw_metric_request(e->status, 0);
    gw_audit_emit(admitting, e->status);
}

/* ---- connections ---------------------------------------------------------------------- */

static void arm_header_deadline(gw_conn *c)
{
    if (c->srv == NULL || c->header_timer == NULL) return;
    int ms = c->srv->cfg.header_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->header_timer, &tv);
}

/* The request head did not arrive in time: drop the connection. evhttp's connection is
 * the bufferevent's callback argument (it registers itself there). */
static void on_header_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    gw_conn *c = arg;
    bufferevent_data_cb rd, wr;
    bufferevent_event_cb ev;
    void *cbarg = NULL;
    bufferevent_getcb(c->bev, &rd, &wr, &ev, &cbarg);
    gw_log(GW_LOG_INFO, NULL, "connection dropped: request headers too slow");
    gw_metric_error("header_timeout");
    if (cbarg != NULL) evhttp_connection_free(cbarg);   /* frees c via the SSL hook */
}

static void update_listener(gw_server *s)
{
    struct evconnlistener *l = s->bound ? evhttp_bound_socket_get_listener(s->bound) : NULL;
    if (l == NULL || !s->accepting) return;
    bool full = s->stats.connections_open >= (unsigned long)s->cfg.max_connections;
    if (full && !s->listener_paused) {
        evconnlistener_disable(l);
        s->listener_paused = true;
        gw_log(GW_LOG_WARN, NULL, "connection cap reached: not accepting");
    } else if (!full && s->listener_paused) {
        evconnlistener_enable(l);
        s->listener_paused = false;
    }
}

/* OpenSSL calls this when a connection's SSL is freed, however evhttp got there. */
static void conn_free_hook(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                           void *argp)
{
    (void)parent; (void)ad; (void)idx; (void)argl; (void)argp;
    gw_conn *c = ptr;
    if (c == NULL) return;
    if (c->header_timer) event_free(c->header_timer);
    gw_server *s = c->srv;
    if (s != NULL) {
        if (c->prev) c->prev->next = c->next;
        else s->conns = c->next;
        if (c->next) c->next->prev = c->prev;
        s->stats.connections_open--;
        gw_metric_connections(s->stats.connections_open);
        update_listener(s);
    }
    free(c);
}

/* evhttp asks for each accepted connection's bufferevent: a TLS one, with our gw_conn
 * hung on the SSL. Should this fail the server must not fall back to plain HTTP, which
 * evhttp would do for a NULL return: we return a plain bufferevent that handle_request
 * recognises (no SSL) and closes. */
static struct bufferevent *make_bev(struct event_base *base, void *arg)
{
    gw_server *s = arg;
    SSL *ssl = SSL_new(s->ssl_ctx);
    gw_conn *c = calloc(1, sizeof *c);
    if (ssl == NULL || c == NULL) {
        free(c);
        SSL_free(ssl);
        gw_log(GW_LOG_ERROR, NULL, "out of memory accepting a connection");
        return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    struct bufferevent *bev = bufferevent_openssl_socket_new(base, -1, ssl,
        BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (bev == NULL) {
        free(c);
        SSL_free(ssl);
        return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    c->srv = s;
    c->bev = bev;
    c->header_timer = evtimer_new(base, on_header_deadline, c);
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    SSL_set_ex_data(ssl, ssl_conn_index, c);
    s->stats.connections_open++;
    gw_metric_connections(s->stats.connections_open);
    update_listener(s);
    arm_header_deadline(c);
    return bev;
}

static gw_conn *conn_of(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    if (evcon == NULL) return NULL;
    SSL *ssl = bufferevent_openssl_get_ssl(evhttp_connection_get_bufferevent(evcon));
    return ssl ? SSL_get_ex_data(ssl, ssl_conn_index) : NULL;
}

/* After a response is fully written the connection may carry the next request: its
 * head gets the same deadline. */
static void on_response_complete(struct evhttp_request *req, void *arg)
{
    (void)req;
    gw_conn *c = arg;
    arm_header_deadline(c);
}

/* ---- request checks --------------------------------------------------------------------- */

/* Framing that evhttp would accept but that proxies may read differently (request
 * smuggling): Content-Length with Transfer-Encoding, several Content-Lengths,
 * a Transfer-Encoding other than plain "chunked". evhttp picks the first header and
 * carries on, so these are refused here, and the connection is closed after the 400. */
static int check_framing(struct evhttp_request *req, gw_error *e)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    int n_cl = 0, n_te = 0;
    const char *te = NULL;
    for (struct evkeyval *kv = h->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        if (strcasecmp(kv->key, "Content-Length") == 0) n_cl++;
        if (strcasecmp(kv->key, "Transfer-Encoding") == 0) { n_te++; te = kv->value; }
    }
    if (n_cl > 0 && n_te > 0) {
        gw_error_set(e, 400, "invalid_request_error", NULL, "bad_framing",
                     "a request may not carry both Content-Length and Transfer-Encoding");
        return -1;
    }
    if (n_cl > 1) {
        gw_error_set(e, 400, "invalid_request_error", NULL, "bad_framing",
                     "a request may carry only one Content-Length");
        return -1;
    }
    if (n_te > 1 || (te != NULL && strcasecmp(te, "chunked") != 0)) {
        gw_error_set(e, 400, "invalid_request_error", NULL, "bad_framing",
                     "only 'Transfer-Encoding: chunked' is supported");
        return -1;
    }
    return 0;
}

/* Authenticates the request's "Authorization: Bearer …". 0 with *who, or -1 with e. */
static int authenticate(gw_server *s, struct evhttp_request *req, gw_principal *who, gw_error *e)
{
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    return gw_auth_bearer(&s->access->auth, auth, who, e);
}

static void new_request_id(char *out, size_t n)
{
    unsigned char raw[12];
    if (RAND_bytes(raw, sizeof raw) != 1) memset(raw, 0, sizeof raw);
    int o = snprintf(out, n, "req-");
    for (size_t i = 0; i < sizeof raw && (size_t)o + 2 < n; i++)
        o += snprintf(out + o, n - (size_t)o, "%02x", raw[i]);
}

/* ---- calls ------------------------------------------------------------------------------ */

static void call_free(gw_call *c)
{
    gw_sanitize_prompt_cancel(c->srv->sanitizer, c->request_id);
    gw_output_filter_free(c->out);
    if (c->closed_ev) event_free(c->closed_ev);
    if (c->text) evbuffer_free(c->text);
    gw_logprobs_acc_free(c->logprobs);
    gw_request_free(&c->body);
    if (c->srv) c->srv->stats.requests_in_flight--;
    gw_metric_in_flight(c->srv ? c->srv->stats.requests_in_flight : 0);
    free(c);
}

/* Called before the last byte of a response is handed to evhttp, which may then free
 * the connection at once (HTTP/1.0, Connection: close): from here on a closing
 * connection is no business of this call. */
static void call_detach(gw_call *c)
{
    if (c->evcon != NULL) evhttp_connection_set_closecb(c->evcon, NULL, NULL);
    c->evcon = NULL;
    if (c->closed_ev) event_free(c->closed_ev);
    c->closed_ev = NULL;
}

/* The call is over: count it and free it. */
static void call_end(gw_call *c, int status)
{
    c->audit.prompt_tokens = c->usage.prompt_tokens;
    c->audit.completion_tokens = c->usage.completion_tokens;
    for (int k = 0; k < SANITIZE_FINDING_COUNT; k++)   /* the sanitizer's findings: types and counts */
        if (c->findings.prompt[k] + c->findings.output[k])
            gw_audit_add_finding(&c->audit, sanitize_finding_name(k), c->findings.prompt[k] + c->findings.output[k]);
    gw_audit_emit(&c->audit, status);
    if (c->srv) gw_ratelimit_charge(c->srv->access->limits, &c->who,
                                    c->usage.prompt_tokens + c->usage.completion_tokens);
    char findings[256];
    gw_findings_format(&c->findings, findings, sizeof findings);
    gw_metric_request(status, seconds_since(&c->started));
    gw_log(GW_LOG_INFO, c->request_id, "request done: status %d, %lld completion tokens, %.3f s, findings %s, "
           "sanitizer wait %.3f ms", status, (long long)c->usage.completion_tokens, seconds_since(&c->started),
           findings, c->findings.wait_s * 1e3);
    call_free(c);
}

/* The client went away before the answer was complete: cancel the generation. Called
 * by evhttp when the connection closes, and by on_peer_closed. */
static void on_client_gone(struct evhttp_connection *evcon, void *arg)
{
    gw_call *c = arg;
    (void)evcon;
    gw_upstream_cancel(c->srv->up, c->request_id);
    gw_log(GW_LOG_INFO, c->request_id, "client disconnected: generation cancelled");
    gw_metric_error("client_disconnect");
    /* A request evhttp detached from the failed connection is ours to free. */
    if (c->req != NULL && evhttp_request_get_connection(c->req) == NULL)
        evhttp_request_free(c->req);
    c->req = NULL;
    c->evcon = NULL;
    call_end(c, 499);
}

/* EV_CLOSED: the peer hung up while we were still working (evhttp does not read during
 * a response, so it would only notice at the next write). Freeing the connection runs
 * on_client_gone through the close callback. */
static void on_peer_closed(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    gw_call *c = arg;
    if (c->evcon != NULL) evhttp_connection_free(c->evcon);
}

static void write_sse(gw_call *c, const char *data, size_t len)
{
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) return;
    evbuffer_add(b, data, len);
    evhttp_send_reply_chunk(c->req, b);
    evbuffer_free(b);
}

/* x-citadel-cache: hit, miss or bypass, as the router said (none without a cache). */
static void add_cache_header(gw_call *c)
{
    if (c->audit.cache[0])
        evhttp_add_header(evhttp_request_get_output_headers(c->req), "x-citadel-cache", c->audit.cache);
}

static void start_stream(gw_call *c)
{
    add_cache_header(c);
    add_common_headers(c->req, "text/event-stream");
    evhttp_add_header(evhttp_request_get_output_headers(c->req), "X-Accel-Buffering", "no");
    evhttp_send_reply_start(c->req, 200, "OK");
    c->headers_sent = true;
}

static void finish_stream(gw_call *c)
{
    if (c->meta.include_usage) {
        size_t n;
        char *u = gw_sse_usage_chunk(&c->meta, &c->usage, &n);
        if (u) write_sse(c, u, n);
        free(u);
    }
    write_sse(c, GW_SSE_DONE, strlen(GW_SSE_DONE));
    evhttp_send_reply_end(c->req);
}

static void on_stream_event(gw_call *c, const gw_upstream_event *ev)
{
    if (ev->kind == GW_UP_ERROR) {
        call_detach(c);
        if (!c->headers_sent) {
            send_error(c->req, &ev->error, c->request_id, false);
            call_end(c, ev->error.status);
            return;
        }
        size_t n;
        char *s = gw_sse_error(&ev->error, &n);
        if (s) write_sse(c, s, n);
        free(s);
        gw_log(GW_LOG_WARN, c->request_id, "stream failed: %s", ev->error.message);
        write_sse(c, GW_SSE_DONE, strlen(GW_SSE_DONE));
        evhttp_send_reply_end(c->req);
        call_end(c, ev->error.status);
        return;
    }
    bool first = !c->headers_sent;
    if (first) start_stream(c);
    if (ev->text_len > 0 || first || ev->n_logprobs > 0 || ev->finish_reason) {
        size_t n;
        char *s = gw_sse_chunk(&c->meta, first, ev->text, ev->text_len, ev->finish_reason,
                               ev->logprobs, ev->n_logprobs, &n);
        if (s) write_sse(c, s, n);
        free(s);
    }
    if (ev->finish_reason != NULL) {
        call_detach(c);
        finish_stream(c);
        call_end(c, 200);
    }
}

static void on_whole_event(gw_call *c, const gw_upstream_event *ev)
{
    if (ev->kind == GW_UP_ERROR) {
        call_detach(c);
        send_error(c->req, &ev->error, c->request_id, false);
        call_end(c, ev->error.status);
        return;
    }
    for (size_t i = 0; i < ev->n_logprobs && c->logprobs; i++)
        gw_logprobs_acc_add(c->logprobs, &ev->logprobs[i], (int64_t)evbuffer_get_length(c->text));
    evbuffer_add(c->text, ev->text, ev->text_len);
    if (ev->finish_reason == NULL) return;
    size_t len = evbuffer_get_length(c->text), n = 0;
    const char *text = (const char *)evbuffer_pullup(c->text, -1);
    call_detach(c);
    char *body = gw_completion_response(&c->meta, text ? text : "", len, ev->finish_reason,
                                        &c->usage, c->logprobs, &n);
    if (body == NULL) {
        gw_error e;
        send_error(c->req, gw_error_set(&e, 500, "server_error", NULL, NULL, "out of memory"),
                   c->request_id, false);
        call_end(c, 500);
        return;
    }
    add_cache_header(c);
    send_json(c->req, 200, body, n, false);
    free(body);
    call_end(c, 200);
}

/* The router's answers for one call go through the output filter first. */
static void on_upstream(const gw_upstream_event *ev, void *arg)
{
    gw_call *c = arg;
    if (ev->kind == GW_UP_CHUNK && ev->cache && ev->cache[0] && !c->audit.cache[0])
        snprintf(c->audit.cache, sizeof c->audit.cache, "%s", ev->cache);
    gw_output_filter_push(c->out, ev);
}

/* The sanitized answers. A stream the sanitizer ended (content_filter) or could not
 * check stops at the router too. */
static void on_sanitized(const gw_upstream_event *ev, void *arg)
{
    gw_call *c = arg;
    if (ev->kind == GW_UP_ERROR || (ev->finish_reason && !strcmp(ev->finish_reason, "content_filter")))
        gw_upstream_cancel(c->srv->up, c->request_id);
    if (ev->kind == GW_UP_CHUNK) {
        if (!c->first_token_seen && (ev->text_len > 0 || ev->finish_reason)) {
            c->first_token_seen = true;
            gw_metric_ttft(seconds_since(&c->started));
        }
        if (ev->has_usage) c->usage = ev->usage;
        c->audit.output_bytes += (long long)ev->text_len;
    }
    if (c->body.stream) on_stream_event(c, ev);
    else on_whole_event(c, ev);
}

static gw_call *call_new(gw_server *s, struct evhttp_request *req, enum gw_kind kind,
                         const gw_principal *who, const char *request_id)
{
    gw_call *c = calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    c->srv = s;
    c->req = req;
    c->evcon = evhttp_request_get_connection(req);
    clock_gettime(CLOCK_MONOTONIC, &c->started);
    snprintf(c->request_id, sizeof c->request_id, "%s", request_id);
    c->who = *who;
    snprintf(c->response_id, sizeof c->response_id, "%s%s",
             kind == GW_KIND_CHAT ? "chatcmpl-" : "cmpl-", request_id + 4);
    c->text = evbuffer_new();
    s->stats.requests_in_flight++;
    gw_metric_in_flight(s->stats.requests_in_flight);
    return c;
}

/* X-Citadel-Deadline-Ms: the client's deadline for this request, in milliseconds from
 * now (a positive integer; the configured deadline-ms still caps it). Absent: 0. */
static int parse_deadline_header(struct evhttp_request *req, int64_t *out, gw_error *e)
{
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Citadel-Deadline-Ms");
    *out = 0;
    if (v == NULL) return 0;
    char *end;
    errno = 0;
    long long ms = strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || ms <= 0 || ms > 86400000) {
        gw_error_set(e, 400, "invalid_request_error", "X-Citadel-Deadline-Ms", "invalid_value",
                     "X-Citadel-Deadline-Ms must be a whole number of milliseconds between 1 and 86400000");
        return -1;
    }
    *out = ms;
    return 0;
}

/* Cache-Control: no-cache (answer afresh, the answer may be stored) and no-store
 * (neither look up nor store), as tokens of a comma-separated list. */
static void parse_cache_control(struct evhttp_request *req, gw_request *body)
{
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), "Cache-Control");
    for (const char *p = v; p && *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        size_t n = strcspn(p, ", \t");
        if (n == 8 && strncasecmp(p, "no-cache", 8) == 0) body->cache_skip_lookup = true;
        if (n == 8 && strncasecmp(p, "no-store", 8) == 0) body->cache_skip_lookup = body->cache_skip_store = true;
        p += n;
    }
}

/* The sanitizer's verdict on the prompt: refused (400, or 503 failing closed), or
 * redacted in place and sent to the router with an output filter for the answers. */
static void on_prompt_checked(const gw_error *refusal, void *arg)
{
    gw_call *c = arg;
    gw_error e;
    if (refusal == NULL) {
        c->out = gw_output_filter_new(c->srv->sanitizer, c->request_id, &c->findings, on_sanitized, c);
        if (c->out == NULL) refusal = gw_error_set(&e, 503, "server_error", NULL, NULL, "out of memory");
        else if (gw_upstream_submit(c->srv->up, &c->body, c->request_id, c->who.key_id, on_upstream, c, &e) != 0)
            refusal = &e;
    }
    if (refusal != NULL) {
        call_detach(c);
        send_error(c->req, refusal, c->request_id, false);
        call_end(c, refusal->status);
        return;
    }
    gw_log(GW_LOG_INFO, c->request_id, "generation submitted: key_id=%s model=%s stream=%s",
           c->who.key_id, c->body.model, c->body.stream ? "true" : "false");
}

static void handle_generate(gw_server *s, struct evhttp_request *req, enum gw_kind kind,
                            const gw_principal *who, const char *request_id)
{
    gw_error e;
    gw_call *c = call_new(s, req, kind, who, request_id);
    if (c == NULL || c->text == NULL) {
        if (c) call_free(c);
        reject(req, gw_error_set(&e, 503, "server_error", NULL, NULL, "out of memory"), request_id, false);
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *data = len ? (const char *)evbuffer_pullup(in, -1) : "";
    gw_audit_set_input(admitting, data, len);
    if (gw_request_parse(kind, data, len, &c->body, &e) != 0 ||
        parse_deadline_header(req, &c->body.deadline_ms, &e) != 0) {
        call_free(c);
        reject(req, &e, request_id, false);
        return;
    }
    snprintf(admitting->model, sizeof admitting->model, "%s", c->body.model ? c->body.model : "");
    snprintf(admitting->end_user, sizeof admitting->end_user, "%s", c->body.user ? c->body.user : "");
    parse_cache_control(req, &c->body);
    if (!gw_principal_may_use_model(&c->who, c->body.model)) {
        gw_error_set(&e, 403, "invalid_request_error", "model", "model_not_allowed",
                     "this key may not use model '%.200s'", c->body.model);
        call_free(c);
        reject(req, &e, request_id, false);
        return;
    }
    c->meta = (gw_response_meta){kind, c->response_id, (int64_t)time(NULL), c->body.model,
                                 c->body.stream && c->body.include_usage};
    if (c->body.logprobs && !c->body.stream) c->logprobs = gw_logprobs_acc_new(kind);
    c->audit = *admitting;   /* from here on the call emits it (reject still emits the admitting one) */
    if (gw_sanitize_prompt(s->sanitizer, &c->body, c->request_id, &c->findings, on_prompt_checked, c, &e) != 0) {
        call_free(c);
        reject(req, &e, request_id, false);
        return;
    }
    evhttp_connection_set_closecb(c->evcon, on_client_gone, c);
    evutil_socket_t fd = bufferevent_getfd(evhttp_connection_get_bufferevent(c->evcon));
    if (event_base_get_features(s->base) & EV_FEATURE_EARLY_CLOSE) {
        c->closed_ev = event_new(s->base, fd, EV_CLOSED, on_peer_closed, c);
        if (c->closed_ev) event_add(c->closed_ev, NULL);
    }
}

/* The limiter's answer for a generation: its x-ratelimit-* headers on whatever is sent,
 * then 429 or the generation itself. */
static void admission_decided(gw_server *s, struct evhttp_request *req, enum gw_kind kind,
                              const gw_principal *who, const char *request_id, const gw_rate_decision *d)
{
    gw_header h[6];
    char buf[256];
    size_t n = gw_ratelimit_headers(d, h, buf, sizeof buf);
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    for (size_t i = 0; i < n; i++) evhttp_add_header(out, h[i].name, h[i].value);
    if (d->allowed) {
        handle_generate(s, req, kind, who, request_id);
        return;
    }
    gw_error e;
    gw_metric_error("rate_limited");
    gw_log(GW_LOG_INFO, request_id, "rate limited: key_id=%s %s per minute (%s)", who->key_id, d->exceeded,
           d->shared ? "shared" : "local");
    reject(req, gw_error_set(&e, 429, d->exceeded, NULL, "rate_limit_exceeded",
                             "rate limit reached for %s per minute (limit %lld); retry after %d s",
                             d->exceeded, (long long)(strcmp(d->exceeded, "tokens") == 0 ? d->limit_tokens : d->limit_requests),
                             d->reset_seconds), request_id, false);
}

static void waiting_unlink(gw_waiting *w)
{
    if (w->prev) w->prev->next = w->next;
    else w->srv->waiting = w->next;
    if (w->next) w->next->prev = w->prev;
}

static void on_admission(const gw_rate_decision *d, void *arg)
{
    gw_waiting *w = arg;
    waiting_unlink(w);
    admitting = &w->audit;
    admission_decided(w->srv, w->req, w->kind, &w->who, w->request_id, d);
    admitting = NULL;
    free(w);
}

/* Asks the rate limiter about a generation; goes on in admission_decided. */
static void admit_generation(gw_server *s, struct evhttp_request *req, enum gw_kind kind,
                             const gw_principal *who, const char *request_id)
{
    gw_error e;
    gw_rate_decision d;
    gw_waiting *w = calloc(1, sizeof *w);
    if (w == NULL) {
        reject(req, gw_error_set(&e, 503, "server_error", NULL, NULL, "out of memory"), request_id, false);
        return;
    }
    *w = (gw_waiting){.srv = s, .req = req, .kind = kind, .who = *who, .audit = *admitting};
    snprintf(w->request_id, sizeof w->request_id, "%s", request_id);
    if (gw_ratelimit_admit(s->access->limits, who, &d, on_admission, w, &w->ticket) == 1) {
        free(w);
        admission_decided(s, req, kind, who, request_id, &d);
        return;
    }
    w->next = s->waiting;
    if (s->waiting) s->waiting->prev = w;
    s->waiting = w;
}

/* /v1/models: the router's models (or the configured ones), only those the caller's
 * key may use. */
static void handle_models(gw_server *s, struct evhttp_request *req, const gw_principal *who)
{
    size_t n = 0;
    const char *const *models = gw_upstream_models(s->up, &n);
    if (n == 0) {
        models = s->cfg.models;
        n = s->cfg.n_models;
    }
    const char **allowed = calloc(n + 1, sizeof *allowed);
    size_t n_allowed = 0;
    for (size_t i = 0; allowed && i < n; i++)
        if (gw_principal_may_use_model(who, models[i])) allowed[n_allowed++] = models[i];
    size_t len;
    char *body = allowed ? gw_models_body(allowed, n_allowed, (int64_t)time(NULL), &len) : NULL;
    send_json(req, 200, body, body ? len : 0, false);
    gw_metric_request(200, 0);
    gw_audit_emit(admitting, 200);
    free(body);
    free(allowed);
}

/* /admin/keys: see gw_admin_keys.h. */
static void handle_admin_keys(gw_server *s, struct evhttp_request *req, const char *method,
                              const char *path, const gw_principal *who, const char *request_id)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in), out_len = 0;
    const char *data = len ? (const char *)evbuffer_pullup(in, -1) : "";
    char *out = NULL;
    gw_error e;
    int status = gw_admin_keys_handle(s->access->auth.keys, &s->access->policy, method, path, data, len,
                                      who->key_id, &out, &out_len, &e);
    if (status < 0) {
        reject(req, &e, request_id, false);
        return;
    }
    send_json(req, status, out, out_len, false);
    gw_metric_request(status, 0);
    gw_audit_emit(admitting, status);
    free(out);
}

static void handle_health(gw_server *s, struct evhttp_request *req)
{
    char body[160];
    int n = snprintf(body, sizeof body, "{\"status\":\"ok\",\"router\":\"%s\",\"in_flight\":%lu}",
                     gw_upstream_router_seen(s->up) ? "connected" : "unknown",
                     s->stats.requests_in_flight);
    send_json(req, 200, body, (size_t)n, false);
    gw_metric_request(200, 0);
}

static void admit(gw_server *s, struct evhttp_request *req, const char *request_id);

/* Every request enters here: it gets its audit record, then admit() does the rest. */
static void handle_request(struct evhttp_request *req, void *arg)
{
    gw_server *s = arg;
    char request_id[40];
    new_request_id(request_id, sizeof request_id);
    gw_conn *conn = conn_of(req);
    if (conn == NULL) {   /* not a TLS connection (make_bev's fallback): refuse */
        evhttp_connection_free(evhttp_request_get_connection(req));
        return;
    }
    if (conn->header_timer) evtimer_del(conn->header_timer);
    evhttp_request_set_on_complete_cb(req, on_response_complete, conn);
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    gw_audit_record audit;
    gw_audit_begin(&audit, req, request_id, path ? path : "");
    admitting = &audit;
    admit(s, req, request_id);
    admitting = NULL;
}

/* Framing, routing, authentication, permissions, then the handler; every way out
 * answers once and emits the audit record once (admitting). */
static void admit(gw_server *s, struct evhttp_request *req, const char *request_id)
{
    gw_error e;
    if (check_framing(req, &e) != 0) {
        reject(req, &e, request_id, true);
        return;
    }
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    if (path == NULL) path = "";
    if (strcmp(path, "/health") == 0 && method == EVHTTP_REQ_GET) {
        admitting->emitted = true;   /* probes are not API requests: not audited */
        handle_health(s, req);
        return;
    }
    const char *method_name = method == EVHTTP_REQ_GET ? "GET" : method == EVHTTP_REQ_POST ? "POST"
                              : method == EVHTTP_REQ_DELETE ? "DELETE" : "OTHER";
    const gw_policy_route *route = NULL;
    switch (gw_policy_route_for(&s->access->policy, method_name, path, &route)) {
    case GW_ROUTE_NO_PATH:
        reject(req, gw_error_set(&e, 404, "invalid_request_error", NULL, "unknown_url",
                                 "unknown URL: %.200s", path), request_id, false);
        return;
    case GW_ROUTE_WRONG_METHOD:
        reject(req, gw_error_set(&e, 405, "invalid_request_error", NULL, "method_not_allowed",
                                 "%s does not take %s", path, method_name), request_id, false);
        return;
    case GW_ROUTE_FOUND:
        break;
    }
    gw_principal who;
    if (authenticate(s, req, &who, &e) != 0) {
        reject(req, &e, request_id, false);
        return;
    }
    gw_audit_set_principal(admitting, &who);
    if (!gw_policy_allows(&s->access->policy, who.roles, route->permission)) {
        gw_log(GW_LOG_INFO, request_id, "refused: key_id=%s roles=%s lacks permission %s",
               who.key_id, who.roles, route->permission);
        reject(req, gw_error_set(&e, 403, "invalid_request_error", NULL, "permission_denied",
                                 "your role (%s) does not grant '%s'", who.roles, route->permission),
               request_id, false);
        return;
    }
    if (strcmp(path, "/v1/chat/completions") == 0)
        admit_generation(s, req, GW_KIND_CHAT, &who, request_id);
    else if (strcmp(path, "/v1/completions") == 0)
        admit_generation(s, req, GW_KIND_COMPLETION, &who, request_id);
    else if (strcmp(path, "/v1/models") == 0)
        handle_models(s, req, &who);
    else if (strncmp(path, "/admin/keys", 11) == 0)
        handle_admin_keys(s, req, method_name, path, &who, request_id);
    else
        reject(req, gw_error_set(&e, 404, "invalid_request_error", NULL, "unknown_url",
                                 "%.200s is not served by this gateway yet", path), request_id, false);
}

/* ---- lifecycle ---------------------------------------------------------------------- */

gw_server *gw_server_start(struct event_base *base, const gw_server_config *cfg,
                           SSL_CTX *ssl_ctx, gw_access *access, gw_upstream *up,
                           char *err, size_t errsz)
{
    if (ssl_conn_index < 0)
        ssl_conn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, conn_free_hook);
    gw_server *s = calloc(1, sizeof *s);
    if (s == NULL || ssl_conn_index < 0) {
        snprintf(err, errsz, "out of memory");
        free(s);
        return NULL;
    }
    *s = (gw_server){.base = base, .cfg = *cfg, .ssl_ctx = ssl_ctx, .access = access, .up = up,
                     .accepting = true};
    s->http = evhttp_new(base);
    if (s->http == NULL) {
        snprintf(err, errsz, "evhttp_new failed");
        free(s);
        return NULL;
    }
    evhttp_set_bevcb(s->http, make_bev, s);
    evhttp_set_gencb(s->http, handle_request, s);
    evhttp_set_max_body_size(s->http, (ev_ssize_t)cfg->max_body_bytes);
    evhttp_set_max_headers_size(s->http, (ev_ssize_t)cfg->max_header_bytes);
    struct timeval io = {cfg->io_timeout_ms / 1000, (cfg->io_timeout_ms % 1000) * 1000};
    evhttp_set_timeout_tv(s->http, &io);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_DELETE);
    evhttp_set_default_content_type(s->http, "application/json");
    s->bound = evhttp_bind_socket_with_handle(s->http, cfg->listen_addr, (ev_uint16_t)cfg->port);
    if (s->bound == NULL) {
        snprintf(err, errsz, "cannot listen on %s:%d (in use or not permitted)",
                 cfg->listen_addr, cfg->port);
        evhttp_free(s->http);
        free(s);
        return NULL;
    }
    return s;
}

void gw_server_set_sanitizer(gw_server *s, gw_sanitizer *z) { s->sanitizer = z; }

void gw_server_stop_accepting(gw_server *s)
{
    if (s == NULL || !s->accepting) return;
    s->accepting = false;
    if (s->bound) evhttp_del_accept_socket(s->http, s->bound);
    s->bound = NULL;
}

gw_server_stats gw_server_get_stats(const gw_server *s)
{
    return s->stats;
}

void gw_server_free(gw_server *s)
{
    if (s == NULL) return;
    /* Connections may be finalised after the server is gone: cut them loose first. */
    for (gw_conn *c = s->conns; c != NULL; c = c->next) c->srv = NULL;
    s->conns = NULL;
    for (gw_waiting *w = s->waiting, *next; w != NULL; w = next) {
        next = w->next;
        gw_ratelimit_cancel(w->ticket);
        free(w);
    }
    evhttp_free(s->http);
    free(s);
}
