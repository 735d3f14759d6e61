/* grpc_client.c - a small gRPC client of citadel.v1.Inference for grpc_test.sh, on gRPC
 * core's C API (the library the gateway serves with) and the protobuf-c messages.
 *
 *   grpc_client HOST:PORT CA_CERT METHOD [--key KEY] [--model M] [--prompt P | --chat T]
 *               [--max-tokens N] [--cancel-after N] [--text-out FILE]
 * METHOD is Generate, ListModels or Health. Prints, one per line: "status CODE",
 * "message TEXT", "md NAME VALUE" for each initial and trailing metadata entry that
 * starts with x-ratelimit or retry-after, and for Generate "chunks N", "finish R",
 * "usage PROMPT COMPLETION", "tokens N" (token ids in all chunks), "worker ID" (the
 * worker the chunks name); the chunks' text joined goes to --text-out FILE. "models
 * a,b" for ListModels; "health STATUS ROUTER IN_FLIGHT" for Health. --cancel-after N
 * cancels the call after N messages.
 * Exit status 0 when the call ran (whatever its gRPC status), 1 on a client failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "citadel.pb-c.h"
#include "inference.pb-c.h"

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    char *buf = calloc(1, 1 << 20);
    if (buf && fread(buf, 1, (1 << 20) - 1, f) == 0) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

/* Runs ops as one batch and waits for it. */
static int run_batch(grpc_call *call, grpc_completion_queue *cq, const grpc_op *ops, size_t n, void *tag)
{
    if (grpc_call_start_batch(call, ops, n, tag, NULL) != GRPC_CALL_OK) return -1;
    grpc_event ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success ? 0 : -1;
}

static void print_md(const grpc_metadata_array *md)
{
    for (size_t i = 0; i < md->count; i++) {
        const grpc_slice k = md->metadata[i].key, v = md->metadata[i].value;
        const char *ks = (const char *)GRPC_SLICE_START_PTR(k);
        size_t kl = GRPC_SLICE_LENGTH(k);
        if ((kl >= 11 && strncmp(ks, "x-ratelimit", 11) == 0) || (kl == 11 && strncmp(ks, "retry-after", 11) == 0))
            printf("md %.*s %.*s\n", (int)kl, ks, (int)GRPC_SLICE_LENGTH(v), (const char *)GRPC_SLICE_START_PTR(v));
    }
}

/* The request message for method, packed into a byte buffer. */
static grpc_byte_buffer *request_for(const char *method, const char *model, const char *prompt, const char *chat,
                                     int max_tokens)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (strcmp(method, "Generate") == 0) {
        Citadel__GenerateRequest m = CITADEL__GENERATE_REQUEST__INIT;
        Citadel__ChatMessage msg = CITADEL__CHAT_MESSAGE__INIT;
        Citadel__ChatMessage *msgs[1] = {&msg};
        m.model = (char *)model;
        m.max_tokens = max_tokens;
        m.temperature = 0;   /* greedy: comparable with citadel generate */
        if (chat) {
            msg.role = "user";
            msg.content = (char *)chat;
            m.n_messages = 1;
            m.messages = msgs;
        } else {
            m.prompt = (char *)prompt;
        }
        len = citadel__generate_request__get_packed_size(&m);
        buf = malloc(len + 1);
        citadel__generate_request__pack(&m, buf);
    } else if (strcmp(method, "ListModels") == 0) {
        Citadel__ModelsRequest m = CITADEL__MODELS_REQUEST__INIT;
        len = citadel__models_request__get_packed_size(&m);
        buf = malloc(len + 1);
        citadel__models_request__pack(&m, buf);
    } else {
        Citadel__V1__HealthRequest m = CITADEL__V1__HEALTH_REQUEST__INIT;
        len = citadel__v1__health_request__get_packed_size(&m);
        buf = malloc(len + 1);
        citadel__v1__health_request__pack(&m, buf);
    }
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)buf, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    free(buf);
    return bb;
}

/* Bytes of a received message (malloc'd). */
static uint8_t *message_bytes(grpc_byte_buffer *bb, size_t *len)
{
    grpc_byte_buffer_reader r;
    grpc_byte_buffer_reader_init(&r, bb);
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    *len = GRPC_SLICE_LENGTH(s);
    uint8_t *out = malloc(*len + 1);
    memcpy(out, GRPC_SLICE_START_PTR(s), *len);
    grpc_slice_unref(s);
    return out;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: grpc_client HOST:PORT CA_CERT METHOD [--key K] [--model M] [--prompt P | --chat T] "
                        "[--max-tokens N] [--cancel-after N]\n");
        return 1;
    }
    const char *target = argv[1], *ca = argv[2], *method = argv[3];
    const char *key = NULL, *model = "", *prompt = "Once upon a time", *chat = NULL, *text_out = NULL;
    int max_tokens = 16, cancel_after = -1;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--key")) key = argv[i + 1];
        else if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--prompt")) prompt = argv[i + 1];
        else if (!strcmp(argv[i], "--chat")) chat = argv[i + 1];
        else if (!strcmp(argv[i], "--max-tokens")) max_tokens = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--cancel-after")) cancel_after = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--text-out")) text_out = argv[i + 1];
    }
    char *ca_pem = read_file(ca);
    if (ca_pem == NULL) {
        fprintf(stderr, "grpc_client: cannot read %s\n", ca);
        return 1;
    }
    grpc_init();
    grpc_channel_credentials *creds = grpc_ssl_credentials_create(ca_pem, NULL, NULL, NULL);
    grpc_arg name_arg = {GRPC_ARG_STRING, GRPC_SSL_TARGET_NAME_OVERRIDE_ARG, {.string = "localhost"}};
    grpc_channel_args args = {1, &name_arg};
    grpc_channel *ch = grpc_channel_create(target, creds, &args);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    char path[128];
    snprintf(path, sizeof path, "/citadel.v1.Inference/%s", method);
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(60, GPR_TIMESPAN));
    grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, grpc_slice_from_static_string(path),
                                               NULL, deadline, NULL);
    char auth[512];
    grpc_metadata md[1];
    size_t n_md = 0;
    if (key) {
        snprintf(auth, sizeof auth, "Bearer %s", key);
        md[0].key = grpc_slice_from_static_string("authorization");
        md[0].value = grpc_slice_from_static_string(auth);
        n_md = 1;
    }
    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    grpc_byte_buffer *req = request_for(method, model, prompt, chat, max_tokens);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = n_md;
    ops[0].data.send_initial_metadata.metadata = md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    run_batch(call, cq, ops, 4, (void *)1);   /* fails when the server refuses at once: the status says why */
    grpc_byte_buffer_destroy(req);

    int chunks = 0, tokens = 0;
    char worker[128] = "";
    char *text = calloc(1, 1 << 20);
    size_t text_len = 0;
    char finish[32] = "", models[1024] = "";
    long prompt_tokens = -1, completion_tokens = -1;
    for (int received = 0;; received++) {
        grpc_byte_buffer *bb = NULL;
        grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};
        op.data.recv_message.recv_message = &bb;
        if (run_batch(call, cq, &op, 1, (void *)2) != 0 || bb == NULL) break;
        size_t len;
        uint8_t *bytes = message_bytes(bb, &len);
        grpc_byte_buffer_destroy(bb);
        if (strcmp(method, "Generate") == 0) {
            Citadel__GenerateChunk *c = citadel__generate_chunk__unpack(NULL, len, bytes);
            if (c) {
                chunks++;
                tokens += (int)c->n_token_ids;
                if (c->worker_id && c->worker_id[0]) snprintf(worker, sizeof worker, "%s", c->worker_id);
                size_t tl = c->text ? strlen(c->text) : 0;
                if (text_len + tl < (1 << 20)) memcpy(text + text_len, c->text, tl), text_len += tl;
                if (c->finish_reason && c->finish_reason[0]) snprintf(finish, sizeof finish, "%s", c->finish_reason);
                if (c->usage) prompt_tokens = c->usage->prompt_tokens, completion_tokens = c->usage->completion_tokens;
                citadel__generate_chunk__free_unpacked(c, NULL);
            }
        } else if (strcmp(method, "ListModels") == 0) {
            Citadel__ModelList *l = citadel__model_list__unpack(NULL, len, bytes);
            for (size_t i = 0; l && i < l->n_models; i++)
                snprintf(models + strlen(models), sizeof models - strlen(models), "%s%s", i ? "," : "", l->models[i]);
            if (l) citadel__model_list__free_unpacked(l, NULL);
        } else {
            Citadel__V1__HealthResponse *h = citadel__v1__health_response__unpack(NULL, len, bytes);
            if (h) printf("health %s %d %llu\n", h->status, (int)h->router_connected, (unsigned long long)h->in_flight);
            if (h) citadel__v1__health_response__free_unpacked(h, NULL);
        }
        free(bytes);
        if (cancel_after >= 0 && received + 1 >= cancel_after) grpc_call_cancel(call, NULL);
    }
    grpc_status_code status;
    grpc_slice details;
    grpc_op st = {.op = GRPC_OP_RECV_STATUS_ON_CLIENT};
    st.data.recv_status_on_client.trailing_metadata = &trailing_md;
    st.data.recv_status_on_client.status = &status;
    st.data.recv_status_on_client.status_details = &details;
    int rc = run_batch(call, cq, &st, 1, (void *)3);
    if (rc == 0) {
        printf("status %d\n", (int)status);
        printf("message %.*s\n", (int)GRPC_SLICE_LENGTH(details), (const char *)GRPC_SLICE_START_PTR(details));
        grpc_slice_unref(details);
    }
    print_md(&initial_md);
    print_md(&trailing_md);
    if (strcmp(method, "Generate") == 0) {
        printf("chunks %d\nfinish %s\nusage %ld %ld\ntokens %d\nworker %s\n", chunks, finish, prompt_tokens,
               completion_tokens, tokens, worker);
        FILE *f = text_out ? fopen(text_out, "wb") : NULL;
        if (f) {
            fwrite(text, 1, text_len, f);
            fclose(f);
        }
    } else if (strcmp(method, "ListModels") == 0) {
        printf("models %s\n", models);
    }
    free(text);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    grpc_channel_credentials_release(creds);
    grpc_shutdown();
    free(ca_pem);
    return rc == 0 ? 0 : 1;
}
