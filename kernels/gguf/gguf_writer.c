/* gguf_writer.c - builds a GGUF v3 file in memory and saves it (the writer half of
 * gguf.h). The bench's random-weight models (kernels/model/random_model.c), the tests
 * and the fuzzer's seed files are made with it.
 *
 * Metadata is serialised as it is added, so keys land in insertion order. Tensors are
 * kept (with a copy of their data) until save, which lays them out one after another,
 * each aligned to 32 bytes, the default alignment, so no general.alignment key is needed.
 *
 * The add functions return nothing: the first error (out of memory, a duplicate key, a
 * bad shape) is recorded, later calls do nothing, and gguf_writer_save reports it. The
 * writer therefore never aborts and callers check once.
 */
#include "gguf/gguf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGNMENT 32
#define MAX_KEY_LEN 65535

struct buf {
    uint8_t *p;
    size_t len, cap;
};

struct wtensor {
    char *name;
    enum tensor_type type;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    size_t nbytes;
    void *data;
};

struct gguf_writer {
    struct buf kv;          /* the serialised metadata, in insertion order */
    uint64_t n_kv;
    char **keys;            /* for refusing duplicates, which the reader would refuse */
    size_t n_keys, cap_keys;
    struct wtensor *tensors;
    size_t n_tensors, cap_tensors;
    bool failed;
    char err[256];
};

/* Records the first error; later ones are consequences and would only hide the cause. */
static void wfail(gguf_writer *w, const char *fmt, ...)
{
    if (w->failed)
        return;
    w->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof w->err, fmt, ap);
    va_end(ap);
}

/* Makes room for `extra` more elements of `size` bytes in *p (capacity *cap). */
static bool grow(void **p, size_t *cap, size_t len, size_t extra, size_t size)
{
    if (extra <= *cap - len)
        return true;
    size_t want = *cap ? *cap : 16;
    while (want - len < extra) {
        if (want > SIZE_MAX / 2 / size)
            return false;
        want *= 2;
    }
    void *q = realloc(*p, want * size);
    if (q == NULL)
        return false;
    *p = q;
    *cap = want;
    return true;
}

static void put(gguf_writer *w, const void *data, size_t n)
{
    if (w->failed || n == 0)
        return;
    if (!grow((void **)&w->kv.p, &w->kv.cap, w->kv.len, n, 1)) {
        wfail(w, "out of memory serialising metadata");
        return;
    }
    memcpy(w->kv.p + w->kv.len, data, n);
    w->kv.len += n;
}

static void put_le(gguf_writer *w, uint64_t v, size_t n)
{
    uint8_t b[8];
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    put(w, b, n);
}

static void put_str(gguf_writer *w, const char *s)
{
    size_t n = strlen(s);
    put_le(w, n, 8);
    put(w, s, n);
}

static void put_f32(gguf_writer *w, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_le(w, bits, 4);
}

gguf_writer *gguf_writer_create(void)
{
    return calloc(1, sizeof(gguf_writer));
}

void gguf_writer_free(gguf_writer *w)
{
    if (w == NULL)
        return;
    for (size_t i = 0; i < w->n_keys; i++)
        free(w->keys[i]);
    for (size_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    free(w->keys);
    free(w->tensors);
    free(w->kv.p);
    free(w);
}

/* Starts a kv: checks and remembers the key, writes it and the value type. Returns
 * false (with the error recorded) when the value must not be written. */
static bool begin_kv(gguf_writer *w, const char *key, enum gguf_value_type type)
{
    if (w == NULL || w->failed)
        return false;
    if (key == NULL || key[0] == '\0' || strlen(key) > MAX_KEY_LEN) {
        wfail(w, "metadata key is missing, empty or longer than %d bytes", MAX_KEY_LEN);
        return false;
    }
    for (size_t i = 0; i < w->n_keys; i++)
        if (strcmp(w->keys[i], key) == 0) {
            wfail(w, "duplicate metadata key '%s'", key);
            return false;
        }
    char *copy = strdup(key);
    if (copy == NULL ||
        !grow((void **)&w->keys, &w->cap_keys, w->n_keys, 1, sizeof *w->keys)) {
        free(copy);
        wfail(w, "out of memory adding key '%s'", key);
        return false;
    }
    w->keys[w->n_keys++] = copy;
    put_str(w, key);
    put_le(w, (uint64_t)type, 4);
    w->n_kv++;
    return !w->failed;
}

void gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v)
{
    if (begin_kv(w, key, GGUF_TYPE_UINT32))
        put_le(w, v, 4);
}

void gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v)
{
    if (begin_kv(w, key, GGUF_TYPE_INT32))
        put_le(w, (uint32_t)v, 4);
}

void gguf_writer_add_f32(gguf_writer *w, const char *key, float v)
{
    if (begin_kv(w, key, GGUF_TYPE_FLOAT32))
        put_f32(w, v);
}

void gguf_writer_add_bool(gguf_writer *w, const char *key, bool v)
{
    if (begin_kv(w, key, GGUF_TYPE_BOOL))
        put_le(w, v ? 1 : 0, 1);
}

void gguf_writer_add_str(gguf_writer *w, const char *key, const char *v)
{
    if (w != NULL && v == NULL)
        wfail(w, "key '%s': NULL string", key ? key : "");
    if (begin_kv(w, key, GGUF_TYPE_STRING))
        put_str(w, v);
}

/* Starts an array kv of n elements; v (the caller's elements) may be NULL only when n is 0. */
static bool begin_array(gguf_writer *w, const char *key, enum gguf_value_type et,
                        const void *v, size_t n)
{
    if (w != NULL && v == NULL && n > 0)
        wfail(w, "key '%s': NULL array of %zu elements", key ? key : "", n);
    if (!begin_kv(w, key, GGUF_TYPE_ARRAY))
        return false;
    put_le(w, (uint64_t)et, 4);
    put_le(w, n, 8);
    return !w->failed;
}

void gguf_writer_add_str_array(gguf_writer *w, const char *key, const char *const *v, size_t n)
{
    if (!begin_array(w, key, GGUF_TYPE_STRING, v, n))
        return;
    for (size_t i = 0; i < n; i++) {
        if (v[i] == NULL) {
            wfail(w, "key '%s': string %zu is NULL", key, i);
            return;
        }
        put_str(w, v[i]);
    }
}

void gguf_writer_add_f32_array(gguf_writer *w, const char *key, const float *v, size_t n)
{
    if (begin_array(w, key, GGUF_TYPE_FLOAT32, v, n))
        for (size_t i = 0; i < n; i++)
            put_f32(w, v[i]);
}

void gguf_writer_add_i32_array(gguf_writer *w, const char *key, const int32_t *v, size_t n)
{
    if (begin_array(w, key, GGUF_TYPE_INT32, v, n))
        for (size_t i = 0; i < n; i++)
            put_le(w, (uint32_t)v[i], 4);
}

/* ---- tensors ---------------------------------------------------------------------- */

/* The byte size of a tensor of this shape, or 0 (with the error recorded) when the
 * shape is one the reader would refuse. */
static size_t tensor_bytes(gguf_writer *w, const char *name, enum tensor_type type,
                           uint32_t n_dims, const int64_t *ne)
{
    const struct tensor_type_info *info = tensor_type_info(type);
    if (info == NULL) {
        wfail(w, "tensor '%s': unknown tensor type %d", name, (int)type);
        return 0;
    }
    if (n_dims == 0 || n_dims > GGUF_MAX_DIMS || ne == NULL) {
        wfail(w, "tensor '%s': %u dimensions (must be 1 to %d)", name, n_dims, GGUF_MAX_DIMS);
        return 0;
    }
    for (uint32_t d = 0; d < n_dims; d++)
        if (ne[d] <= 0) {
            wfail(w, "tensor '%s': dimension %u is %lld", name, d, (long long)ne[d]);
            return 0;
        }
    if (ne[0] % info->block_elems != 0) {
        wfail(w, "tensor '%s': ne[0]=%lld is not a multiple of the %s block of %d", name,
              (long long)ne[0], info->name, info->block_elems);
        return 0;
    }
    size_t bytes = (size_t)(ne[0] / info->block_elems);
    bool overflow = __builtin_mul_overflow(bytes, (size_t)info->block_bytes, &bytes);
    for (uint32_t d = 1; d < n_dims; d++)
        overflow |= __builtin_mul_overflow(bytes, (size_t)ne[d], &bytes);
    if (overflow) {
        wfail(w, "tensor '%s': size overflows", name);
        return 0;
    }
    return bytes;
}

static bool tensor_name_ok(gguf_writer *w, const char *name)
{
    if (name == NULL || strlen(name) > MAX_KEY_LEN) {
        wfail(w, "tensor name is missing or longer than %d bytes", MAX_KEY_LEN);
        return false;
    }
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0) {
            wfail(w, "duplicate tensor name '%s'", name);
            return false;
        }
    return true;
}

void gguf_writer_add_tensor(gguf_writer *w, const char *name, enum tensor_type type,
                            uint32_t n_dims, const int64_t *ne, const void *data)
{
    if (w == NULL || w->failed || !tensor_name_ok(w, name))
        return;
    size_t nbytes = tensor_bytes(w, name, type, n_dims, ne);
    if (nbytes == 0)
        return;
    if (data == NULL) {
        wfail(w, "tensor '%s': NULL data", name);
        return;
    }
    struct wtensor t = {.name = strdup(name), .type = type, .n_dims = n_dims,
                        .nbytes = nbytes, .data = malloc(nbytes)};
    if (t.name == NULL || t.data == NULL ||
        !grow((void **)&w->tensors, &w->cap_tensors, w->n_tensors, 1, sizeof *w->tensors)) {
        free(t.name);
        free(t.data);
        wfail(w, "out of memory adding tensor '%s' (%zu bytes)", name, nbytes);
        return;
    }
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t.ne[d] = d < (int)n_dims ? ne[d] : 1;
    memcpy(t.data, data, nbytes);
    w->tensors[w->n_tensors++] = t;
}

/* ---- saving ----------------------------------------------------------------------- */

static uint64_t align_up(uint64_t x)
{
    return (x + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
}

struct out {
    FILE *fp;
    uint64_t pos;
    bool ok;
};

static void emit(struct out *o, const void *p, size_t n)
{
    if (o->ok && n > 0 && fwrite(p, 1, n, o->fp) != n)
        o->ok = false;
    o->pos += n;
}

static void emit_le(struct out *o, uint64_t v, size_t n)
{
    uint8_t b[8];
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    emit(o, b, n);
}

static void emit_str(struct out *o, const char *s)
{
    size_t n = strlen(s);
    emit_le(o, n, 8);
    emit(o, s, n);
}

static void emit_padding(struct out *o)
{
    static const uint8_t zeros[ALIGNMENT];
    emit(o, zeros, (size_t)(align_up(o->pos) - o->pos));
}

/* Header, metadata, tensor infos (offsets packed, each aligned), padding, data. */
static void emit_file(struct out *o, const gguf_writer *w)
{
    emit(o, "GGUF", 4);
    emit_le(o, 3, 4);
    emit_le(o, w->n_tensors, 8);
    emit_le(o, w->n_kv, 8);
    emit(o, w->kv.p, w->kv.len);
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const struct wtensor *t = &w->tensors[i];
        emit_str(o, t->name);
        emit_le(o, t->n_dims, 4);
        for (uint32_t d = 0; d < t->n_dims; d++)
            emit_le(o, (uint64_t)t->ne[d], 8);
        emit_le(o, (uint64_t)t->type, 4);
        emit_le(o, offset, 8);
        offset = align_up(offset + t->nbytes);
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        emit_padding(o);
        emit(o, w->tensors[i].data, w->tensors[i].nbytes);
    }
}

static int save_fail(char *err, size_t errsz, const char *fmt, ...)
{
    if (err != NULL && errsz > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errsz, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* The file is written beside its destination and renamed into place, so a failed or
 * interrupted save never leaves a truncated model where a good one is expected. */
int gguf_writer_save(gguf_writer *w, const char *path, char *err, size_t errsz)
{
    if (w == NULL || path == NULL)
        return save_fail(err, errsz, "gguf_writer_save: no writer or no path");
    if (w->failed)
        return save_fail(err, errsz, "%s", w->err);
    size_t n = strlen(path) + 8;
    char *tmp = malloc(n);
    if (tmp == NULL)
        return save_fail(err, errsz, "out of memory");
    snprintf(tmp, n, "%s.tmp", path);
    struct out o = {fopen(tmp, "wb"), 0, true};
    if (o.fp == NULL) {
        int e = errno;
        free(tmp);
        return save_fail(err, errsz, "cannot create %s: %s", path, strerror(e));
    }
    emit_file(&o, w);
    int e = errno;
    if (fclose(o.fp) != 0 && o.ok) {
        o.ok = false;
        e = errno;
    }
    if (o.ok && rename(tmp, path) != 0) {
        o.ok = false;
        e = errno;
    }
    if (!o.ok)
        remove(tmp);
    free(tmp);
    return o.ok ? 0 : save_fail(err, errsz, "writing %s: %s", path, strerror(e));
}
