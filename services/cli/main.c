/* main.c - entry point of the `citadel` command: picks the sub-command and holds the
 * small helpers every command uses (argument parsing, opening a model). See cli.h. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cpu/simd.h"
#ifdef CITADEL_CUDA
#include "cuda/cuda_backend.h"
#endif

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "citadel %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see citadel %s --help)\n", cmd);
    return 2;
}

bool cli_parse_int(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

bool cli_parse_float(const char *s, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || isnan(v) || v < min || v > max)
        return false;
    *out = v;
    return true;
}

engine_model *cli_open_model(const char *cmd, const char *path)
{
    char err[512];
    engine_model *m;
    if (path == NULL) {
        cli_usage_error(cmd, "--model is required");
        return NULL;
    }
    if (engine_model_open(&m, path, err, sizeof err)) {
        fprintf(stderr, "citadel %s: cannot load model: %s\n", cmd, err);
        return NULL;
    }
    return m;
}

char *cli_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += got;
        if (n + 1 == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (bigger == NULL) { free(buf); buf = NULL; }
            else buf = bigger;
        }
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

static int cmd_version(void)
{
    printf("citadel %s\n", ENGINE_VERSION);
    printf("simd: %s\n", simd_level_name(simd_best_level()));
#ifdef CITADEL_CUDA
    char err[160];
    int devices = cuda_device_count(err, sizeof err);
    printf("cuda: yes\n");
    printf("cuda runtime: %d.%d\n", cuda_runtime_version() / 1000, cuda_runtime_version() % 1000 / 10);
    printf("cuda devices: %d%s%s\n", devices, err[0] ? " - " : "", err);
#else
    printf("cuda: no\n");
#endif
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: citadel <command> [options]\n"
            "\n"
            "commands:\n"
            "  generate    generate text from a prompt (--chat for chat models)\n"
            "  tokenize    print the token ids of a text\n"
            "  perplexity  perplexity of a model on a text file\n"
            "  bench       prompt and generation speed (optionally on a random-weight model)\n"
            "  sanitize    redact PII and secrets, check blocked terms (the sanitizer's code)\n"
            "  keys        API keys: create, list, revoke (the gateway's key store)\n"
            "  train       fine-tune a LoRA adapter on a JSONL data set\n"
            "  audit       verify the audit log's hash chain, query its records\n"
            "  batch       submit batch jobs over Kafka, read their results\n"
            "  up          start the local fleet (router, workers, gateway)\n"
            "  down        stop the local fleet\n"
            "  status      each service of the local fleet: alive or dead, and its health\n"
            "  version     version and build features\n"
            "\n"
            "citadel <command> --help lists the options of a command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "generate")) return cmd_generate(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "perplexity")) return cmd_perplexity(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "sanitize")) return cmd_sanitize(argc - 1, argv + 1);
    if (!strcmp(cmd, "keys")) return cmd_keys(argc - 1, argv + 1);
    if (!strcmp(cmd, "train")) return cmd_train(argc - 1, argv + 1);
    if (!strcmp(cmd, "audit")) return cmd_audit(argc - 1, argv + 1);
    if (!strcmp(cmd, "batch")) return cmd_batch(argc - 1, argv + 1);
    if (!strcmp(cmd, "up")) return cmd_up(argc - 1, argv + 1);
    if (!strcmp(cmd, "down")) return cmd_down(argc - 1, argv + 1);
    if (!strcmp(cmd, "status")) return cmd_status(argc - 1, argv + 1);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) return cmd_version();
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "citadel: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
