/* test_collective.c - the collective operations of tensor parallelism, on both CPU
 * backends (kernels/parallel/collective_shm.c, common/collective_zmq.c): each test
 * runs the ranks of a real group as threads of this process (or, where a crash is
 * simulated, as a child process) and checks the values every rank gets:
 *   - all-reduce: exact sums of integers, and bit-identical results on every rank for
 *     random floats, over buffers larger than the shared-memory slot (several rounds);
 *   - broadcast from rank 0 and from another rank; barrier: nobody passes early;
 *   - ranks that disagree on a size get "diverged", a peer that dies or never joins
 *     gets a clear error instead of a hang; bad names and ranks are refused.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "collective_zmq.h"
#include "parallel/collective.h"

#define MAX_TEST_RANKS 4

enum backend { SHM, ZMQ };

/* One group under test: how to open it and what each rank saw. */
typedef struct group_test {
    enum backend backend;
    int size;
    char name[128];            /* shm name or zmq endpoint */
    size_t slot_bytes;
    int op_timeout_ms;
    int (*body)(collective *c, struct group_test *t);   /* the ranks' work; 0 = ok */
    int rc[MAX_TEST_RANKS];
    char err[MAX_TEST_RANKS][256];
    float *out[MAX_TEST_RANKS];   /* what each rank ended with, for comparisons */
    size_t n;
    atomic_int counter;
} group_test;

typedef struct rank_arg {
    group_test *t;
    int rank;
} rank_arg;

static int unique;

static void name_group(group_test *t)
{
    if (t->backend == SHM)
        snprintf(t->name, sizeof t->name, "citadel-test-%d-%d", (int)getpid(), unique++);
    else
        snprintf(t->name, sizeof t->name, "tcp://127.0.0.1:%d", 30000 + (int)(getpid() % 1000) * 16 + unique++ % 16);
}

static collective *open_rank(group_test *t, int rank, char *err, size_t errsz)
{
    if (t->backend == SHM)
        return collective_shm_open(t->name, rank, t->size, t->slot_bytes, 5000, t->op_timeout_ms, err, errsz);
    return collective_zmq_open(t->name, rank, t->size, 5000, t->op_timeout_ms, err, errsz);
}

static void *rank_main(void *p)
{
    rank_arg *a = p;
    group_test *t = a->t;
    collective *c = open_rank(t, a->rank, t->err[a->rank], sizeof t->err[0]);
    if (c == NULL) {
        t->rc[a->rank] = -1;
        return NULL;
    }
    t->rc[a->rank] = t->body(c, t);
    if (t->rc[a->rank]) snprintf(t->err[a->rank], sizeof t->err[0], "%s", collective_error(c));
    collective_close(c);
    return NULL;
}

static void run_group(group_test *t)
{
    pthread_t th[MAX_TEST_RANKS];
    rank_arg args[MAX_TEST_RANKS];
    name_group(t);
    for (int r = 0; r < t->size; r++) {
        args[r] = (rank_arg){t, r};
        assert_int_equal(pthread_create(&th[r], NULL, rank_main, &args[r]), 0);
    }
    for (int r = 0; r < t->size; r++)
        pthread_join(th[r], NULL);
}

static void free_outs(group_test *t)
{
    for (int r = 0; r < MAX_TEST_RANKS; r++)
        free(t->out[r]);
}

/* ---- all-reduce ------------------------------------------------------------------- */

/* Rank r contributes (r + 1) * i + r at position i: small integers, so the sums are
 * exact and known. */
static int integer_sum_body(collective *c, group_test *t)
{
    float *x = malloc(sizeof(float) * t->n);
    for (size_t i = 0; i < t->n; i++)
        x[i] = (float)((c->rank + 1) * (int)(i % 1000) + c->rank);
    int rc = collective_all_reduce_sum_f32(c, x, t->n);
    t->out[c->rank] = x;
    return rc;
}

static void check_integer_sums(enum backend b, int size, size_t n, size_t slot)
{
    group_test t = {.backend = b, .size = size, .n = n, .slot_bytes = slot, .op_timeout_ms = 10000,
                    .body = integer_sum_body};
    run_group(&t);
    int ranks_sum = size * (size + 1) / 2, offsets = size * (size - 1) / 2;
    for (int r = 0; r < size; r++) {
        if (t.rc[r]) fprintf(stderr, "rank %d: %s\n", r, t.err[r]);
        assert_int_equal(t.rc[r], 0);
        for (size_t i = 0; i < n; i++)
            if (t.out[r][i] != (float)(ranks_sum * (int)(i % 1000) + offsets)) {
                fprintf(stderr, "rank %d, element %zu: %g\n", r, i, t.out[r][i]);
                fail();
            }
    }
    free_outs(&t);
}

static void test_shm_all_reduce_exact(void **state)
{
    (void)state;
    check_integer_sums(SHM, 2, 1000, 0);
    check_integer_sums(SHM, 3, 100000, 4096);   /* 25 rounds of 1024 floats */
    check_integer_sums(SHM, 4, 1, 0);
}

static void test_zmq_all_reduce_exact(void **state)
{
    (void)state;
    check_integer_sums(ZMQ, 2, 1000, 0);
    check_integer_sums(ZMQ, 3, 100000, 0);
}

/* Random floats of mixed magnitudes: rounding depends on the order of the sum, and
 * every rank must still end with the same bits. */
static int random_sum_body(collective *c, group_test *t)
{
    float *x = malloc(sizeof(float) * t->n);
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(c->rank + 1);
    for (size_t i = 0; i < t->n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((int64_t)(s >> 11) % 2000001 - 1000000) * (i % 3 ? 1e-6f : 1e3f);
    }
    int rc = collective_all_reduce_sum_f32(c, x, t->n);
    t->out[c->rank] = x;
    return rc;
}

static void check_identical(enum backend b)
{
    group_test t = {.backend = b, .size = 3, .n = 50000, .slot_bytes = 8192, .op_timeout_ms = 10000,
                    .body = random_sum_body};
    run_group(&t);
    for (int r = 0; r < 3; r++) {
        if (t.rc[r]) fprintf(stderr, "rank %d: %s\n", r, t.err[r]);
        assert_int_equal(t.rc[r], 0);
    }
    assert_memory_equal(t.out[0], t.out[1], sizeof(float) * t.n);
    assert_memory_equal(t.out[0], t.out[2], sizeof(float) * t.n);
    free_outs(&t);
}

static void test_shm_identical_on_every_rank(void **state)
{
    (void)state;
    check_identical(SHM);
}

static void test_zmq_identical_on_every_rank(void **state)
{
    (void)state;
    check_identical(ZMQ);
}

/* ---- broadcast and barrier -------------------------------------------------------- */

/* Broadcasts from every root in turn; the receivers' buffers start as garbage. */
static int broadcast_body(collective *c, group_test *t)
{
    unsigned char *buf = malloc(t->n);
    for (int root = 0; root < c->size; root++) {
        for (size_t i = 0; i < t->n; i++)
            buf[i] = c->rank == root ? (unsigned char)(i * 7 + root) : 0xee;
        if (collective_broadcast(c, buf, t->n, root)) {
            free(buf);
            return -1;
        }
        for (size_t i = 0; i < t->n; i++)
            if (buf[i] != (unsigned char)(i * 7 + root)) {
                free(buf);
                snprintf(c->err, sizeof c->err, "byte %zu from root %d is wrong", i, root);
                return -1;
            }
    }
    free(buf);
    return 0;
}

static void check_broadcast(enum backend b)
{
    group_test t = {.backend = b, .size = 3, .n = 10007, .slot_bytes = 1024, .op_timeout_ms = 10000,
                    .body = broadcast_body};
    run_group(&t);
    for (int r = 0; r < 3; r++) {
        if (t.rc[r]) fprintf(stderr, "rank %d: %s\n", r, t.err[r]);
        assert_int_equal(t.rc[r], 0);
    }
}

static void test_shm_broadcast(void **state)
{
    (void)state;
    check_broadcast(SHM);
}

static void test_zmq_broadcast(void **state)
{
    (void)state;
    check_broadcast(ZMQ);
}

/* Each round every rank counts itself in, meets the others, and must then see all of
 * them counted (nobody got through the barrier before the last one arrived). */
static int barrier_body(collective *c, group_test *t)
{
    for (int round = 1; round <= 200; round++) {
        atomic_fetch_add(&t->counter, 1);
        if (collective_barrier(c)) return -1;
        if (atomic_load(&t->counter) < round * c->size) {
            snprintf(c->err, sizeof c->err, "passed the barrier of round %d early", round);
            return -1;
        }
        if (collective_barrier(c)) return -1;   /* nobody starts the next round before all checked */
    }
    return 0;
}

static void check_barrier(enum backend b)
{
    group_test t = {.backend = b, .size = 3, .op_timeout_ms = 10000, .body = barrier_body};
    run_group(&t);
    for (int r = 0; r < 3; r++) {
        if (t.rc[r]) fprintf(stderr, "rank %d: %s\n", r, t.err[r]);
        assert_int_equal(t.rc[r], 0);
    }
}

static void test_shm_barrier(void **state)
{
    (void)state;
    check_barrier(SHM);
}

static void test_zmq_barrier(void **state)
{
    (void)state;
    check_barrier(ZMQ);
}

/* ---- failures --------------------------------------------------------------------- */

/* Rank 1 sends one float more than the others. */
static int mismatch_body(collective *c, group_test *t)
{
    (void)t;
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    return collective_all_reduce_sum_f32(c, x, c->rank == 1 ? 5 : 4);
}

static void check_mismatch(enum backend b)
{
    group_test t = {.backend = b, .size = 2, .op_timeout_ms = 500, .body = mismatch_body};
    run_group(&t);
    /* rank 0 (which sees both sizes in either backend) names the divergence */
    assert_int_equal(t.rc[0], -1);
    assert_non_null(strstr(t.err[0], "diverged"));
    assert_int_equal(t.rc[1], -1);
}

static void test_shm_size_mismatch(void **state)
{
    (void)state;
    check_mismatch(SHM);
}

static void test_zmq_size_mismatch(void **state)
{
    (void)state;
    check_mismatch(ZMQ);
}

/* Rank 1 is a child process that joins and dies without a word; rank 0, with no
 * operation timeout at all, must notice the death rather than wait forever. */
static void test_shm_dead_peer(void **state)
{
    (void)state;
    group_test t = {.backend = SHM, .size = 2};
    name_group(&t);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        char err[256];
        collective *c = collective_shm_open(t.name, 1, 2, 0, 5000, -1, err, sizeof err);
        _exit(c ? 0 : 1);   /* dies holding the group: no close */
    }
    char err[256];
    collective *c = collective_shm_open(t.name, 0, 2, 0, 5000, -1, err, sizeof err);
    if (c == NULL) fprintf(stderr, "%s\n", err);
    assert_non_null(c);
    int status;
    waitpid(child, &status, 0);
    assert_int_equal(WEXITSTATUS(status), 0);
    float x[4] = {0};
    assert_int_equal(collective_all_reduce_sum_f32(c, x, 4), -1);
    assert_non_null(strstr(collective_error(c), "rank 1"));
    assert_non_null(strstr(collective_error(c), "died"));
    collective_close(c);
}

/* A peer that closes the group normally: the other's next operation fails at once. */
static int leave_body(collective *c, group_test *t)
{
    (void)t;
    if (c->rank == 1) return 0;   /* closes right away */
    usleep(100 * 1000);
    float x[2] = {0};
    if (collective_all_reduce_sum_f32(c, x, 2) == 0) {
        snprintf(c->err, sizeof c->err, "an all-reduce without the peer succeeded");
        return 0;
    }
    return -1;
}

static void test_shm_peer_left(void **state)
{
    (void)state;
    group_test t = {.backend = SHM, .size = 2, .op_timeout_ms = -1, .body = leave_body};
    run_group(&t);
    assert_int_equal(t.rc[0], -1);
    assert_non_null(strstr(t.err[0], "left the group"));
}

static void test_zmq_peer_gone_times_out(void **state)
{
    (void)state;
    group_test t = {.backend = ZMQ, .size = 2, .op_timeout_ms = 300, .body = leave_body};
    run_group(&t);
    assert_int_equal(t.rc[0], -1);
    assert_non_null(strstr(t.err[0], "within 300 ms"));
}

static void test_join_timeout_and_bad_arguments(void **state)
{
    (void)state;
    char err[256];
    group_test t = {.backend = SHM};
    name_group(&t);
    assert_null(collective_shm_open(t.name, 0, 2, 0, 200, -1, err, sizeof err));
    assert_non_null(strstr(err, "rank 1 did not join"));
    assert_null(collective_shm_open(t.name, 1, 2, 0, 200, -1, err, sizeof err));
    assert_non_null(strstr(err, "did not appear"));
    assert_null(collective_shm_open("bad/name", 0, 2, 0, 200, -1, err, sizeof err));
    assert_non_null(strstr(err, "bad shared memory name"));
    assert_null(collective_shm_open(t.name, 2, 2, 0, 200, -1, err, sizeof err));
    assert_non_null(strstr(err, "bad tensor-parallel rank 2 of 2"));
    assert_null(collective_zmq_open("tcp://127.0.0.1:1", 1, 2, 200, -1, err, sizeof err));
    assert_non_null(strstr(err, "did not welcome"));
    assert_null(collective_zmq_open("nonsense", 0, 2, 200, -1, err, sizeof err));
    assert_non_null(strstr(err, "cannot bind"));
    /* a group of one needs nobody */
    collective *c = collective_shm_open(t.name, 0, 1, 0, 200, -1, err, sizeof err);
    assert_non_null(c);
    float x[3] = {1, 2, 3};
    assert_int_equal(collective_all_reduce_sum_f32(c, x, 3), 0);
    assert_true(x[0] == 1 && x[1] == 2 && x[2] == 3);
    collective_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shm_all_reduce_exact),
        cmocka_unit_test(test_zmq_all_reduce_exact),
        cmocka_unit_test(test_shm_identical_on_every_rank),
        cmocka_unit_test(test_zmq_identical_on_every_rank),
        cmocka_unit_test(test_shm_broadcast),
        cmocka_unit_test(test_zmq_broadcast),
        cmocka_unit_test(test_shm_barrier),
        cmocka_unit_test(test_zmq_barrier),
        cmocka_unit_test(test_shm_size_mismatch),
        cmocka_unit_test(test_zmq_size_mismatch),
        cmocka_unit_test(test_shm_dead_peer),
        cmocka_unit_test(test_shm_peer_left),
        cmocka_unit_test(test_zmq_peer_gone_times_out),
        cmocka_unit_test(test_join_timeout_and_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
