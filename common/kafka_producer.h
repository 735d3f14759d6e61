/* kafka_producer.h - the one way Citadel's services write to Kafka (audit events, batch
 * results): librdkafka's idempotent producer with acks=all, a bounded queue, and no
 * message that goes missing without being counted and logged.
 *
 * During a broker outage messages wait in librdkafka's queue (queue_max messages at
 * most; message_timeout_ms 0 lets them wait for as long as the outage lasts) and are
 * delivered, once each and in order, when a broker is back. What cannot be queued
 * (the queue is full) or cannot be delivered (an unrecoverable error, the timeout, or
 * still queued when the producer is freed) is lost: counted in
 * citadel_<service>_kafka_messages_total{outcome="lost"} with its reason, and logged
 * (with the message's key, a request id, for the first few each second, then a count).
 *
 * A background thread serves librdkafka's delivery reports, so callers never poll; every
 * function is thread-safe. Knows nothing of what the messages mean.
 *
 *   kafka_producer *p = kafka_producer_new(&cfg, err, sizeof err);
 *   kafka_produce(p, "citadel.audit", request_id, strlen(request_id), bytes, n);
 *   admin_add_metrics(admin, kafka_producer_write_metrics, p);
 *   kafka_producer_free(p, 5000);     // waits up to 5 s for the queue to drain
 */
#ifndef CITADEL_KAFKA_PRODUCER_H
#define CITADEL_KAFKA_PRODUCER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct kafka_producer kafka_producer;

typedef struct kafka_producer_config {
    const char *brokers;          /* bootstrap "host:port,..." */
    const char *metric_prefix;    /* "citadel_gateway": metrics are <prefix>_kafka_... */
    int queue_max;                /* messages held while no broker takes them (>= 1) */
    int message_timeout_ms;       /* how long one may wait for delivery; 0: no limit */
    const char *client_id;        /* shown in the broker's logs: "citadel-gateway" */
    /* More librdkafka settings as "name=value,name=value" (NULL or "": none), for
     * deployments (security.protocol, sasl.*) and tests (short timeouts). */
    const char *options;
} kafka_producer_config;

/* The brokers to use: configured when not empty, else the address list that the local
 * fleet's citadel-kafka-dev wrote to $CITADEL_HOME/run/kafka.bootstrap. Returns 0, or -1
 * when neither gives one (out is then ""). */
int kafka_resolve_brokers(const char *configured, char *out, size_t cap);

/* Applies "name=value,name=value" to a librdkafka configuration (an rd_kafka_conf_t *,
 * passed as void * so that this header needs no librdkafka). Returns 0, or -1 with a
 * message naming the bad setting. Shared with the services' consumers. */
int kafka_apply_options(void *rd_conf, const char *options, char *err, size_t errsz);

/* Message counts since start, by outcome. */
typedef struct kafka_producer_stats {
    uint64_t queued;              /* accepted into the queue */
    uint64_t delivered;           /* acknowledged by all in-sync replicas */
    uint64_t lost_queue_full;     /* refused: the queue held queue_max already */
    uint64_t lost_delivery;       /* failed for good, or timed out */
    uint64_t lost_shutdown;       /* still queued when the producer was freed */
    int64_t in_queue;             /* queued, not yet delivered or lost */
} kafka_producer_stats;

/* Makes the producer and starts its thread. Connecting is lazy: a broker that is not
 * up yet is no error. Returns NULL with a message in err for a bad setting. */
kafka_producer *kafka_producer_new(const kafka_producer_config *cfg, char *err, size_t errsz);

/* Queues one message (the bytes are copied). key may be NULL. Returns 0 when queued,
 * -1 when the message is lost (queue full or an unknown topic): then it is already
 * counted and logged. */
int kafka_produce(kafka_producer *p, const char *topic, const void *key, size_t key_len, const void *value,
                  size_t value_len);

/* kafka_produce that also reports the message's fate: *outcome (an atomic int, 0 when
 * called) becomes 1 once the brokers acknowledged it, -1 once it is lost (counted and
 * logged as with kafka_produce). It is set on the producer's thread: read it with
 * atomic_load; it must stay valid until it is set (or the producer is freed). Returns
 * like kafka_produce (on -1, *outcome is already -1). */
int kafka_produce_tracked(kafka_producer *p, const char *topic, const void *key, size_t key_len, const void *value,
                          size_t value_len, _Atomic int *outcome);

/* Waits up to timeout_ms for every queued message to be delivered or lost. Returns how
 * many are still queued (0: all done). */
int kafka_producer_flush(kafka_producer *p, int timeout_ms);

kafka_producer_stats kafka_producer_get_stats(kafka_producer *p);

/* Prometheus text of the counters, with admin.h's callback signature. */
void kafka_producer_write_metrics(FILE *out, void *producer);

/* Flushes for up to timeout_ms, counts and logs whatever is left as lost, stops the
 * thread and frees p. NULL is a no-op. */
void kafka_producer_free(kafka_producer *p, int timeout_ms);

#endif
