/* config.h - a service's settings, declared once as a table and read from four places.
 *
 * Each setting has a snake_case name that gives its three spellings:
 *   command line   --admin-port=9101  or  --admin-port 9101   (a bool alone: --verbose)
 *   environment    CITADEL_ADMIN_PORT=9101                    (empty counts as unset)
 *   config file    admin_port = 9101                          (one per line, # comments)
 * and the first of these that is present wins: flag > environment > file > default.
 * The file is optional and named by --config=FILE or CITADEL_CONFIG. Containers are
 * configured by environment, people by flags; the table is also what --help prints.
 *
 * Every value is checked once, at load, against its kind (integer within a range, bool,
 * duration), so that afterwards the typed getters cannot fail and a service refuses to
 * start on a bad value with an error naming the setting and where the value came from.
 * Settings marked secret (keys, passwords) are never printed: not by --help, not in
 * errors, not by config_print(), and config_log() registers them with log_redact().
 *
 *   static const config_setting settings[] = {
 *       {"admin_port", CONFIG_INT, "9101", "admin HTTP port", .min = 1, .max = 65535},
 *       {"drain_timeout", CONFIG_DURATION, "30s", "time in-flight work gets on SIGTERM"},
 *   };
 *   config *cfg = config_new("citadel-router", "routes requests", settings, 2);
 *   int rc = config_load(cfg, argc, argv, err, sizeof err);
 *   if (rc == CONFIG_HELP) config_print_help(cfg, stdout);
 *   long long port = config_int(cfg, "admin_port");
 */
#ifndef CITADEL_CONFIG_H
#define CITADEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum config_kind {
    CONFIG_STRING,
    CONFIG_INT,         /* decimal, within [min, max] */
    CONFIG_BOOL,        /* true/false, yes/no, on/off, 1/0 */
    CONFIG_DURATION,    /* a number with an optional unit ms, s, m, h (bare: seconds) */
} config_kind;

/* One row of a service's table; the table is not copied and must outlive the config. */
typedef struct config_setting {
    const char *name;           /* snake_case, unique in the table */
    config_kind kind;
    const char *default_value;  /* text, checked like any other source; NULL means "" */
    const char *help;           /* one line for --help */
    long long min, max;         /* CONFIG_INT's inclusive range; both 0: any value */
    bool secret;                /* never print the value */
} config_setting;

/* Where a setting's value came from. */
typedef enum config_source { CONFIG_FROM_DEFAULT, CONFIG_FROM_FILE, CONFIG_FROM_ENV, CONFIG_FROM_FLAG } config_source;

/* config_load's results. */
enum { CONFIG_OK = 0, CONFIG_HELP = 1, CONFIG_ERROR = -1 };

typedef struct config config;

/* A config for `table` (n rows) holding the defaults, not yet loaded; program and
 * summary head the --help text. Returns NULL when out of memory. */
config *config_new(const char *program, const char *summary, const config_setting *table, size_t n);
void config_free(config *c);

/* Reads the file, the environment and argv (argv[0] is the program and is skipped) and
 * checks every value. Returns CONFIG_OK; CONFIG_HELP when argv has --help or -h (the
 * caller prints config_print_help and exits 0); CONFIG_ERROR with a message in err for
 * an unknown flag or file key, an unreadable file, or a bad value. Arguments that are
 * not flags are errors: services take none. On error the values are unspecified. */
int config_load(config *c, int argc, char **argv, char *err, size_t errsz);

/* What a service's main does with its settings: a new config loaded from the file,
 * the environment and argv, or NULL with *exit_status set to 0 after printing --help on
 * stdout, or to 2 after printing "<program>: <reason>" on stderr. */
config *config_for_main(const char *program, const char *summary, const config_setting *table, size_t n,
                        int argc, char **argv, int *exit_status);

/* Every setting with its flag, environment variable, default and help; secret
 * defaults are shown as "(secret)". */
void config_print_help(const config *c, FILE *out);
/* The effective values, one "name = value  (source)" line each, secrets as "(secret)". */
void config_print(const config *c, FILE *out);
/* Logs the effective values as one info line (secrets as "(secret)") and registers
 * every non-empty secret value with log_redact(). */
void config_log(const config *c);

/* Typed getters for a loaded config. A name not in the table, or a getter of the wrong
 * kind, returns "" / 0 / false: a programming error that the service's tests catch. */
const char *config_string(const config *c, const char *name);
long long config_int(const config *c, const char *name);
bool config_bool(const config *c, const char *name);
double config_duration(const config *c, const char *name);   /* seconds */
config_source config_source_of(const config *c, const char *name);

/* "CITADEL_ADMIN_PORT" for "admin_port" into buf; returns buf. */
char *config_env_name(const char *name, char *buf, size_t cap);

#endif
