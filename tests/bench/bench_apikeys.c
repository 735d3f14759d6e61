/* bench_apikeys.c - what an API key check costs the gateway (common/apikeys.c): one
 * SHA-256 of the presented key and a lookup in the hash index (constant-time compares),
 * with 1, 100, 1,000 and 10,000 keys in the store. Prints the median of 9 runs of
 * 2,000 verifications each, in microseconds per verification, for a key that matches
 * (the last one made) and one that does not. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "apikeys.h"

#define RUNS 9
#define CALLS 2000

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median microseconds per apikeys_verify of key over RUNS runs. */
static double median_us(const apikey_store *st, const char *key)
{
    double runs[RUNS];
    apikey_status status;
    for (int r = 0; r < RUNS; r++) {
        double t0 = now_s();
        for (int i = 0; i < CALLS; i++) apikeys_verify(st, key, strlen(key), time(NULL), &status);
        runs[r] = (now_s() - t0) / CALLS * 1e6;
    }
    qsort(runs, RUNS, sizeof runs[0], cmp_double);
    return runs[RUNS / 2];
}

int main(void)
{
    static const size_t sizes[] = {1, 100, 1000, 10000};
    char dir[] = "/tmp/citadel-bench-keys-XXXXXX";
    if (mkdtemp(dir) == NULL) return 1;
    apikey_store st = {0};
    snprintf(st.path, sizeof st.path, "%s/keys.db", dir);
    /* The store is built in memory (apikeys_create rewrites the file each time, which
     * would make setting up 10,000 keys the slow part); verification is what is timed. */
    char key[APIKEY_LEN + 1];
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        apikey *keys = calloc(n, sizeof *keys);
        if (keys == NULL) return 1;
        for (size_t i = 0; i < n; i++) {
            if (apikeys_generate(key) != 0 || apikeys_hash(key, APIKEY_LEN, keys[i].hash) != 0) return 1;
            snprintf(keys[i].key_id, sizeof keys[i].key_id, "key-%zu", i);
            snprintf(keys[i].roles, sizeof keys[i].roles, "user");
        }
        st.keys = keys;
        st.n = n;
        if (apikeys_reindex(&st) != 0) return 1;
        double hit = median_us(&st, key);   /* key: the last one made */
        double miss = median_us(&st, "ck-0000000000000000000000000000000000000000000000000000000000000000");
        printf("apikeys_verify keys=%zu hit_us=%.2f miss_us=%.2f\n", n, hit, miss);
        free(keys);
        free(st.index);
        st.index = NULL;
    }
    rmdir(dir);
    return 0;
}
