/* fleet_client.c - a minimal gateway stand-in for the fleet integration test
 * (fleet_test.sh): sends one GenerateRequest to the router's frontend over a DEALER,
 * reads the GenerateChunk stream, and prints the concatenated text on stdout exactly
 * as streamed, with a one-line summary on stderr:
 *   finish=<reason> chunks=<n> completion_tokens=<n> worker=<id> cancel_to_final_ms=<ms> cached_tokens=<n>
 *
 *   fleet_client ENDPOINT MODEL PROMPT [--max-tokens N] [--id ID] [--chat]
 *                [--cancel-after N] [--timeout S] [--type T]
 * --cancel-after N sends a Cancel once N chunks have arrived and measures how long the
 * last chunk takes after it. --type T sends the request under another type frame (the
 * router must answer an unknown type with an Error). Exit status: 0 a last chunk arrived, 3 an Error arrived
 * (its code and message on stderr), 4 timeout, 2 usage.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "citadel.pb-c.h"

typedef struct client_args {
    const char *endpoint, *model, *prompt, *id, *type;
    int max_tokens, cancel_after;
    double timeout_s;
    bool chat;
} client_args;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int parse_args(client_args *a, int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: fleet_client ENDPOINT MODEL PROMPT [--max-tokens N] [--id ID] [--chat] "
                        "[--cancel-after N] [--timeout S] [--type T]\n");
        return -1;
    }
    *a = (client_args){argv[1], argv[2], argv[3], NULL, "GenerateRequest", 64, 0, 30.0, false};
    for (int i = 4; i < argc; i++) {
        bool has_value = i + 1 < argc;
        if (!strcmp(argv[i], "--chat")) a->chat = true;
        else if (!strcmp(argv[i], "--max-tokens") && has_value) a->max_tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--id") && has_value) a->id = argv[++i];
        else if (!strcmp(argv[i], "--cancel-after") && has_value) a->cancel_after = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--timeout") && has_value) a->timeout_s = atof(argv[++i]);
        else if (!strcmp(argv[i], "--type") && has_value) a->type = argv[++i];
        else {
            fprintf(stderr, "fleet_client: bad argument '%s'\n", argv[i]);
            return -1;
        }
    }
    return 0;
}

static void send_msg(void *sock, const char *type, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    protobuf_c_message_pack(m, buf);
    zmq_send(sock, "", 0, ZMQ_SNDMORE);
    zmq_send(sock, type, strlen(type), ZMQ_SNDMORE);
    zmq_send(sock, buf, len, 0);
    free(buf);
}

/* Greedy, so that the fleet's text can be compared with `citadel generate`. */
static void send_request(void *sock, const client_args *a, const char *rid)
{
    Citadel__GenerateRequest r = CITADEL__GENERATE_REQUEST__INIT;
    Citadel__ChatMessage msg = CITADEL__CHAT_MESSAGE__INIT, *msgs[1] = {&msg};
    r.request_id = (char *)rid;
    r.model = (char *)a->model;
    if (a->chat) {
        msg.role = "user";
        msg.content = (char *)a->prompt;
        r.n_messages = 1;
        r.messages = msgs;
    } else {
        r.prompt = (char *)a->prompt;
    }
    r.max_tokens = a->max_tokens;
    r.temperature = 0.0f;
    r.stream = true;
    send_msg(sock, a->type, &r.base);
}

static void send_cancel(void *sock, const char *rid)
{
    Citadel__Cancel c = CITADEL__CANCEL__INIT;
    c.request_id = (char *)rid;
    send_msg(sock, "Cancel", &c.base);
}

/* Receives [empty][type][payload]; returns the payload frame's size or -1 on timeout.
 * type gets the type frame's text. */
static int recv_msg(void *sock, char *type, size_t type_cap, zmq_msg_t *payload, int timeout_ms)
{
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout_ms) != 1)
        return -1;
    char empty[8];
    zmq_recv(sock, empty, sizeof empty, 0);
    int n = zmq_recv(sock, type, type_cap - 1, 0);
    type[n < 0 ? 0 : (n < (int)type_cap ? n : (int)type_cap - 1)] = '\0';
    zmq_msg_init(payload);
    return zmq_msg_recv(payload, sock, 0);
}

int main(int argc, char **argv)
{
    client_args a;
    if (parse_args(&a, argc, argv))
        return 2;
    char rid[96];
    if (a.id) snprintf(rid, sizeof rid, "%s", a.id);
    else snprintf(rid, sizeof rid, "fleet-test-%d-%ld", (int)getpid(), (long)time(NULL));
    void *ctx = zmq_ctx_new(), *sock = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_connect(sock, a.endpoint);
    send_request(sock, &a, rid);
    double deadline = now_s() + a.timeout_s, cancel_at = 0;
    int chunks = 0, rc = 4;
    for (;;) {
        int left = (int)((deadline - now_s()) * 1000);
        char type[64];
        zmq_msg_t payload;
        if (left <= 0 || recv_msg(sock, type, sizeof type, &payload, left) < 0) {
            fprintf(stderr, "fleet_client: timeout after %d chunks\n", chunks);
            break;
        }
        if (!strcmp(type, "Error")) {
            Citadel__Error *e = citadel__error__unpack(NULL, zmq_msg_size(&payload), zmq_msg_data(&payload));
            fprintf(stderr, "error code=%d message=%s\n", e ? (int)e->code : -1, e ? e->message : "?");
            if (e) citadel__error__free_unpacked(e, NULL);
            zmq_msg_close(&payload);
            rc = 3;
            break;
        }
        Citadel__GenerateChunk *c = citadel__generate_chunk__unpack(NULL, zmq_msg_size(&payload), zmq_msg_data(&payload));
        zmq_msg_close(&payload);
        if (c == NULL || strcmp(type, "GenerateChunk") || strcmp(c->request_id, rid)) {
            fprintf(stderr, "fleet_client: unexpected message '%s'\n", type);
            if (c) citadel__generate_chunk__free_unpacked(c, NULL);
            continue;
        }
        chunks++;
        fputs(c->text, stdout);
        if (a.cancel_after > 0 && chunks == a.cancel_after) {
            send_cancel(sock, rid);
            cancel_at = now_s();
        }
        bool last = c->finish_reason[0] != '\0';
        if (last) {
            fprintf(stderr, "finish=%s chunks=%d completion_tokens=%d worker=%s cancel_to_final_ms=%.1f cached_tokens=%d\n",
                    c->finish_reason, chunks, c->usage ? c->usage->completion_tokens : -1, c->worker_id,
                    cancel_at > 0 ? (now_s() - cancel_at) * 1000 : -1.0, c->usage ? (int)c->usage->cached_tokens : -1);
            rc = 0;
        }
        citadel__generate_chunk__free_unpacked(c, NULL);
        if (last)
            break;
    }
    fflush(stdout);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return rc;
}
