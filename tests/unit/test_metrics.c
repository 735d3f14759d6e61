/* test_metrics.c - the metrics registry (common/metrics.h):
 *   - a small registry renders exactly the expected Prometheus text: HELP and TYPE per
 *     family, series in registration order, labels escaped, integers without decimals,
 *     cumulative histogram buckets with +Inf, _sum and _count;
 *   - registering the same name and labels again gives the same handle; a bad name, a
 *     bad label, a type clash or unordered buckets give NULL; NULL handles are no-ops;
 *   - counters, gauges and histograms updated from many threads at once sum exactly.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static char *render(metrics_registry *r)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(metrics_render(r, f), 0);
    fclose(f);
    return text;
}

static void test_exposition_exact(void **state)
{
    (void)state;
    metrics_registry *r = metrics_registry_new("router");
    metrics_counter *done = metrics_counter_new(r, "requests_total", "Requests routed.",
                                                (const char *[]){"outcome", "done", NULL});
    metrics_counter *failed = metrics_counter_new(r, "requests_total", "ignored help",
                                                  (const char *[]){"outcome", "fail\"ed\\\n", NULL});
    metrics_gauge *workers = metrics_gauge_new(r, "workers_alive", "Live workers.\nSecond line", NULL);
    const double bounds[] = {0.1, 0.5, 1};
    metrics_histogram *ttft = metrics_histogram_new(r, "ttft_seconds", "Time to first token.",
                                                    (const char *[]){"model", "smol", NULL}, bounds, 3);
    metrics_counter *busy = metrics_counter_new(r, "busy_seconds_total", "Busy time.", NULL);
    assert_non_null(done);
    assert_non_null(failed);
    assert_non_null(workers);
    assert_non_null(ttft);
    metrics_counter_add(done, 3);
    metrics_counter_inc(failed);
    metrics_counter_add(failed, -5);   /* ignored: counters never go down */
    metrics_counter_add(failed, NAN);  /* ignored */
    metrics_gauge_set(workers, 4);
    metrics_gauge_add(workers, -1.5);
    metrics_histogram_observe(ttft, 0.05);
    metrics_histogram_observe(ttft, 0.1);   /* on a bound: that bucket (le is <=) */
    metrics_histogram_observe(ttft, 0.7);
    metrics_histogram_observe(ttft, 3);
    metrics_counter_add(busy, 0.25);
    char *text = render(r);
    const char *expected =
        "# HELP citadel_router_requests_total Requests routed.\n"
        "# TYPE citadel_router_requests_total counter\n"
        "citadel_router_requests_total{outcome=\"done\"} 3\n"
        "citadel_router_requests_total{outcome=\"fail\\\"ed\\\\\\n\"} 1\n"
        "# HELP citadel_router_workers_alive Live workers.\\nSecond line\n"
        "# TYPE citadel_router_workers_alive gauge\n"
        "citadel_router_workers_alive 2.5\n"
        "# HELP citadel_router_ttft_seconds Time to first token.\n"
        "# TYPE citadel_router_ttft_seconds histogram\n"
        "citadel_router_ttft_seconds_bucket{model=\"smol\",le=\"0.1\"} 2\n"
        "citadel_router_ttft_seconds_bucket{model=\"smol\",le=\"0.5\"} 2\n"
        "citadel_router_ttft_seconds_bucket{model=\"smol\",le=\"1\"} 3\n"
        "citadel_router_ttft_seconds_bucket{model=\"smol\",le=\"+Inf\"} 4\n"
        "citadel_router_ttft_seconds_sum{model=\"smol\"} 3.85\n"
        "citadel_router_ttft_seconds_count{model=\"smol\"} 4\n"
        "# HELP citadel_router_busy_seconds_total Busy time.\n"
        "# TYPE citadel_router_busy_seconds_total counter\n"
        "citadel_router_busy_seconds_total 0.25\n";
    if (strcmp(text, expected) != 0)
        fail_msg("got:\n%s\nexpected:\n%s", text, expected);
    free(text);
    metrics_registry_free(r);
}

static void test_histogram_without_labels(void **state)
{
    (void)state;
    metrics_registry *r = metrics_registry_new(NULL);
    metrics_histogram *h = metrics_histogram_new(r, "x_seconds", "X.", NULL, (const double[]){1}, 1);
    metrics_histogram_observe(h, 2);
    char *text = render(r);
    assert_string_equal(text, "# HELP citadel_x_seconds X.\n"
                              "# TYPE citadel_x_seconds histogram\n"
                              "citadel_x_seconds_bucket{le=\"1\"} 0\n"
                              "citadel_x_seconds_bucket{le=\"+Inf\"} 1\n"
                              "citadel_x_seconds_sum 2\n"
                              "citadel_x_seconds_count 1\n");
    free(text);
    /* The default buckets are the latency ones. */
    metrics_histogram *lat = metrics_histogram_new(r, "lat_seconds", "L.", NULL, NULL, 0);
    assert_non_null(lat);
    metrics_histogram_observe(lat, 0.003);
    assert_int_equal(metrics_histogram_count(lat), 1);
    text = render(r);
    assert_non_null(strstr(text, "citadel_lat_seconds_bucket{le=\"0.0025\"} 0\n"
                                 "citadel_lat_seconds_bucket{le=\"0.005\"} 1\n"));
    assert_non_null(strstr(text, "citadel_lat_seconds_bucket{le=\"30\"} 1\n"));
    free(text);
    metrics_registry_free(r);
}

static void test_registration_rules(void **state)
{
    (void)state;
    metrics_registry *r = metrics_registry_new("svc");
    metrics_counter *a = metrics_counter_new(r, "hits_total", "Hits.", (const char *[]){"k", "v", NULL});
    assert_ptr_equal(metrics_counter_new(r, "hits_total", "Hits.", (const char *[]){"k", "v", NULL}), a);
    assert_ptr_not_equal(metrics_counter_new(r, "hits_total", "Hits.", (const char *[]){"k", "w", NULL}), a);
    assert_null(metrics_gauge_new(r, "hits_total", "clash", NULL));
    assert_null(metrics_counter_new(r, "bad name", "", NULL));
    assert_null(metrics_counter_new(r, "9lives", "", NULL));
    assert_null(metrics_counter_new(r, "", "", NULL));
    assert_null(metrics_counter_new(r, "ok_total", "", (const char *[]){"bad-key", "v", NULL}));
    assert_null(metrics_counter_new(r, "ok_total", "", (const char *[]){"le", "1", NULL}));
    assert_null(metrics_counter_new(r, "ok_total", "", (const char *[]){"a", "1", "b", "2", "c", "3", "d", "4", "e", "5", NULL}));
    assert_null(metrics_histogram_new(r, "h_seconds", "", NULL, (const double[]){1, 0.5}, 2));
    assert_null(metrics_histogram_new(r, "h_seconds", "", NULL, (const double[]){1, INFINITY}, 2));
    assert_null(metrics_counter_new(NULL, "x_total", "", NULL));
    /* NULL handles do nothing rather than crash. */
    metrics_counter_inc(NULL);
    metrics_gauge_set(NULL, 1);
    metrics_histogram_observe(NULL, 1);
    assert_true(metrics_counter_value(NULL) == 0);
    metrics_registry_free(r);
}

enum { N_THREADS = 8, N_OPS = 20000 };

typedef struct shared {
    metrics_counter *c;
    metrics_gauge *g;
    metrics_histogram *h;
} shared;

static void *hammer(void *arg)
{
    shared *s = arg;
    for (int i = 0; i < N_OPS; i++) {
        metrics_counter_inc(s->c);
        metrics_gauge_add(s->g, 1);
        metrics_gauge_add(s->g, -0.5);
        metrics_histogram_observe(s->h, (i % 4) * 0.5);   /* 0, 0.5, 1, 1.5 */
    }
    return NULL;
}

static void test_concurrent_updates(void **state)
{
    (void)state;
    metrics_registry *r = metrics_registry_new("svc");
    shared s = {metrics_counter_new(r, "ops_total", "Ops.", NULL), metrics_gauge_new(r, "level", "Level.", NULL),
                metrics_histogram_new(r, "op_seconds", "Op.", NULL, (const double[]){0.5, 1}, 2)};
    pthread_t th[N_THREADS];
    for (int t = 0; t < N_THREADS; t++)
        pthread_create(&th[t], NULL, hammer, &s);
    /* Rendering while the others write must be safe too. */
    for (int k = 0; k < 20; k++)
        free(render(r));
    for (int t = 0; t < N_THREADS; t++)
        pthread_join(th[t], NULL);
    const double total = (double)N_THREADS * N_OPS;
    assert_true(metrics_counter_value(s.c) == total);
    assert_true(metrics_gauge_value(s.g) == total * 0.5);
    assert_int_equal(metrics_histogram_count(s.h), (uint64_t)total);
    assert_true(metrics_histogram_sum(s.h) == total / 4 * (0 + 0.5 + 1 + 1.5));
    char *text = render(r);
    char expected[512];
    snprintf(expected, sizeof expected,
             "citadel_svc_op_seconds_bucket{le=\"0.5\"} %d\n"
             "citadel_svc_op_seconds_bucket{le=\"1\"} %d\n"
             "citadel_svc_op_seconds_bucket{le=\"+Inf\"} %d\n",
             N_THREADS * N_OPS / 2, N_THREADS * N_OPS * 3 / 4, N_THREADS * N_OPS);
    assert_non_null(strstr(text, expected));
    snprintf(expected, sizeof expected, "citadel_svc_ops_total %d\n", N_THREADS * N_OPS);
    assert_non_null(strstr(text, expected));
    free(text);
    metrics_registry_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exposition_exact),
        cmocka_unit_test(test_histogram_without_labels),
        cmocka_unit_test(test_registration_rules),
        cmocka_unit_test(test_concurrent_updates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
