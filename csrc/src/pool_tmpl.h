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

static void PFN(pool_planes)(const pool_plan* q, int mode, int64_t first, int64_t last, const PT* x, const PT* y,
                             const PT* share, PT* out)
{
    const int64_t hw = q->h * q->w, ohw = q->oh * q->ow;
    for (int64_t pl = first; pl < last; ++pl) {
        const PT* xp = x + pl * hw;
        if (mode == FC_POOL_SPREAD) {
            PFN(spread_plane)(q, x + pl * ohw, out + pl * hw);
            continue;
        }
        if (mode == FC_POOL_SUM) {
            PFN(sum_plane)(q, xp, out + pl * ohw);
            continue;
        }
        if (mode == FC_POOL_BACKWARD || mode == FC_POOL_GRAD) {
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
                    } else if (mode == FC_POOL_GRAD && count > 0) {
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
