/* bench_sanitize.c - how fast the sanitizer scans (common/sanitize.h, stream_filter.h):
 * MB/s of text on one core with 10,000 blocked terms and every detector on, one-shot
 * and streamed in 16-byte chunks (about a token at a time), and the time one typical
 * chat prompt (2 KB) takes at p50 and p99. The text is prose in English and Chinese
 * with a phone number, an e-mail, a card, an IP or a key every few hundred bytes, and
 * none of the blocked terms (a blocked text would stop the scan early).
 *
 * Times are the thread's CPU time (see now_s).
 *
 *   build/bench/bench_sanitize [MB]     (default 32 MB of text)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stream_filter.h"

/* CPU time of this thread: "MB/s on one core" is the work one core does, and on a
 * shared machine wall time would also count the time other processes held the core. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* 10,000 made-up words and phrases, Latin and CJK, that the text never contains. */
static ac_automaton *make_terms(void)
{
    enum { N = 10000 };
    static char words[N][32];
    const char *terms[N];
    size_t lens[N];
    srand(1);
    for (int i = 0; i < N; i++) {
        int n = 0;
        if (i % 4 == 0) n = snprintf(words[i], 32, "禁%d词", i);
        else for (int k = 0, len = 6 + rand() % 8; k < len; k++) words[i][n++] = (char)('a' + rand() % 26);
        words[i][n] = '\0';
        strcat(words[i], "qz");   /* "qz" never occurs in the text */
        terms[i] = words[i];
        lens[i] = strlen(words[i]);
    }
    char err[256];
    ac_automaton *a = ac_build(terms, lens, N, err, sizeof err);
    if (a == NULL) fprintf(stderr, "%s\n", err);
    return a;
}

static char *make_text(size_t size)
{
    static const char *const pieces[] = {
        "The quarterly report was reviewed by the committee and approved without changes. ",
        "Please send the updated figures to finance before Friday, then we can close the books. ",
        "我们将在下周一的会议上讨论这个项目的进展情况，请大家提前准备好材料。",
        "Contact me at 13812345678 or li.wei@example.com if anything is unclear. ",
        "The server at 10.20.30.40 restarted twice last night; logs are in the usual place. ",
        "Payment went to card 4111 1111 1111 1111 on the 3rd, reference 20240301-77. ",
        "Use the staging key sk-abcdefghijklmnopqrstuvwxyz123456 only for tests. ",
        "Version 2.4.1 fixed the timeout at 12:30:45 that users reported in ticket 5821. ",
    };
    char *t = malloc(size + 256);
    size_t n = 0;
    for (unsigned i = 0; n < size; i = i * 7 + 3) {
        const char *p = pieces[i % 8];
        memcpy(t + n, p, strlen(p));
        n += strlen(p);
    }
    t[size] = '\0';
    return t;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    size_t mb = argc > 1 ? (size_t)atoi(argv[1]) : 32, size = mb << 20;
    char err[256];
    ac_automaton *terms = make_terms();
    sanitizer *s = terms ? sanitizer_new_with_terms(NULL, terms, err, sizeof err) : NULL;
    if (s == NULL) return 1;
    char *text = make_text(size);
    sanitize_result r;
    double t0 = now_s();
    sanitize_text(s, SANITIZE_OUTPUT, text, size, &r);
    double one_shot = now_s() - t0;
    unsigned found = 0;
    for (int k = 0; k < SANITIZE_FINDING_COUNT; k++) found += r.counts[k];
    int blocked = r.blocked;
    sanitize_result_free(&r);

    stream_filter *f = stream_filter_new(s, SANITIZE_OUTPUT);
    size_t stream_bytes = size / 4 - size / 4 % 16;
    t0 = now_s();
    for (size_t at = 0; at < stream_bytes; at += 16) {
        stream_filter_push(f, text + at, 16, at + 16 >= stream_bytes, &r);
        sanitize_result_free(&r);
    }
    double streamed = now_s() - t0;
    stream_filter_free(f);

    enum { PROMPTS = 2000, PROMPT = 2048 };
    static double lat[PROMPTS];
    for (int i = 0; i < PROMPTS; i++) {
        size_t off = (size_t)(i * 7919) % (size - PROMPT);
        t0 = now_s();
        sanitize_text(s, SANITIZE_INPUT, text + off, PROMPT, &r);
        lat[i] = now_s() - t0;
        sanitize_result_free(&r);
    }
    qsort(lat, PROMPTS, sizeof lat[0], cmp_double);
    printf("sanitize: 10000 blocked terms, all detectors, %zu MB: one-shot %.0f MB/s (%u findings%s), "
           "streamed in 16-byte chunks %.0f MB/s\n",
           mb, (double)size / one_shot / 1e6, found, blocked ? ", BLOCKED" : "", (double)stream_bytes / streamed / 1e6);
    printf("sanitize: one 2 KB prompt: p50 %.1f us, p99 %.1f us\n", lat[PROMPTS / 2] * 1e6, lat[PROMPTS * 99 / 100] * 1e6);
    free(text);
    sanitizer_free(s);
    return 0;
}
