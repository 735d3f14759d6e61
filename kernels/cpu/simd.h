/* simd.h - which instruction set the CPU kernels use, chosen at run time.
 *
 * Every kernel has a portable scalar version (the reference the tests compare against)
 * and, where it pays, AVX2 and AVX-512 versions in *_avx2.c / *_avx512.c files compiled
 * with those flags. simd_level() picks the best the CPU has once; tests and benchmarks
 * can force a lower level with simd_set_level() (or CITADEL_SIMD=scalar|avx2|avx512).
 */
#ifndef CITADEL_SIMD_H
#define CITADEL_SIMD_H

enum simd_level { SIMD_SCALAR = 0, SIMD_AVX2 = 1, SIMD_AVX512 = 2 };

/* The level in use: the best the CPU supports unless lowered. */
enum simd_level simd_level(void);
/* The best level this CPU supports. */
enum simd_level simd_best_level(void);
/* Use `level` from now on, capped at simd_best_level(). Returns the level set. Not
 * thread-safe against running kernels: call it between jobs. */
enum simd_level simd_set_level(enum simd_level level);
const char *simd_level_name(enum simd_level level);

#endif
