/* request_map.h - turning a GenerateRequest off the wire into what the engine takes:
 * generation parameters and prompt token ids.
 *
 * The wire carries OpenAI's parameters as proto3 scalars, where an unset field reads
 * as 0; the mapping gives 0 the meaning that keeps a parameter neutral (top_p 0 -> off,
 * repetition_penalty 0 -> off, max_tokens 0 -> the worker's default), and refuses
 * values no sampler could honour. Chat messages are rendered with the model's template
 * and tokenized with control tokens parsed; a raw prompt is tokenized as plain text.
 * Both get BOS when the model wants it (engine_adds_bos).
 */
#ifndef CITADEL_WORKER_REQUEST_MAP_H
#define CITADEL_WORKER_REQUEST_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "citadel.pb-c.h"
#include "engine.h"

#define REQUEST_DEFAULT_MAX_TOKENS 1024

/* Fills *out from the request's sampling fields. seed_if_unset is used when the request
 * carries no seed (has_seed false and seed 0); the caller passes something that varies,
 * so unseeded requests differ.
 * Returns 0, or -1 with a client-facing message in err (a value out of range, too many
 * stop strings). */
int request_gen_params(const Citadel__GenerateRequest *req, uint64_t seed_if_unset,
                       engine_gen_params *out, char *err, size_t errsz);

/* The prompt's token ids (malloc'd, *n of them). Returns NULL with a message in err
 * when the request has neither messages nor a prompt, a message lacks its role, or the
 * text cannot be rendered or tokenized. */
int32_t *request_prompt_ids(const engine_model *m, const Citadel__GenerateRequest *req, int *n,
                            char *err, size_t errsz);

#endif
