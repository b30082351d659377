/* The per-dtype half of conv.c, included once per element type with
 * CT (element type), CFN(name) (name mangling), CGEMM (the fc_*gemm of that type), CRELU (its
 * ew_math.h relu) and CDW_SMALL(og, kg, p, g, cols, dw, accumulate) (an image's weight gradient
 * by conv_simd.h's kernel: 1 when it did it, 0 when the GEMM must) defined. */

/* The valid output rows [*oy_lo, *oy_hi) and columns [*lo, *hi) of window row (ki, kj) of a
 * "same" conv (unit strides, w == ow): those whose input position lies inside the image. */
static void CFN(same_range)(const conv_plan* q, int64_t ki, int64_t kj, int64_t* oy_lo, int64_t* oy_hi, int64_t* lo,
                            int64_t* hi)
{
    const int64_t dy = ki * q->dh - q->ph;
    ox_range(q, kj, lo, hi);
    *oy_lo = -dy > 0 ? -dy : 0;
    *oy_hi = q->h - dy < q->oh ? q->h - dy : q->oh;
    if (*oy_hi < *oy_lo || *lo >= *hi) {
        *oy_hi = *oy_lo;
    }
}

/* row[oy * ow + ox] = 0 for the rows [oy_lo, oy_hi) and the columns outside [lo, hi): a few
 * elements per row, indexed so that the compiler keeps them inline (two loops of zero stores
 * would each become a memset call per row). */
static void CFN(zero_edges)(CT* row, int64_t ow, int64_t oy_lo, int64_t oy_hi, int64_t lo, int64_t hi)
{
    const int64_t edges = lo + ow - hi;
    for (int64_t oy = oy_lo; oy < oy_hi; ++oy) {
        for (int64_t e = 0; e < edges; ++e) {
            row[oy * ow + (e < lo ? e : hi + e - lo)] = 0;
        }
    }
}

/* One window row of a unit-stride conv whose output rows are as wide as the input's (w == ow,
 * "same" padding): the valid output rows [oy_lo, oy_hi) read consecutive input rows, so the
 * row is one copy of the input from (oy_lo, lo) to (oy_hi - 1, hi), after which the columns
 * outside [lo, hi) (which it filled with the neighbouring rows' ends) are zeroed, as are the rows
 * outside. Far fewer, longer copies than one per output row (small images have short rows). */
static void CFN(im2col_same_row)(const conv_plan* q, const CT* xc, int64_t ki, int64_t kj, CT* row)
{
    const int64_t ow = q->ow, dy = ki * q->dh - q->ph, off = kj * q->dw - q->pw;
    int64_t oy_lo, oy_hi, lo, hi;
    CFN(same_range)(q, ki, kj, &oy_lo, &oy_hi, &lo, &hi);
    if (oy_lo > 0) {
        memset(row, 0, (size_t)(oy_lo * ow) * sizeof(CT));
    }
    if (oy_hi > oy_lo) {
        const int64_t first = oy_lo * ow + lo, end = (oy_hi - 1) * ow + hi;
        memcpy(row + first, xc + (oy_lo + dy) * q->w + lo + off, (size_t)(end - first) * sizeof(CT));
        CFN(zero_edges)(row, ow, oy_lo, oy_hi, lo, hi);
    }
    if (oy_hi < q->oh) {
        memset(row + oy_hi * ow, 0, (size_t)((q->oh - oy_hi) * ow) * sizeof(CT));
    }
}

/* cols (kg x p) = the windows of one group's image planes x (cg, h, w); padding reads zero. */
static void CFN(im2col)(const conv_plan* q, const CT* x, CT* cols)
{
    const int64_t p = q->oh * q->ow;
    const int same = q->sh == 1 && q->sw == 1 && q->w == q->ow;
    for (int64_t c = 0; c < q->cg; ++c) {
        const CT* xc = x + c * q->h * q->w;
        for (int64_t ki = 0; ki < q->kh; ++ki) {
            for (int64_t kj = 0; kj < q->kw; ++kj) {
                CT* row = cols + ((c * q->kh + ki) * q->kw + kj) * p;
                if (same) {
                    CFN(im2col_same_row)(q, xc, ki, kj, row);
                    continue;
                }
                int64_t lo, hi;
                ox_range(q, kj, &lo, &hi);
                const int64_t off = kj * q->dw - q->pw;
                for (int64_t oy = 0; oy < q->oh; ++oy) {
                    CT* r = row + oy * q->ow;
                    const int64_t iy = oy * q->sh - q->ph + ki * q->dh;
                    if (iy < 0 || iy >= q->h || lo >= hi) {
                        memset(r, 0, (size_t)q->ow * sizeof(CT));
                        continue;
                    }
                    const CT* xr = xc + iy * q->w + off;
                    if (lo > 0) {
                        memset(r, 0, (size_t)lo * sizeof(CT));
                    }
                    if (q->sw == 1) {
                        memcpy(r + lo, xr + lo, (size_t)(hi - lo) * sizeof(CT));
                    } else {
                        for (int64_t ox = lo; ox < hi; ++ox) {
                            r[ox] = xr[ox * q->sw];
                        }
                    }
                    if (hi < q->ow) {
                        memset(r + hi, 0, (size_t)(q->ow - hi) * sizeof(CT));
                    }
                }
            }
        }
    }
}

/* col2im of one window row of a "same" conv, the adjoint of im2col_same_row: the row's entries
 * that fall outside the image (in columns outside [lo, hi)) are zeroed in the scratch, so the
 * valid rows add into dx as one contiguous run. cols is the caller's scratch. */
static void CFN(col2im_same_row)(const conv_plan* q, CT* row, int64_t ki, int64_t kj, CT* xc)
{
    const int64_t ow = q->ow, dy = ki * q->dh - q->ph, off = kj * q->dw - q->pw;
    int64_t oy_lo, oy_hi, lo, hi;
    CFN(same_range)(q, ki, kj, &oy_lo, &oy_hi, &lo, &hi);
    if (oy_hi <= oy_lo) {
        return;
    }
    CFN(zero_edges)(row, ow, oy_lo, oy_hi, lo, hi);
    const int64_t first = oy_lo * ow + lo, len = (oy_hi - 1) * ow + hi - first;
    const CT* restrict r = row + first;
    CT* restrict d = xc + (oy_lo + dy) * q->w + lo + off;
    for (int64_t k = 0; k < len; ++k) {
        d[k] += r[k];
    }
}

/* dx (cg, h, w) = the sum of the windows cols (kg x p) back into their image positions (a
 * "same" conv's cols are overwritten: its out-of-image entries become 0). */
static void CFN(col2im)(const conv_plan* q, CT* cols, CT* dx)
{
    const int64_t p = q->oh * q->ow;
    const int same = q->sh == 1 && q->sw == 1 && q->w == q->ow;
    memset(dx, 0, (size_t)(q->cg * q->h * q->w) * sizeof(CT));
    for (int64_t c = 0; c < q->cg; ++c) {
        CT* xc = dx + c * q->h * q->w;
        for (int64_t ki = 0; ki < q->kh; ++ki) {
            for (int64_t kj = 0; kj < q->kw; ++kj) {
                CT* row = cols + ((c * q->kh + ki) * q->kw + kj) * p;
                if (same) {
                    CFN(col2im_same_row)(q, row, ki, kj, xc);
                    continue;
                }
                int64_t lo, hi;
                ox_range(q, kj, &lo, &hi);
                const int64_t off = kj * q->dw - q->pw;
                for (int64_t oy = 0; oy < q->oh; ++oy) {
                    const int64_t iy = oy * q->sh - q->ph + ki * q->dh;
                    if (iy < 0 || iy >= q->h || lo >= hi) {
                        continue;
                    }
                    const CT* r = row + oy * q->ow;
                    CT* xr = xc + iy * q->w + off;
                    if (q->sw == 1) {
                        for (int64_t ox = lo; ox < hi; ++ox) {
                            xr[ox] += r[ox];
                        }
                    } else {
                        for (int64_t ox = lo; ox < hi; ++ox) {
                            xr[ox * q->sw] += r[ox];
                        }
                    }
                }
            }
        }
    }
}

/* c (m x p) = act(A @ src + bias), A packed by the kernel's pack_a (m x k, all k deep) in abuf,
 * src (k x p) row-major; src is packed one micro-panel at a time into bbuf (nr x k), and bias
 * (m values, NULL: none) and act (FC_ACT_NONE / FC_ACT_RELU) are applied to each panel's columns
 * right after the micro-kernel wrote them. */
static void CFN(gemm_packed)(const CKERNEL* kern, int64_t m, int64_t k, int64_t p, const CT* abuf, const CT* src,
                             CT* bbuf, CT* c, const CT* bias, int act)
{
    const int64_t mr = kern->mr, nr = kern->nr;
    const CT one = 1, zero = 0;
    for (int64_t j0 = 0; j0 < p; j0 += nr) {
        const int64_t nn = p - j0 < nr ? p - j0 : nr;
        kern->pack_b(0, k, nn, src + j0, p, (int)nr, bbuf);
        for (int64_t i0 = 0; i0 < m; i0 += mr) {
            const fc_gemm_aux aux = {.a_next = i0 + mr < m ? abuf + (i0 + mr) * k : abuf, .b_next = bbuf};
            kern->ukr(m - i0 < mr ? m - i0 : mr, nn, k, &one, abuf + i0 * k, bbuf, &zero, c + i0 * p + j0, p, &aux);
        }
        if (bias == NULL && act != FC_ACT_RELU) {
            continue;
        }
        for (int64_t i = 0; i < m; ++i) {
            CT* cr = c + i * p + j0;
            if (bias != NULL) {
                const CT bi = bias[i];
                for (int64_t j = 0; j < nn; ++j) {
                    cr[j] = cr[j] + bi;
                }
            }
            if (act == FC_ACT_RELU) {
                for (int64_t j = 0; j < nn; ++j) {
                    cr[j] = CRELU(cr[j]);
                }
            }
        }
    }
}

/* One chunk of images [first, last) on scratch slot `slot`. */
static int CFN(chunk)(const conv_plan* q, int mode, int64_t slot, int64_t first, int64_t last, const CT* a,
                      const CT* b, const CT* bias, int act, CT* out, CT* scratch)
{
    const int64_t p = q->oh * q->ow, kg = q->kg, og = q->og, cg = q->cg, hw = q->h * q->w;
    CT* cols = scratch + slot * q->cols_count;
    int status = FC_OK;
    if (mode == FC_CONV_FORWARD) {
        /* The weights are packed once per chunk, all of kg deep (one pass per tile: no partial
         * sums), then each image's windows one micro-panel at a time right before the
         * micro-kernel reads them, instead of a GEMM per image that packs both again. (The data
         * gradient's GEMM, kg rows, gains nothing from this: it keeps the GEMM.) */
        const CKERNEL* kern = &CKERN(fc_gemm_ctx_active());
        const int64_t mr = kern->mr, nr = kern->nr, og_up = (og + mr - 1) / mr * mr;
        CT* abuf = fc_thread_buffer(FC_GEMM_BUF_A, (size_t)(og_up * kg) * sizeof(CT));
        CT* bbuf = fc_thread_buffer(FC_GEMM_BUF_B, (size_t)(nr * kg) * sizeof(CT));
        if (abuf == NULL || bbuf == NULL) {
            return FC_ERR_NOMEM;
        }
        for (int64_t gi = 0; gi < q->groups; ++gi) {
            kern->pack_a(0, og, kg, b + gi * og * kg, kg, (int)mr, abuf);
            for (int64_t n = first; n < last; ++n) {
                const CT* xg = a + (n * q->c + gi * cg) * hw;
                const CT* src = xg;
                if (!q->pointwise) {
                    CFN(im2col)(q, xg, cols);
                    src = cols;
                }
                CFN(gemm_packed)(kern, og, kg, p, abuf, src, bbuf, out + (n * q->o + gi * og) * p,
                                 bias != NULL ? bias + gi * og : NULL, act);
            }
        }
    } else if (mode == FC_CONV_BACKWARD_DATA) {
        for (int64_t n = first; n < last && status == FC_OK; ++n) {
            for (int64_t gi = 0; gi < q->groups && status == FC_OK; ++gi) {
                CT* dxg = out + (n * q->c + gi * cg) * hw;
                CT* dst = q->pointwise ? dxg : cols;
                status = CGEMM(1, 0, kg, p, og, (CT)1, b + gi * og * kg, kg, a + (n * q->o + gi * og) * p, p, (CT)0,
                               dst, p);
                if (status == FC_OK && !q->pointwise) {
                    CFN(col2im)(q, cols, dxg);
                }
            }
        }
    } else {
        const int64_t wsize = q->o * kg;
        CT* dw = slot == 0 ? out : scratch + q->slots * q->cols_count + (slot - 1) * wsize;
        if (first >= last) {
            memset(dw, 0, (size_t)wsize * sizeof(CT));
        }
        for (int64_t n = first; n < last && status == FC_OK; ++n) {
            for (int64_t gi = 0; gi < q->groups && status == FC_OK; ++gi) {
                const CT* xg = a + (n * q->c + gi * cg) * hw;
                const CT* src = xg;
                if (!q->pointwise) {
                    CFN(im2col)(q, xg, cols);
                    src = cols;
                }
                const CT* gy = b + (n * q->o + gi * og) * p;
                if (!CDW_SMALL(og, kg, p, gy, src, dw + gi * og * kg, n != first)) {
                    status = CGEMM(0, 1, og, kg, p, (CT)1, gy, p, src, p, n == first ? (CT)0 : (CT)1,
                                   dw + gi * og * kg, kg);
                }
            }
        }
    }
    return status;
}

/* The weight gradient's slot partial sums, added into slot 0 (the output) in slot order. */
static void CFN(sum_partials)(const conv_plan* q, CT* out, const CT* scratch)
{
    const int64_t wsize = q->o * q->kg;
    for (int64_t s = 1; s < q->slots; ++s) {
        const CT* part = scratch + q->slots * q->cols_count + (s - 1) * wsize;
        for (int64_t i = 0; i < wsize; ++i) {
            out[i] += part[i];
        }
    }
}
