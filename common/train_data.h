/* train_data.h - fine-tuning data sets: JSONL files of chat conversations or
 * prompt/completion pairs, cleaned and split, for `citadel train` and citadel-trainer.
 * Knows nothing of models: tokenizing is the engine's (engine_train.h).
 *
 * One example a line, either
 *   {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
 * with at least one assistant message, or
 *   {"prompt": "...", "completion": "..."}.
 * Blank lines are skipped. A line that is not such an object is bad: it is reported
 * with its number and why, and skipped; the load fails when more than max_bad_share of
 * the non-blank lines are bad. Every text passes through the sanitizer when one is
 * given (PII redacted before anything learns it; the findings are counted). Exact
 * duplicates (after sanitizing) are dropped. Then a seeded shuffle puts val_share of
 * the examples (at least one when there are two or more) in the validation set.
 */
#ifndef CITADEL_TRAIN_DATA_H
#define CITADEL_TRAIN_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sanitize.h"

/* One example. Chat: n_msgs messages; prompt/completion: n_msgs 0. Strings owned. */
typedef struct train_record {
    int line;              /* 1-based line in the file */
    int n_msgs;
    char **roles, **contents;
    char *prompt, *completion;
} train_record;

typedef struct train_dataset {
    train_record *train, *val;
    int n_train, n_val;
    int n_lines;           /* non-blank lines read */
    int n_bad, n_duplicates;
    unsigned n_redacted;   /* sanitizer findings replaced, all types */
} train_dataset;

typedef struct train_data_options {
    double max_bad_share;  /* fail above this share of bad lines (0.1) */
    double val_share;      /* share held out for validation (0.1) */
    uint64_t seed;         /* the split */
    sanitizer *sanitizer;  /* NULL: texts are kept as they are */
} train_data_options;

/* Called for each bad line, with a short reason. */
typedef void (*train_data_bad_fn)(int line, const char *why, void *user);

/* Loads path into *out. Returns 0, or -1 with a message (unreadable file, no example
 * left, too many bad lines); *out is then empty. */
int train_data_load(train_dataset *out, const char *path, const train_data_options *opt,
                    train_data_bad_fn on_bad, void *user, char *err, size_t errsz);
/* The same over text already in memory (len bytes). */
int train_data_parse(train_dataset *out, const char *text, size_t len, const train_data_options *opt,
                     train_data_bad_fn on_bad, void *user, char *err, size_t errsz);
void train_dataset_free(train_dataset *d);

#endif
