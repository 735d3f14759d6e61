/* gguf.h - read (and write) GGUF model files, the format llama.cpp and most published
 * open models use.
 *
 * A GGUF file is: magic "GGUF", version (2 or 3), tensor count, metadata count, then the
 * metadata key/value pairs, then the tensor infos (name, dims, type, offset), then
 * padding to `general.alignment` (default 32), then the tensor data. All integers are
 * little-endian; strings are a u64 length followed by bytes (no NUL).
 *
 * The reader maps the file read-only and never copies tensor data: tensor and string
 * pointers point into the mapping and live as long as the gguf_file. Every length,
 * count, offset and type is checked against the file before it is used, so a hostile
 * or truncated file is refused with a message naming the problem and never causes a
 * read out of bounds (tests/fuzz/fuzz_gguf.c hammers this).
 *
 * Callers: kernels/model (weights and hyper-parameters), kernels/tokenizer (vocab),
 * the CLI's bench (the writer makes random-weight models of a given shape).
 */
#ifndef CITADEL_GGUF_H
#define CITADEL_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Metadata value types, numbered as in the GGUF specification. */
enum gguf_value_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
};

/* Tensor element types, numbered as ggml numbers them (the numbers are in the files).
 * Only the ones listed in tensor_type_info() with supported=true can be computed with;
 * the others are recognised so that the error message can name them. */
enum tensor_type {
    TENSOR_F32 = 0,
    TENSOR_F16 = 1,
    TENSOR_Q4_0 = 2,
    TENSOR_Q4_1 = 3,
    TENSOR_Q5_0 = 6,
    TENSOR_Q5_1 = 7,
    TENSOR_Q8_0 = 8,
    TENSOR_Q8_1 = 9,
    TENSOR_Q2_K = 10,
    TENSOR_Q3_K = 11,
    TENSOR_Q4_K = 12,
    TENSOR_Q5_K = 13,
    TENSOR_Q6_K = 14,
    TENSOR_Q8_K = 15,
    TENSOR_BF16 = 30,
    TENSOR_TYPE_MAX = 40
};

/* Layout of one tensor type: `block_elems` elements are stored in `block_bytes`
 * bytes (F32: 1 element in 4 bytes; Q8_0: 32 elements in 34 bytes). */
struct tensor_type_info {
    const char *name;
    int block_elems;
    int block_bytes;
    bool supported; /* the engine has kernels for it */
};

/* The layout of `type`, or NULL when the number is not a known ggml type. */
const struct tensor_type_info *tensor_type_info(uint32_t type);

/* Bytes taken by a row of `n` elements of `type`; n must be a multiple of the block. */
size_t tensor_row_bytes(enum tensor_type type, int64_t n);

/* A string inside the mapping: not NUL-terminated. */
typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str;

/* One metadata value. Scalars are widened into u64/i64/f64 by their signedness;
 * arrays keep a pointer to their raw little-endian elements (possibly unaligned:
 * read them with gguf_array_*), and string arrays also get an index of gguf_str. */
typedef struct gguf_value {
    enum gguf_value_type type;
    union {
        uint64_t u64;   /* UINT8/16/32/64, BOOL */
        int64_t i64;    /* INT8/16/32/64 */
        double f64;     /* FLOAT32/64 */
        gguf_str str;   /* STRING */
        struct {
            enum gguf_value_type elem_type;
            uint64_t n;
            const uint8_t *raw;     /* first element in the mapping */
            gguf_str *strings;      /* elem_type STRING: n entries (owned by gguf_file) */
        } arr;                      /* ARRAY (nested arrays are parsed but not indexed) */
    } v;
} gguf_value;

typedef struct gguf_kv {
    gguf_str key;
    gguf_value value;
} gguf_kv;

#define GGUF_MAX_DIMS 4

/* One tensor: ne[0] is the innermost (contiguous) dimension, as in ggml. A 2-D weight
 * of shape (rows=ne[1], cols=ne[0]) is stored row after row. */
typedef struct gguf_tensor {
    gguf_str name;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];  /* unused dims are 1 */
    enum tensor_type type;
    uint64_t offset;            /* from the start of the data section */
    uint64_t nbytes;
    const void *data;           /* in the mapping */
} gguf_tensor;

typedef struct gguf_file {
    uint32_t version;
    uint64_t alignment;
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor *tensors;
    const uint8_t *base;    /* the whole file */
    size_t size;
    bool mapped;            /* base is our mmap (munmap on close) */
} gguf_file;

/* Open and validate the GGUF file at `path`. On success returns 0 and sets *out; on
 * error returns -1, writes a message naming the problem into err (errsz bytes) and
 * leaves *out NULL. */
int gguf_open(gguf_file **out, const char *path, char *err, size_t errsz);

/* The same over a buffer the caller owns and keeps alive while the result is used. */
int gguf_parse(gguf_file **out, const void *data, size_t size, char *err, size_t errsz);

/* Unmap and free. NULL is allowed. */
void gguf_close(gguf_file *f);

/* Lookups. Keys are compared as exact strings. Each returns NULL / false when the key
 * is missing or holds another type. The numeric getters accept any integer or float
 * type that converts without loss of meaning (e.g. a UINT32 for gguf_get_u64). */
const gguf_kv *gguf_find(const gguf_file *f, const char *key);
bool gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out);
bool gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
bool gguf_get_f64(const gguf_file *f, const char *key, double *out);
bool gguf_get_bool(const gguf_file *f, const char *key, bool *out);
bool gguf_get_str(const gguf_file *f, const char *key, gguf_str *out);
/* The array under key (any element type), or NULL. */
const gguf_value *gguf_get_array(const gguf_file *f, const char *key);

/* Element i of a numeric array, converted (i must be < arr.n). */
double gguf_array_f64(const gguf_value *arr, uint64_t i);
int64_t gguf_array_i64(const gguf_value *arr, uint64_t i);

/* The tensor with this exact name, or NULL. */
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* True when s equals the NUL-terminated c string. */
bool gguf_str_eq(gguf_str s, const char *c);

/* ---- writer: builds a GGUF v3 file in memory, then saves it ---------------------- */
typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_create(void);
void gguf_writer_free(gguf_writer *w);
void gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_writer_add_f32(gguf_writer *w, const char *key, float v);
void gguf_writer_add_bool(gguf_writer *w, const char *key, bool v);
void gguf_writer_add_str(gguf_writer *w, const char *key, const char *v);
void gguf_writer_add_str_array(gguf_writer *w, const char *key, const char *const *v, size_t n);
void gguf_writer_add_f32_array(gguf_writer *w, const char *key, const float *v, size_t n);
void gguf_writer_add_i32_array(gguf_writer *w, const char *key, const int32_t *v, size_t n);
/* Adds a tensor whose data (tensor_row_bytes(type, ne[0]) * ne[1]*ne[2]*ne[3] bytes) is
 * copied. */
void gguf_writer_add_tensor(gguf_writer *w, const char *name, enum tensor_type type,
                            uint32_t n_dims, const int64_t *ne, const void *data);
/* Writes the file (alignment 32). Returns 0, or -1 with a message in err. */
int gguf_writer_save(gguf_writer *w, const char *path, char *err, size_t errsz);

#endif
