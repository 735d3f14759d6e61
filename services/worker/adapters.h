/* adapters.h - the LoRA adapters a worker serves on its base model, loaded at run time.
 *
 * A request for "<base>:<adapter>" runs the base model with the adapter read from
 * <dir>/<adapter>.gguf (a GGUF LoRA file, as `citadel train` and citadel-trainer write
 * them into $CITADEL_HOME/adapters). The file is read the first time the name is asked
 * for, and read again when it changes on disk (a newer version), so new adapters are
 * served without a restart. Up to ADAPTERS_MAX versions stay loaded; requests hold the
 * version they started with until they end (acquire / release), so replacing a file
 * never pulls an adapter from under a running generation. Several adapters serve at
 * once, in one batch, on one copy of the base (engine_gen_params.adapter).
 */
#ifndef CITADEL_WORKER_ADAPTERS_H
#define CITADEL_WORKER_ADAPTERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "engine.h"

#define ADAPTERS_MAX 16
#define ADAPTER_NAME_MAX 64

typedef struct adapter_slot {
    char name[ADAPTER_NAME_MAX];  /* "" when free */
    engine_adapter *adapter;
    bool stale;                   /* a newer version of the file was loaded */
    struct timespec mtime;        /* of the file this version was read from */
    long long size;
    int in_use;                   /* requests holding it */
    uint64_t last_used;
} adapter_slot;

typedef struct adapter_store {
    const engine_model *model;
    char dir[512];
    adapter_slot slots[ADAPTERS_MAX];
    uint64_t clock;
} adapter_store;

void adapter_store_init(adapter_store *s, const engine_model *m, const char *dir);
void adapter_store_free(adapter_store *s);

enum adapter_error {
    ADAPTER_OK = 0,
    ADAPTER_BAD_NAME,     /* not [A-Za-z0-9._-], or too long, or starting with '.' */
    ADAPTER_NOT_FOUND,    /* no such file */
    ADAPTER_BAD_FILE,     /* unreadable, not an adapter, made for another model */
    ADAPTER_FULL,         /* every slot holds a version in use */
};

/* The current version of the named adapter, loaded if needed; the caller holds it
 * until adapter_store_release. Returns ADAPTER_OK, or an error with a message. */
enum adapter_error adapter_store_acquire(adapter_store *s, const char *name, const engine_adapter **out,
                                         char *err, size_t errsz);
void adapter_store_release(adapter_store *s, const engine_adapter *a);
/* Versions loaded (tests). */
int adapter_store_loaded(const adapter_store *s);

/* Splits a request's model "<base>:<adapter>" into its parts: *adapter is NULL when
 * there is no ':'. base_len gets the length of the base part. */
void adapter_split_model(const char *model, size_t *base_len, const char **adapter);

#endif
