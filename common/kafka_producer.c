/* kafka_producer.c - librdkafka's idempotent producer with counted losses (see
 * kafka_producer.h).
 *
 * Delivery reports arrive through rd_kafka_poll, served by one thread per producer;
 * the counters are atomics, so the metrics callback (another thread) and produce calls
 * (the service's threads) need no lock. Losses are logged with the message key, at most
 * LOST_LOG_PER_SECOND lines a second; the rest of a burst becomes one summary line.
 */
#include "kafka_producer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "log.h"

#define LOST_LOG_PER_SECOND 5

struct kafka_producer {
    rd_kafka_t *rk;
    pthread_t thread;
    atomic_bool stop;
    bool thread_started;
    char prefix[96];
    atomic_uint_fast64_t queued, delivered, lost_queue_full, lost_delivery, lost_shutdown;
    atomic_bool shutting_down;     /* purged messages count as lost_shutdown */
    /* Rate limit of loss lines: the current second and the lines written in it. */
    pthread_mutex_t log_lock;
    time_t log_second;
    int log_lines;
    uint64_t log_suppressed;
};

/* Logs one lost message, or counts it into the next summary when the second's lines
 * are used up. key is the message key (a request id), not NUL-terminated. */
static void log_lost(kafka_producer *p, const char *topic, const void *key, size_t key_len, const char *why)
{
    time_t now = time(NULL);
    char id[128];
    size_t n = key && key_len ? (key_len < sizeof id - 1 ? key_len : sizeof id - 1) : 0;
    memcpy(id, key ? key : "", n);
    id[n] = '\0';
    pthread_mutex_lock(&p->log_lock);
    if (now != p->log_second) {
        if (p->log_suppressed)
            log_msg(LOG_ERROR, "", "kafka: %llu more message(s) lost in the last second (not logged one by one)",
                    (unsigned long long)p->log_suppressed);
        p->log_second = now;
        p->log_lines = 0;
        p->log_suppressed = 0;
    }
    bool write = p->log_lines < LOST_LOG_PER_SECOND;
    if (write)
        p->log_lines++;
    else
        p->log_suppressed++;
    pthread_mutex_unlock(&p->log_lock);
    if (write) {
        log_field f[] = {LOG_STR("topic", topic), LOG_STR("reason", why)};
        log_fields(LOG_ERROR, id, f, 2, "kafka: message lost");
    }
}

/* Writes the summary of the losses not logged one by one, once their second is over
 * (or at once when final): every loss reaches the log, the burst as a count. */
static void flush_lost_summary(kafka_producer *p, bool final)
{
    pthread_mutex_lock(&p->log_lock);
    if (p->log_suppressed && (final || time(NULL) != p->log_second)) {
        log_msg(LOG_ERROR, "", "kafka: %llu more message(s) lost in the last second (not logged one by one)",
                (unsigned long long)p->log_suppressed);
        p->log_suppressed = 0;
    }
    pthread_mutex_unlock(&p->log_lock);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    kafka_producer *p = opaque;
    _Atomic int *outcome = m->_private;   /* kafka_produce_tracked's, or NULL */
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        atomic_fetch_add(&p->delivered, 1);
        if (outcome)
            atomic_store(outcome, 1);
        return;
    }
    if (outcome)
        atomic_store(outcome, -1);
    bool purged = m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE || m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT;
    if (purged && atomic_load(&p->shutting_down))
        atomic_fetch_add(&p->lost_shutdown, 1);
    else
        atomic_fetch_add(&p->lost_delivery, 1);
    log_lost(p, m->rkt ? rd_kafka_topic_name(m->rkt) : "?", m->key, m->key_len, rd_kafka_err2str(m->err));
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    char fatal[256];
    if (err == RD_KAFKA_RESP_ERR__FATAL && rd_kafka_fatal_error(rk, fatal, sizeof fatal))
        log_msg(LOG_ERROR, "", "kafka: fatal producer error, messages will be lost: %s", fatal);
    else if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || err == RD_KAFKA_RESP_ERR__TRANSPORT)
        log_msg(LOG_WARN, "", "kafka: %s (messages wait in the queue)", reason);
    else
        log_msg(LOG_WARN, "", "kafka: %s", reason);
}

static void *serve_reports(void *arg)
{
    kafka_producer *p = arg;
    while (!atomic_load(&p->stop)) {
        rd_kafka_poll(p->rk, 100);
        flush_lost_summary(p, false);
    }
    rd_kafka_poll(p->rk, 0);
    flush_lost_summary(p, true);
    return NULL;
}

static int set(rd_kafka_conf_t *conf, const char *name, const char *value, char *err, size_t errsz)
{
    char why[256];
    if (rd_kafka_conf_set(conf, name, value, why, sizeof why) != RD_KAFKA_CONF_OK) {
        snprintf(err, errsz, "kafka setting %s=%s: %s", name, value, why);
        return -1;
    }
    return 0;
}

int kafka_apply_options(void *rd_conf, const char *options, char *err, size_t errsz)
{
    if (options == NULL || options[0] == '\0')
        return 0;
    char *copy = strdup(options), *save = NULL;
    if (copy == NULL) {
        snprintf(err, errsz, "out of memory");
        return -1;
    }
    int rc = 0;
    for (char *item = strtok_r(copy, ",", &save); item && rc == 0; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (eq == NULL || eq == item) {
            snprintf(err, errsz, "kafka option '%.100s' is not name=value", item);
            rc = -1;
            break;
        }
        *eq = '\0';
        rc = set(rd_conf, item, eq + 1, err, errsz);
    }
    free(copy);
    return rc;
}

int kafka_resolve_brokers(const char *configured, char *out, size_t cap)
{
    out[0] = '\0';
    if (configured && configured[0]) {
        snprintf(out, cap, "%s", configured);
        return 0;
    }
    const char *home = getenv("CITADEL_HOME");
    char path[1024];
    snprintf(path, sizeof path, "%s/run/kafka.bootstrap", home && home[0] ? home : "./var");
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    if (fgets(out, (int)cap, f) == NULL)
        out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    return out[0] ? 0 : -1;
}

kafka_producer *kafka_producer_new(const kafka_producer_config *cfg, char *err, size_t errsz)
{
    if (cfg->brokers == NULL || cfg->brokers[0] == '\0' || cfg->queue_max < 1) {
        snprintf(err, errsz, "kafka producer: brokers and a queue size of at least 1 are required");
        return NULL;
    }
    kafka_producer *p = calloc(1, sizeof *p);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (p == NULL || conf == NULL) {
        snprintf(err, errsz, "out of memory");
        free(p);
        if (conf) rd_kafka_conf_destroy(conf);
        return NULL;
    }
    snprintf(p->prefix, sizeof p->prefix, "%s", cfg->metric_prefix ? cfg->metric_prefix : "citadel");
    pthread_mutex_init(&p->log_lock, NULL);
    char queue_max[32], timeout[32];
    snprintf(queue_max, sizeof queue_max, "%d", cfg->queue_max);
    snprintf(timeout, sizeof timeout, "%d", cfg->message_timeout_ms);
    /* enable.idempotence implies acks=all, retries without end and at most 5 requests in
     * flight, so a retry never duplicates or reorders; acks is set too, to say so. */
    int bad = set(conf, "bootstrap.servers", cfg->brokers, err, errsz) ||
              set(conf, "enable.idempotence", "true", err, errsz) || set(conf, "acks", "all", err, errsz) ||
              set(conf, "queue.buffering.max.messages", queue_max, err, errsz) ||
              set(conf, "message.timeout.ms", timeout, err, errsz) ||
              set(conf, "linger.ms", "5", err, errsz) ||
              set(conf, "client.id", cfg->client_id ? cfg->client_id : "citadel", err, errsz);
    if (!bad)
        bad = kafka_apply_options(conf, cfg->options, err, errsz) != 0;
    if (bad) {
        rd_kafka_conf_destroy(conf);
        pthread_mutex_destroy(&p->log_lock);
        free(p);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    char why[512];
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (p->rk == NULL) {   /* conf is still ours on failure */
        snprintf(err, errsz, "kafka producer: %s", why);
        rd_kafka_conf_destroy(conf);
        pthread_mutex_destroy(&p->log_lock);
        free(p);
        return NULL;
    }
    if (pthread_create(&p->thread, NULL, serve_reports, p) != 0) {
        snprintf(err, errsz, "kafka producer: cannot start its thread");
        rd_kafka_destroy(p->rk);
        pthread_mutex_destroy(&p->log_lock);
        free(p);
        return NULL;
    }
    p->thread_started = true;
    return p;
}

int kafka_produce(kafka_producer *p, const char *topic, const void *key, size_t key_len, const void *value,
                  size_t value_len)
{
    return kafka_produce_tracked(p, topic, key, key_len, value, value_len, NULL);
}

int kafka_produce_tracked(kafka_producer *p, const char *topic, const void *key, size_t key_len, const void *value,
                          size_t value_len, _Atomic int *outcome)
{
    rd_kafka_resp_err_t e = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_len),
                                              RD_KAFKA_V_VALUE((void *)value, value_len),
                                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                              RD_KAFKA_V_OPAQUE(outcome), RD_KAFKA_V_END);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR && outcome)
        atomic_store(outcome, -1);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
        atomic_fetch_add(&p->queued, 1);
        return 0;
    }
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        atomic_fetch_add(&p->lost_queue_full, 1);
    else
        atomic_fetch_add(&p->lost_delivery, 1);
    log_lost(p, topic, key, key_len, e == RD_KAFKA_RESP_ERR__QUEUE_FULL ? "queue full" : rd_kafka_err2str(e));
    return -1;
}

kafka_producer_stats kafka_producer_get_stats(kafka_producer *p)
{
    kafka_producer_stats s = {
        .queued = atomic_load(&p->queued),
        .delivered = atomic_load(&p->delivered),
        .lost_queue_full = atomic_load(&p->lost_queue_full),
        .lost_delivery = atomic_load(&p->lost_delivery),
        .lost_shutdown = atomic_load(&p->lost_shutdown),
    };
    s.in_queue = (int64_t)s.queued - (int64_t)(s.delivered + s.lost_delivery + s.lost_shutdown);
    return s;
}

int kafka_producer_flush(kafka_producer *p, int timeout_ms)
{
    rd_kafka_flush(p->rk, timeout_ms);
    return rd_kafka_outq_len(p->rk);
}

void kafka_producer_write_metrics(FILE *out, void *producer)
{
    kafka_producer *p = producer;
    kafka_producer_stats s = kafka_producer_get_stats(p);
    const char *x = p->prefix;
    fprintf(out, "# HELP %s_kafka_messages_total Kafka messages by outcome (lost: never delivered, with why).\n", x);
    fprintf(out, "# TYPE %s_kafka_messages_total counter\n", x);
    fprintf(out, "%s_kafka_messages_total{outcome=\"queued\"} %llu\n", x, (unsigned long long)s.queued);
    fprintf(out, "%s_kafka_messages_total{outcome=\"delivered\"} %llu\n", x, (unsigned long long)s.delivered);
    fprintf(out, "%s_kafka_messages_total{outcome=\"lost\",reason=\"queue_full\"} %llu\n", x,
            (unsigned long long)s.lost_queue_full);
    fprintf(out, "%s_kafka_messages_total{outcome=\"lost\",reason=\"delivery_failed\"} %llu\n", x,
            (unsigned long long)s.lost_delivery);
    fprintf(out, "%s_kafka_messages_total{outcome=\"lost\",reason=\"shutdown\"} %llu\n", x,
            (unsigned long long)s.lost_shutdown);
    fprintf(out, "# HELP %s_kafka_queue_messages Messages waiting for a broker's acknowledgement.\n", x);
    fprintf(out, "# TYPE %s_kafka_queue_messages gauge\n", x);
    fprintf(out, "%s_kafka_queue_messages %lld\n", x, (long long)s.in_queue);
}

void kafka_producer_free(kafka_producer *p, int timeout_ms)
{
    if (p == NULL)
        return;
    rd_kafka_flush(p->rk, timeout_ms);
    int left = rd_kafka_outq_len(p->rk);
    if (left > 0) {
        atomic_store(&p->shutting_down, true);
        log_msg(LOG_ERROR, "", "kafka: %d message(s) still queued after %d ms at shutdown: lost", left, timeout_ms);
        rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(p->rk, 1000);   /* serves the purged messages' reports */
    }
    atomic_store(&p->stop, true);
    if (p->thread_started)
        pthread_join(p->thread, NULL);
    rd_kafka_destroy(p->rk);
    pthread_mutex_destroy(&p->log_lock);
    free(p);
}
