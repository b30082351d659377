/* flexcore GEMM internals, BLIS style (Van Zee & van de Geijn, "BLIS: A Framework for Rapidly
 * Instantiating BLAS Functionality", TOMS 2015).
 *
 *   C = alpha * op(A) @ op(B) + beta * C        (row-major; op(A) is m x k, op(B) is k x n)
 *
 * The work is split in three parts that never name each other's details:
 *  - loops.c runs the five loops around the micro-kernel (jc over NC columns, pc over KC of the
 *    shared dimension, ic over MC rows, then jr/ir over the NR/MR micro-tiles); it names no
 *    instruction set;
 *  - pack.c copies op(A) blocks into MR-row panels and op(B) blocks into NR-column panels, so the
 *    micro-kernel reads both with unit stride whatever the transposes and leading dimensions were;
 *  - a micro-kernel (ukr_ref.c, ukr_avx2.c, ukr_avx512.c) multiplies one MR x k panel of A by one
 *    k x NR panel of B into an MR x NR tile of C. Each instruction set registers its kernels, with
 *    the block sizes that suit them, in one fc_gemm_ctx next to the kernels; dispatch.c picks the
 *    context once from fc_cpu_isa() (so FLEXCORE_ISA forces a path).
 *
 * threads.c holds the thread pool and the per-thread packing buffers; api.c checks arguments,
 * splits C among threads and calls loops.c. */
#ifndef FLEXCORE_GEMM_INTERNAL_H
#define FLEXCORE_GEMM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "flexcore/flexcore.h"
#include "flexcore/gemm.h"

/* The x86-64 kernels need GCC/Clang intrinsics and per-file -m flags (CMake adds them to files
 * named *_avx2.c / *_avx512.c on x86-64 only). */
#if (defined(__x86_64__) || defined(__amd64__)) && (defined(__GNUC__) || defined(__clang__))
#define FC_GEMM_X86 1
#else
#define FC_GEMM_X86 0
#endif

/* Packed panels and C tiles are aligned to a cache line (and to a full AVX-512 vector). */
#define FC_GEMM_ALIGN 64

/* Largest MR and NR any registered kernel uses: sizes the stack tiles of the loops. */
#define FC_GEMM_MAX_MR 16
#define FC_GEMM_MAX_NR 32

/* ------------------------------------------------------------------------------ micro-kernels
 *
 * One signature for every micro-kernel (the BLIS contract, with row-major C):
 *
 *   C[0:m, 0:n] = alpha * A_panel @ B_panel + beta * C[0:m, 0:n]
 *
 *  - a: a packed MR x k panel, column after column: element (i, p) at a[p * MR + i]; rows m..MR-1
 *    are zero padding (the kernel may read them; it need not compute them);
 *  - b: a packed k x NR panel, row after row: element (p, j) at b[p * NR + j]; columns n..NR-1 are
 *    zero padding;
 *  - c: row-major with row stride ldc; only the m x n tile is read or written (1 <= m <= MR,
 *    1 <= n <= NR), so edge tiles are handled by the kernel itself;
 *  - beta == 0 means C is not read: NaN or Inf there does not propagate;
 *  - k may be 0 (then C = beta * C);
 *  - alpha and beta come by address (as in BLIS): a kernel reads them after its loop, so they do
 *    not hold two of the 16 vector registers an AVX2 tile needs all of during it;
 *  - aux carries the next panels, which a kernel may prefetch; it may ignore them.
 *
 * Both panels start on FC_GEMM_ALIGN boundaries (a kernel may use aligned loads on B when
 * NR * sizeof(T) is a multiple of its vector width); C has no alignment. */
typedef struct fc_gemm_aux {
    const void* a_next; /* the A panel the next call will read */
    const void* b_next; /* the B panel the next call will read */
} fc_gemm_aux;

typedef void (*fc_sgemm_ukr_fn)(int64_t m, int64_t n, int64_t k, const float* alpha, const float* a,
                                const float* b, const float* beta, float* c, int64_t ldc,
                                const fc_gemm_aux* aux);
typedef void (*fc_dgemm_ukr_fn)(int64_t m, int64_t n, int64_t k, const double* alpha,
                                const double* a, const double* b, const double* beta, double* c,
                                int64_t ldc, const fc_gemm_aux* aux);

/* A micro-kernel with the packing routines and block sizes of the loops around it:
 *  - MR x NR: the register tile;
 *  - KC: the depth of one packed panel (an NR x KC panel of B should stay in L1);
 *  - MC: rows of A packed at once (MC x KC of A should stay in L2); a multiple of MR;
 *  - NC: columns of B packed at once (KC x NC of B should stay in L3); a multiple of NR;
 *  - pack_a / pack_b: fc_spack_a / fc_spack_b below, or an instruction set's faster version of
 *    them (same contract, same output). */
#define FC_GEMM_KERNEL_FIELDS(FN, T)                                                               \
    const char* name;                                                                              \
    FN ukr;                                                                                        \
    int mr;                                                                                        \
    int nr;                                                                                        \
    int64_t mc;                                                                                    \
    int64_t kc;                                                                                    \
    int64_t nc;                                                                                    \
    void (*pack_a)(int trans, int64_t mc, int64_t kc, const T* a, int64_t lda, int mr, T* dst);    \
    void (*pack_b)(int trans, int64_t kc, int64_t nc, const T* b, int64_t ldb, int nr, T* dst);

typedef struct fc_sgemm_kernel {
    FC_GEMM_KERNEL_FIELDS(fc_sgemm_ukr_fn, float)
} fc_sgemm_kernel;

typedef struct fc_dgemm_kernel {
    FC_GEMM_KERNEL_FIELDS(fc_dgemm_ukr_fn, double)
} fc_dgemm_kernel;

/* Everything one instruction set contributes (BLIS: a context). */
typedef struct fc_gemm_ctx {
    const char* isa; /* as fc_cpu_isa() names it */
    fc_sgemm_kernel s;
    fc_dgemm_kernel d;
} fc_gemm_ctx;

/* Registered next to their kernels. */
extern const fc_gemm_ctx fc_gemm_ctx_ref; /* ukr_ref.c: portable C, the "scalar" path */
#if FC_GEMM_X86
extern const fc_gemm_ctx fc_gemm_ctx_avx2;   /* ukr_avx2.c */
extern const fc_gemm_ctx fc_gemm_ctx_avx512; /* ukr_avx512.c */
#endif

/* dispatch.c */
/* The context of the instruction set fc_cpu_isa() names, chosen once per process. */
const fc_gemm_ctx* fc_gemm_ctx_active(void);
/* Every compiled context, lowest instruction set first (tests run each one the CPU supports). */
const fc_gemm_ctx* const* fc_gemm_ctx_all(int* count);
/* 0 for "scalar", 1 for "avx2", 2 for "avx512", -1 for anything else: contexts whose level is at
 * most that of fc_cpu_isa() can run here. */
int fc_gemm_isa_level(const char* isa);

/* ------------------------------------------------------------------------------ one GEMM call */

/* All arguments of one GEMM, already checked by api.c; the loops read them, never change them.
 * op(A)[i][p] = trans_a ? a[p * lda + i] : a[i * lda + p], and alike for B.
 *
 * trans_a == FC_GEMM_PACKED: A is already packed (fc_sgemm_pack), `a` points at its panels: the
 * panel of rows i..i+MR-1 (i a multiple of MR) at a + i * kp, its depth p at + p * MR; lda is not
 * used. kp is the depth the panels were packed with (>= k). Alike for B (columns j..j+NR-1 at
 * b + j * kp). These are the layouts pack_a / pack_b write for one block of depth kp. */
#define FC_GEMM_ARGS_FIELDS(T)                                                                     \
    int trans_a;                                                                                   \
    int trans_b;                                                                                   \
    int64_t m;                                                                                     \
    int64_t n;                                                                                     \
    int64_t k;                                                                                     \
    T alpha;                                                                                       \
    const T* a;                                                                                    \
    int64_t lda;                                                                                   \
    const T* b;                                                                                    \
    int64_t ldb;                                                                                   \
    T beta;                                                                                        \
    T* c;                                                                                          \
    int64_t ldc;                                                                                   \
    const T* bias; /* length n, or NULL */                                                         \
    int act;       /* an fc_act */                                                                 \
    int64_t kp;    /* depth of the pre-packed panels (trans == FC_GEMM_PACKED), else unused */

typedef struct fc_sgemm_args {
    FC_GEMM_ARGS_FIELDS(float)
} fc_sgemm_args;

typedef struct fc_dgemm_args {
    FC_GEMM_ARGS_FIELDS(double)
} fc_dgemm_args;

/* loops.c: the whole GEMM on the calling thread (k > 0 and alpha != 0; api.c handles the rest).
 * Returns FC_OK, or FC_ERR_NOMEM when a packing buffer could not be grown. */
int fc_sgemm_serial(const fc_sgemm_kernel* kern, const fc_sgemm_args* g);
int fc_dgemm_serial(const fc_dgemm_kernel* kern, const fc_dgemm_args* g);

/* loops.c: C = act(C + bias) on an m x n block: the fused epilogue, also used by api.c when no
 * product is computed (k == 0 or alpha == 0). */
void fc_sgemm_epilogue(float* c, int64_t ldc, int64_t m, int64_t n, const float* bias, int act);
void fc_dgemm_epilogue(double* c, int64_t ldc, int64_t m, int64_t n, const double* bias, int act);

/* pack.c: op(A)[0:mc, 0:kc] into ceil(mc / mr) panels of mr rows (layout of the micro-kernel's a;
 * rows past mc are zeros). `a` points at op(A)[0][0]. Packing a range of depths p0.. of one panel
 * is packing kc - p0 columns from op(A)[0][p0] into dst + p0 * mr (and alike for B), which the
 * faster versions use for their edges. */
void fc_spack_a(int trans, int64_t mc, int64_t kc, const float* a, int64_t lda, int mr, float* dst);
void fc_dpack_a(int trans, int64_t mc, int64_t kc, const double* a, int64_t lda, int mr,
                double* dst);
/* pack.c: op(B)[0:kc, 0:nc] into ceil(nc / nr) panels of nr columns (layout of the micro-kernel's
 * b; columns past nc are zeros). `b` points at op(B)[0][0]. */
void fc_spack_b(int trans, int64_t kc, int64_t nc, const float* b, int64_t ldb, int nr, float* dst);
void fc_dpack_b(int trans, int64_t kc, int64_t nc, const double* b, int64_t ldb, int nr,
                double* dst);

#if FC_GEMM_X86
/* pack_avx2.c: the same with AVX2 transposes for the gathering cases (A not transposed, B
 * transposed) at the AVX2 kernels' panel widths; every other case goes to the portable ones. */
void fc_spack_a_avx2(int trans, int64_t mc, int64_t kc, const float* a, int64_t lda, int mr,
                     float* dst);
void fc_dpack_a_avx2(int trans, int64_t mc, int64_t kc, const double* a, int64_t lda, int mr,
                     double* dst);
void fc_spack_b_avx2(int trans, int64_t kc, int64_t nc, const float* b, int64_t ldb, int nr,
                     float* dst);
void fc_dpack_b_avx2(int trans, int64_t kc, int64_t nc, const double* b, int64_t ldb, int nr,
                     double* dst);
#endif

/* ------------------------------------------------------------------------------ packed operands
 *
 * A packed operand (fc_gemm_packed_bytes, fc_?gemm_pack) is this header, then the panels
 * (FC_GEMM_PACK_HEADER bytes after the start, so aligned panels stay aligned). The header says
 * what was packed, so a product checks that it reads what it expects. */
#define FC_GEMM_PACK_MAGIC 0x4B434150434D4746ull /* "FGMCPACK" */
#define FC_GEMM_PACK_HEADER 64
typedef struct fc_gemm_pack_header {
    uint64_t magic;
    int32_t dtype;   /* FC_F32 or FC_F64 */
    int32_t operand; /* FC_GEMM_OPERAND_A or _B */
    int32_t width;   /* MR (A) or NR (B) of the kernel that packed it */
    int32_t reserved;
    int64_t rows, cols; /* of op(X): m x k (A) or k x n (B) */
} fc_gemm_pack_header;

/* ------------------------------------------------------------------------------ threads.c */

/* One chunk of a parallel region's work. */
typedef void (*fc_pool_task)(void* arg, int chunk);

/* Runs task(arg, chunk) once for every chunk < nchunks, on up to nthreads threads (the caller
 * included), and returns when all have finished. Threads claim chunks one at a time, so chunks
 * must be independent; a slow or not yet scheduled thread just claims fewer. When the pool is busy
 * with another caller's region (two application threads calling GEMM at once, or a task calling
 * GEMM), the caller runs every chunk itself: regions never wait for each other or deadlock. */
void fc_pool_run(fc_pool_task task, void* arg, int nchunks, int nthreads);

/* Expected nanoseconds from opening a region now until a worker starts on it: a moving average
 * of the delays measured in past regions, kept apart for regions that open while the workers still
 * poll after the last one and for regions that must wake them. It grows when the cores are busy
 * with other processes, so the thread-count choice (api.c) turns to one thread where a worker
 * would come too late to help. */
double fc_pool_join_delay_ns(void);

/* The calling thread's packing buffer number `slot` (< FC_GEMM_BUF_SLOTS), at least `bytes` long
 * and FC_GEMM_ALIGN-aligned; NULL when it cannot be allocated. Buffers belong to the thread (so
 * concurrent calls never share one), grow as needed, are kept between calls (no allocation on the
 * hot path) and are freed when the thread exits. Contents are not preserved when a buffer grows. */
enum { FC_GEMM_BUF_A = 0, FC_GEMM_BUF_B = 1, FC_GEMM_BUF_SLOTS = 2 };
void* fc_thread_buffer(int slot, size_t bytes);

#endif /* FLEXCORE_GEMM_INTERNAL_H */
