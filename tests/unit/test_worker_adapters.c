/* test_worker_adapters.c - the worker's adapter store (services/worker/adapters.h):
 * an adapter is loaded when first named, served from memory after, read again when its
 * file changes while the old version stays with the requests that hold it; bad names
 * (path escapes), missing files and files that are not adapters are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adapters.h"
#include "engine_model.h"
#include "model/lora.h"

#define STORIES "tests/data/models/stories260K.gguf"

static void write_adapter(const engine_model *m, const char *path, float value)
{
    char err[256];
    llama_lora *l = lora_create(m->llama, 2, 4.0f, LORA_ATTENTION_TARGETS);
    l->m[0].b[0] = value;
    assert_int_equal(lora_save(l, path, err, sizeof err), 0);
    lora_free(l);
}

static void test_store(void **state)
{
    (void)state;
    char err[512], dir[64], path[128];
    engine_model *m;
    assert_int_equal(engine_model_open(&m, STORIES, err, sizeof err), 0);
    snprintf(dir, sizeof dir, "/tmp/citadel_adapters_%d", (int)getpid());
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/wiz.gguf", dir);
    write_adapter(m, path, 1.0f);

    adapter_store s;
    adapter_store_init(&s, m, dir);
    const engine_adapter *a, *b;
    assert_int_equal(adapter_store_acquire(&s, "wiz", &a, err, sizeof err), ADAPTER_OK);
    assert_int_equal(adapter_store_acquire(&s, "wiz", &b, err, sizeof err), ADAPTER_OK);
    assert_ptr_equal(a, b);                        /* loaded once */
    assert_true(a->lora->m[0].b[0] == 1.0f);
    adapter_store_release(&s, b);

    /* a new version of the file: new requests get it, the holder keeps the old one */
    sleep(1);   /* a different modification time even on coarse file systems */
    write_adapter(m, path, 2.0f);
    assert_int_equal(adapter_store_acquire(&s, "wiz", &b, err, sizeof err), ADAPTER_OK);
    assert_ptr_not_equal(a, b);
    assert_true(b->lora->m[0].b[0] == 2.0f && a->lora->m[0].b[0] == 1.0f);
    assert_int_equal(adapter_store_loaded(&s), 2);
    adapter_store_release(&s, a);                  /* the old version goes with its last holder */
    assert_int_equal(adapter_store_loaded(&s), 1);
    adapter_store_release(&s, b);

    assert_int_equal(adapter_store_acquire(&s, "../wiz", &a, err, sizeof err), ADAPTER_BAD_NAME);
    assert_int_equal(adapter_store_acquire(&s, ".hidden", &a, err, sizeof err), ADAPTER_BAD_NAME);
    assert_int_equal(adapter_store_acquire(&s, "", &a, err, sizeof err), ADAPTER_BAD_NAME);
    assert_int_equal(adapter_store_acquire(&s, "nope", &a, err, sizeof err), ADAPTER_NOT_FOUND);
    assert_non_null(strstr(err, "no adapter 'nope'"));
    char bad[128];
    snprintf(bad, sizeof bad, "%s/junk.gguf", dir);
    FILE *f = fopen(bad, "w");
    fputs("not a gguf", f);
    fclose(f);
    assert_int_equal(adapter_store_acquire(&s, "junk", &a, err, sizeof err), ADAPTER_BAD_FILE);
    assert_null(a);

    size_t base_len;
    const char *name;
    adapter_split_model("stories260K:wiz", &base_len, &name);
    assert_int_equal(base_len, 11);
    assert_string_equal(name, "wiz");
    adapter_split_model("stories260K", &base_len, &name);
    assert_int_equal(base_len, 11);
    assert_null(name);

    adapter_store_free(&s);
    unlink(path);
    unlink(bad);
    rmdir(dir);
    engine_model_close(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_store)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
