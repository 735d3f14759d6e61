/* tensor_types.c - the table of ggml tensor types: how many elements a block holds and
 * how many bytes it takes. The loader uses it to validate tensor sizes; the kernels to
 * walk rows. See gguf.h. */
#include "gguf/gguf.h"

#include <stddef.h>

static const struct tensor_type_info type_table[TENSOR_TYPE_MAX] = {
    [TENSOR_F32]  = {"F32", 1, 4, true},
    [TENSOR_F16]  = {"F16", 1, 2, true},
    [TENSOR_Q4_0] = {"Q4_0", 32, 18, true},
    [TENSOR_Q4_1] = {"Q4_1", 32, 20, true},
    [TENSOR_Q5_0] = {"Q5_0", 32, 22, false},
    [TENSOR_Q5_1] = {"Q5_1", 32, 24, false},
    [TENSOR_Q8_0] = {"Q8_0", 32, 34, true},
    [TENSOR_Q8_1] = {"Q8_1", 32, 36, false},
    [TENSOR_Q2_K] = {"Q2_K", 256, 84, false},
    [TENSOR_Q3_K] = {"Q3_K", 256, 110, false},
    [TENSOR_Q4_K] = {"Q4_K", 256, 144, true},
    [TENSOR_Q5_K] = {"Q5_K", 256, 176, false},
    [TENSOR_Q6_K] = {"Q6_K", 256, 210, true},
    [TENSOR_Q8_K] = {"Q8_K", 256, 292, false},
    [TENSOR_BF16] = {"BF16", 1, 2, true},
};

const struct tensor_type_info *tensor_type_info(uint32_t type)
{
    if (type >= TENSOR_TYPE_MAX || type_table[type].name == NULL)
        return NULL;
    return &type_table[type];
}

size_t tensor_row_bytes(enum tensor_type type, int64_t n)
{
    const struct tensor_type_info *info = tensor_type_info(type);
    if (info == NULL || n < 0)
        return 0;
    return (size_t)(n / info->block_elems) * (size_t)info->block_bytes;
}
