/* admission.c - the worker's queue limits and context check (see admission.h). */
#include "admission.h"

#include <stdio.h>

enum admission_verdict admission_check(const admission_limits *l, const job_queue *q, int free_slots,
                                       int n_prompt, char *msg, size_t msgsz)
{
    if (n_prompt >= l->n_ctx) {
        snprintf(msg, msgsz, "prompt has %d tokens, the model's context is %d", n_prompt, l->n_ctx);
        return ADMISSION_PROMPT_TOO_LONG;
    }
    if (free_slots < 0)
        free_slots = 0;
    if (job_queue_len(q) < free_slots)
        return ADMISSION_ACCEPT;   /* it goes into a free slot at the next step */
    int waiting = job_queue_len(q) - free_slots + 1;
    if (waiting > l->max_queued_requests) {
        snprintf(msg, msgsz, "worker overloaded: %d requests already waiting (max_queued_requests %d)", waiting - 1,
                 l->max_queued_requests);
        return ADMISSION_QUEUE_REQUESTS;
    }
    long long tokens = job_queue_tokens_after(q, free_slots) + n_prompt;
    if (l->max_queued_tokens > 0 && tokens > l->max_queued_tokens) {
        snprintf(msg, msgsz, "worker overloaded: %lld prompt tokens would be waiting (max_queued_tokens %lld)", tokens,
                 l->max_queued_tokens);
        return ADMISSION_QUEUE_TOKENS;
    }
    return ADMISSION_ACCEPT;
}

const char *admission_reason(enum admission_verdict v)
{
    switch (v) {
    case ADMISSION_ACCEPT: return "accepted";
    case ADMISSION_PROMPT_TOO_LONG: return "prompt_too_long";
    case ADMISSION_QUEUE_REQUESTS: return "queue_full_requests";
    case ADMISSION_QUEUE_TOKENS: return "queue_full_tokens";
    }
    return "unknown";
}
