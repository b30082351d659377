/* Convolution kernels (flexcore/conv.h): im2col into a per-slot scratch + GEMM in NCHW, col2im
 * for the data gradient, accumulated GEMMs for the weight gradient; images split among slots that
 * run on the GEMM thread pool (a GEMM called inside a pool task runs on its own thread). */
#include <string.h>

#include "../gemm/gemm_internal.h"
#include "flexcore/conv.h"
#include "flexcore/ew_math.h"
#include "flexcore/gemm.h"
#include "flexcore/kernels.h"
#include "conv_simd.h"
#include "kernel_util.h"

typedef struct conv_plan {
    int64_t n, c, o, groups, cg, og;
    int64_t h, w, kh, kw, sh, sw, ph, pw, dh, dw;
    int64_t oh, ow;
    int64_t kg;          /* cg * kh * kw: rows of one group's window matrix */
    int64_t cols_count;  /* kg * oh * ow: one slot's scratch elements */
    int64_t x_count, y_count, w_count;
    int64_t slots;
    int pointwise;       /* 1x1 kernel, unit stride, no padding: the image is its own window matrix */
} conv_plan;

static int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

/* The output columns ox whose input column ox * sw - pw + kj * dw lies in [0, w): [lo, hi). */
static void ox_range(const conv_plan* q, int64_t kj, int64_t* lo, int64_t* hi)
{
    const int64_t off = kj * q->dw - q->pw;
    int64_t l = ceil_div(-off, q->sw), h = ceil_div(q->w - off, q->sw);
    l = l < 0 ? 0 : l > q->ow ? q->ow : l;
    h = h < 0 ? 0 : h > q->ow ? q->ow : h;
    *lo = l;
    *hi = h < l ? l : h;
}

static int axis(int64_t size, int64_t k, int64_t s, int64_t lo, int64_t hi, int64_t d, int64_t* out)
{
    if (size < 1 || k < 1 || s < 1 || d < 1 || lo < 0 || hi < 0) {
        return FC_ERR_SIZE;
    }
    const int64_t span = ku_add(ku_mul(d, k - 1), 1);
    const int64_t padded = ku_add(ku_add(size, lo), hi);
    if (span < 0 || padded < 0 || padded < span) {
        return FC_ERR_SIZE;
    }
    *out = (padded - span) / s + 1;
    return FC_OK;
}

static int64_t prod(const int64_t* v, int n)
{
    int64_t r = 1;
    for (int i = 0; i < n; ++i) {
        r = ku_mul(r, v[i]);
    }
    return r;
}

static int make_plan(int dtype, int mode, const fc_conv_geom* g, int64_t slots, conv_plan* q)
{
    if (g == NULL) {
        return FC_ERR_NULL;
    }
    if (dtype != FC_F32 && dtype != FC_F64) {
        return FC_ERR_DTYPE;
    }
    if (mode < 0 || mode >= FC_CONV_MODE_COUNT) {
        return FC_ERR_OP;
    }
    if (g->n < 1 || g->c < 1 || g->o < 1 || g->groups < 1 || g->c % g->groups || g->o % g->groups || slots < 1) {
        return FC_ERR_SIZE;
    }
    memset(q, 0, sizeof(*q));
    q->n = g->n, q->c = g->c, q->o = g->o, q->groups = g->groups;
    q->cg = g->c / g->groups, q->og = g->o / g->groups;
    q->h = g->h, q->w = g->w, q->kh = g->kh, q->kw = g->kw, q->sh = g->sh, q->sw = g->sw;
    q->ph = g->ph_lo, q->pw = g->pw_lo, q->dh = g->dh, q->dw = g->dw;
    int st = axis(g->h, g->kh, g->sh, g->ph_lo, g->ph_hi, g->dh, &q->oh);
    if (st == FC_OK) {
        st = axis(g->w, g->kw, g->sw, g->pw_lo, g->pw_hi, g->dw, &q->ow);
    }
    if (st != FC_OK) {
        return st;
    }
    const int64_t kg_dims[3] = {q->cg, q->kh, q->kw};
    q->kg = prod(kg_dims, 3);
    const int64_t cols_dims[3] = {q->kg, q->oh, q->ow};
    q->cols_count = prod(cols_dims, 3);
    const int64_t x_dims[4] = {q->n, q->c, q->h, q->w}, y_dims[4] = {q->n, q->o, q->oh, q->ow};
    q->x_count = prod(x_dims, 4);
    q->y_count = prod(y_dims, 4);
    q->w_count = ku_mul(q->o, q->kg);
    if (q->kg < 0 || q->cols_count < 0 || q->x_count < 0 || q->y_count < 0 || q->w_count < 0) {
        return FC_ERR_SIZE;
    }
    q->slots = slots < q->n ? slots : q->n;
    q->pointwise = q->kh == 1 && q->kw == 1 && q->sh == 1 && q->sw == 1 && q->ph == 0 && q->pw == 0 &&
                   g->ph_hi == 0 && g->pw_hi == 0;
    return FC_OK;
}

int fc_conv_sizes(int dtype, int mode, const fc_conv_geom* g, int64_t slots, int64_t* a_count, int64_t* b_count,
                  int64_t* out_count, int64_t* scratch_bytes)
{
    conv_plan q;
    const int st = make_plan(dtype, mode, g, slots, &q);
    if (st != FC_OK) {
        return st;
    }
    const int64_t x = q.x_count, y = q.y_count, w = q.w_count;
    const int64_t counts[FC_CONV_MODE_COUNT][3] = {{x, w, y}, {y, w, x}, {x, y, w}};
    /* The scratch uses the capped slot count, but callers size it for what they asked. */
    int64_t elems = ku_mul(slots, q.pointwise ? 0 : q.cols_count);
    if (mode == FC_CONV_BACKWARD_WEIGHT) {
        elems = ku_add(ku_mul(slots, q.cols_count), ku_mul(slots - 1, w));
    }
    const int64_t bytes = ku_mul(elems, dtype == FC_F32 ? 4 : 8);
    if (bytes < 0) {
        return FC_ERR_SIZE;
    }
    if (a_count) *a_count = counts[mode][0];
    if (b_count) *b_count = counts[mode][1];
    if (out_count) *out_count = counts[mode][2];
    if (scratch_bytes) *scratch_bytes = bytes;
    return FC_OK;
}

/* conv_simd.h's small weight gradient where it applies (float32, AVX2, few window rows). */
static int dw_small_f32(int64_t og, int64_t kg, int64_t p, const float* g, const float* cols, float* dw, int accumulate)
{
    if (kg > FC_CONV_DW_SMALL_KG || fc_conv_dw_small_avx2 == NULL || strcmp(fc_cpu_isa(), "scalar") == 0) {
        return 0;
    }
    fc_conv_dw_small_avx2(og, kg, p, g, cols, dw, accumulate);
    return 1;
}

#define CT float
#define CFN(name) name##_f32
#define CDW_SMALL dw_small_f32
#define CGEMM fc_sgemm
#define CKERNEL fc_sgemm_kernel
#define CKERN(ctx) ((ctx)->s)
#define CRELU fc_ew_relu_f32
#include "conv_tmpl.h"
#undef CT
#undef CFN
#undef CGEMM
#undef CKERNEL
#undef CKERN
#undef CRELU
#undef CDW_SMALL
#define CT double
#define CFN(name) name##_f64
#define CDW_SMALL(og, kg, p, g, cols, dw, accumulate) 0
#define CGEMM fc_dgemm
#define CKERNEL fc_dgemm_kernel
#define CKERN(ctx) ((ctx)->d)
#define CRELU fc_ew_relu_f64
#include "conv_tmpl.h"
#undef CT
#undef CFN
#undef CGEMM
#undef CKERNEL
#undef CKERN
#undef CRELU
#undef CDW_SMALL

typedef struct conv_job {
    const conv_plan* q;
    int dtype, mode;
    const void* a;
    const void* b;
    const void* bias;
    int act;
    void* out;
    void* scratch;
    int status[64];
} conv_job;

static void conv_task(void* arg, int chunk)
{
    conv_job* j = (conv_job*)arg;
    const conv_plan* q = j->q;
    const int64_t first = q->n * chunk / q->slots, last = q->n * (chunk + 1) / q->slots;
    j->status[chunk] = j->dtype == FC_F32
                           ? chunk_f32(q, j->mode, chunk, first, last, j->a, j->b, j->bias, j->act, j->out, j->scratch)
                           : chunk_f64(q, j->mode, chunk, first, last, j->a, j->b, j->bias, j->act, j->out, j->scratch);
}

int fc_conv(int dtype, int mode, const fc_conv_geom* g, int64_t slots, const void* a, const void* b, void* out,
            void* scratch)
{
    return fc_conv_ex(dtype, mode, g, slots, a, b, NULL, FC_ACT_NONE, out, scratch);
}

int fc_conv_ex(int dtype, int mode, const fc_conv_geom* g, int64_t slots, const void* a, const void* b,
               const void* bias, int act, void* out, void* scratch)
{
    conv_plan q;
    int st = make_plan(dtype, mode, g, slots < 64 ? slots : 64, &q);
    if (st != FC_OK) {
        return st;
    }
    if ((act != FC_ACT_NONE && act != FC_ACT_RELU) || ((bias != NULL || act != FC_ACT_NONE) && mode != FC_CONV_FORWARD)) {
        return FC_ERR_OP;
    }
    if (a == NULL || b == NULL || out == NULL || (scratch == NULL && !(q.pointwise && mode != FC_CONV_BACKWARD_WEIGHT))) {
        return FC_ERR_NULL;
    }
    conv_job job = {.q = &q, .dtype = dtype, .mode = mode, .a = a, .b = b, .bias = bias, .act = act, .out = out, .scratch = scratch};
    const int threads = fc_get_num_threads();
    fc_pool_run(conv_task, &job, (int)q.slots, threads < (int)q.slots ? threads : (int)q.slots);
    for (int64_t s = 0; s < q.slots; ++s) {
        if (job.status[s] != FC_OK) {
            return job.status[s];
        }
    }
    if (mode == FC_CONV_BACKWARD_WEIGHT) {
        if (dtype == FC_F32) {
            sum_partials_f32(&q, out, scratch);
        } else {
            sum_partials_f64(&q, out, scratch);
        }
    }
    return FC_OK;
}
