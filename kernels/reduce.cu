// Reductions and softmax, in the encodings of the executor's REDUCE and SOFTMAX instructions.
//
//   fc_cu_reduce_<op>_<dt>(outer, red, inner, x, y)    y[o, j] = op_r x[o, r, j]
//     op sum: floats accumulate in float64, int64 wraps, bool counts into int64 (as fc_reduce);
//     op max: numpy's maximum (NaN wins), bool is 'or'. red >= 1 for max (the host checks).
//     inner == 1: one block per output row, a power-of-two block, shared-memory tree;
//     inner > 1: one thread per output element, walking red in order.
//   fc_cu_softmax_<dt>(log, rows, cols, x, y)          (log-)softmax over rows, one block per row:
//     max (NaN wins), e = exp(x - max), the row sum in float64, then e / sum or (x - max) - log(sum),
//     as fc_softmax_rows.
#include "common.cuh"

struct SumOp {
    static constexpr bool is_max = false;
    template <typename A>
    static __device__ A combine(A a, A b)
    {
        return a + b;
    }
};

template <typename T>
static __device__ __forceinline__ T max_of(T a, T b)
{
    return a > b ? a : b;
}
static __device__ __forceinline__ float max_of(float a, float b) { return fc_ew_maximum_f32(a, b); }
static __device__ __forceinline__ double max_of(double a, double b) { return fc_ew_maximum_f64(a, b); }

struct MaxOp {
    static constexpr bool is_max = true;
    template <typename A>
    static __device__ A combine(A a, A b)
    {
        return max_of(a, b);
    }
};

// Sum: A is double (floats) or uint64 (int64 wraps, bool counts). Max: A is T (bool as 0/1).
template <typename Op, typename T, typename A, typename Out>
static __device__ void reduce_rows(int64_t outer, int64_t red, const T* x, Out* y)
{
    __shared__ A part[FC_CU_MAX_BLOCK];
    const unsigned tid = threadIdx.x, nt = blockDim.x;
    for (int64_t o = blockIdx.x; o < outer; o += gridDim.x) {
        const T* row = x + o * red;
        // max starts from an element (red >= 1), so NaN and -inf behave as in numpy
        A acc = Op::is_max ? (A)row[0] : (A)0;
        for (int64_t r = tid; r < red; r += nt) {
            acc = Op::combine(acc, (A)row[r]);
        }
        part[tid] = acc;
        __syncthreads();
        for (unsigned s = nt / 2; s > 0; s /= 2) {
            if (tid < s) {
                part[tid] = Op::combine(part[tid], part[tid + s]);
            }
            __syncthreads();
        }
        if (tid == 0) {
            y[o] = (Out)part[0];
        }
        __syncthreads();  // part is reused by the next row
    }
}

template <typename Op, typename T, typename A, typename Out>
static __device__ void reduce_cols(int64_t outer, int64_t red, int64_t inner, const T* x, Out* y)
{
    const int64_t n = outer * inner;
    for (int64_t i = fc_cu_index(); i < n; i += fc_cu_stride()) {
        const int64_t o = i / inner, j = i % inner;
        const T* base = x + o * red * inner + j;
        A acc = Op::is_max ? (A)base[0] : (A)0;
        for (int64_t r = Op::is_max ? 1 : 0; r < red; ++r) {
            acc = Op::combine(acc, (A)base[r * inner]);
        }
        y[i] = (Out)acc;
    }
}

#define DEFINE_REDUCE(NAME, OP, T, A, OUT)                                                         \
    extern "C" __global__ void fc_cu_reduce_rows_##NAME(int64_t outer, int64_t red, const T* x, OUT* y) \
    {                                                                                              \
        reduce_rows<OP, T, A, OUT>(outer, red, x, y);                                              \
    }                                                                                              \
    extern "C" __global__ void fc_cu_reduce_cols_##NAME(int64_t outer, int64_t red, int64_t inner, const T* x, \
                                                        OUT* y)                                    \
    {                                                                                              \
        reduce_cols<OP, T, A, OUT>(outer, red, inner, x, y);                                       \
    }

DEFINE_REDUCE(sum_f32, SumOp, float, double, float)
DEFINE_REDUCE(sum_f64, SumOp, double, double, double)
DEFINE_REDUCE(sum_i64, SumOp, int64_t, uint64_t, int64_t)
DEFINE_REDUCE(max_f32, MaxOp, float, float, float)
DEFINE_REDUCE(max_f64, MaxOp, double, double, double)
DEFINE_REDUCE(max_i64, MaxOp, int64_t, int64_t, int64_t)

// bool: normalise each byte to 0/1 first (sum counts, max is 'or').
template <typename Op, typename A, typename Out>
static __device__ void reduce_bool(int64_t outer, int64_t red, int64_t inner, const uint8_t* x, Out* y)
{
    const int64_t n = outer * inner;
    for (int64_t i = fc_cu_index(); i < n; i += fc_cu_stride()) {
        const int64_t o = i / inner, j = i % inner;
        A acc = 0;
        for (int64_t r = 0; r < red; ++r) {
            acc = Op::combine(acc, (A)(x[(o * red + r) * inner + j] != 0));
        }
        y[i] = (Out)acc;
    }
}

extern "C" __global__ void fc_cu_reduce_sum_bool(int64_t outer, int64_t red, int64_t inner, const uint8_t* x,
                                                 int64_t* y)
{
    reduce_bool<SumOp, uint64_t, int64_t>(outer, red, inner, x, y);
}

extern "C" __global__ void fc_cu_reduce_max_bool(int64_t outer, int64_t red, int64_t inner, const uint8_t* x,
                                                 uint8_t* y)
{
    reduce_bool<MaxOp, uint8_t, uint8_t>(outer, red, inner, x, y);
}

// ---- softmax ----
static __device__ __forceinline__ float exp_of(float v) { return fc_ew_exp_f32(v); }
static __device__ __forceinline__ double exp_of(double v) { return fc_ew_exp_f64(v); }

template <typename T>
static __device__ void softmax_impl(int log_out, int64_t rows, int64_t cols, const T* x, T* y)
{
    __shared__ T pmax[FC_CU_MAX_BLOCK];
    __shared__ double psum[FC_CU_MAX_BLOCK];
    const unsigned tid = threadIdx.x, nt = blockDim.x;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        T m = xr[0];
        for (int64_t j = tid; j < cols; j += nt) {
            m = max_of(m, xr[j]);
        }
        pmax[tid] = m;
        __syncthreads();
        for (unsigned s = nt / 2; s > 0; s /= 2) {
            if (tid < s) {
                pmax[tid] = max_of(pmax[tid], pmax[tid + s]);
            }
            __syncthreads();
        }
        m = pmax[0];
        double acc = 0.0;
        for (int64_t j = tid; j < cols; j += nt) {
            const T e = exp_of(xr[j] - m);
            acc += (double)e;
            if (!log_out) {
                yr[j] = e;  // each thread rewrites only its own elements: y may alias x
            }
        }
        psum[tid] = acc;
        __syncthreads();
        for (unsigned s = nt / 2; s > 0; s /= 2) {
            if (tid < s) {
                psum[tid] += psum[tid + s];
            }
            __syncthreads();
        }
        const double total = psum[0];
        if (log_out) {
            const T ls = (T)log(total);
            for (int64_t j = tid; j < cols; j += nt) {
                yr[j] = (xr[j] - m) - ls;
            }
        } else {
            const T ts = (T)total;
            for (int64_t j = tid; j < cols; j += nt) {
                yr[j] = yr[j] / ts;
            }
        }
        __syncthreads();  // pmax/psum are reused by the next row
    }
}

extern "C" __global__ void fc_cu_softmax_f32(int log_out, int64_t rows, int64_t cols, const float* x, float* y)
{
    softmax_impl<float>(log_out, rows, cols, x, y);
}

extern "C" __global__ void fc_cu_softmax_f64(int log_out, int64_t rows, int64_t cols, const double* x, double* y)
{
    softmax_impl<double>(log_out, rows, cols, x, y);
}
