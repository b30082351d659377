/* flexcore GEMM: matrix products on the CPU, flexcore's own (BLIS-style packing and micro-kernels,
 * runtime ISA dispatch, a small thread pool); no BLAS library is involved.
 *
 * Layout is row-major (numpy's): element (i, j) of a matrix with leading dimension ld is at
 * p[i * ld + j]. op(X) = X, or X transposed when trans_x == 1:
 *  - op(A) is m x k: A is stored m x k (row stride lda >= k) or, transposed, k x m (lda >= m);
 *  - op(B) is k x n: B is stored k x n (ldb >= n) or, transposed, n x k (ldb >= k);
 *  - C is m x n with ldc >= n.
 * Every leading dimension must also be >= 1.
 *
 * Results:
 *  - beta == 0 means C is only written: NaN or Inf already in C never reaches the result;
 *  - alpha == 0 or k == 0 means A and B are not read: C = beta * C (then bias and act);
 *  - m == 0 or n == 0 does nothing.
 * C must not overlap A, B or bias. Float32 results are accumulated in float32 (with FMA where the
 * CPU has it), so they differ from a float64 product by a few k * 2^-24 relative to |A| |B|.
 * Results do not depend on the thread count: every element is computed by the same operations in
 * the same order whichever thread computes its tile.
 *
 * Status codes: FC_ERR_NULL (a pointer is NULL while its matrix is not empty), FC_ERR_SIZE (a
 * negative dimension or stride, a leading dimension too small, sizes whose products overflow
 * int64), FC_ERR_OVERLAP (the C matrices of a batch overlap), FC_ERR_OP (trans not 0 or 1,
 * unknown act), FC_ERR_NOMEM (a packing buffer could not be allocated). Nothing is written when an
 * argument is rejected.
 *
 * Threads: large products run on up to fc_get_num_threads() threads of a persistent pool, small
 * ones on the calling thread. The functions are thread-safe: while one application thread's call
 * holds the pool, a concurrent call runs on its own thread alone (each thread keeps its own
 * packing buffers). */
#ifndef FLEXCORE_GEMM_H
#define FLEXCORE_GEMM_H

#include <stdint.h>

#include "flexcore/flexcore.h"

#ifdef __cplusplus
extern "C" {
#endif

/* C = alpha * op(A) @ op(B) + beta * C. */
FC_API int fc_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                    int64_t ldc);
FC_API int fc_dgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                    const double* a, int64_t lda, const double* b, int64_t ldb, double beta,
                    double* c, int64_t ldc);

/* batch products C_i = alpha * op(A_i) @ op(B_i) + beta * C_i with A_i = a + i * stride_a (in
 * elements) and alike for B and C. A stride of 0 for A or B broadcasts that operand to every
 * product (numpy matmul broadcasting); the C matrices must not overlap (FC_ERR_OVERLAP). */
FC_API int fc_sgemm_batched(int trans_a, int trans_b, int64_t batch, int64_t m, int64_t n,
                            int64_t k, float alpha, const float* a, int64_t lda, int64_t stride_a,
                            const float* b, int64_t ldb, int64_t stride_b, float beta, float* c,
                            int64_t ldc, int64_t stride_c);
FC_API int fc_dgemm_batched(int trans_a, int trans_b, int64_t batch, int64_t m, int64_t n,
                            int64_t k, double alpha, const double* a, int64_t lda,
                            int64_t stride_a, const double* b, int64_t ldb, int64_t stride_b,
                            double beta, double* c, int64_t ldc, int64_t stride_c);

/* Fused dense layer: C = act(alpha * op(A) @ op(B) + beta * C + bias), bias of length n broadcast
 * over the rows (NULL: none), act an fc_act. bias and act are applied to each tile of C while it is
 * still in cache; the activations are those of flexcore/ew_math.h. */
FC_API int fc_sgemm_ex(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                       const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                       float* c, int64_t ldc, const float* bias, int act);
FC_API int fc_dgemm_ex(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                       const double* a, int64_t lda, const double* b, int64_t ldb, double beta,
                       double* c, int64_t ldc, const double* bias, int act);

/* Pre-packed operands: an operand that several products read unchanged (an RNN's recurrent weight,
 * read at every step) is packed once into the micro-kernel's panel layout, and the products read
 * the panels instead of packing the operand again on every call.
 *
 * `operand` is FC_GEMM_OPERAND_A or FC_GEMM_OPERAND_B; rows x cols are the dimensions of op(X) as
 * the product reads it (m x k for A, k x n for B). The layout (panel widths) is chosen at run time
 * with the instruction set, so the size must be asked for: fc_gemm_packed_bytes gives the bytes of
 * a packed operand of dtype FC_F32 or FC_F64 (kernels.h), a small header included, in *bytes.
 * fc_?gemm_pack packs op(X), X stored as for the products above (trans, ldx), into `packed`
 * (packed_bytes long, else FC_ERR_SIZE; aligned to the element size, else FC_ERR_ALIGN; 64-byte
 * alignment is best). A packed operand is valid in this process only, until X changes.
 *
 * fc_?gemm_packed is fc_?gemm_ex where trans_a and trans_b may also be FC_GEMM_PACKED: that
 * operand is then a packed buffer (its ld is ignored) packed for the same dtype, operand and
 * dimensions, else FC_ERR_SIZE; results are bit-identical to those of fc_?gemm_ex. */
typedef enum fc_gemm_packing {
    FC_GEMM_OPERAND_A = 0,
    FC_GEMM_OPERAND_B = 1,
    FC_GEMM_PACKED = 2 /* a trans value of fc_?gemm_packed */
} fc_gemm_packing;

FC_API int fc_gemm_packed_bytes(int dtype, int operand, int64_t rows, int64_t cols, int64_t* bytes);
FC_API int fc_sgemm_pack(int operand, int trans, int64_t rows, int64_t cols, const float* x,
                         int64_t ldx, void* packed, int64_t packed_bytes);
FC_API int fc_dgemm_pack(int operand, int trans, int64_t rows, int64_t cols, const double* x,
                         int64_t ldx, void* packed, int64_t packed_bytes);
FC_API int fc_sgemm_packed(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                           const void* a, int64_t lda, const void* b, int64_t ldb, float beta,
                           float* c, int64_t ldc, const float* bias, int act);
FC_API int fc_dgemm_packed(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                           const void* a, int64_t lda, const void* b, int64_t ldb, double beta,
                           double* c, int64_t ldc, const double* bias, int act);

/* The most threads one GEMM uses (n >= 1; values above 64 are capped at 64). The default is the
 * FLEXCORE_NUM_THREADS environment variable, else the number of CPUs this process may run on,
 * capped at 64. fc_set_num_threads returns FC_ERR_SIZE for n < 1; fc_get_num_threads returns the
 * count. */
FC_API int fc_set_num_threads(int n);
FC_API int fc_get_num_threads(void);

#ifdef __cplusplus
}
#endif

#endif /* FLEXCORE_GEMM_H */
