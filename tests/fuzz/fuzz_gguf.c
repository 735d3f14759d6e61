/* fuzz_gguf.c - libFuzzer harness for the GGUF reader (kernels/gguf/gguf.c).
 *
 * Model files come from the internet, so the reader must refuse any byte string it
 * cannot make sense of without reading out of bounds, leaking or invoking undefined
 * behaviour. Each input is parsed from an exact-size copy (so AddressSanitizer sees a
 * read one byte past the end); when it parses, every key, array element and tensor is
 * looked up and touched, so that what the reader accepted is also safe to use.
 * Build with `make fuzz`; how to run it is in tests/fuzz/README.md.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"

/* Makes the compiler keep reads whose values we do not otherwise use. */
static volatile uint64_t sink;

static void touch_bytes(const void *p, uint64_t n)
{
    const uint8_t *b = p;
    if (n > 0)
        sink += b[0] + b[n - 1];
}

/* A NUL-terminated copy of s, as a caller would pass to the lookups (NULL if it holds a
 * NUL, since no C string can name it). */
static char *cstr(gguf_str s)
{
    if (memchr(s.ptr, 0, (size_t)s.len) != NULL)
        return NULL;
    char *c = malloc((size_t)s.len + 1);
    if (c != NULL) {
        memcpy(c, s.ptr, (size_t)s.len);
        c[s.len] = '\0';
    }
    return c;
}

static void exercise_array(const gguf_value *a)
{
    for (uint64_t i = 0; i < a->v.arr.n && i < 4096; i++) {
        sink += (uint64_t)gguf_array_i64(a, i);
        double d = gguf_array_f64(a, i);
        sink += d == d;
        if (a->v.arr.strings != NULL)
            touch_bytes(a->v.arr.strings[i].ptr, a->v.arr.strings[i].len);
    }
    sink += (uint64_t)gguf_array_i64(a, a->v.arr.n);     /* out of range: must be safe */
}

static void exercise_key(const gguf_file *f, const gguf_kv *kv)
{
    char *key = cstr(kv->key);
    if (key == NULL)
        return;
    uint64_t u;
    int64_t i;
    double d;
    bool b;
    gguf_str s;
    if (gguf_find(f, key) != kv)
        abort();    /* keys are unique, so the lookup must find this very entry */
    sink += gguf_get_u64(f, key, &u) + gguf_get_i64(f, key, &i) + gguf_get_f64(f, key, &d) +
            gguf_get_bool(f, key, &b);
    if (gguf_get_str(f, key, &s))
        touch_bytes(s.ptr, s.len);
    const gguf_value *a = gguf_get_array(f, key);
    if (a != NULL)
        exercise_array(a);
    free(key);
}

static void exercise_tensor(const gguf_file *f, const gguf_tensor *t)
{
    const struct tensor_type_info *info = tensor_type_info(t->type);
    if (info == NULL || t->nbytes == 0 || t->offset % f->alignment != 0)
        abort();    /* the reader promised a known type, a nonzero size, an aligned offset */
    touch_bytes(t->data, t->nbytes);
    char *name = cstr(t->name);
    if (name != NULL && gguf_find_tensor(f, name) != t)
        abort();
    free(name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    char err[256];
    gguf_file *f = NULL;
    if (gguf_parse(&f, copy, size, err, sizeof err) == 0) {
        for (uint64_t i = 0; i < f->n_kv; i++)
            exercise_key(f, &f->kv[i]);
        for (uint64_t i = 0; i < f->n_tensors; i++)
            exercise_tensor(f, &f->tensors[i]);
        gguf_close(f);
    } else if (f != NULL || err[0] == '\0') {
        abort();    /* a refusal must leave no result and must say why */
    }
    free(copy);
    return 0;
}
