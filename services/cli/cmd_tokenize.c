/* cmd_tokenize.c - `citadel tokenize --model F --text T [--special] [--bos] [--json]`:
 * the token ids of a text, without BOS unless --bos. --json prints {"ids": [...]};
 * otherwise one line per token: id and its text. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json_writer.h"

static void print_tokens(const engine_model *m, const int32_t *ids, int n)
{
    for (int i = 0; i < n; i++) {
        char piece[256];
        int len = engine_token_text(m, ids[i], piece, sizeof piece);
        printf("%d\t", ids[i]);
        json_write_string(stdout, piece, len > 0 ? (size_t)(len < (int)sizeof piece ? len : (int)sizeof piece) : 0);
        printf("\n");
    }
}

int cmd_tokenize(int argc, char **argv)
{
    static const struct option options[] = {
        {"model", required_argument, 0, 'm'}, {"text", required_argument, 0, 't'},
        {"json", no_argument, 0, 'j'}, {"special", no_argument, 0, 's'},
        {"bos", no_argument, 0, 'b'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *text = NULL;
    bool json = false, special = false, bos = false;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'm': model = optarg; break;
        case 't': text = optarg; break;
        case 'j': json = true; break;
        case 's': special = true; break;
        case 'b': bos = true; break;
        case 'h':
            printf("usage: citadel tokenize --model FILE --text TEXT [--special] [--bos] [--json]\n");
            return 0;
        default: return cli_usage_error("tokenize", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("tokenize", "unexpected argument '%s'", argv[optind]);
    if (text == NULL) return cli_usage_error("tokenize", "--text is required");
    engine_model *m = cli_open_model("tokenize", model);
    if (m == NULL) return 1;
    size_t len = strlen(text);
    int cap = (int)len + 8;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    int n = ids ? engine_tokenize(m, text, len, bos, special, ids, cap) : -1;
    int rc = 0;
    if (n < 0 || n > cap) {
        fprintf(stderr, "citadel tokenize: tokenization failed\n");
        rc = 1;
    } else if (json) {
        printf("{\"ids\":");
        json_write_int_array(stdout, ids, (size_t)n);
        printf("}\n");
    } else {
        print_tokens(m, ids, n);
    }
    free(ids);
    engine_model_close(m);
    return rc;
}
