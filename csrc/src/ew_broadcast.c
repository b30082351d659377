/* Elementwise kernels over any dtype with numpy broadcasting: fc_ew_unary, fc_ew_binary,
 * fc_ew_compare, fc_ew_where, fc_cast.
 *
 * Structure: the operands' layout is coalesced (kernel_util.h) so that same-shape contiguous
 * operands become one run, and a broadcast row or column leaves a contiguous innermost axis; then
 * a "row function" per (dtype, op) handles one innermost run. Row functions branch once on the
 * stride pattern (both unit, one scalar, general) and run one plain loop per pattern, which gcc
 * vectorises. The math is flexcore/ew_math.h's. */
#include <string.h>

#include "flexcore/ew_math.h"
#include "flexcore/kernels.h"
#include "kernel_util.h"

/* One innermost run of n elements: y[i] = f(a[i * sa], b[i * sb]), y contiguous. */
typedef void (*row2_fn)(int64_t n, const void* a, int64_t sa, const void* b, int64_t sb, void* y);
/* y[i] = c[i * sc] ? a[i * sa] : b[i * sb] */
typedef void (*row3_fn)(int64_t n, const void* c, int64_t sc, const void* a, int64_t sa, const void* b,
                        int64_t sb, void* y);

/* EXPR computes y from x1 (of a) and x2 (of b). */
#define DEFINE_ROW2(NAME, TA, TY, EXPR)                                                            \
    static void NAME(int64_t n, const void* va, int64_t sa, const void* vb, int64_t sb, void* vy)  \
    {                                                                                              \
        const TA* a = (const TA*)va;                                                               \
        const TA* b = (const TA*)vb;                                                               \
        TY* y = (TY*)vy;                                                                           \
        if (sa == 1 && sb == 1) {                                                                  \
            for (int64_t i = 0; i < n; ++i) {                                                      \
                const TA x1 = a[i], x2 = b[i];                                                     \
                y[i] = EXPR;                                                                       \
            }                                                                                      \
        } else if (sa == 0 && sb == 1) {                                                           \
            const TA x1 = a[0];                                                                    \
            for (int64_t i = 0; i < n; ++i) {                                                      \
                const TA x2 = b[i];                                                                \
                y[i] = EXPR;                                                                       \
            }                                                                                      \
        } else if (sa == 1 && sb == 0) {                                                           \
            const TA x2 = b[0];                                                                    \
            for (int64_t i = 0; i < n; ++i) {                                                      \
                const TA x1 = a[i];                                                                \
                y[i] = EXPR;                                                                       \
            }                                                                                      \
        } else {                                                                                   \
            for (int64_t i = 0; i < n; ++i) {                                                      \
                const TA x1 = a[i * sa], x2 = b[i * sb];                                           \
                y[i] = EXPR;                                                                       \
            }                                                                                      \
        }                                                                                          \
    }

/* ---- binary arithmetic ---- */

#define DEFINE_FLOAT_BINARY(T, SFX)                                                                \
    DEFINE_ROW2(add_##SFX, T, T, fc_ew_add_##SFX(x1, x2))                                          \
    DEFINE_ROW2(sub_##SFX, T, T, fc_ew_sub_##SFX(x1, x2))                                          \
    DEFINE_ROW2(mul_##SFX, T, T, fc_ew_mul_##SFX(x1, x2))                                          \
    DEFINE_ROW2(div_##SFX, T, T, fc_ew_div_##SFX(x1, x2))                                          \
    DEFINE_ROW2(maximum_##SFX, T, T, fc_ew_maximum_##SFX(x1, x2))                                  \
    DEFINE_ROW2(minimum_##SFX, T, T, fc_ew_minimum_##SFX(x1, x2))                                  \
    DEFINE_ROW2(pow_##SFX, T, T, fc_ew_pow_##SFX(x1, x2))

DEFINE_FLOAT_BINARY(float, f32)
DEFINE_FLOAT_BINARY(double, f64)
DEFINE_ROW2(add_i64, int64_t, int64_t, fc_ew_add_i64(x1, x2))
DEFINE_ROW2(sub_i64, int64_t, int64_t, fc_ew_sub_i64(x1, x2))
DEFINE_ROW2(mul_i64, int64_t, int64_t, fc_ew_mul_i64(x1, x2))
DEFINE_ROW2(maximum_i64, int64_t, int64_t, fc_ew_maximum_i64(x1, x2))
DEFINE_ROW2(minimum_i64, int64_t, int64_t, fc_ew_minimum_i64(x1, x2))
/* numpy on bool: add and maximum are 'or', multiply and minimum are 'and'; subtract is an error. */
DEFINE_ROW2(or_bool, uint8_t, uint8_t, (uint8_t)((x1 != 0) | (x2 != 0)))
DEFINE_ROW2(and_bool, uint8_t, uint8_t, (uint8_t)((x1 != 0) & (x2 != 0)))

/* [dtype][fc_binary_op]; NULL: the dtype does not support the op. */
static const row2_fn binary_rows[FC_DTYPE_COUNT][FC_BINARY_COUNT] = {
    [FC_F32] = {add_f32, sub_f32, mul_f32, div_f32, maximum_f32, minimum_f32, pow_f32},
    [FC_F64] = {add_f64, sub_f64, mul_f64, div_f64, maximum_f64, minimum_f64, pow_f64},
    [FC_I64] = {add_i64, sub_i64, mul_i64, NULL, maximum_i64, minimum_i64, NULL},
    [FC_BOOL] = {or_bool, NULL, and_bool, NULL, or_bool, and_bool, NULL},
};

/* ---- comparisons (bool out); bool operands compare as 0/1 whatever byte they hold ---- */

#define AS_IS(x) (x)
#define AS_BOOL(x) ((x) != 0)

#define DEFINE_COMPARE(T, SFX, NORM)                                                               \
    DEFINE_ROW2(eq_##SFX, T, uint8_t, (uint8_t)(NORM(x1) == NORM(x2)))                             \
    DEFINE_ROW2(ne_##SFX, T, uint8_t, (uint8_t)(NORM(x1) != NORM(x2)))                             \
    DEFINE_ROW2(lt_##SFX, T, uint8_t, (uint8_t)(NORM(x1) < NORM(x2)))                              \
    DEFINE_ROW2(le_##SFX, T, uint8_t, (uint8_t)(NORM(x1) <= NORM(x2)))                             \
    DEFINE_ROW2(gt_##SFX, T, uint8_t, (uint8_t)(NORM(x1) > NORM(x2)))                              \
    DEFINE_ROW2(ge_##SFX, T, uint8_t, (uint8_t)(NORM(x1) >= NORM(x2)))

DEFINE_COMPARE(float, f32, AS_IS)
DEFINE_COMPARE(double, f64, AS_IS)
DEFINE_COMPARE(int64_t, i64, AS_IS)
DEFINE_COMPARE(uint8_t, bool, AS_BOOL)

#define COMPARE_ROWS(SFX) {eq_##SFX, ne_##SFX, lt_##SFX, le_##SFX, gt_##SFX, ge_##SFX}

/* [dtype][fc_compare_op] */
static const row2_fn compare_rows[FC_DTYPE_COUNT][FC_CMP_COUNT] = {
    [FC_F32] = COMPARE_ROWS(f32),
    [FC_F64] = COMPARE_ROWS(f64),
    [FC_I64] = COMPARE_ROWS(i64),
    [FC_BOOL] = COMPARE_ROWS(bool),
};

/* ---- where ---- */

#define DEFINE_WHERE(T, SFX)                                                                       \
    static void where_##SFX(int64_t n, const void* vc, int64_t sc, const void* va, int64_t sa,     \
                            const void* vb, int64_t sb, void* vy)                                  \
    {                                                                                              \
        const uint8_t* c = (const uint8_t*)vc;                                                     \
        const T* a = (const T*)va;                                                                 \
        const T* b = (const T*)vb;                                                                 \
        T* y = (T*)vy;                                                                             \
        if (sc == 1 && sa == 1 && sb == 1) { /* unconditional loads: a select, which vectorises */ \
            for (int64_t i = 0; i < n; ++i) {                                                      \
                const T x1 = a[i], x2 = b[i];                                                      \
                y[i] = c[i] ? x1 : x2;                                                             \
            }                                                                                      \
        } else if (sc == 1 && sa == 1 && sb == 0) { /* where(mask, g, 0): gradient rules */        \
            const T s = b[0];                                                                      \
            for (int64_t i = 0; i < n; ++i) {                                                      \
                const T x1 = a[i];                                                                 \
                y[i] = c[i] ? x1 : s;                                                              \
            }                                                                                      \
        } else if (sc == 1 && sa == 0 && sb == 1) {                                                \
            const T s = a[0];                                                                      \
            for (int64_t i = 0; i < n; ++i) {                                                      \
                const T x2 = b[i];                                                                 \
                y[i] = c[i] ? s : x2;                                                              \
            }                                                                                      \
        } else {                                                                                   \
            for (int64_t i = 0; i < n; ++i) {                                                      \
                y[i] = c[i * sc] ? a[i * sa] : b[i * sb];                                          \
            }                                                                                      \
        }                                                                                          \
    }

DEFINE_WHERE(float, f32)
DEFINE_WHERE(double, f64)
DEFINE_WHERE(int64_t, i64)
DEFINE_WHERE(uint8_t, bool)

static const row3_fn where_rows[FC_DTYPE_COUNT] = {where_f32, where_f64, where_i64, where_bool};

/* ---- the broadcasting drivers ---- */

/* Operand layout of one call: nin inputs then the contiguous output, checked and coalesced. */
typedef struct ew_call {
    int64_t count;
    ku_layout L;
} ew_call;

/* Checks shape, strides and pointers of `nin` inputs (element sizes in_bytes) and the output,
 * then coalesces them into call->L with the output as operand nin. */
static int ew_prepare(int ndim, const int64_t* shape, int nin, const void* const* in, const int64_t* const* in_strides,
                      const int64_t* in_bytes, const void* y, int64_t y_bytes, ew_call* call)
{
    int status = ku_check_shape(ndim, shape, &call->count);
    if (status != FC_OK) {
        return status;
    }
    int64_t storage[KU_MAX_OPS][FC_MAX_NDIM];
    const int64_t* strides[KU_MAX_OPS];
    for (int k = 0; k < nin; ++k) {
        status = ku_strides(ndim, shape, call->count, in_strides[k], in_bytes[k], storage[k], &strides[k]);
        if (status != FC_OK) {
            return status;
        }
    }
    status = ku_strides(ndim, shape, call->count, NULL, y_bytes, storage[nin], &strides[nin]);
    if (status != FC_OK) {
        return status;
    }
    for (int k = 0; k < nin; ++k) {
        if (ku_bad_ptr(in[k], call->count)) {
            return FC_ERR_NULL;
        }
    }
    if (ku_bad_ptr(y, call->count)) {
        return FC_ERR_NULL;
    }
    ku_coalesce(ndim, shape, nin + 1, strides, &call->L);
    return FC_OK;
}

static int run2(row2_fn row, int ndim, const int64_t* shape, const void* a, const int64_t* sa, const void* b,
                const int64_t* sb, int64_t in_bytes, void* y, int64_t y_bytes)
{
    const void* in[2] = {a, b};
    const int64_t* in_strides[2] = {sa, sb};
    const int64_t bytes[2] = {in_bytes, in_bytes};
    ew_call call;
    const int status = ew_prepare(ndim, shape, 2, in, in_strides, bytes, y, y_bytes, &call);
    if (status != FC_OK || call.count == 0) {
        return status;
    }
    const ku_layout* L = &call.L;
    const int last = L->ndim - 1;
    int64_t idx[FC_MAX_NDIM] = {0};
    int64_t off[3] = {0, 0, 0};
    do {
        row(L->shape[last], (const char*)a + off[0] * in_bytes, L->stride[0][last],
            (const char*)b + off[1] * in_bytes, L->stride[1][last], (char*)y + off[2] * y_bytes);
    } while (ku_next(L, last, 3, idx, off));
    return FC_OK;
}

int fc_ew_binary(int dtype, int op, int ndim, const int64_t* shape, const void* a, const int64_t* sa,
                 const void* b, const int64_t* sb, void* y)
{
    if (!ku_dtype_ok(dtype)) {
        return FC_ERR_DTYPE;
    }
    if (op < 0 || op >= FC_BINARY_COUNT) {
        return FC_ERR_OP;
    }
    const row2_fn row = binary_rows[dtype][op];
    if (row == NULL) {
        return FC_ERR_DTYPE;
    }
    const int64_t bytes = ku_dtype_size(dtype);
    return run2(row, ndim, shape, a, sa, b, sb, bytes, y, bytes);
}

int fc_ew_compare(int dtype, int op, int ndim, const int64_t* shape, const void* a, const int64_t* sa,
                  const void* b, const int64_t* sb, void* y)
{
    if (!ku_dtype_ok(dtype)) {
        return FC_ERR_DTYPE;
    }
    if (op < 0 || op >= FC_CMP_COUNT) {
        return FC_ERR_OP;
    }
    return run2(compare_rows[dtype][op], ndim, shape, a, sa, b, sb, ku_dtype_size(dtype), y, 1);
}

int fc_ew_where(int dtype, int ndim, const int64_t* shape, const void* cond, const int64_t* sc, const void* a,
                const int64_t* sa, const void* b, const int64_t* sb, void* y)
{
    if (!ku_dtype_ok(dtype)) {
        return FC_ERR_DTYPE;
    }
    const int64_t bytes = ku_dtype_size(dtype);
    const void* in[3] = {cond, a, b};
    const int64_t* in_strides[3] = {sc, sa, sb};
    const int64_t in_bytes[3] = {1, bytes, bytes};
    ew_call call;
    const int status = ew_prepare(ndim, shape, 3, in, in_strides, in_bytes, y, bytes, &call);
    if (status != FC_OK || call.count == 0) {
        return status;
    }
    const row3_fn row = where_rows[dtype];
    const ku_layout* L = &call.L;
    const int last = L->ndim - 1;
    int64_t idx[FC_MAX_NDIM] = {0};
    int64_t off[4] = {0, 0, 0, 0};
    do {
        row(L->shape[last], (const char*)cond + off[0], L->stride[0][last], (const char*)a + off[1] * bytes,
            L->stride[1][last], (const char*)b + off[2] * bytes, L->stride[2][last], (char*)y + off[3] * bytes);
    } while (ku_next(L, last, 4, idx, off));
    return FC_OK;
}

/* ---- unary ---- */

int fc_ew_unary(int dtype, int op, int64_t n, const void* x, void* y)
{
    if (!ku_dtype_ok(dtype)) {
        return FC_ERR_DTYPE;
    }
    if (op < 0 || op >= FC_UNARY_COUNT) {
        return FC_ERR_OP;
    }
    switch (dtype) {
    case FC_F32:
        return fc_unary_f32(op, (const float*)x, (float*)y, n);
    case FC_F64:
        return fc_unary_f64(op, (const double*)x, (double*)y, n);
    case FC_I64:
        if (op != FC_UNARY_NEG) {
            return FC_ERR_DTYPE;
        }
        break;
    default:
        return FC_ERR_DTYPE;
    }
    if (n < 0) {
        return FC_ERR_SIZE;
    }
    if (ku_bad_ptr(x, n) || ku_bad_ptr(y, n)) {
        return FC_ERR_NULL;
    }
    const int64_t* xi = (const int64_t*)x;
    int64_t* yi = (int64_t*)y;
    for (int64_t i = 0; i < n; ++i) {
        yi[i] = fc_ew_neg_i64(xi[i]);
    }
    return FC_OK;
}

/* ---- casts ---- */

#define CAST_LOOP(TS, TD, EXPR)                                                                    \
    {                                                                                              \
        const TS* s = (const TS*)x;                                                                \
        TD* d = (TD*)y;                                                                            \
        for (int64_t i = 0; i < n; ++i) {                                                          \
            const TS v = s[i];                                                                     \
            d[i] = EXPR;                                                                           \
        }                                                                                          \
        return FC_OK;                                                                              \
    }

/* One case per (src, dst) pair, numbered src * FC_DTYPE_COUNT + dst. */
#define PAIR(S, D) ((S) * FC_DTYPE_COUNT + (D))

int fc_cast(int src_dtype, int dst_dtype, int64_t n, const void* x, void* y)
{
    if (!ku_dtype_ok(src_dtype) || !ku_dtype_ok(dst_dtype)) {
        return FC_ERR_DTYPE;
    }
    if (n < 0 || ku_mul(n, 8) < 0) {
        return FC_ERR_SIZE;
    }
    if (ku_bad_ptr(x, n) || ku_bad_ptr(y, n)) {
        return FC_ERR_NULL;
    }
    if (src_dtype == dst_dtype) {
        if (x != y && n > 0) {
            memcpy(y, x, (size_t)(n * ku_dtype_size(src_dtype)));
        }
        return FC_OK;
    }
    switch (PAIR(src_dtype, dst_dtype)) {
    case PAIR(FC_F32, FC_F64):
        CAST_LOOP(float, double, (double)v)
    case PAIR(FC_F32, FC_I64):
        CAST_LOOP(float, int64_t, fc_ew_f64_to_i64((double)v))
    case PAIR(FC_F32, FC_BOOL):
        CAST_LOOP(float, uint8_t, (uint8_t)(v != 0.0f))
    case PAIR(FC_F64, FC_F32):
        CAST_LOOP(double, float, (float)v)
    case PAIR(FC_F64, FC_I64):
        CAST_LOOP(double, int64_t, fc_ew_f64_to_i64(v))
    case PAIR(FC_F64, FC_BOOL):
        CAST_LOOP(double, uint8_t, (uint8_t)(v != 0.0))
    case PAIR(FC_I64, FC_F32):
        CAST_LOOP(int64_t, float, (float)v)
    case PAIR(FC_I64, FC_F64):
        CAST_LOOP(int64_t, double, (double)v)
    case PAIR(FC_I64, FC_BOOL):
        CAST_LOOP(int64_t, uint8_t, (uint8_t)(v != 0))
    case PAIR(FC_BOOL, FC_F32):
        CAST_LOOP(uint8_t, float, v != 0 ? 1.0f : 0.0f)
    case PAIR(FC_BOOL, FC_F64):
        CAST_LOOP(uint8_t, double, v != 0 ? 1.0 : 0.0)
    case PAIR(FC_BOOL, FC_I64):
        CAST_LOOP(uint8_t, int64_t, (int64_t)(v != 0))
    default:
        return FC_ERR_DTYPE; /* unreachable: every pair of valid dtypes is listed */
    }
}
