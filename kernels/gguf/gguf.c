/* gguf.c - the GGUF reader: maps a model file read-only, checks every byte of its
 * structure, and indexes its metadata and tensors (see gguf.h for the format and the
 * contract).
 *
 * The reader trusts nothing in the file. All reads go through a cursor that refuses to
 * step past the end; every count is compared with the bytes that could possibly hold it
 * before anything is allocated; every size is computed with overflow-checked arithmetic.
 * A bad file yields -1 and one message naming the first problem found; the fuzzer
 * (tests/fuzz/fuzz_gguf.c) exists to keep it that way.
 *
 * Nothing is copied: keys, strings and tensor data point into the caller's buffer or our
 * mapping. The only allocations are the kv and tensor tables and, for string arrays
 * (the tokenizer's vocabulary), an index of gguf_str so that callers get O(1) access.
 *
 * The writer lives in gguf_writer.c.
 */
#include "gguf/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC "GGUF"
#define DEFAULT_ALIGNMENT 32
/* Arrays of arrays recurse; a hostile file could nest them deep enough to overflow the
 * stack, and no real file nests at all. */
#define MAX_ARRAY_DEPTH 8
/* The spec caps keys at 65535 bytes; anything longer is corruption. */
#define MAX_KEY_LEN 65535
/* The smallest possible encodings, used to refuse counts the file cannot hold:
 * a kv is key length (8) + at least a one-byte key + type (4) + at least one byte;
 * a tensor info is name length (8) + n_dims (4) + one dim (8) + type (4) + offset (8). */
#define MIN_KV_BYTES 14
#define MIN_TENSOR_INFO_BYTES 32
#define MIN_STRING_BYTES 8
#define MIN_ARRAY_BYTES 12

/* ---- the cursor ------------------------------------------------------------------- */

struct reader {
    const uint8_t *base;
    size_t size;
    size_t pos;
    char *err;
    size_t errsz;
};

/* Records the first error message and returns -1, so callers can `return fail(...)`. */
static int fail(struct reader *r, const char *fmt, ...)
{
    if (r->err != NULL && r->errsz > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err, r->errsz, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static size_t remaining(const struct reader *r)
{
    return r->size - r->pos;
}

/* A printable copy of a name from the file for error messages: a hostile file must not
 * be able to put control characters or megabytes of text into our logs. */
struct printable {
    char s[72];
};

static struct printable printable(gguf_str str)
{
    struct printable p;
    size_t n = str.len < 64 ? (size_t)str.len : 64;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)str.ptr[i];
        p.s[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    strcpy(p.s + n, str.len > 64 ? "..." : "");
    return p;
}

static uint64_t load_le(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = n; i > 0; i--)
        v = (v << 8) | p[i - 1];
    return v;
}

static int read_uint(struct reader *r, size_t n, uint64_t *out, const char *what)
{
    *out = 0;   /* defined even on failure, which lets the compiler prove callers safe */
    if (remaining(r) < n)
        return fail(r, "truncated: %s at byte %zu needs %zu bytes, the file has %zu", what,
                    r->pos, n, r->size);
    *out = load_le(r->base + r->pos, n);
    r->pos += n;
    return 0;
}

static int read_u32(struct reader *r, uint32_t *out, const char *what)
{
    uint64_t v;
    if (read_uint(r, 4, &v, what))
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int read_u64(struct reader *r, uint64_t *out, const char *what)
{
    return read_uint(r, 8, out, what);
}

static int read_str(struct reader *r, gguf_str *out, const char *what)
{
    uint64_t len;
    if (read_u64(r, &len, what))
        return -1;
    if (len > remaining(r))
        return fail(r, "%s: string length %" PRIu64 " at byte %zu runs past the end of the file "
                    "(%zu bytes left; truncated or corrupt)", what, len, r->pos - 8, remaining(r));
    out->ptr = (const char *)r->base + r->pos;
    out->len = len;
    r->pos += (size_t)len;
    return 0;
}

/* ---- metadata values -------------------------------------------------------------- */

static const char *value_type_name(enum gguf_value_type t)
{
    static const char *const names[GGUF_TYPE_COUNT] = {
        "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
        "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64",
    };
    return (unsigned)t < GGUF_TYPE_COUNT ? names[t] : "unknown";
}

/* Bytes of one scalar of type t, or 0 for STRING, ARRAY and unknown types. */
static size_t scalar_size(enum gguf_value_type t)
{
    switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL:
        return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16:
        return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32:
        return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

/* Widens the little-endian scalar at p (scalar_size(t) bytes) into v. */
static void decode_scalar(enum gguf_value_type t, const uint8_t *p, gguf_value *v)
{
    uint64_t raw = load_le(p, scalar_size(t));
    v->type = t;
    switch (t) {
    case GGUF_TYPE_INT8:  v->v.i64 = (int8_t)(uint8_t)raw; break;
    case GGUF_TYPE_INT16: v->v.i64 = (int16_t)(uint16_t)raw; break;
    case GGUF_TYPE_INT32: v->v.i64 = (int32_t)(uint32_t)raw; break;
    case GGUF_TYPE_INT64: v->v.i64 = (int64_t)raw; break;
    case GGUF_TYPE_BOOL:  v->v.u64 = raw != 0; break;
    case GGUF_TYPE_FLOAT32: {
        uint32_t bits = (uint32_t)raw;
        float f;
        memcpy(&f, &bits, sizeof f);
        v->v.f64 = f;
        break;
    }
    case GGUF_TYPE_FLOAT64: memcpy(&v->v.f64, &raw, sizeof v->v.f64); break;
    default:              v->v.u64 = raw; break;
    }
}

static int read_array(struct reader *r, gguf_value *v, int depth, bool index_strings);

static int skip_strings(struct reader *r, uint64_t n, gguf_str *index)
{
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        if (read_str(r, &s, "array string"))
            return -1;
        if (index != NULL)
            index[i] = s;
    }
    return 0;
}

static int skip_nested_arrays(struct reader *r, uint64_t n, int depth)
{
    if (depth >= MAX_ARRAY_DEPTH)
        return fail(r, "arrays nested deeper than %d levels at byte %zu", MAX_ARRAY_DEPTH, r->pos);
    for (uint64_t i = 0; i < n; i++) {
        gguf_value inner;
        if (read_array(r, &inner, depth + 1, false))
            return -1;
    }
    return 0;
}

/* Reads an array's element type, count and elements. Only top-level string arrays get a
 * gguf_str index (index_strings); nested ones are walked to find their end. */
static int read_array(struct reader *r, gguf_value *v, int depth, bool index_strings)
{
    uint32_t et;
    uint64_t n;
    if (read_u32(r, &et, "array element type") || read_u64(r, &n, "array length"))
        return -1;
    if (et >= GGUF_TYPE_COUNT)
        return fail(r, "unknown array element type %" PRIu32 " at byte %zu", et, r->pos - 12);
    v->type = GGUF_TYPE_ARRAY;
    v->v.arr.elem_type = (enum gguf_value_type)et;
    v->v.arr.n = n;
    v->v.arr.raw = r->base + r->pos;
    v->v.arr.strings = NULL;
    size_t es = scalar_size(et);
    size_t min_bytes = es ? es : et == GGUF_TYPE_STRING ? MIN_STRING_BYTES : MIN_ARRAY_BYTES;
    if (n > remaining(r) / min_bytes)
        return fail(r, "array of %" PRIu64 " %s elements at byte %zu runs past the end of the "
                    "file (truncated or corrupt)", n, value_type_name(et), r->pos);
    if (es) {
        r->pos += (size_t)n * es;
        return 0;
    }
    if (et == GGUF_TYPE_ARRAY)
        return skip_nested_arrays(r, n, depth);
    if (index_strings && n > 0) {
        v->v.arr.strings = calloc((size_t)n, sizeof(gguf_str));
        if (v->v.arr.strings == NULL)
            return fail(r, "out of memory indexing an array of %" PRIu64 " strings", n);
    }
    return skip_strings(r, n, v->v.arr.strings);
}

static int read_value(struct reader *r, uint32_t type, gguf_value *v)
{
    if (type >= GGUF_TYPE_COUNT)
        return fail(r, "unknown metadata value type %" PRIu32, type);
    if (type == GGUF_TYPE_STRING) {
        v->type = GGUF_TYPE_STRING;
        return read_str(r, &v->v.str, "string value");
    }
    if (type == GGUF_TYPE_ARRAY)
        return read_array(r, v, 0, true);
    size_t es = scalar_size(type);
    if (remaining(r) < es)
        return fail(r, "truncated: %s value at byte %zu", value_type_name(type), r->pos);
    decode_scalar(type, r->base + r->pos, v);
    r->pos += es;
    return 0;
}

/* ---- header and metadata ---------------------------------------------------------- */

static int parse_header(struct reader *r, gguf_file *f)
{
    if (r->size < 4)
        return fail(r, "truncated: %zu bytes is too short for the GGUF magic", r->size);
    if (memcmp(r->base, GGUF_MAGIC, 4) != 0)
        return fail(r, "bad magic %02x %02x %02x %02x: not a GGUF file", r->base[0], r->base[1],
                    r->base[2], r->base[3]);
    r->pos = 4;
    if (read_u32(r, &f->version, "version"))
        return -1;
    if (f->version == 1)
        return fail(r, "GGUF version 1 is not supported (only versions 2 and 3)");
    if (f->version == 0x02000000 || f->version == 0x03000000)
        return fail(r, "unsupported GGUF version %" PRIu32 " (a big-endian file? only "
                    "little-endian versions 2 and 3 are supported)", f->version);
    if (f->version != 2 && f->version != 3)
        return fail(r, "unsupported GGUF version %" PRIu32 " (only versions 2 and 3)", f->version);
    if (read_u64(r, &f->n_tensors, "tensor count") || read_u64(r, &f->n_kv, "metadata count"))
        return -1;
    if (f->n_kv > remaining(r) / MIN_KV_BYTES)
        return fail(r, "metadata count %" PRIu64 " is impossible: only %zu bytes follow the "
                    "header", f->n_kv, remaining(r));
    if (f->n_tensors > remaining(r) / MIN_TENSOR_INFO_BYTES)
        return fail(r, "tensor count %" PRIu64 " is impossible: only %zu bytes follow the "
                    "header", f->n_tensors, remaining(r));
    return 0;
}

static int parse_kv(struct reader *r, gguf_kv *kv, uint64_t i)
{
    uint32_t type;
    if (read_str(r, &kv->key, "metadata key"))
        return -1;
    if (kv->key.len == 0 || kv->key.len > MAX_KEY_LEN)
        return fail(r, "metadata key %" PRIu64 " has length %" PRIu64 " (must be 1 to %d)", i,
                    kv->key.len, MAX_KEY_LEN);
    if (read_u32(r, &type, "metadata value type"))
        return -1;
    if (read_value(r, type, &kv->value)) {
        /* Say which key was being read: the lower-level message only has a byte offset. */
        if (r->err != NULL && r->errsz > 0) {
            char inner[256];
            snprintf(inner, sizeof inner, "%s", r->err);
            fail(r, "key '%s': %s", printable(kv->key).s, inner);
        }
        return -1;
    }
    return 0;
}

static int parse_kvs(struct reader *r, gguf_file *f)
{
    if (f->n_kv == 0)
        return 0;
    f->kv = calloc((size_t)f->n_kv, sizeof *f->kv);
    if (f->kv == NULL)
        return fail(r, "out of memory for %" PRIu64 " metadata entries", f->n_kv);
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (parse_kv(r, &f->kv[i], i))
            return -1;
    return 0;
}

/* Sorting pointers to the names lets duplicates be found in O(n log n): a hostile file
 * may hold hundreds of thousands of names. */
static int cmp_str_ptr(const void *a, const void *b)
{
    const gguf_str *x = *(const gguf_str *const *)a, *y = *(const gguf_str *const *)b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->len ? memcmp(x->ptr, y->ptr, (size_t)x->len) : 0;
}

/* Fails when two of the n names (at `stride` bytes apart starting at first) are equal. */
static int check_unique(struct reader *r, const void *first, size_t stride, uint64_t n,
                        const char *what)
{
    if (n < 2)
        return 0;
    const gguf_str **v = malloc((size_t)n * sizeof *v);
    if (v == NULL)
        return fail(r, "out of memory checking %" PRIu64 " %ss", n, what);
    for (uint64_t i = 0; i < n; i++)
        v[i] = (const gguf_str *)((const uint8_t *)first + i * stride);
    qsort(v, (size_t)n, sizeof *v, cmp_str_ptr);
    int rc = 0;
    for (uint64_t i = 1; i < n && rc == 0; i++)
        if (cmp_str_ptr(&v[i - 1], &v[i]) == 0)
            rc = fail(r, "duplicate %s '%s'", what, printable(*v[i]).s);
    free(v);
    return rc;
}

static int read_alignment(struct reader *r, gguf_file *f)
{
    f->alignment = DEFAULT_ALIGNMENT;
    const gguf_kv *kv = gguf_find(f, "general.alignment");
    if (kv == NULL)
        return 0;
    enum gguf_value_type t = kv->value.type;
    if (t != GGUF_TYPE_UINT8 && t != GGUF_TYPE_UINT16 && t != GGUF_TYPE_UINT32 &&
        t != GGUF_TYPE_UINT64)
        return fail(r, "general.alignment has type %s; it must be an unsigned integer",
                    value_type_name(t));
    uint64_t a = kv->value.v.u64;
    if (a == 0 || (a & (a - 1)) != 0)
        return fail(r, "general.alignment %" PRIu64 " is not a nonzero power of two", a);
    f->alignment = a;
    return 0;
}

/* ---- tensor infos ----------------------------------------------------------------- */

static int read_dims(struct reader *r, gguf_tensor *t, const char *name)
{
    if (read_u32(r, &t->n_dims, "tensor dimension count"))
        return -1;
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
        return fail(r, "tensor '%s': %" PRIu32 " dimensions (must be 1 to %d)", name, t->n_dims,
                    GGUF_MAX_DIMS);
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t ne;
        if (read_u64(r, &ne, "tensor dimension"))
            return -1;
        if (ne == 0 || ne > (uint64_t)INT64_MAX)
            return fail(r, "tensor '%s': dimension %" PRIu32 " is %" PRId64 " (must be positive)",
                        name, d, (int64_t)ne);
        t->ne[d] = (int64_t)ne;
    }
    return 0;
}

/* Computes t->nbytes from its type and dims, refusing anything that overflows. */
static int size_tensor(struct reader *r, gguf_tensor *t, const char *name)
{
    const struct tensor_type_info *info = tensor_type_info(t->type);
    int64_t elems = t->ne[0];
    for (int d = 1; d < GGUF_MAX_DIMS; d++)
        if (__builtin_mul_overflow(elems, t->ne[d], &elems))
            return fail(r, "tensor '%s': element count overflows", name);
    if (t->ne[0] % info->block_elems != 0)
        return fail(r, "tensor '%s': ne[0]=%" PRId64 " is not a multiple of the %s block of %d",
                    name, t->ne[0], info->name, info->block_elems);
    uint64_t row, rows = (uint64_t)(elems / t->ne[0]);
    if (__builtin_mul_overflow((uint64_t)(t->ne[0] / info->block_elems),
                               (uint64_t)info->block_bytes, &row) ||
        row > SIZE_MAX || __builtin_mul_overflow(row, rows, &t->nbytes))
        return fail(r, "tensor '%s': size in bytes overflows", name);
    t->nbytes = (uint64_t)tensor_row_bytes(t->type, t->ne[0]) * rows;
    return 0;
}

static int parse_tensor_info(struct reader *r, gguf_tensor *t)
{
    uint32_t type;
    if (read_str(r, &t->name, "tensor name"))
        return -1;
    struct printable pn = printable(t->name);
    const char *name = pn.s;
    if (read_dims(r, t, name) || read_u32(r, &type, "tensor type"))
        return -1;
    if (tensor_type_info(type) == NULL)
        return fail(r, "tensor '%s': unknown tensor type %" PRIu32, name, type);
    t->type = (enum tensor_type)type;
    if (read_u64(r, &t->offset, "tensor offset"))
        return -1;
    return size_tensor(r, t, name);
}

static int parse_tensor_infos(struct reader *r, gguf_file *f)
{
    if (f->n_tensors == 0)
        return 0;
    /* Re-check against what is left now that the metadata has been read. */
    if (f->n_tensors > remaining(r) / MIN_TENSOR_INFO_BYTES)
        return fail(r, "tensor count %" PRIu64 " is impossible: only %zu bytes follow the "
                    "metadata", f->n_tensors, remaining(r));
    f->tensors = calloc((size_t)f->n_tensors, sizeof *f->tensors);
    if (f->tensors == NULL)
        return fail(r, "out of memory for %" PRIu64 " tensors", f->n_tensors);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (parse_tensor_info(r, &f->tensors[i]))
            return -1;
    return 0;
}

/* ---- tensor data ------------------------------------------------------------------ */

static int cmp_tensor_offset(const void *a, const void *b)
{
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int check_overlaps(struct reader *r, gguf_file *f)
{
    if (f->n_tensors < 2)
        return 0;
    gguf_tensor **v = malloc((size_t)f->n_tensors * sizeof *v);
    if (v == NULL)
        return fail(r, "out of memory checking %" PRIu64 " tensors", f->n_tensors);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        v[i] = &f->tensors[i];
    qsort(v, (size_t)f->n_tensors, sizeof *v, cmp_tensor_offset);
    int rc = 0;
    for (uint64_t i = 1; i < f->n_tensors && rc == 0; i++) {
        /* offset + nbytes cannot overflow: place_tensor checked it against the file. */
        if (v[i - 1]->offset + v[i - 1]->nbytes > v[i]->offset) {
            char a[72];
            snprintf(a, sizeof a, "%s", printable(v[i - 1]->name).s);
            rc = fail(r, "tensors '%s' and '%s' overlap in the data section", a,
                      printable(v[i]->name).s);
        }
    }
    free(v);
    return rc;
}

static int place_tensor(struct reader *r, gguf_file *f, gguf_tensor *t, size_t data_start)
{
    size_t avail = r->size - data_start;
    if (t->offset % f->alignment != 0)
        return fail(r, "tensor '%s': offset %" PRIu64 " is misaligned (not a multiple of the "
                    "alignment %" PRIu64 ")", printable(t->name).s, t->offset, f->alignment);
    if (t->offset > avail || t->nbytes > avail - t->offset)
        return fail(r, "tensor '%s': data at offset %" PRIu64 " of %" PRIu64 " bytes is out of "
                    "range: the data section holds %zu bytes (truncated or corrupt)",
                    printable(t->name).s, t->offset, t->nbytes, avail);
    t->data = r->base + data_start + t->offset;
    return 0;
}

/* The data section starts at the first aligned offset after the tensor infos. */
static int place_tensors(struct reader *r, gguf_file *f)
{
    if (f->n_tensors == 0)
        return 0;
    uint64_t start, pad = (f->alignment - r->pos % f->alignment) % f->alignment;
    if (__builtin_add_overflow((uint64_t)r->pos, pad, &start) || start > r->size)
        return fail(r, "truncated: the data section would start at byte %" PRIu64 ", past the "
                    "end of the file (%zu bytes)", start, r->size);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (place_tensor(r, f, &f->tensors[i], (size_t)start))
            return -1;
    return check_overlaps(r, f);
}

/* ---- open, parse, close ----------------------------------------------------------- */

static int parse_all(struct reader *r, gguf_file *f)
{
    if (parse_header(r, f) || parse_kvs(r, f))
        return -1;
    if (f->n_kv > 1 && check_unique(r, &f->kv[0].key, sizeof(gguf_kv), f->n_kv, "metadata key"))
        return -1;
    if (read_alignment(r, f) || parse_tensor_infos(r, f))
        return -1;
    if (f->n_tensors > 1 &&
        check_unique(r, &f->tensors[0].name, sizeof(gguf_tensor), f->n_tensors, "tensor name"))
        return -1;
    return place_tensors(r, f);
}

int gguf_parse(gguf_file **out, const void *data, size_t size, char *err, size_t errsz)
{
    struct reader r = {data, size, 0, err, errsz};
    if (err != NULL && errsz > 0)
        err[0] = '\0';
    if (out == NULL)
        return fail(&r, "gguf_parse: no place for the result");
    *out = NULL;
    if (data == NULL && size > 0)
        return fail(&r, "gguf_parse: NULL buffer");
    gguf_file *f = calloc(1, sizeof *f);
    if (f == NULL)
        return fail(&r, "out of memory");
    f->base = data;
    f->size = size;
    if (parse_all(&r, f)) {
        gguf_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

static int open_fail(char *err, size_t errsz, const char *fmt, ...)
{
    if (err != NULL && errsz > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errsz, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int gguf_open(gguf_file **out, const char *path, char *err, size_t errsz)
{
    if (out == NULL || path == NULL)
        return open_fail(err, errsz, "gguf_open: no path or no place for the result");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return open_fail(err, errsz, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return open_fail(err, errsz, "not a regular file");
    }
    size_t size = (size_t)st.st_size;
    void *map = size ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    int saved = errno;
    close(fd);
    if (size == 0)
        return open_fail(err, errsz, "truncated: the file is empty");
    if (map == MAP_FAILED)
        return open_fail(err, errsz, "cannot map: %s", strerror(saved));
    if (gguf_parse(out, map, size, err, errsz)) {
        munmap(map, size);
        return -1;
    }
    (*out)->mapped = true;
    return 0;
}

void gguf_close(gguf_file *f)
{
    if (f == NULL)
        return;
    for (uint64_t i = 0; f->kv != NULL && i < f->n_kv; i++)
        if (f->kv[i].value.type == GGUF_TYPE_ARRAY)
            free(f->kv[i].value.v.arr.strings);
    free(f->kv);
    free(f->tensors);
    if (f->mapped)
        munmap((void *)f->base, f->size);
    free(f);
}

/* ---- lookups ---------------------------------------------------------------------- */

bool gguf_str_eq(gguf_str s, const char *c)
{
    if (c == NULL)
        return false;
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

const gguf_kv *gguf_find(const gguf_file *f, const char *key)
{
    if (f == NULL || key == NULL)
        return NULL;
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (gguf_str_eq(f->kv[i].key, key))
            return &f->kv[i];
    return NULL;
}

static bool is_unsigned(enum gguf_value_type t)
{
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 ||
           t == GGUF_TYPE_UINT64;
}

static bool is_signed(enum gguf_value_type t)
{
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 ||
           t == GGUF_TYPE_INT64;
}

static bool is_float(enum gguf_value_type t)
{
    return t == GGUF_TYPE_FLOAT32 || t == GGUF_TYPE_FLOAT64;
}

/* 2^63 and 2^64 as doubles: the bounds for converting floats without undefined behaviour. */
#define TWO_POW_63 9223372036854775808.0
#define TWO_POW_64 18446744073709551616.0

static bool value_u64(const gguf_value *v, uint64_t *out)
{
    if (is_unsigned(v->type)) {
        *out = v->v.u64;
        return true;
    }
    if (is_signed(v->type) && v->v.i64 >= 0) {
        *out = (uint64_t)v->v.i64;
        return true;
    }
    double d = v->v.f64;
    if (is_float(v->type) && d >= 0 && d < TWO_POW_64 && (double)(uint64_t)d == d) {
        *out = (uint64_t)d;
        return true;
    }
    return false;
}

static bool value_i64(const gguf_value *v, int64_t *out)
{
    if (is_signed(v->type)) {
        *out = v->v.i64;
        return true;
    }
    if (is_unsigned(v->type) && v->v.u64 <= (uint64_t)INT64_MAX) {
        *out = (int64_t)v->v.u64;
        return true;
    }
    double d = v->v.f64;
    if (is_float(v->type) && d >= -TWO_POW_63 && d < TWO_POW_63 && (double)(int64_t)d == d) {
        *out = (int64_t)d;
        return true;
    }
    return false;
}

static bool value_f64(const gguf_value *v, double *out)
{
    if (is_float(v->type))
        *out = v->v.f64;
    else if (is_signed(v->type))
        *out = (double)v->v.i64;
    else if (is_unsigned(v->type))
        *out = (double)v->v.u64;
    else
        return false;
    return true;
}

bool gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out)
{
    const gguf_kv *kv = gguf_find(f, key);
    return kv != NULL && out != NULL && value_u64(&kv->value, out);
}

bool gguf_get_i64(const gguf_file *f, const char *key, int64_t *out)
{
    const gguf_kv *kv = gguf_find(f, key);
    return kv != NULL && out != NULL && value_i64(&kv->value, out);
}

bool gguf_get_f64(const gguf_file *f, const char *key, double *out)
{
    const gguf_kv *kv = gguf_find(f, key);
    return kv != NULL && out != NULL && value_f64(&kv->value, out);
}

bool gguf_get_bool(const gguf_file *f, const char *key, bool *out)
{
    const gguf_kv *kv = gguf_find(f, key);
    if (kv == NULL || out == NULL || kv->value.type != GGUF_TYPE_BOOL)
        return false;
    *out = kv->value.v.u64 != 0;
    return true;
}

bool gguf_get_str(const gguf_file *f, const char *key, gguf_str *out)
{
    const gguf_kv *kv = gguf_find(f, key);
    if (kv == NULL || out == NULL || kv->value.type != GGUF_TYPE_STRING)
        return false;
    *out = kv->value.v.str;
    return true;
}

const gguf_value *gguf_get_array(const gguf_file *f, const char *key)
{
    const gguf_kv *kv = gguf_find(f, key);
    return kv != NULL && kv->value.type == GGUF_TYPE_ARRAY ? &kv->value : NULL;
}

/* Decodes element i of a numeric (or bool) array; false for other arrays or i out of range. */
static bool array_elem(const gguf_value *arr, uint64_t i, gguf_value *out)
{
    if (arr == NULL || arr->type != GGUF_TYPE_ARRAY || i >= arr->v.arr.n)
        return false;
    size_t es = scalar_size(arr->v.arr.elem_type);
    if (es == 0)
        return false;
    decode_scalar(arr->v.arr.elem_type, arr->v.arr.raw + i * es, out);
    return true;
}

double gguf_array_f64(const gguf_value *arr, uint64_t i)
{
    gguf_value e;
    double d = 0;
    if (!array_elem(arr, i, &e))
        return 0;
    if (e.type == GGUF_TYPE_BOOL)
        return (double)e.v.u64;
    return value_f64(&e, &d) ? d : 0;
}

int64_t gguf_array_i64(const gguf_value *arr, uint64_t i)
{
    gguf_value e;
    if (!array_elem(arr, i, &e))
        return 0;
    if (e.type == GGUF_TYPE_BOOL || is_unsigned(e.type))
        return e.v.u64 > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)e.v.u64;
    if (is_signed(e.type))
        return e.v.i64;
    /* Floats truncate toward zero, saturating, so no input is undefined behaviour. */
    double d = e.v.f64;
    if (d != d)
        return 0;
    if (d >= TWO_POW_63)
        return INT64_MAX;
    if (d < -TWO_POW_63)
        return INT64_MIN;
    return (int64_t)d;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    if (f == NULL || name == NULL)
        return NULL;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (gguf_str_eq(f->tensors[i].name, name))
            return &f->tensors[i];
    return NULL;
}
