/* registry.c - the worker registry and the least-loaded choice (see registry.h). */
#include "registry.h"

#include <string.h>

void registry_init(registry *r)
{
    memset(r, 0, sizeof *r);
}

registry_worker *registry_find(registry *r, const void *id, size_t id_len)
{
    for (int i = 0; i < r->n_workers; i++) {
        registry_worker *w = &r->workers[i];
        if (w->id_len == id_len && memcmp(w->id, id, id_len) == 0)
            return w;
    }
    return NULL;
}

/* Replaces the worker's model list with the heartbeat's: a worker may load another
 * model without reconnecting. */
static void set_models(registry_worker *w, const registry_beat *beat)
{
    w->n_models = 0;
    for (int i = 0; i < beat->n_models && w->n_models < REGISTRY_MAX_MODELS; i++) {
        const char *m = beat->models[i];
        size_t len = m ? strlen(m) : 0;
        if (len == 0 || len >= REGISTRY_NAME_MAX)
            continue;
        memcpy(w->models[w->n_models++], m, len + 1);
    }
}

registry_worker *registry_heartbeat(registry *r, const void *id, size_t id_len,
                                    const registry_beat *beat, double now)
{
    if (id_len == 0 || id_len > REGISTRY_ID_MAX)
        return NULL;
    registry_worker *w = registry_find(r, id, id_len);
    if (w == NULL) {
        if (r->n_workers == REGISTRY_MAX_WORKERS)
            return NULL;
        w = &r->workers[r->n_workers++];
        memset(w, 0, sizeof *w);
        memcpy(w->id, id, id_len);
        w->id_len = id_len;
    }
    set_models(w, beat);
    w->free_slots = beat->free_slots;
    w->queue_depth = beat->queue_depth > 0 ? beat->queue_depth : 0;
    w->busy = beat->free_slots <= 0;
    w->load = beat->load;
    w->last_seen = now;
    return w;
}

int registry_expire(registry *r, double now, void (*on_dead)(const registry_worker *, void *),
                    void *user)
{
    int kept = 0, removed = 0;
    for (int i = 0; i < r->n_workers; i++) {
        registry_worker *w = &r->workers[i];
        if (now - w->last_seen >= REGISTRY_DEAD_AFTER) {
            if (on_dead)
                on_dead(w, user);
            removed++;
            continue;
        }
        if (kept != i)
            r->workers[kept] = *w;
        kept++;
    }
    r->n_workers = kept;
    if (r->rr_next >= kept)
        r->rr_next = 0;
    return removed;
}

bool registry_serves(const registry_worker *w, const char *model)
{
    /* "<base>:<adapter>" goes to the workers of <base>: they load adapters themselves */
    size_t base_len = strcspn(model, ":");
    for (int i = 0; i < w->n_models; i++)
        if (strlen(w->models[i]) == base_len && strncmp(w->models[i], model, base_len) == 0)
            return true;
    return false;
}

int registry_score(const registry_worker *w)
{
    int reported = w->queue_depth + w->busy;
    return reported > w->in_flight ? reported : w->in_flight;
}

enum registry_choice registry_choose(registry *r, const char *model,
                                     bool (*exclude)(const registry_worker *, void *),
                                     void *user, registry_worker **out)
{
    *out = NULL;
    if (r->n_workers == 0)
        return REGISTRY_NO_WORKERS;
    int best = -1, best_score = 0;
    bool any_serves = false;
    /* Scanning from rr_next and keeping only strictly better scores makes the first of
     * equally loaded workers after the last choice win: round robin among ties. */
    for (int k = 0; k < r->n_workers; k++) {
        int i = (r->rr_next + k) % r->n_workers;
        registry_worker *w = &r->workers[i];
        if (!registry_serves(w, model))
            continue;
        any_serves = true;
        if (exclude && exclude(w, user))
            continue;
        int s = registry_score(w);
        if (best < 0 || s < best_score) {
            best = i;
            best_score = s;
        }
    }
    if (best < 0)
        return any_serves ? REGISTRY_ALL_EXCLUDED : REGISTRY_NO_MODEL;
    r->rr_next = (best + 1) % r->n_workers;
    *out = &r->workers[best];
    return REGISTRY_CHOSEN;
}
