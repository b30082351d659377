/* Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), the
 * counter-based generator behind every random number in flexcore (dropout masks, init).
 *
 * Shared by the C kernels, the CUDA kernels and, bit for bit, flexcore/random.py (the numpy
 * reference). Changing any bit here changes every seeded result: the known-answer tests in
 * tests/c/test_embed.c and tests/native/test_philox.py pin it to Random123's kat_vectors.
 *
 * flexcore's stream: element j (a global 64-bit index) of stream (seed, salt) is the block
 *   philox4x32_10(counter = (j_lo, j_hi, salt_lo, salt_hi), key = (seed_lo, seed_hi))
 * of which float32 uses word 0 and float64 words 0 and 1 (see the fc_philox_u01_* below). Any
 * element can be computed alone, so every thread, tile or device draws the same numbers. */
#ifndef FLEXCORE_PHILOX_H
#define FLEXCORE_PHILOX_H

#include <stdint.h>

#include "flexcore/host_device.h"

#define FC_PHILOX_M0 0xD2511F53u /* round multipliers */
#define FC_PHILOX_M1 0xCD9E8D57u
#define FC_PHILOX_W0 0x9E3779B9u /* Weyl key increments: golden ratio, sqrt(3) - 1 */
#define FC_PHILOX_W1 0xBB67AE85u
#define FC_PHILOX_ROUNDS 10

/* One Philox4x32 block: out = philox4x32_10(ctr, key). */
static inline FC_HOST_DEVICE void fc_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < FC_PHILOX_ROUNDS; ++round) {
        if (round > 0) { /* the key is bumped between rounds, so the first round uses it as given */
            k0 += FC_PHILOX_W0;
            k1 += FC_PHILOX_W1;
        }
        const uint64_t p0 = (uint64_t)FC_PHILOX_M0 * c0;
        const uint64_t p1 = (uint64_t)FC_PHILOX_M1 * c2;
        const uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        const uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* The block for global element index j of stream (seed, salt). */
static inline FC_HOST_DEVICE void fc_philox_block(uint64_t seed, uint64_t salt, uint64_t j, uint32_t out[4])
{
    const uint32_t ctr[4] = {(uint32_t)j, (uint32_t)(j >> 32), (uint32_t)salt, (uint32_t)(salt >> 32)};
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    fc_philox4x32_10(ctr, key, out);
}

/* float32 in [0, 1): the top 24 bits of w0, times 2^-24. Exact (24-bit integer, power-of-two
 * scale), so every implementation rounds the same way. */
static inline FC_HOST_DEVICE float fc_philox_u01_f32(uint32_t w0) { return (float)(w0 >> 8) * 0x1p-24f; }

/* float64 in [0, 1): the top 53 bits of the 64-bit word w0:w1 (w0 high), times 2^-53. w0 being
 * the high word, the float32 draw of an element is the float64 draw truncated to 24 bits. */
static inline FC_HOST_DEVICE double fc_philox_u01_f64(uint32_t w0, uint32_t w1)
{
    const uint64_t bits = ((uint64_t)w0 << 32) | w1;
    return (double)(bits >> 11) * 0x1p-53;
}

#endif /* FLEXCORE_PHILOX_H */
