/* test_admin.c - the admin HTTP listener (common/admin.h), driven by a raw socket
 * client so that what goes over the wire is what is checked:
 *   - on an ephemeral port, /healthz answers 200 at once;
 *   - /readyz answers 503 until admin_set_ready(true), then 200, and 503 again after
 *     admin_set_ready(false);
 *   - /metrics answers 200 with the Prometheus content type and every source's text in
 *     order (a metrics_registry through metrics_write, then a plain callback), and
 *     reflects updates between scrapes;
 *   - an unknown path is 404, a POST 405; a second listener on a taken port fails with
 *     an error; after admin_stop the port is closed.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "admin.h"
#include "metrics.h"

/* A parsed response. */
typedef struct response {
    int status;
    char headers[2048];
    char body[8192];
} response;

static int connect_local(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends "METHOD path" with Connection: close and reads the whole answer. */
static response request(int port, const char *method, const char *path)
{
    response r = {0};
    int fd = connect_local(port);
    assert_true(fd >= 0);
    char req[256];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", method, path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    char raw[16384];
    size_t len = 0;
    ssize_t got;
    while (len < sizeof raw - 1 && (got = read(fd, raw + len, sizeof raw - 1 - len)) > 0)
        len += (size_t)got;
    raw[len] = '\0';
    close(fd);
    assert_int_equal(sscanf(raw, "HTTP/1.1 %d", &r.status), 1);
    char *split = strstr(raw, "\r\n\r\n");
    assert_non_null(split);
    *split = '\0';
    size_t hl = strlen(raw), bl = strlen(split + 4);
    assert_true(hl < sizeof r.headers && bl < sizeof r.body);
    memcpy(r.headers, raw, hl + 1);
    memcpy(r.body, split + 4, bl + 1);
    return r;
}

static void extra_metrics(FILE *out, void *user)
{
    fprintf(out, "# TYPE citadel_test_extra gauge\ncitadel_test_extra %d\n", *(int *)user);
}

static void test_endpoints(void **state)
{
    (void)state;
    metrics_registry *reg = metrics_registry_new("test");
    metrics_counter *scrapes = metrics_counter_new(reg, "things_total", "Things.", NULL);
    char err[256];
    admin_server *a = admin_start_at("127.0.0.1", 0, metrics_write, reg, err, sizeof err);
    if (a == NULL) fail_msg("%s", err);
    int port = admin_port(a);
    assert_true(port > 0);
    int extra = 7;
    assert_int_equal(admin_add_metrics(a, extra_metrics, &extra), 0);

    response r = request(port, "GET", "/healthz");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");

    assert_false(admin_is_ready(a));
    r = request(port, "GET", "/readyz");
    assert_int_equal(r.status, 503);
    admin_set_ready(a, true);
    r = request(port, "GET", "/readyz");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ready\n");
    admin_set_ready(a, false);
    assert_int_equal(request(port, "GET", "/readyz").status, 503);

    metrics_counter_add(scrapes, 2);
    r = request(port, "GET", "/metrics");
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "Content-Type: text/plain; version=0.0.4"));
    assert_string_equal(r.body, "# HELP citadel_test_things_total Things.\n"
                                "# TYPE citadel_test_things_total counter\n"
                                "citadel_test_things_total 2\n"
                                "# TYPE citadel_test_extra gauge\n"
                                "citadel_test_extra 7\n");
    metrics_counter_inc(scrapes);
    extra = 8;
    r = request(port, "GET", "/metrics?x=1");   /* a query string does not change the path */
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "citadel_test_things_total 3\n"));
    assert_non_null(strstr(r.body, "citadel_test_extra 8\n"));

    assert_int_equal(request(port, "GET", "/nope").status, 404);
    r = request(port, "POST", "/metrics");
    assert_true(r.status == 405);
    assert_non_null(strstr(r.headers, "Allow: GET, HEAD"));

    admin_stop(a);
    metrics_registry_free(reg);
}

static void test_port_taken_and_stop(void **state)
{
    (void)state;
    char err[256] = "";
    admin_server *a = admin_start_at("127.0.0.1", 0, NULL, NULL, err, sizeof err);
    assert_non_null(a);
    int port = admin_port(a);
    admin_server *b = admin_start_at("127.0.0.1", port, NULL, NULL, err, sizeof err);
    assert_null(b);
    assert_non_null(strstr(err, "cannot bind"));
    assert_null(admin_start_at("127.0.0.1", 70000, NULL, NULL, err, sizeof err));
    response r = request(port, "GET", "/metrics");   /* no source: empty but fine */
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "");
    admin_stop(a);
    int fd = connect_local(port);
    assert_int_equal(fd, -1);
    /* NULL-safe for services whose listener failed to start. */
    admin_set_ready(NULL, true);
    admin_stop(NULL);
    assert_int_equal(admin_port(NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_port_taken_and_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
