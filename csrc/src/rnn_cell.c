/* Fused LSTM cell, forward and backward (see flexcore/rnn.h), one row of the batch at a time.
 * float32 on AVX2 runs the row kernels of rnn_cell_avx2.c (one pass, all in registers). The
 * portable path (float64, FLEXCORE_ISA=scalar) sums the gate pre-activations into the output
 * planes, activates them in place (libm), then combines them with rnn_math.h; the backward has
 * no transcendental left (tanh(c) is a forward plane). */
#include <stddef.h>
#include <stdint.h>

#include "../gemm/gemm_internal.h"
#include "flexcore/ew_math.h"
#include "flexcore/gemm.h"
#include "flexcore/rnn.h"
#include "flexcore/rnn_math.h"
#include "kernel_util.h"
#include "rnn_rows.h"
#include "vmath.h"

enum { LSTM_PLANES = 7 };

/* The block of each gate; FC_ERR_SIZE unless `order` is a permutation of 0..3. */
static int gate_blocks(const int64_t* order, int64_t* blk)
{
    int seen = 0;
    for (int k = 0; k < 4; ++k) {
        blk[k] = order != NULL ? order[k] : k;
        if (blk[k] < 0 || blk[k] > 3 || (seen & (1 << blk[k]))) {
            return FC_ERR_SIZE;
        }
        seen |= 1 << blk[k];
    }
    return FC_OK;
}

/* n, h >= 0, n * 7h fits, and a row stride of at least 4h. */
static int check_sizes(int64_t n, int64_t h, int64_t* nh)
{
    if (n < 0 || h < 0) {
        return FC_ERR_SIZE;
    }
    const int64_t h7 = ku_mul(h, LSTM_PLANES);
    const int64_t all = h7 < 0 ? -1 : ku_mul(n, h7);
    if (all < 0) {
        return FC_ERR_SIZE;
    }
    *nh = n * h;
    return FC_OK;
}

static int check_ld(int64_t n, int64_t h, int64_t ld)
{
    /* The last row's end, (n - 1) ld + 4h, must fit too. */
    if (n > 0 && (ld < 4 * h || ku_add(ku_mul(n - 1, ld), 4 * h) < 0)) {
        return FC_ERR_SIZE;
    }
    return FC_OK;
}

static void sigmoid_f64(const double* x, double* y, int64_t n)
{
    for (int64_t i = 0; i < n; ++i) {
        y[i] = fc_ew_sigmoid_f64(x[i]);
    }
}

static void tanh_f64(const double* x, double* y, int64_t n)
{
    for (int64_t i = 0; i < n; ++i) {
        y[i] = fc_ew_tanh_f64(x[i]);
    }
}

/* Rows of the batch split across the GEMM thread pool: each row is computed by the same code
 * whichever thread runs it, so results are the same bits as on one thread. Measured on the 2-core
 * machine (float32 AVX2, quiet): the forward (about 7 ns a unit) gains 1.7x from 4096 units
 * (16 x 256) on, the backward (about 1.5 ns a unit) 1.25x at 4096 and 1.4x at 8192; below that
 * the region's start-up eats the gain. When other processes hold the cores a worker joins late
 * (fc_pool_join_delay_ns) and two threads measured 2x slower than one, so a call whose work ends
 * before a worker would come stays on the calling thread. */
#define CELL_PAR_MIN 4096
typedef void (*cell_rows_fn)(void* arg, int64_t r0, int64_t r1);
typedef struct cell_job {
    cell_rows_fn fn;
    void* arg;
    int64_t n, chunks;
} cell_job;

static void cell_task(void* arg, int chunk)
{
    const cell_job* j = (const cell_job*)arg;
    j->fn(j->arg, j->n * chunk / j->chunks, j->n * (chunk + 1) / j->chunks);
}

static void run_rows(cell_rows_fn fn, void* arg, int64_t n, int64_t h, double ns_per_unit)
{
    const int threads = fc_get_num_threads();
    if (threads > 1 && n >= 2 && n * h >= CELL_PAR_MIN &&
        4.0 * fc_pool_join_delay_ns() < ns_per_unit * (double)(n * h)) {
        /* Two chunks per thread: a worker that joins late leaves the caller less to do alone. */
        const int64_t chunks = n < 2 * (int64_t)threads ? n : 2 * (int64_t)threads;
        cell_job j = {.fn = fn, .arg = arg, .n = n, .chunks = chunks};
        fc_pool_run(cell_task, &j, (int)chunks, threads);
        return;
    }
    fn(arg, 0, n);
}

#define DEFINE_LSTM(T, SFX, SIGMOID, TANH, ROWS)                                                         \
    typedef struct lstm_fwd_args_##SFX {                                                           \
        int64_t n, h, lda, ldb, blk[4];                                                            \
        const T *a, *b, *bias, *c_prev;                                                            \
        T* out;                                                                                    \
    } lstm_fwd_args_##SFX;                                                                         \
                                                                                                   \
    static void lstm_fwd_rows_##SFX(void* arg, int64_t r0, int64_t r1)                             \
    {                                                                                              \
        const lstm_fwd_args_##SFX* p = (const lstm_fwd_args_##SFX*)arg;                               \
        const int64_t h = p->h, nh = p->n * p->h, lda = p->lda, ldb = p->ldb;                      \
        const int64_t* blk = p->blk;                                                               \
        const T *a = p->a, *b = p->b, *bias = p->bias, *c_prev = p->c_prev;                        \
        T* out = p->out;                                                                           \
        const fc_rnn_rows* rows = ROWS();                                                         \
        for (int64_t r = r0; r < r1; ++r) {                                                          \
            T* pl[LSTM_PLANES];                                                                    \
            for (int k = 0; k < LSTM_PLANES; ++k) {                                                \
                pl[k] = out + k * nh + r * h;                                                      \
            }                                                                                      \
            if (rows != NULL) {                                                                    \
                rows->fwd(h, (const float*)(a + r * lda), (const float*)(b != NULL ? b + r * ldb : NULL), \
                          (const float*)bias, blk, (const float*)(c_prev != NULL ? c_prev + r * h : NULL), \
                          (float* const*)pl);                                                      \
                continue;                                                                          \
            }                                                                                      \
            for (int k = 0; k < 4; ++k) {                                                          \
                T* restrict y = pl[k];                                                             \
                const T* restrict pa = a + r * lda + blk[k] * h;                                   \
                const T* restrict pb = b != NULL ? b + r * ldb + blk[k] * h : NULL;                \
                const T* restrict pc = bias != NULL ? bias + blk[k] * h : NULL;                    \
                if (pb != NULL && pc != NULL) {                                                    \
                    for (int64_t j = 0; j < h; ++j) {                                              \
                        y[j] = (pa[j] + pb[j]) + pc[j];                                            \
                    }                                                                              \
                } else if (pb != NULL || pc != NULL) {                                             \
                    const T* restrict q = pb != NULL ? pb : pc;                                    \
                    for (int64_t j = 0; j < h; ++j) {                                              \
                        y[j] = pa[j] + q[j];                                                       \
                    }                                                                              \
                } else {                                                                           \
                    for (int64_t j = 0; j < h; ++j) {                                              \
                        y[j] = pa[j];                                                              \
                    }                                                                              \
                }                                                                                  \
                if (k == 2) {                                                                      \
                    TANH(y, y, h);                                                                 \
                } else {                                                                           \
                    SIGMOID(y, y, h);                                                              \
                }                                                                                  \
            }                                                                                      \
            const T* restrict i = pl[0];                                                           \
            const T* restrict f = pl[1];                                                           \
            const T* restrict g = pl[2];                                                           \
            const T* restrict cp = c_prev != NULL ? c_prev + r * h : NULL;                         \
            T* restrict c = pl[4];                                                                 \
            for (int64_t j = 0; j < h; ++j) {                                                      \
                c[j] = fc_lstm_c_##SFX(i[j], f[j], g[j], cp != NULL ? cp[j] : (T)0);               \
            }                                                                                      \
            TANH(c, pl[5], h);                                                                     \
            const T* restrict o = pl[3];                                                           \
            const T* restrict tc = pl[5];                                                          \
            T* restrict hh = pl[6];                                                                \
            for (int64_t j = 0; j < h; ++j) {                                                      \
                hh[j] = fc_lstm_h_##SFX(o[j], tc[j]);                                              \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    int fc_lstm_cell_fwd_##SFX(int64_t n, int64_t h, const T* a, int64_t lda, const T* b, int64_t ldb,   \
                               const T* bias, const T* c_prev, const int64_t* order, T* out)        \
    {                                                                                              \
        int64_t blk[4], nh = 0;                                                                    \
        int st = check_sizes(n, h, &nh);                                                           \
        if (st != FC_OK || (st = gate_blocks(order, blk)) != FC_OK || (st = check_ld(n, h, lda)) != FC_OK || \
            (b != NULL && (st = check_ld(n, h, ldb)) != FC_OK)) {                                  \
            return st;                                                                             \
        }                                                                                          \
        if (ku_bad_ptr(a, nh) || ku_bad_ptr(out, nh)) {                                            \
            return FC_ERR_NULL;                                                                    \
        }                                                                                          \
        lstm_fwd_args_##SFX q = {.n = n, .h = h, .lda = lda, .ldb = ldb, .a = a, .b = b, .bias = bias,\
                                 .c_prev = c_prev, .out = out};                                    \
        for (int k = 0; k < 4; ++k) {                                                              \
            q.blk[k] = blk[k];                                                                     \
        }                                                                                          \
        run_rows(lstm_fwd_rows_##SFX, &q, n, h, 7.0);                                                      \
        return FC_OK;                                                                              \
    }                                                                                              \
                                                                                                   \
    typedef struct lstm_bwd_args_##SFX {                                                           \
        int64_t n, h, blk[4];                                                                      \
        const T *fwd, *c_prev, *dh, *dc;                                                           \
        T *dgates, *dc_prev;                                                                       \
    } lstm_bwd_args_##SFX;                                                                         \
                                                                                                   \
    static void lstm_bwd_rows_##SFX(void* arg, int64_t r0, int64_t r1)                             \
    {                                                                                              \
        const lstm_bwd_args_##SFX* p = (const lstm_bwd_args_##SFX*)arg;                               \
        const int64_t h = p->h, nh = p->n * p->h;                                                  \
        const int64_t* blk = p->blk;                                                               \
        const T *fwd = p->fwd, *c_prev = p->c_prev, *dh = p->dh, *dc = p->dc;                      \
        T *dgates = p->dgates, *dc_prev = p->dc_prev;                                              \
        const fc_rnn_rows* rows = ROWS();                                                         \
        for (int64_t r = r0; r < r1; ++r) {                                                          \
            const T* restrict i = fwd + r * h;                                                     \
            const T* restrict f = i + nh;                                                          \
            const T* restrict g = f + nh;                                                          \
            const T* restrict o = g + nh;                                                          \
            const T* restrict tc = o + 2 * nh;                                                     \
            const T* restrict cp = c_prev != NULL ? c_prev + r * h : NULL;                         \
            const T* restrict dhr = dh + r * h;                                                    \
            const T* restrict dcr = dc != NULL ? dc + r * h : NULL;                                \
            T* restrict row = dgates + r * 4 * h;                                                  \
            T* restrict di = row + blk[0] * h;                                                     \
            T* restrict df = row + blk[1] * h;                                                     \
            T* restrict dg = row + blk[2] * h;                                                     \
            T* restrict dout = row + blk[3] * h;                                                   \
            T* restrict dcp = dc_prev != NULL ? dc_prev + r * h : NULL;                            \
            if (rows != NULL) {                                                                    \
                const T* fw[5] = {i, f, g, o, tc};                                                 \
                T* d[4] = {di, df, dg, dout};                                                      \
                rows->bwd(h, (const float* const*)fw, (const float*)cp, (const float*)dhr, (const float*)dcr, \
                          (float* const*)d, (float*)dcp);                                          \
                continue;                                                                          \
            }                                                                                      \
            for (int64_t j = 0; j < h; ++j) {                                                      \
                T dcp_j;                                                                           \
                fc_lstm_grad_##SFX(i[j], f[j], g[j], o[j], cp != NULL ? cp[j] : (T)0, tc[j], dhr[j],  \
                                   dcr != NULL ? dcr[j] : (T)0, &di[j], &df[j], &dg[j], &dout[j], &dcp_j); \
                if (dcp != NULL) {                                                                 \
                    dcp[j] = dcp_j;                                                                \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    int fc_lstm_cell_bwd_##SFX(int64_t n, int64_t h, const T* fwd, const T* c_prev, const T* dh, const T* dc, \
                               const int64_t* order, T* dgates, T* dc_prev)                        \
    {                                                                                              \
        int64_t blk[4], nh = 0;                                                                    \
        int st = check_sizes(n, h, &nh);                                                           \
        if (st != FC_OK || (st = gate_blocks(order, blk)) != FC_OK) {                              \
            return st;                                                                             \
        }                                                                                          \
        if (ku_bad_ptr(fwd, nh) || ku_bad_ptr(dh, nh) || ku_bad_ptr(dgates, nh)) {                 \
            return FC_ERR_NULL;                                                                    \
        }                                                                                          \
        lstm_bwd_args_##SFX q = {.n = n, .h = h, .fwd = fwd, .c_prev = c_prev, .dh = dh, .dc = dc, \
                                 .dgates = dgates, .dc_prev = dc_prev};                            \
        for (int k = 0; k < 4; ++k) {                                                              \
            q.blk[k] = blk[k];                                                                     \
        }                                                                                          \
        run_rows(lstm_bwd_rows_##SFX, &q, n, h, 1.5);                                                      \
        return FC_OK;                                                                              \
    }

/* fc_vmath_f32() is a cached table lookup after its first call. */
#define VM_SIGMOID_F32(x, y, n) fc_vmath_f32()->sigmoid((x), (y), (n))
#define VM_TANH_F32(x, y, n) fc_vmath_f32()->tanh((x), (y), (n))

/* The AVX2 row kernels where vmath picked AVX2 (so FLEXCORE_ISA=scalar selects libm here too). */
static const fc_rnn_rows* rows_f32(void)
{
    return fc_rnn_rows_avx2 != NULL && fc_vmath_f32() == fc_vmath_avx2 ? fc_rnn_rows_avx2 : NULL;
}

static const fc_rnn_rows* rows_f64(void) { return NULL; }

DEFINE_LSTM(float, f32, VM_SIGMOID_F32, VM_TANH_F32, rows_f32)
DEFINE_LSTM(double, f64, sigmoid_f64, tanh_f64, rows_f64)

/* ---------------------------------------------------------------------------------------------
 * GRU, the same arrangement: AVX2 row kernels for float32 where vmath runs AVX2; else the
 * activations through libm and the combination by rnn_math.h. */
enum { GRU_PLANES = 5 };

static int gru_blocks(const int64_t* order, int64_t* blk)
{
    int seen = 0;
    for (int k = 0; k < 3; ++k) {
        blk[k] = order != NULL ? order[k] : k;
        if (blk[k] < 0 || blk[k] > 2 || (seen & (1 << blk[k]))) {
            return FC_ERR_SIZE;
        }
        seen |= 1 << blk[k];
    }
    return FC_OK;
}

static int gru_sizes(int64_t n, int64_t h, int64_t* nh)
{
    if (n < 0 || h < 0) {
        return FC_ERR_SIZE;
    }
    const int64_t h7 = ku_mul(h, 7); /* the backward's output: 3h + 3h + h per row */
    if (h7 < 0 || ku_mul(n, h7) < 0) {
        return FC_ERR_SIZE;
    }
    *nh = n * h;
    return FC_OK;
}

static int gru_ld(int64_t n, int64_t h, int64_t ld)
{
    if (n > 0 && (ld < 3 * h || ku_add(ku_mul(n - 1, ld), 3 * h) < 0)) {
        return FC_ERR_SIZE;
    }
    return FC_OK;
}

#define DEFINE_GRU(T, SFX, SIGMOID, TANH, ROWS)                                                          \
    int fc_gru_cell_fwd_##SFX(int64_t n, int64_t h, const T* x, int64_t ldx, const T* hh, int64_t ldh,   \
                              const T* bias, const T* h_prev, const int64_t* xorder, const int64_t* horder, \
                              T* out)                                                              \
    {                                                                                              \
        int64_t xb[3], hb[3], nh = 0;                                                              \
        int st = gru_sizes(n, h, &nh);                                                             \
        if (st != FC_OK || (st = gru_blocks(xorder, xb)) != FC_OK || (st = gru_blocks(horder, hb)) != FC_OK || \
            (st = gru_ld(n, h, ldx)) != FC_OK || (hh != NULL && (st = gru_ld(n, h, ldh)) != FC_OK)) { \
            return st;                                                                             \
        }                                                                                          \
        if (ku_bad_ptr(x, nh) || ku_bad_ptr(out, nh)) {                                            \
            return FC_ERR_NULL;                                                                    \
        }                                                                                          \
        const fc_rnn_rows* rows = ROWS();                                                          \
        for (int64_t r = 0; r < n; ++r) {                                                          \
            T* restrict pr = out + r * h;                                                          \
            T* restrict pz = pr + nh;                                                              \
            T* restrict pn = pz + nh;                                                              \
            T* restrict phn = pn + nh;                                                             \
            T* restrict ph = phn + nh;                                                             \
            const T* xr = x + r * ldx;                                                             \
            const T* hr = hh != NULL ? hh + r * ldh : NULL;                                        \
            if (rows != NULL) {                                                                    \
                T* pl[GRU_PLANES] = {pr, pz, pn, phn, ph};                                         \
                rows->gru_fwd(h, (const float*)xr, (const float*)hr, (const float*)bias, xb, hb,   \
                              (const float*)(h_prev != NULL ? h_prev + r * h : NULL), (float* const*)pl); \
                continue;                                                                          \
            }                                                                                      \
            T* gate[2] = {pr, pz};                                                                 \
            for (int k = 0; k < 2; ++k) {                                                          \
                T* restrict y = gate[k];                                                           \
                const T* restrict a = xr + xb[k] * h;                                              \
                const T* restrict b = hr != NULL ? hr + hb[k] * h : NULL;                          \
                const T* restrict c = bias != NULL ? bias + k * h : NULL;                          \
                for (int64_t j = 0; j < h; ++j) {                                                  \
                    T v = a[j];                                                                    \
                    if (b != NULL) {                                                               \
                        v = v + b[j];                                                              \
                    }                                                                              \
                    y[j] = c != NULL ? v + c[j] : v;                                               \
                }                                                                                  \
                SIGMOID(y, y, h);                                                                  \
            }                                                                                      \
            {                                                                                      \
                const T* restrict a = xr + xb[2] * h;                                              \
                const T* restrict b = hr != NULL ? hr + hb[2] * h : NULL;                          \
                const T* restrict bn = bias != NULL ? bias + 2 * h : NULL;                         \
                const T* restrict bhn = bias != NULL ? bias + 3 * h : NULL;                        \
                for (int64_t j = 0; j < h; ++j) {                                                  \
                    const T hn = (b != NULL ? b[j] : (T)0) + (bhn != NULL ? bhn[j] : (T)0);        \
                    const T v = a[j] + pr[j] * hn;                                                 \
                    phn[j] = hn;                                                                   \
                    pn[j] = bn != NULL ? v + bn[j] : v;                                            \
                }                                                                                  \
                TANH(pn, pn, h);                                                                   \
            }                                                                                      \
            const T* restrict hp = h_prev != NULL ? h_prev + r * h : NULL;                         \
            for (int64_t j = 0; j < h; ++j) {                                                      \
                ph[j] = fc_gru_h_##SFX(pz[j], pn[j], hp != NULL ? hp[j] : (T)0);                   \
            }                                                                                      \
        }                                                                                          \
        return FC_OK;                                                                              \
    }                                                                                              \
                                                                                                   \
    int fc_gru_cell_bwd_##SFX(int64_t n, int64_t h, const T* fwd, const T* h_prev, const T* dh,    \
                              const int64_t* xorder, const int64_t* horder, T* dx, T* dhh, T* dh_prev) \
    {                                                                                              \
        int64_t xb[3], hb[3], nh = 0;                                                              \
        int st = gru_sizes(n, h, &nh);                                                             \
        if (st != FC_OK || (st = gru_blocks(xorder, xb)) != FC_OK || (st = gru_blocks(horder, hb)) != FC_OK) { \
            return st;                                                                             \
        }                                                                                          \
        if (ku_bad_ptr(fwd, nh) || ku_bad_ptr(dh, nh) || ku_bad_ptr(dx, nh) || ku_bad_ptr(dhh, nh)) { \
            return FC_ERR_NULL;                                                                    \
        }                                                                                          \
        const fc_rnn_rows* rows = ROWS();                                                          \
        for (int64_t r = 0; r < n; ++r) {                                                          \
            const T* restrict pr = fwd + r * h;                                                    \
            const T* restrict pz = pr + nh;                                                        \
            const T* restrict pn = pz + nh;                                                        \
            const T* restrict phn = pn + nh;                                                       \
            const T* restrict hp = h_prev != NULL ? h_prev + r * h : NULL;                         \
            const T* restrict g = dh + r * h;                                                      \
            T* restrict xrow = dx + r * 3 * h;                                                     \
            T* restrict hrow = dhh + r * 3 * h;                                                    \
            T* restrict dxr = xrow + xb[0] * h;                                                    \
            T* restrict dxz = xrow + xb[1] * h;                                                    \
            T* restrict dxn = xrow + xb[2] * h;                                                    \
            T* restrict dhr = hrow + hb[0] * h;                                                    \
            T* restrict dhz = hrow + hb[1] * h;                                                    \
            T* restrict dhn = hrow + hb[2] * h;                                                    \
            T* restrict dp = dh_prev != NULL ? dh_prev + r * h : NULL;                             \
            if (rows != NULL) {                                                                    \
                const T* fw[4] = {pr, pz, pn, phn};                                                \
                T* d6[6] = {dxr, dxz, dxn, dhr, dhz, dhn};                                         \
                rows->gru_bwd(h, (const float* const*)fw, (const float*)hp, (const float*)g, (float* const*)d6, \
                              (float*)dp);                                                         \
                continue;                                                                          \
            }                                                                                      \
            for (int64_t j = 0; j < h; ++j) {                                                      \
                T a, b, c, d, e;                                                                   \
                fc_gru_grad_##SFX(pr[j], pz[j], pn[j], phn[j], hp != NULL ? hp[j] : (T)0, g[j], &a, &b, &c, &d, &e); \
                dxr[j] = a;                                                                        \
                dxz[j] = b;                                                                        \
                dxn[j] = c;                                                                        \
                dhr[j] = a;                                                                        \
                dhz[j] = b;                                                                        \
                dhn[j] = d;                                                                        \
                if (dp != NULL) {                                                                  \
                    dp[j] = e;                                                                     \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        return FC_OK;                                                                              \
    }

DEFINE_GRU(float, f32, VM_SIGMOID_F32, VM_TANH_F32, rows_f32)
DEFINE_GRU(double, f64, sigmoid_f64, tanh_f64, rows_f64)
