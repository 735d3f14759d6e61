/* kv_cache.h - the paged key/value cache: one pool of fixed-size blocks that every
 * sequence of a batch draws from, with a prefix index so that sequences beginning with
 * the same tokens share the blocks that hold them.
 *
 * A block holds the keys and values of block_tokens consecutive positions of one
 * sequence, for every layer. A sequence (kv_seq) owns a block table: position p lives
 * in slot p % BT of block blocks[p / BT]. Memory is the pool, sized once from a byte
 * budget; a sequence takes blocks as it grows and gives them back when it ends, so
 * short requests no longer each hold a full context.
 *
 * Prefix caching: once a block is full its content is fixed, and it is entered in an
 * index under a hash of its tokens chained with the hash of the block before it (so the
 * hash names the whole prefix up to the block's end). A new sequence whose tokens begin
 * with indexed blocks takes them instead of computing them (kv_seq_match_prefix). Only
 * full blocks are shared, and they are never written again, so sharing needs no copy.
 * Blocks are reference-counted; a block no sequence uses stays indexed, and such blocks
 * are evicted least-recently-released-first when the pool needs space.
 *
 * Layout of one block, for the attention loop's sake (BT block_tokens, NKV the KV heads
 * this process holds, HS head size):  [layer][keys | values][NKV][BT][HS]
 * so the keys of one head in one block are BT contiguous rows of HS values.
 *
 * Storage types: f16 (the default; values rounded to half precision, as llama.cpp's
 * default cache), f32 (exact), q8_0 (int8 with one f16 scale per group of
 * gcd(HS, 32) values, so a group never straddles two heads or two positions).
 *
 * Not thread-safe: one thread plans and writes (the forward pass's workers only read
 * rows through kv_cache_load_rows and write distinct rows through kv_cache_store).
 */
#ifndef CITADEL_KV_CACHE_H
#define CITADEL_KV_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum kv_dtype { KV_F16 = 0, KV_F32 = 1, KV_Q8_0 = 2 };

/* "f16", "f32", "q8_0". */
const char *kv_dtype_name(enum kv_dtype t);
/* Parses a name of kv_dtype_name. Returns 0, or -1 when unknown. */
int kv_dtype_parse(const char *name, enum kv_dtype *out);

#define KV_DEFAULT_BLOCK_TOKENS 16
#define KV_MAX_BLOCK_TOKENS 64

/* What one cache stores. n_kv_heads is what this process computes: all of the model's
 * KV heads, or a tensor-parallel shard's share of them. */
typedef struct kv_cache_shape {
    int n_layers;
    int n_kv_heads;
    int head_dim;
    int block_tokens;
    enum kv_dtype dtype;
} kv_cache_shape;

typedef struct kv_cache kv_cache;

/* Bytes of one (position, head) row of HS values in the shape's type. */
size_t kv_row_bytes(const kv_cache_shape *shape);
/* Bytes of one block: keys and values of block_tokens positions, every layer. */
size_t kv_block_bytes(const kv_cache_shape *shape);

/* A pool of n_blocks blocks of the shape. Returns NULL with a message in err for a bad
 * shape (q8_0 needs an even head size, ...) or when out of memory. The pool's pages are
 * touched only as blocks are used. */
kv_cache *kv_cache_create(const kv_cache_shape *shape, int n_blocks, char *err, size_t errsz);
void kv_cache_free(kv_cache *c);
const kv_cache_shape *kv_cache_get_shape(const kv_cache *c);

typedef struct kv_cache_stats {
    int n_blocks;
    int used;        /* held by at least one sequence */
    int cached;      /* held by none but still indexed: reusable, evicted when needed */
    int free;        /* neither: n_blocks - used - cached */
    uint64_t evictions;   /* cached blocks given up for new content */
} kv_cache_stats;

kv_cache_stats kv_cache_get_stats(const kv_cache *c);
/* Blocks a sequence could take now (free + cached). */
int kv_cache_available(const kv_cache *c);

/* ---- sequences ---------------------------------------------------------------------- */

/* One sequence's view of the cache. Positions [0, n_tokens) are filled; the table may
 * hold blocks for more (reserved). The first n_indexed blocks are in the prefix index
 * (full, shared, read-only). */
typedef struct kv_seq {
    kv_cache *cache;
    int *blocks;
    int n_blocks, cap_blocks;
    int n_tokens;
    int n_indexed;
    uint64_t prefix_ns;   /* what the chain of hashes starts from (kv_seq_set_namespace) */
    uint64_t last_hash;   /* chain hash of block n_indexed - 1 (prefix_ns before the first) */
} kv_seq;

/* An empty sequence on cache c, in namespace 0. Cannot fail. */
void kv_seq_init(kv_seq *s, kv_cache *c);
/* Keys and values depend on more than the tokens when the weights differ (a LoRA
 * adapter): sequences computed differently must not share blocks, so each kind names
 * its own namespace (0: the base model), which seeds the chain of hashes. Only on an
 * empty sequence; kept across kv_seq_release. */
void kv_seq_set_namespace(kv_seq *s, uint64_t ns);
/* Gives every block back (indexed ones stay cached, most recent first for reuse) and
 * empties the sequence. The sequence can be used again. */
void kv_seq_release(kv_seq *s);
/* Ensures blocks for positions [0, n_tokens): takes free blocks, then evicts cached
 * ones least recently released first. Returns 0, or -1 (nothing taken) when the pool
 * lacks the blocks or memory for the table runs out. */
int kv_seq_reserve(kv_seq *s, int n_tokens);
/* How many more positions the sequence can hold without new blocks. */
int kv_seq_spare(const kv_seq *s);
/* Forgets positions >= n_tokens, keeping the blocks (a session rewinding for a new
 * prompt). Blocks already indexed are left alone, so n_tokens must not cut into them:
 * it is raised to the end of the indexed blocks. */
void kv_seq_truncate(kv_seq *s, int n_tokens);

/* On an empty sequence: takes the longest run of indexed blocks that hold tokens[0..k)
 * with k <= max_tokens a multiple of block_tokens, and sets n_tokens = k. Returns k. */
int kv_seq_match_prefix(kv_seq *s, const int32_t *tokens, int max_tokens);
/* After positions [0, n_tokens) have been written: enters the sequence's full blocks
 * not yet indexed, tokens being the sequence's tokens. A block whose content is already
 * indexed under another block stays private. */
void kv_seq_publish(kv_seq *s, const int32_t *tokens);

/* ---- the forward pass's access ------------------------------------------------------ */

/* Writes position pos of layer `layer`: k and v are rows of NKV*HS floats, converted
 * to the cache's type. pos must be reserved and not in an indexed block. */
void kv_cache_store(kv_seq *s, int layer, int pos, const float *k, const float *v);

/* The rows of head kv_head's keys (values when `values`) of block slot `b` in s's
 * table as stored: block_tokens rows of kv_row_bytes each, in the cache's type. */
const void *kv_seq_stored_rows(const kv_seq *s, int b, int layer, int kv_head, bool values);

/* The n (<= block_tokens) first rows (HS floats each) of head kv_head's keys (values
 * when `values`) of block slot `b` in s's table, as f32: a pointer into the cache for
 * f32, else converted into scratch (n * HS floats). */
const float *kv_seq_rows(const kv_seq *s, int b, int layer, int kv_head, bool values, int n,
                         float *scratch);

#endif
