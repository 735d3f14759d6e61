/* test_gateway_ratelimit.c - the gateway's rate limiter (services/gateway/gw_ratelimit.c)
 * against a real redis-server started here on a pid-picked loopback port:
 *   - local counters: rpm, tpm (charged tokens), the replicas share, a new window;
 *   - two limiters on one Redis (two replicas) admit no more than rpm between them;
 *   - tokens charged by one replica count against the other;
 *   - Redis killed: decisions go on at once, locally; Redis back: shared again;
 *   - the x-ratelimit-* and Retry-After headers.
 * Skipped (visibly) when redis-server is not installed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gw_ratelimit.h"

static pid_t redis_pid;
static int redis_port;
static struct event_base *base;

static void start_redis(void)
{
    char port[16];
    snprintf(port, sizeof port, "%d", redis_port);
    redis_pid = fork();
    assert_true(redis_pid >= 0);
    if (redis_pid == 0) {
        if (freopen("/dev/null", "w", stdout) == NULL) _exit(126);   /* its banner is noise here */
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
}

static void stop_redis(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
    }
    redis_pid = 0;
}

/* Runs the loop for ms milliseconds. */
static void spin(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

/* Spins until both limiters are connected (5 s at most). */
static bool wait_shared(gw_ratelimit *a, gw_ratelimit *b)
{
    for (int i = 0; i < 100; i++) {
        if (gw_ratelimit_shared(a) && (b == NULL || gw_ratelimit_shared(b))) return true;
        spin(50);
    }
    return false;
}

static int setup(void **state)
{
    (void)state;
    redis_port = 30000 + (int)(getpid() % 20000);
    base = event_base_new();
    return base ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    stop_redis();
    event_base_free(base);
    return 0;
}

static gw_principal caller(const char *id, int64_t rpm, int64_t tpm)
{
    gw_principal p = {.rpm = rpm, .tpm = tpm};
    snprintf(p.key_id, sizeof p.key_id, "%s", id);
    return p;
}

static void test_local_counters(void **state)
{
    (void)state;
    gw_ratelimit_config cfg = {"", 100, 2};
    char err[256];
    gw_ratelimit *rl = gw_ratelimit_new(base, &cfg, err, sizeof err);
    assert_non_null(rl);
    gw_principal p = caller("k-local", 5, 0);   /* 2 replicas: 3 here (5/2 rounded up) */
    gw_rate_decision d;
    int64_t t0 = 1800000000;                     /* a window start: t0 % 60 == 0 */
    for (int i = 0; i < 3; i++) {
        gw_ratelimit_local_admit(rl, &p, t0 + 5, &d);
        assert_true(d.allowed);
        assert_int_equal(d.limit_requests, 3);
        assert_int_equal(d.remaining_requests, 2 - i);
    }
    gw_ratelimit_local_admit(rl, &p, t0 + 5, &d);
    assert_false(d.allowed);
    assert_string_equal(d.exceeded, "requests");
    assert_int_equal(d.reset_seconds, 55);
    gw_ratelimit_local_admit(rl, &p, t0 + 60, &d);  /* the next minute */
    assert_true(d.allowed);
    /* Unlimited callers are admitted without counting; admit says so at once. */
    gw_principal free_caller = caller("k-free", 0, 0);
    gw_ratelimit_ticket *t;
    assert_int_equal(gw_ratelimit_admit(rl, &free_caller, &d, NULL, NULL, &t), 1);
    assert_true(d.allowed);
    gw_header h[6];
    char buf[256];
    assert_int_equal(gw_ratelimit_headers(&d, h, buf, sizeof buf), 0);
    /* Tokens: charged after the fact, refused once the minute's tokens reach tpm. */
    gw_principal tk = caller("k-tokens", 0, 100);   /* 50 per replica */
    assert_int_equal(gw_ratelimit_admit(rl, &tk, &d, NULL, NULL, &t), 1);
    assert_true(d.allowed);
    gw_ratelimit_charge(rl, &tk, 60);
    assert_int_equal(gw_ratelimit_admit(rl, &tk, &d, NULL, NULL, &t), 1);
    assert_false(d.allowed);
    assert_string_equal(d.exceeded, "tokens");
    assert_int_equal(d.remaining_tokens, 0);
    size_t n = gw_ratelimit_headers(&d, h, buf, sizeof buf);
    assert_int_equal(n, 3);
    assert_string_equal(h[0].name, "x-ratelimit-limit-tokens");
    assert_string_equal(h[0].value, "50");
    assert_string_equal(h[1].name, "x-ratelimit-remaining-tokens");
    assert_string_equal(h[1].value, "0");
    assert_string_equal(h[2].name, "retry-after");
    assert_true(atoi(h[2].value) >= 1 && atoi(h[2].value) <= 60);
    gw_ratelimit_free(rl);
}

/* What the callback of an asynchronous admission saw. */
typedef struct answer_box {
    int answers;
    gw_rate_decision d;
} answer_box;

static void on_answer(const gw_rate_decision *d, void *arg)
{
    answer_box *b = arg;
    b->answers++;
    b->d = *d;
}

/* One admission through rl, waiting for the answer; returns the decision. */
static gw_rate_decision admit_one(gw_ratelimit *rl, const gw_principal *p)
{
    answer_box box = {0};
    gw_rate_decision d;
    gw_ratelimit_ticket *t;
    if (gw_ratelimit_admit(rl, p, &d, on_answer, &box, &t) == 1) return d;
    for (int i = 0; i < 100 && box.answers == 0; i++) spin(10);
    assert_int_equal(box.answers, 1);
    return box.d;
}

static bool have_redis(void)
{
    return system("command -v redis-server >/dev/null 2>&1") == 0;
}

static void test_shared_between_replicas_and_fallback(void **state)
{
    (void)state;
    if (!have_redis()) {
        printf("SKIP: redis-server not installed (make deps)\n");
        skip();
    }
    start_redis();
    char addr[64], err[256];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", redis_port);
    gw_ratelimit_config cfg = {addr, 200, 2};
    gw_ratelimit *a = gw_ratelimit_new(base, &cfg, err, sizeof err);
    gw_ratelimit *b = gw_ratelimit_new(base, &cfg, err, sizeof err);
    assert_non_null(a);
    assert_non_null(b);
    assert_true(wait_shared(a, b));

    /* The window is Redis's minute: keep clear of its end so one run stays in one. */
    while (time(NULL) % 60 > 50) spin(200);
    char id[64];
    snprintf(id, sizeof id, "k-shared-%d", (int)getpid());
    gw_principal p = caller(id, 7, 0);
    int admitted = 0, shared = 0;
    for (int i = 0; i < 12; i++) {
        gw_rate_decision d = admit_one(i % 2 ? b : a, &p);
        admitted += d.allowed;
        shared += d.shared;
        if (!d.allowed) {
            assert_string_equal(d.exceeded, "requests");
            assert_int_equal(d.remaining_requests, 0);
            assert_int_equal(d.limit_requests, 7);
        }
    }
    assert_int_equal(admitted, 7);   /* not 7 per replica: 7 between them */
    assert_int_equal(shared, 12);

    /* Tokens charged through one replica count on the other. */
    gw_principal tk = caller("k-shared-tokens", 0, 40);
    snprintf(tk.key_id, sizeof tk.key_id, "k-tok-%d", (int)getpid());
    assert_true(admit_one(a, &tk).allowed);
    gw_ratelimit_charge(a, &tk, 45);
    spin(100);
    gw_rate_decision d = admit_one(b, &tk);
    assert_false(d.allowed);
    assert_string_equal(d.exceeded, "tokens");
    assert_true(d.shared);

    /* Redis dies: the next decisions are immediate and local (40 rpm / 2 replicas). */
    stop_redis();
    for (int i = 0; i < 50 && (gw_ratelimit_shared(a) || gw_ratelimit_shared(b)); i++) spin(20);
    gw_principal q = caller("k-after", 40, 0);
    int local_ok = 0;
    for (int i = 0; i < 25; i++) {
        gw_rate_decision e = admit_one(a, &q);
        assert_false(e.shared);
        local_ok += e.allowed;
    }
    assert_int_equal(local_ok, 20);

    /* Redis is back: both replicas reconnect within their retry and share again. */
    start_redis();
    assert_true(wait_shared(a, b));
    assert_true(admit_one(b, &q).shared);
    gw_ratelimit_free(a);
    gw_ratelimit_free(b);
}

/* A Redis that accepts connections but never answers (SIGSTOP): each admission is
 * decided locally after the timeout, and a cancelled one never calls back. */
static void test_silent_redis_times_out(void **state)
{
    (void)state;
    if (!have_redis()) {
        printf("SKIP: redis-server not installed (make deps)\n");
        skip();
    }
    start_redis();
    char addr[64], err[256];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", redis_port);
    gw_ratelimit_config cfg = {addr, 50, 1};
    gw_ratelimit *rl = gw_ratelimit_new(base, &cfg, err, sizeof err);
    assert_true(wait_shared(rl, NULL));
    kill(redis_pid, SIGSTOP);
    gw_principal p = caller("k-silent", 3, 0);
    gw_rate_decision d = admit_one(rl, &p);
    assert_true(d.allowed);
    assert_false(d.shared);
    answer_box box = {0};
    gw_ratelimit_ticket *t = NULL;
    if (gw_ratelimit_admit(rl, &p, &d, on_answer, &box, &t) == 0) {
        gw_ratelimit_cancel(t);
        spin(150);
        assert_int_equal(box.answers, 0);
    }
    kill(redis_pid, SIGCONT);
    gw_ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_local_counters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_between_replicas_and_fallback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_redis_times_out, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
