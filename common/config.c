/* config.c - settings from flags, environment, file and defaults (see config.h).
 *
 * Loading is layered: every setting starts at its default, then the file, the
 * environment and the flags overwrite it in that order, each remembering where it came
 * from; only then is each value parsed, so an error names the source that won. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

/* A setting's current value: its text as given, where it came from (file_line for
 * the file), and the parsed value of its kind once the load succeeded. */
typedef struct config_value {
    char *text;
    config_source source;
    int file_line;
    long long i;      /* CONFIG_INT, CONFIG_BOOL */
    double seconds;   /* CONFIG_DURATION */
} config_value;

struct config {
    const char *program, *summary;
    const config_setting *table;
    size_t n;
    config_value *values;   /* values[i] belongs to table[i] */
    char *file;             /* the config file read, if any */
};

#define SECRET_SHOWN "(secret)"

static void set_err(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errsz, const char *fmt, ...)
{
    if (err == NULL || errsz == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

char *config_env_name(const char *name, char *buf, size_t cap)
{
    size_t k = (size_t)snprintf(buf, cap, "CITADEL_");
    for (; *name && k + 1 < cap; name++)
        buf[k++] = *name == '-' ? '_' : (char)toupper((unsigned char)*name);
    if (k < cap)
        buf[k] = '\0';
    return buf;
}

/* Settings are matched with '-' and '_' as the same letter, so that the flag
 * --admin-port and the file key admin_port both name admin_port. len bytes of key. */
static bool name_is(const char *name, const char *key, size_t len)
{
    size_t i = 0;
    for (; i < len && name[i]; i++) {
        char a = name[i] == '-' ? '_' : name[i], b = key[i] == '-' ? '_' : key[i];
        if (a != b)
            return false;
    }
    return i == len && name[i] == '\0';
}

static long find(const config *c, const char *key, size_t len)
{
    for (size_t i = 0; i < c->n; i++)
        if (name_is(c->table[i].name, key, len))
            return (long)i;
    return -1;
}

/* Replaces setting i's text; -1 when out of memory. */
static int set_value(config *c, size_t i, const char *text, config_source source, int line)
{
    char *copy = strdup(text ? text : "");
    if (copy == NULL)
        return -1;
    free(c->values[i].text);
    c->values[i] = (config_value){.text = copy, .source = source, .file_line = line};
    return 0;
}

config *config_new(const char *program, const char *summary, const config_setting *table, size_t n)
{
    config *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    *c = (config){program ? program : "citadel", summary ? summary : "", table, n, calloc(n ? n : 1, sizeof *c->values), NULL};
    if (c->values == NULL) {
        free(c);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (set_value(c, i, table[i].default_value, CONFIG_FROM_DEFAULT, 0)) {
            config_free(c);
            return NULL;
        }
    }
    return c;
}

void config_free(config *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n; i++)
        free(c->values[i].text);
    free(c->values);
    free(c->file);
    free(c);
}

/* ---- sources ---------------------------------------------------------------------- */

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t len = strlen(s);
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        s[--len] = '\0';
    return s;
}

/* One "key = value" line of the file; blank lines and # comments are skipped. A value
 * may be quoted ("...") to keep its outer spaces or a leading #. */
static int file_line(config *c, char *line, int lineno, char *err, size_t errsz)
{
    char *s = trim(line);
    if (*s == '\0' || *s == '#')
        return 0;
    char *eq = strchr(s, '=');
    if (eq == NULL) {
        set_err(err, errsz, "config file %s line %d: expected 'name = value'", c->file, lineno);
        return -1;
    }
    *eq = '\0';
    char *key = trim(s), *value = trim(eq + 1);
    size_t vlen = strlen(value);
    if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {
        value[vlen - 1] = '\0';
        value++;
    }
    long i = find(c, key, strlen(key));
    if (i < 0) {
        set_err(err, errsz, "config file %s line %d: unknown setting '%.64s'", c->file, lineno, key);
        return -1;
    }
    if (set_value(c, (size_t)i, value, CONFIG_FROM_FILE, lineno)) {
        set_err(err, errsz, "out of memory");
        return -1;
    }
    return 0;
}

static int load_file(config *c, const char *path, char *err, size_t errsz)
{
    free(c->file);
    if ((c->file = strdup(path)) == NULL) {
        set_err(err, errsz, "out of memory");
        return -1;
    }
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        set_err(err, errsz, "config file %s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    while (rc == 0 && getline(&line, &cap, f) >= 0)
        rc = file_line(c, line, ++lineno, err, errsz);
    free(line);
    fclose(f);
    return rc;
}

static int load_env(config *c)
{
    char env[128];
    for (size_t i = 0; i < c->n; i++) {
        const char *v = getenv(config_env_name(c->table[i].name, env, sizeof env));
        if (v && *v && set_value(c, i, v, CONFIG_FROM_ENV, 0))
            return -1;
    }
    return 0;
}

/* ---- the command line ----------------------------------------------------------------- */

/* What argv asks for, found in a first pass so that the file (named by --config) can be
 * read before the flags are applied over it. */
typedef struct flag_scan {
    const char *config_file;
} flag_scan;

/* Splits argv[*k] ("--name", "--name=value", "--name value") into setting index and
 * value, advancing *k past a separate value. Returns 0, 1 for --config (value in
 * *value), or -1 with err. --help never gets here (config_load looks for it first). */
static int parse_flag(const config *c, int argc, char **argv, int *k, long *index, const char **value,
                      char *err, size_t errsz)
{
    const char *arg = argv[*k];
    *index = -1;
    *value = NULL;
    if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
        set_err(err, errsz, "unexpected argument '%.64s' (settings are --name=value; see --help)", arg);
        return -1;
    }
    const char *name = arg + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    bool is_config = name_is("config", name, len);
    *index = is_config ? -2 : find(c, name, len);
    if (*index == -1) {
        set_err(err, errsz, "unknown flag '--%.*s' (see --help)", (int)(len > 64 ? 64 : len), name);
        return -1;
    }
    if (eq) {
        *value = eq + 1;
    } else if (!is_config && c->table[*index].kind == CONFIG_BOOL) {
        *value = "true";
    } else if (*k + 1 < argc) {
        *value = argv[++*k];
    } else {
        set_err(err, errsz, "flag '--%.*s' needs a value", (int)len, name);
        return -1;
    }
    return is_config;
}

/* Pass 1 (apply == false) checks the flags and finds --config; pass 2 sets the values. */
static int scan_flags(config *c, int argc, char **argv, bool apply, flag_scan *scan, char *err, size_t errsz)
{
    for (int k = 1; k < argc; k++) {
        long i;
        const char *value;
        int rc = parse_flag(c, argc, argv, &k, &i, &value, err, errsz);
        if (rc < 0)
            return -1;
        if (rc == 1)
            scan->config_file = value;
        else if (apply && set_value(c, (size_t)i, value, CONFIG_FROM_FLAG, 0)) {
            set_err(err, errsz, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* ---- checking values ----------------------------------------------------------------- */

static int parse_int(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *trim(end) != '\0')
        return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, long long *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
    for (int k = 0; k < 4; k++) {
        if (!strcasecmp(s, yes[k])) { *out = 1; return 0; }
        if (!strcasecmp(s, no[k])) { *out = 0; return 0; }
    }
    return -1;
}

/* "250ms", "1.5s", "2m", "1h", "30" (seconds) -> seconds; negative or not finite: -1. */
static int parse_duration(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v < 0 || isspace((unsigned char)*s))
        return -1;
    static const struct { const char *unit; double scale; } units[] = {
        {"", 1}, {"ms", 1e-3}, {"s", 1}, {"m", 60}, {"h", 3600},
    };
    for (size_t k = 0; k < sizeof units / sizeof units[0]; k++) {
        if (!strcmp(end, units[k].unit)) {
            *out = v * units[k].scale;
            return 0;
        }
    }
    return -1;
}

/* "CITADEL_X", "--x", "config file F line N" or "default": where value i came from. */
static void describe_source(const config *c, size_t i, char *buf, size_t cap)
{
    const config_value *v = &c->values[i];
    char env[128];
    switch (v->source) {
    case CONFIG_FROM_FLAG: snprintf(buf, cap, "flag --%s", c->table[i].name); break;
    case CONFIG_FROM_ENV: snprintf(buf, cap, "%s", config_env_name(c->table[i].name, env, sizeof env)); break;
    case CONFIG_FROM_FILE: snprintf(buf, cap, "config file %s line %d", c->file, v->file_line); break;
    default: snprintf(buf, cap, "default"); break;
    }
    for (char *p = buf; *p; p++)   /* flags show dashes, as typed */
        if (v->source == CONFIG_FROM_FLAG && *p == '_') *p = '-';
}

/* Parses value i by its kind; on error names the setting and the source and, unless
 * the setting is secret, quotes the value. */
static int check_value(config *c, size_t i, char *err, size_t errsz)
{
    const config_setting *s = &c->table[i];
    config_value *v = &c->values[i];
    const char *why = NULL;
    switch (s->kind) {
    case CONFIG_INT:
        if (parse_int(v->text, &v->i))
            why = "is not an integer";
        else if ((s->min || s->max) && (v->i < s->min || v->i > s->max))
            why = "is out of range";
        break;
    case CONFIG_BOOL: if (parse_bool(v->text, &v->i)) why = "is not a bool (true/false, yes/no, on/off, 1/0)"; break;
    case CONFIG_DURATION: if (parse_duration(v->text, &v->seconds)) why = "is not a duration (like 250ms, 30s, 5m, 1h)"; break;
    default: break;
    }
    if (why == NULL)
        return 0;
    char src[512], range[64] = "";
    describe_source(c, i, src, sizeof src);
    if (s->kind == CONFIG_INT && (s->min || s->max))
        snprintf(range, sizeof range, " (%lld..%lld)", s->min, s->max);
    if (s->secret)
        set_err(err, errsz, "setting %s: the value from %s %s%s", s->name, src, why, range);
    else
        set_err(err, errsz, "setting %s: '%.64s' from %s %s%s", s->name, v->text, src, why, range);
    return -1;
}

int config_load(config *c, int argc, char **argv, char *err, size_t errsz)
{
    for (int k = 1; k < argc; k++)   /* --help wins over any mistake around it */
        if (!strcmp(argv[k], "--help") || !strcmp(argv[k], "-h"))
            return CONFIG_HELP;
    flag_scan scan = {0};
    if (scan_flags(c, argc, argv, false, &scan, err, errsz))
        return CONFIG_ERROR;
    const char *file = scan.config_file ? scan.config_file : getenv("CITADEL_CONFIG");
    if (file && *file && load_file(c, file, err, errsz))
        return CONFIG_ERROR;
    if (load_env(c)) {
        set_err(err, errsz, "out of memory");
        return CONFIG_ERROR;
    }
    if (scan_flags(c, argc, argv, true, &scan, err, errsz))
        return CONFIG_ERROR;
    for (size_t i = 0; i < c->n; i++)
        if (check_value(c, i, err, errsz))
            return CONFIG_ERROR;
    return CONFIG_OK;
}

/* ---- output ------------------------------------------------------------------------- */

static const char *placeholder(config_kind kind)
{
    switch (kind) {
    case CONFIG_INT: return "N";
    case CONFIG_BOOL: return "BOOL";
    case CONFIG_DURATION: return "DURATION";
    default: return "TEXT";
    }
}

config *config_for_main(const char *program, const char *summary, const config_setting *table, size_t n,
                        int argc, char **argv, int *exit_status)
{
    char err[512];
    config *c = config_new(program, summary, table, n);
    *exit_status = 2;
    if (c == NULL)
        return NULL;
    int rc = config_load(c, argc, argv, err, sizeof err);
    if (rc == CONFIG_OK)
        return c;
    if (rc == CONFIG_HELP) {
        config_print_help(c, stdout);
        *exit_status = 0;
    } else {
        fprintf(stderr, "%s: %s\n", program, err);
    }
    config_free(c);
    return NULL;
}

void config_print_help(const config *c, FILE *out)
{
    fprintf(out, "usage: %s [--name=value ...]\n", c->program);
    if (*c->summary)
        fprintf(out, "%s\n", c->summary);
    fprintf(out, "\nEach setting is read from its flag, else its environment variable, else the config\n"
                 "file (--config=FILE or CITADEL_CONFIG; lines 'name = value'), else its default.\n\n");
    fprintf(out, "  --config=FILE  (env CITADEL_CONFIG)\n      the optional config file\n");
    char env[128], flag[128];
    for (size_t i = 0; i < c->n; i++) {
        const config_setting *s = &c->table[i];
        snprintf(flag, sizeof flag, "%s", s->name);
        for (char *p = flag; *p; p++)
            if (*p == '_') *p = '-';
        const char *dflt = s->secret ? SECRET_SHOWN : s->default_value ? s->default_value : "";
        fprintf(out, "  --%s=%s  (env %s, default '%s'", flag, placeholder(s->kind),
                config_env_name(s->name, env, sizeof env), dflt);
        if (s->kind == CONFIG_INT && (s->min || s->max))
            fprintf(out, ", %lld..%lld", s->min, s->max);
        fprintf(out, ")\n      %s\n", s->help ? s->help : "");
    }
    fprintf(out, "  --help\n      print this and exit\n");
}

static const char *shown_value(const config *c, size_t i)
{
    return c->table[i].secret ? SECRET_SHOWN : c->values[i].text;
}

void config_print(const config *c, FILE *out)
{
    char src[512];
    for (size_t i = 0; i < c->n; i++) {
        describe_source(c, i, src, sizeof src);
        fprintf(out, "%s = %s  (%s)\n", c->table[i].name, shown_value(c, i), src);
    }
}

void config_log(const config *c)
{
    log_field *fields = calloc(c->n ? c->n : 1, sizeof *fields);
    for (size_t i = 0; i < c->n; i++) {
        if (c->table[i].secret)
            log_redact(c->values[i].text);
        if (fields)
            fields[i] = LOG_STR(c->table[i].name, shown_value(c, i));
    }
    log_fields(LOG_INFO, NULL, fields, fields ? c->n : 0, "settings");
    free(fields);
}

/* ---- getters ------------------------------------------------------------------------ */

static const config_value *lookup(const config *c, const char *name, config_kind kind)
{
    long i = find(c, name, strlen(name));
    return i >= 0 && c->table[i].kind == kind ? &c->values[i] : NULL;
}

const char *config_string(const config *c, const char *name)
{
    const config_value *v = lookup(c, name, CONFIG_STRING);
    return v ? v->text : "";
}

long long config_int(const config *c, const char *name)
{
    const config_value *v = lookup(c, name, CONFIG_INT);
    return v ? v->i : 0;
}

bool config_bool(const config *c, const char *name)
{
    const config_value *v = lookup(c, name, CONFIG_BOOL);
    return v ? v->i != 0 : false;
}

double config_duration(const config *c, const char *name)
{
    const config_value *v = lookup(c, name, CONFIG_DURATION);
    return v ? v->seconds : 0;
}

config_source config_source_of(const config *c, const char *name)
{
    long i = find(c, name, strlen(name));
    return i >= 0 ? c->values[i].source : CONFIG_FROM_DEFAULT;
}
