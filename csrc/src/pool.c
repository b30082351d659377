/* Pooling kernels (flexcore/conv.h): direct loops over each window's valid taps, planes split
 * among the GEMM thread pool's threads; no window tensor is materialised. 2x2 windows of stride 2
 * that all lie inside the image (the common CNN pooling) have a path of their own for the max and
 * its gradient, vectorised for float32 (pool_avx2.c) and bitwise equal to the general loops. */
#include <math.h>
#include <string.h>

#include "../gemm/gemm_internal.h"
#include "flexcore/conv.h"
#include "flexcore/gemm.h"
#include "flexcore/kernels.h"
#include "kernel_util.h"
#include "pool_simd.h"

typedef struct pool_plan {
    int64_t planes, h, w, kh, kw, sh, sw, ph, pw, oh, ow;
    int pool2; /* 2x2, stride 2, and no window reaches into padding */
} pool_plan;

/* The vectorised 2x2 rows for this process' instruction set, or NULL (FLEXCORE_ISA=scalar). */
static const fc_pool2_kernels* pool2_kernels(void)
{
    return fc_pool2_avx2 != NULL && strcmp(fc_cpu_isa(), "scalar") != 0 ? fc_pool2_avx2 : NULL;
}

static int pool_axis(int64_t size, int64_t k, int64_t s, int64_t lo, int64_t hi, int64_t* out)
{
    if (size < 1 || k < 1 || s < 1 || lo < 0 || hi < 0) {
        return FC_ERR_SIZE;
    }
    const int64_t padded = ku_add(ku_add(size, lo), hi);
    if (padded < 0 || padded < k) {
        return FC_ERR_SIZE;
    }
    *out = (padded - k) / s + 1;
    return FC_OK;
}

static int pool_plan_make(const fc_pool_geom* g, pool_plan* q, int64_t* image_count, int64_t* out_count)
{
    if (g == NULL) {
        return FC_ERR_NULL;
    }
    if (g->n < 1 || g->c < 1) {
        return FC_ERR_SIZE;
    }
    q->planes = ku_mul(g->n, g->c);
    q->h = g->h, q->w = g->w, q->kh = g->kh, q->kw = g->kw, q->sh = g->sh, q->sw = g->sw;
    q->ph = g->ph_lo, q->pw = g->pw_lo;
    int st = pool_axis(g->h, g->kh, g->sh, g->ph_lo, g->ph_hi, &q->oh);
    if (st == FC_OK) {
        st = pool_axis(g->w, g->kw, g->sw, g->pw_lo, g->pw_hi, &q->ow);
    }
    if (st != FC_OK) {
        return st;
    }
    const int64_t img = ku_mul(q->planes, ku_mul(q->h, q->w)), out = ku_mul(q->planes, ku_mul(q->oh, q->ow));
    if (q->planes < 0 || img < 0 || out < 0 || ku_mul(q->kh, q->kw) < 0) {
        return FC_ERR_SIZE;
    }
    q->pool2 = q->kh == 2 && q->kw == 2 && q->sh == 2 && q->sw == 2 && q->ph == 0 && q->pw == 0 &&
               2 * q->oh <= q->h && 2 * q->ow <= q->w;
    if (image_count) *image_count = img;
    if (out_count) *out_count = out;
    return FC_OK;
}

int fc_pool_sizes(const fc_pool_geom* g, int64_t* image_count, int64_t* out_count)
{
    pool_plan q;
    return pool_plan_make(g, &q, image_count, out_count);
}

/* Only float32 rows are vectorised: POOL2_SIMD gives how many windows the kernel did. */
#define PT float
#define PFN(name) name##_f32
#define POOL2_SIMD(kind, simd, ...) ((simd) != NULL ? (simd)->kind##_f32(__VA_ARGS__) : 0)
#include "pool_tmpl.h"
#undef PT
#undef PFN
#undef POOL2_SIMD
#define PT double
#define PFN(name) name##_f64
#define POOL2_SIMD(kind, simd, ...) ((void)(simd), (int64_t)0)
#include "pool_tmpl.h"
#undef PT
#undef PFN
#undef POOL2_SIMD

typedef struct pool_job {
    const pool_plan* q;
    int dtype, mode, chunks;
    const void *a, *b, *c;
    void* out;
} pool_job;

static void pool_task(void* arg, int chunk)
{
    const pool_job* j = (const pool_job*)arg;
    const int64_t first = j->q->planes * chunk / j->chunks, last = j->q->planes * (chunk + 1) / j->chunks;
    if (j->dtype == FC_F32) {
        pool_planes_f32(j->q, j->mode, first, last, j->a, j->b, j->c, j->out);
    } else {
        pool_planes_f64(j->q, j->mode, first, last, j->a, j->b, j->c, j->out);
    }
}

int fc_pool(int dtype, int mode, const fc_pool_geom* g, const void* a, const void* b, const void* c, void* out)
{
    pool_plan q;
    int64_t img = 0, outn = 0;
    const int st = pool_plan_make(g, &q, &img, &outn);
    if (st != FC_OK) {
        return st;
    }
    if (dtype != FC_F32 && dtype != FC_F64) {
        return FC_ERR_DTYPE;
    }
    if (mode < 0 || mode >= FC_POOL_MODE_COUNT) {
        return FC_ERR_OP;
    }
    const int needs_c = mode == FC_POOL_BACKWARD || mode == FC_POOL_GRAD || mode == FC_POOL_GRAD_RELU;
    const int needs_b = mode == FC_POOL_TIES || needs_c;
    if (a == NULL || out == NULL || (needs_b && b == NULL) || (needs_c && c == NULL)) {
        return FC_ERR_NULL;
    }
    int threads = fc_get_num_threads();
    /* Small problems are not worth waking the pool for. */
    const int64_t work = ku_mul(img > outn ? img : outn, 1);
    if (work < 32768) {
        threads = 1;
    }
    const int chunks = (int)(q.planes < threads ? q.planes : threads);
    pool_job job = {.q = &q, .dtype = dtype, .mode = mode, .chunks = chunks, .a = a, .b = b, .c = c, .out = out};
    fc_pool_run(pool_task, &job, chunks, chunks);
    return FC_OK;
}
