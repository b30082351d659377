/* Vectorised pieces of the convolution kernels (internal to libflexcore; see conv.c). */
#ifndef FLEXCORE_CONV_SIMD_H
#define FLEXCORE_CONV_SIMD_H

#include <stdint.h>

/* dw (og x kg) = (accumulate ? dw : 0) + g (og x p) @ cols (kg x p)^T, all row-major: the weight
 * gradient of one image when its window matrix has few rows (kg <= FC_CONV_DW_SMALL_KG, a conv
 * on one or two input channels), where the GEMM would pad kg to its 16-wide panels and pack both
 * operands by transposing gathers. NULL where not compiled (not x86-64 GCC/Clang). */
#define FC_CONV_DW_SMALL_KG 16
typedef void (*fc_conv_dw_small_fn)(int64_t og, int64_t kg, int64_t p, const float* g, const float* cols, float* dw,
                                    int accumulate);
extern const fc_conv_dw_small_fn fc_conv_dw_small_avx2;

#endif /* FLEXCORE_CONV_SIMD_H */
