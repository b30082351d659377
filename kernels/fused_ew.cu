// The fused elementwise interpreter (the executor's FUSED_EW instruction), over the program format
// of csrc/src/fused_ew.c (flexcore/kernels.h, fc_fused_ew): registers 0..n_in-1 are the inputs
// (mode FULL [i], SCALAR [0], ROW [i % cols], COL [i / cols], STRIDED [(i / cols) * ld + i % cols]:
// rows ld apart, a column block of a matrix), register n_in + k is instruction k's
// result, the last register is the output. One thread per element runs the whole program with the
// registers in local memory; the program is the same for every thread, so branches never diverge.
//   fc_cu_fused_{f32,f64}(prog, n_in, n_instr, inputs, consts, n, cols, out)
//     prog: int32 {mode of each input, 4 words per instruction, then each input's row stride ld
//     (read for STRIDED inputs only)}; inputs: device array of
//     n_in device pointers; consts: float64.
// The op-code to function mapping mirrors fused_ew.c's; the functions are ew_math.h's.
#include "common.cuh"

#define FC_CU_FUSED_MAX_INSTR 64
#define FC_CU_IN_STRIDED 4  // fc_fused_mode FC_IN_STRIDED

template <typename T>
struct Math;
template <>
struct Math<float> {
#define M(NAME)                                                                                    \
    static __device__ __forceinline__ float NAME(float x) { return fc_ew_##NAME##_f32(x); }
    M(neg) M(exp) M(log) M(log1p) M(sqrt) M(abs) M(sigmoid) M(tanh) M(arctan) M(sign) M(step) M(relu)
#undef M
#define M(NAME)                                                                                    \
    static __device__ __forceinline__ float NAME(float x, float y) { return fc_ew_##NAME##_f32(x, y); }
    M(add) M(sub) M(mul) M(div) M(pow) M(maximum) M(minimum)
#undef M
};
template <>
struct Math<double> {
#define M(NAME)                                                                                    \
    static __device__ __forceinline__ double NAME(double x) { return fc_ew_##NAME##_f64(x); }
    M(neg) M(exp) M(log) M(log1p) M(sqrt) M(abs) M(sigmoid) M(tanh) M(arctan) M(sign) M(step) M(relu)
#undef M
#define M(NAME)                                                                                    \
    static __device__ __forceinline__ double NAME(double x, double y) { return fc_ew_##NAME##_f64(x, y); }
    M(add) M(sub) M(mul) M(div) M(pow) M(maximum) M(minimum)
#undef M
};

template <typename T>
static __device__ T fused_op(int op, T a, T b, T c, T konst)
{
    using F = Math<T>;
    switch (op) {
    case FC_EW_NEG: return F::neg(a);
    case FC_EW_EXP: return F::exp(a);
    case FC_EW_LOG: return F::log(a);
    case FC_EW_LOG1P: return F::log1p(a);
    case FC_EW_SQRT: return F::sqrt(a);
    case FC_EW_ABS: return F::abs(a);
    case FC_EW_SIGMOID: return F::sigmoid(a);
    case FC_EW_TANH: return F::tanh(a);
    case FC_EW_ARCTAN: return F::arctan(a);
    case FC_EW_SIGN: return F::sign(a);
    case FC_EW_STEP: return F::step(a);
    case FC_EW_RELU: return F::relu(a);
    case FC_EW_ADD: return F::add(a, b);
    case FC_EW_SUB: return F::sub(a, b);
    case FC_EW_MUL: return F::mul(a, b);
    case FC_EW_DIV: return F::div(a, b);
    case FC_EW_POW: return F::pow(a, b);
    case FC_EW_MAX: return F::maximum(a, b);
    case FC_EW_MIN: return F::minimum(a, b);
    case FC_EW_GT: return a > b ? (T)1 : (T)0;
    case FC_EW_GE: return a >= b ? (T)1 : (T)0;
    case FC_EW_LT: return a < b ? (T)1 : (T)0;
    case FC_EW_LE: return a <= b ? (T)1 : (T)0;
    case FC_EW_EQ: return a == b ? (T)1 : (T)0;
    case FC_EW_NE: return a != b ? (T)1 : (T)0;
    case FC_EW_WHERE: return a != (T)0 ? b : c;
    default: return konst;  // FC_EW_CONST
    }
}

template <typename T>
static __device__ __forceinline__ T fused_load(const int32_t* modes, const int32_t* lds,
                                               const unsigned long long* inputs, int r, int64_t i, int64_t cols)
{
    const T* src = (const T*)inputs[r];
    switch (modes[r]) {
    case FC_CU_IN_STRIDED: return src[(i / cols) * lds[r] + i % cols];
    case FC_IN_SCALAR: return src[0];
    case FC_IN_ROW: return src[i % cols];
    case FC_IN_COL: return src[i / cols];
    default: return src[i];
    }
}

template <typename T>
static __device__ void fused_impl(const int32_t* prog, int n_in, int n_instr, const unsigned long long* inputs,
                                  const double* consts, int64_t n, int64_t cols, T* out)
{
    const int32_t* code = prog + n_in;
    const int32_t* lds = code + 4 * n_instr;
    for (int64_t i = fc_cu_index(); i < n; i += fc_cu_stride()) {
        T reg[FC_CU_FUSED_MAX_INSTR];
        for (int k = 0; k < n_instr; ++k) {
            const int32_t* ins = code + 4 * k;
            const int op = ins[0];
            T v[3] = {(T)0, (T)0, (T)0};
            const int used = op <= FC_EW_RELU ? 1 : op <= FC_EW_NE ? 2 : op == FC_EW_WHERE ? 3 : 0;
            for (int f = 0; f < used; ++f) {
                const int r = ins[1 + f];
                v[f] = r < n_in ? fused_load<T>(prog, lds, inputs, r, i, cols) : reg[r - n_in];
            }
            reg[k] = fused_op<T>(op, v[0], v[1], v[2], op == FC_EW_CONST ? (T)consts[ins[1]] : (T)0);
        }
        out[i] = reg[n_instr - 1];  // every thread read its inputs at i before this write: out may alias
    }
}

extern "C" __global__ void fc_cu_fused_f32(const int32_t* prog, int n_in, int n_instr, const unsigned long long* inputs,
                                           const double* consts, int64_t n, int64_t cols, float* out)
{
    fused_impl<float>(prog, n_in, n_instr, inputs, consts, n, cols, out);
}

extern "C" __global__ void fc_cu_fused_f64(const int32_t* prog, int n_in, int n_instr, const unsigned long long* inputs,
                                           const double* consts, int64_t n, int64_t cols, double* out)
{
    fused_impl<double>(prog, n_in, n_instr, inputs, consts, n, cols, out);
}
