/* main.c - citadel-audit: consumes AuditEvents from Kafka topic citadel.audit in a
 * consumer group and appends each to the hash-chained log (common/audit_log.h).
 *
 * Durability order, so that no event is lost and none is written twice:
 *   1. append the record (write(2) into today's segment)
 *   2. fsync every audit_fsync_interval (and before a rebalance takes partitions away)
 *   3. only then commit the Kafka offsets of what was synced
 * A crash between 1 and 3 makes Kafka deliver those events again; each record names
 * its Kafka partition and offset, so on restart the writer knows what it already holds
 * and skips it. A payload that is not an AuditEvent is written as a record saying so.
 *
 *   admin   HTTP on audit_admin_port (9103): /metrics /healthz /readyz
 *   SIGTERM syncs, commits, exits.
 * Retention (audit_retention_days, 180) runs at start and every hour.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "admin.h"
#include "audit_log.h"
#include "audit_record.h"
#include "citadel.pb-c.h"
#include "config.h"
#include "kafka_producer.h"
#include "log.h"
#include "metrics.h"
#include "shutdown.h"

static const config_setting settings[] = {
    {"kafka_brokers", CONFIG_STRING, "", "Kafka bootstrap servers (empty: $CITADEL_HOME/run/kafka.bootstrap)", 0, 0, false},
    {"kafka_options", CONFIG_STRING, "", "more librdkafka settings, name=value,name=value", 0, 0, false},
    {"audit_topic", CONFIG_STRING, "citadel.audit", "topic of AuditEvents", 0, 0, false},
    {"audit_group", CONFIG_STRING, "citadel-audit", "Kafka consumer group", 0, 0, false},
    {"audit_dir", CONFIG_STRING, "", "log directory (empty: $CITADEL_HOME/audit)", 0, 0, false},
    {"audit_fsync_interval", CONFIG_DURATION, "1s", "records are fsynced (then committed) this often", 0, 0, false},
    {"audit_retention_days", CONFIG_INT, "180", "segments older than this many days are removed", 1, 100000, false},
    {"audit_admin_port", CONFIG_INT, "9103", "admin HTTP port (/metrics /healthz /readyz)", 1, 65535, false},
};
#define N_SETTINGS (sizeof settings / sizeof settings[0])

/* The service's state, shared with the rebalance callback. */
typedef struct auditor {
    rd_kafka_t *rk;
    audit_log log;
    char dir[AUDIT_PATH_MAX];
    int64_t next_commit[AUDIT_MAX_PARTITIONS];   /* per partition: offset to commit (-1 none) */
    const char *topic;
    metrics_counter *records, *duplicates, *undecodable, *syncs, *write_errors, *commit_errors, *retention_removed;
    metrics_gauge *last_seq;
    admin_server *admin;                         /* ready once partitions are assigned */
} auditor;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* fsyncs what was written, then commits those offsets. Returns 0, or -1 when the sync
 * failed (then nothing is committed and the service must stop: it cannot promise
 * durability any more). */
static int sync_and_commit(auditor *a, bool wait_commit)
{
    char err[512];
    if (a->log.unsynced > 0) {
        if (audit_log_sync(&a->log, err, sizeof err) != 0) {
            metrics_counter_inc(a->write_errors);
            log_msg(LOG_ERROR, "", "%s", err);
            return -1;
        }
        metrics_counter_inc(a->syncs);
    }
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(4);
    for (int p = 0; p < AUDIT_MAX_PARTITIONS; p++)
        if (a->next_commit[p] >= 0)
            rd_kafka_topic_partition_list_add(list, a->topic, p)->offset = a->next_commit[p];
    if (list->cnt > 0) {
        rd_kafka_resp_err_t e = rd_kafka_commit(a->rk, list, wait_commit ? 0 : 1);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR && e != RD_KAFKA_RESP_ERR__NO_OFFSET) {
            /* Harmless for the log: the events come again and are skipped as duplicates. */
            metrics_counter_inc(a->commit_errors);
            log_msg(LOG_WARN, "", "offset commit failed: %s (retried with the next one)", rd_kafka_err2str(e));
        } else {
            for (int p = 0; p < AUDIT_MAX_PARTITIONS; p++)
                a->next_commit[p] = -1;
        }
    }
    rd_kafka_topic_partition_list_destroy(list);
    return 0;
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    auditor *a = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        log_msg(LOG_INFO, "", "assigned %d partition(s)", parts->cnt);
        rd_kafka_assign(rk, parts);
        admin_set_ready(a->admin, true);   /* consuming: /readyz says so */
    } else {
        /* Partitions go to another member: what we wrote must be durable and committed
         * first, or it would write the same events again. */
        sync_and_commit(a, true);
        log_msg(LOG_INFO, "", "partitions revoked (%s)", rd_kafka_err2str(err));
        rd_kafka_assign(rk, NULL);
    }
}

/* Appends one consumed message. Returns 0, or -1 on a write failure (fatal). */
static int on_message(auditor *a, const rd_kafka_message_t *m)
{
    int part = m->partition;
    if (part < 0 || part >= AUDIT_MAX_PARTITIONS) {
        log_msg(LOG_ERROR, "", "partition %d beyond the %d this service tracks: not written", part,
                AUDIT_MAX_PARTITIONS);
        return -1;
    }
    if (audit_log_has(&a->log, part, m->offset)) {
        metrics_counter_inc(a->duplicates);
        a->next_commit[part] = m->offset + 1;
        return 0;
    }
    Citadel__AuditEvent *e = citadel__audit_event__unpack(NULL, m->len, m->payload);
    size_t len = 0;
    char *fields;
    if (e != NULL) {
        fields = audit_record_fields(e, &len);
    } else {
        metrics_counter_inc(a->undecodable);
        log_msg(LOG_WARN, "", "undecodable AuditEvent at partition %d offset %lld: recorded as such", part,
                (long long)m->offset);
        fields = audit_record_undecodable(m->payload, m->len, now_ms(), &len);
    }
    char err[512];
    int rc = fields ? audit_log_append(&a->log, fields, len, time(NULL), part, m->offset, err, sizeof err) : -1;
    if (rc != 0) {
        metrics_counter_inc(a->write_errors);
        log_msg(LOG_ERROR, e ? e->request_id : "", "cannot append to the audit log: %s", fields ? err : "out of memory");
    } else {
        metrics_counter_inc(a->records);
        metrics_gauge_set(a->last_seq, (double)a->log.seq);
        a->next_commit[part] = m->offset + 1;
    }
    free(fields);
    if (e)
        citadel__audit_event__free_unpacked(e, NULL);
    return rc;
}

static void apply_retention(auditor *a, int days)
{
    char err[512];
    int removed = audit_log_apply_retention(a->dir, time(NULL), days, err, sizeof err);
    if (removed < 0)
        log_msg(LOG_ERROR, "", "retention: %s", err);
    else if (removed > 0) {
        metrics_counter_add(a->retention_removed, removed);
        log_msg(LOG_INFO, "", "retention: removed %d segment(s) older than %d days", removed, days);
    }
}

static rd_kafka_t *make_consumer(const config *cfg, const char *brokers, auditor *a)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *kv[][2] = {
        {"bootstrap.servers", brokers},
        {"group.id", config_string(cfg, "audit_group")},
        {"enable.auto.commit", "false"},        /* committed only after fsync */
        {"auto.offset.reset", "earliest"},      /* a new group reads every event kept */
        {"client.id", "citadel-audit"},
    };
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
        if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], err, sizeof err) != RD_KAFKA_CONF_OK) {
            log_msg(LOG_ERROR, "", "kafka setting %s: %s", kv[i][0], err);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    if (kafka_apply_options(conf, config_string(cfg, "kafka_options"), err, sizeof err) != 0) {
        log_msg(LOG_ERROR, "", "%s", err);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, a);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (rk == NULL) {
        log_msg(LOG_ERROR, "", "kafka consumer: %s", err);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, config_string(cfg, "audit_topic"), RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e) {
        log_msg(LOG_ERROR, "", "cannot subscribe: %s", rd_kafka_err2str(e));
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

/* Consumes until SIGTERM or a write failure. Returns the exit status. */
static int serve(auditor *a, double fsync_interval, int retention_days, admin_server *admin)
{
    double last_sync = mono_s(), last_retention = mono_s();
    int rc = 0;
    a->admin = admin;
    while (!shutdown_requested()) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(a->rk, 100);
        if (m) {
            if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                if (on_message(a, m) != 0)
                    rc = 1;
            } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                log_msg(LOG_WARN, "", "kafka: %s", rd_kafka_message_errstr(m));
            }
            rd_kafka_message_destroy(m);
        }
        if (rc)
            break;
        double now = mono_s();
        if (now - last_sync >= fsync_interval) {
            if (sync_and_commit(a, false) != 0) {
                rc = 1;
                break;
            }
            last_sync = now;
        }
        if (now - last_retention >= 3600) {
            apply_retention(a, retention_days);
            last_retention = now;
        }
    }
    admin_set_ready(admin, false);
    if (sync_and_commit(a, true) != 0)
        rc = 1;
    return rc;
}

int main(int argc, char **argv)
{
    int exit_status;
    config *cfg = config_for_main("citadel-audit", "writes the hash-chained audit log from Kafka", settings, N_SETTINGS,
                                  argc, argv, &exit_status);
    if (cfg == NULL)
        return exit_status;
    log_init("audit");
    config_log(cfg);
    if (shutdown_install()) {
        log_msg(LOG_ERROR, "", "cannot install the signal handlers: %s", strerror(errno));
        config_free(cfg);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    static auditor a;   /* static: the log state is a few kB */
    memset(&a, 0, sizeof a);
    for (int p = 0; p < AUDIT_MAX_PARTITIONS; p++)
        a.next_commit[p] = -1;
    a.topic = config_string(cfg, "audit_topic");
    const char *home = getenv("CITADEL_HOME");
    if (config_string(cfg, "audit_dir")[0])
        snprintf(a.dir, sizeof a.dir, "%s", config_string(cfg, "audit_dir"));
    else
        snprintf(a.dir, sizeof a.dir, "%s/audit", home && home[0] ? home : "./var");
    char brokers[1024], err[512];
    if (kafka_resolve_brokers(config_string(cfg, "kafka_brokers"), brokers, sizeof brokers) != 0) {
        log_msg(LOG_ERROR, "", "no Kafka: set CITADEL_KAFKA_BROKERS or start citadel-kafka-dev");
        config_free(cfg);
        return 1;
    }
    if (audit_log_open(&a.log, a.dir, err, sizeof err) != 0) {
        log_msg(LOG_ERROR, "", "%s", err);
        config_free(cfg);
        return 1;
    }
    metrics_registry *reg = metrics_registry_new("audit");
    a.records = metrics_counter_new(reg, "records_total", "Audit records appended to the log.", NULL);
    a.duplicates = metrics_counter_new(reg, "duplicates_total", "Redelivered events already in the log, skipped.", NULL);
    a.undecodable = metrics_counter_new(reg, "undecodable_total", "Payloads that were not AuditEvents (recorded as such).", NULL);
    a.syncs = metrics_counter_new(reg, "fsyncs_total", "fsyncs of the log.", NULL);
    a.write_errors = metrics_counter_new(reg, "write_errors_total", "Failed appends or fsyncs (the service stops).", NULL);
    a.commit_errors = metrics_counter_new(reg, "commit_errors_total", "Offset commits that failed (events come again).", NULL);
    a.retention_removed = metrics_counter_new(reg, "retention_segments_removed_total", "Segments removed by retention.", NULL);
    a.last_seq = metrics_gauge_new(reg, "last_seq", "seq of the last record written (the chain's head).", NULL);
    metrics_gauge_set(a.last_seq, (double)a.log.seq);
    log_msg(LOG_INFO, "", "audit log %s: head seq %llu", a.dir, (unsigned long long)a.log.seq);
    int days = (int)config_int(cfg, "audit_retention_days");
    apply_retention(&a, days);
    int rc = 1;
    a.rk = make_consumer(cfg, brokers, &a);
    admin_server *admin = a.rk ? admin_start((int)config_int(cfg, "audit_admin_port"), metrics_write, reg) : NULL;
    if (admin) {
        log_msg(LOG_INFO, "", "consuming %s as group %s from %s", a.topic, config_string(cfg, "audit_group"), brokers);
        rc = serve(&a, config_duration(cfg, "audit_fsync_interval"), days, admin);
        rd_kafka_consumer_close(a.rk);
        log_msg(LOG_INFO, "", "stopped at seq %llu", (unsigned long long)a.log.seq);
    }
    if (a.rk)
        rd_kafka_destroy(a.rk);
    admin_stop(admin);
    audit_log_close(&a.log);
    metrics_registry_free(reg);
    config_free(cfg);
    return rc;
}
