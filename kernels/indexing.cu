// Indexing kernels in the executor's GATHER, SCATTER_ADD and ONE_HOT encodings. An index outside
// [0, limit) writes `tag` into *err (the host raises FC_ERR_INDEX's error) and that element is left
// as zero.
//   fc_cu_gather_{u8,u32,u64}(n_idx, idx, rows, row_len, table, out, err, tag)
//       out[i, :] = table[idx[i], :]
//   fc_cu_scatter_add_{f32,f64,i64}(n_idx, idx, rows, row_len, src, out, err, tag)
//       out (zeroed by the host first)[idx[i], :] += src[i, :], with atomics: float sums are not in
//       a fixed order on a GPU (the emulator runs them in order)
//   fc_cu_one_hot_{f32,f64,i64,bool}(n, labels, classes, out, err, tag)
#include "common.cuh"

template <typename T>
static __device__ void gather_impl(int64_t n_idx, const int64_t* idx, int64_t rows, int64_t len, const T* table,
                                   T* out, int* err, int tag)
{
    const int64_t total = n_idx * len;
    for (int64_t e = fc_cu_index(); e < total; e += fc_cu_stride()) {
        const int64_t i = e / len, j = e % len, r = idx[i];
        if (r < 0 || r >= rows) {
            fc_cu_fail(err, tag);
            out[e] = (T)0;
        } else {
            out[e] = table[r * len + j];
        }
    }
}

#define DEFINE_GATHER(T, SFX)                                                                      \
    extern "C" __global__ void fc_cu_gather_##SFX(int64_t n_idx, const int64_t* idx, int64_t rows, int64_t len, \
                                                  const T* table, T* out, int* err, int tag)       \
    {                                                                                              \
        gather_impl<T>(n_idx, idx, rows, len, table, out, err, tag);                               \
    }
DEFINE_GATHER(uint8_t, u8)
DEFINE_GATHER(uint32_t, u32)
DEFINE_GATHER(uint64_t, u64)

template <typename T, typename A>
static __device__ void scatter_impl(int64_t n_idx, const int64_t* idx, int64_t rows, int64_t len, const T* src,
                                    T* out, int* err, int tag)
{
    const int64_t total = n_idx * len;
    for (int64_t e = fc_cu_index(); e < total; e += fc_cu_stride()) {
        const int64_t i = e / len, j = e % len, r = idx[i];
        if (r < 0 || r >= rows) {
            fc_cu_fail(err, tag);
        } else {
            atomicAdd((A*)(out + r * len + j), (A)src[e]);
        }
    }
}

// int64 adds through unsigned long long: the same bits, wrapping as numpy does.
extern "C" __global__ void fc_cu_scatter_add_f32(int64_t n_idx, const int64_t* idx, int64_t rows, int64_t len,
                                                 const float* src, float* out, int* err, int tag)
{
    scatter_impl<float, float>(n_idx, idx, rows, len, src, out, err, tag);
}

extern "C" __global__ void fc_cu_scatter_add_f64(int64_t n_idx, const int64_t* idx, int64_t rows, int64_t len,
                                                 const double* src, double* out, int* err, int tag)
{
    scatter_impl<double, double>(n_idx, idx, rows, len, src, out, err, tag);
}

extern "C" __global__ void fc_cu_scatter_add_i64(int64_t n_idx, const int64_t* idx, int64_t rows, int64_t len,
                                                 const int64_t* src, int64_t* out, int* err, int tag)
{
    scatter_impl<int64_t, unsigned long long>(n_idx, idx, rows, len, src, out, err, tag);
}

template <typename T>
static __device__ void one_hot_impl(int64_t n, const int64_t* labels, int64_t classes, T* out, int* err, int tag)
{
    const int64_t total = n * classes;
    for (int64_t e = fc_cu_index(); e < total; e += fc_cu_stride()) {
        const int64_t i = e / classes, j = e % classes, l = labels[i];
        if (l < 0 || l >= classes) {
            fc_cu_fail(err, tag);
        }
        out[e] = l == j ? (T)1 : (T)0;
    }
}

#define DEFINE_ONE_HOT(T, SFX)                                                                     \
    extern "C" __global__ void fc_cu_one_hot_##SFX(int64_t n, const int64_t* labels, int64_t classes, T* out, \
                                                   int* err, int tag)                              \
    {                                                                                              \
        one_hot_impl<T>(n, labels, classes, out, err, tag);                                        \
    }
DEFINE_ONE_HOT(float, f32)
DEFINE_ONE_HOT(double, f64)
DEFINE_ONE_HOT(int64_t, i64)
DEFINE_ONE_HOT(uint8_t, bool)
