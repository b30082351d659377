/* The loops around the micro-kernel, written once for both dtypes: loops.c includes this file with
 *   LP_T  the element type,  LP_NAME(x)  the dtype's name for x (fc_s##x),
 *   LP_EW(x)  the ew_math.h function for x (fc_ew_##x##_f32),
 *   LP_VMATH(x, p, n)  applies the vectorised x to p[0..n) in place and gives 1, or gives 0.
 * No instruction set is named here: the kernel and its block sizes come from the context. */

void LP_NAME(gemm_epilogue)(LP_T* c, int64_t ldc, int64_t m, int64_t n, const LP_T* bias, int act)
{
    for (int64_t i = 0; i < m; ++i) {
        LP_T* restrict ci = c + i * ldc;
        if (bias != NULL) {
            for (int64_t j = 0; j < n; ++j) {
                ci[j] = ci[j] + bias[j];
            }
        }
        switch (act) {
        case FC_ACT_RELU:
            for (int64_t j = 0; j < n; ++j) {
                ci[j] = LP_EW(relu)(ci[j]);
            }
            break;
        case FC_ACT_SIGMOID:
            if (LP_VMATH(sigmoid, ci, n)) {
                break;
            }
            for (int64_t j = 0; j < n; ++j) {
                ci[j] = LP_EW(sigmoid)(ci[j]);
            }
            break;
        case FC_ACT_TANH:
            if (LP_VMATH(tanh, ci, n)) {
                break;
            }
            for (int64_t j = 0; j < n; ++j) {
                ci[j] = LP_EW(tanh)(ci[j]);
            }
            break;
        default: /* FC_ACT_NONE */
            break;
        }
    }
}

/* BLIS' five loops (Goto's algorithm):
 *   jc: NC columns of C and op(B)           B block KC x NC -> L3
 *     pc: KC of the shared dimension        pack B block (kc x nc)
 *       ic: MC rows of C and op(A)          pack A block (mc x kc) -> L2
 *         jr: NR columns                    one B panel (kc x NR) -> L1
 *           ir: MR rows                     micro-kernel on an MR x NR tile of C
 * The first pc pass applies the caller's beta, later passes accumulate (beta = 1); the last one
 * applies the epilogue to each tile the kernel has just written, while it is in L1.
 *
 * When all rows fit one ic block (m <= MC: every RNN-sized product), a B panel is used by that
 * one block only, so B is packed a few panels (FC_GEMM_JIT_PANELS) at a time right before the jr
 * iterations that use them, into a small buffer that stays in cache, instead of packing the whole
 * kc x nc block first and reading it back from L3. */
int LP_NAME(gemm_serial)(const LP_NAME(gemm_kernel)* kern, const LP_NAME(gemm_args)* g)
{
    const int mr = kern->mr;
    const int nr = kern->nr;
    const int64_t m = g->m, n = g->n, k = g->k;
    const int packed_a = g->trans_a == FC_GEMM_PACKED, packed_b = g->trans_b == FC_GEMM_PACKED;
    const int64_t kc_max = k < kern->kc ? k : kern->kc;
    const int64_t m_up = (m + mr - 1) / mr * mr;
    const int64_t n_up = (n + nr - 1) / nr * nr;
    const int64_t mc_max = m_up < kern->mc ? m_up : kern->mc;
    const int one_ic_block = m <= kern->mc;
    const int64_t nc_max =
        one_ic_block ? FC_GEMM_JIT_PANELS * nr : (n_up < kern->nc ? n_up : kern->nc);

    /* A pre-packed operand needs no buffer: its panels are read where they are. */
    const size_t a_bytes = (size_t)(mc_max * kc_max) * sizeof(LP_T);
    const size_t b_bytes = (size_t)(nc_max * kc_max) * sizeof(LP_T);
    LP_T* abuf = packed_a ? NULL : fc_thread_buffer(FC_GEMM_BUF_A, a_bytes);
    LP_T* bbuf = packed_b ? NULL : fc_thread_buffer(FC_GEMM_BUF_B, b_bytes);
    if ((!packed_a && abuf == NULL) || (!packed_b && bbuf == NULL)) {
        return FC_ERR_NOMEM;
    }
    const int epilogue = g->bias != NULL || g->act != FC_ACT_NONE;

    for (int64_t jc = 0; jc < n; jc += kern->nc) {
        const int64_t nc = n - jc < kern->nc ? n - jc : kern->nc;
        for (int64_t pc = 0; pc < k; pc += kern->kc) {
            const int64_t kc = k - pc < kern->kc ? k - pc : kern->kc;
            const LP_T beta = pc == 0 ? g->beta : (LP_T)1;
            const int last_pass = pc + kc == k;
            /* op(B)[pc][jc] */
            const LP_T* b_blk = packed_b  ? NULL
                                : g->trans_b ? g->b + jc * g->ldb + pc
                                             : g->b + pc * g->ldb + jc;
            if (!one_ic_block && !packed_b) {
                kern->pack_b(g->trans_b, kc, nc, b_blk, g->ldb, nr, bbuf);
            }
            for (int64_t ic = 0; ic < m; ic += kern->mc) {
                const int64_t mc = m - ic < kern->mc ? m - ic : kern->mc;
                /* The block's first A panel and the distance from one panel to the next. */
                const LP_T* a_first;
                int64_t a_step;
                if (packed_a) {
                    a_first = g->a + ic * g->kp + pc * mr;
                    a_step = mr * g->kp;
                } else {
                    /* op(A)[ic][pc] */
                    const LP_T* a_blk =
                        g->trans_a ? g->a + pc * g->lda + ic : g->a + ic * g->lda + pc;
                    kern->pack_a(g->trans_a, mc, kc, a_blk, g->lda, mr, abuf);
                    a_first = abuf;
                    a_step = mr * kc;
                }
                for (int64_t jr = 0; jr < nc; jr += nr) {
                    const int64_t nr_now = nc - jr < nr ? nc - jr : nr;
                    const LP_T* bp;
                    int64_t b_step;
                    if (packed_b) {
                        bp = g->b + (jc + jr) * g->kp + pc * nr;
                        b_step = nr * g->kp;
                    } else if (one_ic_block) {
                        const int64_t group = jr / nr % FC_GEMM_JIT_PANELS;
                        if (group == 0) {
                            const int64_t group_cols = (int64_t)FC_GEMM_JIT_PANELS * nr;
                            const int64_t cols = nc - jr < group_cols ? nc - jr : group_cols;
                            const LP_T* b_pan = g->trans_b ? b_blk + jr * g->ldb : b_blk + jr;
                            kern->pack_b(g->trans_b, kc, cols, b_pan, g->ldb, nr, bbuf);
                        }
                        bp = bbuf + group * nr * kc;
                        b_step = nr * kc;
                    } else {
                        bp = bbuf + jr * kc;
                        b_step = nr * kc;
                    }
                    for (int64_t ir = 0; ir < mc; ir += mr) {
                        const int64_t mr_now = mc - ir < mr ? mc - ir : mr;
                        const LP_T* ap = a_first + ir / mr * a_step;
                        LP_T* cp = g->c + (ic + ir) * g->ldc + jc + jr;
                        /* The next call reads the next A panel, or the first with the next B. */
                        const fc_gemm_aux aux = {
                            .a_next = ir + mr < mc ? ap + a_step : a_first,
                            .b_next = ir + mr < mc ? bp : bp + b_step,
                        };
                        kern->ukr(mr_now, nr_now, kc, &g->alpha, ap, bp, &beta, cp, g->ldc, &aux);
                        if (last_pass && epilogue) {
                            LP_NAME(gemm_epilogue)(cp, g->ldc, mr_now, nr_now,
                                                   g->bias != NULL ? g->bias + jc + jr : NULL,
                                                   g->act);
                        }
                    }
                }
            }
        }
    }
    return FC_OK;
}
