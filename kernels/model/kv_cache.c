/* kv_cache.c - the paged key/value cache and its prefix index (see kv_cache.h).
 *
 * Bookkeeping per block, all in arrays indexed by block id:
 *   ref          sequences holding the block
 *   indexed      whether it is in the prefix index (then hash, parent and tokens say
 *                what it holds)
 *   free stack   blocks with ref 0 that are not indexed (hold nothing worth keeping)
 *   LRU list     blocks with ref 0 that are indexed, least recently released at the head:
 *                the eviction order
 *   buckets      the index: chains of blocks by hash
 * Every block is in exactly one of: held (ref > 0), the free stack, the LRU list.
 */
#include "model/kv_cache.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/quant.h"

struct kv_cache {
    kv_cache_shape shape;
    size_t row_bytes, layer_bytes, block_bytes;   /* layer_bytes: keys + values of one layer */
    int n_blocks;
    uint8_t *data;          /* n_blocks * block_bytes */

    int *ref;
    bool *indexed;
    uint64_t *hash, *parent;
    int32_t *tokens;        /* n_blocks * block_tokens: what an indexed block holds */
    int *free_stack, n_free;
    int *lru_prev, *lru_next, lru_head, lru_tail, n_cached;
    int *bucket, *bucket_next;
    uint64_t bucket_mask;
    uint64_t evictions;
};

const char *kv_dtype_name(enum kv_dtype t)
{
    switch (t) {
    case KV_F16: return "f16";
    case KV_F32: return "f32";
    case KV_Q8_0: return "q8_0";
    }
    return "?";
}

int kv_dtype_parse(const char *name, enum kv_dtype *out)
{
    for (int t = KV_F16; t <= KV_Q8_0; t++)
        if (!strcmp(name, kv_dtype_name((enum kv_dtype)t))) {
            *out = (enum kv_dtype)t;
            return 0;
        }
    return -1;
}

/* q8_0 groups: gcd(HS, 32) values share one scale, so a group stays inside one head row. */
static int q8_group(int head_dim)
{
    int a = head_dim, b = 32;
    while (b) {
        int t = a % b;
        a = b;
        b = t;
    }
    return a;
}

size_t kv_row_bytes(const kv_cache_shape *s)
{
    switch (s->dtype) {
    case KV_F32: return sizeof(float) * (size_t)s->head_dim;
    case KV_F16: return sizeof(uint16_t) * (size_t)s->head_dim;
    case KV_Q8_0: return (size_t)(s->head_dim / q8_group(s->head_dim)) * (2 + (size_t)q8_group(s->head_dim));
    }
    return 0;
}

size_t kv_block_bytes(const kv_cache_shape *s)
{
    return kv_row_bytes(s) * (size_t)s->block_tokens * (size_t)s->n_kv_heads * 2 * (size_t)s->n_layers;
}

static int check_shape(const kv_cache_shape *s, int n_blocks, char *err, size_t errsz)
{
    const char *why = NULL;
    if (s->n_layers <= 0 || s->n_kv_heads <= 0 || s->head_dim <= 0 || s->head_dim % 2)
        why = "layers, heads and an even head size must be positive";
    else if (s->block_tokens <= 0 || s->block_tokens > KV_MAX_BLOCK_TOKENS)
        why = "block_tokens must be 1..64";
    else if (s->dtype != KV_F16 && s->dtype != KV_F32 && s->dtype != KV_Q8_0)
        why = "unknown storage type";
    else if (n_blocks <= 0)
        why = "the cache needs at least one block";
    else if (kv_block_bytes(s) > (SIZE_MAX / 2) / (size_t)n_blocks)
        why = "the cache is too large";
    if (why)
        snprintf(err, errsz, "bad KV cache shape: %s", why);
    return why ? -1 : 0;
}

kv_cache *kv_cache_create(const kv_cache_shape *shape, int n_blocks, char *err, size_t errsz)
{
    if (check_shape(shape, n_blocks, err, errsz))
        return NULL;
    kv_cache *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errsz, "out of memory");
        return NULL;
    }
    c->shape = *shape;
    c->row_bytes = kv_row_bytes(shape);
    c->layer_bytes = c->row_bytes * (size_t)shape->block_tokens * (size_t)shape->n_kv_heads * 2;
    c->block_bytes = kv_block_bytes(shape);
    c->n_blocks = n_blocks;
    size_t nb = (size_t)n_blocks, n_buckets = 1;
    while (n_buckets < 2 * nb)
        n_buckets *= 2;
    c->bucket_mask = n_buckets - 1;
    c->data = malloc(c->block_bytes * nb);   /* large: mapped lazily, touched as used */
    c->ref = calloc(nb, sizeof *c->ref);
    c->indexed = calloc(nb, sizeof *c->indexed);
    c->hash = calloc(nb, sizeof *c->hash);
    c->parent = calloc(nb, sizeof *c->parent);
    c->tokens = calloc(nb * (size_t)shape->block_tokens, sizeof *c->tokens);
    c->free_stack = malloc(nb * sizeof *c->free_stack);
    c->lru_prev = malloc(nb * sizeof *c->lru_prev);
    c->lru_next = malloc(nb * sizeof *c->lru_next);
    c->bucket = malloc(n_buckets * sizeof *c->bucket);
    c->bucket_next = malloc(nb * sizeof *c->bucket_next);
    if (!c->data || !c->ref || !c->indexed || !c->hash || !c->parent || !c->tokens || !c->free_stack ||
        !c->lru_prev || !c->lru_next || !c->bucket || !c->bucket_next) {
        kv_cache_free(c);
        snprintf(err, errsz, "out of memory for a KV cache of %d blocks of %zu bytes", n_blocks, kv_block_bytes(shape));
        return NULL;
    }
    for (int i = 0; i < n_blocks; i++)   /* popped in order 0, 1, 2, ... */
        c->free_stack[i] = n_blocks - 1 - i;
    c->n_free = n_blocks;
    c->lru_head = c->lru_tail = -1;
    for (size_t i = 0; i < n_buckets; i++)
        c->bucket[i] = -1;
    return c;
}

void kv_cache_free(kv_cache *c)
{
    if (c == NULL)
        return;
    free(c->data);
    free(c->ref);
    free(c->indexed);
    free(c->hash);
    free(c->parent);
    free(c->tokens);
    free(c->free_stack);
    free(c->lru_prev);
    free(c->lru_next);
    free(c->bucket);
    free(c->bucket_next);
    free(c);
}

const kv_cache_shape *kv_cache_get_shape(const kv_cache *c) { return &c->shape; }

kv_cache_stats kv_cache_get_stats(const kv_cache *c)
{
    return (kv_cache_stats){.n_blocks = c->n_blocks,
                            .used = c->n_blocks - c->n_free - c->n_cached,
                            .cached = c->n_cached,
                            .free = c->n_free,
                            .evictions = c->evictions};
}

int kv_cache_available(const kv_cache *c) { return c->n_free + c->n_cached; }

/* ---- the LRU list and the index ------------------------------------------------------ */

static void lru_unlink(kv_cache *c, int b)
{
    int p = c->lru_prev[b], n = c->lru_next[b];
    if (p >= 0) c->lru_next[p] = n; else c->lru_head = n;
    if (n >= 0) c->lru_prev[n] = p; else c->lru_tail = p;
    c->n_cached--;
}

static void lru_append(kv_cache *c, int b)
{
    c->lru_prev[b] = c->lru_tail;
    c->lru_next[b] = -1;
    if (c->lru_tail >= 0) c->lru_next[c->lru_tail] = b; else c->lru_head = b;
    c->lru_tail = b;
    c->n_cached++;
}

static void index_remove(kv_cache *c, int b)
{
    int *link = &c->bucket[c->hash[b] & c->bucket_mask];
    while (*link != b)
        link = &c->bucket_next[*link];
    *link = c->bucket_next[b];
    c->indexed[b] = false;
}

/* The indexed block holding `tokens` after the prefix whose chain hash is parent, or -1. */
static int index_find(const kv_cache *c, uint64_t hash, uint64_t parent, const int32_t *tokens)
{
    int BT = c->shape.block_tokens;
    for (int b = c->bucket[hash & c->bucket_mask]; b >= 0; b = c->bucket_next[b])
        if (c->hash[b] == hash && c->parent[b] == parent &&
            !memcmp(c->tokens + (size_t)b * BT, tokens, sizeof(int32_t) * (size_t)BT))
            return b;
    return -1;
}

static void index_insert(kv_cache *c, int b, uint64_t hash, uint64_t parent, const int32_t *tokens)
{
    int BT = c->shape.block_tokens;
    c->hash[b] = hash;
    c->parent[b] = parent;
    memcpy(c->tokens + (size_t)b * BT, tokens, sizeof(int32_t) * (size_t)BT);
    size_t k = hash & c->bucket_mask;
    c->bucket_next[b] = c->bucket[k];
    c->bucket[k] = b;
    c->indexed[b] = true;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The chain hash of a block of tokens following the prefix hashed as parent. */
static uint64_t block_hash(uint64_t parent, const int32_t *tokens, int n)
{
    uint64_t h = mix64(parent + 0x9e3779b97f4a7c15ull);
    for (int i = 0; i < n; i++)
        h = mix64(h ^ (uint32_t)tokens[i]);
    return h;
}

/* A block for new content: a free one, else the least recently released cached one. */
static int take_block(kv_cache *c)
{
    int b;
    if (c->n_free > 0) {
        b = c->free_stack[--c->n_free];
    } else {
        b = c->lru_head;
        lru_unlink(c, b);
        index_remove(c, b);
        c->evictions++;
    }
    c->ref[b] = 1;
    return b;
}

/* One reference fewer; an unused block goes to the LRU list if indexed, else is free. */
static void drop_block(kv_cache *c, int b)
{
    if (--c->ref[b] > 0)
        return;
    if (c->indexed[b])
        lru_append(c, b);
    else
        c->free_stack[c->n_free++] = b;
}

/* ---- sequences ---------------------------------------------------------------------- */

void kv_seq_init(kv_seq *s, kv_cache *c)
{
    memset(s, 0, sizeof *s);
    s->cache = c;
}

void kv_seq_set_namespace(kv_seq *s, uint64_t ns)
{
    if (s->n_blocks == 0)
        s->prefix_ns = s->last_hash = ns;
}

void kv_seq_release(kv_seq *s)
{
    /* last block first: a chain's tail is evicted before its head, which keeps the
     * head (the part other prompts are likeliest to share) reachable longest */
    for (int i = s->n_blocks - 1; i >= 0; i--)
        drop_block(s->cache, s->blocks[i]);
    free(s->blocks);
    uint64_t ns = s->prefix_ns;
    kv_seq_init(s, s->cache);
    kv_seq_set_namespace(s, ns);
}

static int grow_table(kv_seq *s, int n_blocks)
{
    if (n_blocks <= s->cap_blocks)
        return 0;
    int cap = s->cap_blocks ? s->cap_blocks : 8;
    while (cap < n_blocks)
        cap *= 2;
    int *t = realloc(s->blocks, sizeof(int) * (size_t)cap);
    if (t == NULL)
        return -1;
    s->blocks = t;
    s->cap_blocks = cap;
    return 0;
}

int kv_seq_reserve(kv_seq *s, int n_tokens)
{
    kv_cache *c = s->cache;
    int BT = c->shape.block_tokens, need = (n_tokens + BT - 1) / BT;
    if (need <= s->n_blocks)
        return 0;
    if (need - s->n_blocks > kv_cache_available(c) || grow_table(s, need))
        return -1;
    while (s->n_blocks < need)
        s->blocks[s->n_blocks++] = take_block(c);
    return 0;
}

int kv_seq_spare(const kv_seq *s)
{
    return s->n_blocks * s->cache->shape.block_tokens - s->n_tokens;
}

void kv_seq_truncate(kv_seq *s, int n_tokens)
{
    int floor = s->n_indexed * s->cache->shape.block_tokens;
    if (n_tokens < floor)
        n_tokens = floor;
    if (n_tokens >= 0 && n_tokens < s->n_tokens)
        s->n_tokens = n_tokens;
}

int kv_seq_match_prefix(kv_seq *s, const int32_t *tokens, int max_tokens)
{
    kv_cache *c = s->cache;
    int BT = c->shape.block_tokens;
    if (s->n_blocks != 0)
        return s->n_tokens;
    uint64_t h = s->prefix_ns;
    int n = 0;
    while ((n + 1) * BT <= max_tokens) {
        const int32_t *t = tokens + (size_t)n * BT;
        uint64_t next = block_hash(h, t, BT);
        int b = index_find(c, next, h, t);
        if (b < 0 || grow_table(s, n + 1))
            break;
        if (c->ref[b]++ == 0)
            lru_unlink(c, b);
        s->blocks[n++] = b;
        h = next;
    }
    s->n_blocks = s->n_indexed = n;
    s->n_tokens = n * BT;
    s->last_hash = h;
    return s->n_tokens;
}

void kv_seq_publish(kv_seq *s, const int32_t *tokens)
{
    kv_cache *c = s->cache;
    int BT = c->shape.block_tokens;
    while ((s->n_indexed + 1) * BT <= s->n_tokens) {
        const int32_t *t = tokens + (size_t)s->n_indexed * BT;
        uint64_t h = block_hash(s->last_hash, t, BT);
        int b = s->blocks[s->n_indexed];
        if (!c->indexed[b] && index_find(c, h, s->last_hash, t) < 0)
            index_insert(c, b, h, s->last_hash, t);
        s->last_hash = h;
        s->n_indexed++;
    }
}

/* ---- rows --------------------------------------------------------------------------- */

/* Where head kv_head's keys (or values) of block b, layer `layer` begin. */
static uint8_t *head_rows(const kv_cache *c, int b, int layer, int kv_head, bool values)
{
    const kv_cache_shape *sh = &c->shape;
    return c->data + (size_t)b * c->block_bytes + (size_t)layer * c->layer_bytes +
           ((size_t)(values ? sh->n_kv_heads : 0) + (size_t)kv_head) * c->row_bytes * (size_t)sh->block_tokens;
}

/* n values into q8_0 groups of g: an f16 scale d = max|x| / 127, then g int8 q = x / d. */
static void store_q8(uint8_t *dst, const float *x, int n, int g)
{
    for (int i = 0; i < n; i += g, dst += 2 + g) {
        float amax = 0.0f;
        for (int j = 0; j < g; j++)
            amax = fabsf(x[i + j]) > amax ? fabsf(x[i + j]) : amax;
        uint16_t dh = fp32_to_fp16(amax / 127.0f);
        float d = fp16_to_fp32(dh), id = d > 0.0f ? 1.0f / d : 0.0f;
        memcpy(dst, &dh, 2);
        for (int j = 0; j < g; j++) {
            float q = nearbyintf(x[i + j] * id);
            ((int8_t *)dst)[2 + j] = (int8_t)(q > 127.0f ? 127 : q < -127.0f ? -127 : q);
        }
    }
}

static void load_q8(float *x, const uint8_t *src, int n, int g)
{
    for (int i = 0; i < n; i += g, src += 2 + g) {
        uint16_t dh;
        memcpy(&dh, src, 2);
        float d = fp16_to_fp32(dh);
        for (int j = 0; j < g; j++)
            x[i + j] = d * (float)((const int8_t *)src)[2 + j];
    }
}

/* n floats into the cache's type at dst. */
static void store_values(const kv_cache *c, uint8_t *dst, const float *x, int n)
{
    switch (c->shape.dtype) {
    case KV_F32: memcpy(dst, x, sizeof(float) * (size_t)n); break;
    case KV_F16: quantize_row(TENSOR_F16, x, dst, n); break;
    case KV_Q8_0: store_q8(dst, x, n, q8_group(c->shape.head_dim)); break;
    }
}

void kv_cache_store(kv_seq *s, int layer, int pos, const float *k, const float *v)
{
    const kv_cache *c = s->cache;
    int BT = c->shape.block_tokens, HS = c->shape.head_dim, b = s->blocks[pos / BT], slot = pos % BT;
    for (int h = 0; h < c->shape.n_kv_heads; h++) {
        size_t at = (size_t)slot * c->row_bytes;
        store_values(c, head_rows(c, b, layer, h, false) + at, k + (size_t)h * HS, HS);
        store_values(c, head_rows(c, b, layer, h, true) + at, v + (size_t)h * HS, HS);
    }
}

const void *kv_seq_stored_rows(const kv_seq *s, int b, int layer, int kv_head, bool values)
{
    return head_rows(s->cache, s->blocks[b], layer, kv_head, values);
}

const float *kv_seq_rows(const kv_seq *s, int b, int layer, int kv_head, bool values, int n, float *scratch)
{
    const kv_cache *c = s->cache;
    const uint8_t *rows = head_rows(c, s->blocks[b], layer, kv_head, values);
    int HS = c->shape.head_dim;
    switch (c->shape.dtype) {
    case KV_F32: return (const float *)rows;
    case KV_F16: dequantize_row(TENSOR_F16, rows, scratch, (int64_t)n * HS); break;
    case KV_Q8_0: load_q8(scratch, rows, n * HS, q8_group(HS)); break;
    }
    return scratch;
}
