/* Philox uniform streams; the generator and the bit layout are in flexcore/philox.h. */
#include <stddef.h>

#include "flexcore/flexcore.h"
#include "flexcore/philox.h"

static int check_stream(int64_t offset, const void* out, int64_t n)
{
    /* offset + n <= INT64_MAX keeps every global index j = offset + i representable. */
    if (offset < 0 || n < 0 || n > INT64_MAX - offset) {
        return FC_ERR_SIZE;
    }
    if (out == NULL && n != 0) {
        return FC_ERR_NULL;
    }
    return FC_OK;
}

int fc_philox_uniform_f32(uint64_t seed, uint64_t salt, int64_t offset, float* out, int64_t n)
{
    const int status = check_stream(offset, out, n);
    if (status != FC_OK) {
        return status;
    }
    for (int64_t i = 0; i < n; ++i) {
        uint32_t w[4];
        fc_philox_block(seed, salt, (uint64_t)(offset + i), w);
        out[i] = fc_philox_u01_f32(w[0]);
    }
    return FC_OK;
}

int fc_philox_uniform_f64(uint64_t seed, uint64_t salt, int64_t offset, double* out, int64_t n)
{
    const int status = check_stream(offset, out, n);
    if (status != FC_OK) {
        return status;
    }
    for (int64_t i = 0; i < n; ++i) {
        uint32_t w[4];
        fc_philox_block(seed, salt, (uint64_t)(offset + i), w);
        out[i] = fc_philox_u01_f64(w[0], w[1]);
    }
    return FC_OK;
}
