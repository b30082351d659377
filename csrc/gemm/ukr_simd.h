/* The body of the SIMD micro-kernels, written once for every vector instruction set and dtype.
 *
 * No include guard: a ukr_<isa>.c file includes it once per kernel after defining
 *   UKR_NAME    the kernel's name (fc_sgemm_ukr_avx2_6x16 ...)
 *   UKR_T       element type; UKR_V vector type holding UKR_W elements
 *   UKR_MR      rows of the register tile (1..16); UKR_NV vectors per row (1..4), NR = NV * W
 *   UKR_ZERO(), UKR_SET1(x), UKR_LOAD(p), UKR_STORE(p, v) (unaligned), UKR_BCAST(p) (broadcast *p),
 *   UKR_FMA(a, b, c) = a * b + c, UKR_MUL(a, b)
 *   UKR_MASK_T, UKR_MASK(n) (the first n lanes, 0 <= n <= W), UKR_MASKLOAD(p, mask) (zeros in the
 *   other lanes, which are not read), UKR_MASKSTORE(p, mask, v) (the other lanes not written)
 * This file undefines them all at its end, so the next kernel starts clean.
 *
 * Register tile: acc[i][v] holds C[i][v*W : (v+1)*W]. Each step p of the shared dimension loads
 * NV vectors of the B panel's row p and broadcasts MR values of the A panel's column p: MR * NV
 * FMAs on MR + NV loads (6x16 float on AVX2: 12 FMAs, 8 loads, 15 of the 16 ymm registers).
 *
 * Edge tiles: the row count m is dispatched to a copy of the body compiled for exactly that many
 * rows, so a 2-row edge costs a third of a 6-row tile, not all of it; columns past n are computed
 * from the zero padding of B and never stored (masked stores). */

#define UKR_CAT_(a, b) a##b
#define UKR_CAT(a, b) UKR_CAT_(a, b)
#define UKR_NR (UKR_NV * UKR_W)

#if defined(__clang__)
#define UKR_UNROLL_FULL _Pragma("unroll")
#define UKR_UNROLL_4 _Pragma("unroll 4")
#else
#define UKR_UNROLL_FULL _Pragma("GCC unroll 16")
#define UKR_UNROLL_4 _Pragma("GCC unroll 4")
#endif

/* The kernel for exactly `rows` rows (a constant at every call site, so the loops over rows and
 * vectors unroll and acc lives in registers). */
static inline __attribute__((always_inline)) void UKR_CAT(UKR_NAME, _rows)(
    const int rows, int64_t n, int64_t k, const UKR_T* alpha_p, const UKR_T* restrict a,
    const UKR_T* restrict b, const UKR_T* beta_p, UKR_T* restrict c, int64_t ldc)
{
    UKR_V acc[UKR_MR][UKR_NV];
    UKR_UNROLL_FULL
    for (int i = 0; i < rows; ++i) {
        UKR_UNROLL_FULL
        for (int v = 0; v < UKR_NV; ++v) {
            acc[i][v] = UKR_ZERO();
        }
    }
    /* C is read (beta != 0) or written only after the loop: start bringing its lines in now. */
    UKR_UNROLL_FULL
    for (int i = 0; i < rows; ++i) {
        __builtin_prefetch(c + i * ldc, 1, 3);
        __builtin_prefetch(c + i * ldc + UKR_NR - 1, 1, 3);
    }

    UKR_UNROLL_4
    for (int64_t p = 0; p < k; ++p) {
        UKR_V bv[UKR_NV];
        UKR_UNROLL_FULL
        for (int v = 0; v < UKR_NV; ++v) {
            bv[v] = UKR_LOAD(b + v * UKR_W);
        }
        UKR_UNROLL_FULL
        for (int i = 0; i < rows; ++i) {
            const UKR_V ai = UKR_BCAST(a + i);
            UKR_UNROLL_FULL
            for (int v = 0; v < UKR_NV; ++v) {
                acc[i][v] = UKR_FMA(ai, bv[v], acc[i][v]);
            }
        }
        a += UKR_MR;
        b += UKR_NR;
    }

    const UKR_T beta = *beta_p;
    const UKR_V va = UKR_SET1(*alpha_p);
    const UKR_V vb = UKR_SET1(beta);
    if (n == UKR_NR) {
        UKR_UNROLL_FULL
        for (int i = 0; i < rows; ++i) {
            UKR_T* ci = c + i * ldc;
            UKR_UNROLL_FULL
            for (int v = 0; v < UKR_NV; ++v) {
                const UKR_V ab = UKR_MUL(va, acc[i][v]);
                UKR_T* cv = ci + v * UKR_W;
                UKR_STORE(cv, beta == 0 ? ab : UKR_FMA(vb, UKR_LOAD(cv), ab));
            }
        }
        return;
    }
    UKR_MASK_T mask[UKR_NV];
    UKR_UNROLL_FULL
    for (int v = 0; v < UKR_NV; ++v) {
        const int64_t left = n - v * UKR_W;
        mask[v] = UKR_MASK(left <= 0 ? 0 : (left >= UKR_W ? UKR_W : (int)left));
    }
    UKR_UNROLL_FULL
    for (int i = 0; i < rows; ++i) {
        UKR_T* ci = c + i * ldc;
        UKR_UNROLL_FULL
        for (int v = 0; v < UKR_NV; ++v) {
            const UKR_V ab = UKR_MUL(va, acc[i][v]);
            UKR_MASKSTORE(ci + v * UKR_W, mask[v],
                          beta == 0 ? ab : UKR_FMA(vb, UKR_MASKLOAD(ci + v * UKR_W, mask[v]), ab));
        }
    }
}

#define UKR_CASE(R)                                                                                \
    case R:                                                                                        \
        UKR_CAT(UKR_NAME, _rows)(R, n, k, alpha, a, b, beta, c, ldc);                              \
        return;

static void UKR_NAME(int64_t m, int64_t n, int64_t k, const UKR_T* alpha, const UKR_T* restrict a,
                     const UKR_T* restrict b, const UKR_T* beta, UKR_T* restrict c, int64_t ldc,
                     const fc_gemm_aux* aux)
{
    (void)aux;
    switch (m) {
        UKR_CASE(1)
#if UKR_MR >= 2
        UKR_CASE(2)
#endif
#if UKR_MR >= 3
        UKR_CASE(3)
#endif
#if UKR_MR >= 4
        UKR_CASE(4)
#endif
#if UKR_MR >= 5
        UKR_CASE(5)
#endif
#if UKR_MR >= 6
        UKR_CASE(6)
#endif
#if UKR_MR >= 7
        UKR_CASE(7)
#endif
#if UKR_MR >= 8
        UKR_CASE(8)
#endif
#if UKR_MR >= 9
        UKR_CASE(9)
#endif
#if UKR_MR >= 10
        UKR_CASE(10)
#endif
#if UKR_MR >= 11
        UKR_CASE(11)
#endif
#if UKR_MR >= 12
        UKR_CASE(12)
#endif
#if UKR_MR >= 13
        UKR_CASE(13)
#endif
#if UKR_MR >= 14
        UKR_CASE(14)
#endif
#if UKR_MR >= 15
        UKR_CASE(15)
#endif
#if UKR_MR >= 16
        UKR_CASE(16)
#endif
    default:
        return; /* m outside 1..MR breaks the contract; the loops never pass it */
    }
}

#undef UKR_CASE
#undef UKR_UNROLL_FULL
#undef UKR_UNROLL_4
#undef UKR_NR
#undef UKR_CAT
#undef UKR_CAT_
#undef UKR_NAME
#undef UKR_T
#undef UKR_V
#undef UKR_W
#undef UKR_MR
#undef UKR_NV
#undef UKR_ZERO
#undef UKR_SET1
#undef UKR_LOAD
#undef UKR_STORE
#undef UKR_BCAST
#undef UKR_FMA
#undef UKR_MUL
#undef UKR_MASK_T
#undef UKR_MASK
#undef UKR_MASKLOAD
#undef UKR_MASKSTORE
