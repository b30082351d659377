// Elementwise CUDA kernels: unary, binary / compare / where over broadcast strided operands, casts,
// fills and strided copies, in the encodings of the executor's UNARY, BINARY, COMPARE, WHERE,
// CAST, FILL and COPY_STRIDED instructions (flexcore/executor.h). The math and the op-code tables
// are flexcore/ew_math.h's, the same the C kernels use.
//
//   fc_cu_unary_{f32,f64}(op, x, y, n), fc_cu_neg_i64(x, y, n)
//   fc_cu_binary_{f32,f64,i64,bool}(op, g, a, b, y, n)      g = {ndim, shape, strides_a, strides_b}
//   fc_cu_compare_{f32,f64,i64,bool}(op, g, a, b, y, n)     y is bool (uint8)
//   fc_cu_where_{f32,f64,i64,bool}(g, cond, a, b, y, n)     g = {ndim, shape, s_cond, s_a, s_b}
//   fc_cu_cast(src_dtype, dst_dtype, x, y, n)
//   fc_cu_fill_{f32,f64,i64,bool}(y, value, n)              value as the executor's double
//   fc_cu_copy_strided_{u8,u32,u64}(g, x, y, n)             g = {ndim, shape, src strides, dst strides}
// y may alias an input exactly (each element is read before it is written by the same thread).
#include "common.cuh"

#define UNARY_CASE(OP, FN)                                                                         \
    case OP:                                                                                       \
        return FN(x);
#define BINARY_CASE(OP, FN)                                                                        \
    case OP:                                                                                       \
        return FN(a, b);

// An unknown op writes NaN so a bug shows (the host validated op already).
static __device__ float unary_f32(int op, float x)
{
    switch (op) {
        FC_EW_UNARY_TABLE(UNARY_CASE, f32)
    default:
        return NAN;
    }
}

static __device__ double unary_f64(int op, double x)
{
    switch (op) {
        FC_EW_UNARY_TABLE(UNARY_CASE, f64)
    default:
        return NAN;
    }
}

static __device__ float binary_op(int op, float a, float b)
{
    switch (op) {
        FC_EW_BINARY_TABLE(BINARY_CASE, f32)
    default:
        return NAN;
    }
}

static __device__ double binary_op(int op, double a, double b)
{
    switch (op) {
        FC_EW_BINARY_TABLE(BINARY_CASE, f64)
    default:
        return NAN;
    }
}

static __device__ int64_t binary_op(int op, int64_t a, int64_t b)
{
    switch (op) {
    case FC_BINARY_ADD:
        return fc_ew_add_i64(a, b);
    case FC_BINARY_SUB:
        return fc_ew_sub_i64(a, b);
    case FC_BINARY_MUL:
        return fc_ew_mul_i64(a, b);
    case FC_BINARY_MAXIMUM:
        return fc_ew_maximum_i64(a, b);
    case FC_BINARY_MINIMUM:
        return fc_ew_minimum_i64(a, b);
    default:
        return 0;
    }
}

// numpy on bool: add and maximum are 'or', multiply and minimum are 'and'.
static __device__ uint8_t binary_op(int op, uint8_t a, uint8_t b)
{
    const bool x = a != 0, y = b != 0;
    return (op == FC_BINARY_ADD || op == FC_BINARY_MAXIMUM) ? (uint8_t)(x || y) : (uint8_t)(x && y);
}

template <typename T>
static __device__ __forceinline__ T as_compared(T v)
{
    return v;
}
template <>
__device__ __forceinline__ uint8_t as_compared<uint8_t>(uint8_t v)
{
    return (uint8_t)(v != 0);
}

template <typename T>
static __device__ uint8_t compare_op(int op, T a, T b)
{
    a = as_compared(a);
    b = as_compared(b);
    switch (op) {
    case FC_CMP_EQ:
        return a == b;
    case FC_CMP_NE:
        return a != b;
    case FC_CMP_LT:
        return a < b;
    case FC_CMP_LE:
        return a <= b;
    case FC_CMP_GT:
        return a > b;
    default:
        return a >= b;
    }
}

// Offsets of element i in two (or three) strided operands sharing one shape.
static __device__ __forceinline__ void offsets2(int64_t i, int nd, const int64_t* shape, const int64_t* s0,
                                                const int64_t* s1, int64_t* o0, int64_t* o1)
{
    int64_t a = 0, b = 0;
    for (int d = nd - 1; d >= 0; --d) {
        const int64_t n = shape[d], q = i % n;
        a += q * s0[d];
        b += q * s1[d];
        i /= n;
    }
    *o0 = a;
    *o1 = b;
}

template <typename T>
static __device__ void binary_impl(int op, const int64_t* g, const T* a, const T* b, T* y, int64_t n)
{
    const int nd = (int)g[0];
    const int64_t* shape = g + 1;
    for (int64_t i = fc_cu_index(); i < n; i += fc_cu_stride()) {
        int64_t oa, ob;
        offsets2(i, nd, shape, shape + nd, shape + 2 * nd, &oa, &ob);
        y[i] = binary_op(op, a[oa], b[ob]);
    }
}

template <typename T>
static __device__ void compare_impl(int op, const int64_t* g, const T* a, const T* b, uint8_t* y, int64_t n)
{
    const int nd = (int)g[0];
    const int64_t* shape = g + 1;
    for (int64_t i = fc_cu_index(); i < n; i += fc_cu_stride()) {
        int64_t oa, ob;
        offsets2(i, nd, shape, shape + nd, shape + 2 * nd, &oa, &ob);
        y[i] = compare_op(op, a[oa], b[ob]);
    }
}

template <typename T>
static __device__ void where_impl(const int64_t* g, const uint8_t* c, const T* a, const T* b, T* y, int64_t n)
{
    const int nd = (int)g[0];
    const int64_t* shape = g + 1;
    for (int64_t i = fc_cu_index(); i < n; i += fc_cu_stride()) {
        int64_t oa, ob;
        offsets2(i, nd, shape, shape + 2 * nd, shape + 3 * nd, &oa, &ob);
        const int64_t oc = fc_cu_offset(i, nd, shape, shape + nd);
        const T x = a[oa], z = b[ob];
        y[i] = c[oc] != 0 ? x : z;
    }
}

#define DEFINE_TYPED(T, SFX)                                                                       \
    extern "C" __global__ void fc_cu_binary_##SFX(int op, const int64_t* g, const T* a, const T* b, T* y, int64_t n) \
    {                                                                                              \
        binary_impl<T>(op, g, a, b, y, n);                                                         \
    }                                                                                              \
    extern "C" __global__ void fc_cu_compare_##SFX(int op, const int64_t* g, const T* a, const T* b, uint8_t* y, \
                                                   int64_t n)                                      \
    {                                                                                              \
        compare_impl<T>(op, g, a, b, y, n);                                                        \
    }                                                                                              \
    extern "C" __global__ void fc_cu_where_##SFX(const int64_t* g, const uint8_t* c, const T* a, const T* b, T* y, \
                                                 int64_t n)                                        \
    {                                                                                              \
        where_impl<T>(g, c, a, b, y, n);                                                           \
    }

DEFINE_TYPED(float, f32)
DEFINE_TYPED(double, f64)
DEFINE_TYPED(int64_t, i64)
DEFINE_TYPED(uint8_t, bool)

extern "C" __global__ void fc_cu_unary_f32(int op, const float* x, float* y, int64_t n)
{
    for (int64_t i = fc_cu_index(); i < n; i += fc_cu_stride()) {
        y[i] = unary_f32(op, x[i]);
    }
}

extern "C" __global__ void fc_cu_unary_f64(int op, const double* x, double* y, int64_t n)
{
    for (int64_t i = fc_cu_index(); i < n; i += fc_cu_stride()) {
        y[i] = unary_f64(op, x[i]);
    }
}

extern "C" __global__ void fc_cu_neg_i64(const int64_t* x, int64_t* y, int64_t n)
{
    for (int64_t i = fc_cu_index(); i < n; i += fc_cu_stride()) {
        y[i] = fc_ew_neg_i64(x[i]);
    }
}

// ---- casts: the conversions of fc_cast (csrc/src/ew_broadcast.c) ----
template <typename D>
struct Convert {
    template <typename S>
    static __device__ D from(S v)
    {
        return (D)v;
    }
    static __device__ D from(uint8_t v) { return v != 0 ? (D)1 : (D)0; }
};
template <>
struct Convert<int64_t> {
    static __device__ int64_t from(float v) { return fc_ew_f64_to_i64((double)v); }
    static __device__ int64_t from(double v) { return fc_ew_f64_to_i64(v); }
    static __device__ int64_t from(int64_t v) { return v; }
    static __device__ int64_t from(uint8_t v) { return v != 0; }
};
template <>
struct Convert<uint8_t> {
    template <typename S>
    static __device__ uint8_t from(S v)
    {
        return (uint8_t)(v != (S)0);
    }
};

template <typename S, typename D>
static __device__ void cast_impl(const void* vx, void* vy, int64_t n)
{
    const S* x = (const S*)vx;
    D* y = (D*)vy;
    for (int64_t i = fc_cu_index(); i < n; i += fc_cu_stride()) {
        y[i] = Convert<D>::from(x[i]);
    }
}

template <typename S>
static __device__ void cast_from(int dst, const void* x, void* y, int64_t n)
{
    switch (dst) {
    case FC_F32:
        cast_impl<S, float>(x, y, n);
        break;
    case FC_F64:
        cast_impl<S, double>(x, y, n);
        break;
    case FC_I64:
        cast_impl<S, int64_t>(x, y, n);
        break;
    default:
        cast_impl<S, uint8_t>(x, y, n);
        break;
    }
}

extern "C" __global__ void fc_cu_cast(int src, int dst, const void* x, void* y, int64_t n)
{
    switch (src) {
    case FC_F32:
        cast_from<float>(dst, x, y, n);
        break;
    case FC_F64:
        cast_from<double>(dst, x, y, n);
        break;
    case FC_I64:
        cast_from<int64_t>(dst, x, y, n);
        break;
    default:
        cast_from<uint8_t>(dst, x, y, n);
        break;
    }
}

// ---- fills (fc_fill's conversions of the double value) ----
extern "C" __global__ void fc_cu_fill_f32(float* y, double v, int64_t n)
{
    for (int64_t i = fc_cu_index(); i < n; i += fc_cu_stride()) {
        y[i] = (float)v;
    }
}

extern "C" __global__ void fc_cu_fill_f64(double* y, double v, int64_t n)
{
    for (int64_t i = fc_cu_index(); i < n; i += fc_cu_stride()) {
        y[i] = v;
    }
}

extern "C" __global__ void fc_cu_fill_i64(int64_t* y, double v, int64_t n)
{
    const int64_t w = fc_ew_f64_to_i64(v);
    for (int64_t i = fc_cu_index(); i < n; i += fc_cu_stride()) {
        y[i] = w;
    }
}

extern "C" __global__ void fc_cu_fill_bool(uint8_t* y, double v, int64_t n)
{
    for (int64_t i = fc_cu_index(); i < n; i += fc_cu_stride()) {
        y[i] = (uint8_t)(v != 0.0);
    }
}

// ---- strided copies: element i of the shape, from src offsets to dst offsets ----
template <typename T>
static __device__ void copy_strided_impl(const int64_t* g, const T* x, T* y, int64_t n)
{
    const int nd = (int)g[0];
    const int64_t* shape = g + 1;
    for (int64_t i = fc_cu_index(); i < n; i += fc_cu_stride()) {
        int64_t os, od;
        offsets2(i, nd, shape, shape + nd, shape + 2 * nd, &os, &od);
        y[od] = x[os];
    }
}

extern "C" __global__ void fc_cu_copy_strided_u8(const int64_t* g, const uint8_t* x, uint8_t* y, int64_t n)
{
    copy_strided_impl<uint8_t>(g, x, y, n);
}

extern "C" __global__ void fc_cu_copy_strided_u32(const int64_t* g, const uint32_t* x, uint32_t* y, int64_t n)
{
    copy_strided_impl<uint32_t>(g, x, y, n);
}

extern "C" __global__ void fc_cu_copy_strided_u64(const int64_t* g, const uint64_t* x, uint64_t* y, int64_t n)
{
    copy_strided_impl<uint64_t>(g, x, y, n);
}
