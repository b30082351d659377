/* The exported GEMM functions of one dtype: api.c includes this file with
 *   AP_T  the element type,  AP_NAME(x)  the dtype's name for x (fc_s##x),
 *   AP_KERN(ctx)  the dtype's kernel in a context ((ctx)->s),
 *   AP_FLOPS_PER_CYCLE  a core's peak, for the thread-count estimate only. */

/* C = beta * C (C not read when beta == 0), then the epilogue: the whole product when no
 * multiplication is needed (k == 0 or alpha == 0). */
static void AP_NAME(scale_c)(const AP_NAME(gemm_args)* g)
{
    for (int64_t i = 0; i < g->m; ++i) {
        AP_T* ci = g->c + i * g->ldc;
        for (int64_t j = 0; j < g->n; ++j) {
            ci[j] = g->beta == 0 ? (AP_T)0 : g->beta * ci[j];
        }
    }
    if (g->bias != NULL || g->act != FC_ACT_NONE) {
        AP_NAME(gemm_epilogue)(g->c, g->ldc, g->m, g->n, g->bias, g->act);
    }
}

/* One product cut into a tm x tn grid of blocks of C: the chunks of a region. */
typedef struct AP_NAME(split_job) {
    const AP_NAME(gemm_kernel)* kern;
    const AP_NAME(gemm_args)* g;
    gemm_split split;
    atomic_int status;
} AP_NAME(split_job);

static void AP_NAME(split_task)(void* arg, int chunk)
{
    AP_NAME(split_job)* job = arg;
    const AP_NAME(gemm_args)* g = job->g;
    const int pi = chunk / job->split.tn, pj = chunk % job->split.tn;
    const int64_t i0 = split_point(g->m, job->kern->mr, job->split.tm, pi);
    const int64_t i1 = split_point(g->m, job->kern->mr, job->split.tm, pi + 1);
    const int64_t j0 = split_point(g->n, job->kern->nr, job->split.tn, pj);
    const int64_t j1 = split_point(g->n, job->kern->nr, job->split.tn, pj + 1);
    if (i0 >= i1 || j0 >= j1) {
        return;
    }
    AP_NAME(gemm_args) sub = *g;
    sub.m = i1 - i0;
    sub.n = j1 - j0;
    sub.a = g->trans_a ? g->a + i0 : g->a + i0 * g->lda;
    sub.b = g->trans_b ? g->b + j0 * g->ldb : g->b + j0;
    sub.c = g->c + i0 * g->ldc + j0;
    sub.bias = g->bias != NULL ? g->bias + j0 : NULL;
    const int status = AP_NAME(gemm_serial)(job->kern, &sub);
    if (status != FC_OK) {
        atomic_store(&job->status, status);
    }
}

static int AP_NAME(run_split)(const AP_NAME(gemm_kernel)* kern, const AP_NAME(gemm_args)* g,
                              gemm_split split)
{
    if (split.tm * split.tn == 1) {
        return AP_NAME(gemm_serial)(kern, g);
    }
    AP_NAME(split_job) job = {.kern = kern, .g = g, .split = split};
    atomic_init(&job.status, FC_OK);
    fc_pool_run(AP_NAME(split_task), &job, split.tm * split.tn, split.nthreads);
    return atomic_load(&job.status);
}

static gemm_shape AP_NAME(shape)(const AP_NAME(gemm_kernel)* kern, int64_t m, int64_t n, int64_t k)
{
    return (gemm_shape){.m = m, .n = n, .k = k, .mr = kern->mr, .nr = kern->nr, .nc = kern->nc,
                        .flops_per_cycle = AP_FLOPS_PER_CYCLE};
}

/* Arguments are checked; m, n > 0. */
static int AP_NAME(gemm_checked)(const AP_NAME(gemm_args)* g)
{
    if (g->k == 0 || g->alpha == 0) {
        AP_NAME(scale_c)(g);
        return FC_OK;
    }
    const AP_NAME(gemm_kernel)* kern = &AP_KERN(fc_gemm_ctx_active());
    const gemm_shape shape = AP_NAME(shape)(kern, g->m, g->n, g->k);
    return AP_NAME(run_split)(kern, g, choose_split_now(&shape, fc_get_num_threads()));
}

int AP_NAME(gemm_ex)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, AP_T alpha,
                     const AP_T* a, int64_t lda, const AP_T* b, int64_t ldb, AP_T beta, AP_T* c,
                     int64_t ldc, const AP_T* bias, int act)
{
    const gemm_dims d = {.trans_a = trans_a, .trans_b = trans_b, .m = m, .n = n, .k = k, .lda = lda,
                         .ldb = ldb, .ldc = ldc, .elem = sizeof(AP_T)};
    int status = check_gemm(&d, a, b, c, 1, 0, 0, 0);
    if (status == FC_OK) {
        status = check_epilogue(act, bias, n);
    }
    if (status != FC_OK || m == 0 || n == 0) {
        return status;
    }
    const AP_NAME(gemm_args) g = {.trans_a = trans_a, .trans_b = trans_b, .m = m, .n = n, .k = k,
                                  .alpha = alpha, .a = a, .lda = lda, .b = b, .ldb = ldb,
                                  .beta = beta, .c = c, .ldc = ldc, .bias = bias, .act = act};
    return AP_NAME(gemm_checked)(&g);
}

int AP_NAME(gemm)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, AP_T alpha,
                  const AP_T* a, int64_t lda, const AP_T* b, int64_t ldb, AP_T beta, AP_T* c,
                  int64_t ldc)
{
    return AP_NAME(gemm_ex)(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, NULL,
                            FC_ACT_NONE);
}

/* A batch of products, one product per chunk, each product on one thread. */
typedef struct AP_NAME(batch_job) {
    const AP_NAME(gemm_kernel)* kern;
    const AP_NAME(gemm_args)* g; /* the first product */
    int64_t batch, stride_a, stride_b, stride_c;
    gemm_split split; /* of each product, when the products are run one after the other */
    atomic_int status;
} AP_NAME(batch_job);

static AP_NAME(gemm_args) AP_NAME(batch_item)(const AP_NAME(batch_job)* job, int64_t i)
{
    AP_NAME(gemm_args) item = *job->g;
    /* A and B may be NULL when empty (k == 0), and NULL + offset is undefined even then. */
    item.a = item.a != NULL ? item.a + i * job->stride_a : NULL;
    item.b = item.b != NULL ? item.b + i * job->stride_b : NULL;
    item.c += i * job->stride_c;
    return item;
}

static void AP_NAME(batch_task)(void* arg, int chunk)
{
    AP_NAME(batch_job)* job = arg;
    const AP_NAME(gemm_args) item = AP_NAME(batch_item)(job, chunk);
    const int status = AP_NAME(gemm_serial)(job->kern, &item);
    if (status != FC_OK) {
        atomic_store(&job->status, status);
    }
}

int AP_NAME(gemm_batched)(int trans_a, int trans_b, int64_t batch, int64_t m, int64_t n,
                          int64_t k, AP_T alpha, const AP_T* a, int64_t lda, int64_t stride_a,
                          const AP_T* b, int64_t ldb, int64_t stride_b, AP_T beta, AP_T* c,
                          int64_t ldc, int64_t stride_c)
{
    const gemm_dims d = {.trans_a = trans_a, .trans_b = trans_b, .m = m, .n = n, .k = k, .lda = lda,
                         .ldb = ldb, .ldc = ldc, .elem = sizeof(AP_T)};
    const int status = check_gemm(&d, a, b, c, batch, stride_a, stride_b, stride_c);
    if (status != FC_OK || batch == 0 || m == 0 || n == 0) {
        return status;
    }
    const AP_NAME(gemm_args) first = {.trans_a = trans_a, .trans_b = trans_b, .m = m, .n = n,
                                      .k = k, .alpha = alpha, .a = a, .lda = lda, .b = b,
                                      .ldb = ldb, .beta = beta, .c = c, .ldc = ldc, .bias = NULL,
                                      .act = FC_ACT_NONE};
    const AP_NAME(gemm_kernel)* kern = &AP_KERN(fc_gemm_ctx_active());
    AP_NAME(batch_job) job = {.kern = kern, .g = &first, .batch = batch, .stride_a = stride_a,
                              .stride_b = stride_b, .stride_c = stride_c};
    atomic_init(&job.status, FC_OK);
    if (k == 0 || alpha == 0) {
        for (int64_t i = 0; i < batch; ++i) {
            const AP_NAME(gemm_args) item = AP_NAME(batch_item)(&job, i);
            AP_NAME(scale_c)(&item);
        }
        return FC_OK;
    }
    const gemm_shape shape = AP_NAME(shape)(kern, m, n, k);
    const int max_threads = fc_get_num_threads();
    double split_each = 0;
    const double join = join_cycles();
    job.split = choose_split(&shape, max_threads, join, &split_each);
    const int nthreads = batch_threads(batch, &shape, split_each, max_threads, join);
    if (nthreads > 1 && batch <= INT32_MAX) {
        fc_pool_run(AP_NAME(batch_task), &job, (int)batch, nthreads);
        return atomic_load(&job.status);
    }
    for (int64_t i = 0; i < batch; ++i) {
        const AP_NAME(gemm_args) item = AP_NAME(batch_item)(&job, i);
        const int st = AP_NAME(run_split)(kern, &item, job.split);
        if (st != FC_OK) {
            return st;
        }
    }
    return FC_OK;
}
