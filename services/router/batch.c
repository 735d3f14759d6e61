/* batch.c - the router's Kafka batch bridge (see batch.h).
 *
 * Each batch request in flight is a slot: its Kafka position, the text gathered so far
 * and, once finished, the packed BatchResult and the broker's verdict on it (set by the
 * producer's thread through an atomic). The offset committed for a partition is the
 * lowest offset still in a slot there, or one past the highest done: everything below
 * it has a result acknowledged by Kafka.
 */
#include "batch.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <librdkafka/rdkafka.h>
#include <openssl/evp.h>

#include "kafka_producer.h"
#include "log.h"

#define REQUESTS_TOPIC "citadel.batch.requests"
#define RESULTS_TOPIC "citadel.batch.results"
#define AUDIT_TOPIC "citadel.audit"
#define MAX_SLOTS 64
#define MAX_PARTITIONS 64

enum slot_state { SLOT_FREE, SLOT_RUNNING, SLOT_PRODUCING };

typedef struct slot {
    enum slot_state state;
    int partition;
    int64_t offset;
    char request_id[128], batch_id[128], model[128], key_id[80], worker[64];
    char input_sha256[65];
    char *text;
    size_t text_len, text_cap;
    char finish_reason[32];
    int prompt_tokens, completion_tokens;
    int error_code;
    char error[256];
    long long started_ms;
    double started;
    uint8_t *result;              /* the packed BatchResult, kept to produce again on failure */
    size_t result_len;
    _Atomic int delivered;        /* 0 waiting, 1 acknowledged, -1 lost (produced again) */
} slot;

struct router_batch {
    rd_kafka_t *consumer;
    kafka_producer *producer;
    int max_in_flight;
    slot slots[MAX_SLOTS];
    int64_t done_offset[MAX_PARTITIONS];       /* highest offset with an acknowledged result */
    int64_t committed[MAX_PARTITIONS];          /* last commit sent */
    metrics_counter *started, *results, *errors, *reproduced;
    metrics_gauge *in_flight;
};

static long long wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

bool router_batch_is_client(const void *client, size_t len)
{
    return len == ROUTER_BATCH_CLIENT_LEN && memcmp(client, ROUTER_BATCH_CLIENT, len) == 0;
}

int router_batch_in_flight(const router_batch *bt)
{
    int n = 0;
    for (int i = 0; bt && i < bt->max_in_flight; i++)
        n += bt->slots[i].state != SLOT_FREE;
    return n;
}

static slot *find_slot(router_batch *bt, const char *request_id)
{
    for (int i = 0; i < bt->max_in_flight; i++)
        if (bt->slots[i].state == SLOT_RUNNING && strcmp(bt->slots[i].request_id, request_id) == 0)
            return &bt->slots[i];
    return NULL;
}

/* The request's AuditEvent: the batch path's equivalent of the gateway's. */
static void audit(router_batch *bt, const slot *s, int status, double now)
{
    Citadel__AuditEvent e = CITADEL__AUDIT_EVENT__INIT;
    e.request_id = (char *)s->request_id;
    e.ts_unix_ms = s->started_ms;
    e.service = "router";
    e.action = "batch";
    e.path = REQUESTS_TOPIC;
    e.key_id = (char *)s->key_id;
    e.model = (char *)s->model;
    e.input_sha256 = (char *)s->input_sha256;
    e.prompt_tokens = s->prompt_tokens;
    e.completion_tokens = s->completion_tokens;
    e.output_bytes = (int64_t)s->text_len;
    e.latency_seconds = now - s->started;
    e.status = status;
    size_t len = citadel__audit_event__get_packed_size(&e);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return;
    citadel__audit_event__pack(&e, buf);
    kafka_produce(bt->producer, AUDIT_TOPIC, s->request_id, strlen(s->request_id), buf, len);
    free(buf);
}

/* The request is over: its BatchResult goes to Kafka; the slot waits for the ack. */
static void finish(router_batch *bt, slot *s, double now)
{
    Citadel__BatchResult r = CITADEL__BATCH_RESULT__INIT;
    Citadel__Usage u = CITADEL__USAGE__INIT;
    Citadel__Error err = CITADEL__ERROR__INIT;
    r.request_id = s->request_id;
    r.batch_id = s->batch_id;
    r.model = s->model;
    r.text = s->text ? s->text : "";
    r.finish_reason = s->finish_reason;
    r.worker_id = s->worker;
    r.completed_unix_ms = wall_ms();
    u.prompt_tokens = s->prompt_tokens;
    u.completion_tokens = s->completion_tokens;
    u.total_tokens = s->prompt_tokens + s->completion_tokens;
    r.usage = &u;
    if (s->error_code) {
        err.request_id = s->request_id;
        err.code = s->error_code;
        err.message = s->error;
        err.origin = "router";
        r.error = &err;
        metrics_counter_inc(bt->errors);
    }
    s->result_len = citadel__batch_result__get_packed_size(&r);
    s->result = malloc(s->result_len ? s->result_len : 1);
    if (s->result)
        citadel__batch_result__pack(&r, s->result);
    audit(bt, s, s->error_code ? s->error_code : 200, now);
    s->state = SLOT_PRODUCING;
    atomic_store(&s->delivered, 0);
    if (s->result == NULL || kafka_produce_tracked(bt->producer, RESULTS_TOPIC, s->request_id, strlen(s->request_id),
                                                   s->result, s->result_len, &s->delivered) != 0)
        log_msg(LOG_ERROR, s->request_id, "batch result not queued: it will be produced again");
    metrics_counter_inc(bt->results);
}

void router_batch_on_chunk(router_batch *bt, const Citadel__GenerateChunk *chunk, double now)
{
    slot *s = bt && chunk->request_id ? find_slot(bt, chunk->request_id) : NULL;
    if (s == NULL)
        return;
    size_t n = chunk->text ? strlen(chunk->text) : 0;
    if (s->text_len + n + 1 > s->text_cap) {
        size_t cap = s->text_cap ? s->text_cap * 2 : 256;
        while (cap < s->text_len + n + 1)
            cap *= 2;
        char *bigger = realloc(s->text, cap);
        if (bigger == NULL)
            return;
        s->text = bigger;
        s->text_cap = cap;
    }
    memcpy(s->text + s->text_len, chunk->text ? chunk->text : "", n);
    s->text_len += n;
    s->text[s->text_len] = '\0';
    if (chunk->worker_id && chunk->worker_id[0])
        snprintf(s->worker, sizeof s->worker, "%s", chunk->worker_id);
    if (chunk->usage) {
        s->prompt_tokens = chunk->usage->prompt_tokens;
        s->completion_tokens = chunk->usage->completion_tokens;
    }
    if (chunk->finish_reason && chunk->finish_reason[0]) {
        snprintf(s->finish_reason, sizeof s->finish_reason, "%s", chunk->finish_reason);
        finish(bt, s, now);
    }
}

void router_batch_on_error(router_batch *bt, const char *request_id, int code, const char *message, double now)
{
    slot *s = bt && request_id ? find_slot(bt, request_id) : NULL;
    if (s == NULL)
        return;
    s->error_code = code ? code : CITADEL__ERROR_CODE__INTERNAL;
    snprintf(s->error, sizeof s->error, "%s", message ? message : "");
    finish(bt, s, now);
}

/* Takes one BatchRequest into a free slot and hands it to the broker. */
static void start(router_batch *bt, slot *s, const rd_kafka_message_t *m, double now, router_batch_submit_fn submit,
                  void *arg)
{
    memset(s, 0, sizeof *s);
    s->state = SLOT_RUNNING;
    s->partition = m->partition;
    s->offset = m->offset;
    s->started = now;
    s->started_ms = wall_ms();
    unsigned char md[32];
    unsigned int mdn = 0;
    EVP_Digest(m->payload, m->len, md, &mdn, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(s->input_sha256 + 2 * i, 3, "%02x", md[i]);
    metrics_counter_inc(bt->started);
    Citadel__BatchRequest *br = citadel__batch_request__unpack(NULL, m->len, m->payload);
    if (br == NULL || br->request == NULL || br->request_id == NULL || br->request_id[0] == '\0') {
        snprintf(s->request_id, sizeof s->request_id, "undecodable-%d-%lld", m->partition, (long long)m->offset);
        s->error_code = CITADEL__ERROR_CODE__INVALID_ARGUMENT;
        snprintf(s->error, sizeof s->error, "not a BatchRequest with a request_id and a request");
        log_msg(LOG_WARN, s->request_id, "batch: %s", s->error);
        if (br)
            citadel__batch_request__free_unpacked(br, NULL);
        finish(bt, s, now);
        return;
    }
    snprintf(s->request_id, sizeof s->request_id, "%s", br->request_id);
    snprintf(s->batch_id, sizeof s->batch_id, "%s", br->batch_id ? br->batch_id : "");
    snprintf(s->model, sizeof s->model, "%s", br->request->model ? br->request->model : "");
    snprintf(s->key_id, sizeof s->key_id, "%s", br->request->key_id ? br->request->key_id : "");
    Citadel__GenerateRequest req = *br->request;
    req.request_id = s->request_id;
    req.stream = true;
    req.priority = -1;
    char why[256];
    if (submit(arg, &req, now, why, sizeof why) != 0) {
        s->error_code = CITADEL__ERROR_CODE__UNAVAILABLE;
        snprintf(s->error, sizeof s->error, "%s", why);
        finish(bt, s, now);
    }
    citadel__batch_request__free_unpacked(br, NULL);
}

/* Frees acknowledged slots, produces lost results again, and commits (waiting for the
 * commit when wait_commit: at shutdown, so that a drained router leaves nothing to run
 * again). */
static void settle(router_batch *bt, bool wait_commit)
{
    bool changed = false;
    for (int i = 0; i < bt->max_in_flight; i++) {
        slot *s = &bt->slots[i];
        if (s->state != SLOT_PRODUCING)
            continue;
        int d = atomic_load(&s->delivered);
        if (d == 1) {
            if (s->partition >= 0 && s->partition < MAX_PARTITIONS && s->offset > bt->done_offset[s->partition])
                bt->done_offset[s->partition] = s->offset;
            free(s->text);
            free(s->result);
            memset(s, 0, sizeof *s);
            changed = true;
        } else if (d == -1 && s->result) {
            metrics_counter_inc(bt->reproduced);
            atomic_store(&s->delivered, 0);
            kafka_produce_tracked(bt->producer, RESULTS_TOPIC, s->request_id, strlen(s->request_id), s->result,
                                  s->result_len, &s->delivered);
        }
    }
    if (!changed)
        return;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(4);
    for (int p = 0; p < MAX_PARTITIONS; p++) {
        if (bt->done_offset[p] < 0)
            continue;
        int64_t commit = bt->done_offset[p] + 1;
        for (int i = 0; i < bt->max_in_flight; i++)
            if (bt->slots[i].state != SLOT_FREE && bt->slots[i].partition == p && bt->slots[i].offset < commit)
                commit = bt->slots[i].offset;
        if (commit > bt->committed[p]) {
            rd_kafka_topic_partition_list_add(list, REQUESTS_TOPIC, p)->offset = commit;
            bt->committed[p] = commit;
        }
    }
    if (list->cnt > 0) {
        rd_kafka_resp_err_t e = rd_kafka_commit(bt->consumer, list, wait_commit ? 0 : 1);
        if (e)
            log_msg(LOG_WARN, "", "batch: offset commit failed: %s (the requests may run again)", rd_kafka_err2str(e));
    }
    rd_kafka_topic_partition_list_destroy(list);
}

void router_batch_tick(router_batch *bt, double now, int requests_in_flight, router_batch_submit_fn submit,
                       void *arg)
{
    if (bt == NULL)
        return;
    settle(bt, false);
    metrics_gauge_set(bt->in_flight, router_batch_in_flight(bt));
    /* Interactive requests first: nothing new starts while one is in flight. */
    int running = 0;
    for (int i = 0; i < bt->max_in_flight; i++)
        running += bt->slots[i].state == SLOT_RUNNING;
    while (requests_in_flight - running <= 0) {
        slot *free_slot = NULL;
        for (int i = 0; i < bt->max_in_flight && !free_slot; i++)
            if (bt->slots[i].state == SLOT_FREE)
                free_slot = &bt->slots[i];
        if (free_slot == NULL)
            return;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(bt->consumer, 0);
        if (m == NULL)
            return;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            start(bt, free_slot, m, now, submit, arg);
            running++;
            requests_in_flight++;
        }
        else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            log_msg(LOG_WARN, "", "batch: kafka: %s", rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
    }
}

router_batch *router_batch_new(const router_batch_config *cfg, metrics_registry *reg)
{
    char brokers[1024], err[512] = "";
    router_batch *bt = calloc(1, sizeof *bt);
    if (bt == NULL)
        return NULL;
    /* The metrics exist (at 0) without Kafka too: every router serves the same families. */
    bt->started = metrics_counter_new(reg, "batch_requests_total", "Batch requests taken from Kafka.", NULL);
    bt->results = metrics_counter_new(reg, "batch_results_total", "BatchResults produced.", NULL);
    bt->errors = metrics_counter_new(reg, "batch_errors_total", "BatchResults that carry an error.", NULL);
    bt->reproduced = metrics_counter_new(reg, "batch_results_reproduced_total", "BatchResults produced again after a loss.", NULL);
    bt->in_flight = metrics_gauge_new(reg, "batch_in_flight", "Batch requests running.", NULL);
    if (kafka_resolve_brokers(cfg->brokers, brokers, sizeof brokers) != 0) {
        log_msg(LOG_INFO, "", "batch jobs off: no Kafka brokers (CITADEL_KAFKA_BROKERS or citadel-kafka-dev)");
        free(bt);
        return NULL;
    }
    bt->max_in_flight = cfg->max_in_flight < 1 ? 1 : cfg->max_in_flight > MAX_SLOTS ? MAX_SLOTS : cfg->max_in_flight;
    for (int p = 0; p < MAX_PARTITIONS; p++)
        bt->done_offset[p] = bt->committed[p] = -1;
    kafka_producer_config pc = {.brokers = brokers, .metric_prefix = "citadel_router_batch", .queue_max = 100000,
                                .message_timeout_ms = 0, .client_id = "citadel-router", .options = cfg->options};
    bt->producer = kafka_producer_new(&pc, err, sizeof err);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* Polled only when there is room for a request (interactive traffic first), so the
     * poll interval may grow long: the group must not evict us for that. */
    const char *kv[][2] = {{"bootstrap.servers", brokers},  {"group.id", cfg->group},
                           {"enable.auto.commit", "false"}, {"auto.offset.reset", "earliest"},
                           {"client.id", "citadel-router"}, {"max.poll.interval.ms", "86400000"}};
    bool ok = bt->producer != NULL;
    for (size_t i = 0; ok && i < sizeof kv / sizeof kv[0]; i++)
        ok = rd_kafka_conf_set(conf, kv[i][0], kv[i][1], err, sizeof err) == RD_KAFKA_CONF_OK;
    if (ok)
        ok = kafka_apply_options(conf, cfg->options, err, sizeof err) == 0;
    if (ok && (bt->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err)) == NULL)
        ok = false;
    else if (!ok)
        rd_kafka_conf_destroy(conf);
    if (ok) {
        rd_kafka_poll_set_consumer(bt->consumer);
        rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(t, REQUESTS_TOPIC, RD_KAFKA_PARTITION_UA);
        ok = rd_kafka_subscribe(bt->consumer, t) == RD_KAFKA_RESP_ERR_NO_ERROR;
        rd_kafka_topic_partition_list_destroy(t);
    }
    if (!ok) {
        log_msg(LOG_ERROR, "", "batch jobs off: %s", err);
        router_batch_free(bt, 0);
        return NULL;
    }
    log_msg(LOG_INFO, "", "batch jobs on: %s as group %s from %s, %d at once", REQUESTS_TOPIC, cfg->group, brokers,
            bt->max_in_flight);
    return bt;
}

void router_batch_free(router_batch *bt, int timeout_ms)
{
    if (bt == NULL)
        return;
    if (bt->producer) {
        kafka_producer_flush(bt->producer, timeout_ms);
        settle(bt, true);   /* commit what was acknowledged */
    }
    if (bt->consumer) {
        rd_kafka_consumer_close(bt->consumer);
        rd_kafka_destroy(bt->consumer);
    }
    kafka_producer_free(bt->producer, timeout_ms);
    for (int i = 0; i < MAX_SLOTS; i++) {
        free(bt->slots[i].text);
        free(bt->slots[i].result);
    }
    free(bt);
}
