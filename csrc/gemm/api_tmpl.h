/* The exported GEMM functions of one dtype: api.c includes this file with
 *   AP_T  the element type,  AP_NAME(x)  the dtype's name for x (fc_s##x),
 *   AP_KERN(ctx)  the dtype's kernel in a context ((ctx)->s),
 *   AP_FLOPS_PER_CYCLE  a core's peak, for the thread-count estimate only. */

/* packed_layout for this dtype, and trans 0 or 1. */
static int AP_NAME(pack_layout_checked)(int operand, int trans, int64_t rows, int64_t cols,
                                        int* width, int64_t* elements, int64_t* bytes)
{
    const int status = packed_layout(AP_DTYPE, operand, rows, cols, width, elements, bytes);
    if (status == FC_OK && trans != 0 && trans != 1) {
        return FC_ERR_OP;
    }
    return status;
}

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
    /* i0 and j0 are multiples of MR and NR: a pre-packed operand's block starts at a panel. */
    sub.a = g->trans_a == FC_GEMM_PACKED ? g->a + i0 * g->kp
            : g->trans_a                 ? g->a + i0
                                         : g->a + i0 * g->lda;
    sub.b = g->trans_b == FC_GEMM_PACKED ? g->b + j0 * g->kp
            : g->trans_b                 ? g->b + j0 * g->ldb
                                         : g->b + j0;
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

static gemm_shape AP_NAME(args_shape)(const AP_NAME(gemm_kernel)* kern, const AP_NAME(gemm_args)* g)
{
    gemm_shape s = AP_NAME(shape)(kern, g->m, g->n, g->k);
    s.packed_a = g->trans_a == FC_GEMM_PACKED;
    s.packed_b = g->trans_b == FC_GEMM_PACKED;
    return s;
}

/* Arguments are checked; m, n > 0. */
static int AP_NAME(gemm_checked)(const AP_NAME(gemm_args)* g)
{
    if (g->k == 0 || g->alpha == 0) {
        AP_NAME(scale_c)(g);
        return FC_OK;
    }
    const AP_NAME(gemm_kernel)* kern = &AP_KERN(fc_gemm_ctx_active());
    const gemm_shape shape = AP_NAME(args_shape)(kern, g);
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

int AP_NAME(gemm_pack)(int operand, int trans, int64_t rows, int64_t cols, const AP_T* x,
                       int64_t ldx, void* packed, int64_t packed_bytes)
{
    int width;
    int64_t elements, need, extent;
    int status = AP_NAME(pack_layout_checked)(operand, trans, rows, cols, &width, &elements, &need);
    if (status != FC_OK) {
        return status;
    }
    /* X is stored rows x cols, or cols x rows when transposed (for A and B alike). */
    status = check_operand(trans ? cols : rows, trans ? rows : cols, ldx, x, 1, 0, sizeof(AP_T),
                           &extent);
    if (status != FC_OK) {
        return status;
    }
    if (packed == NULL) {
        return FC_ERR_NULL;
    }
    if ((uintptr_t)packed % sizeof(AP_T) != 0) {
        return FC_ERR_ALIGN;
    }
    if (packed_bytes < need) {
        return FC_ERR_SIZE;
    }
    const fc_gemm_pack_header h = {.magic = FC_GEMM_PACK_MAGIC, .dtype = AP_DTYPE,
                                   .operand = operand, .width = width, .rows = rows, .cols = cols};
    memcpy(packed, &h, sizeof h);
    if (elements > 0) {
        const AP_NAME(gemm_kernel)* kern = &AP_KERN(fc_gemm_ctx_active());
        AP_T* dst = (AP_T*)(void*)((char*)packed + FC_GEMM_PACK_HEADER);
        if (operand == FC_GEMM_OPERAND_A) { /* one block of depth cols: the loops' A layout */
            kern->pack_a(trans, rows, cols, x, ldx, kern->mr, dst);
        } else {
            kern->pack_b(trans, rows, cols, x, ldx, kern->nr, dst);
        }
    }
    return FC_OK;
}

int AP_NAME(gemm_packed)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, AP_T alpha,
                         const void* a, int64_t lda, const void* b, int64_t ldb, AP_T beta, AP_T* c,
                         int64_t ldc, const AP_T* bias, int act)
{
    const gemm_dims d = {.trans_a = trans_a, .trans_b = trans_b, .allow_packed = 1, .m = m, .n = n,
                         .k = k, .lda = lda, .ldb = ldb, .ldc = ldc, .elem = sizeof(AP_T)};
    int status = check_gemm(&d, a, b, c, 1, 0, 0, 0);
    if (status == FC_OK) {
        status = check_epilogue(act, bias, n);
    }
    if (status != FC_OK) {
        return status;
    }
    const AP_NAME(gemm_kernel)* kern = &AP_KERN(fc_gemm_ctx_active());
    const AP_T* pa = a;
    const AP_T* pb = b;
    if (trans_a == FC_GEMM_PACKED) {
        if ((uintptr_t)a % sizeof(AP_T) != 0) {
            return FC_ERR_ALIGN;
        }
        if (!packed_matches(a, AP_DTYPE, FC_GEMM_OPERAND_A, m, k, kern->mr)) {
            return FC_ERR_SIZE;
        }
        pa = (const AP_T*)(const void*)((const char*)a + FC_GEMM_PACK_HEADER);
    }
    if (trans_b == FC_GEMM_PACKED) {
        if ((uintptr_t)b % sizeof(AP_T) != 0) {
            return FC_ERR_ALIGN;
        }
        if (!packed_matches(b, AP_DTYPE, FC_GEMM_OPERAND_B, k, n, kern->nr)) {
            return FC_ERR_SIZE;
        }
        pb = (const AP_T*)(const void*)((const char*)b + FC_GEMM_PACK_HEADER);
    }
    if (m == 0 || n == 0) {
        return FC_OK;
    }
    const AP_NAME(gemm_args) g = {.trans_a = trans_a, .trans_b = trans_b, .m = m, .n = n, .k = k,
                                  .alpha = alpha, .a = pa, .lda = lda, .b = pb, .ldb = ldb,
                                  .beta = beta, .c = c, .ldc = ldc, .bias = bias, .act = act,
                                  .kp = k};
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
