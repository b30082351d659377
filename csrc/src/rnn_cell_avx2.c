/* AVX2 + FMA row kernels of the fused LSTM cell (rnn_rows.h): 8 units at a time, the tail through
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

static const fc_lstm_rows avx2_rows = {lstm_fwd_row, lstm_bwd_row};
const fc_lstm_rows* const fc_lstm_rows_avx2 = &avx2_rows;

#else

const fc_lstm_rows* const fc_lstm_rows_avx2 = NULL;

#endif
