/* Vectorised rows of 2x2 stride-2 max pooling (internal to libflexcore; see pool.c).
 *
 * Each function handles one pair of image rows r0, r1 (the two rows of a row of ow windows) and
 * returns how many of the windows it did (the caller finishes the row with its scalar code; the
 * AVX2 kernels do them all). Results are bitwise those of the scalar code:
 * max takes the taps in row-major order and keeps the first maximum (NaN wins, the first NaN
 * stays), the gradient divides g by the tie count once per window and adds it to +0. */
#ifndef FLEXCORE_POOL_SIMD_H
#define FLEXCORE_POOL_SIMD_H

#include <stdint.h>

typedef struct fc_pool2_kernels {
    /* y[i] = the max of r0[2i], r0[2i+1], r1[2i], r1[2i+1]. */
    int64_t (*max_f32)(const float* r0, const float* r1, float* y, int64_t ow);
    /* d0/d1[2i + j] = g[i] / (ties of y[i] in window i) where r0/r1[2i + j] == y[i], else +0;
     * with relu, +0 too for every window whose y[i] > 0 fails. */
    int64_t (*grad_f32)(int relu, const float* r0, const float* r1, const float* y, const float* g, float* d0,
                        float* d1, int64_t ow);
} fc_pool2_kernels;

/* The AVX2 kernels; NULL where they were not compiled (not x86-64 GCC/Clang). */
extern const fc_pool2_kernels* const fc_pool2_avx2;

#endif /* FLEXCORE_POOL_SIMD_H */
