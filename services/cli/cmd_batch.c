/* cmd_batch.c - `citadel batch submit FILE.jsonl` and `citadel batch results`: batch
 * jobs over Kafka (the router's batch bridge, services/router/batch.h).
 *
 *   submit   one BatchRequest per line of FILE (keyed by request id) to
 *            citadel.batch.requests; prints the batch id and how many were sent once
 *            Kafka acknowledged them all (exit 1 if any was lost)
 *   results  reads citadel.batch.results from the beginning and prints one JSON line per
 *            request id (the first result: a router that restarted may have answered a
 *            request twice); --batch keeps one batch; --wait also reads the batch's
 *            requests and waits until each has a result (or --timeout)
 * A line of FILE is a chat or completion body as for the OpenAI API ("model",
 * "messages" or "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed",
 * "stop"), with an optional "request_id" (default <batch id>-<line number>).
 * Brokers: --brokers, CITADEL_KAFKA_BROKERS, or the local fleet's kafka.bootstrap.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "citadel.pb-c.h"
#include "cli.h"
#include "json_writer.h"
#include "kafka_producer.h"

#define REQUESTS_TOPIC "citadel.batch.requests"
#define RESULTS_TOPIC "citadel.batch.results"

static int brokers_or_fail(const char *cmd, const char *given, char *out, size_t cap)
{
    const char *env = getenv("CITADEL_KAFKA_BROKERS");
    if (kafka_resolve_brokers(given ? given : env, out, cap) != 0) {
        fprintf(stderr, "citadel batch %s: no Kafka (--brokers, CITADEL_KAFKA_BROKERS, or a local fleet)\n", cmd);
        return -1;
    }
    return 0;
}

/* One JSONL line into a GenerateRequest (strings borrowed from j). Returns 0 or -1 with why. */
static int line_to_request(json_t *j, const char *model, Citadel__GenerateRequest *r, Citadel__ChatMessage *msgs,
                           Citadel__ChatMessage **ptrs, size_t max_msgs, char *why, size_t whysz)
{
    citadel__generate_request__init(r);
    const char *m = json_string_value(json_object_get(j, "model"));
    r->model = (char *)(m ? m : model);
    if (r->model == NULL) {
        snprintf(why, whysz, "no model (give it per line or --model)");
        return -1;
    }
    json_t *messages = json_object_get(j, "messages");
    const char *prompt = json_string_value(json_object_get(j, "prompt"));
    if (json_is_array(messages)) {
        size_t n = json_array_size(messages);
        if (n == 0 || n > max_msgs) {
            snprintf(why, whysz, "messages must hold 1 to %zu entries", max_msgs);
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(messages, i);
            citadel__chat_message__init(&msgs[i]);
            msgs[i].role = (char *)json_string_value(json_object_get(e, "role"));
            msgs[i].content = (char *)json_string_value(json_object_get(e, "content"));
            if (!msgs[i].role || !msgs[i].content) {
                snprintf(why, whysz, "messages[%zu] needs a role and a text content", i);
                return -1;
            }
            ptrs[i] = &msgs[i];
        }
        r->messages = ptrs;
        r->n_messages = n;
    } else if (prompt) {
        r->prompt = (char *)prompt;
    } else {
        snprintf(why, whysz, "needs messages or prompt");
        return -1;
    }
    json_t *v;
    if ((v = json_object_get(j, "max_tokens"))) r->max_tokens = (int32_t)json_integer_value(v);
    r->temperature = (v = json_object_get(j, "temperature")) ? (float)json_number_value(v) : 0.8f;
    r->top_p = (v = json_object_get(j, "top_p")) ? (float)json_number_value(v) : 0.95f;
    r->top_k = (v = json_object_get(j, "top_k")) ? (int32_t)json_integer_value(v) : 40;
    r->min_p = (v = json_object_get(j, "min_p")) ? (float)json_number_value(v) : 0.05f;
    r->repetition_penalty = 1.0f;
    if ((v = json_object_get(j, "seed")) && json_is_integer(v)) {
        r->seed = (uint64_t)json_integer_value(v);
        r->has_seed = true;
    }
    return 0;
}

static int batch_submit(int argc, char **argv)
{
    static const struct option options[] = {{"model", required_argument, 0, 'm'}, {"batch-id", required_argument, 0, 'b'},
                                            {"brokers", required_argument, 0, 'k'}, {"help", no_argument, 0, 'h'},
                                            {0, 0, 0, 0}};
    const char *model = NULL, *given = NULL;
    char batch_id[128];
    snprintf(batch_id, sizeof batch_id, "batch-%lld-%d", (long long)time(NULL), (int)getpid());
    int opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'h':
            printf("usage: citadel batch submit FILE.jsonl [--model M] [--batch-id ID] [--brokers HOST:PORT]\n");
            return 0;
        case 'm': model = optarg; break;
        case 'b': snprintf(batch_id, sizeof batch_id, "%s", optarg); break;
        case 'k': given = optarg; break;
        default: return cli_usage_error("batch submit", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("batch submit", "one FILE.jsonl is required");
    char brokers[1024], err[512];
    if (brokers_or_fail("submit", given, brokers, sizeof brokers))
        return 1;
    FILE *in = fopen(argv[optind], "r");
    if (in == NULL) {
        fprintf(stderr, "citadel batch submit: cannot open %s\n", argv[optind]);
        return 1;
    }
    kafka_producer_config pc = {.brokers = brokers, .metric_prefix = "citadel_cli", .queue_max = 1000000,
                                .message_timeout_ms = 60000, .client_id = "citadel-cli"};
    kafka_producer *p = kafka_producer_new(&pc, err, sizeof err);
    if (p == NULL) {
        fprintf(stderr, "citadel batch submit: %s\n", err);
        fclose(in);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0, sent = 0, bad = 0;
    while (getline(&line, &cap, in) > 0) {
        lineno++;
        if (line[strspn(line, " \t\r\n")] == '\0')
            continue;
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        Citadel__GenerateRequest req;
        Citadel__ChatMessage msgs[64], *ptrs[64];
        char why[256], rid[160];
        if (j == NULL || line_to_request(j, model, &req, msgs, ptrs, 64, why, sizeof why) != 0) {
            fprintf(stderr, "citadel batch submit: line %ld: %s\n", lineno, j ? why : jerr.text);
            bad++;
            json_decref(j);
            continue;
        }
        const char *given_id = json_string_value(json_object_get(j, "request_id"));
        snprintf(rid, sizeof rid, "%s", given_id ? given_id : "");
        if (!given_id)
            snprintf(rid, sizeof rid, "%s-%ld", batch_id, lineno);
        Citadel__BatchRequest br = CITADEL__BATCH_REQUEST__INIT;
        br.request_id = rid;
        br.batch_id = batch_id;
        br.request = &req;
        br.submitted_unix_ms = (int64_t)time(NULL) * 1000;
        size_t len = citadel__batch_request__get_packed_size(&br);
        uint8_t *buf = malloc(len ? len : 1);
        if (buf) {
            citadel__batch_request__pack(&br, buf);
            if (kafka_produce(p, REQUESTS_TOPIC, rid, strlen(rid), buf, len) == 0)
                sent++;
        }
        free(buf);
        json_decref(j);
    }
    free(line);
    fclose(in);
    int left = kafka_producer_flush(p, 60000);
    kafka_producer_stats st = kafka_producer_get_stats(p);
    kafka_producer_free(p, 1000);
    long lost = (long)(st.lost_queue_full + st.lost_delivery) + left;
    printf("%s %ld\n", batch_id, (long)st.delivered);
    fprintf(stderr, "batch %s: %ld request(s) sent, %ld acknowledged, %ld lost, %ld bad line(s)\n", batch_id, sent,
            (long)st.delivered, lost, bad);
    return lost || bad ? 1 : 0;
}

/* ---- results ----------------------------------------------------------------------- */

/* A consumer assigned to every partition of the topics, from the beginning (no group:
 * nothing is committed, every run reads all). */
static rd_kafka_t *reader(const char *brokers, const char *const *topics, int n_topics)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err);
    rd_kafka_conf_set(conf, "group.id", "citadel-cli-reader", err, sizeof err);   /* required, never joined */
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err);
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (rk == NULL) {
        fprintf(stderr, "citadel batch results: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(8);
    for (int t = 0; t < n_topics; t++) {
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topics[t], NULL);
        const struct rd_kafka_metadata *md = NULL;
        if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1) {
            for (int p = 0; p < md->topics[0].partition_cnt; p++)
                rd_kafka_topic_partition_list_add(list, topics[t], md->topics[0].partitions[p].id)->offset =
                    RD_KAFKA_OFFSET_BEGINNING;
        }
        if (md) rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(rkt);
    }
    if (list->cnt == 0 || rd_kafka_assign(rk, list) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "citadel batch results: cannot read the batch topics (is Kafka up?)\n");
        rd_kafka_topic_partition_list_destroy(list);
        rd_kafka_destroy(rk);
        return NULL;
    }
    rd_kafka_topic_partition_list_destroy(list);
    return rk;
}

/* A set of request ids (open addressing; the batches a CLI reads are small). */
typedef struct id_set { char **ids; size_t n, cap; } id_set;

static unsigned long hash_str(const char *s)
{
    unsigned long h = 5381;
    while (*s) h = h * 33 + (unsigned char)*s++;
    return h;
}

/* Adds id; returns true when it was not there. */
static bool id_set_add(id_set *s, const char *id)
{
    if ((s->n + 1) * 2 > s->cap) {
        id_set bigger = {calloc(s->cap ? s->cap * 2 : 256, sizeof(char *)), 0, s->cap ? s->cap * 2 : 256};
        for (size_t i = 0; i < s->cap; i++)
            if (s->ids[i]) id_set_add(&bigger, s->ids[i]), free(s->ids[i]);
        free(s->ids);
        *s = bigger;
    }
    size_t i = hash_str(id) & (s->cap - 1);
    for (; s->ids[i]; i = (i + 1) & (s->cap - 1))
        if (strcmp(s->ids[i], id) == 0) return false;
    s->ids[i] = strdup(id);
    s->n++;
    return true;
}

static bool id_set_has(const id_set *s, const char *id)
{
    if (s->cap == 0) return false;
    for (size_t i = hash_str(id) & (s->cap - 1); s->ids[i]; i = (i + 1) & (s->cap - 1))
        if (strcmp(s->ids[i], id) == 0) return true;
    return false;
}

static void id_set_free(id_set *s)
{
    for (size_t i = 0; i < s->cap; i++) free(s->ids[i]);
    free(s->ids);
}

static void print_result(const Citadel__BatchResult *r)
{
    fputs("{\"request_id\":", stdout);
    json_write_cstring(stdout, r->request_id);
    fputs(",\"batch_id\":", stdout);
    json_write_cstring(stdout, r->batch_id);
    fputs(",\"model\":", stdout);
    json_write_cstring(stdout, r->model);
    fputs(",\"text\":", stdout);
    json_write_cstring(stdout, r->text);
    fputs(",\"finish_reason\":", stdout);
    json_write_cstring(stdout, r->error ? NULL : r->finish_reason);
    printf(",\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d}", r->usage ? r->usage->prompt_tokens : 0,
           r->usage ? r->usage->completion_tokens : 0);
    fputs(",\"error\":", stdout);
    if (r->error) {
        printf("{\"code\":%d,\"message\":", r->error->code);
        json_write_cstring(stdout, r->error->message);
        fputs("}", stdout);
    } else {
        fputs("null", stdout);
    }
    fputs("}\n", stdout);
}

static int batch_results(int argc, char **argv)
{
    static const struct option options[] = {{"batch", required_argument, 0, 'b'}, {"wait", no_argument, 0, 'w'},
                                            {"timeout", required_argument, 0, 't'}, {"brokers", required_argument, 0, 'k'},
                                            {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *batch = NULL, *given = NULL;
    bool wait = false;
    double timeout_s = 600;
    int opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'h':
            printf("usage: citadel batch results [--batch ID] [--wait] [--timeout S] [--brokers HOST:PORT]\n");
            return 0;
        case 'b': batch = optarg; break;
        case 'w': wait = true; break;
        case 'k': given = optarg; break;
        case 't':
            if (!cli_parse_float(optarg, 0.1, 86400, &timeout_s))
                return cli_usage_error("batch results", "bad --timeout '%s'", optarg);
            break;
        default: return cli_usage_error("batch results", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc)
        return cli_usage_error("batch results", "unexpected argument '%s'", argv[optind]);
    char brokers[1024];
    if (brokers_or_fail("results", given, brokers, sizeof brokers))
        return 1;
    const char *topics[] = {RESULTS_TOPIC, REQUESTS_TOPIC};
    rd_kafka_t *rk = reader(brokers, topics, wait ? 2 : 1);
    if (rk == NULL)
        return 1;
    id_set asked = {0}, answered = {0};
    long duplicates = 0, eofs = 0, parts = 0;
    rd_kafka_topic_partition_list_t *assigned = NULL;
    if (rd_kafka_assignment(rk, &assigned) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        parts = assigned->cnt;
        rd_kafka_topic_partition_list_destroy(assigned);
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9 > timeout_s)
            break;
        bool caught_up = eofs >= parts;
        if (caught_up && (!wait || (asked.n > 0 && answered.n >= asked.n)))
            break;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            eofs++;
        } else if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR &&
                   strcmp(rd_kafka_topic_name(m->rkt), REQUESTS_TOPIC) == 0) {
            Citadel__BatchRequest *br = citadel__batch_request__unpack(NULL, m->len, m->payload);
            if (br && br->request_id && (!batch || (br->batch_id && strcmp(br->batch_id, batch) == 0)))
                id_set_add(&asked, br->request_id);
            if (br) citadel__batch_request__free_unpacked(br, NULL);
        } else if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            Citadel__BatchResult *r = citadel__batch_result__unpack(NULL, m->len, m->payload);
            if (r && r->request_id && (!batch || (r->batch_id && strcmp(r->batch_id, batch) == 0))) {
                if (id_set_add(&answered, r->request_id))
                    print_result(r);
                else
                    duplicates++;
            }
            if (r) citadel__batch_result__free_unpacked(r, NULL);
        }
        rd_kafka_message_destroy(m);
        fflush(stdout);
    }
    long missing = 0;
    if (wait)
        for (size_t i = 0; i < asked.cap; i++)
            missing += asked.ids[i] && !id_set_has(&answered, asked.ids[i]);
    fprintf(stderr, "%zu result(s)%s%s, %ld duplicate(s) skipped", answered.n, batch ? " for " : "", batch ? batch : "",
            duplicates);
    if (wait) fprintf(stderr, ", %ld of %zu request(s) without a result", missing, asked.n);
    fputc('\n', stderr);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    id_set_free(&asked);
    id_set_free(&answered);
    return wait && (missing > 0 || asked.n == 0) ? 1 : 0;
}

int cmd_batch(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: citadel batch submit FILE.jsonl [--model M] [--batch-id ID] [--brokers HOST:PORT]\n"
               "       citadel batch results [--batch ID] [--wait] [--timeout S] [--brokers HOST:PORT]\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "submit"))
        return batch_submit(argc - 1, argv + 1);
    if (!strcmp(argv[1], "results"))
        return batch_results(argc - 1, argv + 1);
    return cli_usage_error("batch", "unknown subcommand '%s' (submit, results)", argv[1]);
}
