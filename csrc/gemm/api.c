/* The exported GEMM functions (flexcore/gemm.h): argument checks at the edge, the special cases
 * that need no product, and the split of C among threads. The per-dtype code is api_tmpl.h. */
#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "flexcore/gemm.h"
#include "flexcore/kernels.h"
#include "gemm_internal.h"

/* ------------------------------------------------------------------------------ checks */

typedef struct gemm_dims {
    int trans_a, trans_b; /* FC_GEMM_PACKED too, when allow_packed */
    int allow_packed;
    int64_t m, n, k, lda, ldb, ldc;
    size_t elem;
} gemm_dims;

/* Elements spanned by a rows x cols matrix with row stride ld >= 1, or -1 when that overflows. */
static int64_t matrix_extent(int64_t rows, int64_t cols, int64_t ld)
{
    if (rows == 0 || cols == 0) {
        return 0;
    }
    if (rows - 1 > (INT64_MAX - cols) / ld) {
        return -1;
    }
    return (rows - 1) * ld + cols;
}

/* Elements spanned by `batch` matrices of extent `extent`, `stride` apart, or -1 on overflow. */
static int64_t batch_extent(int64_t batch, int64_t stride, int64_t extent)
{
    if (batch == 0 || extent == 0) {
        return 0;
    }
    if (stride != 0 && batch - 1 > (INT64_MAX - extent) / stride) {
        return -1;
    }
    return (batch - 1) * stride + extent;
}

/* One stored operand: rows x cols with row stride ld; batch copies `stride` elements apart. Its
 * extent goes to *extent. */
static int check_operand(int64_t rows, int64_t cols, int64_t ld, const void* p, int64_t batch,
                         int64_t stride, size_t elem, int64_t* extent)
{
    if (ld < (cols > 1 ? cols : 1) || stride < 0) {
        return FC_ERR_SIZE;
    }
    *extent = matrix_extent(rows, cols, ld);
    const int64_t span = *extent < 0 ? -1 : batch_extent(batch, stride, *extent);
    if (span < 0 || span > INT64_MAX / (int64_t)elem) {
        return FC_ERR_SIZE; /* an address past the end of the address space */
    }
    if (p == NULL && span > 0) {
        return FC_ERR_NULL;
    }
    return FC_OK;
}

/* Checks of every GEMM entry point; a single product is a batch of 1. */
static int check_gemm(const gemm_dims* d, const void* a, const void* b, const void* c,
                      int64_t batch, int64_t stride_a, int64_t stride_b, int64_t stride_c)
{
    const int max_trans = d->allow_packed ? FC_GEMM_PACKED : 1;
    if (d->trans_a < 0 || d->trans_a > max_trans || d->trans_b < 0 || d->trans_b > max_trans) {
        return FC_ERR_OP;
    }
    if (d->m < 0 || d->n < 0 || d->k < 0 || batch < 0) {
        return FC_ERR_SIZE;
    }
    /* A packed operand always holds its header (checked by the caller), so it is never NULL. */
    int64_t extent_a = 0, extent_b = 0, extent_c;
    int status = FC_OK;
    if (d->trans_a == FC_GEMM_PACKED) {
        status = a == NULL ? FC_ERR_NULL : FC_OK;
    } else {
        status = check_operand(d->trans_a ? d->k : d->m, d->trans_a ? d->m : d->k, d->lda, a,
                               batch, stride_a, d->elem, &extent_a);
    }
    if (status == FC_OK && d->trans_b == FC_GEMM_PACKED) {
        status = b == NULL ? FC_ERR_NULL : FC_OK;
    } else if (status == FC_OK) {
        status = check_operand(d->trans_b ? d->n : d->k, d->trans_b ? d->k : d->n, d->ldb, b,
                               batch, stride_b, d->elem, &extent_b);
    }
    if (status == FC_OK) {
        status = check_operand(d->m, d->n, d->ldc, c, batch, stride_c, d->elem, &extent_c);
    }
    if (status == FC_OK && batch > 1 && extent_c > 0) {
        /* Disjoint C matrices: one after the other, or their rows interleaved (C_i's row r at
         * r * ldc + i * stride_c, with all batch rows fitting between two of its rows). */
        const int apart = stride_c >= extent_c;
        const int interleaved = stride_c >= d->n && d->ldc >= batch_extent(batch, stride_c, d->n);
        if (!apart && !interleaved) {
            return FC_ERR_OVERLAP;
        }
    }
    return status;
}

static int check_epilogue(int act, const void* bias, int64_t n)
{
    (void)bias; /* n elements of bias, possibly none: NULL means no bias, both are valid */
    (void)n;
    return act >= 0 && act < FC_ACT_COUNT ? FC_OK : FC_ERR_OP;
}

/* ------------------------------------------------------------------------------ threads */

/* Costs for the choice of a thread count and chunk grid, in cycles of one core, measured on a
 * 2-core Zen 3 (bench/gemm_quick.py and C timing loops):
 *  - opening a region and closing it costs about a microsecond when the workers are still polling
 *    from the previous one: on an idle machine 2 threads already beat 1 at 48^3 (2.4 vs 3.1 us);
 *  - packing moves about one element per cycle (B without transpose, from L3: a little slower);
 *  - a region's end waits for the chunks still running: with more chunks than threads, a thread
 *    that is descheduled (other processes on the cores) holds up less work, but every chunk packs
 *    its own A rows and B columns again. On an idle machine the fewest chunks won (2 chunks vs 8:
 *    +5% at 512^3); STRAGGLER_FRACTION = 0.15 keeps 4 or more chunks from about 512^3 up, which
 *    costs 1-3% there when idle and bounds the wait behind a descheduled thread when not. */
#define REGION_CYCLES 3000.0
#define PACK_CYCLES_PER_ELEMENT 1.0
#define STRAGGLER_FRACTION 0.15
/* A worker joins a region some time after it opens: fc_pool_join_delay_ns() measures it (about a
 * microsecond while the workers poll, tens of microseconds to wake them, more when other
 * processes hold the cores), converted at this clock rate. A product whose work ends before a
 * worker would come runs on the calling thread alone; on the seed topology's training step
 * (products like 64 x 300 x 196 between elementwise kernels) 2 threads chosen without this were
 * slower than 1 (2.0-2.4 ms vs 1.75 ms). */
#define CYCLES_PER_NS 3.0

static double join_cycles(void) { return fc_pool_join_delay_ns() * CYCLES_PER_NS; }

typedef struct gemm_split {
    int tm, tn;   /* C cut into tm blocks of rows times tn blocks of columns: the chunks */
    int nthreads; /* threads that share the chunks */
} gemm_split;

typedef struct gemm_shape {
    int64_t m, n, k;
    int packed_a, packed_b; /* pre-packed operands: no packing cost */
    int mr, nr;
    int64_t nc;
    double flops_per_cycle;
} gemm_shape;

/* floor((a + b - 1) / b) for a >= 0, b > 0: the thread-count choice runs it a hundred times per
 * product, and floor() is a libm call at this file's baseline ISA (about a third of the cost of
 * a 16 x 16 x 16 product); truncation is floor for these non-negative values. */
static double ceil_div_d(double a, double b)
{
    const double q = (a + b - 1) / b;
    return q < 9.0e18 ? (double)(int64_t)q : floor(q);
}

/* Start of part p (0..parts) of [0, len) cut into `parts` nearly equal runs of whole units. */
static int64_t split_point(int64_t len, int unit, int parts, int p)
{
    const int64_t units = (len + unit - 1) / unit;
    const int64_t q = units / parts * p + units % parts * p / parts;
    return q * unit < len ? q * unit : len;
}

/* Estimated cycles of the largest chunk when C is cut tm x tn. */
static double chunk_cycles(const gemm_shape* s, int tm, int tn)
{
    const double rows = ceil_div_d(ceil_div_d((double)s->m, s->mr), tm) * s->mr;
    const double cols = ceil_div_d(ceil_div_d((double)s->n, s->nr), tn) * s->nr;
    const double k = (double)s->k;
    const double compute = 2.0 * rows * cols * k / s->flops_per_cycle;
    /* A chunk packs its rows of A once per NC columns and its columns of B once. */
    const double packed = (s->packed_a ? 0.0 : rows * k * ceil_div_d(cols, (double)s->nc)) +
                          (s->packed_b ? 0.0 : k * cols);
    const double pack = packed * PACK_CYCLES_PER_ELEMENT;
    return compute + pack;
}

/* Estimated cycles of a region of nchunks chunks of `chunk` cycles on nthreads threads, when the
 * workers join `join` cycles after the caller started: the caller alone starts
 * q = ceil(join / chunk) chunks before they come, then all threads share the rest. */
static double region_cycles(double chunk, int nchunks, int nthreads, double join)
{
    if (nthreads == 1) {
        return chunk * nchunks;
    }
    const double q = ceil_div_d(join, chunk);
    if (q >= nchunks) {
        return chunk * nchunks + REGION_CYCLES; /* the caller ran every chunk itself */
    }
    const double rest = join + ceil_div_d(nchunks - q, nthreads) * chunk;
    return (q * chunk > rest ? q * chunk : rest) + STRAGGLER_FRACTION * chunk + REGION_CYCLES;
}

/* The chunk grid and thread count (<= max_threads) with the smallest estimate; *cycles gets that
 * estimate when not NULL. */
static gemm_split choose_split(const gemm_shape* s, int max_threads, double join, double* cycles)
{
    gemm_split best = {1, 1, 1};
    double best_cycles = chunk_cycles(s, 1, 1);
    if (best_cycles <= REGION_CYCLES) { /* every region costs more (region_cycles) */
        if (cycles != NULL) {
            *cycles = best_cycles;
        }
        return best;
    }
    const int64_t row_units = (s->m + s->mr - 1) / s->mr, col_units = (s->n + s->nr - 1) / s->nr;
    for (int nt = 2; nt <= max_threads; ++nt) {
        for (int per_thread = 1; per_thread <= 4; per_thread *= 2) {
            const int nchunks = nt * per_thread;
            for (int tn = 1; tn <= nchunks; ++tn) {
                const int tm = nchunks / tn;
                if (tm * tn != nchunks || tm > row_units || tn > col_units) {
                    continue; /* a chunk would be empty */
                }
                const double c = region_cycles(chunk_cycles(s, tm, tn), nchunks, nt, join);
                if (c < best_cycles) {
                    best_cycles = c;
                    best = (gemm_split){tm, tn, nt};
                }
            }
        }
    }
    if (cycles != NULL) {
        *cycles = best_cycles;
    }
    return best;
}

/* choose_split with the measured join delay; when that delay alone keeps a product on one thread,
 * one such call in PROBE_EVERY runs split anyway, so the delay keeps being measured (it would
 * otherwise stay at a high value measured under a passing load, with no region to lower it). */
#define PROBE_EVERY 32
static gemm_split choose_split_now(const gemm_shape* s, int max_threads)
{
    static atomic_uint declined;
    const gemm_split split = choose_split(s, max_threads, join_cycles(), NULL);
    if (split.nthreads > 1 || max_threads < 2) {
        return split;
    }
    const gemm_split hot = choose_split(s, max_threads, 0.0, NULL);
    if (hot.nthreads > 1 && atomic_fetch_add_explicit(&declined, 1, memory_order_relaxed) %
                                    PROBE_EVERY == PROBE_EVERY - 1) {
        return hot;
    }
    return split;
}

/* Threads for a batch of products, one product per chunk; 1 means: run the products one after the
 * other, each cut among threads as choose_split said (split_each cycles each). */
static int batch_threads(int64_t batch, const gemm_shape* s, double split_each, int max_threads,
                         double join)
{
    const double serial = chunk_cycles(s, 1, 1); /* one product alone on a thread */
    const int nchunks = batch > INT32_MAX ? INT32_MAX : (int)batch;
    double best_cycles = (double)batch * split_each;
    int best = 1;
    for (int nt = 2; nt <= max_threads && nt <= batch; ++nt) {
        const double c = region_cycles(serial, nchunks, nt, join);
        if (c < best_cycles) {
            best_cycles = c;
            best = nt;
        }
    }
    return best;
}

/* ------------------------------------------------------------------------------ packed operands */

/* Elements of the panels of a packed operand of `panel_dim` rows (A) or columns (B) and depth
 * `depth` in panels of `width`, or -1 on overflow. */
static int64_t packed_elements(int64_t panel_dim, int64_t depth, int width)
{
    const int64_t panels = panel_dim / width + (panel_dim % width != 0);
    if (panels != 0 && depth > INT64_MAX / width / panels) {
        return -1;
    }
    return panels * width * depth;
}

/* Checks what is common to the size query and the packing; *elements gets the panels' size. */
static int packed_layout(int dtype, int operand, int64_t rows, int64_t cols, int* width,
                         int64_t* elements, int64_t* bytes)
{
    if (dtype != FC_F32 && dtype != FC_F64) {
        return FC_ERR_DTYPE;
    }
    if (operand != FC_GEMM_OPERAND_A && operand != FC_GEMM_OPERAND_B) {
        return FC_ERR_OP;
    }
    if (rows < 0 || cols < 0) {
        return FC_ERR_SIZE;
    }
    const fc_gemm_ctx* ctx = fc_gemm_ctx_active();
    const int is_a = operand == FC_GEMM_OPERAND_A;
    *width = dtype == FC_F32 ? (is_a ? ctx->s.mr : ctx->s.nr) : (is_a ? ctx->d.mr : ctx->d.nr);
    /* A: rows are the panels' rows, cols their depth; B: rows the depth, cols the columns. */
    *elements = is_a ? packed_elements(rows, cols, *width) : packed_elements(cols, rows, *width);
    const int64_t elem = dtype == FC_F32 ? 4 : 8;
    if (*elements < 0 || *elements > (INT64_MAX - FC_GEMM_PACK_HEADER) / elem) {
        return FC_ERR_SIZE;
    }
    *bytes = FC_GEMM_PACK_HEADER + *elements * elem;
    return FC_OK;
}

int fc_gemm_packed_bytes(int dtype, int operand, int64_t rows, int64_t cols, int64_t* bytes)
{
    int width;
    int64_t elements, need;
    const int status = packed_layout(dtype, operand, rows, cols, &width, &elements, &need);
    if (status == FC_OK && bytes == NULL) {
        return FC_ERR_NULL;
    }
    if (status == FC_OK) {
        *bytes = need;
    }
    return status;
}

/* Whether `packed` holds what a product expects: the header of an operand packed for this dtype,
 * operand side, dimensions and panel width. */
static int packed_matches(const void* packed, int dtype, int operand, int64_t rows, int64_t cols,
                          int width)
{
    fc_gemm_pack_header h;
    memcpy(&h, packed, sizeof h);
    return h.magic == FC_GEMM_PACK_MAGIC && h.dtype == dtype && h.operand == operand &&
           h.width == width && h.rows == rows && h.cols == cols;
}

/* ------------------------------------------------------------------------------ per dtype */

#define AP_T float
#define AP_NAME(x) fc_s##x
#define AP_KERN(ctx) ((ctx)->s)
#define AP_FLOPS_PER_CYCLE 32.0 /* 2 FMA pipes x 8 float lanes x 2 */
#define AP_DTYPE FC_F32
#include "api_tmpl.h"
#undef AP_T
#undef AP_NAME
#undef AP_KERN
#undef AP_FLOPS_PER_CYCLE
#undef AP_DTYPE

#define AP_T double
#define AP_NAME(x) fc_d##x
#define AP_KERN(ctx) ((ctx)->d)
#define AP_FLOPS_PER_CYCLE 16.0
#define AP_DTYPE FC_F64
#include "api_tmpl.h"
#undef AP_T
#undef AP_NAME
#undef AP_KERN
#undef AP_FLOPS_PER_CYCLE
#undef AP_DTYPE
