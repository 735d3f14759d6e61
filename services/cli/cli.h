/* cli.h - the `citadel` command: the operator's and user's tool. main.c dispatches on
 * the first argument to one cmd_*.c file per command; this header is what they share.
 *
 * Contract (tests rely on it): bad arguments or an unreadable model print one clear
 * message on stderr and exit non-zero; --json prints exactly one JSON object on stdout.
 */
#ifndef CITADEL_CLI_H
#define CITADEL_CLI_H

#include <stdbool.h>

#include "engine.h"

int cmd_generate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_sanitize(int argc, char **argv);   /* cmd_sanitize.c: common/sanitize.h on one text */
int cmd_keys(int argc, char **argv);       /* cmd_keys.c: API keys (common/apikeys.h) */
int cmd_train(int argc, char **argv);      /* cmd_train.c: a LoRA fine-tuning job, locally */
int cmd_audit(int argc, char **argv);      /* cmd_audit.c: verify and query the audit log */
int cmd_batch(int argc, char **argv);      /* cmd_batch.c: batch jobs over Kafka */
/* The local fleet (cmd_fleet.c). */
int cmd_up(int argc, char **argv);
int cmd_down(int argc, char **argv);
int cmd_status(int argc, char **argv);

/* Prints "citadel <cmd>: <message>" on stderr and returns 2 (the exit status for
 * usage errors). */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Strict number parsing: the whole string must be a number within [min, max]. */
bool cli_parse_int(const char *s, long min, long max, long *out);
bool cli_parse_float(const char *s, double min, double max, double *out);

/* Opens the model or prints why not (returns NULL). */
engine_model *cli_open_model(const char *cmd, const char *path);

/* Reads a whole file into a malloc'd NUL-terminated buffer; NULL with errno set. */
char *cli_read_file(const char *path, size_t *len);

#endif
