// random_uniform (the executor's PHILOX instruction) with flexcore/philox.h, the generator the C
// kernels and the numpy reference use: element j of stream (seed, salt) is the same number on
// every backend, bit for bit.
//   fc_cu_philox_{f32,f64}(seed (device int64), salt, n, y, err, tag); a negative seed sets *err.
#include "common.cuh"
#include "flexcore/philox.h"

extern "C" __global__ void fc_cu_philox_f32(const int64_t* seed, uint64_t salt, int64_t n, float* y, int* err, int tag)
{
    const int64_t s = *seed;
    if (s < 0) {
        if (fc_cu_index() == 0) {
            fc_cu_fail(err, tag);
        }
        return;
    }
    for (int64_t j = fc_cu_index(); j < n; j += fc_cu_stride()) {
        uint32_t w[4];
        fc_philox_block((uint64_t)s, salt, (uint64_t)j, w);
        y[j] = fc_philox_u01_f32(w[0]);
    }
}

extern "C" __global__ void fc_cu_philox_f64(const int64_t* seed, uint64_t salt, int64_t n, double* y, int* err,
                                            int tag)
{
    const int64_t s = *seed;
    if (s < 0) {
        if (fc_cu_index() == 0) {
            fc_cu_fail(err, tag);
        }
        return;
    }
    for (int64_t j = fc_cu_index(); j < n; j += fc_cu_stride()) {
        uint32_t w[4];
        fc_philox_block((uint64_t)s, salt, (uint64_t)j, w);
        y[j] = fc_philox_u01_f64(w[0], w[1]);
    }
}
