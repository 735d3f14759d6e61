/* collective_shm.c - the shared-memory backend of collective.h: the ranks of a
 * tensor-parallel group on one host meet in one POSIX shared memory object.
 *
 * Layout of the object: a header (barrier counters, each rank's pid, the byte count
 * each rank put in each slot), then two banks of `size` slots of slot_bytes each.
 * An operation is a round: every rank writes its data into its slot of the round's
 * bank, all meet at the barrier, then every rank reads what it needs (for an
 * all-reduce: all slots, summed in rank order, so every rank gets the same bits).
 * Rounds alternate between the banks, so no second barrier is needed before the next
 * round may write: a rank can only come back to a bank after every rank has passed
 * the barrier of the round in between, that is, has finished reading it.
 *
 * The barrier is a counter and a generation number (the futex word). A rank that
 * arrives early spins briefly (peers are normally microseconds apart: they run the
 * same work) and then sleeps on the futex in 50 ms naps, checking between naps that
 * no peer has died or left and that the operation's timeout has not passed.
 */
#include "parallel/collective.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SHM_MAGIC 0x43495444u          /* "CITD": set last by rank 0, once initialized */
#define SHM_DEFAULT_SLOT (1u << 20)
#define SHM_SPINS 20000                /* ~0.2 ms of pause before sleeping on the futex */
#define SHM_NAP_NS 50000000L           /* between checks for dead peers while asleep */
#define PID_LEFT (-1)                  /* a rank that closed the group */

typedef struct shm_header {
    _Atomic uint32_t magic;
    uint32_t size;
    uint64_t slot_bytes;
    _Atomic uint32_t joined;             /* ranks attached so far */
    _Atomic uint32_t aborted;            /* a rank saw an error: everyone fails */
    _Atomic uint32_t arrived;            /* barrier: ranks in the current barrier */
    _Atomic uint32_t generation;         /* barrier: bumped when the last one arrives */
    _Atomic uint32_t sleepers;           /* ranks asleep on generation (skip the wake) */
    _Atomic int32_t pids[COLLECTIVE_MAX_RANKS];  /* 0: not yet, PID_LEFT: closed */
    uint64_t lens[2][COLLECTIVE_MAX_RANKS];      /* bytes each rank put in its slot */
} shm_header;

typedef struct shm_collective {
    collective base;        /* first: the interface sees only this */
    shm_header *h;
    size_t map_bytes;
    unsigned char *banks;   /* 2 * size slots of slot_bytes, after the header */
    size_t slot_bytes;
    uint64_t round;         /* operations so far: picks the bank */
    int op_timeout_ms;
    int spins;              /* SHM_SPINS, or 0 when the ranks outnumber the CPUs */
} shm_collective;

static int set_err(collective *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int set_err(collective *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return -1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Not FUTEX_PRIVATE: the word is shared between processes. */
static void futex_wait(_Atomic uint32_t *word, uint32_t expected, long ns)
{
    struct timespec ts = {0, ns};
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expected, &ts, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *word)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static unsigned char *slot(shm_collective *g, uint64_t round, int rank)
{
    return g->banks + ((size_t)(round & 1) * g->base.size + (size_t)rank) * g->slot_bytes;
}

/* Whether the process is gone: no such pid, or a zombie nobody has reaped yet. */
static bool process_gone(int32_t pid)
{
    if (kill(pid, 0) != 0)
        return errno == ESRCH;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *end = strrchr(buf, ')');   /* "pid (comm) S ...": comm may hold spaces */
    return end != NULL && end[1] == ' ' && end[2] == 'Z';
}

/* Why the group cannot go on, or NULL: aborted, or a peer dead or gone. */
static const char *peer_problem(shm_collective *g, int *who)
{
    if (atomic_load(&g->h->aborted)) {
        *who = -1;
        return "the group was aborted by another rank";
    }
    for (int r = 0; r < g->base.size; r++) {
        if (r == g->base.rank) continue;
        int32_t pid = atomic_load(&g->h->pids[r]);
        *who = r;
        if (pid == PID_LEFT) return "left the group";
        if (pid > 0 && process_gone(pid)) return "died";
    }
    return NULL;
}

static int fail_and_abort(shm_collective *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail_and_abort(shm_collective *g, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->base.err, sizeof g->base.err, fmt, ap);
    va_end(ap);
    atomic_store(&g->h->aborted, 1);
    futex_wake_all(&g->h->generation);
    return -1;
}

static int shm_barrier(collective *c)
{
    shm_collective *g = (shm_collective *)c;
    shm_header *h = g->h;
    uint32_t gen = atomic_load(&h->generation);
    if (atomic_load(&h->aborted))
        return set_err(c, "the group was aborted by another rank");
    if (atomic_fetch_add(&h->arrived, 1) == (uint32_t)c->size - 1) {
        atomic_store(&h->arrived, 0);
        atomic_fetch_add(&h->generation, 1);
        if (atomic_load(&h->sleepers) > 0)
            futex_wake_all(&h->generation);
        return 0;
    }
    for (int i = 0; i < g->spins; i++) {
        if (atomic_load_explicit(&h->generation, memory_order_acquire) != gen)
            return 0;
        cpu_relax();
    }
    double deadline = g->op_timeout_ms >= 0 ? now_s() + g->op_timeout_ms / 1000.0 : 0;
    while (atomic_load(&h->generation) == gen) {
        int who;
        const char *why = peer_problem(g, &who);
        if (atomic_load(&h->generation) != gen)
            break;   /* the last one arrived, and may have closed since: not a failure */
        if (why != NULL && who < 0)
            return set_err(c, "%s", why);
        if (why != NULL)
            return fail_and_abort(g, "rank %d of the tensor-parallel group %s", who, why);
        if (g->op_timeout_ms >= 0 && now_s() > deadline)
            return fail_and_abort(g, "no answer from the other ranks within %d ms", g->op_timeout_ms);
        atomic_fetch_add(&h->sleepers, 1);
        futex_wait(&h->generation, gen, SHM_NAP_NS);
        atomic_fetch_sub(&h->sleepers, 1);
    }
    return 0;
}

/* Every rank put the same byte count in this round, or the ranks have diverged. */
static int check_lens(shm_collective *g, uint64_t round, size_t bytes)
{
    for (int r = 0; r < g->base.size; r++)
        if (g->h->lens[round & 1][r] != bytes)
            return fail_and_abort(g, "tensor-parallel ranks diverged: rank %d sent %llu bytes, rank %d %zu", r,
                                  (unsigned long long)g->h->lens[round & 1][r], g->base.rank, bytes);
    return 0;
}

static int shm_all_reduce(collective *c, float *buf, size_t n)
{
    shm_collective *g = (shm_collective *)c;
    size_t per_round = g->slot_bytes / sizeof(float);
    if (n == 0)
        return shm_barrier(c);
    for (size_t off = 0; off < n;) {
        size_t m = n - off < per_round ? n - off : per_round;
        uint64_t round = g->round++;
        memcpy(slot(g, round, c->rank), buf + off, m * sizeof(float));
        g->h->lens[round & 1][c->rank] = m * sizeof(float);
        if (shm_barrier(c) || check_lens(g, round, m * sizeof(float)))
            return -1;
        /* every rank adds the slots in rank order: the same bits everywhere */
        memcpy(buf + off, slot(g, round, 0), m * sizeof(float));
        for (int r = 1; r < c->size; r++) {
            const float *in = (const float *)slot(g, round, r);
            float *out = buf + off;
            for (size_t i = 0; i < m; i++)
                out[i] += in[i];
        }
        off += m;
    }
    return 0;
}

static int shm_broadcast(collective *c, void *buf, size_t bytes, int root)
{
    shm_collective *g = (shm_collective *)c;
    if (root < 0 || root >= c->size)
        return set_err(c, "broadcast from rank %d of a group of %d", root, c->size);
    if (bytes == 0)
        return shm_barrier(c);
    for (size_t off = 0; off < bytes;) {
        size_t m = bytes - off < g->slot_bytes ? bytes - off : g->slot_bytes;
        uint64_t round = g->round++;
        if (c->rank == root)
            memcpy(slot(g, round, root), (unsigned char *)buf + off, m);
        g->h->lens[round & 1][c->rank] = m;
        if (shm_barrier(c) || check_lens(g, round, m))
            return -1;
        if (c->rank != root)
            memcpy((unsigned char *)buf + off, slot(g, round, root), m);
        off += m;
    }
    return 0;
}

static void shm_close(collective *c)
{
    shm_collective *g = (shm_collective *)c;
    if (g->h) {
        atomic_store(&g->h->pids[c->rank], PID_LEFT);
        futex_wake_all(&g->h->generation);
        munmap(g->h, g->map_bytes);
    }
    free(g);
}

static const collective_ops shm_ops = {"shm", shm_all_reduce, shm_broadcast, shm_barrier, shm_close};

static bool name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 200) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
              ch == '_' || ch == '.'))
            return false;
    }
    return true;
}

/* Rank 0: a fresh object (a stale one from a crashed group is replaced). */
static int create_segment(shm_collective *g, const char *path, char *err, size_t errsz)
{
    shm_unlink(path);
    int fd = shm_open(path, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)g->map_bytes) != 0) {
        snprintf(err, errsz, "cannot create shared memory %s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    g->h = mmap(NULL, g->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (g->h == MAP_FAILED) {
        g->h = NULL;
        snprintf(err, errsz, "cannot map shared memory %s: %s", path, strerror(errno));
        return -1;
    }
    g->h->size = (uint32_t)g->base.size;
    g->h->slot_bytes = g->slot_bytes;
    atomic_store(&g->h->pids[0], (int32_t)getpid());
    atomic_store(&g->h->magic, SHM_MAGIC);
    return 0;
}

/* Other ranks: the object rank 0 made, once it exists and its rank 0 is alive.
 * Returns 0, 1 (not there yet: try again) or -1 (it does not fit this group). */
static int attach_segment(shm_collective *g, const char *path, char *err, size_t errsz)
{
    int fd = shm_open(path, O_RDWR, 0600);
    if (fd < 0) return 1;
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < g->map_bytes) {
        close(fd);
        return 1;
    }
    shm_header *h = mmap(NULL, g->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (h == MAP_FAILED) return 1;
    int32_t leader = atomic_load(&h->pids[0]);
    if (atomic_load(&h->magic) != SHM_MAGIC || leader <= 0 || process_gone(leader)) {
        munmap(h, g->map_bytes);   /* not initialized yet, or left by a crashed group */
        return 1;
    }
    if (h->size != (uint32_t)g->base.size || h->slot_bytes != g->slot_bytes) {
        snprintf(err, errsz, "shared memory %s belongs to a group of %u ranks with %llu-byte slots, not %d and %zu",
                 path, h->size, (unsigned long long)h->slot_bytes, g->base.size, g->slot_bytes);
        munmap(h, g->map_bytes);
        return -1;
    }
    g->h = h;
    return 0;
}

collective *collective_shm_open(const char *name, int rank, int size, size_t slot_bytes,
                                int join_timeout_ms, int op_timeout_ms, char *err, size_t errsz)
{
    if (size < 1 || size > COLLECTIVE_MAX_RANKS || rank < 0 || rank >= size) {
        snprintf(err, errsz, "bad tensor-parallel rank %d of %d (1..%d ranks)", rank, size, COLLECTIVE_MAX_RANKS);
        return NULL;
    }
    if (!name_ok(name)) {
        snprintf(err, errsz, "bad shared memory name '%.64s' (letters, digits, '-', '_', '.')", name);
        return NULL;
    }
    shm_collective *g = calloc(1, sizeof *g);
    if (g == NULL) {
        snprintf(err, errsz, "out of memory");
        return NULL;
    }
    g->base = (collective){.ops = &shm_ops, .rank = rank, .size = size};
    g->slot_bytes = (slot_bytes ? slot_bytes : SHM_DEFAULT_SLOT + 63) / 64 * 64;
    g->op_timeout_ms = op_timeout_ms;
    /* spinning only helps when the peer runs meanwhile on another CPU; with more ranks
     * than CPUs it takes the CPU from the very rank being waited for */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    g->spins = cpus > 0 && size > cpus ? 0 : SHM_SPINS;
    size_t header = (sizeof(shm_header) + 63) / 64 * 64;
    g->map_bytes = header + 2 * (size_t)size * g->slot_bytes;
    char path[256];
    snprintf(path, sizeof path, "/%s", name);
    double deadline = now_s() + join_timeout_ms / 1000.0;
    int rc = rank == 0 ? create_segment(g, path, err, errsz) : 1;
    while (rc == 1) {
        if (join_timeout_ms >= 0 && now_s() > deadline) {
            snprintf(err, errsz, "rank 0 of tensor-parallel group %s did not appear within %d ms", name,
                     join_timeout_ms);
            rc = -1;
            break;
        }
        rc = attach_segment(g, path, err, errsz);
        if (rc == 1) usleep(5000);
    }
    if (rc != 0) {
        g->h = NULL;
        free(g);
        return NULL;
    }
    g->banks = (unsigned char *)g->h + header;
    int32_t expected = 0;
    if (rank > 0 && !atomic_compare_exchange_strong(&g->h->pids[rank], &expected, (int32_t)getpid())) {
        snprintf(err, errsz, "rank %d of tensor-parallel group %s is already taken (pid %d)", rank, name,
                 (int)expected);
        munmap(g->h, g->map_bytes);
        free(g);
        return NULL;
    }
    atomic_fetch_add(&g->h->joined, 1);
    while (atomic_load(&g->h->joined) < (uint32_t)size) {
        int who;
        const char *why = peer_problem(g, &who);
        if (why == NULL && join_timeout_ms >= 0 && now_s() > deadline) {
            why = "did not join in time";
            for (who = size - 1; who > 0 && atomic_load(&g->h->pids[who]) != 0; who--) {}
        }
        if (why != NULL) {
            if (rank == 0) shm_unlink(path);
            if (who < 0) snprintf(err, errsz, "tensor-parallel group %s: %s", name, why);
            else snprintf(err, errsz, "tensor-parallel group %s: %d of %d ranks joined; rank %d %s", name,
                          (int)atomic_load(&g->h->joined), size, who, why);
            shm_close(&g->base);
            return NULL;
        }
        usleep(2000);
    }
    if (rank == 0)
        shm_unlink(path);   /* everyone is attached: the name is no longer needed */
    return &g->base;
}
