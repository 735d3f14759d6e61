/* simd.c - picks the instruction set of the CPU kernels once, at first use (simd.h).
 *
 * __builtin_cpu_supports reads CPUID and also checks that the OS saves the wide
 * registers, so a level it reports is safe to run.
 */
#include "cpu/simd.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static atomic_int current_level = -1;  /* -1: not chosen yet */

enum simd_level simd_best_level(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                __builtin_cpu_supports("f16c");
    bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512vnni");
    return avx512 ? SIMD_AVX512 : avx2 ? SIMD_AVX2 : SIMD_SCALAR;
#else
    return SIMD_SCALAR;
#endif
}

/* CITADEL_SIMD=scalar|avx2|avx512 lowers the level (tests, comparisons). */
static enum simd_level level_from_env(enum simd_level best)
{
    const char *e = getenv("CITADEL_SIMD");
    if (e == NULL)
        return best;
    enum simd_level want = !strcmp(e, "scalar") ? SIMD_SCALAR : !strcmp(e, "avx2") ? SIMD_AVX2 : best;
    return want < best ? want : best;
}

enum simd_level simd_level(void)
{
    int l = atomic_load_explicit(&current_level, memory_order_relaxed);
    if (l < 0) {
        l = (int)level_from_env(simd_best_level());
        atomic_store(&current_level, l);
    }
    return (enum simd_level)l;
}

enum simd_level simd_set_level(enum simd_level level)
{
    enum simd_level best = simd_best_level();
    if (level > best)
        level = best;
    if (level < SIMD_SCALAR)
        level = SIMD_SCALAR;
    atomic_store(&current_level, (int)level);
    return level;
}

const char *simd_level_name(enum simd_level level)
{
    switch (level) {
    case SIMD_AVX512: return "avx512";
    case SIMD_AVX2: return "avx2";
    default: return "scalar";
    }
}
