/* cmd_sanitize.c - `citadel sanitize --text T [--direction input|output] [--terms FILE]
 * [--policy TYPE=redact|block|log]... [--json]`: the sanitizer service's code
 * (common/sanitize.h) run on one text, for operators checking a policy or a term list.
 * --json prints {"text": ..., "findings": [{"type": ..., "count": ...}], "blocked": b};
 * otherwise the text, then one "TYPE COUNT" line per finding on stderr. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "sanitize.h"

/* "PHONE=block" into policy[]; false when malformed. */
static bool parse_policy(const char *arg, pii_policy policy[PII_TYPE_COUNT])
{
    const char *eq = strchr(arg, '=');
    if (eq == NULL) return false;
    for (int t = 0; t < PII_TYPE_COUNT; t++) {
        const char *name = pii_type_name((pii_type)t);
        if (strlen(name) == (size_t)(eq - arg) && !strncasecmp(arg, name, strlen(name)))
            return pii_policy_parse(eq + 1, &policy[t]) == 0;
    }
    return false;
}

static void print_plain(const sanitize_result *r)
{
    if (r->blocked) printf("blocked: %s\n", r->reason);
    else printf("%s\n", r->text.data ? r->text.data : "");
    for (int k = 0; k < SANITIZE_FINDING_COUNT; k++)
        if (r->counts[k]) fprintf(stderr, "%s %u\n", sanitize_finding_name(k), r->counts[k]);
}

int cmd_sanitize(int argc, char **argv)
{
    static const struct option options[] = {
        {"text", required_argument, 0, 't'}, {"direction", required_argument, 0, 'd'},
        {"terms", required_argument, 0, 'l'}, {"policy", required_argument, 0, 'p'},
        {"json", no_argument, 0, 'j'},        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *text = NULL, *terms = NULL;
    sanitize_direction dir = SANITIZE_INPUT;
    pii_policy policy[PII_TYPE_COUNT] = {PII_REDACT};
    bool json = false;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 't': text = optarg; break;
        case 'l': terms = optarg; break;
        case 'j': json = true; break;
        case 'd':
            if (!strcmp(optarg, "input")) dir = SANITIZE_INPUT;
            else if (!strcmp(optarg, "output")) dir = SANITIZE_OUTPUT;
            else return cli_usage_error("sanitize", "--direction must be input or output");
            break;
        case 'p':
            if (!parse_policy(optarg, policy)) return cli_usage_error("sanitize", "bad --policy '%s'", optarg);
            break;
        case 'h':
            printf("usage: citadel sanitize --text TEXT [--direction input|output] [--terms FILE]\n"
                   "                        [--policy TYPE=redact|block|log]... [--json]\n"
                   "TYPE: PHONE ID_CARD EMAIL BANK_CARD IP SECRET\n");
            return 0;
        default: return cli_usage_error("sanitize", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("sanitize", "unexpected argument '%s'", argv[optind]);
    if (text == NULL) return cli_usage_error("sanitize", "--text is required");
    char err[512];
    sanitizer *s = sanitizer_new(policy, terms, err, sizeof err);
    if (s == NULL) {
        fprintf(stderr, "citadel sanitize: %s\n", err);
        return 1;
    }
    sanitize_result r;
    int rc = sanitize_text(s, dir, text, strlen(text), &r);
    if (json) {
        sanitize_result_write_json(&r, stdout);
        printf("\n");
    } else {
        print_plain(&r);
    }
    sanitize_result_free(&r);
    sanitizer_free(s);
    return rc ? 1 : 0;
}
