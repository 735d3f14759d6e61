/* registry.h - the router's picture of the worker fleet, built only from heartbeats.
 *
 * Workers connect to the router's backend socket and announce themselves with a
 * WorkerHeartbeat every second (the Paranoid Pirate shape): the router keeps no list of
 * its own, and a worker it has not heard from for REGISTRY_DEAD_AFTER seconds is dead.
 * This module is pure bookkeeping (no sockets, no protobuf, time passed in by the
 * caller) so that the scheduling rules can be unit-tested; main.c feeds it.
 *
 * Scheduling: a request goes to the live worker serving its model with the lowest
 * load score, ties broken round robin so that idle workers share the work.
 */
#ifndef CITADEL_ROUTER_REGISTRY_H
#define CITADEL_ROUTER_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#define REGISTRY_MAX_WORKERS 64
#define REGISTRY_MAX_MODELS 8
#define REGISTRY_ID_MAX 64      /* bytes of a ZeroMQ routing identity we accept */
#define REGISTRY_NAME_MAX 128   /* bytes of a model name, NUL included */
#define REGISTRY_DEAD_AFTER 3.0 /* seconds of silence after which a worker is dead */

/* One worker as last reported, plus what the router itself has sent it.
 *   id/id_len      the worker's ZeroMQ identity on the backend socket (binary-safe)
 *   queue_depth    requests waiting behind the current one, from the last heartbeat
 *   busy           1 when the heartbeat said no slot was free
 *   in_flight      requests the router has sent it that have not finished: heartbeats
 *                  lag by up to a second, so without this a burst would all land on the
 *                  same "idle" worker */
typedef struct registry_worker {
    char id[REGISTRY_ID_MAX];
    size_t id_len;
    char models[REGISTRY_MAX_MODELS][REGISTRY_NAME_MAX];
    int n_models;
    int free_slots, queue_depth, busy;
    float load;
    int in_flight;
    double last_seen;
} registry_worker;

/* The live workers, in slot order; rr_next is where the round-robin tie-break starts. */
typedef struct registry {
    registry_worker workers[REGISTRY_MAX_WORKERS];
    int n_workers;
    int rr_next;
} registry;

/* What one heartbeat says (the decoded WorkerHeartbeat, minus protobuf). */
typedef struct registry_beat {
    const char *const *models;
    int n_models;
    int free_slots, queue_depth;
    float load;
} registry_beat;

enum registry_choice {
    REGISTRY_CHOSEN = 0,
    REGISTRY_NO_WORKERS,   /* no live worker at all -> UNAVAILABLE */
    REGISTRY_NO_MODEL,     /* live workers, none serves the model -> NOT_FOUND */
    REGISTRY_ALL_EXCLUDED, /* every worker of the model was excluded (already tried) */
};

void registry_init(registry *r);

/* Records a heartbeat from the worker with this identity at time now, adding it when
 * new. Returns the worker, or NULL when the identity is empty or too long or the table
 * is full (the heartbeat is then ignored). Models past REGISTRY_MAX_MODELS or longer
 * than REGISTRY_NAME_MAX-1 bytes are dropped. */
registry_worker *registry_heartbeat(registry *r, const void *id, size_t id_len,
                                    const registry_beat *beat, double now);

/* The worker with this identity, or NULL. */
registry_worker *registry_find(registry *r, const void *id, size_t id_len);

/* Removes every worker silent for REGISTRY_DEAD_AFTER seconds or more, calling
 * on_dead(worker, user) for each before it goes (on_dead may be NULL). Returns how many
 * were removed. Slot order of the survivors is kept. */
int registry_expire(registry *r, double now, void (*on_dead)(const registry_worker *, void *),
                    void *user);

/* Whether the worker lists this model ("<base>:<adapter>": whether it lists <base>). */
bool registry_serves(const registry_worker *w, const char *model);

/* The load score used for scheduling: the larger of what the worker last reported
 * (queue depth + busy) and what the router has in flight there. */
int registry_score(const registry_worker *w);

/* Picks a worker for model: the lowest score among live workers that serve it and are
 * not excluded (exclude(worker, user) true; exclude may be NULL), ties broken round
 * robin. Fills *out and advances the round robin on REGISTRY_CHOSEN. */
enum registry_choice registry_choose(registry *r, const char *model,
                                     bool (*exclude)(const registry_worker *, void *),
                                     void *user, registry_worker **out);

#endif
