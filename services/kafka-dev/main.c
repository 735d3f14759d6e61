/* main.c - citadel-kafka-dev: the local fleet's Kafka. It hosts librdkafka's in-memory
 * Kafka-protocol cluster (rdkafka_mock.h) on loopback, so that `citadel up` needs no
 * JVM: the services speak the real Kafka protocol to it with the same librdkafka code
 * they use against a real cluster (docker compose and Kubernetes run a real Kafka).
 *
 *   bootstrap  the brokers listen on loopback ports the kernel picks; their address list
 *              is written to kafka_dev_bootstrap_file ($CITADEL_HOME/run/kafka.bootstrap)
 *              once they listen, and removed at exit. Services read it when
 *              CITADEL_KAFKA_BROKERS is empty.
 *   topics     citadel.audit (1 partition: one total order for the hash chain),
 *              citadel.batch.requests (4), citadel.batch.results (1),
 *              citadel.train.jobs (1), citadel.train.status (1)
 *   admin      HTTP on kafka_dev_admin_port (9105): /metrics /healthz /readyz
 *   SIGUSR1    every broker goes down: connections are closed and new ones refused, the
 *              data stays, as when a real broker is stopped; SIGUSR2 brings them back.
 *              Tests use this for broker outages (killing the process would instead lose
 *              every message, as a broker whose disk is wiped).
 *   SIGTERM    exits; everything it held is gone (it keeps nothing on disk).
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "admin.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "shutdown.h"

static const config_setting settings[] = {
    {"kafka_dev_brokers", CONFIG_INT, "1", "brokers in the in-memory cluster", 1, 9, false},
    {"kafka_dev_bootstrap_file", CONFIG_STRING, "", "where to write the brokers' addresses (empty: $CITADEL_HOME/run/kafka.bootstrap)", 0, 0, false},
    {"kafka_dev_admin_port", CONFIG_INT, "9105", "admin HTTP port (/metrics /healthz /readyz)", 1, 65535, false},
};
#define N_SETTINGS (sizeof settings / sizeof settings[0])

/* The topics every Citadel service expects, with their partition counts. */
static const struct { const char *name; int partitions; } topics[] = {
    {"citadel.audit", 1},          {"citadel.batch.requests", 4}, {"citadel.batch.results", 1},
    {"citadel.train.jobs", 1},     {"citadel.train.status", 1},
};

static atomic_int broker_change;   /* set by SIGUSR1 (-1: down) and SIGUSR2 (+1: up) */
static void on_usr1(int sig) { (void)sig; atomic_store(&broker_change, -1); }
static void on_usr2(int sig) { (void)sig; atomic_store(&broker_change, 1); }

/* librdkafka's own log lines become ours. */
static void on_rdkafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    log_msg(level <= 3 ? LOG_ERROR : level <= 4 ? LOG_WARN : LOG_INFO, "", "rdkafka %s: %s", fac, buf);
}

/* Writes text to path atomically (temporary file and rename). */
static int write_file(const char *path, const char *text)
{
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "%s\n", text);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static void bootstrap_path(const config *cfg, char *out, size_t cap)
{
    const char *set = config_string(cfg, "kafka_dev_bootstrap_file");
    if (set[0]) {
        snprintf(out, cap, "%s", set);
        return;
    }
    const char *home = getenv("CITADEL_HOME");
    home = home && home[0] ? home : "./var";
    char run[1024];
    snprintf(run, sizeof run, "%s/run", home);
    mkdir(home, 0755);
    mkdir(run, 0755);
    snprintf(out, cap, "%s/kafka.bootstrap", run);
}

int main(int argc, char **argv)
{
    int exit_status;
    config *cfg = config_for_main("citadel-kafka-dev", "an in-memory Kafka cluster on loopback for the local fleet",
                                  settings, N_SETTINGS, argc, argv, &exit_status);
    if (cfg == NULL)
        return exit_status;
    log_init("kafka-dev");
    config_log(cfg);
    if (shutdown_install()) {
        log_msg(LOG_ERROR, "", "cannot install the signal handlers: %s", strerror(errno));
        config_free(cfg);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGUSR1, on_usr1);
    signal(SIGUSR2, on_usr2);

    char err[512], path[1100];
    bootstrap_path(cfg, path, sizeof path);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, on_rdkafka_log);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (rk == NULL) {
        log_msg(LOG_ERROR, "", "cannot make the librdkafka handle: %s", err);
        rd_kafka_conf_destroy(conf);
        config_free(cfg);
        return 1;
    }
    int n_brokers = (int)config_int(cfg, "kafka_dev_brokers");
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, n_brokers);
    int rc = 1;
    metrics_registry *reg = metrics_registry_new("kafka_dev");
    metrics_gauge *up = metrics_gauge_new(reg, "brokers_up", "Brokers accepting connections.", NULL);
    admin_server *admin = NULL;
    if (mc == NULL) {
        log_msg(LOG_ERROR, "", "cannot start the in-memory cluster");
        goto out;
    }
    for (size_t i = 0; i < sizeof topics / sizeof topics[0]; i++) {
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, topics[i].name, topics[i].partitions, n_brokers);
        if (e) {
            log_msg(LOG_ERROR, "", "cannot create topic %s: %s", topics[i].name, rd_kafka_err2str(e));
            goto out;
        }
    }
    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
    if (write_file(path, bootstraps) != 0) {
        log_msg(LOG_ERROR, "", "cannot write %s: %s", path, strerror(errno));
        goto out;
    }
    admin = admin_start((int)config_int(cfg, "kafka_dev_admin_port"), metrics_write, reg);
    if (admin == NULL)
        goto out;
    metrics_gauge_set(up, n_brokers);
    admin_set_ready(admin, true);
    log_msg(LOG_INFO, "", "in-memory kafka up: %d broker(s) at %s (written to %s)", n_brokers, bootstraps, path);
    while (!shutdown_requested()) {
        int change = atomic_exchange(&broker_change, 0);
        if (change < 0) {
            rd_kafka_mock_broker_set_down(mc, -1);
            metrics_gauge_set(up, 0);
            log_msg(LOG_WARN, "", "SIGUSR1: every broker is down (connections refused, data kept)");
        } else if (change > 0) {
            rd_kafka_mock_broker_set_up(mc, -1);
            metrics_gauge_set(up, n_brokers);
            log_msg(LOG_INFO, "", "SIGUSR2: every broker is up again");
        }
        usleep(50 * 1000);
    }
    log_msg(LOG_INFO, "", "stopping: the in-memory cluster and everything in it go away");
    rc = 0;
out:
    unlink(path);
    admin_stop(admin);
    if (mc)
        rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    metrics_registry_free(reg);
    config_free(cfg);
    return rc;
}
