/* train_data.c - fine-tuning data sets from JSONL (see train_data.h). JSON is parsed
 * with jansson, which refuses duplicate keys, invalid UTF-8 and embedded NULs.
 */
#include "train_data.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int dfail(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int dfail(char *err, size_t errsz, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
    return -1;
}

static void record_free(train_record *r)
{
    for (int i = 0; i < r->n_msgs; i++) {
        free(r->roles[i]);
        free(r->contents[i]);
    }
    free(r->roles);
    free(r->contents);
    free(r->prompt);
    free(r->completion);
}

/* A copy of text with PII redacted (counted into *redacted), or a plain copy. */
static char *clean_text(const char *text, sanitizer *s, unsigned *redacted)
{
    if (s == NULL)
        return strdup(text);
    sanitize_result r;
    char *out = NULL;
    if (sanitize_text(s, SANITIZE_INPUT, text, strlen(text), &r) == 0 && !r.blocked) {
        out = strdup(r.text.data ? r.text.data : "");
        for (int k = 0; k < SANITIZE_FINDING_COUNT; k++)
            *redacted += r.counts[k];
    }
    sanitize_result_free(&r);
    return out;
}

static bool role_known(const char *role)
{
    return !strcmp(role, "system") || !strcmp(role, "user") || !strcmp(role, "assistant");
}

/* Fills r from one parsed line, or returns the reason it is bad. */
static const char *record_from_json(train_record *r, json_t *obj, sanitizer *s, unsigned *redacted)
{
    if (!json_is_object(obj))
        return "not a JSON object";
    json_t *msgs = json_object_get(obj, "messages");
    if (msgs) {
        size_t n = json_array_size(msgs);
        if (!json_is_array(msgs) || n == 0)
            return "\"messages\" must be a non-empty array";
        r->roles = calloc(n, sizeof *r->roles);
        r->contents = calloc(n, sizeof *r->contents);
        if (!r->roles || !r->contents)
            return "out of memory";
        bool assistant = false;
        for (size_t i = 0; i < n; i++) {
            json_t *m = json_array_get(msgs, i);
            const char *role = json_string_value(json_object_get(m, "role"));
            const char *content = json_string_value(json_object_get(m, "content"));
            if (role == NULL || content == NULL)
                return "each message needs string \"role\" and \"content\"";
            if (!role_known(role))
                return "a message's role is not system, user or assistant";
            assistant |= !strcmp(role, "assistant") && content[0] != '\0';
            r->roles[i] = strdup(role);
            r->contents[i] = clean_text(content, s, redacted);
            r->n_msgs = (int)i + 1;
            if (!r->roles[i] || !r->contents[i])
                return "out of memory or blocked by the sanitizer";
        }
        return assistant ? NULL : "no non-empty assistant message to learn";
    }
    const char *prompt = json_string_value(json_object_get(obj, "prompt"));
    const char *completion = json_string_value(json_object_get(obj, "completion"));
    if (prompt == NULL || completion == NULL)
        return "needs \"messages\", or string \"prompt\" and \"completion\"";
    if (completion[0] == '\0')
        return "empty completion";
    r->prompt = clean_text(prompt, s, redacted);
    r->completion = clean_text(completion, s, redacted);
    return r->prompt && r->completion ? NULL : "out of memory or blocked by the sanitizer";
}

/* The record as one string (roles and texts with separators that cannot occur in
 * them), for finding duplicates. */
static char *record_key(const train_record *r)
{
    size_t len = 3;
    for (int i = 0; i < r->n_msgs; i++)
        len += strlen(r->roles[i]) + strlen(r->contents[i]) + 2;
    if (r->n_msgs == 0)
        len += strlen(r->prompt) + strlen(r->completion) + 2;
    char *key = malloc(len), *p = key;
    if (key == NULL)
        return NULL;
    for (int i = 0; i < r->n_msgs; i++)
        p += sprintf(p, "%s\x01%s\x02", r->roles[i], r->contents[i]);
    if (r->n_msgs == 0)
        p += sprintf(p, "\x03%s\x01%s", r->prompt, r->completion);
    *p = '\0';
    return key;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* An open-addressing set of record keys. */
typedef struct key_set {
    char **slots;
    size_t cap, n;
} key_set;

/* True when key was already in the set; otherwise adds it (taking ownership). */
static bool key_set_seen(key_set *ks, char *key)
{
    if ((ks->n + 1) * 2 > ks->cap) {
        size_t cap = ks->cap ? ks->cap * 2 : 64;
        char **slots = calloc(cap, sizeof *slots);
        if (slots == NULL) {
            free(key);
            return false;  /* out of memory: keep the line rather than lose it */
        }
        for (size_t i = 0; i < ks->cap; i++)
            if (ks->slots[i])
                for (size_t j = fnv1a(ks->slots[i]) % cap;; j = (j + 1) % cap)
                    if (!slots[j]) { slots[j] = ks->slots[i]; break; }
        free(ks->slots);
        ks->slots = slots;
        ks->cap = cap;
    }
    for (size_t j = fnv1a(key) % ks->cap;; j = (j + 1) % ks->cap) {
        if (ks->slots[j] == NULL) {
            ks->slots[j] = key;
            ks->n++;
            return false;
        }
        if (!strcmp(ks->slots[j], key)) {
            free(key);
            return true;
        }
    }
}

static void key_set_free(key_set *ks)
{
    for (size_t i = 0; i < ks->cap; i++)
        free(ks->slots[i]);
    free(ks->slots);
}

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Moves the records into train and val by a seeded shuffle. */
static int split(train_dataset *d, train_record *all, int n, const train_data_options *opt)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(mix64(opt->seed ^ mix64((uint64_t)i)) % (uint64_t)(i + 1));
        train_record tmp = all[i];
        all[i] = all[j];
        all[j] = tmp;
    }
    int n_val = (int)(n * opt->val_share + 0.5);
    if (n_val == 0 && n >= 2 && opt->val_share > 0)
        n_val = 1;
    if (n_val >= n)
        n_val = n - 1;
    d->val = malloc(sizeof *d->val * (size_t)(n_val ? n_val : 1));
    d->train = malloc(sizeof *d->train * (size_t)(n - n_val));
    if (!d->val || !d->train)
        return -1;
    memcpy(d->val, all, sizeof *all * (size_t)n_val);
    memcpy(d->train, all + n_val, sizeof *all * (size_t)(n - n_val));
    d->n_val = n_val;
    d->n_train = n - n_val;
    return 0;
}

int train_data_parse(train_dataset *out, const char *text, size_t len, const train_data_options *opt,
                     train_data_bad_fn on_bad, void *user, char *err, size_t errsz)
{
    memset(out, 0, sizeof *out);
    train_record *all = NULL;
    int n = 0, cap = 0, line = 0, rc = -1;
    key_set seen = {0};
    for (size_t pos = 0; pos < len;) {
        const char *start = text + pos, *nl = memchr(start, '\n', len - pos);
        size_t line_len = nl ? (size_t)(nl - start) : len - pos;
        pos += line_len + 1;
        line++;
        size_t k = 0;
        while (k < line_len && (start[k] == ' ' || start[k] == '\t' || start[k] == '\r')) k++;
        if (k == line_len)
            continue;
        out->n_lines++;
        json_error_t jerr;
        json_t *obj = json_loadb(start, line_len, JSON_REJECT_DUPLICATES, &jerr);
        train_record r = {.line = line};
        const char *why = obj ? record_from_json(&r, obj, opt->sanitizer, &out->n_redacted) : jerr.text;
        json_decref(obj);
        if (why) {
            out->n_bad++;
            if (on_bad) on_bad(line, why, user);
            record_free(&r);
            continue;
        }
        char *key = record_key(&r);
        if (key && key_set_seen(&seen, key)) {
            out->n_duplicates++;
            record_free(&r);
            continue;
        }
        if (n == cap) {
            train_record *bigger = realloc(all, sizeof *all * (size_t)(cap = cap ? cap * 2 : 64));
            if (bigger == NULL) {
                record_free(&r);
                dfail(err, errsz, "out of memory");
                goto done;
            }
            all = bigger;
        }
        all[n++] = r;
    }
    if (out->n_lines > 0 && out->n_bad > opt->max_bad_share * out->n_lines) {
        dfail(err, errsz, "%d of %d lines are bad (more than the %.0f%% allowed)", out->n_bad,
              out->n_lines, opt->max_bad_share * 100);
        goto done;
    }
    if (n == 0) {
        dfail(err, errsz, "no usable example");
        goto done;
    }
    if (split(out, all, n, opt)) {
        dfail(err, errsz, "out of memory");
        goto done;
    }
    n = 0;  /* the records now belong to out */
    rc = 0;
done:
    for (int i = 0; i < n; i++)
        record_free(&all[i]);
    free(all);
    key_set_free(&seen);
    if (rc) {
        free(out->train);
        free(out->val);
        out->train = out->val = NULL;
        out->n_train = out->n_val = 0;
    }
    return rc;
}

int train_data_load(train_dataset *out, const char *path, const train_data_options *opt,
                    train_data_bad_fn on_bad, void *user, char *err, size_t errsz)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return dfail(err, errsz, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + len, 1, cap - len, f)) > 0;) {
        len += got;
        if (len == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (bigger == NULL) { free(buf); buf = NULL; }
            else buf = bigger;
        }
    }
    bool read_error = ferror(f);
    fclose(f);
    if (buf == NULL || read_error) {
        free(buf);
        return dfail(err, errsz, "cannot read %s", path);
    }
    int rc = train_data_parse(out, buf, len, opt, on_bad, user, err, errsz);
    free(buf);
    return rc;
}

void train_dataset_free(train_dataset *d)
{
    for (int i = 0; d->train && i < d->n_train; i++)
        record_free(&d->train[i]);
    for (int i = 0; d->val && i < d->n_val; i++)
        record_free(&d->val[i]);
    free(d->train);
    free(d->val);
    memset(d, 0, sizeof *d);
}
