/* test_sanitizer_service.c - citadel-sanitizer's message handling
 * (services/sanitizer/sanitizer_service.h) over real ZeroMQ sockets (inproc ROUTER and
 * DEALER, the envelope framing of common/envelope.h):
 *   - a whole prompt comes back redacted with findings by type; a blocked term gives
 *     blocked with content_policy, in output content_filter;
 *   - a stream's chunks come back as released text that adds up to the one-shot text;
 *   - a reload (swap) mid-stream leaves the open stream on its old lists, new texts
 *     get the new ones;
 *   - a message of another type is answered with INVALID_ARGUMENT; while draining,
 *     new texts get UNAVAILABLE and open streams still finish;
 *   - the metrics count bytes, findings and blocks, and never hold a value.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include <cmocka.h>

#include "log.h"
#include "sanitizer_service.h"

typedef struct fixture {
    void *ctx, *router, *dealer;
    metrics_registry *metrics;
    shutdown_drain drain;
    sanitizer_service *svc;
} fixture;

static sanitizer *make_sanitizer(const char *term)
{
    char err[256];
    size_t len = strlen(term);
    return sanitizer_new_with_terms(NULL, ac_build(&term, &len, 1, err, sizeof err), err, sizeof err);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    log_set_output(fopen("/dev/null", "w"));
    f->ctx = zmq_ctx_new();
    f->router = zmq_socket(f->ctx, ZMQ_ROUTER);
    f->dealer = zmq_socket(f->ctx, ZMQ_DEALER);
    assert_int_equal(zmq_bind(f->router, "inproc://sanitizer"), 0);
    assert_int_equal(zmq_connect(f->dealer, "inproc://sanitizer"), 0);
    f->metrics = metrics_registry_new("sanitizer");
    shutdown_drain_init(&f->drain);
    f->svc = sanitizer_service_new(make_sanitizer("forbidden"), f->metrics, &f->drain, 300);
    assert_non_null(f->svc);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    sanitizer_service_free(f->svc);
    zmq_close(f->dealer);
    zmq_close(f->router);
    zmq_ctx_term(f->ctx);
    metrics_registry_free(f->metrics);
    shutdown_drain_destroy(&f->drain);
    free(f);
    return 0;
}

/* One round trip: the dealer sends msg, the service answers, the answer is returned. */
static envelope round_trip(fixture *f, const ProtobufCMessage *msg)
{
    assert_int_equal(envelope_send(f->dealer, NULL, msg, NULL, 0), ENVELOPE_OK);
    envelope in;
    int rc = envelope_recv(f->router, 1000, &in, NULL, 0);
    sanitizer_service_on_message(f->svc, f->router, rc, &in, 1.0);
    envelope_free(&in);
    envelope out;
    assert_int_equal(envelope_recv(f->dealer, 1000, &out, NULL, 0), ENVELOPE_OK);
    return out;
}

static Citadel__SanitizeResponse *ask(fixture *f, envelope *out, const char *text, const char *stream_id, bool final,
                                      Citadel__SanitizeDirection dir)
{
    Citadel__SanitizeRequest req = CITADEL__SANITIZE_REQUEST__INIT;
    req.request_id = "r-1";
    req.text = (char *)text;
    req.stream_id = (char *)stream_id;
    req.final = final;
    req.direction = dir;
    *out = round_trip(f, &req.base);
    assert_int_equal(out->type, ENVELOPE_SANITIZE_RESPONSE);
    return (Citadel__SanitizeResponse *)out->msg;
}

static void test_whole_text(void **state)
{
    fixture *f = *state;
    envelope e;
    Citadel__SanitizeResponse *r = ask(f, &e, "mail a@b.com or 13812345678 and 13912345678", "", false,
                                       CITADEL__SANITIZE_DIRECTION__INPUT);
    assert_string_equal(r->text, "mail [EMAIL] or [PHONE] and [PHONE]");
    assert_false(r->blocked);
    assert_string_equal(r->request_id, "r-1");
    assert_int_equal(r->n_findings, 2);
    assert_string_equal(r->findings[0]->type, "PHONE");
    assert_int_equal(r->findings[0]->count, 2);
    assert_string_equal(r->findings[1]->type, "EMAIL");
    envelope_free(&e);
    r = ask(f, &e, "the Forbidden thing", "", false, CITADEL__SANITIZE_DIRECTION__INPUT);
    assert_true(r->blocked);
    assert_string_equal(r->reason, "content_policy");
    assert_string_equal(r->text, "");
    envelope_free(&e);
    r = ask(f, &e, "forbidden", "", false, CITADEL__SANITIZE_DIRECTION__OUTPUT);
    assert_string_equal(r->reason, "content_filter");
    envelope_free(&e);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    metrics_render(f->metrics, m);
    fclose(m);
    assert_non_null(strstr(buf, "citadel_sanitizer_findings_total{type=\"PHONE\"} 2"));
    assert_non_null(strstr(buf, "citadel_sanitizer_blocked_total{reason=\"content_policy\"} 1"));
    assert_non_null(strstr(buf, "citadel_sanitizer_scanned_bytes_total"));
    assert_null(strstr(buf, "1381"));
    free(buf);
}

static void test_stream_and_reload(void **state)
{
    fixture *f = *state;
    const char *chunks[] = {"call 1381", "2345678 or ", "a@b.", "com new", "word"};
    char got[256] = "";
    envelope e;
    for (int i = 0; i < 5; i++) {
        if (i == 2) sanitizer_service_swap(f->svc, make_sanitizer("newword"));   /* SIGHUP mid-stream */
        Citadel__SanitizeResponse *r = ask(f, &e, chunks[i], "s-1", i == 4, CITADEL__SANITIZE_DIRECTION__OUTPUT);
        assert_false(r->blocked);   /* the stream keeps the list it started with */
        strcat(got, r->text);
        envelope_free(&e);
    }
    assert_string_equal(got, "call [PHONE] or [EMAIL] newword");
    assert_int_equal(sanitizer_service_streams(f->svc), 0);
    Citadel__SanitizeResponse *r = ask(f, &e, "a newword", "", false, CITADEL__SANITIZE_DIRECTION__INPUT);
    assert_true(r->blocked);    /* new requests get the new list */
    envelope_free(&e);
    r = ask(f, &e, "forbidden", "", false, CITADEL__SANITIZE_DIRECTION__INPUT);
    assert_false(r->blocked);
    envelope_free(&e);
}

static void test_bad_message_and_drain(void **state)
{
    fixture *f = *state;
    Citadel__Cancel c = CITADEL__CANCEL__INIT;
    c.request_id = "x";
    envelope e = round_trip(f, &c.base);
    assert_int_equal(e.type, ENVELOPE_ERROR);
    assert_int_equal(((Citadel__Error *)e.msg)->code, CITADEL__ERROR_CODE__INVALID_ARGUMENT);
    envelope_free(&e);
    Citadel__SanitizeResponse *r = ask(f, &e, "open 138", "s-2", false, CITADEL__SANITIZE_DIRECTION__OUTPUT);
    assert_string_equal(r->text, "open ");
    envelope_free(&e);
    shutdown_drain_stop_accepting(&f->drain);
    assert_int_equal(shutdown_drain_in_flight(&f->drain), 1);
    Citadel__SanitizeRequest req = CITADEL__SANITIZE_REQUEST__INIT;
    req.text = "new text";
    e = round_trip(f, &req.base);
    assert_int_equal(e.type, ENVELOPE_ERROR);
    assert_int_equal(((Citadel__Error *)e.msg)->code, CITADEL__ERROR_CODE__UNAVAILABLE);
    envelope_free(&e);
    r = ask(f, &e, "12345678", "s-2", true, CITADEL__SANITIZE_DIRECTION__OUTPUT);
    assert_string_equal(r->text, "[PHONE]");
    envelope_free(&e);
    assert_int_equal(shutdown_drain_in_flight(&f->drain), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_whole_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_and_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_message_and_drain, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
