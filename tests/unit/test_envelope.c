/* test_envelope.c - protobuf over ZeroMQ multipart frames (common/envelope.h), on real
 * DEALER <-> ROUTER pairs (inproc and tcp on loopback):
 *   - a GenerateRequest with every kind of field crosses DEALER -> ROUTER intact, the
 *     ROUTER learns the DEALER's identity, and a GenerateChunk (nested logprobs, usage,
 *     timings) goes back along that route intact; the same over tcp for a heartbeat;
 *   - waiting on an empty socket times out after about the timeout;
 *   - an unknown type, a garbage payload and bad framing are reported as such, with
 *     the route filled in so that an Error can be sent back, and the socket stays in
 *     step: the next good message is received normally;
 *   - a send to a vanished peer fails with a message instead of blocking;
 *   - type names, error codes and HTTP statuses map as documented.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include <cmocka.h>

#include "envelope.h"

/* A connected pair: `client` DEALER with identity "gw-1", `server` ROUTER. */
typedef struct pair {
    void *ctx, *client, *server;
} pair;

static void open_pair(pair *p, const char *endpoint)
{
    p->ctx = zmq_ctx_new();
    p->server = zmq_socket(p->ctx, ZMQ_ROUTER);
    p->client = zmq_socket(p->ctx, ZMQ_DEALER);
    int one = 1, zero = 0;
    zmq_setsockopt(p->server, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(p->server, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(p->client, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(p->client, ZMQ_ROUTING_ID, "gw-1", 4);
    assert_int_equal(zmq_bind(p->server, endpoint), 0);
    char bound[256];
    size_t len = sizeof bound;
    zmq_getsockopt(p->server, ZMQ_LAST_ENDPOINT, bound, &len);   /* tcp://...:* -> the port */
    assert_int_equal(zmq_connect(p->client, bound), 0);
}

static void close_pair(pair *p)
{
    zmq_close(p->client);
    zmq_close(p->server);
    zmq_ctx_term(p->ctx);
}

/* Receives one message that must decode, of type t. */
static envelope expect_message(void *sock, envelope_type t)
{
    envelope env;
    char err[256] = "";
    int rc = envelope_recv(sock, 2000, &env, err, sizeof err);
    if (rc != ENVELOPE_OK) fail_msg("recv: %s (%s)", envelope_status_name(rc), err);
    assert_int_equal(env.type, t);
    assert_non_null(env.msg);
    return env;
}

static void test_round_trip_inproc(void **state)
{
    (void)state;
    pair p;
    open_pair(&p, "inproc://envelope-test");

    Citadel__GenerateRequest req = CITADEL__GENERATE_REQUEST__INIT;
    Citadel__ChatMessage m0 = CITADEL__CHAT_MESSAGE__INIT, m1 = CITADEL__CHAT_MESSAGE__INIT;
    Citadel__ChatMessage *msgs[] = {&m0, &m1};
    char *stops[] = {"\n\n", "END"};
    m0.role = "system", m0.content = "be brief";
    m1.role = "user", m1.content = "héllo \"quoted\"";
    req.request_id = "req-1", req.key_id = "key-9", req.model = "smol";
    req.n_messages = 2, req.messages = msgs;
    req.max_tokens = 64, req.temperature = 0.7f, req.top_p = 0.9f, req.top_k = 40, req.min_p = 0.05f;
    req.seed = 0, req.has_seed = true;
    req.n_stop = 2, req.stop = stops;
    req.presence_penalty = 0.5f, req.frequency_penalty = -0.5f, req.repetition_penalty = 1.1f;
    req.logprobs = true, req.top_logprobs = 3, req.stream = true, req.priority = 2;
    req.deadline_unix_ms = 1700000000123LL, req.user = "u-7", req.adapter = "legal";
    char err[256];
    assert_int_equal(envelope_send(p.client, NULL, &req.base, err, sizeof err), ENVELOPE_OK);

    envelope in = expect_message(p.server, ENVELOPE_GENERATE_REQUEST);
    assert_int_equal(in.route.n, 1);
    assert_int_equal(in.route.len[0], 4);
    assert_memory_equal(in.route.id[0], "gw-1", 4);
    assert_string_equal(in.type_name, "GenerateRequest");
    const Citadel__GenerateRequest *got = (const Citadel__GenerateRequest *)in.msg;
    assert_string_equal(got->request_id, "req-1");
    assert_string_equal(got->key_id, "key-9");
    assert_string_equal(got->model, "smol");
    assert_int_equal(got->n_messages, 2);
    assert_string_equal(got->messages[1]->role, "user");
    assert_string_equal(got->messages[1]->content, "héllo \"quoted\"");
    assert_int_equal(got->max_tokens, 64);
    assert_true(got->temperature == 0.7f && got->top_p == 0.9f && got->min_p == 0.05f);
    assert_int_equal(got->top_k, 40);
    assert_true(got->has_seed);
    assert_int_equal(got->seed, 0);
    assert_int_equal(got->n_stop, 2);
    assert_string_equal(got->stop[0], "\n\n");
    assert_true(got->presence_penalty == 0.5f && got->frequency_penalty == -0.5f && got->repetition_penalty == 1.1f);
    assert_true(got->logprobs && got->stream);
    assert_int_equal(got->top_logprobs, 3);
    assert_int_equal(got->priority, 2);
    assert_int_equal(got->deadline_unix_ms, 1700000000123LL);
    assert_string_equal(got->user, "u-7");
    assert_string_equal(got->adapter, "legal");

    /* The answer goes back along the route the request came by. */
    Citadel__GenerateChunk chunk = CITADEL__GENERATE_CHUNK__INIT;
    Citadel__TopLogprob alt = CITADEL__TOP_LOGPROB__INIT, *alts[] = {&alt};
    Citadel__TokenLogprob lp = CITADEL__TOKEN_LOGPROB__INIT, *lps[] = {&lp};
    Citadel__Usage usage = CITADEL__USAGE__INIT;
    Citadel__Timings timings = CITADEL__TIMINGS__INIT;
    int32_t ids[] = {17, 4242};
    alt.id = 5, alt.token = "lo", alt.logprob = -2.5f;
    lp.id = 17, lp.token = "Hi", lp.logprob = -0.25f, lp.n_top = 1, lp.top = alts;
    usage.prompt_tokens = 12, usage.completion_tokens = 2, usage.total_tokens = 14, usage.cached_tokens = 8;
    timings.queue_seconds = 0.001, timings.prefill_seconds = 0.02, timings.decode_seconds = 0.5;
    chunk.request_id = "req-1", chunk.text = "Hi there";
    chunk.n_token_ids = 2, chunk.token_ids = ids;
    chunk.n_logprobs = 1, chunk.logprobs = lps;
    chunk.finish_reason = "stop", chunk.usage = &usage, chunk.timings = &timings;
    chunk.worker_id = "w-1", chunk.seq = 3;
    assert_int_equal(envelope_send(p.server, &in.route, &chunk.base, err, sizeof err), ENVELOPE_OK);
    envelope_free(&in);
    assert_null(in.msg);

    envelope back = expect_message(p.client, ENVELOPE_GENERATE_CHUNK);
    assert_int_equal(back.route.n, 0);
    const Citadel__GenerateChunk *c = (const Citadel__GenerateChunk *)back.msg;
    assert_string_equal(c->text, "Hi there");
    assert_int_equal(c->n_token_ids, 2);
    assert_int_equal(c->token_ids[1], 4242);
    assert_int_equal(c->n_logprobs, 1);
    assert_string_equal(c->logprobs[0]->token, "Hi");
    assert_true(c->logprobs[0]->logprob == -0.25f);
    assert_int_equal(c->logprobs[0]->n_top, 1);
    assert_string_equal(c->logprobs[0]->top[0]->token, "lo");
    assert_string_equal(c->finish_reason, "stop");
    assert_non_null(c->usage);
    assert_int_equal(c->usage->total_tokens, 14);
    assert_int_equal(c->usage->cached_tokens, 8);
    assert_non_null(c->timings);
    assert_true(c->timings->decode_seconds == 0.5);
    assert_string_equal(c->worker_id, "w-1");
    assert_int_equal(c->seq, 3);
    envelope_free(&back);
    close_pair(&p);
}

static void test_round_trip_tcp(void **state)
{
    (void)state;
    pair p;
    open_pair(&p, "tcp://127.0.0.1:*");
    Citadel__WorkerHeartbeat hb = CITADEL__WORKER_HEARTBEAT__INIT;
    char *models[] = {"smol", "tiny"};
    hb.worker_id = "w-7", hb.n_models = 2, hb.models = models;
    hb.free_slots = 3, hb.queue_depth = 1, hb.load = 0.25f, hb.admin_port = 9111;
    char err[256];
    assert_int_equal(envelope_send(p.client, NULL, &hb.base, err, sizeof err), ENVELOPE_OK);
    envelope in = expect_message(p.server, ENVELOPE_WORKER_HEARTBEAT);
    const Citadel__WorkerHeartbeat *got = (const Citadel__WorkerHeartbeat *)in.msg;
    assert_string_equal(got->worker_id, "w-7");
    assert_int_equal(got->n_models, 2);
    assert_string_equal(got->models[1], "tiny");
    assert_int_equal(got->free_slots, 3);
    assert_int_equal(got->queue_depth, 1);
    assert_true(got->load == 0.25f);
    assert_int_equal(got->admin_port, 9111);
    /* An empty Cancel (every field default) is a zero-length payload: still valid. */
    Citadel__Cancel cancel = CITADEL__CANCEL__INIT;
    assert_int_equal(envelope_send(p.server, &in.route, &cancel.base, err, sizeof err), ENVELOPE_OK);
    envelope_free(&in);
    envelope c = expect_message(p.client, ENVELOPE_CANCEL);
    assert_int_equal(c.payload_len, 0);
    envelope_free(&c);
    close_pair(&p);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void test_timeout(void **state)
{
    (void)state;
    pair p;
    open_pair(&p, "inproc://envelope-timeout");
    envelope env;
    char err[256];
    double t0 = now_s();
    assert_int_equal(envelope_recv(p.server, 150, &env, err, sizeof err), ENVELOPE_TIMEOUT);
    double took = now_s() - t0;
    assert_true(took >= 0.14 && took < 1.5);
    assert_null(env.msg);
    envelope_free(&env);
    t0 = now_s();
    assert_int_equal(envelope_recv(p.server, 0, &env, err, sizeof err), ENVELOPE_TIMEOUT);
    assert_true(now_s() - t0 < 0.1);
    close_pair(&p);
}

/* After a bad message, a good one must still come through cleanly. */
static void expect_still_in_step(pair *p)
{
    Citadel__Cancel c = CITADEL__CANCEL__INIT;
    c.request_id = "after";
    assert_int_equal(envelope_send(p->client, NULL, &c.base, NULL, 0), ENVELOPE_OK);
    envelope env = expect_message(p->server, ENVELOPE_CANCEL);
    assert_string_equal(((Citadel__Cancel *)env.msg)->request_id, "after");
    envelope_free(&env);
}

static void test_unknown_type_gets_error_reply(void **state)
{
    (void)state;
    pair p;
    open_pair(&p, "inproc://envelope-unknown");
    char err[256];
    assert_int_equal(envelope_send_raw(p.client, NULL, "Bogus", "\x08\x01", 2, err, sizeof err), ENVELOPE_OK);
    envelope env;
    assert_int_equal(envelope_recv(p.server, 2000, &env, err, sizeof err), ENVELOPE_ERR_UNKNOWN_TYPE);
    assert_non_null(strstr(err, "unknown message type 'Bogus'"));
    assert_string_equal(env.type_name, "Bogus");
    assert_int_equal(env.type, ENVELOPE_UNKNOWN);
    assert_null(env.msg);
    assert_int_equal(env.route.n, 1);   /* enough to answer */
    char why[256];
    assert_int_equal(envelope_reply_error(p.server, &env.route, "", CITADEL__ERROR_CODE__INVALID_ARGUMENT, "test",
                                          err, why, sizeof why),
                     ENVELOPE_OK);
    envelope_free(&env);
    envelope reply = expect_message(p.client, ENVELOPE_ERROR);
    const Citadel__Error *e = (const Citadel__Error *)reply.msg;
    assert_int_equal(e->code, CITADEL__ERROR_CODE__INVALID_ARGUMENT);
    assert_string_equal(e->origin, "test");
    assert_non_null(strstr(e->message, "Bogus"));
    envelope_free(&reply);
    expect_still_in_step(&p);
    close_pair(&p);
}

static void test_garbage_payload(void **state)
{
    (void)state;
    pair p;
    open_pair(&p, "inproc://envelope-garbage");
    /* Field 1 (request_id) claims ~4 GB of string in a 6-byte payload; then a field
     * with the reserved wire type 7. */
    static const unsigned char bad1[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f};
    static const unsigned char bad2[] = {0x0f, 0x01, 0x02};
    const unsigned char *bad[] = {bad1, bad2};
    size_t bad_len[] = {sizeof bad1, sizeof bad2};
    for (int k = 0; k < 2; k++) {
        char err[256];
        assert_int_equal(envelope_send_raw(p.client, NULL, "GenerateRequest", bad[k], bad_len[k], NULL, 0), ENVELOPE_OK);
        envelope env;
        assert_int_equal(envelope_recv(p.server, 2000, &env, err, sizeof err), ENVELOPE_ERR_DECODE);
        assert_non_null(strstr(err, "undecodable GenerateRequest"));
        assert_int_equal(env.type, ENVELOPE_GENERATE_REQUEST);
        assert_null(env.msg);
        assert_int_equal(env.route.n, 1);
        envelope_free(&env);
    }
    expect_still_in_step(&p);
    close_pair(&p);
}

static void test_bad_framing(void **state)
{
    (void)state;
    pair p;
    open_pair(&p, "inproc://envelope-framing");
    char err[256];
    envelope env;
    /* No empty delimiter: [type][payload] from the DEALER. */
    zmq_send(p.client, "Cancel", 6, ZMQ_SNDMORE);
    zmq_send(p.client, "", 0, ZMQ_SNDMORE);   /* looks like a delimiter, but then... */
    zmq_send(p.client, "x", 1, 0);            /* ...type "x" has no payload */
    assert_int_equal(envelope_recv(p.server, 2000, &env, err, sizeof err), ENVELOPE_ERR_FRAMING);
    assert_non_null(strstr(err, "no payload frame"));
    envelope_free(&env);
    zmq_send(p.client, "Cancel", 6, ZMQ_SNDMORE);
    zmq_send(p.client, "\x0a\x01x", 3, 0);
    assert_int_equal(envelope_recv(p.server, 2000, &env, err, sizeof err), ENVELOPE_ERR_FRAMING);
    assert_non_null(strstr(err, "no empty delimiter"));
    envelope_free(&env);
    /* A frame after the payload. */
    zmq_send(p.client, "", 0, ZMQ_SNDMORE);
    zmq_send(p.client, "Cancel", 6, ZMQ_SNDMORE);
    zmq_send(p.client, "", 0, ZMQ_SNDMORE);
    zmq_send(p.client, "extra", 5, 0);
    assert_int_equal(envelope_recv(p.server, 2000, &env, err, sizeof err), ENVELOPE_ERR_FRAMING);
    assert_non_null(strstr(err, "after the payload"));
    envelope_free(&env);
    /* Too many identity-like frames before any delimiter. */
    for (int i = 0; i < 6; i++)
        zmq_send(p.client, "id", 2, ZMQ_SNDMORE);
    zmq_send(p.client, "", 0, ZMQ_SNDMORE);
    zmq_send(p.client, "Cancel", 6, ZMQ_SNDMORE);
    zmq_send(p.client, "", 0, 0);
    assert_int_equal(envelope_recv(p.server, 2000, &env, err, sizeof err), ENVELOPE_ERR_FRAMING);
    envelope_free(&env);
    expect_still_in_step(&p);
    close_pair(&p);
}

static void test_send_failures(void **state)
{
    (void)state;
    pair p;
    open_pair(&p, "inproc://envelope-send");
    envelope_route gone = {.n = 1, .len = {5}};
    memcpy(gone.id[0], "ghost", 5);
    Citadel__Cancel c = CITADEL__CANCEL__INIT;
    char err[256] = "";
    assert_int_equal(envelope_send(p.server, &gone, &c.base, err, sizeof err), ENVELOPE_ERR_IO);
    assert_non_null(strstr(err, "peer is gone"));
    /* Only top-level wire messages travel alone. */
    Citadel__Usage u = CITADEL__USAGE__INIT;
    assert_int_equal(envelope_send(p.client, NULL, &u.base, err, sizeof err), ENVELOPE_ERR_UNKNOWN_TYPE);
    assert_non_null(strstr(err, "citadel.Usage"));
    close_pair(&p);
}

static void test_names_and_codes(void **state)
{
    (void)state;
    for (int t = 1; t < ENVELOPE_TYPE_COUNT; t++) {
        const char *name = envelope_type_name((envelope_type)t);
        assert_int_equal(envelope_type_parse(name, strlen(name)), t);
        assert_non_null(envelope_descriptor((envelope_type)t));
        assert_string_equal(envelope_descriptor((envelope_type)t)->short_name, name);
    }
    assert_int_equal(envelope_type_parse("Cancel!", 7), ENVELOPE_UNKNOWN);
    assert_int_equal(envelope_type_parse("Cance", 5), ENVELOPE_UNKNOWN);
    assert_string_equal(envelope_type_name(ENVELOPE_TYPE_COUNT), "?");
    assert_null(envelope_descriptor(ENVELOPE_UNKNOWN));
    assert_int_equal(envelope_error_http_status(CITADEL__ERROR_CODE__INVALID_ARGUMENT), 400);
    assert_int_equal(envelope_error_http_status(CITADEL__ERROR_CODE__NOT_FOUND), 404);
    assert_int_equal(envelope_error_http_status(CITADEL__ERROR_CODE__RESOURCE_EXHAUSTED), 429);
    assert_int_equal(envelope_error_http_status(CITADEL__ERROR_CODE__UNAVAILABLE), 503);
    assert_int_equal(envelope_error_http_status(CITADEL__ERROR_CODE__DEADLINE_EXCEEDED), 504);
    assert_int_equal(envelope_error_http_status(CITADEL__ERROR_CODE__OVERLOADED), 503);
    assert_int_equal(envelope_error_http_status(CITADEL__ERROR_CODE__UNKNOWN), 500);
    assert_int_equal(envelope_error_http_status((Citadel__ErrorCode)12345), 500);
    Citadel__Error e;
    envelope_error_init(&e, NULL, CITADEL__ERROR_CODE__CANCELLED, NULL, "gone");
    assert_string_equal(e.request_id, "");
    assert_string_equal(e.origin, "");
    assert_string_equal(e.message, "gone");
    assert_string_equal(envelope_status_name(ENVELOPE_ERR_DECODE), "undecodable payload");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_inproc),
        cmocka_unit_test(test_round_trip_tcp),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_unknown_type_gets_error_reply),
        cmocka_unit_test(test_garbage_payload),
        cmocka_unit_test(test_bad_framing),
        cmocka_unit_test(test_send_failures),
        cmocka_unit_test(test_names_and_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
