/* AVX2 + FMA row kernels of the fused LSTM and GRU cells (rnn_rows.h): 8 units at a time, the tail through
 * masked loads and stores (nothing read or written past h). The per-element combination is
 * rnn_math.h's, written out in vectors; FMA contraction makes it round a little differently
 * from the scalar path (tests compare both with the reference at float32 tolerance). */
#include "rnn_rows.h"

#if (defined(__x86_64__) || defined(__amd64__)) && (defined(__GNUC__) || defined(__clang__))

#include "vmath_avx2_inl.h"

static inline __m256 ld(const float* p, int full, __m256i mask)
{
    return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask);
}

static inline void st(float* p, __m256 v, int full, __m256i mask)
{
    if (full) {
        _mm256_storeu_ps(p, v);
    } else {
        _mm256_maskstore_ps(p, mask, v);
    }
}

static inline __m256 pre(int k, int64_t j, const float* const* pa, const float* const* pb, const float* const* pc,
                         int full, __m256i m)
{
    __m256 p = ld(pa[k] + j, full, m);
    if (pb[k] != NULL) {
        p = _mm256_add_ps(p, ld(pb[k] + j, full, m));
    }
    if (pc[k] != NULL) {
        p = _mm256_add_ps(p, ld(pc[k] + j, full, m));
    }
    return p;
}

static inline void gate8(int k, int64_t j, const float* const* pa, const float* const* pb, const float* const* pc,
                         float* const* pl, int full, __m256i m)
{
    const __m256 p = pre(k, j, pa, pb, pc, full, m);
    st(pl[k] + j, k == 2 ? v_tanh(p) : v_sigmoid(p), full, m);
}

static inline void state8(int64_t j, const float* cp, float* const* pl, int full, __m256i m)
{
    const __m256 c_prev = cp != NULL ? ld(cp + j, full, m) : _mm256_setzero_ps();
    const __m256 c = _mm256_add_ps(_mm256_mul_ps(ld(pl[1] + j, full, m), c_prev),
                                   _mm256_mul_ps(ld(pl[0] + j, full, m), ld(pl[2] + j, full, m)));
    const __m256 tc = v_tanh(c);
    st(pl[4] + j, c, full, m);
    st(pl[5] + j, tc, full, m);
    st(pl[6] + j, _mm256_mul_ps(ld(pl[3] + j, full, m), tc), full, m);
}

static __m256i tail_mask(int64_t rem)
{
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rem), lanes);
}

/* A pass per gate, then one for c, tanh(c) and h, over a row that stays in L1: measured faster
 * than one pass computing all five functions per vector (long dependency chains, little overlap). */
static void lstm_fwd_row(int64_t h, const float* a, const float* b, const float* bias, const int64_t* blk,
                         const float* cp, float* const* pl)
{
    const float *pa[4], *pb[4], *pc[4];
    for (int k = 0; k < 4; ++k) {
        pa[k] = a + blk[k] * h;
        pb[k] = b != NULL ? b + blk[k] * h : NULL;
        pc[k] = bias != NULL ? bias + blk[k] * h : NULL;
    }
    const __m256i all = _mm256_set1_epi32(-1);
    const int64_t full = h - h % 8;
    const __m256i tail = tail_mask(h - full);
    for (int k = 0; k < 4; ++k) {
        for (int64_t j = 0; j < full; j += 8) {
            gate8(k, j, pa, pb, pc, pl, 1, all);
        }
        if (full < h) {
            gate8(k, full, pa, pb, pc, pl, 0, tail);
        }
    }
    for (int64_t j = 0; j < full; j += 8) {
        state8(j, cp, pl, 1, all);
    }
    if (full < h) {
        state8(full, cp, pl, 0, tail);
    }
}

static inline void bwd8(int64_t j, const float* const* fw, const float* cp, const float* dh, const float* dc,
                        float* const* d, float* dcp, int full, __m256i m)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 i = ld(fw[0] + j, full, m), f = ld(fw[1] + j, full, m), g = ld(fw[2] + j, full, m);
    const __m256 o = ld(fw[3] + j, full, m), tc = ld(fw[4] + j, full, m);
    const __m256 c_prev = cp != NULL ? ld(cp + j, full, m) : _mm256_setzero_ps();
    const __m256 gh = ld(dh + j, full, m);
    const __m256 dcn = dc != NULL ? ld(dc + j, full, m) : _mm256_setzero_ps();
    /* rnn_math.h's fc_lstm_grad. */
    const __m256 dct = _mm256_add_ps(dcn, _mm256_mul_ps(_mm256_mul_ps(gh, o), _mm256_fnmadd_ps(tc, tc, one)));
    st(d[2] + j, _mm256_mul_ps(_mm256_mul_ps(dct, i), _mm256_fnmadd_ps(g, g, one)), full, m);
    st(d[0] + j, _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dct, g), i), _mm256_sub_ps(one, i)), full, m);
    st(d[1] + j, _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dct, c_prev), f), _mm256_sub_ps(one, f)), full, m);
    st(d[3] + j, _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(gh, tc), o), _mm256_sub_ps(one, o)), full, m);
    if (dcp != NULL) {
        st(dcp + j, _mm256_mul_ps(dct, f), full, m);
    }
}

static void lstm_bwd_row(int64_t h, const float* const* fw, const float* cp, const float* dh, const float* dc,
                         float* const* d, float* dcp)
{
    const __m256i all = _mm256_set1_epi32(-1);
    int64_t j = 0;
    for (; j + 8 <= h; j += 8) {
        bwd8(j, fw, cp, dh, dc, d, dcp, 1, all);
    }
    if (j < h) {
        bwd8(j, fw, cp, dh, dc, d, dcp, 0, tail_mask(h - j));
    }
}

static inline __m256 ld_or0(const float* p, int64_t j, int full, __m256i m)
{
    return p != NULL ? ld(p + j, full, m) : _mm256_setzero_ps();
}

static inline void gru_gates8(int64_t j, const float* const* px, const float* const* ph, const float* bias,
                              int64_t h, float* const* pl, int full, __m256i m)
{
    for (int k = 0; k < 2; ++k) {
        __m256 p = ld(px[k] + j, full, m);
        if (ph[k] != NULL) {
            p = _mm256_add_ps(p, ld(ph[k] + j, full, m));
        }
        if (bias != NULL) {
            p = _mm256_add_ps(p, ld(bias + k * h + j, full, m));
        }
        st(pl[k] + j, v_sigmoid(p), full, m);
    }
    __m256 hn = ld_or0(ph[2], j, full, m);
    if (bias != NULL) {
        hn = _mm256_add_ps(hn, ld(bias + 3 * h + j, full, m));
    }
    st(pl[3] + j, hn, full, m);
}

static inline void gru_state8(int64_t j, const float* const* px, const float* bias, int64_t h, const float* hp,
                              float* const* pl, int full, __m256i m)
{
    __m256 p = _mm256_add_ps(ld(px[2] + j, full, m), _mm256_mul_ps(ld(pl[0] + j, full, m), ld(pl[3] + j, full, m)));
    if (bias != NULL) {
        p = _mm256_add_ps(p, ld(bias + 2 * h + j, full, m));
    }
    const __m256 nn = v_tanh(p);
    const __m256 z = ld(pl[1] + j, full, m);
    st(pl[2] + j, nn, full, m);
    st(pl[4] + j, _mm256_add_ps(nn, _mm256_mul_ps(z, _mm256_sub_ps(ld_or0(hp, j, full, m), nn))), full, m);
}

static void gru_fwd_row(int64_t h, const float* x, const float* hh, const float* bias, const int64_t* xb,
                        const int64_t* hb, const float* hp, float* const* pl)
{
    const float *px[3], *ph[3];
    for (int k = 0; k < 3; ++k) {
        px[k] = x + xb[k] * h;
        ph[k] = hh != NULL ? hh + hb[k] * h : NULL;
    }
    const __m256i all = _mm256_set1_epi32(-1);
    const int64_t full = h - h % 8;
    const __m256i tail = tail_mask(h - full);
    for (int64_t j = 0; j < full; j += 8) {
        gru_gates8(j, px, ph, bias, h, pl, 1, all);
    }
    if (full < h) {
        gru_gates8(full, px, ph, bias, h, pl, 0, tail);
    }
    for (int64_t j = 0; j < full; j += 8) {
        gru_state8(j, px, bias, h, hp, pl, 1, all);
    }
    if (full < h) {
        gru_state8(full, px, bias, h, hp, pl, 0, tail);
    }
}

static inline void gru_bwd8(int64_t j, const float* const* fw, const float* hp, const float* dh, float* const* d,
                            float* dp, int full, __m256i m)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 r = ld(fw[0] + j, full, m), z = ld(fw[1] + j, full, m), nn = ld(fw[2] + j, full, m);
    const __m256 hn = ld(fw[3] + j, full, m), g = ld(dh + j, full, m), h_prev = ld_or0(hp, j, full, m);
    /* rnn_math.h's fc_gru_grad. */
    const __m256 dd = _mm256_mul_ps(g, z);
    const __m256 dnn = _mm256_sub_ps(g, dd);
    const __m256 dz = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(g, _mm256_sub_ps(h_prev, nn)), z), _mm256_sub_ps(one, z));
    const __m256 dxn = _mm256_mul_ps(dnn, _mm256_fnmadd_ps(nn, nn, one));
    const __m256 dr = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dxn, hn), r), _mm256_sub_ps(one, r));
    st(d[0] + j, dr, full, m);
    st(d[1] + j, dz, full, m);
    st(d[2] + j, dxn, full, m);
    st(d[3] + j, dr, full, m);
    st(d[4] + j, dz, full, m);
    st(d[5] + j, _mm256_mul_ps(dxn, r), full, m);
    if (dp != NULL) {
        st(dp + j, dd, full, m);
    }
}

static void gru_bwd_row(int64_t h, const float* const* fw, const float* hp, const float* dh, float* const* d,
                        float* dp)
{
    const __m256i all = _mm256_set1_epi32(-1);
    int64_t j = 0;
    for (; j + 8 <= h; j += 8) {
        gru_bwd8(j, fw, hp, dh, d, dp, 1, all);
    }
    if (j < h) {
        gru_bwd8(j, fw, hp, dh, d, dp, 0, tail_mask(h - j));
    }
}

static const fc_rnn_rows avx2_rows = {lstm_fwd_row, lstm_bwd_row, gru_fwd_row, gru_bwd_row};
const fc_rnn_rows* const fc_rnn_rows_avx2 = &avx2_rows;

#else

const fc_rnn_rows* const fc_rnn_rows_avx2 = NULL;

#endif
