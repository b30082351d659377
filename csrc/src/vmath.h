/* Vectorised float32 transcendental functions for the elementwise kernels (internal to libflexcore).
 *
 * fc_vmath_f32() returns the table for the instruction set fc_cpu_isa() picked (FLEXCORE_ISA can
 * force "scalar"): the AVX2+FMA versions (vmath_avx2.c) or plain loops over the ew_math.h
 * functions (libm). Every function maps x[0..n) to y[0..n); x == y (in place) is allowed, any
 * other overlap is not. The AVX2 versions are within a few ulp of the correctly rounded result
 * over the whole range, with IEEE special values (NaN, +-inf, +-0, denormals) as libm gives them. */
#ifndef FLEXCORE_VMATH_H
#define FLEXCORE_VMATH_H

#include <stdint.h>

typedef void (*fc_vmath_fn)(const float* x, float* y, int64_t n);

typedef struct fc_vmath_table {
    const char* isa;
    fc_vmath_fn exp, log, tanh, sigmoid;
} fc_vmath_table;

const fc_vmath_table* fc_vmath_f32(void);

/* The AVX2 table; NULL where it was not compiled (not x86-64 GCC/Clang). */
extern const fc_vmath_table* const fc_vmath_avx2;

#endif /* FLEXCORE_VMATH_H */
