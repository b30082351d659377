/* The per-dtype half of conv.c, included once per element type with
 * CT (element type), CFN(name) (name mangling), CGEMM (the fc_*gemm of that type), CRELU (its
 * ew_math.h relu) and CDW_SMALL(og, kg, p, g, cols, dw, accumulate) (an image's weight gradient
 * by conv_simd.h's kernel: 1 when it did it, 0 when the GEMM must) defined. */

/* cols (kg x p) = the windows of one group's image planes x (cg, h, w); padding reads zero. */
static void CFN(im2col)(const conv_plan* q, const CT* x, CT* cols)
{
    const int64_t p = q->oh * q->ow;
    for (int64_t c = 0; c < q->cg; ++c) {
        const CT* xc = x + c * q->h * q->w;
        for (int64_t ki = 0; ki < q->kh; ++ki) {
            for (int64_t kj = 0; kj < q->kw; ++kj) {
                CT* row = cols + ((c * q->kh + ki) * q->kw + kj) * p;
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

/* dx (cg, h, w) = the sum of the windows cols (kg x p) back into their image positions. */
static void CFN(col2im)(const conv_plan* q, const CT* cols, CT* dx)
{
    const int64_t p = q->oh * q->ow;
    memset(dx, 0, (size_t)(q->cg * q->h * q->w) * sizeof(CT));
    for (int64_t c = 0; c < q->cg; ++c) {
        CT* xc = dx + c * q->h * q->w;
        for (int64_t ki = 0; ki < q->kh; ++ki) {
            for (int64_t kj = 0; kj < q->kw; ++kj) {
                const CT* row = cols + ((c * q->kh + ki) * q->kw + kj) * p;
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

/* One chunk of images [first, last) on scratch slot `slot`. */
static int CFN(chunk)(const conv_plan* q, int mode, int64_t slot, int64_t first, int64_t last, const CT* a,
                      const CT* b, const CT* bias, int act, CT* out, CT* scratch)
{
    const int64_t p = q->oh * q->ow, kg = q->kg, og = q->og, cg = q->cg, hw = q->h * q->w;
    CT* cols = scratch + slot * q->cols_count;
    int status = FC_OK;
    if (mode == FC_CONV_FORWARD) {
        for (int64_t n = first; n < last && status == FC_OK; ++n) {
            for (int64_t gi = 0; gi < q->groups && status == FC_OK; ++gi) {
                const CT* xg = a + (n * q->c + gi * cg) * hw;
                const CT* src = xg;
                if (!q->pointwise) {
                    CFN(im2col)(q, xg, cols);
                    src = cols;
                }
                CT* y = out + (n * q->o + gi * og) * p;
                status = CGEMM(0, 0, og, p, kg, (CT)1, b + gi * og * kg, kg, src, p, (CT)0, y, p);
                if (bias != NULL || act == FC_ACT_RELU) {
                    /* This image's output is still in cache: one pass instead of later ones. */
                    for (int64_t o = 0; o < og; ++o) {
                        const CT bo = bias != NULL ? bias[gi * og + o] : (CT)0;
                        CT* yr = y + o * p;
                        if (bias != NULL) {
                            for (int64_t j = 0; j < p; ++j) {
                                yr[j] = yr[j] + bo;
                            }
                        }
                        if (act == FC_ACT_RELU) {
                            for (int64_t j = 0; j < p; ++j) {
                                yr[j] = CRELU(yr[j]);
                            }
                        }
                    }
                }
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
