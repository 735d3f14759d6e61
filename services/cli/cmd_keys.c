/* cmd_keys.c - `citadel keys create|list|revoke`: API key management on the store in
 * $CITADEL_HOME/keys/keys.db (common/apikeys.h), the same file the gateway reads and
 * reloads when it changes; /admin/keys does the same over HTTPS.
 *
 *   citadel keys create --role R[,R2] [--models a,b] [--rpm N] [--tpm N]
 *                       [--expires DURATION] [--user NAME] [--id ID] [--json]
 *       prints the key's attributes, and the new key alone on the last line (the only
 *       time it is shown);
 *   citadel keys list [--json]      one key a line: id, status, roles, models, limits;
 *   citadel keys revoke ID          the key is refused from then on (it stays listed).
 * --home DIR overrides $CITADEL_HOME. Roles are checked by the gateway's policy, not
 * here: a role the policy does not define grants nothing.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/crypto.h>

#include "apikeys.h"
#include "cli.h"
#include "fleet.h"
#include "json_writer.h"

/* Opens the store of home (or $CITADEL_HOME): keys dir made 0700, file loaded. */
static int open_store(const char *home, apikey_store *st)
{
    char dir[4000], err[512] = "";
    snprintf(dir, sizeof dir, "%s/keys", home ? home : fleet_home());
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "citadel keys: cannot create %s: %s\n", dir, strerror(errno));
        return -1;
    }
    snprintf(st->path, sizeof st->path, "%s/keys.db", dir);
    if (apikeys_load(st, st->path, err, sizeof err) != 0) {
        fprintf(stderr, "citadel keys: %s\n", err);
        return -1;
    }
    if (err[0]) fprintf(stderr, "citadel keys: warning: %s\n", err);
    return 0;
}

static void print_time(const char *label, int64_t t)
{
    if (t == 0) return;
    char buf[40];
    time_t tt = (time_t)t;
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", gmtime(&tt));
    printf(" %s=%s", label, buf);
}

static void print_key_line(const apikey *k, time_t now)
{
    printf("%s %s roles=%s models=%s rpm=%" PRId64 " tpm=%" PRId64 " user=%s", k->key_id,
           apikeys_state(k, now), k->roles, k->models[0] ? k->models : "*", k->rpm, k->tpm,
           k->user[0] ? k->user : k->key_id);
    print_time("created", k->created);
    print_time("expires", k->expires);
    print_time("revoked", k->revoked);
    printf("\n");
}

static void print_key_json(const apikey *k, time_t now)
{
    printf("{\"id\":");
    json_write_cstring(stdout, k->key_id);
    printf(",\"status\":\"%s\",\"roles\":", apikeys_state(k, now));
    json_write_cstring(stdout, k->roles);
    printf(",\"models\":");
    json_write_cstring(stdout, k->models);
    printf(",\"user\":");
    json_write_cstring(stdout, k->user[0] ? k->user : k->key_id);
    printf(",\"rpm\":%" PRId64 ",\"tpm\":%" PRId64 ",\"created\":%" PRId64 ",\"expires\":%" PRId64
           ",\"revoked\":%" PRId64 "}",
           k->rpm, k->tpm, k->created, k->expires, k->revoked);
}

static int keys_create(int argc, char **argv)
{
    static const struct option options[] = {
        {"role", required_argument, 0, 'r'},  {"models", required_argument, 0, 'm'},
        {"rpm", required_argument, 0, 'q'},   {"tpm", required_argument, 0, 't'},
        {"expires", required_argument, 0, 'e'}, {"user", required_argument, 0, 'u'},
        {"id", required_argument, 0, 'i'},    {"home", required_argument, 0, 'H'},
        {"json", no_argument, 0, 'j'},        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    apikey tmpl = {0};
    const char *home = NULL;
    bool json = false;
    long v;
    int opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'r': snprintf(tmpl.roles, sizeof tmpl.roles, "%s", optarg); break;
        case 'm': snprintf(tmpl.models, sizeof tmpl.models, "%s", optarg); break;
        case 'u': snprintf(tmpl.user, sizeof tmpl.user, "%s", optarg); break;
        case 'i': snprintf(tmpl.key_id, sizeof tmpl.key_id, "%s", optarg); break;
        case 'H': home = optarg; break;
        case 'j': json = true; break;
        case 'q':
        case 't':
            if (!cli_parse_int(optarg, 0, 1000000000000L, &v))
                return cli_usage_error("keys create", "--%s must be a non-negative integer", opt == 'q' ? "rpm" : "tpm");
            if (opt == 'q') tmpl.rpm = v;
            else tmpl.tpm = v;
            break;
        case 'e': {
            int64_t secs;
            if (apikeys_parse_duration(optarg, &secs) != 0)
                return cli_usage_error("keys create", "--expires takes a duration like 90s, 15m, 12h, 30d");
            tmpl.expires = (int64_t)time(NULL) + secs;
            break;
        }
        case 'h':
            printf("usage: citadel keys create --role R[,R2] [--models a,b] [--rpm N] [--tpm N]\n"
                   "                           [--expires DURATION] [--user NAME] [--id ID] [--home DIR] [--json]\n"
                   "The new key is printed alone on the last line; it is never shown again.\n");
            return 0;
        default: return cli_usage_error("keys create", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (tmpl.roles[0] == '\0') return cli_usage_error("keys create", "--role is required");
    if (optind < argc) return cli_usage_error("keys create", "unexpected argument '%s'", argv[optind]);
    apikey_store st = {0};
    if (open_store(home, &st) != 0) return 1;
    char key[APIKEY_LEN + 1], err[512];
    apikey made;
    int rc = apikeys_create(&st, &tmpl, key, &made, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "citadel keys create: %s\n", err);
        apikeys_free(&st);
        return 1;
    }
    if (json) {
        print_key_json(&made, time(NULL));
        printf("\n");
    } else {
        print_key_line(&made, time(NULL));
    }
    printf("%s\n", key);
    OPENSSL_cleanse(key, sizeof key);
    apikeys_free(&st);
    return 0;
}

/* Options of list and revoke: --home and --json; returns the first non-option index or -1. */
static int parse_common(const char *cmd, int argc, char **argv, const char **home, bool *json)
{
    static const struct option options[] = {
        {"home", required_argument, 0, 'H'}, {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (opt == 'H') *home = optarg;
        else if (opt == 'j') *json = true;
        else if (opt == 'h') {
            printf("usage: citadel %s [--home DIR] [--json]%s\n", cmd, strcmp(cmd, "keys revoke") == 0 ? " ID" : "");
            return -2;
        } else {
            cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
            return -1;
        }
    }
    return optind;
}

static int keys_list(int argc, char **argv)
{
    const char *home = NULL;
    bool json = false;
    int i = parse_common("keys list", argc, argv, &home, &json);
    if (i < 0) return i == -2 ? 0 : 2;
    if (i < argc) return cli_usage_error("keys list", "unexpected argument '%s'", argv[i]);
    apikey_store st = {0};
    if (open_store(home, &st) != 0) return 1;
    time_t now = time(NULL);
    if (json) printf("{\"keys\":[");
    for (size_t k = 0; k < st.n; k++) {
        if (json) {
            if (k) printf(",");
            print_key_json(&st.keys[k], now);
        } else {
            print_key_line(&st.keys[k], now);
        }
    }
    if (json) printf("]}\n");
    apikeys_free(&st);
    return 0;
}

static int keys_revoke(int argc, char **argv)
{
    const char *home = NULL;
    bool json = false;
    int i = parse_common("keys revoke", argc, argv, &home, &json);
    if (i < 0) return i == -2 ? 0 : 2;
    if (i + 1 != argc) return cli_usage_error("keys revoke", "give exactly one key id");
    apikey_store st = {0};
    if (open_store(home, &st) != 0) return 1;
    char err[512];
    int rc = apikeys_revoke(&st, argv[i], time(NULL), err, sizeof err);
    if (rc < 0) fprintf(stderr, "citadel keys revoke: %s\n", err);
    else printf("%s %s\n", argv[i], rc == 1 ? "was already revoked" : "revoked");
    apikeys_free(&st);
    return rc < 0 ? 1 : 0;
}

int cmd_keys(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    if (!strcmp(sub, "create")) return keys_create(argc - 1, argv + 1);
    if (!strcmp(sub, "list")) return keys_list(argc - 1, argv + 1);
    if (!strcmp(sub, "revoke")) return keys_revoke(argc - 1, argv + 1);
    if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help")) {
        printf("usage: citadel keys create|list|revoke ... (citadel keys <sub> --help)\n");
        return 0;
    }
    return cli_usage_error("keys", "want create, list or revoke");
}
