/* adapters.c - LoRA adapters loaded at run time (see adapters.h). */
#include "adapters.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

void adapter_store_init(adapter_store *s, const engine_model *m, const char *dir)
{
    memset(s, 0, sizeof *s);
    s->model = m;
    snprintf(s->dir, sizeof s->dir, "%s", dir);
}

static void slot_clear(adapter_slot *slot)
{
    engine_adapter_close(slot->adapter);
    memset(slot, 0, sizeof *slot);
}

void adapter_store_free(adapter_store *s)
{
    for (int i = 0; i < ADAPTERS_MAX; i++)
        if (s->slots[i].adapter)
            slot_clear(&s->slots[i]);
}

void adapter_split_model(const char *model, size_t *base_len, const char **adapter)
{
    const char *colon = strchr(model, ':');
    *base_len = colon ? (size_t)(colon - model) : strlen(model);
    *adapter = colon ? colon + 1 : NULL;
}

/* Names become file names: nothing that could leave the directory. */
static bool name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= ADAPTER_NAME_MAX || name[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* A slot for a new version: a free one, else the least recently used one not in use. */
static adapter_slot *free_slot(adapter_store *s)
{
    adapter_slot *best = NULL;
    for (int i = 0; i < ADAPTERS_MAX; i++) {
        adapter_slot *slot = &s->slots[i];
        if (slot->adapter == NULL)
            return slot;
        if (slot->in_use == 0 && (best == NULL || slot->last_used < best->last_used))
            best = slot;
    }
    if (best)
        slot_clear(best);
    return best;
}

enum adapter_error adapter_store_acquire(adapter_store *s, const char *name, const engine_adapter **out,
                                         char *err, size_t errsz)
{
    *out = NULL;
    if (!name_ok(name)) {
        snprintf(err, errsz, "bad adapter name '%.64s' (letters, digits, '.', '_', '-')", name);
        return ADAPTER_BAD_NAME;
    }
    char path[sizeof s->dir + ADAPTER_NAME_MAX + 8];
    snprintf(path, sizeof path, "%s/%s.gguf", s->dir, name);
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errsz, "no adapter '%s' on this worker", name);
        return ADAPTER_NOT_FOUND;
    }
    adapter_slot *current = NULL;
    for (int i = 0; i < ADAPTERS_MAX && current == NULL; i++)
        if (s->slots[i].adapter && !s->slots[i].stale && !strcmp(s->slots[i].name, name))
            current = &s->slots[i];
    if (current && (current->mtime.tv_sec != st.st_mtim.tv_sec || current->mtime.tv_nsec != st.st_mtim.tv_nsec ||
                    current->size != (long long)st.st_size)) {
        current->stale = true;  /* the file changed: a new version */
        if (current->in_use == 0)
            slot_clear(current);
        current = NULL;
    }
    if (current == NULL) {
        adapter_slot *slot = free_slot(s);
        if (slot == NULL) {
            snprintf(err, errsz, "too many adapters in use at once (%d)", ADAPTERS_MAX);
            return ADAPTER_FULL;
        }
        char sub[400];
        engine_adapter *a;
        if (engine_adapter_open(&a, s->model, path, sub, sizeof sub)) {
            snprintf(err, errsz, "adapter '%s' cannot be used: %s", name, sub);
            return ADAPTER_BAD_FILE;
        }
        *slot = (adapter_slot){.adapter = a, .mtime = st.st_mtim, .size = (long long)st.st_size};
        snprintf(slot->name, sizeof slot->name, "%s", name);
        current = slot;
    }
    current->in_use++;
    current->last_used = ++s->clock;
    *out = current->adapter;
    return ADAPTER_OK;
}

void adapter_store_release(adapter_store *s, const engine_adapter *a)
{
    if (a == NULL)
        return;
    for (int i = 0; i < ADAPTERS_MAX; i++) {
        adapter_slot *slot = &s->slots[i];
        if (slot->adapter != a)
            continue;
        if (slot->in_use > 0)
            slot->in_use--;
        if (slot->stale && slot->in_use == 0)
            slot_clear(slot);
        return;
    }
}

int adapter_store_loaded(const adapter_store *s)
{
    int n = 0;
    for (int i = 0; i < ADAPTERS_MAX; i++)
        n += s->slots[i].adapter != NULL;
    return n;
}
