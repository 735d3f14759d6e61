/* metrics.c - the metrics registry and its Prometheus text rendering (see metrics.h). */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

const double METRICS_LATENCY_BUCKETS[METRICS_LATENCY_BUCKETS_N] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
};

typedef enum metric_kind { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM } metric_kind;
static const char *const kind_names[] = {"counter", "gauge", "histogram"};

/* One series: a family's metric with one set of label values. The public handle types
 * (metrics_counter, ...) are this struct under another name, so that the compiler
 * keeps a gauge from being incremented as a counter.
 *
 * Counters and gauges keep a double's bits in an atomic integer, updated by
 * compare-and-swap: lock-free and exact under contention. A histogram keeps per-bucket
 * (not cumulative) counts under its mutex; rendering makes them cumulative. */
typedef struct series {
    struct series *next;          /* the family's series, in registration order */
    char *labels;                 /* rendered pairs without braces: a="1",b="2"; "" for none */
    _Atomic uint64_t bits;        /* counter, gauge: the value as a double's bits */
    pthread_mutex_t lock;         /* histogram: guards counts, sum, count */
    uint64_t *counts;             /* histogram: n_bounds + 1 buckets, the last +Inf */
    double sum;
    uint64_t count;
    const struct family *family;
} series;

/* A family: every series sharing one metric name, HELP and TYPE. */
typedef struct family {
    struct family *next;          /* the registry's families, in registration order */
    char *name;                   /* full name, prefix included */
    char *help;
    metric_kind kind;
    double *bounds;               /* histogram bucket upper limits */
    size_t n_bounds;
    series *first, *last;
} family;

struct metrics_registry {
    pthread_mutex_t lock;         /* guards the lists (registration vs rendering) */
    char *prefix;                 /* "citadel_<service>_" */
    family *first, *last;
};

/* ---- values as atomic doubles --------------------------------------------------------- */

static double bits_to_double(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static uint64_t double_to_bits(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

static void atomic_add_double(_Atomic uint64_t *bits, double v)
{
    uint64_t old = atomic_load_explicit(bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(bits, &old, double_to_bits(bits_to_double(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

/* ---- registry and registration ------------------------------------------------------ */

metrics_registry *metrics_registry_new(const char *service)
{
    metrics_registry *r = calloc(1, sizeof *r);
    size_t len = service ? strlen(service) : 0;
    if (r == NULL || (r->prefix = malloc(len + 10)) == NULL) {
        free(r);
        return NULL;
    }
    snprintf(r->prefix, len + 10, len ? "citadel_%s_" : "citadel_", service ? service : "");
    pthread_mutex_init(&r->lock, NULL);
    return r;
}

static void free_series(series *s)
{
    if (s->family->kind == METRIC_HISTOGRAM)
        pthread_mutex_destroy(&s->lock);
    free(s->counts);
    free(s->labels);
    free(s);
}

void metrics_registry_free(metrics_registry *r)
{
    if (r == NULL)
        return;
    for (family *f = r->first, *fn; f; f = fn) {
        fn = f->next;
        for (series *s = f->first, *sn; s; s = sn) {
            sn = s->next;
            free_series(s);
        }
        free(f->name);
        free(f->help);
        free(f->bounds);
        free(f);
    }
    pthread_mutex_destroy(&r->lock);
    free(r->prefix);
    free(r);
}

static bool valid_name(const char *s, bool colon_ok)
{
    if (s == NULL || *s == '\0' || (*s >= '0' && *s <= '9'))
        return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              (colon_ok && c == ':')))
            return false;
    }
    return true;
}

/* Writes s as a Prometheus label value: backslash, quote and newline escaped. */
static void write_label_value(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\') fputs("\\\\", f);
        else if (*s == '"') fputs("\\\"", f);
        else if (*s == '\n') fputs("\\n", f);
        else fputc(*s, f);
    }
}

/* labels -> "k1=\"v1\",k2=\"v2\"" (malloc'd; "" for none), or NULL when invalid. */
static char *render_labels(const char *const *labels)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (f == NULL)
        return NULL;
    bool ok = true;
    size_t k = 0;
    for (; ok && labels && labels[k]; k += 2) {
        ok = k / 2 < METRICS_MAX_LABELS && valid_name(labels[k], false) && labels[k + 1] != NULL &&
             strcmp(labels[k], "le") != 0;   /* le is the histogram's own label */
        if (ok) {
            fprintf(f, "%s%s=\"", k ? "," : "", labels[k]);
            write_label_value(f, labels[k + 1]);
            fputc('"', f);
        }
    }
    fclose(f);
    if (!ok) {
        free(out);
        return NULL;
    }
    return out;
}

static family *find_family(metrics_registry *r, const char *full_name)
{
    for (family *f = r->first; f; f = f->next)
        if (strcmp(f->name, full_name) == 0)
            return f;
    return NULL;
}

static bool bounds_ok(const double *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(b[i]) || (i && b[i] <= b[i - 1]))
            return false;
    return true;
}

/* A new, empty family appended to r; NULL when out of memory. Caller holds the lock. */
static family *add_family(metrics_registry *r, char *full_name, const char *help, metric_kind kind,
                          const double *bounds, size_t n_bounds)
{
    family *f = calloc(1, sizeof *f);
    if (f == NULL)
        return NULL;
    f->help = strdup(help ? help : "");
    f->bounds = kind == METRIC_HISTOGRAM ? malloc(sizeof *bounds * (n_bounds ? n_bounds : 1)) : NULL;
    if (f->help == NULL || (kind == METRIC_HISTOGRAM && f->bounds == NULL)) {
        free(f->help);
        free(f);
        return NULL;
    }
    if (n_bounds)
        memcpy(f->bounds, bounds, sizeof *bounds * n_bounds);
    f->name = full_name;
    f->kind = kind;
    f->n_bounds = n_bounds;
    if (r->last) r->last->next = f;
    else r->first = f;
    r->last = f;
    return f;
}

/* The family's series with these labels, made if absent. Caller holds the lock. */
static series *family_series(family *f, char *labels)
{
    for (series *s = f->first; s; s = s->next) {
        if (strcmp(s->labels, labels) == 0) {
            free(labels);
            return s;
        }
    }
    series *s = calloc(1, sizeof *s);
    if (s && f->kind == METRIC_HISTOGRAM && (s->counts = calloc(f->n_bounds + 1, sizeof *s->counts)) == NULL) {
        free(s);
        s = NULL;
    }
    if (s == NULL) {
        free(labels);
        return NULL;
    }
    if (f->kind == METRIC_HISTOGRAM)
        pthread_mutex_init(&s->lock, NULL);
    s->labels = labels;
    s->family = f;
    if (f->last) f->last->next = s;
    else f->first = s;
    f->last = s;
    return s;
}

static series *registration(metrics_registry *r, const char *name, const char *help, const char *const *labels,
                            metric_kind kind, const double *bounds, size_t n_bounds)
{
    if (r == NULL || !valid_name(name, true) || (kind == METRIC_HISTOGRAM && !bounds_ok(bounds, n_bounds)))
        return NULL;
    size_t len = strlen(r->prefix) + strlen(name) + 1;
    char *full = malloc(len), *rendered = render_labels(labels);
    if (full == NULL || rendered == NULL) {
        free(full);
        free(rendered);
        return NULL;
    }
    snprintf(full, len, "%s%s", r->prefix, name);
    pthread_mutex_lock(&r->lock);
    series *s = NULL;
    family *f = find_family(r, full);
    if (f) {
        free(full);
    } else if ((f = add_family(r, full, help, kind, bounds, n_bounds)) == NULL) {
        free(full);
    }
    if (f && f->kind == kind)
        s = family_series(f, rendered);
    else
        free(rendered);
    pthread_mutex_unlock(&r->lock);
    return s;
}

metrics_counter *metrics_counter_new(metrics_registry *r, const char *name, const char *help,
                                     const char *const *labels)
{
    return (metrics_counter *)registration(r, name, help, labels, METRIC_COUNTER, NULL, 0);
}

metrics_gauge *metrics_gauge_new(metrics_registry *r, const char *name, const char *help,
                                 const char *const *labels)
{
    return (metrics_gauge *)registration(r, name, help, labels, METRIC_GAUGE, NULL, 0);
}

metrics_histogram *metrics_histogram_new(metrics_registry *r, const char *name, const char *help,
                                         const char *const *labels, const double *bounds, size_t n_bounds)
{
    if (bounds == NULL) {
        bounds = METRICS_LATENCY_BUCKETS;
        n_bounds = METRICS_LATENCY_BUCKETS_N;
    }
    return (metrics_histogram *)registration(r, name, help, labels, METRIC_HISTOGRAM, bounds, n_bounds);
}

/* ---- updates ------------------------------------------------------------------------ */

void metrics_counter_inc(metrics_counter *c) { metrics_counter_add(c, 1.0); }

void metrics_counter_add(metrics_counter *c, double v)
{
    if (c && isfinite(v) && v > 0)
        atomic_add_double(&((series *)c)->bits, v);
}

double metrics_counter_value(const metrics_counter *c)
{
    return c ? bits_to_double(atomic_load(&((const series *)c)->bits)) : 0;
}

void metrics_gauge_set(metrics_gauge *g, double v)
{
    if (g)
        atomic_store(&((series *)g)->bits, double_to_bits(v));
}

void metrics_gauge_add(metrics_gauge *g, double v)
{
    if (g)
        atomic_add_double(&((series *)g)->bits, v);
}

double metrics_gauge_value(const metrics_gauge *g)
{
    return g ? bits_to_double(atomic_load(&((const series *)g)->bits)) : 0;
}

void metrics_histogram_observe(metrics_histogram *h, double v)
{
    series *s = (series *)h;
    if (s == NULL || isnan(v))
        return;
    const family *f = s->family;
    size_t b = 0;   /* the first bucket whose upper limit holds v; n_bounds is +Inf */
    while (b < f->n_bounds && v > f->bounds[b])
        b++;
    pthread_mutex_lock(&s->lock);
    s->counts[b]++;
    s->sum += v;
    s->count++;
    pthread_mutex_unlock(&s->lock);
}

uint64_t metrics_histogram_count(metrics_histogram *h)
{
    series *s = (series *)h;
    if (s == NULL)
        return 0;
    pthread_mutex_lock(&s->lock);
    uint64_t n = s->count;
    pthread_mutex_unlock(&s->lock);
    return n;
}

double metrics_histogram_sum(metrics_histogram *h)
{
    series *s = (series *)h;
    if (s == NULL)
        return 0;
    pthread_mutex_lock(&s->lock);
    double sum = s->sum;
    pthread_mutex_unlock(&s->lock);
    return sum;
}

/* ---- rendering ---------------------------------------------------------------------- */

/* A sample value as Prometheus reads it: +Inf, -Inf, NaN, else the shortest of %.15g
 * and %.17g that reads back exactly (so counters print as integers). buf: 32 bytes. */
static const char *format_value(char *buf, size_t cap, double v)
{
    if (isnan(v)) return "NaN";
    if (isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    snprintf(buf, cap, "%.15g", v);
    if (strtod(buf, NULL) != v)
        snprintf(buf, cap, "%.17g", v);
    return buf;
}

static void write_value(FILE *f, double v)
{
    char buf[32];
    fputs(format_value(buf, sizeof buf, v), f);
}

/* HELP text escapes backslash and newline only. */
static void write_help(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\') fputs("\\\\", f);
        else if (*s == '\n') fputs("\\n", f);
        else fputc(*s, f);
    }
}

/* name{labels} or name{labels,extra} or name: the braces only when there are labels. */
static void write_sample_name(FILE *f, const char *name, const char *suffix, const char *labels, const char *extra)
{
    fprintf(f, "%s%s", name, suffix);
    if (*labels || extra)
        fprintf(f, "{%s%s%s}", labels, *labels && extra ? "," : "", extra ? extra : "");
    fputc(' ', f);
}

static void render_histogram(FILE *f, const family *fam, series *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t cumulative = 0;
    char le[64], num[32];
    for (size_t b = 0; b <= fam->n_bounds; b++) {
        cumulative += s->counts[b];
        double bound = b < fam->n_bounds ? fam->bounds[b] : INFINITY;
        snprintf(le, sizeof le, "le=\"%s\"", format_value(num, sizeof num, bound));
        write_sample_name(f, fam->name, "_bucket", s->labels, le);
        fprintf(f, "%llu\n", (unsigned long long)cumulative);
    }
    write_sample_name(f, fam->name, "_sum", s->labels, NULL);
    write_value(f, s->sum);
    fputc('\n', f);
    write_sample_name(f, fam->name, "_count", s->labels, NULL);
    fprintf(f, "%llu\n", (unsigned long long)s->count);
    pthread_mutex_unlock(&s->lock);
}

static void render_family(FILE *f, const family *fam)
{
    fprintf(f, "# HELP %s ", fam->name);
    write_help(f, fam->help);
    fprintf(f, "\n# TYPE %s %s\n", fam->name, kind_names[fam->kind]);
    for (series *s = fam->first; s; s = s->next) {
        if (fam->kind == METRIC_HISTOGRAM) {
            render_histogram(f, fam, s);
            continue;
        }
        write_sample_name(f, fam->name, "", s->labels, NULL);
        write_value(f, bits_to_double(atomic_load(&s->bits)));
        fputc('\n', f);
    }
}

int metrics_render(metrics_registry *r, FILE *out)
{
    if (r == NULL)
        return 0;
    pthread_mutex_lock(&r->lock);
    for (const family *fam = r->first; fam; fam = fam->next)
        render_family(out, fam);
    pthread_mutex_unlock(&r->lock);
    return ferror(out) ? -1 : 0;
}

void metrics_write(FILE *out, void *registry)
{
    metrics_render(registry, out);
}
