/* Elementwise kernels: argument checks, then one plain loop per op (the switch sits outside the
 * loop so the compiler can vectorise each body). The math itself is in flexcore/ew_math.h. */
#include <stddef.h>

#include "flexcore/ew_math.h"
#include "flexcore/flexcore.h"
#include "vmath.h"

/* NULL is acceptable only for an empty array. */
static int bad_ptr(const void* p, int64_t n) { return p == NULL && n != 0; }

static int check_unary(int op, const void* x, const void* y, int64_t n)
{
    if (op < 0 || op >= FC_UNARY_COUNT) {
        return FC_ERR_OP;
    }
    if (n < 0) {
        return FC_ERR_SIZE;
    }
    if (bad_ptr(x, n) || bad_ptr(y, n)) {
        return FC_ERR_NULL;
    }
    return FC_OK;
}

static int check_binary(int op, const void* a, const void* b, const void* y, int64_t n)
{
    if (op < 0 || op >= FC_BINARY_COUNT) {
        return FC_ERR_OP;
    }
    if (n < 0) {
        return FC_ERR_SIZE;
    }
    if (bad_ptr(a, n) || bad_ptr(b, n) || bad_ptr(y, n)) {
        return FC_ERR_NULL;
    }
    return FC_OK;
}

#define UNARY_CASE(OP, FN)                                                                         \
    case OP:                                                                                       \
        for (int64_t i = 0; i < n; ++i) {                                                          \
            y[i] = FN(x[i]);                                                                       \
        }                                                                                          \
        break;

#define BINARY_CASE(OP, FN)                                                                        \
    case OP:                                                                                       \
        for (int64_t i = 0; i < n; ++i) {                                                          \
            y[i] = FN(a[i], b[i]);                                                                 \
        }                                                                                          \
        break;

/* The float32 transcendentals go to the vectorised versions (vmath.h); float64 keeps libm. */
static int vmath_unary_f32(int op, const float* x, float* y, int64_t n)
{
    const fc_vmath_table* t = fc_vmath_f32();
    const fc_vmath_fn fn = op == FC_UNARY_EXP ? t->exp : op == FC_UNARY_LOG ? t->log
                           : op == FC_UNARY_TANH ? t->tanh : op == FC_UNARY_SIGMOID ? t->sigmoid : NULL;
    if (fn == NULL) {
        return 0;
    }
    fn(x, y, n);
    return 1;
}

static int vmath_unary_f64(int op, const double* x, double* y, int64_t n)
{
    (void)op, (void)x, (void)y, (void)n;
    return 0;
}

/* One definition per dtype, so float32 and float64 cannot drift apart. */
#define DEFINE_UNARY(T, SFX)                                                                       \
    int fc_unary_##SFX(int op, const T* x, T* y, int64_t n)                                        \
    {                                                                                              \
        const int status = check_unary(op, x, y, n);                                               \
        if (status != FC_OK) {                                                                     \
            return status;                                                                         \
        }                                                                                          \
        if (vmath_unary_##SFX(op, x, y, n)) {                                                      \
            return FC_OK;                                                                          \
        }                                                                                          \
        switch (op) {                                                                              \
            FC_EW_UNARY_TABLE(UNARY_CASE, SFX)                                                     \
        default:                                                                                   \
            return FC_ERR_OP; /* unreachable: check_unary rejects it */                           \
        }                                                                                          \
        return FC_OK;                                                                              \
    }

#define DEFINE_BINARY(T, SFX)                                                                      \
    int fc_binary_##SFX(int op, const T* a, const T* b, T* y, int64_t n)                           \
    {                                                                                              \
        const int status = check_binary(op, a, b, y, n);                                           \
        if (status != FC_OK) {                                                                     \
            return status;                                                                         \
        }                                                                                          \
        switch (op) {                                                                              \
            FC_EW_BINARY_TABLE(BINARY_CASE, SFX)                                                   \
        default:                                                                                   \
            return FC_ERR_OP; /* unreachable: check_binary rejects it */                           \
        }                                                                                          \
        return FC_OK;                                                                              \
    }

DEFINE_UNARY(float, f32)
DEFINE_UNARY(double, f64)
DEFINE_BINARY(float, f32)
DEFINE_BINARY(double, f64)
