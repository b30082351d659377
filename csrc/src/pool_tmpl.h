/* The per-dtype half of pool.c: PT (element type), PFN(name) defined by the includer. */

/* y (oh, ow) = the window sums of one plane x (h, w). */
static void PFN(sum_plane)(const pool_plan* q, const PT* x, PT* y)
{
    for (int64_t oy = 0; oy < q->oh; ++oy) {
        const int64_t y0 = oy * q->sh - q->ph;
        const int64_t ky_lo = y0 < 0 ? -y0 : 0, ky_hi = y0 + q->kh > q->h ? q->h - y0 : q->kh;
        for (int64_t ox = 0; ox < q->ow; ++ox) {
            const int64_t x0 = ox * q->sw - q->pw;
            const int64_t kx_lo = x0 < 0 ? -x0 : 0, kx_hi = x0 + q->kw > q->w ? q->w - x0 : q->kw;
            PT acc = 0;
            for (int64_t ky = ky_lo; ky < ky_hi; ++ky) {
                const PT* r = x + (y0 + ky) * q->w + x0;
                for (int64_t kx = kx_lo; kx < kx_hi; ++kx) {
                    acc += r[kx];
                }
            }
            y[oy * q->ow + ox] = acc;
        }
    }
}

/* dx (h, w) = the sum over windows of their value s (oh, ow) at every tap. */
static void PFN(spread_plane)(const pool_plan* q, const PT* s, PT* dx)
{
    memset(dx, 0, (size_t)(q->h * q->w) * sizeof(PT));
    for (int64_t oy = 0; oy < q->oh; ++oy) {
        const int64_t y0 = oy * q->sh - q->ph;
        const int64_t ky_lo = y0 < 0 ? -y0 : 0, ky_hi = y0 + q->kh > q->h ? q->h - y0 : q->kh;
        for (int64_t ox = 0; ox < q->ow; ++ox) {
            const int64_t x0 = ox * q->sw - q->pw;
            const int64_t kx_lo = x0 < 0 ? -x0 : 0, kx_hi = x0 + q->kw > q->w ? q->w - x0 : q->kw;
            const PT v = s[oy * q->ow + ox];
            for (int64_t ky = ky_lo; ky < ky_hi; ++ky) {
                PT* r = dx + (y0 + ky) * q->w + x0;
                for (int64_t kx = kx_lo; kx < kx_hi; ++kx) {
                    r[kx] += v;
                }
            }
        }
    }
}

/* The scalar step of a window maximum: the first maximum stays, a NaN wins and then stays. */
static inline PT PFN(max_step)(PT v, PT m) { return (v > m || v != v) && m == m ? v : m; }

/* 2x2 windows, stride 2, no window touching padding (q->pool2): one plane of FC_POOL_MAX. */
static void PFN(max2_plane)(const pool_plan* q, const fc_pool2_kernels* simd, const PT* x, PT* y)
{
    for (int64_t oy = 0; oy < q->oh; ++oy) {
        const PT* r0 = x + 2 * oy * q->w;
        const PT* r1 = r0 + q->w;
        PT* yr = y + oy * q->ow;
        for (int64_t i = POOL2_SIMD(max, simd, r0, r1, yr, q->ow); i < q->ow; ++i) {
            PT m = r0[2 * i];
            m = PFN(max_step)(r0[2 * i + 1], m);
            m = PFN(max_step)(r1[2 * i], m);
            yr[i] = PFN(max_step)(r1[2 * i + 1], m);
        }
    }
}

/* The same windows: one plane of FC_POOL_GRAD, written whole (taps in no window get 0). */
static void PFN(grad2_plane)(const pool_plan* q, const fc_pool2_kernels* simd, int relu, const PT* x, const PT* y,
                             const PT* g, PT* dx)
{
    const PT zero = 0;
    for (int64_t oy = 0; oy < q->oh; ++oy) {
        const PT* r0 = x + 2 * oy * q->w;
        const PT* r1 = r0 + q->w;
        PT* d0 = dx + 2 * oy * q->w;
        PT* d1 = d0 + q->w;
        const PT* yr = y + oy * q->ow;
        const PT* gr = g + oy * q->ow;
        for (int64_t i = POOL2_SIMD(grad, simd, relu, r0, r1, yr, gr, d0, d1, q->ow); i < q->ow; ++i) {
            const PT t = yr[i];
            /* relu: taps equal to t get nothing unless t > 0, which is where(x > 0, dx, 0). */
            const int on = !relu || t > 0;
            const int e00 = on && r0[2 * i] == t, e01 = on && r0[2 * i + 1] == t, e10 = on && r1[2 * i] == t,
                      e11 = on && r1[2 * i + 1] == t;
            const int count = e00 + e01 + e10 + e11;
            /* zero + share: what the general path's memset and += give (+0 for a share of -0). */
            const PT sh = count > 0 ? gr[i] / (PT)count : zero;
            d0[2 * i] = e00 ? zero + sh : zero;
            d0[2 * i + 1] = e01 ? zero + sh : zero;
            d1[2 * i] = e10 ? zero + sh : zero;
            d1[2 * i + 1] = e11 ? zero + sh : zero;
        }
        for (int64_t c = 2 * q->ow; c < q->w; ++c) {
            d0[c] = d1[c] = zero;
        }
    }
    if (2 * q->oh < q->h) {
        memset(dx + 2 * q->oh * q->w, 0, (size_t)((q->h - 2 * q->oh) * q->w) * sizeof(PT));
    }
}

static void PFN(pool_planes)(const pool_plan* q, int mode, int64_t first, int64_t last, const PT* x, const PT* y,
                             const PT* share, PT* out)
{
    const int64_t hw = q->h * q->w, ohw = q->oh * q->ow;
    const fc_pool2_kernels* simd = pool2_kernels();
    for (int64_t pl = first; pl < last; ++pl) {
        const PT* xp = x + pl * hw;
        if (q->pool2 && mode == FC_POOL_MAX) {
            PFN(max2_plane)(q, simd, xp, out + pl * ohw);
            continue;
        }
        const int grad = mode == FC_POOL_GRAD || mode == FC_POOL_GRAD_RELU, relu = mode == FC_POOL_GRAD_RELU;
        if (q->pool2 && grad) {
            PFN(grad2_plane)(q, simd, relu, xp, y + pl * ohw, share + pl * ohw, out + pl * hw);
            continue;
        }
        if (mode == FC_POOL_SPREAD) {
            PFN(spread_plane)(q, x + pl * ohw, out + pl * hw);
            continue;
        }
        if (mode == FC_POOL_SUM) {
            PFN(sum_plane)(q, xp, out + pl * ohw);
            continue;
        }
        if (mode == FC_POOL_BACKWARD || grad) {
            memset(out + pl * hw, 0, (size_t)hw * sizeof(PT));
        }
        for (int64_t oy = 0; oy < q->oh; ++oy) {
            const int64_t y0 = oy * q->sh - q->ph;
            const int64_t ky_lo = y0 < 0 ? -y0 : 0, ky_hi = y0 + q->kh > q->h ? q->h - y0 : q->kh;
            for (int64_t ox = 0; ox < q->ow; ++ox) {
                const int64_t x0 = ox * q->sw - q->pw;
                const int64_t kx_lo = x0 < 0 ? -x0 : 0, kx_hi = x0 + q->kw > q->w ? q->w - x0 : q->kw;
                const int64_t o = pl * ohw + oy * q->ow + ox;
                const int64_t valid = (ky_hi > ky_lo ? ky_hi - ky_lo : 0) * (kx_hi > kx_lo ? kx_hi - kx_lo : 0);
                if (mode == FC_POOL_MAX) {
                    PT m = valid < q->kh * q->kw ? (PT)-INFINITY : xp[(y0 + ky_lo) * q->w + x0 + kx_lo];
                    for (int64_t ky = ky_lo; ky < ky_hi; ++ky) {
                        const PT* r = xp + (y0 + ky) * q->w + x0;
                        for (int64_t kx = kx_lo; kx < kx_hi; ++kx) {
                            const PT v = r[kx];
                            m = (v > m || v != v) && m == m ? v : m;
                        }
                    }
                    out[o] = m;
                } else {
                    const PT t = y[o];
                    if (relu && !(t > 0)) {
                        continue; /* every tap equal to t fails x > 0 */
                    }
                    int64_t count = 0;
                    if (t == (PT)-INFINITY) {
                        count = q->kh * q->kw - valid;  /* padding taps read -inf */
                    }
                    for (int64_t ky = ky_lo; ky < ky_hi; ++ky) {
                        const PT* r = xp + (y0 + ky) * q->w + x0;
                        for (int64_t kx = kx_lo; kx < kx_hi; ++kx) {
                            if (r[kx] == t) {
                                if (mode != FC_POOL_BACKWARD) {
                                    ++count;
                                } else {
                                    out[pl * hw + (y0 + ky) * q->w + x0 + kx] += share[o];
                                }
                            }
                        }
                    }
                    if (mode == FC_POOL_TIES) {
                        out[o] = (PT)count;
                    } else if (grad && count > 0) {
                        /* The same division as the unfused graph's g / count. */
                        const PT sh = share[o] / (PT)count;
                        for (int64_t ky = ky_lo; ky < ky_hi; ++ky) {
                            const PT* r = xp + (y0 + ky) * q->w + x0;
                            PT* d = out + pl * hw + (y0 + ky) * q->w + x0;
                            for (int64_t kx = kx_lo; kx < kx_hi; ++kx) {
                                if (r[kx] == t) {
                                    d[kx] += sh;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
